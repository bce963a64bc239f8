//! Where exactly a detected femoral head is: the sphere that best fits the image's edges
//! near a detection.
//!
//! The detector sees the study at 3-4 mm voxels and, on scanners unlike its training
//! phantom, can put a head's centre 10-35 mm off (on the acetabular rim, or part-way to
//! the trochanter) while still finding the head. A femoral head is close to a sphere with
//! an edge all round it (cortex, cartilage and joint fluid against marrow) whatever the
//! contrast: bright or dark marrow, fat-suppressed or not. [`refine`] resamples the
//! assembled T2 around the detection at 1.5 mm, and searches centres within
//! [`SEARCH_MM`] and radii [`RADII_MM`] for the sphere whose surface crosses the strongest
//! edges in most directions. The score of a sphere is the median
//! ([`EDGE_QUANTILE`]) over directions (128 in the coarse search, 256 in the fine one) of |∇I · n| (the intensity gradient along the
//! sphere's normal, in units of the local intensity range per mm), so one strong partial
//! edge — a lesion's demarcation line, the bladder wall — cannot outweigh a whole head;
//! and it is weighed by a Gaussian prior of [`PRIOR_SIGMA_MM`] on the distance from the
//! detection, so the detector still decides which head it is.
//!
//! The constants were set on domain-randomised and classic phantom validation studies,
//! never on the external evaluation family; see ARCHITECTURE.md. The centre moves at most
//! 24 mm along each axis in the coarse search, 26 mm with the final 1 mm steps.
//!
//! [`locate_heads`] is the one rule, used by the pipeline and the evaluation alike, that
//! turns the detector's candidates into the two heads, asking the image at each step: the
//! pair `detector::pair_heads` chooses, when both fits are head-sized spheres of the same
//! size and the image around one mirrors the image around the other ([`symmetry`]: a
//! pelvis is bilaterally symmetric, a head and a bowel loop are not), or that mirror and
//! lie as two heads do whatever their fits' sizes — or, when two same-sized fits do not
//! mirror, a pair of candidates that does; otherwise the best-scoring pair of
//! candidates the image confirms (a confident head and another, possibly a weak
//! *partner*, where the other head must lie); otherwise
//! the other head looked for in the image alone where it must lie beside a confident head
//! (a *mirror* head); otherwise the detector's pair as it was.
//!
//! Geometry and intensities only: it never changes a detection's score, takes a head in the
//! image only beside a confident detection, and knows nothing of stages.

use crate::model::detector::Detection;
use crate::volume::{V3, Volume, sample};

/// How far from the detection the centre may move along each axis, mm.
pub const SEARCH_MM: f64 = 24.0;
/// Radii tried, mm (adult femoral heads are 20-27 mm in radius).
pub const RADII_MM: (f64, f64) = (17.0, 31.0);
/// The quantile, over directions, of the radial edge strength that scores a sphere.
pub const EDGE_QUANTILE: f64 = 0.5;
/// Standard deviation of the Gaussian prior on the distance from the detection, mm.
pub const PRIOR_SIGMA_MM: f64 = 15.0;
/// Sampling step of the local grid, mm.
const STEP_MM: f64 = 1.5;
/// Coarse search step of centres, mm.
const COARSE_MM: f64 = 3.0;
/// Coarse search step of radii, mm.
const COARSE_RADIUS_MM: f64 = 2.0;
/// Directions on the sphere: the coarse search, and the fine one.
const DIRECTIONS: (usize, usize) = (128, 256);

/// The sphere found near a detection.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SphereFit {
    /// Centre, patient LPS mm.
    pub center_lps_mm: V3,
    /// Radius, mm.
    pub radius_mm: f64,
    /// Its edge score (before the prior): the [`EDGE_QUANTILE`] of |∇I · n| over
    /// directions, per mm, relative to the local intensity range.
    pub edge: f64,
    /// How far the centre moved from the detection, mm.
    pub moved_mm: f64,
}

/// The best sphere near `start` (a detection's centre) in the assembled volume `v`.
/// Where nothing is better than the start (no edges at all), the start is kept.
pub fn refine(v: &Volume, start: V3) -> SphereFit {
    // Half the local grid's side, a whole number of steps: the search, the largest radius
    // and a margin for the fine search and the gradient's neighbours.
    let half = ((SEARCH_MM + RADII_MM.1 + 4.0 * STEP_MM) / STEP_MM).ceil() * STEP_MM;
    let local = Gradients::around(v, start, half);
    let dirs = fibonacci_sphere(DIRECTIONS.1);
    let mut scratch = Vec::with_capacity(DIRECTIONS.1);
    let weigh = |c: V3, edge: f64| edge * prior(dist(c, start));
    let mid = (RADII_MM.0 + RADII_MM.1) / 2.0;
    let (mut best_c, mut best_r) = (start, mid);
    let mut best_edge = local.edge(start, mid, &dirs, &mut scratch);
    let mut best = weigh(start, best_edge);
    // Coarse: centres on every other grid point (3 mm), radii every 2 mm, each sphere's
    // surface as precomputed grid offsets.
    let cells = (COARSE_MM / STEP_MM).round() as isize;
    let n = (SEARCH_MM / COARSE_MM).round() as isize;
    let radii = ((RADII_MM.1 - RADII_MM.0) / COARSE_RADIUS_MM).round() as usize;
    let shells: Vec<(f64, Shell)> = (0..=radii)
        .map(|k| {
            let r = RADII_MM.0 + k as f64 * COARSE_RADIUS_MM;
            (r, Shell::new(r, &fibonacci_sphere(DIRECTIONS.0), local.n))
        })
        .collect();
    let m = (local.n / 2) as isize;
    for a in -n..=n {
        for b in -n..=n {
            for c in -n..=n {
                let idx = [m + a * cells, m + b * cells, m + c * cells];
                let p = idx.map(|x| x as f64 * STEP_MM);
                let p = [0, 1, 2].map(|i| local.origin[i] + p[i]);
                let base =
                    ((idx[2] * local.n as isize + idx[1]) * local.n as isize + idx[0]) as usize;
                for (r, shell) in &shells {
                    let edge = local.shell_edge(base, shell, &mut scratch);
                    let s = weigh(p, edge);
                    if s > best {
                        (best, best_edge, best_c, best_r) = (s, edge, p, *r);
                    }
                }
            }
        }
    }
    // Fine: 1 mm steps around the coarse optimum.
    let (coarse_c, coarse_r) = (best_c, best_r);
    for a in -2..=2 {
        for b in -2..=2 {
            for c in -2..=2 {
                let p = [
                    coarse_c[0] + a as f64,
                    coarse_c[1] + b as f64,
                    coarse_c[2] + c as f64,
                ];
                for dr in -2..=2 {
                    let r = (coarse_r + dr as f64).clamp(RADII_MM.0, RADII_MM.1);
                    let edge = local.edge(p, r, &dirs, &mut scratch);
                    let s = weigh(p, edge);
                    if s > best {
                        (best, best_edge, best_c, best_r) = (s, edge, p, r);
                    }
                }
            }
        }
    }
    SphereFit {
        center_lps_mm: best_c,
        radius_mm: best_r,
        edge: best_edge,
        moved_mm: dist(best_c, start),
    }
}

