//! Shared test harness: generated MR instances, the real daemon on loopback, DCMTK peers.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dicom_core::{DataElement, PrimitiveValue, VR, dicom_value};
use dicom_dictionary_std::{tags, uids};
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};

pub const BIN: &str = env!("CARGO_BIN_EXE_onfh-edge");
pub const STORESCU: &str = "/usr/bin/storescu";
pub const ECHOSCU: &str = "/usr/bin/echoscu";

static UID_COUNTER: AtomicU64 = AtomicU64::new(1);

/// A fresh UID under the project's test root, unique within this process and run.
pub fn new_uid() -> String {
    let n = UID_COUNTER.fetch_add(1, Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros();
    format!("1.2.826.0.1.3680043.10.1382.99.{}.{}.{}", std::process::id(), t % 1_000_000_000_000, n)
}

/// One generated instance on disk.
#[derive(Debug, Clone)]
pub struct Instance {
    pub path: PathBuf,
    pub sop_instance_uid: String,
    pub series_uid: String,
    pub study_uid: String,
    pub pixels: Vec<u16>,
}

/// Description of a series to generate.
pub struct SeriesSpec<'a> {
    pub study_uid: &'a str,
    pub series_number: i32,
    pub description: &'a str,
    pub count: usize,
    pub rows: u16,
    pub cols: u16,
    pub sop_class_uid: &'a str,
}

/// Write `spec.count` MR instances (Explicit VR Little Endian) into `dir`.
pub fn write_series(dir: &Path, spec: &SeriesSpec) -> Vec<Instance> {
    std::fs::create_dir_all(dir).unwrap();
    let series_uid = new_uid();
    (0..spec.count)
        .map(|i| {
            let sop = new_uid();
            let (rows, cols) = (spec.rows as usize, spec.cols as usize);
            // A smooth blob plus a per-slice ramp: compressible, and distinct per slice.
            let pixels: Vec<u16> = (0..rows * cols)
                .map(|k| {
                    let (y, x) = ((k / cols) as f32, (k % cols) as f32);
                    let (cy, cx) = (rows as f32 / 2.0, cols as f32 / 2.0);
                    let r2 = ((y - cy).powi(2) + (x - cx).powi(2)) / (cx * cx);
                    (1800.0 * (-r2 * 2.0).exp() + 3.0 * i as f32 + (x + y) * 0.5) as u16
                })
                .collect();
            let z = i as f64 * 3.0;
            let obj = InMemDicomObject::from_element_iter([
                DataElement::new(tags::SOP_CLASS_UID, VR::UI, PrimitiveValue::from(spec.sop_class_uid)),
                DataElement::new(tags::SOP_INSTANCE_UID, VR::UI, PrimitiveValue::from(sop.as_str())),
                DataElement::new(tags::STUDY_INSTANCE_UID, VR::UI, PrimitiveValue::from(spec.study_uid)),
                DataElement::new(tags::SERIES_INSTANCE_UID, VR::UI, PrimitiveValue::from(series_uid.as_str())),
                DataElement::new(tags::MODALITY, VR::CS, PrimitiveValue::from("MR")),
                DataElement::new(tags::ACCESSION_NUMBER, VR::SH, PrimitiveValue::from("TEST0001")),
                DataElement::new(tags::PATIENT_NAME, VR::PN, PrimitiveValue::from("PHANTOM^TEST")),
                DataElement::new(tags::PATIENT_ID, VR::LO, PrimitiveValue::from("PH0001")),
                DataElement::new(tags::SERIES_NUMBER, VR::IS, PrimitiveValue::from(spec.series_number.to_string())),
                DataElement::new(tags::INSTANCE_NUMBER, VR::IS, PrimitiveValue::from((i + 1).to_string())),
                DataElement::new(tags::SERIES_DESCRIPTION, VR::LO, PrimitiveValue::from(spec.description)),
                DataElement::new(
                    tags::IMAGE_POSITION_PATIENT,
                    VR::DS,
                    PrimitiveValue::from(format!("-100\\-100\\{z}")),
                ),
                DataElement::new(tags::IMAGE_ORIENTATION_PATIENT, VR::DS, PrimitiveValue::from("1\\0\\0\\0\\1\\0")),
                DataElement::new(tags::PIXEL_SPACING, VR::DS, PrimitiveValue::from("0.8\\0.8")),
                DataElement::new(tags::SLICE_THICKNESS, VR::DS, PrimitiveValue::from("3")),
                DataElement::new(tags::SAMPLES_PER_PIXEL, VR::US, dicom_value!(U16, [1])),
                DataElement::new(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, PrimitiveValue::from("MONOCHROME2")),
                DataElement::new(tags::ROWS, VR::US, dicom_value!(U16, [spec.rows])),
                DataElement::new(tags::COLUMNS, VR::US, dicom_value!(U16, [spec.cols])),
                DataElement::new(tags::BITS_ALLOCATED, VR::US, dicom_value!(U16, [16])),
                DataElement::new(tags::BITS_STORED, VR::US, dicom_value!(U16, [16])),
                DataElement::new(tags::HIGH_BIT, VR::US, dicom_value!(U16, [15])),
                DataElement::new(tags::PIXEL_REPRESENTATION, VR::US, dicom_value!(U16, [0])),
                DataElement::new(tags::PIXEL_DATA, VR::OW, PrimitiveValue::U16(pixels.clone().into())),
            ]);
            let file = obj
                .with_meta(
                    FileMetaTableBuilder::new()
                        .transfer_syntax("1.2.840.10008.1.2.1")
                        .media_storage_sop_class_uid(spec.sop_class_uid)
                        .media_storage_sop_instance_uid(sop.as_str()),
                )
                .unwrap();
            let path = dir.join(format!("s{}_{:04}.dcm", spec.series_number, i));
            file.write_to_file(&path).unwrap();
            Instance {
                path,
                sop_instance_uid: sop,
                series_uid: series_uid.clone(),
                study_uid: spec.study_uid.to_string(),
                pixels,
            }
        })
        .collect()
}

