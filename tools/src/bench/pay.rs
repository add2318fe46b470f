//! Scenario 3, `Pay` end to end for the holds scenario 1 made (seat-lock checkout, the
//! sandbox provider, Postgres, the outbox), counting confirmed bookings per second.

use std::sync::Arc;

use prost::Message as _;
use ticketing_proto::v1 as pb;

use super::config::{BenchConfig, Row, RowMaker, Scenario, result_text};
use crate::{identity::AUTHORIZATION, loadgen::Observer};

/// Concurrency of the Pay scenario: payment holds 32 Postgres connections, so more clients
/// only queue.
const PAY_CONCURRENCY: usize = 200;

/// Pays `holds` ((hold id, user id) on `event_id`) into `rows` and `scenarios`; nothing when
/// there is nothing to pay.
pub async fn run(
    config: &BenchConfig,
    holds: &[(String, String)],
    event_id: &str,
    row: &RowMaker<'_>,
    rows: &mut Vec<Row>,
    scenarios: &mut Vec<Scenario>,
) -> anyhow::Result<()> {
    if holds.is_empty() {
        return Ok(());
    }
    let data: Vec<serde_json::Value> = holds
        .iter()
        .map(|(hold_id, user_id)| {
            serde_json::json!({
                "idempotency_key": format!("bench-{}", hold_id.replace('-', "")),
                "event_id": event_id,
                "hold_id": hold_id,
                "user_id": user_id,
                "payment_method": "pm_card_ok",
            })
        })
        .collect();
    let confirmed: Arc<std::sync::atomic::AtomicU64> = Arc::default();
    let observer: Observer = {
        let confirmed = confirmed.clone();
        Arc::new(move |outcome| {
            if let Ok(bytes) = outcome.result
                && let Ok(paid) = pb::PayResponse::decode(bytes.clone())
                && paid.payment.is_some_and(|p| p.status() == pb::PaymentStatus::Confirmed)
            {
                confirmed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        })
    };
    let total = holds.len() as u64;
    let tokens: Vec<serde_json::Value> = holds
        .iter()
        .map(|(_, user_id)| {
            let bearer = config.identity.user(user_id);
            serde_json::json!({ AUTHORIZATION: bearer.value().to_str().unwrap_or_default() })
        })
        .collect();
    let spec = config.spec(
        "Pay",
        "ticketing.v1.PaymentService/Pay",
        serde_json::Value::Array(data),
        Some(serde_json::Value::Array(tokens)),
        PAY_CONCURRENCY.min(config.concurrency),
        total,
    )?;
    let pay = config.measure(&spec, Some(observer)).await?;
    let confirmed = confirmed.load(std::sync::atomic::Ordering::Relaxed);
    let bookings_per_sec = confirmed as f64 / (pay.main.total as f64 / 1e9);
    rows.push(row(
        &format!("Pay end to end: {} clients, holds prepared by HoldSeats", spec.concurrency),
        format!("{} ({confirmed} confirmed)", result_text(&pay.main, "bookings", bookings_per_sec)),
        pay.ratio_text(),
        "≥5,000 bookings/s",
        Some(bookings_per_sec >= 5_000.0),
    ));
    scenarios.push(Scenario {
        name: "Pay".into(),
        report: pay,
        extra: serde_json::json!({"confirmed": confirmed, "bookingsPerSecond": bookings_per_sec}),
    });
    Ok(())
}
