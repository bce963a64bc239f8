//! The hip phantom's anatomy: signed-distance shapes in patient space, the tissues they
//! are made of, and the Ficat-Arlet lesions of each femoral head.
//!
//! Everything is defined in a canonical pelvis frame (millimetres, LPS axes: +x patient
//! left, +y posterior, +z superior, origin between the femoral heads) and placed into the
//! patient frame by a per-study pose (rotation, scale, translation). A voxel's signal is
//! composed painter-style from the shapes, each weighted by its partial-volume coverage
//! (a linear ramp of the signed distance over the voxel size), so edges are anti-aliased
//! rather than stair-stepped. Signals are in arbitrary MR-like units for two contrasts:
//! T1-weighted and fat-suppressed T2-weighted.
//!
//! This module is pure computation: no randomness (the caller draws the parameters), no I/O.

/// A point or direction in millimetres.
pub type V3 = [f64; 3];

pub(crate) fn add(a: V3, b: V3) -> V3 {
    [a[0] + b[0], a[1] + b[1], a[2] + b[2]]
}
pub(crate) fn sub(a: V3, b: V3) -> V3 {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2]]
}
pub(crate) fn scale(a: V3, s: f64) -> V3 {
    [a[0] * s, a[1] * s, a[2] * s]
}
pub(crate) fn dot(a: V3, b: V3) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}
pub(crate) fn norm(a: V3) -> f64 {
    dot(a, a).sqrt()
}
pub(crate) fn unit(a: V3) -> V3 {
    scale(a, 1.0 / norm(a))
}
pub(crate) fn cross(a: V3, b: V3) -> V3 {
    [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}

/// A rotation matrix (rows).
pub type M3 = [[f64; 3]; 3];

/// Rotation by Euler angles (radians) about x, then y, then z.
pub fn rotation(ax: f64, ay: f64, az: f64) -> M3 {
    let (sx, cx) = ax.sin_cos();
    let (sy, cy) = ay.sin_cos();
    let (sz, cz) = az.sin_cos();
    let rx = [[1.0, 0.0, 0.0], [0.0, cx, -sx], [0.0, sx, cx]];
    let ry = [[cy, 0.0, sy], [0.0, 1.0, 0.0], [-sy, 0.0, cy]];
    let rz = [[cz, -sz, 0.0], [sz, cz, 0.0], [0.0, 0.0, 1.0]];
    mat_mul(rz, mat_mul(ry, rx))
}

fn mat_mul(a: M3, b: M3) -> M3 {
    let mut m = [[0.0; 3]; 3];
    for (i, row) in m.iter_mut().enumerate() {
        for (j, v) in row.iter_mut().enumerate() {
            *v = (0..3).map(|k| a[i][k] * b[k][j]).sum();
        }
    }
    m
}

/// `m * v`.
pub fn apply(m: &M3, v: V3) -> V3 {
    [dot(m[0], v), dot(m[1], v), dot(m[2], v)]
}

/// `m^T * v` (the inverse of a rotation).
pub fn apply_t(m: &M3, v: V3) -> V3 {
    [
        m[0][0] * v[0] + m[1][0] * v[1] + m[2][0] * v[2],
        m[0][1] * v[0] + m[1][1] * v[1] + m[2][1] * v[2],
        m[0][2] * v[0] + m[1][2] * v[1] + m[2][2] * v[2],
    ]
}

fn sphere(p: V3, c: V3, r: f64) -> f64 {
    norm(sub(p, c)) - r
}

/// Capsule: segment a-b inflated by r.
fn capsule(p: V3, a: V3, b: V3, r: f64) -> f64 {
    let pa = sub(p, a);
    let ba = sub(b, a);
    let h = (dot(pa, ba) / dot(ba, ba)).clamp(0.0, 1.0);
    norm(sub(pa, scale(ba, h))) - r
}

/// Ellipsoid (approximate signed distance, exact on the axes).
fn ellipsoid(p: V3, c: V3, r: V3) -> f64 {
    let q = sub(p, c);
    let k = (q[0] / r[0]).powi(2) + (q[1] / r[1]).powi(2) + (q[2] / r[2]).powi(2);
    (k.sqrt() - 1.0) * r[0].min(r[1]).min(r[2])
}

/// Elliptic cylinder along z, clipped to [z0, z1].
fn elliptic_cylinder(p: V3, cx: f64, cy: f64, a: f64, b: f64, z0: f64, z1: f64) -> f64 {
    let k = ((p[0] - cx) / a).powi(2) + ((p[1] - cy) / b).powi(2);
    let radial = (k.sqrt() - 1.0) * a.min(b);
    radial.max(z0 - p[2]).max(p[2] - z1)
}

/// Ficat-Arlet stage of one femoral head.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Stage {
    /// Normal (possibly with a benign variant).
    #[serde(rename = "0")]
    S0,
    /// Stage I: marrow-oedema-like signal, small anterosuperior focus; head normal in shape.
    #[serde(rename = "I")]
    S1,
    /// Stage II: demarcated anterosuperior necrotic segment, double-line sign, sclerotic
    /// margin; head still spherical.
    #[serde(rename = "II")]
    S2,
}

