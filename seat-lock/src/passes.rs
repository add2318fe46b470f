//! Ended passes: the durable consumer of admission's `PassEnded` events.
//!
//! Admission ends a pass before its expiry when its holder leaves or buys, and gives the slot
//! to the next in line; the pass's token stays cryptographically valid until it expires. So
//! that active passes never exceed the event's admission capacity, admission writes a
//! `PassEnded` to its Redis outbox in the same script that ends the pass, its relay publishes
//! it (at once), and this consumer records it in seat-lock's Redis as
//! `<prefix>sl:{<event_id>}:ended:<pass_id>` = the latest expiry of the pass's tokens, expiring
//! then (see `store/end_pass.lua`). The hold scripts read that one key in the same atomic step
//! that holds seats and answer `PASS_REVOKED` (`PERMISSION_DENIED`, like every other refused
//! pass: the caller must go back to admission; nothing about the seats changed).
//!
//! Properties:
//! - **No call to admission on the hot path:** one extra `GET` inside the hold script, on the
//!   event's own hash tag (Redis Cluster safe), no extra round trip.
//! - **Delay:** a pass is refused from the moment the event is applied, normally within
//!   milliseconds of the Leave or the purchase; while NATS is down, ends queue in admission's
//!   outbox and in the stream and apply when it returns (durable consumer `seat-lock-passes`,
//!   shared by the replicas, each event applied once; applying it twice is harmless).
//! - **Expiry is not announced:** a pass that expires (including one whose check-in window
//!   passed uncollected, for which no token was ever handed out) is refused by its own
//!   `expires_at_ms` on seat-lock's clock; publishing those ends too would double the events of
//!   a sale for nothing.
//! - **Redis loss:** the records go with seat-lock's Redis; ended passes whose tokens have not
//!   yet expired are accepted again until they expire. Seats stay safe (the hold scripts and
//!   payment's seat guard decide those); only the admission capacity can be exceeded, by the
//!   passes ended in the last pass ttl.
//! - **Pass ids reused** (admission's Redis lost its counters): a record refuses only tokens
//!   expiring no later than the ended pass, so a newer pass with the same id is not refused.

use async_nats::jetstream::consumer::PullConsumer;
use service_runtime::{
    CancellationToken,
    bus::{BusError, EventBus, consume, kind, timestamp_to_ms},
};
use ticketing_proto::events::event_envelope::Body;

use crate::store::Store;

/// The durable consumer's name, shared by all replicas so each `PassEnded` is applied once.
pub const CONSUMER_NAME: &str = "seat-lock-passes";

/// The longest pass id recorded; admission's are decimal counters, far shorter.
const MAX_PASS_ID_LEN: usize = 64;

/// The durable consumer of `PassEnded`, created if missing; made before serving, so a
/// seat-lock that cannot follow ended passes does not start.
pub async fn consumer(bus: &EventBus) -> Result<PullConsumer, BusError> {
    bus.durable_consumer(CONSUMER_NAME, &[kind::PASS_ENDED]).await
}

/// Records every `PassEnded` of `consumer` until `stopping`. A failed Redis write is
/// redelivered.
pub async fn record_ended_passes(store: Store, consumer: PullConsumer, stopping: CancellationToken) {
    consume(consumer, CONSUMER_NAME, stopping, move |event| {
        let store = store.clone();
        async move {
            let Some(Body::PassEnded(ended)) = event.body else { return Ok(()) };
            let Ok(event_id) = uuid::Uuid::parse_str(&ended.event_id) else {
                tracing::warn!(message_id = %event.message_id, "PassEnded with a malformed event id; skipped");
                return Ok(());
            };
            let pass_ok = !ended.pass_id.is_empty()
                && ended.pass_id.len() <= MAX_PASS_ID_LEN
                && ended.pass_id.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-".contains(&b));
            let Some(expires_at) = ended.expires_at.as_ref().filter(|_| pass_ok) else {
                tracing::warn!(message_id = %event.message_id, "PassEnded with a malformed pass; skipped");
                return Ok(());
            };
            let event_id = event_id.to_string();
            let recorded = store.end_pass(&event_id, &ended.pass_id, timestamp_to_ms(expires_at)).await?;
            tracing::debug!(%event_id, pass_id = %ended.pass_id, recorded, "pass ended by admission");
            if recorded {
                metrics::counter!("seat_lock_passes_ended_total").increment(1);
            }
            Ok(())
        }
    })
    .await;
}
