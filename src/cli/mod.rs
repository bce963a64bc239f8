//! `onfh-edge` as a command: what each command does, given its parsed arguments ([`args`]),
//! and how its results are printed ([`report`]). One function per command; [`run`]
//! dispatches. The binary parses the command line and calls [`run`], nothing more.
//!
//! This module owns the process-level wiring of a command (logging, the async runtime,
//! the state-directory lock for commands that must not run beside the daemon); it decides
//! nothing the library does not already decide.

pub mod args;
mod report;
mod train;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;

use crate::config::Settings;
use crate::result::Status;
use crate::store::Store;
pub use args::Cli;
use args::{AlertsCmd, Cmd, ExportCmd, TrainWhat};

/// Run one parsed command; the exit code says how it ended (`analyze`: 0 ok,
/// 3 indeterminate, 4 no usable series).
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Cmd::Demo => demo().map(done),
        Cmd::Serve { config } => serve(config.as_deref()).map(done),
        Cmd::Status { config, json } => report::status(&load(config.as_deref())?, json).map(done),
        Cmd::Results {
            config,
            json,
            since,
        } => report::results(&load(config.as_deref())?, json, since.as_deref()).map(done),
        Cmd::Purge {
            config,
            older_than_days,
        } => purge(&load(config.as_deref())?, older_than_days).map(done),
        Cmd::Alerts {
            action: AlertsCmd::Send { config },
        } => send_alerts(load(config.as_deref())?).map(done),
        Cmd::Alerts {
            action: AlertsCmd::Retry { config, ids },
        } => {
            let n = existing_store(config)?.requeue_dead_alerts(&ids, crate::clock::now_ms())?;
            println!("{n} alert(s) requeued");
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Export {
            action: ExportCmd::List { config },
        } => report::exports(&existing_store(config)?).map(done),
        Cmd::Export {
            action: ExportCmd::Retry { config, ids },
        } => {
            let n = existing_store(config)?.requeue_dead_exports(&ids, crate::clock::now_ms())?;
            println!("{n} result object(s) requeued");
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Analyze(a) => analyze(a),
        Cmd::Phantom(a) => phantom(a).map(done),
        Cmd::Eval(a) => eval(a).map(done),
        Cmd::Train {
            what: TrainWhat::Stager(a),
        } => train::stager(a).map(done),
        Cmd::Train {
            what: TrainWhat::Detector(a),
        } => train::detector(a).map(done),
        Cmd::EvaluateModels(a) => evaluate_models(a).map(done),
        Cmd::CheckConfig { config } => check_config(load(config.as_deref())?).map(done),
    }
}

fn done(_: ()) -> ExitCode {
    ExitCode::SUCCESS
}

