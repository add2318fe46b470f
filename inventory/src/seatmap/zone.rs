//! One zone's places in the map: a packed two-bit state per seat with the hold behind each
//! held or sold seat, or general-admission counters by hold.

use std::{collections::HashMap, sync::Arc};

use ticketing_proto::{
    seat_states::{EncodedSeatStates, SeatCode, encode},
    v1::{Zone, ZoneAvailability, ZoneSeatMap},
};

use crate::catalogue::parse_seat_id;

/// States of a seated zone, a two-bit [`SeatCode`] per seat (the packed form of
/// `ZoneSeatMap.seat_states`).
pub(super) struct SeatedSeats {
    pub(super) rows: HashMap<String, u32>,
    pub(super) seats_per_row: u32,
    pub(super) packed: Vec<u8>,
    /// The hold that holds each held seat, by seat index.
    pub(super) held_by: HashMap<u32, String>,
    /// The hold that bought each sold seat, by seat index (one shared string per hold), so a
    /// cancellation frees only its own seats.
    pub(super) sold_by: HashMap<u32, Arc<str>>,
    /// `packed` in its smaller wire encoding, made by the first snapshot after a change and
    /// shared (reference-counted) by every snapshot until the next change.
    pub(super) encoded: Option<EncodedSeatStates>,
}

impl SeatedSeats {
    /// The code of seat `index`. Only [`Self::set`] writes `packed`, so the bits are always a
    /// code; the impossible 3 reads as sold, the state that lets nobody take the seat.
    pub(super) fn get(&self, index: u32) -> SeatCode {
        SeatCode::from_bits(self.packed[(index / 4) as usize] >> ((index % 4) * 2)).unwrap_or(SeatCode::Sold)
    }

    pub(super) fn set(&mut self, index: u32, code: SeatCode) {
        let byte = &mut self.packed[(index / 4) as usize];
        let shift = (index % 4) * 2;
        *byte = (*byte & !(0b11 << shift)) | (code.bits() << shift);
    }

    pub(super) fn encoded(&mut self, seats: u32) -> EncodedSeatStates {
        self.encoded.get_or_insert_with(|| encode(&self.packed, seats as usize)).clone()
    }

    pub(super) fn index(&self, zone_id: &str, seat_id: &str) -> Option<u32> {
        let (zone, row, number) = parse_seat_id(seat_id)?;
        if zone != zone_id || number == 0 || number > self.seats_per_row {
            return None;
        }
        Some(self.rows.get(row)? * self.seats_per_row + (number - 1))
    }
}

/// Places of a general-admission zone, by hold.
#[derive(Default)]
pub(super) struct GaPlaces {
    pub(super) held: HashMap<String, u32>,
    /// Places sold, by the hold that bought them; a cancellation gives back its own.
    pub(super) sold: HashMap<String, u32>,
}

/// A zone's places: seat by seat, or counted.
pub(super) enum Places {
    Seated(SeatedSeats),
    General(GaPlaces),
}

/// One zone of the map: its catalogue entry, its places and their counts.
pub(super) struct ZoneState {
    pub(super) zone: Zone,
    pub(super) places: Places,
    pub(super) held: u32,
    pub(super) sold: u32,
}

impl ZoneState {
    pub(super) fn free(&self) -> u32 {
        self.zone.capacity.saturating_sub(self.held + self.sold)
    }

    pub(super) fn availability(&self) -> ZoneAvailability {
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

    pub(super) fn seat_map(&mut self) -> ZoneSeatMap {
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
