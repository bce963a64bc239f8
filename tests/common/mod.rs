//! Shared test harness: the real daemon on loopback, DCMTK peers, generated instances.
#![allow(dead_code, unused_imports)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

mod instances;
pub mod raw;
pub mod receivers;
pub use instances::*;

/// The `.dcm` files under `dir`, at any depth, sorted.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
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

/// A phantom study (seed, head stages; the test style) written under `dir`: its DICOM files.
pub fn phantom_files(
    dir: &Path,
    seed: u64,
    stages: [onfh_edge::phantom::anatomy::Stage; 2],
) -> Vec<PathBuf> {
    let study = dir.join(seed.to_string());
    onfh_edge::phantom::generate_study(
        &study,
        seed,
        &onfh_edge::phantom::Options {
            stages: Some(stages),
            style: Some("philips-like 1.5T"),
            ..Default::default()
        },
    )
    .unwrap();
    files_under(&study)
}

pub const BIN: &str = env!("CARGO_BIN_EXE_onfh-edge");
pub const STORESCU: &str = "/usr/bin/storescu";
pub const ECHOSCU: &str = "/usr/bin/echoscu";

/// The real daemon, started as a child process with its own state directory.
pub struct Daemon {
    pub child: Option<Child>,
    pub port: u16,
    pub state: tempfile::TempDir,
    pub config_path: PathBuf,
    pub log_path: PathBuf,
    /// Extra environment of the daemon process (e.g. `TZ`).
    pub env: Vec<(String, String)>,
}

impl Daemon {
    /// Start with `extra` TOML overlaid on the test defaults; ready once C-ECHO works.
    pub fn start(extra: &str) -> Daemon {
        Self::start_with_env(extra, &[])
    }

    /// [`Daemon::start`] with extra environment variables for the daemon process.
    pub fn start_with_env(extra: &str, env: &[(&str, &str)]) -> Daemon {
        let d = Self::start_inner(extra, env);
        d.wait_ready();
        d
    }

    /// Start, ready once the port accepts TCP (for configurations that refuse our echo).
    pub fn start_tcp_ready(extra: &str) -> Daemon {
        Self::start_inner(extra, &[])
    }

