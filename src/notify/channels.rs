//! Delivering one alert over one channel: ntfy and webhook over HTTP(S), email over SMTP.
//! Blocking; the sender calls it from its own thread.

use std::time::Duration;

use hmac::{KeyInit, Mac};
use lettre::Transport;

use super::{AlertMessage, Channel, NtfyChannel, SmtpChannel, SmtpSecurity, WebhookChannel};

/// Why an attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// Worth retrying (network, timeout, the receiver said no).
    #[error("{0}")]
    Transient(String),
    /// Retrying cannot help (the stored alert or its channel is unusable).
    #[error("{0}")]
    Permanent(String),
}

/// Deliver `msg` over `ch`, waiting at most about `timeout`.
pub fn deliver(ch: &Channel, msg: &AlertMessage, timeout: Duration) -> Result<(), DeliveryError> {
    match ch {
        Channel::Ntfy(c) => ntfy(c, msg, timeout),
        Channel::Webhook(c) => webhook(c, msg, timeout),
        Channel::Smtp(c) => smtp(c, msg, timeout),
    }
}

/// Whether `url`'s host is exempt from the environment's proxy: loopback, or a `NO_PROXY`
/// entry (`*`, a host, or a domain suffix).
fn bypass_proxy(url: &str) -> bool {
    let host = super::url_host(url);
    if super::is_loopback_host(host) {
        return true;
    }
    let no_proxy = std::env::var("NO_PROXY")
        .or_else(|_| std::env::var("no_proxy"))
        .unwrap_or_default();
    no_proxy.split(',').map(str::trim).any(|e| {
        !e.is_empty()
            && (e == "*"
                || host == e.trim_start_matches('.')
                || host.ends_with(&format!(".{}", e.trim_start_matches('.'))))
    })
}

fn agent(url: &str, timeout: Duration) -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(timeout)
        .try_proxy_from_env(!bypass_proxy(url))
        .build()
}

/// The error for a failed request, with the URL's credentials redacted (the text goes to
/// the log, the outbox's `last_error` and the audit table).
fn http_error(url: &str, e: ureq::Error) -> DeliveryError {
    let url = crate::redact::url(url);
    match e {
        ureq::Error::Status(code, resp) => {
            DeliveryError::Transient(format!("{url}: HTTP {code} {}", resp.status_text()))
        }
        ureq::Error::Transport(t) => {
            DeliveryError::Transient(crate::redact::urls_in(&format!("{url}: {t}")))
        }
    }
}

fn ntfy(c: &NtfyChannel, msg: &AlertMessage, timeout: Duration) -> Result<(), DeliveryError> {
    let url = format!("{}/{}", c.server.trim_end_matches('/'), c.topic);
    let mut req = agent(&url, timeout)
        .post(&url)
        .set("Title", &msg.title)
        .set("Priority", &msg.priority.to_string())
        .set("Tags", &msg.tags.join(","))
        .set("X-Onfh-Alert-Key", &msg.key);
    if let Some(h) = msg.heatmap.as_deref().filter(|h| h.starts_with("http")) {
        req = req.set("Click", h);
    }
    if let Some(t) = &c.token {
        req = req.set("Authorization", &format!("Bearer {t}"));
    }
    req.send_string(&msg.body)
        .map(|_| ())
        .map_err(|e| http_error(&url, e))
}

/// The webhook signature header value for `body`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn webhook(c: &WebhookChannel, msg: &AlertMessage, timeout: Duration) -> Result<(), DeliveryError> {
    let body = serde_json::json!({
        "type": "onfh-edge.alert",
        "alert": msg,
    })
    .to_string();
    agent(&c.url, timeout)
        .post(&c.url)
        .set("Content-Type", "application/json")
        .set("Idempotency-Key", &msg.key)
        .set("X-Onfh-Signature", &signature(&c.secret, body.as_bytes()))
        .send_string(&body)
        .map(|_| ())
        .map_err(|e| http_error(&c.url, e))
}

fn smtp(c: &SmtpChannel, msg: &AlertMessage, timeout: Duration) -> Result<(), DeliveryError> {
    let bad = |what: &str, e: &dyn std::fmt::Display| {
        DeliveryError::Permanent(format!("smtp {}: {what}: {e}", c.name))
    };
    let mut b = lettre::Message::builder()
        .from(c.from.parse().map_err(|e| bad("from", &e))?)
        .subject(&msg.title)
        .message_id(Some(format!("<{}@onfh-edge>", msg.key)));
    for to in &c.to {
        b = b.to(to.parse().map_err(|e| bad("to", &e))?);
    }
    // MIME 1.0, UTF-8 text (the body has an em dash and may have accents) with an HTML
    // alternative; lettre picks the transfer encoding and encodes the subject (RFC 2047).
    let email = b
        .multipart(lettre::message::MultiPart::alternative_plain_html(
            msg.body.clone(),
            html_body(&msg.title, &msg.body),
        ))
        .map_err(|e| bad("message", &e))?;
    let builder = match c.security {
        SmtpSecurity::Starttls => {
            lettre::SmtpTransport::starttls_relay(&c.host).map_err(|e| bad("relay", &e))?
        }
        SmtpSecurity::Tls => lettre::SmtpTransport::relay(&c.host).map_err(|e| bad("relay", &e))?,
        SmtpSecurity::None => lettre::SmtpTransport::builder_dangerous(&c.host),
    };
    let mut builder = builder.port(c.port()).timeout(Some(timeout));
    if let (Some(u), Some(p)) = (&c.username, &c.password) {
        builder = builder.credentials(lettre::transport::smtp::authentication::Credentials::new(
            u.clone(),
            p.clone(),
        ));
    }
    builder.build().send(&email).map(|_| ()).map_err(|e| {
        DeliveryError::Transient(format!("smtp {} ({}:{}): {e}", c.name, c.host, c.port()))
    })
}

/// The alert as a small HTML document: the title as a heading, each line a paragraph.
fn html_body(title: &str, body: &str) -> String {
    let esc = |t: &str| {
        t.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    };
    let mut html = format!(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{}</title></head><body><h2>{}</h2>",
        esc(title),
        esc(title)
    );
    for line in body.lines().filter(|l| !l.trim().is_empty()) {
        html.push_str(&format!("<p>{}</p>", esc(line)));
    }
    html.push_str("</body></html>");
    html
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_bypass_for_loopback_and_no_proxy() {
        assert!(bypass_proxy("http://127.0.0.1:8080/x"));
        assert!(bypass_proxy("http://[::1]:80/"));
        assert!(bypass_proxy("http://localhost/x"));
        assert!(!bypass_proxy("https://ntfy.example.org/topic"));
    }

    #[test]
    fn signature_is_rfc4231_hmac_sha256() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
