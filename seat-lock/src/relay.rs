//! Background loops: the sweeper ends expired holds, the relay publishes the outbox.
//!
//! Both visit every event in `<prefix>sl:events`. The relay publishes each outbox fact with
//! a deterministic message id (`held:<hold>` / `released:<hold>`; a hold is released at most
//! once, whether it ended unsold or was sold and returned), then removes it: a crash between
//! the two only re-publishes, and JetStream drops the duplicate.

use std::time::Duration;

use service_runtime::{
    CancellationToken,
    bus::{EventBus, envelope, timestamp_ms},
};
use ticketing_proto::events::{ReleaseReason, SeatsHeld, SeatsReleased, event_envelope::Body};

use crate::store::Store;

/// Calls `visit` for every known event each `interval`, until `stopping`. `task` names the
/// loop in logs.
async fn every_event<F, Fut>(
    store: &Store,
    interval: Duration,
    stopping: &CancellationToken,
    task: &str,
    mut visit: F,
) where
    F: FnMut(String) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stopping.cancelled() => return,
            _ = ticker.tick() => {}
        }
        match store.known_events().await {
            Ok(events) => {
                for event_id in events {
                    visit(event_id).await;
                }
            }
            Err(error) => tracing::warn!(%error, task, "cannot list events"),
        }
    }
}

/// Ends expired holds of every known event each `interval`, until `stopping`.
pub async fn sweep_loop(store: Store, interval: Duration, stopping: CancellationToken) {
    every_event(&store, interval, &stopping, "sweeper", |event_id| {
        let store = &store;
        async move {
            match store.sweep(&event_id).await {
                Ok(0) => {}
                Ok(ended) => {
                    tracing::debug!(%event_id, ended, "expired holds ended");
                    metrics::counter!("seat_lock_expired_holds_total").increment(ended.unsigned_abs());
                }
                Err(error) => tracing::warn!(%event_id, %error, "sweep failed"),
            }
        }
    })
    .await;
}

/// Publishes the outbox of every known event each `interval`, until `stopping`.
pub async fn relay_loop(store: Store, bus: EventBus, interval: Duration, stopping: CancellationToken) {
    every_event(&store, interval, &stopping, "relay", |event_id| {
        let (store, bus) = (&store, &bus);
        async move {
            if let Err(error) = relay_event(store, bus, &event_id).await {
                tracing::warn!(%event_id, error = %format!("{error:#}"), "outbox relay failed; retrying next round");
            }
        }
    })
    .await;
}

/// Publishes one batch of the event's outbox, in order, and removes what was published.
async fn relay_event(store: &Store, bus: &EventBus, event_id: &str) -> anyhow::Result<()> {
    let entries = store.outbox(event_id).await?;
    if entries.is_empty() {
        return Ok(());
    }
    let mut done = Vec::with_capacity(entries.len());
    let mut failure = None;
    for entry in entries {
        match publish_fact(store, bus, event_id, &entry).await {
            Ok(()) => done.push(entry),
            Err(error) => {
                failure = Some(error);
                break;
            }
        }
    }
    if !done.is_empty() {
        metrics::counter!("seat_lock_events_published_total").increment(done.len() as u64);
        store.ack(event_id, done).await?;
    }
    failure.map_or(Ok(()), Err)
}

async fn publish_fact(store: &Store, bus: &EventBus, event_id: &str, entry: &str) -> anyhow::Result<()> {
    let mut parts = entry.split('|');
    let (kind, hold_id, reason) = (parts.next(), parts.next(), parts.next());
    let Some(hold_id) = hold_id else {
        tracing::error!(%event_id, %entry, "malformed outbox entry dropped");
        return Ok(());
    };
    let Some(hold) = store.hold_fields(event_id, hold_id).await? else {
        tracing::warn!(%event_id, %hold_id, "outbox names a hold that no longer exists; dropped");
        return Ok(());
    };
    let envelope = match kind {
        Some("held") => envelope(
            format!("held:{hold_id}"),
            Body::SeatsHeld(SeatsHeld {
                event_id: event_id.to_owned(),
                user_id: hold.user_id,
                hold_id: hold_id.to_owned(),
                zone_id: hold.zone_id,
                seat_ids: hold.seat_ids,
                quantity: hold.quantity,
                expires_at: Some(timestamp_ms(hold.expires_at_ms)),
            }),
        ),
        Some("released") => {
            let reason = match reason {
                Some("EXPIRED") => ReleaseReason::Expired,
                Some("CANCELLED") => ReleaseReason::Cancelled,
                _ => ReleaseReason::Released,
            };
            envelope(
                format!("released:{hold_id}"),
                Body::SeatsReleased(SeatsReleased {
                    event_id: event_id.to_owned(),
                    user_id: hold.user_id,
                    hold_id: hold_id.to_owned(),
                    zone_id: hold.zone_id,
                    seat_ids: hold.seat_ids,
                    quantity: hold.quantity,
                    reason: reason as i32,
                }),
            )
        }
        _ => {
            tracing::error!(%event_id, %entry, "unknown outbox entry dropped");
            return Ok(());
        }
    };
    bus.publish(&envelope).await?;
    Ok(())
}
