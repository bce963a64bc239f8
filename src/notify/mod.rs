//! Alerts to the orthopaedic team: which findings alert, what an alert says, and the
//! sender that delivers the durable outbox.
//!
//! [`compose`] turns an analysis into outbox rows (one per alerting head and channel), which
//! the caller records in the same transaction as the analysis (`Store::record_analysis`).
//! [`Sender`] then delivers due rows: ntfy and a JSON webhook over HTTP(S) (`ureq`, with
//! `HTTPS_PROXY`/`HTTP_PROXY`/`NO_PROXY` honoured), email over SMTP (`lettre`, STARTTLS or
//! implicit TLS). A failed attempt is retried with exponential backoff; after
//! `max_attempts` the row is `dead`, which the panel and `results` show. Delivery is
//! at-least-once with an idempotency key per alert (webhook header, ntfy message header
//! and the email's Message-ID): a crash after the receiver accepted an alert but before the
//! row was marked sent can repeat it once, with the same key.
//!
//! No patient name, ID or birth date is ever put in an alert (the analysis does not carry
//! them): an alert names the side, the stage, the accession number, the time, where the
//! heatmap is, and the model's intended use. This module decides nothing about stages; it
//! reads the pipeline's result.

mod channels;

use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::clock::rfc3339;
use crate::result::{Analysis, HeadFinding, Side, StageCall};
use crate::store::{AlertRow, NewAlert, Store, StoreError};

pub use channels::{DeliveryError, deliver};

/// An ntfy topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NtfyChannel {
    /// Name in the outbox and logs (unique among channels).
    pub name: String,
    /// Server base URL, e.g. `https://ntfy.example.org`.
    pub server: String,
    /// Topic.
    pub topic: String,
    /// Access token (`Authorization: Bearer`), if the topic is protected.
    #[serde(default)]
    pub token: Option<String>,
}

/// A generic JSON webhook.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookChannel {
    /// Name in the outbox and logs.
    pub name: String,
    /// URL the alert is POSTed to.
    pub url: String,
    /// Shared secret: the body's HMAC-SHA256 goes in `X-Onfh-Signature: sha256=<hex>`.
    pub secret: String,
}

/// How an SMTP connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpSecurity {
    /// Plain connection upgraded with STARTTLS (required).
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No encryption: only for a relay on loopback or a trusted segment.
    None,
}

impl SmtpChannel {
    /// The port to connect to.
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(match self.security {
            SmtpSecurity::Starttls => 587,
            SmtpSecurity::Tls => 465,
            SmtpSecurity::None => 25,
        })
    }
}

/// An SMTP relay and recipients.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpChannel {
    /// Name in the outbox and logs.
    pub name: String,
    /// Relay host.
    pub host: String,
    /// Relay port; default 587 for STARTTLS, 465 for TLS, 25 without.
    #[serde(default)]
    pub port: Option<u16>,
    /// Connection security.
    #[serde(default = "default_smtp_security")]
    pub security: SmtpSecurity,
    /// Login, if the relay wants one.
    #[serde(default)]
    pub username: Option<String>,
    /// Password for `username`.
    #[serde(default)]
    pub password: Option<String>,
    /// Sender address.
    pub from: String,
    /// Recipients.
    pub to: Vec<String>,
}

fn default_smtp_security() -> SmtpSecurity {
    SmtpSecurity::Starttls
}

