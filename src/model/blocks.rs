//! The building blocks of 3D-MulDenseNet: the dense layer and block of a 3D DenseNet, and
//! the MulPoolFusion module that replaces DenseNet's transition layers.
//!
//! **Dense layer** (DenseNet-BC): BN → ReLU → 1×1×1 conv to `bn_size · growth` channels →
//! BN → ReLU → 3×3×3 conv to `growth` channels; its output is concatenated to its input.
//!
//! **MulPoolFusion** (the paper's multi-scale pooling fusion, in place of a transition):
//! 1. compression: BN → ReLU → 1×1×1 conv from `in` to `out` channels;
//! 2. three downsampling branches on the compressed map, each halving D, H and W:
//!    2×2×2 average pooling (smooth context), 2×2×2 max pooling (salient local signal, such
//!    as a sclerotic line), and a 3×3×3 convolution with stride 2 (learned downsampling);
//! 3. fusion: concatenation (`3 · out` channels) → BN → ReLU → 1×1×1 conv to `out`.
//!
//! This follows the paper's description — compression, parallel multi-scale pooling and
//! convolution branches, concatenation, 1×1×1 fusion — where a DenseNet transition would
//! have only compression and one average pooling. Inputs must have even D, H and W.
//!
//! Weight names (PyTorch twin in `reference/`): dense layer `norm1`, `conv1`, `norm2`,
//! `conv2`; block `layers.{i}`; MulPoolFusion `norm`, `compress`, `down`, `fuse_norm`,
//! `fuse`.

use candle_core::{Module, ModuleT, Result, Tensor};
use candle_nn::VarBuilder;

use super::layers::{
    Activation, BatchNorm3d, Conv3d, Conv3dConfig, ConvNorm, avg_pool3d, max_pool3d,
};

fn conv(cin: usize, cout: usize, k: usize, s: usize, vb: VarBuilder) -> Result<Conv3d> {
    Conv3d::new(cin, cout, Conv3dConfig::cube(k, s), vb)
}

/// One DenseNet-BC layer.
#[derive(Debug, Clone)]
pub struct DenseLayer {
    norm1: BatchNorm3d,
    /// `conv1` → `norm2`.
    conv1: ConvNorm,
    conv2: Conv3d,
}

impl DenseLayer {
    /// A layer taking `cin` channels and adding `growth`.
    pub fn new(cin: usize, growth: usize, bn_size: usize, vb: VarBuilder) -> Result<Self> {
        let mid = bn_size * growth;
        Ok(DenseLayer {
            norm1: BatchNorm3d::new(cin, vb.pp("norm1"))?,
            conv1: ConvNorm::new(
                conv(cin, mid, 1, 1, vb.pp("conv1"))?,
                BatchNorm3d::new(mid, vb.pp("norm2"))?,
            ),
            conv2: conv(mid, growth, 3, 1, vb.pp("conv2"))?,
        })
    }
}

impl ModuleT for DenseLayer {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let y = self.norm1.forward_act(x, train, Activation::Relu)?;
        let y = self.conv1.forward_act(&y, train, Activation::Relu)?;
        let y = self.conv2.forward(&y)?;
        // Channels are axis 2 in the depth-major layout.
        Tensor::cat(&[x, &y], 2)
    }
}

/// A dense block: `layers` dense layers, each adding `growth` channels.
#[derive(Debug, Clone)]
pub struct DenseBlock {
    layers: Vec<DenseLayer>,
    /// Channels out: `cin + layers · growth`.
    pub out_channels: usize,
}

impl DenseBlock {
    /// A block on `cin` channels.
    pub fn new(
        cin: usize,
        layers: usize,
        growth: usize,
        bn_size: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        let vb = vb.pp("layers");
        let layers = (0..layers)
            .map(|i| DenseLayer::new(cin + i * growth, growth, bn_size, vb.pp(i)))
            .collect::<Result<Vec<_>>>()?;
        Ok(DenseBlock {
            out_channels: cin + layers.len() * growth,
            layers,
        })
    }
}

impl ModuleT for DenseBlock {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut y = x.clone();
        for l in &self.layers {
            y = l.forward_t(&y, train)?;
        }
        Ok(y)
    }
}

/// MulPoolFusion: compression, three parallel downsampling branches, fusion.
#[derive(Debug, Clone)]
pub struct MulPoolFusion {
    norm: BatchNorm3d,
    compress: Conv3d,
    down: Conv3d,
    fuse_norm: BatchNorm3d,
    fuse: Conv3d,
}

impl MulPoolFusion {
    /// From `cin` to `cout` channels, halving D, H and W.
    pub fn new(cin: usize, cout: usize, vb: VarBuilder) -> Result<Self> {
        Ok(MulPoolFusion {
            norm: BatchNorm3d::new(cin, vb.pp("norm"))?,
            compress: conv(cin, cout, 1, 1, vb.pp("compress"))?,
            down: conv(cout, cout, 3, 2, vb.pp("down"))?,
            fuse_norm: BatchNorm3d::new(3 * cout, vb.pp("fuse_norm"))?,
            fuse: conv(3 * cout, cout, 1, 1, vb.pp("fuse"))?,
        })
    }
}

impl ModuleT for MulPoolFusion {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let (_, d, _, h, w) = x.dims5()?;
        if d % 2 != 0 || h % 2 != 0 || w % 2 != 0 {
            candle_core::bail!("MulPoolFusion needs even D, H, W, got {:?}", x.shape());
        }
        let c = self
            .compress
            .forward(&self.norm.forward_act(x, train, Activation::Relu)?)?;
        let avg = avg_pool3d(&c, 2, 2)?;
        let max = max_pool3d(&c, 2, 2)?;
        let conv = self.down.forward(&c)?;
        let cat = Tensor::cat(&[&avg, &max, &conv], 2)?;
        self.fuse
            .forward(&self.fuse_norm.forward_act(&cat, train, Activation::Relu)?)
    }
}
