//! The command line as an integrator meets it: the demo, configuration errors, status.

mod common;

use std::process::Command;

use common::BIN;

#[test]
fn demo_runs_end_to_end_on_embedded_defaults() {
    let out = Command::new(BIN).arg("demo").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("not for clinical use"), "{stdout}");
    // Every file the scanner sent was acknowledged.
    let ack = stdout
        .lines()
        .find(|l| l.contains("acknowledged with status Success"))
        .unwrap_or_else(|| panic!("{stdout}"));
    let words: Vec<&str> = ack.split_whitespace().collect();
    assert_eq!(words[1], words[3], "{ack}");
    assert!(stdout.contains("3 series complete"), "{stdout}");
    // The analysis ran on the stored files: a T2 chosen, the others with reasons, both
    // heads found and staged as the phantom's truth says, heatmaps written.
    assert!(stdout.contains("chosen"), "{stdout}");
    assert!(stdout.contains("localizer (Image Type)"), "{stdout}");
    assert!(stdout.contains("analysis: ok"), "{stdout}");
    let heads: Vec<Vec<&str>> = stdout
        .lines()
        .filter(|l| l.contains("phantom truth: stage"))
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|w| w[0] == "R" || w[0] == "L")
        .collect();
    assert_eq!(heads.len(), 2, "{stdout}");
    for w in &heads {
        // side stage early p0 pI pII det (x, y, z) phantom truth: stage <truth>
        assert_eq!(
            w[1],
            *w.last().unwrap(),
            "predicted vs phantom stage: {w:?}"
        );
    }
    for l in stdout
        .lines()
        .filter(|l| l.trim_start().starts_with("heatmap "))
    {
        let png = l.trim_start().trim_start_matches("heatmap ").trim();
        assert!(std::path::Path::new(png).is_file(), "{png}");
    }
    // Clean up the demo's state folder, named in its last line.
    if let Some(dir) = stdout.lines().last().and_then(|l| l.rsplit(' ').next()) {
        if dir.contains("onfh-edge-demo-") {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

#[test]
fn bad_configuration_is_a_clear_error_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    for (text, key) in [
        ("[receiver]\nmax_pdu = 10\n", "receiver.max_pdu"),
        ("[receiver]\nlisten = \"nowhere\"\n", "receiver.listen"),
        (
            "[series]\nquiet_period_secs = \"soon\"\n",
            "series.quiet_period_secs",
        ),
        (
            "[receiver]\nallowed_peers = [\"x\"]\n",
            "receiver.allowed_peers",
        ),
        ("[reciever]\nae_title = \"X\"\n", "reciever"),
        ("not toml at all [", "not valid TOML"),
    ] {
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, text).unwrap();
        for cmd in ["serve", "check-config"] {
            let out = Command::new(BIN)
                .args([cmd, "--config"])
                .arg(&path)
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{cmd} accepted {text:?}");
            assert!(stderr.contains(key), "{cmd} with {text:?}: {stderr}");
        }
    }
    let out = Command::new(BIN)
        .args(["serve", "--config", "/nonexistent/onfh.toml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/onfh.toml"));
}

#[test]
fn status_without_a_database_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        format!(
            "[storage]\nstate_dir = \"{}\"\n",
            dir.path().join("none").display()
        ),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["status", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no database"));
}

#[test]
fn database_from_a_newer_build_is_refused() {
    let mut d = common::Daemon::start("");
    d.sigterm();
    let db = rusqlite::Connection::open(d.state_dir().join("onfh-edge.sqlite3")).unwrap();
    db.pragma_update(None, "user_version", 999).unwrap();
    drop(db);
    let out = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&d.config_path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("newer than this build"), "{stderr}");
}

#[test]
fn check_config_never_prints_alert_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("site.toml");
    std::fs::write(
        &cfg,
        "[[notify.webhook]]\nname = \"w\"\nurl = \"https://example.org/hook\"\nsecret = \"hook-s3cret\"\n\
         [[notify.ntfy]]\nname = \"n\"\nserver = \"https://ntfy.example.org\"\ntopic = \"t\"\ntoken = \"tk_s3cret\"\n\
         [[notify.smtp]]\nname = \"m\"\nhost = \"smtp.example.org\"\nusername = \"u\"\npassword = \"mail-s3cret\"\n\
         from = \"a@example.org\"\nto = [\"b@example.org\"]\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_onfh-edge"))
        .args(["check-config", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("hook") && text.contains("<redacted>"),
        "{text}"
    );
    assert!(!text.contains("s3cret"), "a secret was printed:\n{text}");
}

/// The shipped models are built into the binary: `analyze` works from any directory, and
/// a models folder that does not hold them is an error naming the setting, said once.
#[test]
fn analyze_runs_from_any_directory_on_the_built_in_models() {
    let dir = tempfile::tempdir().unwrap();
    let study = dir.path().join("study");
    onfh_edge::phantom::generate_study(&study, 9_000_001, &Default::default()).unwrap();
    let out = Command::new(BIN)
        .current_dir("/")
        .args(["analyze", "--json"])
        .arg(&study)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(v["heads"].as_array().map(Vec::len), Some(2), "{v:#}");

    let cfg = dir.path().join("models.toml");
    std::fs::write(&cfg, "[analysis]\nmodels_dir = \"/nonexistent-models\"\n").unwrap();
    let out = Command::new(BIN)
        .current_dir("/")
        .arg("analyze")
        .arg(&study)
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("analysis.models_dir"), "{err}");
    assert_eq!(
        err.matches("/nonexistent-models/3dc-yolox-small.json")
            .count(),
        1,
        "{err}"
    );
}
