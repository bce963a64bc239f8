//! The three centre styles: scanner identity, receive array, protocols (series, timing,
//! geometry, naming) and how the centre exports files.
//!
//! None of them is a vendor the training phantom imitates. `vantage3t` is a Canon-like 3 T
//! centre whose fluid-sensitive series is a NON-fat-suppressed T2 FSE (fat bright);
//! `oasis12t` is a Fujifilm/Hitachi-like 1.2 T open (vertical-field) scanner that reads
//! coronal STIR, with thick slices, low SNR and 12-bit pixels; `umr3t` is a
//! United-Imaging-like 3 T centre that prescribes a wide pelvic field of view centred above
//! the hips (heads off-centre) with chemically fat-suppressed T2 and a PD-FS axial, and
//! stores rescaled pixel values.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::anatomy::Anatomy;
use super::dicomio::Encoding;
use super::geom::{M3, V3, add, dot, mix64, mul, sub, unit};
use super::render::{Coils, Ghost, Stack};
use super::tissue::{FatSup, Weighting, fat_null_ti};
use crate::phantom::Orientation;

/// Style names, in the order studies cycle through them.
pub(crate) const STYLES: [&str; 3] = ["vantage3t", "oasis12t", "umr3t"];

/// How a centre names series folders and instance files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Naming {
    /// `SE000004/IM1A2B3C4D`.
    SeriesAndHexIm,
    /// `S4/0123456789abcdef`.
    ShortAndBareHex,
    /// `04_t2_fse_fs_cor/<SOP Instance UID>.dcm`.
    ProtocolAndUid,
}

/// Scanner and site identity.
#[derive(Debug, Clone)]
pub(crate) struct Vendor {
    /// Manufacturer.
    pub manufacturer: &'static str,
    /// Manufacturer's Model Name.
    pub model: &'static str,
    /// Software Versions.
    pub software: &'static str,
    /// Station Name.
    pub station: &'static str,
    /// Institution Name (marked synthetic).
    pub institution: &'static str,
    /// Field strength, T.
    pub b0: f64,
    /// Receive Coil Name.
    pub coil: &'static str,
    /// Bits Stored.
    pub bits_stored: u16,
    /// Intensity normalisation power applied by the reconstruction.
    pub kappa: f64,
    /// Patient Position.
    pub patient_position: &'static str,
    /// Export naming.
    pub naming: Naming,
}

/// One series to render and write.
#[derive(Debug, Clone)]
pub(crate) struct SeriesPlan {
    /// "localizer", "t1", "t2" (the series the appliance should choose), "t2_alt" (a
    /// second T2-type series it should pass over) or "pd".
    pub kind: &'static str,
    /// Series Number.
    pub number: i64,
    /// Series Description.
    pub description: String,
    /// Protocol Name.
    pub protocol: String,
    /// Orientation recorded in the truth.
    pub orientation: Orientation,
    /// Image Type.
    pub image_type: String,
    /// Signal equation and timing.
    pub weighting: Weighting,
    /// Fat suppression.
    pub fatsup: FatSup,
    /// Scanning Sequence.
    pub scanning_sequence: &'static str,
    /// Sequence Variant.
    pub sequence_variant: &'static str,
    /// Scan Options.
    pub scan_options: &'static str,
    /// Sequence Name.
    pub sequence_name: String,
    /// Echo Train Length.
    pub etl: u32,
    /// Flip Angle.
    pub flip: f64,
    /// Number of Averages.
    pub averages: f64,
    /// Pixel Bandwidth.
    pub bandwidth: f64,
    /// Geometry: one stack, or three single-slice stacks for a localizer.
    pub stacks: Vec<Stack>,
    /// Muscle signal-to-noise ratio at the hips.
    pub snr: f64,
    /// Phase-encode ghosting.
    pub ghost: Ghost,
    /// Tissue texture amplitude.
    pub texture: f64,
    /// Rescale (slope, intercept) written with the pixels, if any.
    pub rescale: Option<(f64, f64)>,
    /// Output value (after rescale) of the 99.5th percentile of the series.
    pub target: f64,
    /// Minutes after the study start (Series Time).
    pub minute: u32,
}

