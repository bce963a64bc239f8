//! 3D layers on Candle, which has no conv3d or 3D pooling.
//!
//! Activations are kept depth-major, `(N, D, C, H, W)`, so that a 3D convolution is one
//! 2D convolution: the `kD` depth taps of every output slice are gathered into the channel
//! axis with `index_select` (`(N·Do, kD·C, H, W)`) and convolved with the weight reshaped
//! to `(Co, kD·Ci, kH, kW)`. It runs on CPU and CUDA from the same code, and is
//! differentiable (`index_select`'s backward is `index_add`). Weights are stored in
//! PyTorch's layout, `(Co, Ci, kD, kH, kW)`, under PyTorch's names (`weight`, `bias`;
//! batch norm `weight`, `bias`, `running_mean`, `running_var`), so a PyTorch twin of a network
//! loads the same file.
//!
//! Pooling reshapes each pooled axis into (out, k) and reduces; it supports kernel = stride
//! (the networks use strided convolutions otherwise). Candle's `max_pool2d` is avoided: its
//! backward is scaled wrongly.
//!
//! Pure tensor code: no I/O, no knowledge of the networks built from it.

use candle_core::{D, DType, Module, ModuleT, Result, Tensor};
use candle_nn::VarBuilder;

pub use super::conv_cpu::Activation;
use super::conv_cpu::{ChannelAffine, Conv3dCpu};

/// Configuration of a 3D convolution. Height and width share kernel, stride and padding
/// (Candle's conv2d takes one value for both).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv3dConfig {
    /// Kernel (depth, in-plane).
    pub kernel: (usize, usize),
    /// Stride (depth, in-plane).
    pub stride: (usize, usize),
    /// Zero padding (depth, in-plane).
    pub padding: (usize, usize),
    /// Whether there is a bias.
    pub bias: bool,
}

impl Conv3dConfig {
    /// A cubic kernel `k` with stride `s` and "same"-style padding `k / 2`.
    pub fn cube(k: usize, s: usize) -> Self {
        Conv3dConfig {
            kernel: (k, k),
            stride: (s, s),
            padding: (k / 2, k / 2),
            bias: false,
        }
    }
}

/// A 3D convolution over `(N, D, C, H, W)`.
#[derive(Debug, Clone)]
pub struct Conv3d {
    /// `(Co, Ci, kD, kH, kW)`, PyTorch's layout. It is rearranged for conv2d on every
    /// forward pass, so that an optimiser's (or a loader's) update of the variable is seen.
    weight: Tensor,
    /// `(1, 1, Co, 1, 1)`.
    bias: Option<Tensor>,
    cfg: Conv3dConfig,
}

impl Conv3d {
    /// Load or create `weight` `(Co, Ci, kD, k, k)` (and `bias` `(Co)`) under `vb`.
    pub fn new(
        in_channels: usize,
        out_channels: usize,
        cfg: Conv3dConfig,
        vb: VarBuilder,
    ) -> Result<Self> {
        let (kd, k) = cfg.kernel;
        let fan_in = (in_channels * kd * k * k) as f64;
        let init = candle_nn::Init::Kaiming {
            dist: candle_nn::init::NormalOrUniform::Uniform,
            fan: candle_nn::init::FanInOut::FanIn,
            non_linearity: candle_nn::init::NonLinearity::ReLU,
        };
        let weight = vb.get_with_hints((out_channels, in_channels, kd, k, k), "weight", init)?;
        let bias = if cfg.bias {
            let bound = 1.0 / fan_in.sqrt();
            Some(
                vb.get_with_hints(
                    out_channels,
                    "bias",
                    candle_nn::Init::Uniform {
                        lo: -bound,
                        up: bound,
                    },
                )?
                .reshape((1, 1, out_channels, 1, 1))?,
            )
        } else {
            None
        };
        Self::from_weights(&weight, bias.as_ref(), cfg)
    }

    /// Build from explicit tensors (PyTorch layout).
    pub fn from_weights(weight: &Tensor, bias: Option<&Tensor>, cfg: Conv3dConfig) -> Result<Self> {
        let (co, _, kd, kh, kw) = weight.dims5()?;
        if kh != kw || (kd, kh) != cfg.kernel {
            candle_core::bail!(
                "conv3d weight {:?} does not match kernel {:?}",
                weight.shape(),
                cfg.kernel
            );
        }
        let bias = match bias {
            Some(b) => Some(b.reshape((1, 1, co, 1, 1))?),
            None => None,
        };
        Ok(Conv3d {
            weight: weight.clone(),
            bias,
            cfg,
        })
    }