/// Logging to stderr at `default_level` unless `RUST_LOG` says otherwise.
pub fn init_logging(default_level: &str) {
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

fn load(config: Option<&Path>) -> anyhow::Result<Settings> {
    Settings::load_optional(config).context("invalid configuration")
}

/// The existing database of the configured state directory.
fn existing_store(config: Option<PathBuf>) -> anyhow::Result<Store> {
    open_store(&load(config.as_deref())?, false)
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

/// The state directory's lock, for a command that must not run beside the daemon; `why`
/// explains a refusal when the daemon (or another command) holds it.
fn lock_while_stopped(settings: &Settings, why: &'static str) -> anyhow::Result<std::fs::File> {
    crate::daemon::lock_state_dir(&settings.storage.state_dir).map_err(|e| {
        if e.is::<crate::daemon::StateDirBusy>() {
            e.context(why)
        } else {
            e
        }
    })
}

/// The command line as run (for manifests: the command that reproduces a model).
fn command_line() -> String {
    let args: Vec<String> = std::env::args().skip(1).collect();
    format!("onfh-edge {}", args.join(" "))
}

fn demo() -> anyhow::Result<()> {
    init_logging("info");
    runtime()?.block_on(crate::demo::run())
}

fn serve(config: Option<&Path>) -> anyhow::Result<()> {
    let settings = load(config)?;
    init_logging(&settings.log_level);
    // Socket activation: take the inherited socket (and clear LISTEN_* from the
    // environment) before any runtime thread exists.
    let inherited = crate::sdnotify::inherited_listener()
        .context("the socket passed by systemd is not a listening TCP socket")?;
    runtime()?.block_on(crate::daemon::serve(settings, inherited))
}

fn purge(settings: &Settings, older_than_days: Option<u32>) -> anyhow::Result<()> {
    let days = older_than_days.unwrap_or(settings.storage.spool_retention_days);
    if days == 0 && older_than_days.is_none() {
        println!("storage.spool_retention_days = 0: received files are kept");
        return Ok(());
    }
    // The daemon purges under its spool's commit lock, which another process
    // cannot share: a purge beside it could delete an instance the daemon has
    // just acknowledged again. So this runs only while the daemon is stopped.
    let store = open_store(settings, false)?;
    let _lock = lock_while_stopped(
        settings,
        "`purge` runs only while the daemon is stopped (the daemon purges hourly by itself)",
    )?;
    let spool = crate::dicom::spool::Spool::open(
        &settings.storage.spool_dir(),
        settings.receiver.fsync,
        settings.receiver.max_instance_bytes,
    )
    .context("cannot open the spool")?;
    let now = crate::clock::now_ms();
    let (n, bytes) = spool
        .purge(&store, now - i64::from(days) * 86_400_000, now)
        .context("purge failed")?;
    println!(
        "purged {n} instance(s), {:.1} MiB, received more than {days} day(s) ago",
        bytes as f64 / (1024.0 * 1024.0)
    );
    let cutoff =
        std::time::SystemTime::now() - std::time::Duration::from_secs(u64::from(days) * 86_400);
    let (folders, bytes) = crate::worker::purge_results(&settings.storage.results_dir(), cutoff)
        .context("results purge failed")?;
    if folders > 0 {
        let detail = serde_json::json!({ "folders": folders, "bytes": bytes, "days": days });
        store.audit(now, "results_purged", &detail.to_string())?;
    }
    println!(
        "purged {folders} results folder(s), {:.1} MiB, written more than {days} day(s) ago",
        bytes as f64 / (1024.0 * 1024.0)
    );
    Ok(())
}

fn send_alerts(settings: Settings) -> anyhow::Result<()> {
    init_logging(&settings.log_level);
    // The daemon delivers the outbox itself; two senders could deliver an alert
    // twice, so this runs only while the daemon is stopped.
    let _lock = lock_while_stopped(
        &settings,
        "`alerts send` runs only while the daemon is stopped",
    )?;
    let store = open_store(&settings, false)?;
    let sender = crate::notify::Sender::new(store.clone(), settings.notify);
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

fn analyze(a: args::AnalyzeArgs) -> anyhow::Result<ExitCode> {
    use crate::pipeline;
    init_logging("warn");
    let mut settings = load(a.config.as_deref())?;
    if let Some(d) = a.device {
        settings.analysis.device = d;
    }
    let models = pipeline::Models::load(&settings.analysis, &settings.preprocess)
        .context("cannot load the models")?;
    let result = pipeline::analyze(
        &a.paths,
        &models,
        &settings.analysis,
        &settings.selection,
        a.out.as_deref(),
    );
    if a.json {
        println!("{}", serde_json::to_string_pretty(&result)?);
    } else {
        report::analysis(&result);
    }
    Ok(match result.status {
        Status::Ok => ExitCode::SUCCESS,
        Status::Indeterminate => ExitCode::from(3),
        Status::NoUsableSeries => ExitCode::from(4),
        Status::Error => ExitCode::FAILURE,
    })
}

fn phantom(a: args::PhantomArgs) -> anyhow::Result<()> {
    let family = a.family.as_str();
    let names: Vec<&'static str> = match family {
        "classic" => crate::phantom::style_names().collect(),
        "external" => crate::evalphantom::style_names().collect(),
        other => anyhow::bail!("unknown phantom family {other:?} (classic or external)"),
    };
    let style = match a.style {
        None => None,
        Some(name) => Some(*names.iter().find(|s| **s == name).with_context(|| {
            format!(
                "unknown {family} style {name:?} (one of: {})",
                names.join(", ")
            )
        })?),
    };
    let truths = if family == "external" {
        let options = crate::evalphantom::Options {
            style,
            ..Default::default()
        };
        crate::evalphantom::generate(&a.out, a.studies, a.seed, &options)?
    } else {
        let options = crate::phantom::Options {
            style,
            ..Default::default()
        };
        crate::phantom::generate_with(&a.out, a.studies, a.seed, &options)?
    };
    report::phantoms(&truths, &a.out);
    Ok(())
}

fn eval(a: args::EvalArgs) -> anyhow::Result<()> {
    use crate::eval;
    init_logging("warn");
    let rows = eval::read_truth(&a.truth)?;
    let analyses = match &a.results {
        Some(f) => eval::read_results(f)?,
        None => {
            let settings = load(a.config.as_deref())?;
            let models = crate::pipeline::Models::load(&settings.analysis, &settings.preprocess)
                .context("cannot load the models")?;
            let analyses = eval::analyze_folders(
                &a.truth,
                &models,
                &settings.analysis,
                &settings.selection,
                |i, n| eprint!("\r  analysing study {i}/{n}"),
            )?;
            eprintln!();
            analyses
        }
    };
    let readers = match &a.readers {
        Some(f) => eval::read_readers(f)?,
        None => Default::default(),
    };
    let r = eval::evaluate(&rows, &analyses, &readers);
    if let Some(p) = &a.roc {
        eval::write_roc_png(&r, p).with_context(|| format!("cannot write {}", p.display()))?;
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        report::evaluation_table(&r);
        if let Some(p) = &a.roc {
            println!("ROC curves: {}", p.display());
        }
    }
    Ok(())
}

fn evaluate_models(a: args::EvaluateModelsArgs) -> anyhow::Result<()> {
    use crate::eval::models as evaluate;
    anyhow::ensure!(
        a.studies + a.external_studies + a.randomised > 0 || a.dataset.is_some(),
        "nothing to evaluate: --studies, --external-studies and --randomised are 0 and no --dataset"
    );
    anyhow::ensure!(
        !a.write || a.studies + a.external_studies > 0 || a.dataset.is_some(),
        "--write needs a test set (--studies, --external-studies or --dataset): development figures (--randomised) are never written into the manifests"
    );
    let scratch = std::env::temp_dir().join(format!("onfh-edge-eval-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)
        .with_context(|| format!("cannot create {}", scratch.display()))?;
    let (studies, external_studies, randomised) = (a.studies, a.external_studies, a.randomised);
    let opts = evaluate::EvalOptions {
        detector: a.detector,
        stager: a.stager,
        studies,
        seed: a.seed,
        external_studies,
        external_seed: a.external_seed,
        dataset: a.dataset,
        randomised_studies: a.randomised,
        randomised_seed: a.randomised_seed,
        reference_detector: a.reference_detector,
        reference_stager: a.reference_stager,
        scratch: scratch.clone(),
        min_detection_score: crate::pipeline::AnalysisSettings::default().min_detection_score,
    };
    let result = evaluate::evaluate(&opts, &command_line(), |family, i, seed| match family {
        evaluate::Family::InDistribution => {
            eprint!("\r  in-distribution study {i:>4}/{studies} (seed {seed})   ")
        }
        evaluate::Family::External => {
            eprint!("\r  external study {i:>4}/{external_studies} (seed {seed})   ")
        }
        evaluate::Family::Dataset => eprint!("\r  dataset test study {i:>4}   "),
        evaluate::Family::Development => {
            eprint!("\r  randomised development study {i:>4}/{randomised} (seed {seed})   ")
        }
    });
    eprintln!();
    let _ = std::fs::remove_dir_all(&scratch);
    let e = result?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&e)?);
    } else {
        report::model_evaluation(&e);
    }
    if a.write {
        evaluate::write_metrics(&opts, &e)?;
        println!("figures written into the manifests");
    }
    Ok(())
}

fn check_config(mut settings: Settings) -> anyhow::Result<()> {
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
        c.url = crate::redact::url(&c.url);
    }
    for c in &mut n.ntfy {
        c.server = crate::redact::url(&c.server);
    }
    n.heatmap_url = crate::redact::url(&n.heatmap_url);
    println!("{settings:#?}");
    Ok(())
}
