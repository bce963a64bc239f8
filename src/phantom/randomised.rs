//! Domain-randomised rendering of the phantom's anatomy, for training only.
//!
//! The classic renderer (`phantom::generate_study`) gives every tissue one signal per
//! contrast, so a network trained on it learns that phantom's look, not femoral heads. Here,
//! as in SynthSeg (Billot et al., Medical Image Analysis 2023), images are sampled from the
//! anatomy's *label map* with every appearance parameter drawn anew per study:
//!
//! - anatomy: body habitus and fat thickness, pelvis tilt, obliquity and rotation, overall
//!   size, bladder from empty to full, head radius 20–27 mm, neck-shaft angle 115–145°, leg
//!   abduction, lesion size and direction within each stage's definition;
//! - contrast: a mean and spread per label, either T2-like (fat suppressed as in FS-T2 or
//!   STIR, or bright as in plain T2/PD) or drawn independently (orderings no scanner makes,
//!   inverted ones included). The lesions stay what a reader would call them whatever the
//!   contrast: oedema and the inner (granulation) line move from marrow towards fluid, the
//!   outer (sclerotic) line towards cortex, the necrotic segment stays marrow-like and mottled;
//!   marrow and fluid are always told apart, so a stage is never drawn invisible;
//! - distractors the label map lacks: bowel-like clusters above the heads and soft-tissue
//!   bellies, of random signal, never touching a head;
//! - acquisition: coronal or axial slab of 3–7 mm slices with gaps (blur along the slice
//!   direction), in-plane resolution, field of view from tight hips to the whole pelvis and
//!   where it is centred relative to the heads (the model grid is centred on the series
//!   centre, as in the pipeline; what lies outside the acquisition is not acquired);
//! - artefacts: multiplicative bias field, gamma, Rician noise, phase-encode ghosts and
//!   motion copies, partial volume at the grid's voxel size.
//!
//! Images are rendered directly on a model grid (the detector's input grid, or a stager
//! crop's grid), so thousands of distinct studies cost little; they then go through the same
//! intensity normalisation as in inference (`volume::preprocess::normalise`). The DICOM path
//! (`phantom::generate_study`) stays for validation and tests.
//!
//! Not here: DICOM, files, or anything used at inference time.

/// What is drawn per training study, as a manifest states it.
pub const DESCRIPTION: &str = "SynthSeg-style, per study: anatomy (body habitus, fat 5-45 mm, \
pelvis tilt +-8 deg, obliquity +-4 deg, rotation +-6 deg, size x0.88-1.12, bladder empty to full, \
head radius 20-27 mm, neck-shaft angle 115-145 deg, abduction -10..15 deg, lesion size and \
direction within each stage; stage I from a subchondral focus (1/e radius 0.25-0.31 of the head's, centred half a radius \
beneath the surface) to diffuse oedema (0.87-0.93, centred within a tenth of a radius of the \
head's centre)); contrast (a mean and spread per label: fat-suppressed T2/STIR-like, \
plain T2/PD-like, or independent draws with any ordering; oedema and the granulation line move \
from marrow towards fluid, the sclerotic line towards cortex, marrow and fluid always differ); \
distractors (0-40 bowel-like ellipsoids above the heads and 0-8 soft-tissue bellies, random \
signal, never touching a head); muscle compartments (none in a quarter of studies, else 8-59 \
Voronoi cells inside the muscle, signal x0.85-1.15 each, fat planes 0.8-3 mm wide along their \
borders); acquisition (coronal or axial slab of 16-40 slices of 3-7 mm with 0-2 mm gaps, in-plane \
0.6-2 mm, field of view 220-440 mm centred -30..+75 mm from the heads superiorly and +-20 mm \
otherwise, outside it not acquired); artefacts (bias field, gamma 0.67-1.5, Rician noise \
1-15 % log-uniform, phase-encode ghosts and motion copies); partial volume at the grid's voxel size";

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use super::anatomy::{self, Anatomy, Hip, LABELS, Label, Stage, V3, Variant, unit};
use super::mr_signal;
use super::{HeadTruth, Pose, head_truths};
use crate::volume::preprocess::canonical_grid;

/// The stream (of the scene's generator) that draws stage I's focus.
const STAGE_I_STREAM: u64 = 0x5354_4147_4531;

/// One drawn study: anatomy placed in patient space, and its heads' truth.
#[derive(Debug, Clone)]
pub struct Scene {
    /// The canonical anatomy (label shapes and lesions).
    anatomy: Anatomy,
    /// Where the anatomy sits in patient space.
    pose: Pose,
    /// The heads' ground truth in patient LPS mm, right then left.
    pub heads: Vec<HeadTruth>,
    /// Distractors the label map lacks — bowel loops, vessels, muscle bellies: ellipsoids
    /// (patient centre, radii mm) of a signal drawn per study relative to the brightest
    /// tissue, never touching a femoral head. A detector must learn heads, not "the only
    /// round things in the pelvis".
    blobs: Vec<(V3, V3, f64)>,
    /// Muscle compartments: seeds (patient mm) of a Voronoi diagram inside the muscle label,
    /// each with a signal gain, and the width of the fat planes along their borders (mm).
    septa: (Vec<(V3, f64)>, f64),
}