/// `[notify]` in the configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NotifySettings {
    /// Stages that alert (`"I"`, `"II"`, also `"0"` if a site wants every result; an
    /// indeterminate head alerts through [`NotifySettings::indeterminate`]).
    pub stages: Vec<StageCall>,
    /// Whether a head staged `indeterminate` alerts too.
    pub indeterminate: bool,
    /// Prefix for heatmap links (e.g. the appliance's results share); empty = the file
    /// path on the appliance.
    pub heatmap_url: String,
    /// Attempts before an alert is given up (`dead`).
    pub max_attempts: u32,
    /// First retry delay, seconds; doubled per attempt.
    pub retry_initial_secs: u64,
    /// Longest retry delay, seconds.
    pub retry_max_secs: u64,
    /// Per-attempt network timeout, seconds.
    pub timeout_secs: u64,
    /// ntfy topics.
    pub ntfy: Vec<NtfyChannel>,
    /// JSON webhooks.
    pub webhook: Vec<WebhookChannel>,
    /// Email.
    pub smtp: Vec<SmtpChannel>,
    /// Allow plain `http://` webhooks and ntfy servers, and SMTP without encryption but
    /// with a password, to hosts other than loopback. Off: such a configuration is
    /// refused. On: allowed, with a warning at every start.
    pub allow_plaintext: bool,
}

/// The host of a URL (no user information, port or brackets).
pub(crate) fn url_host(url: &str) -> &str {
    let host = url
        .split("://")
        .nth(1)
        .unwrap_or("")
        .split(['/', '?', '#'])
        .next()
        .unwrap_or("");
    let host = host.rsplit('@').next().unwrap_or(host);
    if let Some(h) = host.strip_prefix('[') {
        h.split(']').next().unwrap_or(h)
    } else {
        host.split(':').next().unwrap_or(host)
    }
}

