//! Keeps a started stack's services running, as a container runtime would: a service that
//! dies (killed on purpose by a chaos run, or by itself) is started again with the same
//! environment and port, and each death is recorded with when the new process answered
//! health SERVING. A service that keeps dying right after its start is restarted with a
//! growing delay instead of in a tight loop.

use std::{
    fs,
    process::Child,
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use anyhow::Context;
use tokio::{sync::watch, task::JoinHandle};

use super::{ServiceProcess, StackConfig, health};

/// How often the supervisor looks at its processes.
const POLL: Duration = Duration::from_millis(50);
/// A process that dies sooner than this after its start counts as a crash loop.
const CRASH_LOOP_WINDOW: Duration = Duration::from_secs(10);
/// Delay before restarting a crash-looping service, doubled per crash in a row.
const CRASH_BACKOFF: Duration = Duration::from_millis(500);
/// The longest delay before a restart.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Lines of a service's log kept when it died by itself.
const LOG_TAIL_LINES: usize = 15;

/// One death of a service and its way back.
#[derive(Debug, Clone)]
pub struct Restart {
    pub service: &'static str,
    /// When the supervisor saw the process gone.
    pub died: Instant,
    /// When a kill was asked through [`Supervisor::kill`]; `None` when it died by itself.
    pub killed_at: Option<Instant>,
    /// How it ended: `signal 9`, `exit code 1`, ...
    pub exit: String,
    /// When the new process first answered health SERVING; `None` if it never did.
    pub serving: Option<Instant>,
    /// The end of its log, when it died by itself: why it stopped.
    pub log_tail: Vec<String>,
}

/// One supervised service.
struct Slot {
    service: ServiceProcess,
    /// The running process; `None` between a death and the restart.
    child: Option<Child>,
    started: Instant,
    /// When [`Supervisor::kill`] was asked to kill the current process.
    kill_requested: Option<Instant>,
    /// Deaths within [`CRASH_LOOP_WINDOW`] of the start, in a row.
    quick_deaths: u32,
    /// When to start it again after a death.
    restart_at: Option<Instant>,
    /// The restart record waiting for the new process to answer SERVING.
    awaiting_serving: Option<usize>,
}

struct State {
    slots: Vec<Slot>,
    restarts: Vec<Restart>,
}

/// Restarts dead services until stopped; see the module docs.
pub struct Supervisor {
    state: Arc<Mutex<State>>,
    stop: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Supervisor {
    /// Takes over `children` (the processes [`super::Stack::start`] started for `config`).
    pub(super) fn start(config: StackConfig, children: Vec<(&'static str, Child)>) -> Self {
        let now = Instant::now();
        let slots = children
            .into_iter()
            .filter_map(|(name, child)| {
                let service = config.services.iter().find(|s| s.name == name)?.clone();
                Some(Slot {
                    service,
                    child: Some(child),
                    started: now,
                    kill_requested: None,
                    quick_deaths: 0,
                    restart_at: None,
                    awaiting_serving: None,
                })
            })
            .collect();
        let state = Arc::new(Mutex::new(State { slots, restarts: Vec::new() }));
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(supervise(config, state.clone(), stopped));
        Self { state, stop, task: Mutex::new(Some(task)) }
    }

    /// SIGKILLs the current process of `service` (the supervisor then restarts it); returns
    /// when the signal was sent.
    pub fn kill(&self, service: &str) -> anyhow::Result<Instant> {
        let mut state = lock(&self.state);
        let slot = state
            .slots
            .iter_mut()
            .find(|slot| slot.service.name == service)
            .with_context(|| format!("{service} is not supervised"))?;
        let child = slot.child.as_mut().with_context(|| format!("{service} is not running"))?;
        child.kill().with_context(|| format!("cannot kill {service}"))?;
        let at = Instant::now();
        slot.kill_requested = Some(at);
        Ok(at)
    }

    /// Every death so far.
    pub fn restarts(&self) -> Vec<Restart> {
        lock(&self.state).restarts.clone()
    }

    /// Whether every service runs and its latest restart, if any, answered SERVING.
    pub fn all_serving(&self) -> bool {
        lock(&self.state).slots.iter().all(|slot| slot.child.is_some() && slot.awaiting_serving.is_none())
    }

    /// Waits until `service` has died after `since` and its new process answered SERVING;
    /// returns that instant, or `None` after `timeout`.
    pub async fn serving_after(&self, service: &str, since: Instant, timeout: Duration) -> Option<Instant> {
        let deadline = Instant::now() + timeout;
        loop {
            let serving = lock(&self.state)
                .restarts
                .iter()
                .filter(|r| r.service == service && r.died >= since)
                .find_map(|r| r.serving);
            if serving.is_some() || Instant::now() > deadline {
                return serving;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Stops supervising and hands the processes back to `stack` (which stops them with
    /// [`super::Stack::stop`]); returns every death seen.
    pub async fn stop(&self, stack: &super::Stack) -> Vec<Restart> {
        let _ = self.stop.send(true);
        let task = self.task.lock().ok().and_then(|mut task| task.take());
        if let Some(task) = task {
            let _ = task.await;
        }
        let mut state = lock(&self.state);
        let children =
            state.slots.iter_mut().filter_map(|slot| Some((slot.service.name, slot.child.take()?)));
        stack.adopt(children.collect());
        std::mem::take(&mut state.restarts)
    }
}

/// The supervisor's loop: notice deaths, restart, watch restarted processes until SERVING.
async fn supervise(config: StackConfig, state: Arc<Mutex<State>>, mut stopped: watch::Receiver<bool>) {
    loop {
        let awaiting = reap_and_restart(&config, &state);
        // Health of the restarted processes, outside the lock.
        let answers = futures::future::join_all(awaiting.iter().map(|(port, _)| health(*port))).await;
        let now = Instant::now();
        {
            let mut state = lock(&state);
            for ((_, index), answer) in awaiting.iter().zip(answers) {
                if answer.is_ok_and(|serving| serving) {
                    state.restarts[*index].serving = Some(now);
                    for slot in &mut state.slots {
                        if slot.awaiting_serving == Some(*index) {
                            slot.awaiting_serving = None;
                        }
                    }
                }
            }
        }
        tokio::select! {
            _ = stopped.changed() => return,
            () = tokio::time::sleep(POLL) => {}
        }
    }
}

/// Records dead processes and starts those due; returns (port, restart record) of the
/// processes to ask for SERVING.
fn reap_and_restart(config: &StackConfig, state: &Mutex<State>) -> Vec<(u16, usize)> {
    let mut state = lock(state);
    let State { slots, restarts } = &mut *state;
    let now = Instant::now();
    let mut awaiting = Vec::new();
    for slot in slots.iter_mut() {
        if let Some(child) = slot.child.as_mut()
            && let Ok(Some(status)) = child.try_wait()
        {
            let killed_at = slot.kill_requested.take();
            let log_tail = if killed_at.is_none() { log_tail(config, slot.service.name) } else { Vec::new() };
            if killed_at.is_none() {
                tracing::warn!(service = slot.service.name, %status, "a service died by itself; restarting it");
            }
            slot.quick_deaths =
                if now.duration_since(slot.started) < CRASH_LOOP_WINDOW { slot.quick_deaths + 1 } else { 0 };
            // A planned kill is restarted at once; a crash loop waits longer each time.
            let delay = if killed_at.is_some() {
                Duration::ZERO
            } else {
                CRASH_BACKOFF.saturating_mul(1 << slot.quick_deaths.min(5)).min(MAX_BACKOFF)
            };
            slot.child = None;
            slot.restart_at = Some(now + delay);
            restarts.push(Restart {
                service: slot.service.name,
                died: now,
                killed_at,
                exit: describe(status),
                serving: None,
                log_tail,
            });
            slot.awaiting_serving = Some(restarts.len() - 1);
        }
        if slot.child.is_none() && slot.restart_at.is_some_and(|at| now >= at) {
            match config.spawn(&slot.service) {
                Ok(child) => {
                    slot.child = Some(child);
                    slot.started = now;
                    slot.restart_at = None;
                }
                Err(error) => {
                    tracing::warn!(service = slot.service.name, error = %format!("{error:#}"), "cannot restart");
                    slot.restart_at = Some(now + MAX_BACKOFF);
                }
            }
        }
        if slot.child.is_some()
            && let Some(index) = slot.awaiting_serving
        {
            awaiting.push((slot.service.grpc_port, index));
        }
    }
    awaiting
}

fn describe(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(signal)) => format!("signal {signal}"),
        _ => status.to_string(),
    }
}

/// The last lines of `service`'s log, without terminal colours.
fn log_tail(config: &StackConfig, service: &str) -> Vec<String> {
    let text =
        fs::read_to_string(config.state_dir.join("logs").join(format!("{service}.log"))).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].iter().map(|l| strip_colours(l)).collect()
}

/// `line` without ANSI escape sequences (`ESC [ ... letter`).
fn strip_colours(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn colours_are_stripped() {
        assert_eq!(super::strip_colours("\u{1b}[2mtime\u{1b}[0m \u{1b}[33m WARN\u{1b}[0m x"), "time  WARN x");
    }
}
