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

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use ticketing_proto::{
    seat_states::{EncodedSeatStates, encode},
    v1::{Event, GetSeatMapResponse, SeatChange, SeatState, Zone, ZoneAvailability, ZoneKind, ZoneSeatMap},
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

/// States of a seated zone, two bits per seat (the packed form of `ZoneSeatMap.seat_states`).
struct SeatedSeats {
    rows: HashMap<String, u32>,
    seats_per_row: u32,
    packed: Vec<u8>,
    /// The hold that holds each held seat, by seat index.
    held_by: HashMap<u32, String>,
    /// The hold that bought each sold seat, by seat index (one shared string per hold), so a
    /// cancellation frees only its own seats.
    sold_by: HashMap<u32, Arc<str>>,
    /// `packed` in its smaller wire encoding, made by the first snapshot after a change and
    /// shared (reference-counted) by every snapshot until the next change.
    encoded: Option<EncodedSeatStates>,
}

impl SeatedSeats {
    fn get(&self, index: u32) -> u8 {
        (self.packed[(index / 4) as usize] >> ((index % 4) * 2)) & 0b11
    }

    fn set(&mut self, index: u32, state: SeatState) {
        let byte = &mut self.packed[(index / 4) as usize];
        let shift = (index % 4) * 2;
        *byte = (*byte & !(0b11 << shift)) | ((state as u8) << shift);
    }

    fn encoded(&mut self, seats: u32) -> EncodedSeatStates {
        self.encoded.get_or_insert_with(|| encode(&self.packed, seats as usize)).clone()
    }

    fn index(&self, zone_id: &str, seat_id: &str) -> Option<u32> {
        let (zone, row, number) = parse_seat_id(seat_id)?;
        if zone != zone_id || number == 0 || number > self.seats_per_row {
            return None;
        }
        Some(self.rows.get(row)? * self.seats_per_row + (number - 1))
    }
}

/// Places of a general-admission zone, by hold.
#[derive(Default)]
struct GaPlaces {
    held: HashMap<String, u32>,
    /// Places sold, by the hold that bought them; a cancellation gives back its own.
    sold: HashMap<String, u32>,
}

enum Places {
    Seated(SeatedSeats),
    General(GaPlaces),
}

struct ZoneState {
    zone: Zone,
    places: Places,
    held: u32,
    sold: u32,
}

impl ZoneState {
    fn free(&self) -> u32 {
        self.zone.capacity.saturating_sub(self.held + self.sold)
    }

    fn availability(&self) -> ZoneAvailability {
        ZoneAvailability {
            zone_id: self.zone.zone_id.clone(),
            kind: self.zone.kind,
            price_cents: self.zone.price_cents,
            capacity: self.zone.capacity,
            free: self.free(),
            held: self.held,
            sold: self.sold,
        }
    }

    fn seat_map(&mut self) -> ZoneSeatMap {
        let states = match &mut self.places {
            Places::Seated(seats) => seats.encoded(self.zone.capacity),
            Places::General(_) => encode(&[], 0),
        };
        ZoneSeatMap {
            zone_id: self.zone.zone_id.clone(),
            kind: self.zone.kind,
            row_labels: self.zone.row_labels.clone(),
            seats_per_row: self.zone.seats_per_row,
            seat_states: states.bytes,
            seat_states_encoding: states.encoding as i32,
            capacity: self.zone.capacity,
            free: self.free(),
            held: self.held,
            sold: self.sold,
        }
    }
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

/// Everything a seat map holds, in a form that survives a restart: the sold and held places
/// by hold, the cancelled holds and the version. Held places are kept with their hold even
/// though holds are volatile: the release or expiry that ends a hold comes later in the
/// stream, so a map restored from this state and then fed the messages after it is exactly
/// the map a full replay would build. The packed seat states and the zone counters are
/// derived on restore, never trusted from storage.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MapState {
    /// Seat events applied, so watchers' versions keep increasing across restarts.
    pub version: u64,
    /// Holds whose sale was cancelled (see [`SeatMap`]).
    pub cancelled: Vec<String>,
    pub zones: Vec<ZoneSnapshot>,
}

/// One zone of a [`MapState`]: seat indices (row index × seats per row + seat number − 1)
/// by hold for a seated zone, place counts by hold for general admission.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ZoneSnapshot {
    pub zone_id: String,
    /// The zone's capacity when the state was taken; a different catalogue refuses it.
    pub capacity: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub held_seats: Vec<(String, Vec<u32>)>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sold_seats: Vec<(String, Vec<u32>)>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub held_places: Vec<(String, u32)>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sold_places: Vec<(String, u32)>,
}

