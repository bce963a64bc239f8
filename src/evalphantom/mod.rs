//! The external test family: a second, independent synthetic hip-MRI renderer used ONLY
//! for evaluation — never for training, never for model or threshold selection. A model's
//! score here says something about generalisation because nothing below shares code,
//! parameters or conventions with the training phantom (`crate::phantom`) beyond the truth
//! types that the evaluation reads (`StudyTruth` and friends, `Stage`, `Variant`).
//!
//! What this module owns: drawing a pelvis from a seed, rendering it as the series a
//! centre would send, writing them as DICOM files the appliance must read like real
//! scanner output, and writing `truth.json`.
//!
//! How it is built differently from the training phantom, layer by layer:
//!
//! - Anatomy (`anatomy`): a body outline with variable habitus and subcutaneous fat
//!   (5-45 mm), a trunk closing at the crotch into two thighs, muscle groups as a power
//!   diagram of muscle axes whose borders are thin fat planes, bladder (empty to full),
//!   rectum, bowel above the pelvic inlet, femoral vessels and sciatic nerves, a bony
//!   pelvis of fused primitives (acetabular cups, iliac wings as a band of a bowl, pubic
//!   rami and symphysis, ischia and tuberosities, sacrum, coccyx, L5), and both femora
//!   (spherical head r 20-27 mm, neck at a 115-145 degree neck-shaft angle with
//!   anteversion, trochanters, shaft; cortex, yellow marrow, fovea capitis with ligamentum
//!   teres, cartilage, labrum, joint fluid). Pose: pelvic tilt, rotation and obliquity,
//!   table shift, per-leg abduction and rotation. Normal heads may carry a physeal scar
//!   (a thin wavy dark line, not a double line), a herniation pit or red-marrow islands.
//!   Lesions are drawn as a reader calls them: stage I an ill-defined anterosuperior
//!   oedema-like focus (sometimes reaching the neck) with no line and normal contour;
//!   stage II a demarcated anterosuperior segment (15-40 % of the head) with a bright
//!   inner and dark outer band, fat-like or mixed inside, head still spherical.
//! - Signal (`tissue`): every tissue is a water and a fat compartment with its own PD, T1
//!   and T2 at the style's field strength; spin echo, STIR and gradient-echo equations;
//!   chemical fat suppression with a residual that grows off-centre and is patchy, STIR
//!   with spatially varying inversion efficiency.
//! - Artefacts (`render`): partial volume by slice-profile sampling and 2x2 in-plane
//!   resampling at tissue edges, a multi-element receive array combined as root sum of
//!   squares with complex noise (Rician / non-central chi magnitude), partial intensity
//!   normalisation, phase-encode ghosts of arteries and breathing, acquisition at a
//!   coarser matrix interpolated (Lanczos) to the stored one, with its mild ringing.
//! - Tags and encodings (`style`, `dicomio`): three centre styles that none of the
//!   training styles resemble (a Canon-like 3 T centre reading a non-fat-suppressed T2, a
//!   Fujifilm/Hitachi-like 1.2 T open scanner reading coronal STIR, a United-Imaging-like
//!   3 T centre with a wide, high pelvic field of view and fat-suppressed T2 plus PD),
//!   their own descriptions, sequence names, timing, matrices, coils, rescale and export
//!   naming; explicit and implicit VR little endian and RLE Lossless (own encoder);
//!   reversed instance numbering; file names that say nothing about slice order; UIDs
//!   under `1.2.826.0.1.3680043.10.1382.97` from the seed and position.
//!
//! What it deliberately does not do: it does not model k-space (no true Gibbs truncation,
//! wrap-around, chemical shift, motion other than ghosts), does not imitate any real
//! patient or the training phantom's tissue values, does not write Enhanced MR or JPEG
//! (dicom-rs 0.10.1 registers JPEG Lossless for decoding only), and records physeal scars
//! and red-marrow islands as `Variant::None` because the truth enum only knows herniation
//! pits. Its truth is exact for what it draws; whether a radiologist would stage a given
//! drawing the same way is not validated.

mod anatomy;
mod dicomio;
mod geom;
mod render;
mod style;
mod tissue;

