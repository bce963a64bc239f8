//! Hostile and careless peers, built in the test: each attack gets its answer, the daemon
//! keeps serving, and nothing it acknowledged is lost.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::raw::*;
use common::*;
use onfh_edge::phantom::{self, Options, anatomy::Stage};

/// Peak resident memory of a process (VmHWM), in MiB.
fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmHWM");
    kb / 1024.0
}

fn explicit_short(tag: (u16, u16), vr: &[u8; 2], value: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&tag.0.to_le_bytes());
    v.extend_from_slice(&tag.1.to_le_bytes());
    v.extend_from_slice(vr);
    v.extend_from_slice(&(value.len() as u16).to_le_bytes());
    v.extend_from_slice(value);
    v
}

/// A parser desync: a 12-byte FD (0018,9087). A parser that reads one 8-byte value then
/// takes its last four bytes as the next tag, and the following element's VR and length
/// as a 32-bit length of about 4 GiB, which it allocates and zero-fills. 64 KiB on the wire.
fn desync_bomb() -> Vec<u8> {
    let mut v = explicit_short(
        (0x0018, 0x9087),
        b"FD",
        &[0, 0, 0, 0, 0, 0, 0, 0, 0x09, 0, 0x01, 0x10],
    );
    v.extend(explicit_short((0x424F, 0x0000), b"LO", &vec![b' '; 0xFFF0]));
    v
}

#[test]
fn a_parser_desync_is_refused_before_or_after_pixel_data_in_bounded_memory() {
    let mut d = Daemon::start("");
    let pid = d.child.as_ref().unwrap().id();
    let before = peak_rss_mib(pid);
    for after_pixels in [false, true, false, true] {
        let mut r = Raw::new(&d, 64);
        let data = if after_pixels {
            [r.data.clone(), desync_bomb()].concat()
        } else {
            [desync_bomb(), r.data.clone()].concat()
        };
        r.command(1, None);
        r.data(&data, true);
        let (status, comment) = r.response();
        assert_eq!(
            status, 0xC000,
            "after Pixel Data: {after_pixels}, {comment:?}"
        );
        let comment = comment.unwrap_or_default();
        // (The Error Comment is an LO: 64 characters.)
        assert!(comment.contains("(0018,9087) is not a multi"), "{comment}");
        r.a.release().unwrap();
    }
    let peak = peak_rss_mib(pid);
    assert!(
        peak < 300.0,
        "peak RSS {peak:.0} MiB (before the attack {before:.0} MiB)"
    );
    assert_eq!(d.count("SELECT COUNT(*) FROM instances"), 0);
    assert!(d.committed_files().is_empty());
    d.assert_serving();
}

