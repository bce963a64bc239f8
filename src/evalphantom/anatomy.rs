//! The evaluation phantom's pelvis: a drawn body built from signed-distance primitives in a
//! pelvis frame, posed into patient LPS space.
//!
//! Pelvis frame: origin midway between the femoral head centres, +x to the patient's left,
//! +y posterior, +z superior (the LPS axes before pose). Each femur has its own frame about
//! its head centre (the leg's abduction and rotation). A point is classified by priority:
//! outside the body, skin, femora and joints, pelvic bones, subcutaneous fat, organs,
//! vessels and nerves, pelvic and abdominal cavities, then muscle groups (a power diagram of
//! muscle axes whose cell borders are thin fat planes). Every structure has a box so that a
//! point only pays for the structures near it.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::geom::{
    Aabb, M3, V3, add, cross, dot, ellipsoid, len, lerp3, mix64, mul, seg, smin, smoothstep, sub,
    unit, vnoise,
};
use super::tissue::Tissue;
use crate::phantom::anatomy::{Stage, Variant};

/// What one point is made of: tissue `a`, blended toward tissue `b` by `t` (oedema in
/// marrow, islands, rims of partial strength).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Sample {
    /// Base tissue.
    pub a: Tissue,
    /// Tissue blended in.
    pub b: Tissue,
    /// Blend weight of `b`, 0..1.
    pub t: f32,
}

impl Sample {
    #[inline]
    pub(crate) fn of(t: Tissue) -> Sample {
        Sample { a: t, b: t, t: 0.0 }
    }

    #[inline]
    fn mix(a: Tissue, b: Tissue, t: f64) -> Sample {
        if t <= 0.0 {
            Sample::of(a)
        } else if t >= 1.0 {
            Sample::of(b)
        } else {
            Sample { a, b, t: t as f32 }
        }
    }
}

fn u(rng: &mut ChaCha8Rng, lo: f64, hi: f64) -> f64 {
    lo + (hi - lo) * rng.random::<f64>()
}

/// Patient placement: pelvis frame to LPS.
#[derive(Debug, Clone)]
pub(crate) struct Pose {
    /// Pelvis axes in LPS (tilt, rotation about the vertical axis, obliquity).
    pub rot: M3,
    /// Inverse of `rot`, cached because every sample needs it.
    pub inv: M3,
    /// Where the pelvis origin lies in LPS (table position).
    pub shift: V3,
}

impl Pose {
    pub(crate) fn to_lps(&self, q: V3) -> V3 {
        add(self.rot.apply(q), self.shift)
    }

    pub(crate) fn to_pelvis(&self, p: V3) -> V3 {
        self.inv.apply(sub(p, self.shift))
    }

    /// A direction from LPS into the pelvis frame.
    pub(crate) fn dir_to_pelvis(&self, d: V3) -> V3 {
        self.inv.apply(d)
    }
}

/// Body outline: a trunk whose cross-section is an ellipse (with separate anterior and
/// posterior depths), closed below at the crotch, and two thigh cylinders.
#[derive(Debug, Clone)]
pub(crate) struct Body {
    /// Depth centre of the trunk (y).
    pub yc: f64,
    /// Trunk half-width at the trochanters.
    pub a_hip: f64,
    /// Trunk depth in front of `yc`.
    pub b_ant: f64,
    /// Trunk depth behind `yc`.
    pub b_post: f64,
    /// Height of the perineum (where the thighs separate).
    z_crotch: f64,
    /// Distance of each thigh axis from the midline at the crotch.
    thigh_x0: f64,
    /// Lateral drift of each thigh axis per mm downwards (right, left), from leg abduction.
    thigh_slope: [f64; 2],
    /// Thigh half-width.
    thigh_a: f64,
    /// Thigh half-depth.
    thigh_b: f64,
    /// Thigh depth centre.
    thigh_yc: f64,
    /// Subcutaneous fat thickness (mm) at the flank.
    pub fat: f64,
    /// Habitus 0 (slim) .. 1 (stocky): scales the posterior and anterior fat.
    habitus: f64,
    /// Skin thickness.
    skin: f64,
}

/// Approximate signed distance to an ellipse (first order: exact on the curve, good near it).
#[inline]
fn ell(dx: f64, dy: f64, a: f64, b: f64) -> f64 {
    let (qx, qy) = (dx / a, dy / b);
    let k = (qx * qx + qy * qy).sqrt();
    if k < 1e-9 {
        return -a.min(b);
    }
    let g = ((qx / a).powi(2) + (qy / b).powi(2)).sqrt() / k;
    (k - 1.0) / g
}

impl Body {
    fn sdf(&self, q: V3) -> f64 {
        let z = q[2];
        let dy = q[1] - self.yc;
        let taper = 1.0 - 0.13 * smoothstep(30.0, 230.0, z);
        // Buttock bulge around the hips (a polynomial bump: this runs for every sample).
        let t = ((z + 25.0) / 90.0).abs().min(1.0);
        let glute = 1.0 + 0.10 * (1.0 - t * t) * (1.0 - t * t);
        let b = if dy < 0.0 {
            self.b_ant
        } else {
            self.b_post * glute * taper
        };
        let trunk = ell(q[0], dy, self.a_hip * taper, b).max(self.z_crotch - z);
        let mut d = trunk;
        if z < self.z_crotch + 80.0 {
            let scale = 1.0 - 0.18 * smoothstep(self.z_crotch, self.z_crotch - 250.0, z);
            for (i, s) in [-1.0, 1.0].into_iter().enumerate() {
                let xc = s * self.thigh_x0 + s * self.thigh_slope[i] * (self.z_crotch - z).max(0.0);
                let leg = ell(
                    q[0] - xc,
                    q[1] - self.thigh_yc,
                    self.thigh_a * scale,
                    self.thigh_b * scale,
                )
                .max(z - (self.z_crotch + 80.0));
                d = d.min(leg);
            }
        }
        d
    }

    fn fat_at(&self, q: V3) -> f64 {
        let dy = q[1] - self.yc;
        let post = smoothstep(0.0, self.b_post, dy);
        let ant = smoothstep(0.0, self.b_ant, -dy);
        self.fat * (1.0 + 0.5 * post + 0.35 * self.habitus * ant)
    }
}

/// The Ficat-Arlet finding drawn in one head, in the femur frame.
#[derive(Debug, Clone)]
pub(crate) enum Lesion {
    /// Normal head.
    None,
    /// Stage I: bone-marrow-oedema-like signal, ill defined; no line, no shape change.
    Oedema {
        /// Focus centre (femur frame).
        c: V3,
        /// Radius where the focus falls to 1/e.
        rho: f64,
        /// Peak blend toward oedema (contrast of this lesion).
        strength: f64,
        /// Optional extension toward the neck: (centre, radius, weight).
        lobe: Option<(V3, f64, f64)>,
        /// Seed of the irregularity.
        seed: u64,
    },
    /// Stage II: the part of the head inside the sphere (c, rho) is a necrotic segment,
    /// bounded by a bright inner and a dark outer band (the double line).
    Segment {
        /// Sphere centre (femur frame).
        c: V3,
        /// Sphere radius.
        rho: f64,
        /// Width of the inner (bright, granulation) band.
        band_in: f64,
        /// Width of the outer (dark, sclerotic) band.
        band_out: f64,
        /// Strength of the inner band.
        bright: f64,
        /// Strength of the outer band.
        dark: f64,
        /// How much of the segment is fibrous or fluid-like (0 = fat-like).
        mixed: f64,
        /// Serpiginous wobble of the interface (mm).
        wobble: f64,
        /// Seed of the wobble and patches.
        seed: u64,
    },
}

/// A physeal scar: a thin, wavy, dark line across the head at the old growth plate.
#[derive(Debug, Clone)]
struct Scar {
    /// Normal of the old growth plate (near the neck axis, tilted).
    normal: V3,
    /// First in-plane axis, for the waviness.
    e1: V3,
    /// Second in-plane axis, for the waviness.
    e2: V3,
    /// Distance of the plate from the head centre toward the neck.
    offset: f64,
    /// Waviness amplitude, mm.
    amp: f64,
    /// Waviness wavelength, mm.
    wavelength: f64,
    /// Half the line's thickness, mm.
    half: f64,
    /// Waviness phase.
    phase: f64,
}

