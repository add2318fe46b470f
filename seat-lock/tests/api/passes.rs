//! Passes belong to their holder and end when admission ends them: seat-lock beside the real
//! admission service, on the same Redis and NATS.

use std::time::Duration;

use admission::Config as AdmissionConfig;
use fred::prelude::KeysInterface;
use service_runtime::{
    args::{NatsArgs, RedisArgs},
    auth::TokenIssuer,
    bus::{EventBus, envelope, timestamp_ms},
    config::ServerArgs,
};
use ticketing_proto::{
    events::{PassEndReason, PassEnded, event_envelope::Body},
    v1::{
        GetHoldRequest, GetQueueStatusRequest, HoldBestAvailableRequest, HoldSeatsRequest, HoldState,
        JoinRequest, LeaveRequest, QueueState, ReleaseHoldRequest,
        admission_service_client::AdmissionServiceClient,
    },
};
use tonic::{Code, transport::Channel};

use crate::helpers::*;

/// Attempts while waiting for a PassEnded to be applied; each waits [`POLL`]. Generous: the
/// wait is normally a few milliseconds, this only bounds a broken build.
const ATTEMPTS: usize = 200;
const POLL: Duration = Duration::from_millis(50);

/// Starts the real admission service for the seat-lock test app's event, on the same Redis,
/// NATS and pass key (admission signs with it, seat-lock verifies its public half).
async fn spawn_admission(app: &TestApp) -> anyhow::Result<AdmissionServiceClient<Channel>> {
    let config = AdmissionConfig {
        server: ServerArgs::loopback(),
        redis: RedisArgs::new(&app.env.redis_url, &app.env.redis_prefix),
        nats: NatsArgs::new(&app.env.nats_url, &app.env.nats_prefix),
        inventory_url: app.fakes_url.clone(),
        pass_signing_keys: CURRENT_KEY.0.parse()?,
        controller_poll_ms: 10,
        join_rate_limit: 5,
        shuffle_key: Some("a-shuffle-key-for-tests".parse().map_err(anyhow::Error::msg)?),
        check_in_window_ms: 60_000,
        max_watchers: 100,
        finished_event_after_ms: 600_000,
        allow_example_secrets: false,
    };
    config.validate().map_err(anyhow::Error::msg)?;
    let admission = admission::App::build(config).await?;
    let url = format!("http://127.0.0.1:{}", admission.port());
    tokio::spawn(admission.run_until_stopped(std::future::pending()));
    Ok(AdmissionServiceClient::new(Channel::from_shared(url)?.connect().await?))
}

/// Joins as `user` and waits (bounded) for the pass token.
async fn admitted(admission: &mut AdmissionServiceClient<Channel>, event_id: &str, user: &str) -> String {
    let join = JoinRequest { event_id: event_id.to_owned(), user_id: String::new() };
    admission.join(as_user(user, join)).await.expect("join");
    for _ in 0..ATTEMPTS {
        let ask = GetQueueStatusRequest { event_id: event_id.to_owned(), user_id: String::new() };
        let status = admission.get_queue_status(as_user(user, ask)).await.expect("status").into_inner();
        if status.state == QueueState::Admitted as i32 {
            return status.pass.expect("an admitted status carries the pass").token;
        }
        tokio::time::sleep(POLL).await;
    }
    panic!("{user} was not admitted");
}

