//! Synthetic bilateral hip MRI studies with ground truth — the project's demo, test and
//! training data (no clinical data exists here).
//!
//! A study is drawn from a seed: the pelvis pose (position, rotation, size), each femoral
//! head's size and Ficat-Arlet stage (`anatomy`), and a scanner style (vendor-like tags,
//! field strength and noise, bias field, resolution, rectangular and anisotropic matrices,
//! slice thickness, orientation of the T2 series, rescale slope, implicit or explicit VR,
//! instance numbering, classic or Enhanced MR storage of the T2). It is rendered with partial
//! volume and slice profile, Rician noise and a smooth bias field, and written as real DICOM
//! series — localizer, coronal T1, fat-suppressed T2 (coronal or axial; some studies add an
//! axial T2) — sharing one Frame of Reference, plus `truth.json` with each head's stage,
//! centre and box in patient LPS millimetres.
//!
//! What the phantom is not: anatomy at the fidelity of a real pelvis, or a model of any
//! scanner's physics. It is shapes and tissue signals chosen so that the radiological signs
//! the stager must learn (oedema-like signal for stage I; a demarcated anterosuperior segment
//! with double line and sclerotic margin for stage II) are present, varied and known.
//!
//! Deterministic: the same seed (and options) gives the same study, byte for byte — UIDs
//! are derived from the seed under [`UID_ROOT`].

pub mod anatomy;
pub mod mr_signal;
pub mod randomised;

use std::path::{Path, PathBuf};

use anatomy::{Anatomy, Hip, M3, Stage, V3, Variant, add, apply, apply_t, cross, scale, sub, unit};
use dicom_core::{DataElement, PrimitiveValue, VR, dicom_value};
use dicom_dictionary_std::{tags, uids};
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::result::Side;

/// UID root of phantom objects (their UIDs add the seed and a position).
pub const UID_ROOT: &str = "1.2.826.0.1.3680043.10.1382.98";

/// What the phantom says about every study it writes.
pub const DISCLAIMER: &str = "synthetic hip phantom - not patient data";

/// Slice orientation of a series.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Orientation {
    /// Slices stack anterior to posterior.
    Coronal,
    /// Slices stack inferior to superior.
    Axial,
    /// Slices stack from the patient's left to right (the normal is -x in LPS).
    Sagittal,
}

impl Orientation {
    /// (row direction, column direction) in LPS, before the scanner's oblique tilt.
    fn axes(self) -> (V3, V3) {
        match self {
            Orientation::Coronal => ([1.0, 0.0, 0.0], [0.0, 0.0, -1.0]),
            Orientation::Axial => ([1.0, 0.0, 0.0], [0.0, 1.0, 0.0]),
            Orientation::Sagittal => ([0.0, 1.0, 0.0], [0.0, 0.0, -1.0]),
        }
    }
}

/// What a caller may pin down; everything else is drawn from the seed.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Stages of (right, left) heads.
    pub stages: Option<[Stage; 2]>,
    /// Orientation of the main T2 series.
    pub t2_orientation: Option<Orientation>,
    /// Write instance numbers (or frames) in reverse anatomical order.
    pub reverse_numbering: Option<bool>,
    /// Write the main T2 series as one Enhanced MR multi-frame instance.
    pub enhanced_t2: Option<bool>,
    /// Scanner style, by name (see [`style_names`]).
    pub style: Option<&'static str>,
}

/// Names of the scanner styles, for [`Options::style`].
pub fn style_names() -> impl Iterator<Item = &'static str> {
    STYLES.iter().map(|s| s.name)
}

/// Ground truth for one head.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HeadTruth {
    /// Patient side (`"L"` or `"R"` in `truth.json`).
    pub side: crate::result::Side,
    /// Ficat-Arlet stage.
    pub stage: Stage,
    /// Whether the stage is I or II.
    pub early_onfh: bool,
    /// Benign variant present.
    pub variant: Variant,
    /// Head centre, patient LPS mm.
    pub center_lps_mm: V3,
    /// Head radius, mm.
    pub radius_mm: f64,
    /// Axis-aligned box around the head, patient LPS mm: [min, max].
    pub bbox_lps_mm: [V3; 2],
    /// Centre of the lesion (stage I focus, stage II segment), patient LPS mm.
    pub lesion_center_lps_mm: Option<V3>,
    /// The sphere that defines the lesion: stage II — the necrotic segment is the part of
    /// the head inside it; stage I — the oedema focus, whose signal falls to 1/e at its
    /// radius.
    #[serde(default)]
    pub lesion_sphere: Option<Sphere>,
}

/// A sphere in patient space.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Sphere {
    /// Centre, patient LPS mm.
    pub center_lps_mm: V3,
    /// Radius, mm.
    pub radius_mm: f64,
}

