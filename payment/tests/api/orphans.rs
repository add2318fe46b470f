//! A payment process killed with many payments in flight: the restarted process settles the
//! dead process's payments as soon as its lease has run out, in batches larger than the old
//! 100 a minute, without waiting `RECOVERY_AFTER_SECS` (an hour here, so only the dead-owner
//! path can have settled them).

use std::time::Duration;

use payment::App;
use test_support::testenv::{TestEnv, eventually};
use ticketing_proto::v1::PaymentStatus;

use crate::{
    crash::spawn_binary,
    helpers::{FakeSeatLock, attach, authed, config, spawn_fake_seat_lock},
};

/// Payments in flight when the process dies: more than one old recovery batch (100).
const IN_FLIGHT: usize = 150;
/// Slow enough that every payment is still charging when the process is killed.
const SLOW_CARD: &str = "pm_card_slow_2000";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_process_settles_a_dead_owners_payments_without_waiting_recovery_after_secs() {
    let env = TestEnv::new().await.unwrap();
    let seat_lock = FakeSeatLock::default();
    let url = spawn_fake_seat_lock(seat_lock.clone()).await;
    let (mut dead, client) = spawn_binary(&env, &url, None).await;
    let db = env.database().await.unwrap();

    let event_id = uuid::Uuid::now_v7();
    let mut requests = Vec::new();
    let mut callers = Vec::new();
    for n in 0..IN_FLIGHT {
        let user = format!("orphan-{n}");
        let hold_id = seat_lock.add_hold(event_id, &user, &[&format!("A-{n}-1")], 1);
        let request = ticketing_proto::v1::PayRequest {
            idempotency_key: format!("orphan-key-{n}"),
            event_id: event_id.to_string(),
            hold_id: hold_id.to_string(),
            user_id: user,
            payment_method: SLOW_CARD.into(),
        };
        let mut client = client.clone();
        let call = authed(request.clone());
        callers.push(tokio::spawn(async move { client.pay(call).await }));
        requests.push(request);
    }
    let count = |query: &'static str| {
        let db = db.clone();
        async move {
            use sea_orm::{ConnectionTrait, DbBackend, Statement};
            let row =
                db.query_one_raw(Statement::from_string(DbBackend::Postgres, query)).await.unwrap().unwrap();
            row.try_get_by_index::<i64>(0).unwrap()
        }
    };
    let all_charging = eventually(Duration::from_secs(30), || async {
        (count("SELECT count(*) FROM payment.psp_ledger").await == IN_FLIGHT as i64).then_some(())
    })
    .await;
    assert!(all_charging.is_some(), "the provider has every charge");
    dead.kill().await.unwrap();
    for caller in callers {
        assert!(caller.await.unwrap().is_err(), "the killed process answered no Pay");
    }
    assert_eq!(
        count("SELECT count(*) FROM payment.payments WHERE status = 'charging'").await,
        IN_FLIGHT as i64,
        "the crash left every payment charging"
    );

    // Restart with recovery by age an hour away: only the dead owner's lease can hand the
    // payments over.
    let mut config = config(&env, &url);
    config.recovery_after_secs = 3600;
    let app = attach(env, seat_lock, App::build(config).await.unwrap()).await;

    let settled = eventually(Duration::from_secs(60), || async {
        let confirmed = app.count("payments", "status = 'confirmed'").await;
        (confirmed == IN_FLIGHT as i64).then_some(())
    })
    .await;
    assert!(
        settled.is_some(),
        "the restarted process settles the dead process's payments: {} of {IN_FLIGHT} confirmed, {} still charging",
        app.count("payments", "status = 'confirmed'").await,
        app.count("payments", "status = 'charging'").await,
    );
    assert_owned_by_the_restarted_process(&app).await;

    // Each key answers its booking; one charge per hold; the books agree with the provider.
    for request in requests.iter().step_by(10) {
        let replay = app.pay(request.clone()).await.unwrap();
        assert!(replay.replayed);
        assert_eq!(replay.payment.unwrap().status(), PaymentStatus::Confirmed);
    }
    assert_eq!(app.count("psp_ledger", "status = 'captured'").await, IN_FLIGHT as i64);
    assert_eq!(app.ledger_violations().await, Vec::<String>::new());
    assert!(app.outbox_drained().await, "every booking reaches the user");
    assert_eq!(app.reconciliation_findings().await, [], "the ledger and the books agree");
}