/// Everything about a study that is not anatomy.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    /// Style name.
    pub style: &'static str,
    /// Scanner identity.
    pub vendor: Vendor,
    /// Transfer syntax of every file.
    pub encoding: Encoding,
    /// Whether instance numbers run against the slice order.
    pub reverse: bool,
    /// Series in series-number order.
    pub series: Vec<SeriesPlan>,
    /// The receive array.
    pub coils: Coils,
}

fn u(rng: &mut ChaCha8Rng, lo: f64, hi: f64) -> f64 {
    lo + (hi - lo) * rng.random::<f64>()
}

fn pick<T: Copy>(rng: &mut ChaCha8Rng, v: &[T]) -> T {
    v[rng.random_range(0..v.len())]
}

/// Draw among weighted choices.
fn weighted<T: Copy>(rng: &mut ChaCha8Rng, v: &[(T, f64)]) -> T {
    let total: f64 = v.iter().map(|(_, w)| w).sum();
    let mut x = rng.random::<f64>() * total;
    for (t, w) in v {
        if x < *w {
            return *t;
        }
        x -= w;
    }
    v[v.len() - 1].0
}

/// Geometry choices of one style for one orientation.
#[derive(Debug, Clone, Copy)]
struct Geo {
    /// Field of view across the rows, mm.
    fov: (f64, f64),
    /// Stored column counts to choose from.
    cols: &'static [usize],
    /// Rows / columns ratios to choose from (rectangular matrices).
    ratio: &'static [f64],
    /// Acquired / stored matrix fraction.
    acq: (f64, f64),
    /// Slice thickness, mm.
    thick: (f64, f64),
    /// Gap between slices, mm.
    gap: (f64, f64),
    /// Number of slices.
    slices: (usize, usize),
    /// How far above the hips the field of view is centred, mm.
    raise: (f64, f64),
    /// Largest oblique tilt of the prescription, degrees.
    oblique: f64,
    /// Phase encoding along the column direction.
    phase_along_col: bool,
}

fn axes(o: Orientation) -> (V3, V3) {
    match o {
        Orientation::Coronal => ([1.0, 0.0, 0.0], [0.0, 0.0, -1.0]),
        Orientation::Axial => ([1.0, 0.0, 0.0], [0.0, 1.0, 0.0]),
        Orientation::Sagittal => ([0.0, 1.0, 0.0], [0.0, 0.0, -1.0]),
    }
}

