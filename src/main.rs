//! Command line of `onfh-edge`: parse, validate the configuration once, call the library.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use onfh_edge::config::Settings;
use onfh_edge::store::Store;

#[derive(Parser)]
#[command(
    name = "onfh-edge",
    version,
    about = "Hip MRI edge appliance: DICOM receiver and early-ONFH staging (research demo — trained on synthetic phantoms, not for clinical use)"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum AlertsCmd {
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
enum ExportCmd {
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
enum Cmd {
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
    Analyze {
        /// DICOM files or folders (searched recursively; non-DICOM files are skipped).
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Print the result as JSON (the contract in the README).
        #[arg(long)]
        json: bool,
        /// Write heatmaps (PNG montage per head, NIfTI of T2 and heatmap) here.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// Site configuration (TOML) applied over the embedded defaults.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Device: cpu, cuda or cuda:N (overrides analysis.device).
        #[arg(long)]
        device: Option<String>,
    },
    /// Write synthetic hip MRI studies (DICOM series + truth.json) for tests, demo and training.
    Phantom {
        /// Output folder (one sub-folder per study).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Number of studies.
        #[arg(long, default_value_t = 1)]
        studies: usize,
        /// Seed of the first study; study i uses seed + i.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Scanner style of every study (default: drawn per study for the classic family,
        /// every style in turn for the external one). The held-out test style of the
        /// classic family is "philips-like 1.5T".
        #[arg(long)]
        style: Option<String>,
        /// Which phantom: `classic` (the training phantom) or `external` (the independent
        /// evaluation phantom, never used in training).
        #[arg(long, default_value = "classic")]
        family: String,
    },
    /// The paper's table (per-class and averaged accuracy, sensitivity, specificity, F1,
    /// AUC, confusion matrix, ROC curves; McNemar against readers) for studies with known
    /// stages.
    Eval {
        /// Truth: a folder of phantom studies (their truth.json) or a CSV
        /// `study_instance_uid,side,stage`.
        #[arg(long, value_name = "PATH")]
        truth: PathBuf,
        /// `analyze --json` output (concatenated objects or an array); without it the
        /// pipeline runs on every phantom study under --truth.
        #[arg(long, value_name = "FILE")]
        results: Option<PathBuf>,
        /// Reader diagnoses, CSV `study_instance_uid,side,reader,stage`: McNemar per reader.
        #[arg(long, value_name = "FILE")]
        readers: Option<PathBuf>,
        /// Draw the ROC curves to this PNG.
        #[arg(long, value_name = "FILE")]
        roc: Option<PathBuf>,
        /// Print the figures as JSON.
        #[arg(long)]
        json: bool,
        /// Site configuration (TOML) applied over the embedded defaults.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Train a network on phantom studies.
    Train {
        #[command(subcommand)]
        what: TrainWhat,
    },
    /// Measure the shipped models on a held-out phantom test set (seeds and a scanner style
    /// never used in training).
    EvaluateModels {
        /// The detector's manifest.
        #[arg(long, default_value = "models/3dc-yolox-small.json")]
        detector: PathBuf,
        /// The stager's manifest.
        #[arg(long, default_value = "models/3d-muldensenet-small.json")]
        stager: PathBuf,
        /// In-distribution test studies (the training phantom, held-out style).
        #[arg(long, default_value_t = 60)]
        studies: usize,
        /// First in-distribution test seed.
        #[arg(long, default_value_t = onfh_edge::training::data::TEST_SEED_BASE)]
        seed: u64,
        /// External test studies (the independent evaluation phantom, every centre style
        /// in turn); 0 skips the external test.
        #[arg(long, default_value_t = 60)]
        external_studies: usize,
        /// First external test seed.
        #[arg(long, default_value_t = onfh_edge::training::data::EXTERNAL_SEED_BASE)]
        external_seed: u64,
        /// Also evaluate on the test split of a site's labelled studies (CSV, as for
        /// `train --dataset`).
        #[arg(long, value_name = "CSV")]
        dataset: Option<PathBuf>,
        /// The f32 checkpoint the detector was exported from (for the fp16 comparison).
        #[arg(long, value_name = "FILE")]
        reference_detector: Option<PathBuf>,
        /// The f32 checkpoint the stager was exported from.
        #[arg(long, value_name = "FILE")]
        reference_stager: Option<PathBuf>,
        /// Print the figures as JSON.
        #[arg(long)]
        json: bool,
        /// Write the figures into both manifests.
        #[arg(long)]
        write: bool,
    },
    /// Validate a configuration and print the effective settings.
    CheckConfig {
        /// Site configuration (TOML) applied over the embedded defaults.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum TrainWhat {
    /// The 3D-MulDenseNet stager, on head crops at the ground-truth centres.
    Stager {
        /// Where checkpoints go.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Architecture preset: small (trains on a CPU; shipped) or paper.
        #[arg(long, default_value = "small")]
        preset: String,
        /// Training studies (two heads each); seeds start at --seed.
        #[arg(long, default_value_t = 60)]
        train_studies: usize,
        /// Validation studies; seeds start at --seed + 1000000.
        #[arg(long, default_value_t = 20)]
        val_studies: usize,
        /// Domain-randomised studies drawn afresh for every epoch (SynthSeg-style: random
        /// anatomy, contrast, resolution and artefacts, rendered on the model grid).
        #[arg(long, default_value_t = 400)]
        randomised: usize,
        /// Domain-randomised validation studies (fixed seeds).
        #[arg(long, default_value_t = 60)]
        val_randomised: usize,
        /// First training seed.
        #[arg(long, default_value_t = 1000)]
        seed: u64,
        /// Epochs.
        #[arg(long, default_value_t = 20)]
        epochs: usize,
        /// Batch size.
        #[arg(long, default_value_t = 8)]
        batch: usize,
        /// Learning rate (the paper: 1e-2).
        #[arg(long, default_value_t = 1e-3)]
        lr: f64,
        /// AdamW weight decay.
        #[arg(long, default_value_t = 1e-4)]
        weight_decay: f64,
        /// Continue from the last checkpoint in --out.
        #[arg(long)]
        resume: bool,
        /// Export the best epoch as fp16 safetensors + manifest into this folder.
        #[arg(long, value_name = "DIR")]
        export: Option<PathBuf>,
        /// Fine-tune from a model (its manifest, e.g. models/NAME.json) or a checkpoint
        /// (.safetensors) of the same architecture instead of random weights.
        #[arg(long, value_name = "FILE")]
        init: Option<PathBuf>,
        /// Do not train: export the best epoch of the run already in --out (its
        /// `*.trained.json` record) into --export, with the manifest these options describe.
        #[arg(long, requires = "export")]
        export_only: bool,
        /// Train on a site's labelled studies (CSV: study,side,stage and a centre/radius or
        /// an ITK-SNAP label map per head; see `training::dataset`) instead of the classic
        /// phantom: its train split trains, its val split selects the epoch.
        #[arg(long, value_name = "CSV")]
        dataset: Option<PathBuf>,
        /// Extra training crops per head around centres displaced by Gaussian noise (the
        /// detector's centre is never exact).
        #[arg(long, default_value_t = 2)]
        jitter_copies: usize,
        /// Standard deviation of that displacement per axis, mm.
        #[arg(long, default_value_t = 3.0)]
        jitter_mm: f64,
    },
    /// The 3DC-YOLOX detector, on whole preprocessed study volumes.
    Detector {
        /// Where checkpoints go.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Architecture preset: small (trains on a CPU; shipped) or paper.
        #[arg(long, default_value = "small")]
        preset: String,
        /// Training studies; seeds start at --seed.
        #[arg(long, default_value_t = 120)]
        train_studies: usize,
        /// Validation studies; seeds start at --seed + 1000000.
        #[arg(long, default_value_t = 30)]
        val_studies: usize,
        /// Domain-randomised studies drawn afresh for every epoch (SynthSeg-style: random
        /// anatomy, contrast, resolution and artefacts, rendered on the model grid).
        #[arg(long, default_value_t = 300)]
        randomised: usize,
        /// Domain-randomised validation studies (fixed seeds).
        #[arg(long, default_value_t = 60)]
        val_randomised: usize,
        /// First training seed.
        #[arg(long, default_value_t = 1000)]
        seed: u64,
        /// Epochs.
        #[arg(long, default_value_t = 12)]
        epochs: usize,
        /// Batch size.
        #[arg(long, default_value_t = 4)]
        batch: usize,
        /// Learning rate (the paper: 1e-2).
        #[arg(long, default_value_t = 2e-3)]
        lr: f64,
        /// AdamW weight decay.
        #[arg(long, default_value_t = 5e-4)]
        weight_decay: f64,
        /// Continue from the last checkpoint in --out.
        #[arg(long)]
        resume: bool,
        /// Export the best epoch as fp16 safetensors + manifest into this folder.
        #[arg(long, value_name = "DIR")]
        export: Option<PathBuf>,
        /// Fine-tune from a model (its manifest, e.g. models/NAME.json) or a checkpoint
        /// (.safetensors) of the same architecture instead of random weights.
        #[arg(long, value_name = "FILE")]
        init: Option<PathBuf>,
        /// Do not train: export the best epoch of the run already in --out (its
        /// `*.trained.json` record) into --export, with the manifest these options describe.
        #[arg(long, requires = "export")]
        export_only: bool,
        /// Train on a site's labelled studies (CSV: study,side,stage and a centre/radius or
        /// an ITK-SNAP label map per head; see `training::dataset`) instead of the classic
        /// phantom: its train split trains, its val split selects the epoch.
        #[arg(long, value_name = "CSV")]
        dataset: Option<PathBuf>,
    },
}

fn print_report(r: &onfh_edge::eval::Report) {
    let t = &r.table;
    println!(
        "{} studies, {} heads with truth: {} evaluated, {} not analysed, {} staged indeterminate (arg-max used)",
        r.studies, r.heads_with_truth, t.heads, r.heads_not_analysed, r.heads_indeterminate
    );
    println!("study status: {:?}", r.study_status);
    println!("overall accuracy {:.3}", t.overall_accuracy);
    println!(
        "{:<10} {:>7} {:>8} {:>11} {:>11} {:>9} {:>6} {:>6}",
        "stage", "support", "accuracy", "sensitivity", "specificity", "precision", "F1", "AUC"
    );
    for c in &t.per_class {
        println!(
            "{:<10} {:>7} {:>8.3} {:>11.3} {:>11.3} {:>9.3} {:>6.3} {:>6.3}",
            c.class, c.support, c.accuracy, c.sensitivity, c.specificity, c.precision, c.f1, c.auc
        );
    }
    for (name, a) in [
        ("macro", &t.macro_average),
        ("weighted", &t.weighted_average),
    ] {
        println!(
            "{:<10} {:>7} {:>8.3} {:>11.3} {:>11.3} {:>9} {:>6.3} {:>6.3}",
            name, "", a.accuracy, a.sensitivity, a.specificity, "", a.f1, a.auc
        );
    }
    println!(
        "confusion (rows true 0/I/II, columns predicted): {:?}",
        t.confusion
    );
    for rc in &r.readers {
        println!(
            "reader {}: accuracy {:.3} vs model {:.3} on {} heads; McNemar b={} c={} chi2={:.3} p={:.4} ({})",
            rc.reader,
            rc.reader_accuracy,
            rc.model_accuracy,
            rc.mcnemar.cases,
            rc.mcnemar.model_only_right,
            rc.mcnemar.reader_only_right,
            rc.mcnemar.chi_square,
            rc.mcnemar.p_value,
            rc.mcnemar.method
        );
    }
    println!("{}", r.intended_use);
}

/// The per-step progress line of both training commands (rewritten in place on stderr).
fn step_progress(start: std::time::Instant) -> impl FnMut(usize, usize, f32) {
    move |b, n, loss| {
        eprint!(
            "\r  batch {b:>4}/{n}  loss {loss:.4}  {:>6.0} s",
            start.elapsed().as_secs_f64()
        );
    }
}

/// Export a checkpoint as fp16 + manifest and say so.
fn export_model(
    checkpoint: &std::path::Path,
    manifest: onfh_edge::model::weights::Manifest,
    dir: &std::path::Path,
) -> anyhow::Result<()> {
    let m = onfh_edge::model::weights::export(checkpoint, manifest, dir)?;
    println!(
        "exported {} ({} parameters, fp16, sha256 {}) to {}",
        m.name,
        m.weights.parameters,
        m.weights.sha256,
        dir.display()
    );
    Ok(())
}

/// A fresh scratch folder under the system temporary directory.
fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("onfh-edge-eval-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}

fn print_evaluation(e: &onfh_edge::eval::models::Evaluation) {
    for set in [&e.in_distribution, &e.external, &e.dataset]
        .into_iter()
        .flatten()
    {
        print_set_evaluation(set);
    }
    if let Some(a) = &e.fp16_vs_f32 {
        println!(
            "fp16 vs f32 weights: max stage probability difference {:.2e}, {} stage disagreements, max detection score difference {:.2e}, max centre difference {:.3} mm",
            a.max_probability_difference,
            a.stage_disagreements,
            a.max_detection_score_difference,
            a.max_center_difference_mm
        );
    }
}

fn print_set_evaluation(e: &onfh_edge::eval::models::SetEvaluation) {
    println!("=== {:?} test: {}", e.family, e.test_set);
    if e.unreadable_studies > 0 {
        println!(
            "{} studies had no readable T2 (their heads count as missed)",
            e.unreadable_studies
        );
    }
    println!("--- the whole pipeline (what `onfh-edge eval` reports)");
    print_report(&e.pipeline);
    println!("--- the networks");
    let d = &e.detector;
    println!(
        "detector: both heads found in {}/{} studies ({:.1} %), centre error mean {:.2} mm, max {:.2} mm ({:.2} x radius)",
        d.both_heads_found,
        d.studies,
        100.0 * d.detection_rate,
        d.mean_center_error_mm,
        d.max_center_error_mm,
        d.max_center_error_over_radius
    );
    for (what, m) in [
        ("stager at true centres", &e.stager_at_true_centers),
        ("stager at detected centres", &e.stager_at_detected_centers),
    ] {
        println!(
            "{what}: accuracy {:.1} % of {} heads",
            100.0 * m.accuracy,
            m.heads
        );
        for c in &m.per_class {
            println!(
                "  {:<9} sensitivity {:.3}  specificity {:.3}",
                c.class, c.sensitivity, c.specificity
            );
        }
        println!(
            "  confusion (rows true 0/I/II, columns predicted): {:?}",
            m.confusion
        );
    }
}

/// The training command a manifest records: the command line as run, without
/// `--export-only` (which exports a finished run; the command that trains it is the rest).
fn training_command() -> String {
    command_line().replace(" --export-only", "")
}

/// The command line as run (for manifests: the command that reproduces a model).
fn command_line() -> String {
    let args: Vec<String> = std::env::args().skip(1).collect();
    format!("onfh-edge {}", args.join(" "))
}

fn init_logging(default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level))
        // The HTTP client's own debug lines quote request URLs whole, credentials included.
        .add_directive("ureq=info".parse().expect("a valid directive"))
        // The JPEG 2000 decoder reports three INFO lines per frame it decodes; its
        // warnings and errors still show.
        .add_directive("jpeg2k=warn".parse().expect("a valid directive"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("onfh-edge")
        .build()
        .context("cannot start the async runtime")
}

/// The existing database of the configured state directory.
fn existing_store(config: Option<PathBuf>) -> anyhow::Result<onfh_edge::store::Store> {
    open_store(&load(config.as_deref())?, false)
}

fn load(config: Option<&std::path::Path>) -> anyhow::Result<Settings> {
    Settings::load_optional(config).context("invalid configuration")
}

fn analyze(
    paths: &[PathBuf],
    json: bool,
    out: Option<&std::path::Path>,
    config: Option<&std::path::Path>,
    device: Option<String>,
) -> anyhow::Result<ExitCode> {
    use onfh_edge::pipeline::{self, Status};
    init_logging("warn");
    let mut settings = load(config)?;
    if let Some(d) = device {
        settings.analysis.device = d;
    }
    let models = pipeline::Models::load(&settings.analysis, &settings.preprocess)
        .context("cannot load the models")?;
    let a = pipeline::analyze(paths, &models, &settings.analysis, &settings.selection, out);
    if json {
        println!("{}", serde_json::to_string_pretty(&a)?);
    } else {
        println!("study     {}", a.study_instance_uid);
        println!(
            "accession {}",
            onfh_edge::redact::printable(&a.accession_number)
        );
        println!("series    {}", a.series_instance_uid);
        println!(
            "status    {}{}",
            serde_json::to_value(a.status)?.as_str().unwrap_or("?"),
            a.reason
                .as_ref()
                .map(|r| format!(" — {r}"))
                .unwrap_or_default()
        );
        for line in a.head_table(|_| String::new()) {
            println!("{line}");
        }
        let t = &a.timings_ms;
        println!(
            "time      volume {} ms, detect {} ms, stage {} ms, heatmaps {} ms, PACS objects {} ms, total {} ms",
            t.volume, t.detect, t.stage, t.gradcam, t.objects, t.total
        );
        println!("model     {} — {}", a.model.name, a.model.intended_use);
    }
    Ok(match a.status {
        Status::Ok => ExitCode::SUCCESS,
        Status::Indeterminate => ExitCode::from(3),
        Status::NoUsableSeries => ExitCode::from(4),
        Status::Error => ExitCode::FAILURE,
    })
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Cmd::Analyze { .. } => unreachable!("handled in main"),
        Cmd::Demo => {
            init_logging("info");
            runtime()?.block_on(onfh_edge::demo::run())
        }
        Cmd::Serve { config } => {
            let settings = load(config.as_deref())?;
            init_logging(&settings.log_level);
            // Socket activation: take the inherited socket (and clear LISTEN_* from the
            // environment) before any runtime thread exists.
            let inherited = onfh_edge::sdnotify::inherited_listener()
                .context("the socket passed by systemd is not a listening TCP socket")?;
            runtime()?.block_on(onfh_edge::daemon::serve(settings, inherited))
        }
        Cmd::Status { config, json } => {
            let settings = load(config.as_deref())?;
            status(&settings, json)
        }
        Cmd::Results {
            config,
            json,
            since,
        } => {
            let settings = load(config.as_deref())?;
            results(&settings, json, since.as_deref())
        }
        Cmd::Purge {
            config,
            older_than_days,
        } => {
            let settings = load(config.as_deref())?;
            let days = older_than_days.unwrap_or(settings.storage.spool_retention_days);
            if days == 0 && older_than_days.is_none() {
                println!("storage.spool_retention_days = 0: received files are kept");
                return Ok(());
            }
            // The daemon purges under its receiver's commit lock, which another process
            // cannot share: a purge beside it could delete an instance the daemon has
            // just acknowledged again. So this runs only while the daemon is stopped.
            let store = open_store(&settings, false)?;
            let _lock = lock_while_stopped(
                &settings,
                "`purge` runs only while the daemon is stopped (the daemon purges hourly by itself)",
            )?;
            let spool = onfh_edge::dicom::spool::Spool::open(
                &settings.storage.spool_dir(),
                settings.receiver.fsync,
                settings.receiver.max_instance_bytes,
            )
            .context("cannot open the spool")?;
            let now = onfh_edge::clock::now_ms();
            let (n, bytes) = spool
                .purge(
                    &store,
                    now - i64::from(days) * 86_400_000,
                    now,
                    &std::sync::Mutex::new(()),
                )
                .context("purge failed")?;
            println!(
                "purged {n} instance(s), {:.1} MiB, received more than {days} day(s) ago",
                bytes as f64 / (1024.0 * 1024.0)
            );
            let cutoff = std::time::SystemTime::now()
                - std::time::Duration::from_secs(u64::from(days) * 86_400);
            let (folders, bytes) =
                onfh_edge::worker::purge_results(&settings.storage.results_dir(), cutoff)
                    .context("results purge failed")?;
            if folders > 0 {
                let detail =
                    serde_json::json!({ "folders": folders, "bytes": bytes, "days": days });
                store.audit(now, "results_purged", &detail.to_string())?;
            }
            println!(
                "purged {folders} results folder(s), {:.1} MiB, written more than {days} day(s) ago",
                bytes as f64 / (1024.0 * 1024.0)
            );
            Ok(())
        }
        Cmd::Alerts { action } => match action {
            AlertsCmd::Send { config } => {
                let settings = load(config.as_deref())?;
                init_logging(&settings.log_level);
                // The daemon delivers the outbox itself; two senders could deliver an alert
                // twice, so this runs only while the daemon is stopped.
                let _lock = lock_while_stopped(
                    &settings,
                    "`alerts send` runs only while the daemon is stopped",
                )?;
                let store = open_store(&settings, false)?;
                let sender = onfh_edge::notify::Sender::new(store.clone(), settings.notify);
                sender.run(std::time::Duration::from_secs(1), || {
                    store.alert_counts().map(|c| c.pending == 0).unwrap_or(true)
                });
                let c = store.alert_counts()?;
                println!(
                    "alerts: {} sent, {} pending, {} dead",
                    c.sent, c.pending, c.dead
                );
                Ok(())
            }
            AlertsCmd::Retry { config, ids } => {
                let n = existing_store(config)?
                    .requeue_dead_alerts(&ids, onfh_edge::clock::now_ms())?;
                println!("{n} alert(s) requeued");
                Ok(())
            }
        },
        Cmd::Export { action } => match action {
            ExportCmd::List { config } => {
                let store = existing_store(config)?;
                let rows = store.exports(None)?;
                println!(
                    "{:>5} {:>8}  {:<12} {:<6} {:<8} {:>8}  last",
                    "id", "analysis", "destination", "object", "state", "attempts"
                );
                for r in &rows {
                    let last = match (&r.last_error, r.last_status) {
                        (Some(e), _) => onfh_edge::redact::printable(e),
                        (None, Some(s)) => format!("status {s:#06X}"),
                        (None, None) => String::new(),
                    };
                    println!(
                        "{:>5} {:>8}  {:<12} {:<6} {:<8} {:>8}  {}",
                        r.id, r.analysis_id, r.destination, r.object, r.state, r.attempts, last
                    );
                }
                let c = store.export_counts()?;
                println!(
                    "exports: {} sent, {} pending, {} dead",
                    c.sent, c.pending, c.dead
                );
                Ok(())
            }
            ExportCmd::Retry { config, ids } => {
                let n = existing_store(config)?
                    .requeue_dead_exports(&ids, onfh_edge::clock::now_ms())?;
                println!("{n} result object(s) requeued");
                Ok(())
            }
        },
        Cmd::Phantom {
            out,
            studies,
            seed,
            style,
            family,
        } => {
            let names: Vec<&'static str> = match family.as_str() {
                "classic" => onfh_edge::phantom::style_names().collect(),
                "external" => onfh_edge::evalphantom::style_names().collect(),
                other => anyhow::bail!("unknown phantom family {other:?} (classic or external)"),
            };
            let style = match style {
                None => None,
                Some(name) => Some(*names.iter().find(|s| **s == name).with_context(|| {
                    format!(
                        "unknown {family} style {name:?} (one of: {})",
                        names.join(", ")
                    )
                })?),
            };
            let truths = if family == "external" {
                let options = onfh_edge::evalphantom::Options {
                    style,
                    ..Default::default()
                };
                onfh_edge::evalphantom::generate(&out, studies, seed, &options)?
            } else {
                let options = onfh_edge::phantom::Options {
                    style,
                    ..Default::default()
                };
                onfh_edge::phantom::generate_with(&out, studies, seed, &options)?
            };
            for t in &truths {
                let heads: Vec<String> = t
                    .heads
                    .iter()
                    .map(|h| format!("{} stage {}", h.side, h.stage.label()))
                    .collect();
                println!(
                    "seed {:>6}  {:<20} {} series  {}",
                    t.seed,
                    t.scanner,
                    t.series.len(),
                    heads.join(", ")
                );
            }
            println!(
                "{} studies written to {} ({})",
                truths.len(),
                out.display(),
                onfh_edge::phantom::DISCLAIMER
            );
            Ok(())
        }
        Cmd::Train {
            what:
                TrainWhat::Stager {
                    out,
                    preset,
                    train_studies,
                    val_studies,
                    randomised,
                    val_randomised,
                    seed,
                    epochs,
                    batch,
                    lr,
                    weight_decay,
                    resume,
                    jitter_copies,
                    jitter_mm,
                    export,
                    init,
                    dataset,
                    export_only,
                },
        } => {
            use onfh_edge::model::{crop::CropConfig, stager::StagerConfig};
            use onfh_edge::training::stager as train;
            let config = match preset.as_str() {
                "small" => StagerConfig::small(),
                "paper" => StagerConfig::paper(),
                other => anyhow::bail!("unknown preset {other:?} (small or paper)"),
            };
            let crop = CropConfig {
                shape: config.input,
                ..CropConfig::small()
            };
            let opts = train::TrainOptions {
                config,
                crop,
                train_studies,
                val_studies,
                randomised,
                val_randomised,
                seed,
                epochs,
                batch,
                lr,
                weight_decay,
                gamma: 2.0,
                jitter: (jitter_copies > 0).then_some((jitter_copies, jitter_mm)),
                out: out.clone(),
                init,
                dataset,
                resume,
            };
            println!(
                "training the stager on {train_studies} + {val_studies} phantom studies ({})",
                onfh_edge::phantom::DISCLAIMER
            );
            let start = std::time::Instant::now();
            let trained = if export_only {
                onfh_edge::training::Trained::load(&out, "stager")?
            } else {
                train::train_stager(&opts, step_progress(start), |r| {
                    eprintln!();
                    println!(
                        "epoch {:>3}  train loss {:.4}  val loss {:.4}  val accuracy {:.3} (classic {:.3}, randomised {:.3}){}",
                        r.epoch,
                        r.train_loss,
                        r.val_loss,
                        r.val_accuracy,
                        r.val_classic_accuracy,
                        r.val_randomised_accuracy,
                        if r.best { "  (best)" } else { "" }
                    )
                })?
            };
            println!("checkpoints in {}", out.display());
            if let Some(dir) = export {
                let best = trained
                    .reports
                    .iter()
                    .rev()
                    .find(|r| r.best)
                    .context("no epoch ran")?;
                let name = format!("3d-muldensenet-{preset}");
                let m = train::stager_manifest(&opts, &trained, best, &name, &training_command());
                export_model(&out.join("stager.best.safetensors"), m, &dir)?;
            }
            Ok(())
        }
        Cmd::Train {
            what:
                TrainWhat::Detector {
                    out,
                    preset,
                    train_studies,
                    val_studies,
                    randomised,
                    val_randomised,
                    seed,
                    epochs,
                    batch,
                    lr,
                    weight_decay,
                    resume,
                    export,
                    init,
                    dataset,
                    export_only,
                },
        } => {
            use onfh_edge::model::detector::DetectorConfig;
            use onfh_edge::training::detector as td;
            let config = match preset.as_str() {
                "small" => DetectorConfig::small(),
                "paper" => DetectorConfig::paper(),
                other => anyhow::bail!("unknown preset {other:?} (small or paper)"),
            };
            let preprocess = onfh_edge::volume::Preprocess {
                shape: config.input,
                ..Default::default()
            };
            let opts = td::DetectorTrainOptions {
                config,
                preprocess,
                train_studies,
                val_studies,
                randomised,
                val_randomised,
                seed,
                epochs,
                batch,
                lr,
                weight_decay,
                out: out.clone(),
                init,
                dataset,
                resume,
            };
            println!(
                "training the detector on {train_studies} + {val_studies} phantom studies ({})",
                onfh_edge::phantom::DISCLAIMER
            );
            let start = std::time::Instant::now();
            let trained = if export_only {
                onfh_edge::training::Trained::load(&out, "detector")?
            } else {
                td::train_detector(&opts, step_progress(start), |r| {
                    eprintln!();
                    println!(
                        "epoch {:>3}  train loss {:.4}  val detection {:.3} (classic {:.3}, randomised {:.3})  val centre error {:.2} mm{}",
                        r.epoch,
                        r.train_loss,
                        r.val_detection_rate,
                        r.val_classic_rate,
                        r.val_randomised_rate,
                        r.val_center_error_mm,
                        if r.best { "  (best)" } else { "" }
                    )
                })?
            };
            println!("checkpoints in {}", out.display());
            if let Some(dir) = export {
                let best = trained
                    .reports
                    .iter()
                    .rev()
                    .find(|r| r.best)
                    .context("no epoch ran")?;
                let name = format!("3dc-yolox-{preset}");
                let m = td::detector_manifest(&opts, &trained, best, &name, &training_command());
                export_model(&out.join("detector.best.safetensors"), m, &dir)?;
            }
            Ok(())
        }
        Cmd::EvaluateModels {
            detector,
            stager,
            studies,
            seed,
            external_studies,
            external_seed,
            dataset,
            reference_detector,
            reference_stager,
            json,
            write,
        } => {
            use onfh_edge::eval::models as evaluate;
            anyhow::ensure!(
                studies + external_studies > 0 || dataset.is_some(),
                "nothing to evaluate: --studies and --external-studies are 0 and no --dataset"
            );
            let scratch = tempfile_dir()?;
            let opts = evaluate::EvalOptions {
                detector,
                stager,
                studies,
                seed,
                external_studies,
                external_seed,
                dataset,
                reference_detector,
                reference_stager,
                scratch: scratch.clone(),
                min_detection_score: onfh_edge::pipeline::AnalysisSettings::default()
                    .min_detection_score,
            };
            let result =
                evaluate::evaluate(&opts, &command_line(), |family, i, seed| match family {
                    evaluate::Family::InDistribution => {
                        eprint!("\r  in-distribution study {i:>4}/{studies} (seed {seed})   ")
                    }
                    evaluate::Family::External => {
                        eprint!("\r  external study {i:>4}/{external_studies} (seed {seed})   ")
                    }
                    evaluate::Family::Dataset => eprint!("\r  dataset test study {i:>4}   "),
                });
            eprintln!();
            let _ = std::fs::remove_dir_all(&scratch);
            let e = result?;
            if json {
                println!("{}", serde_json::to_string_pretty(&e)?);
            } else {
                print_evaluation(&e);
            }
            if write {
                evaluate::write_metrics(&opts, &e)?;
                println!("figures written into the manifests");
            }
            Ok(())
        }
        Cmd::Eval {
            truth,
            results,
            readers,
            roc,
            json,
            config,
        } => {
            use onfh_edge::eval;
            init_logging("warn");
            let rows = eval::read_truth(&truth)?;
            let analyses = match results {
                Some(f) => eval::read_results(&f)?,
                None => {
                    let settings = load(config.as_deref())?;
                    let models =
                        onfh_edge::pipeline::Models::load(&settings.analysis, &settings.preprocess)
                            .context("cannot load the models")?;
                    let a = eval::analyze_folders(
                        &truth,
                        &models,
                        &settings.analysis,
                        &settings.selection,
                        |i, n| eprint!("\r  analysing study {i}/{n}"),
                    )?;
                    eprintln!();
                    a
                }
            };
            let readers = match readers {
                Some(f) => eval::read_readers(&f)?,
                None => Default::default(),
            };
            let report = eval::evaluate(&rows, &analyses, &readers);
            if let Some(p) = &roc {
                eval::write_roc_png(&report, p)
                    .with_context(|| format!("cannot write {}", p.display()))?;
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print_report(&report);
                if let Some(p) = &roc {
                    println!("ROC curves: {}", p.display());
                }
            }
            Ok(())
        }
        Cmd::CheckConfig { config } => {
            let mut settings = load(config.as_deref())?;
            // Alert secrets are shown as set or not, never printed.
            let redact = |v: &mut String| *v = "<redacted>".into();
            let n = &mut settings.notify;
            n.ntfy
                .iter_mut()
                .filter_map(|c| c.token.as_mut())
                .for_each(redact);
            n.webhook.iter_mut().map(|c| &mut c.secret).for_each(redact);
            n.smtp
                .iter_mut()
                .filter_map(|c| c.password.as_mut())
                .for_each(redact);
            // So are credentials inside URLs.
            for c in &mut n.webhook {
                c.url = onfh_edge::redact::url(&c.url);
            }
            for c in &mut n.ntfy {
                c.server = onfh_edge::redact::url(&c.server);
            }
            n.heatmap_url = onfh_edge::redact::url(&n.heatmap_url);
            println!("{settings:#?}");
            Ok(())
        }
    }
}

/// The state directory's lock, for a command that must not run beside the daemon; `why`
/// explains a refusal when the daemon (or another command) holds it.
fn lock_while_stopped(settings: &Settings, why: &'static str) -> anyhow::Result<std::fs::File> {
    onfh_edge::daemon::lock_state_dir(&settings.storage.state_dir).map_err(|e| {
        if e.is::<onfh_edge::daemon::StateDirBusy>() {
            e.context(why)
        } else {
            e
        }
    })
}

/// The daemon's database, which must exist; read-only for commands that only look.
fn open_store(settings: &Settings, read_only: bool) -> anyhow::Result<Store> {
    let db = settings.storage.database_path();
    if !db.exists() {
        anyhow::bail!(
            "no database at {} (has `onfh-edge serve` run with this configuration?)",
            db.display()
        );
    }
    let store = if read_only {
        Store::open_read_only(&db)
    } else {
        Store::open(&db)
    };
    store.with_context(|| format!("cannot open {}", db.display()))
}

fn results(settings: &Settings, json: bool, since: Option<&str>) -> anyhow::Result<()> {
    let store = open_store(settings, true)?;
    let since_ms = match since {
        Some(s) => onfh_edge::clock::parse_since(s, onfh_edge::clock::now_ms())
            .map_err(|e| anyhow::anyhow!("--since {e}"))?,
        None => i64::MIN,
    };
    let rows = store.analyses_since(since_ms)?;
    let counts = store.alert_counts()?;
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!(
        "{} result(s); alerts: {} sent, {} pending, {} dead",
        rows.len(),
        counts.sent,
        counts.pending,
        counts.dead
    );
    for r in &rows {
        let a = &r.analysis;
        println!();
        println!(
            "#{} {}  accession {}  {}{}",
            r.id,
            onfh_edge::clock::rfc3339(r.analysed_ms),
            onfh_edge::redact::printable(&a.accession_number),
            serde_json::to_value(a.status)?.as_str().unwrap_or("?"),
            a.reason
                .as_ref()
                .map(|x| format!(" — {x}"))
                .unwrap_or_default()
        );
        for line in a.head_table(|_| String::new()) {
            println!("  {line}");
        }
        for al in &r.alerts {
            println!(
                "  alert {} {} {} via {}: {} after {} attempt(s){}",
                al.id,
                al.side,
                al.idempotency_key,
                al.channel,
                al.state,
                al.attempts,
                al.last_error
                    .as_ref()
                    .map(|e| format!(" (last error: {e})"))
                    .unwrap_or_default()
            );
        }
        for e in store.exports(Some(r.id))? {
            println!(
                "  export {} {} to {}: {} after {} attempt(s){}",
                e.id,
                e.object,
                e.destination,
                e.state,
                e.attempts,
                e.last_error
                    .as_ref()
                    .map(|x| format!(" (last error: {})", onfh_edge::redact::printable(x)))
                    .unwrap_or_default()
            );
        }
        println!("  {}", a.model.intended_use);
    }
    Ok(())
}

fn status(settings: &Settings, json: bool) -> anyhow::Result<()> {
    let store = open_store(settings, true)?;
    let summary = store.summary()?;
    let series = store.series_rows()?;
    if json {
        let out = serde_json::json!({
            "state_dir": settings.storage.state_dir,
            "summary": summary,
            "series": series,
        });
        println!("{out}");
        return Ok(());
    }
    println!("state directory   {}", settings.storage.state_dir.display());
    println!("studies           {}", summary.studies);
    println!("series            {}", summary.series);
    println!(
        "instances         {} ({:.1} MiB)",
        summary.instances,
        summary.instance_bytes as f64 / (1024.0 * 1024.0)
    );
    println!(
        "series jobs       {} collecting (pending), {} complete",
        summary.jobs_collecting, summary.jobs_complete
    );
    if !series.is_empty() {
        println!();
        println!(
            "{:<10} {:>6} {:>9} {:>4}  {:<24} series UID",
            "state", "number", "instances", "gen", "description"
        );
        for s in series {
            println!(
                "{:<10} {:>6} {:>9} {:>4}  {:<24} {}",
                s.state,
                s.series_number.map(|n| n.to_string()).unwrap_or_default(),
                s.instance_count,
                s.generation,
                // Text the sender chose: control characters escaped.
                onfh_edge::redact::printable(&s.series_description.unwrap_or_default())
                    .chars()
                    .take(24)
                    .collect::<String>(),
                s.series_uid
            );
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    // The DICOM parser reports the normal end of every data set as an error value, and
    // with RUST_BACKTRACE set each of those captures a backtrace (a stack walk per received
    // message). Library backtraces stay off unless asked for explicitly; panics still
    // honour RUST_BACKTRACE.
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        // SAFETY: nothing else runs yet; no thread can read the environment concurrently.
        unsafe { std::env::set_var("RUST_LIB_BACKTRACE", "0") };
    }
    // The database, the spool and the results hold patient data: nothing this process
    // creates is readable by other users, whatever umask it was started with.
    // SAFETY: umask only swaps the process's file-mode mask.
    unsafe { libc::umask(0o027) };
    let cli = Cli::parse();
    if let Cmd::Analyze {
        paths,
        json,
        out,
        config,
        device,
    } = &cli.command
    {
        return match analyze(
            paths,
            *json,
            out.as_deref(),
            config.as_deref(),
            device.clone(),
        ) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("onfh-edge: error: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("onfh-edge: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