/// Seat indices grouped by the hold that holds or bought them, sorted for a stable form.
fn by_hold<'a>(seats: impl Iterator<Item = (&'a u32, &'a str)>) -> Vec<(String, Vec<u32>)> {
    let mut groups: HashMap<&str, Vec<u32>> = HashMap::new();
    for (index, hold) in seats {
        groups.entry(hold).or_default().push(*index);
    }
    let mut groups: Vec<(String, Vec<u32>)> = groups
        .into_iter()
        .map(|(hold, mut seats)| {
            seats.sort_unstable();
            (hold.to_owned(), seats)
        })
        .collect();
    groups.sort_unstable();
    groups
}

impl SeatMap {
    /// The map's state, for a snapshot. Copies the per-hold tables, so callers take it
    /// under the entry's lock and serialise it elsewhere.
    pub fn state(&self) -> MapState {
        let mut cancelled: Vec<String> = self.cancelled.iter().cloned().collect();
        cancelled.sort_unstable();
        let zones = self
            .zones
            .iter()
            .map(|zone| {
                let mut out = ZoneSnapshot {
                    zone_id: zone.zone.zone_id.clone(),
                    capacity: zone.zone.capacity,
                    ..ZoneSnapshot::default()
                };
                match &zone.places {
                    Places::Seated(seats) => {
                        out.held_seats = by_hold(seats.held_by.iter().map(|(i, h)| (i, h.as_str())));
                        out.sold_seats = by_hold(seats.sold_by.iter().map(|(i, h)| (i, &**h)));
                    }
                    Places::General(places) => {
                        let sorted = |map: &HashMap<String, u32>| {
                            let mut v: Vec<(String, u32)> =
                                map.iter().map(|(h, q)| (h.clone(), *q)).collect();
                            v.sort_unstable();
                            v
                        };
                        out.held_places = sorted(&places.held);
                        out.sold_places = sorted(&places.sold);
                    }
                }
                out
            })
            .collect();
        MapState { version: self.version, cancelled, zones }
    }

    /// The map of `event` in `state`. Refused (with the reason) if the state does not fit
    /// the event's zones: another zone list or capacity, a seat index out of range, a seat
    /// in two holds, or more places than a zone has.
    pub fn restore(event: &Event, state: &MapState) -> Result<Self, String> {
        let mut map = Self::new(event);
        if state.zones.len() != map.zones.len() {
            return Err(format!("{} zones stored, the event has {}", state.zones.len(), map.zones.len()));
        }
        for (zone, stored) in map.zones.iter_mut().zip(&state.zones) {
            if zone.zone.zone_id != stored.zone_id || zone.zone.capacity != stored.capacity {
                return Err(format!(
                    "zone {:?} ({} places) stored where the event has {:?} ({} places)",
                    stored.zone_id, stored.capacity, zone.zone.zone_id, zone.zone.capacity
                ));
            }
            let capacity = zone.zone.capacity;
            match &mut zone.places {
                Places::Seated(seats) => {
                    for (groups, state) in
                        [(&stored.held_seats, SeatState::Held), (&stored.sold_seats, SeatState::Sold)]
                    {
                        for (hold, indices) in groups {
                            let owner: Arc<str> = Arc::from(hold.as_str());
                            for &index in indices {
                                if index >= capacity || seats.get(index) != SeatState::Free as u8 {
                                    return Err(format!(
                                        "zone {:?}: seat index {index} out of range or twice",
                                        stored.zone_id
                                    ));
                                }
                                seats.set(index, state);
                                if state == SeatState::Held {
                                    seats.held_by.insert(index, hold.clone());
                                    zone.held += 1;
                                } else {
                                    seats.sold_by.insert(index, Arc::clone(&owner));
                                    zone.sold += 1;
                                }
                            }
                        }
                    }
                }
                Places::General(places) => {
                    for (hold, quantity) in &stored.held_places {
                        places.held.insert(hold.clone(), *quantity);
                        zone.held += quantity;
                    }
                    for (hold, quantity) in &stored.sold_places {
                        places.sold.insert(hold.clone(), *quantity);
                        zone.sold += quantity;
                    }
                    if u64::from(zone.held) + u64::from(zone.sold) > u64::from(capacity) {
                        return Err(format!(
                            "zone {:?}: more places held and sold than it has",
                            stored.zone_id
                        ));
                    }
                }
            }
        }
        map.cancelled = state.cancelled.iter().cloned().collect();
        map.version = state.version;
        Ok(map)
    }
}

