//! Analyses, per-head findings, series verdicts and the alert outbox.
//!
//! An analysis is recorded once per job key (the series and completion generation that
//! triggered it): recording the same job again — after a restart that re-ran inference — is
//! a no-op that returns the first record, so its alerts are never queued twice. Alert rows
//! are written in the same transaction as the analysis they report on; the sender in
//! `notify` moves them from `pending` to `sent`, or after its last attempt to `dead`.

use rusqlite::{OptionalExtension, Transaction, params};
use serde::Serialize;

use super::{DeliveryState, Store, StoreError};
use crate::result::{Analysis, Side};

/// An alert to queue with an analysis.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NewAlert {
    /// Which head.
    pub side: Side,
    /// The channel's configured name.
    pub channel: String,
    /// Unique per finding and channel; receivers see it (header, Message-ID).
    pub idempotency_key: String,
    /// The rendered message (JSON of `notify::AlertMessage`).
    pub payload: String,
}

/// What [`Store::record_analysis`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// Written, with this id; the second number is how many of the alerts were queued
    /// (an alert whose finding was alerted before is not queued again).
    New(i64, usize),
    /// The job was recorded before, with this id; nothing changed.
    Existing(i64),
}

impl Recorded {
    /// The analysis id.
    pub fn id(self) -> i64 {
        match self {
            Recorded::New(i, _) | Recorded::Existing(i) => i,
        }
    }
}

/// Which analysis of a study: the study, and a digest of the series (and their completion
/// generations) it covers. A new series or a late instance makes a new key, so the study is
/// analysed again; the same set never twice. Stored as `<study UID>#<digest>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobKey {
    study_uid: String,
    digest: String,
}

impl JobKey {
    /// The key of `study_uid` with `series` as (Series Instance UID, generation) pairs.
    pub fn for_series(study_uid: &str, series: &[(String, i64)]) -> JobKey {
        use sha2::Digest;
        let parts: Vec<String> = series.iter().map(|(s, g)| format!("{s}:{g}")).collect();
        let h = sha2::Sha256::digest(parts.join(",").as_bytes());
        JobKey {
            study_uid: study_uid.to_owned(),
            digest: hex::encode(&h[..8]),
        }
    }

    /// A key as stored (`<study>#<digest>`); text without `#` is a study-level key with
    /// an empty digest (as tools and tests may write).
    pub fn parse(stored: &str) -> JobKey {
        let (study, digest) = stored.rsplit_once('#').unwrap_or((stored, ""));
        JobKey {
            study_uid: study.to_owned(),
            digest: digest.to_owned(),
        }
    }

    /// The study.
    pub fn study_uid(&self) -> &str {
        &self.study_uid
    }

    /// A name for this job's own results folder under the study's: the digest (`job` when
    /// there is none).
    pub fn folder_name(&self) -> &str {
        if self.digest.is_empty() {
            "job"
        } else {
            &self.digest
        }
    }
}

impl std::fmt::Display for JobKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.digest.is_empty() {
            f.write_str(&self.study_uid)
        } else {
            write!(f, "{}#{}", self.study_uid, self.digest)
        }
    }
}

impl Serialize for JobKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl rusqlite::types::ToSql for JobKey {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        Ok(self.to_string().into())
    }
}

impl rusqlite::types::FromSql for JobKey {
    fn column_result(v: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
        Ok(JobKey::parse(v.as_str()?))
    }
}

/// A study waiting for analysis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StudyJob {
    /// Study Instance UID.
    pub study_uid: String,
    /// Unique per study and set of series completions.
    pub job_key: JobKey,
    /// The latest series completion the job covers.
    pub completed_ms: i64,
    /// Spool file names (relative to the spool root).
    pub files: Vec<String>,
}

/// An outbox row.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertRow {
    /// Row id.
    pub id: i64,
    /// The analysis it reports on.
    pub analysis_id: i64,
    /// Which head.
    pub side: Side,
    /// Channel name.
    pub channel: String,
    /// Idempotency key.
    pub idempotency_key: String,
    /// Rendered message (JSON).
    pub payload: String,
    /// Delivery state.
    pub state: DeliveryState,
    /// Delivery attempts so far.
    pub attempts: i64,
    /// When the next attempt is due (pending only).
    pub next_attempt_ms: i64,
    /// The last failure.
    pub last_error: Option<String>,
    /// When it was delivered.
    pub sent_ms: Option<i64>,
}

