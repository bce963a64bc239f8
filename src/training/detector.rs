//! Training the detector on phantom studies (`onfh-edge train detector`), and the
//! detection criterion shared with evaluation.
//!
//! Studies come from the phantom generator — training seeds `seed..seed+n` and validation
//! seeds from `seed + VALIDATION_SEED_OFFSET`, both with the training scanner styles — and
//! are preprocessed exactly as the pipeline does (`volume::preprocess`). Augmentation is the
//! paper's: random brightness, Gaussian noise, and right-left flips (the box is mirrored
//! with the volume; the detector has one class, femoral head, and the side is decided from
//! patient geometry afterwards, so a flip cannot teach it the wrong side). Negatives are
//! added: 12 % of samples lose one hip beyond the midline (air or unacquired space, box
//! removed) and 8 % are replaced by noise without anatomy (no boxes), so that the detector
//! does not find heads where there are none. AdamW on the
//! SimOTA/IoU loss of `model::detector` in the shared loop (`super::fit`, cosine schedule);
//! after every epoch the validation detection rate (both
//! heads within half a radius) is measured and the best epoch kept
//! (`detector.best.safetensors`, f32), the latest too (`detector.last.safetensors`) for
//! `resume`.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::Serialize;

use super::data::{self, DetectorSample};
use super::dataset::{self, Split};
use super::{
    EpochRecord, ManifestSpec, RANDOMISED_EPOCH_STRIDE, RANDOMISED_TRAINING_SEEDS,
    RANDOMISED_VALIDATION_SEEDS, Run, Task, Trained, VALIDATION_SEED_OFFSET, Validation, fit,
    manifest, seeds_text,
};
use crate::model::detector::{Detection, Detector, DetectorConfig, VoxelBox, detection_loss};
use crate::phantom::HeadTruth;
use crate::volume::Preprocess;

/// SimOTA's centre-prior radius, in cells.
pub const CENTER_RADIUS: f64 = 2.5;

/// What to train and how.
#[derive(Debug, Clone)]
pub struct DetectorTrainOptions {
    /// Network architecture (its input must equal the preprocessing shape).
    pub config: DetectorConfig,
    /// Preprocessing of the study volume.
    pub preprocess: Preprocess,
    /// Training studies.
    pub train_studies: usize,
    /// Validation studies.
    pub val_studies: usize,
    /// Domain-randomised studies drawn afresh for every epoch (`phantom::randomised`).
    pub randomised: usize,
    /// Domain-randomised validation studies (fixed seeds).
    pub val_randomised: usize,
    /// First training seed.
    pub seed: u64,
    /// Epochs.
    pub epochs: usize,
    /// Batch size.
    pub batch: usize,
    /// Learning rate.
    pub lr: f64,
    /// AdamW weight decay.
    pub weight_decay: f64,
    /// Where checkpoints go.
    pub out: PathBuf,
    /// Train and validate on a site's labelled studies (`dataset`: its train and val
    /// splits) instead of the classic phantom's studies.
    pub dataset: Option<PathBuf>,
    /// Fine-tune: start from this model (manifest) or checkpoint instead of random
    /// weights (ignored when resuming).
    pub init: Option<PathBuf>,
    /// Continue from `detector.last.safetensors` in `out`.
    pub resume: bool,
}

/// One epoch's figures.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct DetectorEpochReport {
    /// 1-based epoch.
    pub epoch: usize,
    /// Mean training loss.
    pub train_loss: f32,
    /// Fraction of validation studies with both heads found (classic and randomised
    /// together: the selection criterion).
    pub val_detection_rate: f32,
    /// The same on the classic phantom's validation studies alone.
    pub val_classic_rate: f32,
    /// The same on the domain-randomised validation studies alone.
    pub val_randomised_rate: f32,
    /// Mean centre error of the found heads, mm.
    pub val_center_error_mm: f32,
    /// Whether this epoch became the best checkpoint.
    pub best: bool,
}

/// How the detections of one study compare with its truth.
#[derive(Debug, Clone, Serialize)]
pub struct StudyDetection {
    /// Both heads found, each by a different detection, centre error < radius / 2.
    pub both_found: bool,
    /// Per true head (in truth order): the centre error of its detection, mm, if matched.
    pub center_error_mm: Vec<Option<f64>>,
}

