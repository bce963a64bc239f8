//! Where the stager looks: a femoral-head crop sampled from the assembled T2 on the
//! canonical grid (`volume::resample`, patient millimetres, not array indices) around a
//! head centre, normalised like the model input, right heads mirrored right-left into the
//! left head's frame so that the stager always sees one anatomy. The same function crops
//! at inference (around the detector's centre) and in training and evaluation (around the
//! truth), so the two can never drift apart.
//!
//! A stager with a T1 channel (`CropConfig::channels`) gets the T1 companion cropped on
//! the very same grid — the grid depends only on the centre, the field of view and the
//! shape, so the T1's own geometry does not matter — each channel normalised on its own,
//! interleaved per slice as (D, C, H, W); a T1 that is missing or covers too little of the
//! crop is a channel of zeros, the state the stager was trained to read as "no T1".
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
    /// The series each input channel reads, in order: the T2, then the T1 for a stager
    /// that takes one. Manifests without the key read the T2 alone (and are written back
    /// without it).
    #[serde(default = "t2_only", skip_serializing_if = "is_t2_only")]
    pub channels: Vec<Channel>,
}

/// The series one crop channel reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    /// The analysed T2.
    T2,
    /// Its T1-weighted companion (`volume::select_t1`).
    T1,
}

fn t2_only() -> Vec<Channel> {
    vec![Channel::T2]
}

fn is_t2_only(c: &[Channel]) -> bool {
    c == [Channel::T2]
}

fn default_reference() -> [f64; 2] {
    Preprocess::default().reference
}