/// A sphere's surface on the local grid: for each direction, the offset of the nearest
/// grid point from the centre's, and the direction.
struct Shell {
    offsets: Vec<isize>,
    normals: Vec<[f32; 3]>,
}

impl Shell {
    fn new(r: f64, dirs: &[V3], n: usize) -> Shell {
        let n = n as isize;
        let offsets = dirs
            .iter()
            .map(|u| {
                let d = u.map(|x| (r * x / STEP_MM).round() as isize);
                (d[2] * n + d[1]) * n + d[0]
            })
            .collect();
        let normals = dirs.iter().map(|u| u.map(|x| x as f32)).collect();
        Shell { offsets, normals }
    }
}

/// How a head was taken ([`locate_heads`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A detection with a score of at least the floor.
    Detected,
    /// A detection under the floor (at least [`PARTNER_SCORE_FRACTION`] of it) that
    /// partners a confident head.
    Partner,
    /// No detection: the sphere the image shows where a confident head's other head must
    /// lie ([`MIRROR_OFFSETS_MM`]).
    Mirror,
}

/// A head located: its detection moved onto the sphere fitted around it, and the fit.
#[derive(Debug, Clone, PartialEq)]
pub struct Located {
    /// The detection, its centre and box moved onto the sphere; score and size unchanged.
    /// A [`Origin::Mirror`] head has the confident head's box size, and the score of the
    /// best candidate whose centre lies inside its sphere (0 when there is none).
    pub detection: Detection,
    /// The sphere.
    pub fit: SphereFit,
    /// How it was taken.
    pub origin: Origin,
}

/// `det` (found in the model input `input`) moved onto the sphere [`refine`] fits around
/// it in the assembled T2 `t2`: its centre and box move together; its score and size stay.
pub fn locate(det: &Detection, t2: &Volume, input: &Volume) -> Located {
    let fit = refine(t2, det.center_lps_mm);
    Located {
        detection: moved(det, &fit, input),
        fit,
        origin: Origin::Detected,
    }
}

/// `det` with its centre and box moved onto `fit`'s centre.
fn moved(det: &Detection, fit: &SphereFit, input: &Volume) -> Detection {
    let shift = [0, 1, 2].map(|a| fit.center_lps_mm[a] - det.center_lps_mm[a]);
    let moved = |p: V3| [p[0] + shift[0], p[1] + shift[1], p[2] + shift[2]];
    Detection {
        center_voxel: input.patient_to_voxel(fit.center_lps_mm),
        center_lps_mm: fit.center_lps_mm,
        bbox_lps_mm: det.bbox_lps_mm.map(moved),
        ..det.clone()
    }
}

/// A weak detection may stand for a head when its score reaches this fraction of the floor
/// and it partners a confident head ([`locate_heads`]).
pub const PARTNER_SCORE_FRACTION: f32 = 1.0 / 3.0;
/// Right-left distance between a confident head and its weak partner, mm (adult femoral
/// heads lie 150-220 mm apart; stricter than `detector::pair_heads`).
pub const PARTNER_SEPARATION_MM: (f64, f64) = (120.0, 260.0);
/// Largest anterior-posterior or superior-inferior offset of the partner, mm.
pub const PARTNER_OFFSET_MM: f64 = 30.0;
/// Largest difference of the two heads' fitted radii, mm.
pub const PARTNER_RADIUS_MM: f64 = 4.0;
/// Of a pair taken on the image's word other than the detector's confident pair (a
/// partner, or another pair of candidates), the weaker-edged head must have edges at least
/// this fraction as strong as the other's; a mirror head at least this fraction of its
/// confident head's (one way: the head the detector found may be the weaker-edged one).
pub const PARTNER_EDGE_RATIO: f64 = 0.5;
/// No head is taken on an edge score at or below this (a sphere fitted where the image has
/// no edges keeps its start and scores 0).
pub const MIN_PARTNER_EDGE: f64 = 0.01;
/// Right-left offsets from a confident head at which the image is searched for the other
/// head when no pair of candidates is confirmed, mm: with the search's 26 mm either way
/// they cover 134-236 mm (adult femoral heads lie 150-220 mm apart).
pub const MIRROR_OFFSETS_MM: [f64; 3] = [160.0, 185.0, 210.0];
/// Confident heads the mirror search starts from, at most (best first).
const MIRROR_FROM: usize = 2;
/// The detector's pair is taken as it is when the image around its two heads mirrors at
/// least this well ([`symmetry`]) — even when their fits differ in size, if they lie as a
/// head and its partner do; below it, a pair of candidates that mirrors at least this
/// well replaces it ([`locate_heads`] step 1). Set on development studies only
/// (`examples/probe_pairs.rs`): on 90 domain-randomised ones (seeds 900000..=900089) the
/// two true heads correlate 0.10-0.95 (median 0.72; 5 of 87 pairs under 0.35 — lesions,
/// bias fields and each leg's own abduction break the symmetry; in 3 studies one head had
/// no candidate), on 20 classic ones in the held-out style (seeds 5000..=5019) 0.27-0.79
/// (3 under 0.35); the one pair there of a true head and another candidate whose fits
/// agree and lie as a head and its partner do ([`PARTNER_SEPARATION_MM`],
/// [`PARTNER_OFFSET_MM`]) correlates 0.21. The two overlap: a true pair under this is only
/// looked past, and stands unless a pair that mirrors is found.
pub const SYMMETRIC: f64 = 0.35;
/// Half the side of the cube around a head that [`symmetry`] compares, in head radii (the
/// head, the acetabulum's rim, the neck's root and the muscles beside them).
const SYMMETRY_HALF_RADII: f64 = 1.5;
/// Sampling step of [`symmetry`], mm.
const SYMMETRY_STEP_MM: f64 = 2.0;

/// A fit the image shows as a femoral head: a sphere inside the radius limits (a fit at a
/// limit is an edge of something else) with real edges.
fn head_like(f: &SphereFit) -> bool {
    f.radius_mm > RADII_MM.0 && f.radius_mm < RADII_MM.1 && f.edge > MIN_PARTNER_EDGE
}

/// Two fits the image shows as the two femoral heads: both head-like, radii within
/// [`PARTNER_RADIUS_MM`].
fn same_size_heads(a: &SphereFit, b: &SphereFit) -> bool {
    head_like(a) && head_like(b) && (a.radius_mm - b.radius_mm).abs() <= PARTNER_RADIUS_MM
}