use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::phantom::anatomy::Stage;
use crate::phantom::{HeadTruth, PhantomError, SeriesTruth, Sphere, StudyTruth};
use crate::result::Side;
use anatomy::Anatomy;
use dicomio::{SeriesMeta, SliceMeta, StudyMeta};
use geom::{dot, mix64};
use render::{SeqRender, Stack};
use style::{Naming, Plan, STYLES, SeriesPlan};
use tissue::{Tables, Weighting};

/// What every study and instance says about itself.
const DISCLAIMER: &str = "synthetic external-evaluation hip phantom - not patient data";

/// Study Description of every study (says synthetic and external evaluation).
const STUDY_DESCRIPTION: &str = "SYNTHETIC EXTERNAL EVAL HIP PHANTOM";

/// Names of the centre styles.
pub fn style_names() -> impl Iterator<Item = &'static str> {
    STYLES.iter().copied()
}

/// Choices that override what the seed would draw.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Centre style; None lets `generate` cycle through the styles (and `generate_study`
    /// pick one from the seed), so an evaluation covers every centre equally.
    pub style: Option<&'static str>,
    /// Stages (right, left); None draws each head's stage uniformly from 0 / I / II. Pinning
    /// changes only the lesions, never the rest of the drawn study.
    pub stages: Option<[Stage; 2]>,
}

fn werr(path: &Path, e: impl std::fmt::Display) -> PhantomError {
    PhantomError::Write {
        path: path.to_owned(),
        message: e.to_string(),
    }
}

fn resolve_style(style: Option<&str>, seed: u64) -> Result<&'static str, PhantomError> {
    match style {
        Some(s) => STYLES
            .iter()
            .copied()
            .find(|n| *n == s)
            .ok_or_else(|| PhantomError::UnknownStyle(s.to_string())),
        None => Ok(STYLES[(seed % STYLES.len() as u64) as usize]),
    }
}

/// One study into `dir` (created), deterministic from `seed` (same seed and options give
/// byte-identical files). Writes DICOM series in subfolders and `truth.json`.
pub fn generate_study(
    dir: &Path,
    seed: u64,
    options: &Options,
) -> Result<StudyTruth, PhantomError> {
    let style = resolve_style(options.style, seed)?;
    let anat = Anatomy::draw(seed, options.stages);
    let plan =
        style::plan(style, seed, &anat).ok_or_else(|| PhantomError::UnknownStyle(style.into()))?;
    std::fs::create_dir_all(dir).map_err(|e| werr(dir, e))?;
    let study = study_meta(seed, &anat, &plan);

    let mut written: Vec<Option<SeriesTruth>> = vec![None; plan.series.len()];
    let mut done = vec![false; plan.series.len()];
    for i in 0..plan.series.len() {
        if done[i] {
            continue;
        }
        // Series with one identical stack are rendered together: one anatomy sampling,
        // several contrasts (the coronal T1 and T2 of a protocol share their prescription).
        let group: Vec<usize> = (i..plan.series.len())
            .filter(|&j| {
                !done[j]
                    && (j == i
                        || (plan.series[i].stacks.len() == 1
                            && plan.series[j].stacks == plan.series[i].stacks))
            })
            .collect();
        let seqs: Vec<SeqRender> = group
            .iter()
            .map(|&j| seq_render(&plan, &plan.series[j], &anat, seed, j))
            .collect();
        let mut volumes: Vec<Vec<(usize, Vec<f32>)>> = vec![Vec::new(); group.len()];
        for (si, stack) in plan.series[i].stacks.iter().enumerate() {
            let vols = render::render_stack(&anat, stack, &plan.coils, &seqs);
            for (g, v) in vols.into_iter().enumerate() {
                volumes[g].push((si, v));
            }
        }
        for (g, &j) in group.iter().enumerate() {
            done[j] = true;
            let truth = write_series(dir, seed, &plan, &study, &plan.series[j], &volumes[g])?;
            written[j] = Some(truth);
        }
    }

    let heads = (0..2)
        .map(|side| head_truth(&anat, side))
        .collect::<Vec<_>>();
    let truth = StudyTruth {
        note: DISCLAIMER.into(),
        seed,
        study_uid: study.study_uid.clone(),
        accession_number: study.accession.clone(),
        scanner: style.into(),
        heads,
        series: written.into_iter().flatten().collect(),
    };
    let path = dir.join("truth.json");
    let json = serde_json::to_string_pretty(&truth).map_err(|e| werr(&path, e))?;
    std::fs::write(&path, json).map_err(|e| werr(&path, e))?;
    Ok(truth)
}

