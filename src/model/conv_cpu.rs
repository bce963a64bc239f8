//! The 3D convolution's inference kernel on CPU: a direct vol2col + GEMM over the
//! depth-major layout `(N, D, C, H, W)`, one output depth slice at a time.
//!
//! Each output slice `(n, od)` is `W (Co × K) · col (K × Ho·Wo)` with `K = kD·Ci·kH·kW`:
//! the column matrix is gathered straight from the input (zero rows where the window leaves
//! the volume), or, for an unpadded 1×1×1 kernel, *is* the input slice. Slices run in
//! parallel on rayon; when there are fewer slices than threads the GEMM itself is split.
//!
//! It exists because the general path (`layers::Conv3d` via `index_select` + Candle's
//! `conv2d`) spends most of its time copying: gathering depth taps, then converting each
//! 2D batch to NHWC and tiling it again. It has no backward pass: `Conv3d` uses it only on
//! CPU, in f32, and when no gradient is being recorded; training and CUDA keep the general,
//! differentiable path (which the golden tests check against PyTorch, as they check this one).

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape};
use rayon::prelude::*;

/// An activation applied in the same pass as the bias.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// None.
    Identity,
    /// max(x, 0).
    Relu,
    /// x · sigmoid(x).
    Silu,
}

impl Activation {
    #[inline]
    fn apply(self, x: f32) -> f32 {
        match self {
            Activation::Identity => x,
            Activation::Relu => x.max(0.0),
            Activation::Silu => x / (1.0 + (-x).exp()),
        }
    }

    /// The same on a tensor (the general path).
    pub fn tensor(self, x: candle_core::Tensor) -> Result<candle_core::Tensor> {
        match self {
            Activation::Identity => Ok(x),
            Activation::Relu => x.relu(),
            Activation::Silu => x.silu(),
        }
    }
}

/// Strides and zero padding of a convolution: (depth, in-plane), and what follows it in
/// the same pass: a per-output-channel bias and an activation.
#[derive(Debug, Clone)]
pub struct Conv3dCpu {
    /// Stride (depth, in-plane).
    pub stride: (usize, usize),
    /// Zero padding (depth, in-plane).
    pub padding: (usize, usize),
    /// One value per output channel, or none.
    pub bias: Option<Vec<f32>>,
    /// Applied after the bias.
    pub activation: Activation,
}

struct Geometry {
    d: usize,
    c: usize,
    h: usize,
    w: usize,
    kd: usize,
    kh: usize,
    kw: usize,
    dout: usize,
    hout: usize,
    wout: usize,
}

