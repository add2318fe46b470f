//! Admission losing its Redis state during an open sale, on the real Redis and NATS with a
//! fake inventory: the state is lost by deleting every key of the test's prefix (never
//! FLUSHALL: the server is shared), which is what a Redis restart without persistence does to
//! one deployment.

// Test code and its helpers: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(dead_code)] // shared with api.rs, which uses all of it
#[path = "api/helpers.rs"]
mod helpers;

use std::{
    collections::BTreeSet,
    time::{Duration, Instant},
};

use admission::{
    fairness::ShuffleKey,
    store::{Opening, PREQUEUE_PAGE, Store},
};
use fred::interfaces::{HashesInterface, SetsInterface, SortedSetsInterface};
use futures::StreamExt;
use helpers::*;
use service_runtime::status::reason;
use test_support::{
    redis::delete_prefix_keys,
    testenv::{TestEnv, eventually},
};
use ticketing_proto::v1::{
    GetQueueStatusRequest, JoinRequest, LeaveRequest, QueueState, QueueStatus, WatchQueueRequest,
};
use tonic::{Code, Request, Status};

type AdmissionClient =
    ticketing_proto::v1::admission_service_client::AdmissionServiceClient<tonic::transport::Channel>;

fn join(event_id: &str, user_id: &str) -> Request<JoinRequest> {
    as_user(user_id, JoinRequest { event_id: event_id.into(), user_id: user_id.into() })
}

fn status_request(event_id: &str, user_id: &str) -> Request<GetQueueStatusRequest> {
    as_user(user_id, GetQueueStatusRequest { event_id: event_id.into(), user_id: user_id.into() })
}

fn leave(event_id: &str, user_id: &str) -> Request<LeaveRequest> {
    as_user(user_id, LeaveRequest { event_id: event_id.into(), user_id: user_id.into() })
}

fn reason_of(status: &Status) -> String {
    reason(status).map(|(reason, _)| reason).unwrap_or_default()
}

/// `NOT_IN_QUEUE`'s `queue_started_at_ms`: since when the event's queue exists.
fn queue_started_at_ms(status: &Status) -> i64 {
    let (_, metadata) = reason(status).expect("an ErrorInfo");
    metadata["queue_started_at_ms"].parse().expect("unix ms")
}

fn unix_ms() -> i64 {
    let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    i64::try_from(since_epoch.as_millis()).unwrap()
}

/// Polls the user's status until it is ADMITTED.
async fn wait_admitted(client: &AdmissionClient, event_id: &str, user: &str) -> Option<QueueStatus> {
    eventually(Duration::from_secs(20), || {
        let mut client = client.clone();
        async move {
            let status = client.get_queue_status(status_request(event_id, user)).await.ok()?.into_inner();
            (status.state == QueueState::Admitted as i32).then_some(status)
        }
    })
    .await
}

