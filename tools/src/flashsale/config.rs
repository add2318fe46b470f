//! What to sell, to whom, and how: the simulator's settings ([`SimConfig`]) and the mix of
//! behaviours ([`Mix`]).

use std::{path::PathBuf, sync::Arc};

use serde::Serialize;

use crate::{faults::ChaosConfig, identity::Identity};

/// The share of users doing each thing with their hold; the rest simply buy.
#[derive(Debug, Clone, Serialize)]
pub struct Mix {
    /// Aim at the same popular seats (GetSeatMap + HoldSeats) instead of HoldBestAvailable.
    pub contention: f64,
    /// Release the hold with ReleaseHold.
    pub release: f64,
    /// Walk away and let the hold expire.
    pub let_expire: f64,
    /// Pay with `pm_card_declined` first, then with a good card.
    pub declined: f64,
    /// Pay with `pm_card_slow_<slow_pay_ms>`.
    pub slow: f64,
    /// Send the same Pay twice with one idempotency key.
    pub replay: f64,
}

impl Default for Mix {
    fn default() -> Self {
        Self { contention: 0.3, release: 0.03, let_expire: 0.02, declined: 0.03, slow: 0.01, replay: 0.05 }
    }
}

/// What to sell, to whom, and how.
#[derive(Debug, Clone, Serialize)]
pub struct SimConfig {
    /// The load balancer, e.g. `http://127.0.0.1:8080`.
    pub target: String,
    /// Postgres of the mesh, for the ground-truth checks.
    #[serde(skip)]
    pub database_url: String,
    /// Seats in the seated zones (split 20/40/40 over FLOOR, LOWER, UPPER).
    pub seats: u32,
    /// Places of a general-admission zone; 0 for none.
    pub ga_capacity: u32,
    pub users: u32,
    pub max_tickets_per_user: u32,
    /// Users admitted to checkout at once (active passes).
    pub admission_capacity: u32,
    pub admission_tick_ms: u32,
    pub pass_ttl_secs: u32,
    /// The sale opens this long after the event is created; pre-queue users join meanwhile.
    pub open_in_secs: f64,
    /// Share of users who join before the sale opens.
    pub prequeue_share: f64,
    /// The other users arrive evenly over this many seconds after opening (0: all at once).
    pub ramp_secs: f64,
    pub mix: Mix,
    /// The stack's hold TTL (seat-lock HOLD_TTL_SECS): how long abandoned holds take to expire.
    pub hold_ttl_secs: u64,
    /// Delay of the slow card; set above the hold TTL to test a payment slower than the hold.
    pub slow_pay_ms: u64,
    /// HTTP/2 connections the users share.
    pub connections: usize,
    /// Users in a session (waiting, holding, paying) at once.
    pub max_in_flight: usize,
    /// Stop the users after this long and verify what happened.
    pub max_secs: u64,
    /// How long to wait for holds to expire or be released after the users are done.
    pub settle_secs: u64,
    pub seed: u64,
    /// Show a live progress display (only on a terminal).
    pub progress: bool,
    /// Where the reports go.
    pub out_dir: PathBuf,
    /// The stack's pid files (`.stack/pids`), for the services' peak memory.
    pub pids_dir: Option<PathBuf>,
    /// Set for a chaos run: users then expect holds lost with Redis and keep going.
    pub chaos: Option<ChaosConfig>,
    /// Mints the tokens: one per simulated user (its subject is the user), and the
    /// operator's for the catalogue and the reconciliation.
    #[serde(skip)]
    pub identity: Arc<Identity>,
}

