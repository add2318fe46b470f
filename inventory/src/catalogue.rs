//! The catalogue: validation of venues and events, and their rows in Postgres.
//!
//! Postgres is the source of truth for venues and events; the seat map in memory
//! ([`crate::seatmap`]) is derived from it plus the event stream.

use std::collections::HashSet;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, TimeZone, Utc};
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DbBackend, QueryResult, Statement, TransactionTrait, Value,
};
use service_runtime::{bus::timestamp_ms, status::quote};
use ticketing_proto::v1::{
    CreateEventRequest, CreateVenueRequest, Event, Venue, Zone, ZoneKind, zone_spec::Layout,
};
use uuid::Uuid;

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
/// Events per page when the caller asks for 0.
pub const DEFAULT_PAGE_SIZE: u32 = 20;
/// Most events per page; bounds one answer.
pub const MAX_PAGE_SIZE: u32 = 100;

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

/// Parses a mesh-issued id (a UUID) named `field`.
pub fn parse_id(field: &str, value: &str) -> Result<Uuid, Error> {
    Ok(service_runtime::status::uuid(field, value)?)
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

/// Where a page of events starts: after this (sale-open millis, event id).
pub type PageCursor = (i64, Uuid);

/// The opaque token of a page that starts after `cursor`.
pub fn encode_page_token(cursor: PageCursor) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}_{}", cursor.0, cursor.1))
}

/// Reads a page token: base64url of `<millis>_<uuid>`, or that text plainly.
pub fn decode_page_token(token: &str) -> Result<PageCursor, Error> {
    let bad = || Error::invalid("page_token", "is not a token from a previous ListEvents answer");
    let parse = |text: &str| -> Option<PageCursor> {
        let (ms, id) = text.split_once('_')?;
        Some((ms.parse().ok()?, Uuid::parse_str(id).ok()?))
    };
    if let Some(cursor) = parse(token) {
        return Ok(cursor);
    }
    let decoded = URL_SAFE_NO_PAD.decode(token.trim_end_matches('=')).map_err(|_| bad())?;
    let text = String::from_utf8(decoded).map_err(|_| bad())?;
    parse(&text).ok_or_else(bad)
}

/// A zone row as `to_jsonb(zones)` renders it.
#[derive(serde::Deserialize)]
struct ZoneRow {
    zone_id: String,
    name: String,
    kind: i32,
    price_cents: i64,
    row_labels: Vec<String>,
    seats_per_row: u32,
    capacity: u32,
    accessible_seat_ids: Vec<String>,
}

/// The Postgres side of the catalogue.
#[derive(Clone)]
pub struct Store {
    db: DatabaseConnection,
}

const EVENT_SELECT: &str = r#"
SELECT e.event_id, e.venue_id, e.name, e.starts_at, e.sale_opens_at, e.max_tickets_per_user,
       e.currency, e.admission_capacity, e.admission_tick_ms, e.pass_ttl_seconds,
       e.cancellation_cutoff_seconds, v.total_capacity,
       (SELECT jsonb_agg(to_jsonb(z) ORDER BY z.position) FROM zones z WHERE z.venue_id = e.venue_id) AS zones
FROM events e JOIN venues v ON v.venue_id = e.venue_id
"#;

fn stmt(sql: &str, values: Vec<Value>) -> Statement {
    Statement::from_sql_and_values(DbBackend::Postgres, sql, values)
}

fn event_from_row(row: &QueryResult) -> Result<Event, Error> {
    let get_u32 = |col: &str| -> Result<u32, Error> {
        let value: i32 = row.try_get("", col)?;
        u32::try_from(value).map_err(|_| Error::CorruptRow(format!("events.{col} = {value}")))
    };
    let event_id: Uuid = row.try_get("", "event_id")?;
    let venue_id: Uuid = row.try_get("", "venue_id")?;
    let starts_at: DateTime<Utc> = row.try_get("", "starts_at")?;
    let sale_opens_at: DateTime<Utc> = row.try_get("", "sale_opens_at")?;
    let zones: serde_json::Value = row.try_get("", "zones")?;
    let zones: Vec<ZoneRow> = serde_json::from_value(zones)
        .map_err(|e| Error::CorruptRow(format!("zones of venue {venue_id}: {e}")))?;
    Ok(Event {
        event_id: event_id.to_string(),
        venue_id: venue_id.to_string(),
        name: row.try_get("", "name")?,
        starts_at: Some(timestamp_ms(starts_at.timestamp_millis())),
        sale_opens_at: Some(timestamp_ms(sale_opens_at.timestamp_millis())),
        max_tickets_per_user: get_u32("max_tickets_per_user")?,
        currency: row.try_get("", "currency")?,
        admission_capacity: get_u32("admission_capacity")?,
        admission_tick_ms: get_u32("admission_tick_ms")?,
        pass_ttl_seconds: get_u32("pass_ttl_seconds")?,
        cancellation_cutoff_seconds: get_u32("cancellation_cutoff_seconds")?,
        total_capacity: get_u32("total_capacity")?,
        zones: zones
            .into_iter()
            .map(|z| Zone {
                zone_id: z.zone_id,
                name: z.name,
                kind: z.kind,
                price_cents: z.price_cents,
                row_labels: z.row_labels,
                seats_per_row: z.seats_per_row,
                accessible_seat_ids: z.accessible_seat_ids,
                capacity: z.capacity,
            })
            .collect(),
    })
}

