//! What admission needs to know about an event, from inventory, cached for good: the shared
//! single-flight catalogue client ([`service_runtime::catalogue`]) keeping an [`EventInfo`]
//! of each event.

use std::{sync::Arc, time::Duration};

use service_runtime::{
    bus::timestamp_to_ms,
    catalogue::{CatalogueError, EventCatalogue},
};
use ticketing_proto::v1::Event;
use tonic::transport::Channel;

use crate::error::Error;

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

impl EventInfo {
    fn from_event(event: Event) -> Self {
        Self {
            sale_opens_at_ms: event.sale_opens_at.as_ref().map_or(0, timestamp_to_ms),
            capacity: event.admission_capacity,
            tick_ms: event.admission_tick_ms.max(1),
            pass_ttl_seconds: event.pass_ttl_seconds.max(1),
            event_id: event.event_id,
        }
    }
}

/// Reads events from inventory and remembers them; when a crowd joins a new event at once,
/// one GetEvent call is made and everyone waits for it.
pub struct Catalogue(EventCatalogue<EventInfo>);

impl Catalogue {
    /// A catalogue backed by the inventory service behind `channel`.
    pub fn new(channel: Channel) -> Self {
        Self(EventCatalogue::new(channel, INVENTORY_TIMEOUT, EventInfo::from_event))
    }

    /// The event's settings (shared, not copied: every request reads them): NOT_FOUND when
    /// inventory does not know it, UNAVAILABLE when inventory cannot be reached.
    pub async fn get(&self, event_id: &str) -> Result<Arc<EventInfo>, Error> {
        Ok(self.0.get(event_id).await?.event)
    }

    /// Drops the event from the cache (a finished event, see the controller); asked again on
    /// its next use.
    pub fn forget(&self, event_id: &str) {
        self.0.forget(event_id);
    }
}

impl From<CatalogueError> for Error {
    fn from(error: CatalogueError) -> Self {
        match error {
            CatalogueError::UnknownEvent(event_id) => Error::UnknownEvent(event_id),
            CatalogueError::Unavailable(status) => Error::InventoryUnavailable(status),
        }
    }
}
