//! The front panel: what the technologist sees on the box.
//!
//! The panel is drawn from a [`PanelState`] snapshot (the daemon assembles it; this module
//! never queries the database) into a 320 × 240 RGB565 [`Frame`] with embedded-graphics,
//! and shown on any of three outputs: a serial panel ([`serial`], the framed protocol in
//! `docs/panel-protocol.md`), the Linux framebuffer ([`fb`]), or a PNG file (what `demo`
//! and the tests use). [`sim`] is the other end of the serial protocol, as a panel's
//! firmware would implement it, used by the tests to check the bytes on the wire.
//!
//! The screen always says how fresh it is (the clock and the snapshot's age), and a serial
//! panel that stops hearing from the appliance shows "no connection" rather than the last
//! result. Owns pixels, the wire format and [`status`], the policy that turns what the
//! appliance knows into the state it announces; gathering those facts is the daemon's.

pub mod driver;
pub mod fb;
pub mod protocol;
pub mod serial;
pub mod sim;
pub mod status;

use std::path::Path;

use embedded_graphics::mono_font::{MonoFont, MonoTextStyle, ascii};
use embedded_graphics::pixelcolor::raw::RawU16;
use embedded_graphics::pixelcolor::{Rgb565, Rgb888};
use embedded_graphics::prelude::*;
use embedded_graphics::primitives::{PrimitiveStyle, Rectangle};
use embedded_graphics::text::{Baseline, Text};
use serde::{Deserialize, Serialize};

use crate::result::{Side, StageCall, Status};

/// A wall-clock time as the technologist reads it: the system's time zone
/// (`/etc/localtime`, or `TZ`), with the zone's abbreviation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalClock {
    /// "YYYY-MM-DD".
    pub date: String,
    /// "HH:MM".
    pub hhmm: String,
    /// The zone's abbreviation ("CET", "UTC", "+03").
    pub zone: String,
}

/// `ms` since the Unix epoch in the system's local time (glibc's `localtime_r`).
pub fn local_clock(ms: i64) -> LocalClock {
    let secs = ms.div_euclid(1000) as libc::time_t;
    // SAFETY: `tm` is plain data that localtime_r fills; `tm_zone` points at a static,
    // NUL-terminated abbreviation owned by the C library (or is null).
    let tm = unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&secs, &mut tm).is_null() {
            None
        } else {
            Some(tm)
        }
    };
    let Some(tm) = tm else {
        let utc = crate::clock::rfc3339(ms);
        return LocalClock {
            date: utc[..10].to_string(),
            hhmm: utc[11..16].to_string(),
            zone: "UTC".into(),
        };
    };
    let zone = if tm.tm_zone.is_null() {
        String::new()
    } else {
        // SAFETY: see above.
        unsafe { std::ffi::CStr::from_ptr(tm.tm_zone) }
            .to_string_lossy()
            .into_owned()
    };
    LocalClock {
        date: format!(
            "{:04}-{:02}-{:02}",
            tm.tm_year + 1900,
            tm.tm_mon + 1,
            tm.tm_mday
        ),
        hhmm: format!("{:02}:{:02}", tm.tm_hour, tm.tm_min),
        zone,
    }
}

/// Panel width in pixels.
pub const WIDTH: usize = 320;
/// Panel height in pixels.
pub const HEIGHT: usize = 240;

/// What the appliance is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApplianceState {
    /// Listening, nothing in progress.
    Ready,
    /// Instances are arriving: a series is still within its quiet period.
    Receiving,
    /// A study is being analysed.
    Analysing,
    /// Showing the latest result.
    Result,
    /// Working, but something needs attention: alerts or result objects given up on, or
    /// the disk nearly full.
    Degraded,
    /// Not working: the models could not be loaded, or the database cannot be read.
    Error,
}

impl ApplianceState {
    fn label(self) -> &'static str {
        match self {
            ApplianceState::Ready => "READY",
            ApplianceState::Receiving => "RECEIVING",
            ApplianceState::Analysing => "ANALYSING",
            ApplianceState::Result => "RESULT",
            ApplianceState::Degraded => "DEGRADED",
            ApplianceState::Error => "ERROR",
        }
    }

    fn colour(self) -> Rgb565 {
        match self {
            ApplianceState::Ready => Rgb565::new(2, 40, 6),
            ApplianceState::Receiving => Rgb565::new(4, 24, 24),
            ApplianceState::Analysing => Rgb565::new(4, 16, 26),
            ApplianceState::Result => Rgb565::new(8, 20, 12),
            ApplianceState::Degraded => Rgb565::new(30, 36, 0),
            ApplianceState::Error => Rgb565::new(28, 4, 2),
        }
    }

    /// Every state, for documentation and tests.
    pub const ALL: [ApplianceState; 6] = [
        ApplianceState::Ready,
        ApplianceState::Receiving,
        ApplianceState::Analysing,
        ApplianceState::Result,
        ApplianceState::Degraded,
        ApplianceState::Error,
    ];
}