/// One hip: femur (in its own frame about the head centre) and the joint.
#[derive(Debug, Clone)]
pub(crate) struct Hip {
    /// -1 for the patient's right, +1 for the left.
    pub sign: f64,
    /// Head centre, pelvis frame.
    pub center: V3,
    /// Head radius.
    pub radius: f64,
    /// Femur frame to pelvis frame (leg abduction and rotation).
    pub leg: M3,
    /// Pelvis frame to femur frame.
    leg_inv: M3,
    /// Neck base (femur frame).
    j: V3,
    /// Neck radius at the head and at the base.
    neck_r: [f64; 2],
    /// Shaft axis ends and radius (femur frame).
    shaft: (V3, V3, f64),
    /// Distal direction of the shaft.
    down: V3,
    /// Greater trochanter ellipsoid.
    gt: (V3, V3),
    /// Lesser trochanter ellipsoid.
    lt: (V3, V3),
    /// Subchondral plate thickness.
    sub_plate: f64,
    /// Femoral head cartilage thickness.
    cart_h: f64,
    /// Joint space (fluid film) thickness.
    gap: f64,
    /// Deepest direction of the acetabulum (pelvis frame).
    pub cup_axis: V3,
    /// Cosine of the acetabular coverage half-angle.
    cup_cos: f64,
    /// Acetabular wall thickness.
    cup_wall: f64,
    /// Labrum cross-section radius.
    labrum_r: f64,
    /// Fovea capitis direction (femur frame) and radius.
    fovea: (V3, f64),
    /// Joint fluid pockets in the recesses (pelvis frame).
    recess: [(V3, f64); 2],
    /// Box around every part of this hip (pelvis frame).
    bbox: Aabb,
    /// Box of the femur parts (femur frame).
    fem_box: Aabb,
    /// Stage of this head.
    pub stage: Stage,
    /// Variant recorded in the truth.
    pub variant: Variant,
    /// The lesion.
    pub lesion: Lesion,
    /// Where the lesion is (femur frame): the oedema focus, or the centroid of the
    /// necrotic segment (inside the head, unlike the centre of its defining sphere).
    lesion_centroid: Option<V3>,
    /// Physeal scar, if drawn.
    scar: Option<Scar>,
    /// Herniation pit (femur frame centre, radius).
    pit: Option<(V3, f64)>,
    /// Red marrow islands (threshold, seed).
    islands: Option<(f64, u64)>,
    /// Joint-space outer radius (head to acetabular bone).
    r_joint: f64,
}

/// Unit-ball points on a fixed lattice, used to measure what fraction of a head a lesion
/// sphere covers.
fn ball_points() -> Vec<V3> {
    let n = 14;
    let mut v = Vec::new();
    for i in 0..n {
        for j in 0..n {
            for k in 0..n {
                let p = [i, j, k].map(|c| (c as f64 + 0.5) / n as f64 * 2.0 - 1.0);
                if dot(p, p) <= 1.0 {
                    v.push(p);
                }
            }
        }
    }
    v
}

fn covered(points: &[V3], r: f64, c: V3, rho: f64) -> f64 {
    let inside = points
        .iter()
        .filter(|p| len(sub(mul(**p, r), c)) < rho)
        .count();
    inside as f64 / points.len() as f64
}

impl Hip {
    #[allow(clippy::too_many_arguments)]
    fn draw(
        rng: &mut ChaCha8Rng,
        sign: f64,
        center: V3,
        radius: f64,
        stage: Stage,
        seed: u64,
        points: &[V3],
    ) -> Hip {
        let s = sign;
        let r = radius;
        // Femur frame: the pelvis axes before the leg moves. The shaft runs distally and a
        // little medially; the neck leaves the shaft at the neck-shaft angle, anteverted.
        let down = unit([-s * 7f64.to_radians().sin(), 0.0, -7f64.to_radians().cos()]);
        let med_up = [-s * 7f64.to_radians().cos(), 0.0, 7f64.to_radians().sin()];
        let nsa = u(rng, 115.0, 145.0).to_radians();
        let to_head = add(mul(down, nsa.cos()), mul(med_up, nsa.sin()));
        let ante = u(rng, 6.0, 20.0).to_radians();
        let mut to_head_av = M3::axis_angle(down, ante).apply(to_head);
        if to_head_av[1] > 0.0 {
            to_head_av = M3::axis_angle(down, -ante).apply(to_head);
        }
        let neck_dir = mul(unit(to_head_av), -1.0);
        let neck_len = r * u(rng, 2.0, 2.4);
        let j = mul(neck_dir, neck_len);
        let neck_r = [r * u(rng, 0.64, 0.72), r * u(rng, 0.78, 0.88)];
        let shaft_r = r * u(rng, 0.55, 0.62);
        let shaft = (add(j, mul(down, -12.0)), add(j, mul(down, 420.0)), shaft_r);
        let lateral = [s, 0.0, 0.0];
        let gt_c = add(
            add(j, mul(lateral, r * u(rng, 0.5, 0.65))),
            [0.0, r * 0.2, r * u(rng, 0.35, 0.55)],
        );
        let gt_ax = [r * 0.55, r * 0.75, r * 0.95];
        let lt_c = add(add(j, mul(down, r * 1.7)), [-s * r * 0.62, r * 0.38, 0.0]);
        let lt_ax = [r * 0.33, r * 0.33, r * 0.5];

        // The leg: abduction about the AP axis, rotation about the vertical axis.
        let abd = u(rng, -10.0, 10.0).to_radians();
        let rot = u(rng, -10.0, 10.0).to_radians();
        let leg =
            M3::axis_angle([0.0, 0.0, 1.0], rot).then(&M3::axis_angle([0.0, 1.0, 0.0], s * abd));
        let leg_inv = leg.transpose();

        let sub_plate = u(rng, 0.9, 1.4);
        let cup_wall = u(rng, 7.0, 11.0);
        let labrum_r = u(rng, 2.2, 3.0);
        let cart_h = u(rng, 1.4, 2.4);
        let gap = u(rng, 0.4, 1.2);
        let cart_a = u(rng, 1.2, 2.0);
        let r_joint = r + cart_h + gap + cart_a;
        let cup_tilt = u(rng, 42.0, 54.0).to_radians();
        let cup_axis = unit([-s * cup_tilt.sin(), u(rng, 0.0, 0.2), cup_tilt.cos()]);
        let cup_cos = u(rng, 76.0, 90.0).to_radians().cos();
        let fovea_dir = unit([-s * 0.75, u(rng, 0.05, 0.25), -0.65]);
        let fovea = (fovea_dir, u(rng, 3.5, 5.5));
        let fluid = u(rng, 0.0, 1.0);
        let neck_p = leg.apply(neck_dir);
        let recess = [
            (
                add(center, mul(unit(add(neck_p, [0.0, 0.0, -0.9])), r + 1.5)),
                1.0 + 4.0 * fluid,
            ),
            (
                add(center, mul(unit(add(neck_p, [0.0, -0.9, 0.2])), r + 1.0)),
                0.5 + 3.0 * fluid * fluid,
            ),
        ];

        let fem_box = Aabb::capsule([0.0; 3], j, neck_r[1] + 8.0)
            .union(Aabb::around(gt_c, gt_ax).grow(8.0))
            .union(Aabb::around(lt_c, lt_ax).grow(5.0))
            .union(Aabb::capsule(shaft.0, shaft.1, shaft_r * 1.3 + 12.0));
        let mut bbox = Aabb::around(center, [r_joint + 12.0; 3]);
        for cx in [fem_box.lo[0], fem_box.hi[0]] {
            for cy in [fem_box.lo[1], fem_box.hi[1]] {
                for cz in [fem_box.lo[2], fem_box.hi[2]] {
                    let p = add(center, leg.apply([cx, cy, cz]));
                    bbox = bbox.union(Aabb { lo: p, hi: p });
                }
            }
        }

        // Lesion and benign findings come from their own stream, so that pinning a stage
        // changes nothing else that is drawn.
        let rng = &mut ChaCha8Rng::seed_from_u64(mix64(seed ^ 0x1e51));
        // Lesion, in the femur frame. The weight-bearing region is anterosuperior.
        let sup = leg_inv.apply([0.0, 0.0, 1.0]);
        let ant = leg_inv.apply([0.0, -1.0, 0.0]);
        let lat = leg_inv.apply([s, 0.0, 0.0]);
        let dir = unit(add(
            add(mul(sup, u(rng, 0.75, 1.0)), mul(ant, u(rng, 0.25, 0.6))),
            mul(lat, u(rng, -0.2, 0.25)),
        ));
        let fraction = u(rng, 0.15, 0.40);
        let lesion = draw_lesion(rng, stage, dir, fraction, r, neck_dir, points, seed);
        let lesion_centroid = lesion_centroid(&lesion, points, r);
        let (scar, pit, islands) =
            draw_benign(rng, stage, s, r, neck_dir, neck_r[0], sup, ant, seed);
        let variant = if pit.is_some() {
            Variant::HerniationPit
        } else {
            Variant::None
        };

        Hip {
            sign,
            center,
            radius,
            leg,
            leg_inv,
            j,
            neck_r,
            shaft,
            down,
            gt: (gt_c, gt_ax),
            lt: (lt_c, lt_ax),
            sub_plate,
            cart_h,
            gap,
            cup_axis,
            cup_cos,
            cup_wall,
            labrum_r,
            fovea,
            recess,
            bbox,
            fem_box,
            stage,
            variant,
            lesion,
            lesion_centroid,
            scar,
            pit,
            islands,
            r_joint,
        }
    }

