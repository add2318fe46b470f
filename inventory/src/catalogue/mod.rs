//! The catalogue: validation of venues and events, and their rows in Postgres.
//!
//! Postgres is the source of truth for venues and events; the seat map in memory
//! ([`crate::seatmap`]) is derived from it plus the event stream.
//!
//! Its parts: this module (seat ids and mesh ids), `validate` (what a venue or event
//! request must say, with the bounds that keep one seat map small), `page` (`ListEvents`
//! page tokens) and `store` (the rows in Postgres).

mod page;
mod store;
mod validate;

use uuid::Uuid;

pub(crate) use self::validate::check_zone_id;
pub use self::{
    page::{DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, PageCursor, decode_page_token, encode_page_token},
    store::Store,
    validate::{
        DEFAULT_CANCELLATION_CUTOFF_SECS, MAX_CANCELLATION_CUTOFF_SECS, MAX_GA_CAPACITY, MAX_ROWS,
        MAX_SEATS_PER_ROW, MAX_VENUE_CAPACITY, MAX_ZONES, NewEvent, validate_event, validate_venue,
    },
};
use crate::error::Error;

/// The seat id of seat `number` (from 1) in row `row` of zone `zone`.
pub fn seat_id(zone: &str, row: &str, number: u32) -> String {
    format!("{zone}-{row}-{number}")
}

/// Splits a seat id into zone, row label and seat number; zone ids and row labels have no `-`.
pub fn parse_seat_id(seat_id: &str) -> Option<(&str, &str, u32)> {
    let mut parts = seat_id.splitn(3, '-');
    let zone = parts.next()?;
    let row = parts.next()?;
    let number = parts.next()?.parse().ok()?;
    Some((zone, row, number))
}

/// Parses a mesh-issued id (a UUID) named `field`.
pub fn parse_id(field: &str, value: &str) -> Result<Uuid, Error> {
    Ok(service_runtime::status::uuid(field, value)?)
}