impl Conv3dCpu {
    /// Gather the column matrix `(K, Ho·Wo)` of output slice `od` of batch item `b`.
    fn vol2col(&self, g: &Geometry, x: &[f32], b: usize, od: usize, col: &mut [f32]) {
        let (sd, s) = self.stride;
        let (pd, p) = self.padding;
        let m = g.hout * g.wout;
        let plane = g.h * g.w;
        for t in 0..g.kd {
            let iz = (od * sd + t) as isize - pd as isize;
            for c in 0..g.c {
                let src = if iz >= 0 && (iz as usize) < g.d {
                    Some(&x[((b * g.d + iz as usize) * g.c + c) * plane..][..plane])
                } else {
                    None
                };
                for a in 0..g.kh {
                    for bb in 0..g.kw {
                        let row = ((t * g.c + c) * g.kh + a) * g.kw + bb;
                        let dst = &mut col[row * m..(row + 1) * m];
                        let Some(src) = src else {
                            dst.fill(0.0);
                            continue;
                        };
                        // Output columns whose input column lies inside the plane.
                        let lo = p.saturating_sub(bb).div_ceil(s).min(g.wout);
                        let hi = ((g.w + p).saturating_sub(bb))
                            .div_ceil(s)
                            .min(g.wout)
                            .max(lo);
                        for oh in 0..g.hout {
                            let out = &mut dst[oh * g.wout..(oh + 1) * g.wout];
                            let iy = (oh * s + a) as isize - p as isize;
                            if iy < 0 || iy as usize >= g.h {
                                out.fill(0.0);
                                continue;
                            }
                            let line = &src[iy as usize * g.w..][..g.w];
                            out[..lo].fill(0.0);
                            out[hi..].fill(0.0);
                            if s == 1 {
                                let start = lo + bb - p;
                                out[lo..hi].copy_from_slice(&line[start..start + (hi - lo)]);
                            } else {
                                for (ow, o) in out.iter_mut().enumerate().take(hi).skip(lo) {
                                    *o = line[ow * s + bb - p];
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn f32_slice<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    let CpuStorage::F32(v) = s else {
        candle_core::bail!("conv3d-cpu: {what} must be f32");
    };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&v[a..b]),
        None => candle_core::bail!("conv3d-cpu: {what} must be contiguous"),
    }
}

impl CustomOp2 for Conv3dCpu {
    fn name(&self) -> &'static str {
        "conv3d-cpu"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(s1, l1, "input")?;
        let wt = f32_slice(s2, l2, "weight")?;
        let (n, d, c, h, w) = l1.shape().dims5()?;
        let (co, ci, kd, kh, kw) = l2.shape().dims5()?;
        let (sd, s) = self.stride;
        let (pd, p) = self.padding;
        if self.bias.as_ref().is_some_and(|b| b.len() != co) {
            candle_core::bail!("conv3d-cpu: bias length does not match {co} output channels");
        }
        if ci != c || d + 2 * pd < kd || h + 2 * p < kh || w + 2 * p < kw || sd == 0 || s == 0 {
            candle_core::bail!(
                "conv3d-cpu: input {:?} does not fit weight {:?}",
                l1.shape(),
                l2.shape()
            );
        }
        let g = Geometry {
            d,
            c,
            h,
            w,
            kd,
            kh,
            kw,
            dout: (d + 2 * pd - kd) / sd + 1,
            hout: (h + 2 * p - kh) / s + 1,
            wout: (w + 2 * p - kw) / s + 1,
        };
        let k = kd * ci * kh * kw;
        let m = g.hout * g.wout;
        // (Co, Ci, kD, kH, kW) → (Co, kD, Ci, kH, kW): rows in the column matrix's order.
        let mut wm = vec![0f32; co * k];
        for o in 0..co {
            for i in 0..ci {
                for t in 0..kd {
                    let src = &wt[((o * ci + i) * kd + t) * kh * kw..][..kh * kw];
                    wm[o * k + (t * ci + i) * kh * kw..][..kh * kw].copy_from_slice(src);
                }
            }
        }
        let direct = kd == 1 && kh == 1 && kw == 1 && p == 0 && pd == 0 && s == 1;
        let slices = n * g.dout;
        let threads = rayon::current_num_threads();
        let par = if slices >= 2 * threads {
            gemm::Parallelism::None
        } else {
            gemm::Parallelism::Rayon(threads)
        };
        let mut out = vec![0f32; slices * co * m];
        let run = |slice: usize, dst: &mut [f32]| {
            let (b, od) = (slice / g.dout, slice % g.dout);
            let mut buf = Vec::new();
            let col: &[f32] = if direct {
                let iz = od * sd;
                &x[((b * d + iz) * c) * h * w..][..c * h * w]
            } else {
                buf.resize(k * m, 0f32);
                self.vol2col(&g, x, b, od, &mut buf);
                &buf
            };
            // SAFETY: the pointers cover `dst` (co × m), `wm` (co × k) and `col` (k × m),
            // row-major with the strides given.
            unsafe {
                gemm::gemm(
                    co,
                    m,
                    k,
                    dst.as_mut_ptr(),
                    1,
                    m as isize,
                    false,
                    wm.as_ptr(),
                    1,
                    k as isize,
                    col.as_ptr(),
                    1,
                    m as isize,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    par,
                );
            }
            if self.bias.is_some() || self.activation != Activation::Identity {
                for (o, row) in dst.chunks_mut(m).enumerate() {
                    let b = self.bias.as_ref().map_or(0.0, |b| b[o]);
                    for v in row {
                        *v = self.activation.apply(*v + b);
                    }
                }
            }
        };
        if matches!(par, gemm::Parallelism::None) {
            out.par_chunks_mut(co * m)
                .enumerate()
                .for_each(|(i, dst)| run(i, dst));
        } else {
            out.chunks_mut(co * m)
                .enumerate()
                .for_each(|(i, dst)| run(i, dst));
        }
        Ok((
            CpuStorage::F32(out),
            Shape::from((n, g.dout, co, g.hout, g.wout)),
        ))
    }
}

/// A per-channel affine map `y = act(x · scale_c + shift_c)` over `(N, D, C, H, W)` in one
/// pass: batch norm in inference, with the ReLU that follows it in the networks.
#[derive(Debug, Clone)]
pub struct ChannelAffine {
    /// One factor per channel.
    pub scale: Vec<f32>,
    /// One offset per channel.
    pub shift: Vec<f32>,
    /// Applied after the map.
    pub activation: Activation,
}

impl candle_core::CustomOp1 for ChannelAffine {
    fn name(&self) -> &'static str {
        "channel-affine-cpu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(s, l, "input")?;
        let (_, _, c, h, w) = l.shape().dims5()?;
        if self.scale.len() != c || self.shift.len() != c {
            candle_core::bail!(
                "channel-affine-cpu: {c} channels, {} factors",
                self.scale.len()
            );
        }
        let plane = h * w;
        let mut out = vec![0f32; x.len()];
        let chunk = (c * plane).max(1);
        out.par_chunks_mut(chunk)
            .zip(x.par_chunks(chunk))
            .for_each(|(o, i)| {
                for ch in 0..c {
                    let (a, b) = (self.scale[ch], self.shift[ch]);
                    let (o, i) = (&mut o[ch * plane..][..plane], &i[ch * plane..][..plane]);
                    for (o, i) in o.iter_mut().zip(i) {
                        *o = self.activation.apply(i * a + b);
                    }
                }
            });
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use crate::model::layers::{Conv3d, Conv3dConfig};
    use candle_core::{Device, Module, Tensor};

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .and_then(|d| d.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>())
            .unwrap()
    }

    /// The kernel against the general path, for the kernels, strides and paddings the
    /// networks use and some they do not (odd sizes, stride 3, padding wider than 1).
    #[test]
    fn matches_the_general_path() {
        let dev = Device::Cpu;
        let cases = [
            // (kernel, stride, padding, bias, input (N, D, C, H, W), Co)
            ((3, 3), (1, 1), (1, 1), false, (2, 5, 3, 7, 6), 4),
            ((3, 3), (2, 2), (1, 1), true, (1, 8, 2, 9, 10), 3),
            ((1, 1), (1, 1), (0, 0), false, (2, 3, 5, 4, 4), 6),
            ((1, 1), (2, 2), (0, 0), true, (1, 4, 3, 6, 5), 2),
            ((1, 3), (1, 3), (0, 2), false, (1, 3, 2, 11, 8), 3),
            ((3, 5), (2, 1), (2, 2), true, (1, 6, 2, 7, 9), 2),
            ((2, 2), (2, 2), (0, 0), false, (3, 4, 4, 8, 8), 5),
        ];
        for (kernel, stride, padding, bias, dims, co) in cases {
            let cfg = Conv3dConfig {
                kernel,
                stride,
                padding,
                bias,
            };
            let (_, _, ci, _, _) = dims;
            let w = Tensor::randn(0f32, 1.0, (co, ci, kernel.0, kernel.1, kernel.1), &dev).unwrap();
            let b = Tensor::randn(0f32, 1.0, co, &dev).unwrap();
            let conv = Conv3d::from_weights(&w, bias.then_some(&b), cfg).unwrap();
            let x = Tensor::randn(0f32, 1.0, dims, &dev).unwrap();
            let fast = conv.forward(&x).unwrap();
            let general = conv.forward_general(&x).unwrap();
            assert_eq!(fast.dims(), general.dims(), "{cfg:?}");
            let diff = max_diff(&fast, &general);
            assert!(diff < 1e-4, "{cfg:?}: differs by {diff}");
        }
    }

    /// Loaded (fixed) weights: conv + batch norm + ReLU runs folded and fused, records no
    /// backward graph, and equals the unfolded layers; the fused batch norm + ReLU too.
    #[test]
    fn loaded_layers_fold_and_record_no_graph() {
        use crate::model::layers::{Activation, BatchNorm3d, ConvNorm};
        use candle_core::ModuleT;
        use candle_nn::VarBuilder;
        use std::collections::HashMap;
        let dev = Device::Cpu;
        let (ci, co) = (3, 5);
        let mut t = HashMap::new();
        let r = |s: &[usize], lo: f32| Tensor::rand(lo, 1.0, s, &dev).unwrap();
        t.insert("conv.weight".to_string(), r(&[co, ci, 3, 3, 3], -1.0));
        t.insert("norm.weight".to_string(), r(&[co], 0.5));
        t.insert("norm.bias".to_string(), r(&[co], -1.0));
        t.insert("norm.running_mean".to_string(), r(&[co], -1.0));
        t.insert("norm.running_var".to_string(), r(&[co], 0.5));
        let vb = VarBuilder::from_tensors(t, candle_core::DType::F32, &dev);
        let conv = Conv3d::new(ci, co, Conv3dConfig::cube(3, 1), vb.pp("conv")).unwrap();
        let norm = BatchNorm3d::new(co, vb.pp("norm")).unwrap();
        let x = Tensor::randn(0f32, 1.0, (2, 4, ci, 6, 5), &dev).unwrap();
        let reference = norm
            .forward_t(&conv.forward_general(&x).unwrap(), false)
            .unwrap()
            .relu()
            .unwrap();
        let cn = ConvNorm::new(conv, norm.clone());
        let fused = cn.forward_act(&x, false, Activation::Relu).unwrap();
        assert!(
            !fused.track_op(),
            "a loaded layer recorded a backward graph"
        );
        let diff = max_diff;
        assert!(diff(&fused, &reference) < 1e-4);
        let y = Tensor::randn(0f32, 1.0, (2, 4, co, 6, 5), &dev).unwrap();
        let bn = norm.forward_act(&y, false, Activation::Relu).unwrap();
        assert!(!bn.track_op());
        let bn_ref = norm.forward_t(&y, false).unwrap().relu().unwrap();
        assert!(diff(&bn, &bn_ref) < 1e-5);
    }
}
