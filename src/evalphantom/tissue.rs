//! Tissues as two compartments (water and fat), and the sequence equations that turn them
//! into signal.
//!
//! Every tissue has a water proton density with its own T1 and T2, and a fat proton density
//! that shares one fat T1/T2 (field dependent). Keeping the compartments apart is what lets
//! fat suppression be imperfect and vary across the field of view (a per-pixel factor on
//! the fat channel), and lets STIR null fat by inversion rather than by a fixed gain.

/// Every tissue the anatomy can return. The order is the index into signal tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Tissue {
    Air,
    Skin,
    SubcutFat,
    PelvicFat,
    MuscleA,
    MuscleB,
    MuscleC,
    MuscleD,
    Cortex,
    YellowMarrow,
    PelvicMarrow,
    RedMarrow,
    Oedema,
    Cartilage,
    Fluid,
    Labrum,
    Ligament,
    Disc,
    Urine,
    BladderWall,
    GutWall,
    Gas,
    Stool,
    BowelFluid,
    Artery,
    Vein,
    Nerve,
    Csf,
    Granulation,
    Sclerosis,
    NecroticFat,
    Fibrous,
}

/// Number of tissues (length of every signal table).
pub(crate) const N_TISSUE: usize = Tissue::Fibrous as usize + 1;

/// Water PD, water T1 at 1.5 T (ms), water T2 at 1.5 T (ms), fat PD.
fn props(t: Tissue) -> (f64, f64, f64, f64) {
    use Tissue::*;
    match t {
        Air | Gas => (0.0, 1000.0, 10.0, 0.0),
        Skin => (0.65, 750.0, 35.0, 0.10),
        SubcutFat => (0.04, 800.0, 40.0, 0.95),
        PelvicFat => (0.06, 800.0, 45.0, 0.90),
        MuscleA => (0.78, 1000.0, 39.0, 0.03),
        MuscleB => (0.76, 1020.0, 36.0, 0.04),
        MuscleC => (0.80, 980.0, 41.0, 0.02),
        MuscleD => (0.77, 1050.0, 38.0, 0.05),
        Cortex => (0.04, 1000.0, 2.0, 0.01),
        YellowMarrow => (0.09, 800.0, 32.0, 0.88),
        PelvicMarrow => (0.35, 900.0, 40.0, 0.60),
        RedMarrow => (0.55, 950.0, 48.0, 0.42),
        Oedema => (0.78, 1250.0, 85.0, 0.28),
        Cartilage => (0.72, 1050.0, 42.0, 0.0),
        Fluid => (0.97, 3000.0, 1100.0, 0.0),
        Labrum => (0.30, 900.0, 7.0, 0.0),
        Ligament => (0.28, 900.0, 9.0, 0.0),
        Disc => (0.70, 1100.0, 60.0, 0.0),
        Urine => (1.0, 3200.0, 1400.0, 0.0),
        BladderWall => (0.72, 1000.0, 45.0, 0.0),
        GutWall => (0.74, 950.0, 55.0, 0.0),
        Stool => (0.50, 700.0, 55.0, 0.12),
        BowelFluid => (0.92, 2600.0, 600.0, 0.0),
        Artery => (0.14, 1200.0, 60.0, 0.0),
        Vein => (0.40, 1300.0, 110.0, 0.0),
        Nerve => (0.68, 1000.0, 62.0, 0.10),
        Csf => (1.0, 3600.0, 1500.0, 0.0),
        Granulation => (0.95, 1500.0, 190.0, 0.02),
        Sclerosis => (0.10, 900.0, 12.0, 0.02),
        NecroticFat => (0.12, 820.0, 40.0, 0.80),
        Fibrous => (0.35, 900.0, 18.0, 0.08),
    }
}

/// Whether flowing blood makes the tissue pulsate (source of phase-encode ghosts).
pub(crate) fn pulsatile(t: Tissue) -> bool {
    matches!(t, Tissue::Artery)
}

/// Water T1 at field `b0` (tesla): T1 lengthens with field, free water barely.
fn water_t1(t1_15: f64, b0: f64) -> f64 {
    let p = if t1_15 > 2500.0 { 0.08 } else { 0.33 };
    t1_15 * (b0 / 1.5).powf(p)
}

/// Water T2 at field `b0`: slightly shorter at high field.
fn water_t2(t2_15: f64, b0: f64) -> f64 {
    t2_15 * (1.0 - 0.055 * (b0 - 1.5))
}

