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

use std::{
    collections::HashSet,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use futures::StreamExt;
use prost::Message as _;
use serde::Serialize;
use ticketing_proto::v1::{
    self as pb, admission_service_client::AdmissionServiceClient,
    inventory_service_client::InventoryServiceClient, seat_lock_service_client::SeatLockServiceClient,
};
use tonic::transport::Channel;

use crate::{
    identity::{AUTHORIZATION, Identity},
    loadgen::{self, CallData, Comparison, LoadSpec, Observer},
};

pub mod admission;
pub mod holdbest;
pub mod inventory;

/// README markers between which the bench writes its table.
pub const TABLE_START: &str = "<!-- bench:start -->";
/// End marker of the bench table.
pub const TABLE_END: &str = "<!-- bench:end -->";
/// How the README's row of a `flashsale --chaos` run begins; `bench` keeps it.
pub const CHAOS_ROW: &str = "| Sale under chaos";
/// Rows of the bench venue: numeric labels `1`..=`ROWS`.
const ROWS: u32 = 500;
/// Seats per row of the bench venue (500 × 100 = 50,000 seats).
const SEATS_PER_ROW: u32 = 100;
/// Tickets one user may hold and buy: the contract's maximum, so 2,000 users cover
/// 100,000 holds.
const MAX_TICKETS_PER_USER: u32 = 50;
/// Join/WatchQueue calls in flight while collecting passes.
const PASS_FETCH_CONCURRENCY: usize = 500;
/// How long collecting the passes may take.
const PASS_FETCH_TIMEOUT: Duration = Duration::from_secs(120);
/// Concurrency of the Pay scenario: payment holds 32 Postgres connections, so more clients
/// only queue.
const PAY_CONCURRENCY: usize = 200;

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// `http://127.0.0.1:8080`.
    pub target: String,
    /// The stack's folder (pid files; default output).
    pub state_dir: PathBuf,
    /// Where the JSON results go.
    pub output: PathBuf,
    /// README to update (`None`: print only).
    pub readme: Option<PathBuf>,
    /// Concurrent clients of the HoldSeats, Join and read scenarios.
    pub concurrency: usize,
    /// HTTP/2 connections shared by the clients.
    pub connections: usize,
    pub hold_requests: u64,
    pub hold_users: u32,
    pub join_requests: u64,
    /// Most holds paid in the Pay scenario.
    pub pay_max: usize,
    pub read_requests: u64,
    /// Cap of every scenario.
    pub scenario_max: Duration,
    /// Cap of every baseline.
    pub baseline_max: Duration,
    /// Where filled-in ghz configs (real event, pass and hold) are written.
    pub ghz_dir: Option<PathBuf>,
    /// Mints every token the bench sends (the stack's identity provider).
    pub identity: Arc<Identity>,
    /// The stack's Redis, for the `HoldBestAvailable` Redis CPU row ([`holdbest`]).
    pub redis_url: String,
}

/// How the calls of a scenario carry their tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tokens {
    /// One token per user, minted before the run and sent with each of its calls: the
    /// services verify it once and then find it in their cache.
    PerUser,
    /// A token no server has seen on every call (a unique `jti`): a full verification each.
    FreshPerCall,
}

impl Tokens {
    /// The row label's suffix.
    pub fn label(self) -> &'static str {
        match self {
            Self::PerUser => "one token per user",
            Self::FreshPerCall => "a fresh token per call (full verification each)",
        }
    }
}

/// A loadgen metadata array of `count` objects `{"authorization": "Bearer …"}`: object `n`
/// is the token of `user(n)`, minted here (before the measured run) as `tokens` says.
pub fn token_array(
    identity: &Identity,
    count: u64,
    tokens: Tokens,
    user: impl Fn(u64) -> String,
) -> serde_json::Value {
    serde_json::Value::Array(
        (0..count)
            .map(|n| {
                let token = match tokens {
                    Tokens::PerUser => identity.token(&user(n), false, crate::identity::TOOL_TOKEN_TTL),
                    Tokens::FreshPerCall => identity.fresh(&user(n)),
                };
                serde_json::json!({ AUTHORIZATION: format!("Bearer {token}") })
            })
            .collect(),
    )
}

/// One README row.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub what: String,
    pub result: String,
    pub baseline: String,
    pub target: String,
    /// Whether the target was met (`None` when there is none or it was not measured).
    pub met: Option<bool>,
    pub date: String,
    pub machine: String,
}

/// One scenario's figures.
#[derive(Debug, Clone, Serialize)]
pub struct Scenario {
    pub name: String,
    pub report: Comparison,
    /// Scenario-specific counts (holds, inversions, bookings).
    pub extra: serde_json::Value,
}