impl Stage {
    /// The label used in results and ground truth.
    pub fn label(self) -> &'static str {
        match self {
            Stage::S0 => "0",
            Stage::S1 => "I",
            Stage::S2 => "II",
        }
    }
}

/// A benign finding that must not be read as a lesion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Variant {
    /// No variant.
    None,
    /// A synovial herniation pit: a small, sharply marginated fluid focus in the anterior
    /// femoral neck.
    HerniationPit,
}

/// One femoral head and its femur, in the canonical frame.
#[derive(Debug, Clone)]
pub struct Hip {
    /// +1 for the patient's left, -1 for the right.
    pub sign: f64,
    /// Head centre.
    pub center: V3,
    /// Head radius.
    pub radius: f64,
    /// Neck-shaft angle in degrees.
    pub neck_shaft_deg: f64,
    /// Stage of this head.
    pub stage: Stage,
    /// Benign variant, if any.
    pub variant: Variant,
    /// Lesion direction from the centre (anterosuperior), unit.
    pub lesion_dir: V3,
    /// Lesion size relative to the radius (focus radius for I, segment depth for II).
    pub lesion_size: f64,
    /// Stage I: the focus centre's distance from the head's centre along `lesion_dir`,
    /// relative to the radius (0.5, subchondral, in the classic phantom).
    pub lesion_depth: f64,
    /// Abduction of the leg, degrees: the femur below the head swings laterally about the
    /// head's centre (0 in the classic phantom).
    pub abduction_deg: f64,
}

impl Hip {
    fn neck_end(&self) -> V3 {
        // The neck runs from the head infero-laterally, at (180 - neck-shaft angle) to the
        // shaft, with a little anteversion (the head sits anterior to the shaft).
        let a = (180.0 - self.neck_shaft_deg).to_radians();
        let d = unit([self.sign * a.sin(), 0.12, -a.cos()]);
        add(self.center, scale(d, self.radius * 2.1))
    }

    /// A point in the frame of the un-abducted femur: the leg's abduction undone by a
    /// rotation about the anterior-posterior axis through the head's centre.
    fn femur_frame(&self, p: V3) -> V3 {
        if self.abduction_deg == 0.0 {
            return p;
        }
        let (s, c) = (-self.sign * self.abduction_deg.to_radians()).sin_cos();
        let q = sub(p, self.center);
        add(
            self.center,
            [q[0] * c - q[2] * s, q[1], q[0] * s + q[2] * c],
        )
    }

    /// Signed distance to the femur (head, neck, trochanter, shaft).
    fn femur(&self, p: V3) -> f64 {
        let p = self.femur_frame(p);
        let j = self.neck_end();
        let head = sphere(p, self.center, self.radius);
        let neck = capsule(p, self.center, j, self.radius * 0.62);
        let troch = sphere(p, add(j, [self.sign * 12.0, 6.0, 14.0]), self.radius * 0.85);
        let shaft = capsule(
            p,
            j,
            add(j, [self.sign * 10.0, 4.0, -320.0]),
            self.radius * 0.68,
        );
        head.min(neck).min(troch).min(shaft)
    }

    /// Direction the acetabulum faces into (medial-superior), unit.
    fn cup_axis(&self) -> V3 {
        unit([-self.sign * 0.55, 0.05, 0.83])
    }