/// The least share of a crop a T1 must cover to be read; less, and its channel is zeros.
pub const MIN_T1_COVERAGE: f64 = 0.5;

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
            channels: t2_only(),
        }
    }

    /// Input channels per voxel.
    pub fn channel_count(&self) -> usize {
        self.channels.len()
    }

    /// Whether the crops read the T1 companion.
    pub fn uses_t1(&self) -> bool {
        self.channels.contains(&Channel::T1)
    }

    /// The channel lists this build reads: the T2 alone, or the T2 then the T1.
    pub fn check_channels(&self) -> Result<(), String> {
        match self.channels.as_slice() {
            [Channel::T2] | [Channel::T2, Channel::T1] => Ok(()),
            other => Err(format!(
                "crop channels {other:?} are not [\"t2\"] or [\"t2\", \"t1\"]"
            )),
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

/// Every channel of the crop around `center`, interleaved per slice as (D, C, H, W): the
/// T2 as [`crop_with_grid`], then, when `cfg` reads one, the T1 `t1` resampled on the same
/// grid and normalised on its own — zeros when there is no T1 or it covers less than
/// [`MIN_T1_COVERAGE`] of the crop. Also the grid, and whether a T1 was read.
pub fn crop_channels(
    t2: &Volume,
    t1: Option<&Volume>,
    center: [f64; 3],
    mirror: bool,
    cfg: &CropConfig,
) -> (Vec<f32>, [[f64; 4]; 4], bool) {
    let (t2c, affine) = crop_with_grid(t2, center, mirror, cfg);
    if !cfg.uses_t1() {
        return (t2c, affine, false);
    }
    let t1c = t1.and_then(|v| {
        let (c, inside) = volume::resample(v, center, cfg.field_of_view_mm, cfg.shape);
        let covered = inside.iter().filter(|x| **x).count() as f64 / inside.len().max(1) as f64;
        (covered >= MIN_T1_COVERAGE).then(|| {
            let mut out = c.data;
            normalise(&mut out, &inside, &cfg.normalisation());
            if mirror {
                for row in out.chunks_mut(cfg.shape[2]) {
                    row.reverse();
                }
            }
            out
        })
    });
    let read = t1c.is_some();
    let t1c = t1c.unwrap_or_else(|| vec![0.0; t2c.len()]);
    (interleave(&[&t2c, &t1c], cfg.shape), affine, read)
}

/// Channels of (D, H, W) each, interleaved per slice into (D, C, H, W).
pub fn interleave(channels: &[&[f32]], shape: [usize; 3]) -> Vec<f32> {
    let plane = shape[1] * shape[2];
    let mut out = Vec::with_capacity(plane * shape[0] * channels.len());
    for k in 0..shape[0] {
        for c in channels {
            out.extend_from_slice(&c[k * plane..(k + 1) * plane]);
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
            channels: t2_only(),
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

    #[test]
    fn the_t1_channel_is_cropped_on_the_t2_grid_whatever_its_geometry() {
        use crate::volume::assemble::coronal_test_volume;
        // Two volumes of different geometry holding the same ramp in patient x.
        let mut t2 = coronal_test_volume([48, 48, 12], 0.0);
        t2.affine = [
            [0.8, 0.0, 0.0, -20.0],
            [0.0, 0.0, 3.5, -20.0],
            [0.0, -0.8, 0.0, 20.0],
            [0.0, 0.0, 0.0, 1.0],
        ];
        let mut t1 = coronal_test_volume([50, 50, 14], 0.0);
        t1.affine = [
            [1.6, 0.0, 0.0, -40.0],
            [0.0, 0.0, 6.0, -40.0],
            [0.0, -1.6, 0.0, 40.0],
            [0.0, 0.0, 0.0, 1.0],
        ];
        for v in [&mut t2, &mut t1] {
            let [w, h, d] = v.dims;
            for k in 0..d {
                for j in 0..h {
                    for i in 0..w {
                        let p = v.voxel_to_patient([i as f64, j as f64, k as f64]);
                        v.data[(k * h + j) * w + i] = 500.0 + 10.0 * p[0] as f32;
                    }
                }
            }
        }
        let cfg = CropConfig {
            shape: [4, 6, 8],
            field_of_view_mm: [16.0, 24.0, 32.0],
            percentiles: None,
            channels: vec![Channel::T2, Channel::T1],
            ..CropConfig::small()
        };
        let center = [0.0, 0.0, 0.0];
        let (both, _, read) = crop_channels(&t2, Some(&t1), center, true, &cfg);
        assert!(read);
        assert_eq!(both.len(), 2 * 4 * 6 * 8);
        let alone = crop(&t2, center, true, &cfg);
        for k in 0..4 {
            let (a, b) = (&both[k * 96..k * 96 + 48], &both[k * 96 + 48..k * 96 + 96]);
            assert_eq!(
                a,
                &alone[k * 48..(k + 1) * 48],
                "the T2 channel is the T2 crop"
            );
            for (x, y) in a.iter().zip(b) {
                assert!((x - y).abs() < 0.01, "slice {k}: T2 {x}, T1 {y}");
            }
        }
        // No T1, or one far away: zeros, and said so.
        for t1 in [None, Some(&t1)] {
            let far = [300.0, 0.0, 0.0];
            let at = if t1.is_some() { far } else { center };
            let (c, _, read) = crop_channels(&t2, t1, at, false, &cfg);
            assert!(!read);
            assert!((0..4).all(|k| c[k * 96 + 48..k * 96 + 96].iter().all(|x| *x == 0.0)));
        }
        // A T2-only config is the T2 crop, unchanged.
        let (c, _, read) = crop_channels(
            &t2,
            Some(&t1),
            center,
            true,
            &CropConfig {
                channels: t2_only(),
                ..cfg.clone()
            },
        );
        assert!(!read);
        assert_eq!(c, alone);
    }

    #[test]
    fn manifests_without_channels_read_the_t2_and_are_written_back_unchanged() {
        let json = r#"{"shape":[16,32,32],"field_of_view_mm":[64.0,64.0,64.0],"window_level":300.0,"window_width":1500.0}"#;
        let c: CropConfig = serde_json::from_str(json).unwrap();
        assert_eq!(c.channels, [Channel::T2]);
        assert!(!serde_json::to_string(&c).unwrap().contains("channels"));
        let two = CropConfig {
            channels: vec![Channel::T2, Channel::T1],
            ..c
        };
        let text = serde_json::to_string(&two).unwrap();
        assert!(text.contains(r#""channels":["t2","t1"]"#), "{text}");
        assert!(two.check_channels().is_ok());
        let odd = CropConfig {
            channels: vec![Channel::T1],
            ..two
        };
        assert!(odd.check_channels().is_err());
    }
}