/// Peak and current memory of one service process.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessMemory {
    pub name: String,
    pub pid: u32,
    pub vm_hwm_kb: u64,
    pub vm_rss_kb: u64,
}

/// Everything the bench measured.
#[derive(Debug, Clone, Serialize)]
pub struct BenchResults {
    pub date: String,
    pub machine: String,
    pub cores: usize,
    pub target: String,
    pub hold_event_id: String,
    pub join_event_id: String,
    pub scenarios: Vec<Scenario>,
    pub memory: Vec<ProcessMemory>,
    pub rows: Vec<Row>,
}

/// What the HoldSeats scenario saw: (hold id, user id) of holds to pay, every seat held,
/// and how many seats were held a second time (must stay 0).
type Held = (Vec<(String, String)>, HashSet<String>, u64);

/// A user with a pass.
#[derive(Debug, Clone)]
struct PassHolder {
    user_id: String,
    token: String,
}

fn timestamp(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: ms.div_euclid(1000), nanos: (ms.rem_euclid(1000) * 1_000_000) as i32 }
}

async fn channel(target: &str) -> anyhow::Result<Channel> {
    tonic::transport::Endpoint::from_shared(target.to_owned())?
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(30))
        .connect()
        .await
        .with_context(|| format!("cannot reach the load balancer at {target}: is the stack up (`stack up`)?"))
}

/// Creates the 50,000-seat venue and an event on it whose sale opens in `opens_in_ms`, as the
/// operator.
async fn create_event(
    channel: &Channel,
    identity: &Identity,
    name: &str,
    capacity: u32,
    pass_ttl: u32,
    opens_in_ms: i64,
) -> anyhow::Result<pb::Event> {
    let mut inventory = InventoryServiceClient::new(channel.clone());
    let venue = inventory
        .create_venue(identity.as_admin(pb::CreateVenueRequest {
            name: format!("Bench arena {}", chrono::Utc::now().format("%H:%M:%S")),
            zones: vec![pb::ZoneSpec {
                zone_id: "A".into(),
                name: "Arena".into(),
                price_cents: 5_000,
                layout: Some(pb::zone_spec::Layout::Seated(pb::SeatedLayout {
                    row_labels: (1..=ROWS).map(|r| r.to_string()).collect(),
                    seats_per_row: SEATS_PER_ROW,
                    accessible_seat_ids: vec![],
                })),
            }],
        }))
        .await
        .context("CreateVenue")?
        .into_inner()
        .venue
        .context("CreateVenue answered no venue")?;
    let now = chrono::Utc::now().timestamp_millis();
    let event = inventory
        .create_event(identity.as_admin(pb::CreateEventRequest {
            venue_id: venue.venue_id,
            name: name.into(),
            starts_at: Some(timestamp(now + 30 * 86_400_000)),
            sale_opens_at: Some(timestamp(now + opens_in_ms)),
            max_tickets_per_user: MAX_TICKETS_PER_USER,
            currency: "EUR".into(),
            admission_capacity: capacity,
            admission_tick_ms: 100,
            pass_ttl_seconds: pass_ttl,
            cancellation_cutoff_seconds: 0,
        }))
        .await
        .context("CreateEvent")?
        .into_inner()
        .event
        .context("CreateEvent answered no event")?;
    Ok(event)
}

/// Joins `users` users and watches their queue until each has a pass.
async fn collect_passes(
    channel: &Channel,
    identity: &Identity,
    event_id: &str,
    users: u32,
) -> anyhow::Result<Vec<PassHolder>> {
    let work = futures::stream::iter(0..users)
        .map(|u| {
            let mut admission = AdmissionServiceClient::new(channel.clone());
            let event_id = event_id.to_owned();
            let user_id = format!("bench-{u}");
            let token = identity.user(&user_id);
            async move {
                admission
                    .join(
                        token.request(pb::JoinRequest {
                            event_id: event_id.clone(),
                            user_id: user_id.clone(),
                        }),
                    )
                    .await?;
                let mut updates = admission
                    .watch_queue(token.request(pb::WatchQueueRequest { event_id, user_id: user_id.clone() }))
                    .await?
                    .into_inner();
                while let Some(status) = updates.next().await {
                    if let Some(pass) = status?.pass {
                        return Ok(PassHolder { user_id, token: pass.token });
                    }
                }
                bail!("the queue stream of {user_id} ended without a pass")
            }
        })
        .buffer_unordered(PASS_FETCH_CONCURRENCY)
        .collect::<Vec<anyhow::Result<PassHolder>>>();
    let results = tokio::time::timeout(PASS_FETCH_TIMEOUT, work)
        .await
        .with_context(|| format!("collecting {users} passes took longer than {PASS_FETCH_TIMEOUT:?}"))?;
    let mut passes: Vec<PassHolder> = results.into_iter().collect::<anyhow::Result<_>>()?;
    passes.sort_by_key(|p| p.user_id.trim_start_matches("bench-").parse::<u32>().unwrap_or(0));
    Ok(passes)
}

