//! "Now serving": the per-event view each tick publishes on this replica, the `WatchQueue`
//! streams waiting for the head of the queue to reach them, and their shared report clock.

use std::{
    collections::BTreeMap,
    future::Future,
    pin::Pin,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use tokio::sync::{oneshot, watch};

use super::{Controller, EventClock};
use crate::{catalogue::EventInfo, fairness::PREQUEUE_TIER, store::TickReport};

/// How often a `WatchQueue` stream reports, at the least.
pub const REPORT_INTERVAL: Duration = Duration::from_secs(1);

/// Phases of the report clock: each beat (every [`REPORT_INTERVAL`] / this) wakes one phase's
/// streams, a tenth of them, so the work of a report round is spread over the second while
/// the streams of a phase still share their HTTP/2 writes.
pub const REPORT_PHASES: usize = 10;

/// Time constant of the admission-rate average: long enough to smooth the burst of each
/// tick, short enough to follow a change of pace within seconds.
const RATE_TIME_CONSTANT_MS: f64 = 5_000.0;

/// Below this measured rate (admissions per second) the estimate falls back to
/// capacity / pass ttl instead of promising an endless wait.
const MIN_MEASURED_RATE: f64 = 0.01;

/// The figures of one event as of its last tick, shared by all its watchers on a replica.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct View {
    /// False until the first tick of this replica reported.
    pub refreshed: bool,
    /// The epoch of the event's state in Redis: a new one means the state was lost and
    /// rebuilt, and every queue place with it.
    pub epoch: i64,
    /// Redis time of the tick, unix ms.
    pub now_ms: i64,
    /// The lowest queue score still waiting (see [`crate::store`]): a waiting user whose
    /// score is below it has been admitted or has left.
    pub head: u64,
    pub queue_length: u64,
    pub active_passes: u64,
    /// Passes issued so far; the difference between two views is how many moved out of line.
    pub admitted_total: u64,
    /// The event is open: the pre-queue has been shuffled.
    pub opened: bool,
    /// Admissions per second, averaged; `None` until measured.
    pub rate: Option<f64>,
}

impl View {
    /// Seconds until a user at `position` is admitted: position / measured rate, or
    /// position / (capacity / pass ttl) before anything was measured, plus the time left
    /// until the sale opens.
    pub fn estimated_wait_seconds(&self, info: &EventInfo, position: u64, now_ms: i64) -> u32 {
        let fallback = f64::from(info.capacity.max(1)) / f64::from(info.pass_ttl_seconds.max(1));
        let rate = self.rate.filter(|rate| *rate >= MIN_MEASURED_RATE).unwrap_or(fallback);
        let until_open = (info.sale_opens_at_ms - now_ms).max(0) as f64 / 1000.0;
        let seconds = (position as f64 / rate + until_open).ceil();
        if seconds >= f64::from(u32::MAX) { u32::MAX } else { seconds as u32 }
    }
}

impl Controller {
    /// Updates the rate average, the view and the gauges from a tick's report.
    pub(super) fn observe(&self, info: &EventInfo, clock: &mut EventClock, report: &TickReport) {
        if let Some((total, at)) = clock.last_total {
            let elapsed_ms = report.now_ms - at;
            let delta = report.admitted_total.saturating_sub(total);
            let busy = delta > 0 || (report.queue_length > 0 && report.now_ms >= info.sale_opens_at_ms);
            if elapsed_ms > 0 && busy {
                let instant = delta as f64 * 1000.0 / elapsed_ms as f64;
                let alpha = 1.0 - (-(elapsed_ms as f64) / RATE_TIME_CONSTANT_MS).exp();
                clock.rate = Some(match clock.rate {
                    Some(rate) => rate + alpha * (instant - rate),
                    // Seeded with the configured pace, so the first bursty ticks do not swing it.
                    None => {
                        let seed = f64::from(info.capacity.max(1)) / f64::from(info.pass_ttl_seconds.max(1));
                        seed + alpha * (instant - seed)
                    }
                });
            }
        }
        clock.last_total = Some((report.admitted_total, report.now_ms));
        clock.idle = report.opened && report.queue_length == 0 && report.active_passes == 0;
        if clock.idle && report.outbox == 0 {
            clock.idle_since.get_or_insert_with(Instant::now);
        } else {
            clock.idle_since = None;
        }
        let view = View {
            refreshed: true,
            epoch: report.epoch,
            now_ms: report.now_ms,
            head: report.head,
            queue_length: report.queue_length,
            active_passes: report.active_passes,
            admitted_total: report.admitted_total,
            opened: report.opened,
            rate: clock.rate,
        };
        let event_id = info.event_id.clone();
        let wait = view.estimated_wait_seconds(info, report.queue_length, report.now_ms);
        metrics::gauge!("admission_queue_length", "event_id" => event_id.clone())
            .set(report.queue_length as f64);
        metrics::gauge!("admission_active_passes", "event_id" => event_id.clone())
            .set(report.active_passes as f64);
        metrics::gauge!("admission_outbox_entries", "event_id" => event_id.clone()).set(report.outbox as f64);
        metrics::gauge!("admission_rate", "event_id" => event_id.clone()).set(clock.rate.unwrap_or(0.0));
        if let Some(share) = report.ended.no_show_share() {
            metrics::gauge!("admission_no_show_share", "event_id" => event_id.clone()).set(share);
        }
        metrics::gauge!("admission_passes_expired", "event_id" => event_id.clone())
            .set(report.ended.expired as f64);
        metrics::gauge!("admission_passes_unclaimed", "event_id" => event_id.clone())
            .set(report.ended.unclaimed as f64);
        metrics::gauge!("admission_estimated_wait_seconds", "event_id" => event_id).set(f64::from(wait));
        self.serving(&info.event_id).publish(view);
    }
}

