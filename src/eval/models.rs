//! Measuring the shipped models (`onfh-edge evaluate-models`): on two test sets, a site
//! dataset's test split, and the randomised development studies.
//!
//! The in-distribution test set is generated here from seeds no training run draws (from
//! `data::TEST_SEED_BASE`) and with the scanner style training never saw
//! (`data::HELD_OUT_STYLE`). The external test set comes from the independent evaluation
//! phantom (`evalphantom`: its own anatomy, signal model, artefacts, tags and encodings,
//! every centre style in turn, seeds from `data::EXTERNAL_SEED_BASE`); it is never used for
//! training or to set a constant, so it says how the models do on images they were not
//! shaped by (inference rules that answer failures read on it are also measured on seeds
//! no rule looked at; see the README). For each study of either set: the T2 is selected,
//! assembled and preprocessed as in the pipeline; the two heads the pipeline's rule finds
//! without a floor (`model::sphere::locate_heads` with floor 0: the detector's best pair
//! when the image agrees, else a pair the image confirms, else the other head found in the
//! image, else the detector's pair; where it finds none, the two best candidates), each
//! moved onto its sphere, are matched to the true heads (`training::detector::judge`: both
//! found, centre error < radius / 2) — and so are
//! the network's own centres, reported as the network alone; each head is staged
//! twice — on a crop around its true centre (the stager alone) and on a crop around the
//! detector's centre (the two networks together, as the pipeline runs them: the heads and
//! their sides are chosen by `model::sphere::locate_heads` with the pipeline's detection
//! floor, and
//! right heads are mirrored exactly as in training).
//!
//! With a reference checkpoint (the f32 weights a training run kept) for either network or
//! both, the same inputs also run through that f32 network, and the largest difference of
//! any stage probability or detection score between its fp16 and f32 weights is reported.
//! That comparison measures the weights, not the inference rules: each manifest carries its
//! own network's part, and `--write` without that network's reference keeps the part the
//! manifest has, with the command that made it (`fp16_vs_f32_command`).
//!
//! With `--randomised N`, the networks are also measured on domain-randomised development
//! studies (`phantom::randomised`, from the first seed training validates on): the detector
//! both ways, the sphere fit on the study rendered at 2 mm, and the stager at the true
//! centres. These are where the inference rules' constants were chosen; they are printed,
//! never written into the manifests.
//!
//! Each test study also goes through the whole pipeline (`pipeline::analyze` with the
//! default settings), and the paper's table is computed from those results exactly as
//! `onfh-edge eval` does — so `eval` on the same test set written by `onfh-edge phantom`
//! reproduces it.
//!
//! Each set is also broken down by scanner or centre style (the truth's `scanner`): how
//! often the detector found both heads, how many heads the stager stages right at the true
//! centres, and how many of the pipeline's stage calls (not `indeterminate`) are right or
//! wrong — so a style the models cannot read shows, rather than averaging away.
//!
//! This module measures; it writes nothing but what its caller asks (`--write` puts the
//! figures into the manifests).

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use serde::Serialize;

use crate::model::crop::{self, CropConfig};
use crate::model::detector::{Detection, Detector};
use crate::model::sphere;
use crate::model::stager::Stager;
use crate::model::weights::{self, Architecture, Manifest};
use crate::pipeline;
use crate::result::Side;
use crate::result::StageCall;
use crate::training::data;
use crate::training::detector::judge;
use crate::volume::Preprocess;

/// What to evaluate.
#[derive(Debug, Clone)]
pub struct EvalOptions {
    /// The detector's manifest.
    pub detector: PathBuf,
    /// The stager's manifest.
    pub stager: PathBuf,
    /// In-distribution test studies (the training phantom, held-out style and seeds).
    pub studies: usize,
    /// First in-distribution test seed.
    pub seed: u64,
    /// External test studies (`evalphantom`, every centre style in turn); 0 = none.
    pub external_studies: usize,
    /// First external test seed.
    pub external_seed: u64,
    /// A site dataset (`training::dataset`) whose test split is evaluated too.
    pub dataset: Option<PathBuf>,
    /// Domain-randomised development studies (`phantom::randomised`); 0 = none.
    pub randomised_studies: usize,
    /// First randomised seed.
    pub randomised_seed: u64,
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
    /// Mean centre error of the heads with a candidate (the nearest), mm.
    pub mean_center_error_mm: f64,
    /// Largest centre error of the heads with a candidate, mm.
    pub max_center_error_mm: f64,
    /// Largest centre error as a fraction of that head's radius (the same heads).
    pub max_center_error_over_radius: f64,
    /// Heads with no candidate at all (no centre error to measure; not found).
    pub heads_without_candidate: usize,
}

