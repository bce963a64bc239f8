//! 3DC-YOLOX, the detector: the preprocessed study volume → femoral heads with scores and
//! boxes, in voxel and patient coordinates.
//!
//! An anchor-free detector in the YOLOX spirit, in 3D:
//! - **backbone**: a stem (3×3×3 conv–BN–SiLU, "CBS") and stages that each halve D, H and W
//!   with a strided CBS and refine with a CSP block (half the channels through residual
//!   bottlenecks, half bypassing, concatenated and mixed by a 1×1×1 CBS);
//! - **neck**: one top-down (FPN) step — the deepest map is reduced by a 1×1×1 CBS,
//!   upsampled ×2 (nearest) and concatenated with the map one stage shallower, then a CSP
//!   block; the head works on that grid (stride 2^(stages − 1)). Femoral heads all have
//!   about the same size in the canonical field of view, so one scale is enough;
//! - **decoupled head**: a 1×1×1 CBS, then a classification branch (two 3×3×3 CBS and a
//!   1×1×1 conv to the class logits) and a regression branch (two 3×3×3 CBS, then 1×1×1
//!   convs to the box — centre offset in cells and log size in cells, per axis — and to the
//!   objectness logit). Logit biases start at the prior −ln((1 − 0.01) / 0.01), as YOLOX.
//!
//! A cell `g` (per axis) predicts the centre `(g + 0.5 + δ) · s − 0.5` and the size
//! `exp(ℓ) · s` in input voxels (stride `s`). The score of a cell is σ(obj) · σ(cls).
//! [`Detector::detect`] decodes, thresholds, runs 3D non-maximum suppression and maps the
//! survivors through the volume's affine into patient LPS mm.
//!
//! Training ([`assign`], [`detection_loss`]) uses a SimOTA-style assignment: for each true
//! box, candidate cells are those whose centre lies in the box or within `center_radius`
//! cells of its centre; the cost is −ln(joint score) + 3 · (−ln IoU) (+10⁵ for cells not in
//! both regions); each box takes its `k` cheapest candidates, where `k` is the sum of its 10
//! best IoUs (at least 1), and a cell claimed twice stays with the box that costs it less.
//! Losses: objectness BCE over all cells, class BCE on the assigned cells against their
//! IoU, and an IoU loss 1 − IoU² (weight 5), each divided by the number of assigned cells.
//!
//! Tensors are depth-major like every layer here (`(N, D, C, H, W)`); boxes inside this
//! module are in (d, h, w) voxel order, and [`Detection`] reports them in the volume's
//! (i, j, k) = (column, row, slice) order.
//!
//! Weight names: `stem`, `stages.{i}.down`, `stages.{i}.csp`, `neck.reduce`, `neck.csp`,
//! `head.stem`, `head.cls.{0,1}`, `head.cls_pred`, `head.reg.{0,1}`, `head.box_pred`,
//! `head.obj_pred`; a CBS holds `conv` and `norm`; a CSP block `conv1`, `conv2`, `conv3` and
//! `bottlenecks.{j}.{conv1,conv2}`.

use candle_core::{DType, Device, Module, ModuleT, Result, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use super::layers::{Activation, BatchNorm3d, Conv3d, Conv3dConfig, ConvNorm, upsample_nearest3d};
use crate::volume::Volume;

/// Architecture of the detector (part of the model manifest).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectorConfig {
    /// Input volume (D, H, W); each divisible by 2^stages.
    pub input: [usize; 3],
    /// Channels of the stem and of each stage (`widths.len() − 1` stages).
    pub widths: Vec<usize>,
    /// Bottlenecks per CSP block.
    pub csp_depth: usize,
    /// Channels of the neck and the head.
    pub head_channels: usize,
    /// Object classes (1: femoral head — the side comes from patient geometry).
    pub classes: usize,
}

impl DetectorConfig {
    /// The preset that trains on a 2-core CPU and is shipped.
    pub fn small() -> Self {
        DetectorConfig {
            input: [32, 64, 112],
            widths: vec![8, 16, 24, 32, 48],
            csp_depth: 1,
            head_channels: 32,
            classes: 1,
        }
    }

    /// The paper's scale (YOLOX-S widths and depth, 3D), for sites that train on a GPU.
    pub fn paper() -> Self {
        DetectorConfig {
            input: [32, 64, 112],
            widths: vec![32, 64, 128, 256, 512],
            csp_depth: 3,
            head_channels: 128,
            classes: 1,
        }
    }

    /// Number of downsampling stages.
    pub fn stages(&self) -> usize {
        self.widths.len().saturating_sub(1)
    }

    /// Stride of the head's grid, in input voxels.
    pub fn stride(&self) -> usize {
        1 << self.stages().saturating_sub(1).min(16)
    }

