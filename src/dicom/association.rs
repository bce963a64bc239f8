//! One association: negotiation, the DIMSE message loop, and its clean-up.
//!
//! Negotiation has its own time limit (`NEGOTIATION_TIMEOUT`), separate from the read
//! timeout, so a silent connection cannot sit on an association slot. After it, the loop
//! is a small state machine over P-DATA values: command fragments are gathered (capped at
//! 64 KiB), decoded, and a C-STORE's data fragments are gathered in memory up to
//! `MEMORY_LIMIT` (4 MiB, most MR slices) and streamed into a spool temporary file beyond
//! that — an instance is never held whole in memory — while its size is checked against the
//! instance cap and the disk against its floor. When the last fragment arrives the data
//! set is written, fsynced, checked and committed in one trip to the blocking pool, and
//! only then is the response sent. Any way the association ends (release, abort, timeout,
//! garbage) removes a temporary file in flight.
//!
//! Peer-supplied PDU content is never logged (it may carry patient data); only its kind.

use std::net::SocketAddr;
use std::sync::Arc;

use dicom_ul::Pdu;
use dicom_ul::association::server::{AccessControl, ServerAssociationOptions};
use dicom_ul::association::{Association, AsyncServerAssociation};
use dicom_ul::pdu::{
    AbortRQServiceProviderReason, AbortRQSource, AssociationRJ, AssociationRJResult,
    AssociationRJServiceProviderPresentationReason, AssociationRJServiceUserReason,
    AssociationRJSource, PDataValue, PDataValueType, PresentationContextResultReason, UserIdentity,
};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, warn};

use super::Shared;
use super::dimse::{self, Command, status};
use super::pace::Registration;
use super::spool::{self, CommitError, Expected, InspectError, TempFile};
use crate::clock::now_ms;
use crate::store::InsertOutcome;

/// Time allowed from connection to a complete A-ASSOCIATE-RQ.
const NEGOTIATION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// Added to a full PDU's time at the minimum rate, for the peer's turnaround.
const PDU_FLOOR: std::time::Duration = std::time::Duration::from_secs(2);
/// Largest command set accepted (a real one is a few hundred bytes).
const MAX_COMMAND_BYTES: usize = 64 * 1024;
/// Data set bytes held in memory before they go to a spool file; most MR slices fit, so
/// they reach the disk in one write. Memory per association stays below this plus a PDU.
const MEMORY_LIMIT: usize = 4 * 1024 * 1024;
/// How often (in bytes written) the free-space floor is re-checked during one instance.
const SPACE_CHECK_INTERVAL: u64 = 16 * 1024 * 1024;

/// Access policy for one association: our called AE title and the calling-AE allow-list.
/// (The peer-address allow-list is applied at accept time, before a slot is taken.)
struct Policy {
    /// Calling AE titles admitted; empty admits any.
    calling: Vec<String>,
}

impl AccessControl for Policy {
    fn check_access(
        &self,
        this_ae_title: &str,
        calling_ae_title: &str,
        called_ae_title: &str,
        _user_identity: Option<&UserIdentity>,
    ) -> Result<(), AssociationRJServiceUserReason> {
        if called_ae_title.trim() != this_ae_title.trim() {
            return Err(AssociationRJServiceUserReason::CalledAETitleNotRecognized);
        }
        let calling = calling_ae_title.trim();
        if !self.calling.is_empty() && !self.calling.iter().any(|a| a == calling) {
            return Err(AssociationRJServiceUserReason::CallingAETitleNotRecognized);
        }
        Ok(())
    }
}

/// Counters reported when the association ends.
#[derive(Default)]
struct Tally {
    stored: u32,
    duplicates: u32,
    failed: u32,
    echoes: u32,
}

/// Serve one connection to its end. Never panics on peer data; logs how it ended.
pub(super) async fn serve(
    socket: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) {
    let span = tracing::info_span!("association", %peer);
    async move {
        let pace = shared.pace.register(peer);
        if let Err(e) = serve_inner(socket, &shared, &shutdown, &pace).await {
            warn!("association ended with an error: {e:#}");
        }
    }
    .instrument(span)
    .await
}

