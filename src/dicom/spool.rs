//! The spool: durable files for received instances, and the checks made before indexing.
//!
//! Layout under the spool directory:
//!
//! ```text
//! spool/tmp/<pid>-<n>.part        an instance being received (never indexed)
//! spool/<hh>/<sha256(uid)>.dcm    a committed instance; hh = first two hex digits
//! ```
//!
//! File names come from the SHA-256 of the SOP Instance UID, never from the peer's string,
//! so no UID can escape the folder or collide with another one's name. An instance becomes
//! durable in this order: written to `tmp/`, fsynced, parsed and checked, renamed into its
//! final name, the directory fsynced, and only then indexed in SQLite ([`Spool::commit`],
//! under the spool's commit lock, which the retention purge takes too). A crash at any
//! point leaves either nothing, a stray `tmp/` file (removed at start-up) or an un-indexed
//! but complete file (indexed at start-up by [`Spool::reconcile`]).
//!
//! This module does blocking file I/O; async callers run it in `spawn_blocking`. It does
//! not speak DICOM networking and does not decide DIMSE statuses beyond classifying why a
//! file was refused ([`InspectError`]).

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use dicom_dictionary_std::tags;
use dicom_object::meta::FileMetaTable;
use dicom_object::{DefaultDicomObject, OpenFileOptions};
use sha2::{Digest, Sha256};

use super::prescan;
use crate::store::{InsertOutcome, NewInstance, Store};

/// Our implementation class UID, written in every file meta header.
pub const IMPLEMENTATION_CLASS_UID: &str = "1.2.826.0.1.3680043.10.1382.1";
/// Our implementation version name.
pub const IMPLEMENTATION_VERSION_NAME: &str = concat!("ONFH_EDGE_", env!("CARGO_PKG_VERSION"));

/// The spool directory and its policies.
#[derive(Debug)]
pub struct Spool {
    /// Root of the spool.
    root: PathBuf,
    /// Where partial files live until committed.
    tmp: PathBuf,
    /// Whether to fsync files and directories (off only for benchmarks/tests that say so).
    fsync: bool,
    /// Counter for unique temporary names within this process.
    counter: AtomicU64,
    /// Largest decoded (inflated) data set accepted: the instance size cap.
    max_inflated: u64,
    /// Serialises the check-rename-index step of [`Spool::commit`] across associations (a
    /// UID is stored once) and against the batches of [`Spool::purge`].
    commit_lock: std::sync::Mutex<()>,
}

/// A file being received.
#[derive(Debug)]
pub struct TempFile {
    /// Where it is.
    pub path: PathBuf,
    /// The open file, positioned after the file meta header (shared so that writes can
    /// run on the blocking pool while the association keeps the handle).
    pub file: std::sync::Arc<File>,
    /// Bytes written so far (header included).
    pub written: u64,
}

/// What the receiver expects of an instance, from the C-STORE command and association.
#[derive(Debug, Clone)]
pub struct Expected {
    /// Affected SOP Class UID from the command.
    pub sop_class_uid: String,
    /// Affected SOP Instance UID from the command.
    pub sop_instance_uid: String,
    /// Calling AE title of the association.
    pub calling_ae_title: String,
}

/// Identifying attributes read back from a received file.
#[derive(Debug, Clone)]
pub struct InstanceInfo {
    /// Source AE title recorded in the file meta (who sent it), if any.
    pub source_ae_title: Option<String>,
    /// Index row to write.
    pub row: NewInstance,
}

/// Why a received file was refused.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    /// The data set does not parse (truncated, corrupt, undecodable).
    #[error("data set does not parse: {0}")]
    Unparseable(String),
    /// It parses but lacks or contradicts what identifies it.
    #[error("{0}")]
    Mismatch(String),
    /// Reading the file failed.
    #[error("cannot read received file: {0}")]
    Io(#[from] io::Error),
}

