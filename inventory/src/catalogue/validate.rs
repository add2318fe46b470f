//! What a venue or an event request must say before anything is stored.

use std::collections::HashSet;

use chrono::{DateTime, TimeZone, Utc};
use service_runtime::status::quote;
use ticketing_proto::v1::{CreateEventRequest, CreateVenueRequest, Zone, ZoneKind, zone_spec::Layout};
use uuid::Uuid;

use super::{parse_id, parse_seat_id, seat_id};
use crate::error::Error;

/// Most seats (or places) one venue may have; bounds the memory of one seat map.
pub const MAX_VENUE_CAPACITY: u64 = 200_000;
/// Most zones in one venue; bounds a venue description.
pub const MAX_ZONES: usize = 100;
/// Most rows in a seated zone.
pub const MAX_ROWS: usize = 500;
/// Most seats in one row.
pub const MAX_SEATS_PER_ROW: u32 = 1_000;
/// Most places in one general-admission zone.
pub const MAX_GA_CAPACITY: u32 = 200_000;
/// Cancellation cutoff of an event whose request says 0: owners may cancel until one day
/// before it starts.
pub const DEFAULT_CANCELLATION_CUTOFF_SECS: u32 = 86_400;
/// Longest cancellation cutoff: 365 days before the start.
pub const MAX_CANCELLATION_CUTOFF_SECS: u32 = 365 * 86_400;

/// Checks a zone id (a venue's own, or a filter naming one): 1-16 of `[A-Za-z0-9_]`.
pub(crate) fn check_zone_id(field: &str, id: &str) -> Result<(), Error> {
    if id.is_empty() || id.len() > 16 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(Error::invalid(field, format!("must be 1-16 of [A-Za-z0-9_], got {}", quote(id))));
    }
    Ok(())
}

fn check_name(field: &str, value: &str, max: usize) -> Result<(), Error> {
    let chars = value.chars().count();
    if value.trim().is_empty() {
        return Err(Error::invalid(field, "is required and must not be blank"));
    }
    if chars > max {
        return Err(Error::invalid(field, format!("must be at most {max} characters, got {chars}")));
    }
    Ok(())
}

/// Checks a venue layout and turns it into stored zones; answers the zones and the total
/// capacity.
pub fn validate_venue(request: &CreateVenueRequest) -> Result<(Vec<Zone>, u32), Error> {
    check_name("name", &request.name, 200)?;
    if request.zones.is_empty() {
        return Err(Error::invalid("zones", "at least one zone is required"));
    }
    if request.zones.len() > MAX_ZONES {
        return Err(Error::invalid(
            "zones",
            format!("at most {MAX_ZONES} zones, got {}", request.zones.len()),
        ));
    }
    let mut zone_ids = HashSet::new();
    let mut zones = Vec::with_capacity(request.zones.len());
    let mut total: u64 = 0;
    for (i, spec) in request.zones.iter().enumerate() {
        let field = |name: &str| format!("zones[{i}].{name}");
        let id = &spec.zone_id;
        check_zone_id(&field("zone_id"), id)?;
        if !zone_ids.insert(id.as_str()) {
            return Err(Error::invalid(field("zone_id"), format!("duplicate zone id {}", quote(id))));
        }
        check_name(&field("name"), &spec.name, 100)?;
        if spec.price_cents < 0 {
            return Err(Error::invalid(field("price_cents"), "must not be negative"));
        }
        let zone = match &spec.layout {
            None => {
                return Err(Error::invalid(
                    field("layout"),
                    "one of seated or general_admission is required",
                ));
            }
            Some(Layout::Seated(seated)) => {
                let rows = seated.row_labels.len();
                if rows == 0 || rows > MAX_ROWS {
                    return Err(Error::invalid(
                        field("seated.row_labels"),
                        format!("must have 1-{MAX_ROWS} rows, got {rows}"),
                    ));
                }
                let mut labels = HashSet::new();
                for label in &seated.row_labels {
                    if label.is_empty()
                        || label.len() > 8
                        || !label.bytes().all(|b| b.is_ascii_alphanumeric())
                    {
                        return Err(Error::invalid(
                            field("seated.row_labels"),
                            format!("each row label must be 1-8 of [A-Za-z0-9], got {}", quote(label)),
                        ));
                    }
                    if !labels.insert(label.as_str()) {
                        return Err(Error::invalid(
                            field("seated.row_labels"),
                            format!("duplicate row label {}", quote(label)),
                        ));
                    }
                }
                if seated.seats_per_row == 0 || seated.seats_per_row > MAX_SEATS_PER_ROW {
                    return Err(Error::invalid(
                        field("seated.seats_per_row"),
                        format!("must be 1-{MAX_SEATS_PER_ROW}, got {}", seated.seats_per_row),
                    ));
                }
                let capacity = rows as u64 * u64::from(seated.seats_per_row);
                if capacity > MAX_VENUE_CAPACITY {
                    return Err(Error::invalid(
                        "zones",
                        format!(
                            "zone {id:?} has {capacity} seats; a venue may have at most {MAX_VENUE_CAPACITY}"
                        ),
                    ));
                }
                let mut accessible = HashSet::new();
                for seat in &seated.accessible_seat_ids {
                    let belongs = parse_seat_id(seat).is_some_and(|(zone, row, number)| {
                        zone == id
                            && labels.contains(row)
                            && (1..=seated.seats_per_row).contains(&number)
                            && seat_id(zone, row, number) == *seat
                    });
                    if !belongs {
                        return Err(Error::invalid(
                            field("seated.accessible_seat_ids"),
                            format!("{} is not a seat of zone {}", quote(seat), quote(id)),
                        ));
                    }
                    if !accessible.insert(seat.as_str()) {
                        return Err(Error::invalid(
                            field("seated.accessible_seat_ids"),
                            format!("duplicate seat id {}", quote(seat)),
                        ));
                    }
                }
                Zone {
                    zone_id: id.clone(),
                    name: spec.name.clone(),
                    kind: ZoneKind::Seated as i32,
                    price_cents: spec.price_cents,
                    row_labels: seated.row_labels.clone(),
                    seats_per_row: seated.seats_per_row,
                    accessible_seat_ids: seated.accessible_seat_ids.clone(),
                    capacity: capacity as u32,
                }
            }
            Some(Layout::GeneralAdmission(ga)) => {
                if ga.capacity == 0 || ga.capacity > MAX_GA_CAPACITY {
                    return Err(Error::invalid(
                        field("general_admission.capacity"),
                        format!("must be 1-{MAX_GA_CAPACITY}, got {}", ga.capacity),
                    ));
                }
                Zone {
                    zone_id: id.clone(),
                    name: spec.name.clone(),
                    kind: ZoneKind::GeneralAdmission as i32,
                    price_cents: spec.price_cents,
                    row_labels: Vec::new(),
                    seats_per_row: 0,
                    accessible_seat_ids: Vec::new(),
                    capacity: ga.capacity,
                }
            }
        };
        total += u64::from(zone.capacity);
        zones.push(zone);
    }
    if total > MAX_VENUE_CAPACITY {
        return Err(Error::invalid(
            "zones",
            format!("total capacity {total} exceeds the maximum of {MAX_VENUE_CAPACITY} per venue"),
        ));
    }
    Ok((zones, total as u32))
}

