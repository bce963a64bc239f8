//! Training the stager on phantom head crops (`onfh-edge train stager`).
//!
//! Studies are generated from seeds — training seeds `seed..seed+n`, validation seeds from
//! `seed + 1_000_000`, never overlapping — cropped around each head's ground-truth centre
//! (`data`), and the network is trained with AdamW (weight decay; learning rate on a cosine
//! schedule, [`cosine_lr`]) on the focal loss, with
//! brightness, noise and crop-centre jitter as augmentation. After every epoch the
//! validation accuracy is measured; the best epoch's weights are kept
//! (`stager.best.safetensors`, f32) and the latest ones too (`stager.last.safetensors`),
//! from which `resume` continues.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarBuilder, VarMap};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::data::{self, CropConfig, HeadSample};
use super::dataset::{self, Split};
use super::stager::{Stager, StagerConfig, focal_loss};
use rayon::prelude::*;

/// Offset of validation seeds from training seeds.
pub const VALIDATION_SEED_OFFSET: u64 = 1_000_000;

/// Offset of the domain-randomised training studies' seeds from the training seed; epoch
/// `e` draws from `RANDOMISED_TRAINING_SEEDS + e * RANDOMISED_EPOCH_STRIDE` on.
pub const RANDOMISED_TRAINING_SEEDS: u64 = 100_000_000;
/// Seeds of one epoch's randomised studies (never more studies per epoch than this).
pub const RANDOMISED_EPOCH_STRIDE: u64 = 1_000_000;
/// Offset of the domain-randomised validation studies' seeds (below the training ones).
pub const RANDOMISED_VALIDATION_SEEDS: u64 = 50_000_000;

/// What to train and how.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// Network architecture.
    pub config: StagerConfig,
    /// Crop geometry (its shape must equal the network's input).
    pub crop: CropConfig,
    /// Training studies (two heads each).
    pub train_studies: usize,
    /// Validation studies.
    pub val_studies: usize,
    /// Domain-randomised studies drawn afresh for every epoch (`phantom::randomised`; two
    /// heads each, with the jitter copies).
    pub randomised: usize,
    /// Domain-randomised validation studies (fixed seeds, crops at the true centres).
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
    /// Focal loss gamma.
    pub gamma: f64,
    /// Extra training crops per head around displaced centres: (copies, sigma mm).
    pub jitter: Option<(usize, f64)>,
    /// Where checkpoints go.
    pub out: PathBuf,
    /// Train and validate on a site's labelled studies (`dataset`: its train and val
    /// splits) instead of the classic phantom's studies.
    pub dataset: Option<PathBuf>,
    /// Fine-tune: start from this model (manifest) or checkpoint instead of random
    /// weights (ignored when resuming).
    pub init: Option<PathBuf>,
    /// Continue from `stager.last.safetensors` in `out`.
    pub resume: bool,
}

/// One epoch's figures.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct EpochReport {
    /// 1-based epoch.
    pub epoch: usize,
    /// Mean training loss.
    pub train_loss: f32,
    /// Mean validation loss.
    pub val_loss: f32,
    /// Validation accuracy (3 classes), classic and randomised together: the selection
    /// criterion.
    pub val_accuracy: f32,
    /// The same on the classic phantom's validation heads alone.
    pub val_classic_accuracy: f32,
    /// The same on the domain-randomised validation heads alone.
    pub val_randomised_accuracy: f32,
    /// Whether this epoch became the best checkpoint.
    pub best: bool,
}

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
    pub dataset: Option<super::dataset::DatasetSummary>,
    /// Wall time of the epochs (data generation before the first epoch excluded).
    pub wall_time: std::time::Duration,
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

