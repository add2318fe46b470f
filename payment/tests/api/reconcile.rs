//! Reconciliation against the real ledger and books: a clean sale reconciles to nothing; the
//! issue's lost charge (a payment settled as declined whose charge the provider captured after
//! all) is found and refunded, so the next run is clean; a booking whose charge the provider
//! refunded on its own is reported and left to a person; a dry run changes nothing; and the
//! `payment-reconcile` command says the same with its exit codes.

use std::process::Command;

use sea_orm::ConnectionTrait;

use ticketing_proto::v1::{self, DiscrepancyKind, PaymentStatus};
use tonic::Code;

use crate::helpers::{TestApp, spawn_app};

async fn status(app: &TestApp, payment_id: &str) -> String {
    app.scalar_text(&format!("SELECT status FROM payment.payments WHERE payment_id = '{payment_id}'")).await
}

fn kinds(report: &v1::ReconcileReport) -> Vec<(DiscrepancyKind, bool)> {
    report.discrepancies.iter().map(|d| (d.kind(), d.settled)).collect()
}

/// Runs the `payment-reconcile` command against the app's database; its exit code and output.
fn command(app: &TestApp, seat_lock_url: &str, args: &[&str]) -> (i32, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_payment-reconcile"))
        .args(args)
        .env("DATABASE_URL", &app.env.database_url)
        .env("AUTH_JWKS", service_runtime::auth::AuthArgs::for_tests().jwks)
        .env("SEAT_LOCK_URL", seat_lock_url)
        .env("NATS_URL", &app.env.nats_url)
        .env("NATS_PREFIX", &app.env.nats_prefix)
        .env("RUST_LOG", "error")
        .output()
        .unwrap();
    (output.status.code().unwrap_or(-1), String::from_utf8_lossy(&output.stdout).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_sale_reconciles_to_nothing() {
    let app = spawn_app().await;
    let booked = app.seat_lock.add_hold(app.event_id, "alice", &["A-1-1"], 1);
    let declined = app.seat_lock.add_hold(app.event_id, "bob", &["A-1-2"], 1);
    let lost = app.seat_lock.add_hold(app.event_id, "carol", &["A-1-3"], 1);
    app.pay(app.pay_request("recon-ok-1", booked, "alice", "pm_card_ok")).await.unwrap();
    app.pay(app.pay_request("recon-declined-1", declined, "bob", "pm_card_declined")).await.unwrap();
    app.seat_lock.refuse_confirm(Some((Code::FailedPrecondition, "HOLD_EXPIRED")));
    let refunded = app.pay(app.pay_request("recon-lost-1", lost, "carol", "pm_card_ok")).await.unwrap();
    assert_eq!(refunded.payment.unwrap().status(), PaymentStatus::Refunded);

    let report = app.reconcile(false).await;

    assert_eq!(report.charges_checked, 3, "{report:?}");
    assert!(report.discrepancies.is_empty(), "{report:?}");
    assert_eq!(report.unsettled, 0);
    assert_eq!(app.count("reconciliation_runs", "unsettled = 0").await, 2, "the start's run and this one");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_charge_captured_after_it_was_settled_as_declined_is_found_and_refunded() {
    let app = spawn_app().await;
    let hold_id = app.seat_lock.add_hold(app.event_id, "dave", &["A-2-1"], 1);
    let paid = app.pay(app.pay_request("recon-late-1", hold_id, "dave", "pm_card_declined")).await.unwrap();
    let payment = paid.payment.unwrap();
    assert_eq!(payment.status(), PaymentStatus::Declined);
    // What the old recovery did: the payment closed as declined, and the provider
    // then captured the charge after all.
    app.db
        .execute_unprepared(&format!(
            "UPDATE payment.psp_ledger SET status = 'captured', decline_reason = NULL \
             WHERE idempotency_key = '{}'",
            payment.payment_id
        ))
        .await
        .unwrap();

    let dry = app.reconcile(true).await;
    assert_eq!(kinds(&dry), [(DiscrepancyKind::ChargeWithoutBooking, false)], "{dry:?}");
    assert_eq!(dry.unsettled, 1);
    assert_eq!(status(&app, &payment.payment_id).await, "declined", "a dry run changes nothing");

    let report = app.reconcile(false).await;

    assert_eq!(kinds(&report), [(DiscrepancyKind::ChargeWithoutBooking, true)], "{report:?}");
    assert_eq!(report.unsettled, 0);
    assert_eq!(status(&app, &payment.payment_id).await, "refunded");
    let ledger = app
        .scalar_text(&format!(
            "SELECT status FROM payment.psp_ledger WHERE idempotency_key = '{}'",
            payment.payment_id
        ))
        .await;
    assert_eq!(ledger, "refunded", "the money went back");
    assert_eq!(app.count("refunds", "state = 'refunded' AND requested_by = 'system'").await, 1);
    let told = app.event_with_id(&format!("refunded:{}", payment.payment_id)).await;
    assert!(told.is_some(), "the user is told of the refund");
    let replay = app.pay(app.pay_request("recon-late-1", hold_id, "dave", "pm_card_declined")).await.unwrap();
    assert_eq!(replay.payment.unwrap().status(), PaymentStatus::Refunded, "the key answers the truth now");

    let again = app.reconcile(false).await;
    assert!(again.discrepancies.is_empty(), "{again:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_booking_whose_charge_was_refunded_elsewhere_is_reported_and_the_command_agrees() {
    let app = spawn_app().await;
    // Nothing here needs seat-lock: the command may be pointed anywhere well-formed.
    let url = "http://127.0.0.1:9".to_owned();
    let hold_id = app.seat_lock.add_hold(app.event_id, "erin", &["A-3-1"], 1);
    let paid = app.pay(app.pay_request("recon-chargeback-1", hold_id, "erin", "pm_card_ok")).await.unwrap();
    let payment = paid.payment.unwrap();
    assert_eq!(command(&app, &url, &["--dry-run"]).0, 0, "clean before");

    // The provider refunded it on its own (a dispute, a console click): the booking stands
    // without money behind it, which a person must decide about.
    app.db
        .execute_unprepared(&format!(
            "UPDATE payment.psp_ledger SET status = 'refunded', refund_id = 're_console' \
             WHERE idempotency_key = '{}'",
            payment.payment_id
        ))
        .await
        .unwrap();

    let report = app.reconcile(false).await;
    assert_eq!(kinds(&report), [(DiscrepancyKind::BookingWithoutCharge, false)], "{report:?}");
    assert_eq!(report.unsettled, 1);
    assert_eq!(report.discrepancies[0].booking_id, paid.booking.unwrap().booking_id);

    let (code, out) = command(&app, &url, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("BOOKING_WITHOUT_CHARGE") && out.contains("UNSETTLED"), "{out}");
    let (code, json) = command(&app, &url, &["--dry-run", "--json"]);
    assert_eq!(code, 1);
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["unsettled"], 1, "{json}");
    assert_eq!(json["discrepancies"][0]["kind"], "BOOKING_WITHOUT_CHARGE");
    let (code, _) = command(&app, "not-a-url", &[]);
    assert_eq!(code, 64, "bad configuration");
}
