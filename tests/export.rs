//! Result objects to PACS, with Orthanc (Debian's package, started by the test as its own
//! process on loopback) as the destination: every object of every analysed study arrives
//! once, in the source study, through a PACS outage and a SIGKILL of the daemon; a
//! destination that rejects the association permanently ends `dead`, shows on the panel,
//! and `export retry` puts it back in the queue.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::receivers::free_port;
use common::*;
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use onfh_edge::phantom::anatomy::Stage;
use serde_json::Value;

const ORTHANC: &str = "/usr/sbin/Orthanc";

/// An Orthanc of its own: storage in a temporary folder, loopback only.
struct Orthanc {
    child: Option<Child>,
    http: u16,
    dicom: u16,
    dir: tempfile::TempDir,
}

impl Orthanc {
    fn config(dir: &Path, http: u16, dicom: u16) -> PathBuf {
        let cfg = serde_json::json!({
            "Name": "ONFH-TEST",
            "StorageDirectory": dir.join("db"),
            "IndexDirectory": dir.join("db"),
            "HttpPort": http,
            "DicomPort": dicom,
            "DicomAet": "ORTHANC",
            "RemoteAccessAllowed": false,
            "AuthenticationEnabled": false,
            "DicomCheckCalledAet": true,
            "Plugins": [],
        });
        let path = dir.join("orthanc.json");
        std::fs::write(&path, cfg.to_string()).unwrap();
        path
    }

