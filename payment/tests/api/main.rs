//! Integration tests of the payment service against real Postgres and NATS, with an in-test
//! seat-lock.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod bounds;
mod cancellation;
mod crash;
mod helpers;
mod mesh_fakes;
mod mtls;
mod orphans;
mod reconcile;
mod refunds;
mod slow_provider;

use std::time::Duration;

use futures::future::join_all;
use helpers::{
    FakeSeatLock, as_admin, as_user, attach, authed, config, reason, serve, spawn_app, spawn_fake_seat_lock,
};
use payment::{App, checkout::PayCommand, commit::CommitGroups};
use prost::Message;
use sea_orm::{ConnectionTrait, DbBackend, Statement};
use test_support::testenv::TestEnv;
use ticketing_proto::{
    events::{EventEnvelope, event_envelope::Body},
    v1::{self, PaymentStatus},
};
use tonic::Code;
use uuid::Uuid;

fn status_of(response: &v1::PayResponse) -> PaymentStatus {
    response.payment.as_ref().unwrap().status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn happy_path_books_guards_seats_and_publishes() {
    let app = spawn_app().await;
    let hold_id = app.seat_lock.add_hold(app.event_id, "alice", &["A-1-1", "A-1-2"], 2);

    let response = app.pay(app.pay_request("key-happy-1", hold_id, "alice", "pm_card_ok")).await.unwrap();

    assert_eq!(status_of(&response), PaymentStatus::Confirmed);
    assert!(!response.replayed);
    let payment = response.payment.clone().unwrap();
    let booking = response.booking.clone().unwrap();
    assert_eq!(payment.amount_cents, 10_000);
    assert_eq!(payment.booking_id, booking.booking_id);
    assert!(payment.provider_charge_id.starts_with("ch_"));
    assert_eq!(booking.seat_ids, vec!["A-1-1", "A-1-2"]);
    assert_eq!(booking.quantity, 2);

    // Postgres holds the whole sale.
    assert_eq!(
        app.count("payments", &format!("payment_id = '{}' AND status = 'confirmed'", payment.payment_id))
            .await,
        1
    );
    assert_eq!(app.count("bookings", &format!("booking_id = '{}'", booking.booking_id)).await, 1);
    assert_eq!(app.count("booking_seats", &format!("booking_id = '{}'", booking.booking_id)).await, 2);
    assert_eq!(app.count("seat_guard", &format!("booking_id = '{}'", booking.booking_id)).await, 2);
    assert_eq!(app.count("psp_ledger", "status = 'captured'").await, 1);
    assert_eq!(app.count("idempotency_keys", "state = 'done'").await, 1);

    // The confirmation reaches NATS with the booking's message id.
    let message_id = format!("booking:{}", booking.booking_id);
    let (subject, envelope) = app.event_with_id(&message_id).await.expect("BookingConfirmed on NATS");
    assert_eq!(subject, format!("{}.booking.confirmed", app.env.nats_prefix));
    assert_eq!(envelope.message_id, message_id);
    let Some(Body::BookingConfirmed(confirmed)) = envelope.body else { panic!("wrong body") };
    assert_eq!(confirmed.payment_id, payment.payment_id);
    assert_eq!(confirmed.seat_ids, vec!["A-1-1", "A-1-2"]);
    assert!(app.outbox_drained().await);

    // Reads: owner only.
    let mut client = app.client.clone();
    let got = client
        .get_payment(authed(v1::GetPaymentRequest {
            payment_id: payment.payment_id.clone(),
            user_id: "alice".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.status(), PaymentStatus::Confirmed);
    let got = client
        .get_booking(authed(v1::GetBookingRequest {
            booking_id: booking.booking_id.clone(),
            user_id: "alice".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.seat_ids, booking.seat_ids);
    for status in [
        client
            .get_payment(authed(v1::GetPaymentRequest {
                payment_id: payment.payment_id.clone(),
                user_id: "mallory".into(),
            }))
            .await
            .unwrap_err(),
        client
            .get_booking(authed(v1::GetBookingRequest {
                booking_id: booking.booking_id.clone(),
                user_id: "mallory".into(),
            }))
            .await
            .unwrap_err(),
    ] {
        assert_eq!(status.code(), Code::NotFound);
    }

    // A GA booking too, then listings.
    let ga_hold = app.seat_lock.add_hold(app.event_id, "alice", &[], 3);
    let ga = app.pay(app.pay_request("key-happy-2", ga_hold, "alice", "pm_card_ok")).await.unwrap();
    assert_eq!(status_of(&ga), PaymentStatus::Confirmed);
    let ga_booking = ga.booking.unwrap();

    let first = client
        .list_bookings(authed(v1::ListBookingsRequest {
            user_id: "alice".into(),
            page_size: 1,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.bookings.len(), 1);
    assert_eq!(first.bookings[0].booking_id, ga_booking.booking_id, "newest first");
    let second = client
        .list_bookings(authed(v1::ListBookingsRequest {
            user_id: "alice".into(),
            event_id: app.event_id.to_string(),
            page_size: 1,
            page_token: first.next_page_token.clone(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(second.bookings.len(), 1);
    assert_eq!(second.bookings[0].booking_id, booking.booking_id);
    let others = client
        .list_bookings(authed(v1::ListBookingsRequest { user_id: "bob".into(), ..Default::default() }))
        .await
        .unwrap()
        .into_inner();
    assert!(others.bookings.is_empty());
    // An operator reads anyone's bookings by naming them; a user may not name another.
    let listed = client
        .list_bookings(as_admin(v1::ListBookingsRequest { user_id: "alice".into(), ..Default::default() }))
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<&str> = listed.bookings.iter().map(|b| b.booking_id.as_str()).collect();
    assert_eq!(ids, [ga_booking.booking_id.as_str(), booking.booking_id.as_str()]);
    let refused = client
        .list_bookings(as_user(
            "bob",
            v1::ListBookingsRequest { user_id: "alice".into(), ..Default::default() },
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    let own = client.list_bookings(as_admin(v1::ListBookingsRequest::default())).await.unwrap().into_inner();
    assert!(own.bookings.is_empty(), "without a user, the operator's own bookings");

    let sold = app
        .internal()
        .list_sold_seats(ticketing_proto::internal::ListSoldSeatsRequest {
            event_id: app.event_id.to_string(),
        })
        .await
        .unwrap()
        .into_inner()
        .seats;
    let seated: Vec<_> = sold.iter().filter(|s| !s.seat_id.is_empty()).map(|s| s.seat_id.as_str()).collect();
    assert_eq!(seated, vec!["A-1-1", "A-1-2"]);
    let ga_places = sold.iter().filter(|s| s.seat_id.is_empty()).collect::<Vec<_>>();
    assert_eq!(ga_places.len(), 3);
    assert!(ga_places.iter().all(|s| s.booking_id == ga_booking.booking_id && s.user_id == "alice"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_replays_charge_once() {
    let app = spawn_app().await;
    let hold_id = app.seat_lock.add_hold(app.event_id, "bob", &["A-2-1"], 1);
    // A slow card keeps the first request in flight while the others arrive.
    let request = app.pay_request("key-concurrent", hold_id, "bob", "pm_card_slow_500");

    let answers = join_all((0..100).map(|_| app.pay(request.clone()))).await;

    let mut confirmed = Vec::new();
    let mut in_flight = 0;
    for answer in answers {
        match answer {
            Ok(response) => {
                assert_eq!(status_of(&response), PaymentStatus::Confirmed);
                confirmed.push(response);
            }
            Err(status) => {
                assert_eq!(status.code(), Code::Aborted, "{status:?}");
                assert_eq!(reason(&status).as_deref(), Some("REQUEST_IN_FLIGHT"));
                in_flight += 1;
            }
        }
    }
    assert!(!confirmed.is_empty());
    assert!(in_flight > 0, "the requests really overlapped");
    let payment_id = confirmed[0].payment.as_ref().unwrap().payment_id.clone();
    assert!(confirmed.iter().all(|r| r.payment.as_ref().unwrap().payment_id == payment_id));
    assert_eq!(app.count("psp_ledger", "").await, 1, "exactly one charge");
    assert_eq!(app.count("bookings", "").await, 1);
    assert_eq!(app.count("payments", "").await, 1);
    // Attempts that overlap the first one before it claims the key may also move the hold
    // into checkout (harmless: seat-lock accepts it again); only one ever reaches the provider.
    let begun = app.seat_lock.begin_calls();
    assert!((1..=100).contains(&begun), "{begun}");

    let replay = app.pay(request.clone()).await.unwrap();
    assert!(replay.replayed);
    assert_eq!(replay.payment.as_ref().unwrap().payment_id, payment_id);
    assert_eq!(
        replay.booking.as_ref().unwrap().booking_id,
        confirmed[0].booking.as_ref().unwrap().booking_id
    );
    assert_eq!(app.count("psp_ledger", "").await, 1);

    let other_hold = app.seat_lock.add_hold(app.event_id, "bob", &["A-2-2"], 1);
    for reused in [
        app.pay_request("key-concurrent", other_hold, "bob", "pm_card_slow_500"),
        app.pay_request("key-concurrent", hold_id, "bob", "pm_card_ok"),
    ] {
        let status = app.pay(reused).await.unwrap_err();
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert_eq!(reason(&status).as_deref(), Some("IDEMPOTENCY_KEY_REUSED"));
    }
    assert_eq!(app.seat_lock.begin_calls(), begun, "a finished key never reaches seat-lock again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declined_card_keeps_the_hold_and_replays_the_decline() {
    let app = spawn_app().await;
    let hold_id = app.seat_lock.add_hold(app.event_id, "carol", &["A-3-1"], 1);
    let request = app.pay_request("key-declined", hold_id, "carol", "pm_card_declined");

    let response = app.pay(request.clone()).await.unwrap();
    assert_eq!(status_of(&response), PaymentStatus::Declined);
    let payment = response.payment.unwrap();
    assert!(!payment.failure_reason.is_empty());
    assert!(response.booking.is_none());
    assert_eq!(app.count("bookings", "").await, 0);
    // The provider's ledger records the decline, as a real PSP's would; nothing captured.
    assert_eq!(app.count("psp_ledger", "").await, 1);
    assert_eq!(app.count("psp_ledger", "status = 'declined'").await, 1);
    assert_eq!(app.seat_lock.confirm_calls.load(std::sync::atomic::Ordering::SeqCst), 0);

    let (subject, envelope) = app
        .event_with_id(&format!("payment_failed:{}", payment.payment_id))
        .await
        .expect("PaymentFailed on NATS");
    assert_eq!(subject, format!("{}.payment.failed", app.env.nats_prefix));
    assert!(
        matches!(envelope.body, Some(Body::PaymentFailed(ref failed)) if failed.hold_id == hold_id.to_string())
    );

    let replay = app.pay(request).await.unwrap();
    assert!(replay.replayed);
    assert_eq!(status_of(&replay), PaymentStatus::Declined);
    assert_eq!(replay.payment.unwrap().payment_id, payment.payment_id);
    assert_eq!(app.seat_lock.begin_calls(), 1, "a replay never reaches seat-lock or the provider");
    assert_eq!(app.count("payments", "").await, 1);

    // The hold stayed: a new attempt with a good card books it.
    let retry = app.pay(app.pay_request("key-declined-retry", hold_id, "carol", "pm_card_ok")).await.unwrap();
    assert_eq!(status_of(&retry), PaymentStatus::Confirmed);
    assert_eq!(app.count("bookings", "").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_lost_during_slow_charge_is_refunded() {
    let app = spawn_app().await;
    let hold_id = app.seat_lock.add_hold(app.event_id, "dave", &["A-4-1", "A-4-2"], 2);
    app.seat_lock.refuse_confirm(Some((Code::FailedPrecondition, "HOLD_EXPIRED")));
    let request = app.pay_request("key-hold-lost", hold_id, "dave", "pm_card_slow_200");

    let response = app.pay(request.clone()).await.unwrap();
    assert_eq!(status_of(&response), PaymentStatus::Refunded);
    let payment = response.payment.unwrap();
    assert_eq!(payment.failure_reason, "hold expired before payment completed");
    assert!(response.booking.is_none());

    // The provider's books balance: one charge, refunded.
    assert_eq!(app.count("psp_ledger", "status = 'refunded' AND refund_id IS NOT NULL").await, 1);
    assert_eq!(app.count("psp_ledger", "status = 'captured'").await, 0);
    assert_eq!(app.count("payments", "status = 'refunded'").await, 1);
    assert_eq!(app.count("bookings", "").await, 0);
    assert_eq!(app.count("seat_guard", "").await, 0);

    let (subject, envelope) =
        app.event_with_id(&format!("refunded:{}", payment.payment_id)).await.expect("Refunded on NATS");
    assert_eq!(subject, format!("{}.payment.refunded", app.env.nats_prefix));
    let Some(Body::Refunded(refunded)) = envelope.body else { panic!("wrong body") };
    assert_eq!(refunded.amount_cents, 10_000);

    let replay = app.pay(request).await.unwrap();
    assert!(replay.replayed);
    assert_eq!(status_of(&replay), PaymentStatus::Refunded);
    assert_eq!(app.count("psp_ledger", "").await, 1);
}

/// Two Pays under one key, both finding it unused. The second one's BeginCheckout is slow (a
/// seat-lock whose Redis restarts) and the hold vanishes (Redis lost it) while the first one
/// charges, so seat-lock answers the second NOT_FOUND. The second must answer the first's
/// payment (in flight, then as it ended), not that NOT_FOUND: a key has one answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_after_the_hold_vanished_answers_the_first_payment() {
    let app = spawn_app().await;
    let hold_id = app.seat_lock.add_hold(app.event_id, "erin", &["A-5-1"], 1);
    let request = app.pay_request("key-vanished", hold_id, "erin", "pm_card_slow_500");
    app.seat_lock.state.lock().unwrap().begin_delay = Some(Duration::from_secs(2));
    let (second, first) = tokio::join!(app.pay(request.clone()), async {
        // The second Pay is in its slow BeginCheckout: the first finds the key unused too.
        while app.seat_lock.begin_calls() == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let first = app.pay(request.clone());
        let vanish = async {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while app.count("payments", "status = 'charging'").await == 0 {
                assert!(tokio::time::Instant::now() < deadline, "the first Pay never charged");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            app.seat_lock.state.lock().unwrap().holds.remove(&hold_id.to_string());
        };
        tokio::join!(first, vanish).0
    });
    let first = first.unwrap();
    assert_eq!(status_of(&first), PaymentStatus::Refunded, "its hold was gone at confirmation");
    let first_id = first.payment.unwrap().payment_id;
    match second {
        // Still charging when the second one looked again.
        Err(status) => assert_eq!(reason(&status).as_deref(), Some("REQUEST_IN_FLIGHT"), "{status:?}"),
        Ok(second) => {
            assert!(second.replayed);
            assert_eq!(second.payment.unwrap().payment_id, first_id, "the same payment");
        }
    }
    let replay = app.pay(request).await.unwrap();
    assert!(replay.replayed);
    assert_eq!(replay.payment.unwrap().payment_id, first_id);
    assert_eq!(app.count("psp_ledger", "").await, 1, "one charge");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_or_unreachable_seat_lock_moves_no_money() {
    let app = spawn_app().await;
    let hold_id = app.seat_lock.add_hold(app.event_id, "erin", &["A-5-1"], 1);
    app.seat_lock.refuse_begin(Some((Code::FailedPrecondition, "HOLD_EXPIRED")));
    let request = app.pay_request("key-refused", hold_id, "erin", "pm_card_ok");

    let status = app.pay(request.clone()).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(reason(&status).as_deref(), Some("HOLD_EXPIRED"));
    assert_eq!(app.count("psp_ledger", "").await, 0);
    assert_eq!(app.count("payments", "").await, 0);

    // The refusal is final for this key: replayed without asking seat-lock again.
    app.seat_lock.refuse_begin(None);
    let again = app.pay(request).await.unwrap_err();
    assert_eq!(again.code(), Code::FailedPrecondition);
    assert_eq!(reason(&again).as_deref(), Some("HOLD_EXPIRED"));
    assert_eq!(app.seat_lock.begin_calls(), 1);

    // Someone else's hold: refused by seat-lock, nothing charged.
    let status =
        app.pay(app.pay_request("key-not-owner", hold_id, "mallory", "pm_card_ok")).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "another user's hold does not exist for mallory");
    assert_eq!(app.count("psp_ledger", "").await, 0);

    // Seat-lock down: UNAVAILABLE, and the key is given back so the client may retry.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead_url = crate::helpers::FakeUrls {
        seat_lock: format!("https://{}", closed.local_addr().unwrap()),
        inventory: format!("http://{}", closed.local_addr().unwrap()),
    };
    drop(closed);
    let down = App::build(config(&app.env, &dead_url)).await.unwrap();
    let mut down_client = serve(down).await;
    let status = down_client
        .pay(authed(app.pay_request("key-seat-lock-down", hold_id, "erin", "pm_card_ok")))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(app.count("idempotency_keys", "key = 'key-seat-lock-down'").await, 0);
    assert_eq!(app.count("psp_ledger", "").await, 0);

    // The same key then succeeds once seat-lock is back.
    let ok = app.pay(app.pay_request("key-seat-lock-down", hold_id, "erin", "pm_card_ok")).await.unwrap();
    assert_eq!(status_of(&ok), PaymentStatus::Confirmed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbox_survives_nats_trouble_and_publishes_each_message_once() {
    let app = spawn_app().await;
    let stream_name = format!("{}_events", app.env.nats_prefix);

    // NATS loses the stream: publishing fails, the booking still commits, the row waits.
    app.bus.jetstream().delete_stream(&stream_name).await.unwrap();
    let hold_a = app.seat_lock.add_hold(app.event_id, "frank", &["A-6-1"], 1);
    let a = app.pay(app.pay_request("key-outbox-a", hold_a, "frank", "pm_card_ok")).await.unwrap();
    assert_eq!(status_of(&a), PaymentStatus::Confirmed);
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(app.count("outbox", "").await, 1, "the event must wait for NATS");
    }
    let payload_a: Vec<u8> = app
        .db
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT payload FROM payment.outbox".to_owned(),
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get("", "payload")
        .unwrap();

    // The stream comes back (`stream-setup` recreates it): the relay catches up.
    test_support::testenv::create_stream(&app.env.nats_url, &app.env.nats_prefix).await.unwrap();
    assert!(app.outbox_drained().await);

    // A relay that crashed after publishing but before deleting publishes the row again.
    let envelope_a = EventEnvelope::decode(payload_a.as_slice()).unwrap();
    app.db
        .execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "INSERT INTO payment.outbox (message_id, kind, payload) VALUES ($1, 'booking.confirmed', $2)",
            [envelope_a.message_id.clone().into(), payload_a.into()],
        ))
        .await
        .unwrap();
    assert!(app.outbox_drained().await);

    let hold_b = app.seat_lock.add_hold(app.event_id, "frank", &["A-6-2"], 1);
    let b = app.pay(app.pay_request("key-outbox-b", hold_b, "frank", "pm_card_ok")).await.unwrap();
    let id_b = format!("booking:{}", b.booking.unwrap().booking_id);
    app.event_with_id(&id_b).await.expect("second booking published");

    let mut ids: Vec<String> = app.stream_events().await.into_iter().map(|(_, id, _)| id).collect();
    ids.sort();
    let mut expected = vec![envelope_a.message_id.clone(), id_b];
    expected.sort();
    assert_eq!(ids, expected, "each message exactly once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_and_changes_nothing() {
    let app = spawn_app().await;
    let hold_id = app.seat_lock.add_hold(app.event_id, "gina", &["A-7-1"], 1);
    let good = app.pay_request("key-bad-input", hold_id, "gina", "pm_card_ok");
    let bad_requests = [
        v1::PayRequest { idempotency_key: "short".into(), ..good.clone() },
        v1::PayRequest { idempotency_key: "has spaces in it".into(), ..good.clone() },
        v1::PayRequest { idempotency_key: "k".repeat(129), ..good.clone() },
        v1::PayRequest { event_id: "not-a-uuid".into(), ..good.clone() },
        v1::PayRequest { hold_id: String::new(), ..good.clone() },
        v1::PayRequest { payment_method: "pm_card_gold".into(), ..good.clone() },
        v1::PayRequest { payment_method: "pm_card_slow_x".into(), ..good.clone() },
    ];
    for request in bad_requests {
        let status = app.pay(request.clone()).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{request:?}");
    }
    // Acting for someone else than the token's subject is refused before anything else.
    let status = app.client.clone().pay(as_user("mallory", good.clone())).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert_eq!(reason(&status).as_deref(), Some("USER_MISMATCH"));
    assert_eq!(app.count("idempotency_keys", "").await, 0);
    assert_eq!(app.count("payments", "").await, 0);
    assert_eq!(app.seat_lock.begin_calls(), 0);

    let mut client = app.client.clone();
    let unknown = Uuid::now_v7().to_string();
    let invalid = [
        client
            .get_payment(authed(v1::GetPaymentRequest { payment_id: "x".into(), user_id: "gina".into() }))
            .await
            .unwrap_err(),
        client
            .get_booking(authed(v1::GetBookingRequest { booking_id: String::new(), user_id: "gina".into() }))
            .await
            .unwrap_err(),
        client
            .list_bookings(authed(v1::ListBookingsRequest {
                user_id: "gina".into(),
                event_id: "nope".into(),
                ..Default::default()
            }))
            .await
            .unwrap_err(),
        client
            .list_bookings(authed(v1::ListBookingsRequest {
                user_id: "gina".into(),
                page_token: "garbage".into(),
                ..Default::default()
            }))
            .await
            .unwrap_err(),
        app.internal()
            .list_sold_seats(ticketing_proto::internal::ListSoldSeatsRequest { event_id: "nope".into() })
            .await
            .unwrap_err(),
    ];
    for status in invalid {
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    }
    let not_found = [
        client
            .get_payment(authed(v1::GetPaymentRequest {
                payment_id: unknown.clone(),
                user_id: "gina".into(),
            }))
            .await
            .unwrap_err(),
        client
            .get_booking(authed(v1::GetBookingRequest {
                booking_id: unknown.clone(),
                user_id: "gina".into(),
            }))
            .await
            .unwrap_err(),
    ];
    for status in not_found {
        assert_eq!(status.code(), Code::NotFound, "{status:?}");
    }
    let empty = app
        .internal()
        .list_sold_seats(ticketing_proto::internal::ListSoldSeatsRequest {
            event_id: app.event_id.to_string(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(empty.seats.is_empty());
    assert_eq!(app.count("idempotency_keys", "").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_refunds_a_charge_stuck_in_processing() {
    let env = TestEnv::new().await.unwrap();
    let seat_lock = FakeSeatLock::default();
    let url = spawn_fake_seat_lock(seat_lock.clone()).await;
    let app = App::build(config(&env, &url)).await.unwrap();
    let db = env.database().await.unwrap();

    // A request that crashed after the charge: payment processing, key in flight, money taken.
    let command = PayCommand {
        idempotency_key: "key-stuck-1".into(),
        event_id: Uuid::now_v7(),
        hold_id: Uuid::now_v7(),
        user_id: "hank".into(),
        payment_method: "pm_card_ok".into(),
    };
    let payment_id = Uuid::now_v7();
    for (sql, values) in [
        (
            "INSERT INTO payment.idempotency_keys (key, request_hash, state, updated_at) \
             VALUES ($1, $2, 'in_flight', now() - interval '1 hour')",
            vec![command.idempotency_key.clone().into(), command.request_hash().into()],
        ),
        (
            "INSERT INTO payment.payments (payment_id, idempotency_key, event_id, hold_id, user_id, amount_cents, \
             currency, status, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, 4200, 'EUR', 'processing', now() - interval '1 hour', now() - interval '1 hour')",
            vec![
                payment_id.into(),
                command.idempotency_key.clone().into(),
                command.event_id.into(),
                command.hold_id.into(),
                command.user_id.clone().into(),
            ],
        ),
        (
            "INSERT INTO payment.psp_ledger (charge_id, idempotency_key, amount_cents, currency, status) \
             VALUES ('ch_stuck', $1, 4200, 'EUR', 'captured')",
            vec![payment_id.to_string().into()],
        ),
        // A request that died before writing its payment leaves only a key behind.
        (
            "INSERT INTO payment.idempotency_keys (key, request_hash, state, updated_at) \
             VALUES ('key-stuck-2', '\\x00', 'in_flight', now() - interval '1 hour')",
            vec![],
        ),
    ] {
        db.execute_raw(Statement::from_sql_and_values(DbBackend::Postgres, sql, values)).await.unwrap();
    }

    assert_eq!(app.recover_stuck_payments(Duration::from_secs(120)).await.unwrap().settled, 1);

    let stuck = attach(env, seat_lock, app).await;
    assert_eq!(stuck.count("psp_ledger", "charge_id = 'ch_stuck' AND status = 'refunded'").await, 1);
    assert_eq!(stuck.count("payments", "status = 'refunded'").await, 1);
    assert_eq!(stuck.count("idempotency_keys", "key = 'key-stuck-2'").await, 0);

    // The client's retry gets the settled answer, never a second charge.
    let replay = stuck
        .pay(v1::PayRequest {
            idempotency_key: command.idempotency_key.clone(),
            event_id: command.event_id.to_string(),
            hold_id: command.hold_id.to_string(),
            user_id: command.user_id.clone(),
            payment_method: command.payment_method.clone(),
        })
        .await
        .unwrap();
    assert!(replay.replayed);
    assert_eq!(status_of(&replay), PaymentStatus::Refunded);
    assert_eq!(stuck.count("psp_ledger", "").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seat_guard_and_hold_uniqueness_refund_a_double_sale() {
    let app = spawn_app().await;
    // Seat-lock has failed (e.g. lost its Redis state): two holds claim seat A-8-1.
    let first = app.seat_lock.add_hold(app.event_id, "ivan", &["A-8-1"], 1);
    let second = app.seat_lock.add_hold(app.event_id, "judy", &["A-8-2", "A-8-1"], 2);

    let sold = app.pay(app.pay_request("key-guard-1", first, "ivan", "pm_card_ok")).await.unwrap();
    assert_eq!(status_of(&sold), PaymentStatus::Confirmed);
    let double = app.pay(app.pay_request("key-guard-2", second, "judy", "pm_card_ok")).await.unwrap();
    assert_eq!(status_of(&double), PaymentStatus::Refunded);
    assert!(double.booking.is_none());
    assert_eq!(double.payment.as_ref().unwrap().failure_reason, "seat A-8-1 was already sold");

    // The same hold paid under a second key: seat-lock refuses the sold hold before any
    // charge (and were it to let it through, `payments_one_live_per_hold` would refuse it:
    // see `slow_provider`).
    let again = app.pay(app.pay_request("key-guard-3", first, "ivan", "pm_card_ok")).await.unwrap_err();
    assert_eq!((again.code(), reason(&again).as_deref()), (Code::FailedPrecondition, Some("HOLD_SOLD")));

    assert_eq!(app.count("bookings", "").await, 1);
    assert_eq!(app.count("seat_guard", "").await, 1);
    assert_eq!(app.count("booking_seats", "").await, 1, "the rolled back booking left no seats");
    assert_eq!(app.count("psp_ledger", "status = 'captured'").await, 1);
    assert_eq!(app.count("psp_ledger", "status = 'refunded'").await, 1);
    assert_eq!(app.ledger_violations().await, Vec::<String>::new());
}

/// Writes what a Pay that crashed after the charge leaves behind, an hour ago: the key in
/// flight, the `processing` payment with its reserved booking id, and the captured charge
/// `ch_<key>`. Returns the command and the reserved booking id.
async fn insert_stuck_payment(
    db: &sea_orm::DatabaseConnection,
    key: &str,
    event_id: Uuid,
    hold_id: Uuid,
    user: &str,
) -> (PayCommand, Uuid) {
    let command = PayCommand {
        idempotency_key: key.into(),
        event_id,
        hold_id,
        user_id: user.into(),
        payment_method: "pm_card_ok".into(),
    };
    let (payment_id, booking_id) = (Uuid::now_v7(), Uuid::now_v7());
    for (sql, values) in [
        (
            "INSERT INTO payment.idempotency_keys (key, request_hash, state, updated_at) \
             VALUES ($1, $2, 'in_flight', now() - interval '1 hour')",
            vec![command.idempotency_key.clone().into(), command.request_hash().into()],
        ),
        (
            "INSERT INTO payment.payments (payment_id, idempotency_key, event_id, hold_id, user_id, \
             amount_cents, currency, status, reserved_booking_id, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, 10000, 'EUR', 'processing', $6, now() - interval '1 hour', \
             now() - interval '1 hour')",
            vec![
                payment_id.into(),
                command.idempotency_key.clone().into(),
                event_id.into(),
                hold_id.into(),
                command.user_id.clone().into(),
                booking_id.into(),
            ],
        ),
        (
            "INSERT INTO payment.psp_ledger (charge_id, idempotency_key, amount_cents, currency, status) \
             VALUES ($1, $2, 10000, 'EUR', 'captured')",
            vec![format!("ch_{key}").into(), payment_id.to_string().into()],
        ),
    ] {
        db.execute_raw(Statement::from_sql_and_values(DbBackend::Postgres, sql, values)).await.unwrap();
    }
    (command, booking_id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_completes_a_paid_booking_whose_hold_is_live_and_refunds_a_lost_one() {
    let env = TestEnv::new().await.unwrap();
    let seat_lock = FakeSeatLock::default();
    let url = spawn_fake_seat_lock(seat_lock.clone()).await;
    let app = App::build(config(&env, &url)).await.unwrap();
    let db = env.database().await.unwrap();
    let event_id = Uuid::now_v7();
    // Two requests that crashed after the charge: one hold is still live in seat-lock (in
    // checkout), the other is gone.
    let live_hold = seat_lock.add_hold(event_id, "kate", &["A-9-1", "A-9-2"], 2);
    let stuck = [
        insert_stuck_payment(&db, "key-live-1", event_id, live_hold, "kate").await,
        insert_stuck_payment(&db, "key-lost-1", event_id, Uuid::now_v7(), "liam").await,
    ];

    assert_eq!(app.recover_stuck_payments(Duration::from_secs(120)).await.unwrap().settled, 2);
    let app = attach(env, seat_lock, app).await;
    assert_eq!(app.seat_lock.confirm_calls.load(std::sync::atomic::Ordering::SeqCst), 2);

    // The live hold is booked under the reserved id, with its seats guarded; nothing refunded.
    let (live, booking_id) = &stuck[0];
    let replay = app
        .pay(v1::PayRequest {
            idempotency_key: live.idempotency_key.clone(),
            event_id: event_id.to_string(),
            hold_id: live.hold_id.to_string(),
            user_id: live.user_id.clone(),
            payment_method: live.payment_method.clone(),
        })
        .await
        .unwrap();
    assert!(replay.replayed);
    assert_eq!(status_of(&replay), PaymentStatus::Confirmed);
    assert_eq!(replay.booking.as_ref().map(|b| b.booking_id.clone()), Some(booking_id.to_string()));
    assert_eq!(app.count("bookings", &format!("booking_id = '{booking_id}'")).await, 1);
    assert_eq!(app.count("seat_guard", &format!("booking_id = '{booking_id}'")).await, 2);
    assert_eq!(app.count("psp_ledger", "charge_id = 'ch_key-live-1' AND status = 'captured'").await, 1);

    // The lost hold is refunded, with no booking.
    let (lost, _) = &stuck[1];
    let replay = app
        .pay(v1::PayRequest {
            idempotency_key: lost.idempotency_key.clone(),
            event_id: event_id.to_string(),
            hold_id: lost.hold_id.to_string(),
            user_id: lost.user_id.clone(),
            payment_method: lost.payment_method.clone(),
        })
        .await
        .unwrap();
    assert_eq!(status_of(&replay), PaymentStatus::Refunded);
    assert_eq!(app.count("psp_ledger", "charge_id = 'ch_key-lost-1' AND status = 'refunded'").await, 1);
    assert_eq!(app.count("bookings", "").await, 1);
    assert_eq!(app.count("payments", "status = 'processing'").await, 0);
    // Both outcomes reach the outbox relay: a BookingConfirmed and a Refunded.
    assert!(app.event_with_id(&format!("booking:{booking_id}")).await.is_some());
    assert!(app.outbox_drained().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_waits_for_an_unreachable_seat_lock_instead_of_refunding() {
    let env = TestEnv::new().await.unwrap();
    let seat_lock = FakeSeatLock::default();
    let url = spawn_fake_seat_lock(seat_lock.clone()).await;
    let app = App::build(config(&env, &url)).await.unwrap();
    let db = env.database().await.unwrap();
    let event_id = Uuid::now_v7();
    let hold_id = seat_lock.add_hold(event_id, "mia", &["A-7-1"], 1);
    let (_, booking_id) = insert_stuck_payment(&db, "key-wait-1", event_id, hold_id, "mia").await;

    // Seat-lock is down: nothing is decided, the money stays captured, and so does the payment.
    seat_lock.refuse_confirm(Some((Code::Unavailable, "DOWN")));
    let pass = app.recover_stuck_payments(Duration::from_secs(120)).await.unwrap();
    assert_eq!((pass.settled, pass.waiting), (0, 1));
    let status = db
        .query_one_raw(Statement::from_string(DbBackend::Postgres, "SELECT status FROM payment.payments"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.try_get::<String>("", "status").unwrap(), "captured");
    // Seat-lock is back: the next pass books (any age: the payment's state just changed).
    seat_lock.refuse_confirm(None);
    assert_eq!(app.recover_stuck_payments(Duration::ZERO).await.unwrap().settled, 1);

    let app = attach(env, seat_lock, app).await;
    assert_eq!(app.count("payments", "status = 'confirmed'").await, 1);
    assert_eq!(app.count("bookings", &format!("booking_id = '{booking_id}'")).await, 1);
    assert_eq!(app.count("psp_ledger", "status = 'captured'").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_groups_share_commits_and_keep_a_failure_to_its_own_statement() {
    let env = TestEnv::new().await.unwrap();
    let db = env.database().await.unwrap();
    db.execute_unprepared("CREATE TABLE grouped (id int PRIMARY KEY); INSERT INTO grouped VALUES (0)")
        .await
        .unwrap();
    // One group at a time, so the callers queue up into groups.
    let groups = CommitGroups::start(db.clone(), 1);
    const CALLERS: i32 = 200;
    const DUPLICATE: i32 = 150;
    let answers = join_all((1..=CALLERS).map(|n| {
        let groups = groups.clone();
        // Caller DUPLICATE inserts the existing row 0: only it may fail.
        let id = if n == DUPLICATE { 0 } else { n };
        async move {
            groups
                .query_one(Statement::from_sql_and_values(
                    DbBackend::Postgres,
                    "INSERT INTO grouped VALUES ($1) RETURNING id",
                    [id.into()],
                ))
                .await
        }
    }))
    .await;

    for (n, answer) in (1..=CALLERS).zip(answers) {
        if n == DUPLICATE {
            assert!(answer.is_err(), "{answer:?}");
        } else {
            let row = answer.unwrap().unwrap();
            assert_eq!(row.try_get::<i32>("", "id").unwrap(), n);
        }
    }
    let count = |sql: &'static str| {
        let db = db.clone();
        async move {
            let row =
                db.query_one_raw(Statement::from_string(DbBackend::Postgres, sql)).await.unwrap().unwrap();
            row.try_get_by_index::<i64>(0).unwrap()
        }
    };
    assert_eq!(count("SELECT count(*) FROM grouped").await, i64::from(CALLERS));
    // Rows committed together share their transaction id.
    let transactions = count("SELECT count(DISTINCT xmin::text) FROM grouped WHERE id > 0").await;
    assert!(transactions < i64::from(CALLERS - 1) / 2, "{transactions} commits for {} rows", CALLERS - 1);
}

/// Refunds and reconciliations are operator actions: a user's token, or none, is refused and
/// nothing moves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_an_operator_refunds_or_reconciles() {
    let app = spawn_app().await;
    let hold_id = app.seat_lock.add_hold(app.event_id, "alice", &["A-9-1"], 1);
    let paid = app.pay(app.pay_request("key-op-only-1", hold_id, "alice", "pm_card_ok")).await.unwrap();
    let booking_id = paid.booking.unwrap().booking_id;
    let refund = v1::RefundBookingRequest {
        idempotency_key: "refund-op-only-1".into(),
        booking_id,
        reason: "the show moved".into(),
    };
    let mut client = app.client.clone();
    let runs_before = app.count("reconciliation_runs", "").await;
    let by_user = client.refund_booking(as_user("alice", refund.clone())).await.unwrap_err();
    assert_eq!(
        (by_user.code(), reason(&by_user).as_deref()),
        (Code::PermissionDenied, Some("ADMIN_SCOPE_REQUIRED"))
    );
    let anonymous = client.refund_booking(refund).await.unwrap_err();
    assert_eq!(
        (anonymous.code(), reason(&anonymous).as_deref()),
        (Code::Unauthenticated, Some("TOKEN_MISSING"))
    );
    let reconcile =
        client.reconcile(as_user("alice", v1::ReconcileRequest { dry_run: false })).await.unwrap_err();
    assert_eq!(reconcile.code(), Code::PermissionDenied);
    assert_eq!(app.count("refunds", "").await, 0);
    assert_eq!(app.count("bookings", "status = 'confirmed'").await, 1);
    assert_eq!(app.count("reconciliation_runs", "").await, runs_before);
}