/// [`same_size_heads`], and the weaker edges at least [`PARTNER_EDGE_RATIO`] of the
/// stronger.
pub fn agree(a: &SphereFit, b: &SphereFit) -> bool {
    same_size_heads(a, b) && a.edge.min(b.edge) >= PARTNER_EDGE_RATIO * a.edge.max(b.edge)
}

/// The two femoral heads among the candidates `dets` (found in `input`, best first), as
/// (right, left), each moved onto its sphere in `t2` ([`locate`]). In this order:
///
/// 1. The pair `detector::pair_heads` chooses with the floor `min_score`, when the image
///    agrees that both are heads: each fit is head-like (a sphere inside [`RADII_MM`],
///    not at a limit, with edges over [`MIN_PARTNER_EDGE`]), the radii agree within
///    [`PARTNER_RADIUS_MM`], and the image around one mirrors the other's
///    ([`symmetry`] at least [`SYMMETRIC`], or too little of it in the volume to tell).
///    Where the two are head-like of the same size but do not mirror, every candidate
///    scoring at least
///    [`PARTNER_SCORE_FRACTION`] of the floor is fitted, and the best-scoring pair with a
///    confident head whose fits agree (as in step 2), that lies as a head and its partner
///    do ([`PARTNER_SEPARATION_MM`], [`PARTNER_OFFSET_MM`]) and that mirrors replaces it;
///    if there is none, the detector's pair stands. A detector's pair whose fits are not
///    both head-like of the same size is still taken when it mirrors at least
///    [`SYMMETRIC`] and lies as a head and its partner do.
/// 2. Otherwise every candidate with a score of at least [`PARTNER_SCORE_FRACTION`] of
///    the floor is fitted, and of the pairs with at least one confident head (score ≥
///    `min_score`) whose fits agree — head-like, same size, the weaker edges at least
///    [`PARTNER_EDGE_RATIO`] of the stronger — and that lie as two heads do (as
///    `pair_heads` requires of two confident heads, as [`PARTNER_SEPARATION_MM`] and
///    [`PARTNER_OFFSET_MM`] require of a confident head and a weaker *partner*), the one
///    with the highest summed score.
/// 3. Otherwise, from each of the two best confident head-like fits, the image is
///    searched where the other head must lie ([`MIRROR_OFFSETS_MM`] right-left, each
///    search reaching [`SEARCH_MM`]); the most edged head-like sphere of the same size
///    (within [`PARTNER_RADIUS_MM`]) with at least [`PARTNER_EDGE_RATIO`] of the
///    confident head's edges is the other head ([`Origin::Mirror`]).
/// 4. Otherwise the pair of step 1 (each moved onto its fit, as in step 1), if there was
///    one; else the reason `pair_heads` gave.
pub fn locate_heads(
    dets: &[Detection],
    t2: &Volume,
    input: &Volume,
    min_score: f32,
) -> Result<(Located, Located), String> {
    let mut fits: Vec<Option<Located>> = vec![None; dets.len()];
    let index = |d: &Detection| dets.iter().position(|x| std::ptr::eq(x, d));
    // 1. The detector's confident pair; kept as the last resort (step 4) when the image
    //    does not confirm it.
    let fallback = crate::model::detector::pair_heads(dets, min_score).map(|(r, l)| {
        let [r_fit, l_fit]: [Located; 2] = on_two_threads(&[r, l], |d| locate(d, t2, input))
            .try_into()
            .expect("two fits");
        for (d, f) in [(r, &r_fit), (l, &l_fit)] {
            if let Some(i) = index(d) {
                fits[i] = Some(f.clone());
            }
        }
        (r_fit, l_fit)
    });
    let unmirrored = match &fallback {
        Ok((r, l)) => {
            let same = same_size_heads(&r.fit, &l.fit);
            let mirrors = symmetry(t2, &r.fit, &l.fit);
            let mirrored = mirrors.is_some_and(|s| s >= SYMMETRIC);
            // Two same-sized heads the image cannot check, or that mirror; or fits of
            // different sizes (one at a radius limit, say) around two places that mirror
            // and lie as two heads do: the heads, whatever their fits say.
            if (same && mirrors.is_none())
                || (mirrored && (same || partner_lies(&r.fit.center_lps_mm, &l.fit.center_lps_mm)))
            {
                return fallback;
            }
            same
        }
        Err(_) => false,
    };
    // 2. Every candidate that may take part, fitted.
    let weak = min_score * PARTNER_SCORE_FRACTION;
    let todo: Vec<usize> = (0..dets.len())
        .filter(|&i| fits[i].is_none() && dets[i].score >= weak)
        .collect();
    let done = on_two_threads(&todo, |&i| locate(&dets[i], t2, input));
    for (i, l) in todo.into_iter().zip(done) {
        fits[i] = Some(l);
    }
    let located: Vec<&Located> = fits.iter().flatten().collect();
    let taken = |(hi, lo): (&Located, &Located)| {
        let mut lo = lo.clone();
        if lo.detection.score < min_score {
            lo.origin = Origin::Partner;
        }
        sided(hi.clone(), lo)
    };
    if unmirrored {
        // 1b. The detector's pair is two same-sized spheres, but the image around one does
        //     not mirror the other's: a pair that does, lying as two heads do, replaces
        //     it; otherwise it stands.
        let mirrored = best_agreeing_pair(&located, min_score, |hi, lo| {
            partner_lies(&hi.fit.center_lps_mm, &lo.fit.center_lps_mm)
                && symmetry(t2, &hi.fit, &lo.fit).is_some_and(|s| s >= SYMMETRIC)
        });
        return match mirrored {
            Some(pair) => Ok(taken(pair)),
            None => fallback,
        };
    }
    let lying = best_agreeing_pair(&located, min_score, |hi, lo| {
        if lo.detection.score >= min_score {
            crate::model::detector::plausible_pair(&hi.detection, &lo.detection)
        } else {
            partner_lies(&hi.fit.center_lps_mm, &lo.fit.center_lps_mm)
        }
    });
    if let Some(pair) = lying {
        return Ok(taken(pair));
    }
    // 3. The other head where it must lie, if the image shows it.
    for a in located
        .iter()
        .filter(|l| l.detection.score >= min_score && head_like(&l.fit))
        .take(MIRROR_FROM)
    {
        if let Some(m) = mirror(a, dets, t2, input) {
            return Ok(sided((*a).clone(), m));
        }
    }
    // 4. The detector's pair, though the image did not confirm it; or why there is none.
    fallback
}