/// The same bytes in a stored file, or in a folder given to `analyze`: the analysis walks
/// the structure before parsing, so the file is refused without allocating what it claims.
#[test]
fn a_desynced_file_in_a_folder_is_skipped_by_analyze() {
    let dir = tempfile::tempdir().unwrap();
    let (study, t2) = phantom_study(dir.path(), 42);
    // Append the bomb after Pixel Data of one T2 slice.
    let mut bytes = std::fs::read(&t2[0]).unwrap();
    bytes.extend(desync_bomb());
    std::fs::write(&t2[0], bytes).unwrap();
    let child = std::process::Command::new(BIN)
        .args(["analyze", "--json"])
        .arg(&study)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (out, peak_mib) = wait_with_peak_rss(child);
    let text = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(text.trim())
        .unwrap_or_else(|e| panic!("{e}: {text}\n{}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(v["skipped_files"], 1, "{v}");
    assert!(peak_mib < 1500.0, "analyze peaked at {peak_mib:.0} MiB");
}

/// Wait for a child, collecting its output, and its peak resident memory in MiB.
fn wait_with_peak_rss(mut child: std::process::Child) -> (std::process::Output, f64) {
    use std::io::Read;
    let (mut so, mut se) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let err = std::thread::spawn(move || {
        let mut v = Vec::new();
        se.read_to_end(&mut v).unwrap();
        v
    });
    let mut stdout = Vec::new();
    so.read_to_end(&mut stdout).unwrap();
    let stderr = err.join().unwrap();
    let mut status = 0;
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as i32);
    use std::os::unix::process::ExitStatusExt;
    let out = std::process::Output {
        status: std::process::ExitStatus::from_raw(status),
        stdout,
        stderr,
    };
    (out, usage.ru_maxrss as f64 / 1024.0)
}

/// A classic phantom study (both heads stage 0, one file per slice) with only DICOM files
/// in its folder, and its T2 slices.
fn phantom_study(dir: &Path, seed: u64) -> (PathBuf, Vec<PathBuf>) {
    let study = dir.join("study");
    phantom::generate_study(
        &study,
        seed,
        &Options {
            stages: Some([Stage::S0, Stage::S0]),
            enhanced_t2: Some(false),
            ..Default::default()
        },
    )
    .unwrap();
    // truth.json would count as a skipped file.
    std::fs::remove_file(study.join("truth.json")).unwrap();
    let t2: Vec<PathBuf> = files_under(&study)
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("t2"))
        .collect();
    assert!(!t2.is_empty());
    (study, t2)
}

