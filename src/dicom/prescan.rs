//! A structural walk of an encoded data set, done before the DICOM parser sees it.
//!
//! The parser (dicom-parser) allocates a value's declared length before reading it, so a
//! forged length makes it allocate gigabytes — an abort, which `catch_unwind` cannot stop —
//! and deeply nested sequences can overflow the stack. This walk reads only element,
//! item and fragment headers, skips values without buffering them, and checks that
//! every declared length fits inside its container and inside the bytes that really
//! exist, that undefined lengths appear only where DICOM allows them, and that nesting stays
//! shallow. Each value's length must also suit the VR the parser will decode it as (the
//! explicit VR, or the dictionary's for Implicit VR): the parser reads `length / 8` values
//! of an FD whatever the length says, so a 12-byte FD would leave it four bytes out of step
//! with the data — reading the next "header" from inside a value, where a forged length
//! can sit. The walk covers every element the parser reads, after Pixel Data too. A data
//! set that passes is one the parser can read with bounded memory; one that fails
//! (truncated, forged, malformed) is refused as "cannot understand".
//!
//! It is also the receiver's completeness check: a data set cut anywhere fails here, so
//! the parser afterwards only needs to read the attributes before Pixel Data.
//!
//! Pure reading; no allocation proportional to declared lengths; no I/O besides the reader.

use std::io::{self, Read};

use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry, VirtualVr};
use dicom_core::{Tag, VR};
use dicom_dictionary_std::StandardDataDictionary;

/// Deepest sequence nesting accepted (real MR objects nest a handful of levels).
pub const MAX_DEPTH: u32 = 16;
/// Most elements plus items accepted in one data set. The parser keeps a map entry for
/// each (about 100 bytes); an Enhanced MR with thousands of frames has a few hundred
/// thousand.
pub const MAX_ELEMENTS: u64 = 500_000;
/// Most bytes accepted before Pixel Data: the part the parser holds in memory.
pub const MAX_HEADER_BYTES: u64 = 64 * 1024 * 1024;

const UNDEFINED: u32 = 0xFFFF_FFFF;
const ITEM: (u16, u16) = (0xFFFE, 0xE000);
const ITEM_END: (u16, u16) = (0xFFFE, 0xE00D);
const SEQ_END: (u16, u16) = (0xFFFE, 0xE0DD);
const PIXEL_DATA: (u16, u16) = (0x7FE0, 0x0010);

/// How a data set is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Encoding {
    /// Explicit VR (else implicit).
    pub explicit: bool,
    /// Big endian (else little).
    pub big_endian: bool,
    /// Deflate-compressed (Deflated Explicit VR Little Endian).
    pub deflated: bool,
}

impl Encoding {
    /// The encoding of a transfer syntax. Every syntax not named here encodes its data set
    /// as Explicit VR Little Endian (all encapsulated syntaxes do).
    pub fn of(transfer_syntax_uid: &str) -> Encoding {
        match transfer_syntax_uid.trim_end_matches(['\0', ' ']) {
            "1.2.840.10008.1.2" => Encoding {
                explicit: false,
                big_endian: false,
                deflated: false,
            },
            "1.2.840.10008.1.2.2" => Encoding {
                explicit: true,
                big_endian: true,
                deflated: false,
            },
            // Deflated Explicit VR LE, and the two JPIP Referenced Deflate syntaxes. (Deflated
            // Image Frame Compression, 1.2.840.10008.1.2.8.1, deflates frames, not the data set.)
            "1.2.840.10008.1.2.1.99" | "1.2.840.10008.1.2.4.95" | "1.2.840.10008.1.2.4.202" => {
                Encoding {
                    explicit: true,
                    big_endian: false,
                    deflated: true,
                }
            }
            _ => Encoding {
                explicit: true,
                big_endian: false,
                deflated: false,
            },
        }
    }
}

