//! The consumer that keeps seat maps current: an ephemeral ordered pull consumer over the
//! event stream, from the snapshots' position on.
//!
//! No acks: the map is a pure function of the catalogue and the stream. A replica starts from
//! the stored snapshots ([`crate::snapshot`]) and replays only the messages after the lowest
//! covered sequence, skipping each event's messages that its snapshot already covers (the
//! whole stream when there is no snapshot). Messages are applied one at a time in stream
//! order; the stream sequence applied is published on a `watch` channel (for the catch-up at
//! start) and as the `inventory_stream_sequence` gauge. Between two messages, the
//! [`Checkpointer`] takes the snapshots, so each agrees with the sequence it records.

use std::{sync::Arc, time::Duration};

use async_nats::jetstream::consumer::{DeliverPolicy, pull::OrderedConfig};
use futures::StreamExt;
use prost::Message;
use service_runtime::{CancellationToken, bus::EventBus};
use ticketing_proto::events::{EventEnvelope, ReleaseReason, event_envelope::Body};
use tokio::sync::watch;
use uuid::Uuid;

use crate::{
    error::Error,
    registry::Registry,
    seatmap::SeatEvent,
    snapshot::{Checkpointer, Resume},
};

/// Pause before re-creating the consumer after an error; keeps a broken NATS from spinning us.
const RETRY_PAUSE: Duration = Duration::from_millis(500);

/// Where the stream stands at start.
#[derive(Debug, Clone, Copy)]
pub struct StreamPosition {
    /// The first sequence still stored (above the last one when the stream is empty).
    pub first: u64,
    /// The sequence of the last message (0 if none was ever stored): the point a new replica
    /// must reach before its seat maps are current.
    pub last: u64,
    /// The stream's creation time in ns: tells a recreated stream, whose sequences start
    /// again, from the one the snapshots were taken on.
    pub epoch: i64,
}

/// The stream's position now.
pub async fn stream_position(bus: &EventBus) -> anyhow::Result<StreamPosition> {
    let info = bus.stream().await?.get_info().await?;
    let epoch = i64::try_from(info.created.unix_timestamp_nanos()).unwrap_or(i64::MAX);
    Ok(StreamPosition { first: info.state.first_sequence, last: info.state.last_sequence, epoch })
}

/// Consumes the stream from `resume` until `stopping` is cancelled, sending each applied
/// sequence on `applied` and taking snapshots through `checkpoints` (a last one on the way
/// out).
pub async fn run(
    bus: EventBus,
    prefix: String,
    registry: Arc<Registry>,
    resume: Resume,
    mut checkpoints: Checkpointer,
    applied: watch::Sender<u64>,
    stopping: CancellationToken,
) {
    let mut last = resume.start_after;
    let mut ticker = tokio::time::interval(checkpoints.interval());
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let deliver_policy = if last == 0 {
            DeliverPolicy::All
        } else {
            DeliverPolicy::ByStartSequence { start_sequence: last + 1 }
        };
        let messages = async {
            let stream = bus.stream().await?;
            let consumer = stream
                .create_consumer(OrderedConfig {
                    filter_subject: format!("{prefix}.>"),
                    deliver_policy,
                    ..Default::default()
                })
                .await?;
            anyhow::Ok(consumer.messages().await?)
        };
        let mut messages = tokio::select! {
            () = stopping.cancelled() => {
                checkpoints.finish(last).await;
                return;
            }
            messages = messages => match messages {
                Ok(messages) => messages,
                Err(error) => {
                    tracing::warn!(error = %format!("{error:#}"), "cannot open the event stream; retrying");
                    if pause(&stopping).await {
                        checkpoints.finish(last).await;
                        return;
                    }
                    continue;
                }
            },
        };
        loop {
            let next = tokio::select! {
                () = stopping.cancelled() => {
                    tracing::info!(stream_sequence = last, "seat map consumer stopping; storing snapshots");
                    checkpoints.finish(last).await;
                    return;
                }
                _ = ticker.tick() => {
                    checkpoints.tick(last);
                    continue;
                }
                next = messages.next() => next,
            };
            let message = match next {
                Some(Ok(message)) => message,
                Some(Err(error)) => {
                    tracing::warn!(%error, stream_sequence = last, "event stream error; re-creating the consumer");
                    break;
                }
                None => break,
            };
            let sequence = match message.info() {
                Ok(info) => info.stream_sequence,
                Err(error) => {
                    tracing::warn!(%error, "message without JetStream metadata; skipped");
                    continue;
                }
            };
            if sequence <= last {
                continue;
            }
            match EventEnvelope::decode(message.payload.clone()) {
                Ok(envelope) => {
                    if !apply(&registry, &envelope, sequence, &resume, &stopping).await {
                        checkpoints.finish(last).await;
                        return;
                    }
                }
                Err(error) => {
                    tracing::error!(subject = %message.subject, %error, sequence, "undecodable event; skipped");
                }
            }
            last = sequence;
            metrics::gauge!("inventory_stream_sequence").set(last as f64);
            let _ = applied.send(last);
            checkpoints.applied(last);
        }
        if pause(&stopping).await {
            checkpoints.finish(last).await;
            return;
        }
    }
}

