//! Measuring the shipped models on a held-out phantom test set (`onfh-edge evaluate-models`).
//!
//! The test set is generated here from seeds no training run draws (from
//! `data::TEST_SEED_BASE`) and with the scanner style training never saw
//! (`data::HELD_OUT_STYLE`). For each study: the T2 is selected, assembled and preprocessed
//! as in the pipeline; the detector's two best boxes are matched to the true heads
//! (`train_detector::judge`: both found, centre error < radius / 2); each head is staged
//! twice — on a crop around its true centre (the stager alone) and on a crop around the
//! detector's centre (the two networks together, as the pipeline runs them: the heads and
//! their sides are chosen by `detector::pair_heads` with the pipeline's detection floor, and
//! right heads are mirrored exactly as in training).
//!
//! With reference checkpoints (the f32 weights a training run kept), the same inputs also run
//! through the f32 networks, and the largest difference of any stage probability and any
//! detection score between fp16 and f32 weights is reported.
//!
//! Each test study also goes through the whole pipeline (`pipeline::analyze` with the
//! default settings), and the paper's table is computed from those results exactly as
//! `onfh-edge eval` does — so `eval` on the same test set written by `onfh-edge phantom`
//! reproduces it.
//!
//! This module measures; it writes nothing but what its caller asks (`--write` puts the
//! figures into the manifests).

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use serde::Serialize;

use crate::model::data::{self, CropConfig};
use crate::model::detector::{Detector, pair_heads};
use crate::model::stager::Stager;
use crate::model::train_detector::{self as td, judge};
use crate::model::weights::{self, Architecture, Manifest};
use crate::pipeline;
use crate::volume::Preprocess;

/// What to evaluate.
#[derive(Debug, Clone)]
pub struct EvalOptions {
    /// The detector's manifest.
    pub detector: PathBuf,
    /// The stager's manifest.
    pub stager: PathBuf,
    /// Test studies.
    pub studies: usize,
    /// First test seed.
    pub seed: u64,
    /// Folder holding the f32 checkpoints `detector.best.safetensors` and
    /// `stager.best.safetensors` the shipped fp16 weights were exported from.
    pub reference_detector: Option<PathBuf>,
    /// As `reference_detector`, for the stager.
    pub reference_stager: Option<PathBuf>,
    /// Scratch folder for generated studies.
    pub scratch: PathBuf,
    /// The pipeline's detection floor (`analysis.min_detection_score`).
    pub min_detection_score: f32,
}

/// Detector figures.
#[derive(Debug, Clone, Serialize)]
pub struct DetectorMetrics {
    /// Test studies.
    pub studies: usize,
    /// Studies with both heads found (centre error < radius / 2).
    pub both_heads_found: usize,
    /// `both_heads_found / studies`.
    pub detection_rate: f64,
    /// Mean centre error of all heads, mm.
    pub mean_center_error_mm: f64,
    /// Largest centre error of all heads, mm.
    pub max_center_error_mm: f64,
    /// Largest centre error as a fraction of that head's radius.
    pub max_center_error_over_radius: f64,
}

/// Stager figures on one set of crops.
#[derive(Debug, Clone, Serialize)]
pub struct StagerMetrics {
    /// Heads staged.
    pub heads: usize,
    /// Fraction staged right.
    pub accuracy: f64,
    /// Confusion matrix: rows are the true stage, columns the predicted one.
    pub confusion: [[usize; 3]; 3],
    /// Per class (stage 0, I, II): sensitivity and specificity.
    pub per_class: Vec<ClassMetrics>,
}

/// One class's sensitivity and specificity.
#[derive(Debug, Clone, Serialize)]
pub struct ClassMetrics {
    /// Class name.
    pub class: String,
    /// True positives / actual positives.
    pub sensitivity: f64,
    /// True negatives / actual negatives.
    pub specificity: f64,
}

/// Agreement of fp16 weights with the f32 weights they came from.
#[derive(Debug, Clone, Serialize)]
pub struct Fp16Agreement {
    /// Largest |p_fp16 − p_f32| over every stage probability.
    pub max_probability_difference: f64,
    /// Heads whose predicted stage differs.
    pub stage_disagreements: usize,
    /// Largest difference of the best detection score.
    pub max_detection_score_difference: f64,
    /// Largest distance between the fp16 and f32 detections' centres, mm.
    pub max_center_difference_mm: f64,
}