    /// Lateral extent of the greater trochanter (pelvis frame, |x|), to size the body.
    fn trochanter_extent(&self) -> f64 {
        let (c, ax) = self.gt;
        let p = add(self.center, self.leg.apply(c));
        p[0].abs() + ax[0]
    }

    /// Lesion location (focus or segment centroid) in the pelvis frame.
    pub(crate) fn lesion_center(&self) -> Option<V3> {
        self.lesion_centroid
            .map(|c| add(self.center, self.leg.apply(c)))
    }

    /// Centre and radius of the sphere that defines the lesion, in the pelvis frame.
    pub(crate) fn lesion_sphere(&self) -> Option<(V3, f64)> {
        match &self.lesion {
            Lesion::None => None,
            Lesion::Oedema { c, rho, .. } | Lesion::Segment { c, rho, .. } => {
                Some((add(self.center, self.leg.apply(*c)), *rho))
            }
        }
    }

    /// Width of the inner and outer bands of a stage II interface.
    #[cfg(test)]
    pub(crate) fn bands(&self) -> Option<(f64, f64)> {
        match &self.lesion {
            Lesion::Segment {
                band_in, band_out, ..
            } => Some((*band_in, *band_out)),
            _ => None,
        }
    }

    /// Marrow of the femur at femur-frame point `f` (inside bone, not cortex).
    fn marrow(&self, f: V3, in_head: bool) -> Sample {
        if let Some((c, pr)) = self.pit {
            let d = len(sub(f, c));
            if d < pr {
                return Sample::mix(Tissue::YellowMarrow, Tissue::Fluid, 0.92);
            }
            if d < pr + 0.9 {
                return Sample::of(Tissue::Sclerosis);
            }
        }
        if let Some(sc) = &self.scar {
            let s = dot(f, sc.normal) - sc.offset;
            if s.abs() < 3.0 {
                let k = std::f64::consts::TAU / sc.wavelength;
                let w =
                    sc.amp * (k * dot(f, sc.e1) + sc.phase).sin() * (0.7 * k * dot(f, sc.e2)).cos();
                if (s - w).abs() < sc.half {
                    return Sample::mix(Tissue::YellowMarrow, Tissue::Sclerosis, 0.85);
                }
            }
        }
        match &self.lesion {
            Lesion::Segment {
                c,
                rho,
                band_in,
                band_out,
                bright,
                dark,
                mixed,
                wobble,
                seed,
            } if in_head => {
                let d = len(sub(f, *c)) - rho;
                if d < band_out + 1.5 {
                    let s = d + wobble * vnoise(mul(f, 0.25), *seed);
                    if s < -band_in {
                        if *mixed > 0.0 {
                            let n = vnoise(mul(f, 1.0 / 3.5), seed ^ 7);
                            let m = smoothstep(0.05, 0.45, n.abs()) * mixed;
                            let other = if n > 0.0 {
                                Tissue::Fibrous
                            } else {
                                Tissue::Granulation
                            };
                            return Sample::mix(Tissue::NecroticFat, other, m * 0.85);
                        }
                        return Sample::of(Tissue::NecroticFat);
                    }
                    if s < 0.0 {
                        return Sample::mix(Tissue::NecroticFat, Tissue::Granulation, *bright);
                    }
                    if s < *band_out {
                        return Sample::mix(Tissue::YellowMarrow, Tissue::Sclerosis, *dark);
                    }
                }
            }
            Lesion::Oedema {
                c,
                rho,
                strength,
                lobe,
                seed,
            } => {
                let d2 = dot(sub(f, *c), sub(f, *c)) / (rho * rho);
                let mut w = (-d2).exp();
                if let Some((lc, lr, lw)) = lobe {
                    let l2 = dot(sub(f, *lc), sub(f, *lc)) / (lr * lr);
                    w = w.max(lw * (-l2).exp());
                }
                if w > 0.02 {
                    let irregular = 0.7 + 0.3 * vnoise(mul(f, 0.2), *seed);
                    return Sample::mix(
                        Tissue::YellowMarrow,
                        Tissue::Oedema,
                        (w * strength * irregular).min(1.0),
                    );
                }
            }
            _ => {}
        }
        let proximal = in_head || dot(sub(f, self.j), self.down) < 40.0;
        if let (Some((thr, seed)), true) = (self.islands, proximal) {
            let n = vnoise(mul(f, 1.0 / 5.5), seed);
            if n > thr {
                return Sample::mix(
                    Tissue::YellowMarrow,
                    Tissue::RedMarrow,
                    smoothstep(thr, thr + 0.25, n) * 0.9,
                );
            }
        }
        Sample::of(Tissue::YellowMarrow)
    }

    fn femur_sdf(&self, f: V3) -> f64 {
        let (dn, tn) = seg(f, [0.0; 3], self.j);
        let d_neck = dn - (self.neck_r[0] + (self.neck_r[1] - self.neck_r[0]) * tn);
        let d_gt = ellipsoid(f, self.gt.0, self.gt.1);
        let d_lt = ellipsoid(f, self.lt.0, self.lt.1);
        let (ds, ts) = seg(f, self.shaft.0, self.shaft.1);
        let flare = 1.0 + 0.3 * (1.0 - smoothstep(0.0, 0.12, ts));
        let d_shaft = ds - self.shaft.2 * flare;
        smin(smin(smin(d_neck, d_gt, 8.0), d_lt, 5.0), d_shaft, 12.0)
    }

    /// Tissue at pelvis-frame point `q`, or None when this hip does not claim it.
    fn eval(&self, q: V3) -> Option<Sample> {
        if !self.bbox.contains(q) {
            return None;
        }
        let v = sub(q, self.center);
        let r2 = dot(v, v);
        let r = self.radius;
        if r2 < r * r {
            let f = self.leg_inv.apply(v);
            let rr = r2.sqrt();
            let (fd, fr) = self.fovea;
            let fc = mul(fd, r + 2.0);
            if len(sub(f, fc)) < fr + 1.0 && rr > r - fr {
                return Some(Sample::mix(Tissue::Ligament, Tissue::PelvicFat, 0.35));
            }
            if rr > r - self.sub_plate {
                return Some(Sample::of(Tissue::Cortex));
            }
            return Some(self.marrow(f, true));
        }
        let f = self.leg_inv.apply(v);
        if self.fem_box.contains(f) {
            let d = self.femur_sdf(f);
            if d < 0.0 {
                let along = dot(sub(f, self.j), self.down);
                let cortex = 1.6 + 3.9 * smoothstep(25.0, 80.0, along);
                if d > -cortex {
                    return Some(Sample::of(Tissue::Cortex));
                }
                return Some(self.marrow(f, false));
            }
        }
        let rj = self.r_joint;
        if r2 < (rj + 4.0) * (rj + 4.0) {
            let rr = r2.sqrt();
            // Ligamentum teres: from the fovea across the joint.
            let (fd, _) = self.fovea;
            let fpel = self.leg.apply(fd);
            let (dl, _) = seg(v, mul(fpel, r), mul(fpel, rj + 1.0));
            if dl < 2.2 && rr < rj + 1.0 {
                return Some(Sample::of(Tissue::Ligament));
            }
            if rr < r + self.cart_h {
                return Some(Sample::of(Tissue::Cartilage));
            }
            let c = dot(v, self.cup_axis) / rr;
            if rr < rj && c > self.cup_cos {
                return Some(Sample::of(if rr < r + self.cart_h + self.gap {
                    Tissue::Fluid
                } else {
                    Tissue::Cartilage
                }));
            }
            // Labrum: a ring just outside the bony rim.
            let rim = (self.cup_cos.acos() + 0.1).min(std::f64::consts::PI);
            let rl = r + self.cart_h + self.gap + 0.8;
            let h = dot(v, self.cup_axis);
            let perp = len(sub(v, mul(self.cup_axis, h)));
            let dlab = ((perp - rl * rim.sin()).powi(2) + (h - rl * rim.cos()).powi(2)).sqrt();
            if dlab < self.labrum_r {
                return Some(Sample::of(Tissue::Labrum));
            }
            if rr < r + self.cart_h + self.gap + 0.6 && c > self.cup_cos - 0.25 {
                return Some(Sample::of(Tissue::Fluid));
            }
        }
        for (c, pr) in self.recess {
            if dot(sub(q, c), sub(q, c)) < pr * pr {
                return Some(Sample::of(Tissue::Fluid));
            }
        }
        None
    }
}

