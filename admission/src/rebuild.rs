//! Rebuilding an event's waiting room after Redis lost it, from the event's durable history.
//!
//! What survives a Redis loss: the catalogue (inventory: sale opening, capacity, pass ttl),
//! the shuffle key (configuration, so its commitment), and the `Admitted` and `PassEnded`
//! events the outbox relay published to JetStream. What does not: the queue (who waits, in
//! which order), the rate limits, the outbox entries not yet published, the ended-pass
//! statistics.
//!
//! [`read_history`] reads the `Admitted` and `PassEnded` events of the last pass ttl (a pass
//! issued earlier has expired, and a message is published after its pass was issued, so a
//! live pass's `Admitted` is in that window) and keeps, per user, the newest pass that was
//! neither ended nor expired. Those passes are restored as they were, so their holders keep
//! them and they count against the capacity: active passes never exceed it. A pass is
//! restored with the latest expiry any of its tokens may carry (its checked-in expiry), since
//! the history does not say whether its holder collected it; an uncollected pass thus holds
//! its slot until then, never less. Pass ids and tickets restart above any in the history
//! (and pass ids above Redis time in ms, see `rebuild.lua`), so no id is issued twice.

use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull};
use futures::StreamExt;
use prost::Message as _;
use service_runtime::bus::{EventBus, kind, timestamp_to_ms};
use ticketing_proto::events::{EventEnvelope, event_envelope::Body};

use crate::{
    error::Error,
    store::{Counters, RestoredPass, StoredPass},
};

/// Messages read at most per subject in one rebuild: the `Admitted` events of every event in
/// one pass ttl. Half a million admissions of a flash sale fit many times; beyond it the
/// rebuild fails (UNAVAILABLE stays) rather than restore from a partial history.
pub const MAX_HISTORY_MESSAGES: u64 = 5_000_000;

/// Longest wait for the next message while the consumer still reports pending ones: the
/// server delivers them at once, so silence this long means the read is stuck.
pub const HISTORY_IDLE_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest a whole history read may take; below [`crate::store::REBUILD_LOCK`], so the lock
/// outlives the read.
pub const HISTORY_TIMEOUT: Duration = Duration::from_secs(20);

/// Added to the window read before the pass ttl: covers clock differences between Redis (which
/// stamps passes) and NATS (which stamps messages).
pub const CLOCK_SKEW: Duration = Duration::from_secs(60);

/// The live passes and counters of one event, from its history.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct History {
    pub passes: Vec<RestoredPass>,
    pub counters: Counters,
    /// `Admitted` events of the event read (after dropping duplicates).
    pub admitted: usize,
    /// Passes of the event that a `PassEnded` ended.
    pub ended: usize,
}

/// One admission as the history tells it.
#[derive(Debug, Clone)]
struct Issued {
    user_id: String,
    pass_id: u64,
    /// The latest expiry a token of the pass may carry.
    latest_expiry_ms: i64,
    ticket: u64,
}

/// Collects the history of one event from raw envelopes; separate from the reading so it is
/// tested without a stream.
#[derive(Debug)]
pub struct HistoryCollector {
    event_id: String,
    pass_ttl_ms: i64,
    check_in_window_ms: i64,
    issued: HashMap<u64, Issued>,
    ended: HashSet<u64>,
    counters: Counters,
}

impl HistoryCollector {
    /// A collector for `event_id` (canonical form) whose passes last `pass_ttl_ms` once
    /// collected and `check_in_window_ms` before.
    pub fn new(event_id: &str, pass_ttl_ms: u64, check_in_window_ms: u64) -> Self {
        Self {
            event_id: event_id.to_owned(),
            pass_ttl_ms: i64::try_from(pass_ttl_ms).unwrap_or(i64::MAX),
            check_in_window_ms: i64::try_from(check_in_window_ms).unwrap_or(i64::MAX),
            issued: HashMap::new(),
            ended: HashSet::new(),
            counters: Counters::default(),
        }
    }

