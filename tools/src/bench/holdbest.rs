//! Redis CPU per `HoldBestAvailable` as its zone fills (`bench --holdbest-only`).
//!
//! seat-lock's best-available choice runs inside one Redis script (`hold_best.lua`), so its
//! cost is Redis CPU. This drives that script through seat-lock's own [`Store`] (no gRPC, no
//! pass: the script alone) on three events of one 20,000-seat zone (200 rows × 100 seats):
//! one empty, one 95 % sold in row order (as best-available sells it) and one 95 % sold at
//! random seats (a fragmented zone). The same number of `quantity`-seat holds then runs
//! against each, interleaved in rounds so a drift of the machine hits all three alike, and
//! Redis CPU (`INFO cpu`, `used_cpu_sys` + `used_cpu_user` of the whole server: run it on a
//! Redis nobody else uses) is divided by the calls. The row gives each full zone's cost as a
//! ratio to the empty zone's, from the same run.

use std::{collections::BTreeMap, time::Instant};

use anyhow::{Context, bail};
use fred::{prelude::*, types::InfoKind};
use futures::StreamExt;
use rand::{SeedableRng, seq::SliceRandom};
use seat_lock::{
    catalogue::{Layout, Zone},
    store::{NewHold, Pick, Store},
};

use super::config::Row;

/// Rows of the bench zone.
const ROWS: u32 = 200;
/// Seats per row (200 × 100 = 20,000 seats).
const SEATS_PER_ROW: u32 = 100;
/// Share of the seats sold before the full zones are measured, in percent.
const SOLD_PERCENT: u32 = 95;
/// Seats per hold while filling (one call each).
const FILL_BATCH: usize = 50;
/// Measured holds per zone and round.
const ROUNDS: u32 = 4;
/// Measured calls per zone by default.
pub const DEFAULT_CALLS: u32 = 400;
/// Seats per measured hold by default.
pub const DEFAULT_QUANTITY: u32 = 2;
/// The ratio the target allows (issue 15).
pub const TARGET_RATIO: f64 = 1.5;

/// What to measure.
#[derive(Debug, Clone)]
pub struct HoldBestConfig {
    pub redis_url: String,
    /// Measured `HoldBestAvailable` calls per zone.
    pub calls: u32,
    /// Seats per measured hold.
    pub quantity: u32,
}

/// Redis CPU seconds (user + system) so far.
async fn redis_cpu_secs(redis: &Client) -> anyhow::Result<f64> {
    let info: String = redis.info(Some(InfoKind::Cpu)).await?;
    let field = |name: &str| {
        info.lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|value| value.trim().parse::<f64>().ok())
    };
    Ok(field("used_cpu_sys:").context("INFO cpu has no used_cpu_sys")?
        + field("used_cpu_user:").context("INFO cpu has no used_cpu_user")?)
}

fn layout(event_id: &str) -> Layout {
    Layout {
        event_id: event_id.to_owned(),
        currency: "EUR".into(),
        max_tickets_per_user: 50,
        zones: vec![Zone {
            zone_id: "A".into(),
            seated: true,
            price_cents: 5_000,
            row_labels: (1..=ROWS).map(|r| r.to_string()).collect(),
            seats_per_row: SEATS_PER_ROW,
            capacity: ROWS * SEATS_PER_ROW,
        }],
    }
}

fn new_hold<'a>(user: &'a str) -> NewHold<'a> {
    NewHold {
        hold_id: uuid::Uuid::new_v4().to_string(),
        user_id: user,
        pass_id: "bench-pass",
        pass_expires_at_ms: i64::MAX / 2,
        zone_id: "A",
        ttl: std::time::Duration::from_secs(3_600),
        price_cents: 5_000,
        limit: 50,
    }
}

/// Sells `seats` of the event (held, then confirmed), `FILL_BATCH` per hold.
async fn sell(store: &Store, event_id: &str, seats: &[String]) -> anyhow::Result<()> {
    for (n, batch) in seats.chunks(FILL_BATCH).enumerate() {
        let user = format!("filler-{n}");
        let new = new_hold(&user);
        let hold = store.hold(event_id, &new, &Pick::Seats(batch)).await.map_err(outcome)?;
        store.confirm(event_id, &hold.hold_id, &user, &format!("booking-{n}")).await.map_err(outcome)?;
    }
    Ok(())
}

fn outcome(outcome: seat_lock::store::Outcome) -> anyhow::Error {
    match outcome {
        seat_lock::store::Outcome::NotReady(_) => anyhow::anyhow!("the event is not initialised"),
        seat_lock::store::Outcome::Failed(error) => anyhow::anyhow!("{error}"),
    }
}

