//! Scenario 3, `Pay` end to end for the holds scenario 1 made (seat-lock checkout, the
//! sandbox provider, Postgres, the outbox), counting confirmed bookings per second, as a
//! ratio to its physical anchor measured just before and just after: Postgres alone
//! committing the same booking writes ([`anchor`]). The row breaks the cost down per `Pay`:
//! CPU microseconds of each process, transactions committed in the stack's database, and
//! payment's own view from its `/metrics`: the mean time of each step and the mean size of
//! a commit group.

use std::{collections::BTreeMap, sync::Arc};

use anyhow::Context as _;

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
    let anchor_before = anchor::measure(&config.database_url, ANCHOR_TIME).await?;
    let db = Database::connect(&config.database_url).await?;
    let metrics_port = payment_metrics_port(config)?;
    let commits_before = commits(&db).await?;
    let own_before = payment_histograms(metrics_port).await?;
    let meter = CpuMeter::start(config);
    let pay = config.measure(&spec, Some(observer)).await?;
    let cpu = meter.used();
    let own = Histograms::since(&payment_histograms(metrics_port).await?, &own_before);
    // The anchor again, in the scratch database (so not in the commit count), while the
    // stack's counters flush: pgbench alone varies by a third within minutes here, and the
    // mean of one run on each side of Pay follows a drift of the machine during it.
    let flushed = tokio::time::sleep(STATS_FLUSH);
    let anchor_after = anchor::measure(&config.database_url, ANCHOR_TIME).await?;
    flushed.await;
    let anchor = anchor::Anchor::around(anchor_before, anchor_after);
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
             committed in the stack's database (all of its services' and background statements included); \
             payment's mean step times: {}; commit groups of {:.1} statements on average",
            result_text(&pay.main, "bookings", bookings_per_sec),
            cpu_text.join(", "),
            committed as f64 / confirmed.max(1) as f64,
            own.steps_text(),
            own.mean(GROUP_SIZE).unwrap_or(0.0),
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
            "stepMeanSeconds": own.step_means(),
            "commitGroupMeanSize": own.mean(GROUP_SIZE),
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

/// Payment's histogram of one Pay step's time, by `step`.
const STEP_SECONDS: &str = "payment_pay_step_seconds";
/// Payment's histogram of statements per commit group.
const GROUP_SIZE: &str = "payment_commit_group_size";

/// The payment process's metrics port, from the stack's record.
fn payment_metrics_port(config: &BenchConfig) -> anyhow::Result<u16> {
    crate::stack::data::Record::read(&config.state_dir)?
        .and_then(|record| record.services.into_iter().find(|s| s.name == "payment"))
        .map(|service| service.metrics)
        .context("no payment process in the stack's record: is the stack up?")
}

/// `_sum` and `_count` of payment's histograms, by series (`name_sum{labels}`).
#[derive(Debug, Default)]
struct Histograms(BTreeMap<String, f64>);

impl Histograms {
    /// What was recorded between `before` and `after`.
    fn since(after: &Self, before: &Self) -> Self {
        Self(after.0.iter().map(|(k, v)| (k.clone(), v - before.0.get(k).copied().unwrap_or(0.0))).collect())
    }

    /// The mean of the series `name{labels}` (labels as rendered, e.g. `{step="claim"}`).
    fn mean_of(&self, name: &str, labels: &str) -> Option<f64> {
        let sum = self.0.get(&format!("{name}_sum{labels}"))?;
        let count = self.0.get(&format!("{name}_count{labels}")).filter(|count| **count > 0.0)?;
        Some(sum / count)
    }

    fn mean(&self, name: &str) -> Option<f64> {
        self.mean_of(name, "")
    }

    /// Each step's mean time in seconds, in the order a Pay runs them.
    fn step_means(&self) -> Vec<(String, f64)> {
        let mut steps: Vec<(String, f64)> = self
            .0
            .keys()
            .filter_map(|key| key.strip_prefix(&format!("{STEP_SECONDS}_count")))
            .filter_map(|labels| {
                let step = labels.strip_prefix("{step=\"")?.strip_suffix("\"}")?;
                Some((step.to_owned(), self.mean_of(STEP_SECONDS, labels)?))
            })
            .collect();
        let order = ["key_lookup", "begin_checkout", "claim", "charge", "confirm_hold", "book"];
        steps.sort_by_key(|(step, _)| order.iter().position(|o| o == step).unwrap_or(order.len()));
        steps
    }

    fn steps_text(&self) -> String {
        let steps = self.step_means();
        if steps.is_empty() {
            return "none recorded".into();
        }
        steps.iter().map(|(step, secs)| format!("{step} {:.1} ms", secs * 1e3)).collect::<Vec<_>>().join(", ")
    }
}

/// Payment's `Pay` histograms as its `/metrics` renders them now.
async fn payment_histograms(port: u16) -> anyhow::Result<Histograms> {
    let (_, body) = crate::stack::status::http_get(port, "/metrics").await?;
    Ok(Histograms(
        body.lines()
            .filter(|line| line.starts_with(STEP_SECONDS) || line.starts_with(GROUP_SIZE))
            .filter_map(|line| {
                let (series, value) = line.rsplit_once(' ')?;
                let is_total = series.contains("_sum") || series.contains("_count");
                Some((series.to_owned(), value.parse().ok()?)).filter(|_| is_total)
            })
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_means_come_from_sum_and_count_in_pay_order() {
        let before = Histograms(BTreeMap::from([
            ("payment_pay_step_seconds_sum{step=\"claim\"}".to_owned(), 1.0),
            ("payment_pay_step_seconds_count{step=\"claim\"}".to_owned(), 10.0),
        ]));
        let after = Histograms(BTreeMap::from([
            ("payment_pay_step_seconds_sum{step=\"claim\"}".to_owned(), 1.5),
            ("payment_pay_step_seconds_count{step=\"claim\"}".to_owned(), 20.0),
            ("payment_pay_step_seconds_sum{step=\"key_lookup\"}".to_owned(), 0.02),
            ("payment_pay_step_seconds_count{step=\"key_lookup\"}".to_owned(), 10.0),
            ("payment_commit_group_size_sum".to_owned(), 300.0),
            ("payment_commit_group_size_count".to_owned(), 100.0),
        ]));
        let own = Histograms::since(&after, &before);
        assert_eq!(own.steps_text(), "key_lookup 2.0 ms, claim 50.0 ms");
        assert_eq!(own.mean(GROUP_SIZE), Some(3.0));
        assert_eq!(Histograms::default().steps_text(), "none recorded");
    }
}