/// Repeats `call` while it answers UNAVAILABLE with QUEUE_REBUILDING (the only UNAVAILABLE
/// allowed); returns its first other answer and how many rebuilding answers came first.
async fn through_rebuild<T, F, Fut>(mut call: F) -> (Result<T, Status>, usize)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Status>>,
{
    let mut rebuilding = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match call().await {
            Err(status) if status.code() == Code::Unavailable => {
                assert_eq!(reason_of(&status), "QUEUE_REBUILDING", "{status:?}");
                assert!(tokio::time::Instant::now() < deadline, "the rebuild never finished");
                rebuilding += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => return (other, rebuilding),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_redis_mid_sale_keeps_live_passes_within_capacity_and_admissions_resume() {
    const CAPACITY: u32 = 3;
    let env = TestEnv::new().await.unwrap();
    let inventory = FakeInventory::default();
    let event_id = inventory.add_event(-1_000, CAPACITY, 50, 600);
    let url = inventory.start().await;
    let replicas = [spawn_app(&env, &url).await, spawn_app(&env, &url).await];
    let mut client = replicas[0].clone();
    let redis = redis(&env).await;
    let passes_key = key(&env, &event_id, "passes");

    // Before the loss: users 0-2 are admitted (capacity 3), user 3 waits; user 0 leaves and
    // user 3 gets the slot; user 4 waits behind a full capacity.
    for i in 0..4 {
        client.join(join(&event_id, &format!("user-{i}"))).await.unwrap();
    }
    let mut before = std::collections::HashMap::new();
    for i in 0..3 {
        let user = format!("user-{i}");
        before.insert(
            user.clone(),
            wait_admitted(&client, &event_id, &user).await.expect("admitted").pass.unwrap(),
        );
    }
    assert!(client.leave(leave(&event_id, "user-0")).await.unwrap().into_inner().left);
    // A user who left is not in the queue, which dates from before its join: nothing was lost.
    let left = client.get_queue_status(status_request(&event_id, "user-0")).await.unwrap_err();
    assert_eq!((left.code(), reason_of(&left).as_str()), (Code::NotFound, "NOT_IN_QUEUE"));
    let first_queue_ms = queue_started_at_ms(&left);
    assert!(first_queue_ms <= unix_ms(), "{left:?}");
    before.insert(
        "user-3".into(),
        wait_admitted(&client, &event_id, "user-3").await.expect("admitted").pass.unwrap(),
    );
    let waiting = client.join(join(&event_id, "user-4")).await.unwrap().into_inner();
    assert_eq!(waiting.state, QueueState::Waiting as i32);
    // The history the rebuild reads: every admission and the end of user 0's pass published.
    assert_eq!(admitted_events(&env, 4, Duration::from_secs(10)).await.len(), 4);
    assert_eq!(pass_ended_events(&env, 1, Duration::from_secs(10)).await.len(), 1);
    let mut watch = replicas[1]
        .clone()
        .watch_queue(as_user(
            "user-4",
            WatchQueueRequest { event_id: event_id.clone(), user_id: "user-4".into() },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(watch.next().await.unwrap().unwrap().state, QueueState::Waiting as i32);

    // Redis loses everything of this deployment.
    let lost_at_ms = unix_ms();
    let deleted = delete_prefix_keys(&redis, &env.redis_prefix).await.unwrap();
    assert!(deleted > 0, "the sale had Redis keys to lose");
    let lost_at = Instant::now();

    // The waiting user's stream does not go on promising a wait: it ends with the truth, its
    // place is gone (NOT_FOUND) or the room is being rebuilt (UNAVAILABLE).
    let ended = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(update) = watch.next().await {
            match update {
                Ok(status) => assert_ne!(status.state, QueueState::Admitted as i32, "{status:?}"),
                Err(status) => return status,
            }
        }
        panic!("the stream ended without telling why");
    })
    .await
    .expect("the waiting user's stream ends after the loss");
    assert!(
        matches!(
            (ended.code(), reason_of(&ended).as_str()),
            (Code::NotFound, "NOT_IN_QUEUE") | (Code::Unavailable, "QUEUE_REBUILDING")
        ),
        "{ended:?}"
    );

    // The pass holders keep their passes: same pass id, still valid.
    for user in ["user-1", "user-2", "user-3"] {
        let (status, _) = through_rebuild(|| {
            let (mut client, request) = (replicas[1].clone(), status_request(&event_id, user));
            async move { client.get_queue_status(request).await }
        })
        .await;
        let status = status.unwrap_or_else(|s| panic!("{user} lost the pass: {s:?}")).into_inner();
        assert_eq!(status.state, QueueState::Admitted as i32, "{user}: {status:?}");
        assert_eq!(status.pass.unwrap().pass_id, before[user].pass_id, "{user} keeps the same pass");
    }
    let restored: BTreeSet<String> =
        redis.zrange(&passes_key, 0, -1, None, false, None, false).await.unwrap();
    assert_eq!(restored, ["user-1", "user-2", "user-3"].map(String::from).into(), "live passes restored");
    // The rebuild's history read left no consumer behind on the stream: only the durable ones.
    let mut names: Vec<String> = Vec::new();
    let bus = service_runtime::bus::EventBus::connect(&env.nats_url, &env.nats_prefix).await.unwrap();
    let mut consumers = bus.existing_stream().await.unwrap().consumer_names();
    while let Some(name) = consumers.next().await {
        names.push(name.unwrap());
    }
    names.sort();
    assert_eq!(
        names,
        ["admission", "admission-abandoned-holds", "test-pass-ended", "test-reader"],
        "no history consumer left"
    );

    // User 0 left: its pass is not restored; it must join like anyone else.
    let gone = client.get_queue_status(status_request(&event_id, "user-0")).await.unwrap_err();
    assert_eq!((gone.code(), reason_of(&gone).as_str()), (Code::NotFound, "NOT_IN_QUEUE"));
    // The answer dates the queue after the loss: a page that joined before then (user 4)
    // knows its place was lost with Redis, not given to someone else.
    let rebuilt_queue_ms = queue_started_at_ms(&gone);
    assert!(rebuilt_queue_ms >= lost_at_ms && rebuilt_queue_ms > first_queue_ms, "{gone:?}");

    // The waiting user lost the place and joins again: it waits, capacity is full.
    let (rejoined, _) = through_rebuild(|| {
        let mut client = client.clone();
        let event_id = event_id.clone();
        async move { client.join(join(&event_id, "user-4")).await }
    })
    .await;
    let rejoined = rejoined.unwrap().into_inner();
    assert_eq!((rejoined.state, rejoined.position), (QueueState::Waiting as i32, 1), "{rejoined:?}");
    let newcomer = client.join(join(&event_id, "user-5")).await.unwrap().into_inner();
    assert_eq!((newcomer.state, newcomer.position), (QueueState::Waiting as i32, 2), "{newcomer:?}");

    // A pass given back frees its slot for the next in line, and only one.
    assert!(client.leave(leave(&event_id, "user-2")).await.unwrap().into_inner().left);
    let admitted =
        wait_admitted(&client, &event_id, "user-4").await.expect("admissions resume after the rebuild");
    let first_admission = lost_at.elapsed();
    let active: u64 = redis.zcard(&passes_key).await.unwrap();
    assert_eq!(active, u64::from(CAPACITY), "active passes stay at capacity");
    let behind = client.get_queue_status(status_request(&event_id, "user-5")).await.unwrap().into_inner();
    assert_eq!((behind.state, behind.position), (QueueState::Waiting as i32, 1), "{behind:?}");

    // No pass id is issued twice: the new one is above every earlier one.
    let new_id: u64 = admitted.pass.unwrap().pass_id.parse().unwrap();
    let old_ids: Vec<u64> = before.values().map(|pass| pass.pass_id.parse().unwrap()).collect();
    assert!(old_ids.iter().all(|old| *old < new_id), "{new_id} above {old_ids:?}");
    // What the stream announced, as the operator's audit reads it (its verdict on the order
    // does not matter here: only the count of passes, users and conflicts).
    let event_key = SHUFFLE_KEY.parse::<ShuffleKey>().unwrap().event_key(&event_id).to_hex();
    let report = eventually(Duration::from_secs(10), || async {
        let tool = tokio::process::Command::new(env!("CARGO_BIN_EXE_admission-audit"))
            .args(["--event-id", &event_id, "--event-key", &event_key, "--sealed-ticket", "0", "--json"])
            .args(["--nats-url", &env.nats_url, "--nats-prefix", &env.nats_prefix])
            .output()
            .await
            .unwrap();
        let report: serde_json::Value = serde_json::from_slice(&tool.stdout).unwrap();
        (report["admissions"] == 5).then_some(report)
    })
    .await
    .expect("five admissions announced");
    assert_eq!(report["pass_conflicts"], serde_json::json!([]), "no pass id was given to two users");
    let users = report["prequeue_users"].as_u64().unwrap() + report["later_joiners"].as_u64().unwrap();
    assert_eq!(users, 5, "five users, one pass each: {report:#}");

    // The opening record was rebuilt as open, with the event's key commitment.
    let opening = key(&env, &event_id, "opening");
    let state: Option<String> = redis.hget(&opening, "state").await.unwrap();
    let commitment: Option<String> = redis.hget(&opening, "key_commitment").await.unwrap();
    let key = SHUFFLE_KEY.parse::<ShuffleKey>().unwrap().event_key(&event_id);
    assert_eq!((state.as_deref(), commitment), (Some("open"), Some(key.commitment())));
    eprintln!("loss -> first admission after the rebuild: {first_admission:?} (includes one Leave)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_redis_before_the_opening_costs_a_rejoin_and_the_pre_queue_still_opens_shuffled() {
    let env = TestEnv::new().await.unwrap();
    let inventory = FakeInventory::default();
    let event_id = inventory.add_event(6_000, 10, 50, 600);
    let url = inventory.start().await;
    let mut client = spawn_app(&env, &url).await;
    let redis = redis(&env).await;

    let early = client.join(join(&event_id, "early")).await.unwrap().into_inner();
    assert_eq!(early.state, QueueState::PreQueue as i32);
    let mut watch = client
        .watch_queue(as_user(
            "early",
            WatchQueueRequest { event_id: event_id.clone(), user_id: "early".into() },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(watch.next().await.unwrap().unwrap().state, QueueState::PreQueue as i32);
    assert!(delete_prefix_keys(&redis, &env.redis_prefix).await.unwrap() > 0);

    // The stream learns at once (the next tick starts a new epoch) that the place is gone.
    let ended = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            match watch.next().await.expect("the stream tells why it ends") {
                Ok(status) => assert_eq!(status.state, QueueState::PreQueue as i32),
                Err(status) => return status,
            }
        }
    })
    .await
    .expect("the pre-queue stream ends before the opening");
    assert_eq!((ended.code(), reason_of(&ended).as_str()), (Code::NotFound, "NOT_IN_QUEUE"), "{ended:?}");

    // Before the opening nothing else is lost: joining again, the user is in the pre-queue
    // (no UNAVAILABLE: there is nothing to rebuild), and is admitted at the opening.
    let again = client.join(join(&event_id, "early")).await.unwrap().into_inner();
    assert_eq!(again.state, QueueState::PreQueue as i32, "{again:?}");
    let admitted = wait_admitted(&client, &event_id, "early").await.expect("admitted at the opening");
    assert!(admitted.pass.is_some());
    let prequeue: Option<String> = redis.hget(key(&env, &event_id, "opening"), "prequeue").await.unwrap();
    assert_eq!(prequeue.as_deref(), Some("1"), "the opening shuffled the rejoined pre-queue");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_opening_shuffles_a_pre_queue_larger_than_a_page_in_pages() {
    let users = 2 * PREQUEUE_PAGE + 345;
    let env = TestEnv::new().await.unwrap();
    let store = Store::connect(&env.redis_url, &env.redis_prefix, Duration::from_secs(10)).await.unwrap();
    let event_id = uuid::Uuid::new_v4().to_string();
    let now = chrono::Utc::now().timestamp_millis();
    // Everyone joins "before opening" (an opening an hour away), then the opening runs as if
    // its time had come.
    futures::stream::iter(0..users)
        .for_each_concurrent(64, |i| {
            let (store, event_id) = (&store, &event_id);
            async move {
                store.join(event_id, &format!("u{i}"), 5, now + 3_600_000).await.unwrap();
            }
        })
        .await;
    let key = SHUFFLE_KEY.parse::<ShuffleKey>().unwrap().event_key(&event_id);
    let opening = store.open_sale(&event_id, now - 1, &key).await.unwrap();
    assert_eq!(opening, Opening::Shuffled { prequeue: users, sealed_ticket: users as u64 });

    // Every pre-queue user got the keyed score, the event is open, and a repeat changes nothing.
    let redis = redis(&env).await;
    let queue = helpers::key(&env, &event_id, "queue");
    let scores: Vec<(String, f64)> = redis.zrange(&queue, 0, -1, None, false, None, true).await.unwrap();
    assert_eq!(scores.len(), users);
    for (user, score) in &scores {
        assert_eq!(*score as u64, key.score(user), "{user} rescored");
    }
    let state: Option<String> = redis.hget(helpers::key(&env, &event_id, "opening"), "state").await.unwrap();
    assert_eq!(state.as_deref(), Some("open"));
    assert_eq!(store.open_sale(&event_id, now - 1, &key).await.unwrap(), Opening::AlreadyOpen);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_event_is_forgotten_and_comes_back_when_asked_about() {
    let env = TestEnv::new().await.unwrap();
    let inventory = FakeInventory::default();
    let event_id = inventory.add_event(-1_000, 2, 50, 600);
    let url = inventory.start().await;
    let mut config = config(&env, &url);
    config.finished_event_after_ms = 1_000;
    let mut client = spawn_app_with(config).await;
    let redis = redis(&env).await;
    let events_key = format!("{}adm:events", env.redis_prefix);

    client.join(join(&event_id, "alice")).await.unwrap();
    wait_admitted(&client, &event_id, "alice").await.expect("admitted");
    let known: bool = redis.sismember(&events_key, &event_id).await.unwrap();
    assert!(known, "a running event is walked");
    assert!(client.leave(leave(&event_id, "alice")).await.unwrap().into_inner().left);

    // Nobody waits, no pass is out: after FINISHED_EVENT_AFTER_MS the event is forgotten.
    let forgotten = eventually(Duration::from_secs(30), || async {
        let known: bool = redis.sismember(&events_key, &event_id).await.unwrap();
        (!known).then_some(())
    })
    .await;
    assert!(forgotten.is_some(), "the finished event leaves the set of events");

    // Asked about again, it works as before.
    client.join(join(&event_id, "bob")).await.unwrap();
    let bob = wait_admitted(&client, &event_id, "bob").await.expect("admitted after the event came back");
    assert!(bob.pass.is_some());
    let known: bool = redis.sismember(&events_key, &event_id).await.unwrap();
    assert!(known, "the event is walked again");
}
