//! What the commands print: aligned tables for people, one JSON document with `--json`.

use serde_json::{Value, json};
use ticketing_proto::v1::{self as pb, BookingStatus, PaymentStatus, SaleState, SeatState, ZoneKind};

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
            "admission_rate": status.admission_rate,
            "estimated_wait_seconds": status.estimated_wait_seconds,
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
        ("admission rate", format!("{:.1}/s", status.admission_rate)),
        ("estimated wait", wait(status)),
    ];
    out.extend(fields.iter().map(|(name, value)| format!("{name:<17} {value}\n")));
    out
}

/// The wait at the back of the queue, for people: "-" when nobody waits, and a note when
/// the sale is paused (the estimate assumes it resumes now).
fn wait(status: &pb::SaleStatus) -> String {
    if status.queue_length == 0 {
        return "-".to_owned();
    }
    let seconds = status.estimated_wait_seconds;
    let text = if seconds >= 3_600 {
        format!("{}h{:02}m (last in line)", seconds / 3_600, seconds % 3_600 / 60)
    } else if seconds >= 60 {
        format!("{}m{:02}s (last in line)", seconds / 60, seconds % 60)
    } else {
        format!("{seconds}s (last in line)")
    };
    match SaleState::try_from(status.state) {
        Ok(SaleState::Paused) => format!("{text}, once resumed"),
        _ => text,
    }
}

/// One zone's seats, decoded, to draw as a map.
pub struct SeatMap<'a> {
    pub zone: &'a pb::ZoneSeatMap,
    /// Row by row, seat by seat (`ZoneSeatMap::decode_seat_states`).
    pub states: &'a [SeatState],
    /// Seats per line; a longer row continues on the next line.
    pub width: usize,
}

/// Seats of a map line, grouped by this many for the eye.
const MAP_GROUP: usize = 10;

fn seat_char(state: SeatState) -> char {
    match state {
        SeatState::Free => '.',
        SeatState::Held => 'h',
        SeatState::Sold => 'X',
        // The decoder never yields it (no seat code means "unspecified").
        SeatState::Unspecified => '?',
    }
}

impl SeatMap<'_> {
    /// Each row as its label and one character per seat (`.`, `h`, `X`).
    fn rows(&self) -> Vec<(&str, String)> {
        let per_row = self.zone.seats_per_row as usize;
        self.zone
            .row_labels
            .iter()
            .zip(self.states.chunks(per_row.max(1)))
            .map(|(label, seats)| (label.as_str(), seats.iter().copied().map(seat_char).collect()))
            .collect()
    }

    /// The map for people: a legend, then each row under its label, `width` seats a line
    /// (with the number of the line's first seat), in groups of ten.
    fn text(&self) -> String {
        let zone = self.zone;
        if zone.kind == ZoneKind::GeneralAdmission as i32 {
            return format!(
                "\nzone {} is general admission: no seats to map ({} of {} places free)\n",
                zone.zone_id, zone.free, zone.capacity
            );
        }
        let per_row = zone.seats_per_row as usize;
        let mut out = format!(
            "\nseat map of zone {} ({} rows x {} seats): . free  h held  X sold\n",
            zone.zone_id,
            zone.row_labels.len(),
            per_row
        );
        let label_width = zone.row_labels.iter().map(|l| l.chars().count()).max().unwrap_or(0).max(3);
        let number_width = per_row.to_string().len().max(4);
        out.push_str(&format!("{:<label_width$}  {:>number_width$}\n", "ROW", "SEAT"));
        let width = self.width.max(1);
        for (label, seats) in self.rows() {
            let seats: Vec<char> = seats.chars().collect();
            for (line, chunk) in seats.chunks(width).enumerate() {
                let groups: Vec<String> = chunk.chunks(MAP_GROUP).map(|g| g.iter().collect()).collect();
                let first = line * width + 1;
                out.push_str(&format!(
                    "{label:<label_width$}  {first:>number_width$}  {}\n",
                    groups.join(" ")
                ));
            }
        }
        out
    }

    fn json(&self) -> Value {
        let rows: Vec<Value> =
            self.rows().into_iter().map(|(label, seats)| json!({"row": label, "seats": seats})).collect();
        json!({
            "zone_id": self.zone.zone_id,
            "kind": kind(self.zone.kind),
            "seats_per_row": self.zone.seats_per_row,
            "legend": {".": "free", "h": "held", "X": "sold"},
            "rows": rows,
        })
    }
}

/// Per-zone availability, and one zone's seat map when asked for.
pub fn availability(
    availability: &pb::GetAvailabilityResponse,
    map: Option<&SeatMap<'_>>,
    json: bool,
) -> String {
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
        let mut document = json!({
            "event_id": availability.event_id,
            "version": availability.version,
            "zones": zones,
        });
        if let Some(map) = map {
            document["seat_map"] = map.json();
        }
        return pretty(&document);
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
    let mut out = table(&["ZONE", "KIND", "PRICE", "CAPACITY", "FREE", "HELD", "SOLD"], &rows);
    if let Some(map) = map {
        out.push_str(&map.text());
    }
    out
}

fn booking_status(status: i32) -> &'static str {
    match BookingStatus::try_from(status) {
        Ok(BookingStatus::Confirmed) => "confirmed",
        Ok(BookingStatus::Cancelling) => "cancelling",
        Ok(BookingStatus::Cancelled) => "cancelled",
        _ => "unknown",
    }
}