/// Everything measured.
#[derive(Debug, Clone, Serialize)]
pub struct Evaluation {
    /// What the test set was.
    pub test_set: String,
    /// The command that reproduces these figures.
    pub command: String,
    /// Detector.
    pub detector: DetectorMetrics,
    /// Stager on crops around the true centres.
    pub stager_at_true_centers: StagerMetrics,
    /// Stager on crops around the detector's centres (a missed head counts as wrong).
    pub stager_at_detected_centers: StagerMetrics,
    /// fp16 vs f32, where reference checkpoints were given.
    pub fp16_vs_f32: Option<Fp16Agreement>,
    /// The paper's table from the whole pipeline (what `onfh-edge eval` prints).
    pub pipeline: super::Report,
}

fn stager_metrics(pairs: &[(u32, Option<u32>)], classes: &[String]) -> StagerMetrics {
    let mut confusion = [[0usize; 3]; 3];
    let mut right = 0;
    for &(t, p) in pairs {
        if let Some(p) = p {
            confusion[t as usize][p as usize] += 1;
            right += (t == p) as usize;
        }
    }
    let n = pairs.len();
    let per_class = (0..3)
        .map(|c| {
            let pos = pairs.iter().filter(|(t, _)| *t as usize == c).count();
            let tp = confusion[c][c];
            let neg = n - pos;
            // A negative is true when it is not called c (a missed head is not a call).
            let fp: usize = (0..3).filter(|&t| t != c).map(|t| confusion[t][c]).sum();
            ClassMetrics {
                class: classes.get(c).cloned().unwrap_or_default(),
                sensitivity: tp as f64 / pos.max(1) as f64,
                specificity: (neg - fp) as f64 / neg.max(1) as f64,
            }
        })
        .collect();
    StagerMetrics {
        heads: n,
        accuracy: right as f64 / n.max(1) as f64,
        confusion,
        per_class,
    }
}

fn f32_detector(m: &Manifest, checkpoint: &Path) -> anyhow::Result<Detector> {
    let Architecture::Detector { config, .. } = &m.architecture else {
        anyhow::bail!("not a detector manifest");
    };
    let t = candle_core::safetensors::load(checkpoint, &Device::Cpu)?;
    Ok(Detector::new(
        config,
        VarBuilder::from_tensors(t, DType::F32, &Device::Cpu),
    )?)
}

fn f32_stager(m: &Manifest, checkpoint: &Path) -> anyhow::Result<Stager> {
    let Architecture::Stager { config, .. } = &m.architecture else {
        anyhow::bail!("not a stager manifest");
    };
    let t = candle_core::safetensors::load(checkpoint, &Device::Cpu)?;
    Ok(Stager::new(
        config,
        VarBuilder::from_tensors(t, DType::F32, &Device::Cpu),
    )?)
}

fn probabilities(net: &Stager, crop: &[f32], shape: [usize; 3]) -> anyhow::Result<Vec<f32>> {
    let [d, h, w] = shape;
    let x = Tensor::from_slice(crop, (1, d, 1, h, w), &Device::Cpu)?;
    Ok(net.probabilities(&x)?.flatten_all()?.to_vec1()?)
}

fn argmax(p: &[f32]) -> u32 {
    p.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map_or(0, |(i, _)| i as u32)
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn dist(a: [f64; 3], b: [f64; 3]) -> f64 {
    ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2) + (a[2] - b[2]).powi(2)).sqrt()
}

