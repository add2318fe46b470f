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
//! reconciliation ([`verify`]); see [`crate::report`] for the JSON and HTML reports.
//!
//! [`run_with`] also runs a chaos [`Schedule`] of faults from the opening on, and verifies
//! only once the last fault has recovered ([`crate::chaos`] starts the private stack it needs).

pub mod line;
pub mod pay;
pub mod retry;
pub mod stats;
pub mod user;
pub mod verify;

use std::{
    io::IsTerminal,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use serde::Serialize;
use ticketing_proto::v1::{self as pb, inventory_service_client::InventoryServiceClient};

use crate::{
    chaos::{ChaosConfig, FaultRecord, Schedule, ServiceRestart},
    cpu::{CpuSnapshot, CpuUse},
    identity::Identity,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tonic::transport::Channel;

use self::{
    line::{Arrival, Line, Rejoin},
    stats::{Sample, Stats},
    user::{Ctx, Joined, Records},
    verify::Verification,
};

/// Joins in flight at once: a Join is short, so this is just enough to keep the admission
/// service busy without opening a task per user at the opening instant.
const JOIN_CONCURRENCY: usize = 512;
/// Pre-queue users asked for their place at once after the opening: enough to order 100,000
/// users well within the check-in window, few enough not to crowd out the sale itself.
const ORDER_CONCURRENCY: usize = 256;
/// Users joining again at once after admission lost its queue, as Joins at the opening.
const REJOIN_CONCURRENCY: usize = JOIN_CONCURRENCY;
/// Sessions started outside the line's bound for users whose Join again came back with a
/// pass; about one event's admission capacity, the most passes that can be out at once.
const ADMITTED_SESSIONS: usize = 2_000;
/// This process's name in the CPU split and the memory figures.
pub const SELF_NAME: &str = "flashsale (this simulator)";
/// How often the timeline is sampled (and the progress display refreshed).
const SAMPLE_EVERY: Duration = Duration::from_secs(1);

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

/// Long enough for abandoned holds to expire and for the slowest card (60 s) to finish.
fn settle_secs(hold_ttl_secs: u64) -> u64 {
    hold_ttl_secs.max(60) + 30
}

/// A card slower than the hold TTL, within the sandbox's 60 s cap.
pub fn default_slow_pay_ms(hold_ttl_secs: u64) -> u64 {
    (hold_ttl_secs * 1000 + 2_000).min(60_000)
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

/// Everything a run produced.
#[derive(Debug, Serialize)]
pub struct Outcome {
    pub config: SimConfig,
    pub event_id: String,
    pub capacity: u64,
    pub timings: Timings,
    pub stages: serde_json::Value,
    pub rpcs: Vec<stats::RpcSummary>,
    pub timeline: Vec<Sample>,
    pub verification: Verification,
    /// Peak resident memory (VmHWM) of each stack process and of the simulator, in KiB.
    pub peak_memory_kib: Vec<(String, u64)>,
    /// CPU per process from the first arrival until the users were done, busiest first.
    pub cpu: Vec<CpuUse>,
    pub error_samples: Vec<String>,
    /// The faults of a chaos run, in order.
    pub faults: Vec<FaultRecord>,
    /// Every death of a service in a chaos run and its way back.
    pub restarts: Vec<ServiceRestart>,
    /// When the sale opened on this process's clock; every `*_secs` instant counts from it.
    #[serde(skip)]
    pub opened_at: Instant,
}

impl Outcome {
    /// Whether every invariant held.
    pub fn ok(&self) -> bool {
        self.verification.violations.is_empty()
    }
}

async fn connect(config: &SimConfig) -> anyhow::Result<Vec<Channel>> {
    let mut channels = Vec::with_capacity(config.connections);
    for _ in 0..config.connections.max(1) {
        channels.push(
            tonic::transport::Endpoint::from_shared(config.target.clone())?
                .tcp_nodelay(true)
                .connect_timeout(Duration::from_secs(5))
                .http2_keep_alive_interval(Duration::from_secs(30))
                .connect()
                .await
                .with_context(|| format!("cannot connect to {}", config.target))?,
        );
    }
    Ok(channels)
}

fn timestamp(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: ms / 1000, nanos: ((ms % 1000) * 1_000_000) as i32 }
}

/// Seats per row so that a zone of `seats` fits the 500-row limit.
fn seats_per_row(seats: u32) -> u32 {
    seats.div_ceil(400).clamp(25, 1_000)
}

/// Creates the venue and the event through the public API.
async fn create_event(channel: Channel, config: &SimConfig) -> anyhow::Result<pb::Event> {
    let mut inventory = InventoryServiceClient::new(channel);
    let seated = |zone_id: &str, name: &str, price: i64, seats: u32| {
        let per_row = seats_per_row(seats).min(seats.max(1));
        let rows = seats.div_ceil(per_row).max(1);
        pb::ZoneSpec {
            zone_id: zone_id.into(),
            name: name.into(),
            price_cents: price,
            layout: Some(pb::zone_spec::Layout::Seated(pb::SeatedLayout {
                row_labels: (1..=rows).map(|r| format!("R{r}")).collect(),
                seats_per_row: per_row,
                accessible_seat_ids: vec![],
            })),
        }
    };
    let floor = config.seats / 5;
    let lower = (config.seats - floor) / 2;
    let upper = config.seats - floor - lower;
    let mut zones = Vec::new();
    for (id, name, price, seats) in [
        ("FLOOR", "Floor", 15_000, floor),
        ("LOWER", "Lower tier", 9_000, lower),
        ("UPPER", "Upper tier", 5_500, upper),
    ] {
        if seats > 0 {
            zones.push(seated(id, name, price, seats));
        }
    }
    if config.ga_capacity > 0 {
        zones.push(pb::ZoneSpec {
            zone_id: "GA".into(),
            name: "Standing".into(),
            price_cents: 4_000,
            layout: Some(pb::zone_spec::Layout::GeneralAdmission(pb::GeneralAdmissionLayout {
                capacity: config.ga_capacity,
            })),
        });
    }
    let admin = config.identity.admin();
    let venue = inventory
        .create_venue(admin.request(pb::CreateVenueRequest { name: "Flash-sale arena".into(), zones }))
        .await
        .context("CreateVenue")?
        .into_inner()
        .venue
        .context("CreateVenue answered no venue")?;
    let now = chrono::Utc::now().timestamp_millis();
    inventory
        .create_event(admin.request(pb::CreateEventRequest {
            venue_id: venue.venue_id,
            name: "The flash-sale concert".into(),
            starts_at: Some(timestamp(now + 30 * 86_400_000)),
            sale_opens_at: Some(timestamp(now + (config.open_in_secs * 1000.0) as i64)),
            max_tickets_per_user: config.max_tickets_per_user,
            currency: "EUR".into(),
            admission_capacity: config.admission_capacity,
            admission_tick_ms: config.admission_tick_ms,
            pass_ttl_seconds: config.pass_ttl_secs,
            cancellation_cutoff_seconds: 0,
        }))
        .await
        .context("CreateEvent")?
        .into_inner()
        .event
        .context("CreateEvent answered no event")
}

/// When user `index` arrives, relative to the opening.
fn arrival(config: &SimConfig, index: u32) -> f64 {
    let pre = (f64::from(config.users) * config.prequeue_share).round() as u32;
    if index < pre {
        // Evenly over the pre-queue window, which ends half a second before opening.
        let window = (config.open_in_secs - 0.5).max(0.1) * 0.9;
        -(config.open_in_secs - 0.5).max(0.1) + window * f64::from(index) / f64::from(pre.max(1))
    } else {
        let rest = config.users - pre;
        config.ramp_secs * f64::from(index - pre) / f64::from(rest.max(1))
    }
}

/// Runs the sale, waits for it to settle, verifies it and returns what happened (the
/// reports are written by [`crate::report::write`]).
pub async fn run(config: SimConfig) -> anyhow::Result<Outcome> {
    run_with(config, None).await
}

/// [`run`], with `chaos`'s faults from the opening on; verification waits for the last one.
pub async fn run_with(config: SimConfig, chaos: Option<Schedule>) -> anyhow::Result<Outcome> {
    let setup_started = Instant::now();
    let channels = connect(&config).await?;
    let event = create_event(channels[0].clone(), &config).await?;
    let capacity = u64::from(event.total_capacity);
    let opened_at = Instant::now() + Duration::from_secs_f64(config.open_in_secs);
    let stats = Arc::new(Stats::new(opened_at)?);
    let (back_to_line, mut back_in_line) = mpsc::unbounded_channel::<Joined>();
    let ctx = Arc::new(Ctx {
        config: config.clone(),
        event,
        channels,
        stats: stats.clone(),
        records: Records::default(),
        faults: Arc::default(),
        queue_lost: watch::Sender::new(None),
        waiting: Default::default(),
        line_head: AtomicU64::new(u64::MAX),
        back_to_line,
        going_back: AtomicUsize::new(0),
    });
    let chaos = chaos.map(|schedule| {
        let (lb, event_id) = (ctx.channels[0].clone(), ctx.event.event_id.clone());
        tokio::spawn(schedule.run(lb, event_id, opened_at, ctx.faults.clone()))
    });
    let mut timings = Timings { setup_secs: setup_started.elapsed().as_secs_f64(), ..Default::default() };
    let deadline = tokio::time::Instant::from_std(opened_at + Duration::from_secs(config.max_secs));

    let cpu_before = CpuSnapshot::take(config.pids_dir.as_deref(), SELF_NAME);
    let progress = progress::Display::new(&config, capacity);
    let (done_tx, done_rx) = tokio::sync::watch::channel(false);
    let sampler = tokio::spawn(sample(ctx.clone(), progress.clone(), done_rx));

    // Arrivals: Join at the arrival instant (bounded concurrency), then queues of joined users
    // that a dispatcher turns into sessions as slots free up, in the order admission will
    // admit them: the pre-queue in its shuffled order first, then the rest first come, first
    // served.
    let pre_window = (f64::from(config.users) * config.prequeue_share).round() as u32;
    let (arrived_tx, mut arrived_rx) = mpsc::unbounded_channel::<Arrival>();
    let arrivals = {
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let joins = Arc::new(Semaphore::new(JOIN_CONCURRENCY));
            for index in 0..ctx.config.users {
                if index == pre_window {
                    // Every pre-queue join has answered: its users can be put in order.
                    let _ = joins.acquire_many(JOIN_CONCURRENCY as u32).await;
                    let _ = arrived_tx.send(Arrival::PreQueueComplete);
                }
                let offset = arrival(&ctx.config, index);
                let at = if offset < 0.0 {
                    opened_at.checked_sub(Duration::from_secs_f64(-offset)).unwrap_or(opened_at)
                } else {
                    opened_at + Duration::from_secs_f64(offset)
                };
                tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await;
                if tokio::time::Instant::now() >= deadline {
                    break;
                }
                let Ok(permit) = joins.clone().acquire_owned().await else { break };
                Stats::bump(&ctx.stats.stages.arrived);
                let (ctx, arrived_tx) = (ctx.clone(), arrived_tx.clone());
                tokio::spawn(async move {
                    let _permit = permit;
                    let token = user::token(&ctx, index);
                    match tokio::time::timeout_at(deadline, user::join(&ctx, index, token)).await {
                        Ok(Ok(joined)) => {
                            Stats::bump(&ctx.stats.stages.joined);
                            let _ = arrived_tx.send(Arrival::Joined(joined));
                        }
                        Ok(Err(status)) => {
                            Stats::bump(&ctx.stats.stages.join_failed);
                            Stats::bump(&ctx.stats.stages.finished);
                            ctx.error(index, format!("Join: {}", retry::brief(&status)));
                        }
                        Err(_) => {}
                    }
                });
            }
            // Wait for the last joins, then close the queue.
            let _ = joins.acquire_many(JOIN_CONCURRENCY as u32).await;
            if pre_window >= ctx.config.users {
                let _ = arrived_tx.send(Arrival::PreQueueComplete);
            }
        })
    };

    let sessions = Arc::new(Semaphore::new(config.max_in_flight));
    let admitted_sessions = Arc::new(Semaphore::new(ADMITTED_SESSIONS));
    let mut line = Line::default();
    let (ordered_tx, mut ordered_rx) = mpsc::unbounded_channel::<Joined>();
    let mut ordered_tx = Some(ordered_tx);
    let (mut arrivals_open, mut ordering_open) = (true, true);
    // When admission loses its queue (its Redis restarted), every waiting page joins again;
    // the users waiting here for a session are those pages.
    let (rejoin_tx, mut rejoin_rx) = mpsc::unbounded_channel::<Rejoin>();
    let mut queue_lost = ctx.queue_lost.subscribe();
    let (mut rejoins_in_flight, mut last_rejoin) = (0usize, f64::NEG_INFINITY);
    loop {
        if tokio::time::Instant::now() >= deadline {
            timings.stopped_by_max_secs = true;
            break;
        }
        while let Ok(arrived) = arrived_rx.try_recv() {
            line.arrive(arrived, &ctx, &mut ordered_tx);
        }
        while let Ok(joined) = ordered_rx.try_recv() {
            if let Some(joined) = started_if_admitted(&ctx, joined, &admitted_sessions, deadline) {
                line.ordered(joined);
            }
        }
        while let Ok(joined) = back_in_line.try_recv() {
            ctx.going_back.fetch_sub(1, Ordering::Relaxed);
            line.rejoined(joined);
        }
        while let Ok(message) = rejoin_rx.try_recv() {
            match message {
                Rejoin::Joined(joined) => {
                    if let Some(joined) = started_if_admitted(&ctx, joined, &admitted_sessions, deadline) {
                        line.rejoined(joined);
                    }
                }
                Rejoin::Done => rejoins_in_flight -= 1,
            }
        }
        // A user who joined after the last mass re-join found its place gone: the queue was
        // lost again since.
        if let Some(lost) = *queue_lost.borrow_and_update()
            && lost >= last_rejoin
        {
            last_rejoin = stats.since_open();
            rejoins_in_flight += 1;
            tokio::spawn(line::rejoin(ctx.clone(), line.drain(), rejoin_tx.clone()));
        }
        let next = line.next(ordering_open);
        ctx.line_head.store(line.head_ticket(), Ordering::Relaxed);
        let Some(next) = next else {
            if !arrivals_open
                && !ordering_open
                && rejoins_in_flight == 0
                && ctx.going_back.load(Ordering::Relaxed) == 0
            {
                break;
            }
            tokio::select! {
                joined = back_in_line.recv() => if let Some(joined) = joined {
                    ctx.going_back.fetch_sub(1, Ordering::Relaxed);
                    line.rejoined(joined);
                },
                message = rejoin_rx.recv() => match message {
                    Some(Rejoin::Joined(joined)) => {
                        if let Some(joined) = started_if_admitted(&ctx, joined, &admitted_sessions, deadline) {
                            line.rejoined(joined);
                        }
                    }
                    Some(Rejoin::Done) => rejoins_in_flight -= 1,
                    None => {}
                },
                _ = queue_lost.changed() => {}
                arrived = arrived_rx.recv(), if arrivals_open => match arrived {
                    Some(arrived) => line.arrive(arrived, &ctx, &mut ordered_tx),
                    None => {
                        arrivals_open = false;
                        // Arrivals stopped early (deadline): nothing more is ordered.
                        ordered_tx = None;
                    }
                },
                joined = ordered_rx.recv(), if ordering_open => match joined {
                    Some(joined) => {
                        if let Some(joined) = started_if_admitted(&ctx, joined, &admitted_sessions, deadline) {
                            line.ordered(joined);
                        }
                    }
                    None => ordering_open = false,
                },
                () = tokio::time::sleep_until(deadline) => {}
            }
            continue;
        };
        let permit = tokio::select! {
            permit = sessions.clone().acquire_owned() => permit?,
            () = tokio::time::sleep_until(deadline) => {
                line.put_back(next);
                continue;
            }
        };
        start_session(&ctx, next, permit, deadline);
    }
    arrivals.abort();
    // Every session ends by the deadline at the latest.
    let _ = sessions.acquire_many(config.max_in_flight as u32).await?;
    let _ = admitted_sessions.acquire_many(ADMITTED_SESSIONS as u32).await?;
    timings.users_done_secs = stats.since_open();
    let cpu = cpu_before.split_until(&CpuSnapshot::take(config.pids_dir.as_deref(), SELF_NAME));
    // The faults left when the users are done still happen: the mesh must come back from
    // them before it is verified.
    if let Some(chaos) = chaos {
        let _ = chaos.await;
    }
    let _ = done_tx.send(true);
    let _ = sampler.await;
    progress.finish();

    let settle_started = Instant::now();
    let verification = verify::verify(&ctx, &mut timings).await?;
    timings.verify_secs = settle_started.elapsed().as_secs_f64() - timings.settle_secs;
    let timeline = stats.timeline.lock().map(|t| t.clone()).unwrap_or_default();
    timings.no_free_seat_secs = timeline.iter().find(|s| s.t > 0.0 && s.inventory_free == 0).map(|s| s.t);
    timings.sold_out_secs = timeline.iter().find(|s| s.t > 0.0 && s.inventory_sold >= capacity).map(|s| s.t);
    if timings.sold_out_secs.is_none() && verification.seats_sold >= capacity {
        timings.sold_out_secs = Some(timings.users_done_secs);
    }
    let s = &stats.stages;
    let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let stages = serde_json::json!({
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
            .map(|(n, c)| (if n + 1 == stats::RETRY_BUCKETS { format!("{n}+") } else { n.to_string() }, get(c).into()))
            .collect::<serde_json::Map<String, serde_json::Value>>(),
        "map_looks_after_refusal": get(&s.map_looks_after_refusal),
    });
    let error_samples = ctx.records.error_samples.lock().map(|e| e.clone()).unwrap_or_default();
    let faults = ctx.faults.lock().map(|f| f.clone()).unwrap_or_default();
    Ok(Outcome {
        faults,
        restarts: Vec::new(),
        opened_at,
        event_id: ctx.event.event_id.clone(),
        capacity,
        timings,
        stages,
        rpcs: stats.summaries(),
        timeline,
        verification,
        peak_memory_kib: crate::report::peak_memory(config.pids_dir.as_deref()),
        cpu,
        error_samples,
        config,
    })
}