    /// The head's grid (D, H, W).
    pub fn grid(&self) -> [usize; 3] {
        self.input.map(|x| x / self.stride())
    }

    /// Check the configuration is buildable and of sane size (at most 8 stages, 4096
    /// channels, 64 bottlenecks, 16 classes, 1024 voxels per axis).
    pub fn validate(&self) -> Result<()> {
        if !(2..=8).contains(&self.stages())
            || self.widths.iter().any(|w| !(1..=4096).contains(w))
            || !(1..=4096).contains(&self.head_channels)
            || self.csp_depth > 64
            || !(1..=16).contains(&self.classes)
        {
            candle_core::bail!(
                "invalid detector configuration {self:?} (2-8 stages, 1-4096 channels, depth at most 64, 1-16 classes)"
            );
        }
        let deep = 1usize << self.stages();
        if self
            .input
            .iter()
            .any(|x| *x == 0 || *x > 1024 || x % deep != 0)
        {
            candle_core::bail!(
                "invalid detector configuration {self:?} (at least 2 stages; input divisible by {deep})"
            );
        }
        Ok(())
    }
}

/// Conv (no bias) → BN → SiLU.
#[derive(Debug, Clone)]
struct Cbs(ConvNorm);

impl Cbs {
    fn new(cin: usize, cout: usize, k: usize, s: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Cbs(ConvNorm::new(
            Conv3d::new(cin, cout, Conv3dConfig::cube(k, s), vb.pp("conv"))?,
            BatchNorm3d::new(cout, vb.pp("norm"))?,
        )))
    }
}

impl ModuleT for Cbs {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.0.forward_act(x, train, Activation::Silu)
    }
}

/// YOLOX's CSP layer.
#[derive(Debug, Clone)]
struct Csp {
    conv1: Cbs,
    conv2: Cbs,
    conv3: Cbs,
    bottlenecks: Vec<(Cbs, Cbs)>,
}

