//! Integration tests of the admission service on the real Redis and NATS, with a fake
//! inventory.

// Test code and its helpers: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "api/helpers.rs"]
mod helpers;

use std::{collections::HashMap, time::Duration};

use admission::{
    app::ABANDONED_CONSUMER_NAME,
    fairness::{Admission, EventShuffleKey, ShuffleKey, audit_admissions, opening_order},
    store::EndedPasses,
};
use fred::interfaces::{HashesInterface, KeysInterface, SortedSetsInterface};
use futures::{StreamExt, future::join_all};
use helpers::*;
use service_runtime::{
    auth::TokenIssuer,
    bus::{EventBus, envelope, kind, timestamp_to_ms},
    status::reason,
};
use test_support::testenv::{TestEnv, eventually};
use ticketing_proto::{
    events::{BookingConfirmed, PassEndReason, ReleaseReason, SeatsReleased, event_envelope::Body},
    pass::PassVerifier,
    v1::{GetQueueStatusRequest, JoinRequest, LeaveRequest, QueueState, QueueStatus, WatchQueueRequest},
};
use tonic::{Code, Request};

/// The requests as their user sends them: with the user's token (and the user in `user_id`,
/// which must then equal the token's subject).
fn join(event_id: &str, user_id: &str) -> Request<JoinRequest> {
    as_user(user_id, JoinRequest { event_id: event_id.into(), user_id: user_id.into() })
}

fn status_request(event_id: &str, user_id: &str) -> Request<GetQueueStatusRequest> {
    as_user(user_id, GetQueueStatusRequest { event_id: event_id.into(), user_id: user_id.into() })
}

fn leave(event_id: &str, user_id: &str) -> Request<LeaveRequest> {
    as_user(user_id, LeaveRequest { event_id: event_id.into(), user_id: user_id.into() })
}

fn watch_request(event_id: &str, user_id: &str) -> Request<WatchQueueRequest> {
    as_user(user_id, WatchQueueRequest { event_id: event_id.into(), user_id: user_id.into() })
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
    const USERS: usize = 10_000;
    const CONNECTIONS: usize = 32;
    let env = TestEnv::new().await.unwrap();
    let inventory = FakeInventory::default();
    let event_id = inventory.add_event(-1_000, USERS as u32, 50, 600);
    let url = inventory.start().await;
    let mut settings = config(&env, &url);
    // All 10,000 joins are in flight at once; the default limit would shed some of them.
    settings.server.max_in_flight = 2 * USERS;
    // On a busy two-core test machine (debug build) the last of 10,000 calls queue a while.
    settings.server.request_timeout_ms = 120_000;
    let urls = [spawn_app_url(settings.clone()).await, spawn_app_url(settings).await];
    // Like a crowd of browsers: many connections, each carrying many calls at once.
    let clients: Vec<AdmissionClient> =
        (0..CONNECTIONS).map(|i| client_with_timeout(&urls[i % 2], Duration::from_secs(120))).collect();
    // Each replica has looked the event up before the crowd arrives (as it would have long
    // before a sale opens), so the stampede measures the queue, not a cold inventory call.
    for url in &urls {
        let warm = client(url).get_queue_status(status_request(&event_id, "nobody")).await.unwrap_err();
        assert_eq!(warm.code(), Code::NotFound);
    }

    let joins = (0..USERS).map(|i| {
        let mut client = clients[i % CONNECTIONS].clone();
        let event_id = event_id.clone();
        async move {
            let user = format!("user-{i}");
            let sent = std::time::Instant::now();
            let status = client.join(join(&event_id, &user)).await.unwrap().into_inner();
            (user, status, sent, std::time::Instant::now())
        }
    });
    let joined: Vec<(String, QueueStatus, std::time::Instant, std::time::Instant)> = join_all(joins).await;
    let ticket_of: HashMap<String, u64> =
        joined.iter().map(|(user, s, _, _)| (user.clone(), s.ticket)).collect();
    let mut tickets: Vec<u64> = ticket_of.values().copied().collect();
    tickets.sort_unstable();
    assert_eq!(tickets, (1..=USERS as u64).collect::<Vec<_>>(), "tickets are unique and contiguous");
    // The tickets are the real join order: a join answered before another was sent (on either
    // replica) holds the lower ticket.
    let mut timed: Vec<_> =
        joined.iter().map(|(_, s, sent, received)| (*sent, *received, s.ticket)).collect();
    assert_eq!(test_support::order::fifo_inversions(&mut timed), 0, "a later join got an earlier ticket");

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
        let ticket: u64 = value.split(':').nth(2).unwrap().parse().unwrap();
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
    // And the outbox they went through is gone once drained.
    let outbox = key(&env, &event_id, "outbox");
    let drained = eventually(Duration::from_secs(10), || {
        let (redis, outbox) = (redis.clone(), outbox.clone());
        async move { (redis.exists::<u64, _>(&outbox).await.ok()? == 0).then_some(()) }
    })
    .await;
    assert!(drained.is_some(), "a drained outbox leaves no key behind");
    // Nothing is left to publish and nobody joins any more, so the stream's count is final:
    // the first USERS read above were all there is.
    assert_eq!(stream_count(&env, kind::ADMITTED).await, USERS as u64, "no Admitted beyond one per user");
}