/// Generate studies for `seeds` (training scanner styles) under a scratch folder and return
/// their head crops; with `jitter` = `(copies, sigma_mm, rng)`, also crops around displaced
/// centres.
pub fn samples(
    seeds: impl Iterator<Item = u64>,
    crop: &CropConfig,
    scratch: &Path,
    mut jitter: Option<(usize, f64, &mut ChaCha8Rng)>,
) -> anyhow::Result<Vec<HeadSample>> {
    let mut out = Vec::new();
    for seed in seeds {
        let dir = scratch.join(format!("study_{seed}"));
        let study = data::phantom_study(&dir, seed, &data::training_options(seed))?;
        let j = jitter.as_mut().map(|(n, s, r)| (*n, *s, &mut **r));
        out.extend(data::head_samples(&study, crop, j));
        // The DICOM files are not needed once cropped.
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(out)
}

fn to_batch(
    samples: &[&HeadSample],
    shape: [usize; 3],
    rng: Option<&mut ChaCha8Rng>,
) -> candle_core::Result<(Tensor, Tensor)> {
    let [d, h, w] = shape;
    let mut data = Vec::with_capacity(samples.len() * d * h * w);
    let mut labels = Vec::with_capacity(samples.len());
    let mut rng = rng;
    for s in samples {
        match rng.as_deref_mut() {
            Some(r) => {
                let gain: f32 = r.random_range(0.9..1.1);
                let normal = rand_distr::Normal::new(0f32, 0.02).expect("finite sigma");
                data.extend(
                    s.voxels
                        .iter()
                        .map(|x| (x * gain + r.sample(normal)).clamp(0.0, 1.0)),
                );
            }
            None => data.extend_from_slice(&s.voxels),
        }
        labels.push(s.class);
    }
    let n = samples.len();
    Ok((
        Tensor::from_vec(data, (n, d, 1, h, w), &Device::Cpu)?,
        Tensor::from_vec(labels, n, &Device::Cpu)?,
    ))
}

/// Train; `on_step` hears `(batch, batches, loss)` after each step and `progress` each
/// epoch. Returns the reports.
pub fn train_stager(
    opts: &TrainOptions,
    mut on_step: impl FnMut(usize, usize, f32),
    mut progress: impl FnMut(&EpochReport),
) -> anyhow::Result<Trained<EpochReport>> {
    anyhow::ensure!(
        opts.crop.shape == opts.config.input,
        "crop shape {:?} differs from the network input {:?}",
        opts.crop.shape,
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
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed ^ 0x5eed);
    let (train, val, dataset) = match &opts.dataset {
        Some(csv) => {
            let ds = dataset::load(csv, &[Split::Train])?;
            let mut train = Vec::new();
            for s in ds.split(Split::Train) {
                let j = opts.jitter.map(|(n, sd)| (n, sd, &mut rng));
                train.extend(data::head_samples(&s.study, &opts.crop, j));
            }
            let val: Vec<HeadSample> = ds
                .split(Split::Val)
                .flat_map(|s| data::head_samples(&s.study, &opts.crop, None))
                .collect();
            (train, val, Some(ds.summary()))
        }
        None => {
            let train = samples(
                opts.seed..opts.seed + opts.train_studies as u64,
                &opts.crop,
                &scratch,
                opts.jitter.map(|(n, s)| (n, s, &mut rng)),
            )?;
            let vseed = opts.seed + VALIDATION_SEED_OFFSET;
            let val = samples(
                vseed..vseed + opts.val_studies as u64,
                &opts.crop,
                &scratch,
                None,
            )?;
            let _ = std::fs::remove_dir_all(&scratch);
            (train, val, None)
        }
    };
    anyhow::ensure!(
        !val.is_empty() || opts.val_randomised > 0,
        "no validation heads (a dataset needs a val split, or --val-randomised)"
    );
    let started = std::time::Instant::now();
    let n_classic = val.len();
    let mut val = val;
    val.extend(
        (0..opts.val_randomised as u64)
            .into_par_iter()
            .flat_map_iter(|n| {
                data::randomised_head_samples(
                    opts.seed + RANDOMISED_VALIDATION_SEEDS + n,
                    &opts.crop,
                    1,
                    0.0,
                )
            })
            .collect::<Vec<_>>(),
    );

    let mut map = VarMap::new();
    let net = Stager::new(
        &opts.config,
        VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu),
    )?;
    let last = opts.out.join("stager.last.safetensors");
    if opts.resume && last.exists() {
        map.load(&last)?;
    } else if let Some(init) = &opts.init {
        super::weights::init_from(&map, init)?;
    }
    let mut opt = AdamW::new(
        map.all_vars(),
        ParamsAdamW {
            lr: opts.lr,
            weight_decay: opts.weight_decay,
            ..Default::default()
        },
    )?;
    let mut best: Option<(f32, f32)> = None;
    let mut reports = Vec::new();
    let (copies, sigma) = opts.jitter.map(|(n, s)| (n + 1, s)).unwrap_or((1, 0.0));
    let per_epoch = (train.len() + opts.randomised * 2 * copies).div_ceil(opts.batch);
    for epoch in 1..=opts.epochs {
        // Fresh randomised studies every epoch: the network never sees one appearance twice.
        let fresh: Vec<HeadSample> = (0..opts.randomised as u64)
            .into_par_iter()
            .flat_map_iter(|n| {
                let seed = opts.seed
                    + RANDOMISED_TRAINING_SEEDS
                    + (epoch as u64) * RANDOMISED_EPOCH_STRIDE
                    + n;
                data::randomised_head_samples(seed, &opts.crop, copies, sigma)
            })
            .collect();
        let pool: Vec<&HeadSample> = train.iter().chain(fresh.iter()).collect();
        let mut order: Vec<usize> = (0..pool.len()).collect();
        order.shuffle(&mut rng);
        let (mut sum, mut batches) = (0f32, 0usize);
        for chunk in order.chunks(opts.batch) {
            opt.set_learning_rate(cosine_lr(
                opts.lr,
                (epoch - 1) * per_epoch + batches,
                opts.epochs * per_epoch,
            ));
            let items: Vec<&HeadSample> = chunk.iter().map(|&i| pool[i]).collect();
            let (x, y) = to_batch(&items, opts.crop.shape, Some(&mut rng))?;
            let loss = focal_loss(&net.forward_t(&x, true)?, &y, opts.gamma, None)?;
            opt.backward_step(&loss)?;
            let l = loss.to_scalar::<f32>()?;
            sum += l;
            batches += 1;
            on_step(batches, per_epoch, l);
        }
        let (mut vloss, mut correct, mut correct_classic) = (0f32, 0usize, 0usize);
        let mut seen = 0usize;
        for chunk in val.chunks(opts.batch) {
            let items: Vec<&HeadSample> = chunk.iter().collect();
            let (x, y) = to_batch(&items, opts.crop.shape, None)?;
            let logits = net.forward_t(&x, false)?;
            vloss +=
                focal_loss(&logits, &y, opts.gamma, None)?.to_scalar::<f32>()? * items.len() as f32;
            let pred: Vec<u32> = logits.argmax(1)?.to_vec1()?;
            for (p, s) in pred.iter().zip(items.iter()) {
                if *p == s.class {
                    correct += 1;
                    if seen < n_classic {
                        correct_classic += 1;
                    }
                }
                seen += 1;
            }
        }
        let acc = correct as f32 / val.len() as f32;
        let classic_acc = correct_classic as f32 / n_classic.max(1) as f32;
        let randomised_acc =
            (correct - correct_classic) as f32 / (val.len() - n_classic).max(1) as f32;
        let vloss = vloss / val.len() as f32;
        let is_best = best.is_none_or(|(a, l)| acc > a || (acc == a && vloss < l));
        if is_best {
            best = Some((acc, vloss));
            map.save(opts.out.join("stager.best.safetensors"))?;
        }
        map.save(&last)?;
        let report = EpochReport {
            epoch,
            train_loss: sum / batches.max(1) as f32,
            val_loss: vloss,
            val_accuracy: acc,
            val_classic_accuracy: classic_acc,
            val_randomised_accuracy: randomised_acc,
            best: is_best,
        };
        progress(&report);
        reports.push(report);
        Trained {
            reports: reports.clone(),
            dataset: dataset.clone(),
            wall_time: started.elapsed(),
        }
        .save(&opts.out, "stager")?;
    }
    Ok(Trained {
        reports,
        dataset,
        wall_time: started.elapsed(),
    })
}

