//! Integration tests of seat-lock against the real Redis and NATS, with inventory and payment
//! replaced by a small in-test fake.
// Tests may panic on the unexpected: that is how they fail.
#![allow(clippy::expect_used, clippy::unwrap_used)]

#[path = "api/helpers.rs"]
mod helpers;

#[path = "api/cluster.rs"]
mod cluster;

#[path = "api/mtls.rs"]
mod mtls;

#[path = "api/returns.rs"]
mod returns;

#[path = "api/passes.rs"]
mod passes;

use std::collections::HashSet;

use futures::{StreamExt, future::join_all};
use helpers::*;
use prost::Message;
use ticketing_proto::{
    events::{EventEnvelope, ReleaseReason, event_envelope::Body},
    internal::{BeginCheckoutRequest, ConfirmHoldRequest, SoldSeat},
    pass::{PassSigner, generate_signing_key},
    v1::{GetHoldRequest, HoldBestAvailableRequest, HoldState, ReleaseHoldRequest},
};
use tonic::Code;

fn assert_refused(
    result: Result<impl std::fmt::Debug, tonic::Status>,
    code: Code,
    reason: &str,
) -> tonic::Status {
    let status = result.expect_err("expected a refusal");
    assert_eq!(status.code(), code, "{status:?}");
    assert_eq!(reason_of(&status).0, reason, "{status:?}");
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_hundred_users_race_for_one_seat_and_exactly_one_wins() -> anyhow::Result<()> {
    let app = spawn_app(600).await?;
    let tasks = (0..100).map(|i| {
        let request = app.hold_request(&format!("racer-{i}"), &["A-R1-1"]);
        let mut client = app.client();
        tokio::spawn(async move { client.hold_seats(request).await })
    });
    let results = join_all(tasks).await;
    let mut won = 0;
    for result in results {
        match result? {
            Ok(hold) => {
                won += 1;
                assert_eq!(hold.get_ref().seat_ids, vec!["A-R1-1".to_owned()]);
                assert_eq!(hold.get_ref().state, HoldState::Held as i32);
            }
            Err(status) => {
                assert_eq!(status.code(), Code::Aborted, "{status:?}");
                let (reason, metadata) = reason_of(&status);
                assert_eq!(reason, "SEAT_TAKEN");
                assert_eq!(metadata.get("seat_ids").map(String::as_str), Some("A-R1-1"));
                assert!(status.message().contains("A-R1-1"));
            }
        }
    }
    assert_eq!(won, 1);
    assert_eq!(app.free("A").await?, i64::from(CAPACITY_A) - 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_seat_hold_overlapping_a_held_seat_holds_nothing() -> anyhow::Result<()> {
    let app = spawn_app(600).await?;
    app.hold("u1", &["A-R1-2"]).await?;
    let status =
        assert_refused(app.hold("u2", &["A-R1-1", "A-R1-2", "A-R1-3"]).await, Code::Aborted, "SEAT_TAKEN");
    assert_eq!(reason_of(&status).1.get("seat_ids").map(String::as_str), Some("A-R1-2"));
    assert_eq!(app.free("A").await?, i64::from(CAPACITY_A) - 1);
    let hold = app.hold("u3", &["A-R1-1", "A-R1-3"]).await?;
    assert_eq!(hold.quantity, 2);
    assert_eq!(hold.total_price_cents, 2 * PRICE_A);
    assert_eq!(hold.currency, "EUR");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ticket_limit_counts_live_holds_and_bought_tickets() -> anyhow::Result<()> {
    let app = spawn_app(600).await?;
    let first = app.hold("u1", &["A-R2-1", "A-R2-2", "A-R2-3"]).await?;
    let status = assert_refused(
        app.hold("u1", &["A-R3-1", "A-R3-2"]).await,
        Code::FailedPrecondition,
        "TICKET_LIMIT_EXCEEDED",
    );
    let metadata = reason_of(&status).1;
    assert_eq!(metadata.get("limit").map(String::as_str), Some("4"));
    assert_eq!(metadata.get("already").map(String::as_str), Some("3"));

    let confirm = ConfirmHoldRequest {
        event_id: app.event_id.clone(),
        hold_id: first.hold_id.clone(),
        user_id: "u1".into(),
        booking_id: "booking-1".into(),
    };
    assert_eq!(app.internal().confirm_hold(confirm).await?.into_inner().state, HoldState::Sold as i32);
    let status = assert_refused(
        app.hold("u1", &["A-R3-1", "A-R3-2"]).await,
        Code::FailedPrecondition,
        "TICKET_LIMIT_EXCEEDED",
    );
    assert_eq!(reason_of(&status).1.get("already").map(String::as_str), Some("3"));
    // The last ticket still fits, and the refused seats stayed free for it.
    app.hold("u1", &["A-R3-1"]).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_are_verified_locally_with_precise_reasons() -> anyhow::Result<()> {
    let app = spawn_app(600).await?;
    let mut request = app.hold_request("u1", &["A-R1-1"]);

    // A key of the right id that seat-lock does not know: nobody but admission can sign.
    let forger: PassSigner = generate_signing_key("k2").0.parse()?;
    request.pass_token = forger.sign(claims(&app.event_id, "u1", now_ms() + 60_000));
    assert_refused(app.client().hold_seats(request.clone()).await, Code::PermissionDenied, "PASS_INVALID");
    request.pass_token = "garbage".into();
    assert_refused(app.client().hold_seats(request.clone()).await, Code::PermissionDenied, "PASS_INVALID");
    request.pass_token = app.signer.sign(claims(&app.event_id, "u1", now_ms() - 1));
    assert_refused(app.client().hold_seats(request.clone()).await, Code::PermissionDenied, "PASS_EXPIRED");
    request.pass_token = app.pass("u2");
    assert_refused(app.client().hold_seats(request.clone()).await, Code::PermissionDenied, "PASS_WRONG_USER");
    request.pass_token = app.signer.sign(claims(&uuid::Uuid::new_v4().to_string(), "u1", now_ms() + 60_000));
    assert_refused(
        app.client().hold_seats(request.clone()).await,
        Code::PermissionDenied,
        "PASS_WRONG_EVENT",
    );
    let seat: Option<String> = fred::prelude::KeysInterface::get(&app.redis, app.key("seat:A-R1-1")).await?;
    assert_eq!(seat, None, "a refused pass holds nothing");

    // Key rotation: a pass signed by the previous key is still accepted.
    let previous: PassSigner = PREVIOUS_KEY.0.parse()?;
    request.pass_token = previous.sign(claims(&app.event_id, "u1", now_ms() + 60_000));
    let hold = app.client().hold_seats(request).await?.into_inner();
    assert_eq!(hold.seat_ids, vec!["A-R1-1".to_owned()]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_hold_frees_its_seats_by_itself_and_is_announced() -> anyhow::Result<()> {
    let app = spawn_app(1).await?;
    let nats = async_nats::connect(&app.env.nats_url).await?;
    let mut released = nats.subscribe(format!("{}.seats.released", app.env.nats_prefix)).await?;
    let mut held = nats.subscribe(format!("{}.seats.held", app.env.nats_prefix)).await?;

    let hold = app.hold("u1", &["A-R4-1", "A-R4-2"]).await?;
    let announced = tokio::time::timeout(EVENTUALLY, held.next()).await?.expect("held message");
    let envelope = EventEnvelope::decode(announced.payload)?;
    assert_eq!(envelope.message_id, format!("held:{}", hold.hold_id));

    // No call is made: the sweeper ends the hold and the relay announces it.
    let message = tokio::time::timeout(EVENTUALLY, released.next()).await?.expect("released message");
    let envelope = EventEnvelope::decode(message.payload)?;
    assert_eq!(envelope.message_id, format!("released:{}", hold.hold_id));
    let Some(Body::SeatsReleased(body)) = envelope.body else { panic!("not SeatsReleased: {envelope:?}") };
    assert_eq!(body.reason, ReleaseReason::Expired as i32);
    assert_eq!(body.hold_id, hold.hold_id);
    assert_eq!(body.seat_ids, vec!["A-R4-1".to_owned(), "A-R4-2".to_owned()]);
    assert_eq!(app.free("A").await?, i64::from(CAPACITY_A));
    let seat: Option<String> = fred::prelude::KeysInterface::get(&app.redis, app.key("seat:A-R4-1")).await?;
    assert_eq!(seat, None);

    let got = app
        .client()
        .get_hold(GetHoldRequest {
            event_id: app.event_id.clone(),
            hold_id: hold.hold_id.clone(),
            user_id: "u1".into(),
        })
        .await?
        .into_inner();
    assert_eq!(got.state, HoldState::Expired as i32);
    let checkout =
        BeginCheckoutRequest { event_id: app.event_id.clone(), hold_id: hold.hold_id, user_id: "u1".into() };
    assert_refused(app.internal().begin_checkout(checkout).await, Code::FailedPrecondition, "HOLD_EXPIRED");
    app.hold("u2", &["A-R4-1", "A-R4-2"]).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_owner_acts_and_checkout_and_confirm_behave() -> anyhow::Result<()> {
    let app = spawn_app(600).await?;
    let hold = app.hold("u1", &["A-R5-1", "A-R5-2"]).await?;
    let ev = app.event_id.clone();
    let get = |user: &str| GetHoldRequest {
        event_id: ev.clone(),
        hold_id: hold.hold_id.clone(),
        user_id: user.into(),
    };
    let release = |user: &str| ReleaseHoldRequest {
        event_id: ev.clone(),
        hold_id: hold.hold_id.clone(),
        user_id: user.into(),
    };
    let mut client = app.client();

    // Another user's hold answers exactly as a hold nobody has: same code, reason, message
    // and details, with only the id asked for in them.
    let missing = uuid::Uuid::now_v7().to_string();
    let same_answer = |status: tonic::Status, asked: &str| {
        let (reason, metadata) = reason_of(&status);
        let message = status.message().replace(asked, "<hold>");
        (
            status.code(),
            reason,
            metadata.into_iter().map(|(k, v)| (k, v.replace(asked, "<hold>"))).collect::<Vec<_>>(),
            message,
        )
    };
    let get_missing = GetHoldRequest { event_id: ev.clone(), hold_id: missing.clone(), user_id: "u2".into() };
    let release_missing =
        ReleaseHoldRequest { event_id: ev.clone(), hold_id: missing.clone(), user_id: "u2".into() };
    let nobodys = same_answer(client.get_hold(get_missing).await.expect_err("missing"), &missing);
    assert_eq!(nobodys.0, Code::NotFound);
    assert_eq!(nobodys.1, "HOLD_NOT_FOUND");
    let others = same_answer(client.get_hold(get("u2")).await.expect_err("not u2's"), &hold.hold_id);
    assert_eq!(others, nobodys);
    let nobodys = same_answer(client.release_hold(release_missing).await.expect_err("missing"), &missing);
    let others = same_answer(client.release_hold(release("u2")).await.expect_err("not u2's"), &hold.hold_id);
    assert_eq!(others, nobodys);
    assert_eq!(client.get_hold(get("u1")).await?.into_inner().state, HoldState::Held as i32);

    let checkout =
        BeginCheckoutRequest { event_id: ev.clone(), hold_id: hold.hold_id.clone(), user_id: "u1".into() };
    let in_checkout = app.internal().begin_checkout(checkout.clone()).await?.into_inner();
    assert_eq!(in_checkout.state, HoldState::Checkout as i32);
    assert!(in_checkout.expires_at.map(|t| t.seconds) >= hold.expires_at.map(|t| t.seconds));
    assert_refused(client.release_hold(release("u1")).await, Code::FailedPrecondition, "HOLD_IN_CHECKOUT");

    let confirm = ConfirmHoldRequest {
        event_id: ev.clone(),
        hold_id: hold.hold_id.clone(),
        user_id: "u1".into(),
        booking_id: "booking-7".into(),
    };
    let first = app.internal().confirm_hold(confirm.clone()).await?.into_inner();
    let again = app.internal().confirm_hold(confirm.clone()).await?.into_inner();
    assert_eq!(first, again);
    assert_eq!(first.state, HoldState::Sold as i32);
    let other_booking = ConfirmHoldRequest { booking_id: "booking-8".into(), ..confirm };
    assert_refused(app.internal().confirm_hold(other_booking).await, Code::FailedPrecondition, "HOLD_SOLD");
    assert_refused(client.release_hold(release("u1")).await, Code::FailedPrecondition, "HOLD_SOLD");
    assert_refused(app.internal().begin_checkout(checkout).await, Code::FailedPrecondition, "HOLD_SOLD");
    assert_refused(app.hold("u2", &["A-R5-2"]).await, Code::Aborted, "SEAT_TAKEN");
    // Sold seats stay out of the free count.
    assert_eq!(app.free("A").await?, i64::from(CAPACITY_A) - 2);

    // Release of a plain hold gives the seats back, and repeating it is harmless.
    let other = app.hold("u3", &["A-R5-3"]).await?;
    let release3 =
        ReleaseHoldRequest { event_id: ev.clone(), hold_id: other.hold_id.clone(), user_id: "u3".into() };
    let released = client.release_hold(release3.clone()).await?.into_inner().hold.expect("hold");
    assert_eq!(released.state, HoldState::Released as i32);
    let replay = client.release_hold(release3).await?.into_inner().hold.expect("hold");
    assert_eq!(replay.state, HoldState::Released as i32);
    let late = ConfirmHoldRequest {
        event_id: ev.clone(),
        hold_id: other.hold_id,
        user_id: "u3".into(),
        booking_id: "booking-9".into(),
    };
    assert_refused(app.internal().confirm_hold(late).await, Code::FailedPrecondition, "HOLD_EXPIRED");
    app.hold("u4", &["A-R5-3"]).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn best_available_storms_never_share_a_seat() -> anyhow::Result<()> {
    let app = spawn_app(600).await?;
    let storm =
        |name: &'static str, allow_split: bool| (0..20).map(move |i| (format!("{name}-{i}"), allow_split));
    let tasks = storm("adjacent", false).chain(storm("split", true)).map(|(user, allow_split)| {
        let request = HoldBestAvailableRequest {
            pass_token: app.pass(&user),
            event_id: app.event_id.clone(),
            user_id: user,
            zone_id: "A".into(),
            quantity: 2,
            allow_split,
        };
        let mut client = app.client();
        tokio::spawn(async move { client.hold_best_available(request).await })
    });
    let mut seats = HashSet::new();
    let mut held = 0i64;
    for result in join_all(tasks).await {
        match result? {
            Ok(hold) => {
                let hold = hold.into_inner();
                assert_eq!(hold.seat_ids.len(), 2);
                for seat in hold.seat_ids {
                    assert!(seats.insert(seat.clone()), "{seat} is in two holds");
                }
                held += 2;
            }
            Err(status) => {
                assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
                assert_eq!(reason_of(&status).0, "ZONE_SOLD_OUT");
            }
        }
    }
    assert_eq!(held, i64::from(CAPACITY_A), "40 callers asking 2 each fill 50 seats");
    assert_eq!(held + app.free("A").await?, i64::from(CAPACITY_A));

    // General admission is sold by count, without seat ids.
    let ga = HoldBestAvailableRequest {
        pass_token: app.pass("fan"),
        event_id: app.event_id.clone(),
        user_id: "fan".into(),
        zone_id: "GA".into(),
        quantity: 3,
        allow_split: false,
    };
    let hold = app.client().hold_best_available(ga).await?.into_inner();
    assert!(hold.seat_ids.is_empty());
    assert_eq!(hold.quantity, 3);
    assert_eq!(hold.total_price_cents, 3 * PRICE_GA);
    assert_eq!(app.free("GA").await?, 97);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn best_available_prefers_the_best_row_and_lowest_seats() -> anyhow::Result<()> {
    let app = spawn_app(600).await?;
    app.hold("u1", &["A-R1-2"]).await?;
    let request = |user: &str, quantity, allow_split| HoldBestAvailableRequest {
        pass_token: app.pass(user),
        event_id: app.event_id.clone(),
        user_id: user.into(),
        zone_id: "A".into(),
        quantity,
        allow_split,
    };
    let hold = app.client().hold_best_available(request("u2", 3, false)).await?.into_inner();
    assert_eq!(hold.seat_ids, vec!["A-R1-3", "A-R1-4", "A-R1-5"]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_redis_loss_sold_seats_are_rebuilt_from_payment_never_free() -> anyhow::Result<()> {
    let app = spawn_app(600).await?;
    let hold = app.hold("u1", &["A-R2-5"]).await?;
    let confirm = ConfirmHoldRequest {
        event_id: app.event_id.clone(),
        hold_id: hold.hold_id.clone(),
        user_id: "u1".into(),
        booking_id: "booking-42".into(),
    };
    let sold = app.internal().confirm_hold(confirm.clone()).await?.into_inner();
    app.payment.sold.lock().expect("lock").push(SoldSeat {
        zone_id: "A".into(),
        seat_id: "A-R2-5".into(),
        user_id: "u1".into(),
        booking_id: "booking-42".into(),
        hold_id: hold.hold_id.clone(),
    });

    app.flush_test_keys().await?;
    app.payment.down.store(true, std::sync::atomic::Ordering::SeqCst);
    for seat in ["A-R2-5", "A-R2-6"] {
        let status = app.hold("u2", &[seat]).await.expect_err("must not hold while rebuilding");
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert!(status.message().contains("rebuilding state from payment"), "{status:?}");
    }

    app.payment.down.store(false, std::sync::atomic::Ordering::SeqCst);
    let status = assert_refused(app.hold("u2", &["A-R2-5"]).await, Code::Aborted, "SEAT_TAKEN");
    assert_eq!(reason_of(&status).1.get("seat_ids").map(String::as_str), Some("A-R2-5"));
    assert_eq!(app.free("A").await?, i64::from(CAPACITY_A) - 1);
    // The sale survives: a confirm replay answers the same, and the bought ticket counts.
    assert_eq!(app.internal().confirm_hold(confirm).await?.into_inner(), sold);
    assert_refused(
        app.hold("u1", &["A-R3-1", "A-R3-2", "A-R3-3", "A-R3-4"]).await,
        Code::FailedPrecondition,
        "TICKET_LIMIT_EXCEEDED",
    );
    app.hold("u2", &["A-R2-6"]).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_for_every_rpc_and_changes_nothing() -> anyhow::Result<()> {
    let app = spawn_app(600).await?;
    let hold = app.hold("u1", &["A-R1-1"]).await?;
    let mut client = app.client();
    let ev = app.event_id.clone();
    let unknown_event = uuid::Uuid::new_v4().to_string();

    let bad_holds = [
        (app.hold_request("u1", &[]), Code::InvalidArgument),
        (app.hold_request("u1", &["A-R1-2", "A-R1-2"]), Code::InvalidArgument),
        (app.hold_request("u1", &["A-R9-1"]), Code::InvalidArgument),
        (app.hold_request("u1", &["A-R1-11"]), Code::InvalidArgument),
        (app.hold_request("u1", &["A-R1-02"]), Code::InvalidArgument),
        (app.hold_request("u1", &["GA-1-1"]), Code::InvalidArgument),
        (app.hold_request("u1", &["A-R1-2", "A-R1-3", "A-R1-4", "A-R1-5", "A-R1-6"]), Code::InvalidArgument),
        // A user id no token can carry: the token is refused before anything is read.
        (app.hold_request("bad user!", &["A-R1-2"]), Code::Unauthenticated),
        // Another spelling of the event's UUID would be another key space for the same seats.
        (
            ticketing_proto::v1::HoldSeatsRequest {
                event_id: ev.to_uppercase(),
                ..app.hold_request("u1", &["A-R1-1"])
            },
            Code::InvalidArgument,
        ),
        (
            ticketing_proto::v1::HoldSeatsRequest {
                pass_token: String::new(),
                ..app.hold_request("u1", &["A-R1-2"])
            },
            Code::InvalidArgument,
        ),
        (
            ticketing_proto::v1::HoldSeatsRequest {
                event_id: "not-a-uuid".into(),
                ..app.hold_request("u1", &["A-R1-2"])
            },
            Code::InvalidArgument,
        ),
        (
            ticketing_proto::v1::HoldSeatsRequest {
                event_id: unknown_event.clone(),
                ..app.hold_request("u1", &["A-R1-2"])
            },
            Code::NotFound,
        ),
    ];
    for (request, code) in bad_holds {
        let status = client.hold_seats(request.clone()).await.expect_err("bad input");
        assert_eq!(status.code(), code, "{request:?} -> {status:?}");
    }

    let best = |zone: &str, quantity| HoldBestAvailableRequest {
        pass_token: app.pass("u1"),
        event_id: ev.clone(),
        user_id: "u1".into(),
        zone_id: zone.into(),
        quantity,
        allow_split: true,
    };
    for request in [best("A", 0), best("A", 5), best("Z", 1), best("", 1)] {
        let status = client.hold_best_available(request.clone()).await.expect_err("bad input");
        assert_eq!(status.code(), Code::InvalidArgument, "{request:?} -> {status:?}");
    }

    // (event, hold, user, code of GetHold and ReleaseHold, code of BeginCheckout and ConfirmHold):
    // the user-facing pair sends the user's token, and "" as a subject is no token at all.
    let refs = [
        (ev.clone(), "not-a-uuid".to_owned(), "u1", Code::InvalidArgument, Code::InvalidArgument),
        (ev.clone(), hold.hold_id.clone(), "", Code::Unauthenticated, Code::InvalidArgument),
        ("".to_owned(), hold.hold_id.clone(), "u1", Code::InvalidArgument, Code::InvalidArgument),
        (ev.to_uppercase(), hold.hold_id.clone(), "u1", Code::InvalidArgument, Code::InvalidArgument),
        (unknown_event.clone(), hold.hold_id.clone(), "u1", Code::NotFound, Code::NotFound),
    ];
    for (event_id, hold_id, user, code, internal_code) in refs {
        let user_id = user.to_owned();
        let statuses = [
            client
                .get_hold(GetHoldRequest {
                    event_id: event_id.clone(),
                    hold_id: hold_id.clone(),
                    user_id: user_id.clone(),
                })
                .await
                .map(|_| ()),
            client
                .release_hold(ReleaseHoldRequest {
                    event_id: event_id.clone(),
                    hold_id: hold_id.clone(),
                    user_id: user_id.clone(),
                })
                .await
                .map(|_| ()),
            app.internal()
                .begin_checkout(BeginCheckoutRequest {
                    event_id: event_id.clone(),
                    hold_id: hold_id.clone(),
                    user_id: user_id.clone(),
                })
                .await
                .map(|_| ()),
            app.internal()
                .confirm_hold(ConfirmHoldRequest {
                    event_id: event_id.clone(),
                    hold_id: hold_id.clone(),
                    user_id: user_id.clone(),
                    booking_id: "b1".into(),
                })
                .await
                .map(|_| ()),
        ];
        for (i, status) in statuses.into_iter().enumerate() {
            let expected = if i < 2 { code } else { internal_code };
            assert_eq!(status.expect_err("bad input").code(), expected, "{event_id:?}/{user:?} call {i}");
        }
    }
    let bad_booking = ConfirmHoldRequest {
        event_id: ev.clone(),
        hold_id: hold.hold_id.clone(),
        user_id: "u1".into(),
        booking_id: String::new(),
    };
    assert_eq!(
        app.internal().confirm_hold(bad_booking).await.expect_err("bad").code(),
        Code::InvalidArgument
    );

    // Nothing changed: the hold is still held, the counter shows one seat taken.
    let got = client
        .get_hold(GetHoldRequest { event_id: ev.clone(), hold_id: hold.hold_id, user_id: "u1".into() })
        .await?
        .into_inner();
    assert_eq!(got.state, HoldState::Held as i32);
    assert_eq!(app.free("A").await?, i64::from(CAPACITY_A) - 1);
    assert_eq!(app.free("GA").await?, 100);
    app.hold("u2", &["A-R1-2", "A-R1-3", "A-R1-4", "A-R1-5"]).await?;
    Ok(())
}
