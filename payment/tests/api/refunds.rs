//! Refunds under load and recovery's refusal to guess.

use std::{sync::Arc, time::Duration};

use futures::future::join_all;
use payment::{
    App,
    commit::CommitGroups,
    gateway::SandboxGateway,
    refund::{Begun, RefundOrder, Refunds, RequestedBy},
    store::{BookingStatus, PaymentStatus as Stored},
};
use prost::Message;
use sea_orm::{ConnectionTrait, DbBackend, Statement};
use test_support::testenv::TestEnv;
use ticketing_proto::{
    events::event_envelope::Body,
    internal::ReturnSeatsRequest,
    v1::{self, PaymentStatus},
};
use tokio::sync::Notify;
use tonic::Code;
use uuid::Uuid;

use crate::helpers::{FakeSeatLock, attach, authed, config, metrics, spawn_app, spawn_fake_seat_lock};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refunding_a_booking_cancels_it_frees_its_seats_and_queues_their_return() {
    let app = spawn_app().await;
    let hold_id = app.seat_lock.add_hold(app.event_id, "rita", &["A-5-1", "A-5-2"], 2);
    let paid = app.pay(app.pay_request("key-cancel-1", hold_id, "rita", "pm_card_ok")).await.unwrap();
    let payment_id = Uuid::parse_str(&paid.payment.unwrap().payment_id).unwrap();
    let booking_id = Uuid::parse_str(&paid.booking.unwrap().booking_id).unwrap();
    // The refund state machine as CancelBooking and RefundBooking drive it.
    let db = service_runtime::db::connect(&app.env.database_url, "payment", 4).await.unwrap();
    let provider = Arc::new(SandboxGateway::new(db.clone(), CommitGroups::start(db.clone(), 1)));
    let refunds = Refunds::new(db, provider, Arc::new(Notify::new()), None);
    let order = RefundOrder {
        payment_id,
        booking_id: Some(booking_id),
        reason: "the event moved".into(),
        requested_by: RequestedBy::Operator,
    };
    // A refund for a lost hold cannot touch a booked payment.
    let lost_hold = RefundOrder { booking_id: None, ..order.clone() };
    assert_eq!(refunds.begin(&lost_hold).await.unwrap(), Begun::NotRefundable(Stored::Confirmed));

    let refunded = refunds.refund(&order).await.unwrap();

    assert_eq!(refunded.payment.status, Stored::Refunded);
    let booking = refunded.booking.unwrap();
    assert_eq!(booking.status, BookingStatus::Cancelled);
    assert_eq!(booking.cancel_reason.as_deref(), Some("the event moved"));
    assert!(booking.cancelled_at.is_some());
    // In the same commit: the seats are free in Postgres and queued for seat-lock.
    assert_eq!(app.count("seat_guard", "").await, 0);
    let payload = app.scalar_bytes("SELECT payload FROM payment.seat_returns").await;
    let returned = ReturnSeatsRequest::decode(payload.as_slice()).unwrap();
    assert_eq!(
        (returned.booking_id, returned.seat_ids, returned.quantity),
        (booking_id.to_string(), vec!["A-5-1".into(), "A-5-2".into()], 2)
    );
    assert_eq!(returned.user_id, "rita");
    let sold = app
        .internal()
        .list_sold_seats(ticketing_proto::internal::ListSoldSeatsRequest {
            event_id: app.event_id.to_string(),
        })
        .await
        .unwrap();
    assert!(sold.into_inner().seats.is_empty(), "a cancelled booking sells nothing");
    let shown = app
        .client
        .clone()
        .get_booking(authed(v1::GetBookingRequest {
            booking_id: booking_id.to_string(),
            user_id: "rita".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(shown.status(), v1::BookingStatus::Cancelled);
    // The user hears both.
    let (_, cancelled) = app.event_with_id(&format!("booking_cancelled:{booking_id}")).await.unwrap();
    assert!(
        matches!(cancelled.body, Some(Body::BookingCancelled(ref c)) if c.by_operator && c.reason == "the event moved")
    );
    assert!(app.event_with_id(&format!("refunded:{payment_id}")).await.is_some());

    // Again: the same state, and the provider refunded once.
    let refund_id = app.scalar_text("SELECT refund_id FROM payment.psp_ledger").await;
    assert_eq!(refunds.begin(&order).await.unwrap(), Begun::Refunded);
    assert_eq!(refunds.refund(&order).await.unwrap().payment.status, Stored::Refunded);
    assert_eq!(app.scalar_text("SELECT refund_id FROM payment.psp_ledger").await, refund_id);
    assert_eq!(app.scalar_text("SELECT provider_refund_id FROM payment.refunds").await, refund_id);
    assert_eq!(app.ledger_violations().await, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_refunds_at_once_settle_through_a_small_pool() {
    const PAYMENTS: usize = 100;
    let env = TestEnv::new().await.unwrap();
    let seat_lock = FakeSeatLock::default();
    // Every hold is lost by the time the charge is captured: every Pay refunds.
    seat_lock.refuse_confirm(Some((Code::FailedPrecondition, "HOLD_EXPIRED")));
    let url = spawn_fake_seat_lock(seat_lock.clone()).await;
    let mut config = config(&env, &url);
    // Four connections for 100 refunds: enough only if no transaction waits on a network
    // call (the provider's refund included).
    config.database_max_connections = 4;
    config.database_commit_groups = 2;
    let app = attach(env, seat_lock, App::build(config).await.unwrap()).await;
    let holds: Vec<Uuid> = (0..PAYMENTS)
        .map(|n| app.seat_lock.add_hold(app.event_id, &format!("user-{n}"), &[&format!("A-{n}-1")], 1))
        .collect();

    let answers = join_all(holds.iter().enumerate().map(|(n, hold_id)| {
        app.pay(app.pay_request(&format!("key-refund-{n}"), *hold_id, &format!("user-{n}"), "pm_card_ok"))
    }))
    .await;

    for answer in answers {
        let answer = answer.unwrap_or_else(|status| panic!("every Pay answers: {status:?}"));
        assert_eq!(answer.payment.unwrap().status(), PaymentStatus::Refunded);
    }
    let expected = PAYMENTS as i64;
    assert_eq!(app.count("refunds", "state = 'refunded' AND requested_by = 'system'").await, expected);
    assert_eq!(app.count("psp_ledger", "status = 'refunded' AND refund_id IS NOT NULL").await, expected);
    assert_eq!(app.ledger_violations().await, Vec::<String>::new());
    assert!(app.outbox_drained().await, "every Refunded event is published");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unexpected_ledger_status_is_an_error_and_leaves_the_payment_alone() {
    let metrics = metrics();
    let env = TestEnv::new().await.unwrap();
    let seat_lock = FakeSeatLock::default();
    let url = spawn_fake_seat_lock(seat_lock.clone()).await;
    let app = App::build(config(&env, &url)).await.unwrap();
    let db = env.database().await.unwrap();
    // Two payments whose charge's outcome is unknown; the provider shows one `disputed` (a
    // status this code has never heard of) and one `refunded` (nobody here refunded it).
    let unknown = [(Uuid::now_v7(), "disputed"), (Uuid::now_v7(), "refunded")];
    db.execute_unprepared("ALTER TABLE payment.psp_ledger DROP CONSTRAINT psp_ledger_status_check")
        .await
        .unwrap();
    for (payment_id, status) in unknown {
        for (sql, values) in [
            (
                "INSERT INTO payment.idempotency_keys (key, request_hash, state) VALUES ($1, '\\x00', 'in_flight')",
                vec![format!("key-{payment_id}").into()],
            ),
            (
                "INSERT INTO payment.payments (payment_id, idempotency_key, event_id, hold_id, user_id, \
                 amount_cents, currency, status, payment_method, updated_at) VALUES ($1, $2, $3, $4, 'pia', \
                 5000, 'EUR', 'unknown', 'pm_card_ok', now() - interval '1 hour')",
                vec![
                    payment_id.into(),
                    format!("key-{payment_id}").into(),
                    Uuid::now_v7().into(),
                    Uuid::now_v7().into(),
                ],
            ),
            (
                "INSERT INTO payment.psp_ledger (charge_id, idempotency_key, amount_cents, currency, status) \
                 VALUES ($1, $2, 5000, 'EUR', $3)",
                vec![format!("ch_{status}").into(), payment_id.to_string().into(), status.into()],
            ),
        ] {
            db.execute_raw(Statement::from_sql_and_values(DbBackend::Postgres, sql, values)).await.unwrap();
        }
    }

    let pass = app.recover_stuck_payments(Duration::from_secs(120)).await.unwrap();

    assert_eq!((pass.failed, pass.settled), (2, 0), "{pass:?}");
    let rendered = metrics.render();
    for status in ["disputed", "refunded"] {
        let series = format!("payment_ledger_unexpected_status_total{{status=\"{status}\"}} ");
        assert!(rendered.lines().any(|line| line.starts_with(&series)), "{series} in\n{rendered}");
    }
    let app = attach(env, FakeSeatLock::default(), app).await;
    assert_eq!(app.count("payments", "status = 'unknown'").await, 2, "left alone");
    assert_eq!(app.count("psp_ledger", "status IN ('disputed', 'refunded') AND refund_id IS NULL").await, 2);
    assert_eq!(app.count("refunds", "").await, 0);
    assert_eq!(app.count("outbox", "").await, 0, "the user is told nothing that is not known");
    assert_eq!(app.count("idempotency_keys", "state = 'in_flight'").await, 2);
}
