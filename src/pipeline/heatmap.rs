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
use crate::result::{Side, StageCall};
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

impl CropHeatmap<'_> {
    /// The heatmap as a volume in the crop's own (unmirrored) grid, so that it is sampled
    /// like any other volume.
    pub fn to_volume(&self) -> Volume {
        let w = self.shape[2];
        let mut data = self.values.to_vec();
        if self.mirrored {
            for row in data.chunks_mut(w) {
                row.reverse();
            }
        }
        Volume {
            data,
            dims: [self.shape[2], self.shape[1], self.shape[0]],
            affine: self.affine,
            series_uid: String::new(),
            study_uid: String::new(),
        }
    }

    /// Trilinear value at patient point `p`; 0 outside the crop.
    pub fn at(&self, p: [f64; 3]) -> f32 {
        let v = self.to_volume();
        volume::sample(&v, v.patient_to_voxel(p)).unwrap_or(0.0)
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
        let crop = m.to_volume();
        // The study voxels the crop can reach: the bounding box of its corners.
        let [w, h, d] = crop.dims;
        let mut lo = [f64::MAX; 3];
        let mut hi = [f64::MIN; 3];
        for c in 0..8 {
            let q = [
                if c & 1 == 1 { w as f64 - 0.5 } else { -0.5 },
                if c & 2 == 2 { h as f64 - 0.5 } else { -0.5 },
                if c & 4 == 4 { d as f64 - 0.5 } else { -0.5 },
            ];
            let v = study.patient_to_voxel(crop.voxel_to_patient(q));
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
                    let v = volume::sample(&crop, crop.patient_to_voxel(p)).unwrap_or(0.0);
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
    /// The head's side.
    pub side: Side,
    /// The stage called.
    pub stage: StageCall,
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
    let side = label.side.word();
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