/// Why a commit failed.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// The instance was refused.
    #[error(transparent)]
    Inspect(#[from] InspectError),
    /// The file system failed (rename, fsync, space).
    #[error("spool file system error: {0}")]
    Io(#[from] io::Error),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The spool's file system is below its free-space floor.
    #[error("{free} bytes free, below the floor of {floor}")]
    BelowFloor {
        /// Bytes free.
        free: u64,
        /// The configured floor.
        floor: u64,
    },
}

impl CommitError {
    /// Whether the failure is a lack of space (answered as "out of resources").
    pub fn is_out_of_space(&self) -> bool {
        match self {
            CommitError::BelowFloor { .. } => true,
            CommitError::Io(e) => is_enospc(e),
            CommitError::Store(e) => e.is_disk_full(),
            _ => false,
        }
    }
}

/// Whether an I/O error means the file system is full.
pub fn is_enospc(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::ENOSPC) || e.raw_os_error() == Some(libc::EDQUOT)
}

/// Spool file name (relative to the spool root) for a SOP Instance UID.
pub fn file_name_for(sop_instance_uid: &str) -> String {
    let hash = hex::encode(Sha256::digest(sop_instance_uid.as_bytes()));
    format!("{}/{}.dcm", &hash[..2], hash)
}

/// Whether `s` looks like a DICOM UID: 1-64 characters, digits in dot-separated
/// components. Leading zeros in a component (forbidden by PS3.5 §9.1, but sent by some
/// scanners) are tolerated: file names are hashes, so this check guards the index, not the
/// file system.
pub fn is_valid_uid(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.split('.')
            .all(|c| !c.is_empty() && c.bytes().all(|b| b.is_ascii_digit()))
}