/// Why a data set failed the walk.
#[derive(Debug, thiserror::Error)]
pub enum PrescanError {
    /// The structure is wrong (truncated, forged length, misplaced delimiter, too deep).
    #[error("{0}")]
    Malformed(String),
    /// The reader failed.
    #[error("read error: {0}")]
    Io(#[from] io::Error),
}

fn malformed(pos: u64, what: impl std::fmt::Display) -> PrescanError {
    PrescanError::Malformed(format!("{what} at byte {pos} of the data set"))
}

/// What the walk found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// Bytes of the (inflated) data set.
    pub bytes: u64,
    /// Whether a top-level Pixel Data, Float or Double Float Pixel Data element is present.
    pub has_pixel_data: bool,
    /// The first top-level element of group 0002 (File Meta Information), which belongs
    /// in the file's meta group, never in a data set.
    pub meta_element: Option<(u16, u16)>,
}

/// Walk a data set read from `r`.
///
/// `total`: the data set's exact length when known (a file or buffer); `None` for a stream
/// (a deflated data set), in which case at most `max_stream` bytes are read. Beyond the
/// length checks, the walk refuses more than [`MAX_ELEMENTS`] elements and items, and more
/// than [`MAX_HEADER_BYTES`] before Pixel Data.
pub fn check<R: Read>(
    r: R,
    encoding: Encoding,
    total: Option<u64>,
    max_stream: u64,
) -> Result<Summary, PrescanError> {
    let mut w = Walker {
        r,
        pos: 0,
        enc: encoding,
        limit: total.unwrap_or(max_stream),
        has_pixel_data: false,
        meta_element: None,
        elements: 0,
    };
    w.elements(total, 0, false)?;
    Ok(Summary {
        bytes: w.pos,
        has_pixel_data: w.has_pixel_data,
        meta_element: w.meta_element,
    })
}

struct Walker<R> {
    r: R,
    pos: u64,
    enc: Encoding,
    /// No declared length may reach past this.
    limit: u64,
    /// Set when a top-level pixel data element is seen.
    has_pixel_data: bool,
    /// The first top-level group 0002 element.
    meta_element: Option<(u16, u16)>,
    /// Elements and items seen so far.
    elements: u64,
}

