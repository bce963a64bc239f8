//! Training the networks, and the data they learn from (`onfh-edge train detector|stager`).
//!
//! - `data`: phantom studies as training samples — whole preprocessed volumes with the
//!   heads' boxes for the detector, head crops with their stage for the stager, classic
//!   (DICOM written, selected and assembled as the pipeline does) and domain-randomised
//!   (`phantom::randomised`, rendered straight onto the model grid);
//! - `dataset`: a site's labelled studies (`--dataset CSV`);
//! - `stager`, `detector`: what each network trains on, its batches and augmentation, its
//!   validation and its manifest;
//! - here: the one training loop both use ([`fit`]: AdamW on a cosine schedule, the best
//!   epoch kept by a validation score, checkpoints and the run record after every epoch,
//!   resume and fine-tuning), the seed plan and the texts manifests state.
//!
//! Nothing on the inference path imports this module; it imports the models, the phantom
//! and the volume stage. The evaluation of trained models is `eval`.

pub mod data;
pub mod dataset;
pub mod detector;
pub mod stager;

use std::path::Path;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarBuilder, VarMap};
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Offset of validation seeds from training seeds.
pub const VALIDATION_SEED_OFFSET: u64 = 1_000_000;

/// Offset of the domain-randomised training studies' seeds from the training seed; epoch
/// `e` draws from `RANDOMISED_TRAINING_SEEDS + e * RANDOMISED_EPOCH_STRIDE` on.
pub const RANDOMISED_TRAINING_SEEDS: u64 = 100_000_000;
/// Seeds of one epoch's randomised studies (never more studies per epoch than this).
pub const RANDOMISED_EPOCH_STRIDE: u64 = 1_000_000;
/// Offset of the domain-randomised validation studies' seeds (below the training ones).
pub const RANDOMISED_VALIDATION_SEEDS: u64 = 50_000_000;

/// The learning rate at `step` of `total`: a linear warm-up over the first 5 % of the
/// steps, then cosine decay from `base` to 2 % of it.
pub fn cosine_lr(base: f64, step: usize, total: usize) -> f64 {
    let total = total.max(1) as f64;
    let warm = (total * 0.05).max(1.0);
    let s = step as f64;
    if s < warm {
        return base * (s + 1.0) / warm;
    }
    let t = ((s - warm) / (total - warm).max(1.0)).clamp(0.0, 1.0);
    base * (0.02 + 0.98 * 0.5 * (1.0 + (std::f64::consts::PI * t).cos()))
}

/// What a training run gives back besides its checkpoints; also kept beside them as
/// `<kind>.trained.json` after every epoch, so that `--export-only` can export the best
/// epoch of a run that was not asked to.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Trained<R> {
    /// One report per epoch.
    pub reports: Vec<R>,
    /// The site dataset trained on, if any.
    pub dataset: Option<dataset::DatasetSummary>,
    /// Wall time of the epochs (data generation before the first epoch excluded).
    pub wall_time: std::time::Duration,
}

/// One epoch's report, as the loop, the run record and the commands see it: printed as
/// one line, and marked when it became the best checkpoint.
pub trait EpochRecord: Clone + Serialize + DeserializeOwned + std::fmt::Display {
    /// Whether this epoch became the best checkpoint.
    fn is_best(&self) -> bool;
    /// Mark it so.
    fn mark_best(&mut self);
    /// Why this epoch was selected, as the manifest states it.
    fn selected(&self) -> String;
}

impl<R: EpochRecord> Trained<R> {
    /// The epoch kept as `<kind>.best.safetensors` (the last one marked best).
    pub fn best(&self) -> Option<&R> {
        self.reports.iter().rev().find(|r| r.is_best())
    }
}