/// The 128-byte preamble, `DICM`, and a file meta group for a received instance.
pub fn file_header(
    sop_class_uid: &str,
    sop_instance_uid: &str,
    transfer_syntax_uid: &str,
    calling_ae_title: &str,
) -> Result<Vec<u8>, String> {
    let mut builder = dicom_object::meta::FileMetaTableBuilder::new()
        .media_storage_sop_class_uid(sop_class_uid)
        .media_storage_sop_instance_uid(sop_instance_uid)
        .transfer_syntax(transfer_syntax_uid)
        .implementation_class_uid(IMPLEMENTATION_CLASS_UID)
        .implementation_version_name(IMPLEMENTATION_VERSION_NAME);
    if !calling_ae_title.trim().is_empty() {
        builder = builder.source_application_entity_title(calling_ae_title.trim());
    }
    let meta = builder.build().map_err(|e| e.to_string())?;
    let mut out = vec![0u8; 128];
    out.extend_from_slice(b"DICM");
    meta.write(&mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

impl Spool {
    /// Create (if needed) the spool layout under `root`. `max_instance_bytes` also bounds a
    /// deflated data set once inflated.
    pub fn open(root: &Path, fsync: bool, max_instance_bytes: u64) -> io::Result<Spool> {
        fs::create_dir_all(root)?;
        let tmp = root.join("tmp");
        fs::create_dir_all(&tmp)?;
        // All 256 fan-out folders exist up front, so committing a file only ever needs the
        // fsync of its own folder.
        for i in 0..=255u8 {
            fs::create_dir_all(root.join(format!("{i:02x}")))?;
        }
        if fsync {
            sync_dir(root)?;
        }
        Ok(Spool {
            root: root.to_owned(),
            tmp,
            fsync,
            counter: AtomicU64::new(0),
            max_inflated: max_instance_bytes,
            commit_lock: std::sync::Mutex::new(()),
        })
    }

    /// The spool root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Whether files are fsynced.
    pub fn fsync(&self) -> bool {
        self.fsync
    }

    /// Bytes available to us on the spool's file system.
    pub fn free_bytes(&self) -> io::Result<u64> {
        free_bytes(&self.root)
    }

    /// Create a temporary file holding `initial`, unless the file system is below `floor`.
    pub fn create_temp(&self, initial: &[u8], floor: u64) -> Result<TempFile, CommitError> {
        let free = self.free_bytes()?;
        if free < floor.saturating_add(initial.len() as u64) {
            return Err(CommitError::BelowFloor { free, floor });
        }
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let path = self.tmp.join(format!("{}-{n}.part", std::process::id()));
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)?;
        if let Err(e) = file.write_all(initial) {
            let _ = fs::remove_file(&path);
            return Err(e.into());
        }
        Ok(TempFile {
            path,
            file: std::sync::Arc::new(file),
            written: initial.len() as u64,
        })
    }

    /// Append to a temporary file, first checking the floor when `floor` is given.
    pub fn append(&self, file: &File, data: &[u8], floor: Option<u64>) -> Result<(), CommitError> {
        if let Some(floor) = floor {
            let free = self.free_bytes()?;
            if free < floor {
                return Err(CommitError::BelowFloor { free, floor });
            }
        }
        (&*file).write_all(data)?;
        Ok(())
    }

    /// Finish a received file: fsync it, check it, then make it durable and index it.
    ///
    /// The spool's commit lock serialises the check-rename-index step across associations
    /// so that two copies of one SOP Instance UID arriving at once are stored exactly once.
    /// The temporary file is gone when this returns, whatever the outcome.
    ///
    /// `content`, when the caller still holds the whole file in memory, is parsed instead
    /// of reading the file back.
    pub fn commit(
        &self,
        tmp: TempFile,
        content: Option<&[u8]>,
        expected: &Expected,
        store: &Store,
        now_ms: i64,
        due_ms: i64,
    ) -> Result<InsertOutcome, CommitError> {
        let TempFile { path, file, .. } = tmp;
        let synced = if self.fsync { file.sync_all() } else { Ok(()) };
        drop(file);
        let result = match synced {
            Ok(()) => self.commit_inner(&path, content, expected, store, now_ms, due_ms),
            Err(e) => Err(e.into()),
        };
        if path.exists() {
            let _ = fs::remove_file(&path);
        }
        result
    }

    fn commit_inner(
        &self,
        tmp: &Path,
        content: Option<&[u8]>,
        expected: &Expected,
        store: &Store,
        now_ms: i64,
        due_ms: i64,
    ) -> Result<InsertOutcome, CommitError> {
        let mut info = match content {
            Some(bytes) => inspect_bytes(bytes, self.max_inflated)?,
            None => inspect(tmp, self.max_inflated)?,
        };
        check_against(&info, expected)?;
        let file_name = file_name_for(&info.row.sop_instance_uid);
        info.row.file_name = file_name.clone();
        info.row.calling_ae_title = expected.calling_ae_title.trim().to_string();
        let _guard = self.commit_lock.lock().unwrap_or_else(|p| p.into_inner());
        // Under the lock the retention purge also takes: a duplicate's first copy is
        // either already purged (and this copy is stored) or kept for another period.
        if store.touch_instance(&info.row.sop_instance_uid, now_ms)? {
            fs::remove_file(tmp)?;
            return Ok(InsertOutcome::Duplicate);
        }
        let dest = self.root.join(&file_name);
        fs::rename(tmp, &dest)?;
        let dir = dest.parent().unwrap_or(&self.root);
        if self.fsync {
            if let Err(e) = sync_dir(dir) {
                let _ = fs::remove_file(&dest);
                return Err(e.into());
            }
        }
        match store.insert_instance(&info.row, now_ms, due_ms) {
            Ok(outcome) => Ok(outcome),
            Err(e) => {
                // Not acknowledged, so not kept: the sender will retry.
                let _ = fs::remove_file(&dest);
                Err(e.into())
            }
        }
    }

    /// Retention: delete the files of instances received before `before_ms`, then their
    /// rows (files first, so that start-up repair never re-indexes a purged file; a file
    /// already missing counts as deleted). Results and findings are kept. Returns
    /// (instances, bytes).
    ///
    /// Each batch (choose, delete, forget) holds the commit lock: an instance
    /// sent again meanwhile is either stored anew after its batch or, before it, restarts
    /// its own retention period and is not chosen (see `commit`). Between batches the purge
    /// steps aside, so a waiting commit runs: receiving waits for at most about one batch.
    pub fn purge(&self, store: &Store, before_ms: i64, now_ms: i64) -> io::Result<(usize, i64)> {
        let (mut n, mut bytes) = (0, 0);
        // Files that could not be deleted stay indexed; later batches look past them.
        let mut stuck = 0;
        loop {
            let _guard = self.commit_lock.lock().unwrap_or_else(|p| p.into_inner());
            let batch = store
                .spool_older_than(before_ms, stuck + 200)
                .map_err(io::Error::other)?;
            if batch.len() <= stuck {
                return Ok((n, bytes));
            }
            let mut uids = Vec::with_capacity(batch.len());
            let mut dirs = std::collections::BTreeSet::new();
            let mut size = 0;
            for (uid, file, b) in batch {
                let path = self.root.join(&file);
                match fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => {
                        // Keep the row (and the file); the rest of the purge goes on.
                        tracing::warn!(file = %path.display(), error = %e, "cannot delete a file past retention");
                        stuck += 1;
                        continue;
                    }
                }
                if let Some(d) = path.parent() {
                    dirs.insert(d.to_owned());
                }
                uids.push(uid);
                size += b;
            }
            if self.fsync {
                for d in dirs {
                    sync_dir(&d)?;
                }
            }
            store
                .forget_instances(&uids, size, before_ms, now_ms)
                .map_err(io::Error::other)?;
            n += uids.len();
            bytes += size;
            drop(_guard);
            // std's mutex is not fair: without a pause this thread would take the lock
            // straight back and a waiting commit could miss every batch.
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    }

    /// Start-up repair: drop partial files, index complete files that a crash left
    /// un-indexed (they were never acknowledged, but they are whole and valid), and delete
    /// un-indexed files that do not parse. Returns (removed partial, indexed, deleted).
    pub fn reconcile(
        &self,
        store: &Store,
        now_ms: i64,
        due_ms: i64,
    ) -> io::Result<(usize, usize, usize)> {
        let mut removed = 0;
        for entry in fs::read_dir(&self.tmp)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                fs::remove_file(entry.path())?;
                removed += 1;
            }
        }
        let (mut indexed, mut deleted) = (0, 0);
        for i in 0..=255u8 {
            let sub = format!("{i:02x}");
            let deleted_before = deleted;
            for entry in fs::read_dir(self.root.join(&sub))? {
                let entry = entry?;
                let name = entry.file_name().to_string_lossy().to_string();
                if !name.ends_with(".dcm") {
                    continue;
                }
                let rel = format!("{sub}/{name}");
                match store.has_file(&rel) {
                    Ok(true) => continue,
                    Ok(false) => {}
                    Err(e) => return Err(io::Error::other(e)),
                }
                let path = entry.path();
                let ok = inspect(&path, self.max_inflated)
                    .ok()
                    .filter(|info| file_name_for(&info.row.sop_instance_uid) == rel);
                match ok {
                    Some(mut info) => {
                        info.row.file_name = rel.clone();
                        info.row.calling_ae_title =
                            info.source_ae_title.clone().unwrap_or_default();
                        store
                            .insert_instance(&info.row, now_ms, due_ms)
                            .map_err(io::Error::other)?;
                        indexed += 1;
                    }
                    None => {
                        fs::remove_file(&path)?;
                        deleted += 1;
                    }
                }
            }
            if self.fsync && deleted > deleted_before {
                sync_dir(&self.root.join(&sub))?;
            }
        }
        if self.fsync && removed > 0 {
            sync_dir(&self.tmp)?;
        }
        Ok((removed, indexed, deleted))
    }
}