/// The lesion of a head of `stage` (drawn from the lesion stream), in the femur frame:
/// for stage I an oedema focus covering `fraction` of the head, for stage II a necrotic
/// segment covering it, toward `dir`.
#[allow(clippy::too_many_arguments)]
fn draw_lesion(
    rng: &mut ChaCha8Rng,
    stage: Stage,
    dir: V3,
    fraction: f64,
    r: f64,
    neck_dir: V3,
    points: &[V3],
    seed: u64,
) -> Lesion {
    match stage {
        Stage::S0 => Lesion::None,
        Stage::S1 => {
            let c = mul(dir, r * u(rng, 0.3, 0.6));
            let (mut lo, mut hi) = (0.5, 2.0 * r);
            for _ in 0..30 {
                let mid = 0.5 * (lo + hi);
                if covered(points, r, c, mid) < fraction {
                    lo = mid;
                } else {
                    hi = mid;
                }
            }
            let lobe = rng.random_bool(0.35).then(|| {
                (
                    add(mul(neck_dir, r * u(rng, 0.7, 1.1)), mul(dir, r * 0.2)),
                    r * u(rng, 0.3, 0.5),
                    u(rng, 0.4, 0.8),
                )
            });
            Lesion::Oedema {
                c,
                rho: 0.5 * (lo + hi),
                strength: u(rng, 0.55, 1.0),
                lobe,
                seed: mix64(seed ^ 0x0ede),
            }
        }
        Stage::S2 => {
            // Sphere radius first, then its distance from the centre so that the segment
            // covers the drawn fraction; flatten (larger radius) until the head centre is
            // clear of the segment.
            let mut rho = r * u(rng, 0.7, 1.4);
            let mut d = r;
            for _ in 0..6 {
                let (mut lo, mut hi) = (0.0, rho + r);
                for _ in 0..30 {
                    let mid = 0.5 * (lo + hi);
                    if covered(points, r, mul(dir, mid), rho) > fraction {
                        lo = mid;
                    } else {
                        hi = mid;
                    }
                }
                d = 0.5 * (lo + hi);
                if d - rho >= 0.1 * r {
                    break;
                }
                rho = (rho * 1.3).min(3.0 * r);
            }
            // The largest fractions need an almost flat interface; keep the centre
            // clear of the segment even if the fraction comes out a little smaller.
            d = d.max(rho + 0.1 * r);
            Lesion::Segment {
                c: mul(dir, d),
                rho,
                band_in: u(rng, 2.5, 3.8),
                band_out: u(rng, 2.5, 3.8),
                bright: u(rng, 0.75, 1.0),
                dark: u(rng, 0.8, 1.0),
                mixed: if rng.random_bool(0.5) {
                    u(rng, 0.3, 0.9)
                } else {
                    0.0
                },
                wobble: u(rng, 0.2, 0.6),
                seed: mix64(seed ^ 0x5e9),
            }
        }
    }
}

/// The lesion's location: the focus, or the centroid of the segment's part of the head.
fn lesion_centroid(lesion: &Lesion, points: &[V3], r: f64) -> Option<V3> {
    match &lesion {
        Lesion::None => None,
        Lesion::Oedema { c, .. } => Some(*c),
        Lesion::Segment { c, rho, .. } => {
            let inside: Vec<V3> = points
                .iter()
                .map(|p| mul(*p, r))
                .filter(|p| len(sub(*p, *c)) < *rho)
                .collect();
            let n = inside.len().max(1) as f64;
            Some(
                inside
                    .iter()
                    .fold([0.0; 3], |acc, p| add(acc, mul(*p, 1.0 / n))),
            )
        }
    }
}

/// Benign findings (after the lesion, from the same stream): a physeal scar, and for
/// normal heads a herniation pit and bone islands.
#[allow(clippy::too_many_arguments, clippy::type_complexity)]
fn draw_benign(
    rng: &mut ChaCha8Rng,
    stage: Stage,
    s: f64,
    r: f64,
    neck_dir: V3,
    neck_r0: f64,
    sup: V3,
    ant: V3,
    seed: u64,
) -> (Option<Scar>, Option<(V3, f64)>, Option<(f64, u64)>) {
    // Benign findings. A physeal scar is common at any stage; pits and islands are drawn
    // for normal heads, where they must not be read as disease.
    let scar = rng.random_bool(0.4).then(|| {
        let tilt = M3::axis_angle([0.0, 1.0, 0.0], s * u(rng, 10.0, 25.0).to_radians());
        let normal = unit(tilt.apply(neck_dir));
        let e1 = unit(cross(normal, [0.0, 1.0, 0.0]));
        let e2 = cross(normal, e1);
        Scar {
            normal,
            e1,
            e2,
            offset: r * u(rng, 0.2, 0.42),
            amp: u(rng, 0.6, 1.4),
            wavelength: u(rng, 7.0, 13.0),
            half: u(rng, 0.4, 0.65),
            // 6.28, not TAU: the evaluation family's draws are fixed by its seeds.
            #[allow(clippy::approx_constant)]
            phase: u(rng, 0.0, 6.28),
        }
    });
    let pit = (stage == Stage::S0 && rng.random_bool(0.3)).then(|| {
        let up_ant = unit(sub(
            add(sup, ant),
            mul(neck_dir, dot(add(sup, ant), neck_dir)),
        ));
        (
            add(
                mul(neck_dir, r * u(rng, 0.95, 1.25)),
                mul(up_ant, neck_r0 * 0.62),
            ),
            u(rng, 2.5, 4.5),
        )
    });
    let islands = (stage == Stage::S0 && rng.random_bool(0.3))
        .then(|| (u(rng, 0.2, 0.4), mix64(seed ^ 0x151a)));
    (scar, pit, islands)
}

/// A pelvic bone primitive.
#[derive(Debug, Clone)]
enum Prim {
    /// Segment with radius (rami, ischium, ilium body, coccyx).
    Capsule {
        /// One end.
        a: V3,
        /// Other end.
        b: V3,
        /// Radius.
        r: f64,
    },
    /// Axis-aligned ellipsoid (symphyseal bodies, tuberosities).
    Ellipsoid {
        /// Centre.
        c: V3,
        /// Semi-axes.
        ax: V3,
    },
    /// Acetabular wall: spherical shell about a head centre, within a cone.
    Cup {
        /// Head centre.
        c: V3,
        /// Deepest direction of the cup.
        axis: V3,
        /// Cosine of the coverage half-angle.
        cos: f64,
        /// Inner radius (end of the joint).
        r_in: f64,
        /// Wall thickness.
        wall: f64,
    },
    /// Iliac wing: a band of an ellipsoidal bowl, clipped in height, depth and side.
    Bowl {
        /// Bowl centre.
        c: V3,
        /// Bowl semi-axes.
        ax: V3,
        /// Half thickness of the wing in the fossa.
        half: f64,
        /// Height range (acetabular region to crest).
        z: [f64; 2],
        /// Depth range (anterior to posterior spines).
        y: [f64; 2],
        /// Which side (-1 right, +1 left).
        side: f64,
        /// Medial limit (the sacrum is there instead).
        x_min: f64,
    },
    /// Sacrum: a box along `u` that narrows and thins distally.
    Wedge {
        /// Top centre (promontory).
        o: V3,
        /// Long axis, distal.
        u: V3,
        /// Thickness axis.
        w: V3,
        /// Length along `u`.
        length: f64,
        /// Half width at top and bottom.
        half_w: [f64; 2],
        /// Half thickness at top and bottom.
        half_t: [f64; 2],
    },
    /// Vertebral body or disc: cylinder along z.
    Cyl {
        /// Centre.
        c: V3,
        /// Radius.
        r: f64,
        /// Half height.
        half_h: f64,
    },
}