async fn serve_inner(
    socket: TcpStream,
    shared: &Arc<Shared>,
    shutdown: &CancellationToken,
    pace: &Registration,
) -> anyhow::Result<()> {
    let settings = &shared.settings;
    let deadline = tokio::time::Instant::now() + settings.association_deadline;
    // A second handle on the socket lets us answer a negotiation that dicom-ul gave up on
    // without answering (unparseable first PDU, timeout) with an A-ABORT.
    let std_socket = socket.into_std()?;
    let raw = std_socket.try_clone()?;
    let socket = TcpStream::from_std(std_socket)?;

    let mut options = ServerAssociationOptions::new()
        .ae_access_control(Policy {
            calling: settings.allowed_calling_ae_titles.clone(),
        })
        .ae_title(settings.ae_title.clone())
        .with_abstract_syntax(dicom_dictionary_std::uids::VERIFICATION)
        .max_pdu_length(settings.max_pdu)
        .read_timeout(settings.read_timeout)
        .write_timeout(settings.write_timeout)
        .strict(true);
    for sop in super::STORAGE_SOP_CLASSES {
        options = options.with_abstract_syntax(*sop);
    }
    for ts in &settings.transfer_syntaxes {
        options = options.with_transfer_syntax(ts.clone());
    }

    // Negotiation gets its own short limit, so a silent connection cannot hold an
    // association slot for the whole read timeout.
    let limit = NEGOTIATION_TIMEOUT.min(settings.read_timeout);
    let established = tokio::select! {
        r = tokio::time::timeout(limit, options.establish_async(socket)) => r,
        _ = pace.shed.cancelled() => {
            warn!("negotiation too slow while every slot is taken; sending A-ABORT");
            send_raw_abort(raw, AbortRQServiceProviderReason::ReasonNotSpecified).await;
            return Ok(());
        }
    };
    let assoc = match established {
        Ok(Ok(a)) => a,
        Err(_) => {
            warn!("no A-ASSOCIATE-RQ within {limit:?}; sending A-ABORT");
            send_raw_abort(raw, AbortRQServiceProviderReason::ReasonNotSpecified).await;
            return Ok(());
        }
        Ok(Err(e)) => {
            use dicom_ul::association::Error as E;
            match &e {
                E::Rejected { association_rj, .. } => {
                    warn!(reason = %association_rj.source, "association rejected");
                }
                E::ConnectionClosed { .. } => debug!("peer closed before negotiating"),
                // dicom-ul already answered these with A-ABORT. Only the PDU kind is
                // logged: its content may carry patient data.
                E::UnexpectedPdu { pdu, .. } => {
                    warn!("negotiation aborted: unexpected {}", pdu_name(pdu));
                }
                E::UnknownPdu { .. } => warn!("negotiation aborted: unknown PDU type"),
                _ => {
                    warn!("negotiation failed, sending A-ABORT: {}", brief(&e));
                    send_raw_abort(raw, AbortRQServiceProviderReason::UnrecognizedPdu).await;
                }
            }
            return Ok(());
        }
    };
    // The peer chose this text: control characters are escaped before it is logged or
    // stored.
    let calling = crate::redact::printable(assoc.peer_ae_title().trim());
    let accepted = assoc
        .presentation_contexts()
        .iter()
        .filter(|pc| pc.reason == PresentationContextResultReason::Acceptance)
        .count();
    info!(
        calling_ae = %calling,
        accepted_contexts = accepted,
        proposed_contexts = assoc.presentation_contexts().len(),
        "association accepted"
    );
    for pc in assoc.presentation_contexts() {
        debug!(
            id = pc.id,
            abstract_syntax = %pc.abstract_syntax,
            transfer_syntax = %pc.transfer_syntax,
            result = ?pc.reason,
            "presentation context"
        );
    }
    if accepted == 0 {
        warn!(calling_ae = %calling, "no presentation context acceptable; waiting for release");
    }

    let limits = Limits {
        deadline,
        per_pdu: (PDU_FLOOR
            + std::time::Duration::from_secs_f64(
                f64::from(settings.max_pdu) / settings.min_transfer_rate as f64,
            ))
        .min(settings.read_timeout),
        pace,
    };
    let mut handler = Handler {
        assoc,
        shared,
        calling,
        tally: Tally::default(),
    };
    let end = handler.message_loop(shutdown, &limits).await;
    let Handler {
        mut assoc,
        calling,
        tally,
        ..
    } = handler;
    let summary = format!(
        "stored {}, duplicates {}, failed {}, echoes {}",
        tally.stored, tally.duplicates, tally.failed, tally.echoes
    );
    match end {
        End::Released => info!(calling_ae = %calling, "association released: {summary}"),
        End::PeerAborted => warn!(calling_ae = %calling, "peer aborted the association: {summary}"),
        End::Closed => warn!(calling_ae = %calling, "peer closed the connection: {summary}"),
        End::Abort(reason, why) => {
            warn!(calling_ae = %calling, "aborting association ({why}): {summary}");
            let pdu = Pdu::AbortRQ {
                source: AbortRQSource::ServiceProvider(reason),
            };
            let _ = assoc.send(&pdu).await;
        }
    }
    Ok(())
}

