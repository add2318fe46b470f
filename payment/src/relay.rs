//! The outbox relay: publishes committed events to JetStream, then deletes them.
//!
//! Rows are claimed with `FOR UPDATE SKIP LOCKED`, so replicas relay side by side without
//! publishing the same row at once. A row is deleted only after JetStream acknowledged it;
//! a crash in between publishes it again with the same `Nats-Msg-Id`, which JetStream drops
//! as a duplicate within its window. While NATS is down the rows stay and are retried.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use prost::Message;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbErr, TransactionTrait};
use service_runtime::{
    CancellationToken,
    bus::{EventBus, kind_of},
};
use ticketing_proto::events::EventEnvelope;
use tokio::sync::Notify;

use crate::{error::Error, store::sql};

/// Rows published per transaction: bounds the time row locks are held and the memory used.
pub const RELAY_BATCH: i64 = 100;
/// Longest pause between attempts while NATS or Postgres keeps failing.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How often `payment_outbox_pending` is counted.
const COUNT_EVERY: Duration = Duration::from_secs(1);

/// Queues `event` in the outbox on `db` (a transaction the caller commits with the state the
/// event announces). A message id already queued is kept once.
pub async fn enqueue(db: &impl ConnectionTrait, event: &EventEnvelope) -> Result<(), DbErr> {
    let kind = kind_of(event).ok_or_else(|| DbErr::Custom("an outbox event needs a body".into()))?;
    db.execute_raw(sql(
        "INSERT INTO outbox (message_id, kind, payload) VALUES ($1, $2, $3) ON CONFLICT (message_id) DO NOTHING",
        [event.message_id.as_str().into(), kind.into(), event.encode_to_vec().into()],
    ))
    .await?;
    Ok(())
}

/// Moves outbox rows to the event bus.
pub struct OutboxRelay {
    db: DatabaseConnection,
    bus: EventBus,
    ready: Arc<Notify>,
    interval: Duration,
}

impl OutboxRelay {
    /// A relay woken by `ready` (after each commit) and every `interval` otherwise.
    pub fn new(db: DatabaseConnection, bus: EventBus, ready: Arc<Notify>, interval: Duration) -> Self {
        Self { db, bus, ready, interval }
    }

    /// Relays until `stopping` is cancelled.
    pub async fn run(self, stopping: CancellationToken) {
        let mut backoff = self.interval;
        let mut counted: Option<Instant> = None;
        loop {
            let pause = match self.drain().await {
                Ok(()) => {
                    backoff = self.interval;
                    self.interval
                }
                Err(error) => {
                    tracing::warn!(error = %format!("{error:#}"), retry_in_ms = backoff.as_millis() as u64, "outbox relay failed; rows stay for the next attempt");
                    let pause = backoff;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    pause
                }
            };
            // Counted on a clock of its own, also while publishing fails (that is when the
            // outbox grows), and not after every drain: under load the relay drains after
            // nearly every commit, and a count reads the whole outbox.
            if counted.is_none_or(|at| at.elapsed() >= COUNT_EVERY) {
                counted = Some(Instant::now());
                if let Err(error) = self.count_pending().await {
                    tracing::warn!(error = %format!("{error:#}"), "cannot count the outbox");
                }
            }
            tokio::select! {
                () = stopping.cancelled() => return,
                () = self.ready.notified() => {}
                () = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// Publishes batches until the outbox is empty.
    async fn drain(&self) -> Result<(), Error> {
        while self.relay_batch().await? == RELAY_BATCH as usize {}
        Ok(())
    }

    /// Sets `payment_outbox_pending` to the rows waiting in the outbox.
    async fn count_pending(&self) -> Result<(), Error> {
        let pending = self
            .db
            .query_one_raw(sql("SELECT count(*) AS pending FROM outbox", []))
            .await?
            .map(|row| row.try_get::<i64>("", "pending"))
            .transpose()?
            .unwrap_or(0);
        metrics::gauge!("payment_outbox_pending").set(pending as f64);
        Ok(())
    }

    /// One transaction: claim, publish, delete what was published. Returns how many rows it
    /// claimed; fails (after deleting what did get through) when a publish fails.
    async fn relay_batch(&self) -> Result<usize, Error> {
        let txn = self.db.begin().await?;
        let rows = txn
            .query_all_raw(sql(
                "SELECT id, message_id, payload FROM outbox ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
                [RELAY_BATCH.into()],
            ))
            .await?;
        let claimed = rows.len();
        let mut done: Vec<i64> = Vec::with_capacity(claimed);
        let mut publishing = Vec::with_capacity(claimed);
        for row in rows {
            let id: i64 = row.try_get("", "id")?;
            let message_id: String = row.try_get("", "message_id")?;
            let payload: Vec<u8> = row.try_get("", "payload")?;
            match EventEnvelope::decode(payload.as_slice()) {
                Ok(envelope) => publishing.push((id, envelope)),
                Err(error) => {
                    // Nothing a retry can fix; keep the relay moving.
                    tracing::error!(%message_id, %error, "undecodable outbox row; dropping it");
                    done.push(id);
                }
            }
        }
        // The whole batch is in flight at once: one round of acks instead of one per row.
        // Each event stands alone (one per payment), so their order does not matter.
        let published =
            futures::future::join_all(publishing.iter().map(|(_, envelope)| self.bus.publish(envelope)))
                .await;
        let mut failure = None;
        for ((id, _), result) in publishing.iter().zip(published) {
            match result {
                Ok(()) => done.push(*id),
                Err(error) => failure = Some(Error::Publish(error)),
            }
        }
        if !done.is_empty() {
            let ids = done.iter().map(i64::to_string).collect::<Vec<_>>().join(",");
            txn.execute_unprepared(&format!("DELETE FROM outbox WHERE id IN ({ids})")).await?;
        }
        txn.commit().await?;
        match failure {
            Some(error) => Err(error),
            None => Ok(claimed),
        }
    }
}
