//! Integration tests of the inventory service on the real Postgres and NATS.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

mod cancellation;
mod helpers;
mod snapshots;
mod streams;

use std::time::Duration;

use helpers::{
    Publisher, create_event, create_venue, event_request, general, seat_states, seated, spawn_app,
};
use inventory::registry::CHANGE_FEED_CAPACITY;
use test_support::testenv::{TestEnv, eventually};
use ticketing_proto::seat_states::SeatCode;
use ticketing_proto::v1::{
    CreateEventRequest, CreateVenueRequest, GetAvailabilityRequest, GetEventRequest, GetSeatMapRequest,
    ListEventsRequest, SeatState, SeatStatesEncoding, WatchSeatMapRequest, ZoneKind,
    inventory_service_client::InventoryServiceClient, seat_map_update::Update,
};
use tonic::Code;

const SOON: Duration = Duration::from_secs(10);
const T0: i64 = 1_900_000_000_000;

fn field_of(status: &tonic::Status) -> String {
    service_runtime::status::reason(status).and_then(|(_, m)| m.get("field").cloned()).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalogue_is_stored_listed_in_pages_and_served_all_free() {
    let env = TestEnv::new().await.unwrap();
    let app = spawn_app(&env).await;
    let mut client = app.client.clone();

    let venue = create_venue(&mut client).await;
    assert!(uuid::Uuid::parse_str(&venue.venue_id).is_ok_and(|id| id.get_version_num() == 7));
    assert_eq!(venue.total_capacity, 130);
    assert_eq!(venue.zones[0].capacity, 30);
    assert_eq!(venue.zones[0].kind, ZoneKind::Seated as i32);
    assert_eq!(venue.zones[1].kind, ZoneKind::GeneralAdmission as i32);

    // Created out of sale order: the list is ordered by sale_opens_at.
    let late = create_event(&mut client, &venue.venue_id, T0 + 3_000).await;
    let early = create_event(&mut client, &venue.venue_id, T0 + 1_000).await;
    let middle = create_event(&mut client, &venue.venue_id, T0 + 2_000).await;
    assert_eq!(early.currency, "EUR");
    assert_eq!((early.admission_capacity, early.admission_tick_ms, early.pass_ttl_seconds), (500, 200, 600));
    assert_eq!(early.zones, venue.zones);
    assert_eq!(early.total_capacity, 130);

    let got =
        client.get_event(GetEventRequest { event_id: early.event_id.clone() }).await.unwrap().into_inner();
    assert_eq!(got.event.as_ref(), Some(&early));

    let page1 =
        client.list_events(ListEventsRequest { page_size: 2, page_token: String::new() }).await.unwrap();
    let page1 = page1.into_inner();
    let ids: Vec<_> = page1.events.iter().map(|e| e.event_id.clone()).collect();
    assert_eq!(ids, vec![early.event_id.clone(), middle.event_id.clone()]);
    assert!(!page1.next_page_token.is_empty());
    let page2 = client
        .list_events(ListEventsRequest { page_size: 2, page_token: page1.next_page_token.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        page2.events.iter().map(|e| e.event_id.clone()).collect::<Vec<_>>(),
        vec![late.event_id.clone()]
    );
    assert!(page2.next_page_token.is_empty());
    // A plain "<millis>_<uuid>" token works too.
    let plain = format!("{}_{}", T0 + 1_000, early.event_id);
    let after_early =
        client.list_events(ListEventsRequest { page_size: 0, page_token: plain }).await.unwrap().into_inner();
    assert_eq!(after_early.events.len(), 2);
    assert_eq!(after_early.events[0].event_id, middle.event_id);
    let bad = client.list_events(ListEventsRequest { page_size: 0, page_token: "garbage!".into() }).await;
    let bad = bad.unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert_eq!(field_of(&bad), "page_token");
    let too_big = client.list_events(ListEventsRequest { page_size: 101, page_token: String::new() }).await;
    assert_eq!(too_big.unwrap_err().code(), Code::InvalidArgument);

    let availability = client
        .get_availability(GetAvailabilityRequest { event_id: early.event_id.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(availability.version, 0);
    let counts: Vec<_> =
        availability.zones.iter().map(|z| (z.zone_id.as_str(), z.free, z.held, z.sold)).collect();
    assert_eq!(counts, vec![("A", 30, 0, 0), ("FLOOR", 100, 0, 0)]);

    let map = client
        .get_seat_map(GetSeatMapRequest { event_id: early.event_id.clone(), zone_id: String::new() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(map.zones.len(), 2);
    // 30 free seats are one run, one byte.
    assert_eq!(map.zones[0].seat_states_encoding, SeatStatesEncoding::Runs as i32);
    assert_eq!(map.zones[0].seat_states.len(), 1);
    assert_eq!(helpers::decode(&map.zones[0]), vec![0; 30]);
    assert!(map.zones[1].seat_states.is_empty());
    assert!(helpers::decode(&map.zones[1]).is_empty());

    let unknown = uuid::Uuid::now_v7().to_string();
    let missing = client.get_event(GetEventRequest { event_id: unknown.clone() }).await.unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    let missing = client.get_seat_map(GetSeatMapRequest { event_id: unknown, zone_id: String::new() }).await;
    assert_eq!(missing.unwrap_err().code(), Code::NotFound);
    let no_zone = client
        .get_seat_map(GetSeatMapRequest { event_id: early.event_id.clone(), zone_id: "Z".into() })
        .await;
    assert_eq!(no_zone.unwrap_err().code(), Code::NotFound);
    let malformed = client.get_event(GetEventRequest { event_id: "nope".into() }).await.unwrap_err();
    assert_eq!(malformed.code(), Code::InvalidArgument);
    assert_eq!(field_of(&malformed), "event_id");

    // Another replica, started before the event existed, finds it in Postgres on a miss.
    let other = spawn_app(&env).await;
    let mut other_client = other.client.clone();
    let fresh = create_event(&mut client, &venue.venue_id, T0 + 4_000).await;
    let seen = other_client.get_event(GetEventRequest { event_id: fresh.event_id.clone() }).await.unwrap();
    assert_eq!(seen.into_inner().event, Some(fresh));
    other.stop().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seat_events_hold_release_only_by_the_owner_and_sell_for_good() {
    let env = TestEnv::new().await.unwrap();
    let app = spawn_app(&env).await;
    let mut client = app.client.clone();
    let venue = create_venue(&mut client).await;
    let event = create_event(&mut client, &venue.venue_id, T0).await;
    let id = event.event_id.clone();
    let bus = Publisher::new(&env).await;
    // Seat A-1-1 is index 0, A-2-3 is index 12.
    let seats = ["A-1-1", "A-2-3"];
    let state_of = |states: &[u8]| (states[0], states[12]);

    bus.held(&id, "h1", "A", &seats, 2).await;
    let held = eventually(SOON, || {
        let mut client = client.clone();
        let id = id.clone();
        async move { Some(seat_states(&mut client, &id, "A").await).filter(|s| state_of(s) == (1, 1)) }
    })
    .await;
    assert!(held.is_some(), "the held seats never showed as held");
    let held = held.unwrap();
    assert_eq!(held.iter().filter(|&&s| s != 0).count(), 2);

    // A release by another hold changes nothing; a later event proves it was applied.
    bus.released(&id, "h2", "A", &seats, 2).await;
    bus.held(&id, "g1", "FLOOR", &[], 5).await;
    let watcher = client.clone();
    let version_after = |min: u64| {
        let client = watcher.clone();
        let id = id.clone();
        async move {
            eventually(SOON, || {
                let mut client = client.clone();
                let id = id.clone();
                async move {
                    let a = client.get_availability(GetAvailabilityRequest { event_id: id }).await.ok()?;
                    Some(a.into_inner()).filter(|a| a.version >= min)
                }
            })
            .await
            .unwrap()
        }
    };
    let availability = version_after(3).await;
    assert_eq!(state_of(&seat_states(&mut client, &id, "A").await), (1, 1));
    assert_eq!((availability.zones[0].free, availability.zones[0].held), (28, 2));
    assert_eq!((availability.zones[1].free, availability.zones[1].held), (95, 5));

    // The owner's release frees both.
    bus.released(&id, "h1", "A", &seats, 2).await;
    version_after(4).await;
    assert_eq!(state_of(&seat_states(&mut client, &id, "A").await), (0, 0));

    // Held again, then sold; a later release of that hold does not unsell.
    bus.held(&id, "h3", "A", &seats, 2).await;
    bus.confirmed(&id, "h3", "A", &seats, 2).await;
    bus.released(&id, "h3", "A", &seats, 2).await;
    bus.confirmed(&id, "g1", "FLOOR", &[], 5).await;
    bus.released(&id, "g1", "FLOOR", &[], 5).await;
    let availability = version_after(9).await;
    assert_eq!(state_of(&seat_states(&mut client, &id, "A").await), (2, 2));
    let counts: Vec<_> = availability.zones.iter().map(|z| (z.free, z.held, z.sold)).collect();
    assert_eq!(counts, vec![(28, 0, 2), (95, 0, 5)]);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_replica_rebuilds_the_same_map_from_postgres_and_the_stream() {
    let env = TestEnv::new().await.unwrap();
    let app = spawn_app(&env).await;
    let mut client = app.client.clone();
    let venue = create_venue(&mut client).await;
    let event = create_event(&mut client, &venue.venue_id, T0).await;
    let id = event.event_id.clone();
    let bus = Publisher::new(&env).await;
    bus.held(&id, "h1", "A", &["A-1-1", "A-1-2", "A-3-10"], 3).await;
    bus.held(&id, "h2", "A", &["A-2-5"], 1).await;
    bus.released(&id, "h1", "A", &["A-1-2"], 1).await;
    bus.confirmed(&id, "h2", "A", &["A-2-5"], 1).await;
    bus.held(&id, "g1", "FLOOR", &[], 7).await;
    let request = GetSeatMapRequest { event_id: id.clone(), zone_id: String::new() };
    let before =
        eventually(SOON, || {
            let mut client = client.clone();
            let request = request.clone();
            async move {
                client.get_seat_map(request).await.ok().map(|r| r.into_inner()).filter(|m| m.version == 5)
            }
        })
        .await
        .unwrap();
    assert_eq!(helpers::decode(&before.zones[0]).iter().filter(|&&s| s != 0).count(), 3);
    app.stop().await;

    let restarted = spawn_app(&env).await;
    let mut client = restarted.client.clone();
    // `App::build` replays up to the stream head before serving: no polling needed.
    let after = client.get_seat_map(request).await.unwrap().into_inner();
    assert_eq!(after, before);
    let got = client.get_event(GetEventRequest { event_id: id }).await.unwrap().into_inner();
    assert_eq!(got.event, Some(event));
    restarted.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_naming_the_field_and_stores_nothing() {
    let env = TestEnv::new().await.unwrap();
    let app = spawn_app(&env).await;
    let mut client = app.client.clone();
    let venue = create_venue(&mut client).await;

    let venue_cases: Vec<(CreateVenueRequest, &str)> = vec![
        (CreateVenueRequest { name: String::new(), zones: vec![general("G", 10)] }, "name"),
        (CreateVenueRequest { name: "V".into(), zones: vec![] }, "zones"),
        (CreateVenueRequest { name: "V".into(), zones: vec![general("bad-id", 10)] }, "zones[0].zone_id"),
        (CreateVenueRequest { name: "V".into(), zones: vec![general("", 10)] }, "zones[0].zone_id"),
        (
            CreateVenueRequest { name: "V".into(), zones: vec![general("G", 10), general("G", 5)] },
            "zones[1].zone_id",
        ),
        (
            CreateVenueRequest { name: "V".into(), zones: vec![seated("A", &["1", "1"], 5)] },
            "zones[0].seated.row_labels",
        ),
        (
            CreateVenueRequest { name: "V".into(), zones: vec![seated("A", &["1"], 0)] },
            "zones[0].seated.seats_per_row",
        ),
        (
            CreateVenueRequest { name: "V".into(), zones: vec![general("G", 0)] },
            "zones[0].general_admission.capacity",
        ),
        (
            CreateVenueRequest { name: "V".into(), zones: vec![general("G", 200_000), general("H", 1)] },
            "zones",
        ),
        (
            CreateVenueRequest { name: "V".into(), zones: vec![seated("A", &["1"; 0], 5)] },
            "zones[0].seated.row_labels",
        ),
    ];
    let mut accessible = seated("A", &["1"], 5);
    if let Some(ticketing_proto::v1::zone_spec::Layout::Seated(layout)) = &mut accessible.layout {
        layout.accessible_seat_ids = vec!["A-1-6".into()];
    }
    let venue_cases = venue_cases.into_iter().chain([(
        CreateVenueRequest { name: "V".into(), zones: vec![accessible] },
        "zones[0].seated.accessible_seat_ids",
    )]);
    for (request, field) in venue_cases {
        let status = client.create_venue(request.clone()).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{request:?}");
        assert_eq!(field_of(&status), field, "{}", status.message());
        assert!(status.message().starts_with(field), "{}", status.message());
    }

    let good = event_request(&venue.venue_id, "Show", T0);
    let event_cases: Vec<(CreateEventRequest, Code, &str)> = vec![
        (CreateEventRequest { venue_id: String::new(), ..good.clone() }, Code::InvalidArgument, "venue_id"),
        (CreateEventRequest { venue_id: "xyz".into(), ..good.clone() }, Code::InvalidArgument, "venue_id"),
        (
            CreateEventRequest { venue_id: uuid::Uuid::now_v7().to_string(), ..good.clone() },
            Code::NotFound,
            "venue_id",
        ),
        (CreateEventRequest { name: " ".into(), ..good.clone() }, Code::InvalidArgument, "name"),
        (CreateEventRequest { starts_at: None, ..good.clone() }, Code::InvalidArgument, "starts_at"),
        (
            CreateEventRequest {
                sale_opens_at: good.starts_at.map(|t| prost_types::Timestamp { seconds: t.seconds + 1, ..t }),
                ..good.clone()
            },
            Code::InvalidArgument,
            "sale_opens_at",
        ),
        (
            CreateEventRequest { max_tickets_per_user: 0, ..good.clone() },
            Code::InvalidArgument,
            "max_tickets_per_user",
        ),
        (
            CreateEventRequest { max_tickets_per_user: 51, ..good.clone() },
            Code::InvalidArgument,
            "max_tickets_per_user",
        ),
        (CreateEventRequest { currency: "eur".into(), ..good.clone() }, Code::InvalidArgument, "currency"),
        (
            CreateEventRequest { admission_capacity: 100_001, ..good.clone() },
            Code::InvalidArgument,
            "admission_capacity",
        ),
        (
            CreateEventRequest { admission_tick_ms: 10, ..good.clone() },
            Code::InvalidArgument,
            "admission_tick_ms",
        ),
        (
            CreateEventRequest { pass_ttl_seconds: 5, ..good.clone() },
            Code::InvalidArgument,
            "pass_ttl_seconds",
        ),
        (
            CreateEventRequest { cancellation_cutoff_seconds: 365 * 86_400 + 1, ..good.clone() },
            Code::InvalidArgument,
            "cancellation_cutoff_seconds",
        ),
    ];
    for (request, code, field) in event_cases {
        let status = client.create_event(request.clone()).await.unwrap_err();
        assert_eq!(status.code(), code, "{request:?}: {}", status.message());
        assert!(status.message().starts_with(field), "{}", status.message());
    }

    // Nothing was stored: no event listed, and only the one good venue.
    let list = client.list_events(ListEventsRequest::default()).await.unwrap().into_inner();
    assert!(list.events.is_empty());
    let db = env.database().await.unwrap();
    use sea_orm::ConnectionTrait;
    let row = db
        .query_one_raw(sea_orm::Statement::from_string(
            sea_orm::DbBackend::Postgres,
            "SELECT (SELECT count(*) FROM inventory.venues) AS venues, (SELECT count(*) FROM inventory.zones) AS zones",
        ))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.try_get::<i64>("", "venues").unwrap(), 1);
    assert_eq!(row.try_get::<i64>("", "zones").unwrap(), 2);

    // The good request still works afterwards.
    client.create_event(good).await.unwrap();
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_sends_a_snapshot_then_a_coalesced_delta() {
    let env = TestEnv::new().await.unwrap();
    let app = spawn_app(&env).await;
    let mut client = app.client.clone();
    let venue = create_venue(&mut client).await;
    let event = create_event(&mut client, &venue.venue_id, T0).await;
    let id = event.event_id.clone();

    let mut stream = client
        .watch_seat_map(WatchSeatMapRequest { event_id: id.clone(), zone_id: "A".into() })
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    let Some(Update::Snapshot(snapshot)) = first.update else {
        panic!("expected a snapshot first, got {first:?}")
    };
    assert_eq!(snapshot.zones.len(), 1);
    assert_eq!(helpers::decode(&snapshot.zones[0]), vec![0; 30]);

    let bus = Publisher::new(&env).await;
    bus.held(&id, "h1", "A", &["A-1-1", "A-1-2"], 2).await;
    bus.held(&id, "h2", "A", &["A-1-3"], 1).await;
    // Another zone's change is not sent to a watcher of zone A.
    bus.held(&id, "g1", "FLOOR", &[], 3).await;

    let mut seen = std::collections::HashMap::new();
    while seen.len() < 3 {
        let update = tokio::time::timeout(SOON, stream.message()).await.unwrap().unwrap().unwrap();
        match update.update {
            Some(Update::Delta(delta)) => {
                assert_eq!(delta.event_id, id);
                assert!(delta.changes.iter().all(|c| c.zone_id == "A"));
                assert!(delta.availability.iter().all(|a| a.zone_id == "A"));
                for change in delta.changes {
                    seen.insert(change.seat_id, change.state);
                }
                if seen.len() == 3 {
                    assert_eq!(delta.availability[0].held, 3);
                }
            }
            other => panic!("expected deltas, got {other:?}"),
        }
    }
    assert!(seen.values().all(|&s| s == SeatState::Held as i32));

    let bad =
        client.watch_seat_map(WatchSeatMapRequest { event_id: id.clone(), zone_id: "NOPE".into() }).await;
    assert_eq!(bad.unwrap_err().code(), Code::NotFound);

    // The stream ends when the server stops.
    app.stop().await;
    let end = tokio::time::timeout(SOON, stream.message()).await.unwrap();
    assert!(!matches!(end, Ok(Some(_))), "the watch stream did not end: {end:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_that_stops_reading_gets_a_fresh_snapshot_then_deltas_again() {
    /// The slow client's HTTP/2 stream window: once it stops reading, the server can send
    /// it about one update more, and then its watcher stops moving through the change feed.
    const WINDOW: u32 = 64;
    let env = TestEnv::new().await.unwrap();
    let app = spawn_app(&env).await;
    let mut client = app.client.clone();
    let venue = create_venue(&mut client).await;
    let event = create_event(&mut client, &venue.venue_id, T0).await;
    let id = event.event_id.clone();

    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{}", app.port))
        .unwrap()
        .initial_stream_window_size(WINDOW);
    let mut slow = InventoryServiceClient::new(endpoint.connect().await.unwrap());
    let mut stream = slow
        .watch_seat_map(WatchSeatMapRequest { event_id: id.clone(), zone_id: String::new() })
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert!(matches!(first.update, Some(Update::Snapshot(_))), "{first:?}");

    // While it does not read, many times more change batches than the feed keeps (the
    // watcher may still take a few before its window fills): three seats, each held and
    // released in turn by its own hold, then a GA hold and a sale.
    let bus = Publisher::new(&env).await;
    let seats = ["A-1-1", "A-2-5", "A-3-10"];
    // Ends with A-1-1 and A-2-5 held, A-3-10 free.
    let rounds = 3 * CHANGE_FEED_CAPACITY + 2;
    for i in 0..rounds {
        let (seat, hold) = (seats[i % 3], format!("h{}", i % 3));
        if (i / 3) % 2 == 0 {
            bus.held(&id, &hold, "A", &[seat], 1).await;
        } else {
            bus.released(&id, &hold, "A", &[seat], 1).await;
        }
    }
    bus.held(&id, "g1", "FLOOR", &[], 6).await;
    bus.held(&id, "s1", "A", &["A-1-2"], 1).await;
    bus.confirmed(&id, "s1", "A", &["A-1-2"], 1).await;
    let applied = rounds as u64 + 3;
    let truth = eventually(SOON, || {
        let mut client = client.clone();
        let request = GetSeatMapRequest { event_id: id.clone(), zone_id: String::new() };
        async move {
            client.get_seat_map(request).await.ok().map(|r| r.into_inner()).filter(|m| m.version == applied)
        }
    })
    .await
    .expect("inventory never applied every change");
    let true_states: Vec<_> = truth.zones.iter().map(helpers::decode).collect();
    let count = |code: SeatCode| true_states[0].iter().filter(|&&s| s == code.bits()).count();
    assert_eq!((count(SeatCode::Held), count(SeatCode::Sold)), (2, 1));
    assert_eq!(truth.zones[1].held, 6);

    // Reading again: at most the few updates already in flight, then a snapshot equal to the
    // map's true state, not a backlog.
    let mut stale = 0;
    let snapshot = loop {
        let update = tokio::time::timeout(SOON, stream.message()).await.unwrap().unwrap().unwrap();
        match update.update {
            Some(Update::Snapshot(snapshot)) => break snapshot,
            Some(Update::Delta(_)) => stale += 1,
            None => panic!("an empty update"),
        }
        assert!(stale <= 4, "{stale} deltas and no fresh snapshot after {rounds} changes");
    };
    assert_eq!(snapshot.version, applied);
    assert_eq!(snapshot, truth);

    // Then live deltas again.
    bus.held(&id, "h9", "A", &["A-3-1"], 1).await;
    let update = tokio::time::timeout(SOON, stream.message()).await.unwrap().unwrap().unwrap();
    let Some(Update::Delta(delta)) = update.update else { panic!("expected a delta, got {update:?}") };
    assert_eq!(delta.version, applied + 1);
    let changes: Vec<_> = delta.changes.iter().map(|c| (c.seat_id.as_str(), c.state)).collect();
    assert_eq!(changes, vec![("A-3-1", SeatState::Held as i32)]);
    app.stop().await;
}

/// Catalogue writes are operator actions: without a token they are UNAUTHENTICATED, with a
/// user's token PERMISSION_DENIED, and neither leaves a venue or event behind; reads need no
/// token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_an_operator_writes_the_catalogue() {
    use service_runtime::auth::TokenIssuer;

    let env = TestEnv::new().await.unwrap();
    let app = spawn_app(&env).await;
    let mut admin = app.client.clone();
    let venue = create_venue(&mut admin).await;
    let channel =
        ticketing_proto::connect(&format!("http://127.0.0.1:{}", app.port), Duration::from_secs(10)).unwrap();
    let mut anonymous = InventoryServiceClient::new(channel);
    let user_token = TokenIssuer::for_tests().token("alice", false, Duration::from_secs(600));
    let mut user = helpers::client_with(app.port, &user_token);
    let venue_request = CreateVenueRequest { name: "V".into(), zones: vec![seated("A", &["1"], 5)] };
    let event = event_request(&venue.venue_id, "Show", T0);

    let reason = |status: &tonic::Status| service_runtime::status::reason(status).map(|(r, _)| r);
    let refused = anonymous.create_venue(venue_request.clone()).await.unwrap_err();
    assert_eq!((refused.code(), reason(&refused).as_deref()), (Code::Unauthenticated, Some("TOKEN_MISSING")));
    let refused = anonymous.create_event(event.clone()).await.unwrap_err();
    assert_eq!((refused.code(), reason(&refused).as_deref()), (Code::Unauthenticated, Some("TOKEN_MISSING")));
    let refused = user.create_venue(venue_request).await.unwrap_err();
    assert_eq!(
        (refused.code(), reason(&refused).as_deref()),
        (Code::PermissionDenied, Some("ADMIN_SCOPE_REQUIRED"))
    );
    let refused = user.create_event(event.clone()).await.unwrap_err();
    assert_eq!(
        (refused.code(), reason(&refused).as_deref()),
        (Code::PermissionDenied, Some("ADMIN_SCOPE_REQUIRED"))
    );
    // A bad token is refused before any handler, even on a read that needs none.
    let issuer = TokenIssuer::for_tests();
    let mut expired_claims = issuer.claims("operator", true, Duration::from_secs(60));
    expired_claims["exp"] = serde_json::json!(expired_claims["iat"].as_u64().unwrap() - 3600);
    let stranger = TokenIssuer::generate("test");
    let bad_tokens = [
        (issuer.sign(&expired_claims), "TOKEN_EXPIRED"),
        (stranger.token("operator", true, Duration::from_secs(60)), "TOKEN_BAD_SIGNATURE"),
        (
            TokenIssuer::generate("nobody").token("operator", true, Duration::from_secs(60)),
            "TOKEN_UNKNOWN_KEY",
        ),
        (
            issuer.sign(&{
                let mut c = issuer.claims("operator", true, Duration::from_secs(60));
                c["aud"] = serde_json::json!("someone-else");
                c
            }),
            "TOKEN_WRONG_AUDIENCE",
        ),
    ];
    for (token, expected) in bad_tokens {
        let mut bad = helpers::client_with(app.port, &token);
        let refused = bad.create_event(event.clone()).await.unwrap_err();
        assert_eq!((refused.code(), reason(&refused).as_deref()), (Code::Unauthenticated, Some(expected)));
        let refused = bad.list_events(ListEventsRequest::default()).await.unwrap_err();
        assert_eq!((refused.code(), reason(&refused).as_deref()), (Code::Unauthenticated, Some(expected)));
    }
    let listed = anonymous.list_events(ListEventsRequest::default()).await.unwrap().into_inner();
    assert!(listed.events.is_empty(), "no refused write left an event: {:?}", listed.events);

    let created = admin.create_event(event).await.unwrap().into_inner().event.unwrap();
    let read = anonymous
        .get_event(GetEventRequest { event_id: created.event_id.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(read.event.map(|e| e.event_id), Some(created.event_id));
}
