//! 3D-MulDenseNet: the paper-size preset builds and runs; a few training steps on tiny data
//! reduce the focal loss; a checkpoint round-trips to identical outputs.

use candle_core::{DType, Device, Tensor};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarBuilder, VarMap};
use onfh_edge::model::stager::{Stager, StagerConfig, focal_loss};

#[test]
fn paper_preset_builds_and_runs_forward() {
    let map = VarMap::new();
    let vb = VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu);
    // The paper's layout (DenseNet-121 in 3D, 3 MulPoolFusions) on a small input so the
    // test stays quick on a CPU.
    let cfg = StagerConfig {
        input: [8, 16, 16],
        ..StagerConfig::paper()
    };
    let net = Stager::new(&cfg, vb).unwrap();
    let x = Tensor::randn(0f32, 1.0, (2, 8, 1, 16, 16), &Device::Cpu).unwrap();
    let feats = net.features(&x, false).unwrap();
    assert_eq!(feats.dims()[0], 2);
    assert_eq!(
        (feats.dims()[1], feats.dims()[3], feats.dims()[4]),
        (1, 2, 2)
    );
    let logits = net.classify(&feats).unwrap();
    assert_eq!(logits.dims(), &[2, 3]);
    let params: usize = map.all_vars().iter().map(|v| v.elem_count()).sum();
    assert!(
        params > 5_000_000,
        "paper-size stager has {params} parameters"
    );
    // A wrong input shape is an error, not a panic.
    assert!(
        net.forward_t(
            &Tensor::zeros((1, 8, 1, 16, 15), DType::F32, &Device::Cpu).unwrap(),
            false
        )
        .is_err()
    );
}

/// Tiny, learnable data: class k has a bright cube in octant k (and noise).
fn batch(n: usize, cfg: &StagerConfig, seed: u64) -> (Tensor, Tensor) {
    let [d, h, w] = cfg.input;
    let mut data = vec![0f32; n * d * h * w];
    let mut labels = Vec::with_capacity(n);
    let mut s = seed;
    let mut rnd = || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((s >> 33) as f32 / (1u64 << 31) as f32) - 0.5
    };
    for i in 0..n {
        let k = (i + seed as usize) % 3;
        labels.push(k as u32);
        for z in 0..d {
            for y in 0..h {
                for x in 0..w {
                    let inside = match k {
                        0 => false,
                        1 => z < d / 2 && y < h / 2,
                        _ => z >= d / 2 && x >= w / 2,
                    };
                    data[((i * d + z) * h + y) * w + x] =
                        if inside { 1.0 } else { 0.0 } + 0.3 * rnd();
                }
            }
        }
    }
    (
        Tensor::from_vec(data, (n, d, 1, h, w), &Device::Cpu).unwrap(),
        Tensor::from_vec(labels, n, &Device::Cpu).unwrap(),
    )
}

#[test]
fn training_steps_reduce_the_loss_and_checkpoints_round_trip() {
    let cfg = StagerConfig {
        input: [8, 16, 16],
        ..StagerConfig::small()
    };
    let map = VarMap::new();
    let vb = VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu);
    let net = Stager::new(&cfg, vb).unwrap();
    let mut opt = AdamW::new(
        map.all_vars(),
        ParamsAdamW {
            lr: 3e-3,
            weight_decay: 1e-4,
            ..Default::default()
        },
    )
    .unwrap();
    let mut losses = Vec::new();
    for step in 0..24 {
        let (x, y) = batch(6, &cfg, step);
        let loss = focal_loss(&net.forward_t(&x, true).unwrap(), &y, 2.0, None).unwrap();
        opt.backward_step(&loss).unwrap();
        losses.push(loss.to_scalar::<f32>().unwrap());
    }
    let first: f32 = losses[..4].iter().sum::<f32>() / 4.0;
    let last: f32 = losses[losses.len() - 4..].iter().sum::<f32>() / 4.0;
    assert!(last < 0.7 * first, "loss did not fall: {losses:?}");

    // Checkpoint: save, load into a freshly initialised network, identical outputs.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stager.safetensors");
    map.save(&path).unwrap();
    let mut map2 = VarMap::new();
    let net2 = Stager::new(
        &cfg,
        VarBuilder::from_varmap(&map2, DType::F32, &Device::Cpu),
    )
    .unwrap();
    let (x, _) = batch(3, &cfg, 99);
    let before = net2.forward_t(&x, false).unwrap();
    map2.load(&path).unwrap();
    let a = net.forward_t(&x, false).unwrap();
    let b = net2.forward_t(&x, false).unwrap();
    let diff = (&a - &b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert_eq!(diff, 0.0, "loaded network differs");
    let changed = (&a - &before)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(
        changed > 0.0,
        "loading changed nothing (the test would not notice a broken load)"
    );
}