/// Holds `seat` as `user` with `pass` until seat-lock answers `reason`, at most [`ATTEMPTS`]
/// times; a hold that still succeeds is released again. Returns the last answer's reason.
async fn hold_until_refused(app: &TestApp, user: &str, pass: &str, seat: &str, reason: &str) -> String {
    let mut last = String::new();
    for _ in 0..ATTEMPTS {
        let request = HoldSeatsRequest { pass_token: pass.to_owned(), ..app.hold_request(user, &[seat]) };
        match app.client().hold_seats(request).await {
            Ok(hold) => {
                let hold = hold.into_inner();
                let release = ReleaseHoldRequest {
                    event_id: app.event_id.clone(),
                    hold_id: hold.hold_id,
                    user_id: user.into(),
                };
                app.client().release_hold(release).await.expect("release");
                last = "HELD".into();
            }
            Err(status) => {
                last = reason_of(&status).0;
                if last == reason {
                    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
                    return last;
                }
            }
        }
        tokio::time::sleep(POLL).await;
    }
    last
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pass_is_refused_once_its_holder_leaves_and_a_new_one_works() -> anyhow::Result<()> {
    let app = spawn_app(600).await?;
    let mut admission = spawn_admission(&app).await?;
    let pass = admitted(&mut admission, &app.event_id, "ann").await;
    let claims = ticketing_proto::pass::PassVerifier::verify(&CURRENT_KEY.1.parse()?, &pass)?;

    // The pass works while admission holds it active.
    let request = HoldSeatsRequest { pass_token: pass.clone(), ..app.hold_request("ann", &["A-R1-1"]) };
    let kept = app.client().hold_seats(request).await?.into_inner();

    // Ann leaves: her slot goes to the next in line, and seat-lock refuses her pass.
    let leave = LeaveRequest { event_id: app.event_id.clone(), user_id: String::new() };
    assert!(admission.leave(as_user("ann", leave)).await?.into_inner().left);
    let free_before = app.free("A").await?;
    assert_eq!(hold_until_refused(&app, "ann", &pass, "A-R1-2", "PASS_REVOKED").await, "PASS_REVOKED");
    assert_eq!(app.free("A").await?, free_before, "a refused pass holds nothing");
    let seat: Option<String> = app.redis.get(app.key("seat:A-R1-2")).await?;
    assert_eq!(seat, None);
    let recorded: Option<i64> = app.redis.get(app.key(&format!("ended:{}", claims.pass_id))).await?;
    assert_eq!(recorded, Some(claims.expires_at_ms), "recorded until the pass would have expired");
    let best = HoldBestAvailableRequest {
        pass_token: pass.clone(),
        event_id: app.event_id.clone(),
        user_id: "ann".into(),
        zone_id: "GA".into(),
        quantity: 1,
        allow_split: false,
    };
    let refused = app.client().hold_best_available(best).await.expect_err("revoked");
    assert_eq!(reason_of(&refused).0, "PASS_REVOKED");

    // What she already held stays hers: ending the pass stops new holds only.
    let get = GetHoldRequest { event_id: app.event_id.clone(), hold_id: kept.hold_id, user_id: "ann".into() };
    assert_eq!(app.client().get_hold(get).await?.into_inner().state, HoldState::Held as i32);

    // Joining again gives a new pass, which works.
    let again = admitted(&mut admission, &app.event_id, "ann").await;
    assert_ne!(again, pass);
    let request = HoldSeatsRequest { pass_token: again, ..app.hold_request("ann", &["A-R1-2"]) };
    assert_eq!(app.client().hold_seats(request).await?.into_inner().seat_ids, ["A-R1-2"]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pass_presented_by_another_subject_is_refused() -> anyhow::Result<()> {
    let app = spawn_app(600).await?;
    let mut admission = spawn_admission(&app).await?;
    let ann_pass = admitted(&mut admission, &app.event_id, "ann").await;

    // Bob, signed in as himself, presents Ann's pass.
    let as_bob = HoldSeatsRequest { pass_token: ann_pass.clone(), ..app.hold_request("bob", &["A-R1-1"]) };
    let refused = app.client().hold_seats(as_bob.clone()).await.expect_err("not his pass");
    assert_eq!((refused.code(), reason_of(&refused).0.as_str()), (Code::PermissionDenied, "PASS_WRONG_USER"));
    // ... leaving user_id empty (it means the token's subject) changes nothing.
    let empty = HoldSeatsRequest { user_id: String::new(), ..as_bob.clone() };
    let refused = app.client.clone().hold_seats(as_user("bob", empty)).await.expect_err("not his pass");
    assert_eq!(reason_of(&refused).0, "PASS_WRONG_USER");
    // ... and naming Ann in user_id with his own token is acting as someone else.
    let as_ann = HoldSeatsRequest { user_id: "ann".into(), ..as_bob };
    let refused = app.client.clone().hold_seats(as_user("bob", as_ann)).await.expect_err("not ann");
    assert_eq!((refused.code(), reason_of(&refused).0.as_str()), (Code::PermissionDenied, "USER_MISMATCH"));
    let seat: Option<String> = app.redis.get(app.key("seat:A-R1-1")).await?;
    assert_eq!(seat, None, "nothing was held");

    // Ann's own pass works for Ann.
    let request = HoldSeatsRequest { pass_token: ann_pass, ..app.hold_request("ann", &["A-R1-1"]) };
    assert_eq!(app.client().hold_seats(request).await?.into_inner().user_id, "ann");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ended_pass_is_refused_until_its_expiry_but_a_later_pass_with_its_id_is_not() -> anyhow::Result<()>
{
    let app = spawn_app(600).await?;
    let expires = now_ms() + 60_000;
    let pass_claims = |expires_at_ms| ticketing_proto::pass::PassClaims {
        pass_id: "7".into(),
        ..claims(&app.event_id, "ann", expires_at_ms)
    };
    let pass = app.signer.sign(pass_claims(expires));
    // As admission announces a Leave (the relay's message id; a redelivery is harmless).
    let bus = EventBus::connect(&app.env.nats_url, &app.env.nats_prefix).await?;
    let ended = PassEnded {
        event_id: app.event_id.to_uppercase(),
        user_id: "ann".into(),
        pass_id: "7".into(),
        reason: PassEndReason::Left as i32,
        expires_at: Some(timestamp_ms(expires)),
    };
    for _ in 0..2 {
        bus.publish(&envelope(format!("pass-ended:{}:ann:7", app.event_id), Body::PassEnded(ended.clone())))
            .await?;
    }
    assert_eq!(hold_until_refused(&app, "ann", &pass, "A-R1-1", "PASS_REVOKED").await, "PASS_REVOKED");
    // A pass that reuses the id (admission's Redis lost its counters) but expires later is
    // another pass: it is not refused.
    let later = app.signer.sign(pass_claims(expires + 60_000));
    let request = HoldSeatsRequest { pass_token: later, ..app.hold_request("ann", &["A-R1-1"]) };
    assert_eq!(app.client().hold_seats(request).await?.into_inner().seat_ids, ["A-R1-1"]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_facing_rpcs_need_a_valid_token_and_change_nothing_without_one() -> anyhow::Result<()> {
    let app = spawn_app(600).await?;
    let hold = app.hold("ann", &["A-R1-1"]).await?;
    let issuer = TokenIssuer::for_tests();
    let mut expired = issuer.claims("ann", false, Duration::from_secs(60));
    expired["exp"] = serde_json::json!(now_ms() / 1000 - 3_600);
    let mut elsewhere = issuer.claims("ann", false, Duration::from_secs(60));
    elsewhere["aud"] = serde_json::json!("another-service");
    let stranger = TokenIssuer::generate("test").token("ann", false, Duration::from_secs(60));
    let unknown_kid = TokenIssuer::generate("k-unknown").token("ann", false, Duration::from_secs(60));
    let cases = [
        (None, "TOKEN_MISSING"),
        (Some(issuer.sign(&expired)), "TOKEN_EXPIRED"),
        (Some(issuer.sign(&elsewhere)), "TOKEN_WRONG_AUDIENCE"),
        (Some(stranger), "TOKEN_BAD_SIGNATURE"),
        (Some(unknown_kid), "TOKEN_UNKNOWN_KEY"),
    ];
    let mut client = app.client.clone();
    for (token, reason) in cases {
        let token = token.as_deref();
        let get = GetHoldRequest {
            event_id: app.event_id.clone(),
            hold_id: hold.hold_id.clone(),
            user_id: "ann".into(),
        };
        let release = ReleaseHoldRequest {
            event_id: get.event_id.clone(),
            hold_id: get.hold_id.clone(),
            user_id: "ann".into(),
        };
        let best = HoldBestAvailableRequest {
            pass_token: app.pass("ann"),
            event_id: app.event_id.clone(),
            user_id: "ann".into(),
            zone_id: "GA".into(),
            quantity: 1,
            allow_split: false,
        };
        let answers = [
            client.hold_seats(with_token(token, app.hold_request("ann", &["A-R1-2"]))).await.map(|_| ()),
            client.hold_best_available(with_token(token, best)).await.map(|_| ()),
            client.release_hold(with_token(token, release)).await.map(|_| ()),
            client.get_hold(with_token(token, get)).await.map(|_| ()),
        ];
        for answer in answers {
            let status = answer.expect_err("refused");
            assert_eq!(
                (status.code(), reason_of(&status).0.as_str()),
                (Code::Unauthenticated, reason),
                "{status:?}"
            );
        }
    }
    // Nothing changed: Ann's hold is held, one seat of A and no GA place are taken.
    let get = GetHoldRequest { event_id: app.event_id.clone(), hold_id: hold.hold_id, user_id: "ann".into() };
    assert_eq!(app.client().get_hold(get).await?.into_inner().state, HoldState::Held as i32);
    assert_eq!(app.free("A").await?, i64::from(CAPACITY_A) - 1);
    assert_eq!(app.free("GA").await?, 100);
    Ok(())
}
