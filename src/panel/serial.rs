//! The appliance's end of the serial panel protocol: sends the changed rectangles of each
//! new frame, waits for the panel to acknowledge the update, and falls back to a full frame
//! whenever the panel rejects something or does not answer. Generic over the port so that
//! tests can put a fault injector between it and a pty.

use std::io::{ErrorKind, Read, Write};
use std::time::{Duration, Instant};

use super::Frame;
use super::protocol::{Deframer, Message, VERSION, rect_messages};

/// Why the link failed.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The port failed (unplugged, closed).
    #[error("serial port: {0}")]
    Io(#[from] std::io::Error),
    /// The panel did not answer in time.
    #[error("panel did not answer within {0:?}")]
    Timeout(Duration),
    /// The panel kept rejecting the update.
    #[error("panel rejected the update (reason {0})")]
    Rejected(u8),
    /// The panel is not a panel this build can drive.
    #[error("panel speaks protocol {version}, format {format}, {width}x{height}")]
    Unsupported {
        /// Its version.
        version: u8,
        /// Its pixel format.
        format: u8,
        /// Its width.
        width: u16,
        /// Its height.
        height: u16,
    },
}

/// What one update cost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UpdateStats {
    /// Bytes written (all attempts).
    pub bytes: usize,
    /// RECT messages written.
    pub rects: usize,
    /// Whether a full frame had to be sent (first update, or after a rejection).
    pub full: bool,
    /// Full-frame retransmissions after a rejection or a missing acknowledgement.
    pub resyncs: usize,
}

impl UpdateStats {
    /// Time on the wire at `baud` (8N1: 10 bits per byte), seconds.
    pub fn wire_secs(&self, baud: u32) -> f64 {
        self.bytes as f64 * 10.0 / baud as f64
    }
}

/// A connected serial panel.
pub struct SerialLink<P: Read + Write> {
    port: P,
    seq: u8,
    deframer: Deframer,
    /// The frame the panel last acknowledged.
    shown: Option<Frame>,
    timeout: Duration,
    baud: u32,
}

/// Open a serial device (8N1, no flow control) and greet the panel.
pub fn open(
    path: &str,
    baud: u32,
    timeout: Duration,
) -> Result<SerialLink<Box<dyn serialport::SerialPort>>, LinkError> {
    let port = serialport::new(path, baud)
        .timeout(Duration::from_millis(20))
        .open()
        .map_err(|e| LinkError::Io(std::io::Error::other(format!("{path}: {e}"))))?;
    let mut link = SerialLink::new(port, timeout);
    link.baud = baud;
    link.hello()?;
    Ok(link)
}

impl<P: Read + Write> SerialLink<P> {
    /// Wrap a port (reads must time out rather than block forever). `timeout` bounds each
    /// wait for an answer, on top of the time the bytes take on the wire.
    pub fn new(port: P, timeout: Duration) -> Self {
        SerialLink {
            port,
            seq: 0,
            deframer: Deframer::default(),
            shown: None,
            timeout,
            baud: 921_600,
        }
    }

    /// The port (tests reach their fault injector through it).
    pub fn port_mut(&mut self) -> &mut P {
        &mut self.port
    }

    fn next_seq(&mut self) -> u8 {
        let s = self.seq;
        self.seq = self.seq.wrapping_add(1);
        s
    }

    fn send(&mut self, m: &Message) -> Result<usize, LinkError> {
        let bytes = m.encode();
        self.port.write_all(&bytes)?;
        Ok(bytes.len())
    }

    /// Read replies until one for `seq` arrives (ACK, INFO or NAK); an earlier NAK in the
    /// same wait is reported as the result.
    fn wait(&mut self, seq: u8, budget: Duration) -> Result<Message, LinkError> {
        self.wait_for(seq, budget, true)
    }

