//! What one seat event does to a zone: the order-aware, idempotent rules of the module docs,
//! for seated zones (seat by seat) and general admission (places by hold).

use std::sync::Arc;

use ticketing_proto::{seat_states::SeatCode, v1::SeatChange};

use super::{
    SeatEvent,
    zone::{GaPlaces, SeatedSeats},
};

/// Applies `event` to the seats of a seated zone, pushing each changed seat to `out`;
/// `true` when any changed.
pub(super) fn apply_seated(
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
            SeatEvent::Held { .. } if state == SeatCode::Free => {
                *held += 1;
                seats.held_by.insert(index, hold_id.to_owned());
                Some(SeatCode::Held)
            }
            SeatEvent::Held { .. } if state == SeatCode::Held => {
                // Seat-lock is the gatekeeper: a newer hold means the older one ended, even if
                // its release was never published. Same state, new owner.
                if seats.held_by.get(&index).is_some_and(|owner| owner != hold_id) {
                    tracing::warn!(event_id, seat_id, hold_id, "seat held again by another hold");
                    seats.held_by.insert(index, hold_id.to_owned());
                }
                None
            }
            SeatEvent::Released { .. }
                if state == SeatCode::Held
                    && seats.held_by.get(&index).is_some_and(|owner| owner == hold_id) =>
            {
                *held -= 1;
                seats.held_by.remove(&index);
                Some(SeatCode::Free)
            }
            SeatEvent::Confirmed { .. } if state != SeatCode::Sold => {
                if state == SeatCode::Held {
                    *held -= 1;
                    seats.held_by.remove(&index);
                }
                *sold += 1;
                seats.sold_by.insert(index, Arc::clone(&buyer));
                Some(SeatCode::Sold)
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
                if state == SeatCode::Sold
                    && seats.sold_by.get(&index).is_some_and(|owner| **owner == *hold_id) =>
            {
                *sold -= 1;
                seats.sold_by.remove(&index);
                Some(SeatCode::Free)
            }
            // Returned before its sale reached the stream: the seat is still shown held.
            SeatEvent::Cancelled { .. }
                if state == SeatCode::Held
                    && seats.held_by.get(&index).is_some_and(|owner| owner == hold_id) =>
            {
                *held -= 1;
                seats.held_by.remove(&index);
                Some(SeatCode::Free)
            }
            _ => None,
        };
        if let Some(next) = next {
            seats.set(index, next);
            out.push(SeatChange {
                zone_id: zone_id.to_owned(),
                seat_id: seat_id.clone(),
                state: next.state() as i32,
            });
        }
    }
    out.len() > before
}

/// Applies `event` to a general-admission zone with `free` places left; `true` when its
/// counts changed.
pub(super) fn apply_general(
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
