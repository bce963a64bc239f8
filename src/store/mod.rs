//! The SQLite database: schema, migrations, and every query the daemon makes.
//!
//! One file (`onfh-edge.sqlite3` in the state directory), WAL mode, `synchronous=FULL`:
//! a commit is on the device when it returns, and the receiver answers C-STORE success only
//! after the instance row is committed. Migrations are numbered and recorded in
//! `PRAGMA user_version`; a database written by a newer build is refused rather than
//! guessed at.
//!
//! The API is synchronous and cheap to clone ([`Store`] is an `Arc` around one
//! connection). Callers on async threads must wrap calls in `spawn_blocking`. This module
//! owns no policy: it does not decide when a series is complete (the caller passes the
//! clock and the due time) and it never touches the spool files.

mod exports;
mod results;

pub use exports::{ExportCounts, ExportOutcome, ExportRow, NewExport};
pub use results::{AlertCounts, AlertRow, JobKey, NewAlert, Recorded, StoredAnalysis, StudyJob};

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use serde::Serialize;

/// Row states of the two outboxes (alerts and PACS exports).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryState {
    /// Waiting for its next attempt.
    Pending,
    /// Delivered.
    Sent,
    /// Given up on (permanent failure or out of attempts); `retry` requeues it.
    Dead,
}

impl DeliveryState {
    /// The name stored in the database and printed.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Sent => "sent",
            DeliveryState::Dead => "dead",
        }
    }

    /// The state named `s`.
    pub fn parse(s: &str) -> Option<DeliveryState> {
        [
            DeliveryState::Pending,
            DeliveryState::Sent,
            DeliveryState::Dead,
        ]
        .into_iter()
        .find(|x| x.as_str() == s)
    }
}

/// A series' completion job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Instances may still arrive (the quiet period has not passed).
    Collecting,
    /// The quiet period passed; the series is ready for analysis.
    Complete,
}

impl JobState {
    /// The name stored in the database and printed.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Collecting => "collecting",
            JobState::Complete => "complete",
        }
    }

    /// The state named `s`.
    pub fn parse(s: &str) -> Option<JobState> {
        [JobState::Collecting, JobState::Complete]
            .into_iter()
            .find(|x| x.as_str() == s)
    }
}

/// Types stored as their text name (`as_str` / `parse`): bound as text, and read back
/// with an error naming the column's unexpected value.
macro_rules! text_column {
    ($($t:ty => $what:literal),* $(,)?) => {$(
        impl rusqlite::types::ToSql for $t {
            fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
                Ok(self.as_str().into())
            }
        }

        impl rusqlite::types::FromSql for $t {
            fn column_result(
                v: rusqlite::types::ValueRef<'_>,
            ) -> rusqlite::types::FromSqlResult<Self> {
                let s = v.as_str()?;
                <$t>::parse(s).ok_or_else(|| {
                    rusqlite::types::FromSqlError::Other(format!("{} {s:?}", $what).into())
                })
            }
        }
    )*};
}

text_column!(
    DeliveryState => "delivery state",
    JobState => "job state",
    crate::result::Side => "side",
    crate::result::StageCall => "stage",
);

impl std::fmt::Display for DeliveryState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite reported an error.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The database was created by a newer build.
    #[error("database schema version {found} is newer than this build understands ({known})")]
    TooNew { found: i64, known: i64 },
    /// The database file could not be prepared.
    #[error("cannot prepare database directory: {0}")]
    Io(#[from] std::io::Error),
    /// A stored value could not be read back.
    #[error("database content unreadable: {0}")]
    Corrupt(String),
}

impl StoreError {
    /// Whether the database could not be written because its file system is full.
    pub fn is_disk_full(&self) -> bool {
        match self {
            StoreError::Sqlite(rusqlite::Error::SqliteFailure(f, _)) => {
                f.code == rusqlite::ErrorCode::DiskFull
            }
            StoreError::Io(e) => {
                e.raw_os_error() == Some(libc::ENOSPC) || e.raw_os_error() == Some(libc::EDQUOT)
            }
            _ => false,
        }
    }
}

