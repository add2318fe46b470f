//! Admission: the virtual waiting room of the ticketing mesh.
//!
//! Parts and how a request flows through them:
//! - [`service`]: the gRPC `AdmissionService`. Every request is validated (event UUID, user
//!   id), the event is looked up in the [`catalog`] (inventory's `GetEvent`, cached for good:
//!   events are immutable), then one Lua script in the [`store`] answers it.
//! - [`store`]: Redis. `Join` takes a ticket from `INCR` (so FIFO order is Redis's, the same
//!   for every replica), rate-limits per user and is idempotent; passes live in a ZSET by
//!   expiry. Before the sale opens joiners are in the pre-queue, which is FIFO for now (the
//!   fair shuffle at opening is not implemented yet).
//! - [`controller`]: on every replica, a loop ticks each event when its `admission_tick_ms`
//!   is due. One script drops expired passes and admits the head of the queue up to
//!   `capacity − active passes`, under a per-tick lease so replicas do not double-tick.
//!   Admitted users are published as `Admitted` events; every tick refreshes the per-event
//!   "now serving" view that `WatchQueue` streams read without calling Redis.
//! - [`app`]: wiring, plus the durable `admission` consumer of `BookingConfirmed` that frees
//!   the buyer's slot.
//!
//! Pass tokens are not stored: any replica re-signs the same token from the stored pass id
//! and expiry with the [`ticketing_proto::pass::PassKeyRing`].
#![forbid(unsafe_code)]

pub mod app;
pub mod catalog;
pub mod config;
pub mod controller;
pub mod error;
pub mod service;
pub mod store;

pub use app::App;
pub use config::Config;
