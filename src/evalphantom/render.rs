//! From anatomy to magnitude images: partial volume, slice profile, coil array, noise,
//! ghosts and the scanner's interpolation to the display matrix.
//!
//! Each slice is sampled on the acquisition grid (coarser than the stored matrix, as on a
//! scanner) at three depths through the slice weighted by a slice profile; a pixel whose
//! tissue differs from a neighbour's is re-sampled 2x2 in plane. Water and fat signal are
//! accumulated separately, the fat part scaled by the local fat-suppression residual, then
//! the magnitude is taken. Phase-encode ghosts of pulsating arteries and of the whole slice
//! (breathing) are added along the phase axis; the array combination is a root sum of
//! squares of coil images with independent complex noise (drawn in its exact chi
//! distribution form); finally the image is interpolated to the display matrix with a
//! Lanczos kernel, which adds the mild ringing of zero-filled reconstructions.

use rayon::prelude::*;

use super::anatomy::{Anatomy, Sample};
use super::geom::{FastRng, V3, add, cross, dot, mix64, mul, sub, vnoise};
use super::tissue::{FatSup, Tables, Weighting, fat_factor};

/// A stack of parallel slices (one series' geometry).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Stack {
    /// Row direction (along a row, increasing column index), LPS unit vector.
    pub row: V3,
    /// Column direction (down a column, increasing row index), LPS unit vector.
    pub col: V3,
    /// Centre of the slab and of the field of view, LPS mm.
    pub center: V3,
    /// Stored columns.
    pub cols: usize,
    /// Stored rows.
    pub rows: usize,
    /// Stored pixel size (square), mm.
    pub pixel: f64,
    /// Acquired (columns, rows) before interpolation.
    pub acq: [usize; 2],
    /// Number of slices.
    pub slices: usize,
    /// Nominal slice thickness, mm.
    pub thickness: f64,
    /// Centre-to-centre slice distance (thickness plus gap), mm.
    pub spacing: f64,
    /// Whether phase encoding runs along the column direction (else along the row).
    pub phase_along_col: bool,
}

impl Stack {
    /// Slice normal (row x column), the direction slice index increases in.
    pub(crate) fn normal(&self) -> V3 {
        cross(self.row, self.col)
    }

    /// Offset of slice `k` from the slab centre along the normal.
    pub(crate) fn offset(&self, k: usize) -> f64 {
        (k as f64 - (self.slices as f64 - 1.0) / 2.0) * self.spacing
    }

    /// Image Position (Patient) of slice `k`: the centre of its first stored pixel.
    pub(crate) fn position(&self, k: usize) -> V3 {
        let c = add(self.center, mul(self.normal(), self.offset(k)));
        let w = (self.cols as f64 - 1.0) / 2.0 * self.pixel;
        let h = (self.rows as f64 - 1.0) / 2.0 * self.pixel;
        sub(sub(c, mul(self.row, w)), mul(self.col, h))
    }
}

/// A receive array: element positions and the falloff length of their sensitivity.
#[derive(Debug, Clone)]
pub(crate) struct Coils {
    /// Element centres, LPS mm.
    pub pos: Vec<V3>,
    /// 1 / falloff length squared.
    pub inv_l2: f64,
}

impl Coils {
    /// Root sum of squares of the element sensitivities at `p`.
    #[inline]
    pub(crate) fn sos(&self, p: V3) -> f64 {
        let mut s = 0.0;
        for c in &self.pos {
            let d = sub(p, *c);
            let e = 1.0 / (1.0 + dot(d, d) * self.inv_l2);
            s += e * e;
        }
        s.sqrt()
    }
}

/// Phase-encode ghosting.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ghost {
    /// Ghost spacing as a fraction of the phase field of view.
    pub shift: f64,
    /// Amplitude of arterial ghosts (relative to the artery signal).
    pub pulse: f32,
    /// Amplitude of whole-slice breathing ghosts.
    pub resp: f32,
}

/// Everything one sequence needs to turn samples into a magnitude image.
#[derive(Debug, Clone)]
pub(crate) struct SeqRender {
    /// Per-tissue compartment signals.
    pub tables: Tables,
    /// Weighting (for the fat factor).
    pub weighting: Weighting,
    /// Fat suppression.
    pub fatsup: FatSup,
    /// Field strength, T.
    pub b0: f64,
    /// Noise standard deviation per coil channel (signal units).
    pub sigma: f64,
    /// Intensity normalisation power (0 = raw coil profile, 1 = flat).
    pub kappa: f64,
    /// Number of receive channels (degrees of freedom of the noise).
    pub channels: usize,
    /// Ghosting.
    pub ghost: Ghost,
    /// Amplitude of smooth tissue texture.
    pub texture: f64,
    /// Seed of this series' noise.
    pub noise_seed: u64,
    /// Seed of the fat-suppression patchiness.
    pub field_seed: u64,
}