/// Draw a scene; `stages` pins (right, left).
pub fn draw_scene(rng: &mut ChaCha8Rng, stages: Option<[Stage; 2]>) -> Scene {
    let stages = stages.unwrap_or_else(|| {
        let mut draw = || match rng.random_range(0..3) {
            0 => Stage::S0,
            1 => Stage::S1,
            _ => Stage::S2,
        };
        [draw(), draw()]
    });
    let scale: f64 = rng.random_range(0.88..1.12);
    let pose = Pose {
        rot: anatomy::rotation(
            rng.random_range(-0.14..0.14),
            rng.random_range(-0.07..0.07),
            rng.random_range(-0.1..0.1),
        ),
        scale,
        shift: [
            rng.random_range(-30.0..30.0),
            rng.random_range(-30.0..30.0),
            rng.random_range(-30.0..30.0),
        ],
    };
    // Patient-space head radius 20–27 mm, the two within 1.5 mm of each other.
    let radius: f64 = rng.random_range(20.0..27.0);
    let half_gap: f64 = rng.random_range(80.0..100.0);
    let mut hips = [0usize, 1].map(|i| {
        let sign = if i == 0 { -1.0 } else { 1.0 };
        let stage = stages[i];
        Hip {
            sign,
            center: [
                sign * half_gap + rng.random_range(-3.0..3.0),
                rng.random_range(-6.0..6.0),
                rng.random_range(-4.0..4.0),
            ],
            radius: (radius + rng.random_range(-1.5..1.5)) / scale,
            neck_shaft_deg: rng.random_range(115.0..145.0),
            stage,
            variant: if stage == Stage::S0 && rng.random_bool(0.4) {
                Variant::HerniationPit
            } else {
                Variant::None
            },
            lesion_dir: unit([
                sign * rng.random_range(0.0..0.4),
                -rng.random_range(0.2..0.7),
                rng.random_range(0.7..0.95),
            ]),
            lesion_size: match stage {
                Stage::S1 => rng.random_range(0.28..0.5),
                _ => rng.random_range(0.55..0.85),
            },
            lesion_depth: 0.5,
            abduction_deg: rng.random_range(-10.0..15.0),
        }
    });
    // Stage I from a small subchondral focus to diffuse oedema through most of the head,
    // drawn on a stream of its own so that every other draw of the scene stays as it was
    // (the size drawn above is replaced, but still drawn, for the same reason).
    for (i, hip) in hips.iter_mut().enumerate() {
        if hip.stage == Stage::S1 {
            let mut own = rng.clone();
            own.set_stream(STAGE_I_STREAM + i as u64);
            let t: f64 = own.random_range(0.0..1.0);
            hip.lesion_depth = 0.5 - 0.45 * t + own.random_range(-0.05..0.05);
            hip.lesion_size = 0.28 + 0.62 * t + own.random_range(-0.03..0.03);
        }
    }
    let a: f64 = rng.random_range(140.0..200.0);
    let b: f64 = rng.random_range(95.0..140.0);
    let anatomy = Anatomy {
        body: (a, b),
        fat: rng.random_range(5.0..45.0_f64).min(b - 70.0),
        bladder: (
            [
                rng.random_range(-8.0..8.0),
                rng.random_range(-55.0..-35.0),
                rng.random_range(15.0..55.0),
            ],
            [
                rng.random_range(15.0..55.0),
                rng.random_range(12.0..40.0),
                rng.random_range(12.0..45.0),
            ],
        ),
        hips,
    };
    let heads = head_truths(&anatomy, &pose);
    let blobs = draw_blobs(rng, &heads, a, b);
    let septa = draw_septa(rng, &heads, a, b);
    Scene {
        anatomy,
        pose,
        heads,
        blobs,
        septa,
    }
}

/// Muscle groups separated by thin fat planes: 8-59 compartment seeds through the body
/// (none in a quarter of studies), each compartment's signal x0.85-1.15, planes 0.8-3 mm.
fn draw_septa(rng: &mut ChaCha8Rng, heads: &[HeadTruth], a: f64, b: f64) -> (Vec<(V3, f64)>, f64) {
    let mid = [0, 1, 2].map(|i| (heads[0].center_lps_mm[i] + heads[1].center_lps_mm[i]) / 2.0);
    let n = if rng.random_bool(0.25) {
        0
    } else {
        rng.random_range(8..60)
    };
    let seeds = (0..n)
        .map(|_| {
            (
                [
                    mid[0] + rng.random_range(-a..a),
                    mid[1] + rng.random_range(-b..b),
                    mid[2] + rng.random_range(-160.0..160.0),
                ],
                rng.random_range(0.85..1.15),
            )
        })
        .collect();
    (seeds, rng.random_range(0.8..3.0))
}

