//! The command line's grammar: every command, its arguments and their help text (clap).
//! It parses only; what a command does is in [`super`].

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "onfh-edge",
    version,
    about = "Hip MRI edge appliance: DICOM receiver and early-ONFH staging (research demo — trained on synthetic phantoms, not for clinical use)"
)]
pub struct Cli {
    /// The command.
    #[command(subcommand)]
    pub command: Cmd,
}

#[derive(Subcommand)]
pub enum AlertsCmd {
    /// Deliver due alerts, waiting out retries, until none is pending (the daemon does
    /// this continuously; this is for a box whose daemon is stopped: it refuses to run
    /// beside the daemon).
    Send {
        /// Site configuration (TOML): channels and the state directory.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Put given-up (`dead`) alerts back in the queue with a fresh attempt count.
    Retry {
        /// Site configuration (TOML), to find the state directory.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Alert ids (as `results` shows them); none = every dead alert.
        ids: Vec<i64>,
    },
}

#[derive(Subcommand)]
pub enum ExportCmd {
    /// Show the result objects queued for PACS, with their state and last error.
    List {
        /// Site configuration (TOML), to find the state directory.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Put given-up (`dead`) result objects back in the queue with a fresh attempt count
    /// (the daemon sends them within a second).
    Retry {
        /// Site configuration (TOML), to find the state directory.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Export ids (as `export list` shows them); none = every dead one.
        ids: Vec<i64>,
    },
}

#[derive(Subcommand)]
pub enum Cmd {
    /// Run the whole job on embedded defaults, end to end on loopback.
    Demo,
    /// Run the daemon: receive studies over DICOM and track series completion.
    Serve {
        /// Site configuration (TOML) applied over the embedded defaults.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Show what the receiver holds: studies, series, instances, pending jobs.
    Status {
        /// Site configuration (TOML), to find the state directory.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show stored results: analyses, per-head findings, series chosen, alert delivery.
    Results {
        /// Site configuration (TOML), to find the state directory.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Print JSON (one array of results) instead of a table.
        #[arg(long)]
        json: bool,
        /// Only results from this time on: RFC 3339 (`2026-11-28T08:00:00Z`), a date
        /// (`2026-11-28`, UTC), or an age (`90m`, `12h`, `7d`).
        #[arg(long, value_name = "T")]
        since: Option<String>,
    },
    /// Delete received DICOM files older than the retention period (results are kept).
    Purge {
        /// Site configuration (TOML): the state directory and `storage.spool_retention_days`.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Override the retention period (0 purges everything received so far).
        #[arg(long, value_name = "DAYS")]
        older_than_days: Option<u32>,
    },
    /// The alert outbox: deliver pending alerts now, or requeue given-up ones.
    Alerts {
        #[command(subcommand)]
        action: AlertsCmd,
    },
    /// The result objects for PACS: list the outbox, retry what was given up.
    Export {
        #[command(subcommand)]
        action: ExportCmd,
    },
    /// Analyse one study offline: DICOM files or folders → femoral heads, stages, heatmaps.
    /// Exit status: 0 ok, 3 indeterminate, 4 no usable series, 1 error.
    Analyze(AnalyzeArgs),
    /// Write synthetic hip MRI studies (DICOM series + truth.json) for tests, demo and training.
    Phantom(PhantomArgs),
    /// The paper's table (per-class and averaged accuracy, sensitivity, specificity, F1,
    /// AUC, confusion matrix, ROC curves; McNemar against readers) for studies with known
    /// stages.
    Eval(EvalArgs),
    /// Train a network on phantom studies.
    Train {
        #[command(subcommand)]
        what: TrainWhat,
    },
    /// Measure the shipped models on a held-out phantom test set (seeds and a scanner style
    /// never used in training).
    EvaluateModels(EvaluateModelsArgs),
    /// Validate a configuration and print the effective settings.
    CheckConfig {
        /// Site configuration (TOML) applied over the embedded defaults.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
pub enum TrainWhat {
    /// The 3D-MulDenseNet stager, on head crops at the ground-truth centres.
    Stager(StagerArgs),
    /// The 3DC-YOLOX detector, on whole preprocessed study volumes.
    Detector(DetectorArgs),
}

/// The first training seed by default (the shipped models' runs).
const FIRST_TRAINING_SEED: u64 = 1000;

/// The arguments of `Analyze`.
#[derive(Args)]
pub struct AnalyzeArgs {
    /// DICOM files or folders (searched recursively; non-DICOM files are skipped).
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Print the result as JSON (the contract in the README).
    #[arg(long)]
    pub json: bool,
    /// Write heatmaps (PNG montage per head, NIfTI of T2 and heatmap) here.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Site configuration (TOML) applied over the embedded defaults.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Device: cpu, cuda or cuda:N (overrides analysis.device).
    #[arg(long)]
    pub device: Option<String>,
}

/// The arguments of `Phantom`.
#[derive(Args)]
pub struct PhantomArgs {
    /// Output folder (one sub-folder per study).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Number of studies.
    #[arg(long, default_value_t = 1)]
    pub studies: usize,
    /// Seed of the first study; study i uses seed + i.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Scanner style of every study (default: drawn per study for the classic family,
    /// every style in turn for the external one). The held-out test style of the
    /// classic family is "philips-like 1.5T".
    #[arg(long)]
    pub style: Option<String>,
    /// Which phantom: `classic` (the training phantom) or `external` (the independent
    /// evaluation phantom, never used in training).
    #[arg(long, default_value = "classic")]
    pub family: String,
}

/// The arguments of `Eval`.
#[derive(Args)]
pub struct EvalArgs {
    /// Truth: a folder of phantom studies (their truth.json) or a CSV
    /// `study_instance_uid,side,stage`.
    #[arg(long, value_name = "PATH")]
    pub truth: PathBuf,
    /// `analyze --json` output (concatenated objects or an array); without it the
    /// pipeline runs on every phantom study under --truth.
    #[arg(long, value_name = "FILE")]
    pub results: Option<PathBuf>,
    /// Reader diagnoses, CSV `study_instance_uid,side,reader,stage`: McNemar per reader.
    #[arg(long, value_name = "FILE")]
    pub readers: Option<PathBuf>,
    /// Draw the ROC curves to this PNG.
    #[arg(long, value_name = "FILE")]
    pub roc: Option<PathBuf>,
    /// Print the figures as JSON.
    #[arg(long)]
    pub json: bool,
    /// Site configuration (TOML) applied over the embedded defaults.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// The arguments of `EvaluateModels`.
#[derive(Args)]
pub struct EvaluateModelsArgs {
    /// The detector's manifest.
    #[arg(long, default_value = "models/3dc-yolox-small.json")]
    pub detector: PathBuf,
    /// The stager's manifest.
    #[arg(long, default_value = "models/3d-muldensenet-small.json")]
    pub stager: PathBuf,
    /// In-distribution test studies (the training phantom, held-out style).
    #[arg(long, default_value_t = 60)]
    pub studies: usize,
    /// First in-distribution test seed.
    #[arg(long, default_value_t = crate::training::data::TEST_SEED_BASE)]
    pub seed: u64,
    /// External test studies (the independent evaluation phantom, every centre style
    /// in turn); 0 skips the external test.
    #[arg(long, default_value_t = 60)]
    pub external_studies: usize,
    /// First external test seed.
    #[arg(long, default_value_t = crate::training::data::EXTERNAL_SEED_BASE)]
    pub external_seed: u64,
    /// Also evaluate on the test split of a site's labelled studies (CSV, as for
    /// `train --dataset`).
    #[arg(long, value_name = "CSV")]
    pub dataset: Option<PathBuf>,
    /// Also measure the networks on this many domain-randomised development studies (from
    /// the detector's randomised validation seeds, which number --val-randomised; printed,
    /// never written into the manifests).
    #[arg(long, default_value_t = 0)]
    pub randomised: usize,
    /// First randomised development seed (the detector's randomised validation seeds).
    #[arg(long, default_value_t = FIRST_TRAINING_SEED + crate::training::RANDOMISED_VALIDATION_SEEDS)]
    pub randomised_seed: u64,
    /// The f32 checkpoint the detector was exported from (for the fp16 comparison).
    #[arg(long, value_name = "FILE")]
    pub reference_detector: Option<PathBuf>,
    /// The f32 checkpoint the stager was exported from.
    #[arg(long, value_name = "FILE")]
    pub reference_stager: Option<PathBuf>,
    /// Print the figures as JSON.
    #[arg(long)]
    pub json: bool,
    /// Write the figures into both manifests.
    #[arg(long)]
    pub write: bool,
}

/// What both `train` commands take about the run itself.
#[derive(Args)]
pub struct RunArgs {
    /// Where checkpoints go.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Architecture preset: small (trains on a CPU; shipped) or paper.
    #[arg(long, default_value = "small")]
    pub preset: String,
    /// Domain-randomised validation studies (fixed seeds).
    #[arg(long, default_value_t = 60)]
    pub val_randomised: usize,
    /// First training seed.
    #[arg(long, default_value_t = FIRST_TRAINING_SEED)]
    pub seed: u64,
    /// Continue from the last checkpoint in --out.
    #[arg(long)]
    pub resume: bool,
    /// Export the best epoch as fp16 safetensors + manifest into this folder.
    #[arg(long, value_name = "DIR")]
    pub export: Option<PathBuf>,
    /// Fine-tune from a model (its manifest, e.g. models/NAME.json) or a checkpoint
    /// (.safetensors) of the same architecture instead of random weights.
    #[arg(long, value_name = "FILE")]
    pub init: Option<PathBuf>,
    /// Do not train: export the best epoch of the run already in --out (its
    /// `*.trained.json` record) into --export, with the manifest these options describe.
    #[arg(long, requires = "export")]
    pub export_only: bool,
    /// Train on a site's labelled studies (CSV: study,side,stage and a centre/radius or
    /// an ITK-SNAP label map per head; see `training::dataset`) instead of the classic
    /// phantom: its train split trains, its val split selects the epoch.
    #[arg(long, value_name = "CSV")]
    pub dataset: Option<PathBuf>,
}

/// The arguments of `train stager` (the run's, then this network's schedule).
#[derive(Args)]
pub struct StagerArgs {
    /// The run: output, preset, seeds, checkpoints, export, data source.
    #[command(flatten)]
    pub run: RunArgs,
    /// Training studies (two heads each); seeds start at --seed.
    #[arg(long, default_value_t = 60)]
    pub train_studies: usize,
    /// Validation studies; seeds start at --seed + 1000000.
    #[arg(long, default_value_t = 20)]
    pub val_studies: usize,
    /// Domain-randomised studies drawn afresh for every epoch (SynthSeg-style: random
    /// anatomy, contrast, resolution and artefacts, rendered on the model grid).
    #[arg(long, default_value_t = 400)]
    pub randomised: usize,
    /// Epochs.
    #[arg(long, default_value_t = 20)]
    pub epochs: usize,
    /// Batch size.
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// Learning rate (the paper: 1e-2).
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// AdamW weight decay.
    #[arg(long, default_value_t = 1e-4)]
    pub weight_decay: f64,
    /// Extra training crops per head around centres displaced by Gaussian noise (the
    /// detector's centre is never exact).
    #[arg(long, default_value_t = 2)]
    pub jitter_copies: usize,
    /// Standard deviation of that displacement per axis, mm.
    #[arg(long, default_value_t = 3.0)]
    pub jitter_mm: f64,
    /// Read the T1 companion beside the T2 (a second input channel; the model is named
    /// `3d-muldensenet-<preset>-t1`). With `--init` from a T2-only stager, its stem is
    /// widened with the T1's weights from zero.
    #[arg(long)]
    pub t1: bool,
}

/// The arguments of `train detector` (the run's, then this network's schedule).
#[derive(Args)]
pub struct DetectorArgs {
    /// The run: output, preset, seeds, checkpoints, export, data source.
    #[command(flatten)]
    pub run: RunArgs,
    /// Training studies; seeds start at --seed.
    #[arg(long, default_value_t = 120)]
    pub train_studies: usize,
    /// Validation studies; seeds start at --seed + 1000000.
    #[arg(long, default_value_t = 30)]
    pub val_studies: usize,
    /// Domain-randomised studies drawn afresh for every epoch (SynthSeg-style: random
    /// anatomy, contrast, resolution and artefacts, rendered on the model grid).
    #[arg(long, default_value_t = 300)]
    pub randomised: usize,
    /// Epochs.
    #[arg(long, default_value_t = 12)]
    pub epochs: usize,
    /// Batch size.
    #[arg(long, default_value_t = 4)]
    pub batch: usize,
    /// Learning rate (the paper: 1e-2).
    #[arg(long, default_value_t = 2e-3)]
    pub lr: f64,
    /// AdamW weight decay.
    #[arg(long, default_value_t = 5e-4)]
    pub weight_decay: f64,
}
