//! The appliance end to end: `serve` on loopback with a temporary configuration, DCMTK
//! storescu sends two phantom studies, the daemon analyses each once its series are
//! complete, records the findings in SQLite, shows the last result on the panel (PNG), and
//! a local webhook receiver gets exactly the alerts for the early-ONFH heads.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::receivers::*;
use common::*;
use onfh_edge::phantom::anatomy::Stage;

/// The daemon alerting a local webhook receiver, its panel in a zone 5 h 30 min east of
/// UTC abbreviated XST (so that local time shows).
fn daemon_with_webhook() -> (HttpReceiver, Daemon) {
    let port = free_port();
    let hook = HttpReceiver::start(listen(port), 0);
    let d = Daemon::start_with_env(
        &format!(
            "[notify]\nretry_initial_secs = 1\n[[notify.webhook]]\nname = \"ortho\"\nurl = \"http://127.0.0.1:{port}/hook\"\nsecret = \"s\"\n"
        ),
        &[("TZ", "XST-5:30")],
    );
    (hook, d)
}

#[test]
fn two_studies_are_analysed_recorded_shown_and_alerted() {
    let (hook, mut d) = daemon_with_webhook();
    let dir = tempfile::tempdir().unwrap();
    for (seed, stages) in [
        (9_000_101, [Stage::S0, Stage::S2]),
        (9_000_102, [Stage::S1, Stage::S0]),
    ] {
        let files = phantom_files(dir.path(), seed, stages);
        assert!(!files.is_empty());
        let (log, ok) = storescu(d.port, &[], &files);
        assert!(ok, "{log}");
    }
    assert!(
        wait_until(Duration::from_secs(90), || d
            .count("SELECT COUNT(*) FROM analyses")
            == 2),
        "studies not analysed:\n{}",
        d.log()
    );
    // Findings in SQLite, one row per head.
    assert_eq!(d.count("SELECT COUNT(*) FROM findings"), 4);
    assert_eq!(
        d.count("SELECT COUNT(*) FROM findings WHERE side = 'L' AND stage = 'II'"),
        1,
        "{}",
        d.cli("results", &[])
    );
    let early = d.count("SELECT COUNT(*) FROM findings WHERE early_onfh = 1");
    assert!(early >= 1);
    // Exactly one alert per early-ONFH head, delivered.
    assert!(
        wait_until(Duration::from_secs(30), || hook.accepted().len() as i64
            == early),
        "alerts: {:?}\n{}",
        hook.accepted().len(),
        d.log()
    );
    // Once every row is marked sent, nothing is left to deliver: a repeat would have come
    // before the mark.
    assert!(
        wait_until(Duration::from_secs(30), || d
            .count("SELECT COUNT(*) FROM alerts WHERE state = 'sent'")
            == early),
        "{}",
        d.log()
    );
    assert_eq!(hook.accepted().len() as i64, early, "an alert was repeated");
    // The log counts the alerts each analysis queued.
    let analysed = log_lines_with(&d.log_path, "study analysed");
    let queued: i64 = analysed
        .iter()
        .map(|l| {
            l.split("alerts_queued=")
                .nth(1)
                .and_then(|r| r.split_whitespace().next())
                .and_then(|n| n.parse::<i64>().ok())
                .unwrap_or_else(|| panic!("no alerts_queued in {l:?}"))
        })
        .sum();
    assert_eq!((analysed.len(), queued), (2, early), "{analysed:?}");
    // The panel shows the last result: panel.json (the state behind the screen) names the
    // study analysed last with its heads, and panel.png is exactly that state drawn.
    let (accession, analysed_ms): (String, i64) = d
        .db()
        .query_row(
            "SELECT accession_number, analysed_ms FROM analyses ORDER BY analysed_ms DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    let png = d.state_dir().join("panel.png");
    let json = d.state_dir().join("panel.json");
    let read_state = || -> Option<onfh_edge::panel::PanelState> {
        serde_json::from_slice(&std::fs::read(&json).ok()?).ok()
    };
    // panel.png and panel.json are two files, each replaced atomically but not together: a
    // read can fall between them, so wait for a pair where the PNG is exactly the JSON's
    // state drawn, pixel for pixel.
    let mut shown = None;
    assert!(
        wait_until(Duration::from_secs(15), || {
            let (Some(state), Ok(pixels)) = (read_state(), std::fs::read(&png)) else {
                return false;
            };
            if state.last_study.as_ref().map(|l| l.accession.as_str()) != Some(accession.as_str())
                || rgb_of(&pixels) != rgb_drawn(&state)
            {
                return false;
            }
            shown = Some(state);
            true
        }),
        "panel.png never showed {accession} as panel.json describes it: {:?}",
        read_state()
    );
    let state = shown.unwrap();
    let last = state.last_study.as_ref().unwrap();
    let stored: Vec<(String, String)> = {
        let db = d.db();
        let mut q = db
            .prepare(
                "SELECT side, stage FROM findings WHERE analysis_id = \
                 (SELECT id FROM analyses WHERE accession_number = ?1) ORDER BY side DESC",
            )
            .unwrap();
        q.query_map([&accession], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    let on_panel: Vec<(String, String)> = last
        .heads
        .iter()
        .map(|h| (h.side.to_string(), h.stage.to_string()))
        .collect();
    assert_eq!(on_panel, stored, "heads on the panel");
    let xst = (analysed_ms / 1000 + 5 * 3600 + 30 * 60).rem_euclid(86_400);
    assert_eq!(
        last.time,
        format!("{:02}:{:02}", xst / 3600, xst % 3600 / 60)
    );
    assert!(state.clock.ends_with(" XST"), "clock {}", state.clock);
    let results = d.cli("results", &[]);
    assert!(results.contains("not for clinical use"), "{results}");
    // Heatmaps were written under the state directory.
    // No received image is copied there; the only DICOM files are the result objects.
    assert!(
        files_under(&d.state_dir().join("results"))
            .iter()
            .all(|f| f.parent().is_some_and(|p| p.ends_with("dicom")))
    );
    assert!(
        std::fs::read_dir(d.state_dir().join("results"))
            .unwrap()
            .count()
            == 2
    );
    d.sigterm();
}

/// RGB bytes of a 320 x 240 PNG (empty when it is not one).
fn rgb_of(png_bytes: &[u8]) -> Vec<u8> {
    let Ok(mut reader) = png::Decoder::new(std::io::Cursor::new(png_bytes)).read_info() else {
        return Vec::new();
    };
    let mut buf = vec![0; reader.output_buffer_size().unwrap_or(0)];
    match reader.next_frame(&mut buf) {
        Ok(info) if (info.width, info.height) == (320, 240) => buf,
        _ => Vec::new(),
    }
}

/// RGB bytes of `state` as the panel draws it.
fn rgb_drawn(state: &onfh_edge::panel::PanelState) -> Vec<u8> {
    let frame = onfh_edge::panel::render(state);
    (0..240)
        .flat_map(|y| (0..320).map(move |x| (x, y)))
        .flat_map(|(x, y)| frame.rgb(x, y))
        .collect()
}

#[test]
fn sigkill_around_inference_still_gives_one_result_and_one_alert() {
    let (hook, mut d) = daemon_with_webhook();
    let dir = tempfile::tempdir().unwrap();
    let files = phantom_files(dir.path(), 9_000_101, [Stage::S0, Stage::S2]);
    let (log, ok) = storescu(d.port, &[], &files);
    assert!(ok, "{log}");
    // Kill as soon as every series is complete: the worker is about to start, or in the
    // middle of, the analysis.
    assert!(wait_until(Duration::from_secs(30), || d.count(
        "SELECT COUNT(*) FROM series_jobs WHERE state = 'collecting'"
    ) == 0
        && d.count("SELECT COUNT(*) FROM series_jobs") == 3));
    d.sigkill();
    let before = d.count("SELECT COUNT(*) FROM analyses");
    d.restart();
    assert!(
        wait_until(Duration::from_secs(60), || d
            .count("SELECT COUNT(*) FROM analyses")
            == 1),
        "not analysed after the restart (analyses before the kill: {before}):\n{}",
        d.log()
    );
    assert!(wait_until(Duration::from_secs(30), || hook
        .accepted()
        .len()
        == 1));
    // A third start changes nothing: the study is not analysed or alerted again.
    d.sigterm();
    let starts = log_lines_with(&d.log_path, "worker ready").len();
    d.restart();
    // The positive signal: the restarted worker has looked at the queue (models loaded)
    // and found nothing waiting.
    assert!(
        wait_until(Duration::from_secs(30), || log_lines_with(
            &d.log_path,
            "worker ready"
        )
        .len()
            > starts),
        "{}",
        d.log()
    );
    let last = log_lines_with(&d.log_path, "worker ready").pop().unwrap();
    assert!(last.contains("waiting=0"), "{last}");
    assert_eq!(d.count("SELECT COUNT(*) FROM analyses"), 1);
    assert_eq!(hook.accepted().len(), 1);
    assert_eq!(d.count("SELECT COUNT(*) FROM alerts"), 1);
    eprintln!("analyses recorded before the kill: {before} (0 = the restart did the work)");
}

#[test]
fn sigterm_with_an_open_association_loses_no_acknowledged_instance() {
    let mut d = Daemon::start("");
    let dir = tempfile::tempdir().unwrap();
    let study = new_uid();
    let files: Vec<PathBuf> = mr_series(dir.path(), &study, 1, 150, 512)
        .iter()
        .map(|i| i.path.clone())
        .collect();
    let log_path = dir.path().join("storescu.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut scu = storescu_command(d.port, &[], &files)
        .stdout(std::process::Stdio::from(log.try_clone().unwrap()))
        .stderr(std::process::Stdio::from(log))
        .spawn()
        .unwrap();
    assert!(wait_until(Duration::from_secs(60), || d
        .count("SELECT COUNT(*) FROM instances")
        >= 20));
    let status = d.sigterm();
    let _ = scu.wait();
    assert!(status.success(), "{status:?}\n{}", d.log());
    let acked = stored_ok(&std::fs::read_to_string(&log_path).unwrap());
    assert!(!acked.is_empty());
    // Every acknowledged instance is indexed and on disk.
    let indexed = d.count("SELECT COUNT(*) FROM instances") as usize;
    assert!(
        indexed >= acked.len(),
        "{indexed} indexed < {} acknowledged",
        acked.len()
    );
    assert_eq!(d.committed_files().len(), indexed);
    assert!(d.tmp_files().is_empty());
}