/// A dicom-ul error for the log, without any PDU content (which may carry patient data).
fn brief(e: &dicom_ul::association::Error) -> String {
    use dicom_ul::association::Error as E;
    match e {
        E::UnexpectedPdu { pdu, .. } => format!("unexpected {}", pdu_name(pdu)),
        E::UnknownPdu { .. } => "unknown PDU type".into(),
        other => crate::errors::chain(other),
    }
}

/// Write an A-ABORT on a socket that dicom-ul no longer owns.
async fn send_raw_abort(raw: std::net::TcpStream, reason: AbortRQServiceProviderReason) {
    let mut buf = Vec::new();
    let pdu = Pdu::AbortRQ {
        source: AbortRQSource::ServiceProvider(reason),
    };
    if dicom_ul::write_pdu(&mut buf, &pdu).is_err() {
        return;
    }
    if let Ok(mut s) = TcpStream::from_std(raw) {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), s.write_all(&buf)).await;
        let _ = s.shutdown().await;
    }
}

/// Why a connection is turned away before negotiation.
#[derive(Debug, Clone, Copy)]
pub(super) enum Turnaway {
    /// Every association slot is taken: transient, so the scanner retries later.
    Busy,
    /// The peer's address is not on the allow-list: permanent.
    PeerNotAllowed,
}

/// Answer a connection we will not serve: read its A-ASSOCIATE-RQ (small, strictly
/// bounded, briefly), reply with A-ASSOCIATE-RJ, close.
pub(super) async fn turn_away(mut socket: TcpStream, peer: SocketAddr, why: Turnaway) {
    let mut buf = bytes::BytesMut::new();
    // A host that is not allowed gets less patience than a scanner told to retry.
    let patience = match why {
        Turnaway::Busy => std::time::Duration::from_secs(5),
        Turnaway::PeerNotAllowed => std::time::Duration::from_secs(2),
    };
    let read = tokio::time::timeout(
        patience,
        dicom_ul::association::read_pdu_from_wire_async(&mut socket, &mut buf, 64 * 1024, true),
    )
    .await;
    let (result, source) = match why {
        Turnaway::Busy => (
            AssociationRJResult::Transient,
            AssociationRJSource::ServiceProviderPresentation(
                AssociationRJServiceProviderPresentationReason::LocalLimitExceeded,
            ),
        ),
        Turnaway::PeerNotAllowed => (
            AssociationRJResult::Permanent,
            AssociationRJSource::ServiceUser(AssociationRJServiceUserReason::NoReasonGiven),
        ),
    };
    let calling = match read {
        Ok(Ok(Pdu::AssociationRQ(rq))) => crate::redact::printable(&rq.calling_ae_title),
        _ => {
            warn!(%peer, reason = ?why, "connection closed without negotiation");
            return;
        }
    };
    let mut out = Vec::new();
    if dicom_ul::write_pdu(
        &mut out,
        &Pdu::AssociationRJ(AssociationRJ { result, source }),
    )
    .is_ok()
    {
        let _ =
            tokio::time::timeout(std::time::Duration::from_secs(2), socket.write_all(&out)).await;
    }
    match why {
        Turnaway::Busy => {
            warn!(%peer, calling_ae = %calling.trim(), "association rejected: too many associations at once (transient)")
        }
        Turnaway::PeerNotAllowed => {
            warn!(%peer, calling_ae = %calling.trim(), "association rejected: peer address not in receiver.allowed_peers")
        }
    }
}

