//! The consumer that keeps seat maps current: an ephemeral ordered pull consumer over the
//! whole event stream, replayed from the start on every boot.
//!
//! No acks, no durable state: the map is a pure function of the catalogue and the stream,
//! so a fresh replica (or a restarted one) rebuilds it by replaying. Messages are applied
//! one at a time in stream order; the stream sequence applied is published on a `watch`
//! channel (for the catch-up at start) and as the `inventory_stream_sequence` gauge.

use std::{sync::Arc, time::Duration};

use async_nats::jetstream::consumer::{DeliverPolicy, pull::OrderedConfig};
use futures::StreamExt;
use prost::Message;
use service_runtime::{CancellationToken, bus::EventBus};
use ticketing_proto::events::{EventEnvelope, ReleaseReason, event_envelope::Body};
use tokio::sync::watch;
use uuid::Uuid;

use crate::{error::Error, registry::Registry, seatmap::SeatEvent};

/// Pause before re-creating the consumer after an error; keeps a broken NATS from spinning us.
const RETRY_PAUSE: Duration = Duration::from_millis(500);

/// The sequence of the last message in the stream now (0 if empty): the point a new
/// replica must reach before its seat maps are current.
pub async fn stream_head(bus: &EventBus) -> anyhow::Result<u64> {
    let stream = bus.stream().await?;
    Ok(stream.get_info().await?.state.last_sequence)
}

/// Consumes the stream until `stopping` is cancelled, sending each applied sequence on
/// `applied`.
pub async fn run(
    bus: EventBus,
    prefix: String,
    registry: Arc<Registry>,
    applied: watch::Sender<u64>,
    stopping: CancellationToken,
) {
    let mut last = 0u64;
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
            () = stopping.cancelled() => return,
            messages = messages => match messages {
                Ok(messages) => messages,
                Err(error) => {
                    tracing::warn!(error = %format!("{error:#}"), "cannot open the event stream; retrying");
                    if pause(&stopping).await { return; }
                    continue;
                }
            },
        };
        loop {
            let next = tokio::select! {
                () = stopping.cancelled() => {
                    tracing::info!(stream_sequence = last, "seat map consumer stopping");
                    return;
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
                    if !apply(&registry, &envelope, &stopping).await {
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
        }
        if pause(&stopping).await {
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

/// Applies one envelope; other kinds than seat events are ignored. Retries Postgres until it
/// answers (skipping would lose state); false if `stopping` was cancelled meanwhile.
async fn apply(registry: &Registry, envelope: &EventEnvelope, stopping: &CancellationToken) -> bool {
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
