//! What admission needs to know about an event, from inventory, cached for good.
//!
//! Events are immutable once created, so an entry never goes stale; only unknown events and
//! failures are asked again.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use service_runtime::bus::timestamp_to_ms;
use ticketing_proto::v1::{GetEventRequest, inventory_service_client::InventoryServiceClient};
use tokio::sync::OnceCell;
use tonic::{Code, transport::Channel};

use crate::error::Error;

/// Events kept in memory (plus lookups in flight); beyond it new events are still served,
/// just not cached. A sale has
/// a handful of live events, so this is far above need while bounding memory.
const MAX_CACHED_EVENTS: usize = 10_000;

/// Longest a GetEvent call may take; inventory answers from memory.
pub const INVENTORY_TIMEOUT: Duration = Duration::from_secs(2);

/// The admission settings of one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventInfo {
    pub event_id: String,
    /// Unix ms; before it joiners wait in the pre-queue and nobody is admitted.
    pub sale_opens_at_ms: i64,
    /// Active passes allowed at once.
    pub capacity: u32,
    pub tick_ms: u32,
    pub pass_ttl_seconds: u32,
}

/// Reads events from inventory and remembers them.
///
/// Lookups are single-flight: when a crowd joins a new event at once, one GetEvent call is
/// made and everyone waits for it, instead of a stampede on inventory.
pub struct Catalog {
    client: InventoryServiceClient<Channel>,
    cache: Mutex<HashMap<String, Arc<OnceCell<Arc<EventInfo>>>>>,
}

impl Catalog {
    /// A catalog backed by the inventory service behind `channel`.
    pub fn new(channel: Channel) -> Self {
        Self { client: InventoryServiceClient::new(channel), cache: Mutex::new(HashMap::new()) }
    }

    /// The event's settings (shared, not copied: every request reads them): NOT_FOUND when
    /// inventory does not know it, UNAVAILABLE when inventory cannot be reached.
    pub async fn get(&self, event_id: &str) -> Result<Arc<EventInfo>, Error> {
        let cell = {
            let mut cache = self.cache.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
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
        match cell.get_or_try_init(|| async { self.fetch(event_id).await.map(Arc::new) }).await {
            Ok(info) => Ok(info.clone()),
            Err(error) => {
                // Failures are not remembered: the next request asks inventory again.
                let mut cache = self.cache.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                if cache.get(event_id).is_some_and(|cached| cached.get().is_none()) {
                    cache.remove(event_id);
                }
                Err(error)
            }
        }
    }

    /// Drops the event from the cache (a finished event, see the controller); asked again on
    /// its next use.
    pub fn forget(&self, event_id: &str) {
        self.cache.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).remove(event_id);
    }

    async fn fetch(&self, event_id: &str) -> Result<EventInfo, Error> {
        let mut request = tonic::Request::new(GetEventRequest { event_id: event_id.to_owned() });
        request.set_timeout(INVENTORY_TIMEOUT);
        service_runtime::telemetry::inject_grpc(&mut request);
        let response =
            self.client.clone().get_event(request).await.map_err(|status| match status.code() {
                Code::NotFound | Code::InvalidArgument => Error::UnknownEvent(event_id.to_owned()),
                _ => Error::InventoryUnavailable(Box::new(status)),
            })?;
        let event = response.into_inner().event.ok_or_else(|| Error::UnknownEvent(event_id.to_owned()))?;
        Ok(EventInfo {
            event_id: event_id.to_owned(),
            sale_opens_at_ms: event.sale_opens_at.as_ref().map_or(0, timestamp_to_ms),
            capacity: event.admission_capacity,
            tick_ms: event.admission_tick_ms.max(1),
            pass_ttl_seconds: event.pass_ttl_seconds.max(1),
        })
    }
}