    fn start_inner(extra: &str, env: &[(&str, &str)]) -> Daemon {
        let state = tempfile::tempdir().unwrap();
        // The daemon binds port 0 and writes the port it got to daemon.json; `spawn` reads it.
        let port = 0;
        let config_path = state.path().join("test.toml");
        let config = format!(
            "[receiver]\nlisten = \"127.0.0.1:0\"\nmin_free_bytes = 0\nread_timeout_secs = 10\n\n[storage]\nstate_dir = \"{}\"\n\n[series]\nquiet_period_secs = 2\n",
            state.path().join("state").display()
        );
        let config = merge_toml(&config, extra);
        std::fs::write(&config_path, config).unwrap();
        let log_path = state.path().join("daemon.log");
        let mut d = Daemon {
            child: None,
            port,
            state,
            config_path,
            log_path,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        d.spawn();
        d
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .unwrap();
        // Where the daemon listens: `daemon.json` in its state directory, written once it
        // listens, carrying its pid (a file from an earlier run names another process).
        let daemon_file = self.state_dir().join("daemon.json");
        let child = Command::new(BIN)
            .args(["serve", "--config"])
            .arg(&self.config_path)
            .env("RUST_LOG", "info,onfh_edge=debug")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start onfh-edge");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        let pid = self.child.as_ref().unwrap().id();
        self.port = loop {
            let port = std::fs::read(&daemon_file)
                .ok()
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                .filter(|v| v["pid"] == pid)
                .and_then(|v| v["port"].as_u64())
                .map(|p| p as u16);
            if let Some(p) = port {
                break p;
            }
            assert!(self.alive(), "daemon exited:\n{}", self.log());
            assert!(
                Instant::now() < deadline,
                "daemon did not listen:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        };
    }

    /// Wait until C-ECHO succeeds.
    pub fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if echo(self.port, "ECHOSCU", "ONFH_EDGE").status.success() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "daemon did not come up:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn state_dir(&self) -> PathBuf {
        self.state.path().join("state")
    }

    pub fn spool_files(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let spool = self.state_dir().join("spool");
        for sub in std::fs::read_dir(&spool).unwrap() {
            let sub = sub.unwrap();
            if !sub.file_type().unwrap().is_dir() {
                continue;
            }
            for f in std::fs::read_dir(sub.path()).unwrap() {
                out.push(f.unwrap().path());
            }
        }
        out.sort();
        out
    }

    /// Files in the spool's temporary folder (partial receptions).
    pub fn tmp_files(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.state_dir().join("spool/tmp"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect()
    }

    /// Committed instance files (not counting tmp/).
    pub fn committed_files(&self) -> Vec<PathBuf> {
        self.spool_files()
            .into_iter()
            .filter(|p| !p.starts_with(self.state_dir().join("spool/tmp")))
            .collect()
    }

    pub fn db(&self) -> rusqlite::Connection {
        rusqlite::Connection::open_with_flags(
            self.state_dir().join("onfh-edge.sqlite3"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .unwrap()
    }

    pub fn count(&self, sql: &str) -> i64 {
        self.db().query_row(sql, [], |r| r.get(0)).unwrap()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn sigkill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    pub fn sigterm(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("daemon running");
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        c.wait().unwrap()
    }

    pub fn restart(&mut self) {
        assert!(self.child.is_none());
        self.spawn();
        self.wait_ready();
    }

    /// Whether the process is still alive.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// `onfh-edge COMMAND --config <this daemon's> ARGS...`, which must succeed; stdout.
    pub fn cli(&self, command: &str, args: &[&str]) -> String {
        let out = Command::new(BIN)
            .args([command, "--config"])
            .arg(&self.config_path)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `onfh-edge status --json` against this daemon's state.
    pub fn status_json(&self) -> serde_json::Value {
        serde_json::from_str(&self.cli("status", &["--json"])).unwrap()
    }

    /// Assert that the daemon is alive and still answers C-ECHO.
    pub fn assert_serving(&mut self) {
        assert!(self.alive(), "daemon died:\n{}", self.log());
        let out = echo(self.port, "ECHOSCU", "ONFH_EDGE");
        assert!(
            out.status.success(),
            "echo failed after the bad peer:\n{}",
            self.log()
        );
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Overlay `extra` TOML onto `base` TOML the way a site file overlays the defaults.
fn merge_toml(base: &str, extra: &str) -> String {
    let mut a: toml::Table = toml::from_str(base).unwrap();
    onfh_edge::config::merge(&mut a, toml::from_str(extra).unwrap());
    toml::to_string(&a).unwrap()
}

pub fn echo(port: u16, calling: &str, called: &str) -> Output {
    Command::new(ECHOSCU)
        .args([
            "-aet",
            calling,
            "-aec",
            called,
            "-to",
            "5",
            "-ta",
            "5",
            "-td",
            "5",
            "127.0.0.1",
        ])
        .arg(port.to_string())
        .output()
        .expect("run echoscu (install dcmtk)")
}

/// The storescu command line the tests use (verbose, short timeouts).
pub fn storescu_command(port: u16, extra: &[&str], files: &[PathBuf]) -> Command {
    let mut cmd = Command::new(STORESCU);
    cmd.args([
        "-v",
        "-aet",
        "STORESCU",
        "-aec",
        "ONFH_EDGE",
        "-to",
        "10",
        "-ta",
        "10",
        "-td",
        "10",
    ])
    .args(extra)
    .arg("127.0.0.1")
    .arg(port.to_string())
    .args(files);
    cmd
}

/// Run storescu with `files`; returns its combined verbose output and status.
pub fn storescu(port: u16, extra: &[&str], files: &[PathBuf]) -> (String, bool) {
    let out = storescu_command(port, extra, files)
        .output()
        .expect("run storescu (install dcmtk)");
    let mut text = String::from_utf8_lossy(&out.stdout).to_string();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (text, out.status.success())
}

/// From storescu's verbose log: the files whose store response was Success, in order.
pub fn stored_ok(log: &str) -> Vec<PathBuf> {
    let mut current: Option<PathBuf> = None;
    let mut ok = Vec::new();
    for line in log.lines() {
        if let Some(p) = line.strip_prefix("I: Sending file: ") {
            current = Some(PathBuf::from(p.trim()));
        } else if line.starts_with("I: Received Store Response") {
            if line.contains("(Success)") {
                if let Some(p) = current.take() {
                    ok.push(p);
                }
            } else {
                current = None;
            }
        }
    }
    ok
}

/// Store responses that were not Success, as storescu printed them.
pub fn failed_responses(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.starts_with("I: Received Store Response") && !l.contains("(Success)"))
        .map(str::to_string)
        .collect()
}

/// Run a DCMTK tool and assert success.
pub fn run_tool(tool: &str, args: &[&std::ffi::OsStr]) {
    let out = Command::new(tool).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{tool} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Poll `f` until it returns true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}

/// Read lines of the daemon log that mention `needle`.
pub fn log_lines_with(path: &Path, needle: &str) -> Vec<String> {
    let f = std::fs::File::open(path).unwrap();
    BufReader::new(f)
        .lines()
        .map_while(Result::ok)
        .filter(|l| l.contains(needle))
        .collect()
}

/// A finished command's stdout then stderr, as text.
pub fn output_text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