/// A stack centred on `target` (plus the style's jitter and raise). With `both_heads`,
/// the slab and field of view are adjusted until both head centres lie inside with margin.
fn draw_stack(
    rng: &mut ChaCha8Rng,
    anat: &Anatomy,
    o: Orientation,
    g: Geo,
    target: V3,
    both_heads: bool,
) -> Stack {
    let (r0, c0) = axes(o);
    let tilt = M3::axis_angle([0.0, 0.0, 1.0], u(rng, -g.oblique, g.oblique).to_radians()).then(
        &M3::axis_angle(
            [1.0, 0.0, 0.0],
            u(rng, -g.oblique, g.oblique).to_radians() * 0.5,
        ),
    );
    let (row, col) = (unit(tilt.apply(r0)), unit(tilt.apply(c0)));
    let cols = pick(rng, g.cols);
    let ratio = pick(rng, g.ratio);
    let rows = ((cols as f64 * ratio / 16.0).round() as usize) * 16;
    let pixel = (u(rng, g.fov.0, g.fov.1) / cols as f64).clamp(0.6, 1.0);
    let frac = u(rng, g.acq.0, g.acq.1);
    let even = |v: f64| ((v / 2.0).round() as usize * 2).max(64);
    let thickness = (u(rng, g.thick.0, g.thick.1) * 10.0).round() / 10.0;
    let spacing = thickness + (u(rng, g.gap.0, g.gap.1) * 10.0).round() / 10.0;
    let mut slices = rng.random_range(g.slices.0..=g.slices.1);
    let jitter = [u(rng, -6.0, 6.0), u(rng, -5.0, 5.0), u(rng, -6.0, 6.0)];
    let mut center = add(
        add(target, jitter),
        [0.0, 0.0, u(rng, g.raise.0, g.raise.1)],
    );
    let mut stack = Stack {
        row,
        col,
        center,
        cols,
        rows,
        pixel,
        acq: [even(cols as f64 * frac), even(rows as f64 * frac)],
        slices,
        thickness,
        spacing,
        phase_along_col: g.phase_along_col,
    };
    if both_heads {
        let heads = [anat.head_center_lps(0), anat.head_center_lps(1)];
        let radius = anat.hips[0].radius.max(anat.hips[1].radius);
        let normal = stack.normal();
        for _ in 0..40 {
            let half = (slices as f64 - 1.0) / 2.0 * spacing;
            let w: Vec<f64> = heads.iter().map(|h| dot(sub(*h, center), normal)).collect();
            let (lo, hi) = (w[0].min(w[1]), w[0].max(w[1]));
            if lo > -half + 3.0 && hi < half - 3.0 {
                break;
            }
            if slices < 36 {
                slices += 1;
            } else {
                center = add(center, mul(normal, 0.5 * (lo + hi)));
            }
        }
        let (fw, fh) = (cols as f64 * pixel, rows as f64 * pixel);
        for (axis, extent) in [(row, fw), (col, fh)] {
            let s: Vec<f64> = heads.iter().map(|h| dot(sub(*h, center), axis)).collect();
            let limit = extent / 2.0 - radius - 4.0;
            let over = s.iter().map(|v| v.abs() - limit).fold(f64::MIN, f64::max);
            if over > 0.0 {
                let mid = 0.5 * (s[0] + s[1]);
                center = add(center, mul(axis, mid.signum() * over.min(mid.abs())));
            }
        }
        stack.center = center;
        stack.slices = slices;
    }
    stack
}

fn localizer_stacks(anat: &Anatomy, fov: f64, thickness: f64) -> Vec<Stack> {
    let mid = super::geom::lerp3(anat.head_center_lps(0), anat.head_center_lps(1), 0.5);
    let mk = |o: Orientation, center: V3| {
        let (row, col) = axes(o);
        Stack {
            row,
            col,
            center,
            cols: 256,
            rows: 256,
            pixel: fov / 256.0,
            acq: [192, 160],
            slices: 1,
            thickness,
            spacing: thickness,
            phase_along_col: false,
        }
    };
    vec![
        mk(Orientation::Coronal, mid),
        mk(Orientation::Sagittal, anat.head_center_lps(0)),
        mk(Orientation::Axial, mid),
    ]
}

fn ghost(rng: &mut ChaCha8Rng) -> Ghost {
    Ghost {
        shift: u(rng, 0.15, 0.35),
        pulse: u(rng, 0.1, 0.35) as f32,
        resp: u(rng, 0.002, 0.012) as f32,
    }
}

/// Coils placed on the body (anterior) and in the table (posterior), in the pelvis frame,
/// then posed.
fn coils(anat: &Anatomy, xs: &[f64], zs: &[f64], falloff: f64, anterior: bool) -> Coils {
    let (front, back, half) = anat.body_extent();
    let mut pos = Vec::new();
    let ys: Vec<f64> = if anterior {
        vec![front - 15.0, back + 15.0]
    } else {
        vec![back + 15.0]
    };
    for y in ys {
        for x in xs {
            for z in zs {
                pos.push(anat.pose.to_lps([x * half, y, *z]));
            }
        }
    }
    Coils {
        pos,
        inv_l2: 1.0 / (falloff * falloff),
    }
}

