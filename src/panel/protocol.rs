//! The serial panel's wire format (specified for firmware authors in
//! `docs/panel-protocol.md`): each message is `COBS(payload ‖ CRC-32(payload) as 4 bytes
//! little-endian)` followed by one `0x00` delimiter; `payload = type, seq, body`.

/// Protocol version sent in HELLO and INFO.
pub const VERSION: u8 = 1;
/// Most pixel bytes in one RECT message.
pub const MAX_RECT_BYTES: usize = 4096;
/// A panel that hears nothing valid for this long shows "no connection".
pub const SILENCE_TIMEOUT_SECS: u64 = 15;
/// The host sends a heartbeat at least this often.
pub const HEARTBEAT_SECS: u64 = 5;

/// NAK reasons.
pub mod nak {
    /// The CRC did not match (or COBS was invalid).
    pub const CRC: u8 = 1;
    /// The message was malformed (length, type).
    pub const MALFORMED: u8 = 2;
    /// A rectangle outside the screen.
    pub const OUT_OF_BOUNDS: u8 = 3;
    /// A sequence number was skipped: something was lost.
    pub const SEQUENCE: u8 = 4;
}

/// A protocol message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Host → panel: who are you (protocol version).
    Hello {
        /// Sequence number.
        seq: u8,
        /// Host's protocol version.
        version: u8,
    },
    /// Host → panel: pixels, RGB565, row-major: type 0x02 raw (2 bytes little-endian per
    /// pixel), type 0x05 run-length (`count` 1-255, then the pixel, per run).
    Rect {
        /// Whether the pixels travel run-length encoded.
        rle: bool,
        /// Sequence number.
        seq: u8,
        /// Left.
        x: u16,
        /// Top.
        y: u16,
        /// Width.
        w: u16,
        /// Height.
        h: u16,
        /// `w · h` pixels.
        pixels: Vec<u16>,
    },
    /// Host → panel: the update is complete; present it and acknowledge.
    Show {
        /// Sequence number.
        seq: u8,
    },
    /// Host → panel: still here (seconds since the host started).
    Heartbeat {
        /// Sequence number.
        seq: u8,
        /// Uptime, seconds.
        uptime: u32,
    },
    /// Panel → host: `seq` received and applied.
    Ack {
        /// The acknowledged sequence number.
        seq: u8,
    },
    /// Panel → host: size and format.
    Info {
        /// Echoed sequence number.
        seq: u8,
        /// Panel's protocol version.
        version: u8,
        /// Width.
        width: u16,
        /// Height.
        height: u16,
        /// 1 = RGB565.
        format: u8,
    },
    /// Panel → host: `seq` rejected; the host resends a full frame.
    Nak {
        /// The rejected (or expected) sequence number.
        seq: u8,
        /// One of [`nak`].
        reason: u8,
    },
}

/// Why bytes were not a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// COBS framing was invalid.
    #[error("invalid COBS framing")]
    Cobs,
    /// The CRC did not match.
    #[error("CRC mismatch")]
    Crc,
    /// Right CRC, wrong content.
    #[error("malformed message: {0}")]
    Malformed(&'static str),
}

/// COBS-encode `data` (no delimiter).
pub fn cobs_encode(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + data.len() / 254 + 2);
    let mut code_at = 0;
    out.push(0);
    let mut code = 1u8;
    for &b in data {
        if b == 0 {
            out[code_at] = code;
            code_at = out.len();
            out.push(0);
            code = 1;
        } else {
            out.push(b);
            code += 1;
            if code == 0xFF {
                out[code_at] = code;
                code_at = out.len();
                out.push(0);
                code = 1;
            }
        }
    }
    out[code_at] = code;
    out
}

/// Decode one COBS block (without its delimiter).
pub fn cobs_decode(data: &[u8]) -> Result<Vec<u8>, DecodeError> {
    let mut out = Vec::with_capacity(data.len());
    let mut i = 0;
    while i < data.len() {
        let code = data[i] as usize;
        let end = i + code;
        if code == 0 || end > data.len() || data[i + 1..end].contains(&0) {
            return Err(DecodeError::Cobs);
        }
        out.extend_from_slice(&data[i + 1..end]);
        i = end;
        if code < 0xFF && i < data.len() {
            out.push(0);
        }
    }
    Ok(out)
}

fn u16le(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}

impl Message {
    /// The sequence number.
    pub fn seq(&self) -> u8 {
        match self {
            Message::Hello { seq, .. }
            | Message::Rect { seq, .. }
            | Message::Show { seq }
            | Message::Heartbeat { seq, .. }
            | Message::Ack { seq }
            | Message::Info { seq, .. }
            | Message::Nak { seq, .. } => *seq,
        }
    }