fn apply_seated(
    event_id: &str,
    zone_id: &str,
    seats: &mut SeatedSeats,
    held: &mut u32,
    sold: &mut u32,
    event: SeatEvent<'_>,
    out: &mut Vec<SeatChange>,
) -> bool {
    let (hold_id, seat_ids) = match event {
        SeatEvent::Held { hold_id, seat_ids, .. }
        | SeatEvent::Released { hold_id, seat_ids, .. }
        | SeatEvent::Confirmed { hold_id, seat_ids, .. }
        | SeatEvent::Cancelled { hold_id, seat_ids, .. } => (hold_id, seat_ids),
    };
    let buyer: Arc<str> = Arc::from(hold_id);
    let before = out.len();
    for seat_id in seat_ids {
        let Some(index) = seats.index(zone_id, seat_id) else {
            tracing::warn!(event_id, zone_id, seat_id, "unknown seat id in a seat event; skipped");
            continue;
        };
        let state = seats.get(index);
        let next = match event {
            SeatEvent::Held { .. } if state == SeatState::Free as u8 => {
                *held += 1;
                seats.held_by.insert(index, hold_id.to_owned());
                Some(SeatState::Held)
            }
            SeatEvent::Held { .. } if state == SeatState::Held as u8 => {
                // Seat-lock is the gatekeeper: a newer hold means the older one ended, even if
                // its release was never published. Same state, new owner.
                if seats.held_by.get(&index).is_some_and(|owner| owner != hold_id) {
                    tracing::warn!(event_id, seat_id, hold_id, "seat held again by another hold");
                    seats.held_by.insert(index, hold_id.to_owned());
                }
                None
            }
            SeatEvent::Released { .. }
                if state == SeatState::Held as u8
                    && seats.held_by.get(&index).is_some_and(|owner| owner == hold_id) =>
            {
                *held -= 1;
                seats.held_by.remove(&index);
                Some(SeatState::Free)
            }
            SeatEvent::Confirmed { .. } if state != SeatState::Sold as u8 => {
                if state == SeatState::Held as u8 {
                    *held -= 1;
                    seats.held_by.remove(&index);
                }
                *sold += 1;
                seats.sold_by.insert(index, Arc::clone(&buyer));
                Some(SeatState::Sold)
            }
            SeatEvent::Confirmed { .. } => {
                // Sold again by another hold: seat-lock returned the older sale before it
                // sold the seat anew, though that return is not in the stream yet. Same
                // state, new buyer; the older return, when it comes, finds the seat not its own.
                if seats.sold_by.get(&index).is_some_and(|owner| **owner != *hold_id) {
                    tracing::debug!(event_id, seat_id, hold_id, "sold seat sold again by another hold");
                    seats.sold_by.insert(index, Arc::clone(&buyer));
                }
                None
            }
            SeatEvent::Cancelled { .. }
                if state == SeatState::Sold as u8
                    && seats.sold_by.get(&index).is_some_and(|owner| **owner == *hold_id) =>
            {
                *sold -= 1;
                seats.sold_by.remove(&index);
                Some(SeatState::Free)
            }
            // Returned before its sale reached the stream: the seat is still shown held.
            SeatEvent::Cancelled { .. }
                if state == SeatState::Held as u8
                    && seats.held_by.get(&index).is_some_and(|owner| owner == hold_id) =>
            {
                *held -= 1;
                seats.held_by.remove(&index);
                Some(SeatState::Free)
            }
            _ => None,
        };
        if let Some(next) = next {
            seats.set(index, next);
            out.push(SeatChange {
                zone_id: zone_id.to_owned(),
                seat_id: seat_id.clone(),
                state: next as i32,
            });
        }
    }
    out.len() > before
}

