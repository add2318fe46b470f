//! Seat map snapshots: a replica restarted after the stream was trimmed below a sale still
//! shows every seat that sale sold, and a new replica starts from another's snapshots.

use std::time::Duration;

use inventory::Config;
use sea_orm::{ConnectionTrait, DbBackend, Statement};
use test_support::testenv::{TestEnv, eventually};
use ticketing_proto::v1::{Event, GetAvailabilityRequest};

use crate::helpers::{Client, Publisher, create_event, create_venue, seat_states, spawn_app, spawn_app_with};

const SOON: Duration = Duration::from_secs(10);
const T0: i64 = 1_900_000_000_000;

/// Zone A (rows 1-3 of 10 seats) after [`sell`]: 1-1, 1-2 and 3-10 sold, 1-3 held, the rest
/// free (2-5 was released, 2-1 sold then cancelled).
fn expected_a() -> Vec<u8> {
    let mut states = vec![0u8; 30];
    states[0] = 2;
    states[1] = 2;
    states[2] = 1;
    states[29] = 2;
    states
}

/// A sale's events as seat-lock and payment publish them: holds, a release, confirmations, a
/// cancelled sale; seated zone A and standing zone FLOOR. 15 seat events.
async fn sell(publisher: &Publisher, event: &Event) {
    let e = event.event_id.as_str();
    publisher.held(e, "h1", "A", &["A-1-1", "A-1-2"], 2).await;
    publisher.held(e, "h2", "A", &["A-2-5"], 1).await;
    publisher.confirmed(e, "h1", "A", &["A-1-1", "A-1-2"], 2).await;
    publisher.released(e, "h2", "A", &["A-2-5"], 1).await;
    publisher.held(e, "h3", "A", &["A-3-10"], 1).await;
    publisher.confirmed(e, "h3", "A", &["A-3-10"], 1).await;
    publisher.held(e, "h4", "A", &["A-1-3"], 1).await;
    publisher.held(e, "h5", "A", &["A-2-1"], 1).await;
    publisher.confirmed(e, "h5", "A", &["A-2-1"], 1).await;
    publisher.cancelled(e, "h5", "A", &["A-2-1"], 1).await;
    publisher.held(e, "g1", "FLOOR", &[], 5).await;
    publisher.confirmed(e, "g1", "FLOOR", &[], 5).await;
    publisher.held(e, "g2", "FLOOR", &[], 3).await;
    publisher.held(e, "g3", "FLOOR", &[], 2).await;
    publisher.released(e, "g3", "FLOOR", &[], 2).await;
}

/// (zone, free, held, sold) of every zone.
async fn counts(client: &Client, event_id: &str) -> Vec<(String, u32, u32, u32)> {
    let availability = client
        .clone()
        .get_availability(GetAvailabilityRequest { event_id: event_id.into() })
        .await
        .unwrap()
        .into_inner();
    availability.zones.into_iter().map(|z| (z.zone_id, z.free, z.held, z.sold)).collect()
}

fn expected_counts() -> Vec<(String, u32, u32, u32)> {
    vec![("A".into(), 26, 1, 3), ("FLOOR".into(), 92, 3, 5)]
}

/// Waits until zone A shows `expected`.
async fn wait_for_a(client: &Client, event_id: &str, expected: &[u8]) -> bool {
    eventually(SOON, || {
        let mut client = client.clone();
        async move { (seat_states(&mut client, event_id, "A").await == expected).then_some(()) }
    })
    .await
    .is_some()
}

