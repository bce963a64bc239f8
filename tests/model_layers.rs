//! The 3D layers against PyTorch: forward outputs and gradients from
//! `tests/fixtures/golden/layers.safetensors`, written by `reference/golden_layers.py`.

use std::collections::HashMap;

use candle_core::{DType, Device, Module, ModuleT, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use onfh_edge::model::layers::{
    self, BatchNorm3d, Conv3d, Conv3dConfig, avg_pool3d, max_pool3d, swap_depth_channels,
};

const TOL: f32 = 1e-4;

fn golden() -> HashMap<String, Tensor> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/golden/layers.safetensors");
    candle_core::safetensors::load(path, &Device::Cpu)
        .expect("golden fixtures (reference/golden_layers.py)")
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shapes differ");
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

fn close(what: &str, ours: &Tensor, theirs: &Tensor) {
    let d = max_diff(ours, theirs);
    // Relative to the magnitude, for the larger gradients.
    let scale = theirs
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
        .max(1.0);
    assert!(
        d <= TOL * scale,
        "{what}: max difference {d} (scale {scale})"
    );
}

#[test]
fn conv3d_matches_pytorch_forward_and_backward() {
    let g = golden();
    let cases = [
        ("conv_k3_s1_p1_bias", (3, 3), (1, 1), (1, 1), true),
        ("conv_k3_s2_p1", (3, 3), (2, 2), (1, 1), false),
        ("conv_k1", (1, 1), (1, 1), (0, 0), true),
        ("conv_k3_s12_p01", (3, 3), (1, 2), (0, 1), false),
        ("conv_k23_s21_p01_bias", (2, 3), (2, 1), (0, 1), true),
    ];
    for (name, kernel, stride, padding, bias) in cases {
        let t = |k: &str| g[&format!("{name}.{k}")].clone();
        let x = Var::from_tensor(&swap_depth_channels(&t("x")).unwrap()).unwrap();
        let w = Var::from_tensor(&t("weight")).unwrap();
        let b = if bias {
            Some(Var::from_tensor(&t("bias")).unwrap())
        } else {
            None
        };
        let cfg = Conv3dConfig {
            kernel,
            stride,
            padding,
            bias,
        };
        let conv =
            Conv3d::from_weights(w.as_tensor(), b.as_ref().map(|v| v.as_tensor()), cfg).unwrap();
        let y = conv.forward(x.as_tensor()).unwrap();
        close(
            &format!("{name} forward"),
            &swap_depth_channels(&y).unwrap(),
            &t("y"),
        );
        let upstream = swap_depth_channels(&t("g")).unwrap();
        let loss = (y * upstream).unwrap().sum_all().unwrap();
        let grads = loss.backward().unwrap();
        close(
            &format!("{name} dx"),
            &swap_depth_channels(grads.get(&x).unwrap()).unwrap(),
            &t("dx"),
        );
        close(
            &format!("{name} dweight"),
            grads.get(&w).unwrap(),
            &t("dweight"),
        );
        if let Some(b) = &b {
            close(&format!("{name} dbias"), grads.get(b).unwrap(), &t("dbias"));
        }
    }
}

#[test]
fn batch_norm_matches_pytorch_in_training_and_evaluation() {
    let g = golden();
    let t = |k: &str| g[&format!("bn.{k}")].clone();
    let map = VarMap::new();
    let vb = VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu);
    let bn = BatchNorm3d::new(4, vb).unwrap();
    {
        let data = map.data().lock().unwrap();
        data["weight"].set(&t("weight")).unwrap();
        data["bias"].set(&t("bias")).unwrap();
    }
    let x = Var::from_tensor(&swap_depth_channels(&t("x")).unwrap()).unwrap();
    let y = bn.forward_t(x.as_tensor(), true).unwrap();
    close(
        "bn train forward",
        &swap_depth_channels(&y).unwrap(),
        &t("y_train"),
    );
    let loss = (y * swap_depth_channels(&t("g")).unwrap())
        .unwrap()
        .sum_all()
        .unwrap();
    let grads = loss.backward().unwrap();
    close(
        "bn dx",
        &swap_depth_channels(grads.get(&x).unwrap()).unwrap(),
        &t("dx"),
    );
    let data = map.data().lock().unwrap();
    close(
        "bn dweight",
        grads.get(data["weight"].as_tensor()).unwrap(),
        &t("dweight"),
    );
    close(
        "bn dbias",
        grads.get(data["bias"].as_tensor()).unwrap(),
        &t("dbias"),
    );
    // Running statistics after the step (PyTorch: unbiased variance, momentum 0.1), and
    // evaluation with them.
    close(
        "bn running_mean",
        data["running_mean"].as_tensor(),
        &t("running_mean"),
    );
    close(
        "bn running_var",
        data["running_var"].as_tensor(),
        &t("running_var"),
    );
    drop(data);
    let y = bn
        .forward_t(&swap_depth_channels(&t("x")).unwrap(), false)
        .unwrap();
    close(
        "bn eval forward",
        &swap_depth_channels(&y).unwrap(),
        &t("y_eval"),
    );
}

