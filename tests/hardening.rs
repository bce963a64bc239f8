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
    let study = dir.path().join("study");
    phantom::generate_study(
        &study,
        42,
        &Options {
            stages: Some([Stage::S0, Stage::S0]),
            enhanced_t2: Some(false),
            ..Default::default()
        },
    )
    .unwrap();
    // Only DICOM files in the folder (truth.json would count as skipped too).
    std::fs::remove_file(study.join("truth.json")).unwrap();
    // Append the bomb after Pixel Data of one T2 slice.
    let t2: Vec<PathBuf> = files_under(&study)
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("t2"))
        .collect();
    assert!(!t2.is_empty());
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

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else if p.extension().is_some_and(|x| x == "dcm") {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// A study whose analysis kills the process (simulated OOM kills: SIGKILL while the
/// worker is analysing it) is analysed at most twice, then recorded once as an `error`
/// with the reason, and alerted like an indeterminate call.
#[test]
fn a_study_that_kills_the_analysis_ends_as_one_error_after_two_attempts() {
    let port = receivers::free_port();
    let mut d = Daemon::start(&format!(
        "[notify]\nindeterminate = true\n[[notify.webhook]]\nname = \"ortho\"\nurl = \"http://127.0.0.1:{port}/hook\"\nsecret = \"s\"\n"
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
    // Not analysed again.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(d.count("SELECT COUNT(*) FROM analyses"), 1);
    d.assert_serving();
}
