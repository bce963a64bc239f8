//! Training the stager on phantom head crops (`onfh-edge train stager`).
//!
//! Studies are generated from seeds — training seeds `seed..seed+n`, validation seeds from
//! `seed + 1_000_000`, never overlapping — cropped around each head's ground-truth centre
//! (`data`), and the network is trained by the shared loop (`super::fit`: AdamW, cosine
//! schedule) on the focal loss, with
//! brightness, noise and crop-centre jitter as augmentation. After every epoch the
//! validation accuracy is measured; the best epoch's weights are kept
//! (`stager.best.safetensors`, f32) and the latest ones too (`stager.last.safetensors`),
//! from which `resume` continues.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use candle_nn::VarBuilder;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::Serialize;

use super::data::{self, HeadSample};
use super::dataset::{self, Split};
use super::{
    EpochRecord, ManifestSpec, RANDOMISED_EPOCH_STRIDE, RANDOMISED_TRAINING_SEEDS,
    RANDOMISED_VALIDATION_SEEDS, Run, Task, Trained, VALIDATION_SEED_OFFSET, Validation, fit,
    manifest, seeds_text,
};
use crate::model::crop::CropConfig;
use crate::model::stager::{Stager, StagerConfig, focal_loss};

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
        let study = data::phantom_study(&dir, seed, &data::training_options(seed), crop.uses_t1())?;
        let j = jitter.as_mut().map(|(n, s, r)| (*n, *s, &mut **r));
        out.extend(data::head_samples(&study, crop, j));
        // The DICOM files are not needed once cropped.
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(out)
}

/// Crops `(N, D, C, H, W)` and their classes; with `rng`, each crop's channels get their
/// own brightness gain and every voxel Gaussian noise.
fn to_batch(
    samples: &[&HeadSample],
    crop: &CropConfig,
    rng: Option<&mut ChaCha8Rng>,
) -> candle_core::Result<(Tensor, Tensor)> {
    let [d, h, w] = crop.shape;
    let c = crop.channel_count();
    let mut data = Vec::with_capacity(samples.len() * d * c * h * w);
    let mut labels = Vec::with_capacity(samples.len());
    let mut rng = rng;
    for s in samples {
        match rng.as_deref_mut() {
            Some(r) => {
                let gains: Vec<f32> = (0..c).map(|_| r.random_range(0.9..1.1)).collect();
                let normal = rand_distr::Normal::new(0f32, 0.02).expect("finite sigma");
                data.extend(s.voxels.iter().enumerate().map(|(i, x)| {
                    (x * gains[(i / (h * w)) % c] + r.sample(normal)).clamp(0.0, 1.0)
                }));
            }
            None => data.extend_from_slice(&s.voxels),
        }
        labels.push(s.class);
    }
    let n = samples.len();
    Ok((
        Tensor::from_vec(data, (n, d, c, h, w), &Device::Cpu)?,
        Tensor::from_vec(labels, n, &Device::Cpu)?,
    ))
}