/// Measures and returns the bench row.
pub async fn hold_best_cost(config: &HoldBestConfig, date: &str, machine: &str) -> anyhow::Result<Row> {
    if config.quantity == 0 || config.quantity > 10 {
        bail!("--holdbest-quantity must be 1..=10");
    }
    let prefix = format!("bench-holdbest-{}:", uuid::Uuid::new_v4().simple());
    let store = Store::connect(&config.redis_url, &prefix, std::time::Duration::from_secs(5))
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let redis = Client::new(Config::from_url(&config.redis_url)?, None, None, None);
    redis.init().await.context("cannot reach Redis for INFO cpu")?;

    let seats: Vec<String> =
        (1..=ROWS).flat_map(|row| (1..=SEATS_PER_ROW).map(move |n| format!("A-{row}-{n}"))).collect();
    let sold = seats.len() * SOLD_PERCENT as usize / 100;
    let mut shuffled = seats.clone();
    shuffled.shuffle(&mut rand::rngs::StdRng::seed_from_u64(15));
    let zones: [(&str, Vec<String>); 3] = [
        ("empty", Vec::new()),
        ("95 % sold in row order", seats[..sold].to_vec()),
        ("95 % sold at random", shuffled[..sold].to_vec()),
    ];
    let mut events = Vec::new();
    for (name, to_sell) in &zones {
        let event_id = uuid::Uuid::new_v4().to_string();
        store.init(&layout(&event_id), &BTreeMap::new()).await.map_err(|e| anyhow::anyhow!("{e}"))?;
        let filling = Instant::now();
        sell(&store, &event_id, to_sell).await?;
        println!("{name}: {} seats sold in {:.1} s", to_sell.len(), filling.elapsed().as_secs_f64());
        events.push(event_id);
    }

    // Interleaved rounds: every zone gets calls / ROUNDS holds per round.
    let per_round = config.calls.div_ceil(ROUNDS);
    let row_labels = layout("").zones.swap_remove(0).row_labels;
    let mut cpu = [0.0f64; 3];
    let mut calls = [0u32; 3];
    let mut refused: [BTreeMap<String, u32>; 3] = Default::default();
    for round in 0..ROUNDS {
        for (z, event_id) in events.iter().enumerate() {
            let before = redis_cpu_secs(&redis).await?;
            for n in 0..per_round {
                let user = format!("buyer-{round}-{n}");
                let new = new_hold(&user);
                let pick = Pick::Best {
                    quantity: config.quantity,
                    seated: true,
                    allow_split: false,
                    seats_per_row: SEATS_PER_ROW,
                    row_labels: &row_labels,
                };
                if let Err(error) = store.hold(event_id, &new, &pick).await {
                    *refused[z].entry(outcome(error).to_string()).or_default() += 1;
                }
            }
            cpu[z] += redis_cpu_secs(&redis).await? - before;
            calls[z] += per_round;
        }
    }
    // Leave nothing behind on the Redis measured (the stack's, in a full bench run).
    let mut keys = Vec::new();
    let mut scan = redis.scan_buffered(format!("{prefix}*"), Some(1_000), None);
    while let Some(key) = scan.next().await {
        keys.push(key?);
    }
    for batch in keys.chunks(500) {
        let _: i64 = redis.unlink(batch.to_vec()).await?;
    }
    let micros: Vec<f64> = (0..3).map(|z| cpu[z] * 1e6 / f64::from(calls[z].max(1))).collect();
    let ratio_order = micros[1] / micros[0];
    let ratio_random = micros[2] / micros[0];
    for (z, (name, _)) in zones.iter().enumerate() {
        println!(
            "{name}: {:.1} µs Redis CPU per call over {} calls; refused: {:?}",
            micros[z], calls[z], refused[z]
        );
    }
    let refusals = |z: usize| {
        if refused[z].is_empty() {
            String::new()
        } else {
            format!(
                " (refused: {})",
                refused[z].iter().map(|(k, v)| format!("{v} {k}")).collect::<Vec<_>>().join(", ")
            )
        }
    };
    Ok(Row {
        what: format!(
            "HoldBestAvailable Redis CPU: {} holds of {} seats on a 20,000-seat zone ({ROWS} rows × {SEATS_PER_ROW}) {SOLD_PERCENT} % sold, against the same zone empty (`bench --holdbest-only`, the script through seat-lock's store, `INFO cpu` of a private Redis)",
            calls[0], config.quantity
        ),
        result: format!(
            "empty {:.1} µs/call{}; 95 % sold in row order {:.1} µs/call ({ratio_order:.2}×){}; 95 % sold at random {:.1} µs/call ({ratio_random:.2}×){}",
            micros[0],
            refusals(0),
            micros[1],
            refusals(1),
            micros[2],
            refusals(2)
        ),
        baseline: format!("{ratio_order:.2}× / {ratio_random:.2}× the empty zone's cost"),
        target: format!("≤ {TARGET_RATIO}× the empty zone"),
        met: Some(ratio_order <= TARGET_RATIO && ratio_random <= TARGET_RATIO),
        date: date.to_owned(),
        machine: machine.to_owned(),
    })
}
