//! What the commands print: aligned tables for people, one JSON document with `--json`.

use serde_json::{Value, json};
use ticketing_proto::v1::{self as pb, SaleState, ZoneKind};

/// Columns padded to their widest cell, separated by two spaces.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> =
            cells.iter().zip(&widths).map(|(cell, width)| format!("{cell:<width$}")).collect();
        format!("{}\n", padded.join("  ").trim_end())
    };
    let mut out = line(header.iter().map(|h| (*h).to_owned()).collect());
    for row in rows {
        out.push_str(&line(row.clone()));
    }
    out
}

fn pretty(value: &Value) -> String {
    format!("{}\n", serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string()))
}

/// RFC 3339 in UTC, or "" when absent.
fn time(timestamp: Option<&prost_types::Timestamp>) -> String {
    timestamp
        .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap_or(0)))
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

fn money(cents: i64) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    format!("{sign}{}.{:02}", cents.unsigned_abs() / 100, cents.unsigned_abs() % 100)
}

fn kind(kind: i32) -> &'static str {
    match ZoneKind::try_from(kind) {
        Ok(ZoneKind::Seated) => "seated",
        Ok(ZoneKind::GeneralAdmission) => "general-admission",
        _ => "unknown",
    }
}

fn sale_state(state: i32) -> &'static str {
    match SaleState::try_from(state) {
        Ok(SaleState::NotOpen) => "not-open",
        Ok(SaleState::Open) => "open",
        Ok(SaleState::Paused) => "paused",
        Ok(SaleState::Closed) => "closed",
        _ => "unknown",
    }
}

fn zone_json(zone: &pb::Zone) -> Value {
    json!({
        "zone_id": zone.zone_id,
        "name": zone.name,
        "kind": kind(zone.kind),
        "price_cents": zone.price_cents,
        "row_labels": zone.row_labels,
        "seats_per_row": zone.seats_per_row,
        "capacity": zone.capacity,
    })
}

fn event_json(event: &pb::Event) -> Value {
    json!({
        "event_id": event.event_id,
        "venue_id": event.venue_id,
        "name": event.name,
        "starts_at": time(event.starts_at.as_ref()),
        "sale_opens_at": time(event.sale_opens_at.as_ref()),
        "max_tickets_per_user": event.max_tickets_per_user,
        "currency": event.currency,
        "admission_capacity": event.admission_capacity,
        "admission_tick_ms": event.admission_tick_ms,
        "pass_ttl_seconds": event.pass_ttl_seconds,
        "total_capacity": event.total_capacity,
        "zones": event.zones.iter().map(zone_json).collect::<Vec<_>>(),
    })
}

pub fn event(event: &pb::Event, json: bool) -> String {
    if json {
        return pretty(&event_json(event));
    }
    let fields = [
        ("event", event.event_id.clone()),
        ("name", event.name.clone()),
        ("venue", event.venue_id.clone()),
        ("starts at", time(event.starts_at.as_ref())),
        ("sale opens at", time(event.sale_opens_at.as_ref())),
        ("max tickets per user", event.max_tickets_per_user.to_string()),
        ("admission capacity", event.admission_capacity.to_string()),
        ("pass ttl", format!("{} s", event.pass_ttl_seconds)),
        ("total capacity", event.total_capacity.to_string()),
    ];
    let mut out: String = fields.iter().map(|(name, value)| format!("{name:<21} {value}\n")).collect();
    out.push('\n');
    let rows: Vec<Vec<String>> = event
        .zones
        .iter()
        .map(|zone| {
            vec![
                zone.zone_id.clone(),
                zone.name.clone(),
                kind(zone.kind).to_owned(),
                format!("{} {}", money(zone.price_cents), event.currency),
                zone.capacity.to_string(),
            ]
        })
        .collect();
    out.push_str(&table(&["ZONE", "NAME", "KIND", "PRICE", "CAPACITY"], &rows));
    out
}

