//! Webhooks: registration checks, signing, and the delivery worker.
//!
//! Deliveries are rows (`webhook_deliveries`), created with the notification in one
//! transaction, so they survive restarts. The worker claims due rows with
//! `FOR UPDATE SKIP LOCKED` (replicas never send the same row at once), POSTs each as signed
//! JSON over a minimal HTTP/1.1 client, and records the outcome: delivered, a retry with
//! exponential backoff and jitter, or dead after the last attempt.

use std::{fmt::Write as _, sync::Arc, time::Duration};

use hmac::{Hmac, KeyInit, Mac};
use rand::Rng;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, QueryResult, Statement, TransactionTrait};
use service_runtime::CancellationToken;
use sha2::Sha256;
use ticketing_proto::v1::NotificationKind;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::Notify,
};

use crate::{Config, Error, inbox::kind_name};

/// Due deliveries claimed per round; bounds the rows locked and the requests in flight at once.
pub const DELIVERY_BATCH: i64 = 32;
/// Longest one delivery (connect, send, read the status line) may take; a hung receiver
/// must not hold its row lock for long.
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the worker looks for due retries when nothing wakes it.
pub const IDLE_POLL: Duration = Duration::from_millis(250);
/// Bytes of a response read to find the status line; the rest is ignored.
pub const MAX_STATUS_LINE: usize = 1_024;
/// Longest webhook URL accepted.
pub const MAX_URL_LEN: usize = 2_048;
/// Bytes a webhook secret may have (HMAC key).
pub const SECRET_LEN: std::ops::RangeInclusive<usize> = 16..=256;

/// Where a webhook URL points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub https: bool,
    /// Lowercase, without IPv6 brackets.
    pub host: String,
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
}

impl Target {
    /// Parses `url` and checks it is http(s) with a host in `allowed`.
    pub fn parse(url: &str, allowed: &[String]) -> Result<Self, Error> {
        if url.is_empty() {
            return Err(Error::invalid("url", "is required"));
        }
        if url.len() > MAX_URL_LEN || url.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err(Error::invalid("url", format!("must be at most {MAX_URL_LEN} bytes without spaces")));
        }
        let (https, rest) = match url.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => (false, rest),
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("https") => (true, rest),
            _ => {
                return Err(Error::WebhookUrlNotAllowed {
                    problem: "must be an http:// or https:// URL".into(),
                });
            }
        };
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        if authority.contains('@') {
            return Err(Error::invalid("url", "must not carry credentials"));
        }
        let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
            let (host, after) =
                bracketed.split_once(']').ok_or_else(|| Error::invalid("url", "unclosed IPv6 bracket"))?;
            (host, after.strip_prefix(':'))
        } else {
            match authority.split_once(':') {
                Some((_, port)) if port.contains(':') => {
                    return Err(Error::invalid("url", "IPv6 hosts must be in brackets"));
                }
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(Error::invalid("url", "has no host"));
        }
        let port = match port {
            None => {
                if https {
                    443
                } else {
                    80
                }
            }
            Some(port) => port
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| Error::invalid("url", "port must be 1-65535"))?,
        };
        let host = host.to_ascii_lowercase();
        if !allowed.contains(&host) {
            return Err(Error::WebhookUrlNotAllowed {
                problem: format!("host {host:?} is not in WEBHOOK_ALLOWED_HOSTS"),
            });
        }
        let path = tail.split('#').next().unwrap_or_default();
        let path = if path.starts_with('/') { path.to_owned() } else { format!("/{path}") };
        Ok(Self { https, host, port, path })
    }

    /// The `Host` header value.
    fn host_header(&self) -> String {
        let host = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        match (self.https, self.port) {
            (false, 80) | (true, 443) => host,
            (_, port) => format!("{host}:{port}"),
        }
    }
}

/// Checks the kinds of a registration: valid, specified values; duplicates dropped.
pub fn parse_kinds(kinds: &[i32]) -> Result<Vec<i32>, Error> {
    let mut out = Vec::with_capacity(kinds.len());
    for &kind in kinds {
        match NotificationKind::try_from(kind) {
            Ok(NotificationKind::Unspecified) | Err(_) => {
                return Err(Error::invalid("kinds", format!("{kind} is not a notification kind")));
            }
            Ok(_) if out.contains(&kind) => {}
            Ok(_) => out.push(kind),
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// Stores a webhook for `user_id` and returns its id. Inputs must be validated already.
pub async fn register(
    db: &DatabaseConnection,
    user_id: &str,
    url: &str,
    secret: &str,
    kinds: &[i32],
) -> Result<uuid::Uuid, Error> {
    let webhook_id = uuid::Uuid::new_v4();
    db.execute_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "INSERT INTO webhooks (webhook_id, user_id, url, secret, kinds) VALUES ($1, $2, $3, $4, $5)",
        [webhook_id.into(), user_id.into(), url.into(), secret.into(), serde_json::json!(kinds).into()],
    ))
    .await?;
    Ok(webhook_id)
}

/// `v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`.
pub fn signature(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let mut out = String::from("v1=");
    for byte in mac.finalize().into_bytes() {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

/// The JSON body of a delivery.
#[derive(Debug, serde::Serialize)]
struct Payload<'a> {
    notification_id: i64,
    user_id: &'a str,
    kind: &'static str,
    event_id: &'a str,
    message_id: &'a str,
    created_at: String,
}

/// A webhook's HMAC key. Its `Debug` never prints it.
struct WebhookSecret(String);

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret(..)")
    }
}