fn text(obj: &DefaultDicomObject, tag: dicom_core::Tag) -> Option<String> {
    obj.element_opt(tag)
        .ok()
        .flatten()
        .and_then(|e| e.to_str().ok())
        .map(|s| s.trim_end_matches(['\0', ' ']).trim_start().to_string())
        .filter(|s| !s.is_empty())
}

/// Tag before which parsing stops: the first pixel data element (Float Pixel Data).
const BEFORE_PIXELS: dicom_core::Tag = dicom_core::Tag(0x7FE0, 0x0008);

/// Largest file meta group accepted (a real one is a few hundred bytes).
const MAX_META_GROUP: u64 = 64 * 1024;

/// Read the file meta group from `r` (positioned at the start of a file of `file_len`
/// bytes); returns the table and the offset of the data set.
///
/// The group is checked before the dicom-rs meta parser sees it: it must open with its
/// (0002,0000) group length, be at most 64 KiB and inside the file, and its elements must
/// walk cleanly as Explicit VR Little Endian ending exactly at the group's end — so the
/// parser can neither allocate a forged length nor stop anywhere but at the data set.
fn read_meta<R: Read>(r: &mut R, file_len: u64) -> Result<(FileMetaTable, u64), InspectError> {
    let bad = |why: &str| InspectError::Unparseable(format!("file meta: {why}"));
    let mut head = [0u8; 144];
    r.read_exact(&mut head)
        .map_err(|_| bad("shorter than a file header"))?;
    if &head[128..132] != b"DICM" {
        return Err(bad("no DICM prefix"));
    }
    if head[132..140] != [0x02, 0x00, 0x00, 0x00, b'U', b'L', 0x04, 0x00] {
        return Err(bad("does not open with its group length"));
    }
    let group_len = u64::from(u32::from_le_bytes([
        head[140], head[141], head[142], head[143],
    ]));
    if group_len > MAX_META_GROUP || 144 + group_len > file_len {
        return Err(bad("group length out of bounds"));
    }
    let mut bytes = Vec::with_capacity(16 + group_len as usize);
    bytes.extend_from_slice(&head[128..144]);
    bytes.resize(16 + group_len as usize, 0);
    r.read_exact(&mut bytes[16..])
        .map_err(|_| bad("shorter than its group length"))?;
    let explicit_le = prescan::Encoding::of("1.2.840.10008.1.2.1");
    prescan::check(&bytes[16..], explicit_le, Some(group_len), group_len)
        .map_err(|e| bad(&e.to_string()))?;
    let meta = std::panic::catch_unwind(|| FileMetaTable::from_reader(&bytes[..]))
        .map_err(|_| bad("the parser panicked"))?
        .map_err(|e| bad(&crate::errors::chain(&e)))?;
    Ok((meta, 144 + group_len))
}