/// Bowel-like clusters above the heads and larger soft-tissue bellies anywhere in the body,
/// each kept clear of both heads.
fn draw_blobs(rng: &mut ChaCha8Rng, heads: &[HeadTruth], a: f64, b: f64) -> Vec<(V3, V3, f64)> {
    let mid = [0, 1, 2].map(|i| (heads[0].center_lps_mm[i] + heads[1].center_lps_mm[i]) / 2.0);
    let mut out = Vec::new();
    let clear = |c: V3, r: f64| {
        heads.iter().all(|h| {
            let d = (0..3)
                .map(|i| (c[i] - h.center_lps_mm[i]).powi(2))
                .sum::<f64>()
                .sqrt();
            d > h.radius_mm + r + 4.0
        })
    };
    let bowel = rng.random_range(0..40);
    let bowel_level: f64 = rng.random_range(0.0..1.0);
    for _ in 0..bowel {
        let r: V3 = [0; 3].map(|_| rng.random_range(4.0..14.0));
        let c = [
            mid[0] + rng.random_range(-90.0..90.0),
            mid[1] + rng.random_range(-70.0..40.0),
            mid[2] + rng.random_range(20.0..160.0),
        ];
        let level = (bowel_level + rng.random_range(-0.3..0.3_f64)).clamp(0.0, 1.2);
        if clear(c, r[0].max(r[1]).max(r[2])) {
            out.push((c, r, level));
        }
    }
    for _ in 0..rng.random_range(0..8) {
        let r: V3 = [0; 3].map(|_| rng.random_range(10.0..45.0));
        let c = [
            mid[0] + rng.random_range(-a * 0.8..a * 0.8),
            mid[1] + rng.random_range(-b * 0.6..b * 0.6),
            mid[2] + rng.random_range(-120.0..120.0),
        ];
        if clear(c, r[0].max(r[1]).max(r[2])) {
            out.push((c, r, rng.random_range(0.0..1.0)));
        }
    }
    out
}

impl Scene {
    /// Midpoint of the two head centres, patient mm.
    pub fn heads_midpoint(&self) -> V3 {
        let (a, b) = (self.heads[0].center_lps_mm, self.heads[1].center_lps_mm);
        [0, 1, 2].map(|i| (a[i] + b[i]) / 2.0)
    }
}

/// Slice orientation of the simulated acquisition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SliceAxis {
    /// Slices stack anterior to posterior (patient y).
    Coronal,
    /// Slices stack inferior to superior (patient z).
    Axial,
}

/// What was acquired and how: the region, its resolution and its artefacts.
#[derive(Debug, Clone)]
pub struct Acquisition {
    /// Centre of the acquired region (the series centre), patient mm.
    pub center: V3,
    /// Slice orientation.
    pub axis: SliceAxis,
    /// Extent along the slice normal, mm (slices x spacing).
    pub slab_mm: f64,
    /// In-plane extents, mm: (patient x, the other in-plane patient axis).
    pub fov_mm: [f64; 2],
    /// Slice thickness plus gap, mm: blur along the slice normal.
    pub slice_mm: f64,
    /// In-plane resolution, mm.
    pub pixel_mm: f64,
    /// Mean signal per label, in arbitrary units (index = `Label as usize`).
    means: [f64; LABELS],
    /// Within-label spread per label (texture), same units.
    spread: [f64; LABELS],
    /// Bias field: coefficients of x, y, z, x², y², z² (patient mm / 200).
    bias: [f64; 6],
    /// Gamma applied to the normalised signal.
    gamma: f64,
    /// Rician noise sigma, relative to the brightest mean.
    noise: f64,
    /// Copies along the phase-encode axis: (shift in voxels, amplitude) — ghosts and motion.
    ghosts: Vec<(isize, f64)>,
    /// Phase-encode axis on the grid: 1 = rows (superior-inferior), 2 = columns (right-left).
    phase_axis: usize,
}

