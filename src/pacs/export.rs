//! `[export]`: the PACS destinations, what each receives, and the exporter that works off
//! the outbox (`store::exports`).

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::store::{ExportOutcome, ExportRow, NewExport, Store, StoreError};

use super::send::{self, Outcome};

/// The object kinds a destination may receive.
pub const OBJECT_KINDS: [&str; 4] = ["seg", "pm", "sr", "sc"];

/// `[export]` in the configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExportSettings {
    /// Attempts before an object is given up (`dead`).
    pub max_attempts: u32,
    /// First retry delay, seconds; doubled per attempt.
    pub retry_initial_secs: u64,
    /// Longest retry delay, seconds.
    pub retry_max_secs: u64,
    /// Network timeout (connect, each PDU), seconds.
    pub timeout_secs: u64,
    /// The destinations (`[[export.destination]]`; `[[export.destinations]]` is read too).
    #[serde(alias = "destinations")]
    pub destination: Vec<Destination>,
}

impl Default for ExportSettings {
    fn default() -> Self {
        ExportSettings {
            max_attempts: 30,
            retry_initial_secs: 30,
            retry_max_secs: 3600,
            timeout_secs: 30,
            destination: Vec::new(),
        }
    }
}

/// One PACS (a C-STORE SCP).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Destination {
    /// Name, unique among destinations (in logs, `export list` and the outbox).
    pub name: String,
    /// Its AE title (called).
    pub ae_title: String,
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Our AE title towards it; empty = `receiver.ae_title`.
    #[serde(default)]
    pub calling_ae_title: String,
    /// Which objects it receives: `seg`, `pm`, `sr`, `sc`.
    #[serde(default = "all_kinds")]
    pub objects: Vec<String>,
}

fn all_kinds() -> Vec<String> {
    OBJECT_KINDS.iter().map(|s| s.to_string()).collect()
}

impl ExportSettings {
    /// Check the settings; `receiver_ae` fills empty calling AE titles.
    pub fn validate(&mut self, receiver_ae: &str) -> Result<(), (&'static str, String)> {
        if self.max_attempts == 0 {
            return Err(("export.max_attempts", "must be at least 1".into()));
        }
        if self.retry_initial_secs == 0 || self.retry_initial_secs > self.retry_max_secs {
            return Err((
                "export.retry_initial_secs",
                "must be at least 1 and not above export.retry_max_secs".into(),
            ));
        }
        if self.timeout_secs == 0 {
            return Err(("export.timeout_secs", "must be at least 1".into()));
        }
        let mut names = std::collections::HashSet::new();
        for d in &mut self.destination {
            let bad = |m: String| Err(("export.destination", format!("{:?}: {m}", d.name)));
            if d.name.trim().is_empty() || !names.insert(d.name.clone()) {
                return Err((
                    "export.destination",
                    format!("name {:?} is empty or used twice", d.name),
                ));
            }
            if let Err(m) = crate::dicom::check_ae_title(&d.ae_title) {
                return bad(format!("ae_title: {m}"));
            }
            if d.calling_ae_title.is_empty() {
                d.calling_ae_title = receiver_ae.to_string();
            }
            if let Err(m) = crate::dicom::check_ae_title(&d.calling_ae_title) {
                return bad(format!("calling_ae_title: {m}"));
            }
            if d.host.trim().is_empty() || d.port == 0 {
                return bad("host and port are required".into());
            }
            if d.objects.is_empty() {
                return bad("objects is empty".into());
            }
            if let Some(o) = d
                .objects
                .iter()
                .find(|o| !OBJECT_KINDS.contains(&o.as_str()))
            {
                return bad(format!("unknown object {o:?} (seg, pm, sr, sc)"));
            }
        }
        Ok(())
    }

    /// Delay before attempt `attempts + 1` after `attempts` failures.
    pub fn backoff(&self, attempts: u32) -> Duration {
        crate::outbox::backoff(self.retry_initial_secs, self.retry_max_secs, attempts)
    }
}

/// The objects written under `dir` (by [`super::write_objects`]), queued for every
/// destination that receives their kind, in sending order (SEG, PM, SR, SC).
pub fn exports_for(settings: &ExportSettings, dir: &Path) -> Vec<NewExport> {
    if settings.destination.is_empty() {
        return Vec::new();
    }
    let mut objects = Vec::new();
    for name in ["seg", "pm", "sr", "sc-R", "sc-L"] {
        let path = dir.join(format!("{name}.dcm"));
        if !path.exists() {
            continue;
        }
        let meta = match dicom_object::OpenFileOptions::new()
            .read_until(dicom_dictionary_std::tags::SOP_CLASS_UID)
            .open_file(&path)
        {
            Ok(f) => f.meta().clone(),
            Err(e) => {
                tracing::error!(file = %path.display(), error = %e, "cannot read a result object; not exported");
                continue;
            }
        };
        let uid = |s: &str| s.trim_end_matches('\0').to_string();
        objects.push((
            name,
            path,
            uid(meta.media_storage_sop_class_uid()),
            uid(meta.media_storage_sop_instance_uid()),
        ));
    }
    let mut out = Vec::new();
    for d in &settings.destination {
        for (name, path, class, instance) in &objects {
            let kind = name.split('-').next().unwrap_or(name);
            if d.objects.iter().any(|o| o == kind) {
                out.push(NewExport {
                    destination: d.name.clone(),
                    object: name.to_string(),
                    file: path.display().to_string(),
                    sop_class_uid: class.clone(),
                    sop_instance_uid: instance.clone(),
                });
            }
        }
    }
    out
}

