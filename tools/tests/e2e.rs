//! The whole mesh as real processes behind HAProxy: the happy path end to end, and the
//! small flash sale with its invariant checks.
//!
//! Needs the service binaries (`cargo build --bins`, which the README's test command runs)
//! and HAProxy (installed by that command too).

#![allow(clippy::expect_used, clippy::unwrap_used)]

#[path = "failures/helpers.rs"]
#[allow(dead_code)] // this test uses the stack harness, not the failure checks
mod helpers;

use std::time::Duration;

use helpers::start_stack;
use sea_orm::{ConnectionTrait, DbBackend, Statement};
use test_support::testenv::{TestEnv, eventually};
use ticketing_proto::v1::{
    self as pb, admission_service_client::AdmissionServiceClient,
    inventory_service_client::InventoryServiceClient, notifier_service_client::NotifierServiceClient,
    payment_service_client::PaymentServiceClient, seat_lock_service_client::SeatLockServiceClient,
};
use tokio_stream::StreamExt;
use tools::{
    catalogue,
    flashsale::{self, Mix, SimConfig},
    report,
};

/// One unary call at `path` with the mesh's codec: reaches paths no generated client has.
async fn raw_unary<Req, Resp>(
    channel: &tonic::transport::Channel,
    path: &'static str,
    request: Req,
) -> Result<Resp, tonic::Status>
where
    Req: prost::Message + Send + Sync + 'static,
    Resp: prost::Message + Default + Send + Sync + 'static,
{
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let codec = ticketing_proto::codec::ProstCodec::<Req, Resp>::default();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(path);
    grpc.unary(tonic::Request::new(request), path, codec).await.map(tonic::Response::into_inner)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_happy_path_runs_through_the_load_balancer() -> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    let stack = start_stack(&env, None).await?;
    let lb = tonic::transport::Endpoint::from_shared(stack.0.config.lb_url())?.connect().await?;

    // Catalogue.
    let identity = stack.0.identity.clone();
    let venue = pb::CreateVenueRequest {
        name: "Loopback Hall".into(),
        zones: vec![catalogue::seated_zone("A", "Stalls", 5_000, vec!["1".into(), "2".into()], 10)],
    };
    let now = chrono::Utc::now().timestamp_millis();
    let event = pb::CreateEventRequest {
        venue_id: String::new(),
        name: "End to end".into(),
        starts_at: Some(service_runtime::bus::timestamp_ms(now + 86_400_000)),
        sale_opens_at: Some(service_runtime::bus::timestamp_ms(now - 1_000)),
        max_tickets_per_user: 4,
        currency: "EUR".into(),
        admission_capacity: 10,
        admission_tick_ms: 50,
        pass_ttl_seconds: 120,
        cancellation_cutoff_seconds: 0,
    };
    let event = catalogue::create_event(lb.clone(), &identity.admin(), venue, event).await?;
    let inventory = InventoryServiceClient::new(lb.clone());
    let event_id = event.event_id.clone();
    let user_id = "alice".to_owned();
    let alice = identity.user(&user_id);

    // Waiting room.
    let mut admission = AdmissionServiceClient::new(lb.clone());
    let joined = admission
        .join(alice.request(pb::JoinRequest { event_id: event_id.clone(), user_id: user_id.clone() }))
        .await?
        .into_inner();
    let again = admission
        .join(alice.request(pb::JoinRequest { event_id: event_id.clone(), user_id: user_id.clone() }))
        .await?
        .into_inner();
    assert_eq!(joined.ticket, again.ticket, "joining twice keeps the place");
    let mut watch = admission
        .watch_queue(
            alice.request(pb::WatchQueueRequest { event_id: event_id.clone(), user_id: user_id.clone() }),
        )
        .await?
        .into_inner();
    let mut pass = None;
    while let Some(status) = tokio::time::timeout(Duration::from_secs(20), watch.next()).await? {
        if let Some(p) = status?.pass {
            pass = Some(p);
            break;
        }
    }
    let pass = pass.expect("admitted with a pass");

    // Subscribe before buying so the confirmation is seen live.
    let mut notifications = NotifierServiceClient::new(lb.clone())
        .subscribe(alice.request(pb::SubscribeRequest { user_id: user_id.clone(), after_id: 0 }))
        .await?
        .into_inner();

    // Hold two seats.
    let mut seat_lock = SeatLockServiceClient::new(lb.clone());
    let hold = seat_lock
        .hold_seats(alice.request(pb::HoldSeatsRequest {
            pass_token: pass.token.clone(),
            event_id: event_id.clone(),
            user_id: user_id.clone(),
            seat_ids: vec!["A-1-1".into(), "A-1-2".into()],
        }))
        .await?
        .into_inner();
    assert_eq!(hold.quantity, 2);
    assert_eq!(hold.total_price_cents, 10_000);

    // Payment's steps are not reachable from outside: ConfirmHold through the load balancer,
    // at its old public path or its internal one, sells nothing; BeginCheckout and the
    // sold-seat list (every buyer's id) answer nothing either.
    let confirm = ticketing_proto::internal::ConfirmHoldRequest {
        event_id: event_id.clone(),
        hold_id: hold.hold_id.clone(),
        user_id: user_id.clone(),
        booking_id: "booking-from-outside".into(),
    };
    let checkout = ticketing_proto::internal::BeginCheckoutRequest {
        event_id: event_id.clone(),
        hold_id: hold.hold_id.clone(),
        user_id: user_id.clone(),
    };
    let old_path: Result<pb::Hold, _> =
        raw_unary(&lb, "/ticketing.v1.SeatLockService/ConfirmHold", confirm.clone()).await;
    let old_path = old_path.expect_err("ConfirmHold through the load balancer must not sell the seats");
    assert_eq!(old_path.code(), tonic::Code::Unimplemented, "{old_path:?}");
    let refusals = [
        raw_unary::<_, pb::Hold>(&lb, "/ticketing.internal.v1.SeatLockInternalService/ConfirmHold", confirm)
            .await,
        raw_unary::<_, pb::Hold>(
            &lb,
            "/ticketing.internal.v1.SeatLockInternalService/BeginCheckout",
            checkout,
        )
        .await,
        raw_unary::<_, pb::Hold>(
            &lb,
            "/ticketing.internal.v1.PaymentInternalService/ListSoldSeats",
            ticketing_proto::internal::ListSoldSeatsRequest { event_id: event_id.clone() },
        )
        .await,
    ];
    for refusal in refusals {
        let status = refusal.expect_err("internal RPCs are refused at the load balancer");
        assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
        assert!(status.message().contains("internal"), "{status:?}");
    }
    let still = seat_lock
        .get_hold(alice.request(pb::GetHoldRequest {
            event_id: event_id.clone(),
            hold_id: hold.hold_id.clone(),
            user_id: user_id.clone(),
        }))
        .await?
        .into_inner();
    assert_eq!(still.state, pb::HoldState::Held as i32, "the hold is untouched: {still:?}");

    // Inventory shows them held, from its event stream.
    let held = eventually(Duration::from_secs(10), || {
        let mut inventory = inventory.clone();
        let event_id = event_id.clone();
        async move {
            let a =
                inventory.get_availability(pb::GetAvailabilityRequest { event_id }).await.ok()?.into_inner();
            (a.zones[0].held == 2).then_some(())
        }
    })
    .await;
    assert!(held.is_some(), "inventory shows the held seats");

    // Pay, twice with the same key: one charge, the same answer.
    let mut payment = PaymentServiceClient::new(lb.clone());
    let pay = pb::PayRequest {
        idempotency_key: "e2e-key-0001".into(),
        event_id: event_id.clone(),
        hold_id: hold.hold_id.clone(),
        user_id: user_id.clone(),
        payment_method: "pm_card_ok".into(),
    };
    let paid = payment.pay(alice.request(pay.clone())).await?.into_inner();
    let replay = payment.pay(alice.request(pay)).await?.into_inner();
    let booking = paid.booking.clone().expect("a booking");
    assert_eq!(paid.payment.as_ref().map(|p| p.status()), Some(pb::PaymentStatus::Confirmed));
    assert_eq!(replay.booking.map(|b| b.booking_id), Some(booking.booking_id.clone()));
    assert!(replay.replayed);

    // The confirmation reaches the user's live stream.
    let confirmed = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(n) = notifications.next().await {
            let n = n?;
            if n.kind() == pb::NotificationKind::BookingConfirmed {
                return Ok::<_, tonic::Status>(Some(n));
            }
        }
        Ok(None)
    })
    .await??
    .expect("a BookingConfirmed notification");
    assert_eq!(confirmed.event_id, event_id);

    // Ground truth in Postgres: the booking, its seats and one seat_guard row per seat.
    let db = env.database().await?;
    let count = |sql: &'static str| {
        let db = db.clone();
        let booking_id = booking.booking_id.clone();
        async move {
            let row = db
                .query_one_raw(Statement::from_sql_and_values(DbBackend::Postgres, sql, [booking_id.into()]))
                .await?
                .expect("a row");
            anyhow::Ok(row.try_get_by_index::<i64>(0)?)
        }
    };
    assert_eq!(count("SELECT count(*) FROM payment.bookings WHERE booking_id::text = $1").await?, 1);
    assert_eq!(count("SELECT count(*) FROM payment.seat_guard WHERE booking_id::text = $1").await?, 2);
    assert_eq!(count("SELECT count(*) FROM notifier.inbox WHERE message_id = 'booking:' || $1").await?, 1);

    // Inventory shows the seats sold.
    let sold = eventually(Duration::from_secs(10), || {
        let mut inventory = inventory.clone();
        let event_id = event_id.clone();
        async move {
            let a =
                inventory.get_availability(pb::GetAvailabilityRequest { event_id }).await.ok()?.into_inner();
            (a.zones[0].sold == 2 && a.zones[0].held == 0).then_some(())
        }
    })
    .await;
    assert!(sold.is_some(), "inventory shows the sold seats");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_flash_sale_keeps_every_invariant() -> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    let stack = start_stack(&env, None).await?;
    // Small, and with every behaviour of the mix; the stack's holds live 600 s, so nobody
    // walks away from a hold here (releases are checked instead).
    let out = std::env::temp_dir().join(format!("ticketing-e2e-{}-report", env.id));
    let mut config = SimConfig::new(
        stack.0.config.lb_url(),
        env.database_url.clone(),
        out.clone(),
        stack.0.identity.clone(),
    );
    config.seats = 100;
    config.ga_capacity = 20;
    config.users = 300;
    config.admission_capacity = 50;
    config.open_in_secs = 2.0;
    config.mix =
        Mix { contention: 0.3, release: 0.05, let_expire: 0.0, declined: 0.05, slow: 0.02, replay: 0.1 };
    config.slow_pay_ms = 1_500;
    config.settle_secs = 30;
    config.max_secs = 240;
    config.progress = false;
    config.pids_dir = Some(stack.0.config.state_dir.join("pids"));
    let outcome = flashsale::run(config).await?;
    let html = report::write(&outcome, &out)?;
    let summary = report::summary(&outcome, &html);
    println!("{summary}");
    assert!(outcome.ok(), "{summary}");
    let v = &outcome.verification;
    assert!(v.seats_sold > 0 && v.seats_sold <= outcome.capacity, "{summary}");
    assert!(v.admissions_compared > 0 && v.admission_inversions == 0, "{summary}");
    assert_eq!(outcome.stages["errors"], 0, "{summary}");
    assert!(html.exists() && out.join("report.json").exists());
    Ok(())
}
