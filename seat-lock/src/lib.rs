//! seat-lock: atomic, expiring seat holds in Redis — where "never sell a seat twice" is enforced.
//!
//! Parts:
//! - [`service`]: the `SeatLockService` gRPC handlers. A request is validated against the
//!   event's layout ([`catalogue`], fetched once from inventory and kept in memory), the caller
//!   is the verified token's subject, its admission pass is verified locally with admission's
//!   public keys (seat-lock holds no signing key), then ONE Lua script ([`store`]) checks that
//!   admission has not ended the pass, the user's ticket limit, the zone counter and every
//!   seat, and holds all seats or none, with a TTL.
//! - [`store`]: the Redis keys of an event (all under the hash tag `{<event_id>}`) and the
//!   scripts that change them. Every script first checks the event's `ready` marker; when it
//!   is missing (first use, or Redis lost its data) the service rebuilds the sold seats from
//!   payment's internal `ListSoldSeats` (mutual TLS) under a short lock and retries; until then it answers
//!   UNAVAILABLE, never "free".
//! - [`internal`]: `SeatLockInternalService` (package `ticketing.internal.v1`), payment's
//!   calls only, on the internal listener (mutual TLS, caller checked from its certificate,
//!   never routed by the load balancer): `BeginCheckout` extends a hold for the payment,
//!   `ConfirmHold` sells it, and `ReturnSeats` gives the sold seats of a cancelled booking
//!   back — one script removes the sold marks, restores the zone counter and the user's
//!   ticket-limit count and queues `SeatsReleased` (CANCELLED), once per booking.
//! - [`relay`]: the sweeper, which ends expired holds (seats back on sale, counters restored)
//!   without anyone calling, and the outbox relay, which publishes `SeatsHeld` /
//!   `SeatsReleased` to JetStream with deterministic message ids, so no fact is lost or
//!   delivered twice when the process dies between Redis and NATS.
//! - [`passes`]: the durable consumer of admission's `PassEnded` events, which records ended
//!   passes so the hold scripts refuse them (`PASS_REVOKED`); the design is in its docs.
//! - [`app`], [`config`], [`error`]: wiring, flags, and the one error-to-status mapping.
#![forbid(unsafe_code)]

pub mod app;
pub mod catalogue;
pub mod config;
pub mod error;
pub mod internal;
pub mod passes;
pub mod relay;
pub mod service;
pub mod store;

pub use app::App;
pub use config::Config;