/// Match the two detections the pipeline would pair (`detector::best_pair`, before its
/// confidence floor; else the two best) to the true heads.
pub fn judge(detections: &[Detection], heads: &[HeadTruth]) -> StudyDetection {
    // The two the pipeline would take (before its confidence floor), else the two best.
    let top: Vec<&Detection> = match crate::model::detector::best_pair(detections, 0.0) {
        Some((i, j)) => vec![&detections[i], &detections[j]],
        None => detections.iter().take(2).collect(),
    };
    let dist = |a: [f64; 3], b: [f64; 3]| {
        ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2) + (a[2] - b[2]).powi(2)).sqrt()
    };
    let mut used = vec![false; top.len()];
    let mut errors = Vec::new();
    let mut all = true;
    for h in heads {
        let best = top
            .iter()
            .enumerate()
            .filter(|(i, _)| !used[*i])
            .map(|(i, d)| (i, dist(d.center_lps_mm, h.center_lps_mm)))
            .min_by(|a, b| a.1.total_cmp(&b.1));
        match best {
            Some((i, e)) if e < h.radius_mm / 2.0 => {
                used[i] = true;
                errors.push(Some(e));
            }
            Some((_, e)) => {
                all = false;
                errors.push(Some(e));
            }
            None => {
                all = false;
                errors.push(None);
            }
        }
    }
    StudyDetection {
        both_found: all && heads.len() == 2,
        center_error_mm: errors,
    }
}

