//! Scenario 3, `Pay` end to end for the holds scenario 1 made (seat-lock checkout, the
//! sandbox provider, Postgres, the outbox), counting confirmed bookings per second, as a
//! ratio to its physical anchor measured just before: Postgres alone committing the same
//! booking writes ([`anchor`]). The row breaks the cost down per `Pay`: CPU microseconds of
//! each process and transactions committed in the stack's database.

use std::sync::Arc;

use prost::Message as _;
use ticketing_proto::v1 as pb;

use sea_orm::{ConnectionTrait, Database, DatabaseConnection};

use super::{
    anchor,
    config::{BenchConfig, CpuMeter, Row, RowMaker, Scenario, result_text},
};
use crate::{identity::AUTHORIZATION, loadgen::Observer};

/// Concurrency of the Pay scenario: payment holds 32 Postgres connections, so more clients
/// only queue.
const PAY_CONCURRENCY: usize = 200;
/// How long pgbench runs the anchor.
const ANCHOR_TIME: std::time::Duration = std::time::Duration::from_secs(10);
/// The target: `Pay` at this fraction of the anchor's rate at least.
const TARGET_RATIO: f64 = 0.6;
/// Postgres publishes a busy backend's counters when it goes idle, within 10 s
/// (`PGSTAT_IDLE_INTERVAL`); the commit count is read after that.
const STATS_FLUSH: std::time::Duration = std::time::Duration::from_secs(11);

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
    let anchor = anchor::measure(&config.database_url, ANCHOR_TIME).await?;
    let db = Database::connect(&config.database_url).await?;
    let commits_before = commits(&db).await?;
    let meter = CpuMeter::start(config);
    let pay = config.measure(&spec, Some(observer)).await?;
    let cpu = meter.used();
    tokio::time::sleep(STATS_FLUSH).await;
    let committed = commits(&db).await?.saturating_sub(commits_before);
    db.close().await?;
    let confirmed = confirmed.load(std::sync::atomic::Ordering::Relaxed);
    let bookings_per_sec = confirmed as f64 / (pay.main.total as f64 / 1e9);
    let ratio = bookings_per_sec / anchor.tps.max(f64::MIN_POSITIVE);
    let per_pay = |secs: f64| secs * 1e6 / confirmed.max(1) as f64;
    let cpu_text: Vec<String> =
        cpu.iter().map(|(process, secs)| format!("{process} {:.0}", per_pay(*secs))).collect();
    let total_us = per_pay(cpu.iter().map(|(_, secs)| secs).sum());
    rows.push(row(
        &format!(
            "Pay end to end: {} clients, holds prepared by HoldSeats; anchor: pgbench's booking transaction, \
             {} clients, same run",
            spec.concurrency, anchor.clients
        ),
        format!(
            "{} ({confirmed} confirmed); per Pay: {total_us:.0} µs CPU in all ({}), {:.2} transactions \
             committed in the stack's database (all of its services' and background statements included)",
            result_text(&pay.main, "bookings", bookings_per_sec),
            cpu_text.join(", "),
            committed as f64 / confirmed.max(1) as f64,
        ),
        format!("**{ratio:.2}× the anchor** ({}); {}", anchor.text(), pay.ratio_text()),
        "≥0.6× the anchor",
        Some(ratio >= TARGET_RATIO),
    ));
    scenarios.push(Scenario {
        name: "Pay".into(),
        report: pay,
        extra: serde_json::json!({
            "confirmed": confirmed,
            "bookingsPerSecond": bookings_per_sec,
            "anchorTps": anchor.tps,
            "anchorRatio": ratio,
            "cpu": cpu,
            "commits": committed,
        }),
    });
    Ok(())
}

/// Transactions committed in the database so far (as far as its backends have reported).
async fn commits(db: &DatabaseConnection) -> anyhow::Result<u64> {
    let row = db
        .query_one_raw(sea_orm::Statement::from_string(
            sea_orm::DbBackend::Postgres,
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()",
        ))
        .await?
        .ok_or_else(|| anyhow::anyhow!("pg_stat_database has no row for the stack's database"))?;
    Ok(u64::try_from(row.try_get::<i64>("", "xact_commit")?).unwrap_or(0))
}