    /// The weight `(Co, Ci, kD, kH, kW)`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }
}

impl Conv3d {
    /// Whether `x` goes through the CPU inference kernel (`conv_cpu`): on CPU, in f32, with
    /// no gradient recorded through the input or the weight.
    fn use_cpu_kernel(&self, x: &Tensor) -> bool {
        x.device().is_cpu()
            && x.dtype() == DType::F32
            && self.weight.dtype() == DType::F32
            && !x.track_op()
            && !self.weight.track_op()
    }

    /// The general, differentiable path on every device: depth taps gathered into channels,
    /// then Candle's `conv2d`.
    pub fn forward_general(&self, x: &Tensor) -> Result<Tensor> {
        let (n, d, c, h, w) = x.dims5()?;
        let (kd, _) = self.cfg.kernel;
        let (co, ci, _, kh, kw) = self.weight.dims5()?;
        if c != ci {
            candle_core::bail!("conv3d expects {ci} channels, got {c} ({:?})", x.shape());
        }
        // `(Co, kD·Ci, kH, kW)`: the depth taps next to the input channels, as gathered below.
        let weight2d = self
            .weight
            .permute((0, 2, 1, 3, 4))?
            .reshape((co, kd * ci, kh, kw))?;
        let (sd, s) = self.cfg.stride;
        let (pd, p) = self.cfg.padding;
        let x = if pd > 0 {
            x.pad_with_zeros(1, pd, pd)?
        } else {
            x.clone()
        };
        let dp = d + 2 * pd;
        if dp < kd {
            candle_core::bail!(
                "conv3d: depth {d} (+2x{pd} padding) is smaller than the kernel {kd}"
            );
        }
        let dout = (dp - kd) / sd + 1;
        let idx: Vec<u32> = (0..dout)
            .flat_map(|o| (0..kd).map(move |t| (o * sd + t) as u32))
            .collect();
        let idx = Tensor::from_vec(idx, dout * kd, x.device())?;
        let taps = x.index_select(&idx, 1)?.reshape((n * dout, kd * c, h, w))?;
        let k = self.cfg.kernel.1;
        if h + 2 * p < k || w + 2 * p < k {
            candle_core::bail!(
                "conv3d: plane {h}x{w} (+2x{p} padding) is smaller than the kernel {k}"
            );
        }
        // Candle's conv2d backward sizes the input gradient as (out - 1) * stride - 2 * pad +
        // kernel, which is short when the last window leaves rows or columns unused. Such
        // trailing rows take no part in the forward pass, so pad explicitly and drop them
        // first; their gradient is then zero, as it should be.
        let (rh, rw) = ((h + 2 * p - k) % s, (w + 2 * p - k) % s);
        let y = if rh == 0 && rw == 0 {
            taps.conv2d(&weight2d, p, s, 1, 1)?
        } else {
            let padded = if p > 0 {
                taps.pad_with_zeros(2, p, p)?.pad_with_zeros(3, p, p)?
            } else {
                taps
            };
            padded
                .narrow(2, 0, h + 2 * p - rh)?
                .narrow(3, 0, w + 2 * p - rw)?
                .conv2d(&weight2d, 0, s, 1, 1)?
        };
        let (_, co, ho, wo) = y.dims4()?;
        let y = y.reshape((n, dout, co, ho, wo))?;
        match &self.bias {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }
}

impl Conv3d {
    /// The convolution followed by `act`; on the CPU inference path both run in one pass.
    pub fn forward_act(&self, x: &Tensor, act: Activation) -> Result<Tensor> {
        if !self.use_cpu_kernel(x) {
            return act.tensor(self.forward_general(x)?);
        }
        let (_, _, c, _, _) = x.dims5()?;
        let ci = self.weight.dim(1)?;
        if c != ci {
            candle_core::bail!("conv3d expects {ci} channels, got {c} ({:?})", x.shape());
        }
        let bias = match &self.bias {
            Some(b) => Some(b.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?),
            None => None,
        };
        let op = Conv3dCpu {
            stride: self.cfg.stride,
            padding: self.cfg.padding,
            bias,
            activation: act,
        };
        x.contiguous()?
            .apply_op2_no_bwd(&self.weight.contiguous()?, &op)
    }
}

impl Module for Conv3d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_act(x, Activation::Identity)
    }
}

