//! Slow providers. The case study's question, scaled down: a charge slower than hold TTL +
//! checkout grace + recovery window, with recovery running while the charge is in flight,
//! ends in exactly one booking or exactly one refund, the ledger balanced and the user told.
//! And a provider that times out, then captures, never charges one hold twice.

use std::time::Duration;

use payment::App;
use test_support::testenv::{TestEnv, eventually};
use ticketing_proto::v1::PaymentStatus;
use tonic::Code;

use crate::helpers::{FakeSeatLock, TestApp, attach, config, reason, spawn_fake_seat_lock};

/// How long the scaled-down hold lives, and how long BeginCheckout extends it.
const HOLD_TTL: Duration = Duration::from_millis(400);
const CHECKOUT_GRACE: Duration = Duration::from_millis(400);
/// Recovery drives payments unchanged for a second and runs every second, so it runs
/// (about three times) while a 3.5 s charge is in flight.
const RECOVERY_AFTER_SECS: u64 = 1;
/// A charge slower than HOLD_TTL + CHECKOUT_GRACE + RECOVERY_AFTER_SECS.
const SLOW_CARD: &str = "pm_card_slow_3500";
const ASYNC_CARD: &str = "pm_card_async_3500";

/// A payment service whose holds expire as above and whose provider calls time out after
/// `provider_timeout_ms`.
async fn spawn_hurried_app(provider_timeout_ms: u64, expiring_holds: bool) -> TestApp {
    let env = TestEnv::new().await.unwrap();
    let seat_lock = FakeSeatLock::default();
    if expiring_holds {
        seat_lock.expire_holds(HOLD_TTL, CHECKOUT_GRACE);
    }
    let url = spawn_fake_seat_lock(seat_lock.clone()).await;
    let mut config = config(&env, &url);
    config.recovery_after_secs = RECOVERY_AFTER_SECS;
    config.provider_timeout_ms = provider_timeout_ms;
    attach(env, seat_lock, App::build(config).await.unwrap()).await
}

/// Pays a hold that expires long before the charge completes; returns the Pay's answer
/// after checking the books once everything settled.
async fn slower_than_the_hold(method: &str, provider_timeout_ms: u64) -> PaymentStatus {
    let app = spawn_hurried_app(provider_timeout_ms, true).await;
    let hold_id = app.seat_lock.add_hold(app.event_id, "nora", &["A-1-1"], 1);

    let answer = app.pay(app.pay_request("key-slow-1", hold_id, "nora", method)).await;

    assert!(app.all_settled().await, "recovery settles every payment and charge");
    assert_eq!(
        app.ledger_violations().await,
        Vec::<String>::new(),
        "every captured charge is booked or refunded"
    );
    let payments = app.count("payments", "").await;
    let booked = app.count("bookings", "status = 'confirmed'").await;
    let refunded = app.count("refunds", "state = 'refunded'").await;
    assert_eq!((payments, booked + refunded), (1, 1), "one payment, one booking or one refund");
    assert_eq!(app.count("psp_ledger", "").await, 1, "one charge");
    let answer = answer.unwrap_or_else(|status| panic!("Pay answers a state, not an error: {status:?}"));
    let payment = answer.payment.clone().unwrap();
    let told = if booked == 1 {
        format!("booking:{}", app.scalar_text("SELECT booking_id::text FROM payment.bookings").await)
    } else {
        format!("refunded:{}", payment.payment_id)
    };
    assert!(app.event_with_id(&told).await.is_some(), "the user is told: {told}");
    // A replay now answers the settled outcome.
    let replay = app.pay(app.pay_request("key-slow-1", hold_id, "nora", method)).await.unwrap();
    let settled = if booked == 1 { PaymentStatus::Confirmed } else { PaymentStatus::Refunded };
    assert_eq!(replay.payment.unwrap().status(), settled);
    assert_eq!(app.reconciliation_findings().await, [], "the ledger and the books agree");
    payment.status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_synchronous_charge_slower_than_the_hold_is_refunded_once() {
    // The request waits out the whole charge (the provider timeout is longer), while
    // recovery runs over its payment; the hold is gone by then.
    let answered = slower_than_the_hold(SLOW_CARD, 30_000).await;
    assert_eq!(answered, PaymentStatus::Refunded);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_synchronous_charge_that_outlasts_the_provider_timeout_is_pending_then_settled_once() {
    // The 12-minute charge against a 20 s timeout, scaled down: the request gives up, answers
    // PENDING, and recovery settles the charge once the provider captures it.
    let answered = slower_than_the_hold(SLOW_CARD, 500).await;
    assert_eq!(answered, PaymentStatus::Pending);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_asynchronous_charge_slower_than_the_hold_is_pending_then_settled_once() {
    let answered = slower_than_the_hold(ASYNC_CARD, 30_000).await;
    assert_eq!(answered, PaymentStatus::Pending);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_that_times_out_then_captures_charges_one_hold_once() {
    // The hold stays live; the provider answers after the timeout.
    let app = spawn_hurried_app(300, false).await;
    let hold_id = app.seat_lock.add_hold(app.event_id, "omar", &["A-2-1", "A-2-2"], 2);
    let first = app.pay_request("key-timeout-1", hold_id, "omar", "pm_card_slow_2000");

    let pending = app.pay(first.clone()).await.unwrap();
    let payment = pending.payment.unwrap();
    assert_eq!(payment.status(), PaymentStatus::Pending);

    // The same key again: the payment's current state, never a second charge.
    let replay = app.pay(first.clone()).await.unwrap();
    assert!(replay.replayed);
    assert_eq!(replay.payment.as_ref().map(|p| p.payment_id.clone()), Some(payment.payment_id.clone()));
    assert_eq!(replay.payment.unwrap().status(), PaymentStatus::Pending);

    // A new key for the same hold: refused before any charge, naming the live payment; the
    // key stays unused.
    let second = app.pay_request("key-timeout-2", hold_id, "omar", "pm_card_ok");
    let refused = app.pay(second).await.unwrap_err();
    assert_eq!(
        (refused.code(), reason(&refused).as_deref()),
        (Code::FailedPrecondition, Some("HOLD_ALREADY_BEING_PAID"))
    );
    let metadata = service_runtime::status::reason(&refused).unwrap().1;
    assert_eq!(metadata.get("payment_id"), Some(&payment.payment_id));
    assert_eq!(app.count("idempotency_keys", "key = 'key-timeout-2'").await, 0);
    assert_eq!(app.count("psp_ledger", "").await, 1);

    // The provider captures; recovery books; the key answers the booking from then on.
    assert!(app.all_settled().await);
    let booked = eventually(Duration::from_secs(15), || {
        let request = first.clone();
        let app = &app;
        async move {
            let answer = app.pay(request).await.unwrap();
            (answer.payment.as_ref().unwrap().status() == PaymentStatus::Confirmed).then_some(answer)
        }
    })
    .await
    .expect("the replay answers CONFIRMED once recovery booked");
    assert_eq!(booked.booking.unwrap().seat_ids, vec!["A-2-1", "A-2-2"]);
    assert_eq!(app.count("psp_ledger", "").await, 1, "one charge for the hold");
    assert_eq!(app.ledger_violations().await, Vec::<String>::new());
    assert!(app.event_with_id(&format!("booking:{}", booked.payment.unwrap().booking_id)).await.is_some());
    assert_eq!(app.reconciliation_findings().await, [], "the ledger and the books agree");
}
