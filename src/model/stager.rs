//! 3D-MulDenseNet, the stager: a femoral-head crop → Ficat-Arlet stage 0 / I / II.
//!
//! stem (3×3×3 conv → BN → ReLU) → dense block → MulPoolFusion → dense block → … →
//! dense block → BN → ReLU (the Grad-CAM layer) → global average pooling → linear.
//! Each MulPoolFusion halves D, H and W and compresses channels by `compression`.
//!
//! The forward pass is split at the Grad-CAM layer: [`Stager::features`] gives the last 3D
//! activation, [`Stager::classify`] the logits from it.
//!
//! Weight names: `stem.conv`, `stem.norm`, `blocks.{i}.layers.{j}.…`, `fusions.{i}.…`,
//! `final_norm`, `classifier` (`weight` `(3, C)`, `bias`).

use candle_core::{D, Module, ModuleT, Result, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use super::blocks::{DenseBlock, MulPoolFusion};
use super::layers::{Activation, BatchNorm3d, Conv3d, Conv3dConfig, ConvNorm, global_avg_pool3d};

/// Architecture of the stager (part of the model manifest).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StagerConfig {
    /// Input crop (D, H, W); each must be divisible by 2^(blocks - 1).
    pub input: [usize; 3],
    /// Channels after the stem.
    pub stem_channels: usize,
    /// Channels each dense layer adds.
    pub growth: usize,
    /// Dense layers per block.
    pub block_layers: Vec<usize>,
    /// Bottleneck width as a multiple of the growth rate.
    pub bn_size: usize,
    /// Channel compression of each MulPoolFusion (0 < c ≤ 1).
    pub compression: f64,
    /// Number of classes (3: stage 0, I, II).
    pub classes: usize,
    /// Input channels: 1 (the T2) or 2 (the T2 and its T1 companion; the crop's
    /// `channels`). Manifests without the key take one (and are written back without it).
    #[serde(default = "one_channel", skip_serializing_if = "is_one_channel")]
    pub in_channels: usize,
}

fn one_channel() -> usize {
    1
}

fn is_one_channel(c: &usize) -> bool {
    *c == 1
}

impl StagerConfig {
    /// The preset that trains on a 2-core CPU and is shipped.
    pub fn small() -> Self {
        StagerConfig {
            input: [16, 32, 32],
            stem_channels: 16,
            growth: 8,
            block_layers: vec![3, 4],
            bn_size: 2,
            compression: 0.5,
            classes: 3,
            in_channels: 1,
        }
    }

    /// Check the configuration is buildable and of sane size (1-8 blocks of at most 128
    /// layers, at most 4096 stem channels, growth 1024, bottleneck factor 16, 2-16 classes,
    /// 1024 voxels per axis).
    pub fn validate(&self) -> Result<()> {
        if self.block_layers.is_empty()
            || self.block_layers.len() > 8
            || self.block_layers.iter().any(|l| *l > 128)
            || !(1..=4096).contains(&self.stem_channels)
            || !(1..=1024).contains(&self.growth)
            || !(1..=16).contains(&self.bn_size)
            || !(2..=16).contains(&self.classes)
            || !(1..=2).contains(&self.in_channels)
            || !(self.compression > 0.0 && self.compression <= 1.0)
            || self.input.iter().any(|x| !(1..=1024).contains(x))
        {
            candle_core::bail!("invalid stager configuration {self:?}");
        }
        Ok(())
    }

    /// The paper's scale: a DenseNet-121 layout (6, 12, 24, 16 layers, growth 32, 64 stem
    /// channels) in 3D, for sites that train on a GPU.
    pub fn paper() -> Self {
        StagerConfig {
            input: [32, 64, 64],
            stem_channels: 64,
            growth: 32,
            block_layers: vec![6, 12, 24, 16],
            bn_size: 4,
            compression: 0.5,
            classes: 3,
            in_channels: 1,
        }
    }
}

/// The stager network.
#[derive(Debug, Clone)]
pub struct Stager {
    /// Stem convolution → its batch norm.
    stem: ConvNorm,
    blocks: Vec<DenseBlock>,
    fusions: Vec<MulPoolFusion>,
    final_norm: BatchNorm3d,
    classifier: candle_nn::Linear,
    /// The configuration it was built from.
    pub config: StagerConfig,
}

