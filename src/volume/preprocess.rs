//! The paper's preprocessing: resample to a canonical orientation and spacing, central
//! crop, resize to the model's input, intensity window (level 300 / width 1500), and an
//! optional robust percentile normalisation for scanners with another intensity scale.
//!
//! Resampling, crop and resize are one step: an output grid is laid out in patient space
//! (canonical coronal orientation, centred on the series' centre) and every output voxel is
//! sampled from the input by trilinear interpolation, averaging sub-samples where the output
//! is coarser than the input. The result is a [`Volume`] whose affine maps every voxel of
//! the model's tensor back to patient millimetres.
//!
//! Tensor layout: (depth, height, width) = anterior→posterior slices, superior→inferior
//! rows, patient right→left columns — coronal images with both hips side by side. The
//! paper's "32 x 112 x 64" is read as 32 slices of 112 (right-left) by 64 (superior-
//! inferior) voxels: `shape = [32, 64, 112]` as (D, H, W).

use serde::{Deserialize, Serialize};

use super::{V3, Volume};

/// Preprocessing parameters (`[preprocess]` in the configuration; these defaults follow the
/// paper).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Preprocess {
    /// Output (depth, height, width).
    pub shape: [usize; 3],
    /// Field of view covered, mm: (anterior-posterior, superior-inferior, right-left).
    pub field_of_view_mm: [f64; 3],
    /// Shift of the crop centre from the series centre, patient LPS mm.
    pub center_offset_mm: [f64; 3],
    /// Intensity window level.
    pub window_level: f64,
    /// Intensity window width.
    pub window_width: f64,
    /// Robust normalisation before the window: map these percentiles of the body's
    /// intensities onto `reference`. None = off (the paper's setting).
    pub percentiles: Option<[f64; 2]>,
    /// Intensities the percentiles are mapped onto.
    pub reference: [f64; 2],
}

impl Default for Preprocess {
    fn default() -> Self {
        Preprocess {
            shape: [32, 64, 112],
            field_of_view_mm: [128.0, 224.0, 320.0],
            center_offset_mm: [0.0, 0.0, 0.0],
            window_level: 300.0,
            window_width: 1500.0,
            percentiles: Some([1.0, 99.0]),
            reference: [-300.0, 900.0],
        }
    }
}

/// Axis directions of the canonical grid in LPS: columns go to patient left (+x), rows
/// go inferior (-z), slices go posterior (+y).
const COLS: V3 = [1.0, 0.0, 0.0];
const ROWS: V3 = [0.0, 0.0, -1.0];
const SLICES: V3 = [0.0, 1.0, 0.0];

/// The centre of a volume in patient mm.
pub fn center(v: &Volume) -> V3 {
    v.voxel_to_patient([
        (v.dims[0] as f64 - 1.0) / 2.0,
        (v.dims[1] as f64 - 1.0) / 2.0,
        (v.dims[2] as f64 - 1.0) / 2.0,
    ])
}

/// Trilinear sample at a fractional voxel coordinate; `None` outside the volume.
pub fn sample(v: &Volume, c: [f64; 3]) -> Option<f32> {
    let [nx, ny, nz] = v.dims;
    let lim = |x: f64, n: usize| x >= -0.5 && x <= n as f64 - 0.5;
    if !lim(c[0], nx) || !lim(c[1], ny) || !lim(c[2], nz) {
        return None;
    }
    let cl = |x: f64, n: usize| x.clamp(0.0, (n - 1) as f64);
    let (x, y, z) = (cl(c[0], nx), cl(c[1], ny), cl(c[2], nz));
    let (x0, y0, z0) = (x.floor() as usize, y.floor() as usize, z.floor() as usize);
    let (x1, y1, z1) = (
        (x0 + 1).min(nx - 1),
        (y0 + 1).min(ny - 1),
        (z0 + 1).min(nz - 1),
    );
    let (fx, fy, fz) = (
        (x - x0 as f64) as f32,
        (y - y0 as f64) as f32,
        (z - z0 as f64) as f32,
    );
    let g = |i, j, k| v.get(i, j, k);
    let c00 = g(x0, y0, z0) * (1.0 - fx) + g(x1, y0, z0) * fx;
    let c10 = g(x0, y1, z0) * (1.0 - fx) + g(x1, y1, z0) * fx;
    let c01 = g(x0, y0, z1) * (1.0 - fx) + g(x1, y0, z1) * fx;
    let c11 = g(x0, y1, z1) * (1.0 - fx) + g(x1, y1, z1) * fx;
    let c0 = c00 * (1.0 - fy) + c10 * fy;
    let c1 = c01 * (1.0 - fy) + c11 * fy;
    Some(c0 * (1.0 - fz) + c1 * fz)
}

