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

/// The canonical name of a gRPC code, as in the gRPC spec.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}