/// What a manifest says of a network beyond the run: its identity, its data and how the
/// kept epoch was chosen.
pub struct ManifestSpec<'a> {
    /// Model name (`3d-muldensenet-small`, …).
    pub name: &'a str,
    /// The architecture and its input.
    pub architecture: crate::model::weights::Architecture,
    /// Output classes.
    pub classes: Vec<String>,
    /// The training data of a phantom run (a site dataset's run names the dataset instead).
    pub phantom_data: String,
    /// What the network sees and how it learns (samples, augmentation, loss), with
    /// `{data}` where the training studies are named; the schedule follows from the run.
    pub recipe: String,
    /// The intensity steps before the network.
    pub normalisation: crate::volume::preprocess::Normalisation,
    /// The seed plan.
    pub seeds: String,
    /// Domain-randomised studies per epoch (0: none).
    pub randomised: usize,
}

/// The manifest of a network trained in `run`, keeping `best` (its weights reference is
/// filled in by `weights::export`); `command` is the command that trains it.
pub fn manifest<R: EpochRecord>(
    spec: ManifestSpec<'_>,
    run: Run<'_>,
    trained: &Trained<R>,
    best: &R,
    command: &str,
) -> crate::model::weights::Manifest {
    use crate::model::weights::{INTENDED_USE, MANIFEST_FORMAT, Manifest, Training, WeightsRef};
    let data = match &trained.dataset {
        Some(d) => format!("site dataset {} (train and val splits)", d.csv),
        None => spec.phantom_data,
    };
    let randomisation = (spec.randomised > 0).then(|| {
        let mut text = crate::phantom::randomised::DESCRIPTION.to_owned();
        if let crate::model::weights::Architecture::Stager { crop, .. } = &spec.architecture
            && crop.uses_t1()
        {
            text.push_str("; ");
            text.push_str(crate::phantom::randomised::T1_DESCRIPTION);
            text.push_str(&format!(
                "; in training, {:.0} % of the crops that carry a T1 have their T2 channel \
                 blanked (modality dropout)",
                stager::T2_DROPOUT_WITH_T1 * 100.0
            ));
        }
        text
    });
    Manifest {
        format: MANIFEST_FORMAT,
        name: spec.name.to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        architecture: spec.architecture,
        classes: spec.classes,
        weights: WeightsRef {
            file: String::new(),
            sha256: String::new(),
            dtype: "f16".into(),
            parameters: 0,
        },
        training: Training {
            command: command.to_owned(),
            data: format!(
                "{}, AdamW lr {} weight decay {}, batch {}, {} epochs{}",
                spec.recipe.replace("{data}", &data),
                run.lr,
                run.weight_decay,
                run.batch,
                run.epochs,
                match run.init {
                    Some(p) => format!(", fine-tuned from {}", p.display()),
                    None => String::new(),
                }
            ),
            seeds: spec.seeds,
            scanner_styles: data::TRAINING_STYLES
                .iter()
                .map(|s| s.to_string())
                .collect(),
            selected: best.selected(),
            normalisation: Some(normalisation_text(&spec.normalisation)),
            randomisation,
            dataset: trained.dataset.clone(),
            wall_time: Some(wall_time_text(trained.wall_time)),
        },
        metrics: None,
        intended_use: INTENDED_USE.to_owned(),
    }
}

impl<R: Serialize + serde::de::DeserializeOwned> Trained<R> {
    /// Keep the run's record as `<kind>.trained.json` in `out`.
    pub fn save(&self, out: &Path, kind: &str) -> anyhow::Result<()> {
        let path = out.join(format!("{kind}.trained.json"));
        std::fs::write(&path, serde_json::to_vec_pretty(self)?)?;
        Ok(())
    }

    /// The record a run left in `out`.
    pub fn load(out: &Path, kind: &str) -> anyhow::Result<Self> {
        use anyhow::Context;
        let path = out.join(format!("{kind}.trained.json"));
        let bytes = std::fs::read(&path)
            .with_context(|| format!("{}: no record of a training run", path.display()))?;
        serde_json::from_slice(&bytes).with_context(|| format!("{}", path.display()))
    }
}