/// How the message loop ended.
enum End {
    /// A-RELEASE completed.
    Released,
    /// The peer sent A-ABORT.
    PeerAborted,
    /// The connection dropped.
    Closed,
    /// We abort, for the reason given.
    Abort(AbortRQServiceProviderReason, String),
}

/// Where the data of the current C-STORE goes.
enum Sink {
    /// Into memory: the file header and the data so far, while under `MEMORY_LIMIT`.
    Memory {
        /// Header plus data.
        buf: Vec<u8>,
    },
    /// Into a spool temporary file.
    File {
        /// The temporary file.
        tmp: TempFile,
        /// Written bytes at the last free-space check.
        checked_at: u64,
    },
    /// Nowhere: the instance is already refused with this status; the rest is read and
    /// dropped so that the association stays in step.
    Discard {
        /// Status to answer with.
        status: u16,
        /// Error comment to answer with.
        comment: String,
    },
}

/// The message being received.
enum State {
    /// Between messages, or gathering command fragments.
    Command {
        /// Presentation context of the fragments so far.
        pc: Option<u8>,
        /// Command bytes so far.
        buf: Vec<u8>,
    },
    /// Receiving a data set for a command.
    Data {
        /// Presentation context of the message.
        pc: u8,
        /// What is being done with the data set.
        op: DataOp,
    },
}

/// What a data set belongs to.
enum DataOp {
    /// A C-STORE.
    Store {
        message_id: u16,
        expected: Expected,
        sink: Sink,
    },
    /// A command we do not serve; answered with `status` once its data set is drained.
    Unserved { command_field: u16, message_id: u16 },
}

impl State {
    fn idle() -> State {
        State::Command {
            pc: None,
            buf: Vec::new(),
        }
    }
}

/// How long an association and each of its PDUs may take, and its pace registration.
struct Limits<'a> {
    /// The association's end, whatever it is doing.
    deadline: tokio::time::Instant,
    /// Longest wait for the next PDU of a message in progress: a full PDU at the minimum
    /// rate plus [`PDU_FLOOR`], at most the read timeout. (Between messages the read
    /// timeout applies: dicom-ul limits each whole PDU read by it.)
    per_pdu: std::time::Duration,
    pace: &'a Registration,
}

/// One established association: the connection, what all associations share, the
/// peer's AE title, and what it has done so far.
struct Handler<'a> {
    assoc: AsyncServerAssociation<TcpStream>,
    shared: &'a Arc<Shared>,
    /// The calling AE title, control characters escaped.
    calling: String,
    tally: Tally,
}