    /// Ports chosen now; the server is started by [`Orthanc::start`].
    fn new() -> Orthanc {
        Orthanc {
            child: None,
            http: free_port(),
            dicom: free_port(),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn start(&mut self) {
        let cfg = Self::config(self.dir.path(), self.http, self.dicom);
        let log = std::fs::File::create(self.dir.path().join("orthanc.log")).unwrap();
        self.child = Some(
            Command::new(ORTHANC)
                .arg(cfg)
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("start Orthanc (install the orthanc package)"),
        );
        assert!(
            wait_until(Duration::from_secs(30), || self.get("/system").is_some()),
            "Orthanc did not start:\n{}",
            std::fs::read_to_string(self.dir.path().join("orthanc.log")).unwrap_or_default()
        );
    }

    fn get(&self, path: &str) -> Option<Value> {
        ureq::get(&format!("http://127.0.0.1:{}{path}", self.http))
            .timeout(Duration::from_secs(5))
            .call()
            .ok()?
            .into_string()
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
    }

    fn post(&self, path: &str, body: &str) -> Value {
        ureq::post(&format!("http://127.0.0.1:{}{path}", self.http))
            .timeout(Duration::from_secs(5))
            .send_string(body)
            .unwrap()
            .into_string()
            .map(|t| serde_json::from_str(&t).unwrap())
            .unwrap()
    }

    /// Orthanc's ids of the instances with this SOP Instance UID.
    fn lookup(&self, uid: &str) -> Vec<String> {
        self.post("/tools/lookup", uid)
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["Type"] == "Instance")
            .map(|m| m["ID"].as_str().unwrap().to_string())
            .collect()
    }
}

impl Drop for Orthanc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn export_config(o: &Orthanc, called: &str) -> String {
    format!(
        "[export]\nretry_initial_secs = 1\nretry_max_secs = 2\ntimeout_secs = 5\nmax_attempts = 1000\n\
         [[export.destination]]\nname = \"orthanc\"\nae_title = \"{called}\"\nhost = \"127.0.0.1\"\nport = {}\n",
        o.dicom
    )
}

/// (id, analysis, object, state, SOP Instance UID) of every export row.
fn exports(d: &Daemon) -> Vec<(i64, i64, String, String, String)> {
    let db = d.db();
    let mut stmt = db
        .prepare("SELECT id, analysis_id, object, state, sop_instance_uid FROM exports ORDER BY id")
        .unwrap();
    stmt.query_map([], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

fn send_study(d: &Daemon, dir: &Path, seed: u64, stages: [Stage; 2]) -> String {
    let files = phantom_files(dir, seed, stages);
    let study: String = dicom_object::open_file(&files[0])
        .unwrap()
        .element(dicom_dictionary_std::tags::STUDY_INSTANCE_UID)
        .unwrap()
        .to_str()
        .unwrap()
        .trim_end_matches('\0')
        .to_string();
    let (log, ok) = storescu(d.port, &[], &files);
    assert!(ok, "{log}");
    study
}

#[test]
fn every_object_reaches_orthanc_once_through_an_outage_and_a_kill() {
    let mut orthanc = Orthanc::new();
    let mut d = Daemon::start(&export_config(&orthanc, "ORTHANC"));
    let dir = tempfile::tempdir().unwrap();

    // Orthanc is down: the first study's objects wait and are retried.
    let first = send_study(&d, dir.path(), 9_001_001, [Stage::S2, Stage::S0]);
    assert!(
        wait_until(Duration::from_secs(90), || {
            let rows = exports(&d);
            !rows.is_empty()
                && d.count("SELECT COUNT(*) FROM exports WHERE attempts >= 1 AND state = 'pending'")
                    == rows.len() as i64
        }),
        "exports not attempted:\n{}",
        d.log()
    );
    let per_study = exports(&d).len();
    assert_eq!(
        exports(&d).iter().map(|r| r.2.as_str()).collect::<Vec<_>>(),
        ["seg", "pm", "sr", "sc-R", "sc-L"]
    );

    // Orthanc comes up: everything arrives.
    orthanc.start();
    assert!(
        wait_until(Duration::from_secs(30), || d
            .count("SELECT COUNT(*) FROM exports WHERE state = 'sent'")
            == per_study as i64),
        "not sent after the outage:\n{}",
        d.log()
    );

    // A second study, and the daemon killed as soon as its result is recorded.
    let second = send_study(&d, dir.path(), 9_001_002, [Stage::S0, Stage::S1]);
    assert!(wait_until(Duration::from_secs(90), || d
        .count("SELECT COUNT(*) FROM analyses")
        == 2));
    d.sigkill();
    d.restart();
    assert!(
        wait_until(Duration::from_secs(30), || d
            .count("SELECT COUNT(*) FROM exports WHERE state = 'sent'")
            == 2 * per_study as i64),
        "not sent after the restart:\n{}",
        d.log()
    );

    // One more series for the first study: it is analysed again, and the new SR names the
    // first one as its predecessor (new UIDs for every object).
    let extra = dir.path().join("late.dcm");
    {
        let mut obj =
            dicom_object::open_file(&files_under(&dir.path().join("9001001"))[0]).unwrap();
        for (tag, value) in [
            (tags::SERIES_INSTANCE_UID, "2.25.900100199".to_string()),
            (tags::SOP_INSTANCE_UID, "2.25.900100199.1".to_string()),
            (tags::SERIES_DESCRIPTION, "late localizer".to_string()),
        ] {
            obj.put(DataElement::new(tag, VR::UI, PrimitiveValue::from(value)));
        }
        obj.meta_mut().media_storage_sop_instance_uid = "2.25.900100199.1".into();
        obj.write_to_file(&extra).unwrap();
    }
    let (log, ok) = storescu(d.port, &[], &[extra]);
    assert!(ok, "{log}");
    assert!(
        wait_until(Duration::from_secs(90), || d
            .count("SELECT COUNT(*) FROM exports WHERE state = 'sent'")
            == 3 * per_study as i64),
        "the re-analysis was not sent:\n{}",
        d.log()
    );
    let sr_of = |analysis: i64| -> dicom_object::DefaultDicomObject {
        let file: String = d
            .db()
            .query_row(
                "SELECT file FROM exports WHERE analysis_id = ?1 AND object = 'sr'",
                [analysis],
                |r| r.get(0),
            )
            .unwrap();
        dicom_object::open_file(file).unwrap()
    };
    let rows = exports(&d);
    let (first_id, again_id) = (rows[0].1, rows[2 * per_study].1);
    let (old_sr, new_sr) = (sr_of(first_id), sr_of(again_id));
    let uid = |o: &dicom_object::DefaultDicomObject, tag| {
        o.element(tag)
            .unwrap()
            .to_str()
            .unwrap()
            .trim_end_matches('\0')
            .to_string()
    };
    assert_eq!(uid(&new_sr, tags::STUDY_INSTANCE_UID), first);
    assert_ne!(
        uid(&new_sr, tags::SOP_INSTANCE_UID),
        uid(&old_sr, tags::SOP_INSTANCE_UID)
    );
    let predecessor = new_sr
        .element(tags::PREDECESSOR_DOCUMENTS_SEQUENCE)
        .expect("the re-analysis' SR has Predecessor Documents")
        .items()
        .unwrap()[0]
        .element(tags::REFERENCED_SERIES_SEQUENCE)
        .unwrap()
        .items()
        .unwrap()[0]
        .element(tags::REFERENCED_SOP_SEQUENCE)
        .unwrap()
        .items()
        .unwrap()[0]
        .element(tags::REFERENCED_SOP_INSTANCE_UID)
        .unwrap()
        .to_str()
        .unwrap()
        .trim_end_matches('\0')
        .to_string();
    assert_eq!(predecessor, uid(&old_sr, tags::SOP_INSTANCE_UID));
    assert!(
        old_sr
            .element(tags::PREDECESSOR_DOCUMENTS_SEQUENCE)
            .is_err()
    );

    // Each object once in Orthanc, in its source study, sent by our AE title.
    let studies: std::collections::HashMap<i64, &str> = [
        (rows[0].1, first.as_str()),
        (rows[per_study].1, second.as_str()),
        (rows[2 * per_study].1, first.as_str()),
    ]
    .into();
    for (_, analysis, object, _, uid) in &rows {
        let ids = orthanc.lookup(uid);
        assert_eq!(ids.len(), 1, "{object} {uid}: {ids:?}");
        let study = orthanc
            .get(&format!("/instances/{}/study", ids[0]))
            .unwrap();
        assert_eq!(
            study["MainDicomTags"]["StudyInstanceUID"], studies[analysis],
            "{object}"
        );
        let meta = orthanc
            .get(&format!("/instances/{}/metadata?expand", ids[0]))
            .unwrap();
        assert_eq!(meta["RemoteAET"], "ONFH_EDGE", "{meta}");
    }
    let stats = orthanc.get("/statistics").unwrap();
    assert_eq!(stats["CountInstances"], rows.len(), "{stats}");
    // The SR's content reached Orthanc whole: its series says SR.
    let sr = rows.iter().find(|r| r.2 == "sr").unwrap();
    let series = orthanc
        .get(&format!("/instances/{}/series", orthanc.lookup(&sr.4)[0]))
        .unwrap();
    assert_eq!(series["MainDicomTags"]["Modality"], "SR");
}

#[test]
fn a_destination_that_rejects_permanently_ends_dead_and_shows_on_the_panel() {
    let mut orthanc = Orthanc::new();
    orthanc.start();
    let d = Daemon::start(&export_config(&orthanc, "NOT_ORTHANC"));
    let dir = tempfile::tempdir().unwrap();
    send_study(&d, dir.path(), 9_001_003, [Stage::S1, Stage::S0]);
    assert!(
        wait_until(Duration::from_secs(90), || {
            let rows = exports(&d);
            !rows.is_empty() && rows.iter().all(|r| r.3 == "dead")
        }),
        "not given up:\n{}",
        d.log()
    );
    let err: String = d
        .db()
        .query_row("SELECT last_error FROM exports LIMIT 1", [], |r| r.get(0))
        .unwrap();
    assert!(err.contains("permanent"), "{err}");
    assert_eq!(orthanc.get("/statistics").unwrap()["CountInstances"], 0);
    // The panel says so.
    let panel = d.state_dir().join("panel.json");
    assert!(
        wait_until(Duration::from_secs(10), || std::fs::read_to_string(&panel)
            .is_ok_and(|t| t.contains("degraded") && t.contains("PACS"))),
        "{}",
        std::fs::read_to_string(&panel).unwrap_or_default()
    );
    // `export list` shows it; `export retry` puts every dead object back in the queue.
    let cli = |args: &[&str]| {
        let out = Command::new(BIN)
            .args(["export", args[0], "--config"])
            .arg(&d.config_path)
            .args(&args[1..])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", output_text(&out));
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let results = d.cli("results", &[]);
    assert!(results.contains("to orthanc: dead"), "{results}");
    let list = cli(&["list"]);
    assert!(
        list.contains("dead") && list.contains("permanent"),
        "{list}"
    );
    let n = exports(&d).len();
    assert!(cli(&["retry"]).contains(&format!("{n} result object(s) requeued")));
    assert!(d.count("SELECT COUNT(*) FROM audit WHERE event = 'export_requeued'") == n as i64);
}