/// A small MR series in one call.
pub fn mr_series(dir: &Path, study_uid: &str, number: i32, count: usize, size: u16) -> Vec<Instance> {
    write_series(
        dir,
        &SeriesSpec {
            study_uid,
            series_number: number,
            description: "T2 COR",
            count,
            rows: size,
            cols: size,
            sop_class_uid: uids::MR_IMAGE_STORAGE,
        },
    )
}

/// A free loopback port (bound then released; the daemon binds it next).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The real daemon, started as a child process with its own state directory.
pub struct Daemon {
    pub child: Option<Child>,
    pub port: u16,
    pub state: tempfile::TempDir,
    pub config_path: PathBuf,
    pub log_path: PathBuf,
}

impl Daemon {
    /// Start with `extra` TOML overlaid on the test defaults; ready once C-ECHO works.
    pub fn start(extra: &str) -> Daemon {
        let d = Self::start_tcp_ready(extra);
        d.wait_ready();
        d
    }

    /// Start, ready once the port accepts TCP (for configurations that refuse our echo).
    pub fn start_tcp_ready(extra: &str) -> Daemon {
        let state = tempfile::tempdir().unwrap();
        let port = free_port();
        let config_path = state.path().join("test.toml");
        let config = format!(
            "[receiver]\nlisten = \"127.0.0.1:{port}\"\nmin_free_bytes = 0\nread_timeout_secs = 10\n\n[storage]\nstate_dir = \"{}\"\n\n[series]\nquiet_period_secs = 2\n",
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
        let child = Command::new(BIN)
            .args(["serve", "--config"])
            .arg(&self.config_path)
            .env("RUST_LOG", "info,onfh_edge=debug")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start onfh-edge");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "daemon did not listen:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Wait until C-ECHO succeeds.
    pub fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if echo(self.port, "ECHOSCU", "ONFH_EDGE").status.success() {
                return;
            }
            assert!(Instant::now() < deadline, "daemon did not come up:\n{}", self.log());
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

    /// `onfh-edge status --json` against this daemon's state.
    pub fn status_json(&self) -> serde_json::Value {
        let out = Command::new(BIN)
            .args(["status", "--json", "--config"])
            .arg(&self.config_path)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Assert that the daemon is alive and still answers C-ECHO.
    pub fn assert_serving(&mut self) {
        assert!(self.alive(), "daemon died:\n{}", self.log());
        let out = echo(self.port, "ECHOSCU", "ONFH_EDGE");
        assert!(out.status.success(), "echo failed after the bad peer:\n{}", self.log());
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

/// Overlay `extra` TOML onto `base` TOML (tables merge, later keys win).
fn merge_toml(base: &str, extra: &str) -> String {
    fn merge(a: &mut toml::Table, b: toml::Table) {
        for (k, v) in b {
            match (a.get_mut(&k), v) {
                (Some(toml::Value::Table(x)), toml::Value::Table(y)) => merge(x, y),
                (_, v) => {
                    a.insert(k, v);
                }
            }
        }
    }
    let mut a: toml::Table = toml::from_str(base).unwrap();
    merge(&mut a, toml::from_str(extra).unwrap());
    toml::to_string(&a).unwrap()
}

pub fn echo(port: u16, calling: &str, called: &str) -> Output {
    Command::new(ECHOSCU)
        .args(["-aet", calling, "-aec", called, "-to", "5", "-ta", "5", "-td", "5", "127.0.0.1"])
        .arg(port.to_string())
        .output()
        .expect("run echoscu (install dcmtk)")
}

/// Run storescu with `files`; returns its combined verbose output and status.
pub fn storescu(port: u16, extra: &[&str], files: &[PathBuf]) -> (String, bool) {
    let out = Command::new(STORESCU)
        .args(["-v", "-aet", "STORESCU", "-aec", "ONFH_EDGE", "-to", "10", "-ta", "10", "-td", "10"])
        .args(extra)
        .arg("127.0.0.1")
        .arg(port.to_string())
        .args(files)
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