/// How many messages of `kind` the test's stream holds.
async fn stream_count(env: &TestEnv, kind: &str) -> u64 {
    use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
    let bus = EventBus::connect(&env.nats_url, &env.nats_prefix).await.unwrap();
    let stream = bus.stream().await.unwrap();
    let config = pull::Config {
        filter_subject: bus.subject(kind),
        deliver_policy: DeliverPolicy::All,
        ack_policy: AckPolicy::None,
        ..Default::default()
    };
    let mut counter = stream.create_consumer(config).await.unwrap();
    counter.info().await.unwrap().num_pending
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
    // The first pass to expire (not necessarily user-0's: the two replicas hand out tickets
    // in whatever order the joins reach Redis) ended rounds before the last admission.
    let first = events.iter().min_by_key(|e| timestamp_to_ms(e.pass_expires_at.as_ref().unwrap())).unwrap();
    let leave_answer = client.leave(leave(&event_id, &first.user_id)).await.unwrap().into_inner();
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
    let bob_pass = wait_admitted(&client, &event_id, "bob").await.unwrap().pass.unwrap();
    assert!(client.leave(leave(&event_id, "bob")).await.unwrap().into_inner().left);
    let cat = wait_admitted(&client, &event_id, "cat").await.expect("cat is admitted after bob left");

    // Both ends are announced, so seat-lock refuses those passes from now on.
    let ended = pass_ended_events(&env, 2, Duration::from_secs(10)).await;
    let summary: Vec<(String, String, i32)> =
        ended.iter().map(|e| (e.user_id.clone(), e.pass_id.clone(), e.reason)).collect();
    let ann_pass = ann.pass.unwrap();
    assert_eq!(
        summary,
        [
            ("ann".to_owned(), ann_pass.pass_id.clone(), PassEndReason::Bought as i32),
            ("bob".to_owned(), bob_pass.pass_id.clone(), PassEndReason::Left as i32),
        ]
    );
    for (event, pass) in ended.iter().zip([&ann_pass, &bob_pass]) {
        assert_eq!(event.event_id, event_id);
        let until = timestamp_to_ms(event.expires_at.as_ref().unwrap());
        assert!(
            until >= timestamp_to_ms(pass.expires_at.as_ref().unwrap()),
            "covers every token of the pass"
        );
    }

    // Cat's pass is answered to Cat only: another user naming her is refused, and asking as
    // oneself answers one's own standing.
    let asked_for_cat = GetQueueStatusRequest { event_id: event_id.clone(), user_id: "cat".into() };
    let refused = client.get_queue_status(as_user("mallory", asked_for_cat)).await.unwrap_err();
    assert_eq!(
        (refused.code(), reason(&refused).unwrap().0.as_str()),
        (Code::PermissionDenied, "USER_MISMATCH")
    );
    let own = GetQueueStatusRequest { event_id: event_id.clone(), user_id: String::new() };
    let mallory = client.get_queue_status(as_user("mallory", own.clone())).await.unwrap_err();
    assert_eq!(mallory.code(), Code::NotFound, "mallory is not in the room");
    let answered = client.get_queue_status(as_user("cat", own)).await.unwrap().into_inner();
    assert_eq!(
        (answered.user_id.as_str(), answered.pass.map(|p| p.pass_id)),
        ("cat", cat.pass.map(|p| p.pass_id))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_that_expired_ends_its_holders_pass_and_a_released_one_does_not() {
    let env = TestEnv::new().await.unwrap();
    let inventory = FakeInventory::default();
    let event_id = inventory.add_event(-1_000, 1, 50, 600);
    let client = spawn_app(&env, &inventory.start().await).await;
    for user in ["ann", "bob"] {
        client.clone().join(join(&event_id, user)).await.unwrap();
    }
    let ann = wait_admitted(&client, &event_id, "ann").await.expect("ann is admitted").pass.unwrap();
    let bus = EventBus::connect(&env.nats_url, &env.nats_prefix).await.unwrap();
    let released = |n: u32, reason: ReleaseReason| SeatsReleased {
        event_id: event_id.clone(),
        user_id: "ann".into(),
        hold_id: format!("00000000-0000-4000-8000-00000000000{n}"),
        reason: reason as i32,
        ..Default::default()
    };

    // Ann gives seats back herself: she is still choosing, so she keeps her pass. Once the
    // consumer has acknowledged that event, she still holds it and Bob still waits.
    bus.publish(&envelope("released:1", Body::SeatsReleased(released(1, ReleaseReason::Released))))
        .await
        .unwrap();
    let stream = bus.stream().await.unwrap();
    let handled = eventually(Duration::from_secs(10), || {
        let stream = stream.clone();
        async move {
            let info = stream.consumer_info(ABANDONED_CONSUMER_NAME).await.ok()?;
            (info.ack_floor.stream_sequence > 0 && info.num_pending == 0 && info.num_ack_pending == 0)
                .then_some(())
        }
    })
    .await;
    assert!(handled.is_some(), "the consumer acknowledged the released hold");
    let still = client.clone().get_queue_status(status_request(&event_id, "ann")).await.unwrap().into_inner();
    assert_eq!(still.state, QueueState::Admitted as i32, "a released hold ends no pass");
    let bob = client.clone().get_queue_status(status_request(&event_id, "bob")).await.unwrap().into_inner();
    assert_eq!(bob.state, QueueState::Waiting as i32);
    // Then she walks away from a hold, which expires: her pass ends and Bob is admitted.
    bus.publish(&envelope("released:2", Body::SeatsReleased(released(2, ReleaseReason::Expired))))
        .await
        .unwrap();
    wait_admitted(&client, &event_id, "bob").await.expect("bob is admitted once ann's hold expired");

    // One end, ann's, as ABANDONED.
    let ended = pass_ended_events(&env, 1, Duration::from_secs(10)).await;
    let summary: Vec<(&str, &str, i32)> =
        ended.iter().map(|e| (e.user_id.as_str(), e.pass_id.as_str(), e.reason)).collect();
    assert_eq!(summary, [("ann", ann.pass_id.as_str(), PassEndReason::Abandoned as i32)]);
    let ann_after = client.clone().get_queue_status(status_request(&event_id, "ann")).await.unwrap_err();
    assert_eq!(ann_after.code(), Code::NotFound, "ann's pass is gone");
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
    let mut stream = client.watch_queue(watch_request(&event_id, "cat")).await.unwrap().into_inner();
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
    let verifier: PassVerifier = PASS_KEYS.1.parse().unwrap();
    let claims = verifier.verify(&pass.token).unwrap();
    claims.check(&event_id, "cat", now_ms()).unwrap();
    assert_eq!(claims.pass_id, pass.pass_id);

    let never = client.watch_queue(watch_request(&event_id, "dan")).await.unwrap_err();
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
async fn watchers_beyond_the_replicas_bound_are_refused_until_a_stream_closes() {
    let env = TestEnv::new().await.unwrap();
    let inventory = FakeInventory::default();
    let event_id = inventory.add_event(3_600_000, 10, 50, 600);
    let mut config = config(&env, &inventory.start().await);
    config.max_watchers = 2;
    let mut client = spawn_app_with(config).await;
    for user in ["ann", "bob", "cat"] {
        client.join(join(&event_id, user)).await.unwrap();
    }
    let watch = |user: &str| watch_request(&event_id, user);
    let ann = client.watch_queue(watch("ann")).await.unwrap().into_inner();
    let _bob = client.watch_queue(watch("bob")).await.unwrap().into_inner();
    let refused = client.watch_queue(watch("cat")).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert_eq!(reason(&refused).unwrap().0, "TOO_MANY_WATCHERS");
    assert_eq!(
        client.get_queue_status(status_request(&event_id, "cat")).await.unwrap().into_inner().position,
        3,
        "a refused watcher can still poll"
    );

    drop(ann);
    let reopened = eventually(Duration::from_secs(10), || {
        let mut client = client.clone();
        let request = watch("cat");
        async move { client.watch_queue(request).await.ok() }
    })
    .await;
    assert!(reopened.is_some(), "a closed stream gives its place back");
}

/// `message` with `authorization: Bearer <token>`, or with no token.
fn with_token<T>(token: Option<&str>, message: T) -> Request<T> {
    let mut request = Request::new(message);
    if let Some(token) = token {
        request.metadata_mut().insert("authorization", service_runtime::auth::bearer(token));
    }
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_and_bad_identities_are_refused_and_change_nothing() {
    let env = TestEnv::new().await.unwrap();
    let inventory = FakeInventory::default();
    let event_id = inventory.add_event(-1_000, 10, 50, 600);
    let url = inventory.start().await;
    let mut client = spawn_app(&env, &url).await;
    let unknown = uuid::Uuid::new_v4().to_string();
    let issuer = TokenIssuer::for_tests();
    let ann = token("ann");
    let mallory = token("mallory");
    let mut expired = issuer.claims("ann", false, Duration::from_secs(60));
    expired["exp"] = serde_json::json!(now_ms() / 1000 - 3_600);
    let expired = issuer.sign(&expired);
    let mut elsewhere = issuer.claims("ann", false, Duration::from_secs(60));
    elsewhere["aud"] = serde_json::json!("another-service");
    let elsewhere = issuer.sign(&elsewhere);
    let stranger = TokenIssuer::generate("test").token("ann", false, Duration::from_secs(60));
    let long = "u".repeat(129);
    // (event, token, user_id field, code, what the message or the ErrorInfo reason names)
    let cases: [(&str, Option<&str>, &str, Code, &str); 11] = [
        ("", Some(&ann), "ann", Code::InvalidArgument, "event_id"),
        ("not-a-uuid", Some(&ann), "ann", Code::InvalidArgument, "event_id"),
        (&unknown, Some(&ann), "ann", Code::NotFound, "event"),
        (&event_id, None, "ann", Code::Unauthenticated, "TOKEN_MISSING"),
        (&event_id, Some(&expired), "ann", Code::Unauthenticated, "TOKEN_EXPIRED"),
        (&event_id, Some(&elsewhere), "ann", Code::Unauthenticated, "TOKEN_WRONG_AUDIENCE"),
        (&event_id, Some(&stranger), "ann", Code::Unauthenticated, "TOKEN_BAD_SIGNATURE"),
        (&event_id, Some("not.a.jwt"), "ann", Code::Unauthenticated, "TOKEN_MALFORMED"),
        // Acting as someone else: mallory's token naming ann. A user id that cannot be anyone's
        // (bad characters, too long) is bad input before it is someone else's name.
        (&event_id, Some(&mallory), "ann", Code::PermissionDenied, "USER_MISMATCH"),
        (&event_id, Some(&ann), "bad user!", Code::InvalidArgument, "user_id"),
        (&event_id, Some(&ann), &long, Code::InvalidArgument, "user_id"),
    ];
    for (event, token, user, code, names) in cases {
        let (event_id, user_id) = (event.to_owned(), user.to_owned());
        let answers = [
            client.join(with_token(token, JoinRequest { event_id, user_id })).await.map(|_| ()),
            client
                .get_queue_status(with_token(
                    token,
                    GetQueueStatusRequest { event_id: event.into(), user_id: user.into() },
                ))
                .await
                .map(|_| ()),
            client
                .leave(with_token(token, LeaveRequest { event_id: event.into(), user_id: user.into() }))
                .await
                .map(|_| ()),
            client
                .watch_queue(with_token(
                    token,
                    WatchQueueRequest { event_id: event.into(), user_id: user.into() },
                ))
                .await
                .map(|_| ()),
        ];
        for answer in answers {
            let status = answer.unwrap_err();
            assert_eq!(status.code(), code, "{event:?}/{user:?}: {status:?}");
            let reason = reason(&status).map(|(reason, _)| reason).unwrap_or_default();
            assert!(status.message().contains(names) || reason == names, "{status:?} names {names}");
        }
    }
    assert_eq!(keys_under_prefix(&env).await, Vec::<String>::new(), "nothing was written");

    // Inventory down: UNAVAILABLE, and still nothing written.
    let mut orphan = spawn_app_with(config(&env, "http://127.0.0.1:1")).await;
    let down = orphan.join(join(&event_id, "ann")).await.unwrap_err();
    assert_eq!(down.code(), Code::Unavailable);
    assert_eq!(keys_under_prefix(&env).await, Vec::<String>::new());
}

/// Reads the `admitted` hash as audit records.
async fn stored_admissions(env: &TestEnv, event_id: &str) -> Vec<Admission> {
    let redis = redis(env).await;
    let admitted: HashMap<String, String> = redis.hgetall(key(env, event_id, "admitted")).await.unwrap();
    admitted
        .into_iter()
        .map(|(user_id, value)| {
            let parts: Vec<&str> = value.split(':').collect();
            Admission { pass_id: parts[0].parse().unwrap(), user_id, ticket: parts[2].parse().unwrap() }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pre_queue_is_shuffled_at_opening_by_the_published_key_and_latecomers_queue_behind() {
    const EARLY: usize = 200;
    const LATE: usize = 20;
    const CAPACITY: usize = 50;
    let env = TestEnv::new().await.unwrap();
    let inventory = FakeInventory::default();
    let event_id = inventory.add_event(4_000, CAPACITY as u32, 50, 600);
    let url = inventory.start().await;
    let replicas = [spawn_app(&env, &url).await, spawn_app(&env, &url).await];

    let joins = (0..EARLY).map(|i| {
        let mut client = replicas[i % 2].clone();
        let event_id = event_id.clone();
        async move { client.join(join(&event_id, &format!("fan-{i}"))).await.unwrap().into_inner() }
    });
    let early: Vec<QueueStatus> = join_all(joins).await;
    assert!(early.iter().all(|s| s.state == QueueState::PreQueue as i32), "joined before opening");
    let mut arrival: Vec<(u64, String)> = early.iter().map(|s| (s.ticket, s.user_id.clone())).collect();
    arrival.sort_unstable();
    let arrival: Vec<String> = arrival.into_iter().map(|(_, user)| user).collect();

    let redis = redis(&env).await;
    let opening_key = key(&env, &event_id, "opening");
    wait_until_open(&redis, &opening_key).await;
    let mut late = Vec::new();
    for i in 0..LATE {
        let user = format!("late-{i}");
        let status = replicas[i % 2].clone().join(join(&event_id, &user)).await.unwrap().into_inner();
        assert_eq!(status.state, QueueState::Waiting as i32);
        late.push(user);
    }
    eventually(Duration::from_secs(20), || async {
        let total: Option<u64> = redis.get(key(&env, &event_id, "admitted_total")).await.unwrap();
        (total == Some(CAPACITY as u64)).then_some(())
    })
    .await
    .expect("the first batch is admitted");

    // The audit, as an operator runs it: the published event key, the opening record and
    // the admissions.
    let published = SHUFFLE_KEY.parse::<ShuffleKey>().unwrap().event_key(&event_id).to_hex();
    let event_key = EventShuffleKey::from_hex(&published).unwrap();
    let record: HashMap<String, String> = redis.hgetall(&opening_key).await.unwrap();
    assert_eq!(record["key_commitment"], event_key.commitment(), "the key was committed to at sealing");
    assert_eq!(record["prequeue"], EARLY.to_string());
    let sealed_ticket: u64 = record["sealed_ticket"].parse().unwrap();
    assert_eq!(sealed_ticket, EARLY as u64, "exactly the early joiners are the pre-queue");
    let expected = opening_order(&event_key, arrival.iter().map(String::as_str));
    let admitted = audit_admissions(&event_key, sealed_ticket, &stored_admissions(&env, &event_id).await)
        .expect("the admissions follow the keyed shuffle");
    assert_eq!(admitted, expected[..CAPACITY], "the first admitted are the head of the shuffle");
    assert_ne!(expected, arrival, "the shuffle is not the arrival order");
    let other_key = ShuffleKey::new(b"some-other-secret-0123".to_vec()).unwrap().event_key(&event_id);
    assert_ne!(opening_order(&other_key, arrival.iter().map(String::as_str)), expected, "the key decides");

    // GetQueueStatus positions follow the shuffle, then the latecomers in join order.
    let waiting: Vec<String> = expected[CAPACITY..].iter().chain(&late).cloned().collect();
    let statuses = join_all(waiting.iter().enumerate().map(|(i, user)| {
        let mut client = replicas[i % 2].clone();
        let event_id = event_id.clone();
        async move { client.get_queue_status(status_request(&event_id, user)).await.unwrap().into_inner() }
    }))
    .await;
    for (i, status) in statuses.iter().enumerate() {
        assert_eq!(status.state, QueueState::Waiting as i32, "{}", status.user_id);
        assert_eq!(status.position, i as u64 + 1, "{} is at its shuffled place", status.user_id);
        assert_eq!(status.queue_length, waiting.len() as u64);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uncollected_passes_free_their_slots_after_the_check_in_window_within_capacity() {
    const GHOSTS: usize = 6;
    const CAPACITY: usize = 3;
    const WINDOW_MS: i64 = 1_000;
    let env = TestEnv::new().await.unwrap();
    let inventory = FakeInventory::default();
    let event_id = inventory.add_event(-1_000, CAPACITY as u32, 50, 600);
    let url = inventory.start().await;
    let mut settings = config(&env, &url);
    settings.check_in_window_ms = WINDOW_MS as u64;
    let client = spawn_app_with(settings.clone()).await;
    let other = spawn_app_with(settings).await;
    client.clone().join(join(&event_id, "keen")).await.unwrap();
    for i in 0..GHOSTS {
        other.clone().join(join(&event_id, &format!("ghost-{i}"))).await.unwrap();
    }
    // Keen collects the pass: it now lasts the full ttl, not the check-in window.
    let keen = wait_admitted(&client, &event_id, "keen").await.expect("keen is admitted");
    let expires = timestamp_to_ms(keen.pass.as_ref().unwrap().expires_at.as_ref().unwrap());
    assert!(expires - now_ms() > 60_000, "a collected pass lasts the pass ttl");

    // The ghosts never collect theirs: each slot is reused after the window, not 600 s.
    let redis = redis(&env).await;
    let passes_key = key(&env, &event_id, "passes");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let active: usize = redis.zcard(&passes_key).await.unwrap();
        assert!(active <= CAPACITY, "{active} passes at once");
        let total: Option<u64> = redis.get(key(&env, &event_id, "admitted_total")).await.unwrap();
        if total == Some(GHOSTS as u64 + 1) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the ghosts' slots are reused");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stats_key = key(&env, &event_id, "stats");
    let stats: HashMap<String, u64> = eventually(Duration::from_secs(10), || async {
        let stats: HashMap<String, u64> = redis.hgetall(&stats_key).await.unwrap();
        (stats.get("expired") == Some(&(GHOSTS as u64))).then_some(stats)
    })
    .await
    .expect("every ghost's pass expires");
    assert_eq!(stats.get("unclaimed"), Some(&(GHOSTS as u64)), "none was collected");
    let status = client.clone().get_queue_status(status_request(&event_id, "keen")).await.unwrap();
    assert_eq!(status.into_inner().state, QueueState::Admitted as i32, "keen's collected pass stands");

    // Each ghost pass was valid over [expiry - window, expiry); with keen's, never more than
    // CAPACITY at once.
    let events = admitted_events(&env, GHOSTS + 1, Duration::from_secs(10)).await;
    assert_eq!(events.len(), GHOSTS + 1);
    let mut edges: Vec<(i64, i32)> = Vec::new();
    for event in events.iter().filter(|e| e.user_id != "keen") {
        let expires = timestamp_to_ms(event.pass_expires_at.as_ref().unwrap());
        edges.push((expires - WINDOW_MS, 1));
        edges.push((expires, -1));
    }
    edges.sort_unstable();
    let mut valid = 1; // keen's
    for (_, change) in edges {
        valid += change;
        assert!(valid <= CAPACITY as i32, "{valid} valid passes at once");
    }

    // Keen leaves: the no-show share counts 6 expired of 7 ended passes.
    assert!(client.clone().leave(leave(&event_id, "keen")).await.unwrap().into_inner().left);
    let stats: HashMap<String, u64> = redis.hgetall(&stats_key).await.unwrap();
    let ended = EndedPasses {
        expired: stats["expired"],
        unclaimed: stats["unclaimed"],
        released: stats.get("released").copied().unwrap_or(0),
        left: stats["left"],
    };
    assert_eq!(ended.no_show_share(), Some(GHOSTS as f64 / (GHOSTS as f64 + 1.0)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_racing_the_opening_land_on_exactly_one_side_and_the_whole_sale_audits() {
    const USERS: usize = 300;
    let env = TestEnv::new().await.unwrap();
    let inventory = FakeInventory::default();
    let url = inventory.start().await;
    let replicas = [spawn_app(&env, &url).await, spawn_app(&env, &url).await];
    // The opening is set once both replicas are up (the fake inventory answers events added
    // after it started), so their start-up, however slow, never eats into the time before it.
    let event_id = inventory.add_event(1_500, USERS as u32, 20, 600);

    // Joins spread over 3 s from now, so the opening (at 1.5 s) falls in the middle of them.
    let joins = (0..USERS).map(|i| {
        let mut client = replicas[i % 2].clone();
        let event_id = event_id.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(10 * i as u64)).await;
            client.join(join(&event_id, &format!("fan-{i}"))).await.unwrap().into_inner()
        }
    });
    let joined: Vec<QueueStatus> = join_all(joins).await;
    let redis = redis(&env).await;
    eventually(Duration::from_secs(20), || async {
        let total: Option<u64> = redis.get(key(&env, &event_id, "admitted_total")).await.unwrap();
        (total == Some(USERS as u64)).then_some(())
    })
    .await
    .expect("everyone is admitted");

    let record: HashMap<String, String> = redis.hgetall(key(&env, &event_id, "opening")).await.unwrap();
    let sealed_ticket: u64 = record["sealed_ticket"].parse().unwrap();
    assert!(0 < sealed_ticket && sealed_ticket < USERS as u64, "the opening fell among the joins");
    for status in &joined {
        let early = status.state == QueueState::PreQueue as i32;
        assert_eq!(early, status.ticket <= sealed_ticket, "{} answered {:?}", status.user_id, status.state);
    }
    let event_key = SHUFFLE_KEY.parse::<ShuffleKey>().unwrap().event_key(&event_id);
    let prequeue = audit_admissions(&event_key, sealed_ticket, &stored_admissions(&env, &event_id).await)
        .expect("pre-queue shuffled first, then first come first served");
    assert_eq!(prequeue.len() as u64, sealed_ticket);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_queue_moves_a_pre_queue_user_to_the_shuffled_place_at_opening() {
    const EARLY: usize = 10;
    let env = TestEnv::new().await.unwrap();
    let inventory = FakeInventory::default();
    let mut client = spawn_app(&env, &inventory.start().await).await;
    // The opening is set once the replica is up, so its start-up never eats into the 1.5 s
    // the joins and the watch below have before it.
    let event_id = inventory.add_event(1_500, 1, 50, 600);
    let users: Vec<String> = (0..EARLY).map(|i| format!("fan-{i}")).collect();
    for user in &users {
        client.join(join(&event_id, user)).await.unwrap();
    }
    // Watch the user the shuffle puts last: at opening it moves to the back from wherever it
    // arrived.
    let event_key = SHUFFLE_KEY.parse::<ShuffleKey>().unwrap().event_key(&event_id);
    let expected = opening_order(&event_key, users.iter().map(String::as_str));
    let watched = expected.last().unwrap().clone();
    let arrival_position = users.iter().position(|u| *u == watched).unwrap() as u64 + 1;
    let mut stream = client.watch_queue(watch_request(&event_id, &watched)).await.unwrap().into_inner();
    let first = stream.next().await.unwrap().unwrap();
    assert_eq!((first.state, first.position), (QueueState::PreQueue as i32, arrival_position));

    // Read until two messages after opening: by then the one pass (capacity 1) is out.
    let mut after_opening = Vec::new();
    while after_opening.len() < 3 {
        let message =
            tokio::time::timeout(Duration::from_secs(20), stream.next()).await.unwrap().unwrap().unwrap();
        if message.state == QueueState::Waiting as i32 {
            after_opening.push(message);
        }
    }
    let exact = client.get_queue_status(status_request(&event_id, &watched)).await.unwrap().into_inner();
    assert_eq!(exact.position, EARLY as u64 - 1, "last of the shuffle, one admitted ahead");
    let last = after_opening.last().unwrap();
    assert_eq!(last.position, exact.position, "the stream shows the shuffled place");
    assert!(after_opening.iter().all(|m| m.position >= exact.position && m.position <= EARLY as u64));
}
