//! `SeatLockInternalService.ReturnSeats`: the sold seats of a cancelled booking go back on
//! sale once, and nothing else moves.

use futures::StreamExt;
use prost::Message;
use ticketing_proto::{
    events::{EventEnvelope, ReleaseReason, event_envelope::Body},
    internal::{ReturnSeatsRequest, SoldSeat},
    v1::{GetHoldRequest, HoldBestAvailableRequest, HoldState},
};
use tonic::Code;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use super::helpers::*;

fn booking() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// The next `SeatsReleased` on `released`, with its message id.
async fn next_release(
    released: &mut async_nats::Subscriber,
) -> (String, ticketing_proto::events::SeatsReleased) {
    let message = tokio::time::timeout(EVENTUALLY, released.next()).await.expect("in time").expect("message");
    let envelope = EventEnvelope::decode(message.payload).expect("an envelope");
    let Some(Body::SeatsReleased(body)) = envelope.body else { panic!("not SeatsReleased: {envelope:?}") };
    (envelope.message_id, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn returned_seats_go_back_on_sale_once_and_the_limit_count_goes_down() -> anyhow::Result<()> {
    let app = spawn_app(600).await?;
    let nats = async_nats::connect(&app.env.nats_url).await?;
    let mut released = nats.subscribe(format!("{}.seats.released", app.env.nats_prefix)).await?;
    let hold = app.hold("u1", &["A-R1-1", "A-R1-2"]).await?;
    let booking_id = booking();
    app.sell(&hold, &booking_id).await?;
    let ttl: i64 =
        fred::prelude::KeysInterface::ttl(&app.redis, app.key(&format!("hold:{}", hold.hold_id))).await?;
    assert_eq!(ttl, -1, "a sale's record does not expire: a cancellation may come months later");
    assert_eq!(app.free("A").await?, i64::from(CAPACITY_A) - 2);
    assert_eq!(app.bought("u1").await?, 2);
    let status = app.hold("u2", &["A-R1-1"]).await.expect_err("sold");
    assert_eq!(reason_of(&status).0, "SEAT_TAKEN");
    let status = app.hold("u1", &["A-R2-1", "A-R2-2", "A-R2-3"]).await.expect_err("over the limit");
    assert_eq!(reason_of(&status).0, "TICKET_LIMIT_EXCEEDED");

    assert!(app.return_seats(app.return_request(&hold, &booking_id)).await?);
    assert_eq!(app.free("A").await?, i64::from(CAPACITY_A));
    assert_eq!(app.bought("u1").await?, 0);
    let seat: Option<String> = fred::prelude::KeysInterface::get(&app.redis, app.key("seat:A-R1-1")).await?;
    assert_eq!(seat, None, "the sold mark is gone");
    let (message_id, body) = next_release(&mut released).await;
    assert_eq!(message_id, format!("released:{}", hold.hold_id));
    assert_eq!(body.reason, ReleaseReason::Cancelled as i32);
    assert_eq!((body.user_id.as_str(), body.zone_id.as_str(), body.quantity), ("u1", "A", 2));
    assert_eq!(body.seat_ids, hold.seat_ids);
    let get = GetHoldRequest {
        event_id: app.event_id.clone(),
        hold_id: hold.hold_id.clone(),
        user_id: "u1".into(),
    };
    assert_eq!(app.client().get_hold(get).await?.into_inner().state, HoldState::Released as i32);

    // A replay changes nothing, also once the seat is someone else's again.
    assert!(!app.return_seats(app.return_request(&hold, &booking_id)).await?);
    let resold = app.hold("u2", &["A-R1-1"]).await?;
    assert!(!app.return_seats(app.return_request(&hold, &booking_id)).await?);
    assert_eq!(app.free("A").await?, i64::from(CAPACITY_A) - 1);
    let seat: Option<String> = fred::prelude::KeysInterface::get(&app.redis, app.key("seat:A-R1-1")).await?;
    assert_eq!(seat, Some(resold.hold_id.clone()));
    // Best-available finds the returned seat that is still free.
    let best = HoldBestAvailableRequest {
        pass_token: app.pass("u3"),
        event_id: app.event_id.clone(),
        user_id: "u3".into(),
        zone_id: "A".into(),
        quantity: 1,
        allow_split: false,
    };
    assert_eq!(app.client().hold_best_available(best).await?.into_inner().seat_ids, vec!["A-R1-2"]);
    // The user may buy up to the limit again.
    app.hold("u1", &["A-R2-1", "A-R2-2", "A-R2-3", "A-R2-4"]).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seats_not_sold_under_the_booking_are_untouched() -> anyhow::Result<()> {
    let app = spawn_app(600).await?;
    let nats = async_nats::connect(&app.env.nats_url).await?;
    let mut released = nats.subscribe(format!("{}.seats.released", app.env.nats_prefix)).await?;

    // A live hold is not a sale.
    let live = app.hold("u1", &["A-R3-1"]).await?;
    assert!(!app.return_seats(app.return_request(&live, &booking())).await?);
    let get = GetHoldRequest {
        event_id: app.event_id.clone(),
        hold_id: live.hold_id.clone(),
        user_id: "u1".into(),
    };
    assert_eq!(app.client().get_hold(get).await?.into_inner().state, HoldState::Held as i32);

    // A sale under another booking, or with other seats, user or quantity.
    let sold = app.hold("u2", &["A-R4-1", "A-R4-2"]).await?;
    let booking_id = booking();
    app.sell(&sold, &booking_id).await?;
    let wrong = [
        app.return_request(&sold, &booking()),
        ReturnSeatsRequest {
            seat_ids: vec!["A-R4-1".into(), "A-R4-3".into()],
            ..app.return_request(&sold, &booking_id)
        },
        ReturnSeatsRequest { user_id: "u3".into(), ..app.return_request(&sold, &booking_id) },
        ReturnSeatsRequest {
            seat_ids: vec!["A-R4-1".into()],
            quantity: 1,
            ..app.return_request(&sold, &booking_id)
        },
    ];
    for request in wrong {
        assert!(!app.return_seats(request.clone()).await?, "{request:?}");
    }
    assert_eq!(app.free("A").await?, i64::from(CAPACITY_A) - 3);
    assert_eq!(app.bought("u2").await?, 2);
    assert_eq!(reason_of(&app.hold("u4", &["A-R4-2"]).await.expect_err("sold")).0, "SEAT_TAKEN");

    // General admission: by count.
    let ga = HoldBestAvailableRequest {
        pass_token: app.pass("u5"),
        event_id: app.event_id.clone(),
        user_id: "u5".into(),
        zone_id: "GA".into(),
        quantity: 3,
        allow_split: false,
    };
    let ga = app.client().hold_best_available(ga).await?.into_inner();
    let ga_booking = booking();
    app.sell(&ga, &ga_booking).await?;
    let short = ReturnSeatsRequest { quantity: 2, ..app.return_request(&ga, &ga_booking) };
    assert!(!app.return_seats(short).await?);
    assert_eq!(app.free("GA").await?, 97);
    assert!(app.return_seats(app.return_request(&ga, &ga_booking)).await?);
    assert_eq!(app.free("GA").await?, 100);
    assert_eq!(app.bought("u5").await?, 0);
    let (_, body) = next_release(&mut released).await;
    assert_eq!((body.hold_id.as_str(), body.reason), (ga.hold_id.as_str(), ReleaseReason::Cancelled as i32));

    // After a Redis loss, payment no longer lists the cancelled sale: the rebuild already
    // freed its seats, so nothing is returned, only the release is announced (inventory may
    // still show them sold). The other sale survives the rebuild untouched.
    app.payment.sold.lock().expect("lock").extend(["A-R4-1", "A-R4-2"].map(|seat| SoldSeat {
        zone_id: "A".into(),
        seat_id: seat.into(),
        user_id: "u2".into(),
        booking_id: booking_id.clone(),
        hold_id: sold.hold_id.clone(),
    }));
    let lost = app.hold("u6", &["A-R5-1"]).await?;
    let lost_booking = booking();
    app.sell(&lost, &lost_booking).await?;
    app.flush_test_keys().await?;
    assert!(!app.return_seats(app.return_request(&lost, &lost_booking)).await?);
    assert_eq!(app.free("A").await?, i64::from(CAPACITY_A) - 2);
    assert_eq!(app.bought("u6").await?, 0);
    assert_eq!(app.bought("u2").await?, 2);
    let (message_id, body) = next_release(&mut released).await;
    assert_eq!(message_id, format!("released:{}", lost.hold_id));
    assert_eq!((body.reason, body.seat_ids), (ReleaseReason::Cancelled as i32, vec!["A-R5-1".to_owned()]));
    assert!(!app.return_seats(app.return_request(&lost, &lost_booking)).await?);
    assert_eq!(app.free("A").await?, i64::from(CAPACITY_A) - 2);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_return_requests_are_refused_and_change_nothing() -> anyhow::Result<()> {
    let app = spawn_app(600).await?;
    let hold = app.hold("u1", &["A-R1-5", "A-R1-6"]).await?;
    let booking_id = booking();
    app.sell(&hold, &booking_id).await?;
    let good = app.return_request(&hold, &booking_id);
    let huge = "Z".repeat(10_000);
    let cases = [
        ("event_id", ReturnSeatsRequest { event_id: "nope".into(), ..good.clone() }),
        ("booking_id", ReturnSeatsRequest { booking_id: String::new(), ..good.clone() }),
        ("booking_id", ReturnSeatsRequest { booking_id: "not a booking!".into(), ..good.clone() }),
        ("hold_id", ReturnSeatsRequest { hold_id: "h1".into(), ..good.clone() }),
        ("user_id", ReturnSeatsRequest { user_id: String::new(), ..good.clone() }),
        ("zone_id", ReturnSeatsRequest { zone_id: String::new(), ..good.clone() }),
        ("zone_id", ReturnSeatsRequest { zone_id: huge.clone(), ..good.clone() }),
        ("quantity", ReturnSeatsRequest { quantity: 0, ..good.clone() }),
        ("quantity", ReturnSeatsRequest { quantity: MAX_TICKETS + 1, ..good.clone() }),
        ("seat_ids", ReturnSeatsRequest { quantity: 3, ..good.clone() }),
        ("seat_ids", ReturnSeatsRequest { seat_ids: vec!["A-R1-5".into(), "A-R1-5".into()], ..good.clone() }),
        ("seat_ids", ReturnSeatsRequest { seat_ids: vec!["A-R1-5".into(), huge.clone()], ..good.clone() }),
        ("seat_ids", ReturnSeatsRequest { seat_ids: vec!["A-R1-5".into(), "A-R9-1".into()], ..good.clone() }),
        ("seat_ids", ReturnSeatsRequest { zone_id: "GA".into(), ..good.clone() }),
    ];
    for (field, request) in cases {
        let status = app.return_seats(request.clone()).await.expect_err("bad input");
        assert_eq!(status.code(), Code::InvalidArgument, "{field}: {status:?}");
        assert_eq!(reason_of(&status).1.get("field").map(String::as_str), Some(field), "{status:?}");
        assert!(status.message().len() < 200, "the bad value is echoed bounded: {}", status.message().len());
    }
    let unknown = ReturnSeatsRequest { event_id: uuid::Uuid::new_v4().to_string(), ..good.clone() };
    assert_eq!(app.return_seats(unknown).await.expect_err("unknown event").code(), Code::NotFound);

    // Nothing moved: still sold, and the good request still returns the seats.
    assert_eq!(app.free("A").await?, i64::from(CAPACITY_A) - 2);
    assert_eq!(app.bought("u1").await?, 2);
    assert!(app.return_seats(good).await?);

    // Reported by health on the internal listener.
    let service = "ticketing.internal.v1.SeatLockInternalService".to_owned();
    let internal = app.certs.channel(app.internal_port, Some("payment"))?;
    let health = HealthClient::new(internal).check(HealthCheckRequest { service }).await?;
    assert_eq!(health.into_inner().status, ServingStatus::Serving as i32);
    Ok(())
}
