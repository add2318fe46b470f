//! The map's durable form ([`MapState`]), taken for snapshots and restored on boot.

use std::{collections::HashMap, sync::Arc};

use ticketing_proto::{seat_states::SeatCode, v1::Event};

use super::{SeatMap, zone::Places};

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
                        [(&stored.held_seats, SeatCode::Held), (&stored.sold_seats, SeatCode::Sold)]
                    {
                        for (hold, indices) in groups {
                            let owner: Arc<str> = Arc::from(hold.as_str());
                            for &index in indices {
                                if index >= capacity || seats.get(index) != SeatCode::Free {
                                    return Err(format!(
                                        "zone {:?}: seat index {index} out of range or twice",
                                        stored.zone_id
                                    ));
                                }
                                seats.set(index, state);
                                if state == SeatCode::Held {
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