/// Removes every message stored so far (sequences go on from where they were), as the
/// stream's retention does to a sale older than its max age.
async fn trim_everything(publisher: &Publisher) -> u64 {
    let stream = publisher.bus().stream().await.unwrap();
    let last = stream.get_info().await.unwrap().state.last_sequence;
    stream.purge().sequence(last + 1).await.unwrap();
    let info = stream.get_info().await.unwrap();
    assert_eq!((info.state.messages, info.state.first_sequence), (0, last + 1), "the stream was not trimmed");
    last
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_after_the_stream_was_trimmed_below_the_sale_keeps_every_sale() {
    let env = TestEnv::new().await.unwrap();
    let app = spawn_app(&env).await;
    let mut client = app.client.clone();
    let venue = create_venue(&mut client).await;
    let event = create_event(&mut client, &venue.venue_id, T0).await;
    let publisher = Publisher::new(&env).await;
    sell(&publisher, &event).await;
    assert!(wait_for_a(&client, &event.event_id, &expected_a()).await, "the sale never showed");
    assert_eq!(counts(&client, &event.event_id).await, expected_counts());
    app.stop().await;

    trim_everything(&publisher).await;
    let app = spawn_app(&env).await;
    let mut client = app.client.clone();
    assert_eq!(
        seat_states(&mut client, &event.event_id, "A").await,
        expected_a(),
        "zone A after a restart on the trimmed stream"
    );
    assert_eq!(counts(&client, &event.event_id).await, expected_counts());

    // The map goes on from there: the held seat is sold, a standing hold released.
    let e = event.event_id.as_str();
    publisher.confirmed(e, "h4", "A", &["A-1-3"], 1).await;
    publisher.released(e, "g2", "FLOOR", &[], 3).await;
    let mut after = expected_a();
    after[2] = 2;
    assert!(wait_for_a(&client, e, &after).await, "a sale after the restart never showed");
    assert!(
        eventually(SOON, || async {
            let counts = counts(&client, e).await;
            (counts == vec![("A".to_owned(), 26, 0, 4), ("FLOOR".to_owned(), 95, 0, 5)]).then_some(())
        })
        .await
        .is_some(),
        "{:?}",
        counts(&client, e).await
    );
    app.stop().await;
}

/// The covered sequence and map version of `event_id`'s stored snapshot.
async fn stored_snapshot(env: &TestEnv, event_id: &str) -> Option<(i64, i64)> {
    let db = env.database().await.ok()?;
    let row = db
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT stream_sequence, map_version FROM inventory.seat_map_snapshots WHERE event_id = $1::uuid",
            [event_id.into()],
        ))
        .await
        .ok()??;
    Some((row.try_get("", "stream_sequence").ok()?, row.try_get("", "map_version").ok()?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_replica_snapshots_as_it_goes_and_a_new_replica_starts_from_that() {
    let env = TestEnv::new().await.unwrap();
    let mut config = Config::for_tests(&env.database_url, &env.nats_url, &env.nats_prefix);
    config.snapshot_every_messages = 4;
    config.snapshot_interval_ms = 200;
    let first = spawn_app_with(config.clone()).await;
    let mut client = first.client.clone();
    let venue = create_venue(&mut client).await;
    let event = create_event(&mut client, &venue.venue_id, T0).await;
    let publisher = Publisher::new(&env).await;
    sell(&publisher, &event).await;
    assert!(wait_for_a(&client, &event.event_id, &expected_a()).await, "the sale never showed");

    // Written while running (no shutdown yet): the snapshot reaches the stream's head and
    // holds all 15 seat events.
    let head = publisher.bus().stream().await.unwrap().get_info().await.unwrap().state.last_sequence as i64;
    let stored = eventually(SOON, || async {
        stored_snapshot(&env, &event.event_id).await.filter(|&(sequence, _)| sequence >= head)
    })
    .await;
    assert_eq!(stored, Some((head, 15)), "no snapshot of the head while running");

    // A second replica, on a stream that no longer has the sale, starts from it.
    trim_everything(&publisher).await;
    let second = spawn_app_with(config).await;
    let mut second_client = second.client.clone();
    assert_eq!(seat_states(&mut second_client, &event.event_id, "A").await, expected_a());
    assert_eq!(counts(&second_client, &event.event_id).await, expected_counts());

    // Both replicas apply what follows and both write; the stored snapshot only moves forward.
    publisher.confirmed(&event.event_id, "h4", "A", &["A-1-3"], 1).await;
    let mut after = expected_a();
    after[2] = 2;
    assert!(wait_for_a(&client, &event.event_id, &after).await);
    assert!(wait_for_a(&second_client, &event.event_id, &after).await);
    let stored = eventually(SOON, || async {
        stored_snapshot(&env, &event.event_id).await.filter(|&(sequence, _)| sequence > head)
    })
    .await;
    assert_eq!(stored, Some((head + 1, 16)));
    second.stop().await;
    first.stop().await;
    assert_eq!(stored_snapshot(&env, &event.event_id).await, Some((head + 1, 16)));
}

/// NATS lost the stream and `stream-setup` made a new one, whose sequences start again at 1.
/// Inventory keeps the sales its snapshots hold and applies the new stream's messages, which
/// a plain sequence comparison would take as already covered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recreated_stream_keeps_the_snapshots_sales_and_applies_its_own_messages() {
    let env = TestEnv::new().await.unwrap();
    let app = spawn_app(&env).await;
    let mut client = app.client.clone();
    let venue = create_venue(&mut client).await;
    let event = create_event(&mut client, &venue.venue_id, T0).await;
    let publisher = Publisher::new(&env).await;
    sell(&publisher, &event).await;
    assert!(wait_for_a(&client, &event.event_id, &expected_a()).await, "the sale never showed");
    app.stop().await;

    let nats = async_nats::connect(&env.nats_url).await.unwrap();
    async_nats::jetstream::new(nats).delete_stream(format!("{}_events", env.nats_prefix)).await.unwrap();
    test_support::testenv::create_stream(&env.nats_url, &env.nats_prefix).await.unwrap();
    let app = spawn_app(&env).await;
    let mut client = app.client.clone();
    assert_eq!(seat_states(&mut client, &event.event_id, "A").await, expected_a());
    assert_eq!(counts(&client, &event.event_id).await, expected_counts());

    publisher.confirmed(&event.event_id, "h4", "A", &["A-1-3"], 1).await;
    let mut after = expected_a();
    after[2] = 2;
    assert!(wait_for_a(&client, &event.event_id, &after).await, "the new stream's first message was skipped");
    app.stop().await;

    // The snapshot was rewritten for the new stream: the next start covers its message.
    let app = spawn_app(&env).await;
    let mut client = app.client.clone();
    assert_eq!(seat_states(&mut client, &event.event_id, "A").await, after);
    app.stop().await;
}
