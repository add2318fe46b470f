//! The notifier against real Postgres and NATS: events in, inbox, streams and webhooks out.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod helpers;
mod identity;
mod webhooks;

use std::{collections::HashSet, time::Duration};

use futures::StreamExt;
use helpers::{
    WAIT, booking_confirmed, bus, count, list_all, spawn_app, wait_for_inbox, wait_for_inbox_until,
};
use prost::Message;
use service_runtime::bus::envelope;
use test_support::testenv::TestEnv;
use ticketing_proto::{
    events::{Admitted, ReleaseReason, SeatsHeld, SeatsReleased, event_envelope::Body},
    v1::{ListNotificationsRequest, NotificationKind, RegisterWebhookRequest, SubscribeRequest},
};
use tonic::Code;

fn seats_released(user_id: &str, reason: ReleaseReason) -> ticketing_proto::events::EventEnvelope {
    envelope(
        uuid::Uuid::new_v4().to_string(),
        Body::SeatsReleased(SeatsReleased {
            event_id: uuid::Uuid::new_v4().to_string(),
            user_id: user_id.into(),
            hold_id: uuid::Uuid::new_v4().to_string(),
            zone_id: "floor".into(),
            seat_ids: vec!["A-1".into()],
            quantity: 1,
            reason: reason as i32,
        }),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_stored_once_and_listed_in_order() -> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    let app = spawn_app(&env).await?;
    let bus = bus(&env).await?;
    let user = "alice";

    let confirmed = booking_confirmed(user);
    bus.publish(&confirmed).await?;
    // The same fact again under another JetStream message id: NATS cannot drop it, the inbox must.
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", "a-different-nats-id");
    bus.jetstream()
        .publish_with_headers(bus.subject("booking.confirmed"), headers, confirmed.encode_to_vec().into())
        .await?
        .await?;
    // Not for the user's inbox: seats held, and seats the user released.
    bus.publish(&envelope(
        uuid::Uuid::new_v4().to_string(),
        Body::SeatsHeld(SeatsHeld { event_id: "e".into(), user_id: user.into(), ..Default::default() }),
    ))
    .await?;
    bus.publish(&seats_released(user, ReleaseReason::Released)).await?;
    let expired = seats_released(user, ReleaseReason::Expired);
    bus.publish(&expired).await?;
    let admitted = envelope(
        uuid::Uuid::new_v4().to_string(),
        Body::Admitted(Admitted {
            event_id: uuid::Uuid::new_v4().to_string(),
            user_id: user.into(),
            pass_id: "p".into(),
            pass_expires_at: None,
            ticket: 7,
        }),
    );
    bus.publish(&admitted).await?;
    // A marker after them all. One user's events are handled one after another in stream
    // order: once the marker is stored, every earlier event was handled, so the inbox holds
    // whatever they would ever add.
    let marker = booking_confirmed(user);
    bus.publish(&marker).await?;
    let with_marker = wait_for_inbox_until(&app, user, &marker.message_id).await?;
    let (last, inbox) = with_marker.split_last().expect("the marker is in the inbox");
    assert_eq!(last.message_id, marker.message_id, "the marker is the last notification");

    let kinds: Vec<_> = inbox.iter().map(|n| n.kind()).collect();
    assert_eq!(
        kinds,
        [NotificationKind::BookingConfirmed, NotificationKind::HoldExpired, NotificationKind::Admitted],
        "one notification each for the events before the marker, no more"
    );
    let ids: Vec<_> = inbox.iter().map(|n| n.message_id.as_str()).collect();
    assert_eq!(
        ids,
        [confirmed.message_id.as_str(), expired.message_id.as_str(), admitted.message_id.as_str()]
    );
    assert!(inbox.windows(2).all(|w| w[0].notification_id < w[1].notification_id));
    assert_eq!(inbox[0].source.as_ref(), Some(&confirmed));
    assert_eq!(
        count(
            &env,
            &format!("SELECT count(*) FROM notifier.inbox WHERE message_id = '{}'", confirmed.message_id)
        )
        .await?,
        1
    );
    assert_eq!(count(&env, "SELECT count(*) FROM notifier.inbox").await?, 4, "three and the marker");

    // Paging: a full page points at the next one; the last page says 0.
    let mut client = app.client(user);
    let page = client
        .list_notifications(ListNotificationsRequest { user_id: user.into(), after_id: 0, page_size: 2 })
        .await?
        .into_inner();
    assert_eq!(page.notifications.len(), 2);
    assert_eq!(page.next_after_id, inbox[1].notification_id);
    let page = client
        .list_notifications(ListNotificationsRequest {
            user_id: user.into(),
            after_id: page.next_after_id,
            page_size: 0,
        })
        .await?
        .into_inner();
    assert_eq!(page.notifications, with_marker[2..]);
    assert_eq!(page.next_after_id, 0);
    // Another user's inbox is separate.
    assert!(list_all(&mut app.client("bob"), "bob").await?.is_empty());
    app.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_users_events_are_stored_in_parallel_and_each_users_in_stream_order() -> anyhow::Result<()> {
    const USERS: usize = 24;
    const EACH: usize = 12;
    let env = TestEnv::new().await?;
    let app = spawn_app(&env).await?;
    let bus = bus(&env).await?;
    // Interleaved: event k of every user before event k + 1 of any, so a user's events are
    // spread over the stream among everyone else's.
    let mut published: Vec<Vec<String>> = vec![Vec::new(); USERS];
    for _ in 0..EACH {
        for (user, sent) in published.iter_mut().enumerate() {
            let event = booking_confirmed(&format!("user-{user}"));
            bus.publish(&event).await?;
            sent.push(event.message_id);
        }
    }
    for (user, sent) in published.iter().enumerate() {
        let user = format!("user-{user}");
        let inbox = wait_for_inbox_until(&app, &user, sent.last().unwrap()).await?;
        let stored: Vec<&str> = inbox.iter().map(|n| n.message_id.as_str()).collect();
        assert_eq!(
            stored,
            sent.iter().map(String::as_str).collect::<Vec<_>>(),
            "{user}: all, in stream order"
        );
    }
    assert_eq!(count(&env, "SELECT count(*) FROM notifier.inbox").await?, (USERS * EACH) as i64);
    app.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_subscription_sees_every_notification_exactly_once() -> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    let app = spawn_app(&env).await?;
    let bus = bus(&env).await?;
    let user = "carol";
    let mut client = app.client(user);

    // Backlog before subscribing.
    let mut published = vec![booking_confirmed(user), booking_confirmed(user)];
    for e in &published {
        bus.publish(e).await?;
    }
    wait_for_inbox(&app, user, 2).await?;
    // Someone else's notification is never on carol's stream.
    bus.publish(&booking_confirmed("dave")).await?;

    let mut stream =
        client.subscribe(SubscribeRequest { user_id: user.into(), after_id: 0 }).await?.into_inner();
    let mut seen = Vec::new();
    // Live ones, published while the stream is open.
    for _ in 0..3 {
        let e = booking_confirmed(user);
        bus.publish(&e).await?;
        published.push(e);
    }
    while seen.len() < 5 {
        let n = tokio::time::timeout(WAIT, stream.next())
            .await?
            .ok_or_else(|| anyhow::anyhow!("stream ended"))??;
        seen.push(n);
    }
    let last_seen = seen[4].notification_id;
    drop(stream);

    // Published while disconnected.
    for _ in 0..4 {
        let e = booking_confirmed(user);
        bus.publish(&e).await?;
        published.push(e);
    }
    wait_for_inbox(&app, user, 9).await?;
    let mut stream =
        client.subscribe(SubscribeRequest { user_id: user.into(), after_id: last_seen }).await?.into_inner();
    let e = booking_confirmed(user);
    bus.publish(&e).await?;
    published.push(e);
    while seen.len() < 10 {
        let n = tokio::time::timeout(WAIT, stream.next())
            .await?
            .ok_or_else(|| anyhow::anyhow!("stream ended"))??;
        seen.push(n);
    }
    // Nothing more: no duplicate of anything already sent.
    let extra = tokio::time::timeout(Duration::from_millis(500), stream.next()).await;
    assert!(extra.is_err(), "unexpected extra item: {extra:?}");

    let seen_ids: Vec<_> = seen.iter().map(|n| n.message_id.clone()).collect();
    let published_ids: Vec<_> = published.iter().map(|e| e.message_id.clone()).collect();
    assert_eq!(seen_ids, published_ids, "every notification once, in order");
    assert!(seen.iter().all(|n| n.user_id == user));
    assert!(seen.windows(2).all(|w| w[0].notification_id < w[1].notification_id));
    app.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_loses_and_duplicates_nothing() -> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    let app = spawn_app(&env).await?;
    let bus = bus(&env).await?;
    let user = "erin";
    let mut published = HashSet::new();
    for _ in 0..30 {
        let e = booking_confirmed(user);
        bus.publish(&e).await?;
        published.insert(e.message_id);
    }
    // Stop mid-stream: some stored, the rest pending or fetched but not yet handled.
    wait_for_inbox(&app, user, 1).await?;
    app.stop().await?;
    for _ in 0..10 {
        let e = booking_confirmed(user);
        bus.publish(&e).await?;
        published.insert(e.message_id);
    }

    // Messages the first instance fetched but never acked come back after the ack wait (30 s).
    let app = spawn_app(&env).await?;
    let inbox = wait_for_inbox(&app, user, 40).await?;
    let stored: HashSet<_> = inbox.iter().map(|n| n.message_id.clone()).collect();
    assert_eq!(stored, published, "every event is in the inbox");
    assert_eq!(inbox.len(), 40);
    assert_eq!(count(&env, "SELECT count(*) FROM notifier.inbox").await?, 40);
    assert_eq!(count(&env, "SELECT count(DISTINCT message_id) FROM notifier.inbox").await?, 40);
    app.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_and_changes_nothing() -> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    let app = spawn_app(&env).await?;
    let mut client = app.client("u");

    let status = client
        .subscribe(SubscribeRequest { user_id: "u".into(), after_id: u64::MAX })
        .await
        .expect_err("after_id");
    assert_eq!(status.code(), Code::InvalidArgument);
    let status = client
        .list_notifications(ListNotificationsRequest { user_id: "u".into(), after_id: 0, page_size: 501 })
        .await
        .expect_err("page_size");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("page_size"));

    let good = RegisterWebhookRequest {
        user_id: "u".into(),
        url: "http://127.0.0.1:9/hook".into(),
        secret: "s".repeat(16),
        kinds: vec![],
    };
    let bad = [
        RegisterWebhookRequest { url: String::new(), ..good.clone() },
        RegisterWebhookRequest { url: "not a url".into(), ..good.clone() },
        RegisterWebhookRequest { url: "http://127.0.0.1:99999/".into(), ..good.clone() },
        RegisterWebhookRequest { url: "http://user:pw@127.0.0.1/".into(), ..good.clone() },
        RegisterWebhookRequest { secret: "s".repeat(15), ..good.clone() },
        RegisterWebhookRequest { secret: "s".repeat(257), ..good.clone() },
        RegisterWebhookRequest { kinds: vec![0], ..good.clone() },
        RegisterWebhookRequest { kinds: vec![99], ..good.clone() },
    ];
    for request in bad {
        let status = client.register_webhook(request.clone()).await.expect_err("bad webhook");
        assert_eq!(status.code(), Code::InvalidArgument, "{request:?}");
    }
    assert_eq!(count(&env, "SELECT count(*) FROM notifier.webhooks").await?, 0);
    assert_eq!(count(&env, "SELECT count(*) FROM notifier.inbox").await?, 0);
    // The valid request is accepted, so the refusals above were about the bad fields.
    client.register_webhook(good).await?;
    assert_eq!(count(&env, "SELECT count(*) FROM notifier.webhooks").await?, 1);
    app.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_subscriber_misses_nothing() -> anyhow::Result<()> {
    // More than the stream channel and the HTTP/2 windows (about 2.5 MB) hold, published
    // while the subscriber reads nothing: its task waits to send while wake-ups pile up (they
    // coalesce), and it must read everything newer from Postgres.
    const EVENTS: usize = 1_524;
    let env = TestEnv::new().await?;
    let app = spawn_app(&env).await?;
    let bus = bus(&env).await?;
    let user = "heidi";
    let mut client = app.client(user);
    let mut stream =
        client.subscribe(SubscribeRequest { user_id: user.into(), after_id: 0 }).await?.into_inner();
    // Large notifications (many seats), so the HTTP/2 send buffers hold few of them.
    let published: Vec<_> = (0..EVENTS)
        .map(|_| {
            let mut e = booking_confirmed(user);
            if let Some(Body::BookingConfirmed(b)) = e.body.as_mut() {
                b.seat_ids = (0..1_000).map(|i| format!("floor-row-{i:04}")).collect();
            }
            e
        })
        .collect();
    futures::stream::iter(&published)
        .map(|e| bus.publish(e))
        .buffered(64)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?;
    wait_for_inbox(&app, user, EVENTS).await?;

    let mut seen = Vec::with_capacity(EVENTS);
    while seen.len() < EVENTS {
        let n = tokio::time::timeout(WAIT, stream.next())
            .await?
            .ok_or_else(|| anyhow::anyhow!("stream ended"))??;
        seen.push(n);
    }
    let extra = tokio::time::timeout(Duration::from_millis(500), stream.next()).await;
    assert!(extra.is_err(), "unexpected extra item: {extra:?}");
    assert!(seen.windows(2).all(|w| w[0].notification_id < w[1].notification_id), "no duplicate, in order");
    let seen_ids: HashSet<_> = seen.iter().map(|n| n.message_id.clone()).collect();
    let published_ids: HashSet<_> = published.iter().map(|e| e.message_id.clone()).collect();
    assert_eq!(seen_ids, published_ids, "no gap");
    app.stop().await
}
