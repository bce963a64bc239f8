//! Spool retention: `onfh-edge purge` deletes received files past the retention period and
//! their instance rows and the results folders (heatmaps, T2 copies) past the same period,
//! keeps studies, series, analyses and findings, logs the purge in the
//! audit table, and a re-sent instance is stored again afterwards. An instance sent again
//! before a purge restarts its retention period instead of being purged right after it
//! was acknowledged, and `purge` refuses to run beside the daemon (which purges by itself,
//! under its receiver's lock).

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::*;
use std::process::Command;

/// Send one series of `n` instances of `study` and wait until the daemon indexed them.
fn store_series(d: &Daemon, dir: &std::path::Path, study: &str, n: usize) -> Vec<PathBuf> {
    let files: Vec<PathBuf> = mr_series(dir, study, 1, n, 64)
        .iter()
        .map(|i| i.path.clone())
        .collect();
    let (log, ok) = storescu(d.port, &[], &files);
    assert!(ok, "{log}");
    assert!(wait_until(Duration::from_secs(20), || d
        .count("SELECT COUNT(*) FROM instances")
        == n as i64));
    files
}

#[test]
fn purge_deletes_old_files_and_keeps_results() {
    let mut d = Daemon::start("");
    let dir = tempfile::tempdir().unwrap();
    let study = new_uid();
    let files = store_series(&d, dir.path(), &study, 6);
    d.sigterm();
    assert_eq!(d.committed_files().len(), 6);

    // A result for the study, as the pipeline would record it.
    let store = onfh_edge::store::Store::open(&d.state_dir().join("onfh-edge.sqlite3")).unwrap();
    let mut a: onfh_edge::pipeline::Analysis =
        serde_json::from_str(include_str!("fixtures/analysis_example.json")).unwrap();
    a.study_instance_uid = study.clone();
    store
        .record_analysis(&onfh_edge::store::JobKey::parse("job-1"), &a, &[], 0)
        .unwrap();
    // Its results folder, as the worker writes it.
    let job_dir = d.state_dir().join("results").join(&study).join("job-1");
    std::fs::create_dir_all(&job_dir).unwrap();
    std::fs::write(job_dir.join("heatmap.nii.gz"), vec![7u8; 4096]).unwrap();

    // Within the retention period: nothing goes.
    let out = d.cli("purge", &[]);
    assert!(out.contains("purged 0 instance(s)"), "{out}");
    assert!(out.contains("purged 0 results folder(s)"), "{out}");
    assert_eq!(d.committed_files().len(), 6);
    assert!(job_dir.join("heatmap.nii.gz").exists());
    // Everything received so far is older than 0 days.
    let out = d.cli("purge", &["--older-than-days", "0"]);
    assert!(out.contains("purged 6 instance(s)"), "{out}");
    assert!(out.contains("purged 1 results folder(s)"), "{out}");
    assert!(d.committed_files().is_empty());
    assert!(!d.state_dir().join("results").join(&study).exists());
    assert_eq!(
        d.count("SELECT COUNT(*) FROM audit WHERE event = 'results_purged' AND detail LIKE '%\"folders\":1%'"),
        1
    );
    assert_eq!(d.count("SELECT COUNT(*) FROM instances"), 0);
    assert_eq!(d.count("SELECT COUNT(*) FROM series"), 1);
    assert_eq!(d.count("SELECT COUNT(*) FROM analyses"), 1);
    assert_eq!(d.count("SELECT COUNT(*) FROM findings"), 2);
    assert_eq!(
        d.count("SELECT COUNT(*) FROM audit WHERE event = 'spool_purged' AND detail LIKE '%\"instances\":6%'"),
        1
    );

    // The daemon starts cleanly on the purged spool and stores a re-sent instance again.
    d.restart();
    let (log, ok) = storescu(d.port, &[], &files[..1]);
    assert!(ok, "{log}");
    assert!(wait_until(Duration::from_secs(20), || d
        .count("SELECT COUNT(*) FROM instances")
        == 1));
    assert_eq!(d.committed_files().len(), 1);
}

#[test]
fn a_changed_configuration_is_audited_once() {
    let mut d = Daemon::start("");
    let changes = |d: &Daemon| d.count("SELECT COUNT(*) FROM audit WHERE event = 'config_changed'");
    assert_eq!(changes(&d), 1);
    d.sigterm();
    d.restart();
    assert_eq!(changes(&d), 1, "same configuration, no new event");
    d.sigterm();
    let text = std::fs::read_to_string(&d.config_path).unwrap();
    std::fs::write(
        &d.config_path,
        text.replace("quiet_period_secs = 2", "quiet_period_secs = 3"),
    )
    .unwrap();
    d.restart();
    assert_eq!(changes(&d), 2);
}

#[test]
fn an_instance_sent_again_is_kept_for_another_period() {
    let mut d = Daemon::start("");
    let dir = tempfile::tempdir().unwrap();
    let files = store_series(&d, dir.path(), &new_uid(), 2);
    // Both arrived ten days ago, as far as retention can tell.
    let ten_days_ago = onfh_edge::clock::now_ms() - 10 * 86_400_000;
    rusqlite::Connection::open(d.state_dir().join("onfh-edge.sqlite3"))
        .unwrap()
        .execute("UPDATE instances SET received_ms = ?1", [ten_days_ago])
        .unwrap();

    // Beside the running daemon, `purge` refuses and deletes nothing.
    let out = Command::new(BIN)
        .args(["purge", "--older-than-days", "1", "--config"])
        .arg(&d.config_path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("runs only while the daemon is stopped"),
        "{}",
        output_text(&out)
    );
    assert_eq!(d.committed_files().len(), 2);

    // The scanner sends the first instance again: acknowledged as a duplicate, and its
    // retention period starts again.
    let (log, ok) = storescu(d.port, &[], &files[..1]);
    assert!(ok, "{log}");
    assert!(wait_until(Duration::from_secs(10), || d.count(&format!(
        "SELECT COUNT(*) FROM instances WHERE received_ms > {ten_days_ago}"
    )) == 1));
    d.sigterm();
    let out = d.cli("purge", &["--older-than-days", "1"]);
    assert!(out.contains("purged 1 instance(s)"), "{out}");
    assert_eq!(d.count("SELECT COUNT(*) FROM instances"), 1);
    assert_eq!(d.committed_files().len(), 1);
}