impl Handler<'_> {
    /// Receive and answer messages until the association ends, however it ends; nothing
    /// partial stays behind.
    async fn message_loop(&mut self, shutdown: &CancellationToken, limits: &Limits<'_>) -> End {
        let mut state = State::idle();
        let end = loop {
            let idle = matches!(&state, State::Command { pc: None, .. });
            let pdu_due = if idle {
                limits.deadline
            } else {
                (tokio::time::Instant::now() + limits.per_pdu).min(limits.deadline)
            };
            // Shutdown waits for the message in hand; the limits do not (an instance not yet
            // answered is not acknowledged, so aborting it loses nothing).
            let pdu = tokio::select! {
                r = self.assoc.receive() => r,
                _ = shutdown.cancelled(), if idle => {
                    break End::Abort(AbortRQServiceProviderReason::ReasonNotSpecified, "shutting down".into());
                }
                _ = limits.pace.shed.cancelled() => {
                    break End::Abort(
                        AbortRQServiceProviderReason::ReasonNotSpecified,
                        "slower than receiver.min_transfer_rate while every slot is taken".into(),
                    );
                }
                _ = tokio::time::sleep_until(pdu_due) => {
                    break End::Abort(
                        AbortRQServiceProviderReason::ReasonNotSpecified,
                        if pdu_due >= limits.deadline {
                            "past receiver.association_deadline_secs".into()
                        } else {
                            "a PDU slower than receiver.min_transfer_rate allows".into()
                        },
                    );
                }
            };
            if let Ok(p) = &pdu {
                limits.pace.received(pdu_size(p));
            }
            let pdu = match pdu {
                Ok(p) => p,
                Err(e) => {
                    use dicom_ul::association::Error as E;
                    break match e {
                        E::ConnectionClosed { .. } => End::Closed,
                        E::Timeout { .. } => End::Abort(
                            AbortRQServiceProviderReason::ReasonNotSpecified,
                            "peer idle past the read timeout".into(),
                        ),
                        E::WireRead { .. } => End::Closed,
                        other => End::Abort(
                            AbortRQServiceProviderReason::UnrecognizedPdu,
                            format!("unreadable PDU: {}", brief(&other)),
                        ),
                    };
                }
            };
            match pdu {
                Pdu::PData { data } => {
                    let mut outcome = None;
                    for pdv in data {
                        if let Err(end) = self.on_pdv(&mut state, pdv).await {
                            outcome = Some(end);
                            break;
                        }
                    }
                    if let Some(end) = outcome {
                        break end;
                    }
                }
                Pdu::ReleaseRQ => {
                    let _ = self.assoc.send(&Pdu::ReleaseRP).await;
                    break End::Released;
                }
                Pdu::AbortRQ { .. } => break End::PeerAborted,
                other => {
                    break End::Abort(
                        AbortRQServiceProviderReason::UnexpectedPdu,
                        format!("unexpected PDU {}", pdu_name(&other)),
                    );
                }
            }
        };
        // Whatever ended the association, nothing partial stays behind.
        if let State::Data {
            op:
                DataOp::Store {
                    sink: Sink::File { tmp, .. },
                    ..
                },
            ..
        } = state
        {
            discard_temp(tmp).await;
        }
        end
    }

    /// Handle one presentation data value.
    async fn on_pdv(&mut self, state: &mut State, pdv: PDataValue) -> Result<(), End> {
        let accepted_pc = self
            .assoc
            .presentation_contexts()
            .iter()
            .find(|pc| pc.id == pdv.presentation_context_id)
            .filter(|pc| pc.reason == PresentationContextResultReason::Acceptance)
            .map(|pc| (pc.abstract_syntax.clone(), pc.transfer_syntax.clone()));
        let Some((abstract_syntax, transfer_syntax)) = accepted_pc else {
            return Err(abort(
                AbortRQServiceProviderReason::UnexpectedPduParameter,
                format!(
                    "data on presentation context {} which was not accepted",
                    pdv.presentation_context_id
                ),
            ));
        };
        match state {
            State::Command { pc, buf } => {
                if pdv.value_type != PDataValueType::Command {
                    return Err(abort(
                        AbortRQServiceProviderReason::UnexpectedPduParameter,
                        "data set fragment without a command",
                    ));
                }
                if pc.is_some_and(|p| p != pdv.presentation_context_id) {
                    return Err(abort(
                        AbortRQServiceProviderReason::UnexpectedPduParameter,
                        "command fragments on two presentation contexts",
                    ));
                }
                *pc = Some(pdv.presentation_context_id);
                if buf.len() + pdv.data.len() > MAX_COMMAND_BYTES {
                    return Err(abort(
                        AbortRQServiceProviderReason::UnexpectedPduParameter,
                        "command set larger than 64 KiB",
                    ));
                }
                buf.extend_from_slice(&pdv.data);
                if !pdv.is_last {
                    return Ok(());
                }
                let pc_id = pdv.presentation_context_id;
                let command = dimse::decode(buf).map_err(|e| {
                    abort(
                        AbortRQServiceProviderReason::UnrecognizedPduParameter,
                        e.to_string(),
                    )
                })?;
                *state = State::idle();
                self.on_command(state, pc_id, &abstract_syntax, &transfer_syntax, command)
                    .await
            }
            State::Data { pc, op } => {
                if pdv.value_type != PDataValueType::Data || pdv.presentation_context_id != *pc {
                    return Err(abort(
                        AbortRQServiceProviderReason::UnexpectedPduParameter,
                        "command fragment inside a data set",
                    ));
                }
                if let DataOp::Store { sink, .. } = op {
                    self.write_fragment(sink, pdv.data).await;
                }
                if !pdv.is_last {
                    return Ok(());
                }
                let pc_id = *pc;
                let State::Data { op, .. } = std::mem::replace(state, State::idle()) else {
                    unreachable!("state was Data")
                };
                match op {
                    DataOp::Store {
                        message_id,
                        expected,
                        sink,
                    } => self.finish_store(pc_id, message_id, expected, sink).await,
                    DataOp::Unserved {
                        command_field,
                        message_id,
                    } => {
                        let rsp = dimse::store_response(
                            command_field | 0x8000,
                            message_id,
                            &abstract_syntax,
                            "",
                            0x0211,
                            Some("operation not supported by this SCP"),
                        );
                        self.send_command(pc_id, rsp).await
                    }
                }
            }
        }
    }

    /// Send one command set (a response) on presentation context `pc`.
    async fn send_command(&mut self, pc: u8, data: Vec<u8>) -> Result<(), End> {
        let pdu = Pdu::PData {
            data: vec![PDataValue {
                presentation_context_id: pc,
                value_type: PDataValueType::Command,
                is_last: true,
                data,
            }],
        };
        self.assoc.send(&pdu).await.map_err(|e| {
            abort(
                AbortRQServiceProviderReason::ReasonNotSpecified,
                format!("cannot send response: {e}"),
            )
        })
    }

    /// Act on a complete command set received on presentation context `pc`.
    async fn on_command(
        &mut self,
        state: &mut State,
        pc: u8,
        abstract_syntax: &str,
        transfer_syntax: &str,
        command: Command,
    ) -> Result<(), End> {
        match command {
            Command::Echo { message_id } => {
                self.tally.echoes += 1;
                debug!(message_id, "C-ECHO");
                self.send_command(pc, dimse::echo_response(message_id))
                    .await
            }
            Command::Store {
                message_id,
                sop_class_uid,
                sop_instance_uid,
                has_data_set,
            } => {
                if !has_data_set {
                    self.tally.failed += 1;
                    let rsp = dimse::store_response(
                        dimse::C_STORE_RSP,
                        message_id,
                        &sop_class_uid,
                        &sop_instance_uid,
                        status::CANNOT_UNDERSTAND,
                        Some("C-STORE request without a data set"),
                    );
                    return self.send_command(pc, rsp).await;
                }
                let expected = Expected {
                    sop_class_uid: sop_class_uid.clone(),
                    sop_instance_uid: sop_instance_uid.clone(),
                    calling_ae_title: self.calling.clone(),
                };
                let sink = open_sink(abstract_syntax, transfer_syntax, &expected);
                *state = State::Data {
                    pc,
                    op: DataOp::Store {
                        message_id,
                        expected,
                        sink,
                    },
                };
                Ok(())
            }
            Command::Cancel {
                message_id_being_responded_to,
            } => {
                // Nothing of ours can be cancelled mid-way (a C-STORE is answered as soon as it
                // is complete); C-CANCEL has no response.
                debug!(message_id_being_responded_to, "C-CANCEL ignored");
                Ok(())
            }
            Command::Other {
                command_field,
                message_id,
                has_data_set,
            } => {
                if command_field & 0x8000 != 0 {
                    return Err(abort(
                        AbortRQServiceProviderReason::UnexpectedPduParameter,
                        format!("unexpected response {command_field:#06x} from the requestor"),
                    ));
                }
                warn!(
                    command_field = format!("{command_field:#06x}"),
                    "unsupported DIMSE command"
                );
                if has_data_set {
                    *state = State::Data {
                        pc,
                        op: DataOp::Unserved {
                            command_field,
                            message_id,
                        },
                    };
                    Ok(())
                } else {
                    let rsp = dimse::store_response(
                        command_field | 0x8000,
                        message_id,
                        abstract_syntax,
                        "",
                        0x0211,
                        Some("operation not supported by this SCP"),
                    );
                    self.send_command(pc, rsp).await
                }
            }
        }
    }

    /// Append a fragment to the sink. Small data sets stay in memory; a data set that
    /// outgrows `MEMORY_LIMIT` moves to a spool temporary file. The sink turns into Discard
    /// (and any partial file is removed) when the instance outgrows its cap, the disk its
    /// floor, or a write fails.
    async fn write_fragment(&self, sink: &mut Sink, data: Vec<u8>) {
        let cap = self.shared.settings.max_instance_bytes;
        let floor = self.shared.settings.min_free_bytes;
        let held = match sink {
            Sink::Discard { .. } => return,
            Sink::Memory { buf } => buf.len() as u64,
            Sink::File { tmp, .. } => tmp.written,
        };
        let failed: Option<(u16, String)> = if held + data.len() as u64 > cap {
            warn!(
                cap_bytes = cap,
                "C-STORE refused: instance larger than the configured cap"
            );
            Some((
                status::OUT_OF_RESOURCES,
                format!("instance larger than {cap} bytes"),
            ))
        } else {
            match sink {
                Sink::Memory { buf } if buf.len() + data.len() <= MEMORY_LIMIT => {
                    buf.extend_from_slice(&data);
                    None
                }
                Sink::Memory { buf } => {
                    let mut bytes = std::mem::take(buf);
                    bytes.extend_from_slice(&data);
                    let sh = self.shared.clone();
                    match blocking(move || sh.spool.create_temp(&bytes, floor)).await {
                        Ok(tmp) => {
                            let written = tmp.written;
                            *sink = Sink::File {
                                tmp,
                                checked_at: written,
                            };
                            None
                        }
                        Err(e) => Some(refusal(&e)),
                    }
                }
                Sink::File { tmp, checked_at } => {
                    let check =
                        (tmp.written - *checked_at >= SPACE_CHECK_INTERVAL).then_some(floor);
                    if check.is_some() {
                        *checked_at = tmp.written;
                    }
                    let sh = self.shared.clone();
                    let file = tmp.file.clone();
                    let len = data.len() as u64;
                    match blocking(move || sh.spool.append(&file, &data, check)).await {
                        Ok(()) => {
                            tmp.written += len;
                            None
                        }
                        Err(e) => Some(refusal(&e)),
                    }
                }
                Sink::Discard { .. } => None,
            }
        };
        if let Some((status, comment)) = failed {
            if let Sink::File { tmp, .. } =
                std::mem::replace(sink, Sink::Discard { status, comment })
            {
                discard_temp(tmp).await;
            }
        }
    }

    /// Commit a complete C-STORE data set (one trip to the blocking pool) and answer it.
    async fn finish_store(
        &mut self,
        pc: u8,
        message_id: u16,
        expected: Expected,
        sink: Sink,
    ) -> Result<(), End> {
        let now = now_ms();
        let due = now + self.shared.quiet_period.as_millis() as i64;
        let floor = self.shared.settings.min_free_bytes;
        let sh = self.shared.clone();
        let exp = expected.clone();
        // One trip to the blocking pool per instance: write (if still in memory), fsync,
        // check, rename, fsync the folder, index.
        let result = match sink {
            Sink::Discard { status, comment } => Err((status, comment)),
            Sink::Memory { buf } => blocking(move || {
                let tmp = sh.spool.create_temp(&buf, floor)?;
                sh.spool.commit(tmp, Some(&buf), &exp, &sh.store, now, due)
            })
            .await
            .map_err(|e| refusal(&e)),
            Sink::File { tmp, .. } => {
                blocking(move || sh.spool.commit(tmp, None, &exp, &sh.store, now, due))
                    .await
                    .map_err(|e| refusal(&e))
            }
        };
        let (status, comment) = match result {
            Ok(InsertOutcome::Inserted) => {
                self.tally.stored += 1;
                debug!(message_id, "instance stored");
                (status::SUCCESS, None)
            }
            Ok(InsertOutcome::Duplicate) => {
                self.tally.duplicates += 1;
                info!(
                    message_id,
                    "duplicate SOP Instance UID; kept the first copy"
                );
                (status::SUCCESS, None)
            }
            Err((status, comment)) => {
                self.tally.failed += 1;
                (status, Some(comment))
            }
        };
        let rsp = dimse::store_response(
            dimse::C_STORE_RSP,
            message_id,
            &expected.sop_class_uid,
            &expected.sop_instance_uid,
            status,
            comment.as_deref(),
        );
        self.send_command(pc, rsp).await
    }
}