/// Of the pairs of `located` with a confident head (score ≥ `min_score`) whose fits
/// [`agree`] and that `lies` accepts (called with the better-scoring head first), the one
/// with the highest summed score, better-scoring head first.
fn best_agreeing_pair<'a>(
    located: &[&'a Located],
    min_score: f32,
    lies: impl Fn(&Located, &Located) -> bool,
) -> Option<(&'a Located, &'a Located)> {
    let mut best: Option<(f32, &Located, &Located)> = None;
    for (i, a) in located.iter().enumerate() {
        for b in &located[i + 1..] {
            let (hi, lo) = if a.detection.score >= b.detection.score {
                (*a, *b)
            } else {
                (*b, *a)
            };
            if hi.detection.score < min_score || !agree(&a.fit, &b.fit) || !lies(hi, lo) {
                continue;
            }
            let sum = a.detection.score + b.detection.score;
            if best.is_none_or(|(s, _, _)| sum > s) {
                best = Some((sum, hi, lo));
            }
        }
    }
    best.map(|(_, hi, lo)| (hi, lo))
}

/// Whether a partner centred at `b` lies where the other head of the head at `a` must.
pub fn partner_lies(a: &V3, b: &V3) -> bool {
    let d = [0, 1, 2].map(|x| (a[x] - b[x]).abs());
    (PARTNER_SEPARATION_MM.0..=PARTNER_SEPARATION_MM.1).contains(&d[0])
        && d[1] <= PARTNER_OFFSET_MM
        && d[2] <= PARTNER_OFFSET_MM
}

/// How well the image around one head mirrors the image around the other: the Pearson
/// correlation of `t2` over a cube around the left one (+x; half its side
/// [`SYMMETRY_HALF_RADII`] of their mean radius), against the same cube reflected through
/// the plane halfway between the two centres (normal to the line joining them, so a tilted
/// or rotated pelvis still mirrors). The same whichever head is named first. Two
/// femoral heads correlate strongly whatever the contrast; a head and a bowel loop, a
/// muscle belly or the bladder wall do not. `None` where less than half the cube (or its
/// reflection) lies inside the volume, or the two centres coincide.
pub fn symmetry(t2: &Volume, a: &SphereFit, b: &SphereFit) -> Option<f64> {
    // The same whichever is named first: the cube lies around the head further to the
    // patient's left (+x), reflected onto the other.
    let (a, b) = if a.center_lps_mm[0] > b.center_lps_mm[0] {
        (b, a)
    } else {
        (a, b)
    };
    let (ca, cb) = (a.center_lps_mm, b.center_lps_mm);
    let len = dist(ca, cb);
    if len < 1e-6 {
        return None;
    }
    let n = [0, 1, 2].map(|x| (cb[x] - ca[x]) / len);
    let half = SYMMETRY_HALF_RADII * (a.radius_mm + b.radius_mm) / 2.0;
    let k = (half / SYMMETRY_STEP_MM).round() as i64;
    let (mut pairs, mut total) = (Vec::new(), 0usize);
    for z in -k..=k {
        for y in -k..=k {
            for x in -k..=k {
                total += 1;
                let u = [x, y, z].map(|i| i as f64 * SYMMETRY_STEP_MM);
                let along = u[0] * n[0] + u[1] * n[1] + u[2] * n[2];
                // b + u reflected through the mid-plane is a + u - 2 (u . n) n.
                let p = [0, 1, 2].map(|i| cb[i] + u[i]);
                let q = [0, 1, 2].map(|i| ca[i] + u[i] - 2.0 * along * n[i]);
                if let (Some(s), Some(t)) = (
                    sample(t2, t2.patient_to_voxel(p)),
                    sample(t2, t2.patient_to_voxel(q)),
                ) {
                    pairs.push((s as f64, t as f64));
                }
            }
        }
    }
    if pairs.len() * 2 < total {
        return None;
    }
    let m = pairs.len() as f64;
    let mean = |f: fn(&(f64, f64)) -> f64| pairs.iter().map(f).sum::<f64>() / m;
    let (mx, my) = (mean(|p| p.0), mean(|p| p.1));
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (x, y) in &pairs {
        sxy += (x - mx) * (y - my);
        sxx += (x - mx) * (x - mx);
        syy += (y - my) * (y - my);
    }
    // A flat cube (no structure on either side) mirrors nothing.
    if sxx <= 0.0 || syy <= 0.0 {
        return Some(0.0);
    }
    Some(sxy / (sxx * syy).sqrt())
}

/// (right, left): the one further to patient left (+x in LPS) is the left head.
fn sided(a: Located, b: Located) -> (Located, Located) {
    if a.fit.center_lps_mm[0] < b.fit.center_lps_mm[0] {
        (a, b)
    } else {
        (b, a)
    }
}

/// The other head of the confident head `a`, found in the image alone ([`locate_heads`]
/// step 3), if the image shows it.
fn mirror(a: &Located, dets: &[Detection], t2: &Volume, input: &Volume) -> Option<Located> {
    let c = a.fit.center_lps_mm;
    let dims = t2.dims;
    let starts: Vec<V3> = [-1.0, 1.0]
        .iter()
        .flat_map(|s| MIRROR_OFFSETS_MM.map(|d| [c[0] + s * d, c[1], c[2]]))
        .filter(|p| {
            let v = t2.patient_to_voxel(*p);
            (0..3).all(|x| v[x] >= 0.0 && v[x] <= dims[x] as f64 - 1.0)
        })
        .collect();
    let fit = on_two_threads(&starts, |p| refine(t2, *p))
        .into_iter()
        .filter(|f| same_size_heads(&a.fit, f))
        .max_by(|x, y| x.edge.total_cmp(&y.edge))?;
    if fit.edge < PARTNER_EDGE_RATIO * a.fit.edge {
        return None;
    }
    let score = dets
        .iter()
        .filter(|d| dist(d.center_lps_mm, fit.center_lps_mm) < fit.radius_mm)
        .map(|d| d.score)
        .fold(0.0f32, f32::max);
    // The confident head's box, moved onto the sphere found.
    Some(Located {
        detection: Detection {
            score,
            ..moved(&a.detection, &fit, input)
        },
        fit,
        origin: Origin::Mirror,
    })
}

/// `f` over `items`, half of them on a second thread (each sphere fit takes ~60 ms), or
/// all on the calling thread when there are fewer than two or no thread can be started.
fn on_two_threads<I: Sync, T: Send>(items: &[I], f: impl Fn(&I) -> T + Sync) -> Vec<T> {
    if items.len() < 2 {
        return items.iter().map(&f).collect();
    }
    let (first, second) = items.split_at(items.len() / 2);
    std::thread::scope(|s| {
        let spawned = std::thread::Builder::new()
            .name("sphere-fit".into())
            .spawn_scoped(s, || first.iter().map(&f).collect::<Vec<T>>());
        let rest: Vec<T> = second.iter().map(&f).collect();
        let mut out = match spawned {
            Ok(handle) => handle.join().expect("a sphere fit panicked"),
            Err(_) => first.iter().map(&f).collect(),
        };
        out.extend(rest);
        out
    })
}

