//! Admission: the virtual waiting room of the ticketing mesh.
//!
//! Parts and how a request flows through them:
//! - [`service`]: the gRPC `AdmissionService`. Every request is validated (event UUID, user
//!   id), the event is looked up in the [`catalogue`] (inventory's `GetEvent`, cached for good:
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
//! - [`rebuild`]: after Redis lost an event's state (its readiness marker is missing once the
//!   sale has opened), the scripts answer "not ready", requests wait up to 3 s and then answer
//!   `UNAVAILABLE` `QUEUE_REBUILDING`, and one replica (under a Redis lock) rebuilds the opening
//!   record, the live passes and the counters from the event's `Admitted` / `PassEnded`
//!   history on JetStream. Waiting users lose their place and join again; pass holders keep
//!   their passes, which still count against the capacity.
//! - [`fairness`]: the keyed shuffle and the functions that audit it.
//! - `src/bin/admission-audit/`: the operator's `admission-audit` command (not part of this
//!   library), which reads an event's `Admitted` events from the stream and runs the
//!   fairness audit on them.
//! - [`app`]: wiring, plus the durable `admission` consumer of `BookingConfirmed` that frees
//!   the buyer's slot.
//!
//! Pass tokens are not stored: any replica re-signs the same token from the stored pass id
//! and expiry with the [`ticketing_proto::pass::PassSigner`] (Ed25519, `PASS_SIGNING_KEYS`;
//! signatures are deterministic, so every replica hands out the same token). Seat-lock holds
//! only the public keys (`PASS_VERIFY_KEYS`) and cannot mint a pass.
//!
//! # Identity
//! Every RPC acts for the caller's verified bearer-token subject
//! (`service_runtime::auth::acting_user`); the `user_id` fields are optional and, when set,
//! must equal the subject (else `PERMISSION_DENIED`, `USER_MISMATCH`). The queue place, the
//! Join rate limit and the pass are the subject's, so a pass is only ever answered to its
//! holder.
//!
//! # Ending passes
//! A pass token stays cryptographically valid until its `expires_at_ms`, but admission can
//! end the pass earlier and give its slot to the next in line: on `Leave`, and when its
//! holder bought (`BookingConfirmed`). So that active passes never exceed the event's
//! capacity, seat-lock must refuse such a pass from then on:
//! 1. `leave.lua` / `release.lua` drop the pass and, in the same atomic script, append
//!    `user → end:<left|bought>:pass_id:expires_at_ms` to the event's Redis outbox, the one
//!    that carries `Admitted` (so a crash loses no end); `expires_at_ms` is the latest expiry
//!    any token of the pass carries.
//! 2. The replica that ended it starts the outbox relay at once ([`controller`]), which
//!    publishes a `PassEnded {event_id, user_id, pass_id, reason, expires_at}` with the message
//!    id `pass-ended:<event>:<user>:<pass_id>` (JetStream drops a retry's duplicate).
//! 3. Seat-lock's durable consumer `seat-lock-passes` records `ended:<pass_id>` in seat-lock's
//!    Redis under the event's hash tag, expiring at `expires_at`, and its hold scripts refuse a
//!    token of that pass (`PASS_REVOKED`, `PERMISSION_DENIED`) in the same atomic step that
//!    would hold seats: no call to admission on the hot path, one `GET` inside the script.
//!
//! Expiry needs no event: a pass that expires (a no-show's check-in window included: no
//! token was handed out for an uncollected pass, since handing it out is collecting it) is
//! refused by its own expiry. Seat-lock's `seat_lock::passes` module has the rest: delays,
//! Redis loss, pass ids reused after admission's Redis lost its counters.
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
//!    `admission-audit` binary (`src/bin/admission-audit/`):
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
pub mod catalogue;
pub mod config;
pub mod controller;
pub mod error;
pub mod fairness;
pub mod rebuild;
pub mod service;
pub mod store;

pub use app::App;
pub use config::Config;
