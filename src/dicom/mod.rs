//! The DICOM receiver: a C-ECHO / C-STORE SCP that never loses an acknowledged image.
//!
//! [`Receiver::run`] owns the listening socket. Each accepted connection becomes one
//! association task (see `association`), bounded by `receiver.max_associations`. When every
//! slot is taken, the slowest association under `receiver.min_transfer_rate` gives its
//! slot to the newcomer (see `pace`); when none is that slow, the newcomer is answered with
//! a transient A-ASSOCIATE-RJ (local limit exceeded) so that the scanner retries later.
//! Each association also has an overall deadline and a per-PDU deadline. A failing
//! association is logged and answered, never fatal.
//!
//! What is accepted:
//! - abstract syntaxes: Verification, MR Image Storage, Enhanced MR Image Storage; every
//!   other presentation context is rejected on its own (the association still goes on);
//! - transfer syntaxes: the configured list, each checked at start-up to be decodable by
//!   this build, so nothing is stored that the volume builder cannot read.
//!
//! A C-STORE is answered with success only after `spool` made the file durable and
//! `store` committed its row (see `spool` for the order of operations). Series
//! completion (`completion`) runs beside the receiver and reads only the database.
//!
//! This module never runs inference, and its only SQL goes through [`crate::store`].

mod association;
pub mod completion;
pub mod dimse;
pub mod pace;
pub mod prescan;
pub mod scu;
pub mod settings;
pub mod spool;
pub mod unknown_vr;

use std::sync::Arc;
use std::time::Duration;

use dicom_encoding::TransferSyntaxIndex;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::store::Store;

pub use settings::{ReceiverSettings, ReceiverToml, SeriesSettings, SeriesToml, check_ae_title};

/// SOP classes this receiver stores.
pub const STORAGE_SOP_CLASSES: &[&str] = &[
    dicom_dictionary_std::uids::MR_IMAGE_STORAGE,
    dicom_dictionary_std::uids::ENHANCED_MR_IMAGE_STORAGE,
];

/// Check that a transfer syntax UID is known and that this build decodes its pixel data.
pub fn check_transfer_syntax(uid: &str) -> Result<(), String> {
    match TransferSyntaxRegistry.get(uid) {
        None => Err(format!("{uid} is not a known transfer syntax")),
        Some(ts) if !ts.can_decode_all() || ts.is_unsupported() => Err(format!(
            "{uid} ({}) cannot be decoded by this build",
            ts.name()
        )),
        Some(_) => Ok(()),
    }
}

/// Everything an association task needs, shared by all of them.
pub(crate) struct Shared {
    /// Validated receiver settings.
    pub settings: ReceiverSettings,
    /// Quiet period used to (re)arm a series' completion job.
    pub quiet_period: Duration,
    /// The spool (shared with the retention purge, which takes its commit lock).
    pub spool: Arc<spool::Spool>,
    /// The database.
    pub store: Store,
    /// The pace of live associations.
    pub pace: Arc<pace::Pace>,
}

/// The receiver: listener plus association tasks.
pub struct Receiver {
    /// State shared with association tasks.
    shared: Arc<Shared>,
    /// Bounds concurrent associations.
    slots: Arc<Semaphore>,
    /// Bounds connections being turned away because all slots are taken.
    busy_slots: Arc<Semaphore>,
    /// Bounds connections being turned away for their address, separately, so that
    /// disallowed hosts cannot keep the scanner from hearing "busy, retry".
    stranger_slots: Arc<Semaphore>,
}

impl Receiver {
    /// Prepare a receiver over an opened spool and store.
    pub fn new(
        settings: &ReceiverSettings,
        series: &SeriesSettings,
        spool: Arc<spool::Spool>,
        store: Store,
    ) -> Receiver {
        Receiver {
            slots: Arc::new(Semaphore::new(settings.max_associations)),
            busy_slots: Arc::new(Semaphore::new(16)),
            stranger_slots: Arc::new(Semaphore::new(16)),
            shared: Arc::new(Shared {
                settings: settings.clone(),
                quiet_period: series.quiet_period,
                spool,
                store,
                pace: Arc::new(pace::Pace::default()),
            }),
        }
    }