/// Draw an acquisition for `scene`: where it is centred, what it covers, and how it looks.
pub fn draw_acquisition(rng: &mut ChaCha8Rng, scene: &Scene) -> Acquisition {
    let mid = scene.heads_midpoint();
    let axis = if rng.random_bool(0.75) {
        SliceAxis::Coronal
    } else {
        SliceAxis::Axial
    };
    let thickness: f64 = rng.random_range(3.0..7.0);
    let gap: f64 = rng.random_range(0.0..2.0);
    let slices: f64 = rng.random_range(16.0..40.0);
    // Tight hips to the whole pelvis: the series centre from a little below the heads to
    // well above them, and off-centre left-right and front-back.
    let center = [
        mid[0] + rng.random_range(-20.0..20.0),
        mid[1] + rng.random_range(-20.0..20.0),
        mid[2] + rng.random_range(-30.0..75.0),
    ];
    let fov_mm = match axis {
        SliceAxis::Coronal => [
            rng.random_range(260.0..440.0),
            rng.random_range(220.0..440.0),
        ],
        SliceAxis::Axial => [
            rng.random_range(280.0..440.0),
            rng.random_range(220.0..400.0),
        ],
    };
    let pixel_mm = if rng.random_bool(0.85) {
        rng.random_range(0.6..1.2)
    } else {
        rng.random_range(1.2..2.0)
    };
    let (means, spread) = draw_contrast(rng);
    let mut ghosts = Vec::new();
    if rng.random_bool(0.3) {
        // N/2 ghost of the whole image.
        ghosts.push((0, rng.random_range(0.03..0.15)));
    }
    if rng.random_bool(0.25) {
        for _ in 0..rng.random_range(2..5) {
            let s = rng.random_range(1i64..7) as isize;
            let s = if rng.random_bool(0.5) { s } else { -s };
            ghosts.push((s, rng.random_range(0.03..0.1)));
        }
    }
    Acquisition {
        center,
        axis,
        slab_mm: slices * (thickness + gap),
        fov_mm,
        slice_mm: (thickness * thickness + gap * gap).sqrt(),
        pixel_mm,
        means,
        spread,
        bias: [
            rng.random_range(-0.3..0.3),
            rng.random_range(-0.3..0.3),
            rng.random_range(-0.3..0.3),
            rng.random_range(-0.15..0.15),
            rng.random_range(-0.15..0.15),
            rng.random_range(-0.15..0.15),
        ],
        gamma: rng.random_range(-0.4..0.4_f64).exp(),
        // Log-uniform 1-15 %: most studies as clean as a 3 T FS-T2, a tail as noisy as a
        // thick-slice STIR at low field, where the lesion's edges are still there to a reader.
        noise: rng.random_range(0.01_f64.ln()..0.15_f64.ln()).exp(),
        ghosts,
        phase_axis: if rng.random_bool(0.5) { 1 } else { 2 },
    }
}

/// What the T1-weighted companion series adds (recorded in a T1 stager's manifest).
pub const T1_DESCRIPTION: &str = "T1 companion for a stager with a T1 channel (in a fifth of \
studies none; else its own acquisition of the same scene drawn as above, centred within 15 mm \
of the T2's). T2 and T1 come from one two-compartment signal model per study (`mr_signal`: per \
label proton density, fat fraction, water T1 and T2 drawn around textbook pelvic values at \
1.5-3 T; fat T1 250-400 ms, apparent T2 80-180 ms; oedema = marrow with 8-85 % (log-uniform) of \
its fat replaced by water of T1 400-1000 ms longer than the marrow water's, T2 60-150 ms; the necrotic segment by Mitchell's classes: \
fat-like in half the studies (both heads of a study share it), else blood-, fluid- or \
fibrous-like (1:2:2); \
granulation watery, sclerosis of little signal): the T1 is a spin echo of TR 400-750 ms, \
TE 8-20 ms; the T2 beside it, in 80 % of those studies, a fat-saturated T2/PD (a quarter), \
a STIR near fat's null point (a quarter) or a plain T2/PD (half) of the same tissues (so a plain T2 hides oedema where \
physics hides it, and the T1 still shows it), else the label-wise draw above";

/// Share of T1-bearing studies whose T2 also comes from the T1's signal model (the rest
/// keep the label-wise T2 draw).
pub const T2_FROM_SIGNAL_MODEL: f64 = 0.8;

/// The T1-weighted companion of the T2 acquisition `t2`, and the T2 as it looks beside it:
/// both from one study's tissues (`mr_signal`). The T1 has its own slab, resolution and
/// artefacts, centred within 15 mm of the T2's; the T2 keeps its geometry and artefacts and,
/// in [`T2_FROM_SIGNAL_MODEL`] of draws, takes its contrast from the same tissues.
pub fn draw_t1_pair(
    rng: &mut ChaCha8Rng,
    scene: &Scene,
    t2: &Acquisition,
) -> (Acquisition, Acquisition) {
    let tissues = mr_signal::draw_tissues(rng);
    let mut t1 = draw_acquisition(rng, scene);
    t1.center = [0, 1, 2].map(|i| t2.center[i] + rng.random_range(-15.0..15.0));
    t1.means = mr_signal::means(&tissues, mr_signal::draw_t1_sequence(rng));
    t1.spread = draw_spreads(rng);
    let mut beside = t2.clone();
    if rng.random_bool(T2_FROM_SIGNAL_MODEL) {
        let seq = mr_signal::draw_t2_sequence(rng, &tissues);
        beside.means = mr_signal::means(&tissues, seq);
    }
    (t1, beside)
}

/// Per-label spreads, shared by the T2 and T1 draws: the necrotic core a little wider.
fn draw_spreads(rng: &mut ChaCha8Rng) -> [f64; LABELS] {
    let mut s = [0.0; LABELS];
    for (i, v) in s.iter_mut().enumerate() {
        *v = if i == Label::Necrotic as usize {
            rng.random_range(0.02..0.08)
        } else {
            rng.random_range(0.0..0.05)
        };
    }
    s
}

