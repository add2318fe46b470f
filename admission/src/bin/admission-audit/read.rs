//! Reading an event's `Admitted` events from the JetStream stream.

use std::{
    collections::{BTreeMap, btree_map::Entry},
    time::Duration,
};

use admission::fairness::Admission;
use async_nats::jetstream::consumer::{DeliverPolicy, pull::OrderedConfig};
use futures::StreamExt;
use prost::Message as _;
use serde::Serialize;
use service_runtime::bus::{BusError, EventBus, kind};
use ticketing_proto::events::{EventEnvelope, event_envelope::Body};
use uuid::Uuid;

/// Messages read at most. A sale of 500,000 users publishes about that many `Admitted`
/// events (a few more with rejoins); each costs about 100 bytes here, so the bound keeps the
/// tool under half a gigabyte on any stream.
pub const MAX_MESSAGES: u64 = 5_000_000;

/// Longest wait for the next message while the consumer still reports pending ones: the
/// server delivers them at once, so silence this long means the read is stuck.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the stream could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error("cannot read the Admitted events: {0}")]
    Consumer(String),
    #[error("no message for {idle:?} while {pending} were still pending")]
    Stalled { idle: Duration, pending: u64 },
    #[error("the read did not finish within {0:?} (raise --timeout-secs)")]
    Timeout(Duration),
    #[error("more than {MAX_MESSAGES} Admitted messages: too many to audit in one run")]
    TooMany,
}

/// Two `Admitted` events that give one pass id to different users or tickets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PassConflict {
    pub pass_id: u64,
    pub first_user: String,
    pub first_ticket: u64,
    pub second_user: String,
    pub second_ticket: u64,
}

/// The `Admitted` events of one event, as read from the stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reading {
    /// One per pass id, by pass id.
    pub admissions: Vec<Admission>,
    /// Messages read on the `Admitted` subject, of any event.
    pub messages: u64,
    /// Messages of other events, skipped.
    pub other_events: u64,
    /// Repeats of an admission already read (same pass id, user and ticket).
    pub duplicates: u64,
    /// Messages that are not `Admitted` envelopes, or admissions of this event whose pass id
    /// is not a number: they might hide admissions, so the audit cannot call the sale fair.
    pub unreadable: u64,
    pub conflicts: Vec<PassConflict>,
}

/// Collects the admissions of one event from raw stream payloads.
#[derive(Debug)]
pub struct Collector {
    event_id: Uuid,
    by_pass: BTreeMap<u64, Admission>,
    reading: Reading,
}

impl Collector {
    pub fn new(event_id: Uuid) -> Self {
        Self { event_id, by_pass: BTreeMap::new(), reading: Reading::default() }
    }

    /// Takes one message payload from the `Admitted` subject.
    pub fn add(&mut self, payload: &[u8]) {
        self.reading.messages += 1;
        let admitted = match EventEnvelope::decode(payload) {
            Ok(EventEnvelope { body: Some(Body::Admitted(admitted)), .. }) => admitted,
            Ok(_) | Err(_) => {
                self.reading.unreadable += 1;
                return;
            }
        };
        // The service stores event ids in canonical form; compare as UUIDs all the same.
        if Uuid::parse_str(&admitted.event_id).ok() != Some(self.event_id) {
            self.reading.other_events += 1;
            return;
        }
        let Ok(pass_id) = admitted.pass_id.parse::<u64>() else {
            self.reading.unreadable += 1;
            return;
        };
        let admission = Admission { pass_id, user_id: admitted.user_id, ticket: admitted.ticket };
        match self.by_pass.entry(pass_id) {
            Entry::Vacant(slot) => {
                slot.insert(admission);
            }
            Entry::Occupied(first) if *first.get() == admission => self.reading.duplicates += 1,
            Entry::Occupied(first) => self.reading.conflicts.push(PassConflict {
                pass_id,
                first_user: first.get().user_id.clone(),
                first_ticket: first.get().ticket,
                second_user: admission.user_id,
                second_ticket: admission.ticket,
            }),
        }
    }

