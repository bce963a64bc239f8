//! The panel's end of the serial protocol, as a firmware would implement it: reassembles
//! frames from RECT messages into a back buffer, presents it on SHOW, answers HELLO with
//! its size, acknowledges, and rejects (NAK) anything corrupted, out of bounds or out of
//! sequence — after which it presents nothing until the next clean update. Silent for
//! [`SILENCE_TIMEOUT_SECS`](super::protocol::SILENCE_TIMEOUT_SECS), it shows "no
//! connection" instead of the last result. Tests drive it over a pty.

use std::time::{Duration, Instant};

use super::protocol::{Deframer, Message, SILENCE_TIMEOUT_SECS, VERSION, nak};
use super::{Frame, HEIGHT, WIDTH};

/// A simulated panel.
pub struct Simulator {
    back: Frame,
    shown: Frame,
    deframer: Deframer,
    expected: Option<u8>,
    damaged: bool,
    last_valid: Option<Instant>,
    /// Updates presented.
    pub presented: usize,
    /// NAKs sent.
    pub rejected: usize,
}

impl Default for Simulator {
    fn default() -> Self {
        Simulator {
            back: Frame::new(WIDTH, HEIGHT),
            shown: Frame::new(WIDTH, HEIGHT),
            deframer: Deframer::default(),
            expected: None,
            damaged: false,
            last_valid: None,
            presented: 0,
            rejected: 0,
        }
    }
}

impl Simulator {
    fn nak(&mut self, seq: u8, reason: u8) -> Message {
        self.damaged = true;
        self.expected = None;
        self.rejected += 1;
        Message::Nak { seq, reason }
    }

    fn handle(&mut self, m: Message, now: Instant) -> Option<Message> {
        let seq = m.seq();
        if !matches!(m, Message::Hello { .. }) {
            if let Some(e) = self.expected {
                if seq != e {
                    return Some(self.nak(e, nak::SEQUENCE));
                }
            }
        }
        self.expected = Some(seq.wrapping_add(1));
        self.last_valid = Some(now);
        match m {
            Message::Hello { .. } => {
                self.damaged = false;
                Some(Message::Info {
                    seq,
                    version: VERSION,
                    width: WIDTH as u16,
                    height: HEIGHT as u16,
                    format: 1,
                })
            }
            Message::Rect {
                x, y, w, h, pixels, ..
            } => {
                if !self
                    .back
                    .blit(x as usize, y as usize, w as usize, h as usize, &pixels)
                {
                    return Some(self.nak(seq, nak::OUT_OF_BOUNDS));
                }
                None
            }
            Message::Show { .. } => {
                if self.damaged {
                    // Something in this update was lost: keep the old picture, ask again.
                    self.damaged = false;
                    self.rejected += 1;
                    return Some(Message::Nak {
                        seq,
                        reason: nak::SEQUENCE,
                    });
                }
                self.shown = self.back.clone();
                self.presented += 1;
                Some(Message::Ack { seq })
            }
            Message::Heartbeat { .. } => Some(Message::Ack { seq }),
            // Panel-to-host messages are not for us.
            _ => Some(self.nak(seq, nak::MALFORMED)),
        }
    }

    /// Feed bytes from the wire at `now`; returns the bytes to send back.
    pub fn feed(&mut self, bytes: &[u8], now: Instant) -> Vec<u8> {
        let mut out = Vec::new();
        for f in self.deframer.push(bytes) {
            let reply = match Message::decode(&f) {
                Ok(m) => self.handle(m, now),
                Err(e) => {
                    let seq = self.expected.unwrap_or(0);
                    let reason = match e {
                        super::protocol::DecodeError::Malformed(_) => nak::MALFORMED,
                        _ => nak::CRC,
                    };
                    Some(self.nak(seq, reason))
                }
            };
            if let Some(r) = reply {
                out.extend(r.encode());
            }
        }
        out
    }

    /// What the screen shows at `now`.
    pub fn screen(&self, now: Instant) -> Frame {
        match self.last_valid {
            Some(t) if now.duration_since(t) <= Duration::from_secs(SILENCE_TIMEOUT_SECS) => {
                self.shown.clone()
            }
            _ => super::render_no_connection(),
        }
    }
}