/// Ground truth for one written series.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SeriesTruth {
    /// Series Instance UID.
    pub series_uid: String,
    /// Series Description as written.
    pub description: String,
    /// "localizer", "t1" or "t2".
    pub kind: String,
    /// Orientation (the localizer mixes all three; recorded as coronal).
    pub orientation: Orientation,
    /// Instances written.
    pub instances: usize,
    /// Folder, relative to the study folder.
    pub folder: String,
}

/// Ground truth for one study (`truth.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StudyTruth {
    /// The disclaimer.
    pub note: String,
    /// Seed the study was drawn from.
    pub seed: u64,
    /// Study Instance UID.
    pub study_uid: String,
    /// Accession Number.
    pub accession_number: String,
    /// Scanner style name.
    pub scanner: String,
    /// Heads, right then left.
    pub heads: Vec<HeadTruth>,
    /// Series written.
    pub series: Vec<SeriesTruth>,
}

/// Why generation failed.
#[derive(Debug, thiserror::Error)]
pub enum PhantomError {
    /// Writing files failed.
    #[error("cannot write {path}: {message}")]
    Write { path: PathBuf, message: String },
    /// A scanner style that does not exist.
    #[error("unknown scanner style {0:?}")]
    UnknownStyle(String),
}

fn werr(path: &Path, e: impl std::fmt::Display) -> PhantomError {
    PhantomError::Write {
        path: path.to_owned(),
        message: format!("{e}"),
    }
}

/// [`werr`] with the error's whole source chain (dicom-object's top message is terse).
fn werr_chain(path: &Path, e: &dyn std::error::Error) -> PhantomError {
    PhantomError::Write {
        path: path.to_owned(),
        message: crate::errors::chain(e),
    }
}

/// A scanner style: the tags and acquisition parameters of one vendor-like protocol.
#[derive(Debug, Clone)]
struct Style {
    name: &'static str,
    manufacturer: &'static str,
    model: &'static str,
    tesla: f64,
    noise: f64,
    t1_desc: &'static str,
    t2_desc: &'static str,
    t2_ax_desc: &'static str,
    loc_desc: &'static str,
    rescale_slope: f64,
    implicit_vr: bool,
}

const STYLES: &[Style] = &[
    Style {
        name: "siemens-like 3T",
        manufacturer: "SIEMENS",
        model: "Phantom 3T",
        tesla: 3.0,
        noise: 16.0,
        t1_desc: "t1_tse_cor",
        t2_desc: "t2_tse_fs_cor",
        t2_ax_desc: "t2_tse_fs_tra",
        loc_desc: "localizer",
        rescale_slope: 1.0,
        implicit_vr: false,
    },
    Style {
        name: "ge-like 1.5T",
        manufacturer: "GE MEDICAL SYSTEMS",
        model: "Phantom 1.5T",
        tesla: 1.5,
        noise: 28.0,
        t1_desc: "COR T1 FSE",
        t2_desc: "COR T2 FSE FS",
        t2_ax_desc: "AX T2 FSE FS",
        loc_desc: "3-pl loc",
        rescale_slope: 1.0,
        implicit_vr: true,
    },
    Style {
        name: "philips-like 1.5T",
        manufacturer: "Philips Medical Systems",
        model: "Phantom 1.5T",
        tesla: 1.5,
        noise: 24.0,
        t1_desc: "T1W_TSE_COR",
        t2_desc: "T2W_TSE_SPAIR_COR",
        t2_ax_desc: "T2W_TSE_SPAIR_TRA",
        loc_desc: "SURVEY",
        rescale_slope: 2.5,
        implicit_vr: false,
    },
];

/// Placement of the canonical anatomy in the patient frame: p = R (s q) + t.
#[derive(Debug, Clone)]
struct Pose {
    rot: M3,
    scale: f64,
    shift: V3,
}

impl Pose {
    fn to_patient(&self, q: V3) -> V3 {
        add(apply(&self.rot, scale(q, self.scale)), self.shift)
    }
    fn to_canonical(&self, p: V3) -> V3 {
        scale(apply_t(&self.rot, sub(p, self.shift)), 1.0 / self.scale)
    }
}

/// Geometry of one series.
#[derive(Debug, Clone)]
struct Geometry {
    row: V3,
    col: V3,
    normal: V3,
    center: V3,
    rows: usize,
    cols: usize,
    /// Distance between columns, along the row direction (Pixel Spacing[1]).
    pixel_mm: f64,
    /// Distance between rows, along the column direction (Pixel Spacing[0]).
    row_spacing_mm: f64,
    slices: usize,
    spacing_mm: f64,
    thickness_mm: f64,
}

impl Geometry {
    fn position(&self, k: usize) -> V3 {
        let half_w = (self.cols as f64 - 1.0) / 2.0 * self.pixel_mm;
        let half_h = (self.rows as f64 - 1.0) / 2.0 * self.row_spacing_mm;
        let off = (k as f64 - (self.slices as f64 - 1.0) / 2.0) * self.spacing_mm;
        add(
            add(self.center, scale(self.normal, off)),
            add(scale(self.row, -half_w), scale(self.col, -half_h)),
        )
    }
}