/// Whether a host name or address is this machine.
pub(crate) fn is_loopback_host(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl Default for NotifySettings {
    fn default() -> Self {
        NotifySettings {
            stages: vec![StageCall::StageI, StageCall::StageII],
            indeterminate: false,
            heatmap_url: String::new(),
            max_attempts: 10,
            retry_initial_secs: 10,
            retry_max_secs: 900,
            timeout_secs: 15,
            ntfy: Vec::new(),
            webhook: Vec::new(),
            smtp: Vec::new(),
            allow_plaintext: false,
        }
    }
}

/// One configured channel.
#[derive(Debug, Clone, PartialEq)]
pub enum Channel {
    /// ntfy.
    Ntfy(NtfyChannel),
    /// Webhook.
    Webhook(WebhookChannel),
    /// Email.
    Smtp(SmtpChannel),
}

impl Channel {
    /// The configured name.
    pub fn name(&self) -> &str {
        match self {
            Channel::Ntfy(c) => &c.name,
            Channel::Webhook(c) => &c.name,
            Channel::Smtp(c) => &c.name,
        }
    }
}

impl NotifySettings {
    /// Every channel, in configuration order (ntfy, webhook, smtp).
    pub fn channels(&self) -> Vec<Channel> {
        self.ntfy
            .iter()
            .cloned()
            .map(Channel::Ntfy)
            .chain(self.webhook.iter().cloned().map(Channel::Webhook))
            .chain(self.smtp.iter().cloned().map(Channel::Smtp))
            .collect()
    }

    /// The channels that send in clear text to another host (names and why): refused by
    /// [`NotifySettings::validate`] unless `allow_plaintext`.
    pub fn plaintext_channels(&self) -> Vec<String> {
        let remote_http = |u: &str| u.starts_with("http://") && !is_loopback_host(url_host(u));
        let mut out = Vec::new();
        for c in self.channels() {
            match &c {
                Channel::Ntfy(n) if remote_http(&n.server) => {
                    out.push(format!("{}: http:// to {}", n.name, url_host(&n.server)))
                }
                Channel::Webhook(w) if remote_http(&w.url) => {
                    out.push(format!("{}: http:// to {}", w.name, url_host(&w.url)))
                }
                Channel::Smtp(m)
                    if m.security == SmtpSecurity::None
                        && m.password.is_some()
                        && !is_loopback_host(&m.host) =>
                {
                    out.push(format!(
                        "{}: SMTP password without encryption to {}",
                        m.name, m.host
                    ))
                }
                _ => {}
            }
        }
        out
    }

    /// Check the settings; the error names the key.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if let Some(first) = self.plaintext_channels().first()
            && !self.allow_plaintext
        {
            return Err((
                "notify",
                format!(
                    "{first}: alerts would cross the network unencrypted; use https:// or TLS, \
                     or set notify.allow_plaintext = true"
                ),
            ));
        }
        if self.stages.contains(&StageCall::Indeterminate) {
            return Err((
                "notify.stages",
                "lists stages 0, I and II; indeterminate heads alert with notify.indeterminate"
                    .into(),
            ));
        }
        if self.max_attempts == 0 {
            return Err(("notify.max_attempts", "must be at least 1".into()));
        }
        if self.retry_initial_secs == 0 || self.retry_max_secs < self.retry_initial_secs {
            return Err((
                "notify.retry_initial_secs",
                "must be at least 1 and not above retry_max_secs".into(),
            ));
        }
        if self.timeout_secs == 0 {
            return Err(("notify.timeout_secs", "must be at least 1".into()));
        }
        let mut names = std::collections::HashSet::new();
        for c in self.channels() {
            if c.name().is_empty() || !names.insert(c.name().to_string()) {
                return Err((
                    "notify",
                    format!(
                        "channel names must be unique and not empty ({:?})",
                        c.name()
                    ),
                ));
            }
            let url_ok = |u: &str| u.starts_with("http://") || u.starts_with("https://");
            match &c {
                Channel::Ntfy(n) if !url_ok(&n.server) || n.topic.is_empty() => {
                    return Err((
                        "notify.ntfy",
                        format!("{}: server must be an http(s) URL and topic set", n.name),
                    ));
                }
                Channel::Webhook(w) if !url_ok(&w.url) || w.secret.is_empty() => {
                    return Err((
                        "notify.webhook",
                        format!("{}: url must be http(s) and secret set", w.name),
                    ));
                }
                Channel::Smtp(s) => {
                    let addr_ok = |a: &str| a.parse::<lettre::Address>().is_ok();
                    if s.host.is_empty()
                        || !addr_ok(&s.from)
                        || s.to.is_empty()
                        || !s.to.iter().all(|t| addr_ok(t))
                    {
                        return Err((
                            "notify.smtp",
                            format!(
                                "{}: host, from and to (valid addresses) are required",
                                s.name
                            ),
                        ));
                    }
                    if s.username.is_some() != s.password.is_some() {
                        return Err((
                            "notify.smtp",
                            format!("{}: username and password go together", s.name),
                        ));
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Delay before attempt `attempts + 1` after `attempts` failures.
    pub fn backoff(&self, attempts: u32) -> Duration {
        crate::outbox::backoff(self.retry_initial_secs, self.retry_max_secs, attempts)
    }
}

/// What an alert says; stored as JSON in the outbox and rendered per channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertMessage {
    /// Idempotency key.
    pub key: String,
    /// One line.
    pub title: String,
    /// Several lines of plain text.
    pub body: String,
    /// ntfy priority 1-5.
    pub priority: u8,
    /// ntfy tags.
    pub tags: Vec<String>,
    /// The head's side (`"R"` or `"L"`).
    pub side: Side,
    /// The stage called (`"0"`, `"I"`, `"II"` or `"indeterminate"`).
    pub stage: StageCall,
    /// Accession Number.
    pub accession_number: String,
    /// When the study was analysed, UTC, RFC 3339.
    pub analysed_at: String,
    /// Where the heatmap montage is.
    pub heatmap: Option<String>,
    /// Model name and version.
    pub model: String,
    /// The model's intended use.
    pub intended_use: String,
}

/// Whether a head alerts under `cfg`.
pub fn alerts_for(cfg: &NotifySettings, head: &HeadFinding) -> bool {
    if head.stage == StageCall::Indeterminate {
        cfg.indeterminate
    } else {
        cfg.stages.contains(&head.stage)
    }
}

/// The message for one head of an analysis. `pacs` names where the results are in PACS
/// (when result objects are exported): it then replaces the local heatmap path, which
/// stays only as a `notify.heatmap_url` link.
pub fn message(
    cfg: &NotifySettings,
    a: &Analysis,
    head: &HeadFinding,
    key: &str,
    analysed_ms: i64,
    pacs: Option<&str>,
) -> AlertMessage {
    let p = [
        head.probabilities.s0,
        head.probabilities.s1,
        head.probabilities.s2,
    ];
    let top = p.iter().cloned().fold(0f32, f32::max);
    let (title, priority, tags) = if head.stage == StageCall::Indeterminate {
        (
            format!(
                "ONFH screen indeterminate: {} femoral head",
                head.side.word()
            ),
            3,
            vec!["grey_question".to_string(), "onfh".into()],
        )
    } else if head.early_onfh {
        (
            format!(
                "Early ONFH suspected: {} femoral head, Ficat-Arlet stage {}",
                head.side.word(),
                head.stage
            ),
            4,
            vec![
                "warning".to_string(),
                "onfh".into(),
                format!("stage-{}", head.stage),
            ],
        )
    } else {
        (
            format!(
                "ONFH screen: {} femoral head, stage {}",
                head.side.word(),
                head.stage
            ),
            2,
            vec!["onfh".to_string(), format!("stage-{}", head.stage)],
        )
    };
    let heatmap = head.heatmap.as_ref().and_then(|h| {
        if cfg.heatmap_url.is_empty() {
            // The path on the appliance, unless the results are in PACS.
            pacs.is_none().then(|| h.png.clone())
        } else {
            // The part under the state directory's `results/` (study/job/file), which a
            // results share serves.
            let rel = h
                .png
                .rsplit_once("/results/")
                .map_or_else(|| h.png.rsplit('/').next().unwrap_or_default(), |(_, r)| r);
            Some(format!("{}/{rel}", cfg.heatmap_url.trim_end_matches('/')))
        }
    });
    let analysed_at = rfc3339(analysed_ms);
    let mut body = vec![
        format!("Femoral head: {}", head.side.word()),
        match head.stage {
            StageCall::Indeterminate => format!(
                "Stage: indeterminate ({})",
                head.reason.as_deref().unwrap_or("no confident call")
            ),
            s => format!("Ficat-Arlet stage: {s} (probability {top:.2})"),
        },
        format!("Accession: {}", a.accession_number),
        format!("Analysed: {analysed_at}"),
    ];
    if let Some(p) = pacs {
        body.push(format!("Results in PACS: {p}"));
    }
    if let Some(h) = &heatmap {
        body.push(format!("Heatmap: {h}"));
    }
    body.push(format!("Model: {} {}", a.model.name, a.model.version));
    body.push(a.model.intended_use.clone());
    AlertMessage {
        key: key.to_string(),
        title,
        body: body.join("\n"),
        priority,
        tags,
        side: head.side,
        stage: head.stage,
        accession_number: a.accession_number.clone(),
        analysed_at,
        heatmap,
        model: format!("{} {}", a.model.name, a.model.version),
        intended_use: a.model.intended_use.clone(),
    }
}

/// The outbox rows for an analysis: one per alerting head and channel. The key is the
/// finding's — study, analysed series, side, stage — and the channel's, so analysing the
/// same series again (after a restart, or when another series of the study arrives late)
/// does not alert the same finding twice.
///
/// A study whose femoral heads were not both found has no staged heads at all; when
/// indeterminate calls alert, it alerts as two indeterminate heads with the analysis's
/// reason, so that "the machine could not decide" never goes unsaid.
pub fn compose(cfg: &NotifySettings, a: &Analysis, analysed_ms: i64) -> Vec<NewAlert> {
    compose_with(cfg, a, analysed_ms, None)
}

/// [`compose`], naming where the results are in PACS (see [`message`]).
pub fn compose_with(
    cfg: &NotifySettings,
    a: &Analysis,
    analysed_ms: i64,
    pacs: Option<&str>,
) -> Vec<NewAlert> {
    let mut out = Vec::new();
    for head in alert_heads(a).iter().filter(|h| alerts_for(cfg, h)) {
        for ch in cfg.channels() {
            let finding = format!(
                "{}\n{}\n{}\n{}\n{}",
                a.study_instance_uid,
                a.series_instance_uid,
                head.side,
                head.stage,
                ch.name()
            );
            let key = hex::encode(&Sha256::digest(finding.as_bytes())[..16]);
            let msg = message(cfg, a, head, &key, analysed_ms, pacs);
            out.push(NewAlert {
                side: head.side,
                channel: ch.name().to_string(),
                idempotency_key: key,
                payload: serde_json::to_string(&msg).unwrap_or_default(),
            });
        }
    }
    out
}

/// The heads an analysis alerts about: the staged ones, or, for an indeterminate study in
/// which the detector did not find both heads (nothing was staged) or a study that could
/// not be analysed at all (an error), each side as an indeterminate head carrying the
/// study's reason.
fn alert_heads(a: &Analysis) -> Vec<HeadFinding> {
    use crate::result::Status;
    if !matches!(a.status, Status::Indeterminate | Status::Error) || !a.heads.is_empty() {
        return a.heads.clone();
    }
    Side::BOTH
        .into_iter()
        .map(|side| HeadFinding {
            side,
            stage: StageCall::Indeterminate,
            early_onfh: false,
            probabilities: crate::result::Probabilities {
                s0: 0.0,
                s1: 0.0,
                s2: 0.0,
            },
            detection_score: 0.0,
            center_lps_mm: [0.0; 3],
            bbox_lps_mm: [[0.0; 3]; 2],
            heatmap: None,
            reason: Some(
                a.reason
                    .clone()
                    .unwrap_or_else(|| "femoral heads not found".into()),
            ),
        })
        .collect()
}

/// What one pass of the sender did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pass {
    /// Delivered.
    pub sent: usize,
    /// Failed, to be retried.
    pub retrying: usize,
    /// Failed for the last time.
    pub dead: usize,
}

/// Delivers the outbox. Blocking (network and SQLite): run it on its own thread.
pub struct Sender {
    store: Store,
    cfg: NotifySettings,
    channels: Vec<Channel>,
    /// Delivered, but the database did not take the mark yet: never delivered again.
    unmarked: std::sync::Mutex<std::collections::HashSet<i64>>,
}

impl Sender {
    /// A sender for `store` with the channels in `cfg`.
    pub fn new(store: Store, cfg: NotifySettings) -> Sender {
        let channels = cfg.channels();
        Sender {
            store,
            cfg,
            channels,
            unmarked: Default::default(),
        }
    }

    fn attempt(&self, row: &AlertRow) -> Result<(), DeliveryError> {
        let msg: AlertMessage = serde_json::from_str(&row.payload)
            .map_err(|e| DeliveryError::Permanent(format!("stored alert unreadable: {e}")))?;
        let ch = self
            .channels
            .iter()
            .find(|c| c.name() == row.channel)
            .ok_or_else(|| {
                DeliveryError::Permanent(format!(
                    "channel {:?} is no longer configured",
                    row.channel
                ))
            })?;
        deliver(ch, &msg, Duration::from_secs(self.cfg.timeout_secs))
    }

    /// Try every due alert once; record each outcome.
    pub fn run_once(&self, now_ms: i64) -> Result<Pass, StoreError> {
        let mut pass = Pass::default();
        for row in self.store.due_alerts(now_ms, 64)? {
            let lock = || self.unmarked.lock().unwrap_or_else(|p| p.into_inner());
            let already = lock().contains(&row.id);
            let outcome = if already { Ok(()) } else { self.attempt(&row) };
            match outcome {
                Ok(()) => {
                    lock().insert(row.id);
                    self.store.alert_sent(row.id, crate::clock::now_ms())?;
                    lock().remove(&row.id);
                    tracing::info!(alert = row.id, channel = %row.channel, side = %row.side, "alert delivered");
                    pass.sent += 1;
                }
                Err(e) => {
                    let attempts = row.attempts as u32 + 1;
                    let last = matches!(e, DeliveryError::Permanent(_))
                        || attempts >= self.cfg.max_attempts;
                    let now = crate::clock::now_ms();
                    let retry =
                        (!last).then(|| now + self.cfg.backoff(attempts).as_millis() as i64);
                    self.store
                        .alert_failed(row.id, now, &e.to_string(), retry)?;
                    if last {
                        tracing::error!(alert = row.id, channel = %row.channel, attempts, error = %e, "alert undeliverable, given up");
                        pass.dead += 1;
                    } else {
                        tracing::warn!(alert = row.id, channel = %row.channel, attempts, error = %e, "alert delivery failed, will retry");
                        pass.retrying += 1;
                    }
                }
            }
        }
        Ok(pass)
    }

    /// Deliver until `stop` returns true, sleeping until the next alert is due (at most
    /// `poll` at a time, so new rows and `stop` are noticed).
    pub fn run(&self, poll: Duration, stop: impl Fn() -> bool) {
        crate::outbox::run(
            "alert outbox",
            poll,
            stop,
            |now| self.run_once(now),
            || self.store.next_alert_due_ms(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let cfg = NotifySettings {
            retry_initial_secs: 10,
            retry_max_secs: 60,
            ..NotifySettings::default()
        };
        let b: Vec<u64> = (1..=6).map(|a| cfg.backoff(a).as_secs()).collect();
        assert_eq!(b, [10, 20, 40, 60, 60, 60]);
    }

    #[test]
    fn validation_names_the_problem() {
        let mut cfg = NotifySettings::default();
        assert!(cfg.validate().is_ok());
        cfg.stages.push(StageCall::Indeterminate);
        assert_eq!(cfg.validate().unwrap_err().0, "notify.stages");
        cfg.stages.pop();
        cfg.webhook.push(WebhookChannel {
            name: "w".into(),
            url: "ftp://x".into(),
            secret: "s".into(),
        });
        assert_eq!(cfg.validate().unwrap_err().0, "notify.webhook");
    }

    /// Clear text to another host is refused unless opted into; loopback is always fine.
    #[test]
    fn plaintext_to_a_remote_host_needs_the_opt_in() {
        let hook = |url: &str| WebhookChannel {
            name: "w".into(),
            url: url.into(),
            secret: "s".into(),
        };
        let mut cfg = NotifySettings {
            webhook: vec![
                hook("http://127.0.0.1:9/hook"),
                hook("https://ris.example.org/h"),
            ],
            ..NotifySettings::default()
        };
        cfg.webhook[1].name = "w2".into();
        assert!(cfg.validate().is_ok());
        cfg.webhook[1].url = "http://ris.example.org/h".into();
        let (key, why) = cfg.validate().unwrap_err();
        assert_eq!(key, "notify");
        assert!(why.contains("w2: http:// to ris.example.org"), "{why}");
        cfg.allow_plaintext = true;
        assert!(cfg.validate().is_ok());
        assert_eq!(cfg.plaintext_channels().len(), 1);
        // SMTP: no encryption with a password, to another host.
        let mut cfg = NotifySettings {
            smtp: vec![SmtpChannel {
                name: "m".into(),
                host: "smtp.example.org".into(),
                port: None,
                security: SmtpSecurity::None,
                username: Some("u".into()),
                password: Some("p".into()),
                from: "a@example.org".into(),
                to: vec!["b@example.org".into()],
            }],
            ..NotifySettings::default()
        };
        assert!(cfg.validate().is_err());
        cfg.smtp[0].host = "localhost".into();
        assert!(cfg.validate().is_ok());
        cfg.smtp[0].host = "smtp.example.org".into();
        cfg.smtp[0].security = SmtpSecurity::Starttls;
        assert!(cfg.validate().is_ok());
    }

    /// With result objects going to PACS, an alert names the SR series there instead of a
    /// path on the appliance; a configured heatmap link stays.
    #[test]
    fn alerts_name_the_pacs_series_when_results_go_there() {
        let mut a: Analysis =
            serde_json::from_str(include_str!("../../tests/fixtures/analysis_example.json"))
                .unwrap();
        let png = "/var/lib/onfh-edge/results/1.2.3/00ab/heatmap_R.png".to_string();
        a.heads[0].heatmap = Some(crate::result::HeatmapFiles {
            png: png.clone(),
            nifti: "heatmap.nii.gz".into(),
            volume_nifti: "t2.nii.gz".into(),
        });
        let head = &a.heads[0];
        let mut cfg = NotifySettings::default();
        let export = crate::pacs::ExportSettings {
            destination: vec![crate::pacs::Destination {
                name: "pacs".into(),
                ae_title: "PACS".into(),
                host: "10.0.0.5".into(),
                port: 104,
                calling_ae_title: "ONFH_EDGE".into(),
                objects: vec!["sr".into(), "seg".into()],
            }],
            ..Default::default()
        };
        let pacs = crate::pacs::alert_location(&export).unwrap();
        let m = message(&cfg, &a, head, "k", 0, Some(&pacs));
        assert!(
            m.body.contains("Results in PACS: series 9903 «AI research: onfh-edge ONFH staging (SR)» of the study, sent to pacs"),
            "{}",
            m.body
        );
        assert!(!m.body.contains(&png), "{}", m.body);
        assert_eq!(m.heatmap, None);
        cfg.heatmap_url = "https://share.example.org/results".into();
        let m = message(&cfg, &a, head, "k", 0, Some(&pacs));
        assert!(
            m.heatmap
                .unwrap()
                .starts_with("https://share.example.org/results/")
        );
        // Without export, the path on the appliance as before.
        let m = message(&NotifySettings::default(), &a, head, "k", 0, None);
        assert_eq!(m.heatmap.as_deref(), Some(png.as_str()));
        assert!(!m.body.contains("PACS"));
    }

    /// A study in which the detector did not find both heads alerts as two indeterminate
    /// heads, with the study's reason, when indeterminate calls alert; otherwise not.
    #[test]
    fn heads_not_found_alert_only_when_indeterminate_calls_do() {
        let mut a: Analysis =
            serde_json::from_str(include_str!("../../tests/fixtures/analysis_example.json"))
                .unwrap();
        a.status = crate::result::Status::Indeterminate;
        a.reason = Some("only one femoral head found (detection score 0.12 < 0.30)".into());
        a.heads.clear();
        let mut cfg = NotifySettings {
            webhook: vec![WebhookChannel {
                name: "hook".into(),
                url: "http://127.0.0.1:9/hook".into(),
                secret: "s".into(),
            }],
            ..NotifySettings::default()
        };
        assert!(compose(&cfg, &a, 0).is_empty());
        cfg.indeterminate = true;
        let alerts = compose(&cfg, &a, 0);
        assert_eq!(
            alerts.iter().map(|x| x.side.as_str()).collect::<Vec<_>>(),
            ["R", "L"]
        );
        for x in &alerts {
            let m: AlertMessage = serde_json::from_str(&x.payload).unwrap();
            assert_eq!(m.stage, StageCall::Indeterminate);
            assert!(m.body.contains("only one femoral head found"), "{}", m.body);
            assert!(m.title.contains("indeterminate"), "{}", m.title);
        }
        // A study that was never staged for another reason does not alert as heads.
        a.status = crate::result::Status::NoUsableSeries;
        assert!(compose(&cfg, &a, 0).is_empty());
    }
}