/// A series with defaults filled from the vendor; fields set by the caller after.
#[allow(clippy::too_many_arguments)]
fn series(
    rng: &mut ChaCha8Rng,
    kind: &'static str,
    description: &str,
    protocol: &str,
    orientation: Orientation,
    image_type: &str,
    weighting: Weighting,
    fatsup: FatSup,
    stacks: Vec<Stack>,
    snr: (f64, f64),
) -> SeriesPlan {
    SeriesPlan {
        kind,
        number: 0,
        description: description.into(),
        protocol: protocol.into(),
        orientation,
        image_type: image_type.into(),
        weighting,
        fatsup,
        scanning_sequence: "SE",
        sequence_variant: "SK",
        scan_options: "",
        sequence_name: String::new(),
        etl: 1,
        flip: 90.0,
        averages: 1.0,
        bandwidth: 200.0,
        stacks,
        snr: u(rng, snr.0, snr.1),
        ghost: ghost(rng),
        texture: u(rng, 0.025, 0.055),
        rescale: None,
        target: 0.0,
        minute: 0,
    }
}

/// The plan of study `seed` in `style` for this anatomy, or None for an unknown style.
pub(crate) fn plan(style: &str, seed: u64, anat: &Anatomy) -> Option<Plan> {
    let mut rng = ChaCha8Rng::seed_from_u64(mix64(seed ^ 0x5717_1e00));
    let mid = super::geom::lerp3(anat.head_center_lps(0), anat.head_center_lps(1), 0.5);
    let plan = match style {
        "vantage3t" => vantage(&mut rng, anat, mid),
        "oasis12t" => oasis(&mut rng, anat, mid),
        "umr3t" => umr(&mut rng, anat, mid),
        _ => return None,
    };
    Some(plan)
}

fn finish(
    rng: &mut ChaCha8Rng,
    mut series: Vec<SeriesPlan>,
    target: (f64, f64),
) -> Vec<SeriesPlan> {
    let mut minute = 0;
    for (i, s) in series.iter_mut().enumerate() {
        s.number = i as i64 + 1;
        s.minute = minute;
        minute += rng.random_range(2..6);
        if s.target == 0.0 {
            s.target = u(rng, target.0, target.1);
        }
    }
    series
}

/// An extra fat-suppressed fast spin echo series; [`FatSatFse::draw`] draws, in this
/// order, TR, TE, the fat suppression, the series' common draws and the echo train.
struct FatSatFse {
    kind: &'static str,
    /// Series description and protocol name.
    name: &'static str,
    orientation: Orientation,
    image_type: &'static str,
    tr: (f64, f64),
    te: (f64, f64),
    snr: (f64, f64),
    etl: std::ops::Range<u32>,
    sequence_name: &'static str,
}

impl FatSatFse {
    fn draw(
        self,
        rng: &mut ChaCha8Rng,
        stack: Stack,
        fat_sat: impl FnOnce(&mut ChaCha8Rng) -> FatSup,
    ) -> SeriesPlan {
        let (tr, te) = (
            u(rng, self.tr.0, self.tr.1).round(),
            u(rng, self.te.0, self.te.1).round(),
        );
        let f = fat_sat(rng);
        let mut s = series(
            rng,
            self.kind,
            self.name,
            self.name,
            self.orientation,
            self.image_type,
            Weighting::SpinEcho { tr, te },
            f,
            vec![stack],
            self.snr,
        );
        s.etl = rng.random_range(self.etl);
        s.scan_options = "FS";
        s.sequence_name = self.sequence_name.into();
        s
    }
}