/// Generate `studies` studies under `out` (one folder each), seeds `seed`, `seed + 1`, ...
pub fn generate(out: &Path, studies: usize, seed: u64) -> Result<Vec<StudyTruth>, PhantomError> {
    generate_with(out, studies, seed, &Options::default())
}

/// [`generate`] with options applied to every study.
pub fn generate_with(
    out: &Path,
    studies: usize,
    seed: u64,
    options: &Options,
) -> Result<Vec<StudyTruth>, PhantomError> {
    if let Some(name) = options.style {
        if !STYLES.iter().any(|s| s.name == name) {
            return Err(PhantomError::UnknownStyle(name.to_owned()));
        }
    }
    (0..studies)
        .map(|i| {
            let dir = out.join(format!("study_{i:04}"));
            generate_study(&dir, seed.wrapping_add(i as u64), options)
        })
        .collect()
}

/// Generate one study into `dir`.
pub fn generate_study(
    dir: &Path,
    seed: u64,
    options: &Options,
) -> Result<StudyTruth, PhantomError> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let d = draw_study(&mut rng, options);
    let style = &d.style;

    // UIDs derive from the seed, so a study is the same byte for byte each time.
    let uid = |parts: &[usize]| {
        let tail: Vec<String> = parts.iter().map(|p| p.to_string()).collect();
        format!("{UID_ROOT}.{seed}.{}", tail.join("."))
    };
    let study_uid = uid(&[0, 1]);
    let frame_uid = uid(&[0, 2]);
    let accession = format!("PH{seed:08}");

    std::fs::create_dir_all(dir).map_err(|e| werr(dir, e))?;
    let mut written = Vec::new();
    for (n, (kind, orientation, desc, g)) in d.series().into_iter().enumerate() {
        let series_uid = uid(&[n + 1]);
        let folder = format!(
            "{:02}_{}_{}",
            n + 1,
            kind,
            format!("{orientation:?}").to_lowercase()
        );
        let sdir = dir.join(&folder);
        std::fs::create_dir_all(&sdir).map_err(|e| werr(&sdir, e))?;
        // The localizer is three single planes, one of each orientation.
        let planes: Vec<(Orientation, Geometry)> = if kind == "localizer" {
            [
                Orientation::Coronal,
                Orientation::Axial,
                Orientation::Sagittal,
            ]
            .into_iter()
            .map(|o| {
                let g = d.geometry(o, 1, g.pixel_mm, g.row_spacing_mm, g.rows, g.cols);
                (o, g)
            })
            .collect()
        } else {
            vec![(orientation, g.clone())]
        };
        let mut count = 0;
        for (plane, (o, g)) in planes.iter().enumerate() {
            let t2 = kind == "t2";
            let slices = render(
                &d.anatomy,
                &d.pose,
                g,
                t2,
                d.bias,
                style.noise,
                d.noise_seed ^ (n as u64) ^ (*o as u64) << 8,
            );
            let ctx = SliceCtx {
                style,
                study_uid: &study_uid,
                series_uid: &series_uid,
                frame_uid: &frame_uid,
                accession: &accession,
                seed,
                series_number: (n + 1) as i32,
                description: desc,
                kind,
            };
            if t2 && n == 2 && d.enhanced {
                let mut order: Vec<usize> = (0..g.slices).collect();
                if d.reverse {
                    order.reverse();
                }
                let sop = uid(&[n + 1, 1, 0]);
                write_enhanced(&sdir.join("IM0001.dcm"), &ctx, &sop, g, &slices, &order)?;
                count += g.slices;
                continue;
            }
            for (k, pixels) in slices.iter().enumerate() {
                count += 1;
                let number = if d.reverse && kind != "localizer" {
                    g.slices - k
                } else {
                    count
                };
                let path = sdir.join(format!("IM{number:04}.dcm"));
                let sop = uid(&[n + 1, plane + 1, k + 1]);
                write_slice(&path, &ctx, &sop, g, k, number, pixels)?;
            }
        }
        written.push(SeriesTruth {
            series_uid,
            description: desc.to_string(),
            kind: kind.to_string(),
            orientation,
            instances: count,
            folder,
        });
    }

    let heads = head_truths(&d.anatomy, &d.pose);
    let truth = StudyTruth {
        note: DISCLAIMER.to_string(),
        seed,
        study_uid,
        accession_number: accession,
        scanner: style.name.to_string(),
        heads,
        series: written,
    };
    let path = dir.join("truth.json");
    let text = serde_json::to_string_pretty(&truth).map_err(|e| werr(&path, e))?;
    std::fs::write(&path, text).map_err(|e| werr(&path, e))?;
    Ok(truth)
}

