//! A two-compartment MR signal model for the randomiser: per study, each label gets tissue
//! properties (proton density, fat fraction, T1 and T2 of its water), and an image's mean
//! signal per label comes from the sequence equation of a drawn acquisition (spin echo with
//! or without fat saturation, STIR, T1-weighted spin echo). Two images of one study drawn
//! from the same tissues are coherent: marrow oedema that a plain T2 hides (its extra water
//! as bright as the fat it displaced) is dark inside the marrow on the T1 of the same study.
//!
//! The values are broad ranges around textbook relaxation times of the pelvis at 1.5-3 T
//! (fat T1 250-400 ms; muscle T1 800-1450 ms, T2 28-50 ms; fluid T1 2-4 s, T2 0.3-1.5 s),
//! drawn anew per study; oedema is marrow with part of its fat replaced by water of longer
//! relaxation times, from faint to marked (log-uniform); the necrotic segment of stage II takes one of
//! Mitchell's four signal classes (fat-, blood-, fluid- or fibrous-like). Used only for the T1
//! companion pairs.
//!
//! Not here: textures, geometry, artefacts (`randomised`), or anything read at inference.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::anatomy::{LABELS, Label};

/// Properties of one label's tissue.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tissue {
    /// Proton density relative to water.
    pub pd: f64,
    /// Share of the signal-bearing protons that are fat.
    pub fat_fraction: f64,
    /// T1 of the water compartment, ms.
    pub t1_ms: f64,
    /// T2 of the water compartment, ms.
    pub t2_ms: f64,
}

/// One study's tissues: every label's, and fat's own relaxation (shared by every label).
#[derive(Debug, Clone)]
pub struct Tissues {
    /// Per label (index = `Label as usize`).
    pub labels: [Tissue; LABELS],
    /// T1 of fat, ms.
    pub fat_t1_ms: f64,
    /// Apparent T2 of fat on a fast spin echo, ms (J-coupling keeps fat bright there).
    pub fat_t2_ms: f64,
}

/// A pulse sequence and its timing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sequence {
    /// Spin echo (fast spin echo): T2-, PD- or T1-weighted by TR and TE; `fat_left` is the
    /// share of fat signal a fat saturation pulse leaves (1 = none).
    SpinEcho {
        tr_ms: f64,
        te_ms: f64,
        fat_left: f64,
    },
    /// Short-tau inversion recovery, magnitude image.
    Stir { tr_ms: f64, ti_ms: f64, te_ms: f64 },
}