fn vantage(rng: &mut ChaCha8Rng, anat: &Anatomy, mid: V3) -> Plan {
    let b0 = 3.0;
    let cor = Geo {
        fov: (310.0, 380.0),
        cols: &[448, 512],
        ratio: &[1.0, 0.875],
        acq: (0.55, 0.68),
        thick: (3.0, 4.5),
        gap: (0.3, 1.0),
        slices: (20, 30),
        raise: (0.0, 0.0),
        oblique: 5.0,
        phase_along_col: true,
    };
    let ax = Geo {
        slices: (22, 32),
        thick: (3.5, 5.0),
        ..cor
    };
    let it = "ORIGINAL\\PRIMARY";
    let t2_axial = rng.random_bool(0.2);
    let t2_stack = if t2_axial {
        draw_stack(rng, anat, Orientation::Axial, ax, mid, true)
    } else {
        draw_stack(rng, anat, Orientation::Coronal, cor, mid, true)
    };
    let t1_stack = if t2_axial {
        draw_stack(rng, anat, Orientation::Coronal, cor, mid, true)
    } else {
        t2_stack.clone()
    };
    let mut loc = series(
        rng,
        "localizer",
        "Locator",
        "Hip_Locator",
        Orientation::Coronal,
        it,
        Weighting::Gre {
            tr: 5.6,
            te: 2.4,
            flip_deg: 20.0,
        },
        FatSup::None,
        localizer_stacks(anat, 440.0, 8.0),
        (12.0, 18.0),
    );
    loc.scanning_sequence = "GR";
    loc.sequence_variant = "SP";
    loc.sequence_name = "FE2D".into();
    loc.flip = 20.0;
    let (tr1, te1) = (u(rng, 450.0, 650.0).round(), u(rng, 10.0, 14.0).round());
    let mut t1 = series(
        rng,
        "t1",
        "T1 SE COR",
        "HIP T1 COR",
        Orientation::Coronal,
        it,
        Weighting::SpinEcho { tr: tr1, te: te1 },
        FatSup::None,
        vec![t1_stack],
        (25.0, 35.0),
    );
    t1.sequence_variant = "NONE";
    t1.sequence_name = "SE2D".into();
    let (tr2, te2) = (u(rng, 3800.0, 5200.0).round(), u(rng, 85.0, 105.0).round());
    let (o2, d2) = if t2_axial {
        (Orientation::Axial, "T2W FSE AX")
    } else {
        (Orientation::Coronal, "T2W FSE COR")
    };
    let mut t2 = series(
        rng,
        "t2",
        d2,
        if t2_axial { "HIP T2 AX" } else { "HIP T2 COR" },
        o2,
        it,
        Weighting::SpinEcho { tr: tr2, te: te2 },
        FatSup::None,
        vec![t2_stack],
        (20.0, 32.0),
    );
    t2.etl = rng.random_range(13..20);
    t2.sequence_name = "FSE2D".into();
    let mut list = vec![loc];
    if rng.random_bool(0.5) {
        list.push(t1);
        list.push(t2);
    } else {
        list.push(t2);
        list.push(t1);
    }
    if rng.random_bool(0.45) {
        list.push(vantage_fat_sat(rng, anat, t2_axial, (cor, ax), mid, it));
    }
    let series = finish(rng, list, (1800.0, 3500.0));
    Plan {
        style: "vantage3t",
        vendor: Vendor {
            manufacturer: "CANON_MEC",
            model: "Vantage Galan 3T",
            software: "V7.0SP0003",
            station: "EXTMR-A",
            institution: "EXTERNAL SITE A (SYNTHETIC)",
            b0,
            coil: "Body/Spine",
            bits_stored: 16,
            kappa: 0.5,
            patient_position: "FFS",
            naming: Naming::SeriesAndHexIm,
        },
        encoding: weighted(
            rng,
            &[
                (Encoding::Explicit, 0.5),
                (Encoding::Rle, 0.35),
                (Encoding::Implicit, 0.15),
            ],
        ),
        reverse: rng.random_bool(0.3),
        series,
        coils: coils(anat, &[-1.2, -0.4, 0.4, 1.2], &[0.0], 130.0, true),
    }
}

