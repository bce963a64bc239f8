//! Small geometry, hashing and noise helpers for the evaluation phantom.
//!
//! Kept here (rather than shared with the training phantom) so that the two renderers
//! share no code beyond the truth types.

pub(crate) type V3 = [f64; 3];

#[inline]
pub(crate) fn add(a: V3, b: V3) -> V3 {
    [a[0] + b[0], a[1] + b[1], a[2] + b[2]]
}

#[inline]
pub(crate) fn sub(a: V3, b: V3) -> V3 {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2]]
}

#[inline]
pub(crate) fn mul(a: V3, s: f64) -> V3 {
    [a[0] * s, a[1] * s, a[2] * s]
}

#[inline]
pub(crate) fn dot(a: V3, b: V3) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

#[inline]
pub(crate) fn cross(a: V3, b: V3) -> V3 {
    [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}

#[inline]
pub(crate) fn len(a: V3) -> f64 {
    dot(a, a).sqrt()
}

#[inline]
pub(crate) fn unit(a: V3) -> V3 {
    let l = len(a);
    if l > 0.0 { mul(a, 1.0 / l) } else { a }
}

/// `a + (b - a) t`.
#[inline]
pub(crate) fn lerp3(a: V3, b: V3, t: f64) -> V3 {
    add(a, mul(sub(b, a), t))
}

/// A 3x3 matrix, rows first.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct M3(
    /// Rows.
    pub [[f64; 3]; 3],
);

impl M3 {
    #[inline]
    pub(crate) fn apply(&self, v: V3) -> V3 {
        let m = &self.0;
        [dot(m[0], v), dot(m[1], v), dot(m[2], v)]
    }

    pub(crate) fn transpose(&self) -> M3 {
        let m = &self.0;
        M3([
            [m[0][0], m[1][0], m[2][0]],
            [m[0][1], m[1][1], m[2][1]],
            [m[0][2], m[1][2], m[2][2]],
        ])
    }

    pub(crate) fn then(&self, after: &M3) -> M3 {
        // after · self
        let (a, b) = (&after.0, &self.0);
        let mut out = [[0.0; 3]; 3];
        for (r, row) in out.iter_mut().enumerate() {
            for (c, v) in row.iter_mut().enumerate() {
                *v = (0..3).map(|k| a[r][k] * b[k][c]).sum();
            }
        }
        M3(out)
    }

    /// Rotation by `angle` radians about the unit `axis` (right-handed).
    pub(crate) fn axis_angle(axis: V3, angle: f64) -> M3 {
        let [x, y, z] = unit(axis);
        let (s, c) = angle.sin_cos();
        let t = 1.0 - c;
        M3([
            [t * x * x + c, t * x * y - s * z, t * x * z + s * y],
            [t * x * y + s * z, t * y * y + c, t * y * z - s * x],
            [t * x * z - s * y, t * y * z + s * x, t * z * z + c],
        ])
    }
}

#[inline]
pub(crate) fn smoothstep(e0: f64, e1: f64, x: f64) -> f64 {
    let t = ((x - e0) / (e1 - e0)).clamp(0.0, 1.0);
    t * t * (3.0 - 2.0 * t)
}

/// Polynomial smooth minimum: joins bones with fillets of about `k` mm.
#[inline]
pub(crate) fn smin(a: f64, b: f64, k: f64) -> f64 {
    let h = (k - (a - b).abs()).max(0.0) / k;
    a.min(b) - h * h * k * 0.25
}

/// Distance from `p` to the segment `a`-`b`, and the segment parameter of the nearest point.
#[inline]
pub(crate) fn seg(p: V3, a: V3, b: V3) -> (f64, f64) {
    let ab = sub(b, a);
    let ap = sub(p, a);
    let l2 = dot(ab, ab);
    let t = if l2 > 0.0 {
        (dot(ap, ab) / l2).clamp(0.0, 1.0)
    } else {
        0.0
    };
    (len(sub(ap, mul(ab, t))), t)
}

/// Approximate signed distance to an axis-aligned ellipsoid (first-order, good near the
/// surface where partial volume is decided).
#[inline]
pub(crate) fn ellipsoid(p: V3, c: V3, ax: V3) -> f64 {
    let d = sub(p, c);
    let q = [d[0] / ax[0], d[1] / ax[1], d[2] / ax[2]];
    let k = len(q);
    if k < 1e-9 {
        return -ax[0].min(ax[1]).min(ax[2]);
    }
    let g = [q[0] / ax[0] / k, q[1] / ax[1] / k, q[2] / ax[2] / k];
    (k - 1.0) / len(g).max(1e-9)
}

/// Axis-aligned box used to skip structures far from a point.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Aabb {
    /// Lowest corner.
    pub lo: V3,
    /// Highest corner.
    pub hi: V3,
}

impl Aabb {
    pub(crate) const EMPTY: Aabb = Aabb {
        lo: [f64::INFINITY; 3],
        hi: [f64::NEG_INFINITY; 3],
    };

