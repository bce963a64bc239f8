//! The inference worker: one dedicated thread that takes studies whose series are all
//! complete (from the database, so a restart resumes them), runs the pipeline with the
//! models loaded once, and records each result with its alerts in one transaction.
//!
//! A study is picked up again only when one of its series completed after its last
//! analysis; a crash mid-inference leaves no result row, so the study is analysed again
//! after the restart, and alerts for the same finding are never queued twice (the outbox
//! key is the finding's). Each analysis is marked in the database before it starts: a
//! study whose analysis killed the process [`MAX_ATTEMPTS`] times (out of memory, a crash,
//! the watchdog) is recorded as an `error` with that reason, alerted like an indeterminate
//! call, and not analysed again. Models that fail to load are retried every minute while
//! the jobs wait. The worker neither receives DICOM nor delivers alerts.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tracing::{error, info, warn};

use crate::clock::now_ms;
use crate::config::Settings;
use crate::notify;
use crate::pipeline::{self, Models, Status};
use crate::store::{Recorded, Store, StudyJob};

/// Analyses of one job that may die with the process before the job is recorded as an
/// error instead of being tried again.
pub const MAX_ATTEMPTS: u32 = 2;

/// What the worker is doing (for the panel and `status`).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct WorkerStatus {
    /// Models loaded and ready.
    pub models_loaded: bool,
    /// Why the models are not loaded.
    pub models_error: Option<String>,
    /// The study being analysed.
    pub analysing: Option<String>,
    /// Since when (ms since the epoch).
    pub analysing_since_ms: i64,
    /// Studies waiting (as of the last look).
    pub queued: usize,
    /// Studies analysed since start.
    pub analysed: u64,
    /// When the worker's loop last turned (ms since the epoch): the watchdog's evidence
    /// that it is not stuck.
    pub heartbeat_ms: i64,
}

