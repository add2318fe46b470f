//! The standard run: every scenario in turn against the stack's load balancer, then the
//! results to `bench-results.json` (the README is [`super::readme`]'s).

use anyhow::Context;

use super::{
    admission,
    config::{BenchConfig, BenchResults, Row},
    fanout::{FANOUT_WATCHERS, fanout_lag},
    ghz::ghz_files,
    health, holdbest, holds,
    memory::{self, service_memory},
    pay, reads,
    sale::channel,
};
use crate::procfs;

/// A [`RowMaker`] for rows of `date` on `machine`.
fn row_maker(date: &str, machine: &str) -> impl Fn(&str, String, String, &str, Option<bool>) -> Row + use<> {
    let (date, machine) = (date.to_owned(), machine.to_owned());
    move |what, result, baseline, target, met| Row {
        what: what.into(),
        result,
        baseline,
        target: target.into(),
        met,
        date: date.clone(),
        machine: machine.clone(),
    }
}

/// `bench --pay-only`: holds made as scenario 1 makes them (its rows are not kept), then
/// `Pay` for them against its anchor; the Pay row.
pub async fn pay_only(config: &BenchConfig) -> anyhow::Result<Row> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let machine = format!("{cores} cores, {}", procfs::memory_total());
    let date = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let row = row_maker(&date, &machine);
    let channel = channel(&config.target).await?;
    let held = holds::run(config, &channel, &row, &mut Vec::new(), &mut Vec::new()).await?;
    let (mut rows, mut scenarios) = (Vec::new(), Vec::new());
    pay::run(config, &held.to_pay, &held.event_id, &row, &mut rows, &mut scenarios).await?;
    rows.pop().context("no hold was made to pay")
}

/// Runs every scenario and writes the results.
pub async fn run(config: &BenchConfig) -> anyhow::Result<BenchResults> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let machine = format!("{cores} cores, {}", procfs::memory_total());
    let date = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let channel = channel(&config.target).await?;
    let mut scenarios = Vec::new();
    let mut rows = Vec::new();
    let row = row_maker(&date, &machine);

    // 1. HoldSeats with designed duplicates.
    let held = holds::run(config, &channel, &row, &mut rows, &mut scenarios).await?;
    // 2. Join burst of unique users, with the FIFO check.
    let join_event_id = admission::join_bursts(config, &date, &machine, &mut rows, &mut scenarios).await?;
    // 2b. Health/Check without and with a fresh token per call.
    let (health_row, health_scenario) = health::run(config, &row).await?;
    rows.push(health_row);
    scenarios.push(health_scenario);
    // 3. Pay for the holds made in 1.
    pay::run(config, &held.to_pay, &held.event_id, &row, &mut rows, &mut scenarios).await?;
    // 4. Reads from inventory's memory.
    reads::run(config, &held.event_id, &row, &mut rows, &mut scenarios).await?;
    // 5. Fan-out of the live seat map to many watchers.
    rows.push(fanout_lag(config, FANOUT_WATCHERS, &date, &machine).await?);
    // 5b. Redis CPU per HoldBestAvailable, 95 % sold against empty (seat-lock's script on the
    // stack's Redis under a key prefix of its own; the idle stack's own Redis use is included).
    let holdbest = holdbest::HoldBestConfig {
        redis_url: config.redis_url.clone(),
        calls: holdbest::DEFAULT_CALLS,
        quantity: holdbest::DEFAULT_QUANTITY,
    };
    rows.push(holdbest::hold_best_cost(&holdbest, &date, &machine).await?);
    // 6. The whole sale is the flashsale simulator's; 7. memory of the services.
    rows.push(row(
        "Whole sale: 50,000 seats, 500,000 users (flashsale simulator)",
        "not run by bench: see `flashsale`".into(),
        String::new(),
        "sold out ≤60 s",
        None,
    ));
    let memory = service_memory(&config.state_dir);
    rows.push(memory::row_of(&memory, &row));

    if let Some(dir) = &config.ghz_dir {
        ghz_files(&channel, &config.identity, dir).await?;
    }

    let results = BenchResults {
        date: chrono::Utc::now().to_rfc3339(),
        machine,
        cores,
        target: config.target.clone(),
        hold_event_id: held.event_id,
        join_event_id,
        scenarios,
        memory,
        rows,
    };
    if let Some(parent) = config.output.parent() {
        std::fs::create_dir_all(parent).ok();
    }
    std::fs::write(&config.output, serde_json::to_string_pretty(&results)?)
        .with_context(|| format!("cannot write {}", config.output.display()))?;
    println!("results written to {}", config.output.display());
    Ok(results)
}
