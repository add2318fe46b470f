//! The admission controller and the per-event "now serving" view.
//!
//! Every replica runs [`Controller::run`]: each `CONTROLLER_POLL_MS` it walks the events that
//! have a queue and, for each whose tick (`admission_tick_ms`) is due locally, runs the tick
//! script once. The script admits only for the replica that wins the tick's lease and only
//! once the sale is open, so an event is ticked at most once per interval across replicas;
//! every replica still gets the event's figures back (lowest waiting score, queue length,
//! passes issued), which it keeps as the event's [`NowServing`] view. `WatchQueue` streams
//! read that view, so a hundred thousand streams cost one Redis call per tick, not one each.
//! Nor do they wake on every tick: each stream is filed under its queue score, and a tick
//! wakes only the streams whose score the head of the queue has passed (they ask Redis once
//! for their pass); the others wake on their own once-a-second report.
//!
//! An event that is open with nobody waiting and no pass out is idle: it is ticked only
//! every [`IDLE_TICK`], or at once after a request about it reached this replica.
//!
//! Opening: the first tick at or after `sale_opens_at` finds the event not open. If nobody
//! is in the pre-queue the tick script opens it itself; otherwise this replica runs the
//! opening step ([`Store::open_sale`]): seal, keyed shuffle, open. Admissions start at the
//! next tick after the event is open.
//!
//! No-shows: active passes never exceed capacity (over-admitting by the no-show share would
//! break that the moment the "no-shows" turn up). Instead a pass starts with a short
//! check-in window (`CHECK_IN_WINDOW_MS`) and is extended to the full ttl when its holder
//! collects it, so a no-show's slot is reused after the window instead of the whole ttl.
//! The share of passes that expired unused is measured and exported.
//!
//! Redis loss: a tick (or any request) that finds the event's readiness marker missing after
//! the opening gets [`Error::Rebuilding`]; the controller wakes the event's streams (each ends
//! with `UNAVAILABLE`, `QUEUE_REBUILDING`, instead of reporting a stale estimate) and starts
//! one rebuild task ([`Controller::rebuild_soon`]): under a Redis lock (one replica at a
//! time) it reads the event's recent history from JetStream ([`crate::rebuild`]) and restores
//! the live passes, the counters, the opening record and the marker. The first tick after it
//! sees a new epoch and wakes every stream again, so a user whose place was lost is told
//! `NOT_IN_QUEUE` and joins again.
//!
//! Finished events: an event that has been idle for `FINISHED_EVENT_AFTER_MS` (open, nobody
//! waiting, no pass out, nothing to publish) is taken out of the Redis set of events and its
//! per-event state on this replica (clock, view, catalogue entry) is dropped, so neither the
//! maps nor the `admission_*{event_id}` series grow with every past sale; a request for the
//! event brings it back.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    future::Future,
    pin::Pin,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use futures::StreamExt;
use service_runtime::{
    CancellationToken,
    bus::{EventBus, envelope, timestamp_ms},
    lifecycle::Background,
};
use ticketing_proto::events::{Admitted, EventEnvelope, PassEndReason, PassEnded, event_envelope::Body};
use tokio::sync::{oneshot, watch};

use crate::{
    catalogue::{Catalogue, EventInfo},
    error::Error,
    fairness::{PREQUEUE_TIER, ShuffleKey},
    rebuild::{CLOCK_SKEW, read_history},
    store::{AdmittedUser, EndReason, EndedPass, Opening, Rebuilt, Store, TickParams, TickReport},
};

/// Events ticked at once by one replica; bounds the Redis calls in flight per poll.
const MAX_CONCURRENT_TICKS: usize = 16;

/// How often an idle event (open, nobody waiting, no pass out) is ticked. Events are never
/// forgotten, so without this every past sale would cost each replica a script per tick
/// forever; a request for the event on this replica makes its next tick due at once.
const IDLE_TICK: Duration = Duration::from_secs(5);

/// Events (Admitted, PassEnded) published at once; JetStream acks each publish, so a batch of
/// a thousand admissions is published in a few round trips instead of a thousand.
const PUBLISH_CONCURRENCY: usize = 64;

