//! Webhooks: registration checks, signing, and the delivery worker.
//!
//! Parts:
//! - [`target`]: a webhook URL taken apart (syntax only);
//! - [`address`]: where a webhook may be sent. The host is resolved once, every address is
//!   checked against the special ranges (unless allow-listed), and only checked addresses
//!   are connected to: at registration and again at every delivery;
//! - [`client`]: hyper HTTP/1.1 over TCP or rustls, to a checked address;
//! - [`secret`]: webhook secrets sealed at rest under a key from configuration.
//!
//! Registration takes a per-user advisory lock, counts the user's webhooks against
//! `MAX_WEBHOOKS_PER_USER` and inserts, in one transaction, so concurrent registrations cannot
//! exceed the limit. Deliveries are rows (`webhook_deliveries`), created with the notification
//! in one transaction, so they survive restarts. The worker claims due rows with
//! `FOR UPDATE SKIP LOCKED` (replicas never send the same row at once), re-checks the target
//! (a delivery to a name that now resolves inside is `blocked`, never sent), POSTs signed JSON
//! and records the outcome: delivered, a retry with exponential backoff and jitter, or dead
//! after the last attempt.

pub mod address;
pub mod client;
pub mod secret;
pub mod target;

use std::{fmt::Write as _, sync::Arc, time::Duration};

use hmac::{Hmac, KeyInit, Mac};
use rand::Rng;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, QueryResult, Statement, TransactionTrait};
use service_runtime::CancellationToken;
use sha2::Sha256;
use ticketing_proto::v1::NotificationKind;
use tokio::sync::Notify;

pub use self::target::Target;
use self::{
    address::{AddressPolicy, Refusal},
    client::{Post, WebhookClient},
    secret::{Sealed, SecretKeys},
};
use crate::{Config, Error, inbox::kind_name};

/// Due deliveries claimed per round; bounds the rows locked and the requests in flight at once.
pub const DELIVERY_BATCH: i64 = 32;
/// Longest one delivery (resolve, connect, TLS, send, read the status) may take; a hung
/// receiver must not hold its row lock for long.
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the worker looks for due retries when nothing wakes it.
pub const IDLE_POLL: Duration = Duration::from_millis(250);
/// Bytes a webhook secret may have (HMAC key).
pub const SECRET_LEN: std::ops::RangeInclusive<usize> = 16..=256;
/// First key of the two-key advisory lock that serialises one user's registrations (the
/// second is a hash of the user id); "WHK" in ASCII, so it cannot meet another lock's keys.
const REGISTER_LOCK_SPACE: i32 = 0x0057_484b;

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

/// Stores a webhook for `user_id` with its secret sealed, unless the user already has
/// `limit` webhooks, and returns its id. Inputs must be validated already.
///
/// Race-safe: a transaction-scoped advisory lock on the user serialises the count and the
/// insert of concurrent registrations of that user (other users are not held up).
pub async fn register(
    db: &DatabaseConnection,
    keys: &SecretKeys,
    limit: u32,
    user_id: &str,
    url: &str,
    secret: &str,
    kinds: &[i32],
) -> Result<uuid::Uuid, Error> {
    let webhook_id = uuid::Uuid::new_v4();
    let sealed = keys.seal(webhook_id, secret.as_bytes());
    let tx = db.begin().await?;
    tx.execute_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "SELECT pg_advisory_xact_lock($1, hashtext($2))",
        [REGISTER_LOCK_SPACE.into(), user_id.into()],
    ))
    .await?;
    let inserted = tx
        .execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "INSERT INTO webhooks (webhook_id, user_id, url, secret_kid, secret_sealed, kinds) \
             SELECT $1, $2, $3, $4, $5, $6 \
             WHERE (SELECT count(*) FROM webhooks WHERE user_id = $2) < $7",
            [
                webhook_id.into(),
                user_id.into(),
                url.into(),
                sealed.kid.into(),
                sealed.bytes.into(),
                serde_json::json!(kinds).into(),
                i64::from(limit).into(),
            ],
        ))
        .await?
        .rows_affected();
    if inserted == 0 {
        tx.rollback().await?;
        return Err(Error::WebhookLimitReached { limit });
    }
    tx.commit().await?;
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

/// One claimed delivery with what is needed to send it. The secret stays sealed until sent.
#[derive(Debug)]
struct Due {
    id: i64,
    attempts: i32,
    webhook_id: uuid::Uuid,
    url: String,
    secret: Sealed,
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
            webhook_id: row.try_get_by("webhook_id")?,
            url: row.try_get_by("url")?,
            secret: Sealed { kid: row.try_get_by("secret_kid")?, bytes: row.try_get_by("secret_sealed")? },
            // Serializing a struct of strings and integers cannot fail.
            body: serde_json::to_vec(&payload).unwrap_or_default(),
        })
    }
}

