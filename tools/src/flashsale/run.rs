//! One sale from start to end: setup, the arrivals, the dispatcher that starts sessions in
//! admission's order, any disruption beside it, then settling, verification and the
//! [`Outcome`].

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};

use super::{
    arrivals,
    config::SimConfig,
    ctx::{Ctx, Joined, Records},
    line::{self, Arrival, Line, Rejoin},
    progress::{Display, sample},
    setup::{connect, create_event},
    stats::{self, Sample, Stats, Timings},
    user,
    verify::{self, Verification},
};
use crate::{
    faults::{Disruption, FaultRecord, ServiceRestart, Target},
    procfs::{
        self,
        cpu::{CpuSnapshot, CpuUse},
    },
};

/// Sessions started outside the line's bound for users whose Join again came back with a
/// pass; about one event's admission capacity, the most passes that can be out at once.
const ADMITTED_SESSIONS: usize = 2_000;
/// This process's name in the CPU split and the memory figures.
pub const SELF_NAME: &str = "flashsale (this simulator)";

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
    /// [`Self::cpu`] per seat sold.
    pub cpu_per_seat: Option<CpuPerSeat>,
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

/// CPU milliseconds per seat sold over the sale (opening until the users were done).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct CpuPerSeat {
    /// Every process of the stack: the five services, HAProxy, Redis, Postgres and NATS.
    pub mesh: f64,
    /// The load generator itself.
    pub simulator: f64,
}

impl CpuPerSeat {
    /// `cpu` spread over `seats` sold; `None` before a seat is sold.
    pub fn of(cpu: &[CpuUse], seats: u64) -> Option<Self> {
        if seats == 0 || cpu.is_empty() {
            return None;
        }
        let ms = |simulator: bool| {
            cpu.iter().filter(|u| (u.process == SELF_NAME) == simulator).map(|u| u.cpu_secs).sum::<f64>()
                * 1e3
                / seats as f64
        };
        Some(Self { mesh: ms(false), simulator: ms(true) })
    }
}

/// Runs the sale, waits for it to settle, verifies it and returns what happened (the
/// reports are written by [`crate::report::write`]).
pub async fn run(config: SimConfig) -> anyhow::Result<Outcome> {
    run_with(config, None).await
}

/// [`run`], with `chaos`'s faults from the opening on; verification waits for the last one.
pub async fn run_with(config: SimConfig, chaos: Option<Box<dyn Disruption>>) -> anyhow::Result<Outcome> {
    let setup_started = Instant::now();
    let channels = connect(&config).await?;
    let event = create_event(channels[0].clone(), &config).await?;
    let capacity = u64::from(event.total_capacity);
    let opened_at = Instant::now() + Duration::from_secs_f64(config.open_in_secs);
    let stats = Arc::new(Stats::new(opened_at)?);
    let (back_to_line, back_in_line) = mpsc::unbounded_channel::<Joined>();
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
    let chaos = chaos.map(|disruption| {
        let lb = ctx.channels[0].clone();
        let target = Target { lb, event_id: ctx.event.event_id.clone(), opened_at, log: ctx.faults.clone() };
        tokio::spawn(disruption.disrupt(target))
    });
    let mut timings = Timings { setup_secs: setup_started.elapsed().as_secs_f64(), ..Default::default() };
    let deadline = tokio::time::Instant::from_std(opened_at + Duration::from_secs(config.max_secs));

    let cpu_before = CpuSnapshot::take(config.pids_dir.as_deref(), SELF_NAME);
    let progress = Display::new(&config, capacity);
    let (done_tx, done_rx) = tokio::sync::watch::channel(false);
    let sampler = tokio::spawn(sample(ctx.clone(), progress.clone(), done_rx));

    // Arrivals: Join at the arrival instant (bounded concurrency), then queues of joined users
    // that a dispatcher turns into sessions as slots free up, in the order admission will
    // admit them: the pre-queue in its shuffled order first, then the rest first come, first
    // served.
    let (arrived_tx, arrived_rx) = mpsc::unbounded_channel::<Arrival>();
    let arrivals = arrivals::spawn(ctx.clone(), opened_at, deadline, arrived_tx);
    let sessions = Arc::new(Semaphore::new(config.max_in_flight));
    let admitted_sessions = Arc::new(Semaphore::new(ADMITTED_SESSIONS));
    timings.stopped_by_max_secs =
        dispatch(&ctx, arrived_rx, back_in_line, &sessions, &admitted_sessions, deadline).await?;
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
    let error_samples = ctx.records.error_samples.lock().map(|e| e.clone()).unwrap_or_default();
    let faults = ctx.faults.lock().map(|f| f.clone()).unwrap_or_default();
    let cpu_per_seat = CpuPerSeat::of(&cpu, verification.seats_sold);
    Ok(Outcome {
        cpu_per_seat,
        faults,
        restarts: Vec::new(),
        opened_at,
        event_id: ctx.event.event_id.clone(),
        capacity,
        timings,
        stages: stats.stages.summary(),
        rpcs: stats.summaries(),
        timeline,
        verification,
        peak_memory_kib: procfs::peak_memory(config.pids_dir.as_deref(), SELF_NAME),
        cpu,
        error_samples,
        config,
    })
}

/// The dispatcher: turns joined users into sessions as session slots free up, in the order
/// admission will admit them (the line), and has every waiting user join again when admission
/// lost its queue. Returns whether it stopped at `deadline` rather than with every user done.
async fn dispatch(
    ctx: &Arc<Ctx>,
    mut arrived_rx: mpsc::UnboundedReceiver<Arrival>,
    mut back_in_line: mpsc::UnboundedReceiver<Joined>,
    sessions: &Arc<Semaphore>,
    admitted_sessions: &Arc<Semaphore>,
    deadline: tokio::time::Instant,
) -> anyhow::Result<bool> {
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
            return Ok(true);
        }
        while let Ok(arrived) = arrived_rx.try_recv() {
            line.arrive(arrived, ctx, &mut ordered_tx);
        }
        while let Ok(joined) = ordered_rx.try_recv() {
            if let Some(joined) = started_if_admitted(ctx, joined, admitted_sessions, deadline) {
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
                    if let Some(joined) = started_if_admitted(ctx, joined, admitted_sessions, deadline) {
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
            last_rejoin = ctx.stats.since_open();
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
                return Ok(false);
            }
            tokio::select! {
                joined = back_in_line.recv() => if let Some(joined) = joined {
                    ctx.going_back.fetch_sub(1, Ordering::Relaxed);
                    line.rejoined(joined);
                },
                message = rejoin_rx.recv() => match message {
                    Some(Rejoin::Joined(joined)) => {
                        if let Some(joined) = started_if_admitted(ctx, joined, admitted_sessions, deadline) {
                            line.rejoined(joined);
                        }
                    }
                    Some(Rejoin::Done) => rejoins_in_flight -= 1,
                    None => {}
                },
                _ = queue_lost.changed() => {}
                arrived = arrived_rx.recv(), if arrivals_open => match arrived {
                    Some(arrived) => line.arrive(arrived, ctx, &mut ordered_tx),
                    None => {
                        arrivals_open = false;
                        // Arrivals stopped early (deadline): nothing more is ordered.
                        ordered_tx = None;
                    }
                },
                joined = ordered_rx.recv(), if ordering_open => match joined {
                    Some(joined) => {
                        if let Some(joined) = started_if_admitted(ctx, joined, admitted_sessions, deadline) {
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
        start_session(ctx, next, permit, deadline);
    }
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
