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
use super::stager::{Stager, StagerConfig, focal_loss};

/// Offset of validation seeds from training seeds.
pub const VALIDATION_SEED_OFFSET: u64 = 1_000_000;

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
    /// Continue from `stager.last.safetensors` in `out`.
    pub resume: bool,
}

/// One epoch's figures.
#[derive(Debug, Clone, Serialize)]
pub struct EpochReport {
    /// 1-based epoch.
    pub epoch: usize,
    /// Mean training loss.
    pub train_loss: f32,
    /// Mean validation loss.
    pub val_loss: f32,
    /// Validation accuracy (3 classes).
    pub val_accuracy: f32,
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
) -> anyhow::Result<Vec<EpochReport>> {
    anyhow::ensure!(
        opts.crop.shape == opts.config.input,
        "crop shape {:?} differs from the network input {:?}",
        opts.crop.shape,
        opts.config.input
    );
    anyhow::ensure!(
        opts.batch > 0 && opts.train_studies > 0 && opts.val_studies > 0,
        "batch and study counts must be positive"
    );
    std::fs::create_dir_all(&opts.out)?;
    let scratch = opts.out.join("scratch");
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed ^ 0x5eed);
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

    let mut map = VarMap::new();
    let net = Stager::new(
        &opts.config,
        VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu),
    )?;
    let last = opts.out.join("stager.last.safetensors");
    if opts.resume && last.exists() {
        map.load(&last)?;
    }
    let mut opt = AdamW::new(
        map.all_vars(),
        ParamsAdamW {
            lr: opts.lr,
            weight_decay: opts.weight_decay,
            ..Default::default()
        },
    )?;
    let mut order: Vec<usize> = (0..train.len()).collect();
    let mut best: Option<(f32, f32)> = None;
    let mut reports = Vec::new();
    for epoch in 1..=opts.epochs {
        order.shuffle(&mut rng);
        let (mut sum, mut batches) = (0f32, 0usize);
        let per_epoch = train.len().div_ceil(opts.batch);
        for chunk in order.chunks(opts.batch) {
            opt.set_learning_rate(cosine_lr(
                opts.lr,
                (epoch - 1) * per_epoch + batches,
                opts.epochs * per_epoch,
            ));
            let items: Vec<&HeadSample> = chunk.iter().map(|&i| &train[i]).collect();
            let (x, y) = to_batch(&items, opts.crop.shape, Some(&mut rng))?;
            let loss = focal_loss(&net.forward_t(&x, true)?, &y, opts.gamma, None)?;
            opt.backward_step(&loss)?;
            let l = loss.to_scalar::<f32>()?;
            sum += l;
            batches += 1;
            on_step(batches, per_epoch, l);
        }
        let (mut vloss, mut correct) = (0f32, 0usize);
        for chunk in val.chunks(opts.batch) {
            let items: Vec<&HeadSample> = chunk.iter().collect();
            let (x, y) = to_batch(&items, opts.crop.shape, None)?;
            let logits = net.forward_t(&x, false)?;
            vloss +=
                focal_loss(&logits, &y, opts.gamma, None)?.to_scalar::<f32>()? * items.len() as f32;
            let pred: Vec<u32> = logits.argmax(1)?.to_vec1()?;
            correct += pred
                .iter()
                .zip(items.iter())
                .filter(|(p, s)| **p == s.class)
                .count();
        }
        let acc = correct as f32 / val.len() as f32;
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
            best: is_best,
        };
        progress(&report);
        reports.push(report);
    }
    Ok(reports)
}

/// The manifest of a stager trained with `opts`, keeping `best` (its weights reference is
/// filled in by `weights::export`).
pub fn stager_manifest(
    opts: &TrainOptions,
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
                "femoral-head crops from synthetic hip phantom studies (`onfh-edge phantom`): \
                 T2 selected and assembled as in the pipeline, cropped around the true centre \
                 (plus {} crops per head displaced by N(0, {} mm)), right heads mirrored; \
                 augmentation: brightness x0.9-1.1, Gaussian noise sigma 0.02; focal loss gamma {}, \
                 AdamW lr {} weight decay {}, batch {}, {} epochs",
                opts.jitter.map_or(0, |j| j.0),
                opts.jitter.map_or(0.0, |j| j.1),
                opts.gamma,
                opts.lr,
                opts.weight_decay,
                opts.batch,
                opts.epochs
            ),
            seeds: format!(
                "training {}..={}, validation {}..={}",
                opts.seed,
                (opts.seed + opts.train_studies as u64).saturating_sub(1),
                vseed,
                (vseed + opts.val_studies as u64).saturating_sub(1)
            ),
            scanner_styles: data::TRAINING_STYLES
                .iter()
                .map(|s| s.to_string())
                .collect(),
            selected: format!(
                "epoch {}: validation accuracy {:.3}, validation loss {:.4}",
                best.epoch, best.val_accuracy, best.val_loss
            ),
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