/// Bytes a PDU carried (its values; headers are negligible for the rate).
fn pdu_size(pdu: &Pdu) -> usize {
    match pdu {
        Pdu::PData { data } => data.iter().map(|v| v.data.len() + 6).sum(),
        _ => 64,
    }
}

fn pdu_name(pdu: &Pdu) -> &'static str {
    match pdu {
        Pdu::Unknown { .. } => "unknown",
        Pdu::AssociationRQ(_) => "A-ASSOCIATE-RQ",
        Pdu::AssociationAC(_) => "A-ASSOCIATE-AC",
        Pdu::AssociationRJ(_) => "A-ASSOCIATE-RJ",
        Pdu::PData { .. } => "P-DATA-TF",
        Pdu::ReleaseRQ => "A-RELEASE-RQ",
        Pdu::ReleaseRP => "A-RELEASE-RP",
        Pdu::AbortRQ { .. } => "A-ABORT",
    }
}

async fn discard_temp(tmp: TempFile) {
    let path = tmp.path;
    drop(tmp.file);
    let _ = tokio::task::spawn_blocking(move || std::fs::remove_file(path)).await;
}

fn abort(reason: AbortRQServiceProviderReason, why: impl Into<String>) -> End {
    End::Abort(reason, why.into())
}

/// Decide where a C-STORE's data goes: memory first (with the file header), or nowhere
/// with a refusal. No blocking call happens here; the disk is touched when the data set
/// outgrows memory or is complete.
fn open_sink(abstract_syntax: &str, transfer_syntax: &str, expected: &Expected) -> Sink {
    if expected.sop_class_uid != abstract_syntax {
        return Sink::Discard {
            status: status::SOP_CLASS_NOT_SUPPORTED,
            comment: "SOP class differs from the presentation context".into(),
        };
    }
    if !spool::is_valid_uid(&expected.sop_instance_uid) {
        return Sink::Discard {
            status: status::DATA_SET_MISMATCH,
            comment: "Affected SOP Instance UID is not a valid UID".into(),
        };
    }
    match spool::file_header(
        &expected.sop_class_uid,
        &expected.sop_instance_uid,
        transfer_syntax,
        &expected.calling_ae_title,
    ) {
        Ok(buf) => Sink::Memory { buf },
        Err(e) => Sink::Discard {
            status: status::CANNOT_UNDERSTAND,
            comment: format!("cannot build file meta: {e}"),
        },
    }
}

