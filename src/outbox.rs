//! The retry loop shared by the two outboxes worked off in the background: alerts
//! (`notify::Sender`) and result objects for PACS (`pacs::Exporter`). It owns no state:
//! each caller brings its pass over the due rows and the time of its next due row.

use std::time::Duration;

/// Delay before attempt `attempts + 1` after `attempts` failures: `initial_secs`, doubled
/// per failure, at most `max_secs`.
pub fn backoff(initial_secs: u64, max_secs: u64, attempts: u32) -> Duration {
    let secs = initial_secs
        .saturating_mul(1u64 << attempts.saturating_sub(1).min(20))
        .min(max_secs);
    Duration::from_secs(secs)
}

/// Run `pass` until `stop` returns true, sleeping until `next_due_ms` (at most `poll` at a
/// time, so new rows and `stop` are noticed). A failing pass (the database) is logged as
/// `what` and retried after 5 s.
pub fn run<E: std::fmt::Display, T>(
    what: &str,
    poll: Duration,
    stop: impl Fn() -> bool,
    pass: impl Fn(i64) -> Result<T, E>,
    next_due_ms: impl Fn() -> Result<Option<i64>, E>,
) {
    while !stop() {
        if let Err(e) = pass(crate::clock::now_ms()) {
            tracing::error!(error = %e, "{what} unavailable; retrying in 5 s");
            std::thread::sleep(Duration::from_secs(5));
            continue;
        }
        let wait = match next_due_ms() {
            Ok(Some(t)) => Duration::from_millis(
                (t - crate::clock::now_ms()).clamp(0, poll.as_millis() as i64) as u64,
            ),
            _ => poll,
        };
        std::thread::sleep(wait.max(Duration::from_millis(20)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let b = |n| backoff(10, 900, n).as_secs();
        assert_eq!([b(1), b(2), b(3), b(7), b(40)], [10, 20, 40, 640, 900]);
    }
}