/// Handle to the worker thread.
pub struct Worker {
    /// Shared status.
    pub status: Arc<Mutex<WorkerStatus>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Worker {
    /// Start the worker on `store` with `settings`; heatmaps go under `results_dir`.
    pub fn spawn(store: Store, settings: Settings, results_dir: PathBuf) -> Worker {
        let status = Arc::new(Mutex::new(WorkerStatus::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, sp) = (status.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("inference".into())
            .spawn(move || run(store, settings, results_dir, st, sp))
            .expect("cannot start the inference thread");
        Worker {
            status,
            stop,
            thread: Some(thread),
        }
    }

    /// Ask the worker to stop after the study in progress, and wait for it.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Retention for `results/`: delete each analysis folder (`<study>/<job>/`: the T2 copy,
/// the heatmap NIfTI and PNGs) last written before `before`, then study folders left
/// empty. The analyses, findings and alerts in the database stay. Returns (folders,
/// bytes). A folder that cannot be deleted is logged and skipped.
pub fn purge_results(
    results_dir: &std::path::Path,
    before: std::time::SystemTime,
) -> std::io::Result<(usize, u64)> {
    let (mut n, mut bytes) = (0, 0);
    let studies = match std::fs::read_dir(results_dir) {
        Ok(r) => r,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((0, 0)),
        Err(e) => return Err(e),
    };
    for study in studies {
        let study = study?;
        if !study.file_type()?.is_dir() {
            continue;
        }
        for job in std::fs::read_dir(study.path())? {
            let job = job?;
            let meta = job.metadata()?;
            if !meta.is_dir() || meta.modified()? >= before {
                continue;
            }
            let size = dir_size(&job.path());
            match std::fs::remove_dir_all(job.path()) {
                Ok(()) => {
                    n += 1;
                    bytes += size;
                }
                Err(e) => {
                    warn!(folder = %job.path().display(), error = %e, "cannot delete results past retention")
                }
            }
        }
        // Only succeeds when empty.
        let _ = std::fs::remove_dir(study.path());
    }
    Ok((n, bytes))
}

/// The SR of the latest earlier analysis of a study (`study_dir` holds one folder per
/// analysis), other than `current`'s.
fn previous_sr(
    study_dir: &std::path::Path,
    current: &std::path::Path,
) -> Option<crate::pacs::SrRef> {
    std::fs::read_dir(study_dir)
        .ok()?
        .filter_map(|e| e.ok())
        .filter(|e| e.path() != current)
        .filter_map(|e| {
            let sr = e.path().join("dicom").join("sr.dcm");
            let t = sr.metadata().ok()?.modified().ok()?;
            Some((t, sr))
        })
        .max_by_key(|(t, _)| *t)
        .and_then(|(_, sr)| crate::pacs::SrRef::read(&sr))
}

/// Bytes of the files under `dir`, at any depth (unreadable entries count 0).
fn dir_size(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_size(&e.path()),
            Ok(_) => e.metadata().map(|m| m.len()).unwrap_or(0),
            Err(_) => 0,
        })
        .sum()
}

fn set(status: &Mutex<WorkerStatus>, f: impl FnOnce(&mut WorkerStatus)) {
    f(&mut status.lock().unwrap_or_else(|p| p.into_inner()));
}

/// A study UID as a folder name.
fn folder(study_uid: &str) -> String {
    study_uid
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn run(
    store: Store,
    settings: Settings,
    results_dir: PathBuf,
    status: Arc<Mutex<WorkerStatus>>,
    stop: Arc<AtomicBool>,
) {
    let mut models: Option<Models> = None;
    let mut next_load = std::time::Instant::now();
    // Said once, after the first look at the queue with the models loaded: what a restart
    // found waiting (and a sign for tools and tests that the worker is running).
    let mut first_look = true;
    let sleep = |d: Duration| {
        let end = std::time::Instant::now() + d;
        while !stop.load(Ordering::SeqCst) && std::time::Instant::now() < end {
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    while !stop.load(Ordering::SeqCst) {
        set(&status, |s| s.heartbeat_ms = now_ms());
        if models.is_none() && std::time::Instant::now() >= next_load {
            models = load_models(&settings, &status);
            if models.is_none() {
                next_load = std::time::Instant::now() + Duration::from_secs(60);
            }
        }
        let jobs = match store.ready_studies() {
            Ok(j) => j,
            Err(e) => {
                error!(error = %e, "cannot read the job queue");
                sleep(Duration::from_secs(5));
                continue;
            }
        };
        set(&status, |s| s.queued = jobs.len());
        if first_look && models.is_some() {
            info!(
                waiting = jobs.len(),
                "worker ready: studies waiting for analysis"
            );
            first_look = false;
        }
        let (Some(m), Some(job)) = (models.as_ref(), jobs.into_iter().next()) else {
            sleep(Duration::from_millis(500));
            continue;
        };
        set(&status, |s| {
            s.analysing = Some(job.study_uid.clone());
            s.analysing_since_ms = now_ms();
        });
        let done = Job {
            store: &store,
            settings: &settings,
            results_dir: &results_dir,
            models: m,
        }
        .analyse_and_record(&job);
        set(&status, |s| {
            s.analysing = None;
            s.analysed += u64::from(done);
        });
        if !done {
            sleep(Duration::from_secs(5));
        }
    }
}

/// Load both models, saying so in the log and the status; `None` when they cannot be
/// loaded (the studies wait).
fn load_models(settings: &Settings, status: &Mutex<WorkerStatus>) -> Option<Models> {
    match Models::load(&settings.analysis, &settings.preprocess) {
        Ok(m) => {
            info!(model = %m.info().name, "models loaded");
            set(status, |s| {
                s.models_loaded = true;
                s.models_error = None;
            });
            Some(m)
        }
        Err(e) => {
            let e = crate::errors::chain(&e);
            error!(error = %e, "cannot load the models; studies wait, retrying in a minute");
            set(status, |s| {
                s.models_loaded = false;
                s.models_error = Some(e);
            });
            None
        }
    }
}

/// What analysing one study needs.
struct Job<'a> {
    store: &'a Store,
    settings: &'a Settings,
    results_dir: &'a Path,
    models: &'a Models,
}

impl Job<'_> {
    /// Analyse `job` (or record it as an error after [`MAX_ATTEMPTS`] attempts that stopped
    /// the process) and record the result with its alerts and PACS exports in one
    /// transaction. `false` when the database failed (the job is tried again).
    fn analyse_and_record(&self, job: &StudyJob) -> bool {
        let (store, settings) = (self.store, self.settings);
        // One folder per job: a re-analysis never overwrites the heatmaps an earlier
        // result (and its alerts) point at.
        let study_dir = self.results_dir.join(folder(&job.study_uid));
        let out = study_dir.join(folder(job.job_key.folder_name()));
        let earlier = match store.begin_attempt(&job.job_key, now_ms()) {
            Ok(n) => n,
            Err(e) => {
                error!(error = %e, study_uid = %job.study_uid, "cannot mark the analysis attempt; will retry");
                return false;
            }
        };
        let a = if earlier >= MAX_ATTEMPTS {
            let reason = format!(
                "the analysis stopped the appliance {earlier} times (out of memory, a crash or \
                 the watchdog) and was not tried again"
            );
            error!(study_uid = %job.study_uid, attempts = earlier, "{reason}");
            let accession = store.accession_of(&job.study_uid).ok().flatten();
            pipeline::Analysis::not_analysed(self.models, &job.study_uid, accession, reason)
        } else {
            if earlier > 0 {
                warn!(study_uid = %job.study_uid, attempts = earlier, "an earlier analysis of this study did not finish; trying again");
            }
            let spool = settings.storage.spool_dir();
            let paths: Vec<PathBuf> = job.files.iter().map(|f| spool.join(f)).collect();
            let previous = previous_sr(&study_dir, &out);
            finite_or_error(pipeline::analyze_replacing(
                &paths,
                self.models,
                &settings.analysis,
                &settings.selection,
                Some(&out),
                previous,
            ))
        };
        let now = now_ms();
        // The result objects this analysis wrote, for every PACS destination; none for a
        // study that was not analysed (its folder may hold a crashed attempt's files).
        let exports =
            if matches!(a.status, Status::Ok | Status::Indeterminate) && earlier < MAX_ATTEMPTS {
                crate::pacs::exports_for(&settings.export, &out.join("dicom"))
            } else {
                Vec::new()
            };
        // Alerts say where the results are in PACS when they go there.
        let pacs = if exports.is_empty() {
            None
        } else {
            crate::pacs::alert_location(&settings.export)
        };
        let alerts = notify::compose_with(&settings.notify, &a, now, pacs.as_deref());
        match store.record_job(&job.job_key, job.completed_ms, &a, &alerts, &exports, now) {
            Ok(Recorded::New(id, queued)) => {
                let stages: Vec<String> = a
                    .heads
                    .iter()
                    .map(|h| format!("{} {}", h.side, h.stage))
                    .collect();
                info!(
                    analysis = id,
                    study_uid = %a.study_instance_uid,
                    status = ?a.status,
                    heads = %stages.join(", "),
                    alerts_queued = queued,
                    total_ms = a.timings_ms.total,
                    "study analysed"
                );
                if a.status == Status::Error {
                    warn!(study_uid = %a.study_instance_uid, reason = ?a.reason, "study could not be analysed");
                }
                true
            }
            Ok(Recorded::Existing(id)) => {
                info!(analysis = id, study_uid = %job.study_uid, "study was already recorded");
                true
            }
            Err(e) => {
                error!(error = %e, study_uid = %job.study_uid, "cannot record the result; will retry");
                false
            }
        }
    }
}

/// A result with a non-finite probability or score is never stored or alerted as a
/// finding: it becomes an error, so the study does not come back forever.
fn finite_or_error(mut a: pipeline::Analysis) -> pipeline::Analysis {
    let finite = a.heads.iter().all(|h| {
        let p = &h.probabilities;
        [p.s0, p.s1, p.s2, h.detection_score]
            .iter()
            .all(|v| v.is_finite())
    });
    if !finite {
        a.heads.clear();
        a.status = Status::Error;
        a.reason = Some("the networks produced non-finite outputs".into());
    }
    a
}

#[cfg(test)]
mod tests {
    use super::purge_results;
    use std::time::{Duration, SystemTime};

    #[test]
    fn purge_results_keeps_folders_written_within_retention() {
        let root = tempfile::tempdir().unwrap();
        let old = root.path().join("1.2.3").join("job-old");
        let new = root.path().join("1.2.3").join("job-new");
        let alone = root.path().join("1.2.4").join("job-a");
        for d in [&old, &new, &alone] {
            std::fs::create_dir_all(d.join("dicom")).unwrap();
            std::fs::write(d.join("heatmap.nii.gz"), [1u8; 60]).unwrap();
            std::fs::write(d.join("dicom").join("sr.dcm"), [1u8; 40]).unwrap();
        }
        let ten_days_ago = SystemTime::now() - Duration::from_secs(10 * 86_400);
        for d in [&old, &alone] {
            std::fs::File::open(d)
                .unwrap()
                .set_modified(ten_days_ago)
                .unwrap();
        }
        let cutoff = SystemTime::now() - Duration::from_secs(5 * 86_400);
        assert_eq!(purge_results(root.path(), cutoff).unwrap(), (2, 200));
        assert!(!old.exists());
        assert!(new.join("heatmap.nii.gz").exists());
        // A study folder left empty goes too; one with a kept analysis stays.
        assert!(!root.path().join("1.2.4").exists());
        assert!(root.path().join("1.2.3").exists());
        // Nothing left past retention; a missing results folder is not an error.
        assert_eq!(purge_results(root.path(), cutoff).unwrap(), (0, 0));
        assert_eq!(
            purge_results(&root.path().join("none"), cutoff).unwrap(),
            (0, 0)
        );
    }
}
