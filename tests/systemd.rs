//! systemd: the units pass `systemd-analyze verify` with no output (ExecStart pointed at
//! /bin/true, since the binary is not installed here) and `systemd-analyze security
//! --offline=yes` rates the service's exposure at 2.5 or better, also with the Jetson GPU
//! drop-in (`systemd/onfh-edge.service.d/jetson-gpu.conf`); `serve` speaks the
//! notification protocol (READY only once the DICOM port answers, STATUS, WATCHDOG,
//! STOPPING) and takes its listening socket from socket activation.

mod common;

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::receivers::free_port;
use common::{BIN, echo, output_text};

const ANALYZE: &str = "/usr/bin/systemd-analyze";

fn units(dir: &Path) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd");
    for name in ["onfh-edge.service", "onfh-edge.socket"] {
        let text = std::fs::read_to_string(src.join(name)).unwrap();
        std::fs::write(
            dir.join(name),
            text.replace("/usr/bin/onfh-edge", "/bin/true"),
        )
        .unwrap();
    }
}

/// `systemd-analyze verify` says nothing and `security --offline` rates the service at 2.5
/// or better; with `drop_in`, that file is installed as the service's drop-in (found
/// through `SYSTEMD_UNIT_PATH`) and must take effect. Returns the exposure level.
fn verify_and_rate(drop_in: Option<&str>) -> f64 {
    assert!(
        Path::new(ANALYZE).exists(),
        "systemd-analyze is missing (.ci/run installs systemd)"
    );
    let dir = tempfile::tempdir().unwrap();
    units(dir.path());
    if let Some(name) = drop_in {
        let d = dir.path().join("onfh-edge.service.d");
        std::fs::create_dir(&d).unwrap();
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/onfh-edge.service.d");
        std::fs::copy(src.join(name), d.join(name)).unwrap();
    }
    let unit_path = format!("{}:", dir.path().display());
    let out = Command::new(ANALYZE)
        .current_dir(dir.path())
        .env("SYSTEMD_UNIT_PATH", &unit_path)
        .args([
            "verify",
            "--man=no",
            "./onfh-edge.socket",
            "./onfh-edge.service",
        ])
        .output()
        .unwrap();
    let text = output_text(&out);
    assert!(
        out.status.success() && text.trim().is_empty(),
        "verify:\n{text}"
    );

    let out = Command::new(ANALYZE)
        .current_dir(dir.path())
        .env("SYSTEMD_UNIT_PATH", &unit_path)
        .args([
            "security",
            "--offline=yes",
            "--threshold=25",
            "--no-pager",
            "./onfh-edge.service",
        ])
        .output()
        .unwrap();
    let text = output_text(&out);
    let level: f64 = text
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for onfh-edge.service:")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{text}"));
    assert!(out.status.success(), "security (threshold 2.5):\n{text}");
    assert!(level <= 2.5, "exposure {level} > 2.5:\n{text}");
    // Whether the drop-in took effect shows in the device ACL line.
    let no_acl = text
        .lines()
        .any(|l| l.contains("DeviceAllow=") && l.contains("no device ACL"));
    assert_eq!(no_acl, drop_in.is_some(), "device ACL:\n{text}");
    level
}

#[test]
fn units_verify_clean_and_the_service_is_hardened() {
    verify_and_rate(None);
}

/// The service's memory is capped below what an 8 GB Orin can give it, with the soft limit
/// under the hard one.
#[test]
fn the_service_memory_fits_an_8_gb_orin() {
    let unit = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/onfh-edge.service"),
    )
    .unwrap();
    let gib = |key: &str| -> f64 {
        let v = unit
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("{key} missing"));
        let (n, unit) = v.split_at(v.len() - 1);
        let n: f64 = n.parse().unwrap();
        match unit {
            "G" => n,
            "M" => n / 1024.0,
            other => panic!("{key}: unit {other}"),
        }
    };
    let (high, max) = (gib("MemoryHigh"), gib("MemoryMax"));
    assert!(high >= 1.5 && high < max && max <= 4.0, "{high} {max}");
}

/// The Jetson image's drop-in (no device allow-list, W^X off for the CUDA driver) still
/// verifies and keeps the exposure under the threshold.
#[test]
fn the_jetson_gpu_drop_in_verifies_and_stays_hardened() {
    verify_and_rate(Some("jetson-gpu.conf"));
}

fn config(dir: &Path, port: u16) -> std::path::PathBuf {
    let path = dir.join("site.toml");
    std::fs::write(
        &path,
        format!(
            "[receiver]\nlisten = \"127.0.0.1:{port}\"\nmin_free_bytes = 0\n[storage]\nstate_dir = {:?}\n",
            dir.join("state").display().to_string()
        ),
    )
    .unwrap();
    path
}

#[test]
fn serve_notifies_ready_status_watchdog_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let port = free_port();
    let mut child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(config(dir.path(), port))
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "3000000")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut messages = Vec::new();
    let mut buf = [0u8; 4096];
    let mut ready_at = None;
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(30) {
        if let Ok(n) = sock.recv(&mut buf) {
            let m = String::from_utf8_lossy(&buf[..n]).into_owned();
            if m.contains("READY=1") && ready_at.is_none() {
                // READY means the DICOM port already answers.
                assert!(echo(port, "TESTSCU", "ONFH_EDGE").status.success());
                ready_at = Some(messages.len());
            }
            messages.push(m);
        }
        if ready_at.is_some() && messages.iter().filter(|m| m.contains("WATCHDOG=1")).count() >= 2 {
            break;
        }
    }
    let all = messages.join("\n---\n");
    assert!(ready_at.is_some(), "no READY=1:\n{all}");
    assert!(all.contains("STATUS=ready; 0 queued"), "{all}");
    assert!(
        messages.iter().filter(|m| m.contains("WATCHDOG=1")).count() >= 2,
        "watchdog not pinged:\n{all}"
    );
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let t = Instant::now();
    let mut stopping = false;
    while t.elapsed() < Duration::from_secs(10) && !stopping {
        if let Ok(n) = sock.recv(&mut buf) {
            stopping = String::from_utf8_lossy(&buf[..n]).contains("STOPPING=1");
        }
    }
    assert!(stopping, "no STOPPING=1");
    assert!(child.wait().unwrap().success());
}

#[test]
fn serve_takes_the_socket_systemd_passes() {
    let dir = tempfile::tempdir().unwrap();
    let (activated, configured) = (free_port(), free_port());
    let log = dir.path().join("serve.log");
    let mut child = Command::new("/usr/bin/systemd-socket-activate")
        .arg("-l")
        .arg(format!("127.0.0.1:{activated}"))
        .args([BIN, "serve", "--config"])
        .arg(config(dir.path(), configured))
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
        .spawn()
        .unwrap();
    // systemd-socket-activate starts the service on the first connection.
    let t = Instant::now();
    while !echo(activated, "TESTSCU", "ONFH_EDGE").status.success() {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "{}",
            std::fs::read_to_string(&log).unwrap()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("using the listening socket passed by systemd"),
        "{text}"
    );
    // The configured address was not bound.
    assert!(std::net::TcpListener::bind(("127.0.0.1", configured)).is_ok());
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
}