/// Walk the data set structure (see [`prescan`]); `r` is positioned at the data set.
fn walk<R: Read>(
    r: R,
    meta: &FileMetaTable,
    total: u64,
    max_inflated: u64,
) -> Result<prescan::Summary, InspectError> {
    let encoding = prescan::Encoding::of(meta.transfer_syntax());
    let result = if encoding.deflated {
        prescan::check(
            flate2::read::DeflateDecoder::new(r),
            encoding,
            None,
            max_inflated,
        )
    } else {
        prescan::check(r, encoding, Some(total), total)
    };
    match result {
        Ok(s) => Ok(s),
        Err(prescan::PrescanError::Malformed(why)) => Err(InspectError::Unparseable(why)),
        Err(prescan::PrescanError::Io(e))
            if e.kind() == io::ErrorKind::InvalidInput
                || e.kind() == io::ErrorKind::InvalidData =>
        {
            Err(InspectError::Unparseable(format!("deflate stream: {e}")))
        }
        Err(prescan::PrescanError::Io(e)) => Err(InspectError::Io(e)),
    }
}

/// What [`walk_file`] found.
#[derive(Debug, Clone, Copy)]
pub struct FileWalk {
    /// The data set's walk.
    pub data_set: prescan::Summary,
    /// The file's size.
    pub file_bytes: u64,
}

