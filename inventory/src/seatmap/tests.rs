#![allow(clippy::unwrap_used)] // test code: a panic is a failed test

use ticketing_proto::{
    seat_states::SeatCode,
    v1::{Event, SeatState, Zone, ZoneKind},
};

use super::*;

fn event() -> Event {
    Event {
        event_id: "e".into(),
        zones: vec![
            Zone {
                zone_id: "A".into(),
                kind: ZoneKind::Seated as i32,
                row_labels: vec!["1".into(), "2".into()],
                seats_per_row: 3,
                capacity: 6,
                ..Zone::default()
            },
            Zone {
                zone_id: "GA".into(),
                kind: ZoneKind::GeneralAdmission as i32,
                capacity: 10,
                ..Zone::default()
            },
        ],
        ..Event::default()
    }
}

fn states(map: &mut SeatMap) -> Vec<u8> {
    let snapshot = map.snapshot(Some("A")).unwrap();
    let zone = &snapshot.zones[0];
    zone.decode_seat_states().unwrap().into_iter().map(|s| SeatCode::of_state(s).unwrap().bits()).collect()
}

#[test]
fn release_frees_only_seats_of_the_same_hold_and_sold_is_terminal() {
    let mut map = SeatMap::new(&event());
    let seats = vec!["A-1-1".to_owned(), "A-2-3".to_owned(), "A-9-1".to_owned()];
    let changes = map.apply(SeatEvent::Held { hold_id: "h1", zone_id: "A", seat_ids: &seats, quantity: 2 });
    assert_eq!(changes.seats.len(), 2);
    assert_eq!(states(&mut map), vec![1, 0, 0, 0, 0, 1]);
    map.apply(SeatEvent::Released { hold_id: "h2", zone_id: "A", seat_ids: &seats });
    assert_eq!(states(&mut map), vec![1, 0, 0, 0, 0, 1]);
    map.apply(SeatEvent::Confirmed { hold_id: "h1", zone_id: "A", seat_ids: &seats[..1], quantity: 1 });
    map.apply(SeatEvent::Released { hold_id: "h1", zone_id: "A", seat_ids: &seats });
    assert_eq!(states(&mut map), vec![2, 0, 0, 0, 0, 0]);
    let a = &map.availability(Some("A"))[0];
    assert_eq!((a.free, a.held, a.sold), (5, 0, 1));
    assert_eq!(map.version(), 4);
}

#[test]
fn a_cancelled_sale_frees_only_its_own_seats_in_any_arrival_order() {
    let mut map = SeatMap::new(&event());
    let seat = vec!["A-1-1".to_owned()];
    let counts = |map: &SeatMap| {
        let a = &map.availability(Some("A"))[0];
        (a.free, a.held, a.sold)
    };
    map.apply(SeatEvent::Held { hold_id: "h1", zone_id: "A", seat_ids: &seat, quantity: 1 });
    map.apply(SeatEvent::Confirmed { hold_id: "h1", zone_id: "A", seat_ids: &seat, quantity: 1 });
    // Another hold's cancellation does not touch it; its own frees it, once.
    map.apply(SeatEvent::Cancelled { hold_id: "h9", zone_id: "A", seat_ids: &seat });
    assert_eq!((states(&mut map)[0], counts(&map)), (2, (5, 0, 1)));
    let changes = map.apply(SeatEvent::Cancelled { hold_id: "h1", zone_id: "A", seat_ids: &seat });
    assert_eq!(changes.seats.len(), 1);
    assert_eq!(changes.seats[0].state, SeatState::Free as i32);
    map.apply(SeatEvent::Cancelled { hold_id: "h1", zone_id: "A", seat_ids: &seat });
    assert_eq!((states(&mut map)[0], counts(&map)), (0, (6, 0, 0)));

    // Sold to h3 and returned, then sold to h2, whose sale reaches the stream before h3's
    // return and h2's own hold (payment and seat-lock publish separately).
    map.apply(SeatEvent::Held { hold_id: "h3", zone_id: "A", seat_ids: &seat, quantity: 1 });
    map.apply(SeatEvent::Confirmed { hold_id: "h3", zone_id: "A", seat_ids: &seat, quantity: 1 });
    map.apply(SeatEvent::Confirmed { hold_id: "h2", zone_id: "A", seat_ids: &seat, quantity: 1 });
    map.apply(SeatEvent::Cancelled { hold_id: "h3", zone_id: "A", seat_ids: &seat });
    map.apply(SeatEvent::Held { hold_id: "h2", zone_id: "A", seat_ids: &seat, quantity: 1 });
    assert_eq!((states(&mut map)[0], counts(&map)), (2, (5, 0, 1)));

    // A return that overtakes its own sale: the held seat is freed, the late sale ignored.
    let other = vec!["A-2-1".to_owned()];
    map.apply(SeatEvent::Held { hold_id: "h4", zone_id: "A", seat_ids: &other, quantity: 1 });
    map.apply(SeatEvent::Cancelled { hold_id: "h4", zone_id: "A", seat_ids: &other });
    map.apply(SeatEvent::Confirmed { hold_id: "h4", zone_id: "A", seat_ids: &other, quantity: 1 });
    assert_eq!((states(&mut map)[3], counts(&map)), (0, (5, 0, 1)));
}