    /// [`SerialLink::wait`]; with `naks_count` false, NAKs are ignored (a greeting's own
    /// flush makes the panel NAK the half-frame it held).
    fn wait_for(
        &mut self,
        seq: u8,
        budget: Duration,
        naks_count: bool,
    ) -> Result<Message, LinkError> {
        self.port.flush()?;
        let deadline = Instant::now() + budget;
        let mut rejected = None;
        let mut buf = [0u8; 256];
        while Instant::now() < deadline {
            let n = match self.port.read(&mut buf) {
                Ok(0) => {
                    std::thread::sleep(Duration::from_millis(2));
                    continue;
                }
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::TimedOut | ErrorKind::WouldBlock | ErrorKind::Interrupted
                    ) =>
                {
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            for f in self.deframer.push(&buf[..n]) {
                match Message::decode(&f) {
                    Ok(Message::Nak { reason, .. }) if naks_count => rejected = Some(reason),
                    Ok(m @ (Message::Ack { .. } | Message::Info { .. })) if m.seq() == seq => {
                        return match rejected {
                            Some(r) => Err(LinkError::Rejected(r)),
                            None => Ok(m),
                        };
                    }
                    // Stale replies and line noise are ignored; the ACK decides.
                    _ => {}
                }
            }
        }
        Err(match rejected {
            Some(r) => LinkError::Rejected(r),
            None => LinkError::Timeout(budget),
        })
    }

    /// Greet the panel; returns its size. A new greeting forgets what the panel shows.
    pub fn hello(&mut self) -> Result<(u16, u16), LinkError> {
        // A delimiter first flushes whatever partial frame the panel was assembling.
        self.port.write_all(&[0])?;
        let seq = self.next_seq();
        self.send(&Message::Hello {
            seq,
            version: VERSION,
        })?;
        self.shown = None;
        match self.wait_for(seq, self.timeout, false)? {
            Message::Info {
                version,
                width,
                height,
                format,
                ..
            } if version == VERSION
                && format == 1
                && width as usize == super::WIDTH
                && height as usize == super::HEIGHT =>
            {
                Ok((width, height))
            }
            Message::Info {
                version,
                width,
                height,
                format,
                ..
            } => Err(LinkError::Unsupported {
                version,
                format,
                width,
                height,
            }),
            _ => Err(LinkError::Timeout(self.timeout)),
        }
    }

    fn send_update(
        &mut self,
        frame: &Frame,
        full: bool,
        stats: &mut UpdateStats,
    ) -> Result<(), LinkError> {
        let rects = frame.dirty_rects(if full { None } else { self.shown.as_ref() });
        let mut seq = self.seq;
        let msgs = rect_messages(frame, &rects, &mut seq);
        self.seq = seq;
        for m in &msgs {
            stats.bytes += self.send(m)?;
        }
        stats.rects += msgs.len();
        let show = self.next_seq();
        stats.bytes += self.send(&Message::Show { seq: show })?;
        // The bytes take their time on the wire before the panel can answer.
        let wire = Duration::from_secs_f64(stats.wire_secs(self.baud));
        self.wait(show, self.timeout + wire)?;
        Ok(())
    }

    /// Show `frame`: its changes since the last acknowledged frame, or all of it; after a
    /// rejection or a missing acknowledgement, the full frame again (twice at most).
    pub fn update(&mut self, frame: &Frame) -> Result<UpdateStats, LinkError> {
        let mut stats = UpdateStats {
            full: self.shown.is_none(),
            ..Default::default()
        };
        let mut full = self.shown.is_none();
        let mut last = None;
        for attempt in 0..3 {
            if attempt > 0 {
                stats.resyncs += 1;
                stats.full = true;
                full = true;
                // Greet again: the panel drops its half-frame and damage mark, and takes
                // the new sequence numbers as its base.
                if let Err(e) = self.hello() {
                    self.shown = None;
                    return Err(e);
                }
            }
            match self.send_update(frame, full, &mut stats) {
                Ok(()) => {
                    self.shown = Some(frame.clone());
                    return Ok(stats);
                }
                Err(e @ LinkError::Io(_)) => {
                    self.shown = None;
                    return Err(e);
                }
                Err(e) => {
                    self.shown = None;
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or(LinkError::Timeout(self.timeout)))
    }

    /// Tell the panel the appliance is alive.
    pub fn heartbeat(&mut self, uptime_secs: u32) -> Result<(), LinkError> {
        let seq = self.next_seq();
        self.send(&Message::Heartbeat {
            seq,
            uptime: uptime_secs,
        })?;
        self.wait(seq, self.timeout).map(|_| ())
    }
}