/// Detector tallies over a test set, before they become [`DetectorMetrics`].
#[derive(Default)]
struct DetectorTally {
    found: usize,
    /// Centre errors of the heads with a candidate, mm.
    errors: Vec<f64>,
    rel: f64,
    /// Heads with none.
    missing: usize,
}

impl DetectorTally {
    fn add(
        &mut self,
        j: &crate::training::detector::StudyDetection,
        heads: &[crate::phantom::HeadTruth],
    ) {
        self.found += j.both_found as usize;
        for (e, h) in j.center_error_mm.iter().zip(heads) {
            match e {
                Some(e) => {
                    self.errors.push(*e);
                    self.rel = self.rel.max(e / h.radius_mm);
                }
                None => self.missing += 1,
            }
        }
    }

    fn metrics(&self, studies: usize) -> DetectorMetrics {
        let e = &self.errors;
        DetectorMetrics {
            studies,
            both_heads_found: self.found,
            detection_rate: self.found as f64 / studies.max(1) as f64,
            mean_center_error_mm: e.iter().sum::<f64>() / e.len().max(1) as f64,
            max_center_error_mm: e.iter().cloned().fold(0.0, f64::max),
            max_center_error_over_radius: self.rel,
            heads_without_candidate: self.missing,
        }
    }
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

/// Agreement of fp16 weights with the f32 weights they came from, for each network whose
/// reference checkpoint was given (the other network's fields are absent).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Fp16Agreement {
    /// Largest |p_fp16 − p_f32| over every stage probability.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_probability_difference: Option<f64>,
    /// Heads whose predicted stage differs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stage_disagreements: Option<usize>,
    /// Largest difference of the best detection score.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_detection_score_difference: Option<f64>,
    /// Largest distance between the fp16 and f32 detections' centres, mm.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_center_difference_mm: Option<f64>,
}

/// Raise the largest difference `most` seen so far to `v`.
fn raise(most: &mut Option<f64>, v: f64) {
    *most = Some(most.unwrap_or(0.0).max(v));
}

/// The fields of [`Fp16Agreement`] that describe the detector's weights.
const DETECTOR_FP16_KEYS: [&str; 2] =
    ["max_detection_score_difference", "max_center_difference_mm"];
/// The fields of [`Fp16Agreement`] that describe the stager's weights.
const STAGER_FP16_KEYS: [&str; 2] = ["max_probability_difference", "stage_disagreements"];

/// Which phantom a test set comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    /// The training phantom (`phantom`), with seeds and a scanner style training never used.
    InDistribution,
    /// The independent evaluation phantom (`evalphantom`): another anatomy, signal model,
    /// artefacts, tags and encodings; never used for training or model selection.
    External,
    /// The test split of a site's labelled studies (`--dataset`).
    Dataset,
    /// Domain-randomised development studies (`--randomised`): the draws training
    /// validates on, where the inference rules' constants were chosen — not a test.
    Development,
}

