//! The front panel: each state's screen matches its committed picture in `docs/panel/`
//! and the layout's known pixels; the serial protocol over a real pty reconstructs the same
//! image in the simulated panel, sends only changed rectangles for a status change,
//! recovers from a corrupted frame (CRC) with a full frame, survives a disconnected port,
//! and a silent appliance makes the panel say so.
//!
//! `UPDATE_PANEL_DOCS=1 cargo test --test panel` rewrites the pictures.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::FromRawFd;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use onfh_edge::panel::serial::{LinkError, SerialLink};
use onfh_edge::panel::sim::Simulator;
use onfh_edge::panel::{self, ApplianceState, Frame, colour, layout};

fn state_name(s: ApplianceState) -> String {
    serde_json::to_value(s)
        .unwrap()
        .as_str()
        .unwrap()
        .to_string()
}

fn read_png(path: &Path) -> Vec<u8> {
    let dec = png::Decoder::new(std::io::BufReader::new(File::open(path).unwrap()));
    let mut r = dec.read_info().unwrap();
    let mut buf = vec![0; r.output_buffer_size().unwrap()];
    let info = r.next_frame(&mut buf).unwrap();
    assert_eq!((info.width, info.height), (320, 240));
    buf.truncate(info.buffer_size());
    buf
}

fn rgb_bytes(f: &Frame) -> Vec<u8> {
    (0..f.height)
        .flat_map(|y| (0..f.width).flat_map(move |x| f.rgb(x, y)))
        .collect()
}

fn rgb(c: embedded_graphics::pixelcolor::Rgb565) -> [u8; 3] {
    let mut f = Frame::new(1, 1);
    use embedded_graphics::prelude::*;
    f.pixels[0] = c.into_storage();
    f.rgb(0, 0)
}

#[test]
fn every_state_matches_its_documented_picture_and_layout() {
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/panel");
    let update = std::env::var_os("UPDATE_PANEL_DOCS").is_some();
    let mut states: Vec<(String, Frame)> = ApplianceState::ALL
        .iter()
        .map(|s| (state_name(*s), panel::render(&panel::example_state(*s))))
        .collect();
    states.push(("no_connection".into(), panel::render_no_connection()));
    for (name, frame) in &states {
        let path = docs.join(format!("{name}.png"));
        if update {
            std::fs::create_dir_all(&docs).unwrap();
            frame.write_png(&path).unwrap();
        }
        assert!(
            read_png(&path) == rgb_bytes(frame),
            "{} differs from the rendered {name} screen (UPDATE_PANEL_DOCS=1 rewrites it)",
            path.display()
        );
    }
    // Known pixels: the status bar's colour differs per state (a corner free of text), the
    // research banner is always there, and a stage II head carries the early-ONFH marker
    // while a stage 0 head does not.
    let corners: Vec<[u8; 3]> = states[..6].iter().map(|(_, f)| f.rgb(315, 24)).collect();
    for i in 0..corners.len() {
        for j in i + 1..corners.len() {
            assert_ne!(corners[i], corners[j], "two states share a status colour");
        }
    }
    let (bx, by, _, _) = layout::BANNER;
    let result = &states[3].1;
    assert_eq!(
        result.rgb(bx as usize + 2, by as usize + 1),
        rgb(colour::BANNER)
    );
    let (rx, ry, _, _) = layout::head_marker(0);
    let (lx, ly, _, _) = layout::head_marker(1);
    assert_eq!(
        result.rgb(rx as usize + 1, ry as usize + 1),
        rgb(colour::NORMAL)
    );
    assert_eq!(
        result.rgb(lx as usize + 1, ly as usize + 1),
        rgb(colour::EARLY_ONFH)
    );
    // No result yet: no head markers.
    let ready = &states[0].1;
    assert_eq!(
        ready.rgb(lx as usize + 1, ly as usize + 1),
        rgb(colour::BACKGROUND)
    );
    for (_, f) in &states[..6] {
        assert_eq!(f.rgb(bx as usize + 2, by as usize + 1), rgb(colour::BANNER));
    }
}

