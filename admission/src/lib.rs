//! Admission: the virtual waiting room of the ticketing mesh.
//!
//! Parts and how a request flows through them:
//! - [`service`]: the gRPC `AdmissionService`. Every request is validated (event UUID, user
//!   id), the event is looked up in the [`catalog`] (inventory's `GetEvent`, cached for good:
//!   events are immutable), then one Lua script in the [`store`] answers it.
//! - [`store`]: Redis. `Join` takes a ticket from `INCR` (so join order is Redis's, the same
//!   for every replica), rate-limits per user and is idempotent; the queue is a ZSET by score
//!   (pre-queue tier first, then post-opening joiners by ticket); passes live in a ZSET by
//!   expiry.
//! - [`controller`]: on every replica, a loop ticks each event when its `admission_tick_ms`
//!   is due. At the sale's opening it runs the opening step (seal, keyed shuffle, open);
//!   after that one script drops expired passes and admits the head of the queue up to
//!   `capacity − active passes`, under a per-tick lease so replicas do not double-tick.
//!   The tick writes the users it admits to the event's Redis outbox in the same atomic step,
//!   and a relay task publishes them as `Admitted` events (JetStream drops the duplicates of
//!   a retry), so a crash or a NATS outage delays them but loses none. Every tick refreshes
//!   the per-event "now serving" view that `WatchQueue` streams read without calling Redis.
//! - [`fairness`]: the keyed shuffle and the functions that audit it.
//! - [`audit`]: the `admission-audit` tool, which reads an event's `Admitted` events from
//!   the stream and runs the fairness audit on them.
//! - [`app`]: wiring, plus the durable `admission` consumer of `BookingConfirmed` that frees
//!   the buyer's slot.
//!
//! Pass tokens are not stored: any replica re-signs the same token from the stored pass id
//! and expiry with the [`ticketing_proto::pass::PassSigner`].
//!
//! # Fairness guarantees
//! - **After opening, first come, first served.** The order is the Redis `INCR` ticket of
//!   the first Join, identical on every replica; admission (pass ids) follows it with no
//!   inversion. Rejoining keeps the place; leaving gives it up.
//! - **Before opening, a fair shuffle.** Everyone who joined before the sale opened (Redis
//!   time) is placed, at opening, in the order of `HMAC-SHA256(event_key, user_id)`: hammering
//!   Join early gains nothing, and nobody (user or replica) can predict or steer the order
//!   without the key. All of them go before anyone who joined after opening.
//! - **Atomic opening.** The first Join at or after `sale_opens_at`, or the controller,
//!   whichever is first, *seals* the pre-queue in one script, recording `sealed_ticket`: a
//!   user is in the pre-queue exactly when their ticket is `<= sealed_ticket`. Nobody is
//!   admitted until the shuffle has been applied and the event marked open. The shuffle is
//!   deterministic, so a replica dying mid-opening, or two replicas opening at once, yields
//!   the same order.
//! - **Capacity is never exceeded,** not even to make up for no-shows. Instead a pass first
//!   lasts only `CHECK_IN_WINDOW_MS`; when its holder collects it (any Join, GetQueueStatus
//!   or WatchQueue answer carrying it) it is extended to the full pass ttl under the same pass
//!   id. A no-show's slot thus goes to the next in line after the window, not after the whole
//!   ttl. The share of passes that expired unused is exported as `admission_no_show_share`.
//!
//! # Auditing an opening
//! The event key is `HMAC-SHA256(SHUFFLE_KEY, "admission-shuffle:" + event_id)` (event id in
//! lowercase UUID form). It reveals nothing about `SHUFFLE_KEY` or other events.
//! 1. Before the sale opens, publish the commitment `SHA-256(event_key)`
//!    ([`fairness::EventShuffleKey::commitment`]); the service records the same value in the
//!    event's `opening` record (`key_commitment`) and logs it when it shuffles.
//! 2. After the sale, publish the event key ([`fairness::EventShuffleKey::to_hex`]), the
//!    `sealed_ticket` from the `opening` record and the admissions (`Admitted` events: user,
//!    pass id, ticket).
//! 3. Anyone checks: SHA-256 of the key equals the commitment; [`fairness::audit_admissions`]
//!    accepts the admissions (first admission per user; pre-queue users, ticket <=
//!    `sealed_ticket`, all before later joiners; pre-queue users in key order; later joiners
//!    in ticket order). An operator with access to the stream runs both checks with the
//!    `admission-audit` binary ([`audit`]):
//!    ```text
//!    admission-audit --event-id "$EVENT_ID" --event-key "$EVENT_KEY" \
//!        --sealed-ticket "$SEALED_TICKET" --commitment "$COMMITMENT"    # NATS_URL, NATS_PREFIX
//!    ```
//!    It reads every `Admitted` event of the event from the stream and exits 0 when the
//!    opening was fair, 1 with the first mismatch (index, expected, found) when not. Without
//!    this crate:
//!    ```text
//!    printf 'admission-shuffle:%s' "$EVENT_ID" | openssl dgst -sha256 -hmac "$SHUFFLE_KEY"      # event key
//!    printf %s "$USER_ID" | openssl dgst -sha256 -mac HMAC -macopt hexkey:"$EVENT_KEY"         # user's digest
//!    ```
//!    A user's score is the first 12 hex digits (6 bytes) of their digest; the pre-queue is
//!    served by ascending score, ties by user id (bytes). Users who left are simply absent:
//!    the order of the others does not change.
#![forbid(unsafe_code)]

pub mod app;
pub mod audit;
pub mod catalog;
pub mod config;
pub mod controller;
pub mod error;
pub mod fairness;
pub mod service;
pub mod store;

pub use app::App;
pub use config::Config;