impl BenchConfig {
    /// A scenario's load; `metadata` is its tokens (an array used round robin), or `None`
    /// for a call that needs none (the catalogue reads).
    fn spec(
        &self,
        name: &str,
        call: &str,
        data: serde_json::Value,
        metadata: Option<serde_json::Value>,
        concurrency: usize,
        total: u64,
    ) -> anyhow::Result<LoadSpec> {
        let pool = loadgen::descriptor_pool()?;
        let method = loadgen::find_method(&pool, call)?;
        Ok(LoadSpec {
            name: name.into(),
            target: self.target.clone(),
            data: CallData::new(method, &data, metadata.as_ref())?,
            concurrency,
            connections: self.connections,
            total: Some(total),
            duration: Some(self.scenario_max),
            rps: None,
            timeout: Duration::from_secs(20),
        })
    }

    async fn measure(&self, spec: &LoadSpec, observer: Option<Observer>) -> anyhow::Result<Comparison> {
        let pool = loadgen::descriptor_pool()?;
        println!(
            "== {}: {} requests at most, {} clients, {} connections (Health/Check baseline first)",
            spec.name,
            spec.total.unwrap_or(0),
            spec.concurrency,
            spec.connections
        );
        let comparison = loadgen::run_with_baseline(spec, &pool, self.baseline_max, observer).await?;
        println!("{comparison}");
        Ok(comparison)
    }
}

fn result_text(report: &loadgen::Report, unit: &str, rate: f64) -> String {
    format!(
        "{rate:.0} {unit}/s, p50 {:.1} ms / p99 {:.1} ms ({} calls in {:.1} s)",
        report.percentile_ms(50),
        report.percentile_ms(99),
        report.count,
        report.total as f64 / 1e9
    )
}

/// One HoldSeats run on a fresh event with passes for `hold_users` users: 1,000 clients,
/// one-seat requests for seats drawn at random, the calls carrying `tokens`. Returns the
/// comparison with its baseline, what was held, and the event.
async fn hold_seats(
    config: &BenchConfig,
    channel: &Channel,
    tokens: Tokens,
) -> anyhow::Result<(Comparison, Held, String)> {
    let users = config.hold_users;
    let event = create_event(
        channel,
        &config.identity,
        &format!("Bench: holds ({})", tokens.label()),
        users.clamp(1, 100_000),
        3_600,
        1_000,
    )
    .await?;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let started = Instant::now();
    let holders = collect_passes(channel, &config.identity, &event.event_id, users).await?;
    println!(
        "event {}: {} seats; {} passes collected in {:.1} s",
        event.event_id,
        event.total_capacity,
        holders.len(),
        started.elapsed().as_secs_f64()
    );
    let hold_data: Vec<serde_json::Value> = holders
        .iter()
        .map(|p| {
            serde_json::json!({
                "pass_token": p.token,
                "event_id": event.event_id,
                "user_id": p.user_id,
                "seat_ids": [format!("{{{{randomSeat \"A\" 1 {ROWS} 1 {SEATS_PER_ROW}}}}}")],
            })
        })
        .collect();
    // Request n is data item n % users: its token is that user's (one per user, or a fresh
    // one for each of the requests).
    let count = match tokens {
        Tokens::PerUser => holders.len() as u64,
        Tokens::FreshPerCall => config.hold_requests,
    };
    let user_of = |n: u64| holders[(n % holders.len().max(1) as u64) as usize].user_id.clone();
    let metadata = token_array(&config.identity, count, tokens, user_of);
    let held: Arc<Mutex<Held>> = Arc::default();
    let observer: Observer = {
        let held = held.clone();
        let pay_max = config.pay_max;
        Arc::new(move |outcome| {
            if let Ok(bytes) = outcome.result
                && let Ok(hold) = pb::Hold::decode(bytes.clone())
                && let Ok(mut held) = held.lock()
            {
                for seat in &hold.seat_ids {
                    if !held.1.insert(seat.clone()) {
                        held.2 += 1;
                    }
                }
                if held.0.len() < pay_max {
                    held.0.push((hold.hold_id, hold.user_id));
                }
            }
        })
    };
    let spec = config.spec(
        &format!("HoldSeats ({})", tokens.label()),
        "ticketing.v1.SeatLockService/HoldSeats",
        serde_json::Value::Array(hold_data),
        Some(metadata),
        config.concurrency,
        config.hold_requests,
    )?;
    let holds = config.measure(&spec, Some(observer)).await?;
    let held = std::mem::take(&mut *held.lock().map_err(|_| anyhow::anyhow!("poisoned"))?);
    Ok((holds, held, event.event_id))
}