/// Outbox counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct AlertCounts {
    /// Waiting for (another) attempt.
    pub pending: i64,
    /// Delivered.
    pub sent: i64,
    /// Given up after the last attempt.
    pub dead: i64,
}

/// A stored analysis with its alerts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredAnalysis {
    /// Row id.
    pub id: i64,
    /// The job that produced it.
    pub job_key: JobKey,
    /// When it was recorded.
    pub analysed_ms: i64,
    /// The result, exactly as the pipeline returned it.
    pub analysis: Analysis,
    /// Its alerts.
    pub alerts: Vec<AlertRow>,
}

/// Migration 3: the latest series completion a job covered. A study is analysed again only
/// when a series completes after it (not after the time the result was written, which a
/// completion during a slow analysis would precede).
pub(super) const MIGRATION_JOB_COMPLETED: &str = r#"
    ALTER TABLE analyses ADD COLUMN job_completed_ms INTEGER NOT NULL DEFAULT 0;
"#;

/// Migration 2: results and the outbox.
pub(super) const MIGRATION_ATTEMPTS: &str = r#"
    CREATE TABLE analysis_attempts (
        job_key          TEXT PRIMARY KEY,
        study_uid        TEXT NOT NULL,
        attempts         INTEGER NOT NULL,
        last_started_ms  INTEGER NOT NULL
    );
"#;

pub(super) const MIGRATION: &str = r#"
    CREATE TABLE analyses (
        id                 INTEGER PRIMARY KEY AUTOINCREMENT,
        job_key            TEXT NOT NULL UNIQUE,
        study_uid          TEXT NOT NULL,
        series_uid         TEXT NOT NULL,
        accession_number   TEXT NOT NULL,
        status             TEXT NOT NULL,
        reason             TEXT,
        model_name         TEXT NOT NULL,
        model_version      TEXT NOT NULL,
        detector_sha256    TEXT NOT NULL,
        stager_sha256      TEXT NOT NULL,
        intended_use       TEXT NOT NULL,
        skipped_files      INTEGER NOT NULL,
        timings_json       TEXT NOT NULL,
        result_json        TEXT NOT NULL,
        analysed_ms        INTEGER NOT NULL
    );
    CREATE INDEX analyses_by_time ON analyses(analysed_ms);
    CREATE INDEX analyses_by_study ON analyses(study_uid);
    CREATE TABLE findings (
        analysis_id        INTEGER NOT NULL REFERENCES analyses(id),
        side               TEXT NOT NULL CHECK (side IN ('R', 'L')),
        stage              TEXT NOT NULL CHECK (stage IN ('0', 'I', 'II', 'indeterminate')),
        early_onfh         INTEGER NOT NULL,
        p_stage_0          REAL NOT NULL,
        p_stage_1          REAL NOT NULL,
        p_stage_2          REAL NOT NULL,
        detection_score    REAL NOT NULL,
        center_lps_json    TEXT NOT NULL,
        bbox_lps_json      TEXT NOT NULL,
        heatmap_png        TEXT,
        heatmap_nifti      TEXT,
        volume_nifti       TEXT,
        reason             TEXT,
        PRIMARY KEY (analysis_id, side)
    );
    CREATE TABLE series_verdicts (
        analysis_id        INTEGER NOT NULL REFERENCES analyses(id),
        series_uid         TEXT NOT NULL,
        series_number      INTEGER,
        description        TEXT NOT NULL,
        verdict            TEXT NOT NULL CHECK (verdict IN ('chosen', 'passed', 'rejected')),
        reason             TEXT,
        PRIMARY KEY (analysis_id, series_uid)
    );
    CREATE TABLE alerts (
        id                 INTEGER PRIMARY KEY AUTOINCREMENT,
        analysis_id        INTEGER NOT NULL REFERENCES analyses(id),
        side               TEXT NOT NULL,
        channel            TEXT NOT NULL,
        idempotency_key    TEXT NOT NULL UNIQUE,
        payload_json       TEXT NOT NULL,
        state              TEXT NOT NULL CHECK (state IN ('pending', 'sent', 'dead')),
        attempts           INTEGER NOT NULL DEFAULT 0,
        next_attempt_ms    INTEGER NOT NULL,
        last_error         TEXT,
        created_ms         INTEGER NOT NULL,
        sent_ms            INTEGER
    );
    CREATE INDEX alerts_due ON alerts(state, next_attempt_ms);
