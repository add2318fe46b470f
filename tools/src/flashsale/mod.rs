//! The flash-sale simulator: many users through the public API, then verification against
//! ground truth and a report.
//!
//! [`run`] creates a venue and an event (seated zones with prices, an optional
//! general-admission zone), lets `users` users arrive (a share in the pre-queue before the
//! sale opens, the rest at the opening instant or over a ramp), and drives each one through
//! Join → WatchQueue → GetAvailability → hold → Pay → notification, with a configurable mix of
//! behaviours ([`Mix`]). Users share a small pool of HTTP/2 connections; users in flight are
//! bounded by a semaphore, joined users wait for a slot in a plain queue (not as tasks), so
//! memory stays bounded however many users there are. That queue follows admission's order:
//! once the sale opens, each pre-queue user asks for its shuffled place (as its waiting page
//! would), and sessions start in that order, then first come, first served for latecomers.
//! Otherwise passes would go to users who have no session to collect them.
//!
//! Afterwards it waits for releases and expiries to settle and checks I1–I6 against payment's
//! sold seats, Postgres (`payment` schema), inventory and seat-lock, then runs payment's
//! reconciliation ([`verify`]); see `report` for the JSON and HTML reports.
//!
//! [`run_with`] also runs a [`Disruption`](crate::faults::Disruption) (the chaos schedule of
//! faults) from the opening on, and verifies only once the last fault has recovered (`chaos`
//! starts the private stack it needs).
//!
//! The files, in the order of a run: [`config`], [`setup`], [`arrivals`], [`line`] (the
//! dispatcher's queue), [`ctx`] and [`user`] with [`plan`], [`hold`] and [`pay`], [`retry`],
//! [`progress`] and [`stats`], then [`verify`] with [`admission_order`]; [`run`] ties them
//! together.

pub mod admission_order;
pub mod arrivals;
pub mod config;
pub mod ctx;
pub mod hold;
pub mod line;
pub mod pay;
pub mod plan;
pub mod progress;
pub mod retry;
pub mod run;
pub mod setup;
pub mod stats;
pub mod user;
pub mod verify;

pub use self::{
    config::{
        Mix, SimConfig, WINDOW_MARGIN_SECS, default_slow_pay_ms, recovery_after_secs, slowest_card_secs,
    },
    run::{Outcome, SELF_NAME, run, run_with},
    stats::Timings,
};