/// Migrations, in order; entry `i` brings the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    // 1: receiver tables.
    r#"
    CREATE TABLE studies (
        study_uid          TEXT PRIMARY KEY,
        accession_number   TEXT,
        first_received_ms  INTEGER NOT NULL,
        last_received_ms   INTEGER NOT NULL
    );
    CREATE TABLE series (
        series_uid         TEXT PRIMARY KEY,
        study_uid          TEXT NOT NULL REFERENCES studies(study_uid),
        modality           TEXT,
        series_number      INTEGER,
        series_description TEXT,
        first_received_ms  INTEGER NOT NULL,
        last_received_ms   INTEGER NOT NULL,
        instance_count     INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX series_by_study ON series(study_uid);
    CREATE TABLE instances (
        sop_instance_uid    TEXT PRIMARY KEY,
        sop_class_uid       TEXT NOT NULL,
        series_uid          TEXT NOT NULL REFERENCES series(series_uid),
        transfer_syntax_uid TEXT NOT NULL,
        file_name           TEXT NOT NULL UNIQUE,
        size_bytes          INTEGER NOT NULL,
        calling_ae_title    TEXT NOT NULL,
        received_ms         INTEGER NOT NULL
    );
    CREATE INDEX instances_by_series ON instances(series_uid);
    -- One row per series: the completion job. 'collecting' until the quiet period has
    -- passed, then 'complete'. A late instance puts it back to 'collecting' and bumps the
    -- generation, so whoever consumes completions can tell a re-completed series apart.
    CREATE TABLE series_jobs (
        series_uid      TEXT PRIMARY KEY REFERENCES series(series_uid),
        state           TEXT NOT NULL CHECK (state IN ('collecting', 'complete')),
        due_ms          INTEGER NOT NULL,
        generation      INTEGER NOT NULL,
        completed_ms    INTEGER
    );
    CREATE INDEX series_jobs_due ON series_jobs(state, due_ms);
    -- Append-only record of what the appliance did.
    CREATE TABLE audit (
        id      INTEGER PRIMARY KEY AUTOINCREMENT,
        at_ms   INTEGER NOT NULL,
        event   TEXT NOT NULL,
        detail  TEXT NOT NULL
    );
    CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
        BEGIN SELECT RAISE(ABORT, 'audit is append-only'); END;
    CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
        BEGIN SELECT RAISE(ABORT, 'audit is append-only'); END;
    "#,
    // 2: analyses, findings, series verdicts, the alert outbox.
    results::MIGRATION,
    // 3: analyses.job_completed_ms.
    results::MIGRATION_JOB_COMPLETED,
    // 4: retention finds the oldest instances through an index, not a scan of them all
    // (it runs under the receiver's commit lock).
    "CREATE INDEX instances_by_received ON instances(received_ms);",
    // 5: analysis attempts, marked before each analysis, so a study whose analysis kills
    // the process (out of memory, a crash, the watchdog) is not analysed forever.
    results::MIGRATION_ATTEMPTS,
    // 6: the export outbox (result objects to PACS destinations).
    exports::MIGRATION,
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Handle to the database; clones share one connection.
#[derive(Clone)]
pub struct Store {
    /// One connection, serialised: SQLite allows a single writer anyway, and one
    /// connection keeps the durability reasoning simple.
    conn: Arc<Mutex<Connection>>,
}

/// What the receiver knows about an instance it is about to index.
#[derive(Debug, Clone)]
pub struct NewInstance {
    /// SOP Instance UID (primary key).
    pub sop_instance_uid: String,
    /// SOP Class UID.
    pub sop_class_uid: String,
    /// Study the instance belongs to.
    pub study_uid: String,
    /// Series the instance belongs to.
    pub series_uid: String,
    /// Accession Number, if present.
    pub accession_number: Option<String>,
    /// Modality (MR).
    pub modality: Option<String>,
    /// Series Number, if present.
    pub series_number: Option<i64>,
    /// Series Description, if present.
    pub series_description: Option<String>,
    /// Transfer syntax the file is stored in.
    pub transfer_syntax_uid: String,
    /// File name relative to the spool directory.
    pub file_name: String,
    /// File size in bytes.
    pub size_bytes: u64,
    /// Who sent it.
    pub calling_ae_title: String,
}

/// Whether an insert stored something new.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsertOutcome {
    /// A new instance row was written.
    Inserted,
    /// The SOP Instance UID was already indexed; nothing changed.
    Duplicate,
}

/// A series whose completion job fired.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CompletedSeries {
    /// Series Instance UID.
    pub series_uid: String,
    /// Study Instance UID.
    pub study_uid: String,
    /// Instances indexed for the series.
    pub instance_count: i64,
    /// How many times the series has been (re)opened.
    pub generation: i64,
}

/// Counts for `onfh-edge status`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    /// Schema version of the database.
    pub schema_version: i64,
    /// Studies with at least one instance.
    pub studies: i64,
    /// Series with at least one instance.
    pub series: i64,
    /// Instances indexed.
    pub instances: i64,
    /// Bytes of indexed instance files.
    pub instance_bytes: i64,
    /// Series still inside their quiet period.
    pub jobs_collecting: i64,
    /// Series whose quiet period has passed.
    pub jobs_complete: i64,
}