/// A study whose analysis kills the process (simulated OOM kills: SIGKILL while the
/// worker is analysing it) is analysed at most twice, then recorded once as an `error`
/// with the reason, and alerted like an indeterminate call.
#[test]
fn a_study_that_kills_the_analysis_ends_as_one_error_after_two_attempts() {
    let port = receivers::free_port();
    let mut d = Daemon::start(&format!(
        "[notify]\nindeterminate = true\n[[notify.webhook]]\nname = \"ortho\"\nurl = \"http://alice:s3cret-6@127.0.0.1:{port}/hook?token=T0KEN-7\"\nsecret = \"s\"\n"
    ));
    let dir = tempfile::tempdir().unwrap();
    let study = dir.path().join("study");
    phantom::generate_study(
        &study,
        9_000_202,
        &Options {
            stages: Some([Stage::S0, Stage::S1]),
            style: Some("philips-like 1.5T"),
            ..Default::default()
        },
    )
    .unwrap();
    let (log, ok) = storescu(d.port, &[], &files_under(&study));
    assert!(ok, "{log}");
    for attempt in 1..=2 {
        assert!(
            wait_until(Duration::from_secs(60), || d
                .count("SELECT COALESCE(MAX(attempts), 0) FROM analysis_attempts")
                == attempt),
            "attempt {attempt} never marked:\n{}",
            d.log()
        );
        d.sigkill();
        assert_eq!(
            d.count("SELECT COUNT(*) FROM analyses"),
            0,
            "the analysis finished before the kill"
        );
        d.restart();
    }
    assert!(
        wait_until(Duration::from_secs(60), || d
            .count("SELECT COUNT(*) FROM analyses")
            == 1),
        "{}",
        d.log()
    );
    let (status, reason): (String, String) = d
        .db()
        .query_row("SELECT status, reason FROM analyses", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!(status, "error");
    assert!(reason.contains("2 times"), "{reason}");
    assert_eq!(d.count("SELECT COUNT(*) FROM analysis_attempts"), 0);
    // Both sides alerted as indeterminate, with the reason.
    let alerts: Vec<String> = {
        let db = d.db();
        let mut st = db
            .prepare("SELECT payload_json FROM alerts ORDER BY side")
            .unwrap();
        st.query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    assert_eq!(alerts.len(), 2, "{alerts:?}");
    assert!(
        alerts
            .iter()
            .all(|a| a.contains("indeterminate") && a.contains("2 times"))
    );
    // Not analysed again: the recorded result covers the study's latest series completion,
    // which is the worker's own condition for leaving a study alone.
    assert_eq!(
        d.count(
            "SELECT COUNT(*) FROM (SELECT s.study_uid, MAX(j.completed_ms) AS last_done
                 FROM series s JOIN series_jobs j USING (series_uid) GROUP BY s.study_uid) t
             WHERE NOT EXISTS (SELECT 1 FROM analyses a WHERE a.study_uid = t.study_uid
                               AND a.job_completed_ms >= t.last_done)"
        ),
        0
    );
    assert_eq!(d.count("SELECT COUNT(*) FROM analyses"), 1);
    // The alerts could not be delivered (nothing listens); the failures name the URL with
    // its credentials redacted, in the log, the outbox and the audit table alike.
    assert!(wait_until(Duration::from_secs(20), || d.count(
        "SELECT COUNT(*) FROM alerts WHERE last_error IS NOT NULL"
    ) > 0));
    let stored: String = d
        .db()
        .query_row(
            "SELECT group_concat(x, ' ') FROM (SELECT last_error AS x FROM alerts
             UNION ALL SELECT detail FROM audit)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(stored.contains("***@127.0.0.1"), "{stored}");
    for text in [stored, d.log()] {
        assert!(
            !text.contains("s3cret-6") && !text.contains("T0KEN-7"),
            "{text}"
        );
    }
    d.assert_serving();
}

/// A peer that negotiates properly and then trickles a P-DATA PDU one byte a second.
/// Returns when the daemon closes the connection (or after `max`), with how long it held.
fn trickle(port: u16, max: Duration) -> Duration {
    use std::io::{Read, Write};
    let start = std::time::Instant::now();
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let rq = dicom_ul::Pdu::AssociationRQ(dicom_ul::pdu::AssociationRQ {
        protocol_version: 1,
        calling_ae_title: "TRICKLE".into(),
        called_ae_title: "ONFH_EDGE".into(),
        application_context_name: "1.2.840.10008.3.1.1.1".into(),
        presentation_contexts: vec![dicom_ul::pdu::PresentationContextProposed {
            id: 1,
            abstract_syntax: "1.2.840.10008.1.1".into(),
            transfer_syntaxes: vec!["1.2.840.10008.1.2".into()],
        }],
        user_variables: vec![dicom_ul::pdu::UserVariableItem::MaxLength(16384)],
    });
    let mut bytes = Vec::new();
    dicom_ul::write_pdu(&mut bytes, &rq).unwrap();
    s.write_all(&bytes).unwrap();
    let mut head = [0u8; 6];
    s.read_exact(&mut head).unwrap();
    assert_eq!(head[0], 0x02, "not an A-ASSOCIATE-AC");
    let len = u32::from_be_bytes([head[2], head[3], head[4], head[5]]) as usize;
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).unwrap();
    // A P-DATA-TF announcing 1000 bytes, then one byte a second.
    let _ = s.write_all(&[0x04, 0, 0, 0, 0x03, 0xE8]);
    s.set_read_timeout(Some(Duration::from_millis(1000)))
        .unwrap();
    let mut buf = [0u8; 256];
    while start.elapsed() < max {
        if s.write_all(&[0]).is_err() {
            break;
        }
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(_) => break, // A-ABORT
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => break,
        }
    }
    start.elapsed()
}

/// Eight peers trickling one byte a second hold every default slot; a scanner's C-ECHO
/// still gets in, ten times out of ten, because the slowest gives its slot up.
#[test]
fn peers_that_trickle_give_their_slots_to_a_scanner() {
    let mut d = Daemon::start("");
    let port = d.port;
    let slow: Vec<_> = (0..8)
        .map(|_| std::thread::spawn(move || trickle(port, Duration::from_secs(60))))
        .collect();
    // Past the grace period, all eight slots held.
    std::thread::sleep(Duration::from_secs(3));
    for i in 0..10 {
        let out = echo(d.port, "SCANNER", "ONFH_EDGE");
        assert!(out.status.success(), "echo {i}: {}", output_text(&out));
    }
    let held: Vec<Duration> = slow.into_iter().map(|t| t.join().unwrap()).collect();
    // At least the ten needed were shed (some may have been shed twice over); all of them
    // were gone well before a minute.
    assert!(
        held.iter().all(|h| *h < Duration::from_secs(40)),
        "{held:?}"
    );
    assert!(d.log().contains("gives its slot up"));
    d.assert_serving();
}