    /// Takes one envelope of the stream; other events and kinds are skipped.
    pub fn add(&mut self, envelope: EventEnvelope) {
        match envelope.body {
            Some(Body::Admitted(admitted)) if admitted.event_id == self.event_id => {
                let Ok(pass_id) = admitted.pass_id.parse::<u64>() else { return };
                let expires = admitted.pass_expires_at.as_ref().map_or(0, timestamp_to_ms);
                // The event carries the first expiry (the check-in window's, when shorter);
                // collecting extends the pass to issue + ttl.
                let issued_at = expires.saturating_sub(self.check_in_window_ms.min(self.pass_ttl_ms));
                let latest_expiry_ms = expires.max(issued_at.saturating_add(self.pass_ttl_ms));
                self.counters.max_pass_id = self.counters.max_pass_id.max(pass_id);
                self.counters.max_ticket = self.counters.max_ticket.max(admitted.ticket);
                self.issued.insert(
                    pass_id,
                    Issued { user_id: admitted.user_id, pass_id, latest_expiry_ms, ticket: admitted.ticket },
                );
            }
            Some(Body::PassEnded(ended)) if ended.event_id == self.event_id => {
                if let Ok(pass_id) = ended.pass_id.parse::<u64>() {
                    self.ended.insert(pass_id);
                }
            }
            _ => {}
        }
    }

    /// The passes live at `now_ms`: per user, the newest pass, unless it ended or expired.
    pub fn finish(self, now_ms: i64) -> History {
        let mut newest: HashMap<&str, &Issued> = HashMap::new();
        for issued in self.issued.values() {
            let entry = newest.entry(issued.user_id.as_str()).or_insert(issued);
            if issued.pass_id > entry.pass_id {
                *entry = issued;
            }
        }
        let mut passes: Vec<RestoredPass> = newest
            .into_values()
            .filter(|issued| !self.ended.contains(&issued.pass_id) && issued.latest_expiry_ms > now_ms)
            .map(|issued| RestoredPass {
                user_id: issued.user_id.clone(),
                pass: StoredPass {
                    pass_id: issued.pass_id.to_string(),
                    expires_at_ms: issued.latest_expiry_ms,
                    ticket: issued.ticket,
                },
            })
            .collect();
        passes.sort_by(|a, b| a.pass.ticket.cmp(&b.pass.ticket).then(a.user_id.cmp(&b.user_id)));
        let ended = self.issued.keys().filter(|pass_id| self.ended.contains(pass_id)).count();
        History { passes, counters: self.counters, admitted: self.issued.len(), ended }
    }
}

/// Reads the event's `Admitted` and `PassEnded` events stored since `since_ms` (unix ms)
/// and returns its live passes at `now_ms`. Bounded by [`MAX_HISTORY_MESSAGES`],
/// [`HISTORY_IDLE_TIMEOUT`] and [`HISTORY_TIMEOUT`].
pub async fn read_history(
    bus: &EventBus,
    event_id: &str,
    since_ms: i64,
    now_ms: i64,
    pass_ttl_ms: u64,
    check_in_window_ms: u64,
) -> Result<History, Error> {
    let mut collector = HistoryCollector::new(event_id, pass_ttl_ms, check_in_window_ms);
    let read = async {
        for subject in [kind::ADMITTED, kind::PASS_ENDED] {
            read_subject(bus, &bus.subject(subject), since_ms, &mut collector).await?;
        }
        Ok::<(), Error>(())
    };
    tokio::time::timeout(HISTORY_TIMEOUT, read)
        .await
        .map_err(|_| Error::HistoryUnreadable(format!("the read took longer than {HISTORY_TIMEOUT:?}")))??;
    Ok(collector.finish(now_ms))
}

/// How long the server keeps a history consumer that its reader abandoned (a replica that died
/// mid-read); a finished read deletes its consumer at once.
const HISTORY_CONSUMER_INACTIVE: Duration = Duration::from_secs(30);

/// Feeds every message of `subject` stored since `since_ms` to `collector`, through an
/// ephemeral pull consumer that is deleted afterwards (whatever the outcome), so a rebuild
/// leaves no consumer on the stream behind.
async fn read_subject(
    bus: &EventBus,
    subject: &str,
    since_ms: i64,
    collector: &mut HistoryCollector,
) -> Result<(), Error> {
    let unreadable = |error: &dyn std::fmt::Display| Error::HistoryUnreadable(format!("{subject}: {error}"));
    let start_time = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(since_ms.max(0)) * 1_000_000)
        .map_err(|e| unreadable(&e))?;
    let stream = bus.existing_stream().await.map_err(|e| unreadable(&e))?;
    let mut consumer = stream
        .create_consumer(pull::Config {
            filter_subject: subject.to_owned(),
            deliver_policy: DeliverPolicy::ByStartTime { start_time },
            ack_policy: AckPolicy::None,
            inactive_threshold: HISTORY_CONSUMER_INACTIVE,
            ..Default::default()
        })
        .await
        .map_err(|e| unreadable(&e))?;
    let name = consumer.cached_info().name.clone();
    let read = drain(&mut consumer, collector).await.map_err(|e| unreadable(&e));
    if let Err(error) = stream.delete_consumer(&name).await {
        tracing::debug!(%subject, %error, "cannot delete the history consumer; the server drops it when inactive");
    }
    read
}