/// Means and spreads per label: T2-like with or without fat suppression, or independent.
fn draw_contrast(rng: &mut ChaCha8Rng) -> ([f64; LABELS], [f64; LABELS]) {
    let mut m = [0.0; LABELS];
    let u = |rng: &mut ChaCha8Rng, lo: f64, hi: f64| rng.random_range(lo..hi);
    let mode = rng.random_range(0..4);
    match mode {
        // Fat-suppressed T2 or STIR: fat and marrow dark, fluid bright.
        0 => {
            m[Label::Fat as usize] = u(rng, 0.03, 0.25);
            m[Label::Marrow as usize] = m[Label::Fat as usize] * u(rng, 0.8, 1.4);
            m[Label::Muscle as usize] = u(rng, 0.12, 0.4);
            m[Label::Joint as usize] = u(rng, 0.6, 1.0);
            m[Label::Cortex as usize] = u(rng, 0.0, 0.06);
        }
        // Plain T2 or PD: fat and marrow bright.
        1 => {
            m[Label::Fat as usize] = u(rng, 0.5, 0.95);
            m[Label::Marrow as usize] = m[Label::Fat as usize] * u(rng, 0.7, 1.05);
            m[Label::Muscle as usize] = u(rng, 0.12, 0.4);
            m[Label::Joint as usize] = u(rng, 0.55, 1.0);
            m[Label::Cortex as usize] = u(rng, 0.0, 0.06);
        }
        // Independent draws: any ordering, inverted ones included.
        _ => {
            for l in [Label::Fat, Label::Muscle, Label::Joint, Label::Marrow] {
                m[l as usize] = u(rng, 0.0, 1.0);
            }
            if rng.random_bool(0.5) {
                m[Label::Marrow as usize] = m[Label::Fat as usize] * u(rng, 0.7, 1.3);
            }
            m[Label::Cortex as usize] = u(rng, 0.0, 0.2);
        }
    }
    // Marrow and fluid always differ enough for oedema and the double line to show.
    let (marrow, cortex) = (m[Label::Marrow as usize], m[Label::Cortex as usize]);
    if (m[Label::Joint as usize] - marrow).abs() < 0.25 {
        m[Label::Joint as usize] = if marrow < 0.5 {
            u(rng, marrow + 0.3, 1.2)
        } else {
            u(rng, 0.0, (marrow - 0.3).max(0.01))
        };
    }
    let fluid = m[Label::Joint as usize];
    m[Label::Urine as usize] = if rng.random_bool(0.75) {
        (fluid + u(rng, -0.15, 0.15)).max(0.0)
    } else {
        u(rng, 0.0, 1.0)
    };
    m[Label::Air as usize] = u(rng, 0.0, 0.03);
    m[Label::Oedema as usize] = marrow + (fluid - marrow) * u(rng, 0.3, 0.75);
    m[Label::Granulation as usize] = marrow + (fluid - marrow) * u(rng, 0.55, 1.0);
    m[Label::Sclerosis as usize] = marrow + (cortex - marrow) * u(rng, 0.6, 1.0);
    m[Label::Necrotic as usize] = marrow * u(rng, 0.85, 1.15);
    (m, draw_spreads(rng))
}

/// A grid to render on: its affine (voxel (column, row, slice) to patient mm) and shape
/// (D, H, W).
#[derive(Debug, Clone, Copy)]
pub struct Grid {
    /// Voxel to patient mm.
    pub affine: [[f64; 4]; 4],
    /// (D, H, W).
    pub shape: [usize; 3],
}

impl Grid {
    /// The canonical grid of `shape` covering `fov_mm` around `center` (as in
    /// `volume::resample`).
    pub fn canonical(center: V3, fov_mm: [f64; 3], shape: [usize; 3]) -> Grid {
        Grid {
            affine: canonical_grid(center, fov_mm, shape),
            shape,
        }
    }

    fn point(&self, i: f64, j: f64, k: f64) -> V3 {
        let a = &self.affine;
        [0, 1, 2].map(|r| a[r][0] * i + a[r][1] * j + a[r][2] * k + a[r][3])
    }

    /// Voxel size along (D, H, W), mm.
    fn steps(&self) -> [f64; 3] {
        let n = |c: usize| {
            (0..3)
                .map(|r| self.affine[r][c] * self.affine[r][c])
                .sum::<f64>()
                .sqrt()
        };
        [n(2), n(1), n(0)]
    }
}

