//! One association to one destination: C-STORE each object, and say what became of each.
//!
//! Proposes exactly the SOP classes being sent, each with Explicit and Implicit VR Little
//! Endian. Outcomes follow PS3.4 and PS3.8: success and warnings (0000, B000, B006, B007)
//! are sent; out of resources (A7xx), processing failure (0110), a transient association
//! rejection and network errors are retried; a permanent rejection, a class the
//! destination does not accept, and the other failures (A9xx, Cxxx, 0122, 0124, …) are
//! permanent.

use std::path::PathBuf;
use std::time::Duration;

use dicom_encoding::TransferSyntaxIndex;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use dicom_ul::ClientAssociationOptions;
use dicom_ul::association::Error as UlError;
use dicom_ul::pdu::{AssociationRJResult, PresentationContextResultReason};

const EXPLICIT_LE: &str = "1.2.840.10008.1.2.1";
const IMPLICIT_LE: &str = "1.2.840.10008.1.2";

/// Where to send.
#[derive(Debug, Clone)]
pub struct Peer {
    /// host:port.
    pub address: String,
    /// Called AE title.
    pub ae_title: String,
    /// Calling AE title.
    pub calling_ae_title: String,
    /// Network timeout.
    pub timeout: Duration,
}

/// One object to send.
#[derive(Debug, Clone)]
pub struct Object {
    /// The file.
    pub file: PathBuf,
    /// SOP Class UID.
    pub sop_class_uid: String,
    /// SOP Instance UID.
    pub sop_instance_uid: String,
}

/// What became of one object.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Stored, with this status (success or a warning).
    Stored(u16),
    /// Try again later.
    Transient { error: String, status: Option<u16> },
    /// Will not succeed as configured.
    Permanent { error: String, status: Option<u16> },
}

fn classify_status(status: u16) -> Outcome {
    match status {
        0x0000 | 0xB000 | 0xB006 | 0xB007 => Outcome::Stored(status),
        s if s & 0xFF00 == 0xA700 || s == 0x0110 => Outcome::Transient {
            error: format!("C-STORE status {s:#06X} (out of resources or processing failure)"),
            status: Some(s),
        },
        s => Outcome::Permanent {
            error: format!("C-STORE status {s:#06X} (refused)"),
            status: Some(s),
        },
    }
}

fn transient(error: impl std::fmt::Display) -> Outcome {
    Outcome::Transient {
        error: error.to_string(),
        status: None,
    }
}

/// Send `objects` to `peer` over one association; one outcome per object, in order.
pub fn send(peer: &Peer, objects: &[Object]) -> Vec<Outcome> {
    let mut classes: Vec<&str> = objects.iter().map(|o| o.sop_class_uid.as_str()).collect();
    classes.sort();
    classes.dedup();
    let mut options = ClientAssociationOptions::new()
        .calling_ae_title(peer.calling_ae_title.clone())
        .called_ae_title(peer.ae_title.clone())
        .connection_timeout(peer.timeout)
        .read_timeout(peer.timeout)
        .write_timeout(peer.timeout);
    for c in &classes {
        options = options.with_presentation_context(*c, vec![EXPLICIT_LE, IMPLICIT_LE]);
    }
    let all = |o: Outcome| vec![o; objects.len()];
    let mut assoc = match options.establish_with(&peer.address) {
        Ok(a) => a,
        Err(UlError::Rejected { association_rj, .. }) => {
            let why = format!(
                "association rejected by {}: {:?}",
                peer.ae_title, association_rj.source
            );
            return all(if association_rj.result == AssociationRJResult::Permanent {
                Outcome::Permanent {
                    error: format!("{why} (permanent; check the AE titles)"),
                    status: None,
                }
            } else {
                transient(format!("{why} (transient)"))
            });
        }
        Err(UlError::NoAcceptedPresentationContexts { .. }) => {
            return all(Outcome::Permanent {
                error: format!("{} accepts none of the object classes", peer.ae_title),
                status: None,
            });
        }
        Err(e) => {
            return all(transient(format!(
                "cannot associate with {}: {e}",
                peer.address
            )));
        }
    };
    let _ = assoc.inner_stream().set_nodelay(true);
    let mut out = Vec::with_capacity(objects.len());
    let mut broken: Option<String> = None;
    for (n, obj) in objects.iter().enumerate() {
        if let Some(why) = &broken {
            out.push(transient(why));
            continue;
        }
        let pc = assoc
            .presentation_contexts()
            .iter()
            .find(|pc| {
                pc.abstract_syntax == obj.sop_class_uid
                    && pc.reason == PresentationContextResultReason::Acceptance
            })
            .cloned();
        let Some(pc) = pc else {
            out.push(Outcome::Permanent {
                error: format!(
                    "{} does not accept SOP class {}",
                    peer.ae_title, obj.sop_class_uid
                ),
                status: None,
            });
            continue;
        };
        let data = match encode(obj, &pc.transfer_syntax) {
            Ok(d) => d,
            Err(e) => {
                out.push(Outcome::Permanent {
                    error: e,
                    status: None,
                });
                continue;
            }
        };
        let message_id = (n % 0xFFFF + 1) as u16;
        match crate::dicom::scu::c_store(
            &mut assoc,
            pc.id,
            message_id,
            &obj.sop_class_uid,
            &obj.sop_instance_uid,
            &data,
        ) {
            Ok(status) => out.push(classify_status(status)),
            Err(e) => {
                let why = format!("association with {} broke: {e}", peer.address);
                out.push(transient(&why));
                broken = Some(why);
            }
        }
    }
    if broken.is_none() {
        let _ = assoc.release();
    } else {
        let _ = assoc.abort();
    }
    out
}

fn encode(obj: &Object, ts_uid: &str) -> Result<Vec<u8>, String> {
    let file = dicom_object::open_file(&obj.file)
        .map_err(|e| format!("cannot read {}: {e}", obj.file.display()))?;
    let ts = TransferSyntaxRegistry
        .get(ts_uid)
        .ok_or_else(|| format!("destination accepted an unknown transfer syntax {ts_uid}"))?;
    let mut data = Vec::new();
    file.write_dataset_with_ts(&mut data, ts)
        .map_err(|e| format!("cannot encode {}: {e}", obj.file.display()))?;
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_sorted_into_sent_retry_and_permanent() {
        assert_eq!(classify_status(0), Outcome::Stored(0));
        assert_eq!(classify_status(0xB007), Outcome::Stored(0xB007));
        assert!(matches!(classify_status(0xA700), Outcome::Transient { .. }));
        assert!(matches!(classify_status(0xA7FF), Outcome::Transient { .. }));
        assert!(matches!(classify_status(0x0110), Outcome::Transient { .. }));
        for s in [0xA900, 0xC000, 0x0122, 0x0124, 0x0211] {
            assert!(
                matches!(classify_status(s), Outcome::Permanent { .. }),
                "{s:#x}"
            );
        }
    }
}