/// Draw one study's tissues.
pub fn draw_tissues(rng: &mut ChaCha8Rng) -> Tissues {
    let mut u = |lo: f64, hi: f64| rng.random_range(lo..hi);
    let water = |pd: f64, ff: f64, t1: f64, t2: f64| Tissue {
        pd,
        fat_fraction: ff,
        t1_ms: t1,
        t2_ms: t2,
    };
    let mut t = [water(0.0, 0.0, 1000.0, 1.0); LABELS];
    t[Label::Air as usize] = water(u(0.0, 0.02), 0.0, 1000.0, 50.0);
    t[Label::Fat as usize] = water(u(0.85, 1.0), u(0.88, 1.0), u(800.0, 1200.0), u(30.0, 50.0));
    t[Label::Muscle as usize] = water(u(0.65, 0.85), u(0.0, 0.08), u(800.0, 1450.0), u(28.0, 50.0));
    let fluid_t1 = u(2000.0, 4000.0);
    t[Label::Joint as usize] = water(u(0.85, 1.0), 0.0, fluid_t1, u(300.0, 1500.0));
    t[Label::Urine as usize] = water(u(0.9, 1.0), 0.0, fluid_t1 * u(0.8, 1.2), u(500.0, 2000.0));
    t[Label::Cortex as usize] = water(u(0.02, 0.12), u(0.0, 0.2), u(300.0, 1000.0), u(1.0, 10.0));
    let marrow = water(u(0.8, 1.0), u(0.6, 0.95), u(600.0, 1200.0), u(30.0, 60.0));
    t[Label::Marrow as usize] = marrow;
    // Oedema: part of the marrow's fat replaced by water of longer T1 and T2, from faint
    // (8 % of the fat gone) to marked (85 %), log-uniform: faint oedema, a few per cent
    // darker than marrow on a T1 and hidden on a plain T2, is as common as marked.
    let replaced = u(0.08_f64.ln(), 0.85_f64.ln()).exp();
    t[Label::Oedema as usize] = water(
        marrow.pd,
        marrow.fat_fraction * (1.0 - replaced),
        marrow.t1_ms + u(400.0, 1000.0),
        u(60.0, 150.0),
    );
    // The necrotic segment, by Mitchell's classes: A fat-like (the commonest early), B like
    // subacute blood (bright on T1 and T2), C fluid-like (dark on T1, bright on T2), D
    // fibrous (dark on both).
    t[Label::Necrotic as usize] = match u(0.0, 1.0) {
        x if x < 0.5 => water(
            marrow.pd * u(0.9, 1.05),
            (marrow.fat_fraction * u(0.8, 1.05)).min(1.0),
            marrow.t1_ms * u(0.9, 1.2),
            marrow.t2_ms * u(0.9, 1.3),
        ),
        x if x < 0.6 => water(
            u(0.8, 1.0),
            marrow.fat_fraction * u(0.3, 0.8),
            u(300.0, 600.0),
            u(80.0, 200.0),
        ),
        x if x < 0.8 => water(u(0.8, 1.0), u(0.0, 0.3), u(1500.0, 3000.0), u(150.0, 600.0)),
        _ => water(u(0.5, 0.8), u(0.0, 0.2), u(800.0, 1500.0), u(20.0, 45.0)),
    };
    // The double line: granulation (watery, bright on T2, dark on T1) inside sclerosis
    // (little signal on any sequence).
    t[Label::Granulation as usize] =
        water(u(0.8, 1.0), u(0.0, 0.2), u(1200.0, 2500.0), u(80.0, 250.0));
    t[Label::Sclerosis as usize] = water(u(0.05, 0.3), u(0.0, 0.2), u(400.0, 1000.0), u(5.0, 20.0));
    Tissues {
        labels: t,
        fat_t1_ms: u(250.0, 400.0),
        fat_t2_ms: u(80.0, 180.0),
    }
}

/// Draw a T2-type sequence: fat-saturated T2 or PD, STIR, or plain T2 or PD.
pub fn draw_t2_sequence(rng: &mut ChaCha8Rng, tissues: &Tissues) -> Sequence {
    let tr_ms = rng.random_range(2500.0..6000.0);
    let te_ms = if rng.random_bool(0.8) {
        rng.random_range(60.0..110.0)
    } else {
        rng.random_range(20.0..45.0)
    };
    // A quarter fat-saturated, a quarter STIR, half plain: the plain T2 is where the T1
    // carries the diagnosis.
    match rng.random_range(0..4) {
        0 => Sequence::SpinEcho {
            tr_ms,
            te_ms,
            fat_left: rng.random_range(0.02..0.25),
        },
        1 => Sequence::Stir {
            tr_ms,
            // Near fat's null point (TI = T1 ln 2 for a long TR), not exactly on it.
            ti_ms: tissues.fat_t1_ms * std::f64::consts::LN_2 * rng.random_range(0.85..1.15),
            te_ms: rng.random_range(30.0..70.0),
        },
        _ => Sequence::SpinEcho {
            tr_ms,
            te_ms,
            fat_left: 1.0,
        },
    }
}

/// Draw a T1-weighted spin echo (no fat saturation).
pub fn draw_t1_sequence(rng: &mut ChaCha8Rng) -> Sequence {
    Sequence::SpinEcho {
        tr_ms: rng.random_range(400.0..750.0),
        te_ms: rng.random_range(8.0..20.0),
        fat_left: 1.0,
    }
}

