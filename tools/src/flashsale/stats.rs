//! What the simulator measures while the sale runs: stage counters, per-RPC latency
//! histograms and status codes, and a timeline sampled once a second.

use std::{
    collections::BTreeMap,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use crate::grpc::code_name;
use hdrhistogram::Histogram;
use serde::Serialize;

/// The RPCs the simulated users make, each with its own histogram and status counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rpc {
    Join,
    WatchQueue,
    GetQueueStatus,
    Leave,
    GetAvailability,
    GetSeatMap,
    HoldSeats,
    HoldBestAvailable,
    ReleaseHold,
    GetHold,
    Pay,
    GetPayment,
    Subscribe,
}

impl Rpc {
    /// Every RPC, in the order of a purchase.
    pub const ALL: [Rpc; 13] = [
        Rpc::Join,
        Rpc::WatchQueue,
        Rpc::GetQueueStatus,
        Rpc::Leave,
        Rpc::GetAvailability,
        Rpc::GetSeatMap,
        Rpc::HoldSeats,
        Rpc::HoldBestAvailable,
        Rpc::ReleaseHold,
        Rpc::GetHold,
        Rpc::Pay,
        Rpc::GetPayment,
        Rpc::Subscribe,
    ];

    /// The gRPC method name.
    pub fn name(self) -> &'static str {
        match self {
            Rpc::Join => "Join",
            Rpc::WatchQueue => "WatchQueue",
            Rpc::GetQueueStatus => "GetQueueStatus",
            Rpc::Leave => "Leave",
            Rpc::GetAvailability => "GetAvailability",
            Rpc::GetSeatMap => "GetSeatMap",
            Rpc::HoldSeats => "HoldSeats",
            Rpc::HoldBestAvailable => "HoldBestAvailable",
            Rpc::ReleaseHold => "ReleaseHold",
            Rpc::GetHold => "GetHold",
            Rpc::Pay => "Pay",
            Rpc::GetPayment => "GetPayment",
            Rpc::Subscribe => "Subscribe",
        }
    }

    fn index(self) -> usize {
        Rpc::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }
}

/// Latencies above this are clamped; nothing in the mesh should take longer than a minute
/// (slow sandbox cards are capped at 60 s).
const MAX_LATENCY_MICROS: u64 = 120_000_000;

struct RpcStats {
    latency_micros: Histogram<u64>,
    codes: BTreeMap<&'static str, u64>,
}

/// Stage counters of the journey; each a monotone count.
#[derive(Default)]
pub struct Stages {
    pub arrived: AtomicU64,
    pub joined: AtomicU64,
    pub join_failed: AtomicU64,
    pub watching: AtomicU64,
    pub admitted: AtomicU64,
    pub held: AtomicU64,
    pub seats_held: AtomicU64,
    pub seat_taken: AtomicU64,
    /// Holds that timed out in seat-lock (outcome unknown; tried again).
    pub hold_timeouts: AtomicU64,
    pub fell_back_to_best: AtomicU64,
    pub sold_out: AtomicU64,
    pub limit_refused: AtomicU64,
    pub released: AtomicU64,
    pub let_expire: AtomicU64,
    pub declined: AtomicU64,
    pub refunded: AtomicU64,
    pub replays: AtomicU64,
    pub paid: AtomicU64,
    pub seats_paid: AtomicU64,
    pub notified: AtomicU64,
    pub errors: AtomicU64,
    /// Users who joined again after admission lost their place (its Redis restarted).
    pub rejoined: AtomicU64,
    /// Sessions waiting in line that gave their slot to a user admission serves first (after
    /// it lost its queue, see `user::wait_in_line`).
    pub gave_way: AtomicU64,
    /// Holds that vanished before payment (Redis restarted) in a chaos run.
    pub holds_lost: AtomicU64,
    pub finished: AtomicU64,
    /// The latest queue length any WatchQueue message reported.
    pub queue_length: AtomicU64,
    /// Users by how many times they asked for a hold again after a refusal (seat taken, no
    /// adjacent seats, zone sold out) or a timeout; the last bucket counts that many or more.
    pub hold_retries_per_user: [AtomicU64; RETRY_BUCKETS],
    /// Fresh looks at the seat map a refused user took before asking again.
    pub map_looks_after_refusal: AtomicU64,
}

