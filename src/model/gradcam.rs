//! 3D Grad-CAM (and Grad-CAM++) for the stager: which part of a head crop drove its stage.
//!
//! The stager's forward pass is split at its last 3D activation `A` (after the final
//! BN-ReLU, `Stager::features`). `A` is made a leaf variable, the rest of the network
//! (`Stager::classify`) runs from it, and the predicted class's logit `y` is
//! back-propagated to it — Candle records operations only downstream of a variable, so this
//! works with plain loaded weights. Then
//! - Grad-CAM: `α_c = mean_xyz ∂y/∂A_c`, `cam = ReLU(Σ_c α_c A_c)`;
//! - Grad-CAM++: `α_c = Σ_xyz w_c,xyz · ReLU(∂y/∂A_c,xyz)` with
//!   `w = g² / (2 g² + Σ_xyz A · g³)` (g the gradient; the exponential-score form of
//!   Chattopadhay et al.).
//!
//! The map is scaled to [0, 1] by its maximum and resized trilinearly to the crop's shape.
//! It stays in the crop's frame (mirrored, for a right head, like the crop itself); placing
//! it in the study volume is the pipeline's job.

use candle_core::{D, DType, Result, Tensor, Var};

use super::layers::resize_trilinear;
use super::stager::Stager;

/// Which variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CamMethod {
    /// Grad-CAM.
    GradCam,
    /// Grad-CAM++.
    GradCamPlusPlus,
}

/// A staged crop with its heatmap.
#[derive(Debug, Clone)]
pub struct Staged {
    /// Class probabilities.
    pub probabilities: Vec<f32>,
    /// The predicted class.
    pub class: usize,
    /// The heatmap, crop shape (D, H, W) row-major, in [0, 1].
    pub heatmap: Vec<f32>,
}

/// Stage one crop `(1, D, C, H, W)` and explain the predicted class.
pub fn stage_and_explain(net: &Stager, crop: &Tensor, method: CamMethod) -> Result<Staged> {
    let (n, _, _, _, _) = crop.dims5()?;
    if n != 1 {
        candle_core::bail!("stage_and_explain takes one crop, got {n}");
    }
    Ok(stage_and_explain_batch(net, crop, method)?.remove(0))
}