/// Slice profile: three depths through the slice and their weights (a smooth profile a
/// little narrower than a rectangle of the nominal thickness at its shoulders).
const PROFILE: [(f64, f32); 3] = [(-0.36, 0.27), (0.0, 0.46), (0.36, 0.27)];

/// Lanczos-3 interpolation weights from `n_in` samples to `n_out` over the same extent.
fn lanczos(n_in: usize, n_out: usize) -> Vec<(i64, [f32; 6])> {
    let scale = n_in as f64 / n_out as f64;
    let sinc = |x: f64| {
        if x.abs() < 1e-9 {
            1.0
        } else {
            let px = std::f64::consts::PI * x;
            px.sin() / px
        }
    };
    (0..n_out)
        .map(|o| {
            let x = (o as f64 + 0.5) * scale - 0.5;
            let base = x.floor() as i64 - 2;
            let mut w = [0f32; 6];
            let mut sum = 0.0;
            for (t, wt) in w.iter_mut().enumerate() {
                let d = x - (base + t as i64) as f64;
                let v = if d.abs() < 3.0 {
                    sinc(d) * sinc(d / 3.0)
                } else {
                    0.0
                };
                *wt = v as f32;
                sum += v;
            }
            for wt in &mut w {
                *wt /= sum as f32;
            }
            (base, w)
        })
        .collect()
}

fn resample(src: &[f32], w_in: usize, h_in: usize, w_out: usize, h_out: usize) -> Vec<f32> {
    let kx = lanczos(w_in, w_out);
    let ky = lanczos(h_in, h_out);
    let at = |base: i64, t: usize, n: usize| -> usize {
        (base + t as i64).clamp(0, n as i64 - 1) as usize
    };
    let mut tmp = vec![0f32; w_out * h_in];
    for y in 0..h_in {
        let row = &src[y * w_in..(y + 1) * w_in];
        for (x, (b, w)) in kx.iter().enumerate() {
            let mut s = 0.0;
            for (t, wt) in w.iter().enumerate() {
                s += wt * row[at(*b, t, w_in)];
            }
            tmp[y * w_out + x] = s;
        }
    }
    let mut out = vec![0f32; w_out * h_out];
    for (y, (b, w)) in ky.iter().enumerate() {
        for t in 0..6 {
            let sy = at(*b, t, h_in);
            let wt = w[t];
            if wt == 0.0 {
                continue;
            }
            let src_row = &tmp[sy * w_out..(sy + 1) * w_out];
            let dst = &mut out[y * w_out..(y + 1) * w_out];
            for (d, s) in dst.iter_mut().zip(src_row) {
                *d += wt * s;
            }
        }
    }
    for v in &mut out {
        *v = v.max(0.0);
    }
    out
}

/// Render every slice of `stack` for each sequence in `seqs` (which share the geometry
/// and therefore the anatomy sampling). Returns, per sequence, the slices concatenated
/// (stored matrix, row-major, slice after slice, in slice-index order).
pub(crate) fn render_stack(
    anat: &Anatomy,
    stack: &Stack,
    coils: &Coils,
    seqs: &[SeqRender],
) -> Vec<Vec<f32>> {
    let per_slice: Vec<Vec<Vec<f32>>> = (0..stack.slices)
        .into_par_iter()
        .map(|k| render_slice(anat, stack, coils, seqs, k))
        .collect();
    let n = stack.cols * stack.rows;
    (0..seqs.len())
        .map(|s| {
            let mut v = Vec::with_capacity(n * stack.slices);
            for sl in &per_slice {
                v.extend_from_slice(&sl[s]);
            }
            v
        })
        .collect()
}

