//! The events this replica knows, each with its live seat map and change feed.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, MutexGuard, RwLock,
        atomic::{AtomicU64, Ordering},
    },
};

use ticketing_proto::v1::Event;
use tokio::sync::broadcast;
use uuid::Uuid;

use crate::{
    catalogue::Store,
    error::Error,
    seatmap::{Changes, SeatMap},
};

/// Change batches buffered per event for watchers; a watcher further behind than this gets
/// a fresh snapshot instead (cheaper than buffering without bound for a slow client).
pub const CHANGE_FEED_CAPACITY: usize = 1_024;

/// One event: its description, seat map and the feed of applied changes.
pub struct EventEntry {
    /// The event as stored, with its venue's zones.
    pub event: Event,
    /// Locked only for short, synchronous reads and writes; never across an await.
    map: Mutex<SeatMap>,
    /// Every change applied to `map`, sent while the map lock is held so watchers that
    /// subscribe under that lock see exactly the changes after their snapshot.
    changes: broadcast::Sender<Arc<Changes>>,
    /// The map version of the last snapshot known to be stored ([`NOT_PERSISTED`] if none):
    /// set by the snapshot writer after a successful write, read by the feed to decide
    /// whether the map needs a new snapshot or only a move of its covered sequence.
    persisted: AtomicU64,
}

/// [`EventEntry::persisted_version`] of a map with no stored snapshot.
pub const NOT_PERSISTED: u64 = u64::MAX;

impl EventEntry {
    fn new(event: Event) -> Self {
        let map = Mutex::new(SeatMap::new(&event));
        let (changes, _) = broadcast::channel(CHANGE_FEED_CAPACITY);
        Self { event, map, changes, persisted: AtomicU64::new(NOT_PERSISTED) }
    }

    /// Replaces the map with one restored from a snapshot of `version` (at start, before
    /// the feed runs and anything is served).
    pub fn restore(&self, map: SeatMap) {
        let version = map.version();
        *self.map() = map;
        self.set_persisted(version);
    }

    /// The version of the last stored snapshot, or [`NOT_PERSISTED`].
    pub fn persisted_version(&self) -> u64 {
        self.persisted.load(Ordering::Acquire)
    }

    /// Records that a snapshot of `version` is stored.
    pub fn set_persisted(&self, version: u64) {
        self.persisted.store(version, Ordering::Release);
    }

    /// The seat map, locked. A poisoned lock is recovered: the map is only ever mutated by
    /// `apply`, whose every step leaves it consistent.
    pub fn map(&self) -> MutexGuard<'_, SeatMap> {
        self.map.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Applies `f` to the map and publishes what changed to watchers.
    pub fn apply(&self, f: impl FnOnce(&mut SeatMap) -> Changes) {
        let mut map = self.map();
        let changes = f(&mut map);
        if !changes.zones.is_empty() {
            // No receivers is fine: nobody is watching.
            let _ = self.changes.send(Arc::new(changes));
        }
    }

    /// Runs `f` on the map and subscribes to the changes after that moment, atomically.
    pub fn subscribe<T>(&self, f: impl FnOnce(&mut SeatMap) -> T) -> (T, broadcast::Receiver<Arc<Changes>>) {
        let mut map = self.map();
        let receiver = self.changes.subscribe();
        (f(&mut map), receiver)
    }
}

/// Events in memory, backed by the catalogue in Postgres.
pub struct Registry {
    store: Store,
    events: RwLock<HashMap<Uuid, Arc<EventEntry>>>,
}

impl Registry {
    /// An empty registry over `store`.
    pub fn new(store: Store) -> Self {
        Self { store, events: RwLock::new(HashMap::new()) }
    }

    /// The Postgres side of the catalogue.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Loads every stored event (at start).
    pub async fn load_all(&self) -> Result<usize, Error> {
        let events = self.store.load_all().await?;
        let count = events.len();
        for event in events {
            self.insert(event)?;
        }
        Ok(count)
    }

    /// Adds `event` unless it is already known; answers the entry in memory.
    pub fn insert(&self, event: Event) -> Result<Arc<EventEntry>, Error> {
        let id = Uuid::parse_str(&event.event_id)
            .map_err(|_| Error::CorruptRow(format!("event id {:?}", event.event_id)))?;
        let mut events = self.events.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        Ok(events.entry(id).or_insert_with(|| Arc::new(EventEntry::new(event))).clone())
    }

    /// The event from memory, or loaded once from Postgres (another replica may have
    /// created it); `EventNotFound` if it is stored nowhere.
    pub async fn get(&self, id: Uuid) -> Result<Arc<EventEntry>, Error> {
        if let Some(entry) = self.cached(id) {
            return Ok(entry);
        }
        match self.store.load_event(id).await? {
            Some(event) => self.insert(event),
            None => Err(Error::EventNotFound(id.to_string())),
        }
    }

    /// Every event in memory.
    pub fn all(&self) -> Vec<(Uuid, Arc<EventEntry>)> {
        let events = self.events.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        events.iter().map(|(id, entry)| (*id, entry.clone())).collect()
    }

    /// The event if it is in memory.
    pub fn cached(&self, id: Uuid) -> Option<Arc<EventEntry>> {
        self.events.read().unwrap_or_else(std::sync::PoisonError::into_inner).get(&id).cloned()
    }
}
