//! Model files: fp16 safetensors weights and the JSON manifest that describes them.
//!
//! A model is two files in the models folder: `<name>.safetensors` (fp16) and
//! `<name>.json`, the [`Manifest`] — architecture, input and preprocessing, class names,
//! the weights file and its SHA-256, how it was trained, its measured metrics and its
//! intended use. [`export`] turns a training checkpoint (f32) into that pair; [`load_detector`]
//! and [`load_stager`] read it back, checking in order: the manifest parses and names the
//! right kind of network; the weights file exists and its SHA-256 matches; it parses as
//! safetensors; its tensors are exactly the network's (names and shapes, nothing missing,
//! nothing extra) and finite. Any failure is a [`ModelError`] that names the file and what is
//! wrong; nothing panics. On CPU the fp16 weights are upcast to f32; on CUDA the networks run
//! in f16.
//!
//! This module reads and writes model files only; it does not train or evaluate.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::crop::CropConfig;
use super::detector::{Detector, DetectorConfig};
use super::stager::{Stager, StagerConfig};
use crate::volume::Preprocess;

/// What every model, result, panel screen and alert says about itself.
pub const INTENDED_USE: &str =
    "research demo — trained on synthetic phantoms, not for clinical use";

/// Format version of manifests written by this build.
pub const MANIFEST_FORMAT: u32 = 1;

/// The network a manifest describes, with its input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum Architecture {
    /// 3DC-YOLOX on the preprocessed study volume.
    Detector {
        /// Network configuration.
        config: DetectorConfig,
        /// How the study volume is made (the network input).
        preprocess: Preprocess,
    },
    /// 3D-MulDenseNet on a femoral-head crop.
    Stager {
        /// Network configuration.
        config: StagerConfig,
        /// How the head crop is made (the network input).
        crop: CropConfig,
    },
}

impl Architecture {
    /// "detector" or "stager".
    pub fn kind(&self) -> &'static str {
        match self {
            Architecture::Detector { .. } => "detector",
            Architecture::Stager { .. } => "stager",
        }
    }
}

/// The weights file a manifest points to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightsRef {
    /// File name, relative to the manifest.
    pub file: String,
    /// SHA-256 of the file, lowercase hex.
    pub sha256: String,
    /// Storage type of the tensors ("f16").
    pub dtype: String,
    /// Number of parameters (all tensors, batch-norm statistics included).
    pub parameters: usize,
}

/// How a model was trained.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Training {
    /// The command that reproduces the training run.
    pub command: String,
    /// What the data were.
    pub data: String,
    /// Training and validation seeds.
    pub seeds: String,
    /// Scanner styles used in training.
    pub scanner_styles: Vec<String>,
    /// The epoch kept and its validation figure.
    pub selected: String,
    /// Intensity normalisation before the window, as trained (inference must match it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub normalisation: Option<String>,
    /// Domain randomisation: what was drawn per training study.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub randomisation: Option<String>,
    /// A site dataset the model was trained on (`--dataset`): its hash, counts and splits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset: Option<DatasetSummary>,
    /// Wall time of the training run on the machine that ran it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wall_time: Option<String>,
}

/// What a model's manifest records of the dataset it was trained on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetSummary {
    /// The CSV, as given.
    pub csv: String,
    /// SHA-256 of the CSV's bytes.
    pub sha256: String,
    /// Studies per split.
    pub studies: BTreeMap<String, usize>,
    /// Heads per split and stage (`"train"` → `{"0": n, "I": n, "II": n}`).
    pub heads: BTreeMap<String, BTreeMap<String, usize>>,
}

/// A model manifest (`models/<name>.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Manifest format version.
    pub format: u32,
    /// Model name (also the file stem).
    pub name: String,
    /// Model version.
    pub version: String,
    /// Network and input.
    pub architecture: Architecture,
    /// Output class names, in logit order.
    pub classes: Vec<String>,
    /// The weights.
    pub weights: WeightsRef,
    /// Training provenance.
    pub training: Training,
    /// Measured figures (held-out test set; see `evaluate-models`), with the command that
    /// reproduces them. Null until measured.
    #[serde(default)]
    pub metrics: Option<serde_json::Value>,
    /// Intended use.
    pub intended_use: String,
}