fn walk_file_meta(
    path: &Path,
    max_inflated: u64,
) -> Result<(FileMetaTable, FileWalk), InspectError> {
    let size = fs::metadata(path)?.len();
    let mut f = io::BufReader::with_capacity(64 * 1024, File::open(path)?);
    let (meta, offset) = read_meta(&mut f, size)?;
    let data_set = walk(&mut f, &meta, size - offset, max_inflated)?;
    Ok((
        meta,
        FileWalk {
            data_set,
            file_bytes: size,
        },
    ))
}

/// Walk a DICOM file's meta group and data set ([`prescan`]) before any parser reads it:
/// every path that parses bytes a peer wrote (the receiver, and `scan`/`assemble` of a
/// stored or given folder) calls this first, so no forged length makes the parser allocate
/// what it claims. A file that fails is unparseable; what it holds is the caller's concern.
pub fn walk_file(path: &Path, max_inflated: u64) -> Result<FileWalk, InspectError> {
    walk_file_meta(path, max_inflated).map(|(_, w)| w)
}

/// What the receiver requires of a data set beyond its structure: Pixel Data, and no File
/// Meta Information elements inside it (a writer would store them twice, and readers then
/// take the data set's copy for the file's meta group). Such a data set is refused with
/// "cannot understand", never silently altered.
fn receivable(s: &prescan::Summary) -> Result<(), InspectError> {
    if let Some((g, e)) = s.meta_element {
        return Err(InspectError::Unparseable(format!(
            "File Meta Information element ({g:04X},{e:04X}) inside the data set"
        )));
    }
    if !s.has_pixel_data {
        return Err(InspectError::Mismatch("Pixel Data is missing".into()));
    }
    Ok(())
}

/// Check a received file and read what identifies it.
///
/// The data set's structure is walked first ([`prescan`]): truncation, forged lengths,
/// runaway nesting and oversized headers are refused there, without allocating what a
/// header claims. Only then does the DICOM parser read the attributes before Pixel Data —
/// so memory is bounded by the prescan's limits (64 MiB before Pixel Data, 500 000
/// elements), not by the instance size or by what a header says. A parser panic is caught
/// and reported as an unparseable data set.
pub fn inspect(path: &Path, max_inflated: u64) -> Result<InstanceInfo, InspectError> {
    let (meta, summary) = walk_file_meta(path, max_inflated)?;
    let size = summary.file_bytes;
    receivable(&summary.data_set)?;
    describe(
        std::panic::catch_unwind(|| {
            OpenFileOptions::new()
                .read_until(BEFORE_PIXELS)
                .open_file(path)
        }),
        &meta,
        size,
    )
}

/// [`inspect`] for a file held in memory (preamble included).
pub fn inspect_bytes(bytes: &[u8], max_inflated: u64) -> Result<InstanceInfo, InspectError> {
    let mut cursor = io::Cursor::new(bytes);
    let (meta, offset) = read_meta(&mut cursor, bytes.len() as u64)?;
    // read_meta checked that the group ends inside the buffer.
    let data = &bytes[offset as usize..];
    receivable(&walk(data, &meta, data.len() as u64, max_inflated)?)?;
    describe(
        std::panic::catch_unwind(|| {
            OpenFileOptions::new()
                .read_until(BEFORE_PIXELS)
                .from_reader(&bytes[128..])
        }),
        &meta,
        bytes.len() as u64,
    )
}