/// Run the evaluation; `progress` hears each study's seed.
pub fn evaluate(
    opts: &EvalOptions,
    command: &str,
    mut progress: impl FnMut(usize, u64),
) -> anyhow::Result<Evaluation> {
    anyhow::ensure!(opts.studies > 0, "no test studies");
    let dev = Device::Cpu;
    let (det, dm) = weights::load_detector(&opts.detector, &dev, DType::F32)?;
    let (stg, sm) = weights::load_stager(&opts.stager, &dev, DType::F32)?;
    let settings = pipeline::AnalysisSettings {
        models_dir: opts
            .detector
            .parent()
            .map(Path::to_owned)
            .unwrap_or_default(),
        detector: file_name(&opts.detector),
        stager: file_name(&opts.stager),
        min_detection_score: opts.min_detection_score,
        ..Default::default()
    };
    let Architecture::Detector { preprocess, .. } = &dm.architecture else {
        unreachable!("load_detector checked the kind");
    };
    let preprocess: Preprocess = preprocess.clone();
    let models = pipeline::Models::load(&settings, &preprocess)?;
    let rules = crate::volume::Rules::default();
    let (mut results, mut truth_rows) = (Vec::new(), Vec::new());
    let Architecture::Stager { crop, .. } = &sm.architecture else {
        unreachable!("load_stager checked the kind");
    };
    let crop: CropConfig = crop.clone();
    let ref_det = match &opts.reference_detector {
        Some(p) => Some(f32_detector(&dm, p)?),
        None => None,
    };
    let ref_stg = match &opts.reference_stager {
        Some(p) => Some(f32_stager(&sm, p)?),
        None => None,
    };
    let (mut found, mut errors, mut rel) = (0usize, Vec::new(), 0f64);
    let (mut at_truth, mut at_det) = (Vec::new(), Vec::new());
    let mut agree = Fp16Agreement {
        max_probability_difference: 0.0,
        stage_disagreements: 0,
        max_detection_score_difference: 0.0,
        max_center_difference_mm: 0.0,
    };
    for i in 0..opts.studies {
        let seed = opts.seed + i as u64;
        progress(i + 1, seed);
        let dir = opts.scratch.join(format!("study_{seed}"));
        let study = data::phantom_study(&dir, seed, &data::test_options())?;
        results.push(pipeline::analyze(
            std::slice::from_ref(&dir),
            &models,
            &settings,
            &rules,
            None,
        ));
        let _ = std::fs::remove_dir_all(&dir);
        for h in &study.truth.heads {
            truth_rows.push(super::TruthRow {
                study: study.truth.study_uid.clone(),
                side: h.side.clone(),
                class: data::class_of(h.stage) as usize,
            });
        }
        let sample = data::detector_sample(&study, &preprocess);
        let dets = det.detect(
            &sample.volume,
            &dev,
            DType::F32,
            td::MIN_SCORE,
            td::NMS_IOU,
            4,
        )?;
        let j = judge(&dets, &sample.heads);
        found += j.both_found as usize;
        for (e, h) in j.center_error_mm.iter().zip(&sample.heads) {
            let e = e.unwrap_or(f64::INFINITY);
            errors.push(e);
            rel = rel.max(e / h.radius_mm);
        }
        if let Some(rd) = &ref_det {
            let rdets = rd.detect(
                &sample.volume,
                &dev,
                DType::F32,
                td::MIN_SCORE,
                td::NMS_IOU,
                4,
            )?;
            if let (Some(a), Some(b)) = (dets.first(), rdets.first()) {
                agree.max_detection_score_difference = agree
                    .max_detection_score_difference
                    .max((a.score - b.score).abs() as f64);
                agree.max_center_difference_mm = agree
                    .max_center_difference_mm
                    .max(dist(a.center_lps_mm, b.center_lps_mm));
            }
        }
        // The pipeline's rule for which detections are the heads, and which side.
        let sided: Vec<(&str, &_)> = match pair_heads(&dets, opts.min_detection_score) {
            Ok((r, l)) => vec![("R", r), ("L", l)],
            Err(_) => Vec::new(),
        };
        for h in &study.truth.heads {
            let truth_class = data::class_of(h.stage);
            let c = data::crop(&study.volume, h.center_lps_mm, h.side == "R", &crop);
            let p = probabilities(&stg, &c, crop.shape)?;
            at_truth.push((truth_class, Some(argmax(&p))));
            if let Some(r) = &ref_stg {
                let q = probabilities(r, &c, crop.shape)?;
                for (a, b) in p.iter().zip(&q) {
                    agree.max_probability_difference =
                        agree.max_probability_difference.max((a - b).abs() as f64);
                }
                agree.stage_disagreements += (argmax(&p) != argmax(&q)) as usize;
            }
            // The detection the pipeline would call this side, if it is this head.
            let called = sided.iter().find(|(s, d)| {
                *s == h.side && dist(d.center_lps_mm, h.center_lps_mm) < h.radius_mm / 2.0
            });
            let pred = match called {
                Some((s, d)) => {
                    let c = data::crop(&study.volume, d.center_lps_mm, *s == "R", &crop);
                    Some(argmax(&probabilities(&stg, &c, crop.shape)?))
                }
                None => None,
            };
            at_det.push((truth_class, pred));
        }
    }
    let finite: Vec<f64> = errors.iter().cloned().filter(|e| e.is_finite()).collect();
    let n = opts.studies;
    Ok(Evaluation {
        test_set: format!(
            "{n} synthetic phantom studies, seeds {}..={}, scanner style \"{}\" (not used in training)",
            opts.seed,
            (opts.seed + n as u64).saturating_sub(1),
            data::HELD_OUT_STYLE
        ),
        command: command.to_owned(),
        detector: DetectorMetrics {
            studies: n,
            both_heads_found: found,
            detection_rate: found as f64 / n.max(1) as f64,
            mean_center_error_mm: finite.iter().sum::<f64>() / finite.len().max(1) as f64,
            max_center_error_mm: errors.iter().cloned().fold(0.0, f64::max),
            max_center_error_over_radius: rel,
        },
        stager_at_true_centers: stager_metrics(&at_truth, &sm.classes),
        stager_at_detected_centers: stager_metrics(&at_det, &sm.classes),
        fp16_vs_f32: (ref_det.is_some() || ref_stg.is_some()).then_some(agree),
        pipeline: super::evaluate(&truth_rows, &results, &Default::default()),
    })
}