/// One head of the last result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PanelHead {
    /// The head's side.
    pub side: Side,
    /// The stage called.
    pub stage: StageCall,
    /// Stage I or II.
    pub early_onfh: bool,
}

/// The last analysed study.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LastStudy {
    /// Accession Number.
    pub accession: String,
    /// When it was analysed, "HH:MM" in the system's time zone (the clock's).
    pub time: String,
    /// The analysis' outcome.
    pub status: Status,
    /// Heads (right first).
    pub heads: Vec<PanelHead>,
}

/// Everything the panel shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PanelState {
    /// Appliance state.
    pub state: ApplianceState,
    /// A short reason for degraded/error, shown under the state.
    pub detail: Option<String>,
    /// Our AE title.
    pub ae_title: String,
    /// DICOM port.
    pub port: u16,
    /// The last result.
    pub last_study: Option<LastStudy>,
    /// Studies waiting for analysis.
    pub queue_depth: usize,
    /// Alerts not yet delivered (pending).
    pub alerts_pending: i64,
    /// Alerts given up.
    pub alerts_dead: i64,
    /// Free space on the state directory's file system.
    pub disk_free_bytes: u64,
    /// Model names.
    pub model: String,
    /// Clock, "YYYY-MM-DD HH:MM ZONE" in the system's time zone (see [`local_clock`]).
    pub clock: String,
}

/// An RGB565 image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Width.
    pub width: usize,
    /// Height.
    pub height: usize,
    /// Pixels, row-major.
    pub pixels: Vec<u16>,
}

impl Frame {
    /// A black frame.
    pub fn new(width: usize, height: usize) -> Frame {
        Frame {
            width,
            height,
            pixels: vec![0; width * height],
        }
    }

    /// The pixel at (x, y) as RGB888.
    pub fn rgb(&self, x: usize, y: usize) -> [u8; 3] {
        let c = Rgb565::from(RawU16::new(self.pixels[y * self.width + x]));
        let c = Rgb888::from(c);
        [c.r(), c.g(), c.b()]
    }

    /// Write as PNG.
    pub fn write_png(&self, path: &Path) -> std::io::Result<()> {
        let mut canvas = crate::render::Canvas::new(self.width, self.height);
        for y in 0..self.height {
            for x in 0..self.width {
                canvas.set(x, y, self.rgb(x, y));
            }
        }
        canvas.write_png(path)
    }

    /// The rectangles `(x, y, w, h)` where `self` differs from `old`: changed 16 × 16 tiles,
    /// merged along each row of tiles into runs. Everything when the sizes differ.
    pub fn dirty_rects(&self, old: Option<&Frame>) -> Vec<(usize, usize, usize, usize)> {
        const T: usize = 16;
        let Some(old) = old.filter(|o| o.width == self.width && o.height == self.height) else {
            return vec![(0, 0, self.width, self.height)];
        };
        let mut out = Vec::new();
        for ty in (0..self.height).step_by(T) {
            let th = T.min(self.height - ty);
            let mut run: Option<(usize, usize)> = None;
            for tx in (0..self.width).step_by(T) {
                let tw = T.min(self.width - tx);
                let changed = (ty..ty + th).any(|y| {
                    let r = y * self.width + tx;
                    self.pixels[r..r + tw] != old.pixels[r..r + tw]
                });
                match (changed, run) {
                    (true, None) => run = Some((tx, tw)),
                    (true, Some((x, w))) => run = Some((x, w + tw)),
                    (false, Some((x, w))) => {
                        out.push((x, ty, w, th));
                        run = None;
                    }
                    (false, None) => {}
                }
            }
            if let Some((x, w)) = run {
                out.push((x, ty, w, th));
            }
        }
        out
    }

    /// Copy pixels `(x, y, w, h)` from row-major `px` in.
    pub fn blit(&mut self, x: usize, y: usize, w: usize, h: usize, px: &[u16]) -> bool {
        if x + w > self.width || y + h > self.height || px.len() != w * h {
            return false;
        }
        for (r, row) in px.chunks(w.max(1)).enumerate().take(h) {
            let o = (y + r) * self.width + x;
            self.pixels[o..o + w].copy_from_slice(row);
        }
        true
    }
}

impl OriginDimensions for Frame {
    fn size(&self) -> Size {
        Size::new(self.width as u32, self.height as u32)
    }
}

impl DrawTarget for Frame {
    type Color = Rgb565;
    type Error = std::convert::Infallible;