/// A convolution followed by batch normalisation (the activation is the caller's). In
/// inference with fixed (loaded) weights the two run as one convolution, the batch norm
/// folded into its weight and bias on first use; in training, or while the weights are
/// variables, they run apart.
#[derive(Debug, Clone)]
pub struct ConvNorm {
    conv: Conv3d,
    norm: BatchNorm3d,
    folded: std::sync::OnceLock<Conv3d>,
}

impl ConvNorm {
    /// Join a convolution and the batch norm that follows it.
    pub fn new(conv: Conv3d, norm: BatchNorm3d) -> Self {
        ConvNorm {
            conv,
            norm,
            folded: std::sync::OnceLock::new(),
        }
    }

    /// The convolution and batch norm as one convolution (inference).
    pub fn fold(&self) -> Result<Conv3d> {
        let (scale, shift) = self.norm.scale_shift()?;
        let w = self.conv.weight();
        let co = w.dim(0)?;
        let dtype = w.dtype();
        let w = w.broadcast_mul(&scale.reshape((co, 1, 1, 1, 1))?.to_dtype(dtype)?)?;
        let b = match &self.conv.bias {
            Some(b) => ((b.reshape(co)?.to_dtype(scale.dtype())? * &scale)? + &shift)?,
            None => shift,
        };
        Conv3d::from_weights(
            &w,
            Some(&b.to_dtype(dtype)?),
            Conv3dConfig {
                bias: true,
                ..self.conv.cfg
            },
        )
    }

    /// Convolution, batch norm, then `act`.
    pub fn forward_act(&self, x: &Tensor, train: bool, act: Activation) -> Result<Tensor> {
        if train || self.conv.weight().track_op() {
            return act.tensor(self.norm.forward_t(&self.conv.forward(x)?, train)?);
        }
        let conv = match self.folded.get() {
            Some(c) => c,
            None => {
                let c = self.fold()?;
                self.folded.get_or_init(|| c)
            }
        };
        conv.forward_act(x, act)
    }
}

impl ModuleT for ConvNorm {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_act(x, train, Activation::Identity)
    }
}

/// Batch normalisation over the channel axis of `(N, D, C, H, W)` (train and eval).
#[derive(Debug, Clone)]
pub struct BatchNorm3d {
    inner: candle_nn::BatchNorm,
}

impl BatchNorm3d {
    /// Load or create `weight`, `bias`, `running_mean`, `running_var` under `vb`
    /// (PyTorch defaults: eps 1e-5, momentum 0.1).
    pub fn new(channels: usize, vb: VarBuilder) -> Result<Self> {
        let cfg = candle_nn::BatchNormConfig {
            eps: 1e-5,
            remove_mean: true,
            affine: true,
            momentum: 0.1,
        };
        Ok(BatchNorm3d {
            inner: candle_nn::batch_norm(channels, cfg, vb)?,
        })
    }
}

impl BatchNorm3d {
    /// The inference map as per-channel `(scale, shift)`, each `(C)`:
    /// y = x · γ/√(σ² + ε) + (β − μ · γ/√(σ² + ε)).
    ///
    /// The running statistics are detached: Candle keeps them as variables (training
    /// updates them), and without the detach every tensor downstream of a loaded network
    /// would record a backward graph. Gradients still reach γ and β when they are variables.
    pub fn scale_shift(&self) -> Result<(Tensor, Tensor)> {
        let mean = self.inner.running_mean().detach();
        let inv = (self.inner.running_var().detach() + self.inner.eps())?
            .sqrt()?
            .recip()?;
        match self.inner.weight_and_bias() {
            Some((w, b)) => {
                let s = (w * &inv)?;
                let sh = (b - (mean * &s)?)?;
                Ok((s, sh))
            }
            None => Ok((inv.clone(), (mean * &inv)?.neg()?)),
        }
    }
}

impl BatchNorm3d {
    /// Batch norm then `act`. In inference on CPU in f32 with fixed statistics, one pass.
    pub fn forward_act(&self, x: &Tensor, train: bool, act: Activation) -> Result<Tensor> {
        let fixed = !train
            && x.device().is_cpu()
            && x.dtype() == DType::F32
            && !x.track_op()
            && !self
                .inner
                .weight_and_bias()
                .is_some_and(|(w, b)| w.track_op() || b.track_op());
        if !fixed {
            return act.tensor(self.forward_t(x, train)?);
        }
        let (scale, shift) = self.scale_shift()?;
        let op = ChannelAffine {
            scale: scale.to_dtype(DType::F32)?.to_vec1()?,
            shift: shift.to_dtype(DType::F32)?.to_vec1()?,
            activation: act,
        };
        x.contiguous()?.apply_op1_no_bwd(&op)
    }
}