    /// The reading, admissions ordered by pass id.
    pub fn finish(mut self) -> Reading {
        self.reading.admissions = self.by_pass.into_values().collect();
        self.reading
    }
}

/// Reads every `Admitted` event of `event_id` from the start of the stream until the
/// consumer has no message pending. Bounded by [`MAX_MESSAGES`] and [`IDLE_TIMEOUT`]; the
/// caller bounds the whole.
pub async fn read_admissions(bus: &EventBus, event_id: Uuid) -> Result<Reading, ReadError> {
    let stream = bus.existing_stream().await?;
    let mut consumer = stream
        .create_consumer(OrderedConfig {
            filter_subject: bus.subject(kind::ADMITTED),
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .map_err(|e| ReadError::Consumer(e.to_string()))?;
    let mut pending = consumer.info().await.map_err(|e| ReadError::Consumer(e.to_string()))?.num_pending;
    let mut collector = Collector::new(event_id);
    if pending == 0 {
        return Ok(collector.finish());
    }
    let mut messages = consumer.messages().await.map_err(|e| ReadError::Consumer(e.to_string()))?;
    while pending > 0 {
        let message = match tokio::time::timeout(IDLE_TIMEOUT, messages.next()).await {
            Err(_) => return Err(ReadError::Stalled { idle: IDLE_TIMEOUT, pending }),
            Ok(None) => return Err(ReadError::Consumer("the consumer ended before catching up".into())),
            Ok(Some(Err(error))) => return Err(ReadError::Consumer(error.to_string())),
            Ok(Some(Ok(message))) => message,
        };
        if collector.reading.messages >= MAX_MESSAGES {
            return Err(ReadError::TooMany);
        }
        pending = message.info().map_err(|e| ReadError::Consumer(e.to_string()))?.pending;
        collector.add(&message.payload);
    }
    Ok(collector.finish())
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used)]
    use service_runtime::bus::envelope;
    use ticketing_proto::events::{Admitted, SeatsHeld};

    use super::*;

    pub(crate) fn payload(event_id: &str, user: &str, pass_id: &str, ticket: u64) -> Vec<u8> {
        let admitted = Admitted {
            event_id: event_id.into(),
            user_id: user.into(),
            pass_id: pass_id.into(),
            pass_expires_at: None,
            ticket,
        };
        envelope(format!("admitted:{event_id}:{user}:{pass_id}"), Body::Admitted(admitted)).encode_to_vec()
    }

    #[test]
    fn the_collector_skips_other_events_counts_repeats_once_and_names_conflicts() {
        let event = Uuid::new_v4();
        let id = event.to_string();
        let mut collector = Collector::new(event);
        collector.add(&payload(&id, "ann", "2", 7));
        collector.add(&payload(&id.to_uppercase(), "bob", "1", 3));
        collector.add(&payload(&id, "ann", "2", 7));
        collector.add(&payload(&Uuid::new_v4().to_string(), "eve", "1", 1));
        collector.add(&payload(&id, "eve", "2", 1));
        collector.add(&payload(&id, "mallory", "not-a-number", 1));
        collector.add(b"\xff not protobuf");
        let held = SeatsHeld { event_id: id.clone(), ..Default::default() };
        collector.add(&envelope("held", Body::SeatsHeld(held)).encode_to_vec());
        let reading = collector.finish();
        assert_eq!(reading.messages, 8);
        assert_eq!(
            reading.admissions,
            vec![
                Admission { pass_id: 1, user_id: "bob".into(), ticket: 3 },
                Admission { pass_id: 2, user_id: "ann".into(), ticket: 7 },
            ]
        );
        assert_eq!((reading.duplicates, reading.other_events, reading.unreadable), (1, 1, 3));
        assert_eq!(reading.conflicts.len(), 1);
        assert_eq!(
            (reading.conflicts[0].first_user.as_str(), reading.conflicts[0].second_user.as_str()),
            ("ann", "eve")
        );
    }
}