/// The figures on one test set.
#[derive(Debug, Clone, Serialize)]
pub struct SetEvaluation {
    /// Which phantom.
    pub family: Family,
    /// What the test set was.
    pub test_set: String,
    /// Studies.
    pub studies: usize,
    /// First seed.
    pub seed: u64,
    /// Studies whose T2 could not be selected or assembled (their heads count as missed).
    pub unreadable_studies: usize,
    /// Detector as the pipeline uses it, without its floor: the heads
    /// `model::sphere::locate_heads` finds with floor 0, each on its sphere.
    pub detector: DetectorMetrics,
    /// The detector network alone (its own centres).
    pub detector_network_alone: DetectorMetrics,
    /// Stager on crops around the true centres.
    pub stager_at_true_centers: StagerMetrics,
    /// Stager on crops around the detector's centres (a missed head counts as wrong).
    pub stager_at_detected_centers: StagerMetrics,
    /// The paper's table from the whole pipeline (what `onfh-edge eval` prints).
    pub pipeline: super::Report,
    /// The same set by scanner or centre style, in name order.
    pub by_style: Vec<StyleFigures>,
}

/// One scanner or centre style's share of a test set.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct StyleFigures {
    /// The style, as the study's truth names it.
    pub style: String,
    /// Studies.
    pub studies: usize,
    /// Studies with both heads found by the pipeline's rule without its floor (as
    /// `detector`).
    pub both_heads_found: usize,
    /// Heads.
    pub heads: usize,
    /// Heads the stager stages right on crops at the true centres.
    pub staged_right_at_true_centers: usize,
    /// Heads the pipeline called a stage (not `indeterminate`), right, by side.
    pub calls_right: usize,
    /// Heads the pipeline called a stage that is not the true one.
    pub calls_wrong: usize,
}

impl StyleFigures {
    /// Count one analysed study's stage calls against its truth (heads matched by side).
    fn count_calls(&mut self, a: &crate::result::Analysis, truth: &crate::phantom::StudyTruth) {
        for f in &a.heads {
            let Some(h) = truth.heads.iter().find(|h| h.side == f.side) else {
                continue;
            };
            if f.stage == StageCall::Indeterminate {
                continue;
            }
            if f.stage == StageCall::of_class(data::class_of(h.stage) as usize) {
                self.calls_right += 1;
            } else {
                self.calls_wrong += 1;
            }
        }
    }
}

/// Everything measured.
#[derive(Debug, Clone, Serialize)]
pub struct Evaluation {
    /// The command that reproduces these figures.
    pub command: String,
    /// The in-distribution test, when asked for.
    pub in_distribution: Option<SetEvaluation>,
    /// The external test, when asked for.
    pub external: Option<SetEvaluation>,
    /// The site dataset's test split, when asked for.
    pub dataset: Option<SetEvaluation>,
    /// The randomised development studies, when asked for (printed, never written into
    /// the manifests: they choose rules, they do not test them).
    pub development: Option<DevelopmentEvaluation>,
    /// fp16 vs f32 over every test study, where reference checkpoints were given.
    pub fp16_vs_f32: Option<Fp16Agreement>,
}