/// Fat T1 at field `b0` (ms).
pub(crate) fn fat_t1(b0: f64) -> f64 {
    260.0 * (b0 / 1.5).sqrt()
}

/// Apparent fat T2 in fast spin echo (J-coupling keeps fat bright in long echo trains).
const FAT_T2: f64 = 125.0;

/// How the signal is formed.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Weighting {
    /// Spin echo or fast spin echo: S = PD (1 - e^(-TR/T1)) e^(-TE/T2).
    SpinEcho { tr: f64, te: f64 },
    /// Short-tau inversion recovery: S = PD |1 - 2 e^(-TI/T1) + e^(-TR/T1)| e^(-TE/T2).
    Stir { tr: f64, te: f64, ti: f64 },
    /// Spoiled gradient echo (the localizer).
    Gre { tr: f64, te: f64, flip_deg: f64 },
}

/// How fat is suppressed; the residual varies across the field of view.
#[derive(Debug, Clone, Copy)]
pub(crate) enum FatSup {
    /// No suppression.
    None,
    /// Spectral (chemical) saturation: `base` fat left at the isocentre, growing by `drift`
    /// per (100 mm)^2 off centre, with smooth patchiness of amplitude `patch`.
    Chemical { base: f64, drift: f64, patch: f64 },
    /// Inversion (STIR): inversion efficiency `eta0` at the isocentre, falling by `drop`
    /// per (100 mm)^2 (transmit field inhomogeneity).
    Inversion { eta0: f64, drop: f64 },
}

/// Per-tissue signal of one sequence, split into compartments. The water part is signed
/// (inversion recovery can leave it negative); the fat part is multiplied per pixel by the
/// fat factor, then the magnitude is taken.
#[derive(Debug, Clone)]
pub(crate) struct Tables {
    /// Water signal per tissue.
    pub water: [f32; N_TISSUE],
    /// Fat proton density times its echo decay (and recovery where that is not spatial).
    pub fat: [f32; N_TISSUE],
    /// Whether the tissue's signal pulsates with flow.
    pub pulse: [bool; N_TISSUE],
}

/// Every tissue in index order (the enum is dense from 0).
const TISSUES: [Tissue; N_TISSUE] = {
    use Tissue::*;
    [
        Air,
        Skin,
        SubcutFat,
        PelvicFat,
        MuscleA,
        MuscleB,
        MuscleC,
        MuscleD,
        Cortex,
        YellowMarrow,
        PelvicMarrow,
        RedMarrow,
        Oedema,
        Cartilage,
        Fluid,
        Labrum,
        Ligament,
        Disc,
        Urine,
        BladderWall,
        GutWall,
        Gas,
        Stool,
        BowelFluid,
        Artery,
        Vein,
        Nerve,
        Csf,
        Granulation,
        Sclerosis,
        NecroticFat,
        Fibrous,
    ]
};

impl Tables {
    /// Tables for weighting `w` at field `b0`, with the STIR inversion efficiency `eta0` for
    /// the water compartments (fat gets its spatial efficiency through the fat factor).
    pub(crate) fn new(w: Weighting, b0: f64, eta0: f64) -> Tables {
        let mut water = [0f32; N_TISSUE];
        let mut fat = [0f32; N_TISSUE];
        let mut pulse = [false; N_TISSUE];
        let t1f = fat_t1(b0);
        for t in TISSUES {
            let (pdw, t1, t2, pdf) = props(t);
            let (t1, t2) = (water_t1(t1, b0), water_t2(t2, b0));
            let i = t as usize;
            pulse[i] = pulsatile(t);
            match w {
                Weighting::SpinEcho { tr, te } => {
                    water[i] = (pdw * (1.0 - (-tr / t1).exp()) * (-te / t2).exp()) as f32;
                    fat[i] = (pdf * (1.0 - (-tr / t1f).exp()) * (-te / FAT_T2).exp()) as f32;
                }
                Weighting::Stir { tr, te, ti } => {
                    let mz = 1.0 - 2.0 * eta0 * (-ti / t1).exp() + (-tr / t1).exp();
                    water[i] = (pdw * mz * (-te / t2).exp()) as f32;
                    fat[i] = (pdf * (-te / FAT_T2).exp()) as f32;
                }
                Weighting::Gre { tr, te, flip_deg } => {
                    let a = flip_deg.to_radians();
                    let gre = |t1: f64, t2s: f64| {
                        let e1 = (-tr / t1).exp();
                        a.sin() * (1.0 - e1) / (1.0 - a.cos() * e1) * (-te / t2s).exp()
                    };
                    water[i] = (pdw * gre(t1, t2 * 0.6)) as f32;
                    fat[i] = (pdf * gre(t1f, 40.0)) as f32;
                }
            }
        }
        Tables { water, fat, pulse }
    }
}