fn payment_status(status: i32) -> &'static str {
    match PaymentStatus::try_from(status) {
        Ok(PaymentStatus::Confirmed) => "confirmed",
        Ok(PaymentStatus::Declined) => "declined",
        Ok(PaymentStatus::Refunded) => "refunded",
        Ok(PaymentStatus::Processing) => "processing",
        Ok(PaymentStatus::Pending) => "pending",
        Ok(PaymentStatus::Refunding) => "refunding",
        _ => "unknown",
    }
}

fn booking_json(booking: &pb::Booking) -> Value {
    json!({
        "booking_id": booking.booking_id,
        "payment_id": booking.payment_id,
        "event_id": booking.event_id,
        "user_id": booking.user_id,
        "status": booking_status(booking.status),
        "zone_id": booking.zone_id,
        "seat_ids": booking.seat_ids,
        "quantity": booking.quantity,
        "amount_cents": booking.amount_cents,
        "currency": booking.currency,
        "created_at": time(booking.created_at.as_ref()),
        "cancelled_at": time(booking.cancelled_at.as_ref()),
        "cancel_reason": booking.cancel_reason,
    })
}

/// Seat ids for a table cell: the ids, or the count of a general-admission booking.
fn seats_cell(booking: &pb::Booking) -> String {
    if booking.seat_ids.is_empty() {
        format!("{} places", booking.quantity)
    } else {
        booking.seat_ids.join(",")
    }
}

/// A user's bookings, newest first.
pub fn bookings(bookings: &[pb::Booking], json: bool) -> String {
    if json {
        return pretty(&Value::Array(bookings.iter().map(booking_json).collect()));
    }
    let rows: Vec<Vec<String>> = bookings
        .iter()
        .map(|booking| {
            vec![
                booking.booking_id.clone(),
                booking.event_id.clone(),
                booking_status(booking.status).to_owned(),
                booking.zone_id.clone(),
                seats_cell(booking),
                format!("{} {}", money(booking.amount_cents), booking.currency),
                time(booking.created_at.as_ref()),
            ]
        })
        .collect();
    table(&["BOOKING", "EVENT", "STATUS", "ZONE", "SEATS", "AMOUNT", "CREATED AT"], &rows)
}

/// The answer to a refund: the booking and its payment as they stand.
pub fn refund(answer: &pb::CancelBookingResponse, json: bool) -> String {
    let booking = answer.booking.as_ref();
    let payment = answer.payment.as_ref();
    if json {
        return pretty(&json!({
            "booking": booking.map(booking_json),
            "payment_status": payment.map(|p| payment_status(p.status)),
            "payment_id": payment.map(|p| p.payment_id.clone()),
            "replayed": answer.replayed,
        }));
    }
    let Some(booking) = booking else {
        return "the answer carries no booking\n".to_owned();
    };
    let settled = booking.status == BookingStatus::Cancelled as i32;
    let mut out = format!(
        "booking {} {}{}\n",
        booking.booking_id,
        if settled {
            "refunded and cancelled"
        } else {
            "refund under way (the provider has not confirmed it yet)"
        },
        if answer.replayed { " (a replay: this refund was asked before)" } else { "" },
    );
    let fields = [
        ("user", booking.user_id.clone()),
        ("event", booking.event_id.clone()),
        ("status", booking_status(booking.status).to_owned()),
        ("payment", payment.map(|p| payment_status(p.status)).unwrap_or("unknown").to_owned()),
        ("seats", seats_cell(booking)),
        ("amount", format!("{} {}", money(booking.amount_cents), booking.currency)),
        ("reason", booking.cancel_reason.clone()),
    ];
    out.extend(fields.iter().map(|(name, value)| format!("{name:<8} {value}\n")));
    out
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
    fn a_seat_map_wraps_long_rows_and_groups_by_ten() {
        let zone = pb::ZoneSeatMap {
            zone_id: "A".into(),
            kind: ZoneKind::Seated as i32,
            row_labels: vec!["1".into(), "22".into()],
            seats_per_row: 23,
            ..pb::ZoneSeatMap::default()
        };
        let mut states = vec![SeatState::Free; 46];
        states[0] = SeatState::Sold;
        states[1] = SeatState::Held;
        states[45] = SeatState::Sold;
        let map = SeatMap { zone: &zone, states: &states, width: 20 };
        let expected = "\nseat map of zone A (2 rows x 23 seats): . free  h held  X sold\n\
                        ROW  SEAT\n\
                        1       1  Xh........ ..........\n\
                        1      21  ...\n\
                        22      1  .......... ..........\n\
                        22     21  ..X\n";
        assert_eq!(map.text(), expected);
        let json = map.json();
        assert_eq!(json["rows"][0]["seats"], "Xh.....................");
        assert_eq!(json["rows"][1]["row"], "22");
    }

    #[test]
    fn waits_read_as_minutes_and_hours() {
        let status = |queue_length, estimated_wait_seconds, state: SaleState| pb::SaleStatus {
            queue_length,
            estimated_wait_seconds,
            state: state as i32,
            ..pb::SaleStatus::default()
        };
        assert_eq!(wait(&status(0, 0, SaleState::Open)), "-");
        assert_eq!(wait(&status(5, 42, SaleState::Open)), "42s (last in line)");
        assert_eq!(wait(&status(5, 125, SaleState::Open)), "2m05s (last in line)");
        assert_eq!(wait(&status(5, 7_260, SaleState::Paused)), "2h01m (last in line), once resumed");
    }

    #[test]
    fn money_has_two_decimals() {
        assert_eq!(
            (money(5_000), money(1_205), money(7), money(-150)),
            ("50.00".into(), "12.05".into(), "0.07".into(), "-1.50".into())
        );
    }
}
