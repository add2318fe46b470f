//! Before the sale: the users' connections and the event they buy from (seated zones split
//! 20/40/40, an optional general-admission zone), made through the public API.

use ticketing_proto::v1 as pb;
use tonic::transport::Channel;

use super::config::SimConfig;
use crate::{catalogue, grpc};

/// The HTTP/2 connections the users share.
pub async fn connect(config: &SimConfig) -> anyhow::Result<Vec<Channel>> {
    grpc::connect(&config.target, config.connections, None).await
}

/// Seats per row so that a zone of `seats` fits the 500-row limit.
fn seats_per_row(seats: u32) -> u32 {
    seats.div_ceil(400).clamp(25, 1_000)
}

/// Creates the venue and the event through the public API.
pub async fn create_event(channel: Channel, config: &SimConfig) -> anyhow::Result<pb::Event> {
    let seated = |zone_id: &str, name: &str, price: i64, seats: u32| {
        let per_row = seats_per_row(seats).min(seats.max(1));
        let rows = seats.div_ceil(per_row).max(1);
        catalogue::seated_zone(zone_id, name, price, (1..=rows).map(|r| format!("R{r}")).collect(), per_row)
    };
    let floor = config.seats / 5;
    let lower = (config.seats - floor) / 2;
    let upper = config.seats - floor - lower;
    let mut zones = Vec::new();
    for (id, name, price, seats) in [
        ("FLOOR", "Floor", 15_000, floor),
        ("LOWER", "Lower tier", 9_000, lower),
        ("UPPER", "Upper tier", 5_500, upper),
    ] {
        if seats > 0 {
            zones.push(seated(id, name, price, seats));
        }
    }
    if config.ga_capacity > 0 {
        zones.push(pb::ZoneSpec {
            zone_id: "GA".into(),
            name: "Standing".into(),
            price_cents: 4_000,
            layout: Some(pb::zone_spec::Layout::GeneralAdmission(pb::GeneralAdmissionLayout {
                capacity: config.ga_capacity,
            })),
        });
    }
    let now = chrono::Utc::now().timestamp_millis();
    let venue = pb::CreateVenueRequest { name: "Flash-sale arena".into(), zones };
    let event = pb::CreateEventRequest {
        venue_id: String::new(),
        name: "The flash-sale concert".into(),
        starts_at: Some(service_runtime::bus::timestamp_ms(now + 30 * 86_400_000)),
        sale_opens_at: Some(service_runtime::bus::timestamp_ms(now + (config.open_in_secs * 1000.0) as i64)),
        max_tickets_per_user: config.max_tickets_per_user,
        currency: "EUR".into(),
        admission_capacity: config.admission_capacity,
        admission_tick_ms: config.admission_tick_ms,
        pass_ttl_seconds: config.pass_ttl_secs,
        cancellation_cutoff_seconds: 0,
    };
    catalogue::create_event(channel, &config.identity.admin(), venue, event).await
}