/// The fat factor at a point `d2` = squared distance from the isocentre in (100 mm)^2,
/// `patch` = smooth noise in [-1, 1] there.
#[inline]
pub(crate) fn fat_factor(w: Weighting, fs: FatSup, b0: f64, d2: f64, patch: f64) -> f32 {
    match (w, fs) {
        (Weighting::Stir { tr, ti, .. }, FatSup::Inversion { eta0, drop }) => {
            let t1f = fat_t1(b0);
            let eta = (eta0 - drop * d2 + 0.01 * patch).clamp(0.6, 1.0);
            (1.0 - 2.0 * eta * (-ti / t1f).exp() + (-tr / t1f).exp()) as f32
        }
        (Weighting::Stir { tr, ti, .. }, _) => {
            let t1f = fat_t1(b0);
            (1.0 - 2.0 * (-ti / t1f).exp() + (-tr / t1f).exp()) as f32
        }
        (
            _,
            FatSup::Chemical {
                base,
                drift,
                patch: amp,
            },
        ) => (base + drift * d2 + amp * patch).clamp(0.01, 0.95) as f32,
        _ => 1.0,
    }
}

/// Inversion time that nulls fat at `b0` for repetition time `tr`.
pub(crate) fn fat_null_ti(b0: f64, tr: f64) -> f64 {
    let t1f = fat_t1(b0);
    t1f * (2.0 / (1.0 + (-tr / t1f).exp())).ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contrasts_follow_the_sequence() {
        let b0 = 3.0;
        let t2 = Tables::new(
            Weighting::SpinEcho {
                tr: 4000.0,
                te: 90.0,
            },
            b0,
            1.0,
        );
        let t1 = Tables::new(
            Weighting::SpinEcho {
                tr: 500.0,
                te: 12.0,
            },
            b0,
            1.0,
        );
        let s =
            |t: &Tables, x: Tissue, ff: f32| (t.water[x as usize] + ff * t.fat[x as usize]).abs();
        // T2: fluid brighter than muscle; T1: fat brighter than fluid.
        assert!(s(&t2, Tissue::Fluid, 1.0) > 3.0 * s(&t2, Tissue::MuscleA, 1.0));
        assert!(s(&t1, Tissue::SubcutFat, 1.0) > 2.0 * s(&t1, Tissue::Fluid, 1.0));
        // Fat-suppressed T2: oedema brighter than marrow; T1: oedema darker than marrow.
        assert!(s(&t2, Tissue::Oedema, 0.05) > 2.0 * s(&t2, Tissue::YellowMarrow, 0.05));
        assert!(s(&t1, Tissue::Oedema, 1.0) < 0.8 * s(&t1, Tissue::YellowMarrow, 1.0));
        // STIR at the fat null: fat dark, fluid bright.
        let b0 = 1.2;
        let ti = fat_null_ti(b0, 5000.0);
        let w = Weighting::Stir {
            tr: 5000.0,
            te: 60.0,
            ti,
        };
        let st = Tables::new(w, b0, 1.0);
        let ff = fat_factor(
            w,
            FatSup::Inversion {
                eta0: 1.0,
                drop: 0.0,
            },
            b0,
            0.0,
            0.0,
        );
        assert!(ff.abs() < 1e-3);
        assert!(s(&st, Tissue::Fluid, ff) > 5.0 * s(&st, Tissue::SubcutFat, ff));
        assert!(s(&st, Tissue::Oedema, ff) > 2.0 * s(&st, Tissue::YellowMarrow, ff));
        // Granulation (inner line) brighter than sclerosis (outer line) in every weighting
        // used for the T2-type series.
        for (tab, ffv) in [(&t2, 1.0), (&t2, 0.05), (&st, ff)] {
            assert!(s(tab, Tissue::Granulation, ffv) > 3.0 * s(tab, Tissue::Sclerosis, ffv));
        }
    }
}