impl<R: Read> Walker<R> {
    /// Read exactly `buf.len()` bytes; `Ok(false)` on a clean end before the first byte.
    fn fill(&mut self, buf: &mut [u8], eof_ok: bool) -> Result<bool, PrescanError> {
        let mut got = 0;
        while got < buf.len() {
            match self.r.read(&mut buf[got..]) {
                Ok(0) if got == 0 && eof_ok => return Ok(false),
                Ok(0) => {
                    return Err(malformed(
                        self.pos + got as u64,
                        "data set ends inside a header",
                    ));
                }
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        self.pos += got as u64;
        self.bounded()?;
        Ok(true)
    }

    /// Refuse input beyond the limits that are not declared lengths: the stream limit
    /// (headers count too, so a deflate bomb of empty elements stops) and the size of the
    /// part before Pixel Data.
    fn bounded(&self) -> Result<(), PrescanError> {
        if self.pos > self.limit {
            return Err(malformed(
                self.pos,
                format!("data set larger than {} bytes", self.limit),
            ));
        }
        if !self.has_pixel_data && self.pos > MAX_HEADER_BYTES {
            return Err(malformed(
                self.pos,
                format!("more than {MAX_HEADER_BYTES} bytes before Pixel Data"),
            ));
        }
        Ok(())
    }

    /// Count an element or item.
    fn count(&mut self) -> Result<(), PrescanError> {
        self.elements += 1;
        if self.elements > MAX_ELEMENTS {
            return Err(malformed(
                self.pos,
                format!("more than {MAX_ELEMENTS} elements and items"),
            ));
        }
        Ok(())
    }

    fn u16(&self, b: [u8; 2]) -> u16 {
        if self.enc.big_endian {
            u16::from_be_bytes(b)
        } else {
            u16::from_le_bytes(b)
        }
    }

    fn u32(&self, b: [u8; 4]) -> u32 {
        if self.enc.big_endian {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        }
    }

    /// Read a tag; `None` on a clean end of input (allowed only at the top level).
    fn tag(&mut self, eof_ok: bool) -> Result<Option<(u16, u16)>, PrescanError> {
        let mut b = [0u8; 4];
        if !self.fill(&mut b, eof_ok)? {
            return Ok(None);
        }
        Ok(Some((self.u16([b[0], b[1]]), self.u16([b[2], b[3]]))))
    }

    fn len32(&mut self) -> Result<u32, PrescanError> {
        let mut b = [0u8; 4];
        self.fill(&mut b, false)?;
        Ok(self.u32(b))
    }

    /// Skip `n` value bytes without keeping them.
    fn skip(&mut self, n: u64) -> Result<(), PrescanError> {
        let copied = io::copy(&mut (&mut self.r).take(n), &mut io::sink())?;
        self.pos += copied;
        self.bounded()?;
        if copied < n {
            return Err(malformed(
                self.pos,
                format!("data set ends inside a value ({} of {n} bytes)", copied),
            ));
        }
        Ok(())
    }

    /// Check that `len` bytes starting here fit in `end` and in the input.
    fn fits(&self, len: u64, end: Option<u64>) -> Result<(), PrescanError> {
        let stop = self.pos + len;
        if end.is_some_and(|e| stop > e) || stop > self.limit {
            return Err(malformed(
                self.pos,
                format!("declared length {len} runs past its end"),
            ));
        }
        Ok(())
    }

    /// Elements until `end` (exact), or until an item delimiter when `in_item` with no
    /// end, or until the end of input at the top level.
    fn elements(
        &mut self,
        end: Option<u64>,
        depth: u32,
        in_item: bool,
    ) -> Result<(), PrescanError> {
        loop {
            if let Some(e) = end {
                if self.pos == e {
                    return Ok(());
                }
            }
            let top_level_stream = depth == 0 && !in_item;
            let Some(tag) = self.tag(top_level_stream)? else {
                return match end {
                    Some(e) if self.pos != e => Err(malformed(self.pos, "data set ends early")),
                    _ => Ok(()),
                };
            };
            let at = self.pos - 4;
            if tag == ITEM_END {
                let len = self.len32()?;
                if in_item && end.is_none() && len == 0 {
                    return Ok(());
                }
                return Err(malformed(at, "misplaced item delimiter"));
            }
            if tag.0 == 0xFFFE {
                return Err(malformed(
                    at,
                    format!("misplaced delimiter ({:04X},{:04X})", tag.0, tag.1),
                ));
            }
            let (vr, len) = self.header()?;
            self.count()?;
            if depth == 0
                && !in_item
                && tag.0 == 0x7FE0
                && matches!(tag.1, 0x0008 | 0x0009 | 0x0010)
            {
                self.has_pixel_data = true;
            }
            if depth == 0 && !in_item && tag.0 == 0x0002 && self.meta_element.is_none() {
                self.meta_element = Some(tag);
            }
            let is_sequence = match vr {
                Some(VR::SQ) => true,
                Some(VR::UN) => len == UNDEFINED,
                Some(_) => false,
                // Implicit VR: the dictionary says; an unknown tag with undefined length
                // is a sequence by PS3.5 §6.2.2.
                None => len == UNDEFINED && tag != PIXEL_DATA || dictionary_says_sequence(tag),
            };
            if len == UNDEFINED {
                if is_sequence {
                    self.sequence(None, depth + 1)?;
                } else if tag == PIXEL_DATA {
                    self.fragments(end)?;
                } else {
                    return Err(malformed(
                        at,
                        format!("undefined length on ({:04X},{:04X})", tag.0, tag.1),
                    ));
                }
            } else {
                if !is_sequence {
                    let unit = value_unit(vr.unwrap_or_else(|| implicit_vr(tag)));
                    if len % unit != 0 {
                        return Err(malformed(
                            at,
                            format!(
                                "length {len} of ({:04X},{:04X}) is not a multiple of {unit}, \
                                 the size of one value of its VR",
                                tag.0, tag.1
                            ),
                        ));
                    }
                }
                let len = u64::from(len);
                self.fits(len, end)?;
                if is_sequence {
                    let stop = self.pos + len;
                    self.sequence(Some(stop), depth + 1)?;
                } else {
                    self.skip(len)?;
                }
            }
            if let Some(e) = end {
                if self.pos > e {
                    return Err(malformed(self.pos, "element overruns its container"));
                }
            }
        }
    }

    /// VR (explicit only) and value length of the element whose tag was just read.
    fn header(&mut self) -> Result<(Option<VR>, u32), PrescanError> {
        if !self.enc.explicit {
            return Ok((None, self.len32()?));
        }
        let mut v = [0u8; 2];
        self.fill(&mut v, false)?;
        let vr = VR::from_binary(v).ok_or_else(|| malformed(self.pos - 2, "unknown VR"))?;
        let long = matches!(
            vr,
            VR::OB
                | VR::OD
                | VR::OF
                | VR::OL
                | VR::OV
                | VR::OW
                | VR::SQ
                | VR::SV
                | VR::UC
                | VR::UN
                | VR::UR
                | VR::UT
                | VR::UV
        );
        if long {
            let mut reserved = [0u8; 2];
            self.fill(&mut reserved, false)?;
            Ok((Some(vr), self.len32()?))
        } else {
            let mut b = [0u8; 2];
            self.fill(&mut b, false)?;
            Ok((Some(vr), u32::from(self.u16(b))))
        }
    }

    /// Items of a sequence, until `end` or the sequence delimiter.
    fn sequence(&mut self, end: Option<u64>, depth: u32) -> Result<(), PrescanError> {
        if depth > MAX_DEPTH {
            return Err(malformed(
                self.pos,
                format!("sequences nested deeper than {MAX_DEPTH}"),
            ));
        }
        loop {
            if end == Some(self.pos) {
                return Ok(());
            }
            let Some(tag) = self.tag(false)? else {
                unreachable!("tag(false) never reports a clean end")
            };
            let at = self.pos - 4;
            let len = self.len32()?;
            self.count()?;
            match tag {
                SEQ_END if end.is_none() => return Ok(()),
                ITEM if len == UNDEFINED => self.elements(None, depth, true)?,
                ITEM => {
                    let len = u64::from(len);
                    self.fits(len, end)?;
                    let stop = self.pos + len;
                    self.elements(Some(stop), depth, true)?;
                }
                _ => return Err(malformed(at, "expected a sequence item")),
            }
        }
    }

    /// Encapsulated pixel data: the offset table and fragments, until the delimiter.
    fn fragments(&mut self, end: Option<u64>) -> Result<(), PrescanError> {
        loop {
            let Some(tag) = self.tag(false)? else {
                unreachable!("tag(false) never reports a clean end")
            };
            let at = self.pos - 4;
            let len = self.len32()?;
            match tag {
                SEQ_END => return Ok(()),
                ITEM if len != UNDEFINED => {
                    let len = u64::from(len);
                    self.fits(len, end)?;
                    self.skip(len)?;
                }
                _ => return Err(malformed(at, "expected a pixel data fragment")),
            }
        }
    }
}

/// The VR the Implicit VR decoder gives a tag: OW for Pixel Data and Overlay Data, the
/// dictionary's otherwise (its first choice where the dictionary allows two, which have the
/// same value size), UN for a tag the dictionary does not know.
fn implicit_vr(tag: (u16, u16)) -> VR {
    if tag == PIXEL_DATA || (tag.0 >> 8 == 0x60 && tag.1 == 0x3000) {
        return VR::OW;
    }
    StandardDataDictionary
        .by_tag(Tag(tag.0, tag.1))
        .map(|e| e.vr().relaxed())
        .unwrap_or(VR::UN)
}

/// Bytes per value for the VRs the parser decodes as fixed-size numbers (1 for the rest):
/// a defined length must be a multiple of it.
fn value_unit(vr: VR) -> u32 {
    match vr {
        VR::US | VR::SS | VR::OW => 2,
        VR::AT | VR::UL | VR::SL | VR::FL | VR::OF | VR::OL => 4,
        VR::FD | VR::OD | VR::SV | VR::UV | VR::OV => 8,
        _ => 1,
    }
}

fn dictionary_says_sequence(tag: (u16, u16)) -> bool {
    StandardDataDictionary
        .by_tag(Tag(tag.0, tag.1))
        .is_some_and(|e| e.vr() == VirtualVr::Exact(VR::SQ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXPLICIT: Encoding = Encoding {
        explicit: true,
        big_endian: false,
        deflated: false,
    };
    const IMPLICIT: Encoding = Encoding {
        explicit: false,
        big_endian: false,
        deflated: false,
    };

    fn ok(bytes: &[u8], enc: Encoding) -> Result<u64, PrescanError> {
        check(bytes, enc, Some(bytes.len() as u64), 0).map(|s| s.bytes)
    }

    fn explicit_short(tag: (u16, u16), vr: &[u8; 2], value: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&tag.0.to_le_bytes());
        v.extend_from_slice(&tag.1.to_le_bytes());
        v.extend_from_slice(vr);
        v.extend_from_slice(&(value.len() as u16).to_le_bytes());
        v.extend_from_slice(value);
        v
    }

    fn explicit_long(tag: (u16, u16), vr: &[u8; 2], len: u32, value: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&tag.0.to_le_bytes());
        v.extend_from_slice(&tag.1.to_le_bytes());
        v.extend_from_slice(vr);
        v.extend_from_slice(&[0, 0]);
        v.extend_from_slice(&len.to_le_bytes());
        v.extend_from_slice(value);
        v
    }

    fn item(len: u32, body: &[u8]) -> Vec<u8> {
        let mut v = vec![0xFE, 0xFF, 0x00, 0xE0];
        v.extend_from_slice(&len.to_le_bytes());
        v.extend_from_slice(body);
        v
    }

    fn delim(e: u16) -> Vec<u8> {
        let mut v = vec![0xFE, 0xFF];
        v.extend_from_slice(&e.to_le_bytes());
        v.extend_from_slice(&[0; 4]);
        v
    }

    #[test]
    fn accepts_well_formed_nesting_and_fragments() {
        let inner = explicit_short((0x0008, 0x0100), b"SH", b"CODE");
        let mut ds = explicit_short((0x0008, 0x0060), b"CS", b"MR");
        // Top-level element boundaries: a cut there leaves a shorter but well-formed data set.
        let mut boundaries = vec![ds.len()];
        // Defined-length sequence with a defined-length item.
        let body = item(inner.len() as u32, &inner);
        ds.extend(explicit_long(
            (0x0008, 0x1032),
            b"SQ",
            body.len() as u32,
            &body,
        ));
        boundaries.push(ds.len());
        // Undefined-length sequence with an undefined-length item.
        let mut undef = item(UNDEFINED, &inner);
        undef.extend(delim(0xE00D));
        undef.extend(delim(0xE0DD));
        ds.extend(explicit_long((0x0040, 0x0275), b"SQ", UNDEFINED, &undef));
        boundaries.push(ds.len());
        // Encapsulated pixel data: empty offset table, one fragment.
        let mut frags = item(0, &[]);
        frags.extend(item(4, &[1, 2, 3, 4]));
        frags.extend(delim(0xE0DD));
        ds.extend(explicit_long(PIXEL_DATA, b"OB", UNDEFINED, &frags));
        let summary = check(&ds[..], EXPLICIT, Some(ds.len() as u64), 0).unwrap();
        assert_eq!(summary.bytes, ds.len() as u64);
        assert!(summary.has_pixel_data);
        // Every other cut is refused: truncation inside any element, item or fragment is
        // caught; a cut at a top-level boundary leaves no Pixel Data.
        for cut in 1..ds.len() {
            match check(&ds[..cut], EXPLICIT, Some(cut as u64), 0) {
                Ok(s) => assert!(
                    boundaries.contains(&cut) && !s.has_pixel_data,
                    "cut at {cut} passed"
                ),
                Err(_) => assert!(!boundaries.contains(&cut)),
            }
        }
    }

    #[test]
    fn forged_lengths_are_refused_without_allocating() {
        let mut ds = explicit_short((0x0008, 0x0060), b"CS", b"MR");
        ds.extend(explicit_long((0x0008, 0x1030), b"UT", 0xFFFF_FFF0, b"abc"));
        let e = ok(&ds, EXPLICIT).unwrap_err();
        assert!(e.to_string().contains("runs past its end"), "{e}");
        // Implicit VR command-style element claiming 4 GiB.
        let mut cmd = vec![0x00, 0x00, 0x02, 0x00];
        cmd.extend_from_slice(&0xFFFF_FFF0u32.to_le_bytes());
        cmd.extend_from_slice(b"1.2");
        assert!(ok(&cmd, IMPLICIT).is_err());
        // A stream with no known total is bounded by `max_stream`.
        assert!(check(&ds[..], EXPLICIT, None, 64).is_err());
    }

    #[test]
    fn many_empty_elements_are_bounded_by_the_stream_limit_and_count() {
        // Zero-length elements: no declared length to catch, only the byte and count limits.
        let one = explicit_short((0x0009, 0x0010), b"LO", b"");
        let ds: Vec<u8> = one.iter().copied().cycle().take(one.len() * 1000).collect();
        assert!(
            check(&ds[..], EXPLICIT, None, 4000).is_err(),
            "stream limit"
        );
        assert!(check(&ds[..], EXPLICIT, None, 1 << 20).is_ok());
        let many: Vec<u8> = one
            .iter()
            .copied()
            .cycle()
            .take(one.len() * (MAX_ELEMENTS as usize + 1))
            .collect();
        let e = check(&many[..], EXPLICIT, None, u64::MAX).unwrap_err();
        assert!(e.to_string().contains("elements and items"), "{e}");
    }

    #[test]
    fn item_overrunning_its_sequence_is_refused() {
        let inner = explicit_short((0x0008, 0x0100), b"SH", b"CODE");
        let body = item(inner.len() as u32 + 8, &inner);
        let ds = explicit_long((0x0008, 0x1032), b"SQ", body.len() as u32, &body);
        assert!(ok(&ds, EXPLICIT).is_err());
    }

    #[test]
    fn deep_nesting_is_refused() {
        let mut body = explicit_short((0x0008, 0x0100), b"SH", b"CODE");
        for _ in 0..(MAX_DEPTH + 2) {
            let it = item(body.len() as u32, &body);
            body = explicit_long((0x0008, 0x1032), b"SQ", it.len() as u32, &it);
        }
        let e = ok(&body, EXPLICIT).unwrap_err();
        assert!(e.to_string().contains("nested deeper"), "{e}");
    }

    #[test]
    fn undefined_length_on_a_plain_element_is_refused() {
        let ds = explicit_long((0x0008, 0x1030), b"UT", UNDEFINED, b"");
        assert!(ok(&ds, EXPLICIT).is_err());
        let ds = explicit_short((0x0008, 0x0060), b"ZZ", b"MR");
        assert!(ok(&ds, EXPLICIT).is_err());
    }

    #[test]
    fn implicit_sequences_follow_the_dictionary() {
        // (0008,1032) Procedure Code Sequence, implicit VR, defined length.
        let mut inner = vec![0x08, 0x00, 0x00, 0x01];
        inner.extend_from_slice(&4u32.to_le_bytes());
        inner.extend_from_slice(b"CODE");
        let body = item(inner.len() as u32, &inner);
        let mut ds = vec![0x08, 0x00, 0x32, 0x10];
        ds.extend_from_slice(&(body.len() as u32).to_le_bytes());
        ds.extend(body);
        assert!(ok(&ds, IMPLICIT).is_ok());
        // The same with a forged inner length is caught inside the sequence.
        let mut bad = ds.clone();
        let at = 8 + 8 + 4;
        bad[at..at + 4].copy_from_slice(&0x7FFF_0000u32.to_le_bytes());
        assert!(ok(&bad, IMPLICIT).is_err());
    }

    /// The desync attack: a 12-byte FD whose last four bytes, read by the parser as the
    /// next tag, put a "length" of about 1 GiB where the walk sees an LO's VR and length.
    fn desync_bomb() -> Vec<u8> {
        let mut v = explicit_short(
            (0x0018, 0x9087),
            b"FD",
            &[0, 0, 0, 0, 0, 0, 0, 0, 0x09, 0, 0x01, 0x10],
        );
        v.extend(explicit_short((0x424F, 0x0000), b"LO", &[b' '; 0x40]));
        v
    }

    #[test]
    fn lengths_that_break_the_value_size_are_refused_wherever_they_are() {
        let bomb = desync_bomb();
        let e = ok(&bomb, EXPLICIT).unwrap_err();
        assert!(e.to_string().contains("not a multiple of 8"), "{e}");
        // After Pixel Data too (the receiver's parser stops there; the analysis' does not).
        let mut ds = explicit_short((0x0008, 0x0060), b"CS", b"MR");
        ds.extend(explicit_long(PIXEL_DATA, b"OW", 4, &[1, 2, 3, 4]));
        assert!(ok(&ds, EXPLICIT).is_ok());
        ds.extend(&bomb);
        assert!(ok(&ds, EXPLICIT).is_err());
        // Implicit VR: the dictionary's VR counts. (0028,0010) Rows is US.
        let mut rows = vec![0x28, 0x00, 0x10, 0x00];
        rows.extend_from_slice(&3u32.to_le_bytes());
        rows.extend_from_slice(&[1, 2, 3]);
        let e = ok(&rows, IMPLICIT).unwrap_err();
        assert!(e.to_string().contains("multiple of 2"), "{e}");
        rows[4] = 2;
        rows.pop();
        assert!(ok(&rows, IMPLICIT).is_ok());
        // Every fixed-size VR, explicit: one byte short of a whole value is refused.
        for (vr, unit) in [
            (b"US", 2),
            (b"SS", 2),
            (b"AT", 4),
            (b"UL", 4),
            (b"SL", 4),
            (b"FL", 4),
            (b"FD", 8),
        ] {
            let good = explicit_short((0x0009, 0x1010), vr, &vec![0; unit * 2]);
            assert!(ok(&good, EXPLICIT).is_ok(), "{vr:?}");
            let bad = explicit_short((0x0009, 0x1010), vr, &vec![0; unit * 2 - 1]);
            assert!(ok(&bad, EXPLICIT).is_err(), "{vr:?}");
        }
        for (vr, unit) in [
            (b"OW", 2u32),
            (b"OF", 4),
            (b"OL", 4),
            (b"OD", 8),
            (b"OV", 8),
            (b"SV", 8),
            (b"UV", 8),
        ] {
            let bad = explicit_long((0x0009, 0x1010), vr, unit + 1, &vec![0; unit as usize + 1]);
            assert!(ok(&bad, EXPLICIT).is_err(), "{vr:?}");
        }
    }

    #[test]
    fn meta_elements_in_the_data_set_are_reported() {
        let mut ds = explicit_short((0x0002, 0x0010), b"UI", b"1.2.840.10008.1.2.1\0");
        ds.extend(explicit_short((0x0008, 0x0060), b"CS", b"MR"));
        let s = check(&ds[..], EXPLICIT, Some(ds.len() as u64), 0).unwrap();
        assert_eq!(s.meta_element, Some((0x0002, 0x0010)));
        let ds = explicit_short((0x0008, 0x0060), b"CS", b"MR");
        let s = check(&ds[..], EXPLICIT, Some(ds.len() as u64), 0).unwrap();
        assert_eq!(s.meta_element, None);
    }
}