/// Why a model could not be loaded or written.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A file could not be read or written.
    #[error("{path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The manifest is not valid JSON of the expected form.
    #[error("{path}: not a valid model manifest: {message}")]
    Manifest {
        /// The manifest.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// The manifest describes another kind of network.
    #[error("{path}: a {found} manifest where a {expected} was expected")]
    WrongKind {
        /// The manifest.
        path: PathBuf,
        /// What was wanted.
        expected: &'static str,
        /// What it is.
        found: &'static str,
    },
    /// The weights file's hash differs from the manifest's.
    #[error(
        "{path}: SHA-256 {actual} does not match the manifest's {expected} (corrupt, truncated or replaced weights)"
    )]
    HashMismatch {
        /// The weights file.
        path: PathBuf,
        /// From the manifest.
        expected: String,
        /// Of the file.
        actual: String,
    },
    /// The weights file is not valid safetensors.
    #[error("{path}: not a valid safetensors file: {message}")]
    Format {
        /// The weights file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// The tensors are not the network's.
    #[error("{path}: weights do not fit the {kind} architecture: {problems}")]
    Mismatch {
        /// The weights file.
        path: PathBuf,
        /// "detector" or "stager".
        kind: &'static str,
        /// Missing, unexpected and misshapen tensors.
        problems: String,
    },
    /// A tensor holds NaN or infinity.
    #[error("{path}: tensor {name} holds NaN or infinite values")]
    NonFinite {
        /// The weights file.
        path: PathBuf,
        /// The tensor.
        name: String,
    },
    /// A model asked for from the binary is not one of those built in.
    #[error(
        "{name} is not one of the models built into this binary ({available}); set analysis.models_dir to the folder that holds it"
    )]
    NotEmbedded {
        /// The manifest asked for.
        name: String,
        /// What is built in.
        available: String,
    },
    /// A model file named by the configuration is not there.
    #[error(
        "analysis.models_dir is {dir:?}, but {path} does not exist (leave analysis.models_dir empty for the models built into the binary)"
    )]
    Missing {
        /// `analysis.models_dir`.
        dir: PathBuf,
        /// The file looked for.
        path: PathBuf,
    },
    /// The device asked for is not available.
    #[error("{0}")]
    Device(String),
    /// Candle failed.
    #[error("{context}")]
    Candle {
        /// What was being done.
        context: String,
        /// Why.
        source: candle_core::Error,
    },
}

impl ModelError {
    /// This error of loading a model from `analysis.models_dir` = `dir`: a missing file
    /// names the setting.
    pub fn in_setting(self, dir: &Path) -> ModelError {
        match self {
            ModelError::Io { path, source } if source.kind() == std::io::ErrorKind::NotFound => {
                ModelError::Missing {
                    dir: dir.to_owned(),
                    path,
                }
            }
            e => e,
        }
    }
}

fn candle(context: impl Into<String>) -> impl FnOnce(candle_core::Error) -> ModelError {
    let context = context.into();
    move |source| ModelError::Candle { context, source }
}

/// The device named `spec`: `cpu`, `cuda` or `cuda:N` (CUDA needs a build with
/// `--features cuda`).
pub fn device(spec: &str) -> Result<Device, ModelError> {
    let ordinal = match spec {
        "cpu" => return Ok(Device::Cpu),
        "cuda" => Some(0),
        s => s
            .strip_prefix("cuda:")
            .and_then(|n| n.parse::<usize>().ok()),
    };
    let Some(n) = ordinal else {
        return Err(ModelError::Device(format!(
            "unknown device {spec:?} (cpu, cuda or cuda:N)"
        )));
    };
    if !cfg!(feature = "cuda") {
        return Err(ModelError::Device(format!(
            "{spec}: this build has no CUDA support (build with `--features cuda`)"
        )));
    }
    Device::new_cuda(n).map_err(candle(format!("opening CUDA device {n}")))
}

/// The compute type for a device: f16 on CUDA (the shipped weights' type), f32 on CPU
/// (the weights are upcast).
pub fn dtype_for(device: &Device) -> DType {
    if device.is_cuda() {
        DType::F16
    } else {
        DType::F32
    }
}

