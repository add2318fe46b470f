//! CancelBooking and RefundBooking: refunded through the provider, the booking cancelled and
//! its seat guard freed in the refund's commit, the seats handed back to seat-lock from the
//! outbox, each refusal precise and changing nothing.

use std::time::Duration;

use payment::App;
use test_support::testenv::{TestEnv, eventually};
use ticketing_proto::{
    events::event_envelope::Body,
    v1::{self, BookingStatus, PaymentStatus},
};
use tonic::{Code, Status};
use uuid::Uuid;

use crate::{
    crash::spawn_crashing,
    helpers::{
        FakeSeatLock, TestApp, as_admin, attach, authed, config, reason, spawn_app, spawn_fake_seat_lock,
    },
    mesh_fakes::AddEvent,
};

const DAY: i64 = 86_400;

fn cancel_request(key: &str, booking_id: &str, user_id: &str) -> v1::CancelBookingRequest {
    v1::CancelBookingRequest {
        idempotency_key: key.into(),
        booking_id: booking_id.into(),
        user_id: user_id.into(),
    }
}

fn refund_request(key: &str, booking_id: &str, reason: &str) -> v1::RefundBookingRequest {
    v1::RefundBookingRequest {
        idempotency_key: key.into(),
        booking_id: booking_id.into(),
        reason: reason.into(),
    }
}

async fn cancel(
    app: &TestApp,
    request: v1::CancelBookingRequest,
) -> Result<v1::CancelBookingResponse, Status> {
    app.client.clone().cancel_booking(authed(request)).await.map(tonic::Response::into_inner)
}

async fn refund(
    app: &TestApp,
    request: v1::RefundBookingRequest,
) -> Result<v1::CancelBookingResponse, Status> {
    app.client.clone().refund_booking(as_admin(request)).await.map(tonic::Response::into_inner)
}

/// A confirmed booking of `seats` for `user`, paid with `key`.
async fn book(app: &TestApp, user: &str, seats: &[&str], key: &str) -> v1::Booking {
    let hold_id = app.seat_lock.add_hold(app.event_id, user, seats, seats.len() as u32);
    let paid = app.pay(app.pay_request(key, hold_id, user, "pm_card_ok")).await.unwrap();
    assert_eq!(paid.payment.as_ref().unwrap().status(), PaymentStatus::Confirmed);
    paid.booking.unwrap()
}

fn statuses(response: &v1::CancelBookingResponse) -> (BookingStatus, PaymentStatus) {
    (response.booking.as_ref().unwrap().status(), response.payment.as_ref().unwrap().status())
}

/// What a cancellation may change, for "nothing changed" checks.
async fn footprint(app: &TestApp, booking: &v1::Booking) -> Vec<i64> {
    vec![
        app.count("bookings", &format!("booking_id = '{}' AND status = 'confirmed'", booking.booking_id))
            .await,
        app.count("payments", &format!("payment_id = '{}' AND status = 'confirmed'", booking.payment_id))
            .await,
        app.count("seat_guard", &format!("booking_id = '{}'", booking.booking_id)).await,
        app.count("psp_ledger", "status = 'captured'").await,
        app.count("refunds", "").await,
        app.count("seat_returns", "").await,
    ]
}