impl SimConfig {
    /// The full default: 50,000 seats, 500,000 users.
    pub fn new(target: String, database_url: String, out_dir: PathBuf, identity: Arc<Identity>) -> Self {
        let hold_ttl_secs = 600;
        Self {
            target,
            database_url,
            seats: 50_000,
            ga_capacity: 0,
            users: 500_000,
            max_tickets_per_user: 4,
            admission_capacity: 1_000,
            admission_tick_ms: 100,
            pass_ttl_secs: 300,
            open_in_secs: 5.0,
            prequeue_share: 0.2,
            ramp_secs: 0.0,
            mix: Mix::default(),
            hold_ttl_secs,
            slow_pay_ms: default_slow_pay_ms(hold_ttl_secs),
            connections: 16,
            max_in_flight: 1_200,
            max_secs: 900,
            settle_secs: settle_secs(hold_ttl_secs),
            seed: 7,
            progress: true,
            out_dir,
            pids_dir: None,
            chaos: None,
            identity,
        }
    }

    /// Checks the numbers before anything is created.
    pub fn validate(&self) -> Result<(), String> {
        let m = &self.mix;
        let shares = [
            ("prequeue share", self.prequeue_share),
            ("contention share", m.contention),
            ("release share", m.release),
            ("expire share", m.let_expire),
            ("declined share", m.declined),
            ("slow share", m.slow),
            ("replay share", m.replay),
        ];
        if let Some((name, _)) = shares.iter().find(|(_, v)| !(0.0..=1.0).contains(v)) {
            return Err(format!("the {name} must be between 0 and 1"));
        }
        if m.release + m.let_expire + m.declined + m.slow + m.replay > 1.0 {
            return Err("release + expire + declined + slow + replay shares must add up to at most 1".into());
        }
        if self.users == 0 || self.seats + self.ga_capacity == 0 {
            return Err("there must be users and seats".into());
        }
        if !(1..=50).contains(&self.max_tickets_per_user) {
            return Err("max tickets per user must be 1-50".into());
        }
        if self.connections == 0 || self.max_in_flight == 0 {
            return Err("connections and max in flight must be at least 1".into());
        }
        if !(1.0..=3_600.0).contains(&self.open_in_secs) || !(0.0..=86_400.0).contains(&self.ramp_secs) {
            return Err("open-in must be 1-3600 s and the ramp 0-86400 s".into());
        }
        Ok(())
    }

    /// Sets the hold TTL and what derives from it (slow card, settle time).
    pub fn with_hold_ttl(mut self, secs: u64) -> Self {
        self.hold_ttl_secs = secs;
        self.slow_pay_ms = default_slow_pay_ms(secs);
        self.settle_secs = settle_secs(secs);
        self
    }
}

/// Margin of the local stack's checkout grace and recovery windows over the slowest card.
pub const WINDOW_MARGIN_SECS: u64 = 10;

/// Long enough for abandoned holds to expire, for the slowest card (60 s) to finish, and for
/// payment's recovery to settle a payment whose charge outlasted the provider timeout (it
/// looks at payments unchanged for [`recovery_after_secs`], every half of that).
fn settle_secs(hold_ttl_secs: u64) -> u64 {
    (hold_ttl_secs.max(60) + 30).max(recovery_after_secs(hold_ttl_secs) * 3 / 2 + WINDOW_MARGIN_SECS)
}

/// The slowest card the simulator pays with for this hold TTL, in whole seconds.
pub fn slowest_card_secs(hold_ttl_secs: u64) -> u64 {
    default_slow_pay_ms(hold_ttl_secs).div_ceil(1000)
}

/// Payment's recovery window (`RECOVERY_AFTER_SECS`) in a local stack with this hold TTL: the
/// slowest card plus two margins, so a slow card completes on its own first.
pub fn recovery_after_secs(hold_ttl_secs: u64) -> u64 {
    slowest_card_secs(hold_ttl_secs) + 2 * WINDOW_MARGIN_SECS
}

/// A card slower than the hold TTL, within the sandbox's 60 s cap.
pub fn default_slow_pay_ms(hold_ttl_secs: u64) -> u64 {
    (hold_ttl_secs * 1000 + 2_000).min(60_000)
}
