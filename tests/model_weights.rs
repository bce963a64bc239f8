//! Model files: export to fp16 + manifest and load back (same outputs as the f32 weights
//! within fp16 rounding), and every way a model file can be wrong gives a clear error.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use onfh_edge::model::crop::CropConfig;
use onfh_edge::model::detector::{Detector, DetectorConfig};
use onfh_edge::model::stager::{Stager, StagerConfig};
use onfh_edge::model::weights::{
    self, Architecture, INTENDED_USE, MANIFEST_FORMAT, Manifest, ModelError, Training, WeightsRef,
};

fn manifest(name: &str, architecture: Architecture) -> Manifest {
    Manifest {
        format: MANIFEST_FORMAT,
        name: name.into(),
        version: "0.0.1".into(),
        architecture,
        classes: vec!["stage 0".into(), "stage I".into(), "stage II".into()],
        weights: WeightsRef {
            file: String::new(),
            sha256: String::new(),
            dtype: "f16".into(),
            parameters: 0,
        },
        training: Training {
            command: "test".into(),
            data: "random initialisation".into(),
            seeds: "none".into(),
            scanner_styles: vec![],
            selected: "none".into(),
            ..Default::default()
        },
        metrics: None,
        intended_use: INTENDED_USE.into(),
    }
}

fn stager_arch() -> Architecture {
    Architecture::Stager {
        config: StagerConfig::small(),
        crop: CropConfig::small(),
    }
}

/// A randomly initialised small stager saved as an f32 checkpoint, exported to `dir`.
fn exported_stager(dir: &Path) -> (Stager, PathBuf) {
    let map = VarMap::new();
    let net = Stager::new(
        &StagerConfig::small(),
        VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu),
    )
    .unwrap();
    let ckpt = dir.join("stager.best.safetensors");
    map.save(&ckpt).unwrap();
    let m = weights::export(&ckpt, manifest("stager-test", stager_arch()), dir).unwrap();
    assert_eq!(m.weights.file, "stager-test.safetensors");
    assert_eq!(m.weights.sha256.len(), 64);
    assert!(m.weights.parameters > 10_000);
    (net, dir.join("stager-test.json"))
}

fn crops() -> Tensor {
    let [d, h, w] = StagerConfig::small().input;
    Tensor::rand(0f32, 1.0, (3, d, 1, h, w), &Device::Cpu).unwrap()
}

#[test]
fn export_and_load_round_trip_within_fp16_rounding() {
    let dir = tempfile::tempdir().unwrap();
    let (f32_net, manifest_path) = exported_stager(dir.path());
    let weights::LoadedStager {
        net, manifest: m, ..
    } = weights::load_stager(&manifest_path, &Device::Cpu, DType::F32).unwrap();
    assert_eq!(m.intended_use, INTENDED_USE);
    let x = crops();
    let a: Vec<Vec<f32>> = f32_net.probabilities(&x).unwrap().to_vec2().unwrap();
    let b: Vec<Vec<f32>> = net.probabilities(&x).unwrap().to_vec2().unwrap();
    let max = a
        .iter()
        .flatten()
        .zip(b.iter().flatten())
        .map(|(p, q)| (p - q).abs())
        .fold(0f32, f32::max);
    assert!(max < 5e-3, "fp16 weights moved a probability by {max}");
    // The file really is fp16.
    let t =
        candle_core::safetensors::load(dir.path().join("stager-test.safetensors"), &Device::Cpu)
            .unwrap();
    assert!(t.values().all(|t| t.dtype() == DType::F16));
    // Exporting is deterministic: same checkpoint, same hash.
    let again = weights::export(
        &dir.path().join("stager.best.safetensors"),
        manifest("stager-test", stager_arch()),
        dir.path(),
    )
    .unwrap();
    assert_eq!(again.weights.sha256, m.weights.sha256);
}

