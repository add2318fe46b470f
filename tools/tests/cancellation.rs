//! Cancel, then resell, through the real processes: a buyer cancels, the refund goes through
//! the provider, seat-lock gets the seats back from payment's outbox, another buyer gets the
//! same seat, and Postgres (payment's live bookings and seat guard), seat-lock's Redis and
//! inventory's seat map agree seat by seat; the first buyer is told of the cancellation and
//! the refund.
//!
//! Needs the service binaries (`cargo build --bins`), HAProxy and `nats-server`, as
//! `failures.rs` does.

#![allow(clippy::expect_used, clippy::unwrap_used)]

// Shared with `failures.rs`, which uses the rest of it.
#[allow(dead_code)]
#[path = "failures/helpers.rs"]
mod helpers;

use std::collections::BTreeMap;

use anyhow::Context;
use fred::prelude::*;
use helpers::*;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};
use test_support::testenv::{TestEnv, eventually};
use ticketing_proto::{
    internal::{ReturnSeatsRequest, seat_lock_internal_service_client::SeatLockInternalServiceClient},
    v1::{
        self as pb, BookingStatus, NotificationKind, PaymentStatus, SeatState,
        notifier_service_client::NotifierServiceClient,
    },
};
use tonic::Code;

const SEATS: u32 = 4;
const LIMIT: u32 = 2;

/// Who has each seat, as one store sees it: `Some(hold id)` when sold, `None` when free.
type Owners = BTreeMap<String, Option<String>>;

/// Payment's view: the seats of live bookings, each with one seat_guard row of that booking.
async fn postgres_owners(
    db: &DatabaseConnection,
    event_id: &str,
    seats: &[String],
) -> anyhow::Result<Owners> {
    let rows = db
        .query_all_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT s.seat_id, b.hold_id::text AS hold_id, \
             (SELECT count(*) FROM payment.seat_guard g WHERE g.event_id = s.event_id AND g.seat_id = s.seat_id \
              AND g.booking_id = b.booking_id) AS guards \
             FROM payment.booking_seats s JOIN payment.bookings b ON b.booking_id = s.booking_id \
             WHERE s.event_id::text = $1 AND b.status <> 'cancelled'",
            [event_id.into()],
        ))
        .await?;
    let mut owners: Owners = seats.iter().map(|seat| (seat.clone(), None)).collect();
    for row in rows {
        let seat: String = row.try_get("", "seat_id")?;
        anyhow::ensure!(
            row.try_get::<i64>("", "guards")? == 1,
            "seat {seat}: a live booking without its guard"
        );
        let previous = owners.insert(seat.clone(), Some(row.try_get("", "hold_id")?));
        anyhow::ensure!(previous == Some(None), "seat {seat} is in two live bookings");
    }
    let guards = helpers::query_i64(
        db,
        "SELECT count(*) FROM payment.seat_guard WHERE event_id::text = $1",
        vec![event_id.into()],
    )
    .await?;
    let sold = owners.values().filter(|owner| owner.is_some()).count() as i64;
    anyhow::ensure!(guards == sold, "{guards} seat_guard rows for {sold} seats of live bookings");
    Ok(owners)
}

/// Seat-lock's view: `sold:<hold>` marks in Redis; a seat with no key is free.
async fn redis_owners(
    redis: &Client,
    env: &TestEnv,
    event_id: &str,
    seats: &[String],
) -> anyhow::Result<Owners> {
    let mut owners = Owners::new();
    for seat in seats {
        let value: Option<String> =
            redis.get(format!("{}sl:{{{event_id}}}:seat:{seat}", env.redis_prefix)).await?;
        let owner = match value {
            None => None,
            Some(value) => Some(
                value.strip_prefix("sold:").with_context(|| format!("{seat} is held: {value}"))?.to_owned(),
            ),
        };
        owners.insert(seat.clone(), owner);
    }
    Ok(owners)
}

/// Inventory's view: each seat's state in the seat map (it names no hold).
async fn inventory_states(stack: &Running, event_id: &str) -> anyhow::Result<Vec<SeatState>> {
    let map = stack
        .inventory()?
        .get_seat_map(pb::GetSeatMapRequest { event_id: event_id.into(), zone_id: "A".into() })
        .await?
        .into_inner();
    Ok(map.zones[0].decode_seat_states()?)
}

