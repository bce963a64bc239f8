//! `onfh-edge demo`: the appliance's job end to end on loopback, with embedded defaults.
//!
//! Starts the real daemon (the same `daemon::run` as `serve`) on the default address — or
//! on a free loopback port if that one is taken — with its state in a fresh temporary
//! folder, plays the scanner by sending a phantom hip study over a real C-STORE
//! association, waits for the series to complete, prints what the receiver holds, and runs
//! the analysis pipeline with the shipped models on the stored files (series selection with
//! reasons, femoral heads, stages, Grad-CAM heatmaps as PNG montages and NIfTI), next to the
//! phantom's truth.
//! The only departure from the embedded defaults is a 3 s series quiet period, so the demo
//! does not sit idle for 30 s; it says so.
//!
//! This module owns no capability of its own: it wires the others together.

use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::dicom::scu;
use crate::phantom::{self, anatomy::Stage};
use crate::store::Store;
use crate::volume;

use crate::model::weights::INTENDED_USE;
use crate::pipeline;

/// Run the demo; returns once the daemon has stopped again.
pub async fn run() -> anyhow::Result<()> {
    let mut settings = Settings::defaults().context("embedded defaults")?;
    let work = std::env::temp_dir().join(format!("onfh-edge-demo-{}", std::process::id()));
    settings.storage.state_dir = work.join("state");
    settings.series.quiet_period = Duration::from_secs(3);
    let listener = match TcpListener::bind(settings.receiver.listen).await {
        Ok(l) => l,
        Err(_) => TcpListener::bind("127.0.0.1:0")
            .await
            .context("cannot listen on loopback")?,
    };
    let addr = listener.local_addr()?;
    settings.receiver.listen = addr;
    println!("onfh-edge demo ({INTENDED_USE})");
    println!(
        "daemon: AE title {} on {addr}, state in {}, series quiet period {} s (demo setting; default 30 s)",
        settings.receiver.ae_title,
        settings.storage.state_dir.display(),
        settings.series.quiet_period.as_secs()
    );

    let shutdown = CancellationToken::new();
    let daemon = tokio::spawn(crate::daemon::run(
        settings.clone(),
        listener,
        shutdown.clone(),
    ));
    let result = play_scanner(&settings, &work, addr).await;
    shutdown.cancel();
    let stopped = daemon.await.context("daemon task failed")?;
    result?;
    stopped?;
    println!(
        "demo finished; received files and database kept in {}",
        work.display()
    );
    Ok(())
}

/// Seed of the demo's phantom study (a coronal T2, one normal and one stage II head).
const DEMO_SEED: u64 = 7;

async fn play_scanner(
    settings: &Settings,
    work: &std::path::Path,
    addr: std::net::SocketAddr,
) -> anyhow::Result<()> {
    let study_dir = work.join("study");
    let (truth, files) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let options = phantom::Options {
            stages: Some([Stage::S0, Stage::S2]),
            t2_orientation: Some(phantom::Orientation::Coronal),
            ..phantom::Options::default()
        };
        let truth = phantom::generate_study(&study_dir, DEMO_SEED, &options)?;
        let files: Vec<std::path::PathBuf> =
            volume::collect_files(std::slice::from_ref(&study_dir))?
                .into_iter()
                .filter(|p| p.extension().is_some_and(|e| e == "dcm"))
                .collect();
        Ok((truth, files))
    })
    .await?
    .context("cannot write the phantom study")?;
    let n_series = truth.series.len() as i64;
    println!(
        "scanner: sending a synthetic hip study ({} series, {} files, {}) over C-STORE ...",
        n_series,
        files.len(),
        truth.scanner
    );

    let called = settings.receiver.ae_title.clone();
    let peer = addr.to_string();
    let sent = tokio::task::spawn_blocking(move || {
        scu::store_files(&peer, "DEMO_SCANNER", &called, &files)
    })
    .await?
    .context("C-STORE to the daemon failed")?;
    let ok = sent.iter().filter(|s| s.status == 0).count();
    println!(
        "scanner: {ok} of {} acknowledged with status Success",
        sent.len()
    );
    anyhow::ensure!(
        ok == sent.len(),
        "{} instances were refused",
        sent.len() - ok
    );

    let db = settings.storage.database_path();
    let deadline = Instant::now() + Duration::from_secs(60);
    let (summary, series, spooled) = loop {
        let db = db.clone();
        let spool = settings.storage.spool_dir();
        let (summary, series, spooled) =
            tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
                let store = Store::open_read_only(&db)?;
                let series = store.series_rows()?;
                let mut files = Vec::new();
                for s in &series {
                    files.extend(
                        store
                            .series_files(&s.series_uid)?
                            .into_iter()
                            .map(|f| spool.join(f)),
                    );
                }
                Ok((store.summary()?, series, files))
            })
            .await??;
        if summary.jobs_complete == n_series {
            break (summary, series, spooled);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "series did not complete within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    println!(
        "receiver: {} study, {} series, {} instances ({:.1} MiB), {} series complete",
        summary.studies,
        summary.series,
        summary.instances,
        summary.instance_bytes as f64 / 1048576.0,
        summary.jobs_complete
    );
    for s in &series {
        println!(
            "  series {:>2} {:<20} {:>3} instances  {}",
            s.series_number.unwrap_or_default(),
            s.series_description.clone().unwrap_or_default(),
            s.instance_count,
            s.state
        );
    }

    // The analysis on what the receiver stored: select, assemble, detect, stage, explain.
    let analysis_settings = settings.analysis.clone();
    let selection = settings.selection.clone();
    let pre = settings.preprocess.clone();
    let out = work.join("results");
    let a = tokio::task::spawn_blocking(move || -> anyhow::Result<pipeline::Analysis> {
        let models = pipeline::Models::load(&analysis_settings, &pre).with_context(|| {
            format!(
                "cannot load the models from {} (run the demo from the repository root, or set \
                 analysis.models_dir)",
                analysis_settings.models_dir.display()
            )
        })?;
        Ok(pipeline::analyze(
            &spooled,
            &models,
            &analysis_settings,
            &selection,
            Some(&out),
        ))
    })
    .await??;
    println!(
        "analysis: {}",
        serde_json::to_value(a.status)?.as_str().unwrap_or("?")
    );
    for v in &a.series {
        println!(
            "  series {:>2} {:<20} {}",
            v.number.unwrap_or_default(),
            v.description,
            match &v.verdict {
                volume::Verdict::Chosen => "chosen".to_string(),
                volume::Verdict::Passed(why) | volume::Verdict::Rejected(why) => why.clone(),
            }
        );
    }
    if let Some(r) = &a.reason {
        println!("  reason: {r}");
    }
    let table = a.head_table(|h| {
        truth
            .heads
            .iter()
            .find(|t| t.side == h.side)
            .map(|t| format!("phantom truth: stage {}", t.stage.label()))
            .unwrap_or_default()
    });
    for line in table {
        println!("  {line}");
    }
    if let Some(f) = a.heads.first().and_then(|h| h.heatmap.as_ref()) {
        println!(
            "  NIfTI (open both in ITK-SNAP): {} and {}",
            f.volume_nifti, f.nifti
        );
    }
    let t = &a.timings_ms;
    println!(
        "  time: volume {} ms, detect {} ms, stage {} ms, heatmaps {} ms, total {} ms",
        t.volume, t.detect, t.stage, t.gradcam, t.total
    );
    println!("  model: {} — {}", a.model.name, a.model.intended_use);
    println!("results in SQLite, alerts and the front panel are not built yet");
    Ok(())
}
