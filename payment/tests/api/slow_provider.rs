//! The case study's question, scaled down: a charge slower than hold TTL + checkout grace +
//! recovery window, with recovery running while the charge is in flight, ends in exactly one
//! booking or exactly one refund, the ledger balanced and the user told.

use std::time::Duration;

use payment::App;
use ticketing_proto::v1::PaymentStatus;

use crate::helpers::{FakeSeatLock, attach, config, spawn_fake_seat_lock};
use tools::testenv::TestEnv;

/// How long the scaled-down hold lives, and how long BeginCheckout extends it.
const HOLD_TTL: Duration = Duration::from_millis(400);
const CHECKOUT_GRACE: Duration = Duration::from_millis(400);
/// Recovery settles payments older than a second and runs every second, so it runs (three
/// times) while the 3.5 s charge is in flight.
const RECOVERY_AFTER_SECS: u64 = 1;

async fn slower_than_the_hold(method: &str) {
    let env = TestEnv::new().await.unwrap();
    let seat_lock = FakeSeatLock::default();
    seat_lock.expire_holds(HOLD_TTL, CHECKOUT_GRACE);
    let url = spawn_fake_seat_lock(seat_lock.clone()).await;
    let mut config = config(&env, &url);
    config.recovery_after_secs = RECOVERY_AFTER_SECS;
    let app = attach(env, seat_lock, App::build(config).await.unwrap()).await;
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
    let answer = answer.unwrap_or_else(|status| panic!("Pay answers a state, not an error: {status:?}"));
    let payment = answer.payment.unwrap();
    let told = if booked == 1 {
        format!("booking:{}", app.scalar_text("SELECT booking_id::text FROM payment.bookings").await)
    } else {
        format!("refunded:{}", payment.payment_id)
    };
    assert!(app.event_with_id(&told).await.is_some(), "the user is told: {told}");
    assert_eq!(app.count("psp_ledger", "").await, 1, "one charge");
    assert_ne!(payment.status(), PaymentStatus::Declined, "money may have moved: never declined");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_synchronous_charge_slower_than_the_hold_is_booked_or_refunded_once() {
    slower_than_the_hold("pm_card_slow_3500").await;
}