#[test]
fn a_cancelled_general_admission_sale_gives_its_places_back() {
    let mut map = SeatMap::new(&event());
    let none: Vec<String> = Vec::new();
    let ga = |map: &SeatMap| {
        let ga = &map.availability(Some("GA"))[0];
        (ga.free, ga.held, ga.sold)
    };
    map.apply(SeatEvent::Held { hold_id: "g1", zone_id: "GA", seat_ids: &none, quantity: 4 });
    map.apply(SeatEvent::Confirmed { hold_id: "g1", zone_id: "GA", seat_ids: &none, quantity: 4 });
    map.apply(SeatEvent::Confirmed { hold_id: "g2", zone_id: "GA", seat_ids: &none, quantity: 3 });
    assert_eq!(ga(&map), (3, 0, 7));
    map.apply(SeatEvent::Cancelled { hold_id: "g1", zone_id: "GA", seat_ids: &none });
    map.apply(SeatEvent::Cancelled { hold_id: "g1", zone_id: "GA", seat_ids: &none });
    assert_eq!(ga(&map), (7, 0, 3));
    // Returned while only its hold had reached the stream; the late sale is ignored.
    map.apply(SeatEvent::Held { hold_id: "g3", zone_id: "GA", seat_ids: &none, quantity: 2 });
    map.apply(SeatEvent::Cancelled { hold_id: "g3", zone_id: "GA", seat_ids: &none });
    map.apply(SeatEvent::Confirmed { hold_id: "g3", zone_id: "GA", seat_ids: &none, quantity: 2 });
    assert_eq!(ga(&map), (7, 0, 3));
}