/// One claimed delivery with what is needed to send it.
#[derive(Debug)]
struct Due {
    id: i64,
    attempts: i32,
    url: String,
    secret: WebhookSecret,
    body: Vec<u8>,
}

impl Due {
    fn from_row(row: &QueryResult) -> Result<Self, Error> {
        let kind: i16 = row.try_get_by("kind")?;
        let kind = NotificationKind::try_from(i32::from(kind)).unwrap_or(NotificationKind::Unspecified);
        let created_at: chrono::DateTime<chrono::Utc> = row.try_get_by("created_at")?;
        let user_id: String = row.try_get_by("user_id")?;
        let event_id: String = row.try_get_by("event_id")?;
        let message_id: String = row.try_get_by("message_id")?;
        let payload = Payload {
            notification_id: row.try_get_by("notification_id")?,
            user_id: &user_id,
            kind: kind_name(kind),
            event_id: &event_id,
            message_id: &message_id,
            created_at: created_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        };
        Ok(Self {
            id: row.try_get_by("id")?,
            attempts: row.try_get_by("attempts")?,
            url: row.try_get_by("url")?,
            secret: WebhookSecret(row.try_get_by("secret")?),
            // Serializing a struct of strings and integers cannot fail.
            body: serde_json::to_vec(&payload).unwrap_or_default(),
        })
    }
}

/// Sends due deliveries until `stopping` is cancelled.
pub struct DeliveryWorker {
    pub db: DatabaseConnection,
    pub config: Arc<Config>,
    pub allowed_hosts: Arc<Vec<String>>,
    pub wake: Arc<Notify>,
}

impl DeliveryWorker {
    /// Runs rounds until `stopping`; sleeps when there was nothing due.
    pub async fn run(self, stopping: CancellationToken) {
        loop {
            let busy = match self.round().await {
                Ok(claimed) => claimed > 0,
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "webhook delivery round failed");
                    false
                }
            };
            if stopping.is_cancelled() {
                return;
            }
            if !busy {
                tokio::select! {
                    () = stopping.cancelled() => return,
                    () = self.wake.notified() => {}
                    () = tokio::time::sleep(IDLE_POLL) => {}
                }
            }
        }
    }

    /// Claims up to [`DELIVERY_BATCH`] due deliveries, sends them concurrently and records
    /// the outcomes in the same transaction. Returns how many were claimed.
    async fn round(&self) -> Result<usize, Error> {
        let tx = self.db.begin().await?;
        let rows = tx
            .query_all_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "SELECT d.id, d.attempts, d.notification_id, w.url, w.secret, \
                        i.user_id, i.kind, i.event_id, i.message_id, i.created_at \
                 FROM webhook_deliveries d \
                 JOIN webhooks w ON w.webhook_id = d.webhook_id \
                 JOIN inbox i ON i.id = d.notification_id \
                 WHERE d.status = 'pending' AND d.next_attempt_at <= now() \
                 ORDER BY d.next_attempt_at LIMIT $1 \
                 FOR UPDATE OF d SKIP LOCKED",
                [DELIVERY_BATCH.into()],
            ))
            .await?;
        let due = rows.iter().map(Due::from_row).collect::<Result<Vec<_>, _>>()?;
        let outcomes = futures::future::join_all(due.iter().map(|d| self.send(d))).await;
        for (delivery, outcome) in due.iter().zip(outcomes) {
            self.record(&tx, delivery, outcome).await?;
        }
        tx.commit().await?;
        Ok(due.len())
    }

    /// POSTs one delivery; Ok when the receiver answered 2xx.
    async fn send(&self, due: &Due) -> Result<(), String> {
        // Checked again: the allow-list may have shrunk since registration.
        let target = Target::parse(&due.url, &self.allowed_hosts).map_err(|e| e.to_string())?;
        if target.https {
            return Err(
                "https is not supported: this notifier's minimal HTTP/1.1 client speaks http:// only".into(),
            );
        }
        let timestamp = chrono::Utc::now().timestamp();
        let signature = signature(due.secret.0.as_bytes(), timestamp, &due.body);
        match tokio::time::timeout(DELIVERY_TIMEOUT, post(&target, timestamp, &signature, &due.body)).await {
            Ok(Ok(status)) if (200..300).contains(&status) => Ok(()),
            Ok(Ok(status)) => Err(format!("receiver answered HTTP {status}")),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(format!("no answer within {DELIVERY_TIMEOUT:?}")),
        }
    }

    /// Writes the outcome of one attempt.
    async fn record(
        &self,
        tx: &impl ConnectionTrait,
        due: &Due,
        outcome: Result<(), String>,
    ) -> Result<(), Error> {
        let attempts = due.attempts.saturating_add(1);
        let (sql, values): (&str, Vec<sea_orm::Value>) = match outcome {
            Ok(()) => {
                metrics::counter!("notifier_webhook_deliveries_total", "outcome" => "delivered").increment(1);
                (
                    "UPDATE webhook_deliveries SET status = 'delivered', attempts = $2, last_error = NULL WHERE id = $1",
                    vec![due.id.into(), attempts.into()],
                )
            }
            Err(error) if attempts >= self.config.webhook_max_attempts as i32 => {
                metrics::counter!("notifier_webhook_deliveries_total", "outcome" => "dead").increment(1);
                tracing::warn!(delivery_id = due.id, attempts, %error, "webhook delivery dead");
                (
                    "UPDATE webhook_deliveries SET status = 'dead', attempts = $2, last_error = $3 WHERE id = $1",
                    vec![due.id.into(), attempts.into(), error.into()],
                )
            }
            Err(error) => {
                metrics::counter!("notifier_webhook_deliveries_total", "outcome" => "retry").increment(1);
                let delay = self.config.backoff(due.attempts.max(0) as u32);
                // Equal jitter: between half and all of the delay, so retries of many
                // deliveries that failed together spread out.
                let half = (delay.as_millis() / 2) as i64;
                let delay_ms = half + rand::rng().random_range(0..=half);
                tracing::debug!(delivery_id = due.id, attempts, delay_ms, %error, "webhook delivery failed; retrying");
                (
                    "UPDATE webhook_deliveries SET attempts = $2, last_error = $3, \
                     next_attempt_at = now() + $4 * interval '1 millisecond' WHERE id = $1",
                    vec![due.id.into(), attempts.into(), error.into(), delay_ms.into()],
                )
            }
        };
        tx.execute_raw(Statement::from_sql_and_values(DbBackend::Postgres, sql, values)).await?;
        Ok(())
    }
}