/// Resample `v` onto the canonical grid and apply the intensity steps. Voxels outside the
/// acquired volume are 0 after windowing (air).
pub fn preprocess(v: &Volume, p: &Preprocess) -> Volume {
    let c = center(v);
    let c = [
        c[0] + p.center_offset_mm[0],
        c[1] + p.center_offset_mm[1],
        c[2] + p.center_offset_mm[2],
    ];
    let (mut out, inside) = resample(v, c, p.field_of_view_mm, p.shape);
    normalise(&mut out.data, &inside, &p.normalisation());
    out
}

/// The affine of a canonical grid of `shape` (D, H, W) covering `fov_mm`
/// (anterior-posterior, superior-inferior, right-left) centred on `c` (LPS mm): voxel
/// (column, row, slice) to patient mm, columns to patient left, rows inferior, slices
/// posterior. [`resample`] samples a volume onto it; the domain-randomised phantom renders
/// onto it directly.
pub fn canonical_grid(c: V3, fov_mm: [f64; 3], shape: [usize; 3]) -> [[f64; 4]; 4] {
    let [d, h, w] = shape;
    let step = [
        fov_mm[0] / d as f64,
        fov_mm[1] / h as f64,
        fov_mm[2] / w as f64,
    ];
    // Output voxel (i=col, j=row, k=slice) → patient mm.
    let origin = [0, 1, 2].map(|a| {
        c[a] - COLS[a] * step[2] * (w as f64 - 1.0) / 2.0
            - ROWS[a] * step[1] * (h as f64 - 1.0) / 2.0
            - SLICES[a] * step[0] * (d as f64 - 1.0) / 2.0
    });
    [
        [
            COLS[0] * step[2],
            ROWS[0] * step[1],
            SLICES[0] * step[0],
            origin[0],
        ],
        [
            COLS[1] * step[2],
            ROWS[1] * step[1],
            SLICES[1] * step[0],
            origin[1],
        ],
        [
            COLS[2] * step[2],
            ROWS[2] * step[1],
            SLICES[2] * step[0],
            origin[2],
        ],
        [0.0, 0.0, 0.0, 1.0],
    ]
}

/// Resample `v` onto a canonical grid of `shape` (D, H, W) covering `fov_mm`
/// (anterior-posterior, superior-inferior, right-left) centred on `center` (LPS mm):
/// trilinear, averaging sub-samples where the grid is coarser than the input. Returns the
/// volume (its affine maps every voxel to patient mm) and which voxels fell inside the input
/// (the others are 0). Crops around a femoral head use this too.
pub fn resample(v: &Volume, c: V3, fov_mm: [f64; 3], shape: [usize; 3]) -> (Volume, Vec<bool>) {
    let [d, h, w] = shape;
    let affine = canonical_grid(c, fov_mm, shape);
    let step = [
        fov_mm[0] / d as f64,
        fov_mm[1] / h as f64,
        fov_mm[2] / w as f64,
    ];
    let mut out = Volume {
        data: vec![0.0; d * h * w],
        dims: [w, h, d],
        affine,
        series_uid: v.series_uid.clone(),
        study_uid: v.study_uid.clone(),
    };
    // Sub-samples per output axis where the output is coarser than the input.
    let sp = v.spacing();
    let fine = sp.iter().cloned().fold(f64::MAX, f64::min);
    let subs = [step[2], step[1], step[0]].map(|s| ((s / fine).round() as usize).clamp(1, 3));
    // Output voxel → input voxel, composed once: inverse(input affine) · output affine.
    let origin_in = v.patient_to_voxel(out.voxel_to_patient([0.0, 0.0, 0.0]));
    let axis_in = [0, 1, 2].map(|a| {
        let mut e = [0.0; 3];
        e[a] = 1.0;
        let q = v.patient_to_voxel(out.voxel_to_patient(e));
        [
            q[0] - origin_in[0],
            q[1] - origin_in[1],
            q[2] - origin_in[2],
        ]
    });
    let to_input = |x: [f64; 3]| -> [f64; 3] {
        [0, 1, 2].map(|r| {
            origin_in[r] + axis_in[0][r] * x[0] + axis_in[1][r] * x[1] + axis_in[2][r] * x[2]
        })
    };
    let mut inside = vec![false; d * h * w];
    for k in 0..d {
        for j in 0..h {
            for i in 0..w {
                let (mut sum, mut n) = (0.0f32, 0u32);
                for sk in 0..subs[2] {
                    for sj in 0..subs[1] {
                        for si in 0..subs[0] {
                            let off = |s: usize, n: usize| (s as f64 + 0.5) / n as f64 - 0.5;
                            let q = to_input([
                                i as f64 + off(si, subs[0]),
                                j as f64 + off(sj, subs[1]),
                                k as f64 + off(sk, subs[2]),
                            ]);
                            if let Some(x) = sample(v, q) {
                                sum += x;
                                n += 1;
                            }
                        }
                    }
                }
                let idx = (k * h + j) * w + i;
                if n > 0 {
                    out.data[idx] = sum / n as f32;
                    inside[idx] = true;
                }
            }
        }
    }
    (out, inside)
}