/// Generate studies for `seeds` (with `options(seed)`) and return their detector samples.
pub fn samples(
    seeds: impl Iterator<Item = u64>,
    options: impl Fn(u64) -> crate::phantom::Options,
    pre: &Preprocess,
    scratch: &Path,
) -> anyhow::Result<Vec<DetectorSample>> {
    let mut out = Vec::new();
    for seed in seeds {
        let dir = scratch.join(format!("study_{seed}"));
        let study = data::phantom_study(&dir, seed, &options(seed), false)?;
        out.push(data::detector_sample(&study, pre));
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(out)
}

fn to_batch(
    items: &[&DetectorSample],
    rng: &mut ChaCha8Rng,
) -> candle_core::Result<(Tensor, Vec<Vec<VoxelBox>>)> {
    let [w, h, d] = items[0].volume.dims;
    let mut data = Vec::with_capacity(items.len() * d * h * w);
    let mut boxes = Vec::with_capacity(items.len());
    let normal = rand_distr::Normal::new(0f32, 0.02).expect("finite sigma");
    for s in items {
        let gain: f32 = rng.random_range(0.85..1.15);
        let flip = rng.random_bool(0.5);
        let start = data.len();
        data.extend(
            s.volume
                .data
                .iter()
                .map(|x| (x * gain + rng.sample(normal)).clamp(0.0, 1.0)),
        );
        let mut b = s.boxes.clone();
        if flip {
            for row in data[start..].chunks_mut(w) {
                row.reverse();
            }
            for bx in &mut b {
                bx.center[2] = (w as f64 - 1.0) - bx.center[2];
            }
        }
        // Negatives, so that objectness means "a femoral head is here" and not "this is a
        // hip study": a hip outside the acquired field of view (the columns beyond the
        // midline between the heads become air or unacquired space, and its box goes), and
        // volumes with no anatomy at all (noise of random level and spread).
        let r: f64 = rng.random();
        if r < 0.12 && b.len() == 2 {
            let lose: usize = rng.random_range(0..2);
            let mid = ((b[0].center[2] + b[1].center[2]) / 2.0).round() as usize;
            let fill = if rng.random_bool(0.5) { 0.0 } else { 0.3 };
            for row in data[start..].chunks_mut(w) {
                let cols = if b[lose].center[2] < mid as f64 {
                    0..mid.min(w)
                } else {
                    mid.min(w)..w
                };
                for x in &mut row[cols] {
                    *x = (fill + rng.sample(normal)).clamp(0.0, 1.0);
                }
            }
            b.remove(lose);
        } else if r < 0.20 {
            let lo: f32 = rng.random_range(0.0..0.8);
            let hi: f32 = rng.random_range(lo + 0.05..1.0);
            let gauss = rng.random_bool(0.5);
            for x in &mut data[start..] {
                *x = if gauss {
                    let g = rand_distr::Normal::new((lo + hi) / 2.0, (hi - lo) / 4.0)
                        .expect("finite sigma");
                    rng.sample(g).clamp(0.0, 1.0)
                } else {
                    rng.random_range(lo..hi)
                };
            }
            b.clear();
        }
        boxes.push(b);
    }
    Ok((
        Tensor::from_vec(data, (items.len(), d, 1, h, w), &Device::Cpu)?,
        boxes,
    ))
}

/// Detect and judge every sample; returns (detection rate, mean centre error of found heads).
pub fn validate(net: &Detector, samples: &[DetectorSample]) -> candle_core::Result<(f32, f32)> {
    let (mut found, mut err, mut n_err) = (0usize, 0f64, 0usize);
    for s in samples {
        let dets = net.candidates(&s.volume, &Device::Cpu, DType::F32)?;
        let j = judge(&dets, &s.heads);
        found += j.both_found as usize;
        for e in j.center_error_mm.iter().flatten() {
            err += e;
            n_err += 1;
        }
    }
    Ok((
        found as f32 / samples.len().max(1) as f32,
        (err / n_err.max(1) as f64) as f32,
    ))
}

/// Train; `progress` hears each epoch and, with `(batch, batches, loss)`, each step.
pub fn train_detector(
    opts: &DetectorTrainOptions,
    on_step: impl FnMut(usize, usize, f32),
    progress: impl FnMut(&DetectorEpochReport),
) -> anyhow::Result<Trained<DetectorEpochReport>> {
    anyhow::ensure!(
        opts.preprocess.shape == opts.config.input,
        "preprocessing shape {:?} differs from the network input {:?}",
        opts.preprocess.shape,
        opts.config.input
    );
    anyhow::ensure!(
        opts.batch > 0
            && opts.train_studies + opts.randomised > 0
            && opts.val_studies + opts.val_randomised > 0,
        "batch and study counts must be positive"
    );
    std::fs::create_dir_all(&opts.out)?;
    let scratch = opts.out.join("scratch");
    let (train, val, dataset) = match &opts.dataset {
        Some(csv) => {
            let ds = dataset::load(csv, &[Split::Train])?;
            let of = |split| -> Vec<DetectorSample> {
                ds.split(split)
                    .map(|s| data::detector_sample(&s.study, &opts.preprocess))
                    .collect()
            };
            (of(Split::Train), of(Split::Val), Some(ds.summary()))
        }
        None => {
            let train = samples(
                opts.seed..opts.seed + opts.train_studies as u64,
                data::training_options,
                &opts.preprocess,
                &scratch,
            )?;
            let vseed = opts.seed + VALIDATION_SEED_OFFSET;
            let val = samples(
                vseed..vseed + opts.val_studies as u64,
                data::training_options,
                &opts.preprocess,
                &scratch,
            )?;
            let _ = std::fs::remove_dir_all(&scratch);
            (train, val, None)
        }
    };
    anyhow::ensure!(
        !val.is_empty() || opts.val_randomised > 0,
        "no validation studies (a dataset needs a val split, or --val-randomised)"
    );
    let started = std::time::Instant::now();
    let val_dr: Vec<DetectorSample> = (0..opts.val_randomised as u64)
        .into_par_iter()
        .map(|n| {
            data::randomised_detector_sample(
                opts.seed + RANDOMISED_VALIDATION_SEEDS + n,
                &opts.preprocess,
            )
        })
        .collect();

    let task = DetectorTask { opts, val, val_dr };
    let rng = ChaCha8Rng::seed_from_u64(opts.seed ^ 0xde7ec7);
    fit(
        &task,
        opts.run(),
        &train,
        rng,
        dataset,
        started,
        on_step,
        progress,
    )
}

impl DetectorTrainOptions {
    /// The schedule and checkpoints of the run.
    pub fn run(&self) -> Run<'_> {
        Run {
            epochs: self.epochs,
            batch: self.batch,
            lr: self.lr,
            weight_decay: self.weight_decay,
            out: &self.out,
            init: self.init.as_deref(),
            resume: self.resume,
        }
    }
}

/// The detector's part of the loop: whole volumes with their boxes, the SimOTA loss, the
/// detection rate on the classic and the randomised validation studies.
struct DetectorTask<'a> {
    opts: &'a DetectorTrainOptions,
    val: Vec<DetectorSample>,
    val_dr: Vec<DetectorSample>,
}