    /// The payload (type, seq, body).
    pub fn payload(&self) -> Vec<u8> {
        match self {
            Message::Hello { seq, version } => vec![0x01, *seq, *version],
            Message::Rect {
                rle,
                seq,
                x,
                y,
                w,
                h,
                pixels,
            } => {
                let mut p = Vec::with_capacity(10 + 2 * pixels.len());
                p.extend_from_slice(&[if *rle { 0x05 } else { 0x02 }, *seq]);
                for v in [x, y, w, h] {
                    p.extend_from_slice(&v.to_le_bytes());
                }
                if *rle {
                    rle_encode(pixels, &mut p);
                } else {
                    for px in pixels {
                        p.extend_from_slice(&px.to_le_bytes());
                    }
                }
                p
            }
            Message::Show { seq } => vec![0x03, *seq],
            Message::Heartbeat { seq, uptime } => {
                let mut p = vec![0x04, *seq];
                p.extend_from_slice(&uptime.to_le_bytes());
                p
            }
            Message::Ack { seq } => vec![0x80, *seq],
            Message::Info {
                seq,
                version,
                width,
                height,
                format,
            } => {
                let mut p = vec![0x81, *seq, *version];
                p.extend_from_slice(&width.to_le_bytes());
                p.extend_from_slice(&height.to_le_bytes());
                p.push(*format);
                p
            }
            Message::Nak { seq, reason } => vec![0x82, *seq, *reason],
        }
    }

    /// The bytes on the wire, delimiter included.
    pub fn encode(&self) -> Vec<u8> {
        let mut p = self.payload();
        let crc = crc32fast::hash(&p);
        p.extend_from_slice(&crc.to_le_bytes());
        let mut out = cobs_encode(&p);
        out.push(0);
        out
    }

    /// Decode one frame (the bytes between delimiters).
    pub fn decode(frame: &[u8]) -> Result<Message, DecodeError> {
        let p = cobs_decode(frame)?;
        if p.len() < 6 {
            return Err(DecodeError::Crc);
        }
        let (body, crc) = p.split_at(p.len() - 4);
        if crc32fast::hash(body) != u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]) {
            return Err(DecodeError::Crc);
        }
        let (t, seq, b) = (body[0], body[1], &body[2..]);
        let need = |n: usize| {
            if b.len() == n {
                Ok(())
            } else {
                Err(DecodeError::Malformed("wrong body length"))
            }
        };
        Ok(match t {
            0x01 => {
                need(1)?;
                Message::Hello { seq, version: b[0] }
            }
            0x02 | 0x05 => {
                if b.len() < 8 {
                    return Err(DecodeError::Malformed("short RECT"));
                }
                let (x, y, w, h) = (u16le(b, 0), u16le(b, 2), u16le(b, 4), u16le(b, 6));
                let n = w as usize * h as usize;
                if n > (1 << 22) {
                    return Err(DecodeError::Malformed("rectangle larger than any panel"));
                }
                let rle = t == 0x05;
                let pixels = if rle {
                    rle_decode(&b[8..], n)?
                } else {
                    need(8 + 2 * n)?;
                    b[8..]
                        .chunks_exact(2)
                        .map(|c| u16::from_le_bytes([c[0], c[1]]))
                        .collect()
                };
                Message::Rect {
                    rle,
                    seq,
                    x,
                    y,
                    w,
                    h,
                    pixels,
                }
            }
            0x03 => {
                need(0)?;
                Message::Show { seq }
            }
            0x04 => {
                need(4)?;
                Message::Heartbeat {
                    seq,
                    uptime: u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
                }
            }
            0x80 => {
                need(0)?;
                Message::Ack { seq }
            }
            0x81 => {
                need(6)?;
                Message::Info {
                    seq,
                    version: b[0],
                    width: u16le(b, 1),
                    height: u16le(b, 3),
                    format: b[5],
                }
            }
            0x82 => {
                need(1)?;
                Message::Nak { seq, reason: b[0] }
            }
            _ => return Err(DecodeError::Malformed("unknown type")),
        })
    }
}

/// Append `pixels` as runs: count (1-255), then the pixel (little-endian).
fn rle_encode(pixels: &[u16], out: &mut Vec<u8>) {
    let mut i = 0;
    while i < pixels.len() {
        let v = pixels[i];
        let mut n = 1;
        while n < 255 && i + n < pixels.len() && pixels[i + n] == v {
            n += 1;
        }
        out.push(n as u8);
        out.extend_from_slice(&v.to_le_bytes());
        i += n;
    }
}

/// Exactly `n` pixels from runs.
fn rle_decode(b: &[u8], n: usize) -> Result<Vec<u16>, DecodeError> {
    if b.len() % 3 != 0 {
        return Err(DecodeError::Malformed("RLE body not in whole runs"));
    }
    let mut out = Vec::with_capacity(n);
    for r in b.chunks_exact(3) {
        if r[0] == 0 || out.len() + r[0] as usize > n {
            return Err(DecodeError::Malformed("RLE runs do not fill the rectangle"));
        }
        out.extend(std::iter::repeat_n(
            u16::from_le_bytes([r[1], r[2]]),
            r[0] as usize,
        ));
    }
    if out.len() != n {
        return Err(DecodeError::Malformed("RLE runs do not fill the rectangle"));
    }
    Ok(out)
}

/// Bytes of `pixels` run-length encoded.
fn rle_len(pixels: &[u16]) -> usize {
    let mut v = Vec::new();
    rle_encode(pixels, &mut v);
    v.len()
}

