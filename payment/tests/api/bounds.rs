//! Pay inside the concurrency limit: a payment's work runs in a detached task (so a client
//! that gives up cannot cut a charge in half), and that task keeps its slot until the payment
//! is done. Beyond the bound, Pay is refused with RESOURCE_EXHAUSTED before anything is
//! charged, and nothing is lost or charged twice.

use std::time::Duration;

use payment::App;
use test_support::testenv::{TestEnv, eventually};
use ticketing_proto::v1::PaymentStatus;
use tonic::Code;

use crate::helpers::{FakeSeatLock, attach, authed, config, reason, spawn_fake_seat_lock};

/// The replica's bound: `MAX_IN_FLIGHT`, which `MAX_PAYMENTS_IN_FLIGHT` defaults to.
const BOUND: usize = 2;
/// Payments tried while the bound is taken.
const EXTRA: usize = 3;
/// Long enough for the clients to give up and the extra payments to be tried meanwhile.
const SLOW_CARD: &str = "pm_card_slow_3000";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payments_beyond_the_bound_are_refused_and_none_is_lost_or_charged_twice() {
    let metrics = crate::helpers::metrics();
    let env = TestEnv::new().await.unwrap();
    let seat_lock = FakeSeatLock::default();
    let url = spawn_fake_seat_lock(seat_lock.clone()).await;
    let mut config = config(&env, &url);
    config.server.max_in_flight = BOUND;
    let app = attach(env, seat_lock, App::build(config).await.unwrap()).await;

    // BOUND slow payments whose clients give up once the provider has the charge: the
    // charges go on in their detached tasks.
    let mut slow = Vec::new();
    let mut callers = Vec::new();
    for n in 0..BOUND {
        let user = format!("slow-{n}");
        let hold_id = app.seat_lock.add_hold(app.event_id, &user, &[&format!("A-1-{n}")], 1);
        let request = app.pay_request(&format!("key-slow-{n}"), hold_id, &user, SLOW_CARD);
        let mut client = app.client.clone();
        let call = authed(request.clone());
        callers.push(tokio::spawn(async move { client.pay(call).await }));
        slow.push(request);
    }
    let charged = eventually(Duration::from_secs(15), || async {
        (app.count("psp_ledger", "").await == BOUND as i64).then_some(())
    })
    .await;
    assert!(charged.is_some(), "the provider has the slow charges");
    for caller in &callers {
        caller.abort();
    }

    // While those charges run, more payments are refused before any money moves (a refusal
    // without a reason is the server's own shedding, still releasing the gone clients'
    // request slots: asked again).
    let mut refused = Vec::new();
    for n in 0..EXTRA {
        let user = format!("extra-{n}");
        let hold_id = app.seat_lock.add_hold(app.event_id, &user, &[&format!("A-2-{n}")], 1);
        let request = app.pay_request(&format!("key-extra-{n}"), hold_id, &user, "pm_card_ok");
        let answer = eventually(Duration::from_secs(10), || {
            let request = request.clone();
            let app = &app;
            async move {
                match app.pay(request).await {
                    Err(status) if status.code() == Code::ResourceExhausted && reason(&status).is_none() => {
                        None
                    }
                    answer => Some(answer),
                }
            }
        })
        .await
        .unwrap();
        let status = answer.expect_err("a payment beyond the bound is refused");
        assert_eq!(
            (status.code(), reason(&status).as_deref()),
            (Code::ResourceExhausted, Some("TOO_MANY_PAYMENTS_IN_FLIGHT")),
            "{status:?}"
        );
        let metadata = service_runtime::status::reason(&status).unwrap().1;
        assert_eq!(metadata.get("limit").map(String::as_str), Some("2"));
        refused.push(request);
    }
    assert_eq!(app.seat_lock.begin_calls(), BOUND, "the refused payments never reached seat-lock");
    // The one test of this binary that is refused (the series is the process's).
    let rendered = metrics.render();
    assert!(rendered.contains(&format!("payment_tasks_refused_total {EXTRA}")), "{rendered}");
    assert_eq!(app.count("idempotency_keys", "key LIKE 'key-extra-%'").await, 0, "their keys stay unused");

    // The abandoned payments finish: nothing lost, one charge each.
    assert!(app.all_settled().await);
    assert_eq!(app.count("psp_ledger", "").await, BOUND as i64, "no charge for a refused payment");
    assert_eq!(
        app.count("bookings", "status = 'confirmed'").await,
        BOUND as i64,
        "the abandoned payments booked"
    );
    // Their tasks end right after the commit: a payment asked in that instant is refused
    // and asked again.
    let pay_when_served = |request: ticketing_proto::v1::PayRequest| {
        let app = &app;
        eventually(Duration::from_secs(10), move || {
            let request = request.clone();
            async move {
                match app.pay(request).await {
                    Err(status) if status.code() == Code::ResourceExhausted => None,
                    answer => Some(answer.unwrap()),
                }
            }
        })
    };
    for request in &slow {
        let replay = pay_when_served(request.clone()).await.unwrap();
        assert_eq!(replay.payment.unwrap().status(), PaymentStatus::Confirmed);
    }

    // Once they are done, the refused payments go through with the same keys, charged once.
    for request in &refused {
        let answer = pay_when_served(request.clone()).await.unwrap();
        assert_eq!(answer.payment.unwrap().status(), PaymentStatus::Confirmed);
    }
    assert_eq!(app.count("psp_ledger", "status = 'captured'").await, (BOUND + EXTRA) as i64);
    assert_eq!(
        app.scalar(
            "SELECT count(*) FROM (SELECT p.hold_id FROM payment.psp_ledger l JOIN payment.payments p \
             ON p.payment_id::text = l.idempotency_key GROUP BY p.hold_id HAVING count(*) > 1) twice"
        )
        .await,
        0,
        "no hold charged twice"
    );
    assert_eq!(app.ledger_violations().await, Vec::<String>::new());
    assert_eq!(app.reconciliation_findings().await, [], "the ledger and the books agree");
}
