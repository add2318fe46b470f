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
//!
//! Here: the tick loop, the opening, eviction and rebuilds. The outbox relay is in [`relay`],
//! the view each tick publishes and the streams waiting on it in [`serving`].

mod relay;
mod serving;

pub use serving::{NowServing, REPORT_INTERVAL, REPORT_PHASES, Turn, View};

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex, atomic::Ordering},
    time::{Duration, Instant},
};

use futures::StreamExt;
use service_runtime::{CancellationToken, bus::EventBus, lifecycle::Background};
use tokio::sync::watch;

use crate::{
    catalogue::{Catalogue, EventInfo},
    error::Error,
    fairness::ShuffleKey,
    rebuild::{CLOCK_SKEW, read_history},
    store::{Opening, Rebuilt, Store, TickParams, TickReport},
};

/// Events ticked at once by one replica; bounds the Redis calls in flight per poll.
const MAX_CONCURRENT_TICKS: usize = 16;

/// How often an idle event (open, nobody waiting, no pass out) is ticked. Events are never
/// forgotten, so without this every past sale would cost each replica a script per tick
/// forever; a request for the event on this replica makes its next tick due at once.
const IDLE_TICK: Duration = Duration::from_secs(5);

/// How often the controller looks for finished events to forget (see the module docs); the
/// sweep walks this replica's events once, so it runs far less often than the poll.
const EVICTION_SWEEP: Duration = Duration::from_secs(10);

/// How long a rebuild attempt that found another replica rebuilding (or failed) waits before
/// it lets its waiters try again.
const REBUILD_POLL: Duration = Duration::from_millis(50);

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
}