/// Splits a byte stream into frames at `0x00` delimiters.
#[derive(Debug, Default)]
pub struct Deframer {
    buf: Vec<u8>,
}

impl Deframer {
    /// Feed bytes; get every complete frame (without delimiters). Empty frames (repeated
    /// delimiters, used to resynchronise) are skipped; an over-long run without a delimiter
    /// is dropped as garbage.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for &b in bytes {
            if b == 0 {
                if !self.buf.is_empty() {
                    out.push(std::mem::take(&mut self.buf));
                }
            } else if self.buf.len() < 2 * MAX_RECT_BYTES + 64 {
                self.buf.push(b);
            }
        }
        out
    }
}

/// The RECT messages for `rects` of `frame`, numbered from `seq`: bands of whole rows
/// whose body stays within [`MAX_RECT_BYTES`], each run-length encoded when that is
/// smaller than raw.
pub fn rect_messages(
    frame: &super::Frame,
    rects: &[(usize, usize, usize, usize)],
    seq: &mut u8,
) -> Vec<Message> {
    let mut out = Vec::new();
    let row = |yy: usize, x: usize, w: usize| &frame.pixels[yy * frame.width + x..][..w];
    for &(x, y, w, h) in rects {
        let mut r = 0;
        while r < h {
            // Grow the band row by row while its cheaper encoding still fits.
            let (mut n, mut raw, mut rle) = (0, 0, 0);
            while r + n < h {
                let (a, b) = (raw + 2 * w, rle + rle_len(row(y + r + n, x, w)));
                if n > 0 && a.min(b) > MAX_RECT_BYTES {
                    break;
                }
                (raw, rle, n) = (a, b, n + 1);
            }
            let mut pixels = Vec::with_capacity(w * n);
            for yy in y + r..y + r + n {
                pixels.extend_from_slice(row(yy, x, w));
            }
            out.push(Message::Rect {
                rle: rle < raw,
                seq: *seq,
                x: x as u16,
                y: (y + r) as u16,
                w: w as u16,
                h: n as u16,
                pixels,
            });
            *seq = seq.wrapping_add(1);
            r += n;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cobs_round_trips_and_has_no_zeros() {
        let cases: Vec<Vec<u8>> = vec![
            vec![],
            vec![0],
            vec![0, 0],
            vec![1, 2, 3],
            (0..=255u8).collect(),
            vec![7; 254],
            vec![7; 255],
            vec![7; 600],
            [vec![0], vec![9; 300], vec![0, 0]].concat(),
        ];
        for c in cases {
            let e = cobs_encode(&c);
            assert!(!e.contains(&0), "{c:?}");
            assert_eq!(cobs_decode(&e).unwrap(), c, "{c:?}");
        }
        // A run-length body that does not fill its rectangle is refused.
        assert!(rle_decode(&[2, 1, 0], 3).is_err());
        assert!(rle_decode(&[2, 1, 0, 2, 1, 0], 3).is_err());
        assert_eq!(rle_decode(&[2, 1, 0, 1, 2, 0], 3).unwrap(), [1, 1, 2]);
        // Known vector (Cheshire & Baker): 11 22 00 33 → 03 11 22 02 33.
        assert_eq!(
            cobs_encode(&[0x11, 0x22, 0x00, 0x33]),
            [0x03, 0x11, 0x22, 0x02, 0x33]
        );
        assert_eq!(cobs_decode(&[0x05, 0x11]), Err(DecodeError::Cobs));
    }

    #[test]
    fn messages_round_trip_and_corruption_is_caught() {
        let msgs = [
            Message::Hello {
                seq: 0,
                version: VERSION,
            },
            Message::Rect {
                rle: false,
                seq: 7,
                x: 3,
                y: 4,
                w: 2,
                h: 2,
                pixels: vec![0, 0xFFFF, 0x00FF, 0xFF00],
            },
            Message::Rect {
                rle: true,
                seq: 8,
                x: 0,
                y: 0,
                w: 300,
                h: 2,
                pixels: [vec![5; 290], vec![0; 300], vec![7; 10]].concat(),
            },
            Message::Show { seq: 255 },
            Message::Heartbeat {
                seq: 1,
                uptime: 123_456,
            },
            Message::Ack { seq: 9 },
            Message::Info {
                seq: 0,
                version: 1,
                width: 320,
                height: 240,
                format: 1,
            },
            Message::Nak {
                seq: 3,
                reason: nak::CRC,
            },
        ];
        for m in msgs {
            let wire = m.encode();
            assert_eq!(*wire.last().unwrap(), 0);
            let mut d = Deframer::default();
            let frames = d.push(&wire);
            assert_eq!(frames.len(), 1);
            assert_eq!(Message::decode(&frames[0]).unwrap(), m);
            // Flip one bit anywhere in the frame: never accepted.
            for i in 0..frames[0].len() {
                let mut bad = frames[0].clone();
                bad[i] ^= 0x10;
                assert!(Message::decode(&bad).is_err(), "{m:?} byte {i}");
            }
        }
    }
}
