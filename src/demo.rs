//! `onfh-edge demo`: the appliance's job end to end on loopback, with embedded defaults.
//!
//! Starts the real daemon (the same `daemon::run` as `serve`) on the default address — or
//! on a free loopback port if that one is taken — with its state in a fresh temporary
//! folder, plays the scanner by sending a phantom hip study over a real C-STORE
//! association, waits for the series to complete, prints what the receiver holds, and runs
//! the volume stage on the stored files (series selection with reasons, assembly, NIfTI,
//! the model's input tensor with the heads located in it).
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

    // The volume stage on what the receiver stored: select, assemble, preprocess, NIfTI.
    let selection = settings.selection.clone();
    let pre = settings.preprocess.clone();
    let nii = work.join("t2.nii");
    let report =
        tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<String>> {
            let scanned = volume::scan_files(&spooled);
            let sel = volume::select(&scanned.series, &selection);
            let mut lines = Vec::new();
            for v in &sel.verdicts {
                lines.push(format!(
                    "  series {:>2} {:<20} {}",
                    v.number.unwrap_or_default(),
                    v.description,
                    match &v.verdict {
                        volume::Verdict::Chosen => "chosen".to_string(),
                        volume::Verdict::Passed(why) | volume::Verdict::Rejected(why) =>
                            why.clone(),
                    }
                ));
            }
            let chosen = sel.chosen.context("no usable T2 series")?;
            let vol = volume::assemble(&scanned.series[chosen])?;
            volume::nifti::write(&vol, &nii, phantom::DISCLAIMER)?;
            let tensor = volume::preprocess(&vol, &pre);
            lines.push(format!(
                "volume: {}x{}x{} voxels, spacing {:.2} x {:.2} x {:.2} mm, written to {}",
                vol.dims[0],
                vol.dims[1],
                vol.dims[2],
                vol.spacing()[0],
                vol.spacing()[1],
                vol.spacing()[2],
                nii.display()
            ));
            lines.push(format!(
                "model input: {:?} (W, H, D), window 300/1500",
                tensor.dims
            ));
            for h in &truth.heads {
                let v = tensor.patient_to_voxel(h.center_lps_mm);
                lines.push(format!(
                "  {} femoral head (phantom truth: stage {}) at tensor voxel ({:.0}, {:.0}, {:.0})",
                h.side, h.stage.label(), v[0], v[1], v[2]
            ));
            }
            lines.push("staging: not built yet (the detector and stager weights come next)".into());
            Ok(lines)
        })
        .await??;
    println!("volume stage:");
    for l in report {
        println!("{l}");
    }
    Ok(())
}