/// Signal of one compartment (relative, before its proton density).
fn compartment(seq: Sequence, t1: f64, t2: f64) -> f64 {
    match seq {
        Sequence::SpinEcho { tr_ms, te_ms, .. } => {
            (1.0 - (-tr_ms / t1).exp()) * (-te_ms / t2).exp()
        }
        Sequence::Stir {
            tr_ms,
            ti_ms,
            te_ms,
        } => (1.0 - 2.0 * (-ti_ms / t1).exp() + (-tr_ms / t1).exp()).abs() * (-te_ms / t2).exp(),
    }
}

/// Mean signal per label under `seq`, scaled so the brightest label is 1.
pub fn means(tissues: &Tissues, seq: Sequence) -> [f64; LABELS] {
    let fat_left = match seq {
        Sequence::SpinEcho { fat_left, .. } => fat_left,
        Sequence::Stir { .. } => 1.0,
    };
    let fat = compartment(seq, tissues.fat_t1_ms, tissues.fat_t2_ms) * fat_left;
    let mut m = [0.0; LABELS];
    for (v, t) in m.iter_mut().zip(&tissues.labels) {
        let water = compartment(seq, t.t1_ms, t.t2_ms);
        *v = t.pd * (t.fat_fraction * fat + (1.0 - t.fat_fraction) * water);
    }
    let top = m.iter().cloned().fold(0.0, f64::max).max(1e-9);
    m.map(|v| v / top)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn at(m: &[f64; LABELS], l: Label) -> f64 {
        m[l as usize]
    }

    #[test]
    fn t1_shows_oedema_and_the_granulation_line_dark_in_bright_marrow() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for _ in 0..300 {
            let tissues = draw_tissues(&mut rng);
            let m = means(&tissues, draw_t1_sequence(&mut rng));
            assert!(at(&m, Label::Marrow) > at(&m, Label::Oedema), "{m:?}");
            assert!(at(&m, Label::Marrow) > at(&m, Label::Muscle), "{m:?}");
            assert!(at(&m, Label::Marrow) > at(&m, Label::Granulation), "{m:?}");
            assert!(at(&m, Label::Cortex) < 0.1, "{m:?}");
        }
    }

    #[test]
    fn fat_suppressed_t2_and_stir_show_oedema_bright_and_a_plain_t2_may_hide_it() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let (mut suppressed, mut plain_faint) = (0, 0);
        for _ in 0..600 {
            let tissues = draw_tissues(&mut rng);
            let seq = draw_t2_sequence(&mut rng, &tissues);
            let m = means(&tissues, seq);
            // Fluid above muscle on a T2 (long TE) and on STIR; a short-TR PD may invert it.
            let t2_weighted = match seq {
                Sequence::SpinEcho { te_ms, .. } => te_ms >= 60.0,
                Sequence::Stir { .. } => true,
            };
            if t2_weighted {
                assert!(
                    at(&m, Label::Joint) > at(&m, Label::Muscle),
                    "{seq:?} {m:?}"
                );
            }
            assert!(
                at(&m, Label::Granulation) > at(&m, Label::Sclerosis),
                "{seq:?} {m:?}"
            );
            let plain = matches!(seq, Sequence::SpinEcho { fat_left, .. } if fat_left == 1.0);
            if plain {
                // Fatty marrow is bright on a plain T2; oedema close to it in many studies.
                assert!(at(&m, Label::Marrow) > at(&m, Label::Muscle), "{m:?}");
                if (at(&m, Label::Oedema) - at(&m, Label::Marrow)).abs() < 0.05 {
                    plain_faint += 1;
                }
            } else {
                suppressed += 1;
                assert!(
                    at(&m, Label::Oedema) > at(&m, Label::Marrow),
                    "{seq:?} {m:?}"
                );
                assert!(
                    at(&m, Label::Joint) > at(&m, Label::Marrow),
                    "{seq:?} {m:?}"
                );
            }
        }
        assert!(suppressed > 300, "{suppressed}");
        assert!(plain_faint > 20, "{plain_faint}");
    }
}