/// Without contention, the PDUs of a message in progress must still arrive at the minimum
/// rate, and an association ends at its deadline whatever it does.
#[test]
fn a_slow_pdu_and_an_endless_association_are_aborted_at_their_limits() {
    let mut d = Daemon::start(
        "[receiver]\nread_timeout_secs = 30\nmin_transfer_rate = 262144\nassociation_deadline_secs = 10\n",
    );
    // Within a C-STORE: 2 s + 262144 / 262144 s for each PDU, not the 30 s read timeout.
    let mut r = Raw::new(&d, 64);
    let data = r.data.clone();
    r.command(1, None);
    r.data(&data[..data.len() / 2], false);
    let start = std::time::Instant::now();
    let reply = r.a.receive();
    assert!(
        matches!(reply, Ok(dicom_ul::Pdu::AbortRQ { .. })),
        "{reply:?}"
    );
    let held = start.elapsed();
    assert!(
        held >= Duration::from_secs(2) && held < Duration::from_secs(8),
        "{held:?}"
    );
    assert!(
        d.log()
            .contains("a PDU slower than receiver.min_transfer_rate"),
        "{}",
        d.log()
    );
    assert!(d.committed_files().is_empty());
    // Whole association: a C-STORE every half second keeps it busy, the deadline still
    // ends it.
    let start = std::time::Instant::now();
    let mut r = Raw::new(&d, 32);
    let data = r.data.clone();
    let mut id = 1;
    let ended = loop {
        let uid = r.inst.sop_instance_uid.clone();
        let rq = onfh_edge::dicom::dimse::store_request(
            id,
            dicom_dictionary_std::uids::MR_IMAGE_STORAGE,
            &uid,
        );
        let sent = [
            (dicom_ul::pdu::PDataValueType::Command, rq),
            (dicom_ul::pdu::PDataValueType::Data, data.clone()),
        ]
        .into_iter()
        .all(|(value_type, bytes)| {
            r.a.send(&dicom_ul::Pdu::PData {
                data: vec![dicom_ul::pdu::PDataValue {
                    presentation_context_id: r.pc,
                    value_type,
                    is_last: true,
                    data: bytes,
                }],
            })
            .is_ok()
        });
        if !sent {
            break start.elapsed();
        }
        match r.a.receive() {
            Ok(dicom_ul::Pdu::PData { .. }) => {}
            _ => break start.elapsed(),
        }
        id += 1;
        std::thread::sleep(Duration::from_millis(500));
        assert!(start.elapsed() < Duration::from_secs(30), "never ended");
    };
    assert!(
        ended >= Duration::from_secs(9) && ended < Duration::from_secs(15),
        "{ended:?}"
    );
    assert!(d.log().contains("past receiver.association_deadline_secs"));
    d.assert_serving();
}

/// A data set carrying File Meta Information elements (group 0002) is refused with
/// "cannot understand", never stored with two meta groups.
#[test]
fn meta_elements_inside_the_data_set_are_refused() {
    let mut d = Daemon::start("");
    let mut r = Raw::new(&d, 32);
    let ts = explicit_short((0x0002, 0x0010), b"UI", b"1.2.840.10008.1.2.1\0");
    let data = [ts, r.data.clone()].concat();
    r.command(1, None);
    r.data(&data, true);
    let (status, comment) = r.response();
    assert_eq!(status, 0xC000);
    assert!(comment.unwrap_or_default().contains("File Meta"));
    r.a.release().unwrap();
    assert_eq!(d.count("SELECT COUNT(*) FROM instances"), 0);
    d.assert_serving();
}

