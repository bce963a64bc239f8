//! Training and test data from phantom studies: whole preprocessed volumes with the heads'
//! boxes for the detector, femoral-head crops with their stage for the stager.
//!
//! Scanner settings are split: training and validation studies use the styles in
//! [`TRAINING_STYLES`]; the held-out test set uses [`HELD_OUT_STYLE`] (another vendor's tags
//! and series names, another noise level and a stored-value rescale slope of 2.5) and seeds
//! from [`TEST_SEED_BASE`], which training never draws.
//!
//! A crop is sampled from the assembled T2 volume on the canonical grid (`volume::resample`)
//! around a head centre — the ground truth in training, the detector's box in use — and
//! windowed like the model input. Right heads are mirrored right-left into the left head's
//! frame, so that the stager always sees one anatomy (lateral to the same side); the
//! pipeline does the same at inference. Flips are not used as augmentation for the same
//! reason (and because the lesions are anterosuperior: an anterior-posterior or
//! superior-inferior flip would teach the wrong anatomy); augmentation is brightness, noise
//! and a small jitter of the crop centre.
//!
//! Domain-randomised samples (`phantom::randomised`) are rendered straight onto the model
//! grids from a seed: the detector's volume, the stager's head crops, and the study's T2 at
//! 2 mm for the sphere fit where the pipeline has the assembled series
//! (`randomised_t2`, used by `evaluate-models --randomised`).

use std::path::Path;

use crate::model::crop::{CropConfig, MIN_T1_COVERAGE, crop_channels, interleave};
use crate::model::detector::VoxelBox;
use crate::phantom::{self, StudyTruth, anatomy::Stage, randomised};
use crate::result::Side;
use crate::volume::preprocess::normalise;
use crate::volume::{self, Preprocess, Volume};

/// Scanner styles of training and validation studies.
pub const TRAINING_STYLES: [&str; 2] = ["siemens-like 3T", "ge-like 1.5T"];

/// The scanner style of the held-out test set, never used in training.
pub const HELD_OUT_STYLE: &str = "philips-like 1.5T";

/// First seed of the held-out test set (training seeds stay below it).
pub const TEST_SEED_BASE: u64 = 9_000_000;

/// First seed of the external test set (`evalphantom`), by default.
pub const EXTERNAL_SEED_BASE: u64 = 7_000_000;

/// Phantom options of a training or validation study.
pub fn training_options(seed: u64) -> phantom::Options {
    phantom::Options {
        style: Some(TRAINING_STYLES[(seed % 2) as usize]),
        ..Default::default()
    }
}

/// Phantom options of a held-out test study.
pub fn test_options() -> phantom::Options {
    phantom::Options {
        style: Some(HELD_OUT_STYLE),
        ..Default::default()
    }
}

/// One head crop and its label.
#[derive(Debug, Clone)]
pub struct HeadSample {
    /// Windowed voxels, (D, C, H, W) row-major (C the crop's channels: the T2, and the
    /// T1 companion for a stager that reads one), right heads mirrored.
    pub voxels: Vec<f32>,
    /// Class index: 0, 1, 2 for stage 0, I, II.
    pub class: u32,
    /// The head's side.
    pub side: Side,
    /// The phantom seed of the study.
    pub seed: u64,
}

/// Class index of a stage.
pub fn class_of(stage: Stage) -> u32 {
    match stage {
        Stage::S0 => 0,
        Stage::S1 => 1,
        Stage::S2 => 2,
    }
}