fn render_slice(
    anat: &Anatomy,
    stack: &Stack,
    coils: &Coils,
    seqs: &[SeqRender],
    k: usize,
) -> Vec<Vec<f32>> {
    let [nc, nr] = stack.acq;
    let na = nc * nr;
    let fov_w = stack.cols as f64 * stack.pixel;
    let fov_h = stack.rows as f64 * stack.pixel;
    let (dx, dy) = (fov_w / nc as f64, fov_h / nr as f64);
    let normal = stack.normal();
    let slice_c = add(stack.center, mul(normal, stack.offset(k)));
    // Samples are stepped in the pelvis frame so that none pays for the pose transform.
    let edge = sub(
        sub(slice_c, mul(stack.row, fov_w / 2.0)),
        mul(stack.col, fov_h / 2.0),
    );
    let pose = &anat.pose;
    let q_edge = pose.to_pelvis(edge);
    let q_row = pose.dir_to_pelvis(stack.row);
    let q_col = pose.dir_to_pelvis(stack.col);
    let q_n = pose.dir_to_pelvis(normal);
    let ns = seqs.len();
    let mut acc_w = vec![0f32; ns * na];
    let mut acc_f = vec![0f32; ns * na];
    let mut acc_p = vec![0f32; ns * na];
    let mut labels: Vec<Sample> = Vec::with_capacity(na);
    let point = |base: V3, x: f64, y: f64| add(add(base, mul(q_row, x)), mul(q_col, y));
    let add_sample =
        |s: Sample, wgt: f32, idx: usize, w: &mut [f32], f: &mut [f32], p: &mut [f32]| {
            let (a, b, t) = (s.a as usize, s.b as usize, s.t);
            for (si, seq) in seqs.iter().enumerate() {
                let tb = &seq.tables;
                let ww = (1.0 - t) * tb.water[a] + t * tb.water[b];
                let ff = (1.0 - t) * tb.fat[a] + t * tb.fat[b];
                w[si * na + idx] += wgt * ww;
                f[si * na + idx] += wgt * ff;
                if tb.pulse[a] {
                    p[si * na + idx] += wgt * (1.0 - t) * tb.water[a];
                }
            }
        };
    for (off, wgt) in PROFILE {
        let base = add(q_edge, mul(q_n, off * stack.thickness));
        labels.clear();
        for j in 0..nr {
            let y = (j as f64 + 0.5) * dy;
            for i in 0..nc {
                let x = (i as f64 + 0.5) * dx;
                labels.push(anat.eval_pelvis(point(base, x, y)));
            }
        }
        let differs = |a: &Sample, b: &Sample| a.a != b.a || a.b != b.b || (a.t - b.t).abs() > 0.25;
        for j in 0..nr {
            for i in 0..nc {
                let idx = j * nc + i;
                let s = labels[idx];
                let edge = (i > 0 && differs(&s, &labels[idx - 1]))
                    || (i + 1 < nc && differs(&s, &labels[idx + 1]))
                    || (j > 0 && differs(&s, &labels[idx - nc]))
                    || (j + 1 < nr && differs(&s, &labels[idx + nc]));
                if edge {
                    let (x, y) = ((i as f64 + 0.5) * dx, (j as f64 + 0.5) * dy);
                    for (ox, oy) in [(-0.25, -0.25), (0.25, -0.25), (-0.25, 0.25), (0.25, 0.25)] {
                        let ss = anat.eval_pelvis(point(base, x + ox * dx, y + oy * dy));
                        add_sample(ss, wgt * 0.25, idx, &mut acc_w, &mut acc_f, &mut acc_p);
                    }
                } else {
                    add_sample(s, wgt, idx, &mut acc_w, &mut acc_f, &mut acc_p);
                }
            }
        }
    }

    // Texture, coil and fat-suppression maps depend on position only: once per slice.
    let mut tex = vec![1f32; na];
    let mut d2 = vec![0f32; na];
    let mut patch = vec![0f32; na];
    let tex_amp = seqs.iter().map(|s| s.texture).fold(0.0, f64::max);
    let need_field = seqs.iter().any(|s| {
        !matches!(s.fatsup, FatSup::None) || matches!(s.weighting, Weighting::Stir { .. })
    });
    let field_seed = seqs.first().map(|s| s.field_seed).unwrap_or(0);
    let mut sens = vec![0f32; na];
    for j in 0..nr {
        let y = (j as f64 + 0.5) * dy;
        for i in 0..nc {
            let x = (i as f64 + 0.5) * dx;
            let idx = j * nc + i;
            let p = add(add(edge, mul(stack.row, x)), mul(stack.col, y));
            sens[idx] = coils.sos(p) as f32;
            if tex_amp > 0.0 {
                let q = point(q_edge, x, y);
                tex[idx] = (1.0 + tex_amp * vnoise(mul(q, 1.0 / 7.0), anat.seed)) as f32;
            }
            if need_field {
                d2[idx] = (dot(p, p) / 1.0e4) as f32;
                patch[idx] = vnoise(mul(p, 1.0 / 60.0), field_seed) as f32;
            }
        }
    }

    let mut out = Vec::with_capacity(ns);
    for (si, seq) in seqs.iter().enumerate() {
        let mut m = vec![0f32; na];
        let mut pulse = vec![0f32; na];
        for idx in 0..na {
            let ff = if need_field {
                fat_factor(
                    seq.weighting,
                    seq.fatsup,
                    seq.b0,
                    d2[idx] as f64,
                    patch[idx] as f64,
                )
            } else {
                fat_factor(seq.weighting, seq.fatsup, seq.b0, 0.0, 0.0)
            };
            let v = (acc_w[si * na + idx] + ff * acc_f[si * na + idx]).abs();
            m[idx] = v * tex[idx];
            pulse[idx] = acc_p[si * na + idx].abs();
        }
        let mut g = ghosts(&m, &pulse, seq, stack.phase_along_col, nc, nr);
        coil_magnitude(&mut g, &sens, seq, k);
        out.push(resample(&g, nc, nr, stack.cols, stack.rows));
    }
    out
}

