//! The panel's own thread: takes the newest [`PanelState`] (never a queue of old ones),
//! draws it, and puts it on every configured output. The caller's [`PanelHandle::show`]
//! only swaps a snapshot under a mutex, so a slow, absent or misbehaving panel can never
//! hold up the pipeline. A serial panel that fails is dropped and reopened every
//! `retry_secs`; with nothing new to show, the serial panel gets a heartbeat.

use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::protocol::HEARTBEAT_SECS;
use super::serial::{self, SerialLink};
use super::{PanelState, render};

/// `[panel]` in the configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PanelSettings {
    /// Serial device of a panel speaking `docs/panel-protocol.md` (e.g. `/dev/ttyTHS1`);
    /// empty = none.
    pub serial_port: String,
    /// Its baud rate.
    pub baud: u32,
    /// Linux framebuffer device (e.g. `/dev/fb0`); empty = none.
    pub framebuffer: String,
    /// A PNG file rewritten on every change (relative paths are under the state
    /// directory); empty = none.
    pub png: String,
    /// Seconds between attempts to reopen a failed serial panel.
    pub retry_secs: u64,
}

impl PanelSettings {
    /// Check `[panel]`; the error names its key.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.baud == 0 {
            return Err(("panel.baud", "must be a positive baud rate".into()));
        }
        Ok(())
    }
}

impl Default for PanelSettings {
    fn default() -> Self {
        PanelSettings {
            serial_port: String::new(),
            baud: 921_600,
            framebuffer: String::new(),
            png: "panel.png".into(),
            retry_secs: 5,
        }
    }
}

/// How the outputs are doing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct OutputStatus {
    /// Screens drawn.
    pub drawn: u64,
    /// Whether a serial panel is connected (false when none is configured).
    pub serial_connected: bool,
    /// The last output error, if the last attempt failed.
    pub last_error: Option<String>,
}

#[derive(Default)]
struct Slot {
    latest: Option<PanelState>,
    stop: bool,
    status: OutputStatus,
}

/// Handle to the panel thread.
pub struct PanelHandle {
    shared: Arc<(Mutex<Slot>, Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl PanelHandle {
    /// Start the thread. `png` is resolved by the caller.
    pub fn spawn(settings: PanelSettings, png: Option<PathBuf>) -> PanelHandle {
        let shared = Arc::new((Mutex::new(Slot::default()), Condvar::new()));
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("panel".into())
            .spawn(move || run(settings, png, s))
            .expect("cannot start the panel thread");
        PanelHandle {
            shared,
            thread: Some(thread),
        }
    }

    /// Show `state` (replacing anything not yet drawn). Returns at once.
    pub fn show(&self, state: PanelState) {
        let (m, cv) = &*self.shared;
        m.lock().unwrap_or_else(|p| p.into_inner()).latest = Some(state);
        cv.notify_one();
    }

    /// How the outputs are doing.
    pub fn status(&self) -> OutputStatus {
        self.shared
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .status
            .clone()
    }
}

impl Drop for PanelHandle {
    fn drop(&mut self) {
        let (m, cv) = &*self.shared;
        m.lock().unwrap_or_else(|p| p.into_inner()).stop = true;
        cv.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

type Link = SerialLink<Box<dyn serialport::SerialPort>>;

fn run(cfg: PanelSettings, png: Option<PathBuf>, shared: Arc<(Mutex<Slot>, Condvar)>) {
    let (m, cv) = &*shared;
    let start = Instant::now();
    let mut link: Option<Link> = None;
    let mut next_open = Instant::now();
    let mut current = None;
    let mut frame = None;
    let mut warned = false;
    let mut drawn = 0u64;
    loop {
        let next = {
            let mut slot = m.lock().unwrap_or_else(|p| p.into_inner());
            if slot.latest.is_none() && !slot.stop {
                slot = cv
                    .wait_timeout(slot, Duration::from_secs(HEARTBEAT_SECS))
                    .map(|(g, _)| g)
                    .unwrap_or_else(|p| p.into_inner().0);
            }
            if slot.stop {
                return;
            }
            slot.latest.take()
        };
        let mut errors = Vec::new();
        if let Some(state) = next.filter(|s| current.as_ref() != Some(s)) {
            let f = render(&state);
            drawn += 1;
            if let Some(p) = &png {
                if let Err(e) = f.write_png(p).and_then(|()| write_state(p, &state)) {
                    errors.push(format!("{}: {e}", p.display()));
                }
            }
            if !cfg.framebuffer.is_empty() {
                if let Err(e) = super::fb::write(std::path::Path::new(&cfg.framebuffer), &f) {
                    errors.push(format!("{}: {e}", cfg.framebuffer));
                }
            }
            current = Some(state);
            frame = Some(f);
            if let Some(l) = link.as_mut() {
                if let Err(e) = l.update(frame.as_ref().expect("just drawn")) {
                    errors.push(format!("serial panel {}: {e}", cfg.serial_port));
                    link = None;
                }
            }
        } else if let Some(l) = link.as_mut() {
            if let Err(e) = l.heartbeat(start.elapsed().as_secs() as u32) {
                errors.push(format!("serial panel {}: {e}", cfg.serial_port));
                link = None;
            }
        }
        if link.is_none() && !cfg.serial_port.is_empty() && Instant::now() >= next_open {
            next_open = Instant::now() + Duration::from_secs(cfg.retry_secs.max(1));
            match serial::open(&cfg.serial_port, cfg.baud, Duration::from_millis(500)) {
                Ok(mut l) => {
                    let shown = frame.as_ref().map(|f| l.update(f));
                    if let Some(Err(e)) = shown {
                        errors.push(format!("serial panel {}: {e}", cfg.serial_port));
                    } else {
                        tracing::info!(port = %cfg.serial_port, "serial panel connected");
                        warned = false;
                        link = Some(l);
                    }
                }
                Err(e) => errors.push(format!("serial panel {}: {e}", cfg.serial_port)),
            }
        }
        if errors.is_empty() {
            warned = false;
        } else if !warned {
            // Once per outage: a missing panel must not flood the journal.
            tracing::warn!(error = %errors.join("; "), "panel output failed; retrying");
            warned = true;
        }
        let mut slot = m.lock().unwrap_or_else(|p| p.into_inner());
        slot.status.drawn = drawn;
        slot.status.serial_connected = link.is_some();
        slot.status.last_error = errors.first().cloned();
    }
}

/// The state behind the PNG, as JSON beside it (`panel.png` → `panel.json`): what the
/// screen shows, in words, for a status page or a script. Replaced atomically.
fn write_state(png: &std::path::Path, state: &PanelState) -> std::io::Result<()> {
    let path = png.with_extension("json");
    let tmp = png.with_extension("json.tmp");
    let text = serde_json::to_vec_pretty(state).map_err(std::io::Error::other)?;
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}