/// Makes a row of the run's date and machine: (what, result, baseline, target, met).
type RowMaker<'a> = dyn Fn(&str, String, String, &str, Option<bool>) -> Row + 'a;

/// `Health/Check` without a token (the baseline every row has), then with a fresh token on
/// every call, same clients and count: the difference is one full token verification per
/// call.
async fn health_with_tokens(config: &BenchConfig, row: &RowMaker<'_>) -> anyhow::Result<(Row, Scenario)> {
    let total = config.join_requests.min(config.hold_requests).max(1);
    let tokens = token_array(&config.identity, total, Tokens::FreshPerCall, |n| format!("health-{n}"));
    let spec = config.spec(
        "Health/Check with a fresh token per call",
        loadgen::HEALTH_CHECK,
        serde_json::json!({}),
        Some(tokens),
        config.concurrency,
        total,
    )?;
    let health = config.measure(&spec, None).await?;
    let errors = health.main.count - health.main.ok();
    let result = format!("{}; {errors} errors", result_text(&health.main, "req", health.main.rps));
    let row = row(
        &format!(
            "Health/Check with a fresh token per call (a full Ed25519 verification each): {} clients",
            config.concurrency
        ),
        result,
        health.ratio_text(),
        "",
        None,
    );
    Ok((
        row,
        Scenario { name: "Health/Check with tokens".into(), report: health, extra: serde_json::Value::Null },
    ))
}

