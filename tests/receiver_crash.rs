//! Crash safety: SIGKILL while storescu is sending, restart, and nothing acknowledged is
//! lost; series completion still fires after the restart.

mod common;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use common::*;

#[test]
fn sigkill_mid_send_loses_no_acknowledged_instance() {
    let mut d = Daemon::start("");
    let dir = tempfile::tempdir().unwrap();
    let study = new_uid();
    // 512x512 (524 kB each): at about a millisecond or more per instance, 200 take long
    // enough that the kill below lands mid-way.
    let mut all = mr_series(dir.path(), &study, 1, 100, 512);
    all.extend(mr_series(dir.path(), &study, 2, 100, 512));
    let files: Vec<PathBuf> = all.iter().map(|i| i.path.clone()).collect();

    let log_path = dir.path().join("storescu.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut scu = storescu_command(d.port, &[], &files)
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap();

    // Let a good part of the study through, then pull the plug.
    assert!(
        wait_until(Duration::from_secs(60), || d
            .count("SELECT COUNT(*) FROM instances")
            >= 40),
        "storescu did not get going:\n{}",
        d.log()
    );
    d.sigkill();
    let _ = scu.wait().unwrap();
    let scu_log = std::fs::read_to_string(&log_path).unwrap();
    let acknowledged = stored_ok(&scu_log);
    assert!(acknowledged.len() >= 30, "{scu_log}");
    assert!(
        acknowledged.len() < 200,
        "the kill came too late to test anything"
    );

    d.restart();
    // Everything storescu was told "stored" is on disk and in SQLite.
    let db = d.db();
    for path in &acknowledged {
        let inst = all.iter().find(|i| &i.path == path).unwrap();
        let file: String = db
            .query_row(
                "SELECT file_name FROM instances WHERE sop_instance_uid = ?1",
                [&inst.sop_instance_uid],
                |r| r.get(0),
            )
            .unwrap_or_else(|_| panic!("acknowledged {} missing from SQLite", path.display()));
        let stored = d.state_dir().join("spool").join(file);
        let obj = dicom_object::open_file(&stored).expect("acknowledged file is whole");
        let uid = obj
            .element(dicom_dictionary_std::tags::SOP_INSTANCE_UID)
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        assert_eq!(uid.trim_end_matches('\0'), inst.sop_instance_uid);
    }
    // Disk and database agree after the start-up repair; no partial file survives.
    assert!(d.tmp_files().is_empty());
    let indexed = d.count("SELECT COUNT(*) FROM instances") as usize;
    assert_eq!(d.committed_files().len(), indexed);
    assert!(indexed >= acknowledged.len());

    // The interrupted series complete after the restart.
    let series = d.count("SELECT COUNT(*) FROM series");
    assert!(
        wait_until(Duration::from_secs(20), || d
            .count("SELECT COUNT(*) FROM series_jobs WHERE state = 'complete'")
            == series),
        "completion did not fire after restart:\n{}",
        d.log()
    );

    // The sender retries the whole study: everything ends up stored exactly once.
    let (log, ok) = storescu(d.port, &[], &files);
    assert!(ok, "{log}");
    assert_eq!(stored_ok(&log).len(), 200, "{log}");
    assert_eq!(d.count("SELECT COUNT(*) FROM instances"), 200);
    assert_eq!(d.committed_files().len(), 200);
    assert!(wait_until(Duration::from_secs(20), || d.count(
        "SELECT COUNT(*) FROM series_jobs WHERE state = 'complete'"
    ) == 2));

    // A clean stop on SIGTERM exits 0.
    let status = d.sigterm();
    assert!(status.success(), "{status:?}\n{}", d.log());
}
