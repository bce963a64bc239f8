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

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

/// The default configuration, as shipped.
pub const DEFAULT_TOML: &str = include_str!("../config/onfh-edge.toml");

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
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
    receiver: RawReceiver,
    series: RawSeries,
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
struct RawReceiver {
    ae_title: String,
    listen: String,
    max_associations: u32,
    max_pdu: u32,
    read_timeout_secs: u64,
    write_timeout_secs: u64,
    association_deadline_secs: u64,
    min_transfer_rate: u64,
    allowed_calling_ae_titles: Vec<String>,
    allowed_peers: Vec<String>,
    transfer_syntaxes: Vec<String>,
    max_instance_bytes: u64,
    min_free_bytes: u64,
    fsync: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSeries {
    quiet_period_secs: u64,
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
    pub receiver: ReceiverSettings,
    /// Series completion settings.
    pub series: SeriesSettings,
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

/// Validated receiver settings.
#[derive(Debug, Clone)]
pub struct ReceiverSettings {
    /// Our AE title; associations calling another title are rejected.
    pub ae_title: String,
    /// Where to listen when no socket is handed over by systemd.
    pub listen: SocketAddr,
    /// Concurrent associations; the next is rejected as transient.
    pub max_associations: usize,
    /// Maximum PDU length we announce and enforce.
    pub max_pdu: u32,
    /// Per-read inactivity limit.
    pub read_timeout: Duration,
    /// Per-write limit.
    pub write_timeout: Duration,
    /// Longest an association may last, whatever it does.
    pub association_deadline: Duration,
    /// Slowest transfer accepted, bytes per second: within a message, each PDU must
    /// arrive within 2 s plus the time a PDU of `max_pdu` bytes takes at this rate (at
    /// most the read timeout), and when every slot is taken the slowest association under
    /// this rate gives its slot up.
    pub min_transfer_rate: u64,
    /// Calling AE titles admitted; empty admits any.
    pub allowed_calling_ae_titles: Vec<String>,
    /// Peer networks admitted; empty admits any.
    pub allowed_peers: Vec<IpNet>,
    /// Transfer syntaxes we accept (all decodable by this build).
    pub transfer_syntaxes: Vec<String>,
    /// Cap on one instance's encoded size.
    pub max_instance_bytes: u64,
    /// Free-space floor for the spool's file system.
    pub min_free_bytes: u64,
    /// Whether files and directories are fsynced before success is answered.
    pub fsync: bool,
}

impl ReceiverSettings {
    /// Whether a peer address passes the IP allow-list.
    pub fn peer_allowed(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6
                .to_ipv4_mapped()
                .map(IpAddr::V4)
                .unwrap_or(IpAddr::V6(v6)),
            v4 => v4,
        };
        self.allowed_peers.is_empty() || self.allowed_peers.iter().any(|n| n.contains(&ip))
    }

    /// Whether a calling AE title passes the allow-list (trailing spaces ignored).
    pub fn calling_ae_allowed(&self, calling: &str) -> bool {
        let calling = calling.trim();
        self.allowed_calling_ae_titles.is_empty()
            || self.allowed_calling_ae_titles.iter().any(|a| a == calling)
    }
}

/// Validated series-completion settings.
#[derive(Debug, Clone)]
pub struct SeriesSettings {
    /// Inactivity after which a series counts as complete.
    pub quiet_period: Duration,
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

/// Check an AE title: 1-16 characters of printable ASCII, no backslash, not all spaces.
pub fn check_ae_title(title: &str) -> Result<(), String> {
    if title.trim().is_empty() {
        return Err("an AE title must not be empty".into());
    }
    if title.len() > 16 {
        return Err(format!("AE title {title:?} is longer than 16 characters"));
    }
    if title
        .chars()
        .any(|c| !(' '..='~').contains(&c) || c == '\\')
    {
        return Err(format!(
            "AE title {title:?} may only hold printable ASCII without backslash"
        ));
    }
    Ok(())
}

fn validate(raw: RawConfig) -> Result<Settings, ConfigError> {
    let r = raw.receiver;
    check_ae_title(&r.ae_title).map_err(|m| invalid("receiver.ae_title", m))?;
    let listen: SocketAddr = r.listen.parse().map_err(|_| {
        invalid(
            "receiver.listen",
            format!(
                "{:?} is not an address:port such as 127.0.0.1:11112",
                r.listen
            ),
        )
    })?;
    if !(1..=1024).contains(&r.max_associations) {
        return Err(invalid(
            "receiver.max_associations",
            "must be between 1 and 1024",
        ));
    }
    if !(4096..=16 * 1024 * 1024).contains(&r.max_pdu) {
        return Err(invalid(
            "receiver.max_pdu",
            "must be between 4096 and 16777216 bytes",
        ));
    }
    if r.read_timeout_secs == 0 || r.read_timeout_secs > 3600 {
        return Err(invalid(
            "receiver.read_timeout_secs",
            "must be 1 to 3600 seconds",
        ));
    }
    if r.write_timeout_secs == 0 || r.write_timeout_secs > 3600 {
        return Err(invalid(
            "receiver.write_timeout_secs",
            "must be 1 to 3600 seconds",
        ));
    }
    if !(10..=86_400).contains(&r.association_deadline_secs) {
        return Err(invalid(
            "receiver.association_deadline_secs",
            "must be 10 to 86400 seconds",
        ));
    }
    if !(1..=1 << 30).contains(&r.min_transfer_rate) {
        return Err(invalid(
            "receiver.min_transfer_rate",
            "must be 1 to 1073741824 bytes per second",
        ));
    }
    let mut calling = Vec::new();
    for t in &r.allowed_calling_ae_titles {
        check_ae_title(t).map_err(|m| invalid("receiver.allowed_calling_ae_titles", m))?;
        calling.push(t.trim().to_string());
    }
    let mut peers = Vec::new();
    for p in &r.allowed_peers {
        let net = match p.parse::<IpNet>() {
            Ok(n) => n,
            Err(_) => p.parse::<IpAddr>().map(IpNet::from).map_err(|_| {
                invalid(
                    "receiver.allowed_peers",
                    format!("{p:?} is neither an IP address nor a CIDR network"),
                )
            })?,
        };
        peers.push(net);
    }
    if r.transfer_syntaxes.is_empty() {
        return Err(invalid(
            "receiver.transfer_syntaxes",
            "must list at least one",
        ));
    }
    for ts in &r.transfer_syntaxes {
        crate::dicom::check_transfer_syntax(ts)
            .map_err(|m| invalid("receiver.transfer_syntaxes", m))?;
    }
    if r.max_instance_bytes < 1024 {
        return Err(invalid(
            "receiver.max_instance_bytes",
            "must be at least 1024",
        ));
    }
    let sel = &raw.selection;
    for (key, [lo, hi]) in [
        ("selection.repetition_time_ms", sel.repetition_time_ms),
        ("selection.echo_time_ms", sel.echo_time_ms),
    ] {
        if !(lo >= 0.0 && lo < hi) {
            return Err(invalid(key, "must be [low, high] with 0 <= low < high"));
        }
    }
    for (key, words) in [
        ("selection.include", &sel.include),
        ("selection.exclude", &sel.exclude),
    ] {
        if words.iter().any(|w| w.trim().is_empty()) {
            return Err(invalid(
                key,
                "words must not be empty (an empty word matches every name)",
            ));
        }
    }
    if sel.min_slices == 0 {
        return Err(invalid("selection.min_slices", "must be at least 1"));
    }
    if sel.orientations.is_empty() {
        return Err(invalid("selection.orientations", "must list at least one"));
    }
    let an = &raw.analysis;
    if !(an.min_detection_score > 0.0 && an.min_detection_score < 1.0) {
        return Err(invalid(
            "analysis.min_detection_score",
            "must be between 0 and 1",
        ));
    }
    if !(0.0..=1.0).contains(&an.min_stage_probability) {
        return Err(invalid(
            "analysis.min_stage_probability",
            "must be between 0 and 1",
        ));
    }
    if !(0.0..1.0).contains(&an.heatmap_floor) {
        return Err(invalid(
            "analysis.heatmap_floor",
            "must be at least 0 and below 1",
        ));
    }
    if raw.panel.baud == 0 {
        return Err(invalid("panel.baud", "must be a positive baud rate"));
    }
    raw.notify
        .validate()
        .map_err(|(key, message)| invalid(key, message))?;
    let mut export = raw.export.clone();
    export
        .validate(r.ae_title.trim())
        .map_err(|(key, message)| invalid(key, message))?;
    let dev = an.device.as_str();
    if !(dev == "cpu"
        || dev == "cuda"
        || dev
            .strip_prefix("cuda:")
            .is_some_and(|n| n.parse::<usize>().is_ok()))
    {
        return Err(invalid("analysis.device", "must be cpu, cuda or cuda:N"));
    }
    let pre = &raw.preprocess;
    if pre.shape.iter().any(|n| *n == 0 || *n > 1024) {
        return Err(invalid("preprocess.shape", "each size must be 1 to 1024"));
    }
    if pre
        .field_of_view_mm
        .iter()
        .any(|f| !(*f > 0.0 && *f <= 1000.0))
    {
        return Err(invalid(
            "preprocess.field_of_view_mm",
            "each must be 0 to 1000 mm",
        ));
    }
    if pre.window_width.is_nan() || pre.window_width <= 0.0 {
        return Err(invalid("preprocess.window_width", "must be positive"));
    }
    if let Some([lo, hi]) = pre.percentiles {
        if !((0.0..100.0).contains(&lo) && lo < hi && hi <= 100.0) {
            return Err(invalid(
                "preprocess.percentiles",
                "must be [low, high] with 0 <= low < high <= 100",
            ));
        }
    }
    let s = raw.series;
    if s.quiet_period_secs == 0 || s.quiet_period_secs > 24 * 3600 {
        return Err(invalid(
            "series.quiet_period_secs",
            "must be 1 second to 24 hours",
        ));
    }
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
        receiver: ReceiverSettings {
            ae_title: r.ae_title,
            listen,
            max_associations: r.max_associations as usize,
            max_pdu: r.max_pdu,
            read_timeout: Duration::from_secs(r.read_timeout_secs),
            write_timeout: Duration::from_secs(r.write_timeout_secs),
            association_deadline: Duration::from_secs(r.association_deadline_secs),
            min_transfer_rate: r.min_transfer_rate,
            allowed_calling_ae_titles: calling,
            allowed_peers: peers,
            transfer_syntaxes: r.transfer_syntaxes,
            max_instance_bytes: r.max_instance_bytes,
            min_free_bytes: r.min_free_bytes,
            fsync: r.fsync,
        },
        series: SeriesSettings {
            quiet_period: Duration::from_secs(s.quiet_period_secs),
        },
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
