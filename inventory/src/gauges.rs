//! Gauges read off the live seat maps and the event stream, every [`POLL_INTERVAL`]:
//! - `inventory_zone_seats{event_id, zone, state}`: free, held and sold seats (places, for
//!   general admission) of each zone, as `GetAvailability` answers them. The label values
//!   come from the catalogue (zone ids are validated, at most `MAX_ZONES` per venue), never
//!   from a request. A zone's gauges are set when this replica first sees its event and then
//!   only when the event's map changed since the last poll, so an event idle for the
//!   exporter's idle timeout (`service_runtime::telemetry::METRICS_IDLE`) leaves the scrape:
//!   the series follow the sales under way, not every event ever created. (Publishing only
//!   events first seen untouched lost a whole short sale that happened between two polls:
//!   the Prometheus test then found no zone series at all.)
//! - `inventory_consumer_lag_messages`: messages in the stream that this replica's seat-map
//!   consumer has not applied yet (the stream's last sequence minus the last applied). A
//!   growing lag means seat maps, availability and `WatchSeatMap` fall behind the sale.

use std::{collections::HashMap, sync::Arc, time::Duration};

use service_runtime::{CancellationToken, bus::EventBus};
use tokio::sync::watch;
use uuid::Uuid;

use crate::{feed, registry::Registry};

/// How often the gauges are read: a few times per Prometheus scrape interval (15-30 s), and
/// one `STREAM.INFO` request to NATS per replica each time.
pub const POLL_INTERVAL: Duration = Duration::from_secs(5);

/// Publishes the per-zone gauges and the consumer lag every [`POLL_INTERVAL`] until
/// `stopping`. `applied` is the feed's last applied stream sequence.
pub async fn run(
    registry: Arc<Registry>,
    bus: EventBus,
    applied: watch::Receiver<u64>,
    stopping: CancellationToken,
) {
    let mut published = HashMap::new();
    let mut ticker = tokio::time::interval(POLL_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stopping.cancelled() => return,
            _ = ticker.tick() => {}
        }
        publish_zones(&registry, &mut published);
        match feed::stream_position(&bus).await {
            Ok(position) => {
                let lag = position.last.saturating_sub(*applied.borrow());
                metrics::gauge!("inventory_consumer_lag_messages").set(lag as f64);
            }
            Err(error) => tracing::debug!(error = %format!("{error:#}"), "cannot read the stream's position"),
        }
    }
}

/// Sets the zone gauges of every event whose map version differs from the one `published`
/// last, an event first seen included.
/// Answers how many events were published.
pub fn publish_zones(registry: &Registry, published: &mut HashMap<Uuid, u64>) -> usize {
    let mut count = 0;
    for (id, entry) in registry.all() {
        let map = entry.map();
        let version = map.version();
        if published.insert(id, version) == Some(version) {
            continue;
        }
        let event_id = id.to_string();
        for zone in map.availability(None) {
            for (state, seats) in [("free", zone.free), ("held", zone.held), ("sold", zone.sold)] {
                metrics::gauge!(
                    "inventory_zone_seats",
                    "event_id" => event_id.clone(),
                    "zone" => zone.zone_id.clone(),
                    "state" => state,
                )
                .set(f64::from(seats));
            }
        }
        count += 1;
    }
    count
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test code: a panic is a failed test

    use sea_orm::DatabaseConnection;
    use ticketing_proto::v1::{Event, Zone, ZoneKind};

    use super::*;
    use crate::{catalogue::Store, seatmap::SeatEvent};

    fn event(id: Uuid) -> Event {
        let zone = Zone {
            zone_id: "A".into(),
            kind: ZoneKind::Seated as i32,
            row_labels: vec!["1".into()],
            seats_per_row: 4,
            capacity: 4,
            ..Zone::default()
        };
        Event { event_id: id.to_string(), zones: vec![zone], ..Event::default() }
    }

    #[test]
    fn an_events_zones_are_published_when_its_map_changes_and_not_while_it_is_idle() {
        let registry = Registry::new(Store::new(DatabaseConnection::default()));
        let (fresh, sold) = (Uuid::now_v7(), Uuid::now_v7());
        registry.insert(event(fresh)).unwrap();
        let sold_entry = registry.insert(event(sold)).unwrap();
        let seats = ["A-1-1".to_owned()];
        let held = SeatEvent::Held { hold_id: "h", zone_id: "A", seat_ids: &seats, quantity: 1 };
        sold_entry.apply(|map| map.apply(held));
        let mut published = HashMap::new();
        // First poll: both, the untouched event and the one changed before we looked.
        assert_eq!(publish_zones(&registry, &mut published), 2);
        assert_eq!(publish_zones(&registry, &mut published), 0, "nothing changed");
        let confirmed = SeatEvent::Confirmed { hold_id: "h", zone_id: "A", seat_ids: &seats, quantity: 1 };
        sold_entry.apply(|map| map.apply(confirmed));
        assert_eq!(publish_zones(&registry, &mut published), 1, "the sale changed one map");
        assert_eq!(published.get(&sold), Some(&2));
        assert_eq!(publish_zones(&registry, &mut published), 0);
    }
}
