//! 3DC-YOLOX: both presets build and run; the output grid, decoding and NMS fit together; a
//! few training steps on one phantom study reduce the detection loss; bad input is an error.

use candle_core::{DType, Device, Tensor};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarBuilder, VarMap};
use onfh_edge::model::detector::{Detector, DetectorConfig, decode, detection_loss};
use onfh_edge::training::data;

#[test]
fn presets_build_and_run_forward() {
    for (cfg, min_params) in [
        (DetectorConfig::small(), 50_000),
        (DetectorConfig::paper(), 5_000_000),
    ] {
        let map = VarMap::new();
        let net = Detector::new(
            &cfg,
            VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu),
        )
        .unwrap();
        let params: usize = map.all_vars().iter().map(|v| v.elem_count()).sum();
        assert!(params > min_params, "{cfg:?}: {params} parameters");
        if cfg == DetectorConfig::small() {
            let [d, h, w] = cfg.input;
            let x = Tensor::rand(0f32, 1.0, (2, d, 1, h, w), &Device::Cpu).unwrap();
            let raw = net.forward_t(&x, false).unwrap();
            assert_eq!(raw.grid, [4, 8, 14]);
            assert_eq!(raw.stride, 8);
            assert_eq!(raw.tensor.dims(), &[2, 4 * 8 * 14, 6 + 1 + 1]);
            let boxes = decode(&raw).unwrap();
            assert_eq!(boxes.len(), 2);
            // Untrained: scores start near the prior (0.01²).
            assert!(boxes[0].iter().all(|b| b.score < 0.05), "prior not applied");
        }
    }
    // The paper preset's forward pass on a reduced input (its full size is a GPU job).
    let cfg = DetectorConfig {
        input: [16, 32, 32],
        ..DetectorConfig::paper()
    };
    let map = VarMap::new();
    let net = Detector::new(
        &cfg,
        VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu),
    )
    .unwrap();
    let raw = net
        .forward_t(
            &Tensor::zeros((1, 16, 1, 32, 32), DType::F32, &Device::Cpu).unwrap(),
            false,
        )
        .unwrap();
    assert_eq!(raw.grid, [2, 4, 4]);
}

#[test]
fn wrong_input_is_an_error() {
    let cfg = DetectorConfig::small();
    let map = VarMap::new();
    let net = Detector::new(
        &cfg,
        VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu),
    )
    .unwrap();
    let x = Tensor::zeros((1, 32, 1, 64, 100), DType::F32, &Device::Cpu).unwrap();
    assert!(net.forward_t(&x, false).is_err());
    // NaN in a study volume is refused, not detected in.
    let mut v = onfh_edge::volume::Volume {
        data: vec![0.5; 112 * 64 * 32],
        dims: [112, 64, 32],
        affine: [
            [2.5, 0.0, 0.0, 0.0],
            [0.0, 0.0, 3.0, 0.0],
            [0.0, -2.5, 0.0, 0.0],
            [0.0, 0.0, 0.0, 1.0],
        ],
        series_uid: "1.2.3".into(),
        study_uid: "1.2".into(),
    };
    assert!(
        net.detect(&v, &Device::Cpu, DType::F32, 0.05, 0.2, 4)
            .is_ok()
    );
    v.data[5] = f32::NAN;
    let err = net
        .detect(&v, &Device::Cpu, DType::F32, 0.05, 0.2, 4)
        .unwrap_err();
    assert!(err.to_string().contains("NaN"), "{err}");
    // An invalid configuration is an error.
    let bad = DetectorConfig {
        input: [30, 64, 112],
        ..DetectorConfig::small()
    };
    let map = VarMap::new();
    assert!(
        Detector::new(
            &bad,
            VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu)
        )
        .is_err()
    );
}

#[test]
fn training_steps_on_a_phantom_study_reduce_the_loss() {
    let dir = tempfile::tempdir().unwrap();
    let study = data::phantom_study(dir.path(), 11, &data::training_options(11), false).unwrap();
    let cfg = DetectorConfig::small();
    let sample = data::detector_sample(&study, &onfh_edge::volume::Preprocess::default());
    assert_eq!(sample.boxes.len(), 2);
    // The true boxes lie inside the volume, one on each half (right head at low columns).
    let [w, h, d] = sample.volume.dims;
    for b in &sample.boxes {
        assert!(b.center[0] > 0.0 && b.center[0] < d as f64);
        assert!(b.center[1] > 0.0 && b.center[1] < h as f64);
    }
    assert!(
        sample.boxes[0].center[2] < w as f64 / 2.0 && sample.boxes[1].center[2] > w as f64 / 2.0
    );

    let map = VarMap::new();
    let net = Detector::new(
        &cfg,
        VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu),
    )
    .unwrap();
    let x = Tensor::from_slice(&sample.volume.data, (1, d, 1, h, w), &Device::Cpu).unwrap();
    let truths = vec![sample.boxes.clone()];
    let mut opt = AdamW::new(
        map.all_vars(),
        ParamsAdamW {
            lr: 3e-3,
            weight_decay: 0.0,
            ..Default::default()
        },
    )
    .unwrap();
    let mut losses = Vec::new();
    for _ in 0..14 {
        let raw = net.forward_t(&x, true).unwrap();
        let loss = detection_loss(&raw, &truths, 2.5).unwrap();
        assert!(loss.foreground >= 2, "every head gets cells");
        losses.push(loss.total.to_scalar::<f32>().unwrap());
        opt.backward_step(&loss.total).unwrap();
    }
    assert!(losses.iter().all(|l| l.is_finite()));
    // The assignment changes as the boxes move (and the weights start random), so the loss
    // jumps step to step, by a fifth at times: ask that the second half of the run reached
    // well below where it started. Without gradients reaching the weights it stays put.
    let first = (losses[0] + losses[1]) / 2.0;
    let best_late = losses[7..].iter().copied().fold(f32::INFINITY, f32::min);
    assert!(best_late < first * 0.8, "loss did not fall: {losses:?}");
}