/// The "now serving" state of one event on this replica: the latest [`View`], the
/// `WatchQueue` streams waiting for the head of the queue to reach them, and the shared
/// once-a-second clock on which they report.
pub struct NowServing {
    /// A request about the event arrived here since the last tick (see [`super::IDLE_TICK`]).
    pub(super) demand: AtomicBool,
    /// One lock for both, so a stream cannot file itself between a new view and the wake-up
    /// that view causes (see [`NowServing::turn`]).
    state: Mutex<ServingState>,
    /// The report clock (see [`NowServing::seconds`]): one counter per phase, each bumped
    /// every [`REPORT_INTERVAL`], the phases [`REPORT_PHASES`] apart. One clock for all the
    /// event's streams instead of a timer each, so streams of one HTTP/2 connection that
    /// share a phase report in the same instant and go out in one write; and phases, so a
    /// hundred thousand streams are not all woken in the same instant.
    phases: [watch::Sender<u64>; REPORT_PHASES],
    /// The phase the next stream gets, round robin.
    next_phase: AtomicUsize,
}

impl Default for NowServing {
    fn default() -> Self {
        Self {
            demand: AtomicBool::new(false),
            state: Mutex::default(),
            phases: std::array::from_fn(|_| watch::Sender::new(0)),
            next_phase: AtomicUsize::new(0),
        }
    }
}

#[derive(Default)]
struct ServingState {
    view: View,
    /// Views published so far: tells a stream whether the view is newer than its last answer.
    published: u64,
    next_id: u64,
    /// Waiting streams by (queue score, id): a tick wakes everything below the new head with
    /// one `split_off`, whatever the number of streams filed above it.
    waiting: BTreeMap<(u64, u64), oneshot::Sender<()>>,
    /// The clock task of [`NowServing::seconds`] runs.
    clock_running: bool,
}

impl NowServing {
    fn lock(&self) -> MutexGuard<'_, ServingState> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The latest view (the default before this replica's first tick of the event).
    pub fn view(&self) -> View {
        self.lock().view
    }

    /// How many views were published so far; a stream notes it before asking Redis, for its
    /// next [`NowServing::turn`].
    pub fn published(&self) -> u64 {
        self.lock().published
    }

    /// A stream's report clock: changes every [`REPORT_INTERVAL`], in one of the
    /// [`REPORT_PHASES`] phases. Its task starts with the first listener and ends at the first
    /// beat that finds none (checked under the state lock, which subscribing also takes, so a
    /// new listener never finds the clock stopped).
    pub fn seconds(self: &Arc<Self>) -> watch::Receiver<u64> {
        let mut state = self.lock();
        let phase = self.next_phase.fetch_add(1, Ordering::Relaxed) % REPORT_PHASES;
        let seconds = self.phases[phase].subscribe();
        if !state.clock_running {
            state.clock_running = true;
            let serving = self.clone();
            tokio::spawn(async move {
                let mut beat = tokio::time::interval(REPORT_INTERVAL / REPORT_PHASES as u32);
                beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                beat.tick().await;
                for phase in (0..REPORT_PHASES).cycle() {
                    beat.tick().await;
                    let mut state = serving.lock();
                    if serving.phases.iter().all(|clock| clock.receiver_count() == 0) {
                        state.clock_running = false;
                        return;
                    }
                    drop(state);
                    serving.phases[phase].send_modify(|second| *second += 1);
                }
            });
        }
        seconds
    }

    /// Wakes every waiting stream: each asks Redis again (and learns that its place is gone,
    /// or that the event is being rebuilt).
    pub(super) fn wake_all(&self) {
        let due = std::mem::take(&mut self.lock().waiting);
        for (_, tx) in due {
            let _ = tx.send(());
        }
    }

    pub(super) fn take_demand(&self) -> bool {
        self.demand.swap(false, Ordering::Relaxed)
    }

    /// Resolves once a stream of a user waiting at queue `score` must ask Redis again: the
    /// head of the queue has passed the score (the user was admitted, or left), or, for a
    /// user still in the pre-queue (`pre_queue`), the event has opened (the shuffle moved
    /// everyone). Resolves at once if that is already so in a view published after the
    /// stream's last answer was asked for (`asked_at`, from [`NowServing::published`]): an
    /// older view cannot know of a user who joined after its tick (with nobody waiting, its
    /// head lies above every score), and answering from it would ask Redis again and again
    /// until the next tick. Dropping it unfiles the stream.
    pub fn turn(self: &Arc<Self>, score: u64, pre_queue: bool, asked_at: u64) -> Turn {
        let (tx, rx) = oneshot::channel();
        let mut state = self.lock();
        let view = state.view;
        let newer = state.published > asked_at;
        let key = if view.refreshed && newer && (view.head > score || (pre_queue && view.opened)) {
            let _ = tx.send(());
            None
        } else {
            state.next_id += 1;
            let key = (score, state.next_id);
            state.waiting.insert(key, tx);
            Some(key)
        };
        Turn { rx, key, serving: self.clone() }
    }

    /// Stores a tick's view and wakes the streams it concerns: those below the new head,
    /// when the event has just opened every pre-queue score, and when Redis lost the event's
    /// state every stream.
    fn publish(&self, view: View) {
        let due = {
            let mut state = self.lock();
            // Fewer passes issued than the last view said: Redis lost the event's state (a
            // restart that kept nothing) and every place in the queue with it. Tickets start
            // again from 1, so a stream filed under its old score would wait for a turn that
            // never comes; each asks again instead, and one whose place is gone ends with
            // NOT_IN_QUEUE, so its user joins again.
            let lost = state.view.refreshed
                && (view.epoch != state.view.epoch || view.admitted_total < state.view.admitted_total);
            let threshold = if lost {
                u64::MAX
            } else if view.opened && !state.view.opened {
                view.head.max(PREQUEUE_TIER)
            } else {
                view.head
            };
            state.view = view;
            state.published += 1;
            let rest = state.waiting.split_off(&(threshold, 0));
            std::mem::replace(&mut state.waiting, rest)
        };
        for (_, tx) in due {
            let _ = tx.send(());
        }
    }
}

