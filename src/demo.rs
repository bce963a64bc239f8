//! `onfh-edge demo`: the appliance's job end to end on loopback, with embedded defaults.
//!
//! Starts the real daemon (the same `daemon::run` as `serve`) on the default address — or
//! on a free loopback port if that one is taken — with its state in a fresh temporary
//! folder, and a local ntfy-style receiver for its alerts. Plays the scanner by sending a
//! phantom hip study over a real C-STORE association, waits for the series to complete and
//! for the daemon's own inference worker to analyse the study, then prints what the
//! receiver holds, the stored result (series selection with reasons, femoral heads,
//! stages, probabilities next to the phantom's truth, heatmap montages and NIfTI), the
//! alert as the receiver got it, and the front panel's picture.
//! The departures from the embedded defaults: a 3 s series quiet period (so the demo does
//! not sit idle for 30 s) and the alert channel pointing at the local receiver; it says so.
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
    // The models must load, or the worker would only log and retry: say so at once.
    let (an, pre) = (settings.analysis.clone(), settings.preprocess.clone());
    tokio::task::spawn_blocking(move || pipeline::Models::load(&an, &pre).map(|_| ()))
        .await?
        .context("cannot load the models")?;
    let receiver = AlertReceiver::start().context("cannot start the local alert receiver")?;
    settings.notify.ntfy = vec![crate::notify::NtfyChannel {
        name: "demo-ntfy".into(),
        server: format!("http://{}", receiver.addr),
        topic: "onfh-demo".into(),
        token: None,
    }];
    settings.notify.retry_initial_secs = 1;
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
    println!(
        "alerts: to a local ntfy-style receiver at http://{}/onfh-demo (demo setting)",
        receiver.addr
    );
    let result = play_scanner(&settings, &work, addr, &receiver).await;
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
    receiver: &AlertReceiver,
) -> anyhow::Result<()> {
    let (truth, files) = write_study(work.join("study")).await?;
    let n_series = truth.series.len() as i64;
    println!(
        "scanner: sending a synthetic hip study ({} series, {} files, {}) over C-STORE ...",
        n_series,
        files.len(),
        truth.scanner
    );
    send(settings, addr, files).await?;
    let db = settings.storage.database_path();
    wait_for_series(&db, n_series).await?;

    // The daemon's inference worker analyses the study once its series are complete.
    let stored = poll(&db, 60, "the study was not analysed within 60 s", |store| {
        store.latest_analysis()
    })
    .await?;
    print_analysis(&stored, &truth, &db);

    // The alerts, as the local receiver got them.
    let expected = stored.alerts.len();
    let deadline = Instant::now() + Duration::from_secs(30);
    while receiver.received().len() < expected {
        anyhow::ensure!(
            Instant::now() < deadline,
            "alerts were not delivered within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if expected == 0 {
        println!("alerts: none (no head staged I or II)");
    }
    for (title, body) in receiver.received() {
        println!("alert received by the local receiver: {title}");
        for line in body.lines() {
            println!("  | {line}");
        }
    }

    // The front panel as the daemon drew it (it redraws every 2 s).
    let png = settings.storage.state_dir.join(&settings.panel.png);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    if png.exists() {
        println!("front panel: {}", png.display());
    }
    Ok(())
}

/// The demo's phantom study in `dir`: its truth and its DICOM files.
async fn write_study(
    dir: std::path::PathBuf,
) -> anyhow::Result<(phantom::StudyTruth, Vec<std::path::PathBuf>)> {
    tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let options = phantom::Options {
            stages: Some([Stage::S0, Stage::S2]),
            t2_orientation: Some(phantom::Orientation::Coronal),
            ..phantom::Options::default()
        };
        let truth = phantom::generate_study(&dir, DEMO_SEED, &options)?;
        let files: Vec<std::path::PathBuf> = volume::collect_files(std::slice::from_ref(&dir))?
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "dcm"))
            .collect();
        Ok((truth, files))
    })
    .await?
    .context("cannot write the phantom study")
}

/// C-STORE `files` to the daemon at `addr`, as a scanner would; every one must succeed.
async fn send(
    settings: &Settings,
    addr: std::net::SocketAddr,
    files: Vec<std::path::PathBuf>,
) -> anyhow::Result<()> {
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
    Ok(())
}

/// Look in the database (read-only, off the async threads) every 250 ms until `get` gives
/// something, for at most `secs`.
async fn poll<T: Send + 'static>(
    db: &std::path::Path,
    secs: u64,
    timeout: &str,
    get: impl Fn(&Store) -> Result<Option<T>, crate::store::StoreError> + Send + Clone + 'static,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let (db, get) = (db.to_owned(), get.clone());
        let got = tokio::task::spawn_blocking(move || get(&Store::open_read_only(&db)?)).await??;
        if let Some(v) = got {
            return Ok(v);
        }
        anyhow::ensure!(Instant::now() < deadline, "{timeout}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Wait until all `n_series` series are complete, then show what the receiver holds.
async fn wait_for_series(db: &std::path::Path, n_series: i64) -> anyhow::Result<()> {
    let (summary, series) = poll(
        db,
        60,
        "series did not complete within 60 s",
        move |store| {
            let summary = store.summary()?;
            if summary.jobs_complete != n_series {
                return Ok(None);
            }
            Ok(Some((summary, store.series_rows()?)))
        },
    )
    .await?;
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
    Ok(())
}

/// The stored analysis, next to the phantom's truth.
fn print_analysis(
    stored: &crate::store::StoredAnalysis,
    truth: &phantom::StudyTruth,
    db: &std::path::Path,
) {
    let a = &stored.analysis;
    println!("analysis: {}", a.status);
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
        "  time: volume {} ms, detect {} ms, stage {} ms, heatmaps {} ms, PACS objects {} ms, total {} ms",
        t.volume, t.detect, t.stage, t.gradcam, t.objects, t.total
    );
    println!("  model: {} — {}", a.model.name, a.model.intended_use);
    println!(
        "  stored in SQLite as analysis #{} ({})",
        stored.id,
        db.display()
    );
}

/// A minimal ntfy-style HTTP receiver on loopback: records each POST's Title header and
/// body, answers 200.
struct AlertReceiver {
    addr: std::net::SocketAddr,
    got: std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl AlertReceiver {
    fn start() -> std::io::Result<AlertReceiver> {
        use std::io::{BufRead, BufReader, Read, Write};
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (g, st) = (got.clone(), stop.clone());
        std::thread::spawn(move || {
            while !st.load(Ordering::SeqCst) {
                let Ok((stream, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                };
                let _ = stream.set_nonblocking(false);
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let Ok(clone) = stream.try_clone() else {
                    continue;
                };
                let mut r = BufReader::new(clone);
                let (mut title, mut len) = (String::new(), 0usize);
                let mut line = String::new();
                while r.read_line(&mut line).is_ok_and(|n| n > 0) && line.trim_end() != "" {
                    if let Some((k, v)) = line.trim_end().split_once(':') {
                        match k.to_ascii_lowercase().as_str() {
                            "title" => title = v.trim().to_string(),
                            "content-length" => len = v.trim().parse().unwrap_or(0),
                            _ => {}
                        }
                    }
                    line.clear();
                }
                let mut body = vec![0; len];
                if r.read_exact(&mut body).is_ok() {
                    g.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push((title, String::from_utf8_lossy(&body).into_owned()));
                }
                let mut w = stream;
                let _ = w.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
            }
        });
        Ok(AlertReceiver { addr, got, stop })
    }

    fn received(&self) -> Vec<(String, String)> {
        self.got.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Drop for AlertReceiver {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}