/// Render `scene` as acquired by `acq` on `grid`: the signal (arbitrary units, not yet
/// normalised) and which voxels lie inside the acquired region. `seed` drives the noise.
pub fn render(scene: &Scene, acq: &Acquisition, grid: &Grid, seed: u64) -> (Vec<f32>, Vec<bool>) {
    let [d, h, w] = grid.shape;
    let steps = grid.steps();
    let vox = (steps[0] + steps[1] + steps[2]) / 3.0 / scene.pose.scale;
    let plane = d * h * w / d.max(1);
    let top = acq.means.iter().cloned().fold(0.0, f64::max).max(1e-3);
    // Labels to signal, with per-voxel spread (texture before the blur, as in SynthSeg).
    let mut signal = vec![0f32; d * h * w];
    let mut inside = vec![false; d * h * w];
    signal
        .par_chunks_mut(plane)
        .zip(inside.par_chunks_mut(plane))
        .enumerate()
        .for_each(|(k, (sig, ins))| {
            let mut rng = <ChaCha8Rng as rand::SeedableRng>::seed_from_u64(
                seed.wrapping_mul(0x9e37_79b9).wrapping_add(k as u64),
            );
            for j in 0..h {
                for i in 0..w {
                    let p = grid.point(i as f64, j as f64, k as f64);
                    let idx = j * w + i;
                    ins[idx] = acq.covers(p);
                    let f = scene.anatomy.fractions(scene.pose.to_canonical(p), vox);
                    let (mut mean, mut spread) = (0.0, 0.0);
                    for l in 0..LABELS {
                        mean += f[l] * acq.means[l];
                        spread += f[l] * acq.spread[l];
                    }
                    let m = f[Label::Muscle as usize];
                    if m > 0.0 && scene.septa.0.len() >= 2 {
                        // The two nearest compartment seeds: the border between them is
                        // about (d2 - d1) / 2 away.
                        let (mut d1, mut d2, mut gain) = (f64::MAX, f64::MAX, 1.0);
                        for (c, g) in &scene.septa.0 {
                            let d = ((p[0] - c[0]).powi(2)
                                + (p[1] - c[1]).powi(2)
                                + (p[2] - c[2]).powi(2))
                            .sqrt();
                            if d < d1 {
                                (d2, d1, gain) = (d1, d, *g);
                            } else if d < d2 {
                                d2 = d;
                            }
                        }
                        let (fat, muscle) = (Label::Fat as usize, Label::Muscle as usize);
                        let w = anatomy::coverage(
                            (d2 - d1) / 2.0 - scene.septa.1 / 2.0,
                            vox * scene.pose.scale,
                        );
                        mean += m
                            * ((gain - 1.0) * acq.means[muscle] * (1.0 - w)
                                + w * (acq.means[fat] - acq.means[muscle]));
                        spread += m * w * (acq.spread[fat] - acq.spread[muscle]);
                    }
                    // Distractors are inside the body only (not over air).
                    if f[Label::Air as usize] < 0.5 {
                        for (c, r, level) in &scene.blobs {
                            let q = [0, 1, 2].map(|a| (p[a] - c[a]) / r[a]);
                            let k = (q[0] * q[0] + q[1] * q[1] + q[2] * q[2]).sqrt();
                            let d = (k - 1.0) * r[0].min(r[1]).min(r[2]);
                            let w = anatomy::coverage(d, vox);
                            if w > 0.0 {
                                mean += (level * top - mean) * w;
                            }
                        }
                    }
                    let n: f64 = rng.sample(rand_distr::StandardNormal);
                    sig[idx] = (mean + spread * n) as f32;
                }
            }
        });
    // Resolution: the slice profile (and gap) along the slice normal, the in-plane pixel.
    let psf = |fwhm: f64, step: f64| {
        let extra = (fwhm * fwhm - step * step).max(0.0).sqrt();
        extra / 2.355 / step
    };
    let (slice_axis, other) = match acq.axis {
        SliceAxis::Coronal => (0, 1),
        SliceAxis::Axial => (1, 0),
    };
    let mut sigma = [0.0; 3];
    sigma[slice_axis] = psf(acq.slice_mm, steps[slice_axis]);
    sigma[other] = psf(acq.pixel_mm, steps[other]);
    sigma[2] = psf(acq.pixel_mm, steps[2]);
    for (axis, s) in sigma.iter().enumerate() {
        if *s > 0.05 {
            blur_axis(&mut signal, grid.shape, axis, *s);
        }
    }
    // Ghosts and motion copies along the phase-encode axis.
    if !acq.ghosts.is_empty() {
        let base = signal.clone();
        let n = grid.shape[acq.phase_axis] as isize;
        for (shift, amp) in &acq.ghosts {
            let s = if *shift == 0 { n / 2 } else { *shift };
            add_shifted(
                &mut signal,
                &base,
                grid.shape,
                acq.phase_axis,
                s,
                *amp as f32,
            );
        }
    }
    // Bias field, gamma, then Rician noise.
    let sigma_noise = acq.noise * top;
    signal
        .par_chunks_mut(plane)
        .enumerate()
        .for_each(|(k, sig)| {
            let mut rng = <ChaCha8Rng as rand::SeedableRng>::seed_from_u64(
                seed.wrapping_mul(0x85eb_ca6b).wrapping_add(k as u64),
            );
            let normal = rand_distr::Normal::new(0.0, sigma_noise).expect("finite sigma");
            for j in 0..h {
                for i in 0..w {
                    let p = grid.point(i as f64, j as f64, k as f64);
                    let q = [0, 1, 2].map(|a| (p[a] - acq.center[a]) / 200.0);
                    let b = &acq.bias;
                    let field = (b[0] * q[0]
                        + b[1] * q[1]
                        + b[2] * q[2]
                        + b[3] * q[0] * q[0]
                        + b[4] * q[1] * q[1]
                        + b[5] * q[2] * q[2])
                        .exp();
                    let v = (sig[j * w + i] as f64 * field).max(0.0) / top;
                    let v = v.powf(acq.gamma) * top;
                    let re = v + rng.sample(normal);
                    let im: f64 = rng.sample(normal);
                    sig[j * w + i] = (re * re + im * im).sqrt() as f32;
                }
            }
        });
    (signal, inside)
}

