//! A real crash at every step of a Pay and of its refund: the payment binary runs with
//! `PAYMENT_CRASH_AT` armed and aborts there (no cleanup); after a restart, recovery leaves
//! every captured charge with exactly one booking or exactly one refund.

use std::{process::Stdio, time::Duration};

use payment::App;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};
use test_support::testenv::{TestEnv, eventually};
use ticketing_proto::v1::{self, PaymentStatus, payment_service_client::PaymentServiceClient};
use tokio::process::Command;
use tonic::Code;
use uuid::Uuid;

use crate::helpers::{FakeSeatLock, attach, authed, config, spawn_fake_seat_lock};

/// What a crash leaves: the payment's status and its charge's status in the ledger.
type Left = (Option<&'static str>, Option<&'static str>);

/// Where the process aborts; whether seat-lock has lost the hold by ConfirmHold (so the
/// charge is refunded); what the crash leaves; and what the key answers once recovery
/// settled it.
const CRASHES: [(&str, bool, Left, PaymentStatus); 8] = [
    // Nothing written: the replay pays for real.
    ("after_begin_checkout", false, (None, None), PaymentStatus::Confirmed),
    // The provider never saw the charge: recovery re-drives it with the same key.
    ("after_charging_committed", false, (Some("charging"), None), PaymentStatus::Confirmed),
    ("after_charge", false, (Some("charging"), Some("captured")), PaymentStatus::Confirmed),
    ("after_captured_committed", false, (Some("captured"), Some("captured")), PaymentStatus::Confirmed),
    // Seats sold in seat-lock, nothing in Postgres: ConfirmHold replayed under the reserved
    // booking id, then booked.
    ("after_confirm_hold", false, (Some("captured"), Some("captured")), PaymentStatus::Confirmed),
    ("before_commit", false, (Some("captured"), Some("captured")), PaymentStatus::Confirmed),
    ("after_refunding_committed", true, (Some("refunding"), Some("captured")), PaymentStatus::Refunded),
    // Refunded at the provider, not here: the refund is re-driven (same refund id) and finished.
    ("after_provider_refund", true, (Some("refunding"), Some("refunded")), PaymentStatus::Refunded),
];

/// A loopback port nobody listens on right now.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// Runs the real payment binary with `PAYMENT_CRASH_AT=point`, and a client once it serves.
pub(crate) async fn spawn_crashing(
    env: &TestEnv,
    urls: &crate::helpers::FakeUrls,
    point: &str,
) -> (tokio::process::Child, PaymentServiceClient<tonic::transport::Channel>) {
    spawn_binary(env, urls, Some(point)).await
}

/// Runs the real payment binary (with `PAYMENT_CRASH_AT=point` and a lease of an hour when
/// given, and its own recovery by age held off by a `RECOVERY_AFTER_SECS` of an hour), and a
/// client once it serves.
pub(crate) async fn spawn_binary(
    env: &TestEnv,
    urls: &crate::helpers::FakeUrls,
    point: Option<&str>,
) -> (tokio::process::Child, PaymentServiceClient<tonic::transport::Channel>) {
    let port = free_port();
    let point = point.unwrap_or_default();
    // Through `sh` only to switch core dumps off: the process aborts on purpose.
    let mut command = Command::new("sh");
    if !point.is_empty() {
        // Nor as the payments of a dead process: a crashing process does not adopt them.
        command.env("PAYMENT_CRASH_AT", point).env("INSTANCE_LEASE_SECS", "3600");
    }
    let child = command
        .args(["-c", "ulimit -c 0 && exec \"$0\"", env!("CARGO_BIN_EXE_payment")])
        .env("DATABASE_URL", &env.database_url)
        .env("AUTH_JWKS", service_runtime::auth::AuthArgs::for_tests().jwks)
        .env("DATABASE_MAX_CONNECTIONS", "8")
        .env("DATABASE_COMMIT_GROUPS", "2")
        .env("NATS_URL", &env.nats_url)
        .env("NATS_PREFIX", &env.nats_prefix)
        .env("SEAT_LOCK_INTERNAL_URL", &urls.seat_lock)
        .env("INVENTORY_URL", &urls.inventory)
        .envs(crate::helpers::mesh_env())
        .env("GRPC_ADDR", format!("127.0.0.1:{port}"))
        .env("METRICS_ADDR", "127.0.0.1:0")
        // Its own recovery must not touch what this test's crashes leave by age.
        .env("RECOVERY_AFTER_SECS", "3600")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let channel =
        ticketing_proto::connect(&format!("http://127.0.0.1:{port}"), Duration::from_secs(30)).unwrap();
    let client = PaymentServiceClient::new(channel);
    let serving = eventually(Duration::from_secs(30), || {
        let mut client = client.clone();
        async move {
            let probe =
                v1::GetPaymentRequest { payment_id: Uuid::now_v7().to_string(), user_id: "probe".into() };
            (client.get_payment(authed(probe)).await.err()?.code() == Code::NotFound).then_some(())
        }
    })
    .await;
    assert!(serving.is_some(), "{point:?}: the payment binary serves");
    (child, client)
}