impl Prim {
    fn sdf(&self, p: V3) -> f64 {
        match self {
            Prim::Capsule { a, b, r } => seg(p, *a, *b).0 - r,
            Prim::Ellipsoid { c, ax } => ellipsoid(p, *c, *ax),
            Prim::Cup {
                c,
                axis,
                cos,
                r_in,
                wall,
            } => {
                let v = sub(p, *c);
                let rr = len(v).max(1e-9);
                let ca = dot(v, *axis) / rr;
                let radial = (rr - (r_in + wall * 0.5)).abs() - wall * 0.5;
                let cone = (cos - ca) * rr;
                radial.max(cone)
            }
            Prim::Bowl {
                c,
                ax,
                half,
                z,
                y,
                side,
                x_min,
            } => {
                // Thin in the iliac fossa, thickening toward the body of the ilium below.
                let up = smoothstep(z[0], z[0] + 60.0, p[2]);
                let thick = half + 4.5 * (1.0 - up);
                let d = ellipsoid(p, *c, *ax).abs() - thick;
                // Near the acetabulum the ilium is a narrow body between the anterior
                // inferior spine and the sciatic notch; the wing widens to its spines above.
                let (y0, y1) = (-35.0 + (y[0] + 35.0) * up, 55.0 + (y[1] - 55.0) * up);
                let clip = (z[0] - p[2])
                    .max(p[2] - z[1])
                    .max(y0 - p[1])
                    .max(p[1] - y1)
                    .max(x_min - side * p[0]);
                d.max(clip)
            }
            Prim::Wedge {
                o,
                u,
                w,
                length,
                half_w,
                half_t,
            } => {
                let v = sub(p, *o);
                let a = dot(v, *u);
                let t = (a / length).clamp(0.0, 1.0);
                let hw = half_w[0] + (half_w[1] - half_w[0]) * t;
                let ht = half_t[0] + (half_t[1] - half_t[0]) * t;
                let x = v[0].abs() - hw;
                let th = dot(v, *w).abs() - ht;
                x.max(th).max(-a).max(a - length)
            }
            Prim::Cyl { c, r, half_h } => {
                let v = sub(p, *c);
                ((v[0] * v[0] + v[1] * v[1]).sqrt() - r).max(v[2].abs() - half_h)
            }
        }
    }
}

/// The bony pelvis and lowest lumbar vertebra.
#[derive(Debug, Clone)]
struct Pelvis {
    /// Bone primitives (fused by smooth union) and their boxes.
    prims: Vec<(Prim, Aabb)>,
    /// Fibrocartilage (symphysis, L5/S1 disc): (primitive, box).
    discs: Vec<(Prim, Aabb)>,
    /// Head centres and joint radii: no pelvic bone inside them.
    joints: [(V3, f64); 2],
    /// Box around all of it.
    bbox: Aabb,
    /// Cortical thickness.
    cortex: f64,
}

impl Pelvis {
    fn eval(&self, q: V3) -> Option<Sample> {
        if !self.bbox.contains(q) {
            return None;
        }
        for (c, r) in self.joints {
            if dot(sub(q, c), sub(q, c)) < (r + 0.3) * (r + 0.3) {
                return None;
            }
        }
        for (p, b) in &self.discs {
            if b.contains(q) && p.sdf(q) < 0.0 {
                return Some(Sample::of(Tissue::Disc));
            }
        }
        let mut d = f64::INFINITY;
        for (p, b) in &self.prims {
            if b.contains(q) {
                d = smin(d, p.sdf(q), 5.0);
            }
        }
        if d < 0.0 {
            return Some(if d > -self.cortex {
                Sample::of(Tissue::Cortex)
            } else {
                Sample::of(Tissue::PelvicMarrow)
            });
        }
        None
    }
}

/// A tube (vessel, nerve, thecal sac) along a segment.
#[derive(Debug, Clone)]
struct Tube {
    /// One end.
    a: V3,
    /// Other end.
    b: V3,
    /// Radius.
    r: f64,
    /// What fills it.
    tissue: Tissue,
    /// Fat sheath thickness around it.
    sheath: f64,
    /// Box including the sheath.
    bbox: Aabb,
}

/// A muscle group cell seed: a segment and an offset (larger = bigger muscle).
#[derive(Debug, Clone)]
struct Muscle {
    /// Axis start.
    a: V3,
    /// Axis end.
    b: V3,
    /// Power offset: the cell's share of the space.
    offset: f64,
    /// Which muscle signal (groups differ slightly).
    tissue: Tissue,
}

/// A coarse grid over the body listing, per cell, the muscle cells that can be nearest or
/// second nearest anywhere in it (power distances are 1-Lipschitz, so a cell's candidates
/// are those within two half-diagonals of the second nearest at its centre).
#[derive(Debug, Clone)]
struct MuscleGrid {
    /// Corner of the grid (pelvis frame).
    origin: V3,
    /// Cell edge, mm.
    cell: f64,
    /// Cells along x, y, z.
    dims: [usize; 3],
    /// Start and end of each cell's list in `items`.
    spans: Vec<(u32, u32)>,
    /// Concatenated candidate lists (muscle indices).
    items: Vec<u8>,
}

impl MuscleGrid {
    /// Above this many candidates a cell falls back to all muscles.
    const MAX: usize = 12;

    fn build(muscles: &[Muscle]) -> MuscleGrid {
        let cell = 16.0;
        let origin = [-260.0, -220.0, -440.0];
        let dims = [33, 30, 56];
        let reach = cell * 3f64.sqrt();
        let mut spans = Vec::with_capacity(dims[0] * dims[1] * dims[2]);
        let mut items = Vec::new();
        let mut e: Vec<(f64, u8)> = Vec::with_capacity(muscles.len());
        for k in 0..dims[2] {
            for j in 0..dims[1] {
                for i in 0..dims[0] {
                    let c = [
                        origin[0] + (i as f64 + 0.5) * cell,
                        origin[1] + (j as f64 + 0.5) * cell,
                        origin[2] + (k as f64 + 0.5) * cell,
                    ];
                    e.clear();
                    e.extend(
                        muscles
                            .iter()
                            .enumerate()
                            .map(|(n, m)| (seg(c, m.a, m.b).0 - m.offset, n as u8)),
                    );
                    e.sort_by(|a, b| a.0.total_cmp(&b.0));
                    let limit = e.get(1).map(|x| x.0).unwrap_or(f64::INFINITY) + reach;
                    let start = items.len() as u32;
                    let n = e.iter().take_while(|x| x.0 <= limit).count();
                    if n <= Self::MAX {
                        items.extend(e.iter().take(n).map(|x| x.1));
                        spans.push((start, items.len() as u32));
                    } else {
                        spans.push((0, 0));
                    }
                }
            }
        }
        MuscleGrid {
            origin,
            cell,
            dims,
            spans,
            items,
        }
    }

    /// The candidates for `q`, or None (outside the grid or a crowded cell): try all.
    #[inline]
    fn candidates(&self, q: V3) -> Option<&[u8]> {
        let mut idx = [0usize; 3];
        for a in 0..3 {
            let f = (q[a] - self.origin[a]) / self.cell;
            if f < 0.0 || f >= self.dims[a] as f64 {
                return None;
            }
            idx[a] = f as usize;
        }
        let (s, e) = self.spans[(idx[2] * self.dims[1] + idx[1]) * self.dims[0] + idx[0]];
        if e == 0 {
            return None;
        }
        Some(&self.items[s as usize..e as usize])
    }
}