impl Acquisition {
    /// Whether patient point `p` lies inside the acquired region.
    fn covers(&self, p: V3) -> bool {
        let q = [0, 1, 2].map(|a| p[a] - self.center[a]);
        let (normal, in_plane) = match self.axis {
            SliceAxis::Coronal => (q[1], q[2]),
            SliceAxis::Axial => (q[2], q[1]),
        };
        normal.abs() <= self.slab_mm / 2.0
            && q[0].abs() <= self.fov_mm[0] / 2.0
            && in_plane.abs() <= self.fov_mm[1] / 2.0
    }
}

/// Gaussian blur of a (D, H, W) volume along one axis (0, 1, 2), sigma in voxels; edges
/// are clamped.
fn blur_axis(data: &mut [f32], shape: [usize; 3], axis: usize, sigma: f64) {
    let radius = (sigma * 3.0).ceil() as isize;
    let kernel: Vec<f32> = {
        let k: Vec<f64> = (-radius..=radius)
            .map(|x| (-(x * x) as f64 / (2.0 * sigma * sigma)).exp())
            .collect();
        let sum: f64 = k.iter().sum();
        k.iter().map(|v| (v / sum) as f32).collect()
    };
    let [d, h, w] = shape;
    let stride = [h * w, w, 1][axis];
    let n = shape[axis];
    let src = data.to_vec();
    let lines: Vec<usize> = (0..d * h * w)
        .filter(|idx| (idx / stride) % n == 0)
        .collect();
    for start in lines {
        for x in 0..n {
            let mut acc = 0f32;
            for (t, kv) in kernel.iter().enumerate() {
                let y = (x as isize + t as isize - radius).clamp(0, n as isize - 1) as usize;
                acc += kv * src[start + y * stride];
            }
            data[start + x * stride] = acc;
        }
    }
}