/// `studies` studies as `out/study_{i:04}`, seeds `seed`, `seed + 1`, ...; when
/// `options.style` is None the style cycles through all styles by study index, so any
/// run of consecutive studies covers the styles equally.
pub fn generate(
    out: &Path,
    studies: usize,
    seed: u64,
    options: &Options,
) -> Result<Vec<StudyTruth>, PhantomError> {
    let mut truths = Vec::with_capacity(studies);
    for i in 0..studies {
        let opts = Options {
            style: Some(options.style.unwrap_or(STYLES[i % STYLES.len()])),
            stages: options.stages,
        };
        let dir = out.join(format!("study_{i:04}"));
        truths.push(generate_study(&dir, seed.wrapping_add(i as u64), &opts)?);
    }
    Ok(truths)
}

fn head_truth(anat: &Anatomy, side: usize) -> HeadTruth {
    let hip = &anat.hips[side];
    let c = anat.head_center_lps(side);
    let r = hip.radius;
    let lesion = anat.lesion_lps(side);
    HeadTruth {
        side: Side::BOTH[side],
        stage: hip.stage,
        early_onfh: hip.stage != Stage::S0,
        variant: hip.variant,
        center_lps_mm: c,
        radius_mm: r,
        bbox_lps_mm: [c.map(|v| v - r), c.map(|v| v + r)],
        lesion_center_lps_mm: lesion.map(|(at, _, _)| at),
        lesion_sphere: lesion.map(|(_, p, rho)| Sphere {
            center_lps_mm: p,
            radius_mm: rho,
        }),
    }
}

fn study_meta(seed: u64, anat: &Anatomy, plan: &Plan) -> StudyMeta {
    let h = mix64(seed ^ 0x57d1);
    let secs = 7 * 3600 + (h >> 8) % (11 * 3600);
    let style_hash = plan.style.bytes().fold(0u64, |a, b| mix64(a ^ b as u64));
    StudyMeta {
        study_uid: dicomio::uid(seed, &[1]),
        frame_uid: dicomio::uid(seed, &[4]),
        accession: format!("EX{:08}", seed % 100_000_000),
        patient_id: format!("EXTPH{:010}", seed % 10_000_000_000),
        sex: if h & 1 == 0 { "F" } else { "M" },
        age: format!("{:03}Y", 22 + (h >> 20) % 57),
        weight: (52.0 + 45.0 * (anat.body.fat / 45.0) + 10.0 * ((h >> 40) % 100) as f64 / 100.0)
            .round(),
        date: dicomio::date(17_900 + ((h >> 30) % 2200) as i64),
        time: format!("{:02}{:02}{:02}", secs / 3600, secs / 60 % 60, secs % 60),
        study_id: format!("{}", seed % 100_000),
        manufacturer: plan.vendor.manufacturer,
        model: plan.vendor.model,
        software: plan.vendor.software,
        station: plan.vendor.station,
        institution: plan.vendor.institution,
        serial: format!("{}", 10_000 + style_hash % 90_000),
        b0: plan.vendor.b0,
        patient_position: plan.vendor.patient_position,
    }
}