/// Hollow organs and cavities.
#[derive(Debug, Clone)]
struct Organs {
    /// Bladder ellipsoid (centre, semi-axes) and wall thickness.
    bladder: (V3, V3, f64),
    /// Box around the bladder.
    bladder_box: Aabb,
    /// Rectum and anal canal as capsules (ends, radius).
    rectum: Vec<(V3, V3, f64)>,
    /// Rectal wall thickness.
    rectum_wall: f64,
    /// Noise threshold below which rectal content is gas (how much gas).
    rectum_gas: f64,
    /// Box around the rectum.
    rectum_box: Aabb,
    /// True-pelvis fat ellipsoid (centre, semi-axes).
    cavity: (V3, V3),
    /// Bowel region: ellipsoid centre, semi-axes, lowest z, most posterior y.
    bowel: (V3, V3, f64, f64),
    /// Seed of the bowel and rectal content patterns.
    seed: u64,
}

/// One drawn pelvis, posed.
#[derive(Debug, Clone)]
pub(crate) struct Anatomy {
    /// Placement in LPS.
    pub pose: Pose,
    /// Body outline.
    pub body: Body,
    /// Right hip then left hip.
    pub hips: [Hip; 2],
    /// Bony pelvis and L5.
    pelvis: Pelvis,
    /// Bladder, rectum, cavities.
    organs: Organs,
    /// Vessels, nerves, thecal sac.
    tubes: Vec<Tube>,
    /// Muscle group cells.
    muscles: Vec<Muscle>,
    /// Which muscle cells can matter in each region (most points need only a few).
    muscle_grid: MuscleGrid,
    /// Fat plane width between muscle groups.
    plane: f64,
    /// Seed of texture fields.
    pub seed: u64,
}

fn draw_stage(rng: &mut ChaCha8Rng) -> Stage {
    match rng.random_range(0..3u32) {
        0 => Stage::S0,
        1 => Stage::S1,
        _ => Stage::S2,
    }
}

impl Anatomy {
    /// Draw a pelvis from `seed`; `stages` (right, left) overrides the drawn stages without
    /// changing anything else that is drawn.
    pub(crate) fn draw(seed: u64, stages: Option<[Stage; 2]>) -> Anatomy {
        let mut rng = ChaCha8Rng::seed_from_u64(mix64(seed ^ 0x00A7_A70A_u64));
        let drawn = [draw_stage(&mut rng), draw_stage(&mut rng)];
        let stages = stages.unwrap_or(drawn);
        let points = ball_points();

        let h = u(&mut rng, 160.0, 200.0);
        let r0 = u(&mut rng, 20.75, 26.25);
        let d_r = u(&mut rng, -0.75, 0.75);
        let radii = [(r0 - d_r).clamp(20.0, 27.0), (r0 + d_r).clamp(20.0, 27.0)];
        let centers = [
            [-h / 2.0, u(&mut rng, -2.0, 2.0), u(&mut rng, -2.0, 2.0)],
            [h / 2.0, u(&mut rng, -2.0, 2.0), u(&mut rng, -2.0, 2.0)],
        ];
        let hips = [
            Hip::draw(
                &mut rng,
                -1.0,
                centers[0],
                radii[0],
                stages[0],
                mix64(seed ^ 0x11),
                &points,
            ),
            Hip::draw(
                &mut rng,
                1.0,
                centers[1],
                radii[1],
                stages[1],
                mix64(seed ^ 0x22),
                &points,
            ),
        ];

        let habitus = u(&mut rng, 0.0, 1.0);
        let fat = 5.0 + 40.0 * (0.55 * habitus + 0.45 * rng.random::<f64>()).clamp(0.0, 1.0);
        let troch = hips[0].trochanter_extent().max(hips[1].trochanter_extent());
        let a_hip = troch + u(&mut rng, 14.0, 28.0) + 8.0 * habitus + fat;
        let yc = u(&mut rng, 0.0, 10.0);
        let b_ant = 72.0 + 25.0 * habitus + fat * (1.0 + 0.35 * habitus) - yc;
        let b_post = 116.0 + 20.0 * habitus + fat * 1.5 - yc;
        let gap = 2.0 + 25.0 * (1.0 - habitus);
        let thigh_a = (0.98 * a_hip - gap / 2.0) / 2.0;
        let body = Body {
            yc,
            a_hip,
            b_ant,
            b_post,
            z_crotch: -u(&mut rng, 85.0, 110.0),
            thigh_x0: gap / 2.0 + thigh_a,
            thigh_slope: [0, 1].map(|_| u(&mut rng, -0.05, 0.15)),
            thigh_a,
            thigh_b: 0.46 * (b_ant + b_post),
            thigh_yc: yc + 0.25 * (b_post - b_ant),
            fat,
            habitus,
            skin: u(&mut rng, 1.2, 2.2),
        };

        let pelvis = Self::draw_pelvis(&mut rng, &hips, h);
        let organs = Self::draw_organs(&mut rng, h, mix64(seed ^ 0x0b0e));
        let tubes = Self::draw_tubes(&mut rng, h);
        let muscles = Self::draw_muscles(h);

        let tilt = u(&mut rng, -8.0, 8.0).to_radians();
        let yaw = u(&mut rng, -6.0, 6.0).to_radians();
        let obl = u(&mut rng, -4.0, 4.0).to_radians();
        let rot = M3::axis_angle([1.0, 0.0, 0.0], tilt)
            .then(&M3::axis_angle([0.0, 1.0, 0.0], obl))
            .then(&M3::axis_angle([0.0, 0.0, 1.0], yaw));
        let shift = [
            u(&mut rng, -30.0, 30.0),
            u(&mut rng, -30.0, 30.0),
            u(&mut rng, -30.0, 30.0),
        ];
        let pose = Pose {
            rot,
            inv: rot.transpose(),
            shift,
        };
        Anatomy {
            pose,
            body,
            hips,
            pelvis,
            organs,
            tubes,
            muscle_grid: MuscleGrid::build(&muscles),
            muscles,
            plane: u(&mut rng, 1.0, 2.2),
            seed: mix64(seed ^ 0x7e47),
        }
    }