/// `data += amp * base` shifted by `shift` voxels along `axis`, wrapping around (a ghost
/// folds back into the field of view).
fn add_shifted(
    data: &mut [f32],
    base: &[f32],
    shape: [usize; 3],
    axis: usize,
    shift: isize,
    amp: f32,
) {
    let [d, h, w] = shape;
    let n = shape[axis] as isize;
    for k in 0..d {
        for j in 0..h {
            for i in 0..w {
                let mut c = [k, j, i];
                c[axis] = ((c[axis] as isize - shift).rem_euclid(n)) as usize;
                data[(k * h + j) * w + i] += amp * base[(c[0] * h + c[1]) * w + c[2]];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn heads_are_drawn_within_the_stated_ranges_and_render_inside_the_grid() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        for _ in 0..20 {
            let scene = draw_scene(&mut rng, None);
            for h in &scene.heads {
                assert!((18.4..28.9).contains(&h.radius_mm), "{}", h.radius_mm);
            }
            assert!(scene.heads[0].center_lps_mm[0] < scene.heads[1].center_lps_mm[0]);
        }
    }

    #[test]
    fn a_head_is_brighter_or_darker_than_its_surroundings_and_lesions_show() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let scene = draw_scene(&mut rng, Some([Stage::S0, Stage::S2]));
        let mut acq = draw_acquisition(&mut rng, &scene);
        acq.center = scene.heads_midpoint();
        acq.slab_mm = 400.0;
        acq.fov_mm = [500.0, 500.0];
        acq.noise = 0.0;
        acq.ghosts.clear();
        let h = &scene.heads[1];
        let grid = Grid::canonical(h.center_lps_mm, [64.0, 64.0, 64.0], [16, 32, 32]);
        let (sig, inside) = render(&scene, &acq, &grid, 1);
        assert!(inside.iter().all(|x| *x));
        assert!(sig.iter().all(|v| v.is_finite() && *v >= 0.0));
        // The head's centre is marrow-like (or the necrotic segment), not fluid.
        let centre = sig[(8 * 32 + 16) * 32 + 16] as f64;
        let marrow = acq.means[Label::Marrow as usize];
        let fluid = acq.means[Label::Joint as usize];
        assert!(
            (centre - marrow).abs() < (centre - fluid).abs() + 0.1,
            "centre {centre}, marrow {marrow}, fluid {fluid}"
        );
    }

    #[test]
    fn compartments_draw_fat_planes_through_the_muscle_and_never_touch_a_head() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let mut scene = draw_scene(&mut rng, None);
        let mut acq = draw_acquisition(&mut rng, &scene);
        acq.center = scene.heads_midpoint();
        acq.slab_mm = 600.0;
        acq.fov_mm = [600.0, 600.0];
        acq.noise = 0.0;
        acq.ghosts.clear();
        acq.slice_mm = 1.0;
        acq.pixel_mm = 1.0;
        // Muscle and fat far apart, so the planes show which way a voxel moved.
        let (fat, muscle) = (Label::Fat as usize, Label::Muscle as usize);
        acq.means[fat] = 1.0;
        acq.means[muscle] = 0.3;
        acq.spread[fat] = acq.spread[muscle];
        let grid = Grid::canonical(scene.heads_midpoint(), [240.0; 3], [40, 60, 60]);
        scene.septa.0.clear();
        let (plain, _) = render(&scene, &acq, &grid, 1);
        let mid = scene.heads_midpoint();
        scene.septa = (
            (0..40)
                .map(|n| {
                    let t = n as f64;
                    let at = [
                        mid[0] + 150.0 * (t * 1.3).sin(),
                        mid[1] + 90.0 * (t * 2.1).cos(),
                        mid[2] + 140.0 * (t * 0.7).sin(),
                    ];
                    (at, 1.0)
                })
                .collect(),
            3.0,
        );
        let (planes, _) = render(&scene, &acq, &grid, 1);
        let [d, h, w] = grid.shape;
        let (mut brighter, mut darker, mut in_heads) = (0usize, 0usize, 0usize);
        for k in 0..d {
            for j in 0..h {
                for i in 0..w {
                    let idx = (k * h + j) * w + i;
                    let p = grid.point(i as f64, j as f64, k as f64);
                    let in_head = scene.heads.iter().any(|hd| {
                        let c = hd.center_lps_mm;
                        let r2: f64 = (0..3).map(|a| (p[a] - c[a]).powi(2)).sum();
                        r2.sqrt() < hd.radius_mm - 4.0
                    });
                    let diff = planes[idx] - plain[idx];
                    if in_head {
                        in_heads += 1;
                        assert!(diff.abs() < 1e-4, "a plane reached a head at {p:?}: {diff}");
                    } else if diff > 1e-4 {
                        brighter += 1;
                    } else if diff < -1e-4 {
                        darker += 1;
                    }
                }
            }
        }
        assert!(
            in_heads > 100,
            "the grid holds both heads ({in_heads} voxels)"
        );
        // Gains of 1: a voxel only changes towards fat, and many do.
        assert!(brighter > 500, "{brighter} voxels on fat planes");
        assert_eq!(darker, 0, "{darker} voxels moved away from fat");
    }

    #[test]
    fn a_t1_pair_keeps_the_t2s_geometry_and_shows_oedema_dark_on_the_t1() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let scene = draw_scene(&mut rng, None);
        let (mut modelled, mut kept) = (0, 0);
        for _ in 0..100 {
            let t2 = draw_acquisition(&mut rng, &scene);
            let (t1, beside) = draw_t1_pair(&mut rng, &scene, &t2);
            let at = |m: &[f64; LABELS], l: Label| m[l as usize];
            assert!(at(&t1.means, Label::Marrow) > at(&t1.means, Label::Oedema));
            assert!((0..3).all(|i| (t1.center[i] - t2.center[i]).abs() <= 15.0));
            assert_eq!(
                (beside.center, beside.slab_mm, beside.fov_mm, beside.noise),
                (t2.center, t2.slab_mm, t2.fov_mm, t2.noise)
            );
            if beside.means == t2.means {
                kept += 1;
            } else {
                modelled += 1;
                assert!(beside.means.iter().all(|v| (0.0..=1.0).contains(v)));
            }
        }
        assert!(
            modelled > 60 && kept > 8,
            "{modelled} modelled, {kept} kept"
        );
    }

    #[test]
    fn blur_keeps_the_mean_and_spreads_a_spike() {
        let mut v = vec![0f32; 15 * 4 * 3];
        v[(7 * 4 + 1) * 3 + 1] = 1.0;
        blur_axis(&mut v, [15, 4, 3], 0, 1.0);
        let sum: f32 = v.iter().sum();
        assert!((sum - 1.0).abs() < 1e-4);
        assert!(v[(6 * 4 + 1) * 3 + 1] > 0.1 && v[(8 * 4 + 1) * 3 + 1] > 0.1);
        // Only along the axis asked for.
        assert_eq!(v[(7 * 4 + 2) * 3 + 1], 0.0);
    }
}