/// The lease logic as the rows show it: two instances, the dead one's lease run out, and
/// every payment adopted by the live one.
async fn assert_owned_by_the_restarted_process(app: &crate::helpers::TestApp) {
    assert_eq!(app.count("payment_instances", "").await, 2, "the dead process and the restarted one");
    let lease = payment::instances::DEFAULT_LEASE.as_secs_f64();
    assert_eq!(
        app.count("payment_instances", &format!("last_seen > now() - make_interval(secs => {lease})")).await,
        1,
        "only the restarted process holds a lease"
    );
    let live = app
        .scalar_text(&format!(
            "SELECT instance_id::text FROM payment.payment_instances \
             WHERE last_seen > now() - make_interval(secs => {lease})"
        ))
        .await;
    assert_eq!(
        app.count("payments", &format!("owner_instance = '{live}'")).await,
        IN_FLIGHT as i64,
        "the restarted process adopted every payment of the dead one"
    );
}

/// A Pay killed after its payment was committed `charging`, before the provider was called,
/// ends as what happened, never `DECLINED` (no card was declined): the restarted process
/// adopts it, finds no charge at the provider, re-drives the same charge, and books it, or
/// refunds it when the hold was lost meanwhile. The key answers that; one charge each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pay_killed_before_the_charge_is_settled_as_what_happened_never_declined() {
    let env = TestEnv::new().await.unwrap();
    let seat_lock = FakeSeatLock::default();
    let url = spawn_fake_seat_lock(seat_lock.clone()).await;
    let event_id = uuid::Uuid::now_v7();
    let mut requests = Vec::new();
    for (n, user) in ["kept", "lost"].into_iter().enumerate() {
        let (mut child, mut client) =
            crate::crash::spawn_crashing(&env, &url, "after_charging_committed").await;
        let hold_id = seat_lock.add_hold(event_id, user, &[&format!("B-{n}-1")], 1);
        let request = ticketing_proto::v1::PayRequest {
            idempotency_key: format!("interrupted-{user}"),
            event_id: event_id.to_string(),
            hold_id: hold_id.to_string(),
            user_id: user.into(),
            payment_method: "pm_card_ok".into(),
        };
        assert!(client.pay(authed(request.clone())).await.is_err(), "the process dies before the charge");
        assert!(!child.wait().await.unwrap().success());
        requests.push(request);
    }
    // The second hold expires while nobody drives its payment.
    seat_lock.state.lock().unwrap().deadlines.insert(requests[1].hold_id.clone(), std::time::Instant::now());

    let mut config = config(&env, &url);
    config.recovery_after_secs = 3600;
    let app = attach(env, seat_lock, App::build(config).await.unwrap()).await;
    assert_eq!(app.count("psp_ledger", "").await, 0, "the provider never saw either charge");
    assert!(app.all_settled().await, "the restarted process settles both");

    let kept = app.pay(requests[0].clone()).await.unwrap();
    let lost = app.pay(requests[1].clone()).await.unwrap();
    let (kept, lost) = (kept.payment.unwrap(), lost.payment.unwrap());
    assert_eq!(kept.status(), PaymentStatus::Confirmed, "{kept:?}");
    assert_eq!(lost.status(), PaymentStatus::Refunded, "{lost:?}");
    assert_eq!(lost.failure_reason, "hold expired before payment completed");
    assert_eq!(app.count("payments", "status = 'declined'").await, 0, "no card was declined");
    assert_eq!(app.count("psp_ledger", "").await, 2, "one charge each");
    assert_eq!(app.ledger_violations().await, Vec::<String>::new());
    // Told as what happened: a booking and a refund, no "payment failed".
    assert!(app.event_with_id(&format!("booking:{}", kept.booking_id)).await.is_some());
    assert!(app.event_with_id(&format!("refunded:{}", lost.payment_id)).await.is_some());
    let failed =
        app.stream_events().await.into_iter().filter(|(_, id, _)| id.starts_with("payment_failed:")).count();
    assert_eq!(failed, 0, "no PaymentFailed for an interrupted payment");
    assert_eq!(app.reconciliation_findings().await, [], "the ledger and the books agree");
}

