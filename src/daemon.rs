//! The daemon: wires the capabilities together, runs them, and shuts them down.
//!
//! `serve` binds the listener and turns SIGTERM/SIGINT into a cancelled token; `run` then
//! goes through three steps. `open_state` (on the blocking pool) locks the state directory,
//! opens the database and the spool and repairs what a crash may have left.
//! `Services::start` runs the receiver, series completion, retention, the panel feed and
//! systemd supervision under that `CancellationToken` and one `TaskTracker`, and the worker
//! and both outboxes on their own threads, then says where it listens (`daemon.json`).
//! `Services::stop`, on cancellation, lets the study in progress finish, stops the threads
//! and gives open associations a bounded grace period. `run` takes the listener and the
//! token from its caller, so the demo (and tests) start the real daemon on any port and stop
//! it without signals. No business logic lives here: the panel's state is decided by
//! `panel::status` from the facts gathered here.

use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::clock::now_ms;
use crate::config::Settings;
use crate::dicom::{Receiver, completion, spool::Spool};
use crate::store::Store;

/// How long in-flight associations get to finish after a shutdown request.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Run the daemon until SIGTERM/SIGINT, on the socket systemd passed (`inherited`, from
/// `sdnotify::inherited_listener` before the runtime started) or where the settings say.
pub async fn serve(
    settings: Settings,
    inherited: Option<std::net::TcpListener>,
) -> anyhow::Result<()> {
    let listen = settings.receiver.listen;
    // Socket activation (onfh-edge.socket holds port 104), else bind ourselves.
    let listener = match inherited {
        Some(l) => {
            info!(address = %l.local_addr()?, "using the listening socket passed by systemd");
            TcpListener::from_std(l)?
        }
        None => TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?,
    };
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        match wait_for_signal().await {
            Ok(()) => info!("shutdown requested"),
            Err(e) => warn!("{e:#}; stopping"),
        }
        stop.cancel();
    });
    run(settings, listener, shutdown).await
}

/// Run the daemon on an already bound listener until `shutdown` is cancelled: open the
/// state, start the services, wait, shut them down.
pub async fn run(
    mut settings: Settings,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    // What the panel and the logs show: the address actually listened on (an inherited
    // socket's, not the configured one).
    settings.receiver.listen = listener.local_addr()?;
    let state = {
        let settings = settings.clone();
        tokio::task::spawn_blocking(move || open_state(&settings)).await??
    };
    warn_about(&settings);
    let services = Services::start(&settings, state, listener, &shutdown)?;
    shutdown.cancelled().await;
    services.stop().await;
    Ok(())
}

/// The daemon's state, opened: the state directory's lock (held for the daemon's life),
/// the database and the spool.
struct OpenState {
    lock: std::fs::File,
    store: Store,
    spool: Spool,
}

/// Lock the state directory, open the database and the spool, repair what a crash left,
/// and audit the start (and a changed configuration). Blocking: hundreds of mkdir and
/// fsync calls.
fn open_state(settings: &Settings) -> anyhow::Result<OpenState> {
    let state_dir = &settings.storage.state_dir;
    let db_path = settings.storage.database_path();
    let spool_dir = settings.storage.spool_dir();
    let fingerprint = settings.fingerprint.clone();
    let fsync = settings.receiver.fsync;
    let max_instance_bytes = settings.receiver.max_instance_bytes;
    let quiet_ms = settings.series.quiet_period.as_millis() as i64;
    std::fs::create_dir_all(state_dir)
        .with_context(|| format!("cannot create state directory {}", state_dir.display()))?;
    let lock = lock_state_dir(state_dir)?;
    let store = Store::open_with(&db_path, fsync)
        .with_context(|| format!("cannot open database {}", db_path.display()))?;
    let spool = Spool::open(&spool_dir, fsync, max_instance_bytes)
        .with_context(|| format!("cannot prepare spool {}", spool_dir.display()))?;
    let now = now_ms();
    let (removed, indexed, deleted) = spool
        .reconcile(&store, now, now + quiet_ms)
        .context("cannot reconcile the spool with the database")?;
    if removed + indexed + deleted > 0 {
        warn!(
            partial_removed = removed,
            unindexed_recovered = indexed,
            unreadable_deleted = deleted,
            "repaired the spool after an unclean stop"
        );
    }
    store
        .audit(
            now,
            "daemon_start",
            &serde_json::json!({
                "version": env!("CARGO_PKG_VERSION"),
                "partial_removed": removed,
                "unindexed_recovered": indexed,
                "unreadable_deleted": deleted,
            })
            .to_string(),
        )
        .context("cannot write the audit log")?;
    // A configuration different from the one last audited is itself an event.
    let detail = serde_json::json!({ "fingerprint": fingerprint }).to_string();
    if store
        .last_audit("config_changed")
        .context("cannot read the audit log")?
        != Some(detail.clone())
    {
        store
            .audit(now, "config_changed", &detail)
            .context("cannot write the audit log")?;
    }
    Ok(OpenState { lock, store, spool })
}

