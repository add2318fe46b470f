//! The durable per-user inbox in Postgres.
//!
//! [`Inbox::store`] inserts a notification once per `message_id`, creates the webhook
//! deliveries it owes and announces it to live streams on every replica (a `NOTIFY`, see
//! [`crate::live`]), all in one transaction: the announcement is delivered at the commit.

use std::sync::Arc;

use prost::Message;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, QueryResult, Statement};
use ticketing_proto::{
    events::EventEnvelope,
    v1::{Notification, NotificationKind},
};
use tokio::sync::Notify;

use crate::{Error, live};

/// Columns of an inbox row, in the order [`notification_from_row`] reads them.
const COLUMNS: &str = "id, user_id, kind, event_id, message_id, source, created_at";

/// A notification about to be stored.
#[derive(Debug, Clone)]
pub struct Draft {
    pub message_id: String,
    pub user_id: String,
    pub kind: NotificationKind,
    pub event_id: String,
    pub source: EventEnvelope,
}

/// The inbox's Postgres rows. Cheap to clone.
#[derive(Clone)]
pub struct Inbox {
    db: DatabaseConnection,
    /// Woken when a stored notification created webhook deliveries, so the worker need not poll.
    deliveries_due: Arc<Notify>,
}

impl Inbox {
    /// An inbox over `db`.
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db, deliveries_due: Arc::new(Notify::new()) }
    }

    /// The database connection pool.
    pub fn db(&self) -> &DatabaseConnection {
        &self.db
    }

    /// Signalled when new webhook deliveries are due.
    pub fn deliveries_due(&self) -> Arc<Notify> {
        self.deliveries_due.clone()
    }

    /// Stores `draft` unless its `message_id` is already stored. Returns the new notification,
    /// or `None` for a redelivered event. Returns only after the commit.
    ///
    /// One statement, committed on its own: the inbox row, the webhook deliveries it owes and
    /// the `NOTIFY` (data-modifying CTEs always run; `notified` runs because the result reads
    /// it). A redelivered event inserts nothing, so it owes no delivery and announces nothing.
    pub async fn store(&self, draft: Draft) -> Result<Option<Notification>, Error> {
        let Some(row) = self
            .db
            .query_one_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "WITH stored AS (INSERT INTO inbox (message_id, user_id, kind, event_id, source) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (message_id) DO NOTHING RETURNING id, created_at), \
                 deliveries AS (INSERT INTO webhook_deliveries (webhook_id, notification_id) \
                 SELECT webhooks.webhook_id, stored.id FROM webhooks, stored WHERE webhooks.user_id = $2 \
                 AND (webhooks.kinds = '[]'::jsonb OR webhooks.kinds @> jsonb_build_array($3::int)) \
                 ON CONFLICT (webhook_id, notification_id) DO NOTHING RETURNING 1), \
                 notified AS (SELECT pg_notify($6, stored.id::text || $7) FROM stored) \
                 SELECT stored.id, stored.created_at, (SELECT count(*) FROM deliveries) AS deliveries, \
                 (SELECT count(*) FROM notified) AS notified FROM stored",
                [
                    draft.message_id.clone().into(),
                    draft.user_id.clone().into(),
                    (draft.kind as i16).into(),
                    draft.event_id.clone().into(),
                    draft.source.encode_to_vec().into(),
                    live::CHANNEL.into(),
                    live::payload_suffix(&draft.user_id).into(),
                ],
            ))
            .await?
        else {
            return Ok(None);
        };
        let id: i64 = row.try_get_by("id")?;
        let created_at: chrono::DateTime<chrono::Utc> = row.try_get_by("created_at")?;
        let deliveries: i64 = row.try_get_by("deliveries")?;

        metrics::counter!("notifier_stored_total", "kind" => kind_name(draft.kind).to_ascii_lowercase())
            .increment(1);
        if deliveries > 0 {
            self.deliveries_due.notify_one();
        }
        let notification = Notification {
            notification_id: id as u64,
            user_id: draft.user_id,
            kind: draft.kind as i32,
            event_id: draft.event_id,
            message_id: draft.message_id,
            created_at: Some(service_runtime::bus::timestamp_ms(created_at.timestamp_millis())),
            source: Some(draft.source),
        };
        Ok(Some(notification))
    }

    /// Up to `limit` of `user_id`'s notifications with id > `after_id`, oldest first.
    pub async fn page(&self, user_id: &str, after_id: i64, limit: u32) -> Result<Vec<Notification>, Error> {
        let rows = self
            .db
            .query_all_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                format!("SELECT {COLUMNS} FROM inbox WHERE user_id = $1 AND id > $2 ORDER BY id LIMIT $3"),
                [user_id.into(), after_id.into(), i64::from(limit).into()],
            ))
            .await?;
        rows.iter().map(notification_from_row).collect()
    }
}

/// The short name of a kind, e.g. `BOOKING_CONFIRMED`.
pub fn kind_name(kind: NotificationKind) -> &'static str {
    let name = kind.as_str_name();
    name.strip_prefix("NOTIFICATION_KIND_").unwrap_or(name)
}

/// An inbox row (selected as [`COLUMNS`]) as the API's message.
fn notification_from_row(row: &QueryResult) -> Result<Notification, Error> {
    let id: i64 = row.try_get_by("id")?;
    let kind: i16 = row.try_get_by("kind")?;
    let source: Vec<u8> = row.try_get_by("source")?;
    let created_at: chrono::DateTime<chrono::Utc> = row.try_get_by("created_at")?;
    Ok(Notification {
        notification_id: id as u64,
        user_id: row.try_get_by("user_id")?,
        kind: i32::from(kind),
        event_id: row.try_get_by("event_id")?,
        message_id: row.try_get_by("message_id")?,
        created_at: Some(service_runtime::bus::timestamp_ms(created_at.timestamp_millis())),
        source: Some(EventEnvelope::decode(source.as_slice())?),
    })
}