/// The largest magnitude in `v` (at least 1).
fn hi_abs(v: &[f32]) -> f32 {
    v.iter().fold(1.0f32, |m, x| m.max(x.abs()))
}

/// The [`EDGE_QUANTILE`] of `v` (reordered).
fn quantile(v: &mut [f32]) -> f64 {
    let k = ((v.len() as f64 * EDGE_QUANTILE) as usize).min(v.len() - 1);
    let (_, q, _) = v.select_nth_unstable_by(k, f32::total_cmp);
    *q as f64
}

fn prior(d: f64) -> f64 {
    (-d * d / (2.0 * PRIOR_SIGMA_MM * PRIOR_SIGMA_MM)).exp()
}

fn dist(a: V3, b: V3) -> f64 {
    ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2) + (a[2] - b[2]).powi(2)).sqrt()
}

/// Evenly spread unit vectors.
fn fibonacci_sphere(n: usize) -> Vec<V3> {
    let golden = std::f64::consts::PI * (3.0 - 5f64.sqrt());
    (0..n)
        .map(|i| {
            let z = 1.0 - 2.0 * (i as f64 + 0.5) / n as f64;
            let r = (1.0 - z * z).sqrt();
            let t = golden * i as f64;
            [r * t.cos(), r * t.sin(), z]
        })
        .collect()
}

/// Intensity gradients on an isotropic patient-axis grid around a point.
struct Gradients {
    n: usize,
    origin: V3,
    /// Per grid point, ∇I in units of the local intensity range per mm; zero where a
    /// neighbour lies outside the volume.
    g: Vec<[f32; 3]>,
}

impl Gradients {
    fn around(v: &Volume, c: V3, half: f64) -> Gradients {
        let n = (2.0 * half / STEP_MM).round() as usize + 1;
        let origin = c.map(|x| x - half);
        let at = |i: usize, j: usize, k: usize| (k * n + j) * n + i;
        let mut val = vec![f32::NAN; n * n * n];
        // Voxel coordinates are affine in patient mm: step them instead of solving each.
        let o = v.patient_to_voxel(origin);
        let step = |a: usize| {
            let mut p = origin;
            p[a] += STEP_MM;
            let q = v.patient_to_voxel(p);
            [q[0] - o[0], q[1] - o[1], q[2] - o[2]]
        };
        let (si, sj, sk) = (step(0), step(1), step(2));
        for k in 0..n {
            for j in 0..n {
                for i in 0..n {
                    let (fi, fj, fk) = (i as f64, j as f64, k as f64);
                    let q = [0, 1, 2].map(|a| o[a] + fi * si[a] + fj * sj[a] + fk * sk[a]);
                    if let Some(x) = sample(v, q) {
                        val[at(i, j, k)] = x;
                    }
                }
            }
        }
        // Contrast-free units: the 2nd-98th percentile range of what was sampled.
        let mut seen: Vec<f32> = val.iter().copied().filter(|x| x.is_finite()).collect();
        let range = if seen.len() >= 100 {
            let len = seen.len();
            let hi = *seen
                .select_nth_unstable_by(len * 98 / 100, f32::total_cmp)
                .1;
            let lo = *seen.select_nth_unstable_by(len * 2 / 100, f32::total_cmp).1;
            hi - lo
        } else {
            0.0
        };
        // A flat (or almost empty) neighbourhood has no edges: all gradients stay zero.
        let scale = if range > 1e-6 * hi_abs(&seen) && range.is_finite() {
            1.0 / (2.0 * STEP_MM as f32 * range)
        } else {
            0.0
        };
        let mut g = vec![[0f32; 3]; n * n * n];
        for k in 1..n.saturating_sub(1) {
            for j in 1..n - 1 {
                for i in 1..n - 1 {
                    let d = [
                        val[at(i + 1, j, k)] - val[at(i - 1, j, k)],
                        val[at(i, j + 1, k)] - val[at(i, j - 1, k)],
                        val[at(i, j, k + 1)] - val[at(i, j, k - 1)],
                    ];
                    if d.iter().all(|x| x.is_finite()) {
                        g[at(i, j, k)] = d.map(|x| x * scale);
                    }
                }
            }
        }
        Gradients { n, origin, g }
    }

    /// The gradient at the grid point nearest `p` (zero outside the grid).
    fn at(&self, p: V3) -> [f32; 3] {
        let mut idx = [0usize; 3];
        for a in 0..3 {
            let q = ((p[a] - self.origin[a]) / STEP_MM).round();
            if !(0.0..self.n as f64).contains(&q) {
                return [0.0; 3];
            }
            idx[a] = q as usize;
        }
        self.g[(idx[2] * self.n + idx[1]) * self.n + idx[0]]
    }

    /// The [`EDGE_QUANTILE`] over `dirs` of |∇I · n| on the sphere (`c`, `r`).
    fn edge(&self, c: V3, r: f64, dirs: &[V3], scratch: &mut Vec<f32>) -> f64 {
        scratch.clear();
        scratch.extend(dirs.iter().map(|u| {
            let g = self.at([c[0] + r * u[0], c[1] + r * u[1], c[2] + r * u[2]]);
            (g[0] * u[0] as f32 + g[1] * u[1] as f32 + g[2] * u[2] as f32).abs()
        }));
        quantile(scratch)
    }

