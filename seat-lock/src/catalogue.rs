//! Event layouts, asked from inventory once and kept in memory (events are immutable), through
//! the shared single-flight catalogue client ([`service_runtime::catalogue`]).

use std::{sync::Arc, time::Duration};

use service_runtime::catalogue::{CatalogueError, EventCatalogue};
use ticketing_proto::v1::{Event, ZoneKind};
use tonic::transport::Channel;

use crate::error::Error;

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

    /// The labels of a per-zone series: the event, and the zone's id as the catalogue has it,
    /// or `unknown` for one the layout lacks (a Redis entry of another layout), so the label
    /// values stay the catalogue's (at most 100 zones an event).
    pub fn zone_labels(&self, zone_id: &str) -> [(&'static str, String); 2] {
        let zone = self.zone(zone_id).map_or("unknown", |zone| zone.zone_id.as_str()).to_owned();
        [("event_id", self.event_id.clone()), ("zone", zone)]
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

/// Layouts by event id, asked from inventory on first use (one GetEvent call however many
/// requests ask for a new event at once) and kept.
#[derive(Clone)]
pub struct Catalogue(Arc<EventCatalogue<Layout>>);

impl Catalogue {
    /// A catalogue asking inventory over `channel`.
    pub fn new(channel: Channel) -> Self {
        Self(Arc::new(EventCatalogue::new(channel, INVENTORY_TIMEOUT, Layout::from_event)))
    }

    /// The layout of `event_id`; the boolean is true for the one caller whose lookup asked
    /// inventory (the event's first use in this process).
    pub async fn layout(&self, event_id: &str) -> Result<(Arc<Layout>, bool), Error> {
        let described = self.0.get(event_id).await?;
        Ok((described.event, described.fetched))
    }
}

impl From<CatalogueError> for Error {
    fn from(error: CatalogueError) -> Self {
        match error {
            CatalogueError::UnknownEvent(event_id) => Error::EventNotFound(event_id),
            CatalogueError::Unavailable(status) => Error::InventoryUnavailable(status),
        }
    }
}
