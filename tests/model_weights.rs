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