/// The manifest of a stager trained with `opts`, keeping `best` (its weights reference is
/// filled in by `weights::export`).
pub fn stager_manifest(
    opts: &TrainOptions,
    trained: &Trained<EpochReport>,
    best: &EpochReport,
    name: &str,
    command: &str,
) -> super::weights::Manifest {
    use super::weights::{
        Architecture, INTENDED_USE, MANIFEST_FORMAT, Manifest, Training, WeightsRef,
    };
    let vseed = opts.seed + VALIDATION_SEED_OFFSET;
    Manifest {
        format: MANIFEST_FORMAT,
        name: name.to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        architecture: Architecture::Stager {
            config: opts.config.clone(),
            crop: opts.crop.clone(),
        },
        classes: vec!["stage 0".into(), "stage I".into(), "stage II".into()],
        weights: WeightsRef {
            file: String::new(),
            sha256: String::new(),
            dtype: "f16".into(),
            parameters: 0,
        },
        training: Training {
            command: command.to_owned(),
            data: format!(
                "femoral-head crops, cropped around the true centre (plus {} crops per head \
                 displaced by N(0, {} mm)), right heads mirrored, each crop normalised on its \
                 own, from {}; {} domain-randomised studies drawn afresh per epoch \
                 (`phantom::randomised`, rendered on the crop grid), {} fixed ones for \
                 validation; augmentation: brightness x0.9-1.1, Gaussian noise sigma 0.02; \
                 focal loss gamma {}, AdamW lr {} weight decay {}, batch {}, {} epochs{}",
                opts.jitter.map_or(0, |j| j.0),
                opts.jitter.map_or(0.0, |j| j.1),
                match &trained.dataset {
                    Some(d) => format!("site dataset {} (train and val splits)", d.csv),
                    None => format!(
                        "{} + {} classic phantom studies (`onfh-edge phantom`: T2 selected and \
                         assembled as in the pipeline)",
                        opts.train_studies, opts.val_studies
                    ),
                },
                opts.randomised,
                opts.val_randomised,
                opts.gamma,
                opts.lr,
                opts.weight_decay,
                opts.batch,
                opts.epochs,
                match &opts.init {
                    Some(p) => format!(", fine-tuned from {}", p.display()),
                    None => String::new(),
                }
            ),
            seeds: format!(
                "classic training {}..={}, validation {}..={}; randomised training from {} + \
                 epoch x {}, validation {}..={}",
                opts.seed,
                (opts.seed + opts.train_studies as u64).saturating_sub(1),
                vseed,
                (vseed + opts.val_studies as u64).saturating_sub(1),
                opts.seed + RANDOMISED_TRAINING_SEEDS,
                RANDOMISED_EPOCH_STRIDE,
                opts.seed + RANDOMISED_VALIDATION_SEEDS,
                (opts.seed + RANDOMISED_VALIDATION_SEEDS + opts.val_randomised as u64)
                    .saturating_sub(1)
            ),
            scanner_styles: data::TRAINING_STYLES
                .iter()
                .map(|s| s.to_string())
                .collect(),
            selected: format!(
                "epoch {}: validation accuracy {:.3} (classic {:.3}, randomised {:.3}), validation loss {:.4}",
                best.epoch,
                best.val_accuracy,
                best.val_classic_accuracy,
                best.val_randomised_accuracy,
                best.val_loss
            ),
            normalisation: Some(normalisation_text(&opts.crop.normalisation())),
            randomisation: (opts.randomised > 0)
                .then(|| crate::phantom::randomised::DESCRIPTION.to_owned()),
            dataset: trained.dataset.clone(),
            wall_time: Some(wall_time_text(trained.wall_time)),
        },
        metrics: None,
        intended_use: INTENDED_USE.to_owned(),
    }
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
