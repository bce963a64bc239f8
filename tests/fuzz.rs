//! Mutation fuzzing of the receiver, bounded to run in `cargo test`.
//!
//! Two kinds of input, each derived from a valid exchange and mutated with a fixed seed:
//! - whole byte streams (A-ASSOCIATE-RQ, C-STORE command and data set in P-DATA PDUs,
//!   A-RELEASE-RQ) with PDU and PDV lengths, bytes and framing mutated, sent on a raw TCP
//!   connection that is then half-closed;
//! - data sets inside a well-formed association (element lengths, VRs, bytes mutated,
//!   truncated, spliced, hostile elements inserted), each with its own SOP Instance UID.
//!
//! After every batch the daemon must be alive, answer DCMTK's C-ECHO, and have peaked
//! below 300 MiB resident; at the end no thread may have panicked, every instance that was
//! acknowledged must be indexed with its file, and the spool must hold exactly the files the
//! index names.
//!
//! A longer run (same code, more inputs, another seed), e.g. for an hour:
//!
//! ```sh
//! FUZZ_BATCHES=5000 FUZZ_SEED=$RANDOM cargo test --release --test fuzz -- --nocapture
//! ```
//!
//! With `FUZZ_SAVE=<folder>` every input is written there before it is sent, named by kind,
//! seed and index, so the one a failure points at (the batch and seed are in the message)
//! can be replayed.

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use common::raw::EXPLICIT_LE;
use common::*;
use dicom_dictionary_std::{tags, uids};
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::entries::{
    EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN,
};
use dicom_ul::pdu::{
    AssociationRQ, PDataValue, PDataValueType, PresentationContextProposed, UserVariableItem,
};
use dicom_ul::{ClientAssociation, ClientAssociationOptions, Pdu};
use onfh_edge::dicom::dimse;

/// splitmix64: small, fixed, good enough to draw mutations.
struct Rng(u64);