/// The DIMSE status and comment for a failed commit, logged once here.
fn refusal(e: &CommitError) -> (u16, String) {
    match e {
        CommitError::Inspect(InspectError::Unparseable(why)) => {
            warn!("C-STORE refused: data set does not parse: {why}");
            (
                status::CANNOT_UNDERSTAND,
                format!("data set does not parse: {why}"),
            )
        }
        CommitError::Inspect(InspectError::Mismatch(why)) => {
            warn!("C-STORE refused: {why}");
            (status::DATA_SET_MISMATCH, why.clone())
        }
        CommitError::BelowFloor { free, floor } => {
            warn!(
                free_bytes = free,
                floor_bytes = floor,
                "C-STORE refused: spool below its free-space floor"
            );
            (
                status::OUT_OF_RESOURCES,
                "storage full: free space below the configured floor".into(),
            )
        }
        e if e.is_out_of_space() => {
            warn!("C-STORE refused: out of space: {e}");
            (status::OUT_OF_RESOURCES, "storage full".into())
        }
        e => {
            warn!("C-STORE failed: {e}");
            (
                status::PROCESSING_FAILURE,
                "cannot store the instance".into(),
            )
        }
    }
}

/// Run blocking spool work on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, CommitError> + Send + 'static,
) -> Result<T, CommitError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(CommitError::Io(std::io::Error::other(e))))
}
