//! Where the stager looks: a femoral-head crop sampled from the assembled T2 on the
//! canonical grid (`volume::resample`, patient millimetres, not array indices) around a
//! head centre, normalised like the model input, right heads mirrored right-left into the
//! left head's frame so that the stager always sees one anatomy. The same function crops
//! at inference (around the detector's centre) and in training and evaluation (around the
//! truth), so the two can never drift apart.
//!
//! Geometry and intensities only: no model, no phantom, no files.

use serde::{Deserialize, Serialize};

use crate::volume::preprocess::{Normalisation, normalise};
use crate::volume::{self, Preprocess, Volume};

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
