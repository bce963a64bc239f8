//! The receiver's and series completion's settings (`[receiver]`, `[series]`): their TOML
//! form, their validation (every error names its key), and the allow-list checks the
//! receiver makes with them. `config` merges and deserialises the file and calls
//! [`ReceiverToml::validate`] and [`SeriesToml::validate`]; nothing here reads a file.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

/// A configuration key and what is wrong with its value.
pub type Invalid = (&'static str, String);

fn bad(key: &'static str, message: impl Into<String>) -> Invalid {
    (key, message.into())
}

/// `[receiver]` as written in the configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiverToml {
    pub ae_title: String,
    pub listen: String,
    pub max_associations: u32,
    pub max_pdu: u32,
    pub read_timeout_secs: u64,
    pub write_timeout_secs: u64,
    pub association_deadline_secs: u64,
    pub min_transfer_rate: u64,
    pub allowed_calling_ae_titles: Vec<String>,
    pub allowed_peers: Vec<String>,
    pub transfer_syntaxes: Vec<String>,
    pub max_instance_bytes: u64,
    pub min_free_bytes: u64,
    pub fsync: bool,
}

/// `[series]` as written in the configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeriesToml {
    pub quiet_period_secs: u64,
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

impl ReceiverToml {
    /// Check every key and build the settings.
    pub fn validate(&self) -> Result<ReceiverSettings, Invalid> {
        let r = self;
        check_ae_title(&r.ae_title).map_err(|m| bad("receiver.ae_title", m))?;
        let listen: SocketAddr = r.listen.parse().map_err(|_| {
            bad(
                "receiver.listen",
                format!(
                    "{:?} is not an address:port such as 127.0.0.1:11112",
                    r.listen
                ),
            )
        })?;
        if !(1..=1024).contains(&r.max_associations) {
            return Err(bad(
                "receiver.max_associations",
                "must be between 1 and 1024",
            ));
        }
        if !(4096..=16 * 1024 * 1024).contains(&r.max_pdu) {
            return Err(bad(
                "receiver.max_pdu",
                "must be between 4096 and 16777216 bytes",
            ));
        }
        if r.read_timeout_secs == 0 || r.read_timeout_secs > 3600 {
            return Err(bad(
                "receiver.read_timeout_secs",
                "must be 1 to 3600 seconds",
            ));
        }
        if r.write_timeout_secs == 0 || r.write_timeout_secs > 3600 {
            return Err(bad(
                "receiver.write_timeout_secs",
                "must be 1 to 3600 seconds",
            ));
        }
        if !(10..=86_400).contains(&r.association_deadline_secs) {
            return Err(bad(
                "receiver.association_deadline_secs",
                "must be 10 to 86400 seconds",
            ));
        }
        if !(1..=1 << 30).contains(&r.min_transfer_rate) {
            return Err(bad(
                "receiver.min_transfer_rate",
                "must be 1 to 1073741824 bytes per second",
            ));
        }
        let mut calling = Vec::new();
        for t in &r.allowed_calling_ae_titles {
            check_ae_title(t).map_err(|m| bad("receiver.allowed_calling_ae_titles", m))?;
            calling.push(t.trim().to_string());
        }
        let mut peers = Vec::new();
        for p in &r.allowed_peers {
            let net = match p.parse::<IpNet>() {
                Ok(n) => n,
                Err(_) => p.parse::<IpAddr>().map(IpNet::from).map_err(|_| {
                    bad(
                        "receiver.allowed_peers",
                        format!("{p:?} is neither an IP address nor a CIDR network"),
                    )
                })?,
            };
            peers.push(net);
        }
        if r.transfer_syntaxes.is_empty() {
            return Err(bad("receiver.transfer_syntaxes", "must list at least one"));
        }
        for ts in &r.transfer_syntaxes {
            super::check_transfer_syntax(ts).map_err(|m| bad("receiver.transfer_syntaxes", m))?;
        }
        if r.max_instance_bytes < 1024 {
            return Err(bad("receiver.max_instance_bytes", "must be at least 1024"));
        }
        Ok(ReceiverSettings {
            ae_title: r.ae_title.clone(),
            listen,
            max_associations: r.max_associations as usize,
            max_pdu: r.max_pdu,
            read_timeout: Duration::from_secs(r.read_timeout_secs),
            write_timeout: Duration::from_secs(r.write_timeout_secs),
            association_deadline: Duration::from_secs(r.association_deadline_secs),
            min_transfer_rate: r.min_transfer_rate,
            allowed_calling_ae_titles: calling,
            allowed_peers: peers,
            transfer_syntaxes: r.transfer_syntaxes.clone(),
            max_instance_bytes: r.max_instance_bytes,
            min_free_bytes: r.min_free_bytes,
            fsync: r.fsync,
        })
    }
}

impl SeriesToml {
    /// Check and build the series-completion settings.
    pub fn validate(&self) -> Result<SeriesSettings, Invalid> {
        if self.quiet_period_secs == 0 || self.quiet_period_secs > 24 * 3600 {
            return Err(bad(
                "series.quiet_period_secs",
                "must be 1 second to 24 hours",
            ));
        }
        Ok(SeriesSettings {
            quiet_period: Duration::from_secs(self.quiet_period_secs),
        })
    }
}