/// The intensity steps as a manifest states them.
pub fn normalisation_text(n: &crate::volume::preprocess::Normalisation) -> String {
    match n.percentiles {
        Some([lo, hi]) => format!(
            "robust per-volume: percentiles {lo}-{hi} of the body's intensities (voxels above a \
             tenth of the 99th percentile) mapped onto {} .. {}, then window level {} width {}",
            n.reference[0], n.reference[1], n.window_level, n.window_width
        ),
        None => format!(
            "none: window level {} width {} on the stored intensities",
            n.window_level, n.window_width
        ),
    }
}

/// A duration as a manifest states it.
pub fn wall_time_text(d: std::time::Duration) -> String {
    let s = d.as_secs();
    format!(
        "{} min {} s on {} CPU threads",
        s / 60,
        s % 60,
        rayon::current_num_threads()
    )
}

/// The seed plan as a manifest states it.
pub fn seeds_text(
    seed: u64,
    train_studies: usize,
    val_studies: usize,
    val_randomised: usize,
) -> String {
    let vseed = seed + VALIDATION_SEED_OFFSET;
    format!(
        "classic training {}..={}, validation {}..={}; randomised training from {} + \
         epoch x {}, validation {}..={}",
        seed,
        (seed + train_studies as u64).saturating_sub(1),
        vseed,
        (vseed + val_studies as u64).saturating_sub(1),
        seed + RANDOMISED_TRAINING_SEEDS,
        RANDOMISED_EPOCH_STRIDE,
        seed + RANDOMISED_VALIDATION_SEEDS,
        (seed + RANDOMISED_VALIDATION_SEEDS + val_randomised as u64).saturating_sub(1)
    )
}

/// The schedule and checkpoints of one run, as both networks' options give them.
#[derive(Debug, Clone, Copy)]
pub struct Run<'a> {
    /// Epochs.
    pub epochs: usize,
    /// Batch size.
    pub batch: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// AdamW weight decay.
    pub weight_decay: f64,
    /// Where checkpoints and the run record go.
    pub out: &'a Path,
    /// Fine-tune from this model (manifest) or checkpoint (ignored when resuming).
    pub init: Option<&'a Path>,
    /// Continue from `<kind>.last.safetensors` in `out`.
    pub resume: bool,
}

/// One validation pass: the selection score (higher is better), its tie-break (lower is
/// better), and the epoch's report.
pub struct Validation<R> {
    /// Selection score.
    pub score: f32,
    /// Tie-break.
    pub tie_break: f32,
    /// The epoch's report (marked by [`EpochRecord::mark_best`] when it is the best).
    pub report: R,
}

/// What the loop needs to know about one network's training.
pub trait Task {
    /// A training item.
    type Sample: Send + Sync;
    /// The network.
    type Net;
    /// One epoch's figures.
    type Report: EpochRecord;
    /// Names the checkpoints (`<KIND>.best.safetensors`, `<KIND>.last.safetensors`) and
    /// the run record (`<KIND>.trained.json`).
    const KIND: &'static str;
    /// Variables that `--init` may widen with zero input channels (a T1 channel added to a
    /// T2-only stager); none by default.
    const WIDENABLE: &'static [&'static str] = &[];
    /// The network on `vb`.
    fn build(&self, vb: VarBuilder) -> candle_core::Result<Self::Net>;
    /// Domain-randomised samples drawn afresh for `epoch` (never one appearance twice).
    fn fresh(&self, epoch: usize) -> Vec<Self::Sample>;
    /// How many samples [`Task::fresh`] gives per epoch (for the learning-rate schedule).
    fn fresh_per_epoch(&self) -> usize;
    /// The loss of one training batch (augmentation drawn from `rng`).
    fn loss(
        &self,
        net: &Self::Net,
        items: &[&Self::Sample],
        rng: &mut ChaCha8Rng,
    ) -> candle_core::Result<Tensor>;
    /// Validate after `epoch`, whose mean training loss was `train_loss`.
    fn validate(
        &self,
        net: &Self::Net,
        epoch: usize,
        train_loss: f32,
    ) -> candle_core::Result<Validation<Self::Report>>;
}