fn apply_general(
    places: &mut GaPlaces,
    held: &mut u32,
    sold: &mut u32,
    free: u32,
    event: SeatEvent<'_>,
) -> bool {
    match event {
        SeatEvent::Held { hold_id, quantity, .. } => {
            if quantity == 0 || places.held.contains_key(hold_id) || places.sold.contains_key(hold_id) {
                return false;
            }
            // Never count more places than the zone has, whatever the stream says.
            let quantity = quantity.min(free);
            places.held.insert(hold_id.to_owned(), quantity);
            *held += quantity;
            quantity > 0
        }
        SeatEvent::Released { hold_id, .. } => match places.held.remove(hold_id) {
            Some(quantity) => {
                *held -= quantity;
                quantity > 0
            }
            None => false,
        },
        SeatEvent::Confirmed { hold_id, quantity, .. } => {
            if places.sold.contains_key(hold_id) {
                return false;
            }
            // Seat-lock sold these places. Payment's confirmation may overtake seat-lock's
            // events, so places still shown held by a hold whose release is on its way are
            // not "taken": the sale is bounded only by the places not sold yet.
            let unsold = free + *held;
            let was_held = places.held.remove(hold_id).unwrap_or(0);
            *held -= was_held;
            let quantity = if quantity == 0 { was_held } else { quantity };
            let quantity = quantity.min(unsold);
            places.sold.insert(hold_id.to_owned(), quantity);
            *sold += quantity;
            true
        }
        SeatEvent::Cancelled { hold_id, .. } => {
            if let Some(quantity) = places.sold.remove(hold_id) {
                *sold -= quantity;
                quantity > 0
            } else if let Some(quantity) = places.held.remove(hold_id) {
                // Returned before its sale reached the stream.
                *held -= quantity;
                quantity > 0
            } else {
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test code: a panic is a failed test

    use super::*;

    fn event() -> Event {
        Event {
            event_id: "e".into(),
            zones: vec![
                Zone {
                    zone_id: "A".into(),
                    kind: ZoneKind::Seated as i32,
                    row_labels: vec!["1".into(), "2".into()],
                    seats_per_row: 3,
                    capacity: 6,
                    ..Zone::default()
                },
                Zone {
                    zone_id: "GA".into(),
                    kind: ZoneKind::GeneralAdmission as i32,
                    capacity: 10,
                    ..Zone::default()
                },
            ],
            ..Event::default()
        }
    }

    fn states(map: &mut SeatMap) -> Vec<u8> {
        let snapshot = map.snapshot(Some("A")).unwrap();
        let zone = &snapshot.zones[0];
        zone.decode_seat_states().unwrap().into_iter().map(|s| s as u8).collect()
    }

    #[test]
    fn release_frees_only_seats_of_the_same_hold_and_sold_is_terminal() {
        let mut map = SeatMap::new(&event());
        let seats = vec!["A-1-1".to_owned(), "A-2-3".to_owned(), "A-9-1".to_owned()];
        let changes =
            map.apply(SeatEvent::Held { hold_id: "h1", zone_id: "A", seat_ids: &seats, quantity: 2 });
        assert_eq!(changes.seats.len(), 2);
        assert_eq!(states(&mut map), vec![1, 0, 0, 0, 0, 1]);
        map.apply(SeatEvent::Released { hold_id: "h2", zone_id: "A", seat_ids: &seats });
        assert_eq!(states(&mut map), vec![1, 0, 0, 0, 0, 1]);
        map.apply(SeatEvent::Confirmed { hold_id: "h1", zone_id: "A", seat_ids: &seats[..1], quantity: 1 });
        map.apply(SeatEvent::Released { hold_id: "h1", zone_id: "A", seat_ids: &seats });
        assert_eq!(states(&mut map), vec![2, 0, 0, 0, 0, 0]);
        let a = &map.availability(Some("A"))[0];
        assert_eq!((a.free, a.held, a.sold), (5, 0, 1));
        assert_eq!(map.version(), 4);
    }

    #[test]
    fn a_cancelled_sale_frees_only_its_own_seats_in_any_arrival_order() {
        let mut map = SeatMap::new(&event());
        let seat = vec!["A-1-1".to_owned()];
        let counts = |map: &SeatMap| {
            let a = &map.availability(Some("A"))[0];
            (a.free, a.held, a.sold)
        };
        map.apply(SeatEvent::Held { hold_id: "h1", zone_id: "A", seat_ids: &seat, quantity: 1 });
        map.apply(SeatEvent::Confirmed { hold_id: "h1", zone_id: "A", seat_ids: &seat, quantity: 1 });
        // Another hold's cancellation does not touch it; its own frees it, once.
        map.apply(SeatEvent::Cancelled { hold_id: "h9", zone_id: "A", seat_ids: &seat });
        assert_eq!((states(&mut map)[0], counts(&map)), (2, (5, 0, 1)));
        let changes = map.apply(SeatEvent::Cancelled { hold_id: "h1", zone_id: "A", seat_ids: &seat });
        assert_eq!(changes.seats.len(), 1);
        assert_eq!(changes.seats[0].state, SeatState::Free as i32);
        map.apply(SeatEvent::Cancelled { hold_id: "h1", zone_id: "A", seat_ids: &seat });
        assert_eq!((states(&mut map)[0], counts(&map)), (0, (6, 0, 0)));

        // Sold to h3 and returned, then sold to h2, whose sale reaches the stream before h3's
        // return and h2's own hold (payment and seat-lock publish separately).
        map.apply(SeatEvent::Held { hold_id: "h3", zone_id: "A", seat_ids: &seat, quantity: 1 });
        map.apply(SeatEvent::Confirmed { hold_id: "h3", zone_id: "A", seat_ids: &seat, quantity: 1 });
        map.apply(SeatEvent::Confirmed { hold_id: "h2", zone_id: "A", seat_ids: &seat, quantity: 1 });
        map.apply(SeatEvent::Cancelled { hold_id: "h3", zone_id: "A", seat_ids: &seat });
        map.apply(SeatEvent::Held { hold_id: "h2", zone_id: "A", seat_ids: &seat, quantity: 1 });
        assert_eq!((states(&mut map)[0], counts(&map)), (2, (5, 0, 1)));

        // A return that overtakes its own sale: the held seat is freed, the late sale ignored.
        let other = vec!["A-2-1".to_owned()];
        map.apply(SeatEvent::Held { hold_id: "h4", zone_id: "A", seat_ids: &other, quantity: 1 });
        map.apply(SeatEvent::Cancelled { hold_id: "h4", zone_id: "A", seat_ids: &other });
        map.apply(SeatEvent::Confirmed { hold_id: "h4", zone_id: "A", seat_ids: &other, quantity: 1 });
        assert_eq!((states(&mut map)[3], counts(&map)), (0, (5, 0, 1)));
    }

    #[test]
    fn a_cancelled_general_admission_sale_gives_its_places_back() {
        let mut map = SeatMap::new(&event());
        let none: Vec<String> = Vec::new();
        let ga = |map: &SeatMap| {
            let ga = &map.availability(Some("GA"))[0];
            (ga.free, ga.held, ga.sold)
        };
        map.apply(SeatEvent::Held { hold_id: "g1", zone_id: "GA", seat_ids: &none, quantity: 4 });
        map.apply(SeatEvent::Confirmed { hold_id: "g1", zone_id: "GA", seat_ids: &none, quantity: 4 });
        map.apply(SeatEvent::Confirmed { hold_id: "g2", zone_id: "GA", seat_ids: &none, quantity: 3 });
        assert_eq!(ga(&map), (3, 0, 7));
        map.apply(SeatEvent::Cancelled { hold_id: "g1", zone_id: "GA", seat_ids: &none });
        map.apply(SeatEvent::Cancelled { hold_id: "g1", zone_id: "GA", seat_ids: &none });
        assert_eq!(ga(&map), (7, 0, 3));
        // Returned while only its hold had reached the stream; the late sale is ignored.
        map.apply(SeatEvent::Held { hold_id: "g3", zone_id: "GA", seat_ids: &none, quantity: 2 });
        map.apply(SeatEvent::Cancelled { hold_id: "g3", zone_id: "GA", seat_ids: &none });
        map.apply(SeatEvent::Confirmed { hold_id: "g3", zone_id: "GA", seat_ids: &none, quantity: 2 });
        assert_eq!(ga(&map), (7, 0, 3));
    }

    /// A map restored from its state and fed the rest of the stream equals the map that saw
    /// the whole stream: what lets inventory replay from a snapshot instead of the start.
    #[test]
    fn a_restored_map_continues_exactly_like_the_original() {
        let seats = |ids: &[&str]| ids.iter().map(|s| (*s).to_owned()).collect::<Vec<String>>();
        let (a, b, c) = (seats(&["A-1-1", "A-1-2"]), seats(&["A-2-3"]), seats(&["A-1-3"]));
        let none: Vec<String> = Vec::new();
        let mut full = SeatMap::new(&event());
        let first = [
            SeatEvent::Held { hold_id: "h1", zone_id: "A", seat_ids: &a, quantity: 2 },
            SeatEvent::Held { hold_id: "h2", zone_id: "A", seat_ids: &b, quantity: 1 },
            SeatEvent::Confirmed { hold_id: "h1", zone_id: "A", seat_ids: &a, quantity: 2 },
            SeatEvent::Held { hold_id: "h3", zone_id: "A", seat_ids: &c, quantity: 1 },
            SeatEvent::Held { hold_id: "g1", zone_id: "GA", seat_ids: &none, quantity: 3 },
            SeatEvent::Confirmed { hold_id: "g2", zone_id: "GA", seat_ids: &none, quantity: 2 },
            SeatEvent::Cancelled { hold_id: "h9", zone_id: "A", seat_ids: &c },
        ];
        let rest = [
            SeatEvent::Released { hold_id: "h2", zone_id: "A", seat_ids: &b },
            SeatEvent::Confirmed { hold_id: "h3", zone_id: "A", seat_ids: &c, quantity: 1 },
            SeatEvent::Cancelled { hold_id: "h1", zone_id: "A", seat_ids: &a },
            SeatEvent::Confirmed { hold_id: "g1", zone_id: "GA", seat_ids: &none, quantity: 3 },
            SeatEvent::Confirmed { hold_id: "h9", zone_id: "A", seat_ids: &c, quantity: 1 },
        ];
        for e in first {
            full.apply(e);
        }
        let state = full.state();
        let json = serde_json::to_vec(&state).unwrap();
        let mut restored = SeatMap::restore(&event(), &serde_json::from_slice(&json).unwrap()).unwrap();
        assert_eq!(restored.state(), state);
        for e in rest {
            full.apply(e);
            restored.apply(e);
        }
        assert_eq!(restored.state(), full.state());
        assert_eq!(states(&mut restored), states(&mut full));
        assert_eq!(restored.availability(None), full.availability(None));
        assert_eq!(states(&mut restored), vec![0, 0, 2, 0, 0, 0]);

        // A state that does not fit the catalogue is refused, not half applied.
        let mut other = state.clone();
        other.zones[0].capacity = 7;
        assert!(SeatMap::restore(&event(), &other).is_err());
        let mut twice = state;
        twice.zones[0].sold_seats.push(("hx".into(), vec![0]));
        assert!(SeatMap::restore(&event(), &twice).is_err());
    }

    #[test]
    fn general_admission_counts_by_hold_and_ignores_repeats() {
        let mut map = SeatMap::new(&event());
        let none: Vec<String> = Vec::new();
        let held = |h| SeatEvent::Held { hold_id: h, zone_id: "GA", seat_ids: &none, quantity: 4 };
        map.apply(held("h1"));
        map.apply(held("h1"));
        map.apply(held("h2"));
        map.apply(SeatEvent::Released { hold_id: "h1", zone_id: "GA", seat_ids: &none });
        map.apply(SeatEvent::Released { hold_id: "h1", zone_id: "GA", seat_ids: &none });
        map.apply(SeatEvent::Confirmed { hold_id: "h2", zone_id: "GA", seat_ids: &none, quantity: 4 });
        map.apply(SeatEvent::Confirmed { hold_id: "h2", zone_id: "GA", seat_ids: &none, quantity: 4 });
        map.apply(SeatEvent::Confirmed { hold_id: "h3", zone_id: "GA", seat_ids: &none, quantity: 9 });
        let ga = &map.availability(Some("GA"))[0];
        assert_eq!((ga.free, ga.held, ga.sold), (0, 0, 10));
    }

    /// Payment's confirmation overtakes seat-lock's events: the zone still shows another
    /// hold's places held (its release is on its way) and not yet this hold. The sale counts
    /// in full all the same; before, it was clamped to the free places (none) and lost.
    #[test]
    fn a_general_admission_sale_that_overtakes_a_pending_release_is_counted() {
        let mut map = SeatMap::new(&event());
        let none: Vec<String> = Vec::new();
        map.apply(SeatEvent::Held { hold_id: "h1", zone_id: "GA", seat_ids: &none, quantity: 10 });
        map.apply(SeatEvent::Confirmed { hold_id: "h2", zone_id: "GA", seat_ids: &none, quantity: 4 });
        map.apply(SeatEvent::Released { hold_id: "h1", zone_id: "GA", seat_ids: &none });
        map.apply(SeatEvent::Held { hold_id: "h2", zone_id: "GA", seat_ids: &none, quantity: 4 });
        let ga = &map.availability(Some("GA"))[0];
        assert_eq!((ga.free, ga.held, ga.sold), (6, 0, 4));
    }
}