impl ModuleT for BatchNorm3d {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        if !train {
            // Inference: one per-channel affine map on the depth-major layout, with no
            // transposes.
            let c = x.dim(2)?;
            let (scale, shift) = self.scale_shift()?;
            let shape = (1, 1, c, 1, 1);
            return x
                .broadcast_mul(&scale.reshape(shape)?.to_dtype(x.dtype())?)?
                .broadcast_add(&shift.reshape(shape)?.to_dtype(x.dtype())?);
        }
        // Training: Candle's batch norm (batch statistics, running averages), which wants
        // channels at axis 1.
        let y = x.transpose(1, 2)?.contiguous()?;
        let y = self.inner.forward_t(&y, train)?;
        y.transpose(1, 2)?.contiguous()
    }
}

/// 3D max pooling with kernel = stride `(kd, k)` over `(N, D, C, H, W)`; trailing voxels
/// that do not fill a window are dropped (PyTorch's floor mode).
pub fn max_pool3d(x: &Tensor, kd: usize, k: usize) -> Result<Tensor> {
    pool3d(x, kd, k, true)
}

/// 3D average pooling with kernel = stride `(kd, k)`.
pub fn avg_pool3d(x: &Tensor, kd: usize, k: usize) -> Result<Tensor> {
    pool3d(x, kd, k, false)
}

fn pool3d(x: &Tensor, kd: usize, k: usize, max: bool) -> Result<Tensor> {
    let (n, d, c, h, w) = x.dims5()?;
    let (od, oh, ow) = (d / kd, h / k, w / k);
    if od == 0 || oh == 0 || ow == 0 {
        candle_core::bail!(
            "pool3d: input {:?} smaller than the window ({kd}, {k}, {k})",
            x.shape()
        );
    }
    let x = x
        .narrow(1, 0, od * kd)?
        .narrow(3, 0, oh * k)?
        .narrow(4, 0, ow * k)?
        .reshape(vec![n, od, kd, c, oh, k, ow, k])?;
    let reduce = |t: Tensor, dim: usize| if max { t.max(dim) } else { t.mean(dim) };
    let y = reduce(x, 7)?;
    let y = reduce(y, 5)?;
    reduce(y, 2)
}

/// Global average pooling: `(N, D, C, H, W)` → `(N, C)`.
pub fn global_avg_pool3d(x: &Tensor) -> Result<Tensor> {
    x.mean(D::Minus1)?.mean(D::Minus1)?.mean(1)
}

/// Nearest-neighbour upsampling by integer factors `(fd, f)`.
pub fn upsample_nearest3d(x: &Tensor, fd: usize, f: usize) -> Result<Tensor> {
    let (n, d, c, h, w) = x.dims5()?;
    x.reshape(vec![n, d, 1, c, h, 1, w, 1])?
        .broadcast_as(vec![n, d, fd, c, h, f, w, f])?
        .reshape((n, d * fd, c, h * f, w * f))
}

/// Trilinear resize to `(od, oh, ow)` (align_corners = false): bilinear over (H, W), then
/// linear over D. Forward only (Candle's bilinear upsampling has no backward); used for
/// Grad-CAM heatmaps.
pub fn resize_trilinear(x: &Tensor, od: usize, oh: usize, ow: usize) -> Result<Tensor> {
    let (n, d, c, h, w) = x.dims5()?;
    let y = x
        .reshape((n * d, c, h, w))?
        .upsample_bilinear2d(oh, ow, false)?
        .reshape((n, d, c, oh, ow))?;
    if od == d {
        return Ok(y);
    }
    // Linear along D: output slice o samples input position (o + 0.5) * d / od - 0.5.
    let mut slices = Vec::with_capacity(od);
    for o in 0..od {
        let src = ((o as f64 + 0.5) * d as f64 / od as f64 - 0.5).clamp(0.0, (d - 1) as f64);
        let i0 = src.floor() as usize;
        let i1 = (i0 + 1).min(d - 1);
        let f = src - i0 as f64;
        let a = y.narrow(1, i0, 1)?;
        let b = y.narrow(1, i1, 1)?;
        slices.push(((a * (1.0 - f))? + (b * f)?)?);
    }
    Tensor::cat(&slices, 1)
}

/// `(N, C, D, H, W)` (PyTorch) → `(N, D, C, H, W)` (ours), and back with the same call.
pub fn swap_depth_channels(x: &Tensor) -> Result<Tensor> {
    x.transpose(1, 2)?.contiguous()
}