/// Sleeps [`RETRY_PAUSE`]; true if `stopping` was cancelled meanwhile.
async fn pause(stopping: &CancellationToken) -> bool {
    tokio::select! {
        () = stopping.cancelled() => true,
        () = tokio::time::sleep(RETRY_PAUSE) => false,
    }
}

/// Applies one envelope at stream `sequence`; other kinds than seat events, and seat events
/// that the event's restored snapshot already covers, are ignored. Retries Postgres until it
/// answers (skipping would lose state); false if `stopping` was cancelled meanwhile.
async fn apply(
    registry: &Registry,
    envelope: &EventEnvelope,
    sequence: u64,
    resume: &Resume,
    stopping: &CancellationToken,
) -> bool {
    let (event_id, seat_event) = match &envelope.body {
        Some(Body::SeatsHeld(e)) => (
            &e.event_id,
            SeatEvent::Held {
                hold_id: &e.hold_id,
                zone_id: &e.zone_id,
                seat_ids: &e.seat_ids,
                quantity: e.quantity,
            },
        ),
        Some(Body::SeatsReleased(e)) if e.reason == ReleaseReason::Cancelled as i32 => (
            &e.event_id,
            SeatEvent::Cancelled { hold_id: &e.hold_id, zone_id: &e.zone_id, seat_ids: &e.seat_ids },
        ),
        Some(Body::SeatsReleased(e)) => (
            &e.event_id,
            SeatEvent::Released { hold_id: &e.hold_id, zone_id: &e.zone_id, seat_ids: &e.seat_ids },
        ),
        Some(Body::BookingConfirmed(e)) => (
            &e.event_id,
            SeatEvent::Confirmed {
                hold_id: &e.hold_id,
                zone_id: &e.zone_id,
                seat_ids: &e.seat_ids,
                quantity: e.quantity,
            },
        ),
        _ => return true,
    };
    let Ok(id) = Uuid::parse_str(event_id) else {
        tracing::warn!(message_id = %envelope.message_id, event_id, "seat event with a malformed event id; skipped");
        return true;
    };
    if resume.covered.get(&id).is_some_and(|&covered| sequence <= covered) {
        return true;
    }
    let entry = loop {
        match registry.get(id).await {
            Ok(entry) => break entry,
            Err(Error::EventNotFound(_)) => {
                tracing::warn!(message_id = %envelope.message_id, %id, "seat event for an unknown event; skipped");
                return true;
            }
            Err(error) => {
                tracing::warn!(%error, %id, "cannot load the event of a seat event; retrying");
                if pause(stopping).await {
                    return false;
                }
            }
        }
    };
    entry.apply(|map| map.apply(seat_event));
    metrics::counter!("inventory_events_applied_total").increment(1);
    true
}