pub fn venue(venue: &pb::Venue, json: bool) -> String {
    if json {
        return pretty(&json!({
            "venue_id": venue.venue_id,
            "name": venue.name,
            "total_capacity": venue.total_capacity,
            "zones": venue.zones.iter().map(zone_json).collect::<Vec<_>>(),
        }));
    }
    let mut out =
        format!("venue {} created: {} ({} places)\n\n", venue.venue_id, venue.name, venue.total_capacity);
    let rows: Vec<Vec<String>> = venue
        .zones
        .iter()
        .map(|zone| {
            vec![
                zone.zone_id.clone(),
                zone.name.clone(),
                kind(zone.kind).to_owned(),
                money(zone.price_cents),
                zone.capacity.to_string(),
            ]
        })
        .collect();
    out.push_str(&table(&["ZONE", "NAME", "KIND", "PRICE", "CAPACITY"], &rows));
    out
}

pub fn events(events: &[pb::Event], json: bool) -> String {
    if json {
        return pretty(&Value::Array(events.iter().map(event_json).collect()));
    }
    let rows: Vec<Vec<String>> = events
        .iter()
        .map(|event| {
            vec![
                event.event_id.clone(),
                event.name.clone(),
                time(event.sale_opens_at.as_ref()),
                event.total_capacity.to_string(),
                event.zones.len().to_string(),
            ]
        })
        .collect();
    table(&["EVENT", "NAME", "SALE OPENS AT", "SEATS", "ZONES"], &rows)
}

/// A sale's state and queue figures; `done` names the action just taken.
pub fn sale(status: &pb::SaleStatus, done: Option<&str>, json: bool) -> String {
    if json {
        return pretty(&json!({
            "event_id": status.event_id,
            "state": sale_state(status.state),
            "queue_length": status.queue_length,
            "admitted_total": status.admitted_total,
            "active_passes": status.active_passes,
            "sale_opens_at": time(status.sale_opens_at.as_ref()),
        }));
    }
    let mut out = String::new();
    if let Some(done) = done {
        out.push_str(&format!("sale of event {} {done}\n", status.event_id));
    }
    let fields = [
        ("event", status.event_id.clone()),
        ("state", sale_state(status.state).to_owned()),
        ("sale opens at", time(status.sale_opens_at.as_ref())),
        ("waiting", status.queue_length.to_string()),
        ("admitted (total)", status.admitted_total.to_string()),
        ("active passes", status.active_passes.to_string()),
    ];
    out.extend(fields.iter().map(|(name, value)| format!("{name:<17} {value}\n")));
    out
}

pub fn availability(availability: &pb::GetAvailabilityResponse, json: bool) -> String {
    if json {
        let zones: Vec<Value> = availability
            .zones
            .iter()
            .map(|zone| {
                json!({
                    "zone_id": zone.zone_id,
                    "kind": kind(zone.kind),
                    "price_cents": zone.price_cents,
                    "capacity": zone.capacity,
                    "free": zone.free,
                    "held": zone.held,
                    "sold": zone.sold,
                })
            })
            .collect();
        return pretty(&json!({
            "event_id": availability.event_id,
            "version": availability.version,
            "zones": zones,
        }));
    }
    let mut rows: Vec<Vec<String>> = availability
        .zones
        .iter()
        .map(|zone| {
            vec![
                zone.zone_id.clone(),
                kind(zone.kind).to_owned(),
                money(zone.price_cents),
                zone.capacity.to_string(),
                zone.free.to_string(),
                zone.held.to_string(),
                zone.sold.to_string(),
            ]
        })
        .collect();
    let sum = |f: fn(&pb::ZoneAvailability) -> u32| -> String {
        availability.zones.iter().map(|z| u64::from(f(z))).sum::<u64>().to_string()
    };
    rows.push(vec![
        "TOTAL".into(),
        String::new(),
        String::new(),
        sum(|z| z.capacity),
        sum(|z| z.free),
        sum(|z| z.held),
        sum(|z| z.sold),
    ]);
    table(&["ZONE", "KIND", "PRICE", "CAPACITY", "FREE", "HELD", "SOLD"], &rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns() {
        let out =
            table(&["A", "LONGER"], &[vec!["wide cell".into(), "x".into()], vec!["y".into(), "z".into()]]);
        assert_eq!(out, "A          LONGER\nwide cell  x\ny          z\n");
    }

    #[test]
    fn money_has_two_decimals() {
        assert_eq!(
            (money(5_000), money(1_205), money(7), money(-150)),
            ("50.00".into(), "12.05".into(), "0.07".into(), "-1.50".into())
        );
    }
}