/// One series row for `onfh-edge status`.
#[derive(Debug, Clone, Serialize)]
pub struct SeriesRow {
    /// Study Instance UID.
    pub study_uid: String,
    /// Series Instance UID.
    pub series_uid: String,
    /// Series Number.
    pub series_number: Option<i64>,
    /// Series Description.
    pub series_description: Option<String>,
    /// Instances indexed.
    pub instance_count: i64,
    /// Job state.
    pub state: JobState,
    /// Job generation.
    pub generation: i64,
}

impl Store {
    /// Open (creating if needed) the database at `path` and bring it to the current schema.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Self::open_with(path, true)
    }

    /// [`Store::open`], choosing whether commits wait for the device (`durable`, the
    /// default) or only for the OS (`synchronous=NORMAL`: still atomic and crash-safe for
    /// the process, but a power cut can drop the newest commits). Only a site that turned
    /// `receiver.fsync` off gets the latter.
    pub fn open_with(path: &Path, durable: bool) -> Result<Store, StoreError> {
        if let Some(parent) = path.parent() {
            if !parent.as_os_str().is_empty() {
                std::fs::create_dir_all(parent)?;
            }
        }
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // FULL: every commit is on the device before it returns, so an instance row is
        // durable before the receiver answers success.
        let synchronous = if durable { "FULL" } else { "NORMAL" };
        conn.pragma_update(None, "synchronous", synchronous)?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        let store = Store {
            conn: Arc::new(Mutex::new(conn)),
        };
        store.migrate()?;
        Ok(store)
    }

    /// Open an existing database read-only (for `status` while the daemon runs).
    pub fn open_read_only(path: &Path) -> Result<Store, StoreError> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        let found: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if found > SCHEMA_VERSION {
            return Err(StoreError::TooNew {
                found,
                known: SCHEMA_VERSION,
            });
        }
        Ok(Store {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite inconsistent (transactions
        // roll back on drop), so a poisoned mutex is still safe to use.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn migrate(&self) -> Result<(), StoreError> {
        let mut conn = self.lock();
        let found: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if found > SCHEMA_VERSION {
            return Err(StoreError::TooNew {
                found,
                known: SCHEMA_VERSION,
            });
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
            let tx = conn.transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)?;
            tx.commit()?;
        }
        Ok(())
    }

    /// Whether an instance with this SOP Instance UID is indexed.
    pub fn has_instance(&self, sop_instance_uid: &str) -> Result<bool, StoreError> {
        let conn = self.lock();
        let found = conn
            .prepare_cached("SELECT 1 FROM instances WHERE sop_instance_uid = ?1")?
            .exists([sop_instance_uid])?;
        Ok(found)
    }

    /// A sender sent an indexed instance again: restart its retention clock (it is
    /// wanted now), so that a purge running next cannot delete what was just
    /// acknowledged. Returns whether the instance was indexed.
    pub fn touch_instance(&self, sop_instance_uid: &str, now_ms: i64) -> Result<bool, StoreError> {
        let conn = self.lock();
        let n = conn
            .prepare_cached(
                "UPDATE instances SET received_ms = MAX(received_ms, ?2) WHERE sop_instance_uid = ?1",
            )?
            .execute(params![sop_instance_uid, now_ms])?;
        Ok(n > 0)
    }

    /// Whether a spool file name is indexed.
    pub fn has_file(&self, file_name: &str) -> Result<bool, StoreError> {
        let conn = self.lock();
        let found = conn
            .query_row(
                "SELECT 1 FROM instances WHERE file_name = ?1",
                [file_name],
                |_| Ok(()),
            )
            .optional()?;
        Ok(found.is_some())
    }

    /// Index an instance, and (re)arm its series' completion job to fire at `due_ms`.
    ///
    /// One transaction: the study, series, instance and job rows change together or not
    /// at all. A SOP Instance UID already present is reported as a duplicate and nothing
    /// changes (the job is not re-armed: no new data arrived).
    pub fn insert_instance(
        &self,
        inst: &NewInstance,
        now_ms: i64,
        due_ms: i64,
    ) -> Result<InsertOutcome, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let exists = tx
            .prepare_cached("SELECT 1 FROM instances WHERE sop_instance_uid = ?1")?
            .exists([&inst.sop_instance_uid])?;
        if exists {
            return Ok(InsertOutcome::Duplicate);
        }
        tx.prepare_cached(
            "INSERT INTO studies (study_uid, accession_number, first_received_ms, last_received_ms)
             VALUES (?1, ?2, ?3, ?3)
             ON CONFLICT(study_uid) DO UPDATE SET
               last_received_ms = excluded.last_received_ms,
               accession_number = COALESCE(studies.accession_number, excluded.accession_number)",
        )?
        .execute(params![inst.study_uid, inst.accession_number, now_ms])?;
        tx.prepare_cached(
            "INSERT INTO series (series_uid, study_uid, modality, series_number, series_description,
                                 first_received_ms, last_received_ms, instance_count)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, 1)
             ON CONFLICT(series_uid) DO UPDATE SET
               last_received_ms = excluded.last_received_ms,
               instance_count = series.instance_count + 1",
        )?
        .execute(
            params![
                inst.series_uid,
                inst.study_uid,
                inst.modality,
                inst.series_number,
                inst.series_description,
                now_ms
            ],
        )?;
        tx.prepare_cached(
            "INSERT INTO instances (sop_instance_uid, sop_class_uid, series_uid, transfer_syntax_uid,
                                    file_name, size_bytes, calling_ae_title, received_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?
        .execute(
            params![
                inst.sop_instance_uid,
                inst.sop_class_uid,
                inst.series_uid,
                inst.transfer_syntax_uid,
                inst.file_name,
                inst.size_bytes as i64,
                inst.calling_ae_title,
                now_ms
            ],
        )?;
        tx.prepare_cached(
            "INSERT INTO series_jobs (series_uid, state, due_ms, generation)
             VALUES (?1, 'collecting', ?2, 1)
             ON CONFLICT(series_uid) DO UPDATE SET
               generation = series_jobs.generation + (series_jobs.state = 'complete'),
               state = 'collecting',
               due_ms = MAX(series_jobs.due_ms, excluded.due_ms),
               completed_ms = NULL",
        )?
        .execute(params![inst.series_uid, due_ms])?;
        tx.commit()?;
        Ok(InsertOutcome::Inserted)
    }

    /// Earliest due time among collecting jobs.
    pub fn next_due_ms(&self) -> Result<Option<i64>, StoreError> {
        let conn = self.lock();
        Ok(conn.query_row(
            "SELECT MIN(due_ms) FROM series_jobs WHERE state = 'collecting'",
            [],
            |r| r.get(0),
        )?)
    }

    /// Mark every collecting job due at or before `now_ms` complete; return them.
    pub fn complete_due(&self, now_ms: i64) -> Result<Vec<CompletedSeries>, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let done = {
            let mut stmt = tx.prepare(
                "UPDATE series_jobs SET state = 'complete', completed_ms = ?1
                 WHERE state = 'collecting' AND due_ms <= ?1
                 RETURNING series_uid, generation",
            )?;
            let rows = stmt.query_map([now_ms], |r| Ok((r.get::<_, String>(0)?, r.get(1)?)))?;
            rows.collect::<Result<Vec<(String, i64)>, _>>()?
        };
        let mut out = Vec::with_capacity(done.len());
        for (series_uid, generation) in done {
            let (study_uid, instance_count) = tx.query_row(
                "SELECT study_uid, instance_count FROM series WHERE series_uid = ?1",
                [&series_uid],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            let c = CompletedSeries {
                series_uid,
                study_uid,
                instance_count,
                generation,
            };
            tx.execute(
                "INSERT INTO audit (at_ms, event, detail) VALUES (?1, 'series_complete', ?2)",
                params![now_ms, serde_json::to_string(&c).unwrap_or_default()],
            )?;
            out.push(c);
        }
        tx.commit()?;
        Ok(out)
    }

    /// Append an audit event.
    pub fn audit(&self, now_ms: i64, event: &str, detail: &str) -> Result<(), StoreError> {
        let conn = self.lock();
        conn.execute(
            "INSERT INTO audit (at_ms, event, detail) VALUES (?1, ?2, ?3)",
            params![now_ms, event, detail],
        )?;
        Ok(())
    }

    /// The detail of the newest audit event named `event`.
    pub fn last_audit(&self, event: &str) -> Result<Option<String>, StoreError> {
        let conn = self.lock();
        Ok(conn
            .query_row(
                "SELECT detail FROM audit WHERE event = ?1 ORDER BY id DESC LIMIT 1",
                [event],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Counts for the status command.
    pub fn summary(&self) -> Result<Summary, StoreError> {
        let conn = self.lock();
        let schema_version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if schema_version == 0 {
            return Ok(Summary::default());
        }
        let count =
            |sql: &str| -> Result<i64, rusqlite::Error> { conn.query_row(sql, [], |r| r.get(0)) };
        Ok(Summary {
            schema_version,
            studies: count("SELECT COUNT(*) FROM studies")?,
            series: count("SELECT COUNT(*) FROM series")?,
            instances: count("SELECT COUNT(*) FROM instances")?,
            instance_bytes: count("SELECT COALESCE(SUM(size_bytes), 0) FROM instances")?,
            jobs_collecting: count("SELECT COUNT(*) FROM series_jobs WHERE state = 'collecting'")?,
            jobs_complete: count("SELECT COUNT(*) FROM series_jobs WHERE state = 'complete'")?,
        })
    }

    /// All series with their job state, newest first.
    pub fn series_rows(&self) -> Result<Vec<SeriesRow>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT s.study_uid, s.series_uid, s.series_number, s.series_description,
                    s.instance_count, j.state, j.generation
             FROM series s JOIN series_jobs j USING (series_uid)
             ORDER BY s.last_received_ms DESC, s.series_uid",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(SeriesRow {
                study_uid: r.get(0)?,
                series_uid: r.get(1)?,
                series_number: r.get(2)?,
                series_description: r.get(3)?,
                instance_count: r.get(4)?,
                state: r.get(5)?,
                generation: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Spool file names of all indexed instances of a series.
    pub fn series_files(&self, series_uid: &str) -> Result<Vec<String>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare("SELECT file_name FROM instances WHERE series_uid = ?1 ORDER BY file_name")?;
        let rows = stmt.query_map([series_uid], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inst(sop: &str, series: &str) -> NewInstance {
        NewInstance {
            sop_instance_uid: sop.into(),
            sop_class_uid: "1.2.840.10008.5.1.4.1.1.4".into(),
            study_uid: "1.2.3".into(),
            series_uid: series.into(),
            accession_number: Some("A1".into()),
            modality: Some("MR".into()),
            series_number: Some(3),
            series_description: Some("T2 COR".into()),
            transfer_syntax_uid: "1.2.840.10008.1.2.1".into(),
            file_name: format!("{sop}.dcm"),
            size_bytes: 10,
            calling_ae_title: "SCU".into(),
        }
    }

    #[test]
    fn insert_duplicate_complete_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db.sqlite3")).unwrap();
        assert_eq!(
            store.insert_instance(&inst("1", "S"), 0, 100).unwrap(),
            InsertOutcome::Inserted
        );
        assert_eq!(
            store.insert_instance(&inst("1", "S"), 10, 110).unwrap(),
            InsertOutcome::Duplicate
        );
        assert_eq!(
            store.insert_instance(&inst("2", "S"), 20, 120).unwrap(),
            InsertOutcome::Inserted
        );
        assert!(store.complete_due(119).unwrap().is_empty());
        assert_eq!(store.next_due_ms().unwrap(), Some(120));
        let done = store.complete_due(120).unwrap();
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].instance_count, 2);
        assert_eq!(done[0].generation, 1);
        // Completion is idempotent.
        assert!(store.complete_due(500).unwrap().is_empty());
        // A late instance re-opens the series with a new generation.
        store.insert_instance(&inst("3", "S"), 600, 700).unwrap();
        let s = store.summary().unwrap();
        assert_eq!(
            (s.instances, s.series, s.studies, s.jobs_collecting),
            (3, 1, 1, 1)
        );
        let done = store.complete_due(700).unwrap();
        assert_eq!((done[0].instance_count, done[0].generation), (3, 2));
        assert_eq!(
            store.series_files("S").unwrap(),
            vec!["1.dcm", "2.dcm", "3.dcm"]
        );
    }

    #[test]
    fn reopening_keeps_data_and_refuses_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite3");
        {
            let store = Store::open(&path).unwrap();
            store.insert_instance(&inst("1", "S"), 0, 100).unwrap();
        }
        let store = Store::open(&path).unwrap();
        assert!(store.has_instance("1").unwrap());
        assert!(store.has_file("1.dcm").unwrap());
        store
            .lock()
            .pragma_update(None, "user_version", 99)
            .unwrap();
        drop(store);
        assert!(matches!(
            Store::open(&path),
            Err(StoreError::TooNew { found: 99, .. })
        ));
    }

    #[test]
    fn audit_is_append_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db.sqlite3")).unwrap();
        store.audit(1, "start", "{}").unwrap();
        let conn = store.lock();
        assert!(conn.execute("DELETE FROM audit", []).is_err());
        assert!(conn.execute("UPDATE audit SET event = 'x'", []).is_err());
    }
}