    /// [`edge`](Self::edge) of `shell` centred on grid point `base` (which the caller
    /// keeps far enough inside the grid for every offset).
    fn shell_edge(&self, base: usize, shell: &Shell, scratch: &mut Vec<f32>) -> f64 {
        scratch.clear();
        scratch.extend(shell.offsets.iter().zip(&shell.normals).map(|(&o, u)| {
            let g = self.g[(base as isize + o) as usize];
            (g[0] * u[0] + g[1] * u[1] + g[2] * u[2]).abs()
        }));
        quantile(scratch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A volume of `dims` voxels of `spacing` mm around the origin holding a sphere
    /// (`center`, `radius`) whose inside, shell and outside have the given values, plus
    /// deterministic noise of amplitude `noise`.
    fn volume_with_sphere(
        dims: [usize; 3],
        spacing: [f64; 3],
        center: V3,
        radius: f64,
        values: [f32; 3],
        noise: f32,
    ) -> Volume {
        volume_with_spheres(dims, spacing, &[(center, radius, 1.0)], values, noise)
    }

    /// As [`volume_with_sphere`], with several spheres (centre, radius, contrast): a
    /// sphere's inside and shell differ from the outside by `contrast` times as much as
    /// `values` say.
    fn volume_with_spheres(
        dims: [usize; 3],
        spacing: [f64; 3],
        spheres: &[(V3, f64, f32)],
        values: [f32; 3],
        noise: f32,
    ) -> Volume {
        let origin = [0, 1, 2].map(|a| -(dims[a] as f64 - 1.0) / 2.0 * spacing[a]);
        let mut data = Vec::with_capacity(dims[0] * dims[1] * dims[2]);
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for k in 0..dims[2] {
            for j in 0..dims[1] {
                for i in 0..dims[0] {
                    let p = [i, j, k];
                    let p = [0, 1, 2].map(|a| origin[a] + p[a] as f64 * spacing[a]);
                    let mut base = values[2];
                    for &(center, radius, contrast) in spheres {
                        let d = dist(p, center);
                        let outside = values[2];
                        if d < radius - 1.5 {
                            base = outside + contrast * (values[0] - outside);
                        } else if d < radius + 1.5 {
                            base = outside + contrast * (values[1] - outside);
                        }
                    }
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    let u = (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
                    data.push(base + noise * u);
                }
            }
        }
        Volume {
            data,
            dims,
            affine: [
                [spacing[0], 0.0, 0.0, origin[0]],
                [0.0, spacing[1], 0.0, origin[1]],
                [0.0, 0.0, spacing[2], origin[2]],
                [0.0, 0.0, 0.0, 1.0],
            ],
            series_uid: String::new(),
            study_uid: String::new(),
        }
    }

    #[test]
    fn finds_the_head_from_a_detection_off_its_centre_whatever_the_contrast() {
        let center = [4.0, -3.0, 2.0];
        // Dark marrow in bright fluid (STIR), bright marrow behind a dark cortex (plain
        // T2), and a bright shell alone; thin slices and 5 mm ones.
        for values in [
            [100.0, 400.0, 250.0],
            [500.0, 50.0, 480.0],
            [200.0, 600.0, 200.0],
        ] {
            for spacing in [[1.0, 1.0, 1.5], [0.8, 0.8, 5.0]] {
                let dims = [0, 1, 2].map(|a| (150.0 / spacing[a]) as usize);
                let v = volume_with_sphere(dims, spacing, center, 23.0, values, 30.0);
                let start = [center[0] + 12.0, center[1] - 5.0, center[2] + 6.0];
                let fit = refine(&v, start);
                let err = dist(fit.center_lps_mm, center);
                assert!(
                    err < 2.5,
                    "{values:?} at {spacing:?} mm: centre {:?} is {err:.1} mm off",
                    fit.center_lps_mm
                );
                assert!(
                    (fit.radius_mm - 23.0).abs() <= 2.5,
                    "radius {}",
                    fit.radius_mm
                );
                assert!((fit.moved_mm - dist(start, center)).abs() < 2.5);
            }
        }
    }

    #[test]
    fn a_volume_without_edges_keeps_the_detection() {
        let v = volume_with_sphere([60, 60, 30], [2.0, 2.0, 4.0], [0.0; 3], 20.0, [7.0; 3], 0.0);
        let start = [3.0, 2.0, -1.0];
        let fit = refine(&v, start);
        assert_eq!(fit.center_lps_mm, start);
        assert_eq!(fit.moved_mm, 0.0);
        assert_eq!(fit.edge, 0.0);
    }

    #[test]
    fn reaches_a_head_within_the_search_and_no_further() {
        for (x, reached) in [(20.0, true), (60.0, false)] {
            let center = [x, 0.0, 0.0];
            let v = volume_with_sphere(
                [180, 120, 60],
                [1.0, 1.0, 2.5],
                center,
                22.0,
                [100.0, 400.0, 250.0],
                10.0,
            );
            let fit = refine(&v, [0.0; 3]);
            let err = dist(fit.center_lps_mm, center);
            assert_eq!(err < 2.5, reached, "head at {x} mm: fit {fit:?}");
            assert!(
                fit.center_lps_mm
                    .iter()
                    .all(|c| c.abs() <= SEARCH_MM + 2.0 + 1e-9)
            );
        }
    }

    fn detection(score: f32, c: V3) -> Detection {
        Detection {
            score,
            center_voxel: [0.0; 3],
            size_voxel: [10.0; 3],
            center_lps_mm: c,
            bbox_lps_mm: [c.map(|x| x - 22.0), c.map(|x| x + 22.0)],
        }
    }

    /// A pelvis-sized STIR-like volume holding `spheres` (centre, radius).
    fn hip_volume(spheres: &[(V3, f64)]) -> Volume {
        let full: Vec<(V3, f64, f32)> = spheres.iter().map(|&(c, r)| (c, r, 1.0)).collect();
        hip_volume_of_contrasts(&full)
    }

    /// As [`hip_volume`], each sphere (centre, radius, contrast) with its own contrast.
    fn hip_volume_of_contrasts(spheres: &[(V3, f64, f32)]) -> Volume {
        volume_with_spheres(
            [160, 64, 32],
            [2.0, 2.5, 5.0],
            spheres,
            [100.0, 400.0, 250.0],
            20.0,
        )
    }

    /// Two heads of radius `radii` at x = ∓90 mm (right, then left).
    fn two_heads(radii: [f64; 2]) -> (Volume, [V3; 2]) {
        let centers = [[-90.0, 4.0, -6.0], [90.0, -2.0, -3.0]];
        let v = hip_volume(&[(centers[0], radii[0]), (centers[1], radii[1])]);
        (v, centers)
    }

    #[test]
    fn a_confident_pair_is_located_and_sided() {
        let (v, [right, left]) = two_heads([23.0, 23.0]);
        let off = |c: V3, dx: f64| [c[0] + dx, c[1], c[2]];
        // Best first, the left head first; both moved back onto their spheres.
        let dets = [
            detection(0.7, off(left, 12.0)),
            detection(0.6, off(right, -9.0)),
        ];
        let (r, l) = locate_heads(&dets, &v, &v, 0.3).expect("both heads");
        assert!(dist(r.detection.center_lps_mm, right) < 2.5, "{r:?}");
        assert!(dist(l.detection.center_lps_mm, left) < 2.5, "{l:?}");
        assert_eq!((r.detection.score, l.detection.score), (0.6, 0.7));
        assert_eq!((r.origin, l.origin), (Origin::Detected, Origin::Detected));
        // The box moved with the centre.
        let b = l.detection.bbox_lps_mm;
        assert!(((b[0][0] + b[1][0]) / 2.0 - l.detection.center_lps_mm[0]).abs() < 1e-9);
    }

    #[test]
    fn a_weak_partner_stands_only_where_the_image_shows_a_same_sized_head() {
        let (v, [right, left]) = two_heads([23.0, 23.0]);
        let confident = detection(0.6, left);
        // Where the other head lies, and the image shows it: taken, as the partner.
        let (r, l) = locate_heads(&[confident.clone(), detection(0.15, right)], &v, &v, 0.3)
            .expect("the partner is taken");
        assert_eq!((r.origin, l.origin), (Origin::Partner, Origin::Detected));
        assert!(dist(r.detection.center_lps_mm, right) < 2.5);
        assert_eq!(r.detection.score, 0.15);
        // Too weak (under a third of the floor) to be a partner: the head is still found
        // by the image search, and keeps that weak candidate's score.
        let (r, _) = locate_heads(&[confident.clone(), detection(0.05, right)], &v, &v, 0.3)
            .expect("found in the image");
        assert_eq!(r.origin, Origin::Mirror);
        assert!(dist(r.detection.center_lps_mm, right) < 2.5, "{r:?}");
        assert_eq!(r.detection.score, 0.05);
        // Where no head is in the image (the mirror image of the confident head lies in
        // empty tissue): refused, and the floor's reason stands.
        let empty = hip_volume(&[(left, 23.0)]);
        let err = locate_heads(
            &[confident.clone(), detection(0.2, right)],
            &empty,
            &empty,
            0.3,
        )
        .expect_err("no head there");
        assert!(err.contains("1 femoral head(s) found"), "{err}");
        // A same-sized head in the image, but not where the other head can lie (110 mm
        // right-left of the confident one): refused.
        let near = [-20.0, 0.0, -3.0];
        let close = hip_volume(&[(left, 23.0), (near, 23.0)]);
        assert!(
            locate_heads(
                &[confident.clone(), detection(0.2, near)],
                &close,
                &close,
                0.3
            )
            .is_err()
        );
        // A head-sized sphere of another size (26 mm against 20 mm): refused.
        let (odd, _) = two_heads([20.0, 26.0]);
        assert!(locate_heads(&[confident, detection(0.2, right)], &odd, &odd, 0.3).is_err());
    }

    #[test]
    fn the_other_head_is_found_in_the_image_where_the_detector_proposed_none() {
        for radii in [[23.0, 23.0], [20.0, 21.0]] {
            let (v, [right, left]) = two_heads(radii);
            // Only the right head detected, 10 mm off: the left is where its partner lies.
            let dets = [detection(0.6, [right[0] - 10.0, right[1], right[2]])];
            let (r, l) = locate_heads(&dets, &v, &v, 0.3).expect("both heads");
            assert_eq!((r.origin, l.origin), (Origin::Detected, Origin::Mirror));
            assert!(dist(r.detection.center_lps_mm, right) < 2.5, "{r:?}");
            assert!(dist(l.detection.center_lps_mm, left) < 2.5, "{l:?}");
            assert!((l.fit.radius_mm - radii[1]).abs() <= 2.5, "{l:?}");
            assert_eq!(l.detection.score, 0.0);
            // The box is the confident head's size, around the found centre.
            let b = l.detection.bbox_lps_mm;
            assert!(((b[0][0] + b[1][0]) / 2.0 - l.detection.center_lps_mm[0]).abs() < 1e-9);
            assert!(((b[1][0] - b[0][0]) - 44.0).abs() < 1e-9);
        }
        // Not from a detection under the floor.
        let (v, [right, _]) = two_heads([23.0, 23.0]);
        assert!(locate_heads(&[detection(0.25, right)], &v, &v, 0.3).is_err());
        // Not a sphere of another size (20 mm against 27 mm).
        let (v, [right, _]) = two_heads([27.0, 20.0]);
        assert!(locate_heads(&[detection(0.6, right)], &v, &v, 0.3).is_err());
        // Not a sphere further than the other head can lie (250 mm right-left).
        let far = hip_volume(&[([-125.0, 4.0, -6.0], 23.0), ([125.0, 4.0, -6.0], 23.0)]);
        assert!(locate_heads(&[detection(0.6, [-125.0, 4.0, -6.0])], &far, &far, 0.3).is_err());
    }

    /// Two heads, and detections scoring `scores` on the left head, on the midline 100 mm
    /// right of it (no sphere there; with the left head, the best-scoring pair that lies as
    /// two heads do) and on the right head: the heads located (checked to be on the
    /// spheres), the heads' centres (right, left), and the detections.
    fn with_a_false_midline_head(
        scores: [f32; 3],
    ) -> ((Located, Located), [V3; 2], [Detection; 3]) {
        let (v, [right, left]) = two_heads([23.0, 23.0]);
        let dets = [
            detection(scores[0], left),
            detection(scores[1], [-10.0, 0.0, -3.0]),
            detection(scores[2], right),
        ];
        let (r, l) = locate_heads(&dets, &v, &v, 0.3).expect("both heads");
        assert!(dist(r.detection.center_lps_mm, right) < 2.5, "{r:?}");
        assert!(dist(l.detection.center_lps_mm, left) < 2.5, "{l:?}");
        ((r, l), [right, left], dets)
    }

    #[test]
    fn a_confident_pair_the_image_refutes_gives_way_to_one_it_confirms() {
        // The right head only weakly detected: it is taken as the left head's partner.
        let ((r, _), [_, left], dets) = with_a_false_midline_head([0.7, 0.65, 0.2]);
        assert_eq!(r.origin, Origin::Partner);
        assert_eq!(r.detection.score, 0.2);
        // With nothing the image confirms, the detector's confident pair stands.
        let lone = hip_volume(&[(left, 23.0)]);
        let (r, l) = locate_heads(&dets[..2], &lone, &lone, 0.3).expect("the detector's pair");
        assert_eq!((r.origin, l.origin), (Origin::Detected, Origin::Detected));
        assert_eq!((r.detection.score, l.detection.score), (0.65, 0.7));
    }

    #[test]
    fn of_several_confident_candidates_the_pair_the_image_confirms_is_taken() {
        let ((r, l), [right, left], _) = with_a_false_midline_head([0.8, 0.75, 0.5]);
        assert_eq!((r.origin, l.origin), (Origin::Detected, Origin::Detected));
        assert_eq!((r.detection.score, l.detection.score), (0.5, 0.8));
        // Two heads the image confirms, neither confident: no pair.
        let (v, _) = two_heads([23.0, 23.0]);
        let weak = [detection(0.25, left), detection(0.2, right)];
        assert!(locate_heads(&weak, &v, &v, 0.3).is_err());
    }

    /// A fit of `radius` at `c` (for [`symmetry`]).
    fn fit_at(c: V3, radius: f64) -> SphereFit {
        SphereFit {
            center_lps_mm: c,
            radius_mm: radius,
            edge: 0.1,
            moved_mm: 0.0,
        }
    }

    #[test]
    fn two_heads_mirror_each_other_and_a_head_and_something_else_do_not() {
        let (right, left) = ([-90.0, 4.0, -6.0], [90.0, -2.0, -3.0]);
        // Something else of a head's size, 110 mm right of the left head: a sphere whose
        // inside is bright and rim dark (the heads' are the other way round).
        let other = [-20.0, 0.0, -3.0];
        // Beside each head, 30 mm out and 12 mm behind its centre, a bright knob (a
        // trochanter, say): lateral to both heads, the scene mirrors; lateral to the right
        // head and medial to the left one, it is only shifted.
        let knob = |c: V3, dx: f64| ([c[0] + dx, c[1] + 12.0, c[2]], 12.0, -3.0);
        let scene = |dx_left: f64| {
            hip_volume_of_contrasts(&[
                (right, 23.0, 1.0),
                (left, 23.0, 1.0),
                (other, 23.0, -1.0),
                knob(right, -30.0),
                knob(left, dx_left),
            ])
        };
        let v = scene(30.0);
        let heads = symmetry(&v, &fit_at(left, 23.0), &fit_at(right, 23.0)).expect("inside");
        assert!(heads > 0.6, "{heads}");
        // Either way round, exactly.
        let back = symmetry(&v, &fit_at(right, 23.0), &fit_at(left, 23.0)).expect("inside");
        assert_eq!(heads, back);
        // A reflection, not a shift.
        let shifted = scene(-30.0);
        let only_shifted =
            symmetry(&shifted, &fit_at(left, 23.0), &fit_at(right, 23.0)).expect("inside");
        assert!(heads - only_shifted > 0.1, "{heads} {only_shifted}");
        let not = symmetry(&v, &fit_at(left, 23.0), &fit_at(other, 23.0)).expect("inside");
        assert!(not < 0.0, "{not}");
        assert!(heads > SYMMETRIC && not < SYMMETRIC);
        // Mostly outside the volume, or one point: no answer.
        let out = [250.0, -2.0, -3.0];
        assert_eq!(symmetry(&v, &fit_at(left, 23.0), &fit_at(out, 23.0)), None);
        assert_eq!(symmetry(&v, &fit_at(left, 23.0), &fit_at(left, 23.0)), None);
    }

    /// Assert that the located (right, left) heads lie on `right` and `left`, taken as
    /// `origins`.
    fn assert_at((r, l): &(Located, Located), right: V3, left: V3, origins: (Origin, Origin)) {
        assert!(dist(r.detection.center_lps_mm, right) < 2.5, "{r:?}");
        assert!(dist(l.detection.center_lps_mm, left) < 2.5, "{l:?}");
        assert_eq!((r.origin, l.origin), origins);
    }

    #[test]
    fn a_confident_pair_that_does_not_mirror_gives_way_to_one_that_does() {
        let (right, left) = ([-90.0, 4.0, -6.0], [90.0, -2.0, -3.0]);
        let other = [-20.0, 0.0, -3.0];
        let v =
            hip_volume_of_contrasts(&[(right, 23.0, 1.0), (left, 23.0, 1.0), (other, 23.0, -1.0)]);
        // The detector's confident pair is the left head and the other sphere (same size,
        // lying as two heads may); the right head is only weakly detected.
        let dets = [
            detection(0.7, left),
            detection(0.5, other),
            detection(0.2, right),
        ];
        let pair = locate_heads(&dets, &v, &v, 0.3).expect("both heads");
        assert_at(&pair, right, left, (Origin::Partner, Origin::Detected));
        assert_eq!(pair.0.detection.score, 0.2);
        // With no pair that mirrors, the detector's pair stands.
        let pair = locate_heads(&dets[..2], &v, &v, 0.3).expect("the detector's pair");
        assert_at(&pair, other, left, (Origin::Detected, Origin::Detected));
    }

    #[test]
    fn a_confident_pair_that_mirrors_stands_though_its_fits_differ_in_size() {
        // Heads of 23 and 28 mm (more than the 4 mm two fits may differ by), and something
        // else of the left head's size where the right head's partner could lie.
        let (right, left, other) = ([-100.0, 4.0, -6.0], [90.0, -2.0, -3.0], [-35.0, 0.0, -3.0]);
        let v =
            hip_volume_of_contrasts(&[(right, 23.0, 1.0), (left, 28.0, 1.0), (other, 28.0, -1.0)]);
        let mirrors = symmetry(&v, &fit_at(left, 28.0), &fit_at(right, 23.0)).expect("inside");
        assert!(mirrors >= SYMMETRIC, "{mirrors}");
        let dets = [
            detection(0.7, left),
            detection(0.6, right),
            detection(0.2, other),
        ];
        let pair = locate_heads(&dets, &v, &v, 0.3).expect("both heads");
        assert_at(&pair, right, left, (Origin::Detected, Origin::Detected));
        // Taken on the image's mirror, not on the fits' sizes.
        let radii = (pair.0.fit.radius_mm, pair.1.fit.radius_mm);
        assert!((radii.0 - radii.1).abs() > PARTNER_RADIUS_MM, "{radii:?}");
        // Where the two do not mirror (the right one inverted), the weak candidate whose
        // sphere agrees with the left head's is its partner, as before.
        let v =
            hip_volume_of_contrasts(&[(right, 23.0, -1.0), (left, 28.0, 1.0), (other, 28.0, 1.0)]);
        let (r, _) = locate_heads(&dets, &v, &v, 0.3).expect("a pair");
        assert!(dist(r.detection.center_lps_mm, other) < 2.5, "{r:?}");
        assert_eq!(r.origin, Origin::Partner);
    }

    #[test]
    fn a_sphere_in_the_noise_is_neither_a_mirror_head_nor_a_partner() {
        let (right, left) = ([-90.0, 4.0, -6.0], [90.0, -2.0, -3.0]);
        let confident = detection(0.6, right);
        // The other head needs half the confident head's edges. Edges are measured in each
        // neighbourhood's own units, so a faint sphere alone is still edged (0.15 of the
        // contrast gives 0.59 of the edges); one barely above the noise (a twentieth) is
        // not, and it is that ratio that refuses it (with a ratio of 0 it is taken).
        for (contrast, taken) in [(0.7, true), (0.05, false)] {
            let v = hip_volume_of_contrasts(&[(right, 23.0, 1.0), (left, 23.0, contrast)]);
            // Found by the image alone (no candidate there)...
            let mirror = locate_heads(std::slice::from_ref(&confident), &v, &v, 0.3);
            // ... or offered by a weak candidate, as a partner.
            let partner = locate_heads(&[confident.clone(), detection(0.15, left)], &v, &v, 0.3);
            if taken {
                let (_, l) = mirror.expect("a head of 0.7 the contrast is taken");
                assert_eq!(l.origin, Origin::Mirror);
                assert!(dist(l.detection.center_lps_mm, left) < 2.5, "{l:?}");
                let (_, l) = partner.expect("as a partner too");
                assert_eq!(l.origin, Origin::Partner);
            } else {
                assert!(
                    mirror.is_err(),
                    "a sphere in the noise is no head: {mirror:?}"
                );
                assert!(partner.is_err(), "nor a partner: {partner:?}");
            }
        }
    }
}