impl Stages {
    /// Every counter by name, for the report.
    pub fn summary(&self) -> serde_json::Value {
        let s = self;
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        serde_json::json!({
            "arrived": get(&s.arrived), "joined": get(&s.joined), "join_failed": get(&s.join_failed),
            "watching": get(&s.watching), "admitted": get(&s.admitted), "holds": get(&s.held),
            "seats_held": get(&s.seats_held), "seat_taken_refusals": get(&s.seat_taken),
            "hold_timeouts": get(&s.hold_timeouts),
            "contention_fell_back_to_best": get(&s.fell_back_to_best), "found_sold_out": get(&s.sold_out),
            "limit_refused": get(&s.limit_refused), "released": get(&s.released), "let_expire": get(&s.let_expire),
            "declined_then_retried": get(&s.declined), "refunded": get(&s.refunded), "replayed_pays": get(&s.replays),
            "paid": get(&s.paid), "seats_paid": get(&s.seats_paid), "notified": get(&s.notified),
            "errors": get(&s.errors), "finished": get(&s.finished), "rejoined": get(&s.rejoined),
            "gave_way": get(&s.gave_way),
            "holds_lost": get(&s.holds_lost),
            "hold_retries": s.hold_retries_per_user.iter().enumerate().map(|(n, c)| n as u64 * get(c)).sum::<u64>(),
            "hold_retries_per_user": s.hold_retries_per_user.iter().enumerate()
                .map(|(n, c)| (if n + 1 == RETRY_BUCKETS { format!("{n}+") } else { n.to_string() }, get(c).into()))
                .collect::<serde_json::Map<String, serde_json::Value>>(),
            "map_looks_after_refusal": get(&s.map_looks_after_refusal),
        })
    }
}

/// Buckets of [`Stages::hold_retries_per_user`].
pub const RETRY_BUCKETS: usize = 6;

/// One sample of the timeline.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    /// Seconds since the sale opened (negative before).
    pub t: f64,
    pub joined: u64,
    pub admitted: u64,
    pub holds: u64,
    pub paid: u64,
    pub queue_length: u64,
    /// Inventory's view: seats held and sold right now.
    pub inventory_held: u64,
    pub inventory_sold: u64,
    pub inventory_free: u64,
    pub users_in_flight: u64,
}

/// Everything measured, shared by all user tasks.
pub struct Stats {
    pub stages: Stages,
    rpcs: Vec<Mutex<RpcStats>>,
    pub timeline: Mutex<Vec<Sample>>,
    /// When the sale opened, as this process's clock saw it.
    pub opened_at: Instant,
}

/// Latency summary of one RPC, in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct RpcSummary {
    pub rpc: &'static str,
    pub count: u64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
    /// gRPC status code name → count ("OK" included).
    pub codes: BTreeMap<&'static str, u64>,
}

impl Stats {
    /// Fresh counters; `opened_at` is the sale's opening on this process's clock.
    pub fn new(opened_at: Instant) -> anyhow::Result<Self> {
        let mut rpcs = Vec::with_capacity(Rpc::ALL.len());
        for _ in Rpc::ALL {
            rpcs.push(Mutex::new(RpcStats {
                latency_micros: Histogram::new_with_bounds(1, MAX_LATENCY_MICROS, 3)?,
                codes: BTreeMap::new(),
            }));
        }
        Ok(Self { stages: Stages::default(), rpcs, timeline: Mutex::new(Vec::new()), opened_at })
    }

    /// Records one call's latency and its status code.
    pub fn record(&self, rpc: Rpc, elapsed: Duration, code: tonic::Code) {
        let micros = (elapsed.as_micros() as u64).clamp(1, MAX_LATENCY_MICROS);
        if let Ok(mut stats) = self.rpcs[rpc.index()].lock() {
            let _ = stats.latency_micros.record(micros);
            *stats.codes.entry(code_name(code)).or_default() += 1;
        }
    }

    /// Seconds since the sale opened.
    pub fn since_open(&self) -> f64 {
        let now = Instant::now();
        if now >= self.opened_at {
            (now - self.opened_at).as_secs_f64()
        } else {
            -(self.opened_at - now).as_secs_f64()
        }
    }

    /// Per-RPC summaries of the RPCs that were called.
    pub fn summaries(&self) -> Vec<RpcSummary> {
        let mut out = Vec::new();
        for rpc in Rpc::ALL {
            let Ok(stats) = self.rpcs[rpc.index()].lock() else { continue };
            let h = &stats.latency_micros;
            if h.is_empty() && stats.codes.is_empty() {
                continue;
            }
            let ms = |micros: u64| micros as f64 / 1000.0;
            out.push(RpcSummary {
                rpc: rpc.name(),
                count: h.len(),
                p50_ms: ms(h.value_at_quantile(0.50)),
                p95_ms: ms(h.value_at_quantile(0.95)),
                p99_ms: ms(h.value_at_quantile(0.99)),
                max_ms: ms(h.max()),
                mean_ms: h.mean() / 1000.0,
                codes: stats.codes.clone(),
            });
        }
        out
    }

    /// A counter's current value.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// Adds one to a counter.
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Instants of the sale, in seconds since it opened.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Timings {
    pub setup_secs: f64,
    /// From opening until the last user finished (or was stopped).
    pub users_done_secs: f64,
    /// First sample where inventory had no free seat (all held or sold).
    pub no_free_seat_secs: Option<f64>,
    /// First sample where every seat was sold.
    pub sold_out_secs: Option<f64>,
    /// Whether the run hit `max_secs`.
    pub stopped_by_max_secs: bool,
    pub settle_secs: f64,
    pub verify_secs: f64,
}