/// A stream's place in [`NowServing`]'s waiting list; see [`NowServing::turn`].
pub struct Turn {
    rx: oneshot::Receiver<()>,
    /// Where it is filed; `None` when it was due at once.
    key: Option<(u64, u64)>,
    serving: Arc<NowServing>,
}

impl Future for Turn {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // A dropped sender (never, but harmless) also means "ask Redis again".
        Pin::new(&mut self.rx).poll(cx).map(|_| ())
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        if let Some(key) = self.key {
            self.serving.lock().waiting.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use futures::FutureExt;

    use super::{NowServing, View};

    fn view(head: u64, admitted_total: u64) -> View {
        View { refreshed: true, head, admitted_total, opened: true, ..View::default() }
    }

    #[test]
    fn a_stream_waits_for_the_head_unless_redis_lost_the_queue() {
        let serving = Arc::new(NowServing::default());
        serving.publish(view(10, 50));
        let mut turn = serving.turn(1_000, false, serving.published());
        serving.publish(view(20, 60));
        assert!((&mut turn).now_or_never().is_none(), "the head has not reached the stream");
        // Redis restarted empty: passes issued fall back, tickets start again from 1.
        serving.publish(view(1, 3));
        assert!((&mut turn).now_or_never().is_some(), "the stream asks again at once");
    }

    #[test]
    fn a_new_epoch_wakes_every_stream_even_when_more_passes_were_issued() {
        let serving = Arc::new(NowServing::default());
        serving.publish(view(10, 50));
        let mut turn = serving.turn(1_000, false, serving.published());
        // Rebuilt: pass ids (and so the count since) restart above the old ones.
        serving.publish(View { epoch: 7, ..view(20, 60) });
        assert!((&mut turn).now_or_never().is_some(), "the stream asks again at once");
    }

    #[test]
    fn a_stream_that_joined_after_the_last_tick_waits_for_the_next_one() {
        let serving = Arc::new(NowServing::default());
        // Nobody waited at the last tick: the head lies above every score.
        serving.publish(view(1 << 50, 50));
        let asked_at = serving.published();
        // The user joined after it and Redis answered "waiting at 51".
        let mut turn = serving.turn(51, false, asked_at);
        assert!((&mut turn).now_or_never().is_none(), "a view older than the answer says nothing new");
        serving.publish(view(51, 50));
        assert!((&mut turn).now_or_never().is_none(), "still waiting at the head");
        serving.publish(view(52, 51));
        assert!((&mut turn).now_or_never().is_some(), "admitted: the stream asks again");
        // A view published while the call ran is newer than the answer: it counts at once.
        let asked_at = serving.published();
        serving.publish(view(60, 59));
        assert!(serving.turn(55, false, asked_at).now_or_never().is_some());
    }
}