    fn draw_pelvis(rng: &mut ChaCha8Rng, hips: &[Hip; 2], h: f64) -> Pelvis {
        let mut prims = Vec::new();
        let mut discs = Vec::new();
        let crest = u(rng, 105.0, 135.0);
        let y_sym = u(rng, -60.0, -48.0);
        let z_sym = u(rng, -32.0, -20.0);
        let sacrum_top = [0.0, u(rng, 55.0, 70.0), u(rng, 92.0, 108.0)];
        let sacral_slope = u(rng, 28.0, 42.0).to_radians();
        let su = [0.0, sacral_slope.sin(), -sacral_slope.cos()];
        let sw = cross([1.0, 0.0, 0.0], su);
        for hip in hips {
            let s = hip.sign;
            let c = hip.center;
            let rj = hip.r_joint;
            prims.push(Prim::Cup {
                c,
                axis: hip.cup_axis,
                cos: hip.cup_cos,
                r_in: rj,
                wall: hip.cup_wall,
            });
            let sij = [
                s * u(rng, 40.0, 50.0),
                sacrum_top[1] + 18.0,
                sacrum_top[2] - 15.0,
            ];
            prims.push(Prim::Capsule {
                a: add(c, mul(unit([-s * 0.3, 0.2, 1.0]), rj + 8.0)),
                b: sij,
                r: u(rng, 13.0, 17.0),
            });
            // Supra-acetabular pillar: the thick ilium between the roof and the wing.
            prims.push(Prim::Capsule {
                a: add(c, mul(unit([-s * 0.15, 0.05, 1.0]), rj + 5.0)),
                b: [
                    s * (h / 2.0 + u(rng, 22.0, 32.0)),
                    u(rng, -10.0, 5.0),
                    u(rng, 60.0, 80.0),
                ],
                r: u(rng, 10.0, 14.0),
            });
            prims.push(Prim::Bowl {
                c: [0.0, -10.0, crest],
                ax: [h / 2.0 + u(rng, 35.0, 50.0), 100.0, 160.0],
                half: u(rng, 2.5, 4.0),
                z: [20.0, crest],
                y: [-75.0, 85.0],
                side: s,
                x_min: 28.0,
            });
            let p_sym = [s * 4.0, y_sym, z_sym];
            prims.push(Prim::Capsule {
                a: add(c, mul(unit([-s * 0.45, -0.75, -0.3]), rj + 5.0)),
                b: p_sym,
                r: u(rng, 8.5, 11.0),
            });
            prims.push(Prim::Ellipsoid {
                c: [s * 11.0, y_sym + 2.0, z_sym - 10.0],
                ax: [9.0, 9.0, 20.0],
            });
            let tub = [
                s * (h / 2.0 - u(rng, 18.0, 28.0)),
                u(rng, 28.0, 40.0),
                u(rng, -62.0, -50.0),
            ];
            prims.push(Prim::Capsule {
                a: [s * 9.0, y_sym + 6.0, z_sym - 24.0],
                b: tub,
                r: u(rng, 6.5, 8.5),
            });
            prims.push(Prim::Capsule {
                a: add(c, mul(unit([s * 0.05, 0.5, -0.86]), rj + 6.0)),
                b: tub,
                r: u(rng, 11.0, 14.0),
            });
            prims.push(Prim::Ellipsoid {
                c: add(tub, [0.0, 5.0, -6.0]),
                ax: [13.0, 18.0, 14.0],
            });
        }
        discs.push(Prim::Ellipsoid {
            c: [0.0, y_sym + 2.0, z_sym - 10.0],
            ax: [2.2, 8.0, 18.0],
        });
        prims.push(Prim::Wedge {
            o: sacrum_top,
            u: su,
            w: sw,
            length: u(rng, 95.0, 115.0),
            half_w: [u(rng, 45.0, 55.0), 18.0],
            half_t: [u(rng, 14.0, 18.0), 7.0],
        });
        let s_bot = add(sacrum_top, mul(su, 105.0));
        prims.push(Prim::Capsule {
            a: s_bot,
            b: add(s_bot, [0.0, -8.0, -30.0]),
            r: 5.5,
        });
        let l5 = add(sacrum_top, [0.0, -6.0, 30.0]);
        prims.push(Prim::Cyl {
            c: l5,
            r: u(rng, 22.0, 26.0),
            half_h: 13.0,
        });
        discs.push(Prim::Cyl {
            c: add(sacrum_top, [0.0, -4.0, 10.0]),
            r: 22.0,
            half_h: 5.0,
        });
        // Fillets reach a little beyond each primitive.
        let boxed = |p: Prim| {
            let b = prim_bounds(&p).grow(3.0);
            (p, b)
        };
        let prims: Vec<(Prim, Aabb)> = prims.into_iter().map(boxed).collect();
        let discs: Vec<(Prim, Aabb)> = discs.into_iter().map(boxed).collect();
        let bbox = prims.iter().fold(Aabb::EMPTY, |acc, (_, b)| acc.union(*b));
        Pelvis {
            prims,
            discs,
            joints: [
                (hips[0].center, hips[0].r_joint),
                (hips[1].center, hips[1].r_joint),
            ],
            bbox,
            cortex: u(rng, 1.3, 2.0),
        }
    }

    fn draw_organs(rng: &mut ChaCha8Rng, h: f64, seed: u64) -> Organs {
        let fill = u(rng, 0.0, 1.0);
        let ax = [20.0 + 45.0 * fill, 14.0 + 32.0 * fill, 10.0 + 40.0 * fill];
        let base_z = u(rng, -38.0, -28.0);
        let c = [u(rng, -6.0, 6.0), -28.0 + 6.0 * fill, base_z + ax[2]];
        let wall = 4.0 - 2.2 * fill;
        let rr = u(rng, 9.0, 18.0);
        let pts = [
            [u(rng, -8.0, 8.0), 72.0, 62.0],
            [u(rng, -5.0, 5.0), 84.0, 12.0],
            [0.0, 62.0, -36.0],
            [0.0, 42.0, -66.0],
        ];
        let rectum = vec![
            (pts[0], pts[1], rr * 0.85),
            (pts[1], pts[2], rr),
            (pts[2], pts[3], rr * 0.45),
        ];
        let rectum_box = rectum.iter().fold(Aabb::EMPTY, |acc, (a, b, r)| {
            acc.union(Aabb::capsule(*a, *b, *r))
        });
        Organs {
            bladder: (c, ax, wall),
            bladder_box: Aabb::around(c, ax).grow(1.0),
            rectum,
            rectum_wall: u(rng, 2.0, 3.5),
            rectum_gas: u(rng, -0.2, 0.6),
            rectum_box,
            cavity: ([0.0, 30.0, -5.0], [h / 2.0 - 30.0, 62.0, 50.0]),
            bowel: (
                [0.0, -15.0, 175.0],
                [h / 2.0 - 25.0, 85.0, 135.0],
                40.0,
                25.0,
            ),
            seed,
        }
    }

    fn draw_tubes(rng: &mut ChaCha8Rng, h: f64) -> Vec<Tube> {
        let mut out = Vec::new();
        let mut push = |pts: &[V3], r: f64, tissue: Tissue, sheath: f64| {
            for w in pts.windows(2) {
                out.push(Tube {
                    a: w[0],
                    b: w[1],
                    r,
                    tissue,
                    sheath,
                    bbox: Aabb::capsule(w[0], w[1], r + sheath),
                });
            }
        };
        for s in [-1.0, 1.0] {
            let hx = h / 2.0;
            let art = [
                [s * 30.0, 25.0, 160.0],
                [s * 45.0, 10.0, 100.0],
                [s * (hx - 18.0), -38.0, 15.0],
                [s * (hx - 8.0), -32.0, -150.0],
                [s * (hx - 2.0), -15.0, -320.0],
            ];
            let ra = u(rng, 3.2, 4.5);
            push(&art, ra, Tissue::Artery, 1.8);
            let vein: Vec<V3> = art
                .iter()
                .map(|p| add(*p, [-s * (ra + 6.5), 3.0, 0.0]))
                .collect();
            push(&vein, u(rng, 4.5, 6.5), Tissue::Vein, 1.5);
            let nerve = [
                [s * 40.0, 85.0, 60.0],
                [s * (hx - 8.0), 58.0, -10.0],
                [s * (hx + 2.0), 50.0, -200.0],
                [s * (hx + 4.0), 45.0, -320.0],
            ];
            push(&nerve, u(rng, 4.0, 6.0), Tissue::Nerve, 2.0);
        }
        push(
            &[[0.0, 88.0, 230.0], [0.0, 85.0, 110.0]],
            7.5,
            Tissue::Csf,
            1.0,
        );
        out
    }

    fn draw_muscles(h: f64) -> Vec<Muscle> {
        use Tissue::*;
        let hx = h / 2.0;
        let mut out = Vec::new();
        for s in [-1.0, 1.0] {
            let mut m = |a: V3, b: V3, offset: f64, tissue: Tissue| {
                out.push(Muscle {
                    a: [s * a[0], a[1], a[2]],
                    b: [s * b[0], b[1], b[2]],
                    offset,
                    tissue,
                })
            };
            m([50.0, 118.0, 70.0], [hx + 40.0, 78.0, -70.0], 20.0, MuscleA); // gluteus maximus
            m(
                [hx + 10.0, 25.0, 120.0],
                [hx + 45.0, 10.0, 25.0],
                12.0,
                MuscleB,
            ); // gluteus medius
            m(
                [hx + 5.0, -2.0, 85.0],
                [hx + 25.0, -8.0, 35.0],
                5.0,
                MuscleC,
            ); // gluteus minimus
            m([30.0, 45.0, 200.0], [hx - 25.0, -25.0, 20.0], 9.0, MuscleD); // iliopsoas (upper)
            m(
                [hx - 25.0, -25.0, 20.0],
                [hx - 10.0, 5.0, -45.0],
                9.0,
                MuscleD,
            ); // iliopsoas (lower)
            m(
                [hx - 40.0, 40.0, -10.0],
                [hx - 35.0, 55.0, -30.0],
                3.0,
                MuscleB,
            ); // obturator internus
            m(
                [hx - 10.0, 45.0, -25.0],
                [hx + 20.0, 35.0, -35.0],
                4.0,
                MuscleC,
            ); // short rotators
            m([32.0, 5.0, -55.0], [62.0, 15.0, -320.0], 15.0, MuscleA); // adductors
            m(
                [hx + 25.0, -10.0, -30.0],
                [hx + 5.0, -15.0, -320.0],
                18.0,
                MuscleC,
            ); // vasti
            m(
                [hx + 25.0, -58.0, 40.0],
                [hx - 5.0, -58.0, -260.0],
                8.0,
                MuscleB,
            ); // rectus femoris, sartorius
            m([hx - 15.0, 58.0, -60.0], [hx, 55.0, -320.0], 12.0, MuscleD); // hamstrings
            m([35.0, -98.0, 260.0], [15.0, -88.0, -15.0], 6.0, MuscleA); // rectus abdominis
            m(
                [hx + 30.0, -40.0, 260.0],
                [hx + 40.0, -20.0, 130.0],
                5.0,
                MuscleC,
            ); // abdominal wall
            m([35.0, 125.0, 260.0], [25.0, 130.0, 110.0], 12.0, MuscleB); // erector spinae
            m([20.0, 40.0, -52.0], [40.0, 0.0, -48.0], 3.0, MuscleD); // levator ani
        }
        out
    }