/// Outbox entries a relay takes at once; each holds one tick's admissions (at most
/// [`crate::store::MAX_ADMIT_PER_TICK`]), so this bounds the events a relay holds in memory.
const RELAY_BATCH: usize = 4;

/// How long an outbox entry taken by a relay may stay unpublished before another relay (or
/// the same one) takes it over: long enough that a busy relay publishing a thousand events
/// is not raced, short enough that Admitted events of a dead replica arrive seconds late.
const RELAY_STALLED: Duration = Duration::from_secs(10);

/// How often the controller looks for finished events to forget (see the module docs); the
/// sweep walks this replica's events once, so it runs far less often than the poll.
const EVICTION_SWEEP: Duration = Duration::from_secs(10);

/// How long a rebuild attempt that found another replica rebuilding (or failed) waits before
/// it lets its waiters try again.
const REBUILD_POLL: Duration = Duration::from_millis(50);

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

/// Local tick bookkeeping of one event.
struct EventClock {
    last_tick: Option<Instant>,
    /// The last report showed an open event with nobody waiting and no pass out.
    idle: bool,
    /// Since when the event has been idle with nothing left to publish, for eviction.
    idle_since: Option<Instant>,
    /// `admitted_total` and Redis time of the previous report, for the rate.
    last_total: Option<(u64, i64)>,
    rate: Option<f64>,
}

/// Runs the admission ticks and keeps the views.
pub struct Controller {
    store: Arc<Store>,
    catalogue: Arc<Catalogue>,
    bus: EventBus,
    poll: Duration,
    shuffle_key: ShuffleKey,
    check_in_window_ms: u64,
    /// The "now serving" state of each event, created on first use.
    serving: Mutex<HashMap<String, Arc<NowServing>>>,
    /// Events this replica has already put in the Redis set of events.
    registered: Mutex<HashSet<String>>,
    /// Events whose outbox a relay task of this replica is publishing.
    relaying: Mutex<HashSet<String>>,
    /// Events a rebuild task of this replica is rebuilding (or trying to lock); the receiver
    /// turns true when the task has finished.
    rebuilding: Mutex<HashMap<String, watch::Receiver<bool>>>,
    /// How long an event stays idle before it counts as finished and is forgotten.
    finished_after: Duration,
    /// Where relay and rebuild tasks run, tracked, so shutdown waits for a publish in flight.
    background: Background,
}