/// An event as checked from a request, before it is stored.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub venue_id: Uuid,
    pub name: String,
    pub starts_at: DateTime<Utc>,
    pub sale_opens_at: DateTime<Utc>,
    pub max_tickets_per_user: u32,
    pub currency: String,
    pub admission_capacity: u32,
    pub admission_tick_ms: u32,
    pub pass_ttl_seconds: u32,
    /// Owners may cancel a booking until this long before `starts_at`.
    pub cancellation_cutoff_seconds: u32,
}

fn timestamp(field: &str, value: Option<&prost_types::Timestamp>) -> Result<DateTime<Utc>, Error> {
    let ts = value.ok_or_else(|| Error::invalid(field, "is required"))?;
    // Millisecond precision, so page tokens (which carry milliseconds) order exactly.
    let ms = ts.seconds.checked_mul(1000).and_then(|s| s.checked_add(i64::from(ts.nanos) / 1_000_000));
    ms.and_then(|ms| Utc.timestamp_millis_opt(ms).single())
        .filter(|t| (1970..=9999).contains(&chrono::Datelike::year(t)))
        .ok_or_else(|| Error::invalid(field, "is out of range"))
}

fn defaulted(
    field: &str,
    value: u32,
    default: u32,
    range: std::ops::RangeInclusive<u32>,
) -> Result<u32, Error> {
    let value = if value == 0 { default } else { value };
    if range.contains(&value) {
        Ok(value)
    } else {
        Err(Error::invalid(
            field,
            format!("must be {}-{} (0 means {default}), got {value}", range.start(), range.end()),
        ))
    }
}

/// Checks an event request (the venue's existence is checked when storing).
pub fn validate_event(request: &CreateEventRequest) -> Result<NewEvent, Error> {
    let venue_id = parse_id("venue_id", &request.venue_id)?;
    check_name("name", &request.name, 200)?;
    let starts_at = timestamp("starts_at", request.starts_at.as_ref())?;
    let sale_opens_at = timestamp("sale_opens_at", request.sale_opens_at.as_ref())?;
    if sale_opens_at > starts_at {
        return Err(Error::invalid("sale_opens_at", "must not be after starts_at"));
    }
    if !(1..=50).contains(&request.max_tickets_per_user) {
        return Err(Error::invalid(
            "max_tickets_per_user",
            format!("must be 1-50, got {}", request.max_tickets_per_user),
        ));
    }
    let currency = if request.currency.is_empty() { "EUR".to_owned() } else { request.currency.clone() };
    if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(Error::invalid(
            "currency",
            format!("must be three upper-case letters, got {}", quote(&currency)),
        ));
    }
    Ok(NewEvent {
        venue_id,
        name: request.name.clone(),
        starts_at,
        sale_opens_at,
        max_tickets_per_user: request.max_tickets_per_user,
        currency,
        admission_capacity: defaulted("admission_capacity", request.admission_capacity, 500, 1..=100_000)?,
        admission_tick_ms: defaulted("admission_tick_ms", request.admission_tick_ms, 200, 50..=60_000)?,
        pass_ttl_seconds: defaulted("pass_ttl_seconds", request.pass_ttl_seconds, 600, 10..=86_400)?,
        cancellation_cutoff_seconds: defaulted(
            "cancellation_cutoff_seconds",
            request.cancellation_cutoff_seconds,
            DEFAULT_CANCELLATION_CUTOFF_SECS,
            1..=MAX_CANCELLATION_CUTOFF_SECS,
        )?,
    })
}