/// The networks on domain-randomised development studies.
#[derive(Debug, Clone, Serialize)]
pub struct DevelopmentEvaluation {
    /// What the studies were.
    pub test_set: String,
    /// Studies.
    pub studies: usize,
    /// First seed.
    pub seed: u64,
    /// The detector as the pipeline uses it (as [`SetEvaluation::detector`]), the sphere
    /// fit on the study rendered at `data::RANDOMISED_T2_MM`.
    pub detector: DetectorMetrics,
    /// The detector network alone (its own centres).
    pub detector_network_alone: DetectorMetrics,
    /// Stager on crops rendered around the true centres.
    pub stager_at_true_centers: StagerMetrics,
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

fn probabilities(net: &Stager, crop: &[f32], cfg: &CropConfig) -> anyhow::Result<Vec<f32>> {
    let [d, h, w] = cfg.shape;
    let x = Tensor::from_slice(crop, (1, d, cfg.channel_count(), h, w), &Device::Cpu)?;
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

/// The networks and settings shared by both test sets.
struct Context {
    det: Detector,
    stg: Stager,
    classes: Vec<String>,
    models: pipeline::Models,
    settings: pipeline::AnalysisSettings,
    preprocess: Preprocess,
    crop: CropConfig,
    ref_det: Option<Detector>,
    ref_stg: Option<Stager>,
}

/// Run the evaluation; `progress` hears each study's family, number and seed.
pub fn evaluate(
    opts: &EvalOptions,
    command: &str,
    mut progress: impl FnMut(Family, usize, u64),
) -> anyhow::Result<Evaluation> {
    anyhow::ensure!(
        opts.studies + opts.external_studies + opts.randomised_studies > 0
            || opts.dataset.is_some(),
        "no test studies"
    );
    let dev = Device::Cpu;
    let weights::LoadedDetector {
        net: det,
        manifest: dm,
        preprocess,
        ..
    } = weights::load_detector(&opts.detector, &dev, DType::F32)?;
    let weights::LoadedStager {
        net: stg,
        manifest: sm,
        crop,
        ..
    } = weights::load_stager(&opts.stager, &dev, DType::F32)?;
    let settings = pipeline::AnalysisSettings {
        // The folder of the detector's manifest ("." rather than empty, which would mean
        // the built-in models).
        models_dir: match opts.detector.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => PathBuf::from("."),
        },
        detector: file_name(&opts.detector),
        stager: file_name(&opts.stager),
        min_detection_score: opts.min_detection_score,
        ..Default::default()
    };
    let models = pipeline::Models::load(&settings, &preprocess)?;
    let ref_det = match &opts.reference_detector {
        Some(p) => Some(f32_detector(&dm, p)?),
        None => None,
    };
    let ref_stg = match &opts.reference_stager {
        Some(p) => Some(f32_stager(&sm, p)?),
        None => None,
    };
    let ctx = Context {
        det,
        stg,
        classes: sm.classes.clone(),
        models,
        settings,
        preprocess,
        crop,
        ref_det,
        ref_stg,
    };
    let mut agree = Fp16Agreement::default();
    if ctx.ref_det.is_some() {
        agree.max_detection_score_difference = Some(0.0);
        agree.max_center_difference_mm = Some(0.0);
    }
    if ctx.ref_stg.is_some() {
        agree.max_probability_difference = Some(0.0);
        agree.stage_disagreements = Some(0);
    }
    let generated = |family: Family, first: u64| {
        move |i: usize| -> anyhow::Result<Source> {
            let seed = first + i as u64;
            let dir = opts.scratch.join(format!("study_{seed}"));
            let truth = write_test_study(family, &dir, i, seed)?;
            Ok(Source {
                dir,
                truth,
                assembled: None,
                remove: true,
            })
        }
    };
    let in_distribution = if opts.studies > 0 {
        Some(evaluate_set(
            &ctx,
            opts,
            Family::InDistribution,
            opts.studies,
            opts.seed,
            &generated(Family::InDistribution, opts.seed),
            &mut agree,
            &mut progress,
        )?)
    } else {
        None
    };
    let external = if opts.external_studies > 0 {
        Some(evaluate_set(
            &ctx,
            opts,
            Family::External,
            opts.external_studies,
            opts.external_seed,
            &generated(Family::External, opts.external_seed),
            &mut agree,
            &mut progress,
        )?)
    } else {
        None
    };
    let dataset = match &opts.dataset {
        Some(csv) => {
            let ds = crate::training::dataset::load_with_t1(csv, &[], ctx.crop.uses_t1())?;
            let test: Vec<_> = ds
                .split(crate::training::dataset::Split::Test)
                .cloned()
                .collect();
            anyhow::ensure!(
                !test.is_empty(),
                "{}: no study in the test split",
                csv.display()
            );
            let fetch = |i: usize| -> anyhow::Result<Source> {
                let s = &test[i];
                Ok(Source {
                    dir: s.dir.clone(),
                    truth: s.study.truth.clone(),
                    assembled: Some(s.study.clone()),
                    remove: false,
                })
            };
            let mut e = evaluate_set(
                &ctx,
                opts,
                Family::Dataset,
                test.len(),
                0,
                &fetch,
                &mut agree,
                &mut progress,
            )?;
            e.test_set = format!(
                "test split of the site dataset {} (SHA-256 {}): {} studies",
                csv.display(),
                ds.sha256,
                test.len()
            );
            Some(e)
        }
        None => None,
    };
    let development = if opts.randomised_studies > 0 {
        Some(evaluate_randomised(
            &ctx,
            opts.randomised_studies,
            opts.randomised_seed,
            &mut progress,
        )?)
    } else {
        None
    };
    // The fp16 comparison runs over the test studies only.
    let tested = in_distribution.is_some() || external.is_some() || dataset.is_some();
    Ok(Evaluation {
        command: command.to_owned(),
        in_distribution,
        external,
        dataset,
        development,
        fp16_vs_f32: (tested && (ctx.ref_det.is_some() || ctx.ref_stg.is_some())).then_some(agree),
    })
}

/// The heads judged as the detector's: the pipeline's rule without a floor
/// (`sphere::locate_heads`), or, where it finds no pair, the two best candidates moved
/// onto their spheres.
fn judged_pair(
    dets: &[Detection],
    t2: &crate::volume::Volume,
    input: &crate::volume::Volume,
) -> Vec<Detection> {
    match sphere::locate_heads(dets, t2, input, 0.0) {
        Ok((r, l)) => vec![r.detection, l.detection],
        Err(_) => dets
            .iter()
            .take(2)
            .map(|d| sphere::locate(d, t2, input).detection)
            .collect(),
    }
}

/// The detector (alone, and as the pipeline uses it) and the stager at the true centres
/// on `n` randomised studies from `first_seed`.
fn evaluate_randomised(
    ctx: &Context,
    n: usize,
    first_seed: u64,
    progress: &mut impl FnMut(Family, usize, u64),
) -> anyhow::Result<DevelopmentEvaluation> {
    let dev = Device::Cpu;
    let (mut refined, mut alone) = (DetectorTally::default(), DetectorTally::default());
    let mut at_truth = Vec::new();
    for i in 0..n {
        let seed = first_seed + i as u64;
        progress(Family::Development, i + 1, seed);
        let sample = data::randomised_detector_sample(seed, &ctx.preprocess);
        let t2 = data::randomised_t2(seed, &ctx.preprocess);
        let dets = ctx.det.candidates(&sample.volume, &dev, DType::F32)?;
        alone.add(&judge(&dets, &sample.heads), &sample.heads);
        let pair = judged_pair(&dets, &t2, &sample.volume);
        refined.add(&judge(&pair, &sample.heads), &sample.heads);
        for h in data::randomised_head_samples(seed, &ctx.crop, 1, 0.0) {
            let p = probabilities(&ctx.stg, &h.voxels, &ctx.crop)?;
            at_truth.push((h.class, Some(argmax(&p))));
        }
    }
    let last = (first_seed + n as u64).saturating_sub(1);
    Ok(DevelopmentEvaluation {
        test_set: format!(
            "{n} domain-randomised development studies (`phantom::randomised`), seeds {first_seed}..={last}, rendered straight onto the detector's grid, the sphere fit on a {} mm rendering, the stager on crops rendered at the true centres",
            data::RANDOMISED_T2_MM
        ),
        studies: n,
        seed: first_seed,
        detector: refined.metrics(n),
        detector_network_alone: alone.metrics(n),
        stager_at_true_centers: stager_metrics(&at_truth, &ctx.classes),
    })
}

/// One test study: where its files are and what is true of it.
struct Source {
    dir: PathBuf,
    truth: crate::phantom::StudyTruth,
    /// Its T2, when already assembled (a dataset's studies are, when they are loaded).
    assembled: Option<data::PhantomStudy>,
    /// Delete `dir` afterwards (generated studies).
    remove: bool,
}

/// Write test study `i` (seed `seed`) of `family` under `dir`; its truth.
pub fn write_test_study(
    family: Family,
    dir: &Path,
    i: usize,
    seed: u64,
) -> anyhow::Result<crate::phantom::StudyTruth> {
    Ok(match family {
        Family::Dataset => anyhow::bail!("a dataset's studies are not generated"),
        Family::Development => anyhow::bail!("randomised studies are rendered, not written"),
        Family::InDistribution => crate::phantom::generate_study(dir, seed, &data::test_options())?,
        Family::External => {
            let styles: Vec<&'static str> = crate::evalphantom::style_names().collect();
            crate::evalphantom::generate_study(
                dir,
                seed,
                &crate::evalphantom::Options {
                    style: Some(styles[i % styles.len()]),
                    ..Default::default()
                },
            )?
        }
    })
}

#[allow(clippy::too_many_arguments)]
fn evaluate_set(
    ctx: &Context,
    opts: &EvalOptions,
    family: Family,
    n: usize,
    first_seed: u64,
    fetch: &dyn Fn(usize) -> anyhow::Result<Source>,
    agree: &mut Fp16Agreement,
    progress: &mut impl FnMut(Family, usize, u64),
) -> anyhow::Result<SetEvaluation> {
    let dev = Device::Cpu;
    let rules = crate::volume::Rules::default();
    let (det, stg, crop) = (&ctx.det, &ctx.stg, &ctx.crop);
    let (mut results, mut truth_rows) = (Vec::new(), Vec::new());
    let (mut refined, mut alone) = (DetectorTally::default(), DetectorTally::default());
    let (mut at_truth, mut at_det) = (Vec::new(), Vec::new());
    let mut unreadable = 0usize;
    let mut by_style = std::collections::BTreeMap::<String, StyleFigures>::new();
    for i in 0..n {
        let seed = first_seed + i as u64;
        progress(family, i + 1, seed);
        let src = fetch(i)?;
        let (dir, truth) = (&src.dir, &src.truth);
        let analysis = pipeline::analyze(
            std::slice::from_ref(dir),
            &ctx.models,
            &ctx.settings,
            &rules,
            None,
        );
        let style = by_style
            .entry(truth.scanner.clone())
            .or_insert_with(|| StyleFigures {
                style: truth.scanner.clone(),
                ..Default::default()
            });
        style.studies += 1;
        style.heads += truth.heads.len();
        style.count_calls(&analysis, truth);
        results.push(analysis);
        for h in &truth.heads {
            truth_rows.push(super::TruthRow {
                study: truth.study_uid.clone(),
                side: h.side,
                class: data::class_of(h.stage) as usize,
            });
        }
        let study = match src.assembled.clone() {
            Some(s) => Ok(s),
            None => data::assemble_study(dir, truth.clone(), crop.uses_t1()),
        };
        if src.remove {
            let _ = std::fs::remove_dir_all(dir);
        }
        let study = match study {
            Ok(s) => s,
            Err(_) => {
                // The pipeline reported why; the networks never saw these heads.
                unreadable += 1;
                for h in &truth.heads {
                    refined.errors.push(f64::INFINITY);
                    alone.errors.push(f64::INFINITY);
                    at_truth.push((data::class_of(h.stage), None));
                    at_det.push((data::class_of(h.stage), None));
                }
                continue;
            }
        };
        let sample = data::detector_sample(&study, &ctx.preprocess);
        let dets = det.candidates(&sample.volume, &dev, DType::F32)?;
        alone.add(&judge(&dets, &sample.heads), &sample.heads);
        let pair = judged_pair(&dets, &study.volume, &sample.volume);
        let judged = judge(&pair, &sample.heads);
        refined.add(&judged, &sample.heads);
        let style = by_style.get_mut(&truth.scanner).expect("entered above");
        style.both_heads_found += judged.both_found as usize;
        if let Some(rd) = &ctx.ref_det {
            let rdets = rd.candidates(&sample.volume, &dev, DType::F32)?;
            if let (Some(a), Some(b)) = (dets.first(), rdets.first()) {
                raise(
                    &mut agree.max_detection_score_difference,
                    (a.score - b.score).abs() as f64,
                );
                raise(
                    &mut agree.max_center_difference_mm,
                    dist(a.center_lps_mm, b.center_lps_mm),
                );
            }
        }
        // The pipeline's rule for which detections are the heads, and which side.
        let sided: Vec<(Side, Detection)> = match sphere::locate_heads(
            &dets,
            &study.volume,
            &sample.volume,
            opts.min_detection_score,
        ) {
            Ok((r, l)) => vec![(Side::Right, r.detection), (Side::Left, l.detection)],
            Err(_) => Vec::new(),
        };
        for h in &study.truth.heads {
            let truth_class = data::class_of(h.stage);
            let t1 = study.t1.as_ref();
            let mirror = h.side == Side::Right;
            let c = crop::crop_channels(&study.volume, t1, h.center_lps_mm, mirror, crop).0;
            let p = probabilities(stg, &c, crop)?;
            at_truth.push((truth_class, Some(argmax(&p))));
            style.staged_right_at_true_centers += (argmax(&p) == truth_class) as usize;
            if let Some(r) = &ctx.ref_stg {
                let q = probabilities(r, &c, crop)?;
                for (a, b) in p.iter().zip(&q) {
                    raise(&mut agree.max_probability_difference, (a - b).abs() as f64);
                }
                *agree.stage_disagreements.get_or_insert(0) += (argmax(&p) != argmax(&q)) as usize;
            }
            // The detection the pipeline would call this side, if it is this head.
            let called = sided.iter().find(|(s, d)| {
                *s == h.side && dist(d.center_lps_mm, h.center_lps_mm) < h.radius_mm / 2.0
            });
            let pred = match called {
                Some((s, d)) => {
                    let mirror = *s == Side::Right;
                    let c = crop::crop_channels(&study.volume, t1, d.center_lps_mm, mirror, crop).0;
                    Some(argmax(&probabilities(stg, &c, crop)?))
                }
                None => None,
            };
            at_det.push((truth_class, pred));
        }
    }
    let last = (first_seed + n as u64).saturating_sub(1);
    let test_set = match family {
        Family::InDistribution => format!(
            "{n} synthetic phantom studies, seeds {first_seed}..={last}, scanner style \"{}\" (not used in training)",
            data::HELD_OUT_STYLE
        ),
        Family::Dataset | Family::Development => String::new(),
        Family::External => format!(
            "{n} studies of the independent evaluation phantom (`onfh-edge phantom --family external`), seeds {first_seed}..={last}, centre styles {} in turn (never used in training or to set a constant)",
            crate::evalphantom::style_names()
                .map(|s| format!("\"{s}\""))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    Ok(SetEvaluation {
        family,
        test_set,
        studies: n,
        seed: first_seed,
        unreadable_studies: unreadable,
        detector: refined.metrics(n),
        detector_network_alone: alone.metrics(n),
        stager_at_true_centers: stager_metrics(&at_truth, &ctx.classes),
        stager_at_detected_centers: stager_metrics(&at_det, &ctx.classes),
        pipeline: super::evaluate(&truth_rows, &results, &Default::default()),
        by_style: by_style.into_values().collect(),
    })
}

/// Put the figures into both manifests' `metrics` (the weights and their hashes are
/// untouched). The in-distribution figures keep their keys at the top (`test_seed`,
/// `test_studies`, `test_style`, `pipeline`, ...); the external test is under `external`.
/// Each part carries the command that made it — `command` at the top (the in-distribution
/// figures), `external.command`, `dataset.command`, `fp16_vs_f32_command` — and a part not
/// measured this time is kept as it was.
pub fn write_metrics(opts: &EvalOptions, e: &Evaluation) -> anyhow::Result<()> {
    anyhow::ensure!(
        e.in_distribution.is_some() || e.external.is_some() || e.dataset.is_some(),
        "no test figures to write (development figures are never written into the manifests)"
    );
    let part = |set: &Option<SetEvaluation>, keys: &[&str]| -> serde_json::Value {
        let Some(x) = set else {
            return serde_json::Value::Null;
        };
        let full = serde_json::to_value(x).expect("figures serialise");
        let mut out = serde_json::Map::new();
        for k in [
            "family",
            "test_set",
            "studies",
            "seed",
            "unreadable_studies",
        ]
        .iter()
        .chain(keys)
        {
            out.insert(k.to_string(), full[*k].clone());
        }
        out.insert("command".into(), e.command.clone().into());
        serde_json::Value::Object(out)
    };
    let merge = |m: &mut Manifest, top: serde_json::Value| {
        let mut obj = match m.metrics.take() {
            Some(serde_json::Value::Object(o)) => o,
            _ => serde_json::Map::new(),
        };
        if let serde_json::Value::Object(t) = top {
            for (k, v) in t {
                if !v.is_null() {
                    obj.insert(k, v);
                } else if k.starts_with("fp16_vs_f32") {
                    // No part of this network's: nothing of the other network's stays.
                    obj.remove(&k);
                }
            }
        }
        m.metrics = Some(serde_json::Value::Object(obj));
    };
    let head = |i: &SetEvaluation| {
        serde_json::json!({
            "test_set": i.test_set,
            "test_seed": i.seed,
            "test_studies": i.studies,
            "test_style": data::HELD_OUT_STYLE,
        })
    };
    // The fp16 comparison measures the weights, not the inference rules: each manifest
    // carries its own network's part; without that network's reference checkpoint it keeps
    // the part it has, with the command that made it.
    let fp16 = |m: &Manifest, keys: &[&str]| -> (serde_json::Value, serde_json::Value) {
        let own = |row: &serde_json::Value| -> serde_json::Value {
            let mut out = serde_json::Map::new();
            for k in keys {
                if let Some(v) = row.get(*k).filter(|v| !v.is_null()) {
                    out.insert(k.to_string(), v.clone());
                }
            }
            if out.is_empty() {
                serde_json::Value::Null
            } else {
                serde_json::Value::Object(out)
            }
        };
        if let Some(a) = &e.fp16_vs_f32 {
            let row = own(&serde_json::to_value(a).expect("figures serialise"));
            if !row.is_null() {
                return (row, e.command.clone().into());
            }
        }
        match &m.metrics {
            Some(old) => match own(old.get("fp16_vs_f32").unwrap_or(&serde_json::Value::Null)) {
                serde_json::Value::Null => (serde_json::Value::Null, serde_json::Value::Null),
                row => (
                    row,
                    old.get("fp16_vs_f32_command")
                        .or_else(|| old.get("command"))
                        .cloned()
                        .unwrap_or_default(),
                ),
            },
            None => (serde_json::Value::Null, serde_json::Value::Null),
        }
    };
    // The top-level figures are the in-distribution ones: their command changes with them.
    let top_command = e.in_distribution.as_ref().map(|_| e.command.clone());
    let mut dm = weights::read_manifest(&opts.detector)?;
    let (row, row_command) = fp16(&dm, &DETECTOR_FP16_KEYS);
    let mut top = serde_json::json!({
        "command": top_command,
        "fp16_vs_f32": row,
        "fp16_vs_f32_command": row_command,
        "external": part(&e.external, &["detector", "detector_network_alone"]),
        "dataset": part(&e.dataset, &["detector", "detector_network_alone"]),
    });
    if let Some(i) = &e.in_distribution {
        top["detector"] = serde_json::to_value(&i.detector)?;
        top["detector_network_alone"] = serde_json::to_value(&i.detector_network_alone)?;
        for (k, v) in head(i).as_object().expect("object") {
            top[k] = v.clone();
        }
    }
    merge(&mut dm, top);
    weights::write_manifest(&opts.detector, &dm)?;
    let mut sm = weights::read_manifest(&opts.stager)?;
    let keys = [
        "detector",
        "detector_network_alone",
        "stager_at_true_centers",
        "stager_at_detected_centers",
        "pipeline",
        "by_style",
    ];
    let (row, row_command) = fp16(&sm, &STAGER_FP16_KEYS);
    let mut top = serde_json::json!({
        "command": top_command,
        "fp16_vs_f32": row,
        "fp16_vs_f32_command": row_command,
        "external": part(&e.external, &keys),
        "dataset": part(&e.dataset, &keys),
    });
    if let Some(i) = &e.in_distribution {
        top["stager_at_true_centers"] = serde_json::to_value(&i.stager_at_true_centers)?;
        top["stager_at_detected_centers"] = serde_json::to_value(&i.stager_at_detected_centers)?;
        top["pipeline"] = serde_json::to_value(&i.pipeline)?;
        for (k, v) in head(i).as_object().expect("object") {
            top[k] = v.clone();
        }
    }
    merge(&mut sm, top);
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
