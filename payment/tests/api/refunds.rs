//! Refunds under load and recovery's refusal to guess.

use std::time::Duration;

use futures::future::join_all;
use payment::App;
use sea_orm::{ConnectionTrait, DbBackend, Statement};
use ticketing_proto::v1::PaymentStatus;
use tonic::Code;
use tools::testenv::TestEnv;
use uuid::Uuid;

use crate::helpers::{FakeSeatLock, attach, config, metrics, spawn_fake_seat_lock};

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