/// Reads `consumer` until it has no message pending.
async fn drain(consumer: &mut PullConsumer, collector: &mut HistoryCollector) -> Result<(), String> {
    let mut pending = consumer.info().await.map_err(|e| e.to_string())?.num_pending;
    if pending == 0 {
        return Ok(());
    }
    let mut messages = consumer.messages().await.map_err(|e| e.to_string())?;
    let mut read = 0u64;
    while pending > 0 {
        let message = match tokio::time::timeout(HISTORY_IDLE_TIMEOUT, messages.next()).await {
            Err(_) => return Err(format!("no message for {HISTORY_IDLE_TIMEOUT:?}, {pending} pending")),
            Ok(None) => return Err("the consumer ended before catching up".into()),
            Ok(Some(Err(error))) => return Err(error.to_string()),
            Ok(Some(Ok(message))) => message,
        };
        read += 1;
        if read > MAX_HISTORY_MESSAGES {
            return Err(format!("more than {MAX_HISTORY_MESSAGES} messages"));
        }
        pending = message.info().map_err(|e| e.to_string())?.pending;
        // An undecodable message cannot be one of admission's events; skip it.
        if let Ok(envelope) = EventEnvelope::decode(message.payload.clone()) {
            collector.add(envelope);
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use service_runtime::bus::{envelope, timestamp_ms};
    use ticketing_proto::events::{Admitted, PassEndReason, PassEnded, event_envelope::Body};

    use super::HistoryCollector;

    const TTL: u64 = 600_000;
    const WINDOW: u64 = 60_000;

    fn admitted(
        event: &str,
        user: &str,
        pass_id: u64,
        expires: i64,
        ticket: u64,
    ) -> ticketing_proto::events::EventEnvelope {
        envelope(
            format!("a{pass_id}"),
            Body::Admitted(Admitted {
                event_id: event.into(),
                user_id: user.into(),
                pass_id: pass_id.to_string(),
                pass_expires_at: Some(timestamp_ms(expires)),
                ticket,
            }),
        )
    }

    fn ended(event: &str, user: &str, pass_id: u64) -> ticketing_proto::events::EventEnvelope {
        envelope(
            format!("e{pass_id}"),
            Body::PassEnded(PassEnded {
                event_id: event.into(),
                user_id: user.into(),
                pass_id: pass_id.to_string(),
                reason: PassEndReason::Left as i32,
                expires_at: None,
            }),
        )
    }

    #[test]
    fn the_newest_pass_of_each_user_lives_unless_it_ended_or_expired() {
        let now = 10_000_000;
        let mut history = HistoryCollector::new("e", TTL, WINDOW);
        // Issued at now - 1 s: first expiry now + 59 s, collected expiry now + 599 s.
        history.add(admitted("e", "alice", 1, now + 59_000, 1));
        // Bob left and came back: the old pass ended, the new one lives.
        history.add(admitted("e", "bob", 2, now + 59_000, 2));
        history.add(ended("e", "bob", 2));
        history.add(admitted("e", "bob", 5, now + 60_000, 7));
        // Carol bought: ended. Dave's pass expired even if collected.
        history.add(admitted("e", "carol", 3, now + 59_000, 3));
        history.add(ended("e", "carol", 3));
        history.add(admitted("e", "dave", 4, now - 541_000, 4));
        // Another event's admission changes nothing, not even the counters.
        history.add(admitted("other", "erin", 99, now + 59_000, 99));
        let history = history.finish(now);
        let live: Vec<(&str, &str, i64)> = history
            .passes
            .iter()
            .map(|p| (p.user_id.as_str(), p.pass.pass_id.as_str(), p.pass.expires_at_ms - now))
            .collect();
        assert_eq!(live, vec![("alice", "1", 599_000), ("bob", "5", 600_000)]);
        assert_eq!((history.counters.max_pass_id, history.counters.max_ticket), (5, 7));
        assert_eq!((history.admitted, history.ended), (5, 2));
    }
}