#[test]
fn pooling_matches_pytorch_forward_and_backward() {
    let g = golden();
    for (name, max) in [("maxpool", true), ("avgpool", false)] {
        let t = |k: &str| g[&format!("{name}.{k}")].clone();
        let x = Var::from_tensor(&swap_depth_channels(&t("x")).unwrap()).unwrap();
        let y = if max {
            max_pool3d(x.as_tensor(), 2, 2)
        } else {
            avg_pool3d(x.as_tensor(), 2, 2)
        }
        .unwrap();
        close(
            &format!("{name} forward"),
            &swap_depth_channels(&y).unwrap(),
            &t("y"),
        );
        let loss = (y * swap_depth_channels(&t("g")).unwrap())
            .unwrap()
            .sum_all()
            .unwrap();
        let grads = loss.backward().unwrap();
        close(
            &format!("{name} dx"),
            &swap_depth_channels(grads.get(&x).unwrap()).unwrap(),
            &t("dx"),
        );
    }
}

#[test]
fn trilinear_resize_matches_pytorch() {
    let g = golden();
    let x = swap_depth_channels(&g["resize.x"]).unwrap();
    let y = layers::resize_trilinear(&x, 6, 8, 10).unwrap();
    close(
        "trilinear",
        &swap_depth_channels(&y).unwrap(),
        &g["resize.y"],
    );
}

#[test]
fn shapes_and_nearest_upsampling() {
    let x = Tensor::arange(0f32, 2.0 * 3.0 * 4.0 * 5.0 * 6.0, &Device::Cpu)
        .unwrap()
        .reshape((2, 3, 4, 5, 6))
        .unwrap();
    let up = layers::upsample_nearest3d(&x, 2, 3).unwrap();
    assert_eq!(up.dims(), &[2, 6, 4, 15, 18]);
    // Every output voxel copies its source voxel.
    let a: f32 = up
        .get(1)
        .unwrap()
        .get(5)
        .unwrap()
        .get(3)
        .unwrap()
        .get(14)
        .unwrap()
        .get(17)
        .unwrap()
        .to_scalar()
        .unwrap();
    let b: f32 = x
        .get(1)
        .unwrap()
        .get(2)
        .unwrap()
        .get(3)
        .unwrap()
        .get(4)
        .unwrap()
        .get(5)
        .unwrap()
        .to_scalar()
        .unwrap();
    assert_eq!(a, b);
    let gap = layers::global_avg_pool3d(&x).unwrap();
    assert_eq!(gap.dims(), &[2, 4]);
    // A wrong channel count is an error, not a panic.
    let conv = Conv3d::from_weights(
        &Tensor::zeros((2, 3, 3, 3, 3), DType::F32, &Device::Cpu).unwrap(),
        None,
        Conv3dConfig::cube(3, 1),
    )
    .unwrap();
    assert!(conv.forward(&x).is_err());
}

/// A dense block and a MulPoolFusion block against their PyTorch twins
/// (`reference/twin.py`, fixtures by `reference/golden_blocks.py`): same weight names,
/// training-mode forward, and gradients for the input and every parameter.
#[test]
fn dense_block_and_mulpoolfusion_match_pytorch() {
    use onfh_edge::model::blocks::{DenseBlock, MulPoolFusion};
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/golden/blocks.safetensors");
    let g = candle_core::safetensors::load(path, &Device::Cpu).unwrap();
    for name in ["dense", "mpf"] {
        let map = VarMap::new();
        let vb = VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu);
        let block: Box<dyn ModuleT> = if name == "dense" {
            Box::new(DenseBlock::new(4, 2, 3, 2, vb).unwrap())
        } else {
            Box::new(MulPoolFusion::new(6, 5, vb).unwrap())
        };
        // Every parameter of ours has a PyTorch counterpart under the same name, and back.
        let prefix = format!("{name}.param.");
        let theirs: Vec<&String> = g.keys().filter(|k| k.starts_with(&prefix)).collect();
        {
            let data = map.data().lock().unwrap();
            assert_eq!(data.len(), theirs.len(), "{name}: parameter count");
            for k in &theirs {
                let key = &k[prefix.len()..];
                let var = data
                    .get(key)
                    .unwrap_or_else(|| panic!("{name}: no parameter {key}"));
                var.set(&g[*k]).unwrap();
            }
        }
        let x = Var::from_tensor(&swap_depth_channels(&g[&format!("{name}.x")]).unwrap()).unwrap();
        let y = block.forward_t(x.as_tensor(), true).unwrap();
        close(
            &format!("{name} forward"),
            &swap_depth_channels(&y).unwrap(),
            &g[&format!("{name}.y")],
        );
        let upstream = swap_depth_channels(&g[&format!("{name}.g")]).unwrap();
        let grads = (y * upstream)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        close(
            &format!("{name} dx"),
            &swap_depth_channels(grads.get(&x).unwrap()).unwrap(),
            &g[&format!("{name}.dx")],
        );
        let data = map.data().lock().unwrap();
        let grad_prefix = format!("{name}.grad.");
        let mut checked = 0;
        for (k, v) in g.iter().filter(|(k, _)| k.starts_with(&grad_prefix)) {
            let key = &k[grad_prefix.len()..];
            let ours = grads
                .get(data[key].as_tensor())
                .unwrap_or_else(|| panic!("{name}: no gradient for {key}"));
            close(&format!("{name} d{key}"), ours, v);
            checked += 1;
        }
        assert!(
            checked >= 6,
            "{name}: only {checked} parameter gradients compared"
        );
    }
}
