//! Heatmaps out of the crop frame: placed into the study volume's grid (for NIfTI and 3D
//! viewers), and drawn as a PNG montage of coronal slices through a head with the heatmap
//! over the MRI, labelled with side, stage and the intended use.
//!
//! Owns pixels only; deciding what a heatmap means is the stager's and Grad-CAM's job.

use std::path::Path;

use embedded_graphics::mono_font::{MonoTextStyle, ascii::FONT_6X10};
use embedded_graphics::pixelcolor::Rgb888;
use embedded_graphics::prelude::*;
use embedded_graphics::text::Text;

use crate::render::Canvas;
use crate::volume::{self, Volume};

/// A heatmap in a crop's frame.
#[derive(Debug, Clone)]
pub struct CropHeatmap<'a> {
    /// Values in [0, 1], (D, H, W) row-major, mirrored when `mirrored`.
    pub values: &'a [f32],
    /// Crop (D, H, W).
    pub shape: [usize; 3],
    /// Unmirrored crop voxel (i, j, k) → patient mm.
    pub affine: [[f64; 4]; 4],
    /// Whether columns are mirrored (right heads).
    pub mirrored: bool,
}

fn invert_affine(a: &[[f64; 4]; 4]) -> [[f64; 4]; 3] {
    // Rotation-scale part by the adjugate; then the translation.
    let m = [
        [a[0][0], a[0][1], a[0][2]],
        [a[1][0], a[1][1], a[1][2]],
        [a[2][0], a[2][1], a[2][2]],
    ];
    let det = m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
        - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
        + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0]);
    let inv = [
        [
            (m[1][1] * m[2][2] - m[1][2] * m[2][1]) / det,
            (m[0][2] * m[2][1] - m[0][1] * m[2][2]) / det,
            (m[0][1] * m[1][2] - m[0][2] * m[1][1]) / det,
        ],
        [
            (m[1][2] * m[2][0] - m[1][0] * m[2][2]) / det,
            (m[0][0] * m[2][2] - m[0][2] * m[2][0]) / det,
            (m[0][2] * m[1][0] - m[0][0] * m[1][2]) / det,
        ],
        [
            (m[1][0] * m[2][1] - m[1][1] * m[2][0]) / det,
            (m[0][1] * m[2][0] - m[0][0] * m[2][1]) / det,
            (m[0][0] * m[1][1] - m[0][1] * m[1][0]) / det,
        ],
    ];
    let t = [a[0][3], a[1][3], a[2][3]];
    let mut out = [[0.0; 4]; 3];
    for r in 0..3 {
        for c in 0..3 {
            out[r][c] = inv[r][c];
        }
        out[r][3] = -(inv[r][0] * t[0] + inv[r][1] * t[1] + inv[r][2] * t[2]);
    }
    out
}

impl CropHeatmap<'_> {
    /// Trilinear value at patient point `p`; 0 outside the crop.
    pub fn at(&self, p: [f64; 3]) -> f32 {
        self.at_with(&invert_affine(&self.affine), p)
    }

    fn at_with(&self, inv: &[[f64; 4]; 3], p: [f64; 3]) -> f32 {
        let q =
            [0, 1, 2].map(|r| inv[r][0] * p[0] + inv[r][1] * p[1] + inv[r][2] * p[2] + inv[r][3]);
        let [d, h, w] = self.shape;
        let (mut i, j, k) = (q[0], q[1], q[2]);
        if self.mirrored {
            i = (w as f64 - 1.0) - i;
        }
        let lim = |x: f64, n: usize| x >= -0.5 && x <= n as f64 - 0.5;
        if !lim(i, w) || !lim(j, h) || !lim(k, d) {
            return 0.0;
        }
        let cl = |x: f64, n: usize| x.clamp(0.0, (n - 1) as f64);
        let (i, j, k) = (cl(i, w), cl(j, h), cl(k, d));
        let (i0, j0, k0) = (i.floor() as usize, j.floor() as usize, k.floor() as usize);
        let (i1, j1, k1) = (
            (i0 + 1).min(w - 1),
            (j0 + 1).min(h - 1),
            (k0 + 1).min(d - 1),
        );
        let (fi, fj, fk) = (
            (i - i0 as f64) as f32,
            (j - j0 as f64) as f32,
            (k - k0 as f64) as f32,
        );
        let g = |i: usize, j: usize, k: usize| self.values[(k * h + j) * w + i];
        let c00 = g(i0, j0, k0) * (1.0 - fi) + g(i1, j0, k0) * fi;
        let c10 = g(i0, j1, k0) * (1.0 - fi) + g(i1, j1, k0) * fi;
        let c01 = g(i0, j0, k1) * (1.0 - fi) + g(i1, j0, k1) * fi;
        let c11 = g(i0, j1, k1) * (1.0 - fi) + g(i1, j1, k1) * fi;
        let c0 = c00 * (1.0 - fj) + c10 * fj;
        let c1 = c01 * (1.0 - fj) + c11 * fj;
        c0 * (1.0 - fk) + c1 * fk
    }
}