/// Everything a study draws from its seed, in the order it draws it (the order is part of
/// the phantom: changing it changes every study).
struct Drawn {
    style: Style,
    pose: Pose,
    anatomy: Anatomy,
    t2_orientation: Orientation,
    extra_axial: bool,
    enhanced: bool,
    reverse: bool,
    bias: [f64; 3],
    tilt: M3,
    pixel_mm: f64,
    cols: usize,
    row_mm: f64,
    rows: usize,
    thickness: f64,
    gap: f64,
    noise_seed: u64,
}

fn draw_study(rng: &mut ChaCha8Rng, options: &Options) -> Drawn {
    let drawn = rng.random_range(0..STYLES.len());
    let style = match options.style {
        Some(name) => STYLES
            .iter()
            .find(|s| s.name == name)
            .unwrap_or(&STYLES[drawn])
            .clone(),
        None => STYLES[drawn].clone(),
    };
    let stages = options.stages.unwrap_or_else(|| {
        let mut draw = || match rng.random_range(0..3) {
            0 => Stage::S0,
            1 => Stage::S1,
            _ => Stage::S2,
        };
        [draw(), draw()]
    });
    let pose = Pose {
        rot: anatomy::rotation(
            rng.random_range(-0.05..0.05),
            rng.random_range(-0.05..0.05),
            rng.random_range(-0.08..0.08),
        ),
        scale: rng.random_range(0.92..1.08),
        shift: [
            rng.random_range(-12.0..12.0),
            rng.random_range(-10.0..10.0),
            rng.random_range(-15.0..15.0),
        ],
    };
    let hips = [0usize, 1].map(|i| {
        let sign = if i == 0 { -1.0 } else { 1.0 };
        let stage = stages[i];
        Hip {
            sign,
            center: [
                sign * rng.random_range(86.0..96.0),
                rng.random_range(-4.0..4.0),
                0.0,
            ],
            radius: rng.random_range(21.5..26.0),
            neck_shaft_deg: rng.random_range(122.0..138.0),
            stage,
            variant: if stage == Stage::S0 && rng.random_bool(0.4) {
                Variant::HerniationPit
            } else {
                Variant::None
            },
            lesion_dir: unit([
                sign * rng.random_range(0.05..0.3),
                -rng.random_range(0.3..0.6),
                rng.random_range(0.75..0.95),
            ]),
            lesion_size: match stage {
                Stage::S1 => rng.random_range(0.3..0.42),
                _ => rng.random_range(0.6..0.8),
            },
            lesion_depth: 0.5,
            abduction_deg: 0.0,
        }
    });
    let anatomy = Anatomy {
        body: (
            rng.random_range(155.0..185.0),
            rng.random_range(105.0..125.0),
        ),
        fat: rng.random_range(10.0..28.0),
        bladder: (
            [0.0, -45.0, rng.random_range(25.0..45.0)],
            [
                rng.random_range(35.0..50.0),
                rng.random_range(28.0..38.0),
                rng.random_range(28.0..40.0),
            ],
        ),
        hips,
    };
    let t2_orientation = options.t2_orientation.unwrap_or(if rng.random_bool(0.8) {
        Orientation::Coronal
    } else {
        Orientation::Axial
    });
    let extra_axial = t2_orientation == Orientation::Coronal && rng.random_bool(0.3);
    let enhanced_draw = rng.random_bool(0.2);
    let enhanced = options.enhanced_t2.unwrap_or(enhanced_draw);
    let reverse = options
        .reverse_numbering
        .unwrap_or_else(|| rng.random_bool(0.5));
    let bias = [
        rng.random_range(-0.15..0.15),
        rng.random_range(-0.1..0.1),
        rng.random_range(-0.15..0.15),
    ];
    let tilt = anatomy::rotation(
        rng.random_range(-0.04..0.04),
        rng.random_range(-0.04..0.04),
        rng.random_range(-0.04..0.04),
    );
    let pixel_mm: f64 = rng.random_range(1.1..1.5);
    // A 380 mm wide field of view over both hips and the body wall, a little less high,
    // with rows sometimes farther apart than columns: rectangular, anisotropic matrices.
    let cols = (380.0 / pixel_mm / 2.0).round() as usize * 2;
    let row_mm: f64 = pixel_mm * rng.random_range(1.0..1.25);
    let rows = (330.0 / row_mm / 2.0).round() as usize * 2;
    let thickness: f64 = rng.random_range(3.0..4.0);
    let gap: f64 = rng.random_range(0.0..0.6);
    let noise_seed: u64 = rng.random();
    Drawn {
        style,
        pose,
        anatomy,
        t2_orientation,
        extra_axial,
        enhanced,
        reverse,
        bias,
        tilt,
        pixel_mm,
        cols,
        row_mm,
        rows,
        thickness,
        gap,
        noise_seed,
    }
}