    fn draw_iter<I: IntoIterator<Item = Pixel<Rgb565>>>(
        &mut self,
        pixels: I,
    ) -> Result<(), Self::Error> {
        for Pixel(p, c) in pixels {
            if p.x >= 0 && p.y >= 0 && (p.x as usize) < self.width && (p.y as usize) < self.height {
                self.pixels[p.y as usize * self.width + p.x as usize] = c.into_storage();
            }
        }
        Ok(())
    }
}

/// Colours of the layout.
pub mod colour {
    use embedded_graphics::pixelcolor::Rgb565;
    /// Background.
    pub const BACKGROUND: Rgb565 = Rgb565::new(2, 4, 3);
    /// Normal text.
    pub const TEXT: Rgb565 = Rgb565::new(29, 58, 29);
    /// Dim text.
    pub const DIM: Rgb565 = Rgb565::new(18, 36, 18);
    /// The early-ONFH marker.
    pub const EARLY_ONFH: Rgb565 = Rgb565::new(31, 8, 4);
    /// A head with no finding.
    pub const NORMAL: Rgb565 = Rgb565::new(4, 44, 10);
    /// A head without a confident call.
    pub const INDETERMINATE: Rgb565 = Rgb565::new(30, 40, 0);
    /// The research-demo banner.
    pub const BANNER: Rgb565 = Rgb565::new(31, 50, 0);
}

/// Where things are (pixels), for renderers and tests.
pub mod layout {
    /// Status bar: state word and clock.
    pub const STATUS_BAR: (i32, i32, u32, u32) = (0, 0, 320, 26);
    /// The marker box of head row `i` (0 = right, 1 = left).
    pub const fn head_marker(i: usize) -> (i32, i32, u32, u32) {
        (8, 92 + 30 * i as i32, 22, 22)
    }
    /// The research-demo banner.
    pub const BANNER: (i32, i32, u32, u32) = (0, 222, 320, 18);
}

fn text(f: &mut Frame, s: &str, x: i32, y: i32, font: &MonoFont<'static>, c: Rgb565) {
    let _ = Text::with_baseline(
        s,
        Point::new(x, y),
        MonoTextStyle::new(font, c),
        Baseline::Top,
    )
    .draw(f);
}

fn fill(f: &mut Frame, (x, y, w, h): (i32, i32, u32, u32), c: Rgb565) {
    let _ = Rectangle::new(Point::new(x, y), Size::new(w, h))
        .into_styled(PrimitiveStyle::with_fill(c))
        .draw(f);
}

fn gib(b: u64) -> String {
    format!("{:.1} GB", b as f64 / 1e9)
}

/// Draw `s` on a 320 × 240 frame.
pub fn render(s: &PanelState) -> Frame {
    let mut f = Frame::new(WIDTH, HEIGHT);
    fill(
        &mut f,
        (0, 0, WIDTH as u32, HEIGHT as u32),
        colour::BACKGROUND,
    );
    // Status bar: state in large letters, clock on the right.
    fill(&mut f, layout::STATUS_BAR, s.state.colour());
    text(
        &mut f,
        s.state.label(),
        6,
        3,
        &ascii::FONT_10X20,
        Rgb565::WHITE,
    );
    text(
        &mut f,
        &s.clock,
        320 - 6 - 6 * s.clock.len() as i32,
        8,
        &ascii::FONT_6X10,
        Rgb565::WHITE,
    );
    // Receiver and state detail.
    let ae = format!("AE {}  port {}", s.ae_title, s.port);
    text(&mut f, &ae, 6, 32, &ascii::FONT_7X13, colour::TEXT);
    if let Some(d) = &s.detail {
        let d: String = d.chars().take(45).collect();
        text(&mut f, &d, 6, 48, &ascii::FONT_7X13, colour::INDETERMINATE);
    }
    // Last study.
    match &s.last_study {
        Some(ls) => {
            let head = format!("Last: {}  {}", ls.accession, ls.time);
            text(&mut f, &head, 6, 66, &ascii::FONT_9X15, colour::TEXT);
            if ls.heads.is_empty() {
                text(
                    &mut f,
                    &format!("no result: {}", ls.status),
                    36,
                    96,
                    &ascii::FONT_10X20,
                    colour::INDETERMINATE,
                );
            }
            for (i, h) in ls.heads.iter().take(2).enumerate() {
                let (c, word) = if h.stage == StageCall::Indeterminate {
                    (colour::INDETERMINATE, "?  indeterminate".to_string())
                } else if h.early_onfh {
                    (colour::EARLY_ONFH, format!("{}  EARLY ONFH", h.stage))
                } else {
                    (colour::NORMAL, format!("{}  no ONFH", h.stage))
                };
                let m = layout::head_marker(i);
                fill(&mut f, m, c);
                let side = h.side.as_str();
                text(
                    &mut f,
                    side,
                    m.0 + 6,
                    m.1 + 1,
                    &ascii::FONT_10X20,
                    Rgb565::BLACK,
                );
                text(
                    &mut f,
                    &format!("stage {word}"),
                    38,
                    m.1 + 1,
                    &ascii::FONT_10X20,
                    c,
                );
            }
        }
        None => text(
            &mut f,
            "No study analysed yet",
            6,
            66,
            &ascii::FONT_9X15,
            colour::DIM,
        ),
    }
    // Queue, alerts, disk.
    let q = format!(
        "Queue {}   Alerts waiting {}",
        s.queue_depth, s.alerts_pending
    );
    text(&mut f, &q, 6, 158, &ascii::FONT_7X13, colour::TEXT);
    let dead = s.alerts_dead > 0;
    let d = format!(
        "{}   Disk free {}",
        if dead {
            format!("UNDELIVERED {}", s.alerts_dead)
        } else {
            "Alerts ok".into()
        },
        gib(s.disk_free_bytes)
    );
    text(
        &mut f,
        &d,
        6,
        174,
        &ascii::FONT_7X13,
        if dead {
            colour::EARLY_ONFH
        } else {
            colour::TEXT
        },
    );
    let model: String = s.model.chars().take(53).collect();
    text(&mut f, &model, 6, 194, &ascii::FONT_6X10, colour::DIM);
    text(
        &mut f,
        "models trained on synthetic phantoms only",
        6,
        207,
        &ascii::FONT_6X10,
        colour::DIM,
    );
    // Research demo banner.
    fill(&mut f, layout::BANNER, colour::BANNER);
    text(
        &mut f,
        "RESEARCH DEMO - NOT FOR CLINICAL USE",
        34,
        226,
        &ascii::FONT_7X13,
        Rgb565::BLACK,
    );
    f
}