/// SHA-256 of bytes, lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Read and parse a manifest.
pub fn read_manifest(path: &Path) -> Result<Manifest, ModelError> {
    let bytes = std::fs::read(path).map_err(|source| ModelError::Io {
        path: path.to_owned(),
        source,
    })?;
    parse_manifest(path, &bytes)
}

/// Parse a manifest's bytes (`path` names it in errors).
fn parse_manifest(path: &Path, bytes: &[u8]) -> Result<Manifest, ModelError> {
    let m: Manifest = serde_json::from_slice(bytes).map_err(|e| ModelError::Manifest {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    if m.format != MANIFEST_FORMAT {
        return Err(ModelError::Manifest {
            path: path.to_owned(),
            message: format!(
                "format {} (this build reads format {MANIFEST_FORMAT})",
                m.format
            ),
        });
    }
    Ok(m)
}

/// The models built into the binary: the shipped small detector and stager, manifests
/// and weights as they are in `models/` (together under 1 MB).
pub const EMBEDDED: &[(&str, &[u8])] = &[
    (
        "3dc-yolox-small.json",
        include_bytes!("../../models/3dc-yolox-small.json"),
    ),
    (
        "3dc-yolox-small.safetensors",
        include_bytes!("../../models/3dc-yolox-small.safetensors"),
    ),
    (
        "3d-muldensenet-small.json",
        include_bytes!("../../models/3d-muldensenet-small.json"),
    ),
    (
        "3d-muldensenet-small.safetensors",
        include_bytes!("../../models/3d-muldensenet-small.safetensors"),
    ),
];

/// Where a model's manifest and weights come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// A model built into the binary ([`EMBEDDED`]), by its manifest's file name.
    Embedded(String),
    /// A manifest file; its weights file is in the same folder.
    File(PathBuf),
}

impl ModelSource {
    /// The model `name` in `dir`, or built in when `dir` is empty (`analysis.models_dir`).
    pub fn in_dir(dir: &Path, name: &str) -> ModelSource {
        if dir.as_os_str().is_empty() {
            ModelSource::Embedded(name.to_owned())
        } else {
            ModelSource::File(dir.join(name))
        }
    }

    /// How errors name the manifest.
    pub fn label(&self) -> PathBuf {
        match self {
            ModelSource::Embedded(name) => PathBuf::from(format!("(built in) {name}")),
            ModelSource::File(p) => p.clone(),
        }
    }

    /// The bytes of `file`: the manifest itself (None) or a file beside it.
    fn read(
        &self,
        file: Option<&str>,
    ) -> Result<(PathBuf, std::borrow::Cow<'static, [u8]>), ModelError> {
        match self {
            ModelSource::Embedded(name) => {
                let want = file.unwrap_or(name);
                let label = PathBuf::from(format!("(built in) {want}"));
                EMBEDDED
                    .iter()
                    .find(|(n, _)| *n == want)
                    .map(|(_, b)| (label, std::borrow::Cow::Borrowed(*b)))
                    .ok_or_else(|| ModelError::NotEmbedded {
                        name: want.to_owned(),
                        available: EMBEDDED
                            .iter()
                            .filter(|(n, _)| n.ends_with(".json"))
                            .map(|(n, _)| *n)
                            .collect::<Vec<_>>()
                            .join(", "),
                    })
            }
            ModelSource::File(manifest) => {
                let path = match file {
                    None => manifest.clone(),
                    Some(f) => manifest.parent().unwrap_or(Path::new(".")).join(f),
                };
                let bytes = std::fs::read(&path).map_err(|source| ModelError::Io {
                    path: path.clone(),
                    source,
                })?;
                Ok((path, std::borrow::Cow::Owned(bytes)))
            }
        }
    }

    /// The manifest.
    pub fn manifest(&self) -> Result<Manifest, ModelError> {
        let (label, bytes) = self.read(None)?;
        parse_manifest(&label, &bytes)
    }
}

impl From<&Path> for ModelSource {
    fn from(p: &Path) -> Self {
        ModelSource::File(p.to_owned())
    }
}

impl From<&PathBuf> for ModelSource {
    fn from(p: &PathBuf) -> Self {
        ModelSource::File(p.clone())
    }
}

impl From<PathBuf> for ModelSource {
    fn from(p: PathBuf) -> Self {
        ModelSource::File(p)
    }
}

/// Write `bytes` to `path` atomically (temporary file, fsync, rename).
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ModelError> {
    let io = |source| ModelError::Io {
        path: path.to_owned(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// Write a manifest (pretty JSON) atomically.
pub fn write_manifest(path: &Path, m: &Manifest) -> Result<(), ModelError> {
    let mut text = serde_json::to_string_pretty(m).expect("manifest serialises");
    text.push('\n');
    write_atomic(path, text.as_bytes())
}

/// The names and shapes a network of this architecture has, from a throwaway build.
fn expected_tensors(arch: &Architecture) -> Result<BTreeMap<String, Vec<usize>>, ModelError> {
    // Bounds first, so that a forged configuration cannot make the throwaway build
    // allocate without limit.
    match arch {
        Architecture::Detector { config, .. } => config.validate(),
        Architecture::Stager { config, .. } => config.validate(),
    }
    .map_err(candle("checking the architecture"))?;
    let map = VarMap::new();
    let vb = VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu);
    match arch {
        Architecture::Detector { config, .. } => {
            Detector::new(config, vb).map_err(candle("building the detector"))?;
        }
        Architecture::Stager { config, .. } => {
            Stager::new(config, vb).map_err(candle("building the stager"))?;
        }
    }
    let data = map.data().lock().expect("var map lock");
    Ok(data
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().dims().to_vec()))
        .collect())
}

fn check_tensors(
    path: &Path,
    arch: &Architecture,
    got: &HashMap<String, Tensor>,
) -> Result<(), ModelError> {
    let expected = expected_tensors(arch)?;
    let mut problems = Vec::new();
    for (name, shape) in &expected {
        match got.get(name) {
            None => problems.push(format!("missing {name}")),
            Some(t) if t.dims() != shape.as_slice() => problems.push(format!(
                "{name} has shape {:?}, expected {shape:?}",
                t.dims()
            )),
            Some(_) => {}
        }
    }
    let mut extra: Vec<&String> = got.keys().filter(|k| !expected.contains_key(*k)).collect();
    extra.sort();
    for name in extra {
        problems.push(format!("unexpected {name}"));
    }
    if problems.is_empty() {
        return Ok(());
    }
    let shown = problems.len().min(5);
    let mut text = problems[..shown].join("; ");
    if problems.len() > shown {
        text.push_str(&format!("; and {} more", problems.len() - shown));
    }
    Err(ModelError::Mismatch {
        path: path.to_owned(),
        kind: arch.kind(),
        problems: text,
    })
}

fn all_finite(t: &Tensor) -> candle_core::Result<bool> {
    let v: Vec<f32> = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    Ok(v.iter().all(|x| x.is_finite()))
}

/// Read, hash-check, parse and shape-check the weights of `manifest`, returning tensors
/// on `device` in `dtype`.
fn load_weights(
    source: &ModelSource,
    manifest: &Manifest,
    device: &Device,
    dtype: DType,
) -> Result<HashMap<String, Tensor>, ModelError> {
    let (path, bytes) = source.read(Some(&manifest.weights.file))?;
    let actual = sha256_hex(&bytes);
    if actual != manifest.weights.sha256.to_ascii_lowercase() {
        return Err(ModelError::HashMismatch {
            path,
            expected: manifest.weights.sha256.clone(),
            actual,
        });
    }
    let tensors = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu).map_err(|e| {
        ModelError::Format {
            path: path.clone(),
            message: e.to_string(),
        }
    })?;
    check_tensors(&path, &manifest.architecture, &tensors)?;
    let mut out = HashMap::with_capacity(tensors.len());
    for (name, t) in tensors {
        if !all_finite(&t).map_err(candle(format!("reading {name}")))? {
            return Err(ModelError::NonFinite { path, name });
        }
        let t = t
            .to_dtype(dtype)
            .and_then(|t| t.to_device(device))
            .map_err(candle(format!("moving {name} to {device:?}")))?;
        out.insert(name, t);
    }
    Ok(out)
}