impl Drawn {
    /// A series' geometry in orientation `o` around the heads, under the study's tilt.
    #[allow(clippy::too_many_arguments)]
    fn geometry(
        &self,
        o: Orientation,
        slices: usize,
        pixel: f64,
        row_mm: f64,
        rows: usize,
        cols: usize,
    ) -> Geometry {
        let heads_center = self.pose.to_patient([0.0, 0.0, 0.0]);
        let (r, c) = o.axes();
        let row = apply(&self.tilt, r);
        let col = apply(&self.tilt, c);
        Geometry {
            row,
            col,
            normal: cross(row, col),
            center: add(heads_center, [0.0, 0.0, -20.0]),
            rows,
            cols,
            pixel_mm: pixel,
            row_spacing_mm: row_mm,
            slices,
            spacing_mm: self.thickness + self.gap,
            thickness_mm: self.thickness,
        }
    }

    /// The series of the study: kind, orientation, description and geometry (localizer,
    /// T1, T2, and sometimes an extra axial T2).
    fn series(&self) -> Vec<(&'static str, Orientation, &'static str, Geometry)> {
        let (style, t2_orientation) = (&self.style, self.t2_orientation);
        let (pixel_mm, row_mm, rows, cols) = (self.pixel_mm, self.row_mm, self.rows, self.cols);
        let mut series = vec![
            (
                "localizer",
                Orientation::Coronal,
                style.loc_desc,
                self.geometry(
                    Orientation::Coronal,
                    1,
                    360.0 / 128.0,
                    360.0 / 128.0,
                    128,
                    128,
                ),
            ),
            (
                "t1",
                Orientation::Coronal,
                style.t1_desc,
                self.geometry(Orientation::Coronal, 20, pixel_mm, row_mm, rows, cols),
            ),
            (
                "t2",
                t2_orientation,
                if t2_orientation == Orientation::Coronal {
                    style.t2_desc
                } else {
                    style.t2_ax_desc
                },
                self.geometry(
                    t2_orientation,
                    if t2_orientation == Orientation::Coronal {
                        24
                    } else {
                        30
                    },
                    pixel_mm,
                    row_mm,
                    rows,
                    cols,
                ),
            ),
        ];
        if self.extra_axial {
            series.push((
                "t2",
                Orientation::Axial,
                style.t2_ax_desc,
                self.geometry(Orientation::Axial, 30, pixel_mm, row_mm, rows, cols),
            ));
        }
        series
    }
}

/// Each head's ground truth (right, then left) in patient space.
fn head_truths(anatomy: &Anatomy, pose: &Pose) -> Vec<HeadTruth> {
    anatomy
        .hips
        .iter()
        .map(|h| {
            let center = pose.to_patient(h.center);
            let r = h.radius * pose.scale;
            let lesion = match h.stage {
                Stage::S0 => None,
                Stage::S1 => Some(pose.to_patient(add(h.center, h.focus_offset()))),
                Stage::S2 => {
                    Some(pose.to_patient(add(h.center, scale(h.lesion_dir, h.radius * 0.6))))
                }
            };
            // Mirrors `Hip::lesion` in `anatomy`.
            let lesion_sphere = match h.stage {
                Stage::S0 => None,
                Stage::S1 => Some(Sphere {
                    center_lps_mm: pose.to_patient(add(h.center, h.focus_offset())),
                    radius_mm: h.radius * h.lesion_size * pose.scale,
                }),
                Stage::S2 => Some(Sphere {
                    center_lps_mm: pose
                        .to_patient(add(h.center, scale(h.lesion_dir, h.radius * 1.05))),
                    radius_mm: h.radius * h.lesion_size * pose.scale,
                }),
            };
            HeadTruth {
                lesion_sphere,
                side: if h.sign > 0.0 {
                    Side::Left
                } else {
                    Side::Right
                },
                stage: h.stage,
                early_onfh: h.stage != Stage::S0,
                variant: h.variant,
                center_lps_mm: center,
                radius_mm: r,
                bbox_lps_mm: [
                    [center[0] - r, center[1] - r, center[2] - r],
                    [center[0] + r, center[1] + r, center[2] + r],
                ],
                lesion_center_lps_mm: lesion,
            }
        })
        .collect()
}