/// A map restored from its state and fed the rest of the stream equals the map that saw
/// the whole stream: what lets inventory replay from a snapshot instead of the start.
#[test]
fn a_restored_map_continues_exactly_like_the_original() {
    let seats = |ids: &[&str]| ids.iter().map(|s| (*s).to_owned()).collect::<Vec<String>>();
    let (a, b, c) = (seats(&["A-1-1", "A-1-2"]), seats(&["A-2-3"]), seats(&["A-1-3"]));
    let none: Vec<String> = Vec::new();
    let mut full = SeatMap::new(&event());
    let first = [
        SeatEvent::Held { hold_id: "h1", zone_id: "A", seat_ids: &a, quantity: 2 },
        SeatEvent::Held { hold_id: "h2", zone_id: "A", seat_ids: &b, quantity: 1 },
        SeatEvent::Confirmed { hold_id: "h1", zone_id: "A", seat_ids: &a, quantity: 2 },
        SeatEvent::Held { hold_id: "h3", zone_id: "A", seat_ids: &c, quantity: 1 },
        SeatEvent::Held { hold_id: "g1", zone_id: "GA", seat_ids: &none, quantity: 3 },
        SeatEvent::Confirmed { hold_id: "g2", zone_id: "GA", seat_ids: &none, quantity: 2 },
        SeatEvent::Cancelled { hold_id: "h9", zone_id: "A", seat_ids: &c },
    ];
    let rest = [
        SeatEvent::Released { hold_id: "h2", zone_id: "A", seat_ids: &b },
        SeatEvent::Confirmed { hold_id: "h3", zone_id: "A", seat_ids: &c, quantity: 1 },
        SeatEvent::Cancelled { hold_id: "h1", zone_id: "A", seat_ids: &a },
        SeatEvent::Confirmed { hold_id: "g1", zone_id: "GA", seat_ids: &none, quantity: 3 },
        SeatEvent::Confirmed { hold_id: "h9", zone_id: "A", seat_ids: &c, quantity: 1 },
    ];
    for e in first {
        full.apply(e);
    }
    let state = full.state();
    let json = serde_json::to_vec(&state).unwrap();
    let mut restored = SeatMap::restore(&event(), &serde_json::from_slice(&json).unwrap()).unwrap();
    assert_eq!(restored.state(), state);
    for e in rest {
        full.apply(e);
        restored.apply(e);
    }
    assert_eq!(restored.state(), full.state());
    assert_eq!(states(&mut restored), states(&mut full));
    assert_eq!(restored.availability(None), full.availability(None));
    assert_eq!(states(&mut restored), vec![0, 0, 2, 0, 0, 0]);

    // A state that does not fit the catalogue is refused, not half applied.
    let mut other = state.clone();
    other.zones[0].capacity = 7;
    assert!(SeatMap::restore(&event(), &other).is_err());
    let mut twice = state;
    twice.zones[0].sold_seats.push(("hx".into(), vec![0]));
    assert!(SeatMap::restore(&event(), &twice).is_err());
}

#[test]
fn general_admission_counts_by_hold_and_ignores_repeats() {
    let mut map = SeatMap::new(&event());
    let none: Vec<String> = Vec::new();
    let held = |h| SeatEvent::Held { hold_id: h, zone_id: "GA", seat_ids: &none, quantity: 4 };
    map.apply(held("h1"));
    map.apply(held("h1"));
    map.apply(held("h2"));
    map.apply(SeatEvent::Released { hold_id: "h1", zone_id: "GA", seat_ids: &none });
    map.apply(SeatEvent::Released { hold_id: "h1", zone_id: "GA", seat_ids: &none });
    map.apply(SeatEvent::Confirmed { hold_id: "h2", zone_id: "GA", seat_ids: &none, quantity: 4 });
    map.apply(SeatEvent::Confirmed { hold_id: "h2", zone_id: "GA", seat_ids: &none, quantity: 4 });
    map.apply(SeatEvent::Confirmed { hold_id: "h3", zone_id: "GA", seat_ids: &none, quantity: 9 });
    let ga = &map.availability(Some("GA"))[0];
    assert_eq!((ga.free, ga.held, ga.sold), (0, 0, 10));
}

/// Payment's confirmation overtakes seat-lock's events: the zone still shows another
/// hold's places held (its release is on its way) and not yet this hold. The sale counts
/// in full all the same; before, it was clamped to the free places (none) and lost.
#[test]
fn a_general_admission_sale_that_overtakes_a_pending_release_is_counted() {
    let mut map = SeatMap::new(&event());
    let none: Vec<String> = Vec::new();
    map.apply(SeatEvent::Held { hold_id: "h1", zone_id: "GA", seat_ids: &none, quantity: 10 });
    map.apply(SeatEvent::Confirmed { hold_id: "h2", zone_id: "GA", seat_ids: &none, quantity: 4 });
    map.apply(SeatEvent::Released { hold_id: "h1", zone_id: "GA", seat_ids: &none });
    map.apply(SeatEvent::Held { hold_id: "h2", zone_id: "GA", seat_ids: &none, quantity: 4 });
    let ga = &map.availability(Some("GA"))[0];
    assert_eq!((ga.free, ga.held, ga.sold), (6, 0, 4));
}