/// A minimal HTTP/1.1 POST: writes the request by hand and returns the response status code.
async fn post(target: &Target, timestamp: i64, signature: &str, body: &[u8]) -> Result<u16, String> {
    let mut stream = TcpStream::connect((target.host.as_str(), target.port))
        .await
        .map_err(|e| format!("connect to {}:{}: {e}", target.host, target.port))?;
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: ticketing-notifier\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nX-Ticketing-Timestamp: {timestamp}\r\nX-Ticketing-Signature: {signature}\r\n\
         Connection: close\r\n\r\n",
        target.path,
        target.host_header(),
        body.len(),
    );
    let mut request = head.into_bytes();
    request.extend_from_slice(body);
    stream.write_all(&request).await.map_err(|e| format!("send: {e}"))?;
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 256];
    while !buf.windows(2).any(|w| w == b"\r\n") && buf.len() < MAX_STATUS_LINE {
        let n = stream.read(&mut chunk).await.map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let line = String::from_utf8_lossy(&buf);
    let mut parts = line.split_whitespace();
    match (parts.next(), parts.next().and_then(|code| code.parse::<u16>().ok())) {
        (Some(version), Some(code)) if version.starts_with("HTTP/1.") => Ok(code),
        _ => Err("malformed HTTP response".into()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn allowed() -> Vec<String> {
        vec!["127.0.0.1".into(), "localhost".into(), "::1".into()]
    }

    #[test]
    fn parses_allowed_urls() {
        let t = Target::parse("http://127.0.0.1:8080/hook?a=1#frag", &allowed()).unwrap();
        assert_eq!(
            t,
            Target { https: false, host: "127.0.0.1".into(), port: 8080, path: "/hook?a=1".into() }
        );
        let t = Target::parse("https://[::1]/x", &allowed()).unwrap();
        assert_eq!((t.https, t.host.as_str(), t.port, t.host_header()), (true, "::1", 443, "[::1]".into()));
        assert_eq!(Target::parse("http://LOCALHOST", &allowed()).unwrap().path, "/");
    }

    #[test]
    fn refuses_other_hosts_and_schemes() {
        for url in [
            "http://10.0.0.1/hook",
            "http://example.com/",
            "ftp://127.0.0.1/",
            "127.0.0.1/x",
            "http://127.0.0.1.evil.com/",
        ] {
            assert!(
                matches!(Target::parse(url, &allowed()), Err(Error::WebhookUrlNotAllowed { .. })),
                "{url}"
            );
        }
        for url in [
            "http://user@127.0.0.1/",
            "http://127.0.0.1:0/",
            "http://127.0.0.1/a b",
            "http:///x",
            "http://::1/",
        ] {
            assert!(matches!(Target::parse(url, &allowed()), Err(Error::InvalidInput { .. })), "{url}");
        }
    }

    #[test]
    fn signature_is_hex_hmac_of_timestamp_dot_body() {
        // RFC 4231-style check through an independent computation.
        let mut mac = Hmac::<Sha256>::new_from_slice(b"0123456789abcdef").unwrap();
        mac.update(b"42.{}");
        let expected: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(signature(b"0123456789abcdef", 42, b"{}"), format!("v1={expected}"));
    }
}
