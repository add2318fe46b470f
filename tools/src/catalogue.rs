//! The catalogue the tools sell from: a venue and an event on it, made through inventory's
//! public API as the operator (the simulator's arena, the bench's 50,000 seats, the inventory
//! restart bench's sale).

use anyhow::Context;
use ticketing_proto::v1::{self as pb, inventory_service_client::InventoryServiceClient};
use tonic::transport::Channel;

use crate::identity::Bearer;

/// Creates `venue`, then `event` on it (its `venue_id` is filled in), as `admin`.
pub async fn create_event(
    channel: Channel,
    admin: &Bearer,
    venue: pb::CreateVenueRequest,
    event: pb::CreateEventRequest,
) -> anyhow::Result<pb::Event> {
    let mut inventory = InventoryServiceClient::new(channel);
    let venue = inventory
        .create_venue(admin.request(venue))
        .await
        .context("CreateVenue")?
        .into_inner()
        .venue
        .context("CreateVenue answered no venue")?;
    inventory
        .create_event(admin.request(pb::CreateEventRequest { venue_id: venue.venue_id, ..event }))
        .await
        .context("CreateEvent")?
        .into_inner()
        .event
        .context("CreateEvent answered no event")
}

/// A seated zone: a row per label, `seats_per_row` seats each, none kept accessible.
pub fn seated_zone(
    zone_id: &str,
    name: &str,
    price_cents: i64,
    row_labels: Vec<String>,
    seats_per_row: u32,
) -> pb::ZoneSpec {
    pb::ZoneSpec {
        zone_id: zone_id.into(),
        name: name.into(),
        price_cents,
        layout: Some(pb::zone_spec::Layout::Seated(pb::SeatedLayout {
            row_labels,
            seats_per_row,
            accessible_seat_ids: vec![],
        })),
    }
}