/// Started with a permissive umask, the daemon still keeps its database and spool from
/// other users.
#[test]
fn state_files_are_not_world_readable_whatever_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    let old = unsafe { libc::umask(0o022) };
    let mut d = Daemon::start("");
    unsafe { libc::umask(old) };
    let dir = tempfile::tempdir().unwrap();
    let files: Vec<_> = mr_series(dir.path(), &new_uid(), 1, 2, 32)
        .into_iter()
        .map(|i| i.path)
        .collect();
    let (log, ok) = storescu(d.port, &[], &files);
    assert!(ok, "{log}");
    let mut checked = vec![d.state_dir().join("onfh-edge.sqlite3")];
    checked.extend(d.committed_files());
    checked.extend(
        d.committed_files()
            .iter()
            .filter_map(|f| f.parent().map(Path::to_path_buf)),
    );
    assert!(checked.len() >= 3);
    for p in checked {
        let mode = std::fs::metadata(&p).unwrap().permissions().mode();
        assert_eq!(mode & 0o007, 0, "{} is {:o}", p.display(), mode & 0o777);
    }
    d.assert_serving();
}

/// A calling AE title with a newline and an escape sequence is logged escaped; a Series
/// Description with them is printed escaped by `status`.
#[test]
fn control_characters_from_peers_are_escaped_in_logs_and_status() {
    use std::io::{Read, Write};
    let mut d = Daemon::start("");
    let evil = "EV\nFAKE LINE\x1b[2J";
    let mut s = std::net::TcpStream::connect(("127.0.0.1", d.port)).unwrap();
    let rq = dicom_ul::Pdu::AssociationRQ(dicom_ul::pdu::AssociationRQ {
        protocol_version: 1,
        calling_ae_title: evil.into(),
        called_ae_title: "ONFH_EDGE".into(),
        application_context_name: "1.2.840.10008.3.1.1.1".into(),
        presentation_contexts: vec![dicom_ul::pdu::PresentationContextProposed {
            id: 1,
            abstract_syntax: "1.2.840.10008.1.1".into(),
            transfer_syntaxes: vec!["1.2.840.10008.1.2".into()],
        }],
        user_variables: vec![dicom_ul::pdu::UserVariableItem::MaxLength(16384)],
    });
    let mut bytes = Vec::new();
    dicom_ul::write_pdu(&mut bytes, &rq).unwrap();
    s.write_all(&bytes).unwrap();
    let mut head = [0u8; 6];
    s.read_exact(&mut head).unwrap();
    drop(s);
    assert!(wait_until(Duration::from_secs(5), || d
        .log()
        .contains("EV\\nFAKE")));
    let log = d.log();
    assert!(!log.contains('\x1b'), "raw ESC in the log");
    assert!(
        !log.lines().any(|l| l.starts_with("FAKE LINE")),
        "forged log line"
    );

    // Series Description with control characters, through a real C-STORE.
    let dir = tempfile::tempdir().unwrap();
    let inst = mr_series(dir.path(), &new_uid(), 1, 1, 32).remove(0);
    let mut obj = dicom_object::open_file(&inst.path).unwrap();
    obj.put(dicom_core::DataElement::new(
        dicom_dictionary_std::tags::SERIES_DESCRIPTION,
        dicom_core::VR::LO,
        dicom_core::PrimitiveValue::from("T2\x1b[31mRED\nX"),
    ));
    obj.write_to_file(&inst.path).unwrap();
    let (log, ok) = storescu(d.port, &[], &[inst.path.clone()]);
    assert!(ok, "{log}");
    let status = d.cli("status", &[]);
    assert!(!status.contains('\x1b'), "{status:?}");
    assert!(status.contains("T2\\u{1b}[31mRED\\nX"), "{status}");
    d.assert_serving();
}

