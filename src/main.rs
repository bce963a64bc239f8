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
    },
    /// Train a network on phantom studies.
    Train {
        #[command(subcommand)]
        what: TrainWhat,
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
    },
}

fn init_logging(default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
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

fn load(config: Option<&std::path::Path>) -> anyhow::Result<Settings> {
    Settings::load_optional(config).context("invalid configuration")
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Cmd::Demo => {
            init_logging("info");
            runtime()?.block_on(onfh_edge::demo::run())
        }
        Cmd::Serve { config } => {
            let settings = load(config.as_deref())?;
            init_logging(&settings.log_level);
            runtime()?.block_on(onfh_edge::daemon::serve(settings))
        }
        Cmd::Status { config, json } => {
            let settings = load(config.as_deref())?;
            status(&settings, json)
        }
        Cmd::Phantom { out, studies, seed } => {
            let truths = onfh_edge::phantom::generate(&out, studies, seed)?;
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
                    seed,
                    epochs,
                    batch,
                    lr,
                    weight_decay,
                    resume,
                },
        } => {
            use onfh_edge::model::{data::CropConfig, stager::StagerConfig, train};
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
                seed,
                epochs,
                batch,
                lr,
                weight_decay,
                gamma: 2.0,
                out: out.clone(),
                resume,
            };
            println!(
                "training the stager on {train_studies} + {val_studies} phantom studies ({})",
                onfh_edge::phantom::DISCLAIMER
            );
            train::train_stager(&opts, |r| {
                println!(
                    "epoch {:>3}  train loss {:.4}  val loss {:.4}  val accuracy {:.3}{}",
                    r.epoch,
                    r.train_loss,
                    r.val_loss,
                    r.val_accuracy,
                    if r.best { "  (best)" } else { "" }
                )
            })?;
            println!("checkpoints in {}", out.display());
            Ok(())
        }
        Cmd::CheckConfig { config } => {
            let settings = load(config.as_deref())?;
            println!("{settings:#?}");
            Ok(())
        }
    }
}

fn status(settings: &Settings, json: bool) -> anyhow::Result<()> {
    let db = settings.storage.database_path();
    if !db.exists() {
        anyhow::bail!(
            "no database at {} (has `onfh-edge serve` run with this configuration?)",
            db.display()
        );
    }
    let store =
        Store::open_read_only(&db).with_context(|| format!("cannot open {}", db.display()))?;
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
                s.series_description
                    .unwrap_or_default()
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
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("onfh-edge: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
