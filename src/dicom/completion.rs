//! Series completion: a series is complete once no instance of it has arrived for the
//! quiet period.
//!
//! The state lives in the database, not in memory: every stored instance (re)arms its
//! series' job row with a due time in the same transaction that indexes it, and this task
//! only flips due rows to `complete`. Pending work therefore survives a restart, a late
//! instance re-opens a completed series (with a new generation), and firing twice is
//! impossible because the flip is one conditional UPDATE.
//!
//! This task does not analyse anything: the inference worker (`worker`) picks up, from the
//! database, the studies whose series are all `complete`.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::clock::now_ms;
use crate::store::Store;

/// Longest sleep between checks; bounds how late a completion can fire.
const MAX_TICK: Duration = Duration::from_millis(500);

/// Fire due completions until `shutdown`.
pub async fn run(store: Store, shutdown: CancellationToken) {
    loop {
        let s = store.clone();
        let result = tokio::task::spawn_blocking(move || {
            let now = now_ms();
            let done = s.complete_due(now)?;
            let next = s.next_due_ms()?;
            Ok::<_, crate::store::StoreError>((done, next.map(|n| n - now)))
        })
        .await;
        let wait = match result {
            Ok(Ok((done, next))) => {
                for c in done {
                    info!(
                        series_uid = %c.series_uid,
                        instances = c.instance_count,
                        generation = c.generation,
                        "series complete"
                    );
                }
                next.map(|ms| Duration::from_millis(ms.max(10) as u64))
                    .unwrap_or(MAX_TICK)
                    .min(MAX_TICK)
            }
            Ok(Err(e)) => {
                warn!("series completion check failed: {e}");
                Duration::from_secs(1)
            }
            Err(e) => {
                warn!("series completion task failed: {e}");
                Duration::from_secs(1)
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}