/// Vantage's optional fat-saturated T2: sagittal over one hip when the T2 is axial, else
/// axial.
fn vantage_fat_sat(
    rng: &mut ChaCha8Rng,
    anat: &Anatomy,
    t2_axial: bool,
    (cor, ax): (Geo, Geo),
    mid: V3,
    it: &'static str,
) -> SeriesPlan {
    let (tr, te) = (u(rng, 3500.0, 5000.0).round(), u(rng, 75.0, 95.0).round());
    let fs = FatSup::Chemical {
        base: u(rng, 0.03, 0.07),
        drift: u(rng, 0.01, 0.035),
        patch: u(rng, 0.005, 0.02),
    };
    let extra = if t2_axial {
        let side = rng.random_range(0..2);
        let sag = Geo {
            slices: (18, 24),
            thick: (3.0, 4.0),
            fov: (270.0, 300.0),
            cols: &[448],
            ..cor
        };
        let st = draw_stack(
            rng,
            anat,
            Orientation::Sagittal,
            sag,
            anat.head_center_lps(side),
            false,
        );
        series(
            rng,
            "t2_alt",
            "T2W FatSat SAG",
            "HIP T2FS SAG",
            Orientation::Sagittal,
            it,
            Weighting::SpinEcho { tr, te },
            fs,
            vec![st],
            (15.0, 25.0),
        )
    } else {
        let st = draw_stack(rng, anat, Orientation::Axial, ax, mid, true);
        series(
            rng,
            "t2_alt",
            "T2W FatSat AX",
            "HIP T2FS AX",
            Orientation::Axial,
            it,
            Weighting::SpinEcho { tr, te },
            fs,
            vec![st],
            (15.0, 25.0),
        )
    };
    let mut extra = extra;
    extra.etl = rng.random_range(11..18);
    extra.scan_options = "FS";
    extra.sequence_name = "FSE2D".into();
    extra
}