/// Runs `joined`'s session in a task holding `permit` until it ends or `deadline` passes.
fn start_session(
    ctx: &Arc<Ctx>,
    joined: Joined,
    permit: OwnedSemaphorePermit,
    deadline: tokio::time::Instant,
) {
    let ctx = ctx.clone();
    tokio::spawn(async move {
        let _permit = permit;
        let index = joined.index;
        match tokio::time::timeout_at(deadline, user::session(&ctx, joined)).await {
            // Its user is back in the line: its visit goes on in another session.
            Ok(Ok(user::Visit::BackInLine)) => return,
            Ok(Ok(user::Visit::Ended)) => {}
            Ok(Err(error)) => ctx.error(index, format!("{error:#}")),
            Err(_) => {}
        }
        Stats::bump(&ctx.stats.stages.finished);
    });
}

/// Starts the session of a user who joined again after admission lost its queue and whose
/// Join came back with a pass (admission admitted it meanwhile, and the Join collected the
/// pass) at once, beside the sessions waiting in line: otherwise its pass would hold an
/// admission slot while every session slot waits for admission. Hands back the others.
fn started_if_admitted(
    ctx: &Arc<Ctx>,
    joined: Joined,
    admitted_sessions: &Arc<Semaphore>,
    deadline: tokio::time::Instant,
) -> Option<Joined> {
    if joined.pass.is_none() {
        return Some(joined);
    }
    match admitted_sessions.clone().try_acquire_owned() {
        Ok(permit) => {
            start_session(ctx, joined, permit, deadline);
            None
        }
        Err(_) => Some(joined),
    }
}