async fn text(db: &DatabaseConnection, query: &str, key: &str) -> Option<String> {
    let row = db
        .query_one_raw(Statement::from_sql_and_values(DbBackend::Postgres, query, [key.into()]))
        .await
        .unwrap()?;
    row.try_get_by_index::<String>(0).ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_at_every_money_state_ends_in_one_booking_or_one_refund() {
    let env = TestEnv::new().await.unwrap();
    let seat_lock = FakeSeatLock::default();
    let url = spawn_fake_seat_lock(seat_lock.clone()).await;
    let db = env.database().await.unwrap();
    let event_id = Uuid::now_v7();
    let mut requests = Vec::new();

    for (n, (point, hold_lost, left, _)) in CRASHES.iter().enumerate() {
        let (mut child, mut client) = spawn_crashing(&env, &url, point).await;
        let user = format!("crash-{n}");
        let hold_id = seat_lock.add_hold(event_id, &user, &[&format!("A-{n}-1")], 1);
        seat_lock.refuse_confirm(hold_lost.then_some((Code::FailedPrecondition, "HOLD_EXPIRED")));
        let request = v1::PayRequest {
            idempotency_key: format!("crash-key-{point}"),
            event_id: event_id.to_string(),
            hold_id: hold_id.to_string(),
            user_id: user,
            payment_method: "pm_card_ok".into(),
        };

        let answer = client.pay(authed(request.clone())).await;
        assert!(answer.is_err(), "{point}: the process aborts instead of answering: {answer:?}");
        let exit = child.wait().await.unwrap();
        assert!(!exit.success(), "{point}: the process died ({exit:?})");
        // What the crash left, before any recovery: proof it stopped at `point`.
        let key = &request.idempotency_key;
        let payment = text(&db, "SELECT status FROM payment.payments WHERE idempotency_key = $1", key).await;
        let charge = text(
            &db,
            "SELECT l.status FROM payment.psp_ledger l JOIN payment.payments p \
             ON p.payment_id::text = l.idempotency_key WHERE p.idempotency_key = $1",
            key,
        )
        .await;
        assert_eq!(
            (payment.as_deref(), charge.as_deref()),
            *left,
            "{point}: (payment, charge) after the crash"
        );
        requests.push(request);
    }

    // Restart (in-process, unarmed); seat-lock answers again; recovery drives every payment.
    seat_lock.refuse_confirm(None);
    let app = App::build(config(&env, &url)).await.unwrap();
    for _ in 0..3 {
        app.recover_stuck_payments(Duration::ZERO).await.unwrap();
    }
    let app = attach(env, seat_lock, app).await;

    for ((point, _, _, expected), request) in CRASHES.iter().zip(&requests) {
        let answer = app.pay(request.clone()).await.unwrap_or_else(|status| panic!("{point}: {status:?}"));
        assert_eq!(answer.payment.as_ref().map(|p| p.status()), Some(*expected), "{point}: {answer:?}");
        let charges = app
            .count(
                "psp_ledger l JOIN payment.payments p ON p.payment_id::text = l.idempotency_key",
                &format!("p.hold_id = '{}'", request.hold_id),
            )
            .await;
        assert_eq!(charges, 1, "{point}: exactly one charge for the hold");
    }
    assert_eq!(app.ledger_violations().await, Vec::<String>::new());
    assert_eq!(app.count("payments", "status NOT IN ('confirmed', 'refunded')").await, 0);
    // The refund re-driven after the provider had refunded kept the provider's refund id.
    assert_eq!(
        app.count("refunds r JOIN payment.psp_ledger l ON l.refund_id = r.provider_refund_id", "").await,
        2
    );
    assert!(app.outbox_drained().await, "every outcome reaches the user");
    assert_eq!(app.reconciliation_findings().await, [], "the ledger and the books agree");
}
