//! Integration tests of the admission service on the real Redis and NATS, with a fake
//! inventory.

// Test code and its helpers: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "api/helpers.rs"]
mod helpers;

use std::{collections::HashMap, time::Duration};

use fred::interfaces::{HashesInterface, KeysInterface, SortedSetsInterface};
use futures::{StreamExt, future::join_all};
use helpers::*;
use service_runtime::{
    bus::{EventBus, envelope, timestamp_to_ms},
    status::reason,
};
use ticketing_proto::{
    events::{BookingConfirmed, event_envelope::Body},
    pass::PassKeyRing,
    v1::{GetQueueStatusRequest, JoinRequest, LeaveRequest, QueueState, QueueStatus, WatchQueueRequest},
};
use tonic::Code;
use tools::testenv::{TestEnv, eventually};

fn join(event_id: &str, user_id: &str) -> JoinRequest {
    JoinRequest { event_id: event_id.into(), user_id: user_id.into() }
}

fn status_request(event_id: &str, user_id: &str) -> GetQueueStatusRequest {
    GetQueueStatusRequest { event_id: event_id.into(), user_id: user_id.into() }
}

fn leave(event_id: &str, user_id: &str) -> LeaveRequest {
    LeaveRequest { event_id: event_id.into(), user_id: user_id.into() }
}

/// Polls the user's status until it is ADMITTED.
async fn wait_admitted(client: &AdmissionClient, event_id: &str, user: &str) -> Option<QueueStatus> {
    eventually(Duration::from_secs(10), || {
        let mut client = client.clone();
        async move {
            let status = client.get_queue_status(status_request(event_id, user)).await.ok()?.into_inner();
            (status.state == QueueState::Admitted as i32).then_some(status)
        }
    })
    .await
}

