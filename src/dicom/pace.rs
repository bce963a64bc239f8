//! The pace of live associations, so that peers that trickle give way to a scanner.
//!
//! Every association task registers here from the moment its connection is accepted and
//! counts the bytes of each PDU it receives. When every slot is taken, the receiver asks
//! [`Pace::shed_slowest`] to give up the slot of the association with the lowest average
//! rate below `receiver.min_transfer_rate`, once it is past a short grace period; that
//! association is told to abort through its token. The per-PDU and whole-association
//! deadlines are applied by the association itself.
//!
//! This module keeps counters and tokens only; it does not read the network or decide what
//! an association does when shed.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

/// How long a new association is left alone before its rate counts.
pub const GRACE: Duration = Duration::from_secs(2);

struct Entry {
    peer: SocketAddr,
    started: Instant,
    bytes: Arc<AtomicU64>,
    shed: CancellationToken,
}

/// The registry of live associations.
#[derive(Default)]
pub struct Pace {
    next_id: AtomicU64,
    live: Mutex<HashMap<u64, Entry>>,
}

/// One association's registration; dropping it unregisters.
pub struct Registration {
    pace: Arc<Pace>,
    id: u64,
    bytes: Arc<AtomicU64>,
    /// Cancelled when the association must give up its slot.
    pub shed: CancellationToken,
}

impl Registration {
    /// Count `n` bytes received.
    pub fn received(&self, n: usize) {
        self.bytes.fetch_add(n as u64, Ordering::Relaxed);
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.pace
            .live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
    }
}

/// An association chosen to give up its slot.
#[derive(Debug, Clone, PartialEq)]
pub struct Shed {
    /// Its peer.
    pub peer: SocketAddr,
    /// Its average rate over its life, bytes per second.
    pub rate: f64,
    /// How long it had lasted.
    pub age: Duration,
}

impl Pace {
    /// Register a new association from `peer`.
    pub fn register(self: &Arc<Self>, peer: SocketAddr) -> Registration {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let bytes = Arc::new(AtomicU64::new(0));
        let shed = CancellationToken::new();
        self.live.lock().unwrap_or_else(|p| p.into_inner()).insert(
            id,
            Entry {
                peer,
                started: Instant::now(),
                bytes: bytes.clone(),
                shed: shed.clone(),
            },
        );
        Registration {
            pace: self.clone(),
            id,
            bytes,
            shed,
        }
    }

    /// Tell the slowest association past [`GRACE`] whose average rate is under
    /// `min_rate` bytes per second (and that was not already told) to give up its slot.
    pub fn shed_slowest(&self, min_rate: u64, now: Instant) -> Option<Shed> {
        let live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        let slowest = live
            .values()
            .filter(|e| !e.shed.is_cancelled())
            .filter_map(|e| {
                let age = now.saturating_duration_since(e.started);
                if age < GRACE {
                    return None;
                }
                let rate = e.bytes.load(Ordering::Relaxed) as f64 / age.as_secs_f64();
                (rate < min_rate as f64).then_some((e, rate, age))
            })
            .min_by(|a, b| a.1.total_cmp(&b.1))?;
        let (e, rate, age) = slowest;
        e.shed.cancel();
        Some(Shed {
            peer: e.peer,
            rate,
            age,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_slowest_past_its_grace_is_shed_once() {
        let pace = Arc::new(Pace::default());
        let a = pace.register("127.0.0.1:1".parse().unwrap());
        let b = pace.register("127.0.0.1:2".parse().unwrap());
        let c = pace.register("127.0.0.1:3".parse().unwrap());
        a.received(100_000);
        b.received(10);
        let now = Instant::now();
        // Everyone is in the grace period.
        assert_eq!(pace.shed_slowest(1000, now), None);
        let later = now + Duration::from_secs(10);
        // c sent nothing: it goes first, then b; a is fast enough to keep its slot.
        assert_eq!(pace.shed_slowest(1000, later).unwrap().peer.port(), 3);
        assert!(c.shed.is_cancelled());
        assert_eq!(pace.shed_slowest(1000, later).unwrap().peer.port(), 2);
        assert_eq!(pace.shed_slowest(1000, later), None);
        assert!(!a.shed.is_cancelled());
        drop((b, c));
        assert_eq!(pace.live.lock().unwrap().len(), 1);
    }
}