    /// Accept associations on `listener` until `shutdown` is cancelled. In-flight
    /// associations are tracked by `tracker`; they finish the message in hand and then
    /// abort, so the caller should wait on the tracker (with a grace period) afterwards.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: CancellationToken,
        tracker: TaskTracker,
    ) {
        let mut backoff = Duration::from_millis(10);
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => break,
                r = listener.accept() => r,
            };
            let (socket, peer) = match accepted {
                Ok(x) => {
                    backoff = Duration::from_millis(10);
                    x
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed; backing off {:?}", backoff);
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            };
            let _ = socket.set_nodelay(true);
            // The address allow-list is applied before a slot is taken, so unknown hosts
            // cannot crowd out the scanner.
            let why = if !self.shared.settings.peer_allowed(peer.ip()) {
                association::Turnaway::PeerNotAllowed
            } else {
                match self.slots.clone().try_acquire_owned() {
                    Ok(permit) => {
                        let shared = self.shared.clone();
                        let token = shutdown.clone();
                        tracker.spawn(async move {
                            association::serve(socket, peer, shared, token).await;
                            drop(permit);
                        });
                        continue;
                    }
                    Err(_) => {
                        let min_rate = self.shared.settings.min_transfer_rate;
                        let shed = self
                            .shared
                            .pace
                            .shed_slowest(min_rate, std::time::Instant::now());
                        if let Some(s) = &shed {
                            tracing::warn!(
                                %peer,
                                slow_peer = %s.peer,
                                rate_bytes_per_sec = s.rate as u64,
                                age_secs = s.age.as_secs(),
                                "all association slots taken: the slowest association gives its slot up"
                            );
                        }
                        match (shed, self.busy_slots.clone().try_acquire_owned()) {
                            (Some(_), Ok(waiting)) => {
                                // Wait (briefly, off the accept loop) for the shed
                                // association to release its slot.
                                let (slots, shared) = (self.slots.clone(), self.shared.clone());
                                let token = shutdown.clone();
                                tracker.spawn(async move {
                                    let got = tokio::time::timeout(
                                        Duration::from_secs(5),
                                        slots.acquire_owned(),
                                    )
                                    .await;
                                    drop(waiting);
                                    match got {
                                        Ok(Ok(permit)) => {
                                            association::serve(socket, peer, shared, token).await;
                                            drop(permit);
                                        }
                                        _ => {
                                            association::turn_away(
                                                socket,
                                                peer,
                                                association::Turnaway::Busy,
                                            )
                                            .await
                                        }
                                    }
                                });
                                continue;
                            }
                            _ => association::Turnaway::Busy,
                        }
                    }
                }
            };
            let pool = match why {
                association::Turnaway::Busy => &self.busy_slots,
                association::Turnaway::PeerNotAllowed => &self.stranger_slots,
            };
            match pool.clone().try_acquire_owned() {
                Ok(permit) => {
                    tracker.spawn(async move {
                        association::turn_away(socket, peer, why).await;
                        drop(permit);
                    });
                }
                Err(_) => {
                    tracing::warn!(%peer, reason = ?why, "too many connections being turned away; closing without answer");
                    drop(socket);
                }
            }
        }
        tracing::info!("receiver stopped accepting associations");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodable_syntaxes() {
        for uid in [
            "1.2.840.10008.1.2",
            "1.2.840.10008.1.2.1",
            "1.2.840.10008.1.2.1.99",
            "1.2.840.10008.1.2.5",
            "1.2.840.10008.1.2.4.57",
            "1.2.840.10008.1.2.4.70",
        ] {
            check_transfer_syntax(uid).unwrap();
        }
        // JPEG-LS needs the C++ CharLS, which this build leaves out.
        assert!(check_transfer_syntax("1.2.840.10008.1.2.4.80").is_err());
        assert!(check_transfer_syntax("1.2.3.4").is_err());
    }
}
