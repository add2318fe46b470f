//! Event layouts, asked from inventory once and kept in memory (events are immutable).

use std::{collections::HashMap, sync::Arc, time::Duration};

use ticketing_proto::v1::{
    Event, GetEventRequest, ZoneKind, inventory_service_client::InventoryServiceClient,
};
use tokio::sync::RwLock;
use tonic::{Code, transport::Channel};

use crate::error::Error;

/// Events kept in memory. Each is a few KB; beyond this many, new events are still served
/// but fetched again on every call instead of being cached.
const MAX_CACHED_EVENTS: usize = 10_000;

/// Longest wait for inventory's answer.
pub const INVENTORY_TIMEOUT: Duration = Duration::from_secs(3);

/// A zone as seat-lock needs it.
#[derive(Debug, Clone)]
pub struct Zone {
    pub zone_id: String,
    /// Seated zones have rows and seat ids; general admission is sold by count.
    pub seated: bool,
    pub price_cents: i64,
    /// Row labels from the best row to the worst.
    pub row_labels: Vec<String>,
    pub seats_per_row: u32,
    /// Seats or places.
    pub capacity: u32,
}

/// An event's layout and sale rules.
#[derive(Debug, Clone)]
pub struct Layout {
    pub event_id: String,
    pub currency: String,
    pub max_tickets_per_user: u32,
    pub zones: Vec<Zone>,
}

impl Layout {
    fn from_event(event: Event) -> Self {
        let zones = event
            .zones
            .into_iter()
            .map(|zone| Zone {
                seated: zone.kind == ZoneKind::Seated as i32,
                zone_id: zone.zone_id,
                price_cents: zone.price_cents,
                row_labels: zone.row_labels,
                seats_per_row: zone.seats_per_row,
                capacity: zone.capacity,
            })
            .collect();
        Self {
            event_id: event.event_id,
            currency: event.currency,
            max_tickets_per_user: event.max_tickets_per_user,
            zones,
        }
    }

    /// The zone named `zone_id`.
    pub fn zone(&self, zone_id: &str) -> Option<&Zone> {
        self.zones.iter().find(|zone| zone.zone_id == zone_id)
    }

    /// The zone of a seat id "<zone>-<row>-<number>" when the seat exists in the layout.
    pub fn zone_of_seat(&self, seat_id: &str) -> Option<&Zone> {
        let mut parts = seat_id.split('-');
        let (Some(zone_id), Some(row), Some(written), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        let zone = self.zone(zone_id)?;
        let number: u32 = written.parse().ok()?;
        // "A-1-01" would alias "A-1-1": only the canonical spelling exists.
        let canonical = number.to_string() == written;
        let exists = zone.seated
            && canonical
            && (1..=zone.seats_per_row).contains(&number)
            && zone.row_labels.iter().any(|label| label == row);
        exists.then_some(zone)
    }
}

/// Layouts by event id, filled from inventory on first use.
#[derive(Clone)]
pub struct Catalog {
    inventory: InventoryServiceClient<Channel>,
    layouts: Arc<RwLock<HashMap<String, Arc<Layout>>>>,
}

impl Catalog {
    /// A catalog asking inventory over `channel`.
    pub fn new(channel: Channel) -> Self {
        Self { inventory: InventoryServiceClient::new(channel), layouts: Arc::default() }
    }

    /// The layout of `event_id`; the boolean is true when it was just fetched (first use).
    pub async fn layout(&self, event_id: &str) -> Result<(Arc<Layout>, bool), Error> {
        if let Some(layout) = self.layouts.read().await.get(event_id) {
            return Ok((layout.clone(), false));
        }
        let mut request = tonic::Request::new(GetEventRequest { event_id: event_id.to_owned() });
        request.set_timeout(INVENTORY_TIMEOUT);
        service_runtime::telemetry::inject_grpc(&mut request);
        let event = match self.inventory.clone().get_event(request).await {
            Ok(response) => response.into_inner().event,
            Err(status) if status.code() == Code::NotFound => None,
            Err(status) => return Err(Error::InventoryUnavailable(Box::new(status))),
        };
        let event = event.ok_or_else(|| Error::EventNotFound(event_id.to_owned()))?;
        let layout = Arc::new(Layout::from_event(event));
        let mut layouts = self.layouts.write().await;
        if layouts.len() < MAX_CACHED_EVENTS {
            layouts.insert(event_id.to_owned(), layout.clone());
        }
        Ok((layout, true))
    }
}