/// Credentials inside alert URLs are never printed by `check-config`, and clear text to
/// another host is refused unless opted into.
#[test]
fn url_credentials_are_redacted_and_remote_plaintext_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("site.toml");
    let write = |url: &str, extra: &str| {
        std::fs::write(
            &cfg,
            format!(
                "[notify]\n{extra}[[notify.webhook]]\nname = \"w\"\nurl = \"{url}\"\nsecret = \"hmac-secret-1\"\n[[notify.ntfy]]\nname = \"n\"\nserver = \"https://bob:pw-ntfy-2@ntfy.example.org/?auth=tok-3\"\ntopic = \"t\"\n"
            ),
        )
        .unwrap();
    };
    write(
        "https://alice:s3cret-4@ris.example.org/hook?token=T0KEN-5",
        "",
    );
    let out = std::process::Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let text = output_text(&out);
    assert!(out.status.success(), "{text}");
    for secret in ["hmac-secret-1", "pw-ntfy-2", "tok-3", "s3cret-4", "T0KEN-5"] {
        assert!(!text.contains(secret), "{secret} printed:\n{text}");
    }
    assert!(
        text.contains("https://***@ris.example.org/hook?token=***"),
        "{text}"
    );
    // Plain http to another host: refused, then allowed with the opt-in.
    write("http://ris.example.org/hook", "");
    let out = std::process::Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        output_text(&out).contains("allow_plaintext"),
        "{}",
        output_text(&out)
    );
    write("http://ris.example.org/hook", "allow_plaintext = true\n");
    let out = std::process::Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", output_text(&out));
}

/// Item 10: a series whose images went through lossy compression (here marked so by
/// Lossy Image Compression = "01" although stored uncompressed, as a router that decoded
/// JPEG would leave it) is not analysed by default, with the reason in its verdict.
#[test]
fn a_lossy_compressed_series_is_not_analysed_and_says_why() {
    use dicom_core::{DataElement, PrimitiveValue, VR};
    use dicom_dictionary_std::tags;
    let dir = tempfile::tempdir().unwrap();
    let (study, t2) = phantom_study(dir.path(), 43);
    // One slice of the series is enough.
    let mut obj = dicom_object::open_file(&t2[t2.len() / 2]).unwrap();
    obj.put(DataElement::new(
        tags::LOSSY_IMAGE_COMPRESSION,
        VR::CS,
        PrimitiveValue::from("01"),
    ));
    obj.put(DataElement::new(
        tags::LOSSY_IMAGE_COMPRESSION_METHOD,
        VR::CS,
        PrimitiveValue::from("ISO_10918_1"),
    ));
    obj.write_to_file(&t2[t2.len() / 2]).unwrap();

    let analyze = |extra: &[&str]| {
        let out = std::process::Command::new(BIN)
            .args(["analyze", "--json"])
            .args(extra)
            .arg(&study)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let v: serde_json::Value = serde_json::from_str(text.trim())
            .unwrap_or_else(|e| panic!("{e}: {text}\n{}", output_text(&out)));
        v
    };
    let v = analyze(&[]);
    assert_ne!(v["status"], "ok", "{v}");
    assert!(v["heads"].as_array().is_none_or(|h| h.is_empty()), "{v}");
    let verdicts = v["series"].as_array().unwrap();
    assert!(verdicts.iter().all(|s| s["verdict"] != "chosen"), "{v}");
    let t2_verdict = verdicts
        .iter()
        .find(|s| {
            s["reason"]
                .as_str()
                .is_some_and(|r| r.contains("lossy-compressed"))
        })
        .unwrap_or_else(|| panic!("no lossy verdict: {v}"));
    assert!(
        t2_verdict["reason"]
            .as_str()
            .unwrap()
            .contains("ISO_10918_1"),
        "{t2_verdict}"
    );
}

