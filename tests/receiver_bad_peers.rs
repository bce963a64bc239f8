//! Peers that misbehave. Each gets the right answer, leaves no partial file, and the
//! daemon keeps serving (a successful C-ECHO afterwards).
//!
//! DCMTK plays the well-formed but unwelcome peers; a raw dicom-ul client (the upper-layer
//! protocol crate the daemon itself uses, driven here by hand) plays the broken ones that
//! DCMTK will not produce: garbage, aborts and truncation mid-transfer, silence.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::raw::*;
use common::*;
use dicom_dictionary_std::{tags, uids};
use dicom_transfer_syntax_registry::entries::EXPLICIT_VR_LITTLE_ENDIAN;
use dicom_ul::pdu::PDataValueType;
use dicom_ul::{ClientAssociationOptions, Pdu};

/// After a refusal: no partial file (given a moment to be removed), nothing stored, and the
/// daemon still answers C-ECHO.
fn assert_clean_and_serving(d: &mut Daemon) {
    assert!(wait_until(Duration::from_secs(5), || d
        .tmp_files()
        .is_empty()));
    assert_nothing_stored(d);
    d.assert_serving();
}

fn assert_nothing_stored(d: &Daemon) {
    assert!(
        d.tmp_files().is_empty(),
        "partial file left: {:?}",
        d.tmp_files()
    );
    assert!(
        d.committed_files().is_empty(),
        "file stored: {:?}",
        d.committed_files()
    );
    assert_eq!(d.count("SELECT COUNT(*) FROM instances"), 0);
}

#[test]
fn wrong_called_ae_is_rejected() {
    let mut d = Daemon::start("");
    let out = echo(d.port, "ECHOSCU", "NOT_ME");
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("Called AE Title Not Recognized"), "{text}");
    // The rejection reaches the peer before the daemon logs it: give the log a moment.
    assert!(
        wait_until(Duration::from_secs(5), || d.log().lines().any(|l| l
            .contains("association rejected")
            && l.contains("peer=127.0.0.1"))),
        "rejection must be logged with the peer address:\n{}",
        d.log()
    );
    d.assert_serving();
}

#[test]
fn calling_ae_outside_the_allow_list_is_rejected() {
    let mut d = Daemon::start("[receiver]\nallowed_calling_ae_titles = [\"ECHOSCU\", \"MRI_1\"]\n");
    let out = echo(d.port, "INTRUDER", "ONFH_EDGE");
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("Calling AE Title Not Recognized"), "{text}");
    // storescu as an unknown AE stores nothing.
    let dir = tempfile::tempdir().unwrap();
    let inst = mr_series(dir.path(), &new_uid(), 1, 1, 32);
    let (log, _) = storescu(d.port, &[], &[inst[0].path.clone()]);
    assert!(stored_ok(&log).is_empty(), "{log}");
    assert_nothing_stored(&d);
    d.assert_serving();
}

#[test]
fn peer_address_outside_the_allow_list_is_rejected() {
    let mut d = Daemon::start_tcp_ready("[receiver]\nallowed_peers = [\"10.200.0.0/16\"]\n");
    let out = echo(d.port, "ECHOSCU", "ONFH_EDGE");
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("Association Rejected"), "{text}");
    assert!(wait_until(Duration::from_secs(5), || d
        .log()
        .contains("association rejected")));
    assert!(d.alive());
}