/// The heatmaps placed into `study`'s grid (same dims and affine), the maximum where crops
/// overlap.
pub fn place(study: &Volume, maps: &[CropHeatmap]) -> Volume {
    let mut out = Volume {
        data: vec![0.0; study.data.len()],
        dims: study.dims,
        affine: study.affine,
        series_uid: study.series_uid.clone(),
        study_uid: study.study_uid.clone(),
    };
    let [nx, ny, nz] = study.dims;
    for m in maps {
        let inv = invert_affine(&m.affine);
        // The study voxels the crop can reach: the bounding box of its corners.
        let [d, h, w] = m.shape;
        let mut lo = [f64::MAX; 3];
        let mut hi = [f64::MIN; 3];
        for c in 0..8 {
            let q = [
                if c & 1 == 1 { w as f64 - 0.5 } else { -0.5 },
                if c & 2 == 2 { h as f64 - 0.5 } else { -0.5 },
                if c & 4 == 4 { d as f64 - 0.5 } else { -0.5 },
            ];
            let p = [0, 1, 2].map(|r| {
                m.affine[r][0] * q[0]
                    + m.affine[r][1] * q[1]
                    + m.affine[r][2] * q[2]
                    + m.affine[r][3]
            });
            let v = study.patient_to_voxel(p);
            for a in 0..3 {
                lo[a] = lo[a].min(v[a]);
                hi[a] = hi[a].max(v[a]);
            }
        }
        let range = |a: usize, n: usize| {
            let s = lo[a].floor().max(0.0) as usize;
            let e = (hi[a].ceil().max(0.0) as usize).min(n.saturating_sub(1));
            s..=e
        };
        for k in range(2, nz) {
            for j in range(1, ny) {
                for i in range(0, nx) {
                    let p = study.voxel_to_patient([i as f64, j as f64, k as f64]);
                    let v = m.at_with(&inv, p);
                    let idx = (k * ny + j) * nx + i;
                    if v > out.data[idx] {
                        out.data[idx] = v;
                    }
                }
            }
        }
    }
    out
}

/// A jet-like colour for t in [0, 1].
fn colour(t: f32) -> [f32; 3] {
    let t = t.clamp(0.0, 1.0);
    let r = (1.5 - (4.0 * t - 3.0).abs()).clamp(0.0, 1.0);
    let g = (1.5 - (4.0 * t - 2.0).abs()).clamp(0.0, 1.0);
    let b = (1.5 - (4.0 * t - 1.0).abs()).clamp(0.0, 1.0);
    [r, g, b]
}

/// What a montage shows.
#[derive(Debug, Clone)]
pub struct MontageLabel {
    /// "R" or "L".
    pub side: String,
    /// "0", "I", "II" or "indeterminate".
    pub stage: String,
    /// Top class probability.
    pub probability: f32,
    /// The intended-use line.
    pub intended_use: String,
}

