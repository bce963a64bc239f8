//! Alerts with real receivers on loopback: an HTTP server that speaks for ntfy and a JSON
//! webhook (whose HMAC is checked here, independently), and an SMTP server. A result is
//! recorded with its alerts in one transaction; the receivers are down for the first
//! attempts and still get exactly one accepted alert per finding and channel; a sender
//! process killed between queueing and delivery and started again delivers each exactly
//! once; and neither alert bodies nor info-level logs carry the patient's name or ID.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::receivers::*;

use hmac::{KeyInit, Mac};
use onfh_edge::config::Settings;
use onfh_edge::notify::{self, NtfyChannel, Sender, SmtpChannel, SmtpSecurity, WebhookChannel};
use onfh_edge::phantom::{self, Options, anatomy::Stage};
use onfh_edge::pipeline::{self, Analysis};
use onfh_edge::store::{Recorded, Store};

const SEED: u64 = 9_000_101;
const SECRET: &str = "test webhook secret";

/// A stage II left head, analysed by the shipped models.
fn analysed_study(dir: &Path) -> Analysis {
    let study = dir.join("study");
    phantom::generate_study(
        &study,
        SEED,
        &Options {
            stages: Some([Stage::S0, Stage::S2]),
            style: Some("philips-like 1.5T"),
            ..Default::default()
        },
    )
    .unwrap();
    let settings = Settings::load_optional(None).unwrap();
    let models = pipeline::Models::load(&settings.analysis, &settings.preprocess).unwrap();
    let a = pipeline::analyze(
        &[study],
        &models,
        &settings.analysis,
        &settings.selection,
        Some(&dir.join("results")),
    );
    assert!(
        a.heads
            .iter()
            .any(|h| h.side == onfh_edge::result::Side::Left
                && h.stage == onfh_edge::result::StageCall::StageII),
        "expected a stage II left head: {a:?}"
    );
    a
}

fn notify_settings(http: u16, smtp: u16) -> notify::NotifySettings {
    notify::NotifySettings {
        retry_initial_secs: 1,
        retry_max_secs: 2,
        timeout_secs: 5,
        ntfy: vec![NtfyChannel {
            name: "ortho-ntfy".into(),
            server: format!("http://127.0.0.1:{http}"),
            topic: "hip-onfh".into(),
            token: Some("tk_test".into()),
        }],
        webhook: vec![WebhookChannel {
            name: "ris-hook".into(),
            url: format!("http://127.0.0.1:{http}/hook"),
            secret: SECRET.into(),
        }],
        smtp: vec![SmtpChannel {
            name: "ortho-mail".into(),
            host: "127.0.0.1".into(),
            port: Some(smtp),
            security: SmtpSecurity::None,
            username: None,
            password: None,
            from: "onfh-edge@example.org".into(),
            to: vec!["ortho@example.org".into()],
        }],
        ..Default::default()
    }
}

fn assert_no_phi(text: &str, what: &str) {
    for phi in [
        format!("PHANTOM^HIP^{SEED:08}"),
        format!("PHANTOM-{SEED:08}"),
        "PHANTOM^HIP".to_string(),
    ] {
        assert!(!text.contains(&phi), "{what} contains {phi:?}:\n{text}");
    }
}

/// Every accepted request, with the webhook's signature verified.
fn check_http(requests: &[Request], keys: &[String]) {
    let mut seen: HashMap<String, usize> = HashMap::new();
    for r in requests {
        let key = if r.path == "/hook" {
            let sig = r.headers.get("x-onfh-signature").expect("signature header");
            let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
            mac.update(r.body.as_bytes());
            let want = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
            assert_eq!(sig, &want, "webhook HMAC does not verify");
            let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
            assert_eq!(v["type"], "onfh-edge.alert");
            assert_eq!(v["alert"]["stage"], "II");
            assert!(
                v["alert"]["intended_use"]
                    .as_str()
                    .unwrap()
                    .contains("not for clinical use")
            );
            r.headers.get("idempotency-key").unwrap().clone()
        } else {
            assert_eq!(r.path, "/hip-onfh");
            assert!(r.headers["title"].contains("left femoral head"), "{r:?}");
            assert!(r.headers["title"].contains("stage II"));
            assert_eq!(r.headers["priority"], "4");
            assert!(r.headers["tags"].contains("stage-II"));
            assert_eq!(r.headers["authorization"], "Bearer tk_test");
            assert!(r.body.contains("not for clinical use"), "{}", r.body);
            assert!(r.body.contains("Accession: PH"), "{}", r.body);
            r.headers.get("x-onfh-alert-key").unwrap().clone()
        };
        assert!(keys.contains(&key), "unknown key {key}");
        *seen.entry(key).or_default() += 1;
        assert_no_phi(&r.body, "an HTTP alert");
    }
    assert!(
        seen.values().all(|n| *n == 1),
        "a key was accepted twice: {seen:?}"
    );
}

