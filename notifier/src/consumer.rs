//! Turns domain events from JetStream into inbox notifications.
//!
//! The durable consumer `notifier` takes the whole prefix and skips what users need not hear
//! about (seats held, seats released by the user). A message is acknowledged only after its
//! notification is committed, so a crash between the two redelivers it, and the inbox's
//! unique `message_id` makes that redelivery harmless.

use std::time::Duration;

use async_nats::jetstream::consumer::PullConsumer;
use service_runtime::{
    CancellationToken,
    bus::{self, kind},
};
use ticketing_proto::{
    events::{EventEnvelope, ReleaseReason, event_envelope::Body},
    v1::NotificationKind,
};

use crate::inbox::{Draft, Inbox};

/// The durable consumer's name, shared by every replica so each event is handled once.
pub const DURABLE: &str = "notifier";

/// The event kinds the notifier listens to.
pub const KINDS: &[&str] = &[
    kind::ADMITTED,
    kind::SEATS_RELEASED,
    kind::BOOKING_CONFIRMED,
    kind::PAYMENT_FAILED,
    kind::REFUNDED,
    kind::BOOKING_CANCELLED,
];

/// What notification `envelope` becomes, if any.
pub fn classify(envelope: &EventEnvelope) -> Option<Draft> {
    let (kind, user_id, event_id) = match envelope.body.as_ref()? {
        Body::Admitted(e) => (NotificationKind::Admitted, &e.user_id, &e.event_id),
        Body::SeatsReleased(e) if e.reason == ReleaseReason::Expired as i32 => {
            (NotificationKind::HoldExpired, &e.user_id, &e.event_id)
        }
        // Released by the user, who knows; a cancelled booking's seats are told by
        // BookingCancelled; held seats are not news.
        Body::SeatsReleased(_) | Body::SeatsHeld(_) => return None,
        // Admission ending a pass the user gave back or used is seat-lock's business.
        Body::PassEnded(_) => return None,
        Body::BookingConfirmed(e) => (NotificationKind::BookingConfirmed, &e.user_id, &e.event_id),
        Body::PaymentFailed(e) => (NotificationKind::PaymentFailed, &e.user_id, &e.event_id),
        Body::Refunded(e) => (NotificationKind::Refunded, &e.user_id, &e.event_id),
        Body::BookingCancelled(e) => (NotificationKind::BookingCancelled, &e.user_id, &e.event_id),
    };
    Some(Draft {
        message_id: envelope.message_id.clone(),
        user_id: user_id.clone(),
        kind,
        event_id: event_id.clone(),
        source: envelope.clone(),
    })
}

/// Stores one event's notification. Ok means committed (or nothing to store), so it may be acked.
pub async fn handle(inbox: &Inbox, envelope: EventEnvelope) -> anyhow::Result<()> {
    let Some(draft) = classify(&envelope) else {
        return Ok(());
    };
    if draft.message_id.is_empty() || draft.user_id.is_empty() {
        // Cannot be deduplicated or addressed; no redelivery will fix it.
        tracing::warn!(message_id = %draft.message_id, "event without message_id or user_id; skipped");
        return Ok(());
    }
    match inbox.store(draft).await? {
        Some(n) => tracing::debug!(notification_id = n.notification_id, "notification stored"),
        None => tracing::debug!(message_id = %envelope.message_id, "redelivered event; already stored"),
    }
    Ok(())
}

/// How often the consumer's lag is read: a few times per Prometheus scrape interval, one
/// `CONSUMER.INFO` request to NATS per replica each time.
pub const LAG_POLL_INTERVAL: Duration = Duration::from_secs(5);

/// Publishes `notifier_consumer_lag_messages` every [`LAG_POLL_INTERVAL`] until `stopping`:
/// the durable consumer's messages not yet delivered (`num_pending`, of the subjects it
/// takes) plus those delivered but not yet acknowledged (`num_ack_pending`), so a stalled
/// handler shows as lag too. The consumer is shared, so every replica reports the same
/// figure; dashboards take the max.
pub async fn lag_loop(consumer: PullConsumer, stopping: CancellationToken) {
    let mut ticker = tokio::time::interval(LAG_POLL_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stopping.cancelled() => return,
            _ = ticker.tick() => {}
        }
        match consumer.get_info().await {
            Ok(info) => {
                let lag = info.num_pending.saturating_add(info.num_ack_pending as u64);
                metrics::gauge!("notifier_consumer_lag_messages").set(lag as f64);
            }
            Err(error) => tracing::debug!(%error, "cannot read the consumer's info; lag not updated"),
        }
    }
}

/// Events stored at once: each waits on its own commit, so one at a time capped the consumer
/// at one commit's latency per event and it fell thousands of events behind in a full sale.
/// Below the service's pool of Postgres connections, which Subscribe and the webhooks share.
pub const PARTITIONS: usize = 8;

/// Consumes events until `stopping` is cancelled, [`PARTITIONS`] at a time; one user's events
/// are stored one after another in stream order, so their notifications keep that order.
pub async fn run(consumer: PullConsumer, inbox: Inbox, stopping: CancellationToken) {
    bus::consume_partitioned(consumer, DURABLE, stopping, PARTITIONS, partition_key, |envelope| {
        let inbox = inbox.clone();
        async move { handle(&inbox, envelope).await }
    })
    .await;
}

/// The partition of an event: its user's, so a user's notifications are stored in order.
fn partition_key(envelope: &EventEnvelope) -> u64 {
    use std::hash::{Hash, Hasher};
    let user = match envelope.body.as_ref() {
        Some(Body::Admitted(e)) => e.user_id.as_str(),
        Some(Body::SeatsHeld(e)) => e.user_id.as_str(),
        Some(Body::SeatsReleased(e)) => e.user_id.as_str(),
        Some(Body::BookingConfirmed(e)) => e.user_id.as_str(),
        Some(Body::PaymentFailed(e)) => e.user_id.as_str(),
        Some(Body::Refunded(e)) => e.user_id.as_str(),
        Some(Body::BookingCancelled(e)) => e.user_id.as_str(),
        Some(Body::PassEnded(e)) => e.user_id.as_str(),
        None => "",
    };
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    user.hash(&mut hasher);
    hasher.finish()
}