/// Coronal slices through `center` (LPS mm) of the study T2 with the placed heatmap over
/// it: 5 tiles, anterior to posterior, 4 mm apart, 80 × 80 mm each at 2 px/mm (160 px),
/// patient right on the image's left (radiological convention), with a header
/// naming side and stage and a footer with the intended use. Written as PNG.
pub fn write_montage(
    t2: &Volume,
    heat: &Volume,
    center: [f64; 3],
    label: &MontageLabel,
    path: &Path,
) -> std::io::Result<()> {
    const SLICES: usize = 5;
    const TILE: usize = 160;
    const FOV: f64 = 80.0;
    const STEP_MM: f64 = 4.0;
    const HEADER: usize = 14;
    const FOOTER: usize = 12;
    let grid = [SLICES, TILE, TILE];
    let fov = [STEP_MM * SLICES as f64, FOV, FOV];
    let (img, inside) = volume::resample(t2, center, fov, grid);
    let (hm, _) = volume::resample(heat, center, fov, grid);
    // Display window from the body's intensities in these tiles (1st-99th percentile).
    let mut vals: Vec<f32> = img
        .data
        .iter()
        .zip(&inside)
        .filter(|(_, i)| **i)
        .map(|(v, _)| *v)
        .collect();
    vals.sort_by(f32::total_cmp);
    let pct = |q: f64| {
        vals.get(((vals.len().saturating_sub(1)) as f64 * q) as usize)
            .copied()
            .unwrap_or(0.0)
    };
    let (lo, hi) = (pct(0.01), pct(0.99).max(pct(0.01) + 1.0));
    let (w, h) = (SLICES * TILE + (SLICES - 1) * 2, HEADER + TILE + FOOTER);
    let mut c = Canvas::new(w, h);
    for s in 0..SLICES {
        let x0 = s * (TILE + 2);
        for y in 0..TILE {
            for x in 0..TILE {
                let idx = (s * TILE + y) * TILE + x;
                let g = ((img.data[idx] - lo) / (hi - lo)).clamp(0.0, 1.0);
                let t = hm.data[idx];
                let a = if t > 0.2 { 0.55 * t } else { 0.0 };
                let col = colour(t);
                let rgb = [0, 1, 2].map(|ch| (((1.0 - a) * g + a * col[ch]) * 255.0).round() as u8);
                c.set(x0 + x, HEADER + y, rgb);
            }
        }
    }
    let white = MonoTextStyle::new(&FONT_6X10, Rgb888::WHITE);
    let yellow = MonoTextStyle::new(&FONT_6X10, Rgb888::YELLOW);
    let side = if label.side == "R" { "right" } else { "left" };
    let head = format!(
        "{} femoral head ({}) - stage {} (p = {:.2}) - coronal, anterior to posterior, 4 mm apart",
        side, label.side, label.stage, label.probability
    );
    let _ = Text::new(&head, Point::new(2, 10), white).draw(&mut c);
    for s in 0..SLICES {
        // Orientation markers: patient right on the left of each tile.
        let x0 = (s * (TILE + 2)) as i32;
        let _ = Text::new("R", Point::new(x0 + 2, (HEADER + 10) as i32), yellow).draw(&mut c);
        let _ = Text::new(
            "L",
            Point::new(x0 + TILE as i32 - 8, (HEADER + 10) as i32),
            yellow,
        )
        .draw(&mut c);
    }
    // The font is ASCII: a dash for the em dash, '?' never.
    let footer: String = label
        .intended_use
        .chars()
        .map(|c| match c {
            '—' | '–' => '-',
            c if c.is_ascii() => c,
            _ => ' ',
        })
        .collect();
    let _ = Text::new(&footer, Point::new(2, (HEADER + TILE + 9) as i32), yellow).draw(&mut c);
    c.write_png(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn affine_inverse_round_trips() {
        let a = [
            [0.0, 2.0, 0.5, 10.0],
            [1.5, 0.0, 0.0, -4.0],
            [0.0, 0.3, -2.5, 7.0],
            [0.0, 0.0, 0.0, 1.0],
        ];
        let inv = invert_affine(&a);
        let v = [3.0, -1.0, 2.0];
        let p = [0, 1, 2].map(|r| a[r][0] * v[0] + a[r][1] * v[1] + a[r][2] * v[2] + a[r][3]);
        let back =
            [0, 1, 2].map(|r| inv[r][0] * p[0] + inv[r][1] * p[1] + inv[r][2] * p[2] + inv[r][3]);
        for x in 0..3 {
            assert!((back[x] - v[x]).abs() < 1e-9);
        }
    }

    #[test]
    fn mirrored_heatmap_samples_the_mirrored_column() {
        // 1 × 1 × 4 crop, identity-like affine: column i at x = i mm.
        let vals = [0.0, 0.0, 0.0, 1.0];
        let aff = [
            [1.0, 0.0, 0.0, 0.0],
            [0.0, 1.0, 0.0, 0.0],
            [0.0, 0.0, 1.0, 0.0],
            [0.0, 0.0, 0.0, 1.0],
        ];
        let plain = CropHeatmap {
            values: &vals,
            shape: [1, 1, 4],
            affine: aff,
            mirrored: false,
        };
        assert_eq!(plain.at([3.0, 0.0, 0.0]), 1.0);
        assert_eq!(plain.at([0.0, 0.0, 0.0]), 0.0);
        let m = CropHeatmap {
            mirrored: true,
            ..plain.clone()
        };
        assert_eq!(m.at([0.0, 0.0, 0.0]), 1.0);
        assert_eq!(m.at([9.0, 0.0, 0.0]), 0.0, "outside is 0");
    }
}