fn seq_render(plan: &Plan, s: &SeriesPlan, anat: &Anatomy, seed: u64, index: usize) -> SeqRender {
    let b0 = plan.vendor.b0;
    let eta0 = match s.fatsup {
        tissue::FatSup::Inversion { eta0, .. } => eta0,
        _ => 1.0,
    };
    let tables = Tables::new(s.weighting, b0, eta0);
    let reference = render::reference_signal(&tables, s.weighting, s.fatsup, b0);
    let mid = anat.pose.to_lps(anat.between_heads(0.5));
    let sens = plan.coils.sos(mid);
    SeqRender {
        tables,
        weighting: s.weighting,
        fatsup: s.fatsup,
        b0,
        sigma: reference * sens / s.snr,
        kappa: plan.vendor.kappa,
        channels: plan.coils.pos.len(),
        ghost: s.ghost,
        texture: s.texture,
        noise_seed: mix64(seed ^ (index as u64 + 1).wrapping_mul(0xA24B_AED4_963E_E407)),
        field_seed: mix64(seed ^ 0xF1E1D),
    }
}

/// The series-level attributes of `s`: identity, sequence and acquisition, time (the
/// study's plus the series' minute), and its display window.
fn series_meta(
    seed: u64,
    plan: &Plan,
    study: &StudyMeta,
    s: &SeriesPlan,
    window: (f64, f64),
) -> SeriesMeta {
    let phase_along_col = s.stacks[0].phase_along_col;
    let st0 = &s.stacks[0];
    let (freq_n, phase_n) = if phase_along_col {
        (st0.acq[0], st0.acq[1])
    } else {
        (st0.acq[1], st0.acq[0])
    };
    let (tr, te, ti) = match s.weighting {
        Weighting::SpinEcho { tr, te } => (tr, te, None),
        Weighting::Stir { tr, te, ti } => (tr, te, Some(ti)),
        Weighting::Gre { tr, te, .. } => (tr, te, None),
    };
    let secs = study
        .time
        .parse::<u64>()
        .map(|t| t / 10000 * 3600 + t / 100 % 100 * 60 + t % 100)
        .unwrap_or(0)
        + s.minute as u64 * 60;
    SeriesMeta {
        uid: dicomio::uid(seed, &[2, s.number as u64]),
        number: s.number,
        description: s.description.clone(),
        protocol: s.protocol.clone(),
        image_type: s.image_type.clone(),
        scanning_sequence: s.scanning_sequence,
        sequence_variant: s.sequence_variant,
        scan_options: s.scan_options,
        sequence_name: s.sequence_name.clone(),
        tr,
        te,
        ti,
        etl: s.etl,
        flip: s.flip,
        averages: s.averages,
        bandwidth: s.bandwidth,
        coil: plan.vendor.coil,
        acq_matrix: if phase_along_col {
            [0, freq_n as u16, phase_n as u16, 0]
        } else {
            [freq_n as u16, 0, 0, phase_n as u16]
        },
        phase_dir: if phase_along_col { "COL" } else { "ROW" },
        percent_phase_fov: if phase_along_col {
            100.0 * st0.rows as f64 / st0.cols as f64
        } else {
            100.0
        },
        bits_stored: plan.vendor.bits_stored,
        rescale: s.rescale,
        window,
        time: format!(
            "{:02}{:02}{:02}",
            secs / 3600 % 24,
            secs / 60 % 60,
            secs % 60
        ),
        thickness: st0.thickness,
        spacing: st0.spacing,
        comments: DISCLAIMER,
        study_description: STUDY_DESCRIPTION,
    }
}

