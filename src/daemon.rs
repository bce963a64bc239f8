//! The daemon: wires the capabilities together, runs them, and shuts them down.
//!
//! `serve` binds the listener and turns SIGTERM/SIGINT into a cancelled token; `run` opens
//! the state (database, spool), repairs what a crash may have left, then runs the receiver
//! and the series-completion task under that `CancellationToken` and one `TaskTracker`.
//! On cancellation the receiver stops accepting, associations finish the message in hand,
//! and the daemon waits a bounded grace period for them. `run` takes the listener and the
//! token from its caller, so the demo (and tests) start the real daemon on any port and stop
//! it without signals. No business logic lives here.

use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::config::Settings;
use crate::dicom::{Receiver, completion, spool::Spool};
use crate::store::{Store, now_ms};

/// How long in-flight associations get to finish after a shutdown request.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Run the daemon until SIGTERM/SIGINT, listening where the settings say.
pub async fn serve(settings: Settings) -> anyhow::Result<()> {
    let listen = settings.receiver.listen;
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
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

/// Run the daemon on an already bound listener until `shutdown` is cancelled.
pub async fn run(
    settings: Settings,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let state_dir = settings.storage.state_dir.clone();
    let db_path = settings.storage.database_path();
    let spool_dir = settings.storage.spool_dir();
    let fingerprint = settings.fingerprint.clone();
    let fsync = settings.receiver.fsync;
    let max_instance_bytes = settings.receiver.max_instance_bytes;
    let quiet_ms = settings.series.quiet_period.as_millis() as i64;
    let (_lock, store, spool) =
        tokio::task::spawn_blocking(move || -> anyhow::Result<(std::fs::File, Store, Spool)> {
            std::fs::create_dir_all(&state_dir).with_context(|| {
                format!("cannot create state directory {}", state_dir.display())
            })?;
            let lock = lock_state_dir(&state_dir)?;
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
            Ok((lock, store, spool))
        })
        .await??;

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
    info!(
        ae_title = %r.ae_title,
        address = %listener.local_addr()?,
        state_dir = %settings.storage.state_dir.display(),
        "onfh-edge {} receiving",
        env!("CARGO_PKG_VERSION")
    );

    let tracker = TaskTracker::new();
    let receiver = Receiver::new(r, &settings.series, spool, store.clone());
    tracker.spawn(receiver.run(listener, shutdown.clone(), tracker.clone()));
    tracker.spawn(completion::run(store.clone(), shutdown.clone()));
    let days = settings.storage.spool_retention_days;
    if days > 0 {
        let dir = settings.storage.spool_dir();
        let purger = Spool::open(&dir, r.fsync, r.max_instance_bytes)
            .with_context(|| format!("cannot prepare spool {}", dir.display()))?;
        tracker.spawn(retention(purger, store.clone(), days, shutdown.clone()));
    }

    shutdown.cancelled().await;
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
    let s = store.clone();
    let _ = tokio::task::spawn_blocking(move || s.audit(now_ms(), "daemon_stop", "{}")).await;
    info!("stopped");
    Ok(())
}

/// Purge received files older than `days`, a minute after start and then hourly.
async fn retention(spool: Spool, store: Store, days: u32, shutdown: CancellationToken) {
    let spool = std::sync::Arc::new(spool);
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
    }
}

/// Take an exclusive lock on the state directory for the life of the daemon: two
/// daemons on one spool would delete each other's partial files at start-up and race
/// their commits. The lock goes with the returned file (and with the process).
fn lock_state_dir(state_dir: &std::path::Path) -> anyhow::Result<std::fs::File> {
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
            anyhow::bail!(
                "another onfh-edge is already using the state directory {}",
                state_dir.display()
            );
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