/// A pty pair: the master for the simulated panel, the slave's path for the appliance.
fn pty() -> (File, String) {
    let (mut master, mut slave) = (0, 0);
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0, "openpty failed");
    let name = unsafe { std::ffi::CStr::from_ptr(libc::ttyname(slave)) }
        .to_string_lossy()
        .into_owned();
    // Raw mode on the master side's line discipline, so bytes pass unchanged.
    unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        libc::tcgetattr(slave, &mut t);
        libc::cfmakeraw(&mut t);
        libc::tcsetattr(slave, libc::TCSANOW, &t);
        libc::close(slave);
    }
    (unsafe { File::from_raw_fd(master) }, name)
}

/// The simulated panel on the master side, on its own thread.
struct Panel {
    sim: Arc<std::sync::Mutex<Simulator>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Panel {
    fn start(mut master: File) -> Panel {
        let sim = Arc::new(std::sync::Mutex::new(Simulator::default()));
        let stop = Arc::new(AtomicBool::new(false));
        unsafe {
            use std::os::fd::AsRawFd;
            let fd = master.as_raw_fd();
            let flags = libc::fcntl(fd, libc::F_GETFL);
            libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
        }
        let (s, st) = (sim.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !st.load(Ordering::SeqCst) {
                match master.read(&mut buf) {
                    Ok(n) if n > 0 => {
                        let reply = s.lock().unwrap().feed(&buf[..n], Instant::now());
                        if !reply.is_empty() {
                            master.write_all(&reply).unwrap();
                        }
                    }
                    _ => std::thread::sleep(Duration::from_millis(1)),
                }
            }
        });
        Panel {
            sim,
            stop,
            thread: Some(thread),
        }
    }

    fn screen(&self) -> Frame {
        self.sim.lock().unwrap().screen(Instant::now())
    }

    /// Unplug: the master side closes.
    fn unplug(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().unwrap().join().unwrap();
    }
}

/// The appliance's port with a fault injector: flips one bit of the `n`-th byte written
/// once armed.
struct Faulty<P> {
    inner: P,
    flip_at: Arc<AtomicUsize>,
}

impl<P: Read> Read for Faulty<P> {
    fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> {
        self.inner.read(b)
    }
}

impl<P: Write> Write for Faulty<P> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        let at = self.flip_at.load(Ordering::SeqCst);
        if at != usize::MAX && at < b.len() {
            let mut c = b.to_vec();
            c[at] ^= 0x04;
            self.flip_at.store(usize::MAX, Ordering::SeqCst);
            self.inner.write_all(&c)?;
            return Ok(b.len());
        } else if at != usize::MAX {
            self.flip_at.store(at - b.len(), Ordering::SeqCst);
        }
        self.inner.write(b)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn open_port(path: &str) -> Box<dyn serialport::SerialPort> {
    serialport::new(path, 921_600)
        .timeout(Duration::from_millis(20))
        .open()
        .unwrap()
}

#[test]
fn the_serial_protocol_round_trips_over_a_pty_and_recovers() {
    let (master, path) = pty();
    let panel = Panel::start(master);
    let flip = Arc::new(AtomicUsize::new(usize::MAX));
    let port = Faulty {
        inner: open_port(&path),
        flip_at: flip.clone(),
    };
    let mut link = SerialLink::new(port, Duration::from_millis(500));
    assert_eq!(link.hello().unwrap(), (320, 240));

    // A full frame: the panel shows exactly what was rendered.
    let result = panel::render(&panel::example_state(ApplianceState::Result));
    let full = link.update(&result).unwrap();
    assert!(full.full);
    assert_eq!(panel.screen(), result);
    // Run-length encoded: far below the 153 600 bytes of raw RGB565.
    assert!(full.bytes < 30_000, "{full:?}");

    // A status change: only the changed rectangles travel.
    let mut s = panel::example_state(ApplianceState::Result);
    s.queue_depth = 1;
    s.clock = "2026-11-28 14:36".into();
    let changed = panel::render(&s);
    let delta = link.update(&changed).unwrap();
    assert!(!delta.full && delta.resyncs == 0);
    assert!(delta.bytes < full.bytes / 5, "{delta:?}");
    assert_eq!(panel.screen(), changed);

    // One corrupted byte in the next update: the panel rejects it (CRC), keeps the old
    // picture, and the appliance resends the whole frame.
    s.alerts_pending = 3;
    let next = panel::render(&s);
    flip.store(40, Ordering::SeqCst);
    let repaired = link.update(&next).unwrap();
    assert_eq!(repaired.resyncs, 1, "{repaired:?}");
    assert!(repaired.full);
    assert_eq!(panel.screen(), next);
    assert!(panel.sim.lock().unwrap().rejected >= 1);

    // Heartbeats are acknowledged.
    link.heartbeat(42).unwrap();

    // Unplugged: the update fails with an error within its timeout, nothing hangs or
    // panics; a new port (the panel plugged in again) works from a full frame.
    panel.unplug();
    let t = Instant::now();
    let err = link.update(&result).unwrap_err();
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t.elapsed()
    );
    assert!(
        matches!(err, LinkError::Io(_) | LinkError::Timeout(_)),
        "{err}"
    );
    let (master, path) = pty();
    let panel = Panel::start(master);
    let mut link = SerialLink::new(open_port(&path), Duration::from_millis(500));
    link.hello().unwrap();
    assert!(link.update(&result).unwrap().full);
    assert_eq!(panel.screen(), result);
    panel.unplug();
}

