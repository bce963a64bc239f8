//! The export outbox: one row per result object and PACS destination, written in the same
//! transaction as the analysis it belongs to (see `results::record_job`), then worked off by
//! `pacs::Exporter`: `pending` → `sent`, or `dead` with the reason.
//!
//! A row is identified by (destination, SOP Instance UID). A re-send after a crash between
//! the PACS's answer and the mark carries the same UID, which a PACS takes as a duplicate.

use rusqlite::params;

use super::results::audit;
use super::{DeliveryState, Store, StoreError};

/// Migration 6: the export outbox.
pub(super) const MIGRATION: &str = r#"
    CREATE TABLE exports (
        id                INTEGER PRIMARY KEY,
        analysis_id       INTEGER NOT NULL REFERENCES analyses(id),
        destination       TEXT NOT NULL,
        object            TEXT NOT NULL,
        file              TEXT NOT NULL,
        sop_class_uid     TEXT NOT NULL,
        sop_instance_uid  TEXT NOT NULL,
        state             TEXT NOT NULL DEFAULT 'pending'
                          CHECK (state IN ('pending', 'sent', 'dead')),
        attempts          INTEGER NOT NULL DEFAULT 0,
        next_attempt_ms   INTEGER NOT NULL,
        last_status       INTEGER,
        last_error        TEXT,
        sent_ms           INTEGER,
        created_ms        INTEGER NOT NULL,
        UNIQUE (destination, sop_instance_uid)
    );
    CREATE INDEX exports_due ON exports(state, next_attempt_ms);
    CREATE INDEX exports_by_analysis ON exports(analysis_id);
"#;

/// An object to send, as the worker queues it.
#[derive(Debug, Clone, PartialEq)]
pub struct NewExport {
    /// Destination name (`[[export.destination]]`).
    pub destination: String,
    /// Which object: `seg`, `pm`, `sr`, `sc-R`, `sc-L`.
    pub object: String,
    /// The file.
    pub file: String,
    /// SOP Class UID.
    pub sop_class_uid: String,
    /// SOP Instance UID.
    pub sop_instance_uid: String,
}

/// One outbox row.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportRow {
    /// Row id.
    pub id: i64,
    /// The analysis it belongs to.
    pub analysis_id: i64,
    /// Destination name.
    pub destination: String,
    /// Which object.
    pub object: String,
    /// The file.
    pub file: String,
    /// SOP Class UID.
    pub sop_class_uid: String,
    /// SOP Instance UID.
    pub sop_instance_uid: String,
    /// Delivery state.
    pub state: DeliveryState,
    /// Attempts so far.
    pub attempts: i64,
    /// When the next attempt is due.
    pub next_attempt_ms: i64,
    /// The last DIMSE status, if a C-STORE was answered.
    pub last_status: Option<i64>,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// When it was sent.
    pub sent_ms: Option<i64>,
}

/// Outbox counts by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExportCounts {
    /// Waiting (first attempt or retry).
    pub pending: i64,
    /// Stored by the destination.
    pub sent: i64,
    /// Given up.
    pub dead: i64,
}

/// What became of one attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum ExportOutcome {
    /// Stored (the DIMSE status: success or a warning).
    Sent(u16),
    /// Failed; try again at this time.
    Retry {
        /// Why.
        error: String,
        /// The DIMSE status, when the C-STORE was answered.
        status: Option<u16>,
        /// When.
        at_ms: i64,
    },
    /// Failed for good.
    Dead {
        /// Why.
        error: String,
        /// The DIMSE status, when the C-STORE was answered.
        status: Option<u16>,
    },
}

const COLUMNS: &str = "id, analysis_id, destination, object, file, sop_class_uid, \
                       sop_instance_uid, state, attempts, next_attempt_ms, last_status, \
                       last_error, sent_ms";

fn row(r: &rusqlite::Row) -> rusqlite::Result<ExportRow> {
    Ok(ExportRow {
        id: r.get(0)?,
        analysis_id: r.get(1)?,
        destination: r.get(2)?,
        object: r.get(3)?,
        file: r.get(4)?,
        sop_class_uid: r.get(5)?,
        sop_instance_uid: r.get(6)?,
        state: r.get(7)?,
        attempts: r.get(8)?,
        next_attempt_ms: r.get(9)?,
        last_status: r.get(10)?,
        last_error: r.get(11)?,
        sent_ms: r.get(12)?,
    })
}

/// Queue `exports` for `analysis_id` inside the caller's transaction (the analysis').
pub(super) fn queue(
    tx: &rusqlite::Transaction,
    analysis_id: i64,
    exports: &[NewExport],
    now_ms: i64,
) -> Result<(), StoreError> {
    for e in exports {
        let n = tx.execute(
            "INSERT INTO exports (analysis_id, destination, object, file, sop_class_uid,
                 sop_instance_uid, next_attempt_ms, created_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)
             ON CONFLICT(destination, sop_instance_uid) DO NOTHING",
            params![
                analysis_id,
                e.destination,
                e.object,
                e.file,
                e.sop_class_uid,
                e.sop_instance_uid,
                now_ms
            ],
        )?;
        if n == 1 {
            let detail = serde_json::json!({
                "export_id": tx.last_insert_rowid(), "analysis_id": analysis_id,
                "destination": e.destination, "object": e.object, "uid": e.sop_instance_uid,
            });
            audit(tx, now_ms, "export_queued", &detail.to_string())?;
        }
    }
    Ok(())
}