"#;

pub(super) fn audit(
    tx: &Transaction,
    now_ms: i64,
    event: &str,
    detail: &str,
) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO audit (at_ms, event, detail) VALUES (?1, ?2, ?3)",
        params![now_ms, event, detail],
    )?;
    Ok(())
}

const ALERT_COLUMNS: &str = "id, analysis_id, side, channel, idempotency_key, payload_json, \
                             state, attempts, next_attempt_ms, last_error, sent_ms";

fn alert_row(r: &rusqlite::Row) -> rusqlite::Result<AlertRow> {
    Ok(AlertRow {
        id: r.get(0)?,
        analysis_id: r.get(1)?,
        side: r.get(2)?,
        channel: r.get(3)?,
        idempotency_key: r.get(4)?,
        payload: r.get(5)?,
        state: r.get(6)?,
        attempts: r.get(7)?,
        next_attempt_ms: r.get(8)?,
        last_error: r.get(9)?,
        sent_ms: r.get(10)?,
    })
}

fn json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

impl Store {
    /// Record an analysis, its findings and series verdicts, and queue `alerts` (due now),
    /// in one transaction. A job key recorded before is left as it was.
    pub fn record_analysis(
        &self,
        job_key: &JobKey,
        a: &Analysis,
        alerts: &[NewAlert],
        now_ms: i64,
    ) -> Result<Recorded, StoreError> {
        self.record_job(job_key, 0, a, alerts, &[], now_ms)
    }