type AdmissionClient =
    ticketing_proto::v1::admission_service_client::AdmissionServiceClient<tonic::transport::Channel>;

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admission_order_equals_join_order_across_two_replicas() {
    const USERS: usize = 2_000;
    let env = TestEnv::new().await.unwrap();
    let inventory = FakeInventory::default();
    let event_id = inventory.add_event(-1_000, 5_000, 50, 600);
    let url = inventory.start().await;
    let replicas = [spawn_app(&env, &url).await, spawn_app(&env, &url).await];

    let joins = (0..USERS).map(|i| {
        let mut client = replicas[i % 2].clone();
        let event_id = event_id.clone();
        async move {
            let user = format!("user-{i}");
            let status = client.join(join(&event_id, &user)).await.unwrap().into_inner();
            (user, status)
        }
    });
    let joined: Vec<(String, QueueStatus)> = join_all(joins).await;
    let ticket_of: HashMap<String, u64> = joined.iter().map(|(user, s)| (user.clone(), s.ticket)).collect();
    let mut tickets: Vec<u64> = ticket_of.values().copied().collect();
    tickets.sort_unstable();
    assert_eq!(tickets, (1..=USERS as u64).collect::<Vec<_>>(), "tickets are unique and contiguous");

    let redis = redis(&env).await;
    let admitted_key = key(&env, &event_id, "admitted");
    let admitted: HashMap<String, String> = eventually(Duration::from_secs(30), || async {
        let admitted: HashMap<String, String> = redis.hgetall(&admitted_key).await.unwrap();
        (admitted.len() == USERS).then_some(admitted)
    })
    .await
    .expect("everyone is admitted");

    // Pass ids are handed out in admission order; tickets must follow it.
    let mut by_pass: Vec<(u64, u64)> = admitted
        .values()
        .map(|value| {
            let mut parts = value.split(':');
            let pass_id: u64 = parts.next().unwrap().parse().unwrap();
            let ticket: u64 = parts.nth(1).unwrap().parse().unwrap();
            (pass_id, ticket)
        })
        .collect();
    by_pass.sort_unstable();
    let inversions = by_pass.windows(2).filter(|pair| pair[0].1 > pair[1].1).count();
    assert_eq!(inversions, 0, "admission order equals ticket order");
    for (user, value) in &admitted {
        let ticket: u64 = value.rsplit(':').next().unwrap().parse().unwrap();
        assert_eq!(ticket, ticket_of[user], "the stored ticket is the one Join answered");
    }

    // Every admission was announced once on NATS, with the stored pass.
    let events = admitted_events(&env, USERS, Duration::from_secs(30)).await;
    assert_eq!(events.len(), USERS);
    let announced: HashMap<String, (String, u64)> =
        events.into_iter().map(|e| (e.user_id, (e.pass_id, e.ticket))).collect();
    assert_eq!(announced.len(), USERS, "one Admitted per user");
    for (user, (pass_id, ticket)) in &announced {
        assert_eq!(*ticket, ticket_of[user]);
        assert!(admitted[user].starts_with(&format!("{pass_id}:")));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejoining_keeps_the_place_and_leaving_gives_it_up() {
    let env = TestEnv::new().await.unwrap();
    let inventory = FakeInventory::default();
    let event_id = inventory.add_event(3_600_000, 10, 50, 600);
    let mut client = spawn_app(&env, &inventory.start().await).await;

    let mut first = Vec::new();
    for user in ["ann", "bob", "cat"] {
        first.push(client.join(join(&event_id, user)).await.unwrap().into_inner());
    }
    for (i, status) in first.iter().enumerate() {
        assert_eq!(status.state, QueueState::PreQueue as i32, "the sale has not opened");
        assert_eq!(status.position, i as u64 + 1);
        assert_eq!(status.ticket, i as u64 + 1);
        assert_eq!(status.queue_length, i as u64 + 1);
        assert!(status.estimated_wait_seconds > 0);
    }

    let again = client.join(join(&event_id, "bob")).await.unwrap().into_inner();
    assert_eq!((again.ticket, again.position), (first[1].ticket, first[1].position), "same place");
    assert_eq!(again.queue_length, 3, "rejoining adds nobody");

    assert!(client.leave(leave(&event_id, "ann")).await.unwrap().into_inner().left);
    let bob = client.get_queue_status(status_request(&event_id, "bob")).await.unwrap().into_inner();
    let cat = client.get_queue_status(status_request(&event_id, "cat")).await.unwrap().into_inner();
    assert_eq!((bob.position, cat.position), (1, 2), "everyone behind moved up");
    assert_eq!(bob.queue_length, 2);

    let gone = client.get_queue_status(status_request(&event_id, "ann")).await.unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);
    assert_eq!(reason(&gone).unwrap().0, "NOT_IN_QUEUE");
    assert!(!client.leave(leave(&event_id, "ann")).await.unwrap().into_inner().left, "nothing left to leave");
    let never = client.get_queue_status(status_request(&event_id, "dan")).await.unwrap_err();
    assert_eq!(never.code(), Code::NotFound);

    // Joining after leaving goes to the back of the line.
    let back = client.join(join(&event_id, "ann")).await.unwrap().into_inner();
    assert_eq!((back.ticket, back.position), (4, 3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_passes_never_exceed_capacity_and_expired_ones_are_reused() {
    const USERS: usize = 30;
    const CAPACITY: usize = 5;
    let env = TestEnv::new().await.unwrap();
    let inventory = FakeInventory::default();
    let event_id = inventory.add_event(-1_000, CAPACITY as u32, 50, 1);
    let url = inventory.start().await;
    let replicas = [spawn_app(&env, &url).await, spawn_app(&env, &url).await];
    let joins = (0..USERS).map(|i| {
        let mut client = replicas[i % 2].clone();
        let event_id = event_id.clone();
        async move { client.join(join(&event_id, &format!("user-{i}"))).await.unwrap() }
    });
    join_all(joins).await;

    let redis = redis(&env).await;
    let passes_key = key(&env, &event_id, "passes");
    let mut samples = 0;
    let mut busiest = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let active: usize = redis.zcard(&passes_key).await.unwrap();
        assert!(active <= CAPACITY, "{active} passes stored at once");
        busiest = busiest.max(active);
        samples += 1;
        let total: Option<u64> = redis.get(key(&env, &event_id, "admitted_total")).await.unwrap();
        if total == Some(USERS as u64) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "everyone gets a turn as passes expire");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(samples > 10 && busiest == CAPACITY, "sampled {samples} times, busiest {busiest}");

    // Each pass is valid over [expiry - ttl, expiry): at no instant are more than CAPACITY valid.
    let events = admitted_events(&env, USERS, Duration::from_secs(10)).await;
    let users: std::collections::HashSet<_> = events.iter().map(|e| e.user_id.clone()).collect();
    assert_eq!(users.len(), USERS);
    let mut edges: Vec<(i64, i32)> = Vec::new();
    for event in &events {
        let expires = timestamp_to_ms(event.pass_expires_at.as_ref().unwrap());
        edges.push((expires - 1_000, 1));
        edges.push((expires, -1));
    }
    edges.sort_unstable(); // at equal instants the expiry (-1) comes first
    let mut valid = 0;
    for (_, change) in edges {
        valid += change;
        assert!(valid <= CAPACITY as i32, "{valid} valid passes at once");
    }

    // Statuses agree: every user was admitted in turn and the last ones still hold or held a pass.
    let mut client = replicas[0].clone();
    let statuses = join_all((0..USERS).map(|i| {
        let mut client = client.clone();
        let event_id = event_id.clone();
        async move { client.get_queue_status(status_request(&event_id, &format!("user-{i}"))).await }
    }))
    .await;
    let holding = statuses.iter().filter(|s| s.is_ok()).count();
    assert!(holding <= CAPACITY);
    let leave_answer = client.leave(leave(&event_id, "user-0")).await.unwrap().into_inner();
    assert!(!leave_answer.left, "an expired pass is nothing to give back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purchase_or_leaving_frees_the_slot_for_the_next_in_line() {
    let env = TestEnv::new().await.unwrap();
    let inventory = FakeInventory::default();
    let event_id = inventory.add_event(-1_000, 1, 50, 600);
    let mut client = spawn_app(&env, &inventory.start().await).await;
    for user in ["ann", "bob", "cat"] {
        client.join(join(&event_id, user)).await.unwrap();
    }
    let ann = wait_admitted(&client, &event_id, "ann").await.expect("ann is admitted");
    assert!(ann.pass.is_some());
    let bob = client.get_queue_status(status_request(&event_id, "bob")).await.unwrap().into_inner();
    assert_eq!((bob.state, bob.position), (QueueState::Waiting as i32, 1), "capacity 1 is taken");
    let rejoin = client.join(join(&event_id, "ann")).await.unwrap().into_inner();
    assert_eq!(rejoin.state, QueueState::Admitted as i32, "joining again shows the pass");
    assert_eq!(rejoin.pass.unwrap().pass_id, ann.pass.as_ref().unwrap().pass_id);

    // Ann buys: the confirmation frees her slot and Bob is admitted.
    let bus = EventBus::connect(&env.nats_url, &env.nats_prefix).await.unwrap();
    let confirmed = BookingConfirmed {
        event_id: event_id.clone(),
        user_id: "ann".into(),
        booking_id: uuid::Uuid::new_v4().to_string(),
        ..Default::default()
    };
    bus.publish(&envelope("booking:1", Body::BookingConfirmed(confirmed))).await.unwrap();
    wait_admitted(&client, &event_id, "bob").await.expect("bob is admitted after ann bought");
    let ann_after = client.get_queue_status(status_request(&event_id, "ann")).await.unwrap_err();
    assert_eq!(ann_after.code(), Code::NotFound);

    // Bob gives his pass back: Cat is admitted.
    assert!(client.leave(leave(&event_id, "bob")).await.unwrap().into_inner().left);
    wait_admitted(&client, &event_id, "cat").await.expect("cat is admitted after bob left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_queue_streams_positions_then_the_pass_and_closes() {
    let env = TestEnv::new().await.unwrap();
    let inventory = FakeInventory::default();
    let event_id = inventory.add_event(-1_000, 1, 50, 2);
    let mut client = spawn_app(&env, &inventory.start().await).await;
    for user in ["ann", "bob", "cat"] {
        client.join(join(&event_id, user)).await.unwrap();
    }
    let mut stream = client
        .watch_queue(WatchQueueRequest { event_id: event_id.clone(), user_id: "cat".into() })
        .await
        .unwrap()
        .into_inner();
    let mut messages = Vec::new();
    while let Some(message) = tokio::time::timeout(Duration::from_secs(20), stream.next()).await.unwrap() {
        messages.push(message.unwrap());
    }
    let (last, waiting) = messages.split_last().expect("at least one message");
    assert_eq!(last.state, QueueState::Admitted as i32, "the last message carries the pass");
    assert!(!waiting.is_empty(), "positions came before the pass");
    assert!(waiting.iter().all(|m| m.state == QueueState::Waiting as i32 && m.position >= 1));
    assert!(waiting.windows(2).all(|w| w[1].position <= w[0].position), "positions never grow");
    assert!(waiting.iter().any(|m| m.position >= 2), "cat started behind others");

    let pass = last.pass.as_ref().unwrap();
    let ring: PassKeyRing = PASS_KEYS.parse().unwrap();
    let claims = ring.verify(&pass.token).unwrap();
    claims.check(&event_id, "cat", now_ms()).unwrap();
    assert_eq!(claims.pass_id, pass.pass_id);

    let never = client
        .watch_queue(WatchQueueRequest { event_id: event_id.clone(), user_id: "dan".into() })
        .await
        .unwrap_err();
    assert_eq!(never.code(), Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joining_too_often_is_refused_with_retry_after() {
    let env = TestEnv::new().await.unwrap();
    let inventory = FakeInventory::default();
    let event_id = inventory.add_event(3_600_000, 10, 50, 600);
    let client = spawn_app(&env, &inventory.start().await).await;
    let answers = join_all((0..20).map(|_| {
        let mut client = client.clone();
        let event_id = event_id.clone();
        async move { client.join(join(&event_id, "eager")).await }
    }))
    .await;
    let accepted: Vec<_> = answers.iter().filter_map(|a| a.as_ref().ok()).collect();
    assert!(!accepted.is_empty() && accepted.len() <= 5, "{} accepted", accepted.len());
    assert!(accepted.iter().all(|a| a.get_ref().ticket == 1), "one place, however often");
    let refused: Vec<_> = answers.iter().filter_map(|a| a.as_ref().err()).collect();
    assert!(refused.len() >= 15);
    for status in refused {
        assert_eq!(status.code(), Code::ResourceExhausted);
        let retry_after: u64 =
            status.metadata().get("retry-after").unwrap().to_str().unwrap().parse().unwrap();
        assert_eq!(retry_after, 1, "the window is one second");
        assert_eq!(reason(status).unwrap().0, "RATE_LIMITED");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_and_changes_nothing() {
    let env = TestEnv::new().await.unwrap();
    let inventory = FakeInventory::default();
    let event_id = inventory.add_event(-1_000, 10, 50, 600);
    let url = inventory.start().await;
    let mut client = spawn_app(&env, &url).await;
    let unknown = uuid::Uuid::new_v4().to_string();
    let long = "u".repeat(129);
    let cases: [(&str, &str, Code, &str); 6] = [
        ("", "ann", Code::InvalidArgument, "event_id"),
        ("not-a-uuid", "ann", Code::InvalidArgument, "event_id"),
        (&event_id, "", Code::InvalidArgument, "user_id"),
        (&event_id, "bad user!", Code::InvalidArgument, "user_id"),
        (&event_id, &long, Code::InvalidArgument, "user_id"),
        (&unknown, "ann", Code::NotFound, "event"),
    ];
    for (event, user, code, names) in cases {
        let answers = [
            client.join(join(event, user)).await.map(|_| ()),
            client.get_queue_status(status_request(event, user)).await.map(|_| ()),
            client.leave(leave(event, user)).await.map(|_| ()),
            client
                .watch_queue(WatchQueueRequest { event_id: event.into(), user_id: user.into() })
                .await
                .map(|_| ()),
        ];
        for answer in answers {
            let status = answer.unwrap_err();
            assert_eq!(status.code(), code, "{event:?}/{user:?}: {status:?}");
            assert!(status.message().contains(names), "{:?} names {names}", status.message());
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(keys_under_prefix(&env).await, Vec::<String>::new(), "nothing was written");

    // Inventory down: UNAVAILABLE, and still nothing written.
    let mut orphan = spawn_app_with(config(&env, "http://127.0.0.1:1")).await;
    let down = orphan.join(join(&event_id, "ann")).await.unwrap_err();
    assert_eq!(down.code(), Code::Unavailable);
    assert_eq!(keys_under_prefix(&env).await, Vec::<String>::new());
}