/// Runs every scenario and writes the results.
pub async fn run(config: &BenchConfig) -> anyhow::Result<BenchResults> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let machine = format!("{cores} cores, {}", memory_total());
    let date = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let channel = channel(&config.target).await?;
    let mut scenarios = Vec::new();
    let mut rows = Vec::new();
    let row = |what: &str, result: String, baseline: String, target: &str, met: Option<bool>| Row {
        what: what.into(),
        result,
        baseline,
        target: target.into(),
        met,
        date: date.clone(),
        machine: machine.clone(),
    };

    // 1. HoldSeats with designed duplicates: one token per user, then (on a second event, so
    //    that it finds the same free seats) a fresh token per call.
    let mut pay_holds = Vec::new();
    let mut hold_events = Vec::new();
    let mut per_user_rps = None;
    for tokens in [Tokens::PerUser, Tokens::FreshPerCall] {
        let (holds, held, event_id) = hold_seats(config, &channel, tokens).await?;
        let (paid_later, seats_held, double_held) = held;
        if tokens == Tokens::PerUser {
            pay_holds = paid_later;
        }
        let taken = holds.main.status_code_distribution.get("Aborted").copied().unwrap_or(0);
        let hold_ok = holds.main.ok();
        let versus = per_user_rps
            .map(|rps: f64| format!("; {:.2}× the req/s of one token per user", holds.main.rps / rps))
            .unwrap_or_default();
        per_user_rps.get_or_insert(holds.main.rps);
        rows.push(row(
            &format!(
                "HoldSeats: {} clients, {} random seats of {}, designed duplicates; {}",
                config.concurrency,
                holds.main.count,
                ROWS * SEATS_PER_ROW,
                tokens.label()
            ),
            format!(
                "{}; {hold_ok} held, {taken} SEAT_TAKEN, {double_held} seats held twice{versus}",
                result_text(&holds.main, "req", holds.main.rps)
            ),
            holds.ratio_text(),
            "≥25,000 req/s, p99 ≤25 ms",
            Some(holds.main.rps >= 25_000.0 && holds.main.percentile_ms(99) <= 25.0 && double_held == 0),
        ));
        scenarios.push(Scenario {
            name: format!("HoldSeats ({})", tokens.label()),
            report: holds,
            extra: serde_json::json!({"eventId": event_id, "held": hold_ok, "seatTaken": taken, "distinctSeatsHeld": seats_held, "seatsHeldTwice": double_held}),
        });
        hold_events.push(event_id);
    }
    let hold_event_id = hold_events.first().cloned().unwrap_or_default();

    // 2. Join burst of unique users, with the FIFO check: one token per user (each user joins
    //    once, so each call verifies one token), then fresh tokens.
    let mut join_event_id = String::new();
    let mut per_user_rps = None;
    for tokens in [Tokens::PerUser, Tokens::FreshPerCall] {
        let (mut join_row, join_scenario) =
            admission::join_burst(config, config.join_requests, tokens, &date, &machine).await?;
        if join_event_id.is_empty() {
            join_event_id = join_scenario.extra["eventId"].as_str().unwrap_or_default().to_owned();
        }
        if let Some(rps) = per_user_rps {
            join_row.result.push_str(&format!(
                "; {:.2}× the joins/s of one token per user",
                join_scenario.report.main.rps / rps
            ));
        }
        per_user_rps.get_or_insert(join_scenario.report.main.rps);
        rows.push(join_row);
        scenarios.push(join_scenario);
    }

    // 2b. The like-for-like pair: Health/Check without a token, then with a fresh token per
    //     call; the health service sits behind the same auth layer as every RPC.
    let (health_row, health_scenario) = health_with_tokens(config, &row).await?;
    rows.push(health_row);
    scenarios.push(health_scenario);

    // 3. Pay for the holds made in 1.
    if !pay_holds.is_empty() {
        let data: Vec<serde_json::Value> = pay_holds
            .iter()
            .map(|(hold_id, user_id)| {
                serde_json::json!({
                    "idempotency_key": format!("bench-{}", hold_id.replace('-', "")),
                    "event_id": hold_event_id,
                    "hold_id": hold_id,
                    "user_id": user_id,
                    "payment_method": "pm_card_ok",
                })
            })
            .collect();
        let confirmed: Arc<std::sync::atomic::AtomicU64> = Arc::default();
        let observer: Observer = {
            let confirmed = confirmed.clone();
            Arc::new(move |outcome| {
                if let Ok(bytes) = outcome.result
                    && let Ok(paid) = pb::PayResponse::decode(bytes.clone())
                    && paid.payment.is_some_and(|p| p.status() == pb::PaymentStatus::Confirmed)
                {
                    confirmed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            })
        };
        let total = pay_holds.len() as u64;
        let tokens: Vec<serde_json::Value> = pay_holds
            .iter()
            .map(|(_, user_id)| {
                let bearer = config.identity.user(user_id);
                serde_json::json!({ AUTHORIZATION: bearer.value().to_str().unwrap_or_default() })
            })
            .collect();
        let spec = config.spec(
            "Pay",
            "ticketing.v1.PaymentService/Pay",
            serde_json::Value::Array(data),
            Some(serde_json::Value::Array(tokens)),
            PAY_CONCURRENCY.min(config.concurrency),
            total,
        )?;
        let pay = config.measure(&spec, Some(observer)).await?;
        let confirmed = confirmed.load(std::sync::atomic::Ordering::Relaxed);
        let bookings_per_sec = confirmed as f64 / (pay.main.total as f64 / 1e9);
        rows.push(row(
            &format!("Pay end to end: {} clients, holds prepared by HoldSeats", spec.concurrency),
            format!("{} ({confirmed} confirmed)", result_text(&pay.main, "bookings", bookings_per_sec)),
            pay.ratio_text(),
            "≥5,000 bookings/s",
            Some(bookings_per_sec >= 5_000.0),
        ));
        scenarios.push(Scenario {
            name: "Pay".into(),
            report: pay,
            extra: serde_json::json!({"confirmed": confirmed, "bookingsPerSecond": bookings_per_sec}),
        });
    }

    // 4. Reads from inventory's memory.
    for (name, call, total) in [
        ("GetAvailability", "ticketing.v1.InventoryService/GetAvailability", config.read_requests),
        ("GetSeatMap", "ticketing.v1.InventoryService/GetSeatMap", config.read_requests / 2),
    ] {
        let spec = config.spec(
            name,
            call,
            serde_json::json!({"event_id": hold_event_id}),
            None,
            config.concurrency,
            total,
        )?;
        let read = config.measure(&spec, None).await?;
        rows.push(row(
            &format!("{name} (50,000 seats): {} clients", config.concurrency),
            result_text(&read.main, "req", read.main.rps),
            read.ratio_text(),
            "",
            None,
        ));
        scenarios.push(Scenario { name: name.into(), report: read, extra: serde_json::Value::Null });
    }

    // 5. Fan-out of the live seat map to many watchers.
    rows.push(fanout_lag(config, FANOUT_WATCHERS, &date, &machine).await?);

    // 5b. Redis CPU per HoldBestAvailable, 95 % sold against empty (seat-lock's script on the
    // stack's Redis under a key prefix of its own; the idle stack's own Redis use is included).
    let holdbest = holdbest::HoldBestConfig {
        redis_url: config.redis_url.clone(),
        calls: holdbest::DEFAULT_CALLS,
        quantity: holdbest::DEFAULT_QUANTITY,
    };
    rows.push(holdbest::hold_best_cost(&holdbest, &date, &machine).await?);

    // 6. The whole sale is the flashsale simulator's; 7. memory of the services.
    rows.push(row(
        "Whole sale: 50,000 seats, 500,000 users (flashsale simulator)",
        "not run by bench: see `flashsale`".into(),
        String::new(),
        "sold out ≤30 s",
        None,
    ));
    let memory = service_memory(&config.state_dir);
    if memory.is_empty() {
        rows.push(row(
            "Memory per service",
            "no pid files found".into(),
            String::new(),
            "≤100 MB per service",
            None,
        ));
    } else {
        let peak = memory.iter().map(|m| m.vm_hwm_kb).max().unwrap_or(0);
        let text = memory
            .iter()
            .filter(|m| m.name != "haproxy")
            .map(|m| format!("{} {:.0} MB", m.name, m.vm_hwm_kb as f64 / 1024.0))
            .collect::<Vec<_>>()
            .join(", ");
        let services_peak =
            memory.iter().filter(|m| m.name != "haproxy").map(|m| m.vm_hwm_kb).max().unwrap_or(peak);
        rows.push(row(
            "Memory per service (peak RSS, VmHWM, after the bench)",
            text,
            String::new(),
            "≤100 MB per service",
            Some(services_peak <= 100 * 1024),
        ));
    }

    if let Some(dir) = &config.ghz_dir {
        ghz_files(&channel, &config.identity, dir).await?;
    }

    let results = BenchResults {
        date: chrono::Utc::now().to_rfc3339(),
        machine,
        cores,
        target: config.target.clone(),
        hold_event_id,
        join_event_id,
        scenarios,
        memory,
        rows,
    };
    if let Some(parent) = config.output.parent() {
        std::fs::create_dir_all(parent).ok();
    }
    std::fs::write(&config.output, serde_json::to_string_pretty(&results)?)
        .with_context(|| format!("cannot write {}", config.output.display()))?;
    println!("results written to {}", config.output.display());
    Ok(results)
}