/// Warn at every start about settings that give something up.
fn warn_about(settings: &Settings) {
    let r = &settings.receiver;
    if r.allowed_calling_ae_titles.is_empty() {
        warn!("receiver.allowed_calling_ae_titles is empty: any calling AE title is accepted");
    }
    if r.allowed_peers.is_empty() {
        warn!("receiver.allowed_peers is empty: any peer address may connect");
    }
    if !r.fsync {
        warn!("receiver.fsync is off: acknowledged images may be lost on power failure");
    }
    for c in settings.notify.plaintext_channels() {
        warn!("notify.allow_plaintext: alerts cross the network unencrypted ({c})");
    }
}

/// What the daemon runs: async tasks under one tracker (receiver, completion, retention,
/// panel feed, supervision) and threads (worker, alert sender, PACS exporter).
struct Services {
    _lock: std::fs::File,
    store: Store,
    tracker: TaskTracker,
    worker: crate::worker::Worker,
    threads_stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    sender: std::thread::JoinHandle<()>,
    exporter: std::thread::JoinHandle<()>,
}

impl Services {
    /// Start everything on `listener`, then say where the daemon listens (the log and
    /// `daemon.json` in the state directory).
    fn start(
        settings: &Settings,
        state: OpenState,
        listener: TcpListener,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<Services> {
        let OpenState { lock, store, spool } = state;
        let r = &settings.receiver;
        let address = listener.local_addr()?;
        let tracker = TaskTracker::new();
        let spool = std::sync::Arc::new(spool);
        let receiver = Receiver::new(r, &settings.series, spool.clone(), store.clone());
        let receiver_task =
            tracker.spawn(receiver.run(listener, shutdown.clone(), tracker.clone()));
        tracker.spawn(completion::run(store.clone(), shutdown.clone()));
        let days = settings.storage.spool_retention_days;
        if days > 0 {
            tracker.spawn(retention(
                spool,
                store.clone(),
                settings.storage.results_dir(),
                days,
                shutdown.clone(),
            ));
        }

        // Analysis, alerts and the panel: each on its own thread, all fed from the database.
        let worker = crate::worker::Worker::spawn(
            store.clone(),
            settings.clone(),
            settings.storage.results_dir(),
        );
        let threads_stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (s, cfg) = (store.clone(), settings.notify.clone());
        let sender = outbox_thread("alerts", &threads_stop, move |stopped| {
            crate::notify::Sender::new(s, cfg).run(Duration::from_secs(1), stopped)
        })
        .context("cannot start the alert sender")?;
        let (s, cfg) = (store.clone(), settings.export.clone());
        let exporter = outbox_thread("export", &threads_stop, move |stopped| {
            crate::pacs::Exporter::new(s, cfg).run(Duration::from_secs(1), stopped)
        })
        .context("cannot start the PACS exporter")?;
        let state_dir = &settings.storage.state_dir;
        let png = (!settings.panel.png.is_empty()).then(|| state_dir.join(&settings.panel.png));
        let panel = crate::panel::driver::PanelHandle::spawn(settings.panel.clone(), png);
        tracker.spawn(panel_feed(
            store.clone(),
            worker.status.clone(),
            settings.clone(),
            panel,
            shutdown.clone(),
        ));
        tracker.spawn(supervise(
            worker.status.clone(),
            receiver_task,
            store.clone(),
            shutdown.clone(),
        ));

        info!(
            ae_title = %r.ae_title,
            address = %address,
            state_dir = %state_dir.display(),
            "onfh-edge {} receiving",
            env!("CARGO_PKG_VERSION")
        );
        let (dir, ae) = (state_dir.clone(), r.ae_title.clone());
        tracker.spawn(async move {
            let written =
                tokio::task::spawn_blocking(move || write_daemon_file(&dir, address, &ae)).await;
            if let Ok(Err(e)) = written {
                warn!(error = %e, "cannot write daemon.json");
            }
        });
        Ok(Services {
            _lock: lock,
            store,
            tracker,
            worker,
            threads_stop,
            sender,
            exporter,
        })
    }

    /// Finish the study in progress, stop the threads, give open associations
    /// [`SHUTDOWN_GRACE`], and audit the stop.
    async fn stop(self) {
        let _ =
            crate::sdnotify::notify("STOPPING=1\nSTATUS=stopping: finishing the study in progress");
        let Services {
            _lock,
            store,
            tracker,
            worker,
            threads_stop,
            sender,
            exporter,
        } = self;
        let w = tokio::task::spawn_blocking(move || worker.stop());
        threads_stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = w.await;
        let _ = tokio::task::spawn_blocking(move || sender.join()).await;
        let _ = tokio::task::spawn_blocking(move || exporter.join()).await;
        tracker.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, tracker.wait())
            .await
            .is_err()
        {
            warn!(
                "associations still open after {:?}; exiting anyway",
                SHUTDOWN_GRACE
            );
        }
        let _ =
            tokio::task::spawn_blocking(move || store.audit(now_ms(), "daemon_stop", "{}")).await;
        info!("stopped");
    }
}