/// Every top-level attribute the dictionary knows, except group 0002 and Pixel Data,
/// rewritten as explicit VR UN with its little-endian value bytes: what `gdcmconv` and some
/// routers write.
fn un_everywhere(obj: &mut dicom_object::InMemDicomObject) -> usize {
    use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry, VirtualVr};
    use dicom_core::value::{PrimitiveValue, Value};
    use dicom_core::{DataElement, VR};
    let mut n = 0;
    let tags: Vec<dicom_core::Tag> = obj.tags().collect();
    for tag in tags {
        if tag.group() == 0x0002 || tag.group() == 0x7FE0 {
            continue;
        }
        let Some(VirtualVr::Exact(vr)) = dicom_dictionary_std::StandardDataDictionary
            .by_tag(tag)
            .map(|e| e.vr())
        else {
            continue;
        };
        let e = obj.element(tag).unwrap();
        let Value::Primitive(p) = e.value() else {
            continue;
        };
        let mut bytes: Vec<u8> = match vr {
            VR::OB | VR::OW | VR::OF | VR::OD | VR::OL | VR::OV | VR::SQ | VR::UN => continue,
            VR::US | VR::SS | VR::UL | VR::SL | VR::FL | VR::FD | VR::UV | VR::SV | VR::AT => {
                p.to_bytes().into_owned()
            }
            _ => p.to_str().into_owned().into_bytes(),
        };
        if bytes.len() % 2 == 1 {
            bytes.push(if vr == VR::UI { 0 } else { b' ' });
        }
        obj.put(DataElement::new(
            tag,
            VR::UN,
            PrimitiveValue::U8(bytes.into_iter().collect()),
        ));
        n += 1;
    }
    n
}

/// Item 11: an instance whose identifying attributes are all VR UN is stored and indexed
/// under its real UIDs; a study written that way is selected, assembled and analysed.
#[test]
fn attributes_written_as_un_are_read_as_their_dictionary_vr() {
    use dicom_object::InMemDicomObject;
    use dicom_transfer_syntax_registry::entries::EXPLICIT_VR_LITTLE_ENDIAN;
    let mut d = Daemon::start("");
    let mut r = Raw::new(&d, 32);
    let mut obj =
        InMemDicomObject::read_dataset_with_ts(&r.data[..], &EXPLICIT_VR_LITTLE_ENDIAN.erased())
            .unwrap();
    assert!(un_everywhere(&mut obj) > 10);
    let mut data = Vec::new();
    obj.write_dataset_with_ts(&mut data, &EXPLICIT_VR_LITTLE_ENDIAN.erased())
        .unwrap();
    // The bytes on the wire really say UN for the Study Instance UID.
    assert!(
        data.windows(6)
            .any(|w| w == [0x20, 0x00, 0x0D, 0x00, b'U', b'N'])
    );
    r.command(1, None);
    r.data(&data, true);
    let (status, comment) = r.response();
    assert_eq!(status, 0, "{comment:?}");
    r.a.release().unwrap();
    let uid = &r.inst.sop_instance_uid;
    assert_eq!(
        d.count(&format!(
            "SELECT COUNT(*) FROM instances i JOIN series s ON s.series_uid = i.series_uid \
             WHERE i.sop_instance_uid = '{uid}' AND s.study_uid = '{}' AND s.modality = 'MR'",
            r.inst.study_uid
        )),
        1
    );
    d.assert_serving();

    // A whole study, every file rewritten with UN everywhere (explicit VR).
    let dir = tempfile::tempdir().unwrap();
    let (study, _) = phantom_study(dir.path(), 44);
    for f in files_under(&study) {
        let file = dicom_object::open_file(&f).unwrap();
        let meta = file.meta().clone();
        // The meta group first (built from the data set's own UIDs), then the UN rewrite.
        let mut file = file
            .into_inner()
            .with_meta(
                dicom_object::FileMetaTableBuilder::new()
                    .transfer_syntax(EXPLICIT_LE)
                    .media_storage_sop_class_uid(
                        meta.media_storage_sop_class_uid().trim_end_matches('\0'),
                    )
                    .media_storage_sop_instance_uid(
                        meta.media_storage_sop_instance_uid().trim_end_matches('\0'),
                    ),
            )
            .unwrap();
        un_everywhere(&mut file);
        file.write_to_file(&f).unwrap();
    }
    let out = std::process::Command::new(BIN)
        .args(["analyze", "--json"])
        .arg(&study)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let v: serde_json::Value =
        serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{e}: {}", output_text(&out)));
    assert_eq!(v["skipped_files"], 0, "{v}");
    let chosen: Vec<&serde_json::Value> = v["series"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["verdict"] == "chosen")
        .collect();
    assert_eq!(chosen.len(), 1, "{v}");
    assert!(
        chosen[0]["description"].as_str().unwrap().contains("T2"),
        "{v}"
    );
    assert_eq!(v["heads"].as_array().map(|h| h.len()), Some(2), "{v}");
}