/// Waits until the seat-return outbox is empty and seat-lock got `booking`'s seats.
async fn seats_returned(app: &TestApp, booking: &v1::Booking) -> bool {
    eventually(Duration::from_secs(30), || async {
        let sent = app.seat_lock.returned().iter().any(|r| r.booking_id == booking.booking_id);
        (sent && app.count("seat_returns", "").await == 0).then_some(())
    })
    .await
    .is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owner_cancels_refunded_freed_and_the_seats_go_back_to_seat_lock() {
    let app = spawn_app().await;
    app.seat_lock.inventory.add_event(app.event_id, 30 * DAY, 86_400);
    let booking = book(&app, "alice", &["A-1-1", "A-1-2"], "pay-alice-1").await;

    let first = cancel(&app, cancel_request("cancel-alice-1", &booking.booking_id, "alice")).await.unwrap();
    assert_eq!(statuses(&first), (BookingStatus::Cancelled, PaymentStatus::Refunded));
    assert!(!first.replayed);
    let cancelled = first.booking.clone().unwrap();
    assert_eq!(cancelled.cancel_reason, payment::cancel::OWNER_CANCEL_REASON);
    assert!(cancelled.cancelled_at.is_some());

    // The money is back, the booking is cancelled and its seats are free in Postgres.
    let payment_id = &booking.payment_id;
    assert_eq!(app.count("psp_ledger", "status = 'refunded'").await, 1);
    assert_eq!(
        app.count(
            "refunds",
            &format!("payment_id = '{payment_id}' AND state = 'refunded' AND requested_by = 'user'")
        )
        .await,
        1
    );
    assert_eq!(app.count("seat_guard", &format!("booking_id = '{}'", booking.booking_id)).await, 0);
    assert!(app.ledger_violations().await.is_empty(), "{:?}", app.ledger_violations().await);

    // The seats reach seat-lock from the outbox, exactly as booked.
    assert!(seats_returned(&app, &booking).await, "the seat-return row was never drained");
    let sent = app.seat_lock.returned();
    assert_eq!(sent.len(), 1);
    let sent = &sent[0];
    assert_eq!(
        (sent.event_id.as_str(), sent.hold_id.as_str()),
        (booking.event_id.as_str(), booking.hold_id.as_str())
    );
    assert_eq!((sent.user_id.as_str(), sent.zone_id.as_str(), sent.quantity), ("alice", "A", 2));
    assert_eq!(sent.seat_ids, booking.seat_ids);

    // The user is told: Refunded and BookingCancelled leave through the outbox.
    let (_, refunded) = app.event_with_id(&format!("refunded:{payment_id}")).await.expect("Refunded");
    let Some(Body::Refunded(refunded)) = refunded.body else { panic!("not Refunded") };
    assert_eq!((refunded.user_id.as_str(), refunded.amount_cents), ("alice", booking.amount_cents));
    let (subject, envelope) = app
        .event_with_id(&format!("booking_cancelled:{}", booking.booking_id))
        .await
        .expect("BookingCancelled");
    assert!(subject.ends_with(".booking.cancelled"), "{subject}");
    let Some(Body::BookingCancelled(event)) = envelope.body else { panic!("not BookingCancelled") };
    assert_eq!((event.seat_ids.clone(), event.by_operator), (booking.seat_ids.clone(), false));

    // The same key answers the same, without a second refund or return.
    let replay = cancel(&app, cancel_request("cancel-alice-1", &booking.booking_id, "alice")).await.unwrap();
    assert!(replay.replayed);
    assert_eq!(v1::CancelBookingResponse { replayed: false, ..replay }, first);
    // A new key for the cancelled booking answers its cancelled state again.
    let again = cancel(&app, cancel_request("cancel-alice-2", &booking.booking_id, "alice")).await.unwrap();
    assert_eq!(statuses(&again), (BookingStatus::Cancelled, PaymentStatus::Refunded));
    assert_eq!(again.booking, first.booking);
    // The key with another request is refused.
    let other = book(&app, "alice", &["A-2-1"], "pay-alice-2").await;
    let reused =
        cancel(&app, cancel_request("cancel-alice-1", &other.booking_id, "alice")).await.unwrap_err();
    assert_eq!(
        (reused.code(), reason(&reused).as_deref()),
        (Code::FailedPrecondition, Some("IDEMPOTENCY_KEY_REUSED"))
    );
    assert_eq!(app.count("refunds", "").await, 1);
    assert_eq!(app.count("psp_ledger", "status = 'refunded'").await, 1);
    assert!(app.outbox_drained().await);
    assert_eq!(app.seat_lock.returned().len(), 1);

    // Payment no longer lists the seats as sold, and another buyer gets them.
    let sold = app
        .internal()
        .list_sold_seats(ticketing_proto::internal::ListSoldSeatsRequest {
            event_id: app.event_id.to_string(),
        })
        .await
        .unwrap()
        .into_inner()
        .seats;
    assert_eq!(sold.iter().map(|s| s.seat_id.as_str()).collect::<Vec<_>>(), vec!["A-2-1"]);
    let resold = book(&app, "bob", &["A-1-1"], "pay-bob-1").await;
    assert_eq!(
        app.count("seat_guard", &format!("seat_id = 'A-1-1' AND booking_id = '{}'", resold.booking_id)).await,
        1
    );
    assert!(app.ledger_violations().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_users_booking_is_not_found_and_nothing_changes() {
    let app = spawn_app().await;
    app.seat_lock.inventory.add_event(app.event_id, 30 * DAY, 86_400);
    let booking = book(&app, "alice", &["A-3-1"], "pay-alice-3").await;
    let before = footprint(&app, &booking).await;

    let theirs =
        cancel(&app, cancel_request("cancel-mallory-1", &booking.booking_id, "mallory")).await.unwrap_err();
    let missing_id = Uuid::now_v7().to_string();
    let missing = cancel(&app, cancel_request("cancel-mallory-2", &missing_id, "mallory")).await.unwrap_err();
    assert_eq!((theirs.code(), reason(&theirs)), (Code::NotFound, Some("BOOKING_NOT_FOUND".to_owned())));
    assert_eq!((missing.code(), reason(&missing)), (theirs.code(), reason(&theirs)));
    assert_eq!(
        theirs.message().replace(&booking.booking_id, "<id>"),
        missing.message().replace(&missing_id, "<id>")
    );
    // Replayed as refused; still nothing changed.
    let replay =
        cancel(&app, cancel_request("cancel-mallory-1", &booking.booking_id, "mallory")).await.unwrap_err();
    assert_eq!((replay.code(), replay.message()), (theirs.code(), theirs.message()));
    assert_eq!(footprint(&app, &booking).await, before);

    // Bad input is INVALID_ARGUMENT naming the field, and changes nothing either.
    let bad = [
        (cancel_request("short", &booking.booking_id, "alice"), "idempotency_key"),
        (cancel_request("cancel-bad-1", "not-a-uuid", "alice"), "booking_id"),
    ];
    for (request, field) in bad {
        let status = cancel(&app, request).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{field}: {status:?}");
        assert!(status.message().starts_with(field), "{}", status.message());
    }
    let status = refund(&app, refund_request("refund-bad-1", &booking.booking_id, "")).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().starts_with("reason"), "{}", status.message());
    assert_eq!(footprint(&app, &booking).await, before);
    assert!(app.ledger_violations().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_cutoff_the_owner_is_refused_and_an_operator_still_refunds() {
    let app = spawn_app().await;
    // Starts in an hour; owners' cancellations closed a day before.
    app.seat_lock.inventory.add_event(app.event_id, 3_600, 86_400);
    let booking = book(&app, "carol", &["A-4-1", "A-4-2"], "pay-carol-1").await;
    let before = footprint(&app, &booking).await;

    let closed =
        cancel(&app, cancel_request("cancel-carol-1", &booking.booking_id, "carol")).await.unwrap_err();
    assert_eq!(closed.code(), Code::FailedPrecondition);
    let (why, metadata) = service_runtime::status::reason(&closed).unwrap();
    assert_eq!(why, "CANCELLATION_CLOSED");
    assert_eq!(metadata.get("cancellation_cutoff_seconds").map(String::as_str), Some("86400"));
    let until = chrono::DateTime::parse_from_rfc3339(&metadata["cancellable_until"]).unwrap();
    let until_from_now = until.timestamp() - chrono::Utc::now().timestamp();
    assert!((-DAY..=-DAY + 3_600).contains(&until_from_now), "closed {until_from_now} s from now");
    let replay =
        cancel(&app, cancel_request("cancel-carol-1", &booking.booking_id, "carol")).await.unwrap_err();
    assert_eq!(
        (replay.code(), reason(&replay).as_deref()),
        (Code::FailedPrecondition, Some("CANCELLATION_CLOSED"))
    );
    assert_eq!(footprint(&app, &booking).await, before);

    // The operator refunds at any time, with a reason told to the user.
    let refunded =
        refund(&app, refund_request("refund-carol-1", &booking.booking_id, "show moved")).await.unwrap();
    assert_eq!(statuses(&refunded), (BookingStatus::Cancelled, PaymentStatus::Refunded));
    assert_eq!(refunded.booking.as_ref().unwrap().cancel_reason, "show moved");
    let payment_id = &booking.payment_id;
    assert_eq!(
        app.count("refunds", &format!("payment_id = '{payment_id}' AND requested_by = 'operator'")).await,
        1
    );
    let (_, envelope) = app
        .event_with_id(&format!("booking_cancelled:{}", booking.booking_id))
        .await
        .expect("BookingCancelled");
    let Some(Body::BookingCancelled(event)) = envelope.body else { panic!("not BookingCancelled") };
    assert_eq!((event.reason.as_str(), event.by_operator), ("show moved", true));
    assert!(seats_returned(&app, &booking).await);

    // Once cancelled, the owner's request answers the cancelled state, cutoff or not; a
    // CancelBooking key cannot be reused for RefundBooking (one key space).
    let owner = cancel(&app, cancel_request("cancel-carol-2", &booking.booking_id, "carol")).await.unwrap();
    assert_eq!(statuses(&owner), (BookingStatus::Cancelled, PaymentStatus::Refunded));
    let reused =
        refund(&app, refund_request("cancel-carol-2", &booking.booking_id, "show moved")).await.unwrap_err();
    assert_eq!(reason(&reused).as_deref(), Some("IDEMPOTENCY_KEY_REUSED"));
    // And a Pay key is a separate space: the same text as a cancellation key is not reused.
    let other = book(&app, "carol", &["A-5-1"], "refund-carol-1").await;
    assert_eq!(other.user_id, "carol");
    assert!(app.ledger_violations().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seat_returns_wait_for_seat_lock_and_are_sent_once_it_answers() {
    let app = spawn_app().await;
    app.seat_lock.inventory.add_event(app.event_id, 30 * DAY, 86_400);
    let booking = book(&app, "dave", &["A-6-1"], "pay-dave-1").await;
    app.seat_lock.refuse_returns.store(true, std::sync::atomic::Ordering::SeqCst);

    let cancelled = cancel(&app, cancel_request("cancel-dave-1", &booking.booking_id, "dave")).await.unwrap();
    assert_eq!(statuses(&cancelled), (BookingStatus::Cancelled, PaymentStatus::Refunded));
    let retried = eventually(Duration::from_secs(30), || async {
        (app.count("seat_returns", "attempts >= 2").await == 1).then_some(())
    })
    .await;
    assert!(retried.is_some(), "the refused row was not retried");
    assert!(app.seat_lock.returned().is_empty());

    app.seat_lock.refuse_returns.store(false, std::sync::atomic::Ordering::SeqCst);
    assert!(seats_returned(&app, &booking).await, "the row was not sent once seat-lock answered");
    assert_eq!(app.seat_lock.returned().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancellation_crashed_between_its_steps_is_finished() {
    let env = TestEnv::new().await.unwrap();
    let seat_lock = FakeSeatLock::default();
    let url = spawn_fake_seat_lock(seat_lock.clone()).await;
    let app = attach(env.clone(), seat_lock.clone(), App::build(config(&env, &url)).await.unwrap()).await;
    seat_lock.inventory.add_event(app.event_id, 30 * DAY, 86_400);
    // Where the binary aborts, and what the crash leaves at the provider. The third is
    // finished by its owner's retry, the first two by the recovery pass of a restart.
    let crashes = [
        ("after_refunding_committed", "captured"),
        ("after_provider_refund", "refunded"),
        ("after_refunding_committed", "captured"),
    ];
    let mut cancelled = Vec::new();
    for (n, (point, charge)) in crashes.into_iter().enumerate() {
        let booking = book(&app, "erin", &[&format!("A-7-{n}")], &format!("pay-erin-{n}")).await;
        let (mut child, mut client) = spawn_crashing(&env, &url, point).await;
        let request = cancel_request(&format!("cancel-erin-{n}"), &booking.booking_id, "erin");
        assert!(client.cancel_booking(authed(request.clone())).await.is_err(), "{point}: the process aborts");
        assert!(!child.wait().await.unwrap().success(), "{point}: the process died");
        let payment_id = &booking.payment_id;
        assert_eq!(
            app.count(
                "bookings",
                &format!("booking_id = '{}' AND status = 'cancelling'", booking.booking_id)
            )
            .await,
            1,
            "{point}"
        );
        assert_eq!(
            app.count("payments", &format!("payment_id = '{payment_id}' AND status = 'refunding'")).await,
            1,
            "{point}"
        );
        assert_eq!(
            app.count("psp_ledger", &format!("idempotency_key = '{payment_id}' AND status = '{charge}'"))
                .await,
            1,
            "{point}"
        );
        cancelled.push((booking, request));
    }

    // The owner's retry drives its cancellation on and answers it finished.
    let answer = cancel(&app, cancelled[2].1.clone()).await.unwrap();
    assert_eq!(statuses(&answer), (BookingStatus::Cancelled, PaymentStatus::Refunded));
    assert!(answer.replayed);
    assert_eq!(app.count("bookings", "status = 'cancelling'").await, 2);

    // A restart's recovery pass finishes the other two; their retries answer them finished.
    App::build(config(&env, &url)).await.unwrap().recover_stuck_payments(Duration::ZERO).await.unwrap();
    for (booking, request) in &cancelled {
        let answer = cancel(&app, request.clone()).await.unwrap();
        assert_eq!(
            statuses(&answer),
            (BookingStatus::Cancelled, PaymentStatus::Refunded),
            "{}",
            booking.booking_id
        );
        assert!(seats_returned(&app, booking).await, "{} not returned", booking.booking_id);
        assert!(app.event_with_id(&format!("booking_cancelled:{}", booking.booking_id)).await.is_some());
    }
    assert_eq!(app.count("seat_guard", "").await, 0);
    assert_eq!(app.count("psp_ledger", "status = 'refunded'").await, 3);
    assert_eq!(app.count("refunds", "state = 'refunded'").await, 3);
    assert!(app.ledger_violations().await.is_empty(), "{:?}", app.ledger_violations().await);
    assert!(app.outbox_drained().await);
    assert_eq!(app.reconciliation_findings().await, [], "the ledger and the books agree");
}