/// Render the slices of one series: stored pixel values, row-major per slice.
fn render(
    anatomy: &Anatomy,
    pose: &Pose,
    g: &Geometry,
    t2: bool,
    bias: V3,
    noise: f64,
    seed: u64,
) -> Vec<Vec<f64>> {
    // Slice profile: sub-samples through the slab thickness.
    let fine = g.pixel_mm.min(g.row_spacing_mm);
    let subs = ((g.thickness_mm / fine).ceil() as usize).clamp(1, 5);
    let vox = fine / pose.scale;
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mut out: Vec<Vec<f64>> = vec![Vec::new(); g.slices];
    std::thread::scope(|s| {
        for (t, chunk) in out
            .chunks_mut(g.slices.div_ceil(threads).max(1))
            .enumerate()
        {
            let base = t * g.slices.div_ceil(threads).max(1);
            s.spawn(move || {
                for (i, slot) in chunk.iter_mut().enumerate() {
                    let k = base + i;
                    let mut rng = ChaCha8Rng::seed_from_u64(
                        seed.wrapping_mul(1_000_003).wrapping_add(k as u64),
                    );
                    let normal = rand_distr::Normal::new(0.0, noise).expect("finite sigma");
                    let origin = g.position(k);
                    let mut pixels = Vec::with_capacity(g.rows * g.cols);
                    for j in 0..g.rows {
                        for i2 in 0..g.cols {
                            let p = add(
                                origin,
                                add(
                                    scale(g.row, i2 as f64 * g.pixel_mm),
                                    scale(g.col, j as f64 * g.row_spacing_mm),
                                ),
                            );
                            let mut v = 0.0;
                            for sidx in 0..subs {
                                let off =
                                    ((sidx as f64 + 0.5) / subs as f64 - 0.5) * g.thickness_mm;
                                let q = pose.to_canonical(add(p, scale(g.normal, off)));
                                let (a, b) = anatomy.signal(q, vox);
                                v += if t2 { b } else { a };
                            }
                            v /= subs as f64;
                            // Smooth receive-coil bias field.
                            let f = 1.0
                                + bias[0] * p[0] / 200.0
                                + bias[1] * p[1] / 200.0
                                + bias[2] * p[2] / 200.0;
                            let v = v * f.max(0.5);
                            // Rician noise: magnitude of a complex signal with Gaussian noise.
                            let re = v + rng.sample(normal);
                            let im: f64 = rng.sample(normal);
                            pixels.push((re * re + im * im).sqrt());
                        }
                    }
                    *slot = pixels;
                }
            });
        }
    });
    out
}

/// What every slice of a series shares.
struct SliceCtx<'a> {
    style: &'a Style,
    study_uid: &'a str,
    series_uid: &'a str,
    frame_uid: &'a str,
    accession: &'a str,
    seed: u64,
    series_number: i32,
    description: &'a str,
    kind: &'a str,
}

fn ds(v: f64) -> String {
    // DS is at most 16 characters.
    let s = format!("{v:.6}");
    let s = s.trim_end_matches('0').trim_end_matches('.').to_string();
    if s.len() > 16 { format!("{v:.3}") } else { s }
}

type Element = DataElement<InMemDicomObject>;

/// Stored values of one slice under the style's rescale slope.
fn stored(values: &[f64], slope: f64) -> Vec<u16> {
    values
        .iter()
        .map(|v| (v / slope).round().clamp(0.0, 4095.0) as u16)
        .collect()
}

#[allow(clippy::too_many_arguments)]
fn write_slice(
    path: &Path,
    c: &SliceCtx,
    sop: &str,
    g: &Geometry,
    k: usize,
    number: usize,
    values: &[f64],
) -> Result<(), PhantomError> {
    let mut elements = slice_elements(c, g, k, number, sop, uids::MR_IMAGE_STORAGE);
    let slope = c.style.rescale_slope;
    if (slope - 1.0).abs() > 1e-9 {
        let text = |tag, vr, v: &str| DataElement::new(tag, vr, PrimitiveValue::from(v));
        elements.push(text(tags::RESCALE_INTERCEPT, VR::DS, "0"));
        elements.push(text(tags::RESCALE_SLOPE, VR::DS, &ds(slope)));
        elements.push(text(tags::RESCALE_TYPE, VR::LO, "US"));
    }
    elements.push(DataElement::new(
        tags::PIXEL_DATA,
        VR::OW,
        PrimitiveValue::U16(stored(values, slope).into()),
    ));
    save(path, c, elements, sop, uids::MR_IMAGE_STORAGE)
}