/// Item 12: decoding a JPEG 2000 series logs nothing from the decoder at INFO (it wrote
/// three lines per frame), even with `RUST_LOG=info`.
#[test]
fn a_jpeg_2000_series_decodes_without_decoder_chatter() {
    use dicom_core::{DataElement, PrimitiveValue, VR};
    use dicom_dictionary_std::tags;
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/MR_small_jp2klossless.dcm");
    let dir = tempfile::tempdir().unwrap();
    let (study, series) = (new_uid(), new_uid());
    let text = |tag, vr, v: &str| DataElement::new(tag, vr, PrimitiveValue::from(v));
    for k in 0..12 {
        let mut obj = dicom_object::open_file(&fixture).unwrap();
        let sop = new_uid();
        for e in [
            text(tags::SOP_INSTANCE_UID, VR::UI, &sop),
            text(tags::STUDY_INSTANCE_UID, VR::UI, &study),
            text(tags::SERIES_INSTANCE_UID, VR::UI, &series),
            text(tags::IMAGE_TYPE, VR::CS, "ORIGINAL\\PRIMARY"),
            text(tags::SERIES_DESCRIPTION, VR::LO, "T2 COR"),
            text(tags::ECHO_TIME, VR::DS, "90"),
            text(tags::SLICE_THICKNESS, VR::DS, "3"),
            text(tags::IMAGE_ORIENTATION_PATIENT, VR::DS, "1\\0\\0\\0\\0\\-1"),
            text(
                tags::IMAGE_POSITION_PATIENT,
                VR::DS,
                &format!("-30\\{}\\30", 3 * k),
            ),
            text(tags::INSTANCE_NUMBER, VR::IS, &(k + 1).to_string()),
        ] {
            obj.put(e);
        }
        obj.update_meta(|m| m.media_storage_sop_instance_uid = sop.clone());
        obj.write_to_file(dir.path().join(format!("IM{k:02}.dcm")))
            .unwrap();
    }
    let out = std::process::Command::new(BIN)
        .args(["analyze", "--json"])
        .arg(dir.path())
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let v: serde_json::Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("{e}: {}", output_text(&out)));
    // The series was chosen and its 12 frames decoded.
    assert_eq!(v["series"][0]["verdict"], "chosen", "{v}");
    assert_eq!(v["skipped_files"], 0, "{v}");
    assert!(v["timings_ms"]["volume"].as_u64().is_some(), "{v}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let chatter: Vec<&str> = stderr.lines().filter(|l| l.contains("jpeg2k")).collect();
    assert!(
        chatter.is_empty(),
        "{} decoder lines, e.g. {:?}",
        chatter.len(),
        chatter.first()
    );
}