/// Samples the timeline every second until `done`, feeding the progress display.
async fn sample(ctx: Arc<Ctx>, progress: progress::Display, mut done: tokio::sync::watch::Receiver<bool>) {
    let mut inventory = InventoryServiceClient::new(ctx.channels[0].clone());
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = done.changed() => return,
        }
        let availability = inventory
            .get_availability(pb::GetAvailabilityRequest { event_id: ctx.event.event_id.clone() })
            .await
            .map(tonic::Response::into_inner)
            .ok();
        let sum = |f: fn(&pb::ZoneAvailability) -> u32| {
            availability.as_ref().map_or(0, |a| a.zones.iter().map(|z| u64::from(f(z))).sum())
        };
        let s = &ctx.stats.stages;
        let sample = Sample {
            t: ctx.stats.since_open(),
            joined: Stats::get(&s.joined),
            admitted: Stats::get(&s.admitted),
            holds: Stats::get(&s.held),
            paid: Stats::get(&s.paid),
            queue_length: Stats::get(&s.queue_length),
            inventory_held: sum(|z| z.held),
            inventory_sold: sum(|z| z.sold),
            inventory_free: if availability.is_some() { sum(|z| z.free) } else { u64::MAX },
            users_in_flight: Stats::get(&s.watching)
                .saturating_sub(Stats::get(&s.finished).saturating_sub(Stats::get(&s.join_failed))),
        };
        progress.update(&ctx.stats, &sample);
        if let Ok(mut timeline) = ctx.stats.timeline.lock() {
            timeline.push(sample);
        }
    }
}