/// Write a whole series as one Enhanced MR multi-frame instance: geometry, timing and
/// rescale move into the functional groups (orientation, spacing, timing and rescale shared;
/// position per frame). Frames are written in `order`.
fn write_enhanced(
    path: &Path,
    c: &SliceCtx,
    sop: &str,
    g: &Geometry,
    slices: &[Vec<f64>],
    order: &[usize],
) -> Result<(), PhantomError> {
    use dicom_core::value::DataSetSequence;
    let cls = uids::ENHANCED_MR_IMAGE_STORAGE;
    let moved = [
        tags::IMAGE_POSITION_PATIENT,
        tags::IMAGE_ORIENTATION_PATIENT,
        tags::PIXEL_SPACING,
        tags::SLICE_THICKNESS,
        tags::SPACING_BETWEEN_SLICES,
        tags::SLICE_LOCATION,
        tags::REPETITION_TIME,
        tags::ECHO_TIME,
        tags::WINDOW_CENTER,
        tags::WINDOW_WIDTH,
    ];
    let mut elements: Vec<Element> = slice_elements(c, g, 0, 1, sop, cls)
        .into_iter()
        .filter(|e| !moved.contains(&e.header().tag))
        .collect();
    let text = |tag, vr, v: &str| DataElement::new(tag, vr, PrimitiveValue::from(v));
    let item = |els: Vec<Element>| InMemDicomObject::from_element_iter(els);
    let seq = |tag, items: Vec<InMemDicomObject>| {
        DataElement::new(tag, VR::SQ, DataSetSequence::from(items))
    };
    let (tr, te) = if c.kind == "t1" {
        (550.0, 12.0)
    } else {
        (3800.0, 75.0)
    };
    let mut shared = vec![
        seq(
            tags::PIXEL_MEASURES_SEQUENCE,
            vec![item(vec![
                text(tags::SLICE_THICKNESS, VR::DS, &ds(g.thickness_mm)),
                text(
                    tags::PIXEL_SPACING,
                    VR::DS,
                    &format!("{}\\{}", ds(g.row_spacing_mm), ds(g.pixel_mm)),
                ),
                text(tags::SPACING_BETWEEN_SLICES, VR::DS, &ds(g.spacing_mm)),
            ])],
        ),
        seq(
            tags::PLANE_ORIENTATION_SEQUENCE,
            vec![item(vec![text(
                tags::IMAGE_ORIENTATION_PATIENT,
                VR::DS,
                &[g.row[0], g.row[1], g.row[2], g.col[0], g.col[1], g.col[2]]
                    .iter()
                    .map(|v| ds(*v))
                    .collect::<Vec<_>>()
                    .join("\\"),
            )])],
        ),
        seq(
            tags::MR_TIMING_AND_RELATED_PARAMETERS_SEQUENCE,
            vec![item(vec![DataElement::new(
                tags::REPETITION_TIME,
                VR::FD,
                PrimitiveValue::from(tr),
            )])],
        ),
        seq(
            tags::MR_ECHO_SEQUENCE,
            vec![item(vec![DataElement::new(
                tags::EFFECTIVE_ECHO_TIME,
                VR::FD,
                PrimitiveValue::from(te),
            )])],
        ),
    ];
    let slope = c.style.rescale_slope;
    shared.push(seq(
        tags::PIXEL_VALUE_TRANSFORMATION_SEQUENCE,
        vec![item(vec![
            text(tags::RESCALE_INTERCEPT, VR::DS, "0"),
            text(tags::RESCALE_SLOPE, VR::DS, &ds(slope)),
            text(tags::RESCALE_TYPE, VR::LO, "US"),
        ])],
    ));
    shared.sort_by_key(|e| e.header().tag);
    let per_frame: Vec<InMemDicomObject> = order
        .iter()
        .map(|&k| {
            let pos = g.position(k);
            item(vec![
                seq(
                    tags::FRAME_CONTENT_SEQUENCE,
                    vec![item(vec![
                        text(tags::STACK_ID, VR::SH, "1"),
                        DataElement::new(
                            tags::IN_STACK_POSITION_NUMBER,
                            VR::UL,
                            dicom_value!(U32, [(k + 1) as u32]),
                        ),
                        DataElement::new(
                            tags::TEMPORAL_POSITION_INDEX,
                            VR::UL,
                            dicom_value!(U32, [1]),
                        ),
                    ])],
                ),
                seq(
                    tags::PLANE_POSITION_SEQUENCE,
                    vec![item(vec![text(
                        tags::IMAGE_POSITION_PATIENT,
                        VR::DS,
                        &pos.iter().map(|v| ds(*v)).collect::<Vec<_>>().join("\\"),
                    )])],
                ),
            ])
        })
        .collect();
    elements.push(text(
        tags::NUMBER_OF_FRAMES,
        VR::IS,
        &order.len().to_string(),
    ));
    elements.push(seq(
        tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE,
        vec![item(shared)],
    ));
    elements.push(seq(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE, per_frame));
    let mut pixels = Vec::with_capacity(order.len() * g.rows * g.cols);
    for &k in order {
        pixels.extend(stored(&slices[k], slope));
    }
    elements.push(DataElement::new(
        tags::PIXEL_DATA,
        VR::OW,
        PrimitiveValue::U16(pixels.into()),
    ));
    save(path, c, elements, sop, cls)
}

fn save(
    path: &Path,
    c: &SliceCtx,
    elements: Vec<Element>,
    sop: &str,
    cls: &str,
) -> Result<(), PhantomError> {
    let ts = if c.style.implicit_vr {
        "1.2.840.10008.1.2"
    } else {
        "1.2.840.10008.1.2.1"
    };
    let file = InMemDicomObject::from_element_iter(elements)
        .with_meta(
            FileMetaTableBuilder::new()
                .transfer_syntax(ts)
                .media_storage_sop_class_uid(cls)
                .media_storage_sop_instance_uid(sop),
        )
        .map_err(|e| werr(path, e))?;
    file.write_to_file(path).map_err(|e| werr_chain(path, &e))
}