    /// Signed distance to the acetabular bone: a thick hemispherical shell over the head.
    fn acetabulum(&self, p: V3) -> f64 {
        let q = sub(p, self.center);
        let r = norm(q);
        let inner = self.radius + 1.8;
        let outer = self.radius + 9.0;
        let shell = (inner - r).max(r - outer);
        let half = -(dot(q, self.cup_axis()) + 0.15 * r);
        shell.max(half)
    }

    /// Signed distance to the joint space (cartilage and fluid) between head and cup.
    fn joint(&self, p: V3) -> f64 {
        let q = sub(p, self.center);
        let r = norm(q);
        let shell = (self.radius - r).max(r - (self.radius + 1.8));
        let half = -(dot(q, self.cup_axis()) + 0.35 * r);
        shell.max(half)
    }

    /// Signed distance to the pelvic bones attached on this side: ilium and pubic ramus.
    fn pelvis_side(&self, p: V3) -> f64 {
        let c = self.center;
        let ilium = capsule(
            p,
            add(c, scale(self.cup_axis(), self.radius + 4.0)),
            add(c, [self.sign * 35.0, 15.0, 115.0]),
            13.0,
        );
        let ramus = capsule(
            p,
            add(c, [-self.sign * 15.0, -14.0, -12.0]),
            [self.sign * 9.0, -58.0, -18.0],
            8.0,
        );
        let ischium = capsule(
            p,
            add(c, [-self.sign * 8.0, 18.0, -22.0]),
            add(c, [-self.sign * 20.0, 30.0, -60.0]),
            11.0,
        );
        ilium.min(ramus).min(ischium)
    }

    /// Stage I: where the oedema focus is centred, relative to the head's centre (mm).
    pub fn focus_offset(&self) -> V3 {
        scale(self.lesion_dir, self.radius * self.lesion_depth)
    }

    /// How a marrow voxel's signal changes with this head's lesion or variant:
    /// (T1 factor, T2 added, weight of the "necrotic texture"), and whether it is fluid.
    fn lesion(&self, p: V3, vox: f64) -> Lesion {
        let q = sub(p, self.center);
        match self.stage {
            Stage::S0 => Lesion::default(),
            Stage::S1 => {
                // A soft oedema-like focus `lesion_depth` radii from the centre towards the
                // anterosuperior surface (half a radius: subchondral; near 0: diffuse).
                let c = self.focus_offset();
                let s = self.radius * self.lesion_size;
                let d2 = dot(sub(q, c), sub(q, c)) / (s * s);
                let w = (-d2).exp() * 0.85;
                Lesion {
                    oedema: w,
                    ..Lesion::default()
                }
            }
            Stage::S2 => {
                // Necrotic segment: the part of the head inside a sphere centred beyond the
                // anterosuperior surface; its boundary carries the double line.
                let c2 = scale(self.lesion_dir, self.radius * 1.05);
                let rho = self.radius * self.lesion_size;
                let d = norm(sub(q, c2)) - rho; // < 0 inside the segment
                let band = 1.6_f64.max(vox * 0.8);
                let inside = coverage(d, vox);
                // Inner line (segment side): granulation, bright on T2.
                let inner = ramp_band(d, -band, 0.0, vox);
                // Outer line (viable side): sclerosis, dark on both.
                let outer = ramp_band(d, 0.0, band, vox);
                Lesion {
                    necrotic: inside * (1.0 - inner),
                    granulation: inner,
                    sclerosis: outer,
                    ..Lesion::default()
                }
            }
        }
    }

    fn pit(&self, p: V3, vox: f64) -> f64 {
        if self.variant != Variant::HerniationPit {
            return 0.0;
        }
        let p = self.femur_frame(p);
        let j = self.neck_end();
        let c = add(
            add(self.center, scale(sub(j, self.center), 0.45)),
            [0.0, -self.radius * 0.45, 0.0],
        );
        coverage(sphere(p, c, 3.0), vox)
    }
}

/// The signal changes inside a femoral head's marrow.
#[derive(Debug, Default, Clone, Copy)]
struct Lesion {
    oedema: f64,
    necrotic: f64,
    granulation: f64,
    sclerosis: f64,
}