fn write_series(
    dir: &Path,
    seed: u64,
    plan: &Plan,
    study: &StudyMeta,
    s: &SeriesPlan,
    volumes: &[(usize, Vec<f32>)],
) -> Result<SeriesTruth, PhantomError> {
    // Scale so that the 99.5th percentile lands on the style's target (after rescale).
    let mut sample: Vec<f32> = volumes
        .iter()
        .flat_map(|(_, v)| v.iter().step_by(7).copied())
        .collect();
    sample.sort_by(f32::total_cmp);
    let p995 = sample
        .get(sample.len() * 995 / 1000)
        .copied()
        .unwrap_or(1.0)
        .max(1e-6) as f64;
    let p50 = sample.get(sample.len() / 2).copied().unwrap_or(0.0) as f64;
    let gain = s.target / p995;
    let (slope, intercept) = s.rescale.unwrap_or((1.0, 0.0));
    let max_stored = ((1u32 << plan.vendor.bits_stored) - 1) as f64;
    let to_stored = |v: f32| -> u16 {
        (((v as f64 * gain) - intercept) / slope)
            .round()
            .clamp(0.0, max_stored) as u16
    };
    let window_c = 0.5 * (s.target + p50 * gain);
    let window_w = (1.1 * s.target).round();

    let folder = match plan.vendor.naming {
        Naming::SeriesAndHexIm => format!("SE{:06}", s.number),
        Naming::ShortAndBareHex => format!("S{}", s.number),
        Naming::ProtocolAndUid => format!("{:02}_{}", s.number, s.protocol.to_lowercase()),
    };
    let sdir = dir.join(&folder);
    std::fs::create_dir_all(&sdir).map_err(|e| werr(&sdir, e))?;
    let meta = series_meta(seed, plan, study, s, (window_c.round(), window_w));

    // Instances in slice order across the stacks, then numbered (maybe backwards).
    let mut items: Vec<(&Stack, usize, &[f32])> = Vec::new();
    for (si, vol) in volumes {
        let stack = &s.stacks[*si];
        let n = stack.cols * stack.rows;
        for k in 0..stack.slices {
            items.push((stack, k, &vol[k * n..(k + 1) * n]));
        }
    }
    let total = items.len();
    items.par_iter().enumerate().try_for_each(
        |(idx, (stack, k, pixels))| -> Result<(), PhantomError> {
            let number = if plan.reverse { total - idx } else { idx + 1 };
            let sop = dicomio::uid(seed, &[3, s.number as u64, idx as u64 + 1]);
            let stored: Vec<u16> = pixels.iter().map(|v| to_stored(*v)).collect();
            let position = stack.position(*k);
            let normal = stack.normal();
            let name = match plan.vendor.naming {
                Naming::SeriesAndHexIm => format!(
                    "IM{:08X}",
                    dicomio::opaque_name(seed, s.number as u64, idx as u64) as u32
                ),
                Naming::ShortAndBareHex => format!(
                    "{:016x}",
                    dicomio::opaque_name(seed, s.number as u64, idx as u64)
                ),
                Naming::ProtocolAndUid => format!("{sop}.dcm"),
            };
            let path: PathBuf = sdir.join(name);
            let slice = SliceMeta {
                sop_uid: sop,
                instance_number: number as i64,
                position,
                row: stack.row,
                col: stack.col,
                pixel: stack.pixel,
                location: dot(position, normal),
                rows: stack.rows,
                cols: stack.cols,
                pixels: &stored,
            };
            dicomio::write_instance(&path, study, &meta, &slice, plan.encoding)
                .map_err(|e| werr(&path, e))
        },
    )?;
    Ok(SeriesTruth {
        series_uid: meta.uid,
        description: s.description.clone(),
        kind: s.kind.into(),
        orientation: s.orientation,
        instances: total,
        folder,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::{
        Rules, Volume, assemble, assemble_files, collect_files, scan_files, select,
    };
    use geom::sub;

    fn tree(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
        let files = collect_files(&[dir.to_owned()]).unwrap();
        files
            .into_iter()
            .map(|p| {
                (
                    p.strip_prefix(dir).unwrap().to_owned(),
                    std::fs::read(&p).unwrap(),
                )
            })
            .collect()
    }

    /// A seed whose plan (cheap: no rendering) satisfies `pred`.
    fn find_seed(style: &str, pred: impl Fn(&Plan) -> bool) -> u64 {
        (1000..1400)
            .find(|&s| {
                let a = Anatomy::draw(s, Some([Stage::S2, Stage::S0]));
                style::plan(style, s, &a).is_some_and(|p| pred(&p))
            })
            .expect("a seed with the wanted plan")
    }

    /// Mean over the voxels of the slice nearest `c` whose distance from `c` lies in
    /// [r0, r1), leaving out those within `skip.1` of `skip.0`.
    fn ring_mean(v: &Volume, c: [f64; 3], r0: f64, r1: f64, skip: Option<([f64; 3], f64)>) -> f64 {
        let vc = v.patient_to_voxel(c);
        let k = vc[2].round().clamp(0.0, (v.dims[2] - 1) as f64) as usize;
        let sp = v.spacing();
        let reach = [0, 1].map(|a| (r1 / sp[a]).ceil() as i64 + 1);
        let (mut sum, mut n) = (0.0, 0usize);
        for dj in -reach[1]..=reach[1] {
            for di in -reach[0]..=reach[0] {
                let (i, j) = (vc[0].round() as i64 + di, vc[1].round() as i64 + dj);
                if i < 0 || j < 0 || i >= v.dims[0] as i64 || j >= v.dims[1] as i64 {
                    continue;
                }
                let p = v.voxel_to_patient([i as f64, j as f64, k as f64]);
                if skip.is_some_and(|(s, r)| geom::len(sub(p, s)) < r) {
                    continue;
                }
                let d = geom::len(sub(p, c));
                if d >= r0 && d < r1 {
                    sum += v.get(i as usize, j as usize, k) as f64;
                    n += 1;
                }
            }
        }
        assert!(n > 0, "no voxels in the ring");
        sum / n as f64
    }

    /// Bilinear value in slice `k` at patient point `p` (projected onto the slice).
    fn in_slice(v: &Volume, k: usize, p: [f64; 3]) -> Option<f64> {
        let c = v.patient_to_voxel(p);
        let (i, j) = (c[0].floor(), c[1].floor());
        if i < 0.0 || j < 0.0 || i as usize + 1 >= v.dims[0] || j as usize + 1 >= v.dims[1] {
            return None;
        }
        let (fx, fy) = (c[0] - i, c[1] - j);
        let (i, j) = (i as usize, j as usize);
        let g = |a, b| v.get(a, b, k) as f64;
        Some(
            (1.0 - fx) * (1.0 - fy) * g(i, j)
                + fx * (1.0 - fy) * g(i + 1, j)
                + (1.0 - fx) * fy * g(i, j + 1)
                + fx * fy * g(i + 1, j + 1),
        )
    }

    /// The stage II double line, read as on an image: in the slice where the interface
    /// is most nearly perpendicular to the slice (and crosses the head), along the line
    /// from the lesion centre toward the head centre, the profile inside the segment
    /// (inner band) must be brighter than just outside it (outer band).
    fn double_line(v: &Volume, head: &HeadTruth, bands: (f64, f64)) -> (f64, f64) {
        let sphere = head.lesion_sphere.unwrap();
        let (lc, rho, c, r) = (
            sphere.center_lps_mm,
            sphere.radius_mm,
            head.center_lps_mm,
            head.radius_mm,
        );
        let a = v.affine;
        let n = geom::unit([a[0][2], a[1][2], a[2][2]]);
        let mut best: Option<(f64, usize, [f64; 3], [f64; 3], f64)> = None;
        for k in 0..v.dims[2] {
            let pk = v.voxel_to_patient([0.0, 0.0, k as f64]);
            let dn = geom::dot(sub(lc, pk), n);
            let dc = geom::dot(sub(c, pk), n);
            if dn.abs() >= rho || dc.abs() >= r - 6.0 {
                continue;
            }
            let rho_k = (rho * rho - dn * dn).sqrt();
            let r_k = (r * r - dc * dc).sqrt();
            let lc_k = sub(lc, geom::mul(n, dn));
            let c_k = sub(c, geom::mul(n, dc));
            let u = geom::unit(sub(c_k, lc_k));
            let b = geom::add(lc_k, geom::mul(u, rho_k));
            if geom::len(sub(b, c_k)) > r_k - 5.0 {
                continue;
            }
            let score = dn.abs() / rho;
            if best.is_none_or(|x| score < x.0) {
                best = Some((score, k, lc_k, u, rho_k));
            }
        }
        let (_, k, lc_k, u, rho_k) = best.expect("a slice crosses the interface inside the head");
        let at = |t: f64| in_slice(v, k, geom::add(lc_k, geom::mul(u, t)));
        let samples = |from: f64, to: f64| -> Vec<f64> {
            (0..=8)
                .filter_map(|i| at(from + (to - from) * i as f64 / 8.0))
                .collect()
        };
        let bright = samples(rho_k - bands.0 + 0.4, rho_k - 0.4);
        let dark = samples(rho_k + 0.4, rho_k + bands.1 - 0.4);
        (
            bright.iter().copied().fold(f64::MIN, f64::max),
            dark.iter().copied().fold(f64::MAX, f64::min),
        )
    }

    /// Render, then read back with the appliance's own scan / select / assemble, and
    /// check heads and (for stage II) the double line.
    fn check_style(style: &'static str, seed: u64) {
        let dir = tempfile::tempdir().unwrap();
        let opts = Options {
            style: Some(style),
            stages: Some([Stage::S2, Stage::S0]),
        };
        let truth = generate_study(dir.path(), seed, &opts).unwrap();
        assert_eq!(truth.scanner, style);
        assert!(truth.note.contains("not patient data"));
        assert_eq!(truth.heads[0].side, Side::Right);
        assert!(truth.heads[0].center_lps_mm[0] < truth.heads[1].center_lps_mm[0]);
        let files = collect_files(&[dir.path().to_owned()]).unwrap();
        let report = scan_files(&files);
        assert_eq!(report.skipped, 1, "only truth.json is not DICOM");
        let sel = select(&report.series, &Rules::default());
        let chosen = &report.series[sel.chosen.expect("a series is chosen")];
        let want = truth.series.iter().find(|s| s.kind == "t2").unwrap();
        assert_eq!(
            chosen.series_uid, want.series_uid,
            "{style}: {:?}",
            sel.verdicts
        );
        // Its T1 companion is the style's T1 series.
        let t1 = crate::volume::select_t1(&report.series, &Rules::default(), sel.chosen.unwrap());
        let want_t1 = truth.series.iter().find(|s| s.kind == "t1").unwrap();
        assert_eq!(
            report.series[t1.chosen.expect("a T1 companion")].series_uid,
            want_t1.series_uid,
            "{style}: {:?}",
            t1.verdicts
        );
        let vol = assemble(chosen).unwrap();
        let anat = Anatomy::draw(seed, opts.stages);
        let bands = anat.hips[0].bands().unwrap();
        for h in &truth.heads {
            let c = vol.patient_to_voxel(h.center_lps_mm);
            for a in 0..3 {
                assert!(
                    c[a] >= 0.0 && c[a] <= (vol.dims[a] - 1) as f64,
                    "{style}: head {} outside the volume on axis {a}: {c:?} of {:?}",
                    h.side,
                    vol.dims
                );
            }
            // The head is drawn there: its marrow differs from its rim (cortex, cartilage,
            // joint fluid), whatever the weighting. A diseased head is read away from its
            // lesion.
            let r = h.radius_mm;
            let skip = h
                .lesion_sphere
                .map(|s| (s.center_lps_mm, s.radius_mm + bands.1 + 3.0));
            let inner = ring_mean(&vol, h.center_lps_mm, 0.0, 0.5 * r, skip);
            let outer = ring_mean(&vol, h.center_lps_mm, r - 1.5, r + 2.5, skip);
            let rel = (inner - outer).abs() / (0.5 * (inner + outer));
            assert!(
                rel > 0.2,
                "{style} {}: head {inner:.1} vs rim {outer:.1}",
                h.side
            );
        }
        let (bright, dark) = double_line(&vol, &truth.heads[0], bands);
        assert!(
            bright > 1.3 * dark,
            "{style}: no double line (inner band max {bright:.1}, outer band min {dark:.1})"
        );
    }

    #[test]
    fn vantage_studies_read_like_scanner_output() {
        let seed = find_seed("vantage3t", |p| {
            p.encoding == dicomio::Encoding::Rle && p.reverse
        });
        check_style("vantage3t", seed);
    }

    #[test]
    fn oasis_studies_read_like_scanner_output() {
        let seed = find_seed("oasis12t", |p| p.encoding == dicomio::Encoding::Implicit);
        check_style("oasis12t", seed);
    }

    #[test]
    fn umr_studies_read_like_scanner_output() {
        let seed = find_seed("umr3t", |p| {
            p.encoding == dicomio::Encoding::Explicit && p.series.iter().any(|s| s.kind == "pd")
        });
        check_style("umr3t", seed);
    }

    #[test]
    fn same_seed_same_bytes() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let opts = Options {
            style: Some("oasis12t"),
            stages: None,
        };
        let ta = generate_study(a.path(), 77, &opts).unwrap();
        generate_study(b.path(), 77, &opts).unwrap();
        let (fa, fb) = (tree(a.path()), tree(b.path()));
        assert_eq!(fa.len(), fb.len());
        assert!(fa.len() > 40);
        for ((na, da), (nb, db)) in fa.iter().zip(&fb) {
            assert_eq!(na, nb);
            assert!(da == db, "{} differs between two runs", na.display());
        }
        assert_eq!(ta.heads.len(), 2);
        assert!(matches!(
            generate_study(
                a.path(),
                1,
                &Options {
                    style: Some("siemens"),
                    stages: None
                }
            ),
            Err(PhantomError::UnknownStyle(_))
        ));
    }

    #[test]
    fn styles_cycle_by_study_index() {
        let names: Vec<_> = style_names().collect();
        assert_eq!(names.len(), 3);
        assert!(
            names
                .iter()
                .all(|n| !["siemens", "ge", "philips"].contains(n))
        );
        for i in 0..60 {
            let s = STYLES[i % 3];
            assert!(names.contains(&s));
        }
    }

    #[test]
    fn rle_round_trips_through_the_appliance_decoder() {
        let dir = tempfile::tempdir().unwrap();
        let (rows, cols) = (37usize, 53usize);
        let mut g = geom::FastRng::new(3);
        let pixels: Vec<u16> = (0..rows * cols)
            .map(|i| match (i / cols) % 4 {
                0 => 0,
                1 => 4095,
                2 => (g.next_u64() & 0xFFFF) as u16,
                _ => ((i % cols) * 997 % 65_536) as u16,
            })
            .collect();
        let study = StudyMeta {
            study_uid: dicomio::uid(5, &[1]),
            frame_uid: dicomio::uid(5, &[4]),
            accession: "EX00000005".into(),
            patient_id: "EXTPH0000000005".into(),
            sex: "F",
            age: "040Y".into(),
            weight: 70.0,
            date: "20240101".into(),
            time: "120000".into(),
            study_id: "5".into(),
            manufacturer: "X",
            model: "Y",
            software: "Z",
            station: "S",
            institution: "I",
            serial: "1".into(),
            b0: 3.0,
            patient_position: "FFS",
        };
        let series = SeriesMeta {
            uid: dicomio::uid(5, &[2, 1]),
            number: 1,
            description: "rle test".into(),
            protocol: "rle".into(),
            image_type: "ORIGINAL\\PRIMARY".into(),
            scanning_sequence: "SE",
            sequence_variant: "SK",
            scan_options: "",
            sequence_name: "t".into(),
            tr: 4000.0,
            te: 90.0,
            ti: None,
            etl: 1,
            flip: 90.0,
            averages: 1.0,
            bandwidth: 200.0,
            coil: "C",
            acq_matrix: [0, 53, 37, 0],
            phase_dir: "COL",
            percent_phase_fov: 100.0,
            bits_stored: 16,
            rescale: None,
            window: (100.0, 200.0),
            time: "120000".into(),
            thickness: 3.0,
            spacing: 3.0,
            comments: DISCLAIMER,
            study_description: STUDY_DESCRIPTION,
        };
        let path = dir.path().join("rle.dcm");
        let slice = SliceMeta {
            sop_uid: dicomio::uid(5, &[3, 1, 1]),
            instance_number: 1,
            position: [0.0, 0.0, 0.0],
            row: [1.0, 0.0, 0.0],
            col: [0.0, 0.0, -1.0],
            pixel: 0.8,
            location: 0.0,
            rows,
            cols,
            pixels: &pixels,
        };
        dicomio::write_instance(&path, &study, &series, &slice, dicomio::Encoding::Rle).unwrap();
        let vol = assemble_files(&[path.as_path()]).unwrap();
        assert_eq!(vol.dims, [cols, rows, 1]);
        let back: Vec<u16> = vol.data.iter().map(|v| *v as u16).collect();
        assert_eq!(back, pixels);
    }
}