/// A loaded detector: the network, its manifest, and the input it was trained on.
pub struct LoadedDetector {
    /// The network.
    pub net: Detector,
    /// Its manifest.
    pub manifest: Manifest,
    /// Its architecture.
    pub config: DetectorConfig,
    /// The preprocessing it reads.
    pub preprocess: Preprocess,
}

/// A loaded stager: the network, its manifest, and the crops it reads.
pub struct LoadedStager {
    /// The network.
    pub net: Stager,
    /// Its manifest.
    pub manifest: Manifest,
    /// Its architecture.
    pub config: StagerConfig,
    /// The crops it reads.
    pub crop: CropConfig,
}

/// Load a detector: fp16 weights upcast to `dtype` on `device`, checked against the
/// manifest (kind, hash, names and shapes, finiteness).
pub fn load_detector(
    source: impl Into<ModelSource>,
    device: &Device,
    dtype: DType,
) -> Result<LoadedDetector, ModelError> {
    let source = source.into();
    let m = source.manifest()?;
    let Architecture::Detector { config, preprocess } = m.architecture.clone() else {
        return Err(ModelError::WrongKind {
            path: source.label(),
            expected: "detector",
            found: m.architecture.kind(),
        });
    };
    let tensors = load_weights(&source, &m, device, dtype)?;
    let net = Detector::new(&config, VarBuilder::from_tensors(tensors, dtype, device)).map_err(
        candle(format!(
            "{}: building the detector",
            source.label().display()
        )),
    )?;
    Ok(LoadedDetector {
        net,
        manifest: m,
        config,
        preprocess,
    })
}

