//! The operator's admin RPCs on the real Redis and NATS, with a fake inventory: pausing keeps
//! the queue and admits nobody, resuming admits again, closing ends the sale for good.

// Test code and its helpers: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "api/helpers.rs"]
#[allow(dead_code)] // this binary uses only part of the shared helpers
mod helpers;

use std::time::Duration;

use futures::StreamExt;
use helpers::*;
use service_runtime::{auth::TokenIssuer, status::reason};
use test_support::testenv::{TestEnv, eventually};
use ticketing_proto::v1::{
    GetQueueStatusRequest, JoinRequest, QueueState, QueueStatus, SaleControlRequest, SaleState, SaleStatus,
    WatchQueueRequest, admission_service_client::AdmissionServiceClient,
};
use tonic::{Code, Request, Status, transport::Channel};

type Client = AdmissionServiceClient<Channel>;

fn admin_token() -> String {
    TokenIssuer::for_tests().token("ops", true, Duration::from_secs(3600))
}

fn with_token<T>(token: Option<&str>, message: T) -> Request<T> {
    let mut request = Request::new(message);
    if let Some(token) = token {
        request.metadata_mut().insert("authorization", service_runtime::auth::bearer(token));
    }
    request
}

#[derive(Clone, Copy, Debug)]
enum Rpc {
    Pause,
    Resume,
    Close,
    Status,
}

async fn call(
    client: &mut Client,
    rpc: Rpc,
    token: Option<&str>,
    event_id: &str,
) -> Result<SaleStatus, Status> {
    let request = with_token(token, SaleControlRequest { event_id: event_id.to_owned() });
    let answer = match rpc {
        Rpc::Pause => client.pause_sale(request).await,
        Rpc::Resume => client.resume_sale(request).await,
        Rpc::Close => client.close_sale(request).await,
        Rpc::Status => client.get_sale_status(request).await,
    };
    answer.map(tonic::Response::into_inner)
}

async fn admin(client: &mut Client, rpc: Rpc, event_id: &str) -> SaleStatus {
    call(client, rpc, Some(&admin_token()), event_id).await.unwrap()
}

async fn join(client: &mut Client, event_id: &str, user: &str) -> Result<QueueStatus, Status> {
    let request = as_user(user, JoinRequest { event_id: event_id.into(), user_id: user.into() });
    client.join(request).await.map(tonic::Response::into_inner)
}

async fn status(client: &mut Client, event_id: &str, user: &str) -> QueueStatus {
    let request = as_user(user, GetQueueStatusRequest { event_id: event_id.into(), user_id: user.into() });
    client.get_queue_status(request).await.unwrap().into_inner()
}