    pub(crate) fn around(c: V3, r: V3) -> Aabb {
        Aabb {
            lo: sub(c, r),
            hi: add(c, r),
        }
    }

    pub(crate) fn capsule(a: V3, b: V3, r: f64) -> Aabb {
        Aabb {
            lo: [0, 1, 2].map(|i| a[i].min(b[i]) - r),
            hi: [0, 1, 2].map(|i| a[i].max(b[i]) + r),
        }
    }

    pub(crate) fn union(self, o: Aabb) -> Aabb {
        Aabb {
            lo: [0, 1, 2].map(|i| self.lo[i].min(o.lo[i])),
            hi: [0, 1, 2].map(|i| self.hi[i].max(o.hi[i])),
        }
    }

    pub(crate) fn grow(self, m: f64) -> Aabb {
        Aabb {
            lo: self.lo.map(|v| v - m),
            hi: self.hi.map(|v| v + m),
        }
    }

    #[inline]
    pub(crate) fn contains(&self, p: V3) -> bool {
        p[0] >= self.lo[0]
            && p[0] <= self.hi[0]
            && p[1] >= self.lo[1]
            && p[1] <= self.hi[1]
            && p[2] >= self.lo[2]
            && p[2] <= self.hi[2]
    }
}

/// SplitMix64 finaliser: a good 64-bit mix for hashing seeds and lattice points.
#[inline]
pub(crate) fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A fast generator for image noise (millions of draws per series), seeded per slice so
/// that parallel rendering stays deterministic.
pub(crate) struct FastRng(
    /// SplitMix64 state.
    u64,
);

impl FastRng {
    pub(crate) fn new(seed: u64) -> Self {
        FastRng(mix64(seed))
    }

    #[inline]
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Unit-variance, zero-mean and close to Gaussian: the sum of four 16-bit uniforms
    /// (Irwin-Hall), one 64-bit draw per value.
    #[inline]
    pub(crate) fn gauss(&mut self) -> f32 {
        let r = self.next_u64();
        let s = (r & 0xFFFF) + ((r >> 16) & 0xFFFF) + ((r >> 32) & 0xFFFF) + (r >> 48);
        // Mean 2 * 65535, variance 4 * 65536^2 / 12.
        ((s as f32) / 65536.0 - 2.0) * 1.732_050_8
    }
}

#[inline]
fn lattice(i: i64, j: i64, k: i64, seed: u64) -> f64 {
    let h = mix64(
        seed ^ (i as u64).wrapping_mul(0x8CB9_2BA7_2F3D_8DD7)
            ^ (j as u64).wrapping_mul(0xD6E8_FEB8_6659_FD93)
            ^ (k as u64).wrapping_mul(0xA076_1D64_78BD_642F),
    );
    (h >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
}

/// Smooth value noise in [-1, 1] with unit lattice spacing: the ill-defined edges of oedema,
/// the patches of a mixed necrotic segment, marrow islands and tissue texture.
pub(crate) fn vnoise(p: V3, seed: u64) -> f64 {
    let f = p.map(f64::floor);
    let (i, j, k) = (f[0] as i64, f[1] as i64, f[2] as i64);
    let w = [0, 1, 2].map(|a| {
        let t = p[a] - f[a];
        t * t * (3.0 - 2.0 * t)
    });
    let mut acc = 0.0;
    for dz in 0..2 {
        for dy in 0..2 {
            for dx in 0..2 {
                let wt = (if dx == 1 { w[0] } else { 1.0 - w[0] })
                    * (if dy == 1 { w[1] } else { 1.0 - w[1] })
                    * (if dz == 1 { w[2] } else { 1.0 - w[2] });
                acc += wt * lattice(i + dx, j + dy, k + dz, seed);
            }
        }
    }
    acc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_and_noise_are_sane() {
        let r = M3::axis_angle([0.0, 0.0, 1.0], std::f64::consts::FRAC_PI_2);
        let v = r.apply([1.0, 0.0, 0.0]);
        assert!((v[1] - 1.0).abs() < 1e-12 && v[0].abs() < 1e-12);
        let back = r.transpose().apply(v);
        assert!((back[0] - 1.0).abs() < 1e-12);
        let mut g = FastRng::new(5);
        let n = 20000;
        let xs: Vec<f32> = (0..n).map(|_| g.gauss()).collect();
        let mean = xs.iter().sum::<f32>() / n as f32;
        let var = xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f32>() / n as f32;
        assert!(
            mean.abs() < 0.03 && (var - 1.0).abs() < 0.05,
            "{mean} {var}"
        );
        let a = vnoise([0.3, 1.7, -2.2], 9);
        assert!((-1.0..=1.0).contains(&a));
        assert!(ellipsoid([2.0, 0.0, 0.0], [0.0; 3], [1.0, 2.0, 3.0]) > 0.9);
    }
}