/// `m` with its ghosts along the phase-encode axis (respiratory from `m`, pulsatile from
/// `pulse`), wrapping as they do.
fn ghosts(
    m: &[f32],
    pulse: &[f32],
    seq: &SeqRender,
    phase_along_col: bool,
    nc: usize,
    nr: usize,
) -> Vec<f32> {
    let (n_pe, stride, n_ro) = if phase_along_col {
        (nr, nc, nc)
    } else {
        (nc, 1, nr)
    };
    let shift = ((seq.ghost.shift * n_pe as f64).round() as usize).clamp(1, n_pe - 1);
    let mut g = m.to_vec();
    for ro in 0..n_ro {
        let line = |pe: usize| {
            if phase_along_col {
                pe * stride + ro
            } else {
                ro * nc + pe
            }
        };
        for pe in 0..n_pe {
            let up = (pe + shift) % n_pe;
            let dn = (pe + n_pe - shift) % n_pe;
            let up2 = (pe + 2 * shift) % n_pe;
            let dn2 = (pe + 2 * n_pe - 2 * shift) % n_pe;
            let idx = line(pe);
            g[idx] += seq.ghost.resp * (m[line(up)] + m[line(dn)])
                + seq.ghost.pulse * (pulse[line(up)] + pulse[line(dn)])
                + 0.5 * seq.ghost.pulse * (pulse[line(up2)] + pulse[line(dn2)]);
        }
    }
    g
}

/// The magnitude a root-sum-of-squares coil array reports for the true signal `g` (in
/// place), with the coil sensitivities `sens` and slice `k`'s noise.
fn coil_magnitude(g: &mut [f32], sens: &[f32], seq: &SeqRender, k: usize) {
    let na = g.len();
    // Root sum of squares of N coils with complex noise: by rotational symmetry the 2N
    // real noise channels are one Gaussian along the sensitivity vector plus a
    // chi-square with 2N-1 degrees of freedom (Wilson-Hilferty), so two draws per
    // pixel give the exact non-central chi magnitude.
    let mut rng = FastRng::new(mix64(seq.noise_seed ^ (k as u64).wrapping_mul(0x9E37)));
    let dof = (2 * seq.channels - 1) as f32;
    let c1 = 1.0 - 2.0 / (9.0 * dof);
    let c2 = (2.0 / (9.0 * dof)).sqrt();
    let sigma = seq.sigma as f32;
    let kappa = seq.kappa as f32;
    for idx in 0..na {
        let s = sens[idx];
        let a = s * g[idx] + sigma * rng.gauss();
        let cube = (c1 + c2 * rng.gauss()).max(0.0);
        let chi2 = dof * cube * cube * cube;
        let mag = (a * a + sigma * sigma * chi2).sqrt();
        g[idx] = mag / s.max(1e-3).powf(kappa);
    }
}

/// Signal of muscle (|water + fat|) for `seq` at the isocentre: the reference for SNR.
pub(crate) fn reference_signal(tables: &Tables, w: Weighting, fs: FatSup, b0: f64) -> f64 {
    let ff = fat_factor(w, fs, b0, 0.0, 0.0);
    let i = super::tissue::Tissue::MuscleA as usize;
    (tables.water[i] + ff * tables.fat[i]).abs() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lanczos_keeps_flat_fields_flat() {
        let src = vec![5.0f32; 20 * 16];
        let out = resample(&src, 20, 16, 32, 28);
        assert_eq!(out.len(), 32 * 28);
        assert!(out.iter().all(|v| (v - 5.0).abs() < 1e-3));
    }
}
