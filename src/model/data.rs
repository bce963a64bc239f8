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

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::detector::VoxelBox;
use crate::phantom::{self, StudyTruth, anatomy::Stage, randomised};
use crate::volume::preprocess::{Normalisation, normalise};
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

/// How crops are taken (part of the stager's manifest).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CropConfig {
    /// Crop (D, H, W) — the stager's input.
    pub shape: [usize; 3],
    /// Field of view, mm: anterior-posterior, superior-inferior, right-left.
    pub field_of_view_mm: [f64; 3],
    /// Intensity window level.
    pub window_level: f64,
    /// Intensity window width.
    pub window_width: f64,
    /// Robust normalisation of each crop before the window: these percentiles of the crop's
    /// tissue map onto `reference`. None (manifests written before it existed) = window only.
    #[serde(default)]
    pub percentiles: Option<[f64; 2]>,
    /// Intensities the percentiles are mapped onto.
    #[serde(default = "default_reference")]
    pub reference: [f64; 2],
}

fn default_reference() -> [f64; 2] {
    Preprocess::default().reference
}

impl CropConfig {
    /// Crops for the small stager preset: 64 mm around the head, normalised like the
    /// detector's input.
    pub fn small() -> Self {
        let p = Preprocess::default();
        CropConfig {
            shape: [16, 32, 32],
            field_of_view_mm: [64.0, 64.0, 64.0],
            window_level: p.window_level,
            window_width: p.window_width,
            percentiles: p.percentiles,
            reference: p.reference,
        }
    }

    /// The crop's intensity steps.
    pub fn normalisation(&self) -> Normalisation {
        Normalisation {
            percentiles: self.percentiles,
            reference: self.reference,
            window_level: self.window_level,
            window_width: self.window_width,
        }
    }
}

/// One head crop and its label.
#[derive(Debug, Clone)]
pub struct HeadSample {
    /// Windowed voxels, (D, H, W) row-major, right heads mirrored.
    pub voxels: Vec<f32>,
    /// Class index: 0, 1, 2 for stage 0, I, II.
    pub class: u32,
    /// "L" or "R".
    pub side: String,
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

/// Crop around `center` (LPS mm); mirror right-left when `mirror`.
pub fn crop(v: &Volume, center: [f64; 3], mirror: bool, cfg: &CropConfig) -> Vec<f32> {
    crop_with_grid(v, center, mirror, cfg).0
}

/// [`crop`], and the crop's grid: the affine from (unmirrored) crop voxel (i, j, k) to
/// patient mm. A mirrored crop's column `i` holds the grid's column `W − 1 − i`.
pub fn crop_with_grid(
    v: &Volume,
    center: [f64; 3],
    mirror: bool,
    cfg: &CropConfig,
) -> (Vec<f32>, [[f64; 4]; 4]) {
    let (c, inside) = volume::resample(v, center, cfg.field_of_view_mm, cfg.shape);
    let mut out = c.data;
    normalise(&mut out, &inside, &cfg.normalisation());
    if mirror {
        let w = cfg.shape[2];
        for row in out.chunks_mut(w) {
            row.reverse();
        }
    }
    (out, c.affine)
}

/// Why samples could not be made.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The phantom failed.
    #[error(transparent)]
    Phantom(#[from] phantom::PhantomError),
    /// A study had no usable T2 series.
    #[error("study {0}: no usable T2 series")]
    NoSeries(u64),
    /// The T2 series did not assemble.
    #[error("study {seed}: {source}")]
    Volume {
        /// The study seed.
        seed: u64,
        /// Why.
        source: volume::VolumeError,
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
}

/// Generate phantom study `seed` under `dir`, then select and assemble its T2 series the
/// way the pipeline does.
pub fn phantom_study(
    dir: &Path,
    seed: u64,
    options: &phantom::Options,
) -> Result<PhantomStudy, DataError> {
    let truth: StudyTruth = phantom::generate_study(dir, seed, options)?;
    assemble_study(dir, truth)
}

/// Select and assemble the T2 of a study already written under `dir` (by either phantom
/// family) the way the pipeline does.
pub fn assemble_study(dir: &Path, truth: StudyTruth) -> Result<PhantomStudy, DataError> {
    let seed = truth.seed;
    let files = volume::collect_files(&[dir.to_owned()])?;
    let report = volume::scan_files(&files);
    let sel = volume::select(&report.series, &volume::Rules::default());
    let chosen = sel.chosen.ok_or(DataError::NoSeries(seed))?;
    let volume = volume::assemble(&report.series[chosen])
        .map_err(|source| DataError::Volume { seed, source })?;
    Ok(PhantomStudy { truth, volume })
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
            out.push(HeadSample {
                voxels: crop(&study.volume, c, h.side == "R", cfg),
                class: class_of(h.stage),
                side: h.side.clone(),
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
    let study = phantom_study(dir, seed, &training_options(seed))?;
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
    use rand::SeedableRng;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let scene = randomised::draw_scene(&mut rng, None);
    let acq = randomised::draw_acquisition(&mut rng, &scene);
    let c = acq.center;
    let center = [0, 1, 2].map(|a| c[a] + pre.center_offset_mm[a]);
    let grid = randomised::Grid::canonical(center, pre.field_of_view_mm, pre.shape);
    let (mut data, inside) = randomised::render(&scene, &acq, &grid, seed);
    normalise(&mut data, &inside, &pre.normalisation());
    let [d, h, w] = pre.shape;
    let volume = Volume {
        data,
        dims: [w, h, d],
        affine: grid.affine,
        series_uid: String::new(),
        study_uid: String::new(),
    };
    DetectorSample {
        boxes: head_boxes(&volume, &scene.heads),
        volume,
        heads: scene.heads,
        seed,
    }
}

/// Domain-randomised head crops of the study drawn from `seed`: per head, `copies` crops
/// around the true centre displaced by N(0, `jitter_mm`) (the first one undisplaced),
/// rendered on the crop's grid, normalised as `crop` does and mirrored for right heads.
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
            let (mut voxels, inside) = randomised::render(&scene, &acq, &grid, noise_seed);
            normalise(&mut voxels, &inside, &cfg.normalisation());
            if h.side == "R" {
                for row in voxels.chunks_mut(cfg.shape[2]) {
                    row.reverse();
                }
            }
            out.push(HeadSample {
                voxels,
                class: class_of(h.stage),
                side: h.side.clone(),
                seed,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirroring_reverses_columns_only() {
        let v = crate::volume::assemble::coronal_test_volume([40, 40, 20], 800.0);
        let cfg = CropConfig {
            shape: [2, 3, 4],
            field_of_view_mm: [4.0, 6.0, 8.0],
            window_level: 300.0,
            window_width: 1500.0,
            percentiles: None,
            reference: [0.0, 1200.0],
        };
        let a = crop(&v, [-90.0, 10.0, 30.0], false, &cfg);
        let b = crop(&v, [-90.0, 10.0, 30.0], true, &cfg);
        assert_eq!(a.len(), 24);
        for row in 0..6 {
            let ra = &a[row * 4..row * 4 + 4];
            let mut rb = b[row * 4..row * 4 + 4].to_vec();
            rb.reverse();
            assert_eq!(ra, &rb[..]);
        }
        // Windowed: 800 → (800 + 450) / 1500.
        assert!(
            a.iter()
                .all(|x| (x - 1250.0 / 1500.0).abs() < 1e-4 || *x == 0.0)
        );
    }
}