/// Makes a fresh event with one user's pass and one hold (seat `A-500-100`) on it, and prints
/// them: what the ghz configs need.
async fn ghz_files(channel: &Channel, identity: &Identity, dir: &Path) -> anyhow::Result<()> {
    let event = create_event(channel, identity, "Bench: ghz configs", 10, 3_600, 1_000).await?;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let pass = collect_passes(channel, identity, &event.event_id, 1)
        .await?
        .pop()
        .context("no pass for the ghz files")?;
    let hold = SeatLockServiceClient::new(channel.clone())
        .hold_seats(identity.as_user(
            &pass.user_id,
            pb::HoldSeatsRequest {
                pass_token: pass.token.clone(),
                event_id: event.event_id.clone(),
                user_id: pass.user_id.clone(),
                seat_ids: vec![format!("A-{ROWS}-{SEATS_PER_ROW}")],
            },
        ))
        .await
        .context("HoldSeats for the ghz files")?
        .into_inner();
    println!(
        "for the ghz configs: EVENT_ID {} PASS_USER_ID {} PAY_HOLD_ID {}\nPASS_TOKEN {}",
        event.event_id, pass.user_id, hold.hold_id, pass.token
    );
    write_ghz_files(dir, identity, &event.event_id, &pass, &hold.hold_id, &hold.user_id)
}

/// Fills the checked-in ghz configs (`tools/ghz/*.json`) with a real event, pass and hold,
/// and their users' tokens: `PASS_USER_TOKEN` and `PAY_USER_TOKEN`, and for `USER_TOKENS`
/// (the join of unique users `ghz-user-<n>`) a metadata array with one token per request.
/// The files hold tokens, so only their owner may read them.
fn write_ghz_files(
    dir: &Path,
    identity: &Identity,
    event_id: &str,
    pass: &PassHolder,
    hold_id: &str,
    hold_user: &str,
) -> anyhow::Result<()> {
    let source = crate::stack::workspace_root().join("tools/ghz");
    std::fs::create_dir_all(dir)?;
    for entry in std::fs::read_dir(&source)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "json")
            && let Some(name) = path.file_name()
        {
            let bearer = |user: &str| identity.token(user, false, crate::identity::TOOL_TOKEN_TTL);
            let text = std::fs::read_to_string(&path)?
                .replace("EVENT_ID", event_id)
                .replace("PASS_USER_TOKEN", &bearer(&pass.user_id))
                .replace("PAY_USER_TOKEN", &bearer(hold_user))
                .replace("PASS_TOKEN", &pass.token)
                .replace("PASS_USER_ID", &pass.user_id)
                .replace("PAY_HOLD_ID", hold_id)
                .replace("PAY_USER_ID", hold_user);
            let mut config: serde_json::Value = serde_json::from_str(&text)?;
            if config["metadata"][AUTHORIZATION] == "Bearer USER_TOKENS" {
                let total = config["total"].as_u64().unwrap_or(1);
                config["metadata"] =
                    token_array(identity, total, Tokens::PerUser, |n| format!("ghz-user-{n}"));
            }
            crate::identity::write_private(&dir.join(name), &serde_json::to_string_pretty(&config)?)?;
        }
    }
    println!("ghz configs with a real event, pass and hold written to {}", dir.display());
    Ok(())
}