async fn wait_admitted(client: &Client, event_id: &str, user: &str) -> Option<QueueStatus> {
    eventually(Duration::from_secs(10), || {
        let mut client = client.clone();
        async move {
            let status = status(&mut client, event_id, user).await;
            (status.state == QueueState::Admitted as i32).then_some(status)
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_sale_keeps_queueing_and_admits_nobody_until_resumed() {
    let env = TestEnv::new().await.unwrap();
    let inventory = FakeInventory::default();
    let paused = inventory.add_event(-1_000, 10, 20, 600);
    let running = inventory.add_event(-1_000, 10, 20, 600);
    let mut client = spawn_app(&env, &inventory.start().await).await;

    let answer = admin(&mut client, Rpc::Pause, &paused).await;
    assert_eq!(answer.state, SaleState::Paused as i32);
    assert_eq!(answer.event_id, paused);
    for (i, user) in ["ann", "bob"].into_iter().enumerate() {
        let queued = join(&mut client, &paused, user).await.unwrap();
        assert_eq!(queued.state, QueueState::Waiting as i32, "joins still queue while paused");
        assert_eq!(queued.position, i as u64 + 1);
    }
    assert_eq!(
        admin(&mut client, Rpc::Pause, &paused).await.state,
        SaleState::Paused as i32,
        "pausing twice"
    );

    // The paused event's tick has run (the tick opens the event), and afterwards the same
    // controller admits a user of another event with the same tick who joined later: the
    // paused event's ticks ran since, and admitted nobody.
    let redis = redis(&env).await;
    wait_until_open(&redis, &key(&env, &paused, "opening")).await;
    join(&mut client, &running, "cat").await.unwrap();
    assert!(wait_admitted(&client, &running, "cat").await.is_some(), "the other sale admits");
    let figures = admin(&mut client, Rpc::Status, &paused).await;
    assert_eq!(figures.state, SaleState::Paused as i32);
    assert_eq!((figures.queue_length, figures.admitted_total, figures.active_passes), (2, 0, 0));
    // Nobody is admitted: no rate measured (0), or one seeded with capacity / pass ttl = 1/60
    // per second that only decays. The wait of bob, second in line, is 2 / rate: 120 s at the
    // fallback of 1/60, somewhat more while a measured average decays towards it.
    assert!((0.0..=1.0 / 60.0).contains(&figures.admission_rate), "{figures:?}");
    assert!((120..=200).contains(&figures.estimated_wait_seconds), "{figures:?}");
    let ann = status(&mut client, &paused, "ann").await;
    assert_eq!((ann.state, ann.position), (QueueState::Waiting as i32, 1), "the place is kept");

    let resumed = admin(&mut client, Rpc::Resume, &paused).await;
    assert_ne!(resumed.state, SaleState::Paused as i32);
    for user in ["ann", "bob"] {
        assert!(wait_admitted(&client, &paused, user).await.is_some(), "{user} is admitted after the resume");
    }
    let figures = admin(&mut client, Rpc::Status, &paused).await;
    assert_eq!(figures.state, SaleState::Open as i32);
    assert_eq!((figures.queue_length, figures.admitted_total, figures.active_passes), (0, 2, 2));
    assert_eq!(figures.estimated_wait_seconds, 0, "nobody waits: {figures:?}");
    assert!(figures.admission_rate > 0.0, "{figures:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_sale_admits_nobody_refuses_joins_and_cannot_be_resumed() {
    let env = TestEnv::new().await.unwrap();
    let inventory = FakeInventory::default();
    let event_id = inventory.add_event(-1_000, 1, 20, 600);
    let mut client = spawn_app(&env, &inventory.start().await).await;

    join(&mut client, &event_id, "ann").await.unwrap();
    assert!(wait_admitted(&client, &event_id, "ann").await.is_some());
    let bob = join(&mut client, &event_id, "bob").await.unwrap();
    assert_eq!(bob.state, QueueState::Waiting as i32, "the capacity of one is taken");

    let watch = as_user("bob", WatchQueueRequest { event_id: event_id.clone(), user_id: "bob".into() });
    let mut watching = client.watch_queue(watch).await.unwrap().into_inner();
    let first = watching.next().await.unwrap().unwrap();
    assert_eq!(first.state, QueueState::Waiting as i32);

    let closed = admin(&mut client, Rpc::Close, &event_id).await;
    assert_eq!(closed.state, SaleState::Closed as i32);
    assert_eq!((closed.queue_length, closed.admitted_total, closed.active_passes), (0, 1, 1));

    // A waiting user's stream ends: the place is gone (a generous bound, not a speed check).
    let ended = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match watching.next().await {
                Some(Ok(status)) => {
                    assert_ne!(status.state, QueueState::Admitted as i32, "nobody is admitted")
                }
                Some(Err(status)) => return Some(status),
                None => return None,
            }
        }
    })
    .await
    .expect("the stream of a user taken out of the queue ends");
    let ended = ended.expect("it ends with the reason");
    assert_eq!((ended.code(), reason(&ended).unwrap().0.as_str()), (Code::NotFound, "NOT_IN_QUEUE"));

    let refused = join(&mut client, &event_id, "dan").await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert_eq!(reason(&refused).unwrap().0, "SALE_CLOSED");
    let bob_again = join(&mut client, &event_id, "bob").await.unwrap_err();
    assert_eq!(bob_again.code(), Code::FailedPrecondition, "a user taken out of the queue cannot rejoin");
    for rpc in [Rpc::Pause, Rpc::Resume] {
        let refused = call(&mut client, rpc, Some(&admin_token()), &event_id).await.unwrap_err();
        assert_eq!(refused.code(), Code::FailedPrecondition, "{rpc:?}");
        assert_eq!(reason(&refused).unwrap().0, "SALE_CLOSED", "{rpc:?}");
    }
    assert_eq!(
        admin(&mut client, Rpc::Close, &event_id).await.state,
        SaleState::Closed as i32,
        "closing twice"
    );
    let ann = status(&mut client, &event_id, "ann").await;
    assert_eq!(ann.state, QueueState::Admitted as i32, "a pass issued before the close stays valid");
    let figures = admin(&mut client, Rpc::Status, &event_id).await;
    assert_eq!((figures.state, figures.admitted_total), (SaleState::Closed as i32, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_rpcs_need_the_admin_scope_and_a_known_event() {
    let env = TestEnv::new().await.unwrap();
    let inventory = FakeInventory::default();
    let event_id = inventory.add_event(3_600_000, 10, 50, 600);
    let mut client = spawn_app(&env, &inventory.start().await).await;
    let ops = admin_token();
    let user = token("ann");
    let unknown = uuid::Uuid::new_v4().to_string();
    let cases: [(&str, Option<&str>, Code, &str); 5] = [
        (&event_id, None, Code::Unauthenticated, "TOKEN_MISSING"),
        (&event_id, Some(&user), Code::PermissionDenied, "ADMIN_SCOPE_REQUIRED"),
        ("not-a-uuid", Some(&ops), Code::InvalidArgument, "event_id"),
        ("", Some(&ops), Code::InvalidArgument, "event_id"),
        (&unknown, Some(&ops), Code::NotFound, "EVENT_NOT_FOUND"),
    ];
    for (event, token, code, names) in cases {
        for rpc in [Rpc::Pause, Rpc::Resume, Rpc::Close, Rpc::Status] {
            let status = call(&mut client, rpc, token, event).await.unwrap_err();
            assert_eq!(status.code(), code, "{rpc:?} {event:?}: {status:?}");
            let reason = reason(&status).map(|(reason, _)| reason).unwrap_or_default();
            assert!(status.message().contains(names) || reason == names, "{status:?} names {names}");
        }
    }
    assert_eq!(keys_under_prefix(&env).await, Vec::<String>::new(), "nothing was written");

    // Before the opening: the sale is not open yet, and may be paused ahead of it.
    let figures = admin(&mut client, Rpc::Status, &event_id).await;
    assert_eq!((figures.state, figures.queue_length), (SaleState::NotOpen as i32, 0));
    assert!(figures.sale_opens_at.is_some());
    assert_eq!(admin(&mut client, Rpc::Pause, &event_id).await.state, SaleState::Paused as i32);
    assert_eq!(admin(&mut client, Rpc::Resume, &event_id).await.state, SaleState::NotOpen as i32);
}