/// The training loop: AdamW with the learning rate on [`cosine_lr`] over every step of
/// the run, each epoch on `train` plus the task's fresh samples in a shuffled order, then
/// validation; the best epoch (score, then tie-break) is kept as `<kind>.best.safetensors`,
/// the latest as `<kind>.last.safetensors`, and the record as `<kind>.trained.json` after
/// every epoch. `on_step` hears `(batch, batches, loss)`, `progress` each epoch's report.
#[allow(clippy::too_many_arguments)]
pub fn fit<T: Task>(
    task: &T,
    run: Run<'_>,
    train: &[T::Sample],
    mut rng: ChaCha8Rng,
    dataset: Option<dataset::DatasetSummary>,
    started: Instant,
    mut on_step: impl FnMut(usize, usize, f32),
    mut progress: impl FnMut(&T::Report),
) -> anyhow::Result<Trained<T::Report>> {
    let mut map = VarMap::new();
    let net = task.build(VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu))?;
    let last = run.out.join(format!("{}.last.safetensors", T::KIND));
    if run.resume && last.exists() {
        map.load(&last)?;
    } else if let Some(init) = run.init {
        let (_, notes) = crate::model::weights::init_from_widening(&map, init, T::WIDENABLE)?;
        for n in notes {
            eprintln!("initialised from {}: {n}", init.display());
        }
    }
    let mut opt = AdamW::new(
        map.all_vars(),
        ParamsAdamW {
            lr: run.lr,
            weight_decay: run.weight_decay,
            ..Default::default()
        },
    )?;
    let mut best: Option<(f32, f32)> = None;
    let mut reports = Vec::new();
    let per_epoch = (train.len() + task.fresh_per_epoch()).div_ceil(run.batch);
    for epoch in 1..=run.epochs {
        let fresh = task.fresh(epoch);
        let pool: Vec<&T::Sample> = train.iter().chain(fresh.iter()).collect();
        let mut order: Vec<usize> = (0..pool.len()).collect();
        order.shuffle(&mut rng);
        let (mut sum, mut batches) = (0f32, 0usize);
        for chunk in order.chunks(run.batch) {
            opt.set_learning_rate(cosine_lr(
                run.lr,
                (epoch - 1) * per_epoch + batches,
                run.epochs * per_epoch,
            ));
            let items: Vec<&T::Sample> = chunk.iter().map(|&i| pool[i]).collect();
            let loss = task.loss(&net, &items, &mut rng)?;
            opt.backward_step(&loss)?;
            let l = loss.to_scalar::<f32>()?;
            sum += l;
            batches += 1;
            on_step(batches, per_epoch, l);
        }
        let mut v = task.validate(&net, epoch, sum / batches.max(1) as f32)?;
        let is_best = best.is_none_or(|(s, t)| v.score > s || (v.score == s && v.tie_break < t));
        if is_best {
            best = Some((v.score, v.tie_break));
            v.report.mark_best();
            map.save(run.out.join(format!("{}.best.safetensors", T::KIND)))?;
        }
        map.save(&last)?;
        progress(&v.report);
        reports.push(v.report);
        Trained {
            reports: reports.clone(),
            dataset: dataset.clone(),
            wall_time: started.elapsed(),
        }
        .save(run.out, T::KIND)?;
    }
    Ok(Trained {
        reports,
        dataset,
        wall_time: started.elapsed(),
    })
}

#[cfg(test)]
mod tests {
    use super::cosine_lr;

    #[test]
    fn cosine_schedule_warms_up_then_decays() {
        let total = 100;
        assert!(cosine_lr(1.0, 0, total) < 0.3);
        assert!((cosine_lr(1.0, 4, total) - 1.0).abs() < 1e-9);
        assert!(cosine_lr(1.0, 50, total) < cosine_lr(1.0, 20, total));
        assert!((cosine_lr(1.0, 99, total) - 0.02).abs() < 1e-3);
    }
}
