//! Configuration: the embedded defaults, a site TOML file over them, and validation.
//!
//! `config/onfh-edge.toml` is compiled into the binary and is the whole default
//! configuration. A site file (`--config FILE`) is merged over it key by key, so it only
//! names what it changes. The merged document is deserialised strictly (unknown keys are
//! errors) and then validated once into [`Settings`]; every error names the offending key
//! (`receiver.max_pdu: ...`). Nothing here does I/O after start-up: the rest of the daemon
//! receives `Settings` by reference or by `Arc`.
//!
//! This module deliberately does not create directories or open sockets; it only decides
//! what the paths and addresses are.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The default configuration, as shipped.
pub const DEFAULT_TOML: &str = include_str!("../config/onfh-edge.toml");

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax { path: PathBuf, message: String },
    /// A key has the wrong type, or is unknown.
    #[error("{key}: {message}")]
    Shape { key: String, message: String },
    /// A value is well-typed but not acceptable.
    #[error("{key}: {message}")]
    Invalid { key: &'static str, message: String },
}

/// The raw, deserialised configuration document (mirrors the TOML file).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    receiver: crate::dicom::ReceiverToml,
    series: crate::dicom::SeriesToml,
    selection: crate::volume::Rules,
    preprocess: crate::volume::Preprocess,
    analysis: crate::pipeline::AnalysisSettings,
    notify: crate::notify::NotifySettings,
    export: crate::pacs::ExportSettings,
    panel: crate::panel::driver::PanelSettings,
    storage: RawStorage,
    log: RawLog,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStorage {
    state_dir: String,
    spool_retention_days: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLog {
    level: String,
}

/// Validated settings for the whole daemon.
#[derive(Debug, Clone)]
pub struct Settings {
    /// DICOM receiver settings.
    pub receiver: crate::dicom::ReceiverSettings,
    /// Series completion settings.
    pub series: crate::dicom::SeriesSettings,
    /// Which series is analysed.
    pub selection: crate::volume::Rules,
    /// How the analysed series becomes the model's input.
    pub preprocess: crate::volume::Preprocess,
    /// Models and the pipeline's confidence floors.
    pub analysis: crate::pipeline::AnalysisSettings,
    /// Alerts: which findings, which channels, retries.
    pub notify: crate::notify::NotifySettings,
    /// Result objects to PACS: destinations, objects, retries.
    pub export: crate::pacs::ExportSettings,
    /// Front panel outputs.
    pub panel: crate::panel::driver::PanelSettings,
    /// Where state lives.
    pub storage: StorageSettings,
    /// Default log filter.
    pub log_level: String,
    /// Hash of the effective (merged) configuration: the daemon audits a change.
    pub fingerprint: String,
}

/// Validated storage settings.
#[derive(Debug, Clone)]
pub struct StorageSettings {
    /// Root of all persistent state (database, spool).
    pub state_dir: PathBuf,
    /// Received DICOM files older than this are deleted (results kept); 0 keeps them.
    pub spool_retention_days: u32,
}

impl StorageSettings {
    /// The SQLite database file.
    pub fn database_path(&self) -> PathBuf {
        self.state_dir.join("onfh-edge.sqlite3")
    }

    /// The spool of received instances.
    pub fn spool_dir(&self) -> PathBuf {
        self.state_dir.join("spool")
    }

    /// Per-analysis heatmaps and image copies (see `worker`).
    pub fn results_dir(&self) -> PathBuf {
        self.state_dir.join("results")
    }
}

impl Settings {
    /// The embedded defaults, validated.
    pub fn defaults() -> Result<Settings, ConfigError> {
        Self::from_layers(None)
    }

    /// Load `path` over the embedded defaults and validate.
    pub fn load(path: &Path) -> Result<Settings, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let site: toml::Table = toml::from_str(&text).map_err(|e| ConfigError::Syntax {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        Self::from_layers(Some(site))
    }

    /// Load a site file if given, else the defaults.
    pub fn load_optional(path: Option<&Path>) -> Result<Settings, ConfigError> {
        match path {
            Some(p) => Self::load(p),
            None => Self::defaults(),
        }
    }

    fn from_layers(site: Option<toml::Table>) -> Result<Settings, ConfigError> {
        let mut merged: toml::Table =
            toml::from_str(DEFAULT_TOML).expect("embedded default configuration is valid TOML");
        if let Some(site) = site {
            merge(&mut merged, site);
        }
        // The effective configuration's fingerprint (secrets included, so a changed
        // password also counts as a change; only the hash is ever logged).
        let fingerprint = {
            use sha2::Digest;
            let text = toml::to_string(&merged).unwrap_or_default();
            hex::encode(&sha2::Sha256::digest(text.as_bytes())[..12])
        };
        let raw: RawConfig =
            serde_path_to_error::deserialize(toml::Value::Table(merged)).map_err(|e| {
                ConfigError::Shape {
                    key: e.path().to_string(),
                    message: e.inner().to_string(),
                }
            })?;
        let mut s = validate(raw)?;
        s.fingerprint = fingerprint;
        Ok(s)
    }
}

/// Deep-merge `over` into `base`: tables merge key by key, everything else replaces.
pub fn merge(base: &mut toml::Table, over: toml::Table) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(key, v);
            }
        }
    }
}

fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        message: message.into(),
    }
}

fn validate(raw: RawConfig) -> Result<Settings, ConfigError> {
    let keyed = |(key, message): (&'static str, String)| invalid(key, message);
    let receiver = raw.receiver.validate().map_err(keyed)?;
    let series = raw.series.validate().map_err(keyed)?;
    raw.selection.validate().map_err(keyed)?;
    raw.preprocess.validate().map_err(keyed)?;
    raw.analysis.validate().map_err(keyed)?;
    raw.panel.validate().map_err(keyed)?;
    raw.notify.validate().map_err(keyed)?;
    let mut export = raw.export.clone();
    export.validate(receiver.ae_title.trim()).map_err(keyed)?;
    let state_dir = if raw.storage.state_dir.trim().is_empty() {
        match std::env::var_os("STATE_DIRECTORY") {
            // systemd may pass several colon-separated directories; the first is ours.
            Some(v) if !v.is_empty() => PathBuf::from(
                v.to_string_lossy()
                    .split(':')
                    .next()
                    .unwrap_or_default()
                    .to_string(),
            ),
            _ => PathBuf::from("onfh-edge-state"),
        }
    } else {
        PathBuf::from(raw.storage.state_dir)
    };
    if raw.log.level.trim().is_empty() {
        return Err(invalid("log.level", "must not be empty"));
    }
    tracing_subscriber::EnvFilter::try_new(&raw.log.level)
        .map_err(|e| invalid("log.level", e.to_string()))?;
    Ok(Settings {
        receiver,
        series,
        selection: raw.selection,
        preprocess: raw.preprocess,
        analysis: raw.analysis,
        notify: raw.notify,
        export,
        panel: raw.panel,
        storage: StorageSettings {
            state_dir,
            spool_retention_days: raw.storage.spool_retention_days,
        },
        log_level: raw.log.level,
        fingerprint: String::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn with_site(text: &str) -> Result<Settings, ConfigError> {
        Settings::from_layers(Some(toml::from_str(text).unwrap()))
    }

    #[test]
    fn embedded_defaults_validate() {
        let s = Settings::defaults().unwrap();
        assert_eq!(s.receiver.ae_title, "ONFH_EDGE");
        assert_eq!(s.receiver.listen, "127.0.0.1:11112".parse().unwrap());
        assert_eq!(s.series.quiet_period, Duration::from_secs(30));
        assert!(s.receiver.fsync);
    }

    #[test]
    fn embedded_defaults_match_the_code_defaults() {
        // The TOML documents the defaults; the Default impls serve library callers. They
        // must not drift apart.
        let s = Settings::defaults().unwrap();
        assert_eq!(
            serde_json::to_value(&s.selection).unwrap(),
            serde_json::to_value(crate::volume::Rules::default()).unwrap()
        );
        assert_eq!(s.preprocess, crate::volume::Preprocess::default());
        assert_eq!(s.analysis, crate::pipeline::AnalysisSettings::default());
        let e = with_site("[analysis]\ndevice = \"tpu\"\n").unwrap_err();
        assert!(e.to_string().starts_with("analysis.device"), "{e}");
        let e = with_site("[preprocess]\npercentiles = [99.0, 1.0]\n").unwrap_err();
        assert!(e.to_string().starts_with("preprocess.percentiles:"), "{e}");
        let e = with_site("[selection]\norientations = [\"oblique\"]\n").unwrap_err();
        assert!(e.to_string().starts_with("selection.orientations"), "{e}");
    }

    #[test]
    fn site_file_overrides_only_what_it_names() {
        let s = with_site("[receiver]\nmax_pdu = 65536\n").unwrap();
        assert_eq!(s.receiver.max_pdu, 65536);
        assert_eq!(s.receiver.ae_title, "ONFH_EDGE");
    }

    #[test]
    fn export_destinations_read_under_either_name() {
        for table in ["destination", "destinations"] {
            let s = with_site(&format!(
                "[[export.{table}]]\nname = \"pacs\"\nae_title = \"PACS\"\nhost = \"10.0.0.5\"\nport = 104\n"
            ))
            .unwrap();
            assert_eq!(s.export.destination.len(), 1, "{table}");
            assert_eq!(s.export.destination[0].calling_ae_title, "ONFH_EDGE");
        }
        let e = with_site(
            "[[export.destination]]\nname = \"pacs\"\nae_title = \"BAD\\\\TITLE\"\nhost = \"h\"\nport = 104\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("export.destination: \"pacs\": ae_title:"),
            "{e}"
        );
    }

    #[test]
    fn alert_stages_are_stages() {
        let s = with_site("[notify]\nstages = [\"0\", \"II\"]\n").unwrap();
        use crate::result::StageCall;
        assert_eq!(s.notify.stages, [StageCall::Stage0, StageCall::StageII]);
        for bad in ["III", "indeterminate"] {
            let e = with_site(&format!("[notify]\nstages = [\"{bad}\"]\n")).unwrap_err();
            assert!(e.to_string().starts_with("notify.stages"), "{bad}: {e}");
        }
    }

    #[test]
    fn errors_name_the_key() {
        let e = with_site("[receiver]\nmax_pdu = 12\n").unwrap_err();
        assert!(e.to_string().starts_with("receiver.max_pdu:"), "{e}");
        let e = with_site("[receiver]\nmax_pdu = \"big\"\n").unwrap_err();
        assert!(e.to_string().starts_with("receiver.max_pdu:"), "{e}");
        let e = with_site("[receiver]\nae_titel = \"X\"\n").unwrap_err();
        assert!(e.to_string().contains("ae_titel"), "{e}");
        let e = with_site("[receiver]\nallowed_peers = [\"10.0.0.300\"]\n").unwrap_err();
        assert!(e.to_string().starts_with("receiver.allowed_peers:"), "{e}");
        let e = with_site("[receiver]\ntransfer_syntaxes = [\"1.2.840.10008.1.2.4.80\"]\n")
            .unwrap_err();
        assert!(
            e.to_string().starts_with("receiver.transfer_syntaxes:"),
            "{e}"
        );
        let e = with_site("[receiver]\nae_title = \"A\\\\B\"\n").unwrap_err();
        assert!(e.to_string().starts_with("receiver.ae_title:"), "{e}");
    }

    #[test]
    fn allow_lists() {
        let s = with_site(
            "[receiver]\nallowed_peers = [\"10.1.0.0/16\", \"::1\"]\nallowed_calling_ae_titles = [\"MRI1\"]\n",
        )
        .unwrap();
        let r = &s.receiver;
        assert!(r.peer_allowed("10.1.2.3".parse().unwrap()));
        assert!(r.peer_allowed("::ffff:10.1.2.3".parse().unwrap()));
        assert!(!r.peer_allowed("10.2.0.1".parse().unwrap()));
        assert!(r.peer_allowed("::1".parse().unwrap()));
        assert!(r.calling_ae_allowed("MRI1  "));
        assert!(!r.calling_ae_allowed("MRI2"));
        let open = Settings::defaults().unwrap();
        assert!(open.receiver.peer_allowed("192.0.2.1".parse().unwrap()));
        assert!(open.receiver.calling_ae_allowed("ANY"));
    }
}
