//! `payment_outbox_pending` while JetStream refuses the relay's publishes: the alert
//! `TicketingPaymentOutboxGrowing` watches it for exactly that case. A test binary of its own,
//! because the gauge is one series for the whole process and every other payment test's
//! relay sets it too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(dead_code)]
#[path = "api/helpers.rs"]
mod helpers;
#[allow(dead_code)]
#[path = "api/mesh_fakes.rs"]
mod mesh_fakes;

use std::time::{Duration, Instant};

use prost::Message;
use sea_orm::{ConnectionTrait, DbBackend, Statement};
use service_runtime::bus::envelope;
use ticketing_proto::events::{self, event_envelope::Body};

#[tokio::test]
async fn the_pending_gauge_counts_the_outbox_while_publishing_fails() {
    let metrics = helpers::metrics();
    let app = helpers::spawn_app().await;
    // No stream takes the relay's subjects any more: every publish is refused.
    app.bus.jetstream().delete_stream(app.bus.stream_name()).await.unwrap();
    for n in 0..3 {
        let event = envelope(
            format!("payment_failed:gauge-{n}"),
            Body::PaymentFailed(events::PaymentFailed {
                user_id: format!("gauge-user-{n}"),
                ..Default::default()
            }),
        );
        app.db
            .execute_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "INSERT INTO payment.outbox (message_id, kind, payload) VALUES ($1, 'payment_failed', $2)",
                [event.message_id.clone().into(), event.encode_to_vec().into()],
            ))
            .await
            .unwrap();
    }

    let deadline = Instant::now() + Duration::from_secs(15);
    let mut seen = None;
    while Instant::now() < deadline {
        seen = metrics
            .render()
            .lines()
            .find_map(|line| line.strip_prefix("payment_outbox_pending ").map(str::to_owned));
        if seen.as_deref() == Some("3") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(seen.as_deref(), Some("3"), "the three rows the relay cannot publish are counted");
    assert_eq!(app.count("outbox", "").await, 3, "and they stay for the next attempt");
}