/// The attributes of one classic slice, without pixel data and rescale.
fn slice_elements(
    c: &SliceCtx,
    g: &Geometry,
    k: usize,
    number: usize,
    sop: &str,
    cls: &str,
) -> Vec<Element> {
    let pos = g.position(k);
    let text = |tag, vr, v: &str| DataElement::new(tag, vr, PrimitiveValue::from(v));
    let (tr, te, seq_var, options, image_type) = match c.kind {
        "localizer" => ("8.6", "4", "SP", "", "ORIGINAL\\PRIMARY\\LOCALIZER"),
        "t1" => ("550", "12", "SK\\SP", "", "ORIGINAL\\PRIMARY\\M\\ND"),
        _ => ("3800", "75", "SK\\SP", "FS", "ORIGINAL\\PRIMARY\\M\\ND"),
    };
    let iop = [g.row[0], g.row[1], g.row[2], g.col[0], g.col[1], g.col[2]]
        .iter()
        .map(|v| ds(*v))
        .collect::<Vec<_>>()
        .join("\\");
    let ipp = pos.iter().map(|v| ds(*v)).collect::<Vec<_>>().join("\\");
    let slice_location = crate::phantom::anatomy::dot(pos, g.normal);
    vec![
        text(tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 100"),
        text(tags::IMAGE_TYPE, VR::CS, image_type),
        text(tags::SOP_CLASS_UID, VR::UI, cls),
        text(tags::SOP_INSTANCE_UID, VR::UI, sop),
        text(tags::STUDY_DATE, VR::DA, "20260101"),
        text(tags::STUDY_TIME, VR::TM, "120000"),
        text(tags::ACCESSION_NUMBER, VR::SH, c.accession),
        text(tags::MODALITY, VR::CS, "MR"),
        text(tags::MANUFACTURER, VR::LO, c.style.manufacturer),
        text(
            tags::STUDY_DESCRIPTION,
            VR::LO,
            "HIP MRI (synthetic phantom)",
        ),
        text(tags::SERIES_DESCRIPTION, VR::LO, c.description),
        text(tags::MANUFACTURER_MODEL_NAME, VR::LO, c.style.model),
        text(
            tags::PATIENT_NAME,
            VR::PN,
            &format!("PHANTOM^HIP^{:08}", c.seed),
        ),
        text(tags::PATIENT_ID, VR::LO, &format!("PHANTOM-{:08}", c.seed)),
        text(tags::PATIENT_SEX, VR::CS, "O"),
        text(tags::SCANNING_SEQUENCE, VR::CS, "SE"),
        text(tags::SEQUENCE_VARIANT, VR::CS, seq_var),
        text(tags::SCAN_OPTIONS, VR::CS, options),
        text(tags::MR_ACQUISITION_TYPE, VR::CS, "2D"),
        text(tags::SLICE_THICKNESS, VR::DS, &ds(g.thickness_mm)),
        text(tags::REPETITION_TIME, VR::DS, tr),
        text(tags::ECHO_TIME, VR::DS, te),
        text(tags::MAGNETIC_FIELD_STRENGTH, VR::DS, &ds(c.style.tesla)),
        text(tags::SPACING_BETWEEN_SLICES, VR::DS, &ds(g.spacing_mm)),
        text(tags::PROTOCOL_NAME, VR::LO, c.description),
        text(tags::PATIENT_POSITION, VR::CS, "FFS"),
        text(tags::STUDY_INSTANCE_UID, VR::UI, c.study_uid),
        text(tags::SERIES_INSTANCE_UID, VR::UI, c.series_uid),
        text(tags::SERIES_NUMBER, VR::IS, &c.series_number.to_string()),
        text(tags::INSTANCE_NUMBER, VR::IS, &number.to_string()),
        text(tags::IMAGE_POSITION_PATIENT, VR::DS, &ipp),
        text(tags::IMAGE_ORIENTATION_PATIENT, VR::DS, &iop),
        text(tags::FRAME_OF_REFERENCE_UID, VR::UI, c.frame_uid),
        text(tags::SLICE_LOCATION, VR::DS, &ds(slice_location)),
        text(tags::IMAGE_COMMENTS, VR::LT, DISCLAIMER),
        DataElement::new(tags::SAMPLES_PER_PIXEL, VR::US, dicom_value!(U16, [1])),
        text(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2"),
        DataElement::new(tags::ROWS, VR::US, dicom_value!(U16, [g.rows as u16])),
        DataElement::new(tags::COLUMNS, VR::US, dicom_value!(U16, [g.cols as u16])),
        text(
            tags::PIXEL_SPACING,
            VR::DS,
            &format!("{}\\{}", ds(g.row_spacing_mm), ds(g.pixel_mm)),
        ),
        DataElement::new(tags::BITS_ALLOCATED, VR::US, dicom_value!(U16, [16])),
        DataElement::new(tags::BITS_STORED, VR::US, dicom_value!(U16, [12])),
        DataElement::new(tags::HIGH_BIT, VR::US, dicom_value!(U16, [11])),
        DataElement::new(tags::PIXEL_REPRESENTATION, VR::US, dicom_value!(U16, [0])),
        text(tags::WINDOW_CENTER, VR::DS, "600"),
        text(tags::WINDOW_WIDTH, VR::DS, "1400"),
    ]
}