    /// The tissue at LPS point `p`.
    #[cfg(test)]
    pub(crate) fn eval(&self, p: V3) -> Sample {
        self.eval_pelvis(self.pose.to_pelvis(p))
    }

    /// The tissue at pelvis-frame point `q`.
    pub(crate) fn eval_pelvis(&self, q: V3) -> Sample {
        let b = &self.body;
        let d_body = b.sdf(q);
        if d_body > 0.0 {
            return Sample::of(Tissue::Air);
        }
        if d_body > -b.skin {
            return Sample::of(Tissue::Skin);
        }
        for hip in &self.hips {
            if let Some(s) = hip.eval(q) {
                return s;
            }
        }
        if let Some(s) = self.pelvis.eval(q) {
            return s;
        }
        if d_body > -b.fat_at(q) {
            return Sample::of(Tissue::SubcutFat);
        }
        let o = &self.organs;
        if o.bladder_box.contains(q) {
            let (c, ax, wall) = o.bladder;
            let d = ellipsoid(q, c, ax);
            if d < -wall {
                return Sample::of(Tissue::Urine);
            }
            if d < 0.0 {
                return Sample::of(Tissue::BladderWall);
            }
        }
        if o.rectum_box.contains(q) {
            let mut best = f64::INFINITY;
            for (a, bb, r) in &o.rectum {
                best = best.min(seg(q, *a, *bb).0 - r);
            }
            if best < 0.0 {
                if best > -o.rectum_wall {
                    return Sample::of(Tissue::GutWall);
                }
                let n = vnoise(mul(q, 1.0 / 9.0), o.seed ^ 3);
                return Sample::of(if n < o.rectum_gas {
                    Tissue::Gas
                } else {
                    Tissue::Stool
                });
            }
        }
        for t in &self.tubes {
            if t.bbox.contains(q) {
                let d = seg(q, t.a, t.b).0;
                if d < t.r {
                    return Sample::of(t.tissue);
                }
                if d < t.r + t.sheath {
                    return Sample::of(Tissue::PelvicFat);
                }
            }
        }
        let (cc, cax) = o.cavity;
        if ellipsoid(q, cc, cax) < 0.0 {
            return Sample::of(Tissue::PelvicFat);
        }
        let (bc, bax, zmin, ymax) = o.bowel;
        // Narrow between the iliac wings, filling the abdomen from flank to flank above.
        let widen = 55.0 * smoothstep(90.0, 150.0, q[2]);
        if q[2] > zmin && q[1] < ymax && ellipsoid(q, bc, [bax[0] + widen, bax[1], bax[2]]) < 0.0 {
            // Loops: the zero set of smooth noise is the bowel wall, one side lumen, the
            // other mesenteric fat; lumen mostly collapsed or semi-solid, some fluid, a
            // little gas.
            let n = vnoise(mul(q, 1.0 / 20.0), o.seed);
            if n.abs() < 0.045 {
                return Sample::of(Tissue::GutWall);
            }
            if n > 0.0 {
                let g = vnoise(mul(q, 1.0 / 11.0), o.seed ^ 5);
                return Sample::of(if g > 0.62 {
                    Tissue::Gas
                } else if g > 0.2 {
                    Tissue::BowelFluid
                } else {
                    Tissue::Stool
                });
            }
            return Sample::of(Tissue::PelvicFat);
        }
        let (mut d1, mut d2, mut best) = (f64::INFINITY, f64::INFINITY, Tissue::MuscleA);
        const ALL: [u8; 64] = {
            let mut a = [0u8; 64];
            let mut i = 0;
            while i < 64 {
                a[i] = i as u8;
                i += 1;
            }
            a
        };
        let candidates = self
            .muscle_grid
            .candidates(q)
            .unwrap_or(&ALL[..self.muscles.len().min(64)]);
        for m in candidates.iter().map(|&i| &self.muscles[i as usize]) {
            let d = seg(q, m.a, m.b).0 - m.offset;
            if d < d1 {
                d2 = d1;
                d1 = d;
                best = m.tissue;
            } else if d < d2 {
                d2 = d;
            }
        }
        if d2 - d1 < self.plane {
            return Sample::of(Tissue::PelvicFat);
        }
        Sample::of(best)
    }

    /// Head centre in LPS, side 0 = right.
    pub(crate) fn head_center_lps(&self, side: usize) -> V3 {
        self.pose.to_lps(self.hips[side].center)
    }

    /// Lesion location, and the sphere that defines the lesion, in LPS.
    pub(crate) fn lesion_lps(&self, side: usize) -> Option<(V3, V3, f64)> {
        let hip = &self.hips[side];
        let (c, r) = hip.lesion_sphere()?;
        let at = hip.lesion_center()?;
        Some((self.pose.to_lps(at), self.pose.to_lps(c), r))
    }

    /// Anterior and posterior body surface (pelvis-frame y) and half-width, for coils.
    pub(crate) fn body_extent(&self) -> (f64, f64, f64) {
        let b = &self.body;
        (b.yc - b.b_ant, b.yc + b.b_post, b.a_hip)
    }

    /// A pelvis-frame point a fraction `t` of the way between the head centres.
    pub(crate) fn between_heads(&self, t: f64) -> V3 {
        lerp3(self.hips[0].center, self.hips[1].center, t)
    }
}

/// The box a primitive fits in.
fn prim_bounds(p: &Prim) -> Aabb {
    match p {
        Prim::Capsule { a, b, r } => Aabb::capsule(*a, *b, *r),
        Prim::Ellipsoid { c, ax } => Aabb::around(*c, *ax),
        Prim::Cup { c, r_in, wall, .. } => Aabb::around(*c, [r_in + wall; 3]),
        Prim::Bowl {
            c,
            ax,
            half,
            z,
            y,
            side,
            ..
        } => {
            let x_hi = ax[0] + half + 4.5;
            Aabb {
                lo: [if *side > 0.0 { 0.0 } else { c[0] - x_hi }, y[0], z[0]],
                hi: [if *side > 0.0 { c[0] + x_hi } else { 0.0 }, y[1], z[1]],
            }
        }
        Prim::Wedge {
            o,
            u,
            length,
            half_w,
            half_t,
            ..
        } => Aabb::capsule(*o, add(*o, mul(*u, *length)), half_w[0].max(half_t[0])),
        Prim::Cyl { c, r, half_h } => Aabb::around(*c, [*r, *r, *half_h]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_are_marrow_inside_and_sides_are_right() {
        for seed in 0..6 {
            let a = Anatomy::draw(seed, Some([Stage::S0, Stage::S2]));
            let [r, l] = [a.head_center_lps(0), a.head_center_lps(1)];
            assert!(r[0] < l[0], "right head must have the more negative x");
            let sep = len(sub(l, r));
            assert!((155.0..=205.0).contains(&sep), "{sep}");
            let s = a.eval(r);
            assert_eq!(s.a, Tissue::YellowMarrow, "{s:?}");
            // Well outside the body is air.
            assert_eq!(a.eval([600.0, 0.0, 0.0]).a, Tissue::Air);
            // The lesion sphere of stage II clears the head centre; the recorded lesion
            // location lies in the head, inside the segment.
            let (c, rho) = a.hips[1].lesion_sphere().unwrap();
            assert!(len(sub(c, a.hips[1].center)) - rho > 2.0);
            let at = a.hips[1].lesion_center().unwrap();
            assert!(len(sub(at, a.hips[1].center)) < a.hips[1].radius);
            assert!(len(sub(at, c)) < rho);
        }
    }
}