/// Partial-volume coverage of a shape at signed distance `d` for a voxel of size `vox`.
pub fn coverage(d: f64, vox: f64) -> f64 {
    (0.5 - d / vox).clamp(0.0, 1.0)
}

/// Coverage of the band `lo < d < hi`.
fn ramp_band(d: f64, lo: f64, hi: f64, vox: f64) -> f64 {
    (coverage(lo - d, vox) * coverage(d - hi, vox)).clamp(0.0, 1.0)
}

/// Signal of a tissue in the two contrasts.
#[derive(Debug, Clone, Copy)]
pub struct Tissue {
    t1: f64,
    t2: f64,
}

const AIR: Tissue = Tissue { t1: 0.0, t2: 0.0 };
const FAT: Tissue = Tissue {
    t1: 1400.0,
    t2: 160.0,
};
const MUSCLE: Tissue = Tissue {
    t1: 520.0,
    t2: 420.0,
};
const URINE: Tissue = Tissue {
    t1: 180.0,
    t2: 1650.0,
};
const CORTEX: Tissue = Tissue { t1: 60.0, t2: 45.0 };
const MARROW: Tissue = Tissue {
    t1: 1200.0,
    t2: 210.0,
};
const JOINT: Tissue = Tissue {
    t1: 380.0,
    t2: 1250.0,
};
const OEDEMA: Tissue = Tissue {
    t1: 620.0,
    t2: 980.0,
};
const NECROTIC: Tissue = Tissue {
    t1: 1050.0,
    t2: 300.0,
};
const GRANULATION: Tissue = Tissue {
    t1: 500.0,
    t2: 1350.0,
};
const SCLEROSIS: Tissue = Tissue { t1: 90.0, t2: 70.0 };

fn mix(a: Tissue, b: Tissue, w: f64) -> Tissue {
    Tissue {
        t1: a.t1 + (b.t1 - a.t1) * w,
        t2: a.t2 + (b.t2 - a.t2) * w,
    }
}

/// The whole phantom in its canonical frame.
#[derive(Debug, Clone)]
pub struct Anatomy {
    /// Body half-width (x) and half-depth (y).
    pub body: (f64, f64),
    /// Subcutaneous fat thickness.
    pub fat: f64,
    /// Bladder centre and radii.
    pub bladder: (V3, V3),
    /// The two hips: index 0 is the patient's right, 1 the left.
    pub hips: [Hip; 2],
}

/// The tissue classes the phantom is built from: the labels of its label map. The classic
/// renderer gives each a fixed signal per contrast; the domain-randomised renderer
/// (`phantom::randomised`) draws a signal for each per study.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Label {
    /// Outside the body.
    Air = 0,
    /// Subcutaneous fat.
    Fat,
    /// Muscle and other soft tissue inside the fat layer.
    Muscle,
    /// Urine in the bladder.
    Urine,
    /// Cortical bone.
    Cortex,
    /// Fatty bone marrow.
    Marrow,
    /// Joint space: cartilage and fluid (also a herniation pit's fluid).
    Joint,
    /// Marrow oedema of a stage I head.
    Oedema,
    /// The necrotic segment of a stage II head.
    Necrotic,
    /// Granulation tissue: the inner, fluid-like line of the double-line sign.
    Granulation,
    /// Sclerosis: the outer, dark line of the double-line sign.
    Sclerosis,
}

/// Number of [`Label`]s.
pub const LABELS: usize = 11;

/// Every label, in index order.
pub const ALL_LABELS: [Label; LABELS] = [
    Label::Air,
    Label::Fat,
    Label::Muscle,
    Label::Urine,
    Label::Cortex,
    Label::Marrow,
    Label::Joint,
    Label::Oedema,
    Label::Necrotic,
    Label::Granulation,
    Label::Sclerosis,
];

/// What the painter-style composition mixes: a tissue's signals, or a vector of label
/// fractions. Mixing is linear, so composing fractions and weighting them by signals later
/// gives the same image as composing signals.
pub trait Mix: Copy {
    /// `self` covered by `other` to the fraction `w`.
    fn mix(self, other: Self, w: f64) -> Self;
}

impl Mix for Tissue {
    fn mix(self, other: Self, w: f64) -> Self {
        mix(self, other, w)
    }
}

