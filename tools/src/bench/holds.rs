//! Scenario 1, `HoldSeats` with designed duplicates: 1,000 clients ask for one seat each,
//! drawn at random from the 50,000, so about half ask for a seat already held (`ABORTED
//! SEAT_TAKEN`); no seat may be held twice. Once with one token per user, once (on a second
//! event, so it finds the same free seats) with a fresh token per call.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use prost::Message as _;
use ticketing_proto::v1 as pb;
use tonic::transport::Channel;

use super::{
    config::{BenchConfig, Row, RowMaker, Scenario, Tokens, result_text, token_array},
    sale::{ROWS, SEATS_PER_ROW, collect_passes, create_event},
};
use crate::loadgen::{Comparison, Observer};

/// What the HoldSeats scenario saw: (hold id, user id) of holds to pay, every seat held,
/// and how many seats were held a second time (must stay 0).
type Held = (Vec<(String, String)>, HashSet<String>, u64);

/// What scenario 1 leaves for the others: the holds to pay (hold id, user id), and the event
/// of the first run, which the reads use.
pub struct Holds {
    pub to_pay: Vec<(String, String)>,
    pub event_id: String,
}

/// Runs scenario 1 twice (one token per user, then a fresh token per call) into `rows` and
/// `scenarios`.
pub async fn run(
    config: &BenchConfig,
    channel: &Channel,
    row: &RowMaker<'_>,
    rows: &mut Vec<Row>,
    scenarios: &mut Vec<Scenario>,
) -> anyhow::Result<Holds> {
    let mut pay_holds = Vec::new();
    let mut hold_events = Vec::new();
    let mut per_user_rps = None;
    for tokens in [Tokens::PerUser, Tokens::FreshPerCall] {
        let (holds, held, event_id) = hold_seats(config, channel, tokens).await?;
        let (paid_later, seats_held, double_held) = held;
        if tokens == Tokens::PerUser {
            pay_holds = paid_later;
        }
        let taken = holds.main.status_code_distribution.get("Aborted").copied().unwrap_or(0);
        let hold_ok = holds.main.ok();
        let versus = per_user_rps
            .map(|rps: f64| format!("; {:.2}× the req/s of one token per user", holds.main.rps / rps))
            .unwrap_or_default();
        per_user_rps.get_or_insert(holds.main.rps);
        rows.push(row(
            &format!(
                "HoldSeats: {} clients, {} random seats of {}, designed duplicates; {}",
                config.concurrency,
                holds.main.count,
                ROWS * SEATS_PER_ROW,
                tokens.label()
            ),
            format!(
                "{}; {hold_ok} held, {taken} SEAT_TAKEN, {double_held} seats held twice{versus}",
                result_text(&holds.main, "req", holds.main.rps)
            ),
            holds.ratio_text(),
            "≥25,000 req/s, p99 ≤25 ms",
            Some(holds.main.rps >= 25_000.0 && holds.main.percentile_ms(99) <= 25.0 && double_held == 0),
        ));
        scenarios.push(Scenario {
            name: format!("HoldSeats ({})", tokens.label()),
            report: holds,
            extra: serde_json::json!({"eventId": event_id, "held": hold_ok, "seatTaken": taken, "distinctSeatsHeld": seats_held, "seatsHeldTwice": double_held}),
        });
        hold_events.push(event_id);
    }
    Ok(Holds { to_pay: pay_holds, event_id: hold_events.first().cloned().unwrap_or_default() })
}

/// One HoldSeats run on a fresh event with passes for `hold_users` users: 1,000 clients,
/// one-seat requests for seats drawn at random, the calls carrying `tokens`. Returns the
/// comparison with its baseline, what was held, and the event.
async fn hold_seats(
    config: &BenchConfig,
    channel: &Channel,
    tokens: Tokens,
) -> anyhow::Result<(Comparison, Held, String)> {
    let users = config.hold_users;
    let event = create_event(
        channel,
        &config.identity,
        &format!("Bench: holds ({})", tokens.label()),
        users.clamp(1, 100_000),
        3_600,
        1_000,
    )
    .await?;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let started = Instant::now();
    let holders = collect_passes(channel, &config.identity, &event.event_id, users).await?;
    println!(
        "event {}: {} seats; {} passes collected in {:.1} s",
        event.event_id,
        event.total_capacity,
        holders.len(),
        started.elapsed().as_secs_f64()
    );
    let hold_data: Vec<serde_json::Value> = holders
        .iter()
        .map(|p| {
            serde_json::json!({
                "pass_token": p.token,
                "event_id": event.event_id,
                "user_id": p.user_id,
                "seat_ids": [format!("{{{{randomSeat \"A\" 1 {ROWS} 1 {SEATS_PER_ROW}}}}}")],
            })
        })
        .collect();
    // Request n is data item n % users: its token is that user's (one per user, or a fresh
    // one for each of the requests).
    let count = match tokens {
        Tokens::PerUser => holders.len() as u64,
        Tokens::FreshPerCall => config.hold_requests,
    };
    let user_of = |n: u64| holders[(n % holders.len().max(1) as u64) as usize].user_id.clone();
    let metadata = token_array(&config.identity, count, tokens, user_of);
    let held: Arc<Mutex<Held>> = Arc::default();
    let observer: Observer = {
        let held = held.clone();
        let pay_max = config.pay_max;
        Arc::new(move |outcome| {
            if let Ok(bytes) = outcome.result
                && let Ok(hold) = pb::Hold::decode(bytes.clone())
                && let Ok(mut held) = held.lock()
            {
                for seat in &hold.seat_ids {
                    if !held.1.insert(seat.clone()) {
                        held.2 += 1;
                    }
                }
                if held.0.len() < pay_max {
                    held.0.push((hold.hold_id, hold.user_id));
                }
            }
        })
    };
    let spec = config.spec(
        &format!("HoldSeats ({})", tokens.label()),
        "ticketing.v1.SeatLockService/HoldSeats",
        serde_json::Value::Array(hold_data),
        Some(metadata),
        config.concurrency,
        config.hold_requests,
    )?;
    let holds = config.measure(&spec, Some(observer)).await?;
    let held = std::mem::take(&mut *held.lock().map_err(|_| anyhow::anyhow!("poisoned"))?);
    Ok((holds, held, event.event_id))
}