impl Stager {
    /// Build (or load, through `vb`) a stager.
    pub fn new(cfg: &StagerConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        let stem = ConvNorm::new(
            Conv3d::new(
                cfg.in_channels,
                cfg.stem_channels,
                Conv3dConfig::cube(3, 1),
                vb.pp("stem").pp("conv"),
            )?,
            BatchNorm3d::new(cfg.stem_channels, vb.pp("stem").pp("norm"))?,
        );
        let mut channels = cfg.stem_channels;
        let (mut blocks, mut fusions) = (Vec::new(), Vec::new());
        for (i, layers) in cfg.block_layers.iter().enumerate() {
            let block = DenseBlock::new(
                channels,
                *layers,
                cfg.growth,
                cfg.bn_size,
                vb.pp("blocks").pp(i),
            )?;
            channels = block.out_channels;
            blocks.push(block);
            if i + 1 < cfg.block_layers.len() {
                let out = ((channels as f64) * cfg.compression).floor().max(1.0) as usize;
                fusions.push(MulPoolFusion::new(channels, out, vb.pp("fusions").pp(i))?);
                channels = out;
            }
        }
        let final_norm = BatchNorm3d::new(channels, vb.pp("final_norm"))?;
        let classifier = candle_nn::linear(channels, cfg.classes, vb.pp("classifier"))?;
        Ok(Stager {
            stem,
            blocks,
            fusions,
            final_norm,
            classifier,
            config: cfg.clone(),
        })
    }

    /// The last 3D activation `(N, D', C, H', W')` (the Grad-CAM layer), from a batch of
    /// crops `(N, D, C, H, W)` with `C` the configuration's input channels.
    pub fn features(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let (_, d, c, h, w) = x.dims5()?;
        let [ed, eh, ew] = self.config.input;
        let ec = self.config.in_channels;
        if c != ec || (d, h, w) != (ed, eh, ew) {
            candle_core::bail!(
                "stager input must be (N, {ed}, {ec}, {eh}, {ew}), got {:?}",
                x.shape()
            );
        }
        let mut y = self.stem.forward_act(x, train, Activation::Relu)?;
        for (i, block) in self.blocks.iter().enumerate() {
            y = block.forward_t(&y, train)?;
            if let Some(f) = self.fusions.get(i) {
                y = f.forward_t(&y, train)?;
            }
        }
        self.final_norm.forward_act(&y, train, Activation::Relu)
    }

    /// Logits `(N, classes)` from [`Stager::features`].
    pub fn classify(&self, features: &Tensor) -> Result<Tensor> {
        self.classifier.forward(&global_avg_pool3d(features)?)
    }

    /// Logits `(N, classes)` from crops.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.classify(&self.features(x, train)?)
    }

    /// Class probabilities `(N, classes)` (f32) for crops `(N, D, C, H, W)`; refuses
    /// crops holding NaN or infinity rather than return a meaningless prediction.
    pub fn probabilities(&self, x: &Tensor) -> Result<Tensor> {
        let finite = x
            .to_dtype(candle_core::DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?
            .iter()
            .all(|v| v.is_finite());
        if !finite {
            candle_core::bail!("stager input contains NaN or infinite values");
        }
        let logits = self
            .forward_t(x, false)?
            .to_dtype(candle_core::DType::F32)?;
        candle_nn::ops::softmax(&logits, D::Minus1)
    }
}

/// Multi-class focal loss (Lin et al.), mean over the batch:
/// −α_t (1 − p_t)^γ log p_t, with log p from a (stable) log-softmax of the logits.
/// `targets` are class indices `(N,)` (u32); `alpha` optional per-class weights.
pub fn focal_loss(
    logits: &Tensor,
    targets: &Tensor,
    gamma: f64,
    alpha: Option<&Tensor>,
) -> Result<Tensor> {
    let logp = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    let idx = targets.unsqueeze(1)?;
    let logp_t = logp.gather(&idx, 1)?.squeeze(1)?;
    let p_t = logp_t.exp()?;
    let modulating = (1.0 - p_t)?.powf(gamma)?;
    let mut loss = (modulating * logp_t)?.neg()?;
    if let Some(a) = alpha {
        loss = (loss * a.gather(targets, 0)?)?;
    }
    loss.mean_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    #[test]
    fn focal_loss_values() {
        let dev = Device::Cpu;
        // Uniform logits over 3 classes: p_t = 1/3; gamma 0 gives cross-entropy ln 3.
        let logits = Tensor::zeros((2, 3), DType::F32, &dev).unwrap();
        let t = Tensor::new(&[0u32, 2], &dev).unwrap();
        let ce = focal_loss(&logits, &t, 0.0, None)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!((ce - 3f32.ln()).abs() < 1e-6);
        let fl = focal_loss(&logits, &t, 2.0, None)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!((fl - (2.0f32 / 3.0).powi(2) * 3f32.ln()).abs() < 1e-6);
        // Huge logits stay finite.
        let big = Tensor::new(&[[1000f32, -1000.0, 0.0]], &dev).unwrap();
        let l = focal_loss(&big, &Tensor::new(&[1u32], &dev).unwrap(), 2.0, None)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(l.is_finite() && l > 100.0, "{l}");
    }
}