#[test]
fn corrupt_files_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (_, manifest_path) = exported_stager(dir.path());
    let weights_path = dir.path().join("stager-test.safetensors");
    let good = std::fs::read(&weights_path).unwrap();
    let load = || weights::load_stager(&manifest_path, &Device::Cpu, DType::F32).map(|_| ());

    // Truncated weights: the hash no longer matches.
    std::fs::write(&weights_path, &good[..good.len() / 2]).unwrap();
    let e = load().unwrap_err();
    assert!(matches!(e, ModelError::HashMismatch { .. }), "{e}");
    assert!(e.to_string().contains("truncated"), "{e}");

    // Truncated weights whose hash was "fixed" in the manifest: not valid safetensors.
    let mut m = weights::read_manifest(&manifest_path).unwrap();
    m.weights.sha256 = weights::sha256_hex(&good[..good.len() / 2]);
    weights::write_manifest(&manifest_path, &m).unwrap();
    let e = load().unwrap_err();
    assert!(matches!(e, ModelError::Format { .. }), "{e}");

    // Missing weights file.
    std::fs::remove_file(&weights_path).unwrap();
    let e = load().unwrap_err();
    assert!(matches!(e, ModelError::Io { .. }), "{e}");
    assert!(e.to_string().contains("stager-test.safetensors"), "{e}");

    // Intact weights, manifest hash edited.
    std::fs::write(&weights_path, &good).unwrap();
    m.weights.sha256 = "0".repeat(64);
    weights::write_manifest(&manifest_path, &m).unwrap();
    assert!(matches!(
        load().unwrap_err(),
        ModelError::HashMismatch { .. }
    ));

    // The manifest describes another architecture than the weights hold.
    m.weights.sha256 = weights::sha256_hex(&good);
    let mut other = StagerConfig::small();
    other.growth = 12;
    m.architecture = Architecture::Stager {
        config: other,
        crop: CropConfig::small(),
    };
    weights::write_manifest(&manifest_path, &m).unwrap();
    let e = load().unwrap_err();
    assert!(matches!(e, ModelError::Mismatch { .. }), "{e}");
    assert!(e.to_string().contains("shape"), "{e}");

    // A detector manifest where a stager is expected.
    m.architecture = Architecture::Detector {
        config: DetectorConfig::small(),
        preprocess: Default::default(),
    };
    weights::write_manifest(&manifest_path, &m).unwrap();
    assert!(matches!(load().unwrap_err(), ModelError::WrongKind { .. }));
    // And loaded as a detector, the stager's tensors do not fit.
    let Err(e) = weights::load_detector(&manifest_path, &Device::Cpu, DType::F32) else {
        panic!("a stager loaded as a detector")
    };
    assert!(matches!(e, ModelError::Mismatch { .. }), "{e}");
    assert!(e.to_string().contains("missing"), "{e}");

    // Not JSON at all; an unknown field.
    std::fs::write(&manifest_path, b"{ not json").unwrap();
    assert!(matches!(load().unwrap_err(), ModelError::Manifest { .. }));
    let mut v = serde_json::to_value(manifest("stager-test", stager_arch())).unwrap();
    v["surprise"] = serde_json::json!(1);
    std::fs::write(&manifest_path, v.to_string()).unwrap();
    let e = load().unwrap_err();
    assert!(e.to_string().contains("surprise"), "{e}");
}

#[test]
fn non_finite_weights_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_, manifest_path) = exported_stager(dir.path());
    let weights_path = dir.path().join("stager-test.safetensors");
    let mut t = candle_core::safetensors::load(&weights_path, &Device::Cpu).unwrap();
    let name = "classifier.bias".to_string();
    let nan = Tensor::new(&[f32::NAN, 0.0, 0.0], &Device::Cpu)
        .unwrap()
        .to_dtype(DType::F16)
        .unwrap();
    t.insert(name.clone(), nan);
    candle_core::safetensors::save(&t, &weights_path).unwrap();
    let mut m = weights::read_manifest(&manifest_path).unwrap();
    m.weights.sha256 = weights::sha256_hex(&std::fs::read(&weights_path).unwrap());
    weights::write_manifest(&manifest_path, &m).unwrap();
    let e = weights::load_stager(&manifest_path, &Device::Cpu, DType::F32)
        .map(|_| ())
        .unwrap_err();
    assert!(matches!(e, ModelError::NonFinite { .. }), "{e}");
    assert!(e.to_string().contains(&name), "{e}");
}

#[test]
fn bad_inputs_are_refused_by_a_loaded_stager() {
    let dir = tempfile::tempdir().unwrap();
    let (_, manifest_path) = exported_stager(dir.path());
    let net = weights::load_stager(&manifest_path, &Device::Cpu, DType::F32)
        .unwrap()
        .net;
    let wrong = Tensor::zeros((1, 16, 1, 32, 31), DType::F32, &Device::Cpu).unwrap();
    assert!(net.probabilities(&wrong).is_err());
    let mut v = vec![0.5f32; 16 * 32 * 32];
    v[100] = f32::NAN;
    let nan = Tensor::from_vec(v, (1, 16, 1, 32, 32), &Device::Cpu).unwrap();
    let e = net.probabilities(&nan).unwrap_err();
    assert!(e.to_string().contains("NaN"), "{e}");
}

