//! `flashsale --chaos`: the flash sale while faults happen across the whole mesh.
//!
//! [`run`] starts a private stack: Redis, NATS and Postgres of its own on free ports
//! ([`PrivateBacking`], never the machine's shared servers), the five services and HAProxy,
//! with the services handed to a [`Supervisor`](stack::supervisor::Supervisor) that restarts
//! whatever dies. It then runs the sale ([`flashsale::run_with`]) with a [`Schedule`] of
//! faults that starts at the opening:
//! `kill -9` of each service in turn, a Redis restart that keeps nothing, a NATS restart on
//! its store, a Postgres crash and restart, one at a time. The verification that follows is
//! the usual one (I1–I6, then payment's reconciliation), so it passes only if the mesh came
//! back by itself. Finally everything is stopped and the stores' data deleted; the logs stay
//! in `<state dir>/logs`.

pub mod schedule;

use std::{path::PathBuf, sync::Arc, time::Instant};

pub use self::schedule::Schedule;
pub use crate::faults::{ChaosConfig, Fault, FaultRecord, ServiceRestart};
use crate::{
    flashsale::{self, Outcome, SimConfig},
    stack::{self, Stack, StackConfig, backing::PrivateBacking},
};

/// A chaos run: the sale, the faults, and where the private stack lives.
pub struct ChaosRun {
    /// The sale; its target, database and pid folder are the private stack's.
    pub sim: SimConfig,
    pub chaos: ChaosConfig,
    /// The service binaries.
    pub bin_dir: PathBuf,
    /// Logs, pid files and the stores' data (deleted at the end).
    pub state_dir: PathBuf,
    /// Variables for every service on top of the stack's.
    pub service_env: Vec<(String, String)>,
}

impl ChaosRun {
    /// A run with the windows a sale of minutes needs (see [`short_windows`]).
    pub fn new(sim: SimConfig, chaos: ChaosConfig, bin_dir: PathBuf, state_dir: PathBuf) -> Self {
        let service_env = short_windows();
        Self { sim, chaos, bin_dir, state_dir, service_env }
    }
}

/// Admission's check-in window, from 60 s: after Redis loses the queue, users who join
/// meanwhile go first, and the simulator has no session for some of them yet; their
/// uncollected passes then free their slots within seconds instead of a minute. (The stack
/// itself shortens checkout grace and recovery to the sale's scale.)
pub fn short_windows() -> Vec<(String, String)> {
    vec![("CHECK_IN_WINDOW_MS".into(), CHECK_IN_WINDOW_MS.to_string())]
}

/// See [`short_windows`].
const CHECK_IN_WINDOW_MS: u64 = 10_000;

/// Starts the private stack, runs the sale under the schedule, verifies, stops everything.
pub async fn run(run: ChaosRun) -> anyhow::Result<Outcome> {
    let ChaosRun { mut sim, chaos, bin_dir, state_dir, service_env } = run;
    stack::haproxy()?;
    let mut backing = PrivateBacking::start(&state_dir).await?;
    let mut config = StackConfig::on_free_ports(state_dir.clone(), bin_dir)?;
    config.database_url = backing.postgres.url(PrivateBacking::DATABASE);
    config.redis_url = backing.redis.url();
    config.nats_url = backing.nats.url();
    config.hold_ttl_secs = sim.hold_ttl_secs;
    config.extra_env = service_env;
    let stack = match Stack::start(config).await {
        Ok(stack) => stack,
        Err(error) => {
            let _ = stack::stop(&state_dir);
            backing.remove().await;
            return Err(error);
        }
    };
    let supervisor = Arc::new(stack.supervise());
    sim.target = stack.config.lb_url();
    sim.database_url = stack.config.database_url.clone();
    sim.pids_dir = Some(state_dir.join("pids"));
    sim.chaos = Some(chaos.clone());
    // The private stack has its own identity provider (in its state dir): the sale's tokens
    // must be its.
    sim.identity = stack.identity.clone();
    let backing = Arc::new(tokio::sync::Mutex::new(backing));
    let schedule = Schedule {
        config: chaos,
        supervisor: supervisor.clone(),
        backing: backing.clone(),
        nats_prefix: stack.config.nats_prefix.clone(),
        identity: stack.identity.clone(),
    };
    // Interrupted, it still stops what it started: the stores run in their own process
    // groups, out of the terminal's reach.
    let outcome = tokio::select! {
        outcome = flashsale::run_with(sim, Some(Box::new(schedule))) => outcome,
        () = interrupted() => Err(anyhow::anyhow!("interrupted; the private stack was stopped")),
    };
    let restarts = supervisor.stop(&stack).await;
    let _ = stack.stop();
    backing.lock().await.remove().await;
    let mut outcome = outcome?;
    outcome.restarts = restarts.iter().map(|r| ServiceRestart::from(r, outcome.opened_at)).collect();
    note_unplanned_deaths(&mut outcome);
    Ok(outcome)
}

/// SIGINT or SIGTERM.
async fn interrupted() {
    let mut terminate = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(signal) => signal,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}

impl ServiceRestart {
    fn from(restart: &stack::supervisor::Restart, opened_at: Instant) -> Self {
        let since_open = |at: Instant| at.saturating_duration_since(opened_at).as_secs_f64();
        let from = restart.killed_at.unwrap_or(restart.died);
        Self {
            service: restart.service,
            killed_by_schedule: restart.killed_at.is_some(),
            cause: match restart.killed_at {
                Some(_) => "kill -9 by the schedule".into(),
                None => format!("died by itself ({})", restart.exit),
            },
            died_secs: since_open(restart.died),
            serving_secs: restart.serving.map(since_open),
            recovery_secs: restart.serving.map(|at| at.saturating_duration_since(from).as_secs_f64()),
            log_tail: restart.log_tail.clone(),
        }
    }
}

/// Adds each death the schedule did not ask for to the fault it happened during (or after).
fn note_unplanned_deaths(outcome: &mut Outcome) {
    let unplanned: Vec<(f64, String)> = outcome
        .restarts
        .iter()
        .filter(|r| !r.killed_by_schedule)
        .map(|r| (r.died_secs, format!("{} {} at {:.1} s", r.service, r.cause, r.died_secs)))
        .collect();
    for (at, note) in unplanned {
        if let Some(fault) = outcome.faults.iter_mut().rev().find(|f| f.started_secs <= at) {
            fault.notes.push(note);
        }
    }
}