#[test]
fn a_silent_appliance_makes_the_panel_say_so() {
    let mut sim = Simulator::default();
    let t0 = Instant::now();
    let result = panel::render(&panel::example_state(ApplianceState::Result));
    let mut seq = 1u8;
    let mut wire = onfh_edge::panel::protocol::Message::Hello { seq: 0, version: 1 }.encode();
    for m in onfh_edge::panel::protocol::rect_messages(&result, &[(0, 0, 320, 240)], &mut seq) {
        wire.extend(m.encode());
    }
    wire.extend(onfh_edge::panel::protocol::Message::Show { seq }.encode());
    sim.feed(&wire, t0);
    assert_eq!(sim.screen(t0 + Duration::from_secs(10)), result);
    assert_eq!(
        sim.screen(t0 + Duration::from_secs(16)),
        panel::render_no_connection()
    );
}

#[test]
fn the_panel_thread_never_blocks_and_reconnects_a_panel_that_appears() {
    use onfh_edge::panel::driver::{PanelHandle, PanelSettings};
    let dir = tempfile::tempdir().unwrap();
    // The configured device does not exist yet (panel unplugged at start).
    let link_path = dir.path().join("ttyPANEL");
    let png = dir.path().join("panel.png");
    let handle = PanelHandle::spawn(
        PanelSettings {
            serial_port: link_path.display().to_string(),
            retry_secs: 1,
            ..Default::default()
        },
        Some(png.clone()),
    );
    let state = panel::example_state(ApplianceState::Result);
    let t = Instant::now();
    handle.show(state.clone());
    assert!(t.elapsed() < Duration::from_millis(50), "show() blocked");
    let wait = |what: &str, ok: &dyn Fn() -> bool| {
        let t = Instant::now();
        while !ok() {
            assert!(t.elapsed() < Duration::from_secs(15), "timed out: {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    // The PNG output works without the serial panel; the failure is reported.
    wait("png", &|| png.exists() && handle.status().drawn >= 1);
    assert!(handle.status().last_error.is_some());
    assert!(!handle.status().serial_connected);
    // Plug the panel in: within the retry interval it shows the current screen.
    let (master, path) = pty();
    let sim = Panel::start(master);
    std::os::unix::fs::symlink(&path, &link_path).unwrap();
    wait("serial connect", &|| handle.status().serial_connected);
    wait("panel shows the result", &|| {
        sim.screen() == panel::render(&state)
    });
    // A new state reaches it too.
    let mut next = state.clone();
    next.queue_depth = 2;
    handle.show(next.clone());
    wait("panel shows the update", &|| {
        sim.screen() == panel::render(&next)
    });
    // Unplug: the thread notices (heartbeat or next update) and keeps going.
    sim.unplug();
    handle.show(state.clone());
    wait("disconnect noticed", &|| !handle.status().serial_connected);
    let t = Instant::now();
    handle.show(next);
    assert!(t.elapsed() < Duration::from_millis(50), "show() blocked");
    drop(handle);
}