impl Store {
    /// Wraps a connection confined to the `inventory` schema.
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }

    /// Stores a venue and its zones in one transaction.
    pub async fn insert_venue(
        &self,
        name: &str,
        zones: Vec<Zone>,
        total_capacity: u32,
    ) -> Result<Venue, Error> {
        let venue_id = Uuid::now_v7();
        let tx = self.db.begin().await?;
        tx.execute_raw(stmt(
            "INSERT INTO venues (venue_id, name, total_capacity) VALUES ($1, $2, $3)",
            vec![venue_id.into(), name.into(), (total_capacity as i32).into()],
        ))
        .await?;
        for (position, zone) in zones.iter().enumerate() {
            tx.execute_raw(stmt(
                "INSERT INTO zones (venue_id, zone_id, position, name, kind, price_cents, row_labels, \
                 seats_per_row, capacity, accessible_seat_ids) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                vec![
                    venue_id.into(),
                    zone.zone_id.clone().into(),
                    (position as i32).into(),
                    zone.name.clone().into(),
                    (zone.kind as i16).into(),
                    zone.price_cents.into(),
                    serde_json::json!(zone.row_labels).into(),
                    (zone.seats_per_row as i32).into(),
                    (zone.capacity as i32).into(),
                    serde_json::json!(zone.accessible_seat_ids).into(),
                ],
            ))
            .await?;
        }
        tx.commit().await?;
        Ok(Venue { venue_id: venue_id.to_string(), name: name.to_owned(), zones, total_capacity })
    }

    /// Stores an event; answers it with its venue's zones, or `VenueNotFound`.
    pub async fn insert_event(&self, new: &NewEvent) -> Result<Event, Error> {
        let event_id = Uuid::now_v7();
        let tx = self.db.begin().await?;
        // Lock the venue row so it cannot vanish between the check and the insert.
        let venue = tx
            .query_one_raw(stmt(
                "SELECT 1 AS found FROM venues WHERE venue_id = $1 FOR SHARE",
                vec![new.venue_id.into()],
            ))
            .await?;
        if venue.is_none() {
            return Err(Error::VenueNotFound(new.venue_id.to_string()));
        }
        tx.execute_raw(stmt(
            "INSERT INTO events (event_id, venue_id, name, starts_at, sale_opens_at, max_tickets_per_user, \
             currency, admission_capacity, admission_tick_ms, pass_ttl_seconds, cancellation_cutoff_seconds) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            vec![
                event_id.into(),
                new.venue_id.into(),
                new.name.clone().into(),
                new.starts_at.into(),
                new.sale_opens_at.into(),
                (new.max_tickets_per_user as i32).into(),
                new.currency.clone().into(),
                (new.admission_capacity as i32).into(),
                (new.admission_tick_ms as i32).into(),
                (new.pass_ttl_seconds as i32).into(),
                (new.cancellation_cutoff_seconds as i32).into(),
            ],
        ))
        .await?;
        let row = tx
            .query_one_raw(stmt(&format!("{EVENT_SELECT} WHERE e.event_id = $1"), vec![event_id.into()]))
            .await?
            .ok_or_else(|| Error::CorruptRow(format!("event {event_id} vanished after insert")))?;
        let event = event_from_row(&row)?;
        tx.commit().await?;
        Ok(event)
    }

    /// One event, if stored.
    pub async fn load_event(&self, event_id: Uuid) -> Result<Option<Event>, Error> {
        let row = self
            .db
            .query_one_raw(stmt(&format!("{EVENT_SELECT} WHERE e.event_id = $1"), vec![event_id.into()]))
            .await?;
        row.as_ref().map(event_from_row).transpose()
    }

    /// Every stored event, to build the seat maps at start.
    pub async fn load_all(&self) -> Result<Vec<Event>, Error> {
        let rows = self.db.query_all_raw(stmt(EVENT_SELECT, vec![])).await?;
        rows.iter().map(event_from_row).collect()
    }

    /// Up to `limit` events after `after`, ordered by (sale_opens_at, event_id).
    pub async fn list_events(&self, after: Option<PageCursor>, limit: u32) -> Result<Vec<Event>, Error> {
        let rows = match after {
            None => {
                self.db
                    .query_all_raw(stmt(
                        &format!("{EVENT_SELECT} ORDER BY e.sale_opens_at, e.event_id LIMIT $1"),
                        vec![i64::from(limit).into()],
                    ))
                    .await?
            }
            Some((ms, id)) => {
                let at = Utc
                    .timestamp_millis_opt(ms)
                    .single()
                    .ok_or_else(|| Error::invalid("page_token", "is out of range"))?;
                self.db
                    .query_all_raw(stmt(
                        &format!(
                            "{EVENT_SELECT} WHERE (e.sale_opens_at, e.event_id) > ($1, $2) \
                             ORDER BY e.sale_opens_at, e.event_id LIMIT $3"
                        ),
                        vec![at.into(), id.into(), i64::from(limit).into()],
                    ))
                    .await?
            }
        };
        rows.iter().map(event_from_row).collect()
    }
}
