//! The standard benchmark against a running local stack, through its load balancer.
//!
//! It creates its own venue (zone `A`: rows `1`–`500` × 100 seats = 50,000 seats) and events
//! through the public API, gets passes for many users via `Join` + `WatchQueue` (admission
//! capacity large), then runs each scenario with [`loadgen`], each after its
//! `grpc.health.v1.Health/Check` baseline with the same concurrency and connections:
//!
//! 1. `HoldSeats`: 1,000 clients, 100,000 one-seat requests from 2,000 users, seats drawn at
//!    random from the 50,000, so about half the requests ask for a seat already held
//!    (designed duplicates, `ABORTED SEAT_TAKEN`). No seat may be held twice.
//! 2. `Join` burst of unique users on an open event; FIFO inversions are counted: a join
//!    answered before another was sent must have the lower ticket ([`admission::join_burst`],
//!    also alone: `bench --join-burst-only N`). `bench --watchqueue-only N` holds N
//!    `WatchQueue` streams open instead ([`admission::watch_queue`]).
//! 3. `Pay` for holds made in 1 (end to end: seat-lock checkout, sandbox provider, Postgres,
//!    outbox), counting confirmed bookings per second.
//! 4. `GetAvailability` and `GetSeatMap` of the 50,000-seat event.
//! 5. Fan-out: 10,000 `WatchSeatMap` watchers, one seat held, lag until each has the delta.
//!    Then Redis CPU per `HoldBestAvailable` on a 20,000-seat zone 95 % sold against the same
//!    zone empty ([`holdbest`], also alone: `bench --holdbest-only`).
//!
//! Every call carries a token of the stack's identity provider ([`Identity`]); the services
//! have no tokenless mode. What a token costs is measured in the same run: HoldSeats and the
//! Join burst once with one token per user (minted before the run; a user's first call
//! verifies it, the rest hit the services' cache: the production pattern) and once with a
//! fresh token on every call (a full Ed25519 verification each: the worst case), and the
//! like-for-like pair `Health/Check` without a token and with a fresh token per call (the
//! health service sits behind the same auth layer, so the difference is the verification).
//!
//! Then the services' peak memory (VmHWM) from `/proc`, via the stack's pid files. Every
//! scenario is bounded in count and time. The results go to `bench-results.json` and to the
//! README's table between `<!-- bench:start -->` and `<!-- bench:end -->`.
//!
//! One file per scenario: [`holds`], [`admission`], [`health`], [`pay`], [`reads`],
//! [`fanout`], [`holdbest`], [`memory`]; [`run`] runs them in order on the sales [`sale`]
//! makes, [`config`] is what they share, [`readme`] writes the table, [`ghz`] the ghz configs,
//! and [`inventory`] measures an inventory restart on its own.

pub mod admission;
pub mod anchor;
pub mod config;
pub mod fanout;
pub mod ghz;
pub mod health;
pub mod holdbest;
pub mod holds;
pub mod inventory;
pub mod memory;
pub mod pay;
pub mod readme;
pub mod reads;
pub mod run;
pub mod sale;

pub use self::{
    config::{BenchConfig, BenchResults, ProcessMemory, Row, Scenario, Tokens, token_array},
    fanout::fanout_lag,
    readme::{CHAOS_ROW, TABLE_END, TABLE_START, table, update_readme},
    run::run,
};