/// Works off the export outbox: one association per (analysis, destination) with its due
/// objects, each outcome recorded.
pub struct Exporter {
    store: Store,
    settings: ExportSettings,
}

/// What one pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExportPass {
    /// Objects stored.
    pub sent: usize,
    /// Objects to retry.
    pub retrying: usize,
    /// Objects given up.
    pub dead: usize,
}

impl Exporter {
    /// An exporter of `store`'s outbox to the destinations in `settings`.
    pub fn new(store: Store, settings: ExportSettings) -> Exporter {
        Exporter { store, settings }
    }

    /// Try every due object once; record each outcome.
    pub fn run_once(&self, now_ms: i64) -> Result<ExportPass, StoreError> {
        let mut pass = ExportPass::default();
        let due = self.store.due_exports(now_ms, 256)?;
        let mut groups: Vec<Vec<ExportRow>> = Vec::new();
        for r in due {
            match groups.last_mut() {
                Some(g)
                    if g[0].analysis_id == r.analysis_id && g[0].destination == r.destination =>
                {
                    g.push(r)
                }
                _ => match groups.iter_mut().find(|g| {
                    g[0].analysis_id == r.analysis_id && g[0].destination == r.destination
                }) {
                    Some(g) => g.push(r),
                    None => groups.push(vec![r]),
                },
            }
        }
        for group in groups {
            let outcomes = match self
                .settings
                .destination
                .iter()
                .find(|d| d.name == group[0].destination)
            {
                None => vec![
                    Outcome::Permanent {
                        error: format!(
                            "destination {:?} is no longer configured",
                            group[0].destination
                        ),
                        status: None,
                    };
                    group.len()
                ],
                Some(d) => {
                    let peer = send::Peer {
                        address: format!("{}:{}", d.host, d.port),
                        ae_title: d.ae_title.clone(),
                        calling_ae_title: d.calling_ae_title.clone(),
                        timeout: Duration::from_secs(self.settings.timeout_secs),
                    };
                    let objects: Vec<send::Object> = group
                        .iter()
                        .map(|r| send::Object {
                            file: r.file.clone().into(),
                            sop_class_uid: r.sop_class_uid.clone(),
                            sop_instance_uid: r.sop_instance_uid.clone(),
                        })
                        .collect();
                    send::send(&peer, &objects)
                }
            };
            for (row, outcome) in group.iter().zip(outcomes) {
                let now = crate::clock::now_ms();
                let attempts = row.attempts as u32 + 1;
                let recorded = match outcome {
                    Outcome::Stored(status) => {
                        tracing::info!(export = row.id, destination = %row.destination, object = %row.object, status = format!("{status:#06X}"), "result object stored at the destination");
                        pass.sent += 1;
                        ExportOutcome::Sent(status)
                    }
                    Outcome::Transient { error, status }
                        if attempts < self.settings.max_attempts =>
                    {
                        tracing::warn!(export = row.id, destination = %row.destination, object = %row.object, attempts, error = %error, "export failed, will retry");
                        pass.retrying += 1;
                        ExportOutcome::Retry {
                            error,
                            status,
                            at_ms: now + self.settings.backoff(attempts).as_millis() as i64,
                        }
                    }
                    Outcome::Transient { error, status } | Outcome::Permanent { error, status } => {
                        let error = if attempts >= self.settings.max_attempts {
                            format!("{error}; given up after {attempts} attempts")
                        } else {
                            error
                        };
                        tracing::error!(export = row.id, destination = %row.destination, object = %row.object, attempts, error = %error, "export given up");
                        pass.dead += 1;
                        ExportOutcome::Dead { error, status }
                    }
                };
                self.store.export_attempted(row.id, &recorded, now)?;
            }
        }
        Ok(pass)
    }

    /// Export until `stop` returns true, sleeping until the next object is due (at most
    /// `poll` at a time).
    pub fn run(&self, poll: Duration, stop: impl Fn() -> bool) {
        crate::outbox::run(
            "export outbox",
            poll,
            stop,
            |now| self.run_once(now),
            || self.store.next_export_due_ms(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dest(name: &str) -> Destination {
        Destination {
            name: name.into(),
            ae_title: "ORTHANC".into(),
            host: "127.0.0.1".into(),
            port: 4242,
            calling_ae_title: String::new(),
            objects: all_kinds(),
        }
    }

    #[test]
    fn destinations_are_validated_and_take_the_receiver_title() {
        let mut s = ExportSettings {
            destination: vec![dest("pacs")],
            ..Default::default()
        };
        s.validate("ONFH_EDGE").unwrap();
        assert_eq!(s.destination[0].calling_ae_title, "ONFH_EDGE");
        let mut twice = ExportSettings {
            destination: vec![dest("pacs"), dest("pacs")],
            ..Default::default()
        };
        assert!(twice.validate("X").is_err());
        let mut d = dest("pacs");
        d.objects = vec!["ko".into()];
        let mut bad = ExportSettings {
            destination: vec![d],
            ..Default::default()
        };
        assert!(bad.validate("X").unwrap_err().1.contains("unknown object"));
        let mut d = dest("pacs");
        d.ae_title = "A_TITLE_TOO_LONG_17".into();
        let mut bad = ExportSettings {
            destination: vec![d],
            ..Default::default()
        };
        assert!(bad.validate("X").is_err());
    }
}