fn oasis(rng: &mut ChaCha8Rng, anat: &Anatomy, mid: V3) -> Plan {
    let b0 = 1.2;
    let cor = Geo {
        fov: (340.0, 440.0),
        cols: &[448, 512],
        ratio: &[1.0, 0.875],
        acq: (0.5, 0.62),
        thick: (5.0, 6.0),
        gap: (1.0, 1.5),
        slices: (18, 24),
        raise: (-5.0, 10.0),
        oblique: 0.0,
        phase_along_col: false,
    };
    let it = "ORIGINAL\\PRIMARY\\OTHER";
    let stack = draw_stack(rng, anat, Orientation::Coronal, cor, mid, true);
    let mut loc = series(
        rng,
        "localizer",
        "Scanogram",
        "SCANO 3P",
        Orientation::Coronal,
        it,
        Weighting::Gre {
            tr: 20.0,
            te: 6.0,
            flip_deg: 30.0,
        },
        FatSup::None,
        localizer_stacks(anat, 460.0, 10.0),
        (8.0, 12.0),
    );
    loc.scanning_sequence = "GR";
    loc.sequence_variant = "SP";
    loc.sequence_name = "GE_SCANO".into();
    loc.flip = 30.0;
    let tr = u(rng, 4200.0, 6000.0).round();
    let te = u(rng, 55.0, 75.0).round();
    let ti = (fat_null_ti(b0, tr) * u(rng, 0.96, 1.04)).round();
    let inversion = FatSup::Inversion {
        eta0: u(rng, 0.95, 1.0),
        drop: u(rng, 0.01, 0.04),
    };
    let mut stir = series(
        rng,
        "t2",
        "STIR COR",
        "HIP STIR COR",
        Orientation::Coronal,
        it,
        Weighting::Stir { tr, te, ti },
        inversion,
        vec![stack.clone()],
        (9.0, 15.0),
    );
    stir.scanning_sequence = "IR";
    stir.etl = rng.random_range(8..13);
    stir.sequence_name = "FSE_IR".into();
    stir.averages = 2.0;
    stir.bandwidth = 120.0;
    let (tr1, te1) = (u(rng, 450.0, 600.0).round(), u(rng, 12.0, 18.0).round());
    let mut t1 = series(
        rng,
        "t1",
        "T1 SE COR",
        "HIP T1 COR",
        Orientation::Coronal,
        it,
        Weighting::SpinEcho { tr: tr1, te: te1 },
        FatSup::None,
        vec![stack],
        (14.0, 20.0),
    );
    t1.sequence_variant = "NONE";
    t1.sequence_name = "SE".into();
    t1.bandwidth = 120.0;
    let mut list = vec![loc, t1, stir];
    if rng.random_bool(0.5) {
        let ax = Geo {
            thick: (5.0, 6.0),
            slices: (18, 24),
            ..cor
        };
        let st = draw_stack(rng, anat, Orientation::Axial, ax, mid, true);
        let (tr, te) = (u(rng, 4000.0, 5000.0).round(), u(rng, 95.0, 110.0).round());
        let mut t2 = series(
            rng,
            "t2_alt",
            "T2 FSE AX",
            "HIP T2 AX",
            Orientation::Axial,
            it,
            Weighting::SpinEcho { tr, te },
            FatSup::None,
            vec![st],
            (10.0, 16.0),
        );
        t2.etl = rng.random_range(10..16);
        t2.sequence_name = "FSE".into();
        list.push(t2);
    }
    let series = finish(rng, list, (1500.0, 3800.0));
    Plan {
        style: "oasis12t",
        vendor: Vendor {
            manufacturer: "FUJIFILM Healthcare",
            model: "OASIS",
            software: "V6.0A",
            station: "OPENMR-B",
            institution: "EXTERNAL SITE B (SYNTHETIC)",
            b0,
            coil: "QD_PELVIS",
            bits_stored: 12,
            kappa: 0.0,
            patient_position: "HFS",
            naming: Naming::ShortAndBareHex,
        },
        encoding: weighted(
            rng,
            &[
                (Encoding::Implicit, 0.55),
                (Encoding::Rle, 0.25),
                (Encoding::Explicit, 0.2),
            ],
        ),
        reverse: rng.random_bool(0.5),
        series,
        coils: coils(anat, &[0.0], &[-60.0, 60.0], 260.0, true),
    }
}

/// The uMR site's scanner.
const UMR_VENDOR: Vendor = Vendor {
    manufacturer: "UIH",
    model: "uMR 780",
    software: "R004",
    station: "UMR780-C",
    institution: "EXTERNAL SITE C (SYNTHETIC)",
    b0: 3.0,
    coil: "Body_Array_12",
    bits_stored: 16,
    kappa: 0.8,
    patient_position: "FFS",
    naming: Naming::ProtocolAndUid,
};