impl Store {
    fn has_table(conn: &rusqlite::Connection, name: &str) -> Result<bool, StoreError> {
        let n: i64 = conn.query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
            [name],
            |r| r.get(0),
        )?;
        Ok(n > 0)
    }

    /// Pending exports due at or before `now_ms`, oldest analysis first, each analysis'
    /// objects in the order they were queued (SEG, PM, SR, SC).
    pub fn due_exports(&self, now_ms: i64, limit: usize) -> Result<Vec<ExportRow>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM exports
             WHERE state = 'pending' AND next_attempt_ms <= ?1
             ORDER BY analysis_id, id LIMIT ?2"
        ))?;
        let rows = stmt.query_map(params![now_ms, limit as i64], row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// When the next pending export is due.
    pub fn next_export_due_ms(&self) -> Result<Option<i64>, StoreError> {
        let conn = self.lock();
        if !Self::has_table(&conn, "exports")? {
            return Ok(None);
        }
        Ok(conn.query_row(
            "SELECT MIN(next_attempt_ms) FROM exports WHERE state = 'pending'",
            [],
            |r| r.get(0),
        )?)
    }

    /// Record what became of an attempt on a pending export.
    pub fn export_attempted(
        &self,
        id: i64,
        outcome: &ExportOutcome,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let (state, next, status, error, sent, event) = match outcome {
            ExportOutcome::Sent(s) => (
                DeliveryState::Sent,
                now_ms,
                Some(*s),
                None,
                Some(now_ms),
                "export_sent",
            ),
            ExportOutcome::Retry {
                error,
                status,
                at_ms,
            } => (
                DeliveryState::Pending,
                *at_ms,
                *status,
                Some(error.as_str()),
                None,
                "export_failed",
            ),
            ExportOutcome::Dead { error, status } => (
                DeliveryState::Dead,
                now_ms,
                *status,
                Some(error.as_str()),
                None,
                "export_dead",
            ),
        };
        let n = tx.execute(
            "UPDATE exports SET state = ?2, attempts = attempts + 1, next_attempt_ms = ?3,
                 last_status = ?4, last_error = ?5, sent_ms = ?6
             WHERE id = ?1 AND state = 'pending'",
            params![id, state, next, status.map(i64::from), error, sent],
        )?;
        if n == 1 {
            let detail = serde_json::json!({
                "export_id": id, "status": status, "error": error,
            });
            audit(&tx, now_ms, event, &detail.to_string())?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Put dead exports (`ids`, or all when empty) back in the queue, due now, with a fresh
    /// attempt count. Returns how many.
    pub fn requeue_dead_exports(&self, ids: &[i64], now_ms: i64) -> Result<usize, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let requeued: Vec<i64> = {
            let mut stmt = tx.prepare(
                "UPDATE exports SET state = 'pending', attempts = 0, next_attempt_ms = ?1
                 WHERE state = 'dead' AND (?2 = 0 OR id IN (SELECT value FROM json_each(?3)))
                 RETURNING id",
            )?;
            let ids_json = serde_json::to_string(ids).unwrap_or_else(|_| "[]".into());
            let rows = stmt.query_map(params![now_ms, ids.len() as i64, ids_json], |r| r.get(0))?;
            rows.collect::<Result<_, _>>()?
        };
        for id in &requeued {
            let detail = serde_json::json!({ "export_id": id });
            audit(&tx, now_ms, "export_requeued", &detail.to_string())?;
        }
        tx.commit()?;
        Ok(requeued.len())
    }

    /// Outbox counts by state (zero before the table exists).
    pub fn export_counts(&self) -> Result<ExportCounts, StoreError> {
        let conn = self.lock();
        let mut c = ExportCounts::default();
        if !Self::has_table(&conn, "exports")? {
            return Ok(c);
        }
        let mut stmt = conn.prepare("SELECT state, COUNT(*) FROM exports GROUP BY state")?;
        let rows = stmt.query_map([], |r| {
            Ok((r.get::<_, DeliveryState>(0)?, r.get::<_, i64>(1)?))
        })?;
        for r in rows {
            let (state, n) = r?;
            match state {
                DeliveryState::Pending => c.pending = n,
                DeliveryState::Sent => c.sent = n,
                DeliveryState::Dead => c.dead = n,
            }
        }
        Ok(c)
    }

    /// Every export row, newest analysis first (for `onfh-edge export list`), or those of
    /// one analysis.
    pub fn exports(&self, analysis_id: Option<i64>) -> Result<Vec<ExportRow>, StoreError> {
        let conn = self.lock();
        if !Self::has_table(&conn, "exports")? {
            return Ok(Vec::new());
        }
        let mut stmt = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM exports WHERE ?1 IS NULL OR analysis_id = ?1
             ORDER BY analysis_id DESC, id"
        ))?;
        let rows = stmt.query_map(params![analysis_id], row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}