impl Rng {
    fn for_input(seed: u64, index: u64) -> Rng {
        let mut r = Rng(seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        r.next();
        r
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

const INTERESTING: [u32; 16] = [
    0,
    1,
    2,
    3,
    7,
    8,
    0x7F,
    0x80,
    0xFF,
    0x100,
    0xFFFF,
    0x1_0000,
    0x7FFF_FFFF,
    0x8000_0000,
    0xFFFF_FFFE,
    0xFFFF_FFFF,
];

/// A length field in a base input: offset, width in bytes, big-endian (PDUs) or not.
#[derive(Clone, Copy)]
struct Field {
    at: usize,
    width: usize,
    big_endian: bool,
}

/// A valid input and what a mutator may aim at.
struct Base {
    bytes: Vec<u8>,
    lengths: Vec<Field>,
    /// Where elements start (data sets only).
    elements: Vec<usize>,
}

fn put_len(v: &mut [u8], f: Field, value: u32) {
    if f.at + f.width > v.len() {
        return;
    }
    match (f.width, f.big_endian) {
        (2, true) => v[f.at..f.at + 2].copy_from_slice(&(value as u16).to_be_bytes()),
        (2, false) => v[f.at..f.at + 2].copy_from_slice(&(value as u16).to_le_bytes()),
        (_, true) => v[f.at..f.at + 4].copy_from_slice(&value.to_be_bytes()),
        (_, false) => v[f.at..f.at + 4].copy_from_slice(&value.to_le_bytes()),
    }
}

fn get_len(v: &[u8], f: Field) -> u32 {
    match (f.width, f.big_endian) {
        (2, true) => u16::from_be_bytes([v[f.at], v[f.at + 1]]) as u32,
        (2, false) => u16::from_le_bytes([v[f.at], v[f.at + 1]]) as u32,
        (_, true) => u32::from_be_bytes(v[f.at..f.at + 4].try_into().unwrap()),
        (_, false) => u32::from_le_bytes(v[f.at..f.at + 4].try_into().unwrap()),
    }
}

fn explicit(tag: (u16, u16), vr: &[u8; 2], value: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&tag.0.to_le_bytes());
    v.extend_from_slice(&tag.1.to_le_bytes());
    v.extend_from_slice(vr);
    if matches!(
        vr,
        b"OB" | b"OW" | b"SQ" | b"UN" | b"UT" | b"OF" | b"OD" | b"OL"
    ) {
        v.extend_from_slice(&[0, 0]);
        v.extend_from_slice(&(value.len() as u32).to_le_bytes());
    } else {
        v.extend_from_slice(&(value.len() as u16).to_le_bytes());
    }
    v.extend_from_slice(value);
    v
}

/// Elements that have broken parsers elsewhere, to splice in at an element boundary.
fn hostile_elements() -> Vec<Vec<u8>> {
    let mut deep = Vec::new();
    for _ in 0..40 {
        deep.extend_from_slice(&[
            0x08, 0x00, 0x15, 0x11, b'S', b'Q', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF,
        ]);
        deep.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
    }
    vec![
        // A 12-byte FD: a parser reading 8-byte values falls out of step.
        explicit(
            (0x0018, 0x9087),
            b"FD",
            &[0, 0, 0, 0, 0, 0, 0, 0, 9, 0, 1, 0x10],
        ),
        // A 3-byte US.
        explicit((0x0028, 0x0010), b"US", &[1, 2, 3]),
        // A File Meta element inside the data set.
        explicit((0x0002, 0x0010), b"UI", b"1.2.840.10008.1.2\0"),
        // Runaway nesting, never closed.
        deep,
        // A length that claims nearly 4 GiB.
        [
            &[0x09u8, 0x00, 0x10, 0x10, b'U', b'N', 0, 0][..],
            &0xFFFF_FFF0u32.to_le_bytes(),
        ]
        .concat(),
        // An item delimiter with nothing open, and a sequence delimiter with a length.
        vec![
            0xFE, 0xFF, 0x0D, 0xE0, 0, 0, 0, 0, 0xFE, 0xFF, 0xDD, 0xE0, 4, 0, 0, 0,
        ],
        // Undefined length on a VR that cannot have one.
        [
            &[0x08u8, 0x00, 0x3E, 0x10, b'U', b'T', 0, 0][..],
            &0xFFFF_FFFFu32.to_le_bytes(),
        ]
        .concat(),
        // A VR the standard does not have.
        explicit((0x0008, 0x103E), b"ZZ", b"T2 COR"),
        // Identifying attributes as UN.
        explicit((0x0008, 0x0060), b"UN", b"MR"),
    ]
}

/// Apply one to three mutations.
fn mutate(rng: &mut Rng, base: &Base, hostile: &[Vec<u8>], data_set: bool) -> Vec<u8> {
    let mut v = base.bytes.clone();
    let n = 1 + rng.below(3);
    for _ in 0..n {
        if v.is_empty() {
            break;
        }
        match rng.below(8) {
            0 => {
                // Bit flips, mostly near the start where the structure is.
                for _ in 0..1 + rng.below(8) {
                    let span = if rng.chance(70) {
                        v.len().min(600)
                    } else {
                        v.len()
                    };
                    let i = rng.below(span);
                    v[i] ^= 1 << rng.below(8);
                }
            }
            1 | 2 => {
                let f = base.lengths[rng.below(base.lengths.len())];
                if f.at + f.width <= v.len() {
                    let old = get_len(&v, f);
                    let new = if rng.chance(50) {
                        INTERESTING[rng.below(INTERESTING.len())]
                    } else {
                        old.wrapping_add(rng.below(9) as u32).wrapping_sub(4)
                    };
                    put_len(&mut v, f, new);
                }
            }
            3 => v.truncate(rng.below(v.len())),
            4 => {
                let at = rng.below(v.len());
                let junk: Vec<u8> = (0..1 + rng.below(64)).map(|_| rng.next() as u8).collect();
                v.splice(at..at, junk);
            }
            5 => {
                let a = rng.below(v.len());
                let b = (a + 1 + rng.below(256)).min(v.len());
                if rng.chance(50) {
                    v.drain(a..b);
                } else {
                    let chunk = v[a..b].to_vec();
                    let at = rng.below(v.len());
                    v.splice(at..at, chunk);
                }
            }
            6 if data_set && !base.elements.is_empty() => {
                // Another VR on an element.
                const VRS: [&[u8; 2]; 12] = [
                    b"FD", b"FL", b"UN", b"SQ", b"OB", b"OW", b"US", b"UL", b"AT", b"UT", b"SV",
                    b"LO",
                ];
                let at = base.elements[rng.below(base.elements.len())] + 4;
                if at + 2 <= v.len() {
                    v[at..at + 2].copy_from_slice(VRS[rng.below(VRS.len())]);
                }
            }
            _ if data_set && !base.elements.is_empty() => {
                let at = base.elements[rng.below(base.elements.len())].min(v.len());
                let h = &hostile[rng.below(hostile.len())];
                v.splice(at..at, h.iter().copied());
            }
            _ => {
                // Streams: repeat a PDU-sized chunk many times.
                let a = rng.below(v.len());
                let b = (a + 1 + rng.below(64)).min(v.len());
                let chunk = v[a..b].to_vec();
                for _ in 0..rng.below(50) {
                    v.extend_from_slice(&chunk);
                }
            }
        }
    }
    v
}

/// The top-level elements of an Explicit VR Little Endian data set: their offsets, and
/// their length fields (up to the first undefined length).
fn index_data_set(bytes: &[u8]) -> (Vec<usize>, Vec<Field>) {
    let (mut at, mut elements, mut lengths) = (0, Vec::new(), Vec::new());
    while at + 8 <= bytes.len() {
        elements.push(at);
        let vr = &bytes[at + 4..at + 6];
        let long = matches!(
            vr,
            b"OB"
                | b"OW"
                | b"OF"
                | b"OD"
                | b"OL"
                | b"OV"
                | b"SQ"
                | b"UN"
                | b"UT"
                | b"UC"
                | b"UR"
                | b"SV"
                | b"UV"
        );
        let (field, header) = if long {
            (
                Field {
                    at: at + 8,
                    width: 4,
                    big_endian: false,
                },
                12,
            )
        } else {
            (
                Field {
                    at: at + 6,
                    width: 2,
                    big_endian: false,
                },
                8,
            )
        };
        if field.at + field.width > bytes.len() {
            break;
        }
        lengths.push(field);
        let len = get_len(bytes, field);
        if len == 0xFFFF_FFFF {
            break;
        }
        at += header + len as usize;
    }
    (elements, lengths)
}

/// A data set with the SOP Instance UID at a known place, to be replaced per input.
struct Template {
    data: Vec<u8>,
    uid: String,
}

impl Template {
    fn new() -> Template {
        let dir = tempfile::tempdir().unwrap();
        let inst = mr_series(dir.path(), &new_uid(), 1, 1, 32).remove(0);
        let obj = dicom_object::open_file(&inst.path).unwrap();
        let mut data = Vec::new();
        obj.write_dataset_with_ts(&mut data, &EXPLICIT_VR_LITTLE_ENDIAN.erased())
            .unwrap();
        assert!(inst.sop_instance_uid.len() >= 12);
        Template {
            data,
            uid: inst.sop_instance_uid,
        }
    }

    /// A UID of the template's length, unique to (seed, index).
    fn uid_for(&self, seed: u64, index: u64) -> String {
        let digits = format!("9{:06}{:020}", seed % 1_000_000, index);
        let mut u = format!("2.25.{digits}");
        u.truncate(self.uid.len());
        while u.len() < self.uid.len() {
            u.push('7');
        }
        u
    }

    fn with_uid(&self, uid: &str) -> Vec<u8> {
        let (from, to) = (self.uid.as_bytes(), uid.as_bytes());
        let mut out = self.data.clone();
        let mut i = 0;
        while i + from.len() <= out.len() {
            if &out[i..i + from.len()] == from {
                out[i..i + from.len()].copy_from_slice(to);
                i += from.len();
            } else {
                i += 1;
            }
        }
        out
    }
}

fn pdata(pc: u8, kind: PDataValueType, last: bool, data: Vec<u8>) -> Pdu {
    Pdu::PData {
        data: vec![PDataValue {
            presentation_context_id: pc,
            value_type: kind,
            is_last: last,
            data,
        }],
    }
}

/// A whole valid exchange as bytes, and its PDU and PDV length fields.
fn stream_base(t: &Template, uid: &str) -> Base {
    let rq = Pdu::AssociationRQ(AssociationRQ {
        protocol_version: 1,
        calling_ae_title: "FUZZSCU".into(),
        called_ae_title: "ONFH_EDGE".into(),
        application_context_name: "1.2.840.10008.3.1.1.1".into(),
        presentation_contexts: vec![
            PresentationContextProposed {
                id: 1,
                abstract_syntax: uids::MR_IMAGE_STORAGE.into(),
                transfer_syntaxes: vec![EXPLICIT_LE.into(), "1.2.840.10008.1.2".into()],
            },
            PresentationContextProposed {
                id: 3,
                abstract_syntax: uids::VERIFICATION.into(),
                transfer_syntaxes: vec!["1.2.840.10008.1.2".into()],
            },
        ],
        user_variables: vec![
            UserVariableItem::MaxLength(16384),
            UserVariableItem::ImplementationClassUID("1.2.826.0.1.3680043.10.1382.1".into()),
        ],
    });
    let data = t.with_uid(uid);
    let half = data.len() / 2;
    let pdus = [
        rq,
        pdata(
            1,
            PDataValueType::Command,
            true,
            dimse::store_request(1, uids::MR_IMAGE_STORAGE, uid),
        ),
        pdata(1, PDataValueType::Data, false, data[..half].to_vec()),
        pdata(1, PDataValueType::Data, true, data[half..].to_vec()),
        Pdu::ReleaseRQ,
    ];
    let mut bytes = Vec::new();
    let mut lengths = Vec::new();
    for p in &pdus {
        let start = bytes.len();
        dicom_ul::write_pdu(&mut bytes, p).unwrap();
        lengths.push(Field {
            at: start + 2,
            width: 4,
            big_endian: true,
        });
        if matches!(p, Pdu::PData { .. }) {
            lengths.push(Field {
                at: start + 6,
                width: 4,
                big_endian: true,
            });
        }
    }
    Base {
        bytes,
        lengths,
        elements: Vec::new(),
    }
}

/// Send one stream, half-close, and read until the daemon closes (or 10 s).
fn send_stream(port: u16, bytes: &[u8]) {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return;
    };
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    // The daemon may close first (an abort): write errors are expected.
    let _ = s.write_all(bytes);
    let _ = s.shutdown(Shutdown::Write);
    let mut sink = [0u8; 4096];
    while let Ok(n) = s.read(&mut sink) {
        if n == 0 {
            break;
        }
    }
}

fn connect(port: u16) -> ClientAssociation<TcpStream> {
    ClientAssociationOptions::new()
        .calling_ae_title("FUZZSCU")
        .called_ae_title("ONFH_EDGE")
        .with_presentation_context(uids::MR_IMAGE_STORAGE, vec![EXPLICIT_LE])
        .read_timeout(Duration::from_secs(20))
        .establish(("127.0.0.1", port))
        .expect("association")
}

/// Send one C-STORE with `data` on `a`; the response status, or None when the daemon
/// ended the association instead.
fn store(a: &mut ClientAssociation<TcpStream>, uid: &str, data: &[u8]) -> Option<u16> {
    let pc = a.presentation_contexts()[0].id;
    let rq = dimse::store_request(1, uids::MR_IMAGE_STORAGE, uid);
    a.send(&pdata(pc, PDataValueType::Command, true, rq)).ok()?;
    let chunks: Vec<&[u8]> = data.chunks(8 * 1024).collect();
    if chunks.is_empty() {
        a.send(&pdata(pc, PDataValueType::Data, true, Vec::new()))
            .ok()?;
    }
    for (i, c) in chunks.iter().enumerate() {
        a.send(&pdata(
            pc,
            PDataValueType::Data,
            i + 1 == chunks.len(),
            c.to_vec(),
        ))
        .ok()?;
    }
    let Ok(Pdu::PData { data }) = a.receive() else {
        return None;
    };
    let bytes: Vec<u8> = data.into_iter().flat_map(|v| v.data).collect();
    let obj =
        InMemDicomObject::read_dataset_with_ts(&bytes[..], &IMPLICIT_VR_LITTLE_ENDIAN.erased())
            .ok()?;
    obj.element(tags::STATUS).ok()?.to_int::<u16>().ok()
}

fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<f64>().ok())
        .expect("VmHWM")
        / 1024.0
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn save(kind: &str, seed: u64, index: u64, bytes: &[u8]) {
    if let Ok(dir) = std::env::var("FUZZ_SAVE") {
        let _ = std::fs::create_dir_all(&dir);
        let _ = std::fs::write(format!("{dir}/{kind}-{seed}-{index}.bin"), bytes);
    }
}

