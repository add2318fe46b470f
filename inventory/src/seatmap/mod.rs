//! The live seat map of one event: per zone a packed state array (seated) or counters
//! (general admission), changed by applying seat events in stream order.
//!
//! Applying is idempotent and order-aware: a release frees a seat only if the releasing hold
//! still holds it, and a sold seat changes again only when its own sale is cancelled, so
//! replaying the stream from the start on every boot always rebuilds the same map.
//!
//! A cancellation comes from seat-lock (`SeatsReleased`, reason CANCELLED) while sales come
//! from payment (`BookingConfirmed`), two publishers: the next sale of a returned seat may
//! reach the stream before the return. The map therefore remembers who sold each seat (a
//! newer sale of a sold seat means the older one was returned) and which holds were returned
//! (their late `BookingConfirmed` is ignored).
//!
//! Its parts: this module (the map and how an event is dispatched to its zone), `zone` (a
//! zone's places: packed seat states or general-admission counters), `apply` (what each
//! seat event does to a seated or general-admission zone) and `state` (the map's durable
//! form, for snapshots, and its restore).

mod apply;
mod state;
#[cfg(test)]
mod tests;
mod zone;

use std::collections::{HashMap, HashSet};

use ticketing_proto::v1::{Event, GetSeatMapResponse, SeatChange, ZoneAvailability, ZoneKind};

pub use self::state::{MapState, ZoneSnapshot};
use self::{
    apply::{apply_general, apply_seated},
    zone::{GaPlaces, Places, SeatedSeats, ZoneState},
};
use crate::catalogue::parse_seat_id;

/// A seat event, as the stream carries it, reduced to what the map needs.
#[derive(Debug, Clone, Copy)]
pub enum SeatEvent<'a> {
    /// Seat-lock granted `hold_id` these seats (or `quantity` places of a GA zone).
    Held { hold_id: &'a str, zone_id: &'a str, seat_ids: &'a [String], quantity: u32 },
    /// The hold ended without a sale (released or expired).
    Released { hold_id: &'a str, zone_id: &'a str, seat_ids: &'a [String] },
    /// The hold was paid for: its seats are sold until the booking is cancelled.
    Confirmed { hold_id: &'a str, zone_id: &'a str, seat_ids: &'a [String], quantity: u32 },
    /// The hold's booking was cancelled and seat-lock gave its seats back: free again.
    Cancelled { hold_id: &'a str, zone_id: &'a str, seat_ids: &'a [String] },
}

/// What one applied event changed, for watchers.
#[derive(Debug, Clone, Default)]
pub struct Changes {
    /// The map's version after the event.
    pub version: u64,
    /// Seats whose state changed (seated zones only).
    pub seats: Vec<SeatChange>,
    /// Zones whose counts changed (seated or GA).
    pub zones: Vec<String>,
}

/// The seat map of one event.
pub struct SeatMap {
    event_id: String,
    zones: Vec<ZoneState>,
    by_id: HashMap<String, usize>,
    version: u64,
    /// Holds whose sale was cancelled; a `Confirmed` of one arriving after its return is stale.
    /// Grows with cancellations only, a small share of the sales.
    cancelled: HashSet<String>,
}

impl SeatMap {
    /// An all-free map of `event`'s zones.
    pub fn new(event: &Event) -> Self {
        let zones: Vec<ZoneState> = event
            .zones
            .iter()
            .map(|zone| {
                let places = if zone.kind == ZoneKind::GeneralAdmission as i32 {
                    Places::General(GaPlaces::default())
                } else {
                    Places::Seated(SeatedSeats {
                        rows: zone
                            .row_labels
                            .iter()
                            .enumerate()
                            .map(|(i, l)| (l.clone(), i as u32))
                            .collect(),
                        seats_per_row: zone.seats_per_row,
                        packed: vec![0; zone.capacity.div_ceil(4) as usize],
                        held_by: HashMap::new(),
                        sold_by: HashMap::new(),
                        encoded: None,
                    })
                };
                ZoneState { zone: zone.clone(), places, held: 0, sold: 0 }
            })
            .collect();
        let by_id = zones.iter().enumerate().map(|(i, z)| (z.zone.zone_id.clone(), i)).collect();
        Self { event_id: event.event_id.clone(), zones, by_id, version: 0, cancelled: HashSet::new() }
    }

    /// Count of seat events applied.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Whether the event has zone `zone_id`.
    pub fn has_zone(&self, zone_id: &str) -> bool {
        self.by_id.contains_key(zone_id)
    }

    /// The map of every zone, or of `zone_id` only (`None` if the event has no such zone).
    /// Each zone's states are encoded once per change, not once per call.
    pub fn snapshot(&mut self, zone_id: Option<&str>) -> Option<GetSeatMapResponse> {
        let zones = match zone_id {
            None => self.zones.iter_mut().map(ZoneState::seat_map).collect(),
            Some(id) => vec![self.zones[*self.by_id.get(id)?].seat_map()],
        };
        Some(GetSeatMapResponse { event_id: self.event_id.clone(), zones, version: self.version })
    }

    /// Per-zone counts, of every zone or of `zone_id` only.
    pub fn availability(&self, zone_id: Option<&str>) -> Vec<ZoneAvailability> {
        self.zones
            .iter()
            .filter(|z| zone_id.is_none_or(|id| z.zone.zone_id == id))
            .map(ZoneState::availability)
            .collect()
    }

    /// Applies one seat event and answers what changed. Unknown zones and seats are logged
    /// and skipped; the event still counts towards the version.
    pub fn apply(&mut self, event: SeatEvent<'_>) -> Changes {
        self.version += 1;
        let mut changes = Changes { version: self.version, ..Changes::default() };
        match event {
            SeatEvent::Confirmed { hold_id, .. } if self.cancelled.contains(hold_id) => return changes,
            SeatEvent::Cancelled { hold_id, .. } => {
                self.cancelled.insert(hold_id.to_owned());
            }
            _ => {}
        }
        let (zone_id, seat_ids) = match event {
            SeatEvent::Held { zone_id, seat_ids, .. }
            | SeatEvent::Released { zone_id, seat_ids, .. }
            | SeatEvent::Confirmed { zone_id, seat_ids, .. }
            | SeatEvent::Cancelled { zone_id, seat_ids, .. } => (zone_id, seat_ids),
        };
        // Seated events name their zone in every seat id; trust those when the field is empty.
        let zone_id = match (zone_id.is_empty(), seat_ids.first().and_then(|s| parse_seat_id(s))) {
            (true, Some((zone, _, _))) => zone,
            _ => zone_id,
        };
        let Some(&zone_index) = self.by_id.get(zone_id) else {
            tracing::warn!(event_id = %self.event_id, zone_id, "seat event for an unknown zone; skipped");
            return changes;
        };
        let zone = &mut self.zones[zone_index];
        let changed = match &mut zone.places {
            Places::Seated(seats) => apply_seated(
                &self.event_id,
                zone_id,
                seats,
                &mut zone.held,
                &mut zone.sold,
                event,
                &mut changes.seats,
            ),
            Places::General(places) => {
                let free = zone.zone.capacity.saturating_sub(zone.held + zone.sold);
                apply_general(places, &mut zone.held, &mut zone.sold, free, event)
            }
        };
        if changed {
            if let Places::Seated(seats) = &mut zone.places {
                seats.encoded = None;
            }
            changes.zones.push(zone_id.to_owned());
        }
        changes
    }
}