#[test]
fn alerts_reach_every_channel_exactly_once_through_outages() {
    let dir = tempfile::tempdir().unwrap();
    let a = analysed_study(dir.path());
    let store = Store::open(&dir.path().join("db.sqlite3")).unwrap();
    let (http, smtp) = (free_port(), free_port());
    let cfg = notify_settings(http, smtp);
    let now = onfh_edge::clock::now_ms();
    let alerts = notify::compose(&cfg, &a, now);
    let early = a.heads.iter().filter(|h| h.early_onfh).count();
    assert_eq!(
        alerts.len(),
        3 * early,
        "one alert per early-ONFH head and channel"
    );
    for al in &alerts {
        assert_no_phi(&al.payload, "a queued alert");
    }
    let first = store
        .record_analysis(
            &onfh_edge::store::JobKey::parse("series-1#1"),
            &a,
            &alerts,
            now,
        )
        .unwrap();
    assert!(matches!(first, Recorded::New(_, n) if n == alerts.len()));
    // The same job recorded again (inference re-run after a restart): nothing new.
    let again = store
        .record_analysis(
            &onfh_edge::store::JobKey::parse("series-1#1"),
            &a,
            &alerts,
            now,
        )
        .unwrap();
    assert_eq!(again, Recorded::Existing(first.id()));
    assert_eq!(store.alert_counts().unwrap().pending, alerts.len() as i64);
    let stored = store.analyses_since(0).unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].analysis, a);

    // Both receivers down: every attempt fails and is rescheduled.
    let sender = Sender::new(store.clone(), cfg.clone());
    let p = sender.run_once(now).unwrap();
    assert_eq!((p.sent, p.retrying, p.dead), (0, alerts.len(), 0));
    // Up again, the HTTP one refusing its first request with 503.
    let h = HttpReceiver::start(listen(http), 1);
    let s = SmtpReceiver::start(listen(smtp));
    let mut passes = 0;
    while store.alert_counts().unwrap().pending > 0 {
        passes += 1;
        assert!(passes < 10, "alerts still pending");
        sender.run_once(now + passes * 3_600_000).unwrap();
    }
    let c = store.alert_counts().unwrap();
    assert_eq!((c.sent, c.dead), (alerts.len() as i64, 0));
    let keys: Vec<String> = alerts.iter().map(|a| a.idempotency_key.clone()).collect();
    let accepted = h.accepted();
    assert_eq!(accepted.len(), 2 * early);
    check_http(&accepted, &keys);
    let mails = s.messages.lock().unwrap().clone();
    assert_eq!(mails.len(), early);
    for raw in &mails {
        // Read back by a real mail parser (Python's email package, RFC 5322 + MIME).
        let parsed = parse_mail(raw);
        assert_eq!(parsed["mime_version"], "1.0", "{raw}");
        assert!(
            parsed["subject"]
                .as_str()
                .unwrap()
                .starts_with("Early ONFH suspected: left femoral head"),
            "{parsed}"
        );
        let plain = parsed["plain"].as_str().unwrap();
        assert!(plain.contains("not for clinical use"), "{plain}");
        // The em dash of the intended-use line survives, in both parts.
        assert!(plain.contains("research demo — trained"), "{plain}");
        assert!(
            parsed["html"]
                .as_str()
                .unwrap()
                .contains("research demo — trained"),
            "{parsed}"
        );
        assert_eq!(parsed["charset"], "utf-8");
        let m = &format!("{raw}\n{plain}");
        let key = keys
            .iter()
            .find(|k| m.contains(&format!("<{k}@onfh-edge>")))
            .expect("Message-ID carries the alert key");
        assert!(
            alerts
                .iter()
                .any(|a| &a.idempotency_key == key && a.channel == "ortho-mail")
        );
        assert_no_phi(m, "an email");
    }
    let rows = store.analyses_since(0).unwrap();
    assert!(
        rows[0]
            .alerts
            .iter()
            .all(|a| a.state == onfh_edge::store::DeliveryState::Sent && a.attempts >= 2)
    );
    // A later job (a late series re-opened the study) that finds the same thing is
    // recorded, and queues no alert again.
    let later = store
        .record_analysis(
            &onfh_edge::store::JobKey::parse("series-1#2"),
            &a,
            &notify::compose(&cfg, &a, now + 1),
            now + 1,
        )
        .unwrap();
    // (and says so: the daemon logs the queued count, not the composed one)
    assert!(matches!(later, Recorded::New(id, 0) if id != first.id()));
    let c = store.alert_counts().unwrap();
    assert_eq!((c.sent, c.pending), (alerts.len() as i64, 0));
}