const STREAMS_PER_BATCH: u64 = 160;
const DATA_SETS_PER_BATCH: u64 = 80;
const CLIENTS: u64 = 4;

#[test]
fn mutated_pdus_and_data_sets_never_crash_leak_or_lose_an_instance() {
    let seed = env_u64("FUZZ_SEED", 20_261_205);
    let batches = env_u64("FUZZ_BATCHES", 30);
    // Quiet: thousands of refusals would otherwise be logged at debug.
    let mut d = Daemon::start_with_env("", &[("RUST_LOG", "info")]);
    let pid = d.child.as_ref().unwrap().id();
    let template = Template::new();
    let hostile = hostile_elements();
    let (elements, lengths) = index_data_set(&template.data);
    assert!(elements.len() > 20, "the template's elements were indexed");
    let data_base = Base {
        bytes: template.data.clone(),
        lengths,
        elements,
    };
    let started = Instant::now();
    let mut acknowledged: Vec<String> = Vec::new();
    let mut statuses: std::collections::BTreeMap<u16, usize> = Default::default();
    let mut ended_by_daemon = 0;
    let mut peak = 0.0f64;
    for batch in 0..batches {
        let first = batch * (STREAMS_PER_BATCH + DATA_SETS_PER_BATCH);
        // Streams, from CLIENTS threads at once.
        std::thread::scope(|s| {
            for c in 0..CLIENTS {
                let (t, port) = (&template, d.port);
                s.spawn(move || {
                    for k in (c..STREAMS_PER_BATCH).step_by(CLIENTS as usize) {
                        let index = first + k;
                        let mut rng = Rng::for_input(seed, index);
                        let base = stream_base(t, &t.uid_for(seed, index));
                        let input = mutate(&mut rng, &base, &[], false);
                        save("stream", seed, index, &input);
                        send_stream(port, &input);
                    }
                });
            }
        });
        // Data sets, on associations of their own, CLIENTS at once.
        let results: Vec<(Vec<String>, Vec<u16>, usize)> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..CLIENTS)
                .map(|c| {
                    let (t, port, base, hostile) = (&template, d.port, &data_base, &hostile);
                    s.spawn(move || {
                        let (mut ok, mut st, mut ended) = (Vec::new(), Vec::new(), 0);
                        let mut a = connect(port);
                        for k in (c..DATA_SETS_PER_BATCH).step_by(CLIENTS as usize) {
                            let index = first + STREAMS_PER_BATCH + k;
                            let mut rng = Rng::for_input(seed, index);
                            let uid = t.uid_for(seed, index);
                            let mutated = mutate(&mut rng, base, hostile, true);
                            // The template's UID everywhere it appears becomes this input's.
                            let input = Template {
                                data: mutated,
                                uid: t.uid.clone(),
                            }
                            .with_uid(&uid);
                            save("dataset", seed, index, &input);
                            match store(&mut a, &uid, &input) {
                                Some(status) => {
                                    st.push(status);
                                    if status == 0 || status & 0xF000 == 0xB000 {
                                        ok.push(uid);
                                    }
                                }
                                None => {
                                    ended += 1;
                                    a = connect(port);
                                }
                            }
                        }
                        let _ = a.release();
                        (ok, st, ended)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (ok, st, ended) in results {
            acknowledged.extend(ok);
            for s in st {
                *statuses.entry(s).or_default() += 1;
            }
            ended_by_daemon += ended;
        }
        // After each batch: alive, answering, bounded.
        d.assert_serving();
        peak = peak.max(peak_rss_mib(pid));
        assert!(
            peak < 300.0,
            "batch {batch} (seed {seed}): peak resident memory {peak:.0} MiB"
        );
    }
    let inputs = batches * (STREAMS_PER_BATCH + DATA_SETS_PER_BATCH);
    println!(
        "{inputs} inputs (seed {seed}) in {:.1} s; data-set statuses {statuses:x?}, {} acknowledged, \
         {ended_by_daemon} associations ended by the daemon; peak RSS {peak:.0} MiB",
        started.elapsed().as_secs_f64(),
        acknowledged.len(),
    );
    // Some inputs must have got through and some been refused, or the mutator is broken.
    assert!(!acknowledged.is_empty());
    assert!(statuses.keys().any(|s| *s != 0));

    // Nothing panicked, every acknowledged instance is indexed with its file, and the spool
    // holds exactly what the index names.
    d.sigterm();
    let log = d.log();
    assert!(!log.contains("panicked"), "a thread panicked:\n{log}");
    let db = d.db();
    for uid in &acknowledged {
        let n: i64 = db
            .query_row(
                "SELECT COUNT(*) FROM instances WHERE sop_instance_uid = ?1",
                [uid],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(n, 1, "acknowledged {uid} is not indexed");
    }
    let spool = d.state_dir().join("spool");
    let on_disk: BTreeSet<String> = d
        .committed_files()
        .iter()
        .map(|p| {
            p.strip_prefix(&spool)
                .unwrap()
                .to_string_lossy()
                .to_string()
        })
        .collect();
    let indexed: BTreeSet<String> = {
        let mut stmt = db.prepare("SELECT file_name FROM instances").unwrap();
        stmt.query_map([], |r| r.get::<_, String>(0))
            .unwrap()
            .map(|r| r.unwrap())
            .collect()
    };
    assert_eq!(on_disk, indexed, "spool and index differ");
    assert!(
        d.tmp_files().is_empty(),
        "partial files left: {:?}",
        d.tmp_files()
    );
}