fn memory_total() -> String {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let kb: u64 = text
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    format!("{:.0} GiB", kb as f64 / 1024.0 / 1024.0)
}

fn status_kb(status: &str, key: &str) -> u64 {
    status
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// VmHWM and VmRSS of every process with a pid file under `state_dir/pids`.
pub fn service_memory(state_dir: &Path) -> Vec<ProcessMemory> {
    crate::stack::pid_files(state_dir)
        .into_iter()
        .filter_map(|(name, pid)| {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
            Some(ProcessMemory {
                name,
                pid,
                vm_hwm_kb: status_kb(&status, "VmHWM:"),
                vm_rss_kb: status_kb(&status, "VmRSS:"),
            })
        })
        .collect()
}

/// The Markdown table of the rows.
pub fn table(rows: &[Row]) -> String {
    let mut out =
        String::from("| what | result | baseline (Health/Check) ratio | target | met | date | machine |\n");
    out.push_str("| --- | --- | --- | --- | --- | --- | --- |\n");
    for r in rows {
        let met = match r.met {
            Some(true) => "yes",
            Some(false) => "no",
            None => "—",
        };
        let cell = |s: &str| if s.is_empty() { "—".to_owned() } else { s.replace('|', "\\|") };
        out.push_str(&format!(
            "| {} | {} | {} | {} | {met} | {} | {} |\n",
            cell(&r.what),
            cell(&r.result),
            cell(&r.baseline),
            cell(&r.target),
            r.date,
            r.machine
        ));
    }
    out
}

/// Replaces the text between the bench markers of `readme` with `table`, keeping the rows the
/// flashsale simulator's runs wrote there: the whole sale, and the sale under chaos (after the
/// whole sale). Returns false (and changes nothing) when the markers are missing.
pub fn update_readme(readme: &Path, table_text: &str) -> anyhow::Result<bool> {
    let text =
        std::fs::read_to_string(readme).with_context(|| format!("cannot read {}", readme.display()))?;
    let (Some(start), Some(end)) = (text.find(TABLE_START), text.find(TABLE_END)) else { return Ok(false) };
    if end < start {
        return Ok(false);
    }
    let inside = &text[start + TABLE_START.len()..end];
    let mut table_text = table_text.to_owned();
    // A whole-sale row measured by `flashsale` wins over the bench's placeholder.
    if let Some(measured) =
        inside.lines().find(|l| l.starts_with("| Whole sale") && !l.contains("not run by bench"))
    {
        let kept: Vec<String> = table_text
            .lines()
            .map(|l| if l.starts_with("| Whole sale") { measured.to_owned() } else { l.to_owned() })
            .collect();
        table_text = kept.join("\n") + "\n";
    }
    if let Some(chaos) = inside.lines().find(|l| l.starts_with(CHAOS_ROW))
        && !table_text.contains(CHAOS_ROW)
    {
        let mut rows: Vec<&str> = table_text.lines().collect();
        let after = rows.iter().position(|l| l.starts_with("| Whole sale")).map_or(rows.len(), |i| i + 1);
        rows.insert(after, chaos);
        table_text = rows.join("\n") + "\n";
    }
    let updated = format!("{}{TABLE_START}\n{table_text}{}", &text[..start], &text[end..]);
    std::fs::write(readme, updated)?;
    Ok(true)
}

/// `WatchSeatMap` watchers of the fan-out scenario: the most inventory admits at once.
const FANOUT_WATCHERS: usize = 10_000;

/// Time a `WatchSeatMap` watcher may take to get its snapshot, and later its delta.
const WATCH_TIMEOUT: Duration = Duration::from_secs(60);

/// Fan-out lag of the live seat map: `watchers` `WatchSeatMap` streams on a 50,000-seat
/// event, spread over `config.connections` connections; once every watcher has its snapshot,
/// one seat is held, and the time until each watcher receives the delta naming that seat is
/// measured (seat-lock → Redis outbox → JetStream → inventory → 100 ms coalescing → stream).
pub async fn fanout_lag(
    config: &BenchConfig,
    watchers: usize,
    date: &str,
    machine: &str,
) -> anyhow::Result<Row> {
    const SEAT: &str = "A-1-1";
    let channel = channel(&config.target).await?;
    let identity = &config.identity;
    let event = create_event(&channel, identity, "Bench: seat-map fan-out", 10, 600, 1_000).await?;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let holder = collect_passes(&channel, identity, &event.event_id, 1).await?.pop().context("no pass")?;
    let mut channels = Vec::with_capacity(config.connections.max(1));
    for _ in 0..config.connections.max(1) {
        channels.push(self::channel(&config.target).await?);
    }

    let ready = Arc::new(tokio::sync::Semaphore::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for watcher in 0..watchers {
        let mut inventory = InventoryServiceClient::new(channels[watcher % channels.len()].clone());
        let (event_id, ready) = (event.event_id.clone(), ready.clone());
        tasks.spawn(async move {
            let watch = async {
                let mut stream = inventory
                    .watch_seat_map(pb::WatchSeatMapRequest { event_id, zone_id: "A".into() })
                    .await?
                    .into_inner();
                stream.message().await?.context("no snapshot")?;
                ready.add_permits(1);
                while let Some(update) = stream.message().await? {
                    if let Some(pb::seat_map_update::Update::Delta(delta)) = update.update
                        && delta.changes.iter().any(|c| c.seat_id == SEAT)
                    {
                        return anyhow::Ok(Instant::now());
                    }
                }
                bail!("the stream ended before the delta")
            };
            tokio::time::timeout(WATCH_TIMEOUT, watch).await.map_err(|_| anyhow::anyhow!("timed out"))?
        });
    }
    let all_ready = tokio::time::timeout(WATCH_TIMEOUT, ready.acquire_many(watchers as u32)).await;
    let snapshots = if all_ready.is_ok() { watchers } else { ready.available_permits() };
    let held_at = Instant::now();
    SeatLockServiceClient::new(channel)
        .hold_seats(identity.as_user(
            &holder.user_id,
            pb::HoldSeatsRequest {
                pass_token: holder.token.clone(),
                event_id: event.event_id.clone(),
                user_id: holder.user_id.clone(),
                seat_ids: vec![SEAT.into()],
            },
        ))
        .await
        .context("HoldSeats")?;
    let mut lags_ms = Vec::with_capacity(watchers);
    let mut failures = 0;
    while let Some(result) = tasks.join_next().await {
        match result {
            Ok(Ok(at)) => lags_ms.push(at.saturating_duration_since(held_at).as_secs_f64() * 1_000.0),
            _ => failures += 1,
        }
    }
    lags_ms.sort_by(f64::total_cmp);
    let at = |q: f64| {
        lags_ms.get(((lags_ms.len() as f64 - 1.0) * q).round() as usize).copied().unwrap_or(f64::NAN)
    };
    let inventory_memory = service_memory(&config.state_dir)
        .into_iter()
        .find(|m| m.name == "inventory")
        .map_or_else(|| "n/a".to_owned(), |m| format!("{} MB", m.vm_hwm_kb / 1024));
    Ok(Row {
        what: format!("WatchSeatMap fan-out: {watchers} watchers of a 50,000-seat zone, one seat held"),
        result: format!(
            "{} of {watchers} got their snapshot, {} the delta ({failures} failed); lag p50 {:.0} ms / p99 {:.0} ms / max {:.0} ms; inventory peak RSS {inventory_memory}",
            snapshots,
            lags_ms.len(),
            at(0.5),
            at(0.99),
            at(1.0)
        ),
        baseline: "—".into(),
        target: "a change shows within a second".into(),
        met: Some(failures == 0 && at(0.99) <= 1_000.0),
        date: date.into(),
        machine: machine.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readme_table_is_replaced_between_markers() -> anyhow::Result<()> {
        let dir = std::env::temp_dir().join(format!("bench-readme-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir)?;
        let readme = dir.join("README.md");
        std::fs::write(
            &readme,
            format!("a\n{TABLE_START}\nold\n| Whole sale | 25 s |\n{CHAOS_ROW} | ok |\n{TABLE_END}\nb\n"),
        )?;
        let table = "| what |\n| Whole sale | not run by bench |\n| x |\n";
        assert!(update_readme(&readme, table)?);
        let text = std::fs::read_to_string(&readme)?;
        assert_eq!(
            text,
            format!(
                "a\n{TABLE_START}\n| what |\n| Whole sale | 25 s |\n{CHAOS_ROW} | ok |\n| x |\n{TABLE_END}\nb\n"
            )
        );
        std::fs::write(&readme, "no markers")?;
        assert!(!update_readme(&readme, table)?);
        std::fs::remove_dir_all(&dir).ok();
        Ok(())
    }
}
