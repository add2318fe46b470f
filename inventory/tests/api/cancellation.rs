//! Cancellations: the per-event cutoff, and a cancelled sale's seats shown free again.

use std::time::Duration;

use test_support::testenv::{TestEnv, eventually};
use ticketing_proto::v1::{
    CreateEventRequest, GetAvailabilityRequest, GetAvailabilityResponse, GetEventRequest, GetSeatMapRequest,
    ListEventsRequest,
};
use tonic::Code;

use crate::helpers::{Client, Publisher, create_event, create_venue, event_request, seat_states, spawn_app};

const SOON: Duration = Duration::from_secs(10);
const T0: i64 = 1_900_000_000_000;

/// The availability once the map has applied at least `min` seat events.
async fn availability_after(client: &Client, event_id: &str, min: u64) -> GetAvailabilityResponse {
    eventually(SOON, || {
        let mut client = client.clone();
        let event_id = event_id.to_owned();
        async move {
            let a = client.get_availability(GetAvailabilityRequest { event_id }).await.ok()?;
            Some(a.into_inner()).filter(|a| a.version >= min)
        }
    })
    .await
    .unwrap_or_else(|| panic!("the map never reached version {min}"))
}

fn counts(availability: &GetAvailabilityResponse) -> Vec<(u32, u32, u32)> {
    availability.zones.iter().map(|z| (z.free, z.held, z.sold)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_sale_turns_its_seats_free_in_the_map_and_availability() {
    let env = TestEnv::new().await.unwrap();
    let app = spawn_app(&env).await;
    let mut client = app.client.clone();
    let venue = create_venue(&mut client).await;
    let event = create_event(&mut client, &venue.venue_id, T0).await;
    let id = event.event_id.clone();
    let bus = Publisher::new(&env).await;
    // Seat A-1-1 is index 0, A-1-2 index 1.
    let seats = ["A-1-1", "A-1-2"];

    bus.held(&id, "h1", "A", &seats, 2).await;
    bus.confirmed(&id, "h1", "A", &seats, 2).await;
    bus.held(&id, "g1", "FLOOR", &[], 4).await;
    bus.confirmed(&id, "g1", "FLOOR", &[], 4).await;
    // A plain release of a sold hold changes nothing; another hold's cancellation neither.
    bus.released(&id, "h1", "A", &seats, 2).await;
    bus.cancelled(&id, "h2", "A", &seats, 2).await;
    let availability = availability_after(&client, &id, 6).await;
    assert_eq!(counts(&availability), vec![(28, 0, 2), (96, 0, 4)]);
    assert_eq!(&seat_states(&mut client, &id, "A").await[..2], &[2, 2]);

    bus.cancelled(&id, "h1", "A", &seats, 2).await;
    bus.cancelled(&id, "g1", "FLOOR", &[], 4).await;
    let availability = availability_after(&client, &id, 8).await;
    assert_eq!(counts(&availability), vec![(30, 0, 0), (100, 0, 0)]);
    assert_eq!(&seat_states(&mut client, &id, "A").await[..2], &[0, 0]);

    // Resold: h3's sale reaches the stream before its hold; a repeated return of h1 is stale.
    bus.confirmed(&id, "h3", "A", &seats[..1], 1).await;
    bus.held(&id, "h3", "A", &seats[..1], 1).await;
    bus.cancelled(&id, "h1", "A", &seats, 2).await;
    let availability = availability_after(&client, &id, 11).await;
    assert_eq!(counts(&availability)[0], (29, 0, 1));
    let before = client
        .get_seat_map(GetSeatMapRequest { event_id: id.clone(), zone_id: String::new() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(&crate::helpers::decode(&before.zones[0])[..2], &[2, 0]);
    app.stop().await;

    // A restarted replica replays the stream to the same map.
    let restarted = spawn_app(&env).await;
    let mut client = restarted.client.clone();
    let after = client
        .get_seat_map(GetSeatMapRequest { event_id: id.clone(), zone_id: String::new() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(after, before);
    restarted.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cancellation_cutoff_is_stored_defaulted_and_validated() {
    let env = TestEnv::new().await.unwrap();
    let app = spawn_app(&env).await;
    let mut client = app.client.clone();
    let venue = create_venue(&mut client).await;

    let defaulted = create_event(&mut client, &venue.venue_id, T0).await;
    assert_eq!(defaulted.cancellation_cutoff_seconds, 86_400);
    let create = |cutoff: u32, opens: i64| CreateEventRequest {
        cancellation_cutoff_seconds: cutoff,
        ..event_request(&venue.venue_id, "Show", opens)
    };
    let hour = client.create_event(create(3_600, T0 + 1)).await.unwrap().into_inner().event.unwrap();
    assert_eq!(hour.cancellation_cutoff_seconds, 3_600);
    let year = client.create_event(create(365 * 86_400, T0 + 2)).await.unwrap().into_inner().event.unwrap();
    assert_eq!(year.cancellation_cutoff_seconds, 365 * 86_400);
    let status = client.create_event(create(365 * 86_400 + 1, T0 + 3)).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().starts_with("cancellation_cutoff_seconds: must be 1-31536000"),
        "{}",
        status.message()
    );
    app.stop().await;

    // Stored in Postgres: a fresh replica reads it back, by id and in the list.
    let restarted = spawn_app(&env).await;
    let mut client = restarted.client.clone();
    let got = client.get_event(GetEventRequest { event_id: hour.event_id.clone() }).await.unwrap();
    assert_eq!(got.into_inner().event.unwrap().cancellation_cutoff_seconds, 3_600);
    let listed = client.list_events(ListEventsRequest::default()).await.unwrap().into_inner().events;
    let cutoffs: Vec<u32> = listed.iter().map(|e| e.cancellation_cutoff_seconds).collect();
    assert_eq!(cutoffs, vec![86_400, 3_600, 365 * 86_400]);
    restarted.stop().await;
}