/// Load a stager, checked like [`load_detector`] and for its three classes.
pub fn load_stager(
    source: impl Into<ModelSource>,
    device: &Device,
    dtype: DType,
) -> Result<LoadedStager, ModelError> {
    let source = source.into();
    let m = source.manifest()?;
    let Architecture::Stager { config, crop } = m.architecture.clone() else {
        return Err(ModelError::WrongKind {
            path: source.label(),
            expected: "stager",
            found: m.architecture.kind(),
        });
    };
    if config.classes != 3 || m.classes.len() != 3 {
        return Err(ModelError::Manifest {
            path: source.label(),
            message: format!(
                "a stager must have the three classes stage 0, I, II (config {}, names {:?})",
                config.classes, m.classes
            ),
        });
    }
    if let Err(message) = channels_agree(&config, &crop) {
        return Err(ModelError::Manifest {
            path: source.label(),
            message,
        });
    }
    let tensors = load_weights(&source, &m, device, dtype)?;
    let net = Stager::new(&config, VarBuilder::from_tensors(tensors, dtype, device)).map_err(
        candle(format!("{}: building the stager", source.label().display())),
    )?;
    Ok(LoadedStager {
        net,
        manifest: m,
        config,
        crop,
    })
}

/// A stager's input channels and its crop's channel list agree, and the list is one this
/// build reads.
fn channels_agree(config: &StagerConfig, crop: &CropConfig) -> Result<(), String> {
    crop.check_channels()?;
    if crop.channel_count() != config.in_channels {
        return Err(format!(
            "the stager takes {} input channel(s), its crop lists {:?}",
            config.in_channels, crop.channels
        ));
    }
    Ok(())
}

/// Initialise a network's variables from a model (a manifest, `*.json`) or a checkpoint
/// (`*.safetensors`, f32 or f16) for fine-tuning: every variable of `map` must be present
/// with its shape; values are converted to f32. Returns how many tensors were set.
pub fn init_from(map: &candle_nn::VarMap, path: &Path) -> Result<usize, ModelError> {
    init_from_widening(map, path, &[]).map(|(n, _)| n)
}