/// The lease decides, not the age: a live process's payments are never adopted, and one that
/// stops gracefully gives its lease up, so what it leaves unsettled is adopted at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_owners_payments_are_left_to_it_and_a_stopped_ones_are_adopted_at_once() {
    let env = TestEnv::new().await.unwrap();
    let seat_lock = FakeSeatLock::default();
    let url = spawn_fake_seat_lock(seat_lock.clone()).await;
    let mut owner_config = config(&env, &url);
    // The charge outlasts the provider timeout: the payment stays `unknown` after its Pay.
    owner_config.provider_timeout_ms = 300;
    let owner = App::build(owner_config).await.unwrap();
    let owner_id = owner.instance_id();
    let port = owner.port();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(owner.run_until_stopped(async move {
        let _ = stopped.await;
    }));
    let channel =
        ticketing_proto::connect(&format!("http://127.0.0.1:{port}"), Duration::from_secs(30)).unwrap();
    let mut client = ticketing_proto::v1::payment_service_client::PaymentServiceClient::new(channel);

    let mut other_config = config(&env, &url);
    other_config.recovery_after_secs = 3600;
    let other = App::build(other_config).await.unwrap();
    assert_ne!(other.instance_id(), owner_id);

    let event_id = uuid::Uuid::now_v7();
    let hold_id = seat_lock.add_hold(event_id, "pia", &["C-1-1"], 1);
    let request = ticketing_proto::v1::PayRequest {
        idempotency_key: "lease-key-1".into(),
        event_id: event_id.to_string(),
        hold_id: hold_id.to_string(),
        user_id: "pia".into(),
        payment_method: "pm_card_slow_5000".into(),
    };
    let pending = client.pay(authed(request)).await.unwrap().into_inner();
    assert_eq!(pending.payment.unwrap().status(), PaymentStatus::Pending);

    // The owner is alive: nothing to adopt.
    let pass = other.recover_orphaned_payments().await.unwrap();
    assert_eq!(pass.adopted, 0, "a live owner's payment is left to it: {pass:?}");

    // A graceful stop gives the lease up: adopted at once, whatever the lease's length.
    stop.send(()).unwrap();
    serving.await.unwrap().unwrap();
    let db = env.database().await.unwrap();
    let owner_rows = {
        use sea_orm::{ConnectionTrait, DbBackend, Statement};
        let row = db
            .query_one_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "SELECT count(*) FROM payment.payment_instances WHERE instance_id = $1",
                [owner_id.into()],
            ))
            .await
            .unwrap()
            .unwrap();
        row.try_get_by_index::<i64>(0).unwrap()
    };
    assert_eq!(owner_rows, 0, "the stopped process gave its lease up");
    let pass = other.recover_orphaned_payments().await.unwrap();
    assert_eq!((pass.adopted, pass.pending), (1, 1), "adopted, still pending at the provider: {pass:?}");
    let again = other.recover_orphaned_payments().await.unwrap();
    assert_eq!(again.adopted, 0, "an adopted payment is the adopter's: {again:?}");
}

/// A Pay that charged but could not reach seat-lock answers UNAVAILABLE and leaves its
/// payment `captured`, driven by nobody. Once seat-lock is back, the user's retry with the
/// same key settles it (or finds it settled), instead of `REQUEST_IN_FLIGHT` until
/// `RECOVERY_AFTER_SECS` (300 s here) has passed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_seat_lock_is_back_books_instead_of_waiting_for_recovery() {
    let app = crate::helpers::spawn_app().await;
    let hold_id = app.seat_lock.add_hold(app.event_id, "quin", &["D-1-1"], 1);
    let request = app.pay_request("stalled-key-1", hold_id, "quin", "pm_card_ok");
    app.seat_lock.refuse_confirm(Some((tonic::Code::Unavailable, "SEAT_LOCK_DOWN")));

    let down = app.pay(request.clone()).await.unwrap_err();
    assert_eq!(
        (down.code(), crate::helpers::reason(&down).as_deref()),
        (tonic::Code::Unavailable, Some("SEAT_LOCK_UNAVAILABLE"))
    );
    assert_eq!(app.count("payments", "status = 'captured'").await, 1, "charged, not booked");
    app.seat_lock.refuse_confirm(None);

    // A retry may meet recovery driving the payment at that instant (REQUEST_IN_FLIGHT for
    // the time of one ConfirmHold): asked again then.
    let answer = eventually(Duration::from_secs(10), || {
        let request = request.clone();
        let app = &app;
        async move {
            match app.pay(request).await {
                Err(status) if crate::helpers::reason(&status).as_deref() == Some("REQUEST_IN_FLIGHT") => {
                    None
                }
                answer => Some(answer),
            }
        }
    })
    .await
    .expect("the retry is answered, not REQUEST_IN_FLIGHT until RECOVERY_AFTER_SECS")
    .unwrap();
    assert_eq!(answer.payment.unwrap().status(), PaymentStatus::Confirmed);
    assert_eq!(answer.booking.unwrap().seat_ids, vec!["D-1-1"]);
    assert_eq!(app.count("psp_ledger", "").await, 1, "one charge");
    assert_eq!(app.ledger_violations().await, Vec::<String>::new());
    assert_eq!(app.reconciliation_findings().await, [], "the ledger and the books agree");
}