/// Fractions of each label in a voxel (index = `Label as usize`).
pub type Fractions = [f64; LABELS];

impl Mix for Fractions {
    fn mix(self, other: Self, w: f64) -> Self {
        let mut out = self;
        for (o, b) in out.iter_mut().zip(other) {
            *o += (b - *o) * w;
        }
        out
    }
}

/// The one-hot fractions of a label.
pub fn one_hot(l: Label) -> Fractions {
    let mut f = [0.0; LABELS];
    f[l as usize] = 1.0;
    f
}

impl Anatomy {
    /// (T1, fat-suppressed T2) signal at canonical point `p` for a voxel of size `vox` mm.
    pub fn signal(&self, p: V3, vox: f64) -> (f64, f64) {
        let t = self.compose(p, vox, &|l: Label, q: V3| match l {
            Label::Air => AIR,
            Label::Fat => FAT,
            Label::Muscle => MUSCLE,
            Label::Urine => URINE,
            Label::Cortex => CORTEX,
            Label::Marrow => MARROW,
            Label::Joint => JOINT,
            Label::Oedema => OEDEMA,
            Label::Necrotic => {
                // Early necrosis keeps a fat-like but mottled signal.
                let mottle =
                    0.85 + 0.15 * ((q[0] * 0.9).sin() * (q[1] * 1.1).cos() * (q[2] * 0.7).sin());
                Tissue {
                    t1: NECROTIC.t1 * mottle,
                    t2: NECROTIC.t2 * (2.0 - mottle),
                }
            }
            Label::Granulation => GRANULATION,
            Label::Sclerosis => SCLEROSIS,
        });
        (t.t1, t.t2)
    }

    /// Fractions of each label at canonical point `p` for a voxel of size `vox` mm (partial
    /// volume as in [`Anatomy::signal`]).
    pub fn fractions(&self, p: V3, vox: f64) -> Fractions {
        self.compose(p, vox, &|l: Label, _| one_hot(l))
    }