/// The intensity steps, shared by the detector's preprocessing and the stager's crops.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Normalisation {
    /// Percentiles of the body's intensities mapped onto `reference`; None = window only.
    pub percentiles: Option<[f64; 2]>,
    /// Intensities the percentiles are mapped onto.
    pub reference: [f64; 2],
    /// Intensity window level.
    pub window_level: f64,
    /// Intensity window width.
    pub window_width: f64,
}

impl Preprocess {
    /// Check `[preprocess]`; the error names its key.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.shape.iter().any(|n| *n == 0 || *n > 1024) {
            return Err(("preprocess.shape", "each size must be 1 to 1024".into()));
        }
        if self
            .field_of_view_mm
            .iter()
            .any(|f| !(*f > 0.0 && *f <= 1000.0))
        {
            return Err((
                "preprocess.field_of_view_mm",
                "each must be 0 to 1000 mm".into(),
            ));
        }
        if self.window_width.is_nan() || self.window_width <= 0.0 {
            return Err(("preprocess.window_width", "must be positive".into()));
        }
        if let Some([lo, hi]) = self.percentiles {
            if !((0.0..100.0).contains(&lo) && lo < hi && hi <= 100.0) {
                return Err((
                    "preprocess.percentiles",
                    "must be [low, high] with 0 <= low < high <= 100".into(),
                ));
            }
        }
        Ok(())
    }

    /// The intensity steps of this preprocessing.
    pub fn normalisation(&self) -> Normalisation {
        Normalisation {
            percentiles: self.percentiles,
            reference: self.reference,
            window_level: self.window_level,
            window_width: self.window_width,
        }
    }
}