/// Train; `on_step` hears `(batch, batches, loss)` after each step and `progress` each
/// epoch. Returns the reports.
pub fn train_stager(
    opts: &TrainOptions,
    on_step: impl FnMut(usize, usize, f32),
    progress: impl FnMut(&EpochReport),
) -> anyhow::Result<Trained<EpochReport>> {
    anyhow::ensure!(
        opts.crop.shape == opts.config.input,
        "crop shape {:?} differs from the network input {:?}",
        opts.crop.shape,
        opts.config.input
    );
    opts.crop.check_channels().map_err(anyhow::Error::msg)?;
    anyhow::ensure!(
        opts.crop.channel_count() == opts.config.in_channels,
        "the crop's channels {:?} differ from the network's {} input channel(s)",
        opts.crop.channels,
        opts.config.in_channels
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
            let ds = dataset::load_with_t1(csv, &[Split::Train], opts.crop.uses_t1())?;
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

    let task = StagerTask {
        opts,
        val,
        n_classic,
    };
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

/// Share of randomised training crops with a T1 whose T2 channel is blanked (modality
/// dropout, training only): a stager widened from a T2-only one otherwise goes on reading
/// the T2 alone and ignores what only the T1 shows.
pub const T2_DROPOUT_WITH_T1: f64 = 0.3;

const DROPOUT_SALT: u64 = 0x6d6f_6464_726f_7031;

/// Blank the T2 channel of [`T2_DROPOUT_WITH_T1`] of the crops that carry a T1, drawn from
/// the study's seed (reproducible).
fn modality_dropout(samples: &mut [HeadSample], crop: &CropConfig, seed: u64) {
    let (shape, channels) = (crop.shape, crop.channel_count());
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ DROPOUT_SALT);
    for s in samples {
        let drop = rng.random_bool(T2_DROPOUT_WITH_T1);
        if drop && data::channel_present(&s.voxels, shape, channels, 1) {
            data::blank_channel(&mut s.voxels, shape, channels, 0);
        }
    }
}

impl TrainOptions {
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

/// The stager's part of the loop: head crops, the focal loss, accuracy on the validation
/// heads (classic first, then randomised).
struct StagerTask<'a> {
    opts: &'a TrainOptions,
    val: Vec<HeadSample>,
    n_classic: usize,
}

impl Task for StagerTask<'_> {
    type Sample = HeadSample;
    type Net = Stager;
    type Report = EpochReport;
    const KIND: &'static str = "stager";
    const WIDENABLE: &'static [&'static str] = &["stem.conv.weight"];

    fn build(&self, vb: VarBuilder) -> candle_core::Result<Stager> {
        Stager::new(&self.opts.config, vb)
    }

    fn fresh(&self, epoch: usize) -> Vec<HeadSample> {
        let o = self.opts;
        let (copies, sigma) = o.jitter.map(|(n, s)| (n + 1, s)).unwrap_or((1, 0.0));
        (0..o.randomised as u64)
            .into_par_iter()
            .flat_map_iter(|n| {
                let seed = o.seed
                    + RANDOMISED_TRAINING_SEEDS
                    + (epoch as u64) * RANDOMISED_EPOCH_STRIDE
                    + n;
                let mut samples = data::randomised_head_samples(seed, &o.crop, copies, sigma);
                if o.crop.uses_t1() {
                    modality_dropout(&mut samples, &o.crop, seed);
                }
                samples
            })
            .collect()
    }

    fn fresh_per_epoch(&self) -> usize {
        let copies = self.opts.jitter.map_or(1, |(n, _)| n + 1);
        self.opts.randomised * 2 * copies
    }

    fn loss(
        &self,
        net: &Stager,
        items: &[&HeadSample],
        rng: &mut ChaCha8Rng,
    ) -> candle_core::Result<Tensor> {
        let (x, y) = to_batch(items, &self.opts.crop, Some(rng))?;
        focal_loss(&net.forward_t(&x, true)?, &y, self.opts.gamma, None)
    }

    fn validate(
        &self,
        net: &Stager,
        epoch: usize,
        train_loss: f32,
    ) -> candle_core::Result<Validation<EpochReport>> {
        let (val, n_classic) = (&self.val, self.n_classic);
        let (mut vloss, mut correct, mut correct_classic) = (0f32, 0usize, 0usize);
        let mut seen = 0usize;
        for chunk in val.chunks(self.opts.batch) {
            let items: Vec<&HeadSample> = chunk.iter().collect();
            let (x, y) = to_batch(&items, &self.opts.crop, None)?;
            let logits = net.forward_t(&x, false)?;
            vloss += focal_loss(&logits, &y, self.opts.gamma, None)?.to_scalar::<f32>()?
                * items.len() as f32;
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
        let vloss = vloss / val.len() as f32;
        Ok(Validation {
            score: acc,
            tie_break: vloss,
            report: EpochReport {
                epoch,
                train_loss,
                val_loss: vloss,
                val_accuracy: acc,
                val_classic_accuracy: correct_classic as f32 / n_classic.max(1) as f32,
                val_randomised_accuracy: (correct - correct_classic) as f32
                    / (val.len() - n_classic).max(1) as f32,
                best: false,
            },
        })
    }
}

impl EpochRecord for EpochReport {
    fn is_best(&self) -> bool {
        self.best
    }

    fn mark_best(&mut self) {
        self.best = true;
    }