    /// The painter-style composition of the shapes at `p`, each weighted by its partial-volume
    /// coverage; `tissue` gives what a label contributes at a point.
    fn compose<T: Mix>(&self, p: V3, vox: f64, tissue: &impl Fn(Label, V3) -> T) -> T {
        let (a, b) = self.body;
        let body = elliptic_cylinder(p, 0.0, 8.0, a, b, -400.0, 220.0);
        let air = tissue(Label::Air, p);
        if body > vox {
            return air;
        }
        let mut t = air.mix(tissue(Label::Fat, p), coverage(body, vox));
        let inner = elliptic_cylinder(p, 0.0, 8.0, a - self.fat, b - self.fat, -400.0, 220.0);
        t = t.mix(tissue(Label::Muscle, p), coverage(inner, vox));
        t = t.mix(
            tissue(Label::Urine, p),
            coverage(ellipsoid(p, self.bladder.0, self.bladder.1), vox),
        );
        // Pelvis: both sides, the sacrum, cortex then marrow.
        let sacrum = capsule(p, [0.0, 62.0, 45.0], [0.0, 78.0, 135.0], 24.0);
        let pelvis = self.hips[0]
            .pelvis_side(p)
            .min(self.hips[1].pelvis_side(p))
            .min(self.hips[0].acetabulum(p))
            .min(self.hips[1].acetabulum(p))
            .min(sacrum);
        t = t.mix(tissue(Label::Cortex, p), coverage(pelvis, vox));
        t = t.mix(tissue(Label::Marrow, p), coverage(pelvis + 2.5, vox));
        for hip in &self.hips {
            let d = hip.femur(p);
            if d > 12.0 + vox && hip.joint(p) > vox {
                continue;
            }
            t = t.mix(tissue(Label::Joint, p), coverage(hip.joint(p), vox));
            t = t.mix(tissue(Label::Cortex, p), coverage(d, vox));
            let marrow = coverage(d + 2.2, vox);
            if marrow <= 0.0 {
                continue;
            }
            // Marrow, then the head's lesion inside the head only.
            let mut m = tissue(Label::Marrow, p);
            let in_head = coverage(sphere(p, hip.center, hip.radius - 2.2), vox);
            if in_head > 0.0 {
                let l = hip.lesion(p, vox);
                m = m.mix(tissue(Label::Oedema, p), l.oedema * in_head);
                m = m.mix(tissue(Label::Necrotic, p), l.necrotic * in_head);
                m = m.mix(tissue(Label::Granulation, p), l.granulation * in_head);
                m = m.mix(tissue(Label::Sclerosis, p), l.sclerosis * in_head);
            }
            m = m.mix(tissue(Label::Joint, p), hip.pit(p, vox));
            t = t.mix(m, marrow);
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hip(sign: f64, stage: Stage) -> Hip {
        Hip {
            sign,
            center: [sign * 90.0, 0.0, 0.0],
            radius: 24.0,
            neck_shaft_deg: 130.0,
            stage,
            variant: Variant::None,
            lesion_dir: unit([sign * 0.2, -0.45, 0.87]),
            lesion_size: 0.75,
            lesion_depth: 0.5,
            abduction_deg: 0.0,
        }
    }

    fn anatomy(l: Stage) -> Anatomy {
        Anatomy {
            body: (170.0, 115.0),
            fat: 18.0,
            bladder: ([0.0, -45.0, 35.0], [45.0, 35.0, 35.0]),
            hips: [hip(-1.0, Stage::S0), hip(1.0, l)],
        }
    }

    #[test]
    fn tissues_where_they_belong() {
        let a = anatomy(Stage::S0);
        let (t1, t2) = a.signal([1000.0, 0.0, 0.0], 1.0);
        assert_eq!((t1, t2), (0.0, 0.0), "air outside the body");
        // The centre of a head is marrow: bright T1, dark fat-suppressed T2.
        let (t1, t2) = a.signal([90.0, 0.0, 0.0], 1.0);
        assert!((t1 - MARROW.t1).abs() < 1.0 && (t2 - MARROW.t2).abs() < 1.0);
        // The bladder is fluid: bright T2.
        let (_, t2) = a.signal([0.0, -45.0, 35.0], 1.0);
        assert!(t2 > 1500.0);
        // Subcutaneous fat at the lateral body wall.
        let (t1, _) = a.signal([160.0, 8.0, 0.0], 1.0);
        assert!(t1 > 1300.0);
    }

    #[test]
    fn stage_two_shows_a_bright_line_and_a_dark_line_in_the_head() {
        let a = anatomy(Stage::S2);
        let h = &a.hips[1];
        // Walk from the centre towards the anterosuperior surface.
        let t2: Vec<f64> = (0..=20)
            .map(|i| {
                a.signal(
                    add(
                        h.center,
                        scale(h.lesion_dir, h.radius * 0.9 * i as f64 / 20.0),
                    ),
                    0.5,
                )
                .1
            })
            .collect();
        let bright = t2.iter().cloned().fold(0.0, f64::max);
        let dark = t2.iter().cloned().fold(f64::MAX, f64::min);
        assert!(bright > 1000.0, "granulation line missing: {t2:?}");
        assert!(dark < 120.0, "sclerotic line missing: {t2:?}");
        // The other head is normal along the same path.
        let n = &a.hips[0];
        let n2: Vec<f64> = (0..=18)
            .map(|i| {
                a.signal(
                    add(
                        n.center,
                        scale(n.lesion_dir, n.radius * 0.8 * i as f64 / 20.0),
                    ),
                    0.5,
                )
                .1
            })
            .collect();
        assert!(n2.iter().all(|v| *v < 400.0), "{n2:?}");
    }

    #[test]
    fn stage_one_is_subtle_oedema() {
        let a = anatomy(Stage::S1);
        let h = &a.hips[1];
        let (t1, t2) = a.signal(add(h.center, scale(h.lesion_dir, h.radius * 0.5)), 1.0);
        assert!(t2 > 600.0 && t2 < 1000.0, "{t2}");
        assert!(t1 < MARROW.t1, "{t1}");
    }

    #[test]
    fn rotations_invert() {
        let r = rotation(0.1, -0.05, 0.2);
        let v = [1.0, 2.0, 3.0];
        let back = apply_t(&r, apply(&r, v));
        assert!(norm(sub(back, v)) < 1e-12);
        assert!((norm(cross([1.0, 0.0, 0.0], [0.0, 1.0, 0.0])) - 1.0).abs() < 1e-12);
    }
}