/// Payment, Redis and inventory agree seat by seat.
async fn stores_agree(
    stack: &Running,
    db: &DatabaseConnection,
    redis: &Client,
    env: &TestEnv,
    event_id: &str,
    seats: &[String],
) -> anyhow::Result<Owners> {
    let postgres = postgres_owners(db, event_id, seats).await?;
    let in_redis = redis_owners(redis, env, event_id, seats).await?;
    anyhow::ensure!(postgres == in_redis, "Postgres {postgres:?} and Redis {in_redis:?} disagree");
    let inventory = inventory_states(stack, event_id).await?;
    let expected: Vec<SeatState> = postgres
        .values()
        .map(|owner| if owner.is_some() { SeatState::Sold } else { SeatState::Free })
        .collect();
    anyhow::ensure!(inventory == expected, "inventory shows {inventory:?}, Postgres {postgres:?}");
    Ok(postgres)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_seat_is_resold_and_every_store_agrees_seat_by_seat() -> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    let stack = start_stack(&env, None).await?;
    let db = env.database().await?;
    let redis = helpers::redis(&env).await?;
    let event_id = create_event(&stack, SEATS, LIMIT, 10).await?;
    let seats = seat_ids(SEATS);
    let passes = admit_all(&stack, &event_id, &["alice".to_owned(), "bob".to_owned()]).await?;
    let (mut seat_lock, mut payment) = (stack.seat_lock()?, stack.payment()?);

    // Alice buys two seats, up to her limit, and cancels.
    let hold = seat_lock
        .hold_seats(stack.as_user("alice", hold_request(&event_id, "alice", &passes["alice"], &seats[..2])))
        .await?
        .into_inner();
    let paid =
        payment.pay(stack.as_user("alice", pay_request("alice-pay-1", &event_id, &hold))).await?.into_inner();
    let booking = paid.booking.context("alice's booking")?;
    // The purchase ended her pass (admission's PassEnded, applied by seat-lock): refused once
    // applied. Only then may she join again for a new pass, which the limit still counts her
    // purchase against.
    let ended = eventually(EVENTUALLY, || {
        let mut seat_lock = seat_lock.clone();
        let request =
            stack.as_user("alice", hold_request(&event_id, "alice", &passes["alice"], &seats[2..3]));
        async move {
            let refused = seat_lock.hold_seats(request).await.err()?;
            (reason(&refused) == "PASS_REVOKED").then_some(())
        }
    })
    .await;
    assert!(ended.is_some(), "seat-lock refuses the pass that bought");
    let rejoined = admit_all(&stack, &event_id, &["alice".to_owned()]).await?;
    let over = seat_lock
        .hold_seats(
            stack.as_user("alice", hold_request(&event_id, "alice", &rejoined["alice"], &seats[2..3])),
        )
        .await;
    assert_eq!(reason(&over.expect_err("over the limit")), "TICKET_LIMIT_EXCEEDED");
    let cancelled = payment
        .cancel_booking(stack.as_user(
            "alice",
            pb::CancelBookingRequest {
                idempotency_key: "alice-cancel-1".into(),
                booking_id: booking.booking_id.clone(),
                user_id: "alice".into(),
            },
        ))
        .await?
        .into_inner();
    assert_eq!(cancelled.booking.as_ref().map(|b| b.status()), Some(BookingStatus::Cancelled));
    assert_eq!(cancelled.payment.as_ref().map(|p| p.status()), Some(PaymentStatus::Refunded));

    // Bob holds and buys seat A-1-1 once seat-lock has it back from payment's outbox.
    let bob_seat = vec![seats[0].clone()];
    let bob_hold = eventually(EVENTUALLY, || {
        let (mut seat_lock, request) = (
            seat_lock.clone(),
            stack.as_user("bob", hold_request(&event_id, "bob", &passes["bob"], &bob_seat)),
        );
        async move {
            match seat_lock.hold_seats(request).await {
                Ok(hold) => Some(Ok(hold.into_inner())),
                Err(status) if status.code() == Code::Aborted => None,
                Err(status) => Some(Err(status)),
            }
        }
    })
    .await
    .context("the cancelled seat never came back on sale")??;
    let bob =
        payment.pay(stack.as_user("bob", pay_request("bob-pay-1", &event_id, &bob_hold))).await?.into_inner();
    assert_eq!(bob.payment.as_ref().map(|p| p.status()), Some(PaymentStatus::Confirmed));

    // Alice's limit went down with the cancellation: she may hold two seats again.
    let again = seat_lock
        .hold_seats(
            stack.as_user("alice", hold_request(&event_id, "alice", &rejoined["alice"], &seats[2..4])),
        )
        .await?;
    let again = again.into_inner();
    seat_lock
        .release_hold(stack.as_user(
            "alice",
            pb::ReleaseHoldRequest {
                event_id: event_id.clone(),
                hold_id: again.hold_id.clone(),
                user_id: "alice".into(),
            },
        ))
        .await?;

    // The three stores agree seat by seat: A-1-1 is Bob's, the others are free.
    let agreed = eventually(EVENTUALLY, || async {
        stores_agree(&stack, &db, &redis, &env, &event_id, &seats).await.ok()
    })
    .await;
    let owners = match agreed {
        Some(owners) => owners,
        None => stores_agree(&stack, &db, &redis, &env, &event_id, &seats).await?,
    };
    let expected: Owners = seats
        .iter()
        .map(|seat| (seat.clone(), (seat == &seats[0]).then(|| bob_hold.hold_id.clone())))
        .collect();
    assert_eq!(owners, expected);

    // Seat-lock's internal RPC is not reachable through the load balancer, which refuses any
    // `ticketing.internal.*` path (PERMISSION_DENIED) and has no route to the internal ports.
    let lb = tonic::transport::Endpoint::from_shared(stack.config().lb_url())?.connect_lazy();
    let through_lb = SeatLockInternalServiceClient::new(lb)
        .return_seats(stack.as_user(
            "bob",
            ReturnSeatsRequest {
                event_id: event_id.clone(),
                booking_id: bob.booking.as_ref().context("bob's booking")?.booking_id.clone(),
                hold_id: bob_hold.hold_id.clone(),
                user_id: "bob".into(),
                zone_id: "A".into(),
                seat_ids: bob_seat.clone(),
                quantity: 1,
            },
        ))
        .await;
    assert_eq!(through_lb.expect_err("not routed").code(), Code::PermissionDenied);

    // The money: Alice's charge refunded, Bob's captured.
    let alice_payment = paid.payment.context("alice's payment")?.payment_id;
    let bob_payment = bob.payment.context("bob's payment")?.payment_id;
    for (payment_id, status) in [(&alice_payment, "refunded"), (&bob_payment, "captured")] {
        let found = helpers::query_i64(
            &db,
            "SELECT count(*) FROM payment.psp_ledger WHERE idempotency_key = $1 AND status = $2",
            vec![payment_id.as_str().into(), status.into()],
        )
        .await?;
        assert_eq!(found, 1, "payment {payment_id}: one {status} charge");
    }

    // Alice is told: the booking, its cancellation and the refund are in her inbox.
    let mut notifier = NotifierServiceClient::new(stack.channel("notifier")?);
    let wanted =
        [NotificationKind::BookingConfirmed, NotificationKind::BookingCancelled, NotificationKind::Refunded];
    let told = eventually(EVENTUALLY, || {
        let mut notifier = notifier.clone();
        let alice = stack.token("alice");
        async move {
            let request =
                alice.request(pb::ListNotificationsRequest { user_id: "alice".into(), ..Default::default() });
            let inbox = notifier.list_notifications(request).await.ok()?.into_inner().notifications;
            let kinds: Vec<NotificationKind> = inbox.iter().map(|n| n.kind()).collect();
            wanted.iter().all(|kind| kinds.contains(kind)).then_some(kinds)
        }
    })
    .await;
    let inbox =
        notifier
            .list_notifications(stack.as_user(
                "alice",
                pb::ListNotificationsRequest { user_id: "alice".into(), ..Default::default() },
            ))
            .await?
            .into_inner()
            .notifications;
    assert!(told.is_some(), "alice's inbox: {:?}", inbox.iter().map(|n| n.kind()).collect::<Vec<_>>());
    reconciliation_finds_nothing(&stack).await?;
    Ok(())
}
