//! The venue file an organiser writes for `venue create -f`, and its request.
//!
//! ```yaml
//! name: Loopback Hall
//! zones:
//!   - id: A              # 1-16 of [A-Za-z0-9_], unique in the venue
//!     name: Stalls
//!     price_cents: 5000  # per ticket, minor units of the event's currency
//!     rows: ["1", "2"]   # seated: row labels from the best row, and seats in every row
//!     seats_per_row: 10
//!     accessible: [A-1-1]
//!   - id: FLOOR
//!     name: Floor
//!     price_cents: 3500
//!     capacity: 300      # general admission: sold by count
//! ```
//!
//! The file is checked for its shape here (a zone is seated or general admission, never
//! both); the values (labels, sizes, prices) are inventory's to judge.

use serde::Deserialize;
use ticketing_proto::v1::{self as pb, zone_spec::Layout};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VenueFile {
    pub name: String,
    pub zones: Vec<ZoneFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZoneFile {
    pub id: String,
    pub name: String,
    pub price_cents: i64,
    #[serde(default)]
    pub rows: Vec<String>,
    pub seats_per_row: Option<u32>,
    #[serde(default)]
    pub accessible: Vec<String>,
    pub capacity: Option<u32>,
}

/// Parses the file's text into the request; the error names the place and the problem.
pub fn parse(text: &str) -> Result<pb::CreateVenueRequest, String> {
    let file: VenueFile = serde_norway::from_str(text).map_err(|e| e.to_string())?;
    let zones = file
        .zones
        .into_iter()
        .map(|zone| {
            let seated = !zone.rows.is_empty() || zone.seats_per_row.is_some() || !zone.accessible.is_empty();
            let layout = match (seated, zone.capacity) {
                (true, Some(_)) => {
                    return Err(format!(
                        "zone {}: either rows and seats_per_row (seated) or capacity (general admission), not both",
                        zone.id
                    ));
                }
                (true, None) => {
                    let seats_per_row = zone
                        .seats_per_row
                        .ok_or_else(|| format!("zone {}: seats_per_row is missing", zone.id))?;
                    if zone.rows.is_empty() {
                        return Err(format!("zone {}: rows is missing", zone.id));
                    }
                    Layout::Seated(pb::SeatedLayout {
                        row_labels: zone.rows,
                        seats_per_row,
                        accessible_seat_ids: zone.accessible,
                    })
                }
                (false, Some(capacity)) => Layout::GeneralAdmission(pb::GeneralAdmissionLayout { capacity }),
                (false, None) => {
                    return Err(format!(
                        "zone {}: give rows and seats_per_row (seated) or capacity (general admission)",
                        zone.id
                    ));
                }
            };
            Ok(pb::ZoneSpec { zone_id: zone.id, name: zone.name, price_cents: zone.price_cents, layout: Some(layout) })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(pb::CreateVenueRequest { name: file.name, zones })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_venue_file_becomes_the_request() {
        let text = "name: Hall\nzones:\n  - id: A\n    name: Stalls\n    price_cents: 5000\n    rows: ['1', '2']\n    \
                    seats_per_row: 10\n    accessible: [A-1-1]\n  - id: FLOOR\n    name: Floor\n    price_cents: 3500\n    \
                    capacity: 300\n";
        let request = parse(text).unwrap();
        assert_eq!(request.name, "Hall");
        assert_eq!(
            request.zones[0].layout,
            Some(Layout::Seated(pb::SeatedLayout {
                row_labels: vec!["1".into(), "2".into()],
                seats_per_row: 10,
                accessible_seat_ids: vec!["A-1-1".into()],
            }))
        );
        assert_eq!(
            request.zones[1].layout,
            Some(Layout::GeneralAdmission(pb::GeneralAdmissionLayout { capacity: 300 }))
        );
        assert_eq!((request.zones[1].zone_id.as_str(), request.zones[1].price_cents), ("FLOOR", 3500));
    }

    #[test]
    fn a_malformed_venue_file_is_refused_with_the_reason() {
        let zone = |extra: &str| {
            format!("name: Hall\nzones:\n  - id: A\n    name: Stalls\n    price_cents: 1\n{extra}")
        };
        let cases = [
            (zone("    rows: ['1']\n    seats_per_row: 2\n    capacity: 3\n"), "not both"),
            (zone("    rows: ['1']\n"), "seats_per_row is missing"),
            (zone("    seats_per_row: 2\n"), "rows is missing"),
            (zone(""), "give rows"),
            (zone("    capacity: 3\n    colour: red\n"), "colour"),
            ("zones: []\n".to_owned(), "name"),
            ("name: [\n".to_owned(), ""),
        ];
        for (text, names) in cases {
            let error = parse(&text).unwrap_err();
            assert!(error.contains(names), "{text:?}: {error}");
        }
    }
}
