//! The outbox relay: publishes each event's Redis outbox (the users a tick admitted, the
//! passes that ended early) to JetStream as `Admitted` and `PassEnded` events, exactly once.

use std::{sync::Arc, time::Duration};

use futures::StreamExt;
use service_runtime::bus::{envelope, timestamp_ms};
use ticketing_proto::events::{Admitted, EventEnvelope, PassEndReason, PassEnded, event_envelope::Body};

use super::Controller;
use crate::store::{AdmittedUser, EndReason, EndedPass};

/// Events (Admitted, PassEnded) published at once; JetStream acks each publish, so a batch of
/// a thousand admissions is published in a few round trips instead of a thousand.
const PUBLISH_CONCURRENCY: usize = 256;

/// Outbox entries a relay takes at once, and publishes at once: an entry holds one tick's
/// admissions (at most [`crate::store::MAX_ADMIT_PER_TICK`]) or one pass's end, so this bounds
/// the events a relay holds in memory, and lets the ends of a crowd leaving after a sell-out
/// (one entry each) go out [`PUBLISH_CONCURRENCY`] at a time rather than a few per round trip.
const RELAY_BATCH: usize = 128;

/// How long an outbox entry taken by a relay may stay unpublished before another relay (or
/// the same one) takes it over: long enough that a busy relay publishing a thousand events
/// is not raced, short enough that Admitted events of a dead replica arrive seconds late.
const RELAY_STALLED: Duration = Duration::from_secs(10);

impl Controller {
    /// Starts a relay of the event's outbox on this replica unless one is running. The tick
    /// starts it when the outbox has entries; Leave and a purchase start it at once after
    /// ending a pass, so seat-lock hears of it within a publish, not a tick.
    pub fn start_relay(self: &Arc<Self>, event_id: &str) {
        let mut relaying = self.relaying.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if relaying.insert(event_id.to_owned()) {
            let (controller, event_id) = (self.clone(), event_id.to_owned());
            self.background.spawn("admission-relay", async move {
                controller.relay(&event_id).await;
                controller.relaying.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).remove(&event_id);
            });
        }
    }

    /// Publishes the event's outbox as `Admitted` and `PassEnded` events until it is empty, or
    /// until an entry cannot be published (NATS down): that entry stays pending and is taken
    /// over, by this replica or another, [`RELAY_STALLED`] later. An entry is deleted only
    /// after JetStream stored every event in it; a retry republishes the same message ids,
    /// which JetStream drops as duplicates, so each admission and each end is announced
    /// exactly once.
    async fn relay(&self, event_id: &str) {
        let stalled_ms = RELAY_STALLED.as_millis() as u64;
        loop {
            let entries = match self
                .store
                .take_outbox(event_id, self.store.replica_id(), stalled_ms, RELAY_BATCH)
                .await
            {
                Ok(entries) if entries.is_empty() => return,
                Ok(entries) => entries,
                Err(error) => {
                    tracing::warn!(%event_id, error = %error, "cannot read the Admitted outbox");
                    return;
                }
            };
            let taken = entries.len();
            // Every event of the batch at once, each tagged with its entry.
            let mut events: Vec<(usize, EventEnvelope)> = Vec::new();
            for (index, entry) in entries.iter().enumerate() {
                events.extend(entry.admitted.iter().map(|user| (index, admitted_event(event_id, user))));
                events.extend(entry.ended.iter().map(|pass| (index, pass_ended_event(event_id, pass))));
            }
            let mut published = futures::stream::iter(events)
                .map(|(index, event)| async move { (index, self.bus.publish(&event).await) })
                .buffer_unordered(PUBLISH_CONCURRENCY);
            let mut failed = vec![false; taken];
            let mut first_error = None;
            while let Some((index, result)) = published.next().await {
                if let Err(error) = result {
                    failed[index] = true;
                    first_error.get_or_insert(error);
                }
            }
            drop(published);
            let done: Vec<String> = entries
                .into_iter()
                .zip(&failed)
                .filter(|(_, failed)| !**failed)
                .map(|(entry, _)| entry.id)
                .collect();
            if let Some(error) = first_error {
                tracing::warn!(
                    %event_id, entries = taken - done.len(), error = %error, retry_in = ?RELAY_STALLED,
                    "cannot publish admission events; they stay in the outbox"
                );
            }
            if !done.is_empty() {
                metrics::counter!("admission_outbox_published_total", "event_id" => event_id.to_owned())
                    .increment(done.len() as u64);
                if let Err(error) = self.store.outbox_done(event_id, &done).await {
                    // Published but not deleted: taken over later and republished as duplicates.
                    tracing::warn!(%event_id, error = %error, "cannot delete published outbox entries");
                    return;
                }
            }
            if done.len() < taken {
                return;
            }
        }
    }
}

/// The `Admitted` event of an admission; its message id is the same on every retry.
fn admitted_event(event_id: &str, user: &AdmittedUser) -> EventEnvelope {
    let message_id = format!("admitted:{event_id}:{}:{}", user.user_id, user.pass.pass_id);
    envelope(
        message_id,
        Body::Admitted(Admitted {
            event_id: event_id.to_owned(),
            user_id: user.user_id.clone(),
            pass_id: user.pass.pass_id.clone(),
            pass_expires_at: Some(timestamp_ms(user.pass.expires_at_ms)),
            ticket: user.pass.ticket,
        }),
    )
}

/// The `PassEnded` event of a pass ended early; its message id is the same on every retry.
fn pass_ended_event(event_id: &str, pass: &EndedPass) -> EventEnvelope {
    let message_id = format!("pass-ended:{event_id}:{}:{}", pass.user_id, pass.pass_id);
    let reason = match pass.reason {
        EndReason::Left => PassEndReason::Left,
        EndReason::Bought => PassEndReason::Bought,
        EndReason::Abandoned => PassEndReason::Abandoned,
    };
    envelope(
        message_id,
        Body::PassEnded(PassEnded {
            event_id: event_id.to_owned(),
            user_id: pass.user_id.clone(),
            pass_id: pass.pass_id.clone(),
            reason: reason as i32,
            expires_at: Some(timestamp_ms(pass.expires_at_ms)),
        }),
    )
}