#[test]
fn a_detector_exports_and_loads() {
    let dir = tempfile::tempdir().unwrap();
    let map = VarMap::new();
    let cfg = DetectorConfig::small();
    Detector::new(
        &cfg,
        VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu),
    )
    .unwrap();
    let ckpt = dir.path().join("d.safetensors");
    map.save(&ckpt).unwrap();
    let arch = Architecture::Detector {
        config: cfg,
        preprocess: Default::default(),
    };
    let mut m = manifest("det-test", arch);
    m.classes = vec!["femoral head".into()];
    weights::export(&ckpt, m, dir.path()).unwrap();
    let m = weights::load_detector(&dir.path().join("det-test.json"), &Device::Cpu, DType::F32)
        .unwrap()
        .manifest;
    assert_eq!(m.classes, ["femoral head"]);
}

/// A T2-only stager given a T1 channel by `--init`: the widened network computes what the
/// T2-only one did whatever the T1 holds, exports, and loads; a manifest whose network and
/// crop disagree on the channels is refused.
#[test]
fn a_t2_only_stager_widens_to_a_t1_channel_and_loads() {
    use onfh_edge::model::crop::Channel;
    let dir = tempfile::tempdir().unwrap();
    let (t2_net, _) = exported_stager(dir.path());
    let ckpt = dir.path().join("stager.best.safetensors");
    let two = StagerConfig {
        in_channels: 2,
        ..StagerConfig::small()
    };
    let map = VarMap::new();
    let net = Stager::new(
        &two,
        VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu),
    )
    .unwrap();
    // Only a variable named may be widened.
    let err = weights::init_from(&map, &ckpt).unwrap_err();
    assert!(err.to_string().contains("stem.conv.weight"), "{err}");
    let (n, notes) = weights::init_from_widening(&map, &ckpt, &["stem.conv.weight"]).unwrap();
    assert!(n > 10);
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(notes[0].contains("1 -> 2 input channels"), "{notes:?}");
    // (N, D, 2, H, W): the T2 planes are the T2-only crops, the T1 planes anything.
    let t2 = crops();
    let t1 = Tensor::rand(0f32, 1.0, t2.shape(), &Device::Cpu).unwrap();
    let both = Tensor::cat(&[&t2, &t1], 2).unwrap();
    let a: Vec<Vec<f32>> = t2_net.probabilities(&t2).unwrap().to_vec2().unwrap();
    let b: Vec<Vec<f32>> = net.probabilities(&both).unwrap().to_vec2().unwrap();
    for (x, y) in a.iter().flatten().zip(b.iter().flatten()) {
        assert!((x - y).abs() < 1e-5, "{x} vs {y}");
    }
    // The T2-only net refuses two channels, the two-channel one a single channel.
    assert!(t2_net.probabilities(&both).is_err());
    assert!(net.probabilities(&t2).is_err());
    // Export and load with a crop that reads the T1.
    let wide = dir.path().join("wide.safetensors");
    map.save(&wide).unwrap();
    let crop_t1 = CropConfig {
        channels: vec![Channel::T2, Channel::T1],
        ..CropConfig::small()
    };
    let arch = Architecture::Stager {
        config: two.clone(),
        crop: crop_t1.clone(),
    };
    let out = dir.path().join("t1");
    std::fs::create_dir_all(&out).unwrap();
    weights::export(&wide, manifest("stager-t1", arch), &out).unwrap();
    let loaded =
        weights::load_stager(out.join("stager-t1.json"), &Device::Cpu, DType::F32).unwrap();
    assert_eq!(loaded.crop.channels, [Channel::T2, Channel::T1]);
    assert!(loaded.net.probabilities(&both).is_ok());
    // A network of two channels with a T2-only crop (or the other way round) is neither
    // exported nor, written by hand, loaded.
    let good = std::fs::read_to_string(out.join("stager-t1.json")).unwrap();
    for (config, crop) in [
        (two.clone(), CropConfig::small()),
        (StagerConfig::small(), crop_t1),
    ] {
        let bad = dir.path().join("bad");
        let _ = std::fs::remove_dir_all(&bad);
        std::fs::create_dir_all(&bad).unwrap();
        let src = if config.in_channels == 2 {
            &wide
        } else {
            &ckpt
        };
        let arch = Architecture::Stager { config, crop };
        let Err(err) = weights::export(src, manifest("bad", arch), &bad) else {
            panic!("a stager whose network and crop disagree on the channels was exported");
        };
        assert!(err.to_string().contains("channel"), "{err}");
        assert!(!bad.join("bad.json").exists());
    }
    let mut edited: Manifest = serde_json::from_str(&good).unwrap();
    if let Architecture::Stager { crop, .. } = &mut edited.architecture {
        crop.channels = vec![Channel::T2];
    }
    let text = serde_json::to_string(&edited).unwrap();
    std::fs::write(out.join("stager-t1.json"), text).unwrap();
    let Err(err) = weights::load_stager(out.join("stager-t1.json"), &Device::Cpu, DType::F32)
    else {
        panic!("a stager whose network and crop disagree on the channels was loaded");
    };
    assert!(err.to_string().contains("channel"), "{err}");
}