    fn selected(&self) -> String {
        format!(
            "epoch {}: validation accuracy {:.3} (classic {:.3}, randomised {:.3}), validation loss {:.4}",
            self.epoch,
            self.val_accuracy,
            self.val_classic_accuracy,
            self.val_randomised_accuracy,
            self.val_loss
        )
    }
}

impl std::fmt::Display for EpochReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "epoch {:>3}  train loss {:.4}  val loss {:.4}  val accuracy {:.3} (classic {:.3}, randomised {:.3}){}",
            self.epoch,
            self.train_loss,
            self.val_loss,
            self.val_accuracy,
            self.val_classic_accuracy,
            self.val_randomised_accuracy,
            if self.best { "  (best)" } else { "" }
        )
    }
}

/// The manifest of a stager trained with `opts`, keeping `best` (its weights reference is
/// filled in by `weights::export`).
pub fn stager_manifest(
    opts: &TrainOptions,
    trained: &Trained<EpochReport>,
    best: &EpochReport,
    name: &str,
    command: &str,
) -> crate::model::weights::Manifest {
    let spec = ManifestSpec {
        name,
        architecture: crate::model::weights::Architecture::Stager {
            config: opts.config.clone(),
            crop: opts.crop.clone(),
        },
        classes: vec!["stage 0".into(), "stage I".into(), "stage II".into()],
        phantom_data: format!(
            "{} + {} classic phantom studies (`onfh-edge phantom`: T2{} selected and assembled \
             as in the pipeline)",
            opts.train_studies,
            opts.val_studies,
            if opts.crop.uses_t1() {
                " and its T1 companion"
            } else {
                ""
            }
        ),
        recipe: format!(
            "femoral-head crops{}, cropped around the true centre (plus {} crops per head \
             displaced by N(0, {} mm)), right heads mirrored, each crop normalised on its own, \
             from {{data}}; {} domain-randomised studies drawn afresh per epoch \
             (`phantom::randomised`, rendered on the crop grid), {} fixed ones for \
             validation; augmentation: brightness x0.9-1.1, Gaussian noise sigma 0.02; focal \
             loss gamma {}",
            if opts.crop.uses_t1() {
                format!(
                    " of two channels, the T2 and its T1 companion on the same grid (zeros \
                     where a study has none or it covers under {:.0} % of the crop; a T2-only \
                     stem given --init is widened with the T1's weights from zero)",
                    100.0 * crate::model::crop::MIN_T1_COVERAGE
                )
            } else {
                String::new()
            },
            opts.jitter.map_or(0, |j| j.0),
            opts.jitter.map_or(0.0, |j| j.1),
            opts.randomised,
            opts.val_randomised,
            opts.gamma,
        ),
        normalisation: opts.crop.normalisation(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::crop::Channel;

    #[test]
    fn modality_dropout_blanks_the_t2_of_some_crops_with_a_t1_and_nothing_else() {
        let mut crop = CropConfig::small();
        crop.channels = vec![Channel::T2, Channel::T1];
        let (shape, channels) = (crop.shape, 2);
        let (mut with_t1, mut blanked) = (0, 0);
        for seed in 0..40u64 {
            let before = data::randomised_head_samples(seed, &crop, 1, 0.0);
            let mut after = before.clone();
            modality_dropout(&mut after, &crop, seed);
            for (b, a) in before.iter().zip(&after) {
                let t1 = data::channel_present(&b.voxels, shape, channels, 1);
                let t2_kept = data::channel_present(&a.voxels, shape, channels, 0);
                assert!(data::channel_present(&b.voxels, shape, channels, 0));
                with_t1 += t1 as usize;
                if !t2_kept {
                    assert!(t1, "a crop without a T1 keeps its T2");
                    blanked += 1;
                    // The T1 channel and the label are untouched.
                    let mut expect = b.voxels.clone();
                    data::blank_channel(&mut expect, shape, channels, 0);
                    assert_eq!(a.voxels, expect);
                } else {
                    assert_eq!(a.voxels, b.voxels);
                }
                assert_eq!(a.class, b.class);
            }
        }
        let share = blanked as f64 / with_t1 as f64;
        assert!(with_t1 > 40, "{with_t1} crops with a T1");
        assert!(
            (0.12..0.5).contains(&share),
            "{blanked} of {with_t1} blanked"
        );
    }
}