/// A thread named `name` that works off an outbox until `stop` is set; `work` gets the
/// question "stop now?".
fn outbox_thread(
    name: &str,
    stop: &std::sync::Arc<std::sync::atomic::AtomicBool>,
    work: impl FnOnce(&dyn Fn() -> bool) + Send + 'static,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let stop = stop.clone();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || work(&|| stop.load(std::sync::atomic::Ordering::SeqCst)))
}

/// Where a running daemon listens, for tools and tests: `daemon.json` in the state
/// directory (`pid`, `address`, `port`, `ae_title`), replaced atomically at every start.
pub const DAEMON_FILE: &str = "daemon.json";

fn write_daemon_file(
    state_dir: &std::path::Path,
    address: std::net::SocketAddr,
    ae_title: &str,
) -> std::io::Result<()> {
    let body = serde_json::json!({
        "pid": std::process::id(),
        "address": address.to_string(),
        "port": address.port(),
        "ae_title": ae_title,
    });
    let tmp = state_dir.join(format!(".{DAEMON_FILE}.tmp"));
    std::fs::write(&tmp, body.to_string())?;
    std::fs::rename(&tmp, state_dir.join(DAEMON_FILE))
}

/// systemd: READY once the receiver listens and the worker has tried the models; a STATUS
/// line with the queue every few seconds; watchdog pings only while the receiver's accept
/// loop runs and the worker's loop keeps turning.
async fn supervise(
    worker: std::sync::Arc<std::sync::Mutex<crate::worker::WorkerStatus>>,
    receiver: tokio::task::JoinHandle<()>,
    store: Store,
    shutdown: CancellationToken,
) {
    use crate::sdnotify::{notify, watchdog_interval};
    let watchdog = watchdog_interval();
    let tick = watchdog.map_or(Duration::from_secs(5), |w| {
        (w / 3).min(Duration::from_secs(5))
    });
    let mut ready = false;
    loop {
        let w = worker.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let tried = w.models_loaded || w.models_error.is_some();
        let s = store.clone();
        let alerts = tokio::task::spawn_blocking(move || s.alert_counts())
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        let status = match (&w.models_error, &w.analysing) {
            (Some(e), _) => format!("receiving; models not loaded ({e}); {} queued", w.queued),
            (None, Some(_)) => format!("analysing; {} queued, {} analysed", w.queued, w.analysed),
            (None, None) => format!("ready; {} queued, {} analysed", w.queued, w.analysed),
        };
        let status = format!(
            "{status}; alerts {} pending, {} undelivered",
            alerts.pending, alerts.dead
        );
        let mut msg = format!("STATUS={status}");
        if tried && !ready {
            ready = true;
            msg.push_str("\nREADY=1");
            info!(
                "ready: receiver listening, models {}",
                if w.models_loaded {
                    "loaded"
                } else {
                    "NOT loaded"
                }
            );
        }
        // The worker's loop turns every half second when idle; one study may take longer
        // (up to 10 minutes on a slow CPU fallback) without counting as stuck.
        let limit = watchdog.map_or(60_000, |d| d.as_millis() as i64);
        let worker_ok = if w.analysing.is_some() {
            now_ms() - w.analysing_since_ms < limit.max(600_000)
        } else {
            now_ms() - w.heartbeat_ms < limit
        };
        let healthy = !receiver.is_finished() && worker_ok;
        if ready && watchdog.is_some() && healthy {
            msg.push_str("\nWATCHDOG=1");
        }
        if let Err(e) = notify(&msg) {
            warn!(error = %e, "cannot notify systemd");
        }
        // Until READY, look often: start-up time is what systemd waits on.
        let wait = if ready {
            tick
        } else {
            Duration::from_millis(50)
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// The panel's snapshot, from the database and the worker, every two seconds.
async fn panel_feed(
    store: Store,
    worker: std::sync::Arc<std::sync::Mutex<crate::worker::WorkerStatus>>,
    settings: Settings,
    panel: crate::panel::driver::PanelHandle,
    shutdown: CancellationToken,
) {
    let panel = std::sync::Arc::new(panel);
    loop {
        let (s, w, cfg) = (store.clone(), worker.clone(), settings.clone());
        if let Ok(state) = tokio::task::spawn_blocking(move || panel_state(&s, &w, &cfg)).await {
            panel.show(state);
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
    // Dropping the handle joins the panel thread: off the async threads.
    let _ = tokio::task::spawn_blocking(move || drop(panel)).await;
}

/// What the panel shows now: the facts gathered here, the state decided by
/// `panel::status`. A database that cannot be read is itself shown (ERROR), never hidden
/// behind the last good screen.
fn panel_state(
    store: &Store,
    worker: &std::sync::Mutex<crate::worker::WorkerStatus>,
    settings: &Settings,
) -> crate::panel::PanelState {
    use crate::panel::{LastStudy, PanelHead, PanelState, status::Facts};
    let w = worker.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let now = now_ms();
    let free = crate::dicom::spool::free_bytes(&settings.storage.state_dir).unwrap_or(0);
    let read = || -> Result<_, crate::store::StoreError> {
        Ok((
            store.summary()?,
            store.alert_counts()?,
            store.export_counts()?,
            store.latest_analysis()?,
        ))
    };
    let (facts, alerts, latest) = match read() {
        Ok((summary, alerts, exports, latest)) => (
            Facts {
                series_collecting: summary.jobs_collecting,
                alerts_dead: alerts.dead,
                exports_dead: exports.dead,
                last_result_age_ms: latest.as_ref().map(|l| now - l.analysed_ms),
                ..Facts::default()
            },
            alerts,
            latest,
        ),
        Err(e) => (
            Facts {
                database_error: Some(e.to_string()),
                ..Facts::default()
            },
            Default::default(),
            None,
        ),
    };
    let (state, detail) = Facts {
        models_error: w.models_error.clone(),
        analysing: w.analysing.is_some(),
        disk_free_bytes: free,
        min_free_bytes: settings.receiver.min_free_bytes,
        ..facts
    }
    .appliance_state();
    let clock = crate::panel::local_clock(now);
    let last_study = latest.map(|l| LastStudy {
        accession: l.analysis.accession_number.clone(),
        time: crate::panel::local_clock(l.analysed_ms).hhmm,
        status: l.analysis.status,
        heads: l
            .analysis
            .heads
            .iter()
            .map(|h| PanelHead {
                side: h.side,
                stage: h.stage,
                early_onfh: h.early_onfh,
            })
            .collect(),
    });
    PanelState {
        state,
        detail,
        ae_title: settings.receiver.ae_title.clone(),
        port: settings.receiver.listen.port(),
        last_study,
        queue_depth: w.queued,
        alerts_pending: alerts.pending,
        alerts_dead: alerts.dead,
        disk_free_bytes: free,
        model: format!(
            "{} + {}",
            settings.analysis.detector, settings.analysis.stager
        )
        .replace(".json", ""),
        clock: format!("{} {} {}", clock.date, clock.hhmm, clock.zone)
            .trim_end()
            .to_string(),
    }
}

/// Purge received files older than `days`, a minute after start and then hourly.
async fn retention(
    spool: std::sync::Arc<Spool>,
    store: Store,
    results_dir: std::path::PathBuf,
    days: u32,
    shutdown: CancellationToken,
) {
    let mut wait = Duration::from_secs(60);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        wait = Duration::from_secs(3600);
        let (sp, st) = (spool.clone(), store.clone());
        let now = now_ms();
        let before = now - i64::from(days) * 86_400_000;
        match tokio::task::spawn_blocking(move || sp.purge(&st, before, now)).await {
            Ok(Ok((0, _))) => {}
            Ok(Ok((n, bytes))) => info!(
                instances = n,
                bytes, days, "purged received files past retention"
            ),
            Ok(Err(e)) => warn!(error = %e, "spool purge failed; will retry in an hour"),
            Err(e) => warn!(error = %e, "spool purge task failed"),
        }
        // The results folders (heatmaps and the T2 copy) follow the same retention.
        let (st, dir) = (store.clone(), results_dir.clone());
        let cutoff = std::time::SystemTime::now() - Duration::from_secs(u64::from(days) * 86_400);
        let purged = tokio::task::spawn_blocking(move || {
            let r = crate::worker::purge_results(&dir, cutoff)?;
            if r.0 > 0 {
                let detail = serde_json::json!({ "folders": r.0, "bytes": r.1, "days": days });
                st.audit(now_ms(), "results_purged", &detail.to_string())
                    .map_err(std::io::Error::other)?;
            }
            std::io::Result::Ok(r)
        })
        .await;
        match purged {
            Ok(Ok((0, _))) => {}
            Ok(Ok((n, bytes))) => info!(folders = n, bytes, days, "purged results past retention"),
            Ok(Err(e)) => warn!(error = %e, "results purge failed; will retry in an hour"),
            Err(e) => warn!(error = %e, "results purge task failed"),
        }
    }
}

/// The state directory's lock is held by another process (normally the daemon).
#[derive(Debug, thiserror::Error)]
#[error("another onfh-edge is already using the state directory {0}")]
pub struct StateDirBusy(pub std::path::PathBuf);

/// Take an exclusive lock on the state directory for the life of the daemon: two
/// daemons on one spool would delete each other's partial files at start-up and race
/// their commits. The lock goes with the returned file (and with the process). When
/// another process holds it, the error is a [`StateDirBusy`].
pub fn lock_state_dir(state_dir: &std::path::Path) -> anyhow::Result<std::fs::File> {
    use std::os::fd::AsRawFd;
    let path = state_dir.join("onfh-edge.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    // SAFETY: flock on a descriptor we own; no memory is passed.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            return Err(StateDirBusy(state_dir.to_path_buf()).into());
        }
        return Err(e).with_context(|| format!("cannot lock {}", path.display()));
    }
    Ok(file)
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot install SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot install SIGINT handler")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}