/// [`init_from`], except that a variable named in `widen` may have more input channels
/// (dimension 1) than the checkpoint's tensor: the checkpoint's channels come first and
/// the new ones start at zero, so the widened network computes exactly what the
/// checkpoint's did until training moves them (a stager given a T1 channel starts as the
/// T2-only stager it came from). Returns how many tensors were set, and a note per
/// widened one.
pub fn init_from_widening(
    map: &candle_nn::VarMap,
    path: &Path,
    widen: &[&str],
) -> Result<(usize, Vec<String>), ModelError> {
    let file = if path.extension().is_some_and(|e| e == "json") {
        let m = read_manifest(path)?;
        path.parent()
            .unwrap_or(Path::new("."))
            .join(&m.weights.file)
    } else {
        path.to_owned()
    };
    let tensors =
        candle_core::safetensors::load(&file, &Device::Cpu).map_err(|e| ModelError::Format {
            path: file.clone(),
            message: e.to_string(),
        })?;
    let vars = map.data().lock().expect("var map lock");
    let mut notes = Vec::new();
    for (name, var) in vars.iter() {
        let mismatch = |problems: String| ModelError::Mismatch {
            path: file.clone(),
            kind: "initial",
            problems,
        };
        let mut t = tensors
            .get(name)
            .ok_or_else(|| mismatch(format!("no tensor {name}")))?
            .clone();
        let (have, want) = (t.dims().to_vec(), var.dims().to_vec());
        let wider = have.len() == want.len()
            && have.len() >= 2
            && have[1] < want[1]
            && (0..have.len()).all(|i| i == 1 || have[i] == want[i]);
        if widen.contains(&name.as_str()) && wider {
            let mut extra = want.clone();
            extra[1] = want[1] - have[1];
            let zeros = Tensor::zeros(extra, t.dtype(), &Device::Cpu)
                .map_err(candle(format!("widening {name}")))?;
            t = Tensor::cat(&[&t, &zeros], 1).map_err(candle(format!("widening {name}")))?;
            notes.push(format!(
                "{name}: {} -> {} input channels, the new ones from zero",
                have[1], want[1]
            ));
        }
        if t.dims() != var.dims() {
            return Err(mismatch(format!(
                "tensor {name} has shape {:?}, the network {:?}",
                t.dims(),
                var.dims()
            )));
        }
        let t = t
            .to_dtype(DType::F32)
            .map_err(candle(format!("converting {name}")))?;
        var.set(&t).map_err(candle(format!("setting {name}")))?;
    }
    Ok((vars.len(), notes))
}

/// Convert an f32 training checkpoint into `<dir>/<manifest.name>.safetensors` (fp16) and
/// write the manifest beside it, filling in the weights reference. Every tensor must fit
/// the architecture and stay finite in fp16.
pub fn export(
    checkpoint: &Path,
    mut manifest: Manifest,
    dir: &Path,
) -> Result<Manifest, ModelError> {
    let tensors = candle_core::safetensors::load(checkpoint, &Device::Cpu).map_err(|e| {
        ModelError::Format {
            path: checkpoint.to_owned(),
            message: e.to_string(),
        }
    })?;
    check_tensors(checkpoint, &manifest.architecture, &tensors)?;
    if let Architecture::Stager { config, crop } = &manifest.architecture
        && let Err(message) = channels_agree(config, crop)
    {
        return Err(ModelError::Manifest {
            path: checkpoint.to_owned(),
            message,
        });
    }
    let mut half = HashMap::new();
    let mut parameters = 0;
    for (name, t) in &tensors {
        let h = t
            .to_dtype(DType::F16)
            .map_err(candle(format!("converting {name}")))?;
        if !all_finite(&h).map_err(candle(format!("converting {name}")))? {
            return Err(ModelError::NonFinite {
                path: checkpoint.to_owned(),
                name: name.clone(),
            });
        }
        parameters += h.elem_count();
        half.insert(name.clone(), h);
    }
    std::fs::create_dir_all(dir).map_err(|source| ModelError::Io {
        path: dir.to_owned(),
        source,
    })?;
    let file = format!("{}.safetensors", manifest.name);
    let path = dir.join(&file);
    let tmp = dir.join(format!("{file}.export"));
    candle_core::safetensors::save(&half, &tmp)
        .map_err(candle(format!("writing {}", tmp.display())))?;
    let bytes = std::fs::read(&tmp).map_err(|source| ModelError::Io {
        path: tmp.clone(),
        source,
    })?;
    let _ = std::fs::remove_file(&tmp);
    write_atomic(&path, &bytes)?;
    manifest.weights = WeightsRef {
        file,
        sha256: sha256_hex(&bytes),
        dtype: "f16".into(),
        parameters,
    };
    manifest.format = MANIFEST_FORMAT;
    write_manifest(&dir.join(format!("{}.json", manifest.name)), &manifest)?;
    Ok(manifest)
}