mod progress {
    //! The live display: one bar of finished users and a line of stage counts and rates.

    use std::sync::{Arc, Mutex};

    use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

    use super::{
        IsTerminal, SimConfig,
        stats::{Sample, Stats},
    };

    /// Shown only on a terminal and unless disabled.
    #[derive(Clone)]
    pub struct Display {
        bars: Option<(ProgressBar, ProgressBar)>,
        last: Arc<Mutex<Option<Sample>>>,
    }

    impl Display {
        pub fn new(config: &SimConfig, capacity: u64) -> Self {
            if !config.progress || !std::io::stdout().is_terminal() {
                return Self { bars: None, last: Arc::default() };
            }
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stdout_with_hz(4));
            let users = multi.add(ProgressBar::new(u64::from(config.users)));
            users.set_style(
                ProgressStyle::with_template("users {bar:30.cyan} {pos}/{len} done  {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            let seats = multi.add(ProgressBar::new(capacity));
            seats.set_style(
                ProgressStyle::with_template("seats {bar:30.green} {pos}/{len} sold  {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            Self { bars: Some((users, seats)), last: Arc::default() }
        }

        pub fn update(&self, stats: &Stats, sample: &Sample) {
            let Some((users, seats)) = &self.bars else { return };
            let previous = self.last.lock().ok().and_then(|mut last| last.replace(sample.clone()));
            let rate = |now: u64, before: Option<u64>, dt: f64| {
                before.map_or(0.0, |b| now.saturating_sub(b) as f64 / dt.max(0.001))
            };
            let dt = previous.as_ref().map_or(1.0, |p| sample.t - p.t);
            users.set_position(Stats::get(&stats.stages.finished));
            users.set_message(format!(
                "t={:+.0}s joined {} ({:.0}/s) queue {} admitted {} ({:.0}/s) holds {} paid {} ({:.0}/s) errors {}",
                sample.t,
                sample.joined,
                rate(sample.joined, previous.as_ref().map(|p| p.joined), dt),
                sample.queue_length,
                sample.admitted,
                rate(sample.admitted, previous.as_ref().map(|p| p.admitted), dt),
                sample.holds,
                sample.paid,
                rate(sample.paid, previous.as_ref().map(|p| p.paid), dt),
                Stats::get(&stats.stages.errors),
            ));
            seats.set_position(sample.inventory_sold);
            seats.set_message(format!("held {} free {}", sample.inventory_held, sample.inventory_free));
        }

        pub fn finish(&self) {
            if let Some((users, seats)) = &self.bars {
                users.abandon();
                seats.abandon();
            }
        }
    }
}