/// Percentile mapping (optional) then the window, to [0, 1]; outside voxels become 0.
/// The one intensity step of training and inference alike.
pub fn normalise(data: &mut [f32], inside: &[bool], p: &Normalisation) {
    if let Some([lo_pct, hi_pct]) = p.percentiles {
        // Percentiles of the body: voxels inside the acquisition and brighter than a tenth
        // of the 99th percentile, which leaves out air and its (Rician) noise.
        let mut all: Vec<f32> = data
            .iter()
            .zip(inside)
            .filter(|(_, ins)| **ins)
            .map(|(x, _)| *x)
            .collect();
        all.sort_by(f32::total_cmp);
        let floor = all
            .get(((all.len().saturating_sub(1)) as f64 * 0.99) as usize)
            .copied()
            .unwrap_or(0.0)
            * 0.1;
        let mut body: Vec<f32> = all.into_iter().filter(|x| *x > floor).collect();
        if body.len() > 10 {
            body.sort_by(f32::total_cmp);
            let at = |q: f64| body[((q / 100.0) * (body.len() - 1) as f64).round() as usize] as f64;
            let (lo, hi) = (at(lo_pct), at(hi_pct));
            if hi > lo {
                let [r0, r1] = p.reference;
                for x in data.iter_mut() {
                    *x = ((*x as f64 - lo) / (hi - lo) * (r1 - r0) + r0) as f32;
                }
            }
        }
    }
    let low = p.window_level - p.window_width / 2.0;
    for (x, ins) in data.iter_mut().zip(inside) {
        *x = if *ins {
            (((*x as f64) - low) / p.window_width).clamp(0.0, 1.0) as f32
        } else {
            0.0
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp() -> Volume {
        // 20 x 20 x 10 voxels of 2 mm, axial, value = x index * 100.
        let dims = [20, 20, 10];
        let mut data = Vec::new();
        for _k in 0..dims[2] {
            for _j in 0..dims[1] {
                for i in 0..dims[0] {
                    data.push(i as f32 * 100.0);
                }
            }
        }
        Volume {
            data,
            dims,
            affine: [
                [2.0, 0.0, 0.0, -19.0],
                [0.0, 2.0, 0.0, -19.0],
                [0.0, 0.0, 2.0, -9.0],
                [0.0, 0.0, 0.0, 1.0],
            ],
            series_uid: String::new(),
            study_uid: String::new(),
        }
    }

    #[test]
    fn output_voxels_map_back_to_the_input_position() {
        let v = ramp();
        let p = Preprocess {
            shape: [4, 6, 8],
            field_of_view_mm: [8.0, 12.0, 16.0],
            window_level: 1000.0,
            window_width: 2000.0,
            percentiles: None,
            ..Preprocess::default()
        };
        let out = preprocess(&v, &p);
        assert_eq!(out.dims, [8, 6, 4]);
        for i in 0..8 {
            let q = out.voxel_to_patient([i as f64, 2.0, 1.0]);
            // Input value at that x, windowed: (x_index*100 - 0) / 2000.
            let x_index = (q[0] + 19.0) / 2.0;
            let expected = (x_index * 100.0 / 2000.0) as f32;
            assert!(
                (out.get(i, 2, 1) - expected).abs() < 0.01,
                "{i}: {} vs {expected}",
                out.get(i, 2, 1)
            );
        }
        // Canonical orientation: columns to patient left, rows inferior, slices posterior.
        let a = out.voxel_to_patient([1.0, 0.0, 0.0]);
        let b = out.voxel_to_patient([0.0, 1.0, 0.0]);
        let c = out.voxel_to_patient([0.0, 0.0, 1.0]);
        let o = out.voxel_to_patient([0.0, 0.0, 0.0]);
        assert!(a[0] > o[0] && b[2] < o[2] && c[1] > o[1]);
    }

    #[test]
    fn window_and_percentiles() {
        let p = Preprocess {
            percentiles: None,
            ..Preprocess::default()
        };
        let mut d = vec![-450.0f32, 300.0, 1050.0, 5000.0];
        normalise(&mut d, &[true; 4], &p.normalisation());
        assert_eq!(d, vec![0.0, 0.5, 1.0, 1.0]);
        // With percentile mapping, a scanner at twice the scale lands where the reference does.
        let q = Preprocess {
            percentiles: Some([0.0, 100.0]),
            reference: [0.0, 1000.0],
            ..Preprocess::default()
        };
        // Tissue from 500 to 1500 plus a quarter of the voxels in air near 20 (noise).
        let tissue = |scale: f32| -> Vec<f32> {
            (0..400)
                .map(|i| {
                    if i % 4 == 0 {
                        20.0 + (i % 7) as f32
                    } else {
                        (500.0 + (i * 37 % 1000) as f32) * scale
                    }
                })
                .collect()
        };
        let q = Preprocess {
            percentiles: Some([5.0, 95.0]),
            ..q
        };
        let (mut a, mut b) = (tissue(1.0), tissue(2.0));
        normalise(&mut a, &[true; 400], &q.normalisation());
        normalise(&mut b, &[true; 400], &q.normalisation());
        for i in (1..400).filter(|i| i % 4 != 0) {
            assert!((a[i] - b[i]).abs() < 0.02, "{i}: {} vs {}", a[i], b[i]);
        }
        // Outside the acquisition is air.
        let mut e = vec![700.0f32];
        normalise(&mut e, &[false], &p.normalisation());
        assert_eq!(e, vec![0.0]);
    }
}
