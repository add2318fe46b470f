//! The Postgres side of the catalogue: venues, their zones and events.

use chrono::{DateTime, TimeZone, Utc};
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DbBackend, QueryResult, Statement, TransactionTrait, Value,
};
use service_runtime::bus::timestamp_ms;
use ticketing_proto::v1::{Event, Venue, Zone};
use uuid::Uuid;

use super::{NewEvent, PageCursor};
use crate::error::Error;

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