impl Csp {
    fn new(cin: usize, cout: usize, depth: usize, vb: VarBuilder) -> Result<Self> {
        let hidden = (cout / 2).max(1);
        let bottlenecks = (0..depth)
            .map(|j| {
                let b = vb.pp("bottlenecks").pp(j);
                Ok((
                    Cbs::new(hidden, hidden, 1, 1, b.pp("conv1"))?,
                    Cbs::new(hidden, hidden, 3, 1, b.pp("conv2"))?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Csp {
            conv1: Cbs::new(cin, hidden, 1, 1, vb.pp("conv1"))?,
            conv2: Cbs::new(cin, hidden, 1, 1, vb.pp("conv2"))?,
            conv3: Cbs::new(2 * hidden, cout, 1, 1, vb.pp("conv3"))?,
            bottlenecks,
        })
    }
}

impl ModuleT for Csp {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut a = self.conv1.forward_t(x, train)?;
        for (c1, c2) in &self.bottlenecks {
            let y = c2.forward_t(&c1.forward_t(&a, train)?, train)?;
            a = (a + y)?;
        }
        let b = self.conv2.forward_t(x, train)?;
        self.conv3.forward_t(&Tensor::cat(&[&a, &b], 2)?, train)
    }
}

/// A 1×1×1 prediction conv with bias (initialised to `bias_init`).
fn pred_conv(cin: usize, cout: usize, bias_init: Option<f64>, vb: VarBuilder) -> Result<Conv3d> {
    let cfg = Conv3dConfig {
        kernel: (1, 1),
        stride: (1, 1),
        padding: (0, 0),
        bias: bias_init.is_none(),
    };
    match bias_init {
        None => Conv3d::new(cin, cout, cfg, vb),
        Some(b) => {
            let with_bias = Conv3dConfig { bias: false, ..cfg };
            let conv = Conv3d::new(cin, cout, with_bias, vb.clone())?;
            let bias = vb.get_with_hints(cout, "bias", candle_nn::Init::Const(b))?;
            Conv3d::from_weights(
                conv.weight(),
                Some(&bias),
                Conv3dConfig { bias: true, ..cfg },
            )
        }
    }
}

/// Raw head output `(N, cells, 6 + 1 + classes)`: box (δd, δh, δw, ℓd, ℓh, ℓw),
/// objectness logit, class logits; cells in (d, h, w) raster order.
#[derive(Debug, Clone)]
pub struct RawOutput {
    /// The tensor.
    pub tensor: Tensor,
    /// The grid (D, H, W).
    pub grid: [usize; 3],
    /// Stride in voxels.
    pub stride: usize,
}

/// The detector network.
#[derive(Debug, Clone)]
pub struct Detector {
    stem: Cbs,
    stages: Vec<(Cbs, Csp)>,
    neck_reduce: Cbs,
    neck_csp: Csp,
    head_stem: Cbs,
    cls: [Cbs; 2],
    cls_pred: Conv3d,
    reg: [Cbs; 2],
    box_pred: Conv3d,
    obj_pred: Conv3d,
    /// The configuration it was built from.
    pub config: DetectorConfig,
}

/// One detected femoral head.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Detection {
    /// σ(obj) · σ(cls).
    pub score: f32,
    /// Centre in the input volume's voxels (i, j, k) = (column, row, slice).
    pub center_voxel: [f64; 3],
    /// Box size in voxels (i, j, k).
    pub size_voxel: [f64; 3],
    /// Centre in patient LPS mm.
    pub center_lps_mm: [f64; 3],
    /// Axis-aligned box in patient LPS mm: [min corner, max corner].
    pub bbox_lps_mm: [[f64; 3]; 2],
}

impl Detector {
    /// Build (or load, through `vb`) a detector.
    pub fn new(cfg: &DetectorConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        let w = &cfg.widths;
        let stem = Cbs::new(1, w[0], 3, 1, vb.pp("stem"))?;
        let stages = (1..w.len())
            .map(|i| {
                let v = vb.pp("stages").pp(i - 1);
                Ok((
                    Cbs::new(w[i - 1], w[i], 3, 2, v.pp("down"))?,
                    Csp::new(w[i], w[i], cfg.csp_depth, v.pp("csp"))?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        let hc = cfg.head_channels;
        let last = w[w.len() - 1];
        let prev = w[w.len() - 2];
        let neck_reduce = Cbs::new(last, hc, 1, 1, vb.pp("neck").pp("reduce"))?;
        let neck_csp = Csp::new(hc + prev, hc, cfg.csp_depth, vb.pp("neck").pp("csp"))?;
        let h = vb.pp("head");
        let prior = -((1.0f64 - 0.01) / 0.01).ln();
        Ok(Detector {
            stem,
            stages,
            neck_reduce,
            neck_csp,
            head_stem: Cbs::new(hc, hc, 1, 1, h.pp("stem"))?,
            cls: [
                Cbs::new(hc, hc, 3, 1, h.pp("cls").pp(0))?,
                Cbs::new(hc, hc, 3, 1, h.pp("cls").pp(1))?,
            ],
            cls_pred: pred_conv(hc, cfg.classes, Some(prior), h.pp("cls_pred"))?,
            reg: [
                Cbs::new(hc, hc, 3, 1, h.pp("reg").pp(0))?,
                Cbs::new(hc, hc, 3, 1, h.pp("reg").pp(1))?,
            ],
            box_pred: pred_conv(hc, 6, None, h.pp("box_pred"))?,
            obj_pred: pred_conv(hc, 1, Some(prior), h.pp("obj_pred"))?,
            config: cfg.clone(),
        })
    }

    /// The raw head output for volumes `(N, D, 1, H, W)` (windowed to [0, 1]).
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<RawOutput> {
        let (n, d, c, h, w) = x.dims5()?;
        let [ed, eh, ew] = self.config.input;
        if c != 1 || (d, h, w) != (ed, eh, ew) {
            candle_core::bail!(
                "detector input must be (N, {ed}, 1, {eh}, {ew}), got {:?}",
                x.shape()
            );
        }
        let mut y = self.stem.forward_t(x, train)?;
        let mut feats = Vec::with_capacity(self.stages.len());
        for (down, csp) in &self.stages {
            y = csp.forward_t(&down.forward_t(&y, train)?, train)?;
            feats.push(y.clone());
        }
        let deep = self.neck_reduce.forward_t(&feats[feats.len() - 1], train)?;
        let up = upsample_nearest3d(&deep, 2, 2)?;
        let y = Tensor::cat(&[&up, &feats[feats.len() - 2]], 2)?;
        let y = self.neck_csp.forward_t(&y, train)?;
        let y = self.head_stem.forward_t(&y, train)?;
        let cls = self.cls[1].forward_t(&self.cls[0].forward_t(&y, train)?, train)?;
        let cls = self.cls_pred.forward(&cls)?;
        let reg = self.reg[1].forward_t(&self.reg[0].forward_t(&y, train)?, train)?;
        let boxes = self.box_pred.forward(&reg)?;
        let obj = self.obj_pred.forward(&reg)?;
        // (N, D', K, H', W') → (N, D'·H'·W', K).
        let out = Tensor::cat(&[&boxes, &obj, &cls], 2)?;
        let (_, gd, k, gh, gw) = out.dims5()?;
        let tensor = out
            .permute((0, 1, 3, 4, 2))?
            .reshape((n, gd * gh * gw, k))?
            .contiguous()?;
        Ok(RawOutput {
            tensor,
            grid: [gd, gh, gw],
            stride: self.config.stride(),
        })
    }

    /// Detect femoral heads in a preprocessed volume (the model input, windowed to [0, 1],
    /// whose affine maps voxels to patient mm): boxes with score ≥ `min_score` after 3D NMS
    /// at `nms_iou`, best first, at most `max_detections`.
    pub fn detect(
        &self,
        volume: &Volume,
        device: &Device,
        dtype: DType,
        min_score: f32,
        nms_iou: f64,
        max_detections: usize,
    ) -> Result<Vec<Detection>> {
        let [w, h, d] = volume.dims;
        if volume.data.iter().any(|x| !x.is_finite()) {
            candle_core::bail!("detector input contains NaN or infinite values");
        }
        let x = Tensor::from_slice(&volume.data, (1, d, 1, h, w), &Device::Cpu)?
            .to_device(device)?
            .to_dtype(dtype)?;
        let raw = self.forward_t(&x, false)?;
        let boxes = decode(&raw)?;
        let kept = nms(
            boxes.into_iter().next().unwrap_or_default(),
            min_score,
            nms_iou,
        );
        Ok(kept
            .into_iter()
            .take(max_detections)
            .map(|b| to_detection(&b, volume))
            .collect())
    }

    /// The head candidates every caller works from (pipeline, training validation,
    /// evaluation): [`detect`](Self::detect) with [`CANDIDATE_MIN_SCORE`],
    /// [`CANDIDATE_NMS_IOU`] and at most [`MAX_CANDIDATES`].
    pub fn candidates(
        &self,
        volume: &Volume,
        device: &Device,
        dtype: DType,
    ) -> Result<Vec<Detection>> {
        self.detect(
            volume,
            device,
            dtype,
            CANDIDATE_MIN_SCORE,
            CANDIDATE_NMS_IOU,
            MAX_CANDIDATES,
        )
    }
}

/// Scores below this are not head candidates (the pipeline's confidence floor,
/// `analysis.min_detection_score`, is applied to the candidates afterwards).
pub const CANDIDATE_MIN_SCORE: f32 = 0.05;
/// Candidates overlapping a better one by more than this IoU are suppressed.
pub const CANDIDATE_NMS_IOU: f64 = 0.2;
/// Candidates kept, best first: the two heads, and others for [`pair_heads`] to weigh
/// against them.
pub const MAX_CANDIDATES: usize = 6;

/// Right-left distance below which two detections cannot be the two femoral heads, mm.
pub const MIN_HEAD_SEPARATION_MM: f64 = 60.0;
/// Right-left distance above which two detections cannot be the two femoral heads, mm
/// (adult inter-head distances are about 150-220 mm).
pub const MAX_HEAD_SEPARATION_MM: f64 = 300.0;
/// Largest anterior-posterior or superior-inferior offset between the two femoral heads,
/// mm: the pelvis may be tilted or rotated, not dislocated.
pub const MAX_HEAD_OFFSET_MM: f64 = 60.0;

/// Whether `a` and `b` can be the two femoral heads: far enough apart right-left, not too
/// far, and level with each other within [`MAX_HEAD_OFFSET_MM`].
pub fn plausible_pair(a: &Detection, b: &Detection) -> bool {
    let d = [0, 1, 2].map(|i| (a.center_lps_mm[i] - b.center_lps_mm[i]).abs());
    (MIN_HEAD_SEPARATION_MM..=MAX_HEAD_SEPARATION_MM).contains(&d[0])
        && d[1] <= MAX_HEAD_OFFSET_MM
        && d[2] <= MAX_HEAD_OFFSET_MM
}

/// The indices of the two detections (each scoring at least `min_score`) that are most
/// likely the two femoral heads: of the pairs that can be ([`plausible_pair`]), the one
/// with the highest summed score.
pub fn best_pair(dets: &[Detection], min_score: f32) -> Option<(usize, usize)> {
    let mut best: Option<(f32, usize, usize)> = None;
    for i in 0..dets.len() {
        for j in i + 1..dets.len() {
            let (a, b) = (&dets[i], &dets[j]);
            if a.score < min_score || b.score < min_score || !plausible_pair(a, b) {
                continue;
            }
            let sum = a.score + b.score;
            if best.is_none_or(|(s, _, _)| sum > s) {
                best = Some((sum, i, j));
            }
        }
    }
    best.map(|(_, i, j)| (i, j))
}

/// The two femoral heads among detections (best first), as (right, left) — the one
/// further to patient left (+x in LPS) is the left head: the [`best_pair`] of those with
/// a score of at least `min_score`. Otherwise why not.
pub fn pair_heads(
    dets: &[Detection],
    min_score: f32,
) -> std::result::Result<(&Detection, &Detection), String> {
    let found = dets.iter().filter(|d| d.score >= min_score).count();
    if found < 2 {
        return Err(format!(
            "{found} femoral head(s) found with a detection score of at least {min_score:.2} (best scores: {})",
            dets.iter()
                .take(2)
                .map(|d| format!("{:.2}", d.score))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let Some((i, j)) = best_pair(dets, min_score) else {
        return Err(format!(
            "no two of the {found} detections lie as two femoral heads do \
             ({MIN_HEAD_SEPARATION_MM:.0}-{MAX_HEAD_SEPARATION_MM:.0} mm apart right-left, \
             within {MAX_HEAD_OFFSET_MM:.0} mm of each other otherwise); both femoral heads \
             were not found"
        ));
    };
    let (a, b) = (&dets[i], &dets[j]);
    Ok(if a.center_lps_mm[0] < b.center_lps_mm[0] {
        (a, b)
    } else {
        (b, a)
    })
}

/// A box in (d, h, w) voxel order with its score.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct VoxelBox {
    /// Centre (d, h, w).
    pub center: [f64; 3],
    /// Size (d, h, w).
    pub size: [f64; 3],
    /// Score in [0, 1].
    pub score: f32,
}

/// 3D IoU of two boxes.
pub fn iou(a: &VoxelBox, b: &VoxelBox) -> f64 {
    let mut inter = 1.0;
    for x in 0..3 {
        let lo = (a.center[x] - a.size[x] / 2.0).max(b.center[x] - b.size[x] / 2.0);
        let hi = (a.center[x] + a.size[x] / 2.0).min(b.center[x] + b.size[x] / 2.0);
        inter *= (hi - lo).max(0.0);
    }
    let va: f64 = a.size.iter().product();
    let vb: f64 = b.size.iter().product();
    let union = va + vb - inter;
    if union > 0.0 { inter / union } else { 0.0 }
}

/// Largest log-size (in cells) the decoder accepts, so exp() stays finite.
const MAX_LOG_SIZE: f64 = 4.0;

fn cell_center(cell: usize, grid: [usize; 3]) -> [usize; 3] {
    let [_, gh, gw] = grid;
    [cell / (gh * gw), (cell / gw) % gh, cell % gw]
}

/// Decode every cell of every batch item into boxes (voxels, (d, h, w)).
pub fn decode(raw: &RawOutput) -> Result<Vec<Vec<VoxelBox>>> {
    let t = raw.tensor.to_dtype(DType::F32)?.to_device(&Device::Cpu)?;
    let (n, cells, k) = t.dims3()?;
    let v: Vec<f32> = t.flatten_all()?.to_vec1()?;
    let s = raw.stride as f64;
    let sig = |x: f32| 1.0 / (1.0 + (-x).exp());
    Ok((0..n)
        .map(|b| {
            (0..cells)
                .map(|c| {
                    let p = &v[(b * cells + c) * k..(b * cells + c + 1) * k];
                    let g = cell_center(c, raw.grid);
                    let score = sig(p[6]) * sig(p[7..].iter().cloned().fold(f32::MIN, f32::max));
                    VoxelBox {
                        center: [0, 1, 2].map(|a| (g[a] as f64 + 0.5 + p[a] as f64) * s - 0.5),
                        size: [0, 1, 2].map(|a| {
                            (p[3 + a] as f64).clamp(-MAX_LOG_SIZE, MAX_LOG_SIZE).exp() * s
                        }),
                        score,
                    }
                })
                .collect()
        })
        .collect())
}

/// Boxes with score ≥ `min_score`, best first, none overlapping a better one by more than
/// `iou_threshold`.
pub fn nms(mut boxes: Vec<VoxelBox>, min_score: f32, iou_threshold: f64) -> Vec<VoxelBox> {
    boxes.retain(|b| b.score >= min_score && b.score.is_finite());
    boxes.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut kept: Vec<VoxelBox> = Vec::new();
    for b in boxes {
        if kept.iter().all(|k| iou(k, &b) <= iou_threshold) {
            kept.push(b);
        }
    }
    kept
}

fn to_detection(b: &VoxelBox, v: &Volume) -> Detection {
    // (d, h, w) → the volume's (i, j, k) = (w, h, d).
    let c = [b.center[2], b.center[1], b.center[0]];
    let s = [b.size[2], b.size[1], b.size[0]];
    let mut lo = [f64::MAX; 3];
    let mut hi = [f64::MIN; 3];
    for corner in 0..8 {
        let q = [0, 1, 2].map(|a| {
            let sign = if corner >> a & 1 == 1 { 0.5 } else { -0.5 };
            c[a] + sign * s[a]
        });
        let p = v.voxel_to_patient(q);
        for a in 0..3 {
            lo[a] = lo[a].min(p[a]);
            hi[a] = hi[a].max(p[a]);
        }
    }
    Detection {
        score: b.score,
        center_voxel: c,
        size_voxel: s,
        center_lps_mm: v.voxel_to_patient(c),
        bbox_lps_mm: [lo, hi],
    }
}

/// The assignment of cells to true boxes for one image.
#[derive(Debug, Clone, PartialEq)]
pub struct Assignment {
    /// (cell, index of the true box) for every foreground cell.
    pub foreground: Vec<(usize, usize)>,
    /// IoU of each foreground cell's prediction with its box (the class target).
    pub ious: Vec<f64>,
}

/// SimOTA-style assignment (see the module doc) of one image's predictions to its true
/// boxes (voxels, (d, h, w)).
pub fn assign(
    preds: &[VoxelBox],
    truths: &[VoxelBox],
    grid: [usize; 3],
    stride: usize,
    center_radius: f64,
) -> Assignment {
    let s = stride as f64;
    let mut claims: Vec<Option<(usize, f64, f64)>> = vec![None; preds.len()];
    for (t, truth) in truths.iter().enumerate() {
        let mut cands = Vec::new();
        for (c, p) in preds.iter().enumerate() {
            let g = cell_center(c, grid);
            let cc = [0, 1, 2].map(|a| (g[a] as f64 + 0.5) * s - 0.5);
            let in_box = (0..3).all(|a| (cc[a] - truth.center[a]).abs() < truth.size[a] / 2.0);
            let in_center = (0..3).all(|a| (cc[a] - truth.center[a]).abs() < center_radius * s);
            if !(in_box || in_center) {
                continue;
            }
            let i = iou(p, truth);
            let cost = -((p.score as f64).max(1e-8)).ln()
                + 3.0 * -(i + 1e-8).ln()
                + if in_box && in_center { 0.0 } else { 1e5 };
            cands.push((c, cost, i));
        }
        if cands.is_empty() {
            // A box between cell centres: take the nearest cell.
            let g = truth
                .center
                .map(|x| ((x + 0.5) / s).floor().max(0.0) as usize);
            let g = [0, 1, 2].map(|a| g[a].min(grid[a] - 1));
            let c = (g[0] * grid[1] + g[1]) * grid[2] + g[2];
            cands.push((c, 0.0, iou(&preds[c], truth)));
        }
        let mut by_iou: Vec<f64> = cands.iter().map(|c| c.2).collect();
        by_iou.sort_by(|a, b| b.total_cmp(a));
        let k = (by_iou.iter().take(10).sum::<f64>() as usize).clamp(1, cands.len());
        cands.sort_by(|a, b| a.1.total_cmp(&b.1));
        for &(c, cost, i) in cands.iter().take(k) {
            if claims[c].is_none_or(|(_, old, _)| cost < old) {
                claims[c] = Some((t, cost, i));
            }
        }
    }
    let mut a = Assignment {
        foreground: Vec::new(),
        ious: Vec::new(),
    };
    for (c, claim) in claims.into_iter().enumerate() {
        if let Some((t, _, i)) = claim {
            a.foreground.push((c, t));
            a.ious.push(i);
        }
    }
    a
}

/// Binary cross-entropy with logits, elementwise, stable for any logit.
fn bce_with_logits(x: &Tensor, target: &Tensor) -> Result<Tensor> {
    // max(x, 0) − x·t + ln(1 + e^−|x|)
    let soft = (x.abs()?.neg()?.exp()? + 1.0)?.log()?;
    (x.relu()? - (x * target)?)? + soft
}

/// Product of the three columns of `(F, 3)` → `(F,)`.
fn volume3(x: &Tensor) -> Result<Tensor> {
    (x.narrow(1, 0, 1)? * x.narrow(1, 1, 1)?)?
        .mul(&x.narrow(1, 2, 1)?)?
        .squeeze(1)
}

/// The loss terms of one batch.
#[derive(Debug, Clone)]
pub struct LossParts {
    /// The total, to minimise.
    pub total: Tensor,
    /// Objectness BCE (per foreground cell).
    pub obj: f32,
    /// Class BCE.
    pub cls: f32,
    /// IoU loss.
    pub iou: f32,
    /// Foreground cells.
    pub foreground: usize,
}

/// Detection loss for a batch: assignment per image, then the losses of the module doc.
/// `truths[b]` are image `b`'s boxes (voxels, (d, h, w)).
pub fn detection_loss(
    raw: &RawOutput,
    truths: &[Vec<VoxelBox>],
    center_radius: f64,
) -> Result<LossParts> {
    let (n, cells, k) = raw.tensor.dims3()?;
    if truths.len() != n {
        candle_core::bail!("{} truth lists for a batch of {n}", truths.len());
    }
    let preds = decode(raw)?;
    let dev = raw.tensor.device();
    let mut rows = Vec::new();
    let mut obj_target = vec![0f32; n * cells];
    let mut cls_target = Vec::new();
    let mut box_target = Vec::new();
    let mut grid_pos = Vec::new();
    for b in 0..n {
        let a = assign(&preds[b], &truths[b], raw.grid, raw.stride, center_radius);
        for (&(c, t), &i) in a.foreground.iter().zip(&a.ious) {
            rows.push((b * cells + c) as u32);
            obj_target[b * cells + c] = 1.0;
            cls_target.push(i as f32);
            let tb = &truths[b][t];
            box_target.extend(tb.center.iter().chain(tb.size.iter()).map(|x| *x as f32));
            let g = cell_center(c, raw.grid);
            grid_pos.extend(g.map(|x| x as f32));
        }
    }
    let fg = rows.len();
    let norm = fg.max(1) as f64;
    let flat = raw.tensor.reshape((n * cells, k))?;
    let obj_logits = flat.narrow(1, 6, 1)?.squeeze(1)?;
    let obj_t = Tensor::from_vec(obj_target, n * cells, dev)?.to_dtype(flat.dtype())?;
    let obj_loss = (bce_with_logits(&obj_logits, &obj_t)?.sum_all()? / norm)?;
    if fg == 0 {
        let v = obj_loss.to_dtype(DType::F32)?.to_scalar::<f32>()?;
        return Ok(LossParts {
            total: obj_loss,
            obj: v,
            cls: 0.0,
            iou: 0.0,
            foreground: 0,
        });
    }
    let idx = Tensor::from_vec(rows, fg, dev)?;
    let sel = flat.index_select(&idx, 0)?;
    // Class: the best class logit's BCE against the IoU (one class: the femoral head).
    let cls_logits = sel.narrow(1, 7, k - 7)?.max(1)?;
    let cls_t = Tensor::from_vec(cls_target, fg, dev)?.to_dtype(flat.dtype())?;
    let cls_loss = (bce_with_logits(&cls_logits, &cls_t)?.sum_all()? / norm)?;
    // Boxes, differentiably decoded.
    let s = raw.stride as f64;
    let grid_t = Tensor::from_vec(grid_pos, (fg, 3), dev)?.to_dtype(flat.dtype())?;
    let center = (((sel.narrow(1, 0, 3)? + grid_t)? + 0.5)? * s)?.affine(1.0, -0.5)?;
    let size = (sel
        .narrow(1, 3, 3)?
        .clamp(-MAX_LOG_SIZE, MAX_LOG_SIZE)?
        .exp()?
        * s)?;
    let tb = Tensor::from_vec(box_target, (fg, 6), dev)?.to_dtype(flat.dtype())?;
    let (tc, ts) = (tb.narrow(1, 0, 3)?, tb.narrow(1, 3, 3)?);
    let lo = (&center - (&size / 2.0)?)?.maximum(&(&tc - (&ts / 2.0)?)?)?;
    let hi = (&center + (&size / 2.0)?)?.minimum(&(&tc + (&ts / 2.0)?)?)?;
    let inter = volume3(&(hi - lo)?.relu()?)?;
    let union = ((volume3(&size)? + volume3(&ts)?)? - &inter)?;
    let ious = (inter / (union + 1e-9)?)?;
    let iou_loss = (ious.sqr()?.affine(-1.0, 1.0)?.sum_all()? / norm)?;
    let total = ((&obj_loss + &cls_loss)? + (&iou_loss * 5.0)?)?;
    let scalar = |t: &Tensor| -> Result<f32> { t.to_dtype(DType::F32)?.to_scalar::<f32>() };
    Ok(LossParts {
        obj: scalar(&obj_loss)?,
        cls: scalar(&cls_loss)?,
        iou: scalar(&iou_loss)?,
        total,
        foreground: fg,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(x: f64, y: f64, z: f64, score: f32) -> Detection {
        Detection {
            score,
            center_voxel: [0.0; 3],
            size_voxel: [0.0; 3],
            center_lps_mm: [x, y, z],
            bbox_lps_mm: [
                [x - 20.0, y - 20.0, z - 20.0],
                [x + 20.0, y + 20.0, z + 20.0],
            ],
        }
    }

    #[test]
    fn the_heads_are_the_best_pair_that_lies_as_two_heads_do() {
        // The best two: a head and a false positive in the bladder (level, but 40 mm apart).
        let dets = [
            at(-90.0, 0.0, 0.0, 0.9),
            at(-50.0, -40.0, 30.0, 0.8),
            at(92.0, 5.0, 4.0, 0.6),
        ];
        let (r, l) = pair_heads(&dets, 0.3).unwrap();
        assert_eq!((r.score, l.score), (0.9, 0.6));
        // A false positive far above (a vertebra) is not a head's partner either.
        let dets = [
            at(-90.0, 0.0, 0.0, 0.9),
            at(10.0, 0.0, 120.0, 0.85),
            at(88.0, 0.0, -3.0, 0.5),
        ];
        let (r, l) = pair_heads(&dets, 0.3).unwrap();
        assert_eq!((r.center_lps_mm[0], l.center_lps_mm[0]), (-90.0, 88.0));
        // Right and left by position, whatever the order of the scores.
        let dets = [at(90.0, 0.0, 0.0, 0.9), at(-90.0, 0.0, 0.0, 0.8)];
        let (r, l) = pair_heads(&dets, 0.3).unwrap();
        assert!(r.center_lps_mm[0] < 0.0 && l.center_lps_mm[0] > 0.0);
    }

    #[test]
    fn no_pair_is_made_up() {
        // Under the floor.
        let dets = [at(-90.0, 0.0, 0.0, 0.9), at(90.0, 0.0, 0.0, 0.2)];
        let e = pair_heads(&dets, 0.3).unwrap_err();
        assert!(e.contains("1 femoral head(s) found"), "{e}");
        // Two confident detections, but not where two heads can be.
        for far in [
            at(-40.0, 0.0, 0.0, 0.8),
            at(300.0, 0.0, 0.0, 0.8),
            at(90.0, 0.0, 80.0, 0.8),
        ] {
            let e = pair_heads(&[at(-90.0, 0.0, 0.0, 0.9), far], 0.3).unwrap_err();
            assert!(e.contains("lie as two femoral heads do"), "{e}");
        }
    }

    fn bx(c: [f64; 3], s: [f64; 3], score: f32) -> VoxelBox {
        VoxelBox {
            center: c,
            size: s,
            score,
        }
    }

    #[test]
    fn iou_of_known_boxes() {
        let a = bx([0.0; 3], [2.0; 3], 1.0);
        assert!((iou(&a, &a) - 1.0).abs() < 1e-12);
        // Shifted by half a side along one axis: inter 4, union 12.
        let b = bx([1.0, 0.0, 0.0], [2.0; 3], 1.0);
        assert!((iou(&a, &b) - 4.0 / 12.0).abs() < 1e-12);
        let far = bx([5.0, 0.0, 0.0], [2.0; 3], 1.0);
        assert_eq!(iou(&a, &far), 0.0);
    }

    #[test]
    fn nms_keeps_best_of_overlapping_and_distinct_boxes() {
        let boxes = vec![
            bx([10.0; 3], [8.0; 3], 0.6),
            bx([11.0, 10.0, 10.0], [8.0; 3], 0.9),
            bx([10.0, 10.0, 60.0], [8.0; 3], 0.8),
            bx([40.0, 10.0, 10.0], [8.0; 3], 0.01),
        ];
        let kept = nms(boxes, 0.05, 0.3);
        assert_eq!(kept.len(), 2);
        assert_eq!(kept[0].score, 0.9);
        assert_eq!(kept[1].center, [10.0, 10.0, 60.0]);
    }

    #[test]
    fn assignment_claims_cells_near_each_box() {
        let grid = [4, 8, 14];
        let cells = 4 * 8 * 14;
        let preds: Vec<VoxelBox> = (0..cells)
            .map(|c| {
                let g = cell_center(c, grid);
                bx(g.map(|x| (x as f64 + 0.5) * 8.0 - 0.5), [16.0; 3], 0.01)
            })
            .collect();
        let truths = vec![
            bx([15.5, 30.0, 25.0], [16.0, 18.0, 18.0], 1.0),
            bx([15.5, 30.0, 85.0], [16.0, 18.0, 18.0], 1.0),
        ];
        let a = assign(&preds, &truths, grid, 8, 2.5);
        assert!(!a.foreground.is_empty());
        for &(c, t) in &a.foreground {
            let g = cell_center(c, grid);
            let cc = g.map(|x| (x as f64 + 0.5) * 8.0 - 0.5);
            for x in 0..3 {
                assert!((cc[x] - truths[t].center[x]).abs() < truths[t].size[x] / 2.0);
            }
        }
        assert!(a.foreground.iter().any(|f| f.1 == 0));
        assert!(a.foreground.iter().any(|f| f.1 == 1));
    }

    #[test]
    fn bce_is_stable() {
        let dev = Device::Cpu;
        let x = Tensor::new(&[-1000f32, 0.0, 1000.0], &dev).unwrap();
        let t = Tensor::new(&[0f32, 1.0, 1.0], &dev).unwrap();
        let l: Vec<f32> = bce_with_logits(&x, &t).unwrap().to_vec1().unwrap();
        assert!(l[0].abs() < 1e-6 && (l[1] - 2f32.ln()).abs() < 1e-6 && l[2].abs() < 1e-6);
    }
}