fn umr(rng: &mut ChaCha8Rng, anat: &Anatomy, mid: V3) -> Plan {
    let cor = Geo {
        fov: (400.0, 440.0),
        cols: &[512],
        ratio: &[1.0, 0.875],
        acq: (0.55, 0.68),
        thick: (3.5, 5.0),
        gap: (0.5, 1.0),
        slices: (24, 36),
        raise: (40.0, 70.0),
        oblique: 3.0,
        phase_along_col: false,
    };
    let ax = Geo {
        fov: (360.0, 420.0),
        raise: (0.0, 0.0),
        slices: (24, 36),
        thick: (4.0, 5.0),
        ..cor
    };
    let it = "ORIGINAL\\PRIMARY\\M\\NORM";
    let t2_axial = rng.random_bool(0.15);
    let t2_stack = if t2_axial {
        draw_stack(rng, anat, Orientation::Axial, ax, mid, true)
    } else {
        draw_stack(rng, anat, Orientation::Coronal, cor, mid, true)
    };
    let t1_stack = if t2_axial {
        draw_stack(rng, anat, Orientation::Coronal, cor, mid, true)
    } else {
        t2_stack.clone()
    };
    let mut loc = series(
        rng,
        "localizer",
        "localizer",
        "localizer",
        Orientation::Coronal,
        "ORIGINAL\\PRIMARY\\LOCALIZER",
        Weighting::Gre {
            tr: 7.0,
            te: 3.0,
            flip_deg: 25.0,
        },
        FatSup::None,
        localizer_stacks(anat, 480.0, 8.0),
        (12.0, 18.0),
    );
    loc.scanning_sequence = "GR";
    loc.sequence_variant = "SP";
    loc.sequence_name = "gre".into();
    loc.flip = 25.0;
    let fs = |rng: &mut ChaCha8Rng| FatSup::Chemical {
        base: u(rng, 0.02, 0.06),
        drift: u(rng, 0.01, 0.03),
        patch: u(rng, 0.005, 0.02),
    };
    let (d2, o2) = if t2_axial {
        ("t2_fse_fs_tra", Orientation::Axial)
    } else {
        ("t2_fse_fs_cor", Orientation::Coronal)
    };
    let t2 = FatSatFse {
        kind: "t2",
        name: d2,
        orientation: o2,
        image_type: it,
        tr: (3000.0, 4500.0),
        te: (70.0, 95.0),
        snr: (15.0, 26.0),
        etl: 12..20,
        sequence_name: "fse_fs",
    }
    .draw(rng, t2_stack, fs);
    let (tr1, te1) = (u(rng, 500.0, 700.0).round(), u(rng, 8.0, 12.0).round());
    let mut t1 = series(
        rng,
        "t1",
        "t1_fse_cor",
        "t1_fse_cor",
        Orientation::Coronal,
        it,
        Weighting::SpinEcho { tr: tr1, te: te1 },
        FatSup::None,
        vec![t1_stack],
        (25.0, 35.0),
    );
    t1.etl = 3;
    t1.sequence_name = "fse".into();
    let mut list = vec![loc, t1, t2];
    // Sometimes an axial fat-saturated PD, or (beside a coronal T2) an axial one.
    let extra = rng.random::<f64>();
    let fse = |kind, name, tr, te, snr, etl| FatSatFse {
        kind,
        name,
        orientation: Orientation::Axial,
        image_type: it,
        tr,
        te,
        snr,
        etl,
        sequence_name: "fse_fs",
    };
    let spec = if extra < 0.5 {
        Some(fse(
            "pd",
            "pd_fse_fs_tra",
            (2500.0, 3200.0),
            (28.0, 38.0),
            (20.0, 30.0),
            8..14,
        ))
    } else if extra < 0.75 && !t2_axial {
        Some(fse(
            "t2_alt",
            "t2_fse_fs_tra",
            (3000.0, 4500.0),
            (70.0, 95.0),
            (15.0, 26.0),
            12..20,
        ))
    } else {
        None
    };
    if let Some(spec) = spec {
        let st = draw_stack(rng, anat, Orientation::Axial, ax, mid, true);
        list.push(spec.draw(rng, st, fs));
    }
    let mut series = finish(rng, list, (800.0, 2500.0));
    let slope = (u(rng, 0.08, 0.3) * 1000.0).round() / 1000.0;
    for s in &mut series {
        s.rescale = Some((slope, 0.0));
    }
    Plan {
        style: "umr3t",
        vendor: UMR_VENDOR,
        encoding: weighted(
            rng,
            &[
                (Encoding::Explicit, 0.45),
                (Encoding::Rle, 0.4),
                (Encoding::Implicit, 0.15),
            ],
        ),
        reverse: rng.random_bool(0.35),
        series,
        coils: coils(anat, &[-1.0, 0.0, 1.0], &[-40.0, 80.0], 110.0, true),
    }
}