fn describe(
    opened: std::thread::Result<Result<DefaultDicomObject, dicom_object::ReadError>>,
    meta: &FileMetaTable,
    size_bytes: u64,
) -> Result<InstanceInfo, InspectError> {
    let mut obj = match opened {
        Ok(Ok(obj)) => obj,
        Ok(Err(e)) => return Err(InspectError::Unparseable(crate::errors::chain(&e))),
        Err(_) => return Err(InspectError::Unparseable("the parser panicked".into())),
    };
    // Identifying attributes written as VR UN are read as their dictionary VR.
    super::unknown_vr::resolve(&mut obj);
    let require = |tag, name: &str| {
        text(&obj, tag).ok_or_else(|| InspectError::Mismatch(format!("{name} is missing")))
    };
    let sop_class_uid = require(tags::SOP_CLASS_UID, "SOP Class UID")?;
    let sop_instance_uid = require(tags::SOP_INSTANCE_UID, "SOP Instance UID")?;
    let study_uid = require(tags::STUDY_INSTANCE_UID, "Study Instance UID")?;
    let series_uid = require(tags::SERIES_INSTANCE_UID, "Series Instance UID")?;
    for (name, uid) in [
        ("SOP Instance UID", &sop_instance_uid),
        ("Study Instance UID", &study_uid),
        ("Series Instance UID", &series_uid),
    ] {
        if !is_valid_uid(uid) {
            return Err(InspectError::Mismatch(format!("{name} is not a valid UID")));
        }
    }
    Ok(InstanceInfo {
        source_ae_title: meta
            .source_application_entity_title()
            .map(|s| s.trim_end_matches(['\0', ' ']).trim().to_string()),
        row: NewInstance {
            sop_instance_uid,
            sop_class_uid,
            study_uid,
            series_uid,
            accession_number: text(&obj, tags::ACCESSION_NUMBER),
            modality: text(&obj, tags::MODALITY),
            series_number: text(&obj, tags::SERIES_NUMBER).and_then(|s| s.parse().ok()),
            series_description: text(&obj, tags::SERIES_DESCRIPTION),
            transfer_syntax_uid: obj
                .meta()
                .transfer_syntax()
                .trim_end_matches('\0')
                .to_string(),
            file_name: String::new(),
            size_bytes,
            calling_ae_title: String::new(),
        },
    })
}

fn check_against(info: &InstanceInfo, expected: &Expected) -> Result<(), InspectError> {
    if info.row.sop_class_uid != expected.sop_class_uid {
        return Err(InspectError::Mismatch(
            "SOP Class UID differs from the C-STORE request".into(),
        ));
    }
    if info.row.sop_instance_uid != expected.sop_instance_uid {
        return Err(InspectError::Mismatch(
            "SOP Instance UID differs from the C-STORE request".into(),
        ));
    }
    Ok(())
}

/// fsync a directory so that a rename or unlink inside it is durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Bytes available to an unprivileged writer on the file system holding `path`.
pub fn free_bytes(path: &Path) -> io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path holds a NUL byte"))?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a writable statvfs.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st.f_bavail as u64 * st.f_frsize as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_a_hash() {
        let a = file_name_for("1.2.3");
        assert_eq!(a.len(), 2 + 1 + 64 + 4);
        assert!(a.starts_with(&a[3..5]));
        let evil = file_name_for("/etc/passwd/../../x");
        assert!(!evil.contains(".."));
        assert_ne!(file_name_for("1.2.3"), file_name_for("1.2.4"));
    }

    #[test]
    fn uid_syntax() {
        assert!(is_valid_uid("1.2.840.10008.5.1.4.1.1.4"));
        assert!(is_valid_uid("1.2.0.3"));
        assert!(is_valid_uid("1.2.03"), "leading zeros are tolerated");
        assert!(!is_valid_uid("1..2"));
        assert!(!is_valid_uid("../x"));
        assert!(!is_valid_uid(&"1".repeat(65)));
    }

    #[test]
    fn header_parses_back() {
        let h = file_header(
            "1.2.840.10008.5.1.4.1.1.4",
            "1.2.3",
            "1.2.840.10008.1.2.1",
            "SCU",
        )
        .unwrap();
        assert_eq!(&h[128..132], b"DICM");
        let meta = dicom_object::meta::FileMetaTable::from_reader(&h[128..]).unwrap();
        assert_eq!(meta.media_storage_sop_instance_uid(), "1.2.3");
        assert_eq!(meta.transfer_syntax(), "1.2.840.10008.1.2.1");
    }

    #[test]
    fn free_space_is_readable() {
        assert!(free_bytes(Path::new("/")).unwrap() > 0);
    }
}