/// Put the figures into both manifests' `metrics` (the weights and their hashes are
/// untouched).
pub fn write_metrics(opts: &EvalOptions, e: &Evaluation) -> anyhow::Result<()> {
    let mut dm = weights::read_manifest(&opts.detector)?;
    dm.metrics = Some(serde_json::json!({
        "test_set": e.test_set,
        "test_seed": opts.seed,
        "test_studies": opts.studies,
        "test_style": data::HELD_OUT_STYLE,
        "command": e.command,
        "detector": e.detector,
        "fp16_vs_f32": e.fp16_vs_f32,
    }));
    weights::write_manifest(&opts.detector, &dm)?;
    let mut sm = weights::read_manifest(&opts.stager)?;
    sm.metrics = Some(serde_json::json!({
        "test_set": e.test_set,
        "test_seed": opts.seed,
        "test_studies": opts.studies,
        "test_style": data::HELD_OUT_STYLE,
        "command": e.command,
        "stager_at_true_centers": e.stager_at_true_centers,
        "stager_at_detected_centers": e.stager_at_detected_centers,
        "fp16_vs_f32": e.fp16_vs_f32,
        "pipeline": e.pipeline,
    }));
    weights::write_manifest(&opts.stager, &sm)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stager_metrics_by_hand() {
        // truth, prediction
        let pairs = [
            (0, Some(0)),
            (0, Some(1)),
            (1, Some(1)),
            (2, Some(2)),
            (2, None),
        ];
        let names: Vec<String> = ["0", "I", "II"].iter().map(|s| s.to_string()).collect();
        let m = stager_metrics(&pairs, &names);
        assert_eq!(m.heads, 5);
        assert!((m.accuracy - 3.0 / 5.0).abs() < 1e-12);
        assert_eq!(m.confusion, [[1, 1, 0], [0, 1, 0], [0, 0, 1]]);
        // Stage 0: 1 of 2 found; negatives 3, none called 0.
        assert!((m.per_class[0].sensitivity - 0.5).abs() < 1e-12);
        assert!((m.per_class[0].specificity - 1.0).abs() < 1e-12);
        // Stage I: 1 of 1; negatives 4, one (a stage 0) called I.
        assert!((m.per_class[1].sensitivity - 1.0).abs() < 1e-12);
        assert!((m.per_class[1].specificity - 0.75).abs() < 1e-12);
        // Stage II: 1 of 2 (the missed head is not a call).
        assert!((m.per_class[2].sensitivity - 0.5).abs() < 1e-12);
        assert!((m.per_class[2].specificity - 1.0).abs() < 1e-12);
    }
}
