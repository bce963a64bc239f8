//! The daemon as installed: time from start to READY (systemd notification), resident
//! memory idle and at peak, and time from the last instance of a study to its alert at a
//! webhook, minus the quiet period.
//!
//! ```text
//! cargo build --release && cargo run --release --example bench_daemon
//! ```
//! Needs DCMTK's `/usr/bin/storescu`. Runs `target/release/onfh-edge serve` on loopback
//! with a temporary state directory, a 2 s quiet period and a loopback webhook receiver.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use onfh_edge::phantom::{self, Options, anatomy::Stage};

fn rss_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files_under(&p, out);
        } else if p.extension().is_some_and(|x| x == "dcm") {
            out.push(p);
        }
    }
}

fn main() {
    let bin = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("onfh-edge");
    assert!(
        bin.exists(),
        "build the binary first: cargo build --release"
    );
    let dir = tempfile::tempdir().unwrap();
    // Webhook receiver: records when the first alert arrives.
    let hook = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hook_port = hook.local_addr().unwrap().port();
    let (tx, rx) = std::sync::mpsc::channel::<Instant>();
    std::thread::spawn(move || {
        for s in hook.incoming().flatten() {
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut len = 0;
            let mut line = String::new();
            while r.read_line(&mut line).is_ok_and(|n| n > 0) && line.trim_end() != "" {
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
                line.clear();
            }
            let mut body = vec![0; len];
            let _ = r.read_exact(&mut body);
            let _ = tx.send(Instant::now());
            let mut w = s;
            let _ =
                w.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = dir.path().join("site.toml");
    std::fs::write(
        &cfg,
        format!(
            "[receiver]\nlisten = \"127.0.0.1:{port}\"\nmin_free_bytes = 0\n[series]\nquiet_period_secs = 2\n[storage]\nstate_dir = {:?}\n[[notify.webhook]]\nname = \"bench\"\nurl = \"http://127.0.0.1:{hook_port}/\"\nsecret = \"s\"\n",
            dir.path().join("state").display().to_string()
        ),
    )
    .unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let start = Instant::now();
    let mut child = Command::new(&bin)
        .args(["serve", "--config"])
        .arg(&cfg)
        .env("NOTIFY_SOCKET", &sock_path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 4096];
    loop {
        let n = sock.recv(&mut buf).expect("no READY within 60 s");
        if String::from_utf8_lossy(&buf[..n]).contains("READY=1") {
            break;
        }
    }
    let ready = start.elapsed();
    std::thread::sleep(Duration::from_secs(3));
    let idle = rss_kib(child.id(), "VmRSS:");

    let study = dir.path().join("study");
    phantom::generate_study(
        &study,
        9_000_101,
        &Options {
            stages: Some([Stage::S0, Stage::S2]),
            style: Some("philips-like 1.5T"),
            ..Default::default()
        },
    )
    .unwrap();
    let mut files = Vec::new();
    files_under(&study, &mut files);
    let out = Command::new("/usr/bin/storescu")
        .args(["-aec", "ONFH_EDGE", "127.0.0.1"])
        .arg(port.to_string())
        .args(&files)
        .output()
        .expect("storescu (install dcmtk)");
    let last = Instant::now();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let alert = rx
        .recv_timeout(Duration::from_secs(120))
        .expect("no alert within 120 s");
    let peak = rss_kib(child.id(), "VmHWM:");
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
    let latency = alert.duration_since(last).as_secs_f64() - 2.0;
    println!(
        "bench_daemon: onfh-edge serve on loopback, one bilateral phantom study ({} files)",
        files.len()
    );
    println!(
        "start to READY (models loaded, port listening)   {:>8.0} ms",
        ready.as_secs_f64() * 1000.0
    );
    println!(
        "last instance to alert, minus 2 s quiet period   {:>8.0} ms",
        latency * 1000.0
    );
    println!(
        "RSS idle                                         {:>8.1} MiB",
        idle as f64 / 1024.0
    );
    println!(
        "RSS peak (VmHWM, through the analysis)           {:>8.1} MiB",
        peak as f64 / 1024.0
    );
}