#[test]
fn garbage_bytes_get_an_abort_and_the_daemon_lives() {
    let mut d = Daemon::start("");
    for garbage in [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        vec![0x01, 0x00, 0xff, 0xff, 0xff, 0xff, 0, 1, 2, 3],
        (0..4096u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect(),
    ] {
        let mut s = TcpStream::connect(("127.0.0.1", d.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let _ = s.write_all(&garbage);
        let mut reply = Vec::new();
        let _ = s.read_to_end(&mut reply);
        // Answered with an A-ABORT PDU (type 0x07), then closed.
        assert_eq!(
            reply.first(),
            Some(&0x07),
            "expected A-ABORT, got {reply:?}"
        );
    }
    d.assert_serving();
}

#[test]
fn silent_connection_loses_its_slot_after_the_negotiation_limit() {
    let mut d = Daemon::start("[receiver]\nmax_associations = 1\nread_timeout_secs = 2\n");
    let mut silent = TcpStream::connect(("127.0.0.1", d.port)).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    // The one slot is held: the scanner is told to come back later.
    let out = echo(d.port, "ECHOSCU", "ONFH_EDGE");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Rejected Transient"));
    // The silent peer is aborted once the negotiation limit passes.
    let mut reply = Vec::new();
    let _ = silent.read_to_end(&mut reply);
    assert_eq!(
        reply.first(),
        Some(&0x07),
        "expected A-ABORT, got {reply:?}"
    );
    assert!(wait_until(Duration::from_secs(5), || echo(
        d.port,
        "ECHOSCU",
        "ONFH_EDGE"
    )
    .status
    .success()));
    d.assert_serving();
}

#[test]
fn abort_in_the_middle_of_a_store_leaves_nothing() {
    let mut d = Daemon::start("");
    // 1600 x 1600 x 2 bytes = 5 MB: beyond what the receiver holds in memory, so the
    // partial instance is on disk while it streams.
    let mut r = Raw::new(&d, 1600);
    let part = r.data.len() * 9 / 10;
    let data = r.data.clone();
    r.command(1, None);
    r.data(&data[..part], false);
    assert!(
        wait_until(Duration::from_secs(10), || !d.tmp_files().is_empty()),
        "the partial instance should be spooling"
    );
    r.a.abort().unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || d
            .log()
            .contains("peer aborted the association")),
        "{}",
        d.log()
    );
    assert_clean_and_serving(&mut d);
}

#[test]
fn truncated_data_set_is_refused_with_cannot_understand() {
    let mut d = Daemon::start("");
    let mut r = Raw::new(&d, 128);
    let data = r.data.clone();
    r.command(5, None);
    // The data set claims to be complete but stops inside Pixel Data.
    r.data(&data[..data.len() - 1000], true);
    let (status, comment) = r.response();
    assert_eq!(status & 0xF000, 0xC000, "status {status:#06x} {comment:?}");
    assert!(comment.unwrap_or_default().contains("does not parse"));
    // The association is still usable: the whole instance now stores.
    r.command(6, None);
    r.data(&data, true);
    assert_eq!(r.response().0, 0);
    r.a.release().unwrap();
    assert!(d.tmp_files().is_empty());
    assert_eq!(d.committed_files().len(), 1);
    assert!(
        d.log().contains("data set does not parse"),
        "reason must be logged"
    );
    d.assert_serving();
}

#[test]
fn data_set_without_identifiers_is_refused() {
    let mut d = Daemon::start("");
    let mut r = Raw::new(&d, 32);
    let mut obj = dicom_object::open_file(&r.inst.path).unwrap();
    obj.remove_element(tags::SERIES_INSTANCE_UID);
    let mut data = Vec::new();
    obj.write_dataset_with_ts(&mut data, &EXPLICIT_VR_LITTLE_ENDIAN.erased())
        .unwrap();
    r.command(1, None);
    r.data(&data, true);
    let (status, comment) = r.response();
    assert_eq!(status, 0xA900, "{comment:?}");
    // A data set whose SOP Instance UID differs from the command's is refused too.
    let full = r.data.clone();
    r.command(2, Some("1.2.3.4.5"));
    r.data(&full, true);
    assert_eq!(r.response().0, 0xA900);
    // A UID that is not a UID never reaches the file system.
    r.command(3, Some("../../etc/passwd"));
    r.data(&[0u8; 64], true);
    assert_eq!(r.response().0, 0xA900);
    r.a.release().unwrap();
    assert_nothing_stored(&d);
    d.assert_serving();
}

#[test]
fn unsupported_sop_class_is_rejected_per_context() {
    let mut d = Daemon::start("");
    // A CT image: storescu finds no accepted presentation context for it.
    let dir = tempfile::tempdir().unwrap();
    let ct = write_series(
        dir.path(),
        &SeriesSpec {
            study_uid: &new_uid(),
            series_number: 1,
            description: "CT",
            count: 1,
            rows: 32,
            cols: 32,
            sop_class_uid: uids::CT_IMAGE_STORAGE,
        },
    );
    let (log, _) = storescu(d.port, &[], &[ct[0].path.clone()]);
    assert!(stored_ok(&log).is_empty(), "{log}");
    assert!(log.to_lowercase().contains("presentation context"), "{log}");
    // The same association negotiation with MR alongside still accepts MR only.
    let a = ClientAssociationOptions::new()
        .calling_ae_title("RAWSCU")
        .called_ae_title("ONFH_EDGE")
        .with_presentation_context(uids::CT_IMAGE_STORAGE, vec![EXPLICIT_LE])
        .with_presentation_context(uids::MR_IMAGE_STORAGE, vec![EXPLICIT_LE])
        .establish(("127.0.0.1", d.port))
        .unwrap();
    let accepted: Vec<_> = a
        .presentation_contexts()
        .iter()
        .filter(|pc| pc.reason == dicom_ul::pdu::PresentationContextResultReason::Acceptance)
        .map(|pc| pc.abstract_syntax.clone())
        .collect();
    assert_eq!(accepted, vec![uids::MR_IMAGE_STORAGE.to_string()]);
    a.release().unwrap();
    // A transfer syntax we cannot decode (JPEG-LS) is never accepted.
    let a = ClientAssociationOptions::new()
        .calling_ae_title("RAWSCU")
        .called_ae_title("ONFH_EDGE")
        .with_presentation_context(uids::MR_IMAGE_STORAGE, vec!["1.2.840.10008.1.2.4.80"])
        .establish(("127.0.0.1", d.port));
    if let Ok(a) = a {
        assert!(
            a.presentation_contexts()
                .iter()
                .all(|pc| pc.reason != dicom_ul::pdu::PresentationContextResultReason::Acceptance)
        );
        let _ = a.release();
    }
    assert_nothing_stored(&d);
    d.assert_serving();
}

#[test]
fn oversize_instance_is_refused_while_streaming() {
    let mut d = Daemon::start("[receiver]\nmax_instance_bytes = 100000\nmax_pdu = 16384\n");
    let dir = tempfile::tempdir().unwrap();
    let study = new_uid();
    let big = mr_series(dir.path(), &study, 1, 1, 256); // ~131 kB of pixels
    let small = mr_series(dir.path(), &study, 2, 1, 64);
    let (log, _) = storescu(
        d.port,
        &["-nh"],
        &[big[0].path.clone(), small[0].path.clone()],
    );
    let failed = failed_responses(&log);
    assert_eq!(failed.len(), 1, "{log}");
    assert!(failed[0].contains("Refused: OutOfResources"), "{log}");
    // The next instance on the same association still stores.
    assert_eq!(stored_ok(&log), vec![small[0].path.clone()]);
    assert!(d.tmp_files().is_empty());
    assert_eq!(d.committed_files().len(), 1);
    assert!(d.log().contains("larger than the configured cap"));
    d.assert_serving();
}

#[test]
fn oversize_instance_on_disk_is_refused_and_its_partial_file_removed() {
    // Cap 4.5 MB: a 5.1 MB instance has left memory for a spool file before it is refused.
    let mut d = Daemon::start("[receiver]\nmax_instance_bytes = 4500000\n");
    let mut r = Raw::new(&d, 1600);
    let data = r.data.clone();
    r.command(1, None);
    r.data(&data, true);
    let (status, comment) = r.response();
    assert_eq!(status, 0xA700, "{comment:?}");
    assert!(comment.unwrap_or_default().contains("larger than"));
    r.a.release().unwrap();
    assert_clean_and_serving(&mut d);
}

#[test]
fn truncated_large_data_set_on_disk_is_refused_and_removed() {
    let mut d = Daemon::start("");
    let mut r = Raw::new(&d, 1600);
    let data = r.data.clone();
    r.command(1, None);
    r.data(&data[..data.len() - 100_000], true);
    let (status, comment) = r.response();
    assert_eq!(status, 0xC000, "{comment:?}");
    r.a.release().unwrap();
    assert_clean_and_serving(&mut d);
}

#[test]
fn forged_lengths_from_a_peer_are_refused_without_harm() {
    let mut d = Daemon::start("");
    let mut r = Raw::new(&d, 32);
    // A data set whose first element claims 4 GiB.
    let mut forged = vec![0x08, 0x00, 0x30, 0x10, b'U', b'T', 0, 0];
    forged.extend_from_slice(&0xFFFF_FFF0u32.to_le_bytes());
    forged.extend_from_slice(b"hello");
    r.command(1, None);
    r.data(&forged, true);
    let (status, _) = r.response();
    assert_eq!(status, 0xC000);
    // A command set whose UID claims 4 GiB: the association is aborted.
    let mut cmd = vec![0x00, 0x00, 0x02, 0x00];
    cmd.extend_from_slice(&0xFFFF_FFF0u32.to_le_bytes());
    cmd.extend_from_slice(b"1.2.3.4.");
    r.send(PDataValueType::Command, true, cmd);
    assert!(matches!(r.a.receive(), Ok(Pdu::AbortRQ { .. })));
    assert_nothing_stored(&d);
    d.assert_serving();
}

#[test]
fn free_space_floor_refuses_with_out_of_resources() {
    // A floor far above what any disk here has free.
    let mut d = Daemon::start("[receiver]\nmin_free_bytes = 1000000000000000000\n");
    let dir = tempfile::tempdir().unwrap();
    let study = new_uid();
    let mut inst = mr_series(dir.path(), &study, 1, 3, 64);
    // And one large enough to leave memory for a spool file.
    inst.extend(mr_series(dir.path(), &study, 2, 1, 1600));
    let files: Vec<_> = inst.iter().map(|i| i.path.clone()).collect();
    let (log, _) = storescu(d.port, &["-nh"], &files);
    let failed = failed_responses(&log);
    assert_eq!(failed.len(), 4, "{log}");
    assert!(
        failed.iter().all(|l| l.contains("Refused: OutOfResources")),
        "{log}"
    );
    assert_nothing_stored(&d);
    assert!(d.log().contains("free-space floor"));
    d.assert_serving();
}

#[test]
fn silent_peer_mid_transfer_is_aborted_and_cleaned_up() {
    let mut d = Daemon::start("[receiver]\nread_timeout_secs = 2\n");
    let mut r = Raw::new(&d, 1600);
    let data = r.data.clone();
    r.command(1, None);
    r.data(&data[..data.len() / 2 + 2_500_000], false);
    assert!(wait_until(Duration::from_secs(10), || !d
        .tmp_files()
        .is_empty()));
    // Say nothing more; the daemon must give up, abort, and remove the partial file.
    let reply = r.a.receive();
    assert!(
        matches!(reply, Ok(Pdu::AbortRQ { .. })),
        "expected A-ABORT after the read timeout, got {reply:?}"
    );
    assert_clean_and_serving(&mut d);
}

#[test]
fn association_over_the_limit_is_rejected_as_transient() {
    let mut d = Daemon::start("[receiver]\nmax_associations = 1\n");
    let held = connect(d.port, "HOLDER");
    let out = echo(d.port, "ECHOSCU", "ONFH_EDGE");
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("Rejected Transient"), "{text}");
    assert!(text.contains("Local Limit Exceeded"), "{text}");
    held.release().unwrap();
    assert!(wait_until(Duration::from_secs(5), || echo(
        d.port,
        "ECHOSCU",
        "ONFH_EDGE"
    )
    .status
    .success()));
    d.assert_serving();
}