/// How one delivery attempt ended.
#[derive(Debug)]
enum Outcome {
    Delivered,
    /// Failed for a reason that may pass: retried until the last attempt.
    Failed(String),
    /// The target is not allowed (any more): never sent, never retried.
    Blocked(Refusal),
}

/// Sends due deliveries until `stopping` is cancelled.
pub struct DeliveryWorker {
    pub db: DatabaseConnection,
    pub config: Arc<Config>,
    pub policy: Arc<AddressPolicy>,
    pub keys: Arc<SecretKeys>,
    pub client: WebhookClient,
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
                "SELECT d.id, d.attempts, d.notification_id, d.webhook_id, w.url, w.secret_kid, \
                        w.secret_sealed, i.user_id, i.kind, i.event_id, i.message_id, i.created_at \
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

    /// Checks the target again (resolving it now: the name may point elsewhere than at
    /// registration, and the configuration may have changed) and POSTs to a checked address.
    async fn send(&self, due: &Due) -> Outcome {
        let target = match Target::parse(&due.url) {
            Ok(target) => target,
            Err(e) => return Outcome::Failed(e.to_string()),
        };
        let secret = match self.keys.open(due.webhook_id, &due.secret) {
            Ok(secret) => secret,
            Err(e) => return Outcome::Failed(e.to_string()),
        };
        let attempt = async {
            let addresses = match self.policy.resolve(&target).await {
                Ok(addresses) => addresses,
                Err(refusal @ Refusal::Unresolved { .. }) => return Outcome::Failed(refusal.to_string()),
                Err(refusal) => return Outcome::Blocked(refusal),
            };
            let timestamp = chrono::Utc::now().timestamp();
            let signature = signature(&secret, timestamp, &due.body);
            let post = Post { timestamp, signature: &signature, body: due.body.clone() };
            match self.client.post(&target, &addresses, post).await {
                Ok(status) if (200..300).contains(&status) => Outcome::Delivered,
                Ok(status) => Outcome::Failed(format!("receiver answered HTTP {status}")),
                Err(e) => Outcome::Failed(e),
            }
        };
        tokio::time::timeout(DELIVERY_TIMEOUT, attempt)
            .await
            .unwrap_or_else(|_| Outcome::Failed(format!("no answer within {DELIVERY_TIMEOUT:?}")))
    }

    /// Writes the outcome of one attempt.
    async fn record(&self, tx: &impl ConnectionTrait, due: &Due, outcome: Outcome) -> Result<(), Error> {
        let attempts = due.attempts.saturating_add(1);
        let (sql, values): (&str, Vec<sea_orm::Value>) = match outcome {
            Outcome::Delivered => {
                metrics::counter!("notifier_webhook_deliveries_total", "outcome" => "delivered").increment(1);
                (
                    "UPDATE webhook_deliveries SET status = 'delivered', attempts = $2, last_error = NULL WHERE id = $1",
                    vec![due.id.into(), attempts.into()],
                )
            }
            Outcome::Blocked(refusal) => {
                metrics::counter!("notifier_webhook_deliveries_total", "outcome" => "blocked").increment(1);
                tracing::warn!(delivery_id = due.id, %refusal, "webhook delivery blocked");
                (
                    "UPDATE webhook_deliveries SET status = 'blocked', attempts = $2, last_error = $3 WHERE id = $1",
                    vec![due.id.into(), attempts.into(), refusal.to_string().into()],
                )
            }
            Outcome::Failed(error) if attempts >= self.config.webhook_max_attempts as i32 => {
                metrics::counter!("notifier_webhook_deliveries_total", "outcome" => "dead").increment(1);
                tracing::warn!(delivery_id = due.id, attempts, %error, "webhook delivery dead");
                (
                    "UPDATE webhook_deliveries SET status = 'dead', attempts = $2, last_error = $3 WHERE id = $1",
                    vec![due.id.into(), attempts.into(), error.into()],
                )
            }
            Outcome::Failed(error) => {
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hex_hmac_of_timestamp_dot_body() {
        // Known vectors, computed outside this code base (Python's `hmac`, and
        // `printf '42.{}' | openssl dgst -sha256 -hmac 0123456789abcdef` for the first).
        assert_eq!(
            signature(b"0123456789abcdef", 42, b"{}"),
            "v1=86a846423a3ea56a244651f5ed7e20ddd39cbcf840174009f057d18ff809b3a1"
        );
        assert_eq!(
            signature(
                b"a-secret-of-32-bytes-for-hmac!!!",
                1_767_225_600,
                br#"{"kind":"BOOKING_CONFIRMED","user_id":"alice"}"#
            ),
            "v1=88554971d96a7f31db5872d64253e95ed71829380a2bc2e3cbc2dbef7d440f4f"
        );
    }
}
