//! Scenario 5, fan-out of the live seat map: many `WatchSeatMap` watchers, one seat held, and
//! the lag until each has the delta (also alone: `bench --fanout-only N`).

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use ticketing_proto::v1::{
    self as pb, inventory_service_client::InventoryServiceClient,
    seat_lock_service_client::SeatLockServiceClient,
};

use super::{
    config::{BenchConfig, Row},
    memory::service_memory,
    sale::{self, collect_passes, create_event},
};

/// `WatchSeatMap` watchers of the fan-out scenario: the most inventory admits at once.
pub const FANOUT_WATCHERS: usize = 10_000;

/// Time a `WatchSeatMap` watcher may take to get its snapshot, and later its delta.
const WATCH_TIMEOUT: Duration = Duration::from_secs(60);

/// Fan-out lag of the live seat map: `watchers` `WatchSeatMap` streams on a 50,000-seat
/// event, spread over `config.connections` connections; once every watcher has its snapshot,
/// one seat is held, and the time until each watcher receives the delta naming that seat is
/// measured (seat-lock → Redis outbox → JetStream → inventory → 100 ms coalescing → stream).
pub async fn fanout_lag(
    config: &BenchConfig,
    watchers: usize,
    date: &str,
    machine: &str,
) -> anyhow::Result<Row> {
    const SEAT: &str = "A-1-1";
    let channel = sale::channel(&config.target).await?;
    let identity = &config.identity;
    let event = create_event(&channel, identity, "Bench: seat-map fan-out", 10, 600, 1_000).await?;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let holder = collect_passes(&channel, identity, &event.event_id, 1).await?.pop().context("no pass")?;
    let mut channels = Vec::with_capacity(config.connections.max(1));
    for _ in 0..config.connections.max(1) {
        channels.push(sale::channel(&config.target).await?);
    }

    let ready = Arc::new(tokio::sync::Semaphore::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for watcher in 0..watchers {
        let mut inventory = InventoryServiceClient::new(channels[watcher % channels.len()].clone());
        let (event_id, ready) = (event.event_id.clone(), ready.clone());
        tasks.spawn(async move {
            let watch = async {
                let mut stream = inventory
                    .watch_seat_map(pb::WatchSeatMapRequest { event_id, zone_id: "A".into() })
                    .await?
                    .into_inner();
                stream.message().await?.context("no snapshot")?;
                ready.add_permits(1);
                while let Some(update) = stream.message().await? {
                    if let Some(pb::seat_map_update::Update::Delta(delta)) = update.update
                        && delta.changes.iter().any(|c| c.seat_id == SEAT)
                    {
                        return anyhow::Ok(Instant::now());
                    }
                }
                bail!("the stream ended before the delta")
            };
            tokio::time::timeout(WATCH_TIMEOUT, watch).await.map_err(|_| anyhow::anyhow!("timed out"))?
        });
    }
    let all_ready = tokio::time::timeout(WATCH_TIMEOUT, ready.acquire_many(watchers as u32)).await;
    let snapshots = if all_ready.is_ok() { watchers } else { ready.available_permits() };
    let held_at = Instant::now();
    SeatLockServiceClient::new(channel)
        .hold_seats(identity.as_user(
            &holder.user_id,
            pb::HoldSeatsRequest {
                pass_token: holder.token.clone(),
                event_id: event.event_id.clone(),
                user_id: holder.user_id.clone(),
                seat_ids: vec![SEAT.into()],
            },
        ))
        .await
        .context("HoldSeats")?;
    let mut lags_ms = Vec::with_capacity(watchers);
    let mut failures = 0;
    while let Some(result) = tasks.join_next().await {
        match result {
            Ok(Ok(at)) => lags_ms.push(at.saturating_duration_since(held_at).as_secs_f64() * 1_000.0),
            _ => failures += 1,
        }
    }
    lags_ms.sort_by(f64::total_cmp);
    let at = |q: f64| {
        lags_ms.get(((lags_ms.len() as f64 - 1.0) * q).round() as usize).copied().unwrap_or(f64::NAN)
    };
    let inventory_memory = service_memory(&config.state_dir)
        .into_iter()
        .find(|m| m.name == "inventory")
        .map_or_else(|| "n/a".to_owned(), |m| format!("{} MB", m.vm_hwm_kb / 1024));
    Ok(Row {
        what: format!("WatchSeatMap fan-out: {watchers} watchers of a 50,000-seat zone, one seat held"),
        result: format!(
            "{} of {watchers} got their snapshot, {} the delta ({failures} failed); lag p50 {:.0} ms / p99 {:.0} ms / max {:.0} ms; inventory peak RSS {inventory_memory}",
            snapshots,
            lags_ms.len(),
            at(0.5),
            at(0.99),
            at(1.0)
        ),
        baseline: "—".into(),
        target: "a change shows within a second".into(),
        met: Some(failures == 0 && at(0.99) <= 1_000.0),
        date: date.into(),
        machine: machine.into(),
    })
}