/// Why samples could not be made.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The phantom failed.
    #[error(transparent)]
    Phantom(#[from] phantom::PhantomError),
    /// A study's T2 could not be selected or assembled.
    #[error("study {seed}")]
    T2 {
        /// The study seed.
        seed: u64,
        /// Why.
        source: volume::T2Error,
    },
    /// Files could not be listed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// A generated phantom study: its truth and its assembled T2 volume.
#[derive(Debug, Clone)]
pub struct PhantomStudy {
    /// The phantom's truth.
    pub truth: StudyTruth,
    /// The selected T2 series, assembled (patient mm affine).
    pub volume: Volume,
    /// Its T1 companion (`volume::select_t1`), when the study has one that assembles.
    pub t1: Option<Volume>,
}

/// Generate phantom study `seed` under `dir`, then select and assemble its T2 series (and,
/// when `want_t1`, its T1 companion) the way the pipeline does.
pub fn phantom_study(
    dir: &Path,
    seed: u64,
    options: &phantom::Options,
    want_t1: bool,
) -> Result<PhantomStudy, DataError> {
    let truth: StudyTruth = phantom::generate_study(dir, seed, options)?;
    assemble_study(dir, truth, want_t1)
}

/// Select and assemble the T2 of a study already written under `dir` (by either phantom
/// family) the way the pipeline does, and its T1 companion when `want_t1` (a stager with
/// a T1 channel).
pub fn assemble_study(
    dir: &Path,
    truth: StudyTruth,
    want_t1: bool,
) -> Result<PhantomStudy, DataError> {
    let seed = truth.seed;
    let (volume, t1) = volume::assemble_t2_t1_in(dir, &volume::Rules::default(), want_t1)
        .map_err(|source| DataError::T2 { seed, source })?;
    Ok(PhantomStudy { truth, volume, t1 })
}

/// The two head crops of a study; with `jitter`, `(copies, sigma_mm)` extra crops per head
/// whose centres are displaced by Gaussian noise (the detector's centre is not exact).
pub fn head_samples(
    study: &PhantomStudy,
    cfg: &CropConfig,
    jitter: Option<(usize, f64, &mut rand_chacha::ChaCha8Rng)>,
) -> Vec<HeadSample> {
    use rand::Rng;
    let mut out = Vec::new();
    let mut jitter = jitter;
    for h in &study.truth.heads {
        let mut centers = vec![h.center_lps_mm];
        if let Some((copies, sigma, rng)) = jitter.as_mut() {
            let normal = rand_distr::Normal::new(0.0, *sigma).expect("finite sigma");
            for _ in 0..*copies {
                let c = h.center_lps_mm;
                centers.push([0, 1, 2].map(|a| c[a] + rng.sample(normal)));
            }
        }
        for c in centers {
            let mirror = h.side == Side::Right;
            out.push(HeadSample {
                voxels: crop_channels(&study.volume, study.t1.as_ref(), c, mirror, cfg).0,
                class: class_of(h.stage),
                side: h.side,
                seed: study.truth.seed,
            });
        }
    }
    out
}

/// Generate the phantom study `seed` (training styles) under `dir` and return its two
/// head crops.
pub fn study_samples(
    dir: &Path,
    seed: u64,
    cfg: &CropConfig,
) -> Result<Vec<HeadSample>, DataError> {
    let study = phantom_study(dir, seed, &training_options(seed), cfg.uses_t1())?;
    Ok(head_samples(&study, cfg, None))
}

/// One study for the detector: the model input and the heads' true boxes.
#[derive(Debug, Clone)]
pub struct DetectorSample {
    /// The preprocessed volume (windowed to [0, 1]; its affine maps to patient mm).
    pub volume: Volume,
    /// True boxes in voxels, (d, h, w) order: the head's sphere's bounding box.
    pub boxes: Vec<VoxelBox>,
    /// The heads' truth (centre and radius in mm, side, stage).
    pub heads: Vec<phantom::HeadTruth>,
    /// The phantom seed.
    pub seed: u64,
}

/// The detector's sample of a study.
pub fn detector_sample(study: &PhantomStudy, pre: &Preprocess) -> DetectorSample {
    let volume = volume::preprocess(&study.volume, pre);
    DetectorSample {
        boxes: head_boxes(&volume, &study.truth.heads),
        volume,
        heads: study.truth.heads.clone(),
        seed: study.truth.seed,
    }
}

/// The heads' spheres' bounding boxes in the voxels of `volume`, (d, h, w) order.
fn head_boxes(volume: &Volume, heads: &[phantom::HeadTruth]) -> Vec<VoxelBox> {
    let sp = volume.spacing();
    heads
        .iter()
        .map(|h| {
            let v = volume.patient_to_voxel(h.center_lps_mm);
            VoxelBox {
                center: [v[2], v[1], v[0]],
                size: [sp[2], sp[1], sp[0]].map(|s| 2.0 * h.radius_mm / s),
                score: 1.0,
            }
        })
        .collect()
}

/// A domain-randomised detector sample (`phantom::randomised`), drawn from `seed`:
/// rendered straight onto the preprocessing grid, centred on the drawn series centre, and
/// normalised exactly as `volume::preprocess` does.
pub fn randomised_detector_sample(seed: u64, pre: &Preprocess) -> DetectorSample {
    let (heads, mut volume, inside) = randomised_volume(seed, pre, pre.shape);
    normalise(&mut volume.data, &inside, &pre.normalisation());
    DetectorSample {
        boxes: head_boxes(&volume, &heads),
        volume,
        heads,
        seed,
    }
}

/// The T2 of the domain-randomised study drawn from `seed` (as
/// [`randomised_detector_sample`] draws it) at [`RANDOMISED_T2_MM`] over the same field of
/// view: what the sphere fit (`model::sphere`) looks at, where the pipeline has the
/// assembled series. Signal units, not normalised (the fit needs none).
pub fn randomised_t2(seed: u64, pre: &Preprocess) -> Volume {
    let shape = pre
        .field_of_view_mm
        .map(|f| (f / RANDOMISED_T2_MM).round().max(1.0) as usize);
    randomised_volume(seed, pre, shape).1
}

/// The study drawn from `seed`, rendered on a grid of `shape` (D, H, W) over the
/// preprocessing field of view around the drawn series centre: its heads, the volume (not
/// normalised), and which voxels lie inside the acquired region.
fn randomised_volume(
    seed: u64,
    pre: &Preprocess,
    shape: [usize; 3],
) -> (Vec<phantom::HeadTruth>, Volume, Vec<bool>) {
    use rand::SeedableRng;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let scene = randomised::draw_scene(&mut rng, None);
    let acq = randomised::draw_acquisition(&mut rng, &scene);
    let c = acq.center;
    let center = [0, 1, 2].map(|a| c[a] + pre.center_offset_mm[a]);
    let grid = randomised::Grid::canonical(center, pre.field_of_view_mm, shape);
    let (data, inside) = randomised::render(&scene, &acq, &grid, seed);
    let [d, h, w] = shape;
    let volume = Volume {
        data,
        dims: [w, h, d],
        affine: grid.affine,
        series_uid: String::new(),
        study_uid: String::new(),
    };
    (scene.heads, volume, inside)
}

/// Voxel size of [`randomised_t2`], mm.
pub const RANDOMISED_T2_MM: f64 = 2.0;

/// Share of randomised studies drawn without a T1 companion (for a stager with a T1
/// channel): it must also read studies that have none.
pub const RANDOMISED_T1_ABSENT: f64 = 0.2;

/// Salt of the T1 companion's draws, apart from the T2's stream (whether a T1 is drawn
/// does not change the T2's scene, acquisition or jitter).
const T1_SALT: u64 = 0x7131_c0a1_d00d_0001;

/// Whether channel `c` of an interleaved crop (`interleave`'s layout, `channels` channels
/// of `shape`) holds any signal (a T1 channel is all zero where the study has none).
pub fn channel_present(voxels: &[f32], shape: [usize; 3], channels: usize, c: usize) -> bool {
    let plane = shape[1] * shape[2];
    (0..shape[0]).any(|k| {
        let at = (k * channels + c) * plane;
        voxels[at..at + plane].iter().any(|&v| v != 0.0)
    })
}

/// Blank channel `c` of an interleaved crop (all zero, as a T1 channel without a T1).
pub fn blank_channel(voxels: &mut [f32], shape: [usize; 3], channels: usize, c: usize) {
    let plane = shape[1] * shape[2];
    for k in 0..shape[0] {
        let at = (k * channels + c) * plane;
        voxels[at..at + plane].fill(0.0);
    }
}

/// Domain-randomised head crops of the study drawn from `seed`: per head, `copies` crops
/// around the true centre displaced by N(0, `jitter_mm`) (the first one undisplaced),
/// rendered on the crop's grid, normalised as `crop` does and mirrored for right heads.
/// For a crop with a T1 channel, the T1 companion (`randomised::draw_t1_pair`,
/// none in [`RANDOMISED_T1_ABSENT`] of studies) on the same grid, as `crop_channels` does.
pub fn randomised_head_samples(
    seed: u64,
    cfg: &CropConfig,
    copies: usize,
    jitter_mm: f64,
) -> Vec<HeadSample> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let scene = randomised::draw_scene(&mut rng, None);
    let acq = randomised::draw_acquisition(&mut rng, &scene);
    // The T1 companion, and the T2 as it looks beside it (from the same tissues, so a
    // plain T2 may hide oedema): used only for a crop the T1 covers, so that a lesion a
    // plain T2 hides still shows on the T1.
    let t1 = if cfg.uses_t1() {
        let mut trng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ T1_SALT);
        (!trng.random_bool(RANDOMISED_T1_ABSENT))
            .then(|| randomised::draw_t1_pair(&mut trng, &scene, &acq))
    } else {
        None
    };
    let normal = rand_distr::Normal::new(0.0, jitter_mm.max(1e-9)).expect("finite sigma");
    let mut out = Vec::new();
    for (n, h) in scene.heads.iter().enumerate() {
        for copy in 0..copies.max(1) {
            let c = h.center_lps_mm;
            let center = if copy == 0 {
                c
            } else {
                [0, 1, 2].map(|a| c[a] + rng.sample(normal))
            };
            let grid = randomised::Grid::canonical(center, cfg.field_of_view_mm, cfg.shape);
            let noise_seed = seed ^ ((n * 64 + copy) as u64).wrapping_mul(0x2545_f491);
            let mirror = h.side == Side::Right;
            let channel = |acq: &randomised::Acquisition, noise_seed: u64| {
                let (mut voxels, inside) = randomised::render(&scene, acq, &grid, noise_seed);
                let covered = inside.iter().filter(|x| **x).count() as f64 / inside.len() as f64;
                normalise(&mut voxels, &inside, &cfg.normalisation());
                if mirror {
                    for row in voxels.chunks_mut(cfg.shape[2]) {
                        row.reverse();
                    }
                }
                (voxels, covered)
            };
            let t1_read = t1
                .as_ref()
                .map(|(a, beside)| (channel(a, noise_seed ^ T1_SALT), beside))
                .filter(|((_, covered), _)| *covered >= MIN_T1_COVERAGE);
            let voxels = match (cfg.uses_t1(), t1_read) {
                (false, _) => channel(&acq, noise_seed).0,
                (true, Some(((t1v, _), beside))) => {
                    interleave(&[&channel(beside, noise_seed).0, &t1v], cfg.shape)
                }
                (true, None) => {
                    let t2 = channel(&acq, noise_seed).0;
                    interleave(&[&t2, &vec![0.0; t2.len()]], cfg.shape)
                }
            };
            out.push(HeadSample {
                voxels,
                class: class_of(h.stage),
                side: h.side,
                seed,
            });
        }
    }
    out
}
