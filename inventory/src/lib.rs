//! Inventory: the catalogue (venues, events, zones, seats) and the live seat map.
//!
//! Parts:
//! - [`catalogue`]: validation of venues and events and their rows in Postgres (schema
//!   `inventory`, migrations in [`migration`]); Postgres is the source of truth.
//! - [`registry`]: every known event in memory with its [`seatmap::SeatMap`] (a packed
//!   two-bit state per seat, counters for general admission) and a bounded change feed.
//! - [`feed`]: an ordered JetStream consumer that applies `SeatsHeld`, `SeatsReleased` and
//!   `BookingConfirmed` in stream order (`SeatsReleased` with reason CANCELLED turns a
//!   cancelled booking's sold seats free), from the snapshots' position on.
//! - [`snapshot`]: durable snapshots of the seat maps in Postgres with the stream sequence
//!   each covers, taken between two messages and stored off the feed; a replica starts from
//!   them and replays only what follows, so events older than the stream's retention stay
//!   correct.
//! - [`service`]: the gRPC `InventoryService`.
//! - [`gauges`]: seats free, held and sold per zone, and the consumer's lag, as gauges.
//!
//! Request flow: `CreateVenue`/`CreateEvent` validate, write Postgres in one transaction and
//! (for events) add the event to the registry. `GetEvent`, `GetSeatMap` and `GetAvailability`
//! answer from the registry; on a miss they load that event from Postgres once, since another
//! replica may have created it. `ListEvents` pages through Postgres by (sale_opens_at,
//! event_id). `WatchSeatMap` sends a snapshot, then coalesces the change feed into deltas
//! every 100 ms, with a fresh snapshot whenever the watcher lagged.
#![forbid(unsafe_code)]

pub mod app;
pub mod catalogue;
pub mod config;
pub mod error;
pub mod feed;
pub mod gauges;
pub mod migration;
pub mod registry;
pub mod seatmap;
pub mod service;
pub mod snapshot;

pub use app::App;
pub use config::Config;