impl Task for DetectorTask<'_> {
    type Sample = DetectorSample;
    type Net = Detector;
    type Report = DetectorEpochReport;
    const KIND: &'static str = "detector";

    fn build(&self, vb: VarBuilder) -> candle_core::Result<Detector> {
        Detector::new(&self.opts.config, vb)
    }

    fn fresh(&self, epoch: usize) -> Vec<DetectorSample> {
        let o = self.opts;
        (0..o.randomised as u64)
            .into_par_iter()
            .map(|n| {
                let seed = o.seed
                    + RANDOMISED_TRAINING_SEEDS
                    + (epoch as u64) * RANDOMISED_EPOCH_STRIDE
                    + n;
                data::randomised_detector_sample(seed, &o.preprocess)
            })
            .collect()
    }

    fn fresh_per_epoch(&self) -> usize {
        self.opts.randomised
    }

    fn loss(
        &self,
        net: &Detector,
        items: &[&DetectorSample],
        rng: &mut ChaCha8Rng,
    ) -> candle_core::Result<Tensor> {
        let (x, boxes) = to_batch(items, rng)?;
        let raw = net.forward_t(&x, true)?;
        Ok(detection_loss(&raw, &boxes, CENTER_RADIUS)?.total)
    }

    fn validate(
        &self,
        net: &Detector,
        epoch: usize,
        train_loss: f32,
    ) -> candle_core::Result<Validation<DetectorEpochReport>> {
        let (classic, err_c) = validate(net, &self.val)?;
        let (randomised, err_r) = validate(net, &self.val_dr)?;
        let (nc, nr) = (self.val.len() as f32, self.val_dr.len() as f32);
        let rate = (classic * nc + randomised * nr) / (nc + nr).max(1.0);
        let err = (err_c * nc + err_r * nr) / (nc + nr).max(1.0);
        Ok(Validation {
            score: rate,
            tie_break: err,
            report: DetectorEpochReport {
                epoch,
                train_loss,
                val_detection_rate: rate,
                val_classic_rate: classic,
                val_randomised_rate: randomised,
                val_center_error_mm: err,
                best: false,
            },
        })
    }
}

impl EpochRecord for DetectorEpochReport {
    fn is_best(&self) -> bool {
        self.best
    }

    fn mark_best(&mut self) {
        self.best = true;
    }

    fn selected(&self) -> String {
        format!(
            "epoch {}: validation detection rate {:.3} (classic {:.3}, randomised {:.3}), centre error {:.2} mm",
            self.epoch,
            self.val_detection_rate,
            self.val_classic_rate,
            self.val_randomised_rate,
            self.val_center_error_mm
        )
    }
}

impl std::fmt::Display for DetectorEpochReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "epoch {:>3}  train loss {:.4}  val detection {:.3} (classic {:.3}, randomised {:.3})  val centre error {:.2} mm{}",
            self.epoch,
            self.train_loss,
            self.val_detection_rate,
            self.val_classic_rate,
            self.val_randomised_rate,
            self.val_center_error_mm,
            if self.best { "  (best)" } else { "" }
        )
    }
}

/// The manifest of a detector trained with `opts`, keeping `best` (its weights reference
/// is filled in by `weights::export`).
pub fn detector_manifest(
    opts: &DetectorTrainOptions,
    trained: &Trained<DetectorEpochReport>,
    best: &DetectorEpochReport,
    name: &str,
    command: &str,
) -> crate::model::weights::Manifest {
    let spec = ManifestSpec {
        name,
        architecture: crate::model::weights::Architecture::Detector {
            config: opts.config.clone(),
            preprocess: opts.preprocess.clone(),
        },
        classes: vec!["femoral head".into()],
        phantom_data: format!(
            "{} + {} whole T2 volumes of classic phantom studies (`onfh-edge phantom`), \
             selected, assembled and preprocessed as in the pipeline",
            opts.train_studies, opts.val_studies
        ),
        recipe: format!(
            "{{data}}; {} domain-randomised studies drawn afresh per epoch \
             (`phantom::randomised`, rendered on the input grid), {} fixed ones for \
             validation; boxes are the femoral-head spheres' bounds; augmentation: brightness \
             x0.85-1.15, Gaussian noise sigma 0.02, right-left flips; negatives: 12 % one hip \
             blanked beyond the midline, 8 % noise without anatomy; SimOTA assignment (centre \
             radius {CENTER_RADIUS} cells)",
            opts.randomised, opts.val_randomised,
        ),
        normalisation: opts.preprocess.normalisation(),
        seeds: seeds_text(
            opts.seed,
            opts.train_studies,
            opts.val_studies,
            opts.val_randomised,
        ),
        randomised: opts.randomised,
    };
    manifest(spec, opts.run(), trained, best, command)
}
