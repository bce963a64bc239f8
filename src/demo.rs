//! `onfh-edge demo`: the appliance's job end to end on loopback, with embedded defaults.
//!
//! Starts the real daemon (the same `daemon::run` as `serve`) on the default address — or
//! on a free loopback port if that one is taken — with its state in a fresh temporary
//! folder, plays the scanner by sending a synthetic MR study over a real C-STORE
//! association, waits for the series to complete, and prints what the receiver holds.
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
use crate::store::Store;
use crate::synth::{self, SeriesSpec};

/// What the demo prints first: the model's intended use applies to everything it shows.
pub const INTENDED_USE: &str =
    "research demo — trained on synthetic phantoms, not for clinical use";

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

async fn play_scanner(
    settings: &Settings,
    work: &std::path::Path,
    addr: std::net::SocketAddr,
) -> anyhow::Result<()> {
    let study_dir = work.join("study");
    let files = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<std::path::PathBuf>> {
        let study = synth::new_uid();
        let mut files = Vec::new();
        for (number, description, count) in
            [(1, "LOCALIZER", 3), (2, "COR T1", 24), (3, "COR T2 FS", 24)]
        {
            let series = synth::write_series(
                &study_dir,
                &SeriesSpec {
                    study_uid: &study,
                    series_number: number,
                    description,
                    count,
                    rows: 128,
                    cols: 128,
                    sop_class_uid: dicom_dictionary_std::uids::MR_IMAGE_STORAGE,
                },
            )?;
            files.extend(series.into_iter().map(|i| i.path));
        }
        Ok(files)
    })
    .await?
    .context("cannot write the synthetic study")?;
    println!(
        "scanner: sending {} synthetic MR instances (3 series) over C-STORE ...",
        files.len()
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
    let (summary, series) = loop {
        let db = db.clone();
        let (summary, series) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
            let store = Store::open_read_only(&db)?;
            Ok((store.summary()?, store.series_rows()?))
        })
        .await??;
        if summary.jobs_complete == 3 {
            break (summary, series);
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
    for s in series {
        println!(
            "  series {:>2} {:<12} {:>3} instances  {}",
            s.series_number.unwrap_or_default(),
            s.series_description.unwrap_or_default(),
            s.instance_count,
            s.state
        );
    }
    Ok(())
}