impl Controller {
    /// A controller polling every `poll`, shuffling pre-queues with `shuffle_key` and giving
    /// admitted users `check_in_window_ms` to collect their pass.
    // Each argument is a distinct dependency or setting; `background` made it eight.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Arc<Store>,
        catalogue: Arc<Catalogue>,
        bus: EventBus,
        poll: Duration,
        shuffle_key: ShuffleKey,
        check_in_window_ms: u64,
        finished_after: Duration,
        background: Background,
    ) -> Self {
        Self {
            store,
            catalogue,
            bus,
            poll,
            shuffle_key,
            check_in_window_ms,
            serving: Mutex::new(HashMap::new()),
            registered: Mutex::new(HashSet::new()),
            relaying: Mutex::new(HashSet::new()),
            rebuilding: Mutex::new(HashMap::new()),
            finished_after,
            background,
        }
    }

    /// The "now serving" state of an event, created on first use.
    pub fn serving(&self, event_id: &str) -> Arc<NowServing> {
        let mut serving = self.serving.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match serving.get(event_id) {
            Some(event) => event.clone(),
            None => serving.entry(event_id.to_owned()).or_default().clone(),
        }
    }

    /// The latest view of an event (the default before its first tick here), for a request
    /// about it: an idle event is ticked at once after this.
    pub fn view(&self, event_id: &str) -> View {
        let serving = self.serving(event_id);
        serving.demand.store(true, Ordering::Relaxed);
        serving.view()
    }

    /// Makes sure the controllers walk this event; one SADD per event per replica.
    pub async fn register(&self, event_id: &str) -> Result<(), Error> {
        let known = self.registered.lock().unwrap_or_else(|p| p.into_inner()).contains(event_id);
        if !known {
            self.store.register_event(event_id).await?;
            self.registered.lock().unwrap_or_else(|p| p.into_inner()).insert(event_id.to_owned());
        }
        Ok(())
    }

    /// Ticks due events until `stopping` is cancelled.
    pub async fn run(self: Arc<Self>, stopping: CancellationToken) {
        let mut clocks: HashMap<String, EventClock> = HashMap::new();
        let mut last_sweep = Instant::now();
        let mut interval = tokio::time::interval(self.poll);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stopping.cancelled() => return,
                _ = interval.tick() => {}
            }
            let mut events = match self.store.events().await {
                Ok(events) => events,
                Err(error) => {
                    tracing::warn!(error = %error, "cannot list events with a queue");
                    continue;
                }
            };
            // A Redis that lost its data lost the set of events too: put back the events this
            // replica registered, or their queues would never be ticked again.
            let lost: Vec<String> = {
                let registered = self.registered.lock().unwrap_or_else(|p| p.into_inner());
                registered.iter().filter(|event| !events.contains(event)).cloned().collect()
            };
            for event_id in lost {
                match self.store.register_event(&event_id).await {
                    Ok(()) => {
                        tracing::warn!(%event_id, "the event was missing from Redis's set of events; registered it again");
                        events.push(event_id);
                    }
                    Err(error) => {
                        tracing::warn!(%event_id, error = %error, "cannot register the event again")
                    }
                }
            }
            let mut due = Vec::new();
            for event_id in events {
                let info = match self.catalogue.get(&event_id).await {
                    Ok(info) => info,
                    Err(error) => {
                        tracing::warn!(%event_id, error = %error, "cannot describe event; skipping its tick");
                        continue;
                    }
                };
                let clock = clocks.entry(event_id).or_insert(EventClock {
                    last_tick: None,
                    idle: false,
                    idle_since: None,
                    last_total: None,
                    rate: None,
                });
                let asked = self.serving(&info.event_id).take_demand();
                let tick = if clock.idle && !asked {
                    IDLE_TICK
                } else {
                    Duration::from_millis(u64::from(info.tick_ms))
                };
                if clock.last_tick.is_none_or(|last| last.elapsed() >= tick) {
                    clock.last_tick = Some(Instant::now());
                    due.push(info);
                }
            }
            let reports: Vec<(Arc<EventInfo>, Result<TickReport, Error>)> = futures::stream::iter(due)
                .map(|info| async {
                    let report = self.tick(&info).await;
                    (info, report)
                })
                .buffer_unordered(MAX_CONCURRENT_TICKS)
                .collect()
                .await;
            for (info, report) in reports {
                match report {
                    Ok(report) => {
                        if report.outbox > 0 {
                            self.start_relay(&info.event_id);
                        }
                        if let Some(clock) = clocks.get_mut(&info.event_id) {
                            self.observe(&info, clock, &report);
                        }
                    }
                    Err(Error::Rebuilding(_)) => {
                        // Redis lost the event: no stream may go on reporting the old view.
                        self.serving(&info.event_id).wake_all();
                        let _ = self.rebuild_soon(&info.event_id);
                    }
                    Err(error) => {
                        tracing::warn!(event_id = %info.event_id, error = %error, "admission tick failed")
                    }
                }
            }
            if last_sweep.elapsed() >= EVICTION_SWEEP {
                last_sweep = Instant::now();
                self.evict_finished(&mut clocks).await;
            }
        }
    }

    /// Forgets the events idle for `finished_after`: out of the Redis set of events (when still
    /// finished there), then out of this replica's maps. Also drops the views of events this
    /// replica does not tick (asked about, never joined here) that no stream follows.
    async fn evict_finished(&self, clocks: &mut HashMap<String, EventClock>) {
        let finished: Vec<String> = clocks
            .iter()
            .filter(|(_, clock)| clock.idle_since.is_some_and(|since| since.elapsed() >= self.finished_after))
            .map(|(event_id, _)| event_id.clone())
            .collect();
        for event_id in finished {
            if self
                .serving
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&event_id)
                .is_some_and(|s| Arc::strong_count(s) > 1)
            {
                continue; // a stream still follows it
            }
            // Out of `registered` first: a join from now on registers the event again itself.
            self.registered.lock().unwrap_or_else(|p| p.into_inner()).remove(&event_id);
            match self.store.forget_event(&event_id).await {
                Ok(true) => {
                    clocks.remove(&event_id);
                    self.serving.lock().unwrap_or_else(|p| p.into_inner()).remove(&event_id);
                    self.catalogue.forget(&event_id);
                    metrics::counter!("admission_events_forgotten_total").increment(1);
                    tracing::info!(%event_id, "event finished; forgotten until it is asked about again");
                }
                Ok(false) => {
                    self.registered.lock().unwrap_or_else(|p| p.into_inner()).insert(event_id.clone());
                    if let Some(clock) = clocks.get_mut(&event_id) {
                        clock.idle_since = None;
                    }
                }
                Err(error) => {
                    self.registered.lock().unwrap_or_else(|p| p.into_inner()).insert(event_id.clone());
                    tracing::warn!(%event_id, %error, "cannot forget a finished event");
                }
            }
        }
        self.serving
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|event_id, serving| clocks.contains_key(event_id) || Arc::strong_count(serving) > 1);
    }

    /// Starts a rebuild of the event's Redis state on this replica unless one is running, and
    /// returns a receiver that turns true when that attempt has finished (rebuilt, or found
    /// another replica rebuilding, or failed): the caller then tries again.
    pub fn rebuild_soon(self: &Arc<Self>, event_id: &str) -> watch::Receiver<bool> {
        let mut rebuilding = self.rebuilding.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(running) = rebuilding.get(event_id) {
            return running.clone();
        }
        let (done, running) = watch::channel(false);
        rebuilding.insert(event_id.to_owned(), running.clone());
        let (controller, event_id) = (self.clone(), event_id.to_owned());
        self.background.spawn("admission-rebuild", async move {
            match controller.rebuild(&event_id).await {
                Ok(true) => {}
                // Another replica holds the lock: look again shortly, not in a tight loop.
                Ok(false) => tokio::time::sleep(REBUILD_POLL).await,
                Err(error) => {
                    tracing::warn!(%event_id, error = %error, "cannot rebuild the event's waiting room; retrying on the next request or tick");
                    tokio::time::sleep(REBUILD_POLL).await;
                }
            }
            controller.rebuilding.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).remove(&event_id);
            let _ = done.send(true);
        });
        running
    }

    /// Rebuilds the event's state from its history, under the Redis lock; false at once when
    /// another replica holds it.
    async fn rebuild(&self, event_id: &str) -> Result<bool, Error> {
        let info = self.catalogue.get(event_id).await?;
        let token = uuid::Uuid::new_v4().to_string();
        if !self.store.lock_rebuild(event_id, &token).await? {
            return Ok(false);
        }
        let started = Instant::now();
        let now_ms = chrono::Utc::now().timestamp_millis();
        let pass_ttl_ms = u64::from(info.pass_ttl_seconds) * 1000;
        let window_ms = i64::try_from(pass_ttl_ms + CLOCK_SKEW.as_millis() as u64).unwrap_or(i64::MAX);
        let history = match read_history(
            &self.bus,
            event_id,
            now_ms - window_ms,
            now_ms,
            pass_ttl_ms,
            self.check_in_window_ms,
        )
        .await
        {
            Ok(history) => history,
            Err(error) => {
                if let Err(unlock) = self.store.unlock_rebuild(event_id, &token).await {
                    tracing::warn!(%event_id, error = %unlock, "cannot release the rebuild lock; it expires by itself");
                }
                return Err(error);
            }
        };
        let commitment = self.shuffle_key.event_key(event_id).commitment();
        match self.store.rebuild(event_id, &token, &history.passes, &history.counters, &commitment).await? {
            Rebuilt::Restored { epoch } => {
                metrics::counter!("admission_rebuilds_total").increment(1);
                metrics::histogram!("admission_rebuild_seconds").record(started.elapsed().as_secs_f64());
                let took_ms = started.elapsed().as_millis() as u64;
                if history.admitted == 0 {
                    // Nothing admitted in the last pass ttl: a first use after the opening, or a
                    // loss that cost nothing but the queue.
                    tracing::info!(%event_id, epoch, took_ms, "event state made from its history (no recent admission)");
                } else {
                    tracing::warn!(
                        %event_id,
                        epoch,
                        live_passes = history.passes.len(),
                        admitted_in_window = history.admitted,
                        ended_in_window = history.ended,
                        max_pass_id = history.counters.max_pass_id,
                        took_ms,
                        "Redis had lost the event's waiting room; rebuilt it from the event history (waiting users must join again)"
                    );
                }
            }
            Rebuilt::AlreadyReady => tracing::debug!(%event_id, "the event was ready already"),
            Rebuilt::LockLost => {
                tracing::warn!(%event_id, "the rebuild lock expired before the rebuild finished")
            }
        }
        self.store.register_event(event_id).await?;
        self.registered.lock().unwrap_or_else(|p| p.into_inner()).insert(event_id.to_owned());
        Ok(true)
    }

    /// One tick of one event. The users it admits are in the event's outbox, which
    /// [`Controller::relay`] publishes.
    async fn tick(&self, info: &EventInfo) -> Result<TickReport, Error> {
        let params = TickParams {
            sale_opens_at_ms: info.sale_opens_at_ms,
            capacity: info.capacity,
            pass_ttl_ms: u64::from(info.pass_ttl_seconds) * 1000,
            tick_ms: info.tick_ms,
            check_in_window_ms: self.check_in_window_ms,
        };
        let report = self.store.tick(&info.event_id, params).await?;
        if !report.opened && report.now_ms >= info.sale_opens_at_ms {
            self.open(info).await?;
        }
        if report.admitted > 0 {
            metrics::counter!("admission_admitted_total", "event_id" => info.event_id.clone())
                .increment(report.admitted);
        }
        Ok(report)
    }

    /// Runs the opening step of an event whose sale time has come.
    async fn open(&self, info: &EventInfo) -> Result<(), Error> {
        let key = self.shuffle_key.event_key(&info.event_id);
        match self.store.open_sale(&info.event_id, info.sale_opens_at_ms, &key).await? {
            Opening::Shuffled { prequeue, sealed_ticket } => {
                metrics::gauge!("admission_prequeue_size", "event_id" => info.event_id.clone())
                    .set(prequeue as f64);
                tracing::info!(
                    event_id = %info.event_id,
                    prequeue,
                    sealed_ticket,
                    key_commitment = %key.commitment(),
                    "sale opened; pre-queue shuffled"
                );
            }
            Opening::NotYet | Opening::AlreadyOpen => {}
        }
        Ok(())
    }

    /// Starts a relay of the event's outbox on this replica unless one is running. The tick
    /// starts it when the outbox has entries; Leave and a purchase start it at once after
    /// ending a pass, so seat-lock hears of it within a publish, not a tick.
    pub fn start_relay(self: &Arc<Self>, event_id: &str) {
        let mut relaying = self.relaying.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if relaying.insert(event_id.to_owned()) {
            let (controller, event_id) = (self.clone(), event_id.to_owned());
            self.background.spawn("admission-relay", async move {
                controller.relay(&event_id).await;
                controller.relaying.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).remove(&event_id);
            });
        }
    }

    /// Publishes the event's outbox as `Admitted` and `PassEnded` events until it is empty, or
    /// until an entry cannot be published (NATS down): that entry stays pending and is taken
    /// over, by this replica or another, [`RELAY_STALLED`] later. An entry is deleted only
    /// after JetStream stored every event in it; a retry republishes the same message ids,
    /// which JetStream drops as duplicates, so each admission and each end is announced
    /// exactly once.
    async fn relay(&self, event_id: &str) {
        let stalled_ms = RELAY_STALLED.as_millis() as u64;
        loop {
            let entries = match self
                .store
                .take_outbox(event_id, self.store.replica_id(), stalled_ms, RELAY_BATCH)
                .await
            {
                Ok(entries) if entries.is_empty() => return,
                Ok(entries) => entries,
                Err(error) => {
                    tracing::warn!(%event_id, error = %error, "cannot read the Admitted outbox");
                    return;
                }
            };
            let taken = entries.len();
            let mut done = Vec::with_capacity(taken);
            for entry in entries {
                let events: Vec<EventEnvelope> = entry
                    .admitted
                    .iter()
                    .map(|user| admitted_event(event_id, user))
                    .chain(entry.ended.iter().map(|pass| pass_ended_event(event_id, pass)))
                    .collect();
                let mut published = futures::stream::iter(events)
                    .map(|event| async move { self.bus.publish(&event).await })
                    .buffer_unordered(PUBLISH_CONCURRENCY);
                let mut failed = None;
                while let Some(result) = published.next().await {
                    if let Err(error) = result {
                        failed = Some(error);
                        break;
                    }
                }
                match failed {
                    None => done.push(entry.id),
                    Some(error) => {
                        tracing::warn!(
                            %event_id, entry = %entry.id, error = %error, retry_in = ?RELAY_STALLED,
                            "cannot publish admission events; they stay in the outbox"
                        );
                        break;
                    }
                }
            }
            if !done.is_empty() {
                metrics::counter!("admission_outbox_published_total", "event_id" => event_id.to_owned())
                    .increment(done.len() as u64);
                if let Err(error) = self.store.outbox_done(event_id, &done).await {
                    // Published but not deleted: taken over later and republished as duplicates.
                    tracing::warn!(%event_id, error = %error, "cannot delete published outbox entries");
                    return;
                }
            }
            if done.len() < taken {
                return;
            }
        }
    }

    /// Updates the rate average, the view and the gauges from a tick's report.
    fn observe(&self, info: &EventInfo, clock: &mut EventClock, report: &TickReport) {
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

/// The `Admitted` event of an admission; its message id is the same on every retry.
fn admitted_event(event_id: &str, user: &AdmittedUser) -> EventEnvelope {
    let message_id = format!("admitted:{event_id}:{}:{}", user.user_id, user.pass.pass_id);
    envelope(
        message_id,
        Body::Admitted(Admitted {
            event_id: event_id.to_owned(),
            user_id: user.user_id.clone(),
            pass_id: user.pass.pass_id.clone(),
            pass_expires_at: Some(timestamp_ms(user.pass.expires_at_ms)),
            ticket: user.pass.ticket,
        }),
    )
}

/// The `PassEnded` event of a pass ended early; its message id is the same on every retry.
fn pass_ended_event(event_id: &str, pass: &EndedPass) -> EventEnvelope {
    let message_id = format!("pass-ended:{event_id}:{}:{}", pass.user_id, pass.pass_id);
    let reason = match pass.reason {
        EndReason::Left => PassEndReason::Left,
        EndReason::Bought => PassEndReason::Bought,
    };
    envelope(
        message_id,
        Body::PassEnded(PassEnded {
            event_id: event_id.to_owned(),
            user_id: pass.user_id.clone(),
            pass_id: pass.pass_id.clone(),
            reason: reason as i32,
            expires_at: Some(timestamp_ms(pass.expires_at_ms)),
        }),
    )
}

/// The "now serving" state of one event on this replica: the latest [`View`], the
/// `WatchQueue` streams waiting for the head of the queue to reach them, and the shared
/// once-a-second clock on which they report.
pub struct NowServing {
    /// A request about the event arrived here since the last tick (see [`IDLE_TICK`]).
    demand: AtomicBool,
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
    fn wake_all(&self) {
        let due = std::mem::take(&mut self.lock().waiting);
        for (_, tx) in due {
            let _ = tx.send(());
        }
    }

    fn take_demand(&self) -> bool {
        self.demand.swap(false, Ordering::Relaxed)
    }

    /// Resolves once a stream of a user waiting at queue `score` must ask Redis again: the
    /// head of the queue has passed the score (the user was admitted, or left), or, for a
    /// user still in the pre-queue (`pre_queue`), the event has opened (the shuffle moved
    /// everyone). Resolves at once if that is already so. Dropping it unfiles the stream.
    pub fn turn(self: &Arc<Self>, score: u64, pre_queue: bool) -> Turn {
        let (tx, rx) = oneshot::channel();
        let mut state = self.lock();
        let view = state.view;
        let key = if view.refreshed && (view.head > score || (pre_queue && view.opened)) {
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
        let mut turn = serving.turn(1_000, false);
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
        let mut turn = serving.turn(1_000, false);
        // Rebuilt: pass ids (and so the count since) restart above the old ones.
        serving.publish(View { epoch: 7, ..view(20, 60) });
        assert!((&mut turn).now_or_never().is_some(), "the stream asks again at once");
    }
}