#[test]
fn a_killed_sender_delivers_exactly_once_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let a = analysed_study(dir.path());
    let state = dir.path().join("state");
    let (http, smtp) = (free_port(), free_port());
    let cfg = notify_settings(http, smtp);
    let store = Store::open(&state.join("onfh-edge.sqlite3")).unwrap();
    let now = onfh_edge::clock::now_ms();
    let alerts = notify::compose(&cfg, &a, now);
    store
        .record_analysis(
            &onfh_edge::store::JobKey::parse("series-7#1"),
            &a,
            &alerts,
            now,
        )
        .unwrap();
    let toml_cfg = format!(
        r#"[storage]
state_dir = {state:?}
[log]
level = "info"
[notify]
retry_initial_secs = 1
retry_max_secs = 2
timeout_secs = 5
[[notify.ntfy]]
name = "ortho-ntfy"
server = "http://127.0.0.1:{http}"
topic = "hip-onfh"
token = "tk_test"
[[notify.webhook]]
name = "ris-hook"
url = "http://127.0.0.1:{http}/hook"
secret = "{SECRET}"
[[notify.smtp]]
name = "ortho-mail"
host = "127.0.0.1"
port = {smtp}
security = "none"
from = "onfh-edge@example.org"
to = ["ortho@example.org"]
"#,
        state = state.display().to_string(),
    );
    let cfg_path = dir.path().join("site.toml");
    std::fs::write(&cfg_path, &toml_cfg).unwrap();
    let send = || {
        Command::new(env!("CARGO_BIN_EXE_onfh-edge"))
            .args(["alerts", "send", "--config"])
            .arg(&cfg_path)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    // Receivers down: the sender retries; kill it hard after its first failed attempts.
    let mut child = send();
    let t = Instant::now();
    while store.analyses_since(0).unwrap()[0]
        .alerts
        .iter()
        .any(|a| a.attempts == 0)
    {
        assert!(t.elapsed() < Duration::from_secs(30), "no attempt was made");
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap();
    let out1 = child.wait_with_output().unwrap();
    assert_eq!(store.alert_counts().unwrap().pending, alerts.len() as i64);
    // Receivers up; a new sender finishes the queue and exits.
    let h = HttpReceiver::start(listen(http), 0);
    let s = SmtpReceiver::start(listen(smtp));
    let out2 = send().wait_with_output().unwrap();
    assert!(
        out2.status.success(),
        "{}",
        String::from_utf8_lossy(&out2.stderr)
    );
    let c = store.alert_counts().unwrap();
    assert_eq!((c.sent, c.pending, c.dead), (alerts.len() as i64, 0, 0));
    let keys: Vec<String> = alerts.iter().map(|a| a.idempotency_key.clone()).collect();
    check_http(&h.accepted(), &keys);
    assert_eq!(
        h.accepted().len() + s.messages.lock().unwrap().len(),
        alerts.len()
    );
    // The logs at info level name channels and alert ids, never the patient.
    for out in [&out1, &out2] {
        let log = String::from_utf8_lossy(&out.stderr);
        assert_no_phi(&log, "the sender's log");
    }
    assert!(String::from_utf8_lossy(&out2.stderr).contains("alert delivered"));
    // `results` shows the finding and its delivered alerts.
    let shown = Command::new(env!("CARGO_BIN_EXE_onfh-edge"))
        .args(["results", "--config"])
        .arg(&cfg_path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(shown.status.success());
    assert!(
        text.contains(&format!("alerts: {} sent, 0 pending, 0 dead", alerts.len())),
        "{text}"
    );
    assert!(text.contains("II"));
    assert_no_phi(&text, "`results`");
}

/// A raw message parsed by Python's email package: subject, MIME-Version, the text/plain
/// and text/html bodies decoded, and the plain part's charset.
fn parse_mail(raw: &str) -> serde_json::Value {
    use std::io::Write;
    let script = r#"
import email, json, sys
from email import policy
m = email.message_from_bytes(sys.stdin.buffer.read(), policy=policy.default)
plain = m.get_body(preferencelist=('plain',))
html = m.get_body(preferencelist=('html',))
print(json.dumps({
    "subject": str(m["subject"]),
    "mime_version": str(m["mime-version"]),
    "plain": plain.get_content() if plain else None,
    "html": html.get_content() if html else None,
    "charset": plain.get_content_charset() if plain else None,
}))
"#;
    let mut child = std::process::Command::new("python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(raw.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    serde_json::from_slice(&out.stdout).unwrap()
}