    /// [`Store::record_analysis`] for a [`StudyJob`] whose latest series completion was
    /// `job_completed_ms` ([`StudyJob::completed_ms`]), queueing its result objects for
    /// the PACS destinations (`exports`) in the same transaction.
    pub fn record_job(
        &self,
        job_key: &JobKey,
        job_completed_ms: i64,
        a: &Analysis,
        alerts: &[NewAlert],
        exports: &[super::exports::NewExport],
        now_ms: i64,
    ) -> Result<Recorded, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let existing: Option<i64> = tx
            .query_row(
                "SELECT id FROM analyses WHERE job_key = ?1",
                [job_key],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(id) = existing {
            return Ok(Recorded::Existing(id));
        }
        tx.execute(
            "DELETE FROM analysis_attempts WHERE job_key = ?1",
            [job_key],
        )?;
        let status = a.status.as_str();
        tx.execute(
            "INSERT INTO analyses (job_key, study_uid, series_uid, accession_number, status,
                 reason, model_name, model_version, detector_sha256, stager_sha256,
                 intended_use, skipped_files, timings_json, result_json, analysed_ms,
                 job_completed_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
            params![
                job_key,
                a.study_instance_uid,
                a.series_instance_uid,
                a.accession_number,
                status,
                a.reason,
                a.model.name,
                a.model.version,
                a.model.detector_sha256,
                a.model.stager_sha256,
                a.model.intended_use,
                a.skipped_files as i64,
                json(&a.timings_ms),
                json(a),
                now_ms,
                job_completed_ms
            ],
        )?;
        let id = tx.last_insert_rowid();
        for h in &a.heads {
            tx.execute(
                "INSERT INTO findings (analysis_id, side, stage, early_onfh, p_stage_0,
                     p_stage_1, p_stage_2, detection_score, center_lps_json, bbox_lps_json,
                     heatmap_png, heatmap_nifti, volume_nifti, reason)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
                params![
                    id,
                    h.side,
                    h.stage,
                    h.early_onfh,
                    h.probabilities.s0,
                    h.probabilities.s1,
                    h.probabilities.s2,
                    h.detection_score,
                    json(&h.center_lps_mm),
                    json(&h.bbox_lps_mm),
                    h.heatmap.as_ref().map(|f| &f.png),
                    h.heatmap.as_ref().map(|f| &f.nifti),
                    h.heatmap.as_ref().map(|f| &f.volume_nifti),
                    h.reason,
                ],
            )?;
        }
        for s in &a.series {
            let (verdict, reason) = (s.verdict.name(), s.verdict.reason());
            tx.execute(
                "INSERT OR IGNORE INTO series_verdicts
                     (analysis_id, series_uid, series_number, description, verdict, reason)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![id, s.series_uid, s.number, s.description, verdict, reason],
            )?;
        }
        let detail = serde_json::json!({
            "analysis_id": id, "job": job_key, "study_uid": a.study_instance_uid,
            "series_uid": a.series_instance_uid, "status": status,
            "stages": a.heads.iter().map(|h| format!("{} {}", h.side, h.stage)).collect::<Vec<_>>(),
        });
        audit(&tx, now_ms, "analysed", &detail.to_string())?;
        let mut queued = 0;
        for al in alerts {
            // The key is the finding's: a re-analysis that finds the same thing queues
            // nothing new (and must not fail the whole record).
            let n = tx.execute(
                "INSERT INTO alerts (analysis_id, side, channel, idempotency_key, payload_json,
                     state, next_attempt_ms, created_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, 'pending', ?6, ?6)
                 ON CONFLICT(idempotency_key) DO NOTHING",
                params![
                    id,
                    al.side,
                    al.channel,
                    al.idempotency_key,
                    al.payload,
                    now_ms
                ],
            )?;
            if n == 0 {
                continue;
            }
            queued += 1;
            let detail = serde_json::json!({
                "alert_id": tx.last_insert_rowid(), "analysis_id": id,
                "side": al.side, "channel": al.channel, "key": al.idempotency_key,
            });
            audit(&tx, now_ms, "alert_queued", &detail.to_string())?;
        }
        super::exports::queue(&tx, id, exports, now_ms)?;
        tx.commit()?;
        Ok(Recorded::New(id, queued))
    }

    /// Put dead alerts (`ids`, or all when empty) back in the queue, due now, with a
    /// fresh attempt count. Returns how many.
    pub fn requeue_dead_alerts(&self, ids: &[i64], now_ms: i64) -> Result<usize, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let requeued: Vec<i64> = {
            let mut stmt = tx.prepare(
                "UPDATE alerts SET state = 'pending', attempts = 0, next_attempt_ms = ?1
                 WHERE state = 'dead' AND (?2 = 0 OR id IN (SELECT value FROM json_each(?3)))
                 RETURNING id",
            )?;
            let rows =
                stmt.query_map(params![now_ms, ids.len() as i64, json(&ids)], |r| r.get(0))?;
            rows.collect::<Result<_, _>>()?
        };
        for id in &requeued {
            let detail = serde_json::json!({ "alert_id": id });
            audit(&tx, now_ms, "alert_requeued", &detail.to_string())?;
        }
        tx.commit()?;
        Ok(requeued.len())
    }

    /// Instances received before `before_ms` (spool file name and size), oldest first.
    pub fn spool_older_than(
        &self,
        before_ms: i64,
        limit: usize,
    ) -> Result<Vec<(String, String, i64)>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT sop_instance_uid, file_name, size_bytes FROM instances
             WHERE received_ms < ?1 ORDER BY received_ms LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![before_ms, limit as i64], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Forget purged instances (their files are already gone): the instance rows go, the
    /// study, series, analyses and findings stay; one audit event says what went.
    pub fn forget_instances(
        &self,
        sop_instance_uids: &[String],
        bytes: i64,
        before_ms: i64,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        for uid in sop_instance_uids {
            tx.execute("DELETE FROM instances WHERE sop_instance_uid = ?1", [uid])?;
        }
        let detail = serde_json::json!({
            "instances": sop_instance_uids.len(), "bytes": bytes,
            "received_before": crate::clock::rfc3339(before_ms),
        });
        audit(&tx, now_ms, "spool_purged", &detail.to_string())?;
        tx.commit()?;
        Ok(())
    }

    /// Mark the start of an analysis of `job_key`, durably, before it runs; returns how
    /// many earlier attempts started and never recorded a result (the process died during
    /// them). Recording the job's result clears the mark.
    pub fn begin_attempt(&self, job_key: &JobKey, now_ms: i64) -> Result<u32, StoreError> {
        let conn = self.lock();
        let earlier: Option<i64> = conn
            .query_row(
                "SELECT attempts FROM analysis_attempts WHERE job_key = ?1",
                [job_key],
                |r| r.get(0),
            )
            .optional()?;
        conn.execute(
            "INSERT INTO analysis_attempts (job_key, study_uid, attempts, last_started_ms)
             VALUES (?1, ?2, 1, ?3)
             ON CONFLICT (job_key) DO UPDATE SET attempts = attempts + 1,
                 last_started_ms = excluded.last_started_ms",
            params![job_key, job_key.study_uid(), now_ms],
        )?;
        Ok(earlier.unwrap_or(0).clamp(0, i64::from(u32::MAX)) as u32)
    }

    /// The Accession Number received for a study, if any.
    pub fn accession_of(&self, study_uid: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .lock()
            .query_row(
                "SELECT accession_number FROM studies WHERE study_uid = ?1",
                [study_uid],
                |r| r.get::<_, Option<String>>(0),
            )
            .optional()?
            .flatten())
    }

    /// Studies ready for analysis: no series still collecting, and a series completed
    /// after the study's latest analysis (or never analysed). Each comes with its job key
    /// (the study and every series' completion generation) and its spool files.
    pub fn ready_studies(&self) -> Result<Vec<StudyJob>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT t.study_uid, t.last_done FROM (
                 SELECT s.study_uid, MIN(j.completed_ms) AS first_done,
                        MAX(j.completed_ms) AS last_done,
                        SUM(j.state = 'collecting') AS collecting
                 FROM series s JOIN series_jobs j USING (series_uid)
                 GROUP BY s.study_uid) t
             WHERE t.collecting = 0
               AND NOT EXISTS (SELECT 1 FROM analyses a WHERE a.study_uid = t.study_uid
                               AND a.job_completed_ms >= t.last_done)
             ORDER BY t.first_done",
        )?;
        let studies = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        let mut out = Vec::new();
        for (study_uid, completed_ms) in studies {
            let mut gens = conn.prepare_cached(
                "SELECT series_uid, generation FROM series JOIN series_jobs USING (series_uid)
                 WHERE study_uid = ?1 ORDER BY series_uid",
            )?;
            let series = gens
                .query_map([&study_uid], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<Vec<_>, _>>()?;
            let job_key = JobKey::for_series(&study_uid, &series);
            let done = conn
                .prepare_cached("SELECT 1 FROM analyses WHERE job_key = ?1")?
                .exists([&job_key])?;
            if done {
                continue;
            }
            let mut files = conn.prepare_cached(
                "SELECT i.file_name FROM instances i JOIN series s USING (series_uid)
                 WHERE s.study_uid = ?1 ORDER BY i.file_name",
            )?;
            let files = files
                .query_map([&study_uid], |r| r.get(0))?
                .collect::<Result<Vec<String>, _>>()?;
            out.push(StudyJob {
                study_uid,
                job_key,
                completed_ms,
                files,
            });
        }
        Ok(out)
    }

    /// Whether the results tables exist (a read-only handle on a database the daemon has
    /// not migrated yet sees none).
    fn has_results(conn: &rusqlite::Connection) -> Result<bool, StoreError> {
        let v: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        Ok(v >= 3)
    }

    /// Analyses recorded at or after `since_ms`, newest first, with their alerts.
    pub fn analyses_since(&self, since_ms: i64) -> Result<Vec<StoredAnalysis>, StoreError> {
        let conn = self.lock();
        if !Self::has_results(&conn)? {
            return Ok(Vec::new());
        }
        let mut stmt = conn.prepare(
            "SELECT id, job_key, analysed_ms, result_json FROM analyses
             WHERE analysed_ms >= ?1 ORDER BY analysed_ms DESC, id DESC",
        )?;
        let rows = stmt
            .query_map([since_ms], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, JobKey>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, String>(3)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let mut alerts = conn.prepare(&format!(
            "SELECT {ALERT_COLUMNS} FROM alerts WHERE analysis_id = ?1 ORDER BY id"
        ))?;
        let mut out = Vec::with_capacity(rows.len());
        for (id, job_key, analysed_ms, result) in rows {
            let analysis: Analysis = serde_json::from_str(&result).map_err(|e| {
                StoreError::Corrupt(format!("analysis {id}: stored result unreadable: {e}"))
            })?;
            let al = alerts
                .query_map([id], alert_row)?
                .collect::<Result<Vec<_>, _>>()?;
            out.push(StoredAnalysis {
                id,
                job_key,
                analysed_ms,
                analysis,
                alerts: al,
            });
        }
        Ok(out)
    }

    /// The most recent analysis, if any.
    pub fn latest_analysis(&self) -> Result<Option<StoredAnalysis>, StoreError> {
        let conn = self.lock();
        if !Self::has_results(&conn)? {
            return Ok(None);
        }
        let newest: Option<i64> = conn
            .query_row("SELECT MAX(analysed_ms) FROM analyses", [], |r| r.get(0))
            .optional()?
            .flatten();
        drop(conn);
        match newest {
            Some(t) => Ok(self.analyses_since(t)?.into_iter().next()),
            None => Ok(None),
        }
    }

    /// Pending alerts due at or before `now_ms`, oldest first.
    pub fn due_alerts(&self, now_ms: i64, limit: usize) -> Result<Vec<AlertRow>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {ALERT_COLUMNS} FROM alerts
             WHERE state = 'pending' AND next_attempt_ms <= ?1
             ORDER BY next_attempt_ms, id LIMIT ?2"
        ))?;
        let rows = stmt.query_map(params![now_ms, limit as i64], alert_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// When the next pending alert is due.
    pub fn next_alert_due_ms(&self) -> Result<Option<i64>, StoreError> {
        let conn = self.lock();
        Ok(conn.query_row(
            "SELECT MIN(next_attempt_ms) FROM alerts WHERE state = 'pending'",
            [],
            |r| r.get(0),
        )?)
    }

    /// Mark a pending alert delivered.
    pub fn alert_sent(&self, id: i64, now_ms: i64) -> Result<(), StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let n = tx.execute(
            "UPDATE alerts SET state = 'sent', attempts = attempts + 1, sent_ms = ?2,
                 last_error = NULL
             WHERE id = ?1 AND state = 'pending'",
            params![id, now_ms],
        )?;
        if n == 1 {
            let detail = serde_json::json!({ "alert_id": id });
            audit(&tx, now_ms, "alert_sent", &detail.to_string())?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Record a failed attempt: retry at `retry_at_ms`, or with `None` give up (`dead`).
    pub fn alert_failed(
        &self,
        id: i64,
        now_ms: i64,
        error: &str,
        retry_at_ms: Option<i64>,
    ) -> Result<(), StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let (state, next, event) = match retry_at_ms {
            Some(t) => (DeliveryState::Pending, t, "alert_failed"),
            None => (DeliveryState::Dead, now_ms, "alert_dead"),
        };
        let n = tx.execute(
            "UPDATE alerts SET state = ?2, attempts = attempts + 1, next_attempt_ms = ?3,
                 last_error = ?4
             WHERE id = ?1 AND state = 'pending'",
            params![id, state, next, error],
        )?;
        if n == 1 {
            let detail = serde_json::json!({ "alert_id": id, "error": error });
            audit(&tx, now_ms, event, &detail.to_string())?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Outbox counts by state.
    pub fn alert_counts(&self) -> Result<AlertCounts, StoreError> {
        let conn = self.lock();
        let mut c = AlertCounts::default();
        if !Self::has_results(&conn)? {
            return Ok(c);
        }
        let mut stmt = conn.prepare("SELECT state, COUNT(*) FROM alerts GROUP BY state")?;
        let rows = stmt.query_map([], |r| {
            Ok((r.get::<_, DeliveryState>(0)?, r.get::<_, i64>(1)?))
        })?;
        for row in rows {
            let (state, n) = row?;
            match state {
                DeliveryState::Pending => c.pending = n,
                DeliveryState::Sent => c.sent = n,
                DeliveryState::Dead => c.dead = n,
            }
        }
        Ok(c)
    }
}