/// The "no connection" screen a serial panel shows when the appliance falls silent (the
/// simulator draws it; a firmware would draw its own).
pub fn render_no_connection() -> Frame {
    let mut f = Frame::new(WIDTH, HEIGHT);
    fill(
        &mut f,
        (0, 0, WIDTH as u32, HEIGHT as u32),
        ApplianceState::Error.colour(),
    );
    text(
        &mut f,
        "NO CONNECTION",
        95,
        90,
        &ascii::FONT_10X20,
        Rgb565::WHITE,
    );
    text(
        &mut f,
        "to the onfh-edge appliance",
        69,
        118,
        &ascii::FONT_7X13,
        Rgb565::WHITE,
    );
    text(
        &mut f,
        "results shown before are not current",
        34,
        136,
        &ascii::FONT_7X13,
        Rgb565::WHITE,
    );
    f
}

/// A state for examples, documentation and tests.
pub fn example_state(state: ApplianceState) -> PanelState {
    let result = matches!(state, ApplianceState::Result | ApplianceState::Degraded);
    PanelState {
        state,
        detail: match state {
            ApplianceState::Degraded => Some("2 alerts undelivered (ntfy unreachable)".into()),
            ApplianceState::Error => Some("stager weights missing: see the log".into()),
            _ => None,
        },
        ae_title: "ONFH_EDGE".into(),
        port: 104,
        last_study: result.then(|| LastStudy {
            accession: "PH09000101".into(),
            time: "14:32".into(),
            status: Status::Ok,
            heads: vec![
                PanelHead {
                    side: Side::Right,
                    stage: StageCall::Stage0,
                    early_onfh: false,
                },
                PanelHead {
                    side: Side::Left,
                    stage: StageCall::StageII,
                    early_onfh: true,
                },
            ],
        }),
        queue_depth: usize::from(state == ApplianceState::Analysing),
        alerts_pending: if state == ApplianceState::Degraded {
            2
        } else {
            0
        },
        alerts_dead: if state == ApplianceState::Degraded {
            1
        } else {
            0
        },
        disk_free_bytes: 41_200_000_000,
        model: "3dc-yolox-small + 3d-muldensenet-small 0.1.0".into(),
        clock: "2026-11-28 14:35".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The panel's clock reads like `date` on the same machine, in the same time zone.
    #[test]
    fn local_clock_matches_date() {
        for secs in [0i64, 1_700_000_000, 1_795_000_000] {
            let out = std::process::Command::new("date")
                .arg("-d")
                .arg(format!("@{secs}"))
                .arg("+%Y-%m-%d %H:%M %Z")
                .output()
                .expect("date");
            let want = String::from_utf8_lossy(&out.stdout).trim().to_string();
            let c = local_clock(secs * 1000 + 999);
            assert_eq!(format!("{} {} {}", c.date, c.hhmm, c.zone), want);
        }
    }
}