/// Stage crops `(N, D, C, H, W)` in one pass and explain each one's predicted class. The
/// crops do not interact (batch norm in inference), so back-propagating the sum of each
/// crop's own class score gives every crop its own gradient.
pub fn stage_and_explain_batch(
    net: &Stager,
    crops: &Tensor,
    method: CamMethod,
) -> Result<Vec<Staged>> {
    let (n, d, _, h, w) = crops.dims5()?;
    if n == 0 {
        return Ok(Vec::new());
    }
    let finite = crops
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?
        .iter()
        .all(|v| v.is_finite());
    if !finite {
        candle_core::bail!("stager input contains NaN or infinite values");
    }
    let feats = net.features(crops, false)?.detach();
    let leaf = Var::from_tensor(&feats)?;
    let logits = net.classify(leaf.as_tensor())?;
    let probs: Vec<Vec<f32>> =
        candle_nn::ops::softmax(&logits.to_dtype(DType::F32)?, D::Minus1)?.to_vec2()?;
    let classes: Vec<usize> = probs
        .iter()
        .map(|p| {
            p.iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map_or(0, |(i, _)| i)
        })
        .collect();
    let idx = Tensor::from_vec(
        classes.iter().map(|c| *c as u32).collect::<Vec<_>>(),
        (n, 1),
        logits.device(),
    )?;
    let score = logits.gather(&idx, 1)?.sum_all()?;
    let grads = score.backward()?;
    let g = grads
        .get(leaf.as_tensor())
        .ok_or_else(|| candle_core::Error::Msg("no gradient reached the Grad-CAM layer".into()))?
        .to_dtype(DType::F32)?;
    let a = feats.to_dtype(DType::F32)?;
    // (N, D', C, H', W'): channels are axis 2.
    let alpha = match method {
        CamMethod::GradCam => g.mean_keepdim(4)?.mean_keepdim(3)?.mean_keepdim(1)?,
        CamMethod::GradCamPlusPlus => {
            let g2 = g.sqr()?;
            let g3 = (&g2 * &g)?;
            let sum_a = a.sum_keepdim(4)?.sum_keepdim(3)?.sum_keepdim(1)?;
            let denom = ((&g2 * 2.0)? + g3.broadcast_mul(&sum_a)?)?;
            // Where the denominator vanishes the weight is 0 (as in the reference code).
            let safe = denom.ne(0f32)?.where_cond(&denom, &denom.ones_like()?)?;
            let wts = (g2 / safe)?;
            let wts = denom.ne(0f32)?.where_cond(&wts, &wts.zeros_like()?)?;
            (wts * g.relu()?)?
                .sum_keepdim(4)?
                .sum_keepdim(3)?
                .sum_keepdim(1)?
        }
    };
    let cam = a.broadcast_mul(&alpha)?.sum_keepdim(2)?.relu()?;
    let cam = resize_trilinear(&cam, d, h, w)?;
    let maps: Vec<f32> = cam.flatten_all()?.to_vec1()?;
    Ok(maps
        .chunks(d * h * w)
        .zip(probs)
        .zip(classes)
        .map(|((m, p), class)| {
            let mut heat = m.to_vec();
            let max = heat.iter().cloned().fold(0f32, f32::max);
            if max > 0.0 {
                for x in &mut heat {
                    *x = (*x / max).clamp(0.0, 1.0);
                }
            }
            Staged {
                probabilities: p,
                class,
                heatmap: heat,
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::stager::StagerConfig;
    use candle_core::Device;
    use candle_nn::{VarBuilder, VarMap};

    #[test]
    fn gradcam_equals_cam_for_a_global_pool_head() {
        // With global average pooling then a linear layer, ∂y/∂A_c is the class weight
        // W_kc / (D'H'W') everywhere, so Grad-CAM is ReLU(Σ_c W_kc A_c) up to scale — CAM.
        let map = VarMap::new();
        let cfg = StagerConfig::small();
        let net = Stager::new(
            &cfg,
            VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu),
        )
        .unwrap();
        let [d, h, w] = cfg.input;
        let x = Tensor::rand(0f32, 1.0, (1, d, 1, h, w), &Device::Cpu).unwrap();
        let s = stage_and_explain(&net, &x, CamMethod::GradCam).unwrap();
        assert_eq!(s.heatmap.len(), d * h * w);
        assert!((s.probabilities.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        let feats = net.features(&x, false).unwrap();
        let weights = map
            .data()
            .lock()
            .unwrap()
            .get("classifier.weight")
            .unwrap()
            .as_tensor()
            .clone();
        let wk = weights.narrow(0, s.class, 1).unwrap().squeeze(0).unwrap(); // (C)
        let c = wk.dims1().unwrap();
        let cam = feats
            .broadcast_mul(&wk.reshape((1, 1, c, 1, 1)).unwrap())
            .unwrap()
            .sum_keepdim(2)
            .unwrap()
            .relu()
            .unwrap();
        let cam = resize_trilinear(&cam, d, h, w).unwrap();
        let mut v: Vec<f32> = cam.flatten_all().unwrap().to_vec1().unwrap();
        let max = v.iter().cloned().fold(0f32, f32::max);
        v.iter_mut().for_each(|x| *x /= max.max(1e-12));
        let diff = v
            .iter()
            .zip(&s.heatmap)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(diff < 1e-4, "Grad-CAM differs from CAM by {diff}");
        let pp = stage_and_explain(&net, &x, CamMethod::GradCamPlusPlus).unwrap();
        assert!(pp.heatmap.iter().all(|x| (0.0..=1.0).contains(x)));
        assert_eq!(pp.class, s.class);
        // A batch gives each crop what it gets alone.
        let y = Tensor::rand(0f32, 1.0, (1, d, 1, h, w), &Device::Cpu).unwrap();
        let both = Tensor::cat(&[&x, &y], 0).unwrap();
        let b = stage_and_explain_batch(&net, &both, CamMethod::GradCam).unwrap();
        let alone = stage_and_explain(&net, &y, CamMethod::GradCam).unwrap();
        assert_eq!(b[1].class, alone.class);
        let diff = b[1]
            .heatmap
            .iter()
            .zip(&alone.heatmap)
            .map(|(p, q)| (p - q).abs())
            .fold(0f32, f32::max);
        assert!(diff < 1e-4, "batched heatmap differs by {diff}");
        assert!((b[0].heatmap[7] - s.heatmap[7]).abs() < 1e-4);
    }
}
