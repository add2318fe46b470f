//! The event catalogue as the services read it: inventory's `GetEvent`, asked once per event
//! and kept in memory. Events are immutable once created, so an entry never goes stale; only
//! unknown events and failures are asked again.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use ticketing_proto::v1::{Event, GetEventRequest, inventory_service_client::InventoryServiceClient};
use tokio::sync::OnceCell;
use tonic::{Code, Status, transport::Channel};

/// Events kept in memory (lookups in flight included). Beyond it new events are still served,
/// fetched on every call instead of cached. A sale has a handful of live events and each entry
/// is a few KB, so this is far above need while bounding memory.
pub const MAX_CACHED_EVENTS: usize = 10_000;

/// Why an event could not be described.
#[derive(Debug, thiserror::Error)]
pub enum CatalogueError {
    /// Inventory does not know the event (or refused its id).
    #[error("unknown event {0}")]
    UnknownEvent(String),
    /// Inventory could not be asked, or failed to answer in time.
    #[error("inventory unavailable: {}", .0.message())]
    Unavailable(Box<Status>),
}

/// One lookup's answer.
#[derive(Debug)]
pub struct Described<T> {
    /// What the service keeps of the event (shared, not copied: every request reads it).
    pub event: Arc<T>,
    /// True for the one caller whose lookup asked inventory (the event's first use in this
    /// process, or its first since [`EventCatalogue::forget`]); the callers that waited for
    /// that lookup, and later ones, get false.
    pub fetched: bool,
}

/// Events described by inventory, each converted once into what the service keeps of it
/// (`T`) and cached.
///
/// Lookups are single-flight: when a crowd asks for a new event at once, one GetEvent call is
/// made and everyone waits for it, instead of a stampede on inventory.
pub struct EventCatalogue<T> {
    client: InventoryServiceClient<Channel>,
    /// Longest one GetEvent call may take; inventory answers from memory.
    timeout: Duration,
    /// What the service keeps of an event.
    describe: fn(Event) -> T,
    cache: Mutex<HashMap<String, Arc<OnceCell<Arc<T>>>>>,
}

impl<T> EventCatalogue<T> {
    /// A catalogue asking inventory behind `channel`, each call bounded by `timeout`, keeping
    /// `describe(event)` of each event.
    pub fn new(channel: Channel, timeout: Duration, describe: fn(Event) -> T) -> Self {
        Self { client: InventoryServiceClient::new(channel), timeout, describe, cache: Mutex::default() }
    }

    /// The event `event_id`: [`CatalogueError::UnknownEvent`] when inventory does not know
    /// it, [`CatalogueError::Unavailable`] when inventory cannot be reached.
    pub async fn get(&self, event_id: &str) -> Result<Described<T>, CatalogueError> {
        let cell = {
            let mut cache = self.lock();
            match cache.get(event_id) {
                Some(cell) => cell.clone(),
                None => {
                    let cell = Arc::new(OnceCell::new());
                    if cache.len() < MAX_CACHED_EVENTS {
                        cache.insert(event_id.to_owned(), cell.clone());
                    }
                    cell
                }
            }
        };
        let mut fetched = false;
        let lookup = cell
            .get_or_try_init(|| async {
                fetched = true;
                self.fetch(event_id).await.map(|event| Arc::new((self.describe)(event)))
            })
            .await;
        match lookup {
            Ok(event) => Ok(Described { event: event.clone(), fetched }),
            Err(error) => {
                // Failures are not remembered: the next request asks inventory again.
                let mut cache = self.lock();
                if cache.get(event_id).is_some_and(|cached| cached.get().is_none()) {
                    cache.remove(event_id);
                }
                Err(error)
            }
        }
    }

    /// Drops the event from the cache (an event the service is done with); asked again on its
    /// next use.
    pub fn forget(&self, event_id: &str) {
        self.lock().remove(event_id);
    }

    /// The cache; a panic elsewhere while it was held left nothing half-done in it.
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<OnceCell<Arc<T>>>>> {
        self.cache.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    async fn fetch(&self, event_id: &str) -> Result<Event, CatalogueError> {
        let mut request = tonic::Request::new(GetEventRequest { event_id: event_id.to_owned() });
        request.set_timeout(self.timeout);
        crate::telemetry::inject_grpc(&mut request);
        let response =
            self.client.clone().get_event(request).await.map_err(|status| match status.code() {
                Code::NotFound | Code::InvalidArgument => CatalogueError::UnknownEvent(event_id.to_owned()),
                _ => CatalogueError::Unavailable(Box::new(status)),
            })?;
        response.into_inner().event.ok_or_else(|| CatalogueError::UnknownEvent(event_id.to_owned()))
    }
}
