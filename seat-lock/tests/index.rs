//! Property test of the best-available seat index (`taken:<zone>` bitmap, `runs:<zone>`
//! longest free run per row, `idx:<zone>` geometry; see `store/common.lua`): random sequences of HoldSeats,
//! HoldBestAvailable, release, checkout, confirm, return, expiry (the hold's time runs out and
//! its seat keys lapse), sweeps and rebuilds after a Redis loss run through seat-lock's
//! [`Store`] on the real Redis under the test's own key prefix, and after every step the
//! index is read back from Redis and compared with the seat keys. Every best-available answer
//! is also compared with the choice rule evaluated on the seat keys (the first row with
//! `quantity` adjacent free seats, lowest numbers first; else, if allowed, the first free
//! seats in row order), so the index can neither drift from the keys nor change the choice.
#![allow(clippy::expect_used)]

use std::{
    collections::{BTreeMap, HashSet},
    time::Duration,
};

use anyhow::{Context, bail, ensure};
use fred::prelude::*;
use futures::StreamExt;
use rand::{Rng, SeedableRng, rngs::StdRng, seq::IndexedRandom};
use seat_lock::{
    catalogue::{Layout, Zone},
    error::Error,
    store::{NewHold, Outcome, Pick, ReturnOutcome, SeatReturn, SoldHold, Store, StoredHold},
};
use test_support::testenv::TestEnv;

const STEPS: usize = 400;
const SEEDS: [u64; 3] = [1, 15, 2026];
const USERS: [&str; 6] = ["u1", "u2", "u3", "u4", "u5", "u6"];
const LIMIT: u32 = 12;

fn layout(event_id: &str) -> Layout {
    let seated = |zone_id: &str, rows: &[&str], per_row: u32| Zone {
        zone_id: zone_id.into(),
        seated: true,
        price_cents: 1_000,
        row_labels: rows.iter().map(|r| (*r).to_owned()).collect(),
        seats_per_row: per_row,
        capacity: rows.len() as u32 * per_row,
    };
    Layout {
        event_id: event_id.into(),
        currency: "EUR".into(),
        max_tickets_per_user: LIMIT,
        zones: vec![
            // 10 seats: two bytes per row, six bits of padding.
            seated("A", &["R1", "R2", "R3", "R4"], 10),
            // 8 seats: exactly one byte per row.
            seated("B", &["X", "Y", "Z"], 8),
            Zone {
                zone_id: "G".into(),
                seated: false,
                price_cents: 500,
                row_labels: vec![],
                seats_per_row: 0,
                capacity: 30,
            },
        ],
    }
}

fn seat_ids(zone: &Zone) -> Vec<String> {
    zone.row_labels
        .iter()
        .flat_map(|row| (1..=zone.seats_per_row).map(move |n| format!("{}-{row}-{n}", zone.zone_id)))
        .collect()
}

/// What the test remembers of a hold it made.
#[derive(Debug, Clone)]
struct Known {
    user: String,
    zone: String,
    seats: Vec<String>,
    quantity: u32,
    booking: Option<String>,
}

struct Harness {
    store: Store,
    redis: Client,
    prefix: String,
    base: String,
    event_id: String,
    layout: Layout,
    holds: BTreeMap<String, Known>,
    /// Checks that found a set bit over a lapsed key of an overdue, unswept hold.
    lapsed_seen: u32,
    /// Seated best-available holds made (each compared with the choice rule).
    best_held: u32,
}

fn failed(outcome: Outcome) -> anyhow::Result<Error> {
    match outcome {
        Outcome::Failed(error) => Ok(error),
        Outcome::NotReady(_) => bail!("the event is not ready"),
    }
}

impl Harness {
    async fn new(env: &TestEnv) -> anyhow::Result<Self> {
        let store =
            Store::connect(&env.redis_url, &env.redis_prefix, std::time::Duration::from_secs(5)).await?;
        let redis = Client::new(Config::from_url(&env.redis_url)?, None, None, None);
        redis.init().await?;
        let event_id = uuid::Uuid::new_v4().to_string();
        let layout = layout(&event_id);
        store.init(&layout, &BTreeMap::new()).await?;
        Ok(Self {
            base: store.base(&event_id),
            store,
            redis,
            prefix: env.redis_prefix.clone(),
            event_id,
            layout,
            holds: BTreeMap::new(),
            lapsed_seen: 0,
            best_held: 0,
        })
    }

    fn zone(&self, zone_id: &str) -> &Zone {
        self.layout.zones.iter().find(|z| z.zone_id == zone_id).expect("zone of the layout")
    }

    /// Now on this machine, which is Redis's: overdue holds are made a second overdue.
    fn now_ms() -> i64 {
        chrono::Utc::now().timestamp_millis()
    }

    /// Which seats of a zone have a seat key.
    async fn existing(&self, zone: &Zone) -> anyhow::Result<Vec<bool>> {
        let keys: Vec<String> = seat_ids(zone).iter().map(|s| format!("{}seat:{s}", self.base)).collect();
        let values: Vec<Option<String>> = self.redis.mget(keys).await?;
        Ok(values.into_iter().map(|v| v.is_some()).collect())
    }

    /// The choice rule on the seat keys (a missing key is a free seat).
    async fn expected_choice(
        &self,
        zone: &Zone,
        quantity: u32,
        allow_split: bool,
    ) -> anyhow::Result<Option<Vec<String>>> {
        let exists = self.existing(zone).await?;
        let ids = seat_ids(zone);
        let per_row = zone.seats_per_row as usize;
        for row in 0..zone.row_labels.len() {
            let mut run = Vec::new();
            for n in 0..per_row {
                if exists[row * per_row + n] {
                    run.clear();
                } else {
                    run.push(ids[row * per_row + n].clone());
                    if run.len() == quantity as usize {
                        return Ok(Some(run));
                    }
                }
            }
        }
        if !allow_split {
            return Ok(None);
        }
        let picked: Vec<String> = ids
            .iter()
            .zip(&exists)
            .filter(|(_, e)| !**e)
            .map(|(s, _)| s.clone())
            .take(quantity as usize)
            .collect();
        Ok((picked.len() == quantity as usize).then_some(picked))
    }

    /// The invariant: for every seated zone, a clear bit means no seat key; a set bit means a
    /// seat key, or a key that lapsed with its hold's time (live, overdue, not swept yet);
    /// the bits past each row's seats are set; each row's run is its longest clear run; the
    /// geometry names every row at its position.
    async fn check_index(&mut self, step: &str) -> anyhow::Result<()> {
        let now = Self::now_ms();
        // Seats of live holds whose time has run out: their keys may have lapsed unswept.
        let mut lapsed = HashSet::new();
        let live: Vec<String> =
            self.redis.zrange(format!("{}expiry", self.base), 0, -1, None, false, None, false).await?;
        for hold_id in live {
            let h: Vec<Option<String>> = self
                .redis
                .hmget(format!("{}hold:{hold_id}", self.base), vec!["state", "seats", "expires_at_ms"])
                .await?;
            let overdue = h[2].as_deref().and_then(|e| e.parse::<i64>().ok()).is_some_and(|e| e < now);
            if matches!(h[0].as_deref(), Some("held" | "checkout")) && overdue {
                lapsed.extend(h[1].clone().unwrap_or_default().split(',').map(str::to_owned));
            }
        }
        for zone in self.layout.zones.iter().filter(|z| z.seated) {
            let z = &zone.zone_id;
            let bytes = (zone.seats_per_row as usize).div_ceil(8);
            let bits: Vec<u8> = self
                .redis
                .get::<Option<fred::bytes::Bytes>, _>(format!("{}taken:{z}", self.base))
                .await?
                .with_context(|| format!("after {step}: zone {z} has no index"))?
                .to_vec();
            ensure!(
                bits.len() == bytes * zone.row_labels.len(),
                "after {step}: zone {z} index is {} bytes",
                bits.len()
            );
            let runs: Vec<u8> = self
                .redis
                .get::<Option<fred::bytes::Bytes>, _>(format!("{}runs:{z}", self.base))
                .await?
                .with_context(|| format!("after {step}: zone {z} has no runs"))?
                .to_vec();
            ensure!(runs.len() == zone.row_labels.len(), "after {step}: zone {z} has {} runs", runs.len());
            let geometry: BTreeMap<String, i64> = self.redis.hgetall(format!("{}idx:{z}", self.base)).await?;
            ensure!(
                geometry.get("-bytes") == Some(&(bytes as i64)),
                "after {step}: zone {z} geometry {geometry:?}"
            );
            let exists = self.existing(zone).await?;
            let ids = seat_ids(zone);
            for (row, label) in zone.row_labels.iter().enumerate() {
                ensure!(
                    geometry.get(label) == Some(&(row as i64)),
                    "after {step}: row {label} of {z} not at {row}"
                );
                let bit = |k: usize| bits[row * bytes + k / 8] & (0x80 >> (k % 8)) != 0;
                let (mut run, mut longest) = (0u8, 0u8);
                for k in 0..bytes * 8 {
                    let per_row = zone.seats_per_row as usize;
                    if k >= per_row {
                        ensure!(bit(k), "after {step}: padding bit {k} of row {label} of {z} is clear");
                        continue;
                    }
                    let seat = &ids[row * per_row + k];
                    let key = exists[row * per_row + k];
                    if !bit(k) {
                        run += 1;
                        longest = longest.max(run);
                        ensure!(!key, "after {step}: seat {seat} has a key but its index bit is clear");
                    } else {
                        run = 0;
                        if !key {
                            self.lapsed_seen += 1;
                        }
                        ensure!(
                            key || lapsed.contains(seat),
                            "after {step}: seat {seat} has no key (and no overdue hold) but its index bit is set"
                        );
                    }
                }
                ensure!(
                    runs[row] == longest,
                    "after {step}: row {label} of {z} says its longest free run is {}, its bits {longest}",
                    runs[row]
                );
            }
        }
        Ok(())
    }

    fn new_hold<'a>(user: &'a str, zone: &'a str) -> NewHold<'a> {
        NewHold {
            hold_id: uuid::Uuid::new_v4().to_string(),
            user_id: user,
            pass_id: "pass",
            pass_expires_at_ms: i64::MAX / 2,
            zone_id: zone,
            ttl: Duration::from_secs(3_600),
            price_cents: 1_000,
            limit: LIMIT,
        }
    }

    fn remember(&mut self, hold: &StoredHold) {
        self.holds.insert(
            hold.hold_id.clone(),
            Known {
                user: hold.user_id.clone(),
                zone: hold.zone_id.clone(),
                seats: hold.seat_ids.clone(),
                quantity: hold.quantity,
                booking: None,
            },
        );
    }

    fn pick_hold(&self, rng: &mut StdRng) -> Option<(String, Known)> {
        let ids: Vec<&String> = self.holds.keys().collect();
        let id = (*ids.choose(rng)?).clone();
        let known = self.holds[&id].clone();
        Some((id, known))
    }

    /// One random step; returns its description.
    async fn step(&mut self, rng: &mut StdRng) -> anyhow::Result<String> {
        let user = *USERS.choose(rng).expect("users");
        let event = self.event_id.clone();
        match rng.random_range(0..100) {
            0..25 => {
                let zone = self.zone(if rng.random_bool(0.6) { "A" } else { "B" }).clone();
                let ids = seat_ids(&zone);
                let count = rng.random_range(1..=3);
                let seats: Vec<String> = ids.choose_multiple(rng, count).cloned().collect();
                let new = Self::new_hold(user, &zone.zone_id);
                match self.store.hold(&event, &new, &Pick::Seats(&seats)).await {
                    Ok(hold) => self.remember(&hold),
                    Err(outcome) => {
                        failed(outcome)?;
                    }
                }
                Ok(format!("HoldSeats {user} {seats:?}"))
            }
            25..50 => {
                let zone = self.zone(["A", "B", "G"].choose(rng).expect("zones")).clone();
                let quantity = rng.random_range(1..=4);
                let allow_split = rng.random_bool(0.5);
                let expected = if zone.seated {
                    self.expected_choice(&zone, quantity, allow_split).await?
                } else {
                    None
                };
                let new = Self::new_hold(user, &zone.zone_id);
                let pick = Pick::Best {
                    quantity,
                    seated: zone.seated,
                    allow_split,
                    seats_per_row: zone.seats_per_row,
                    row_labels: &zone.row_labels,
                };
                let what =
                    format!("HoldBestAvailable {user} {} ×{quantity} split {allow_split}", zone.zone_id);
                match self.store.hold(&event, &new, &pick).await {
                    Ok(hold) => {
                        if zone.seated {
                            ensure!(
                                Some(&hold.seat_ids) == expected.as_ref(),
                                "{what}: held {:?}, the choice rule on the seat keys says {expected:?}",
                                hold.seat_ids
                            );
                            self.best_held += 1;
                        }
                        self.remember(&hold);
                    }
                    Err(outcome) => match failed(outcome)? {
                        Error::TicketLimitExceeded { .. } => {}
                        error @ (Error::NoAdjacentSeats { .. } | Error::ZoneSoldOut { .. }) => ensure!(
                            expected.is_none(),
                            "{what}: refused ({error}), the choice rule on the seat keys says {expected:?}"
                        ),
                        error => bail!("{what}: {error}"),
                    },
                }
                Ok(what)
            }
            50..60 => {
                let Some((id, known)) = self.pick_hold(rng) else { return Ok("nothing to release".into()) };
                let _ = self.store.release(&event, &id, &known.user).await;
                Ok(format!("release {id} {:?}", known.seats))
            }
            60..68 => {
                let Some((id, known)) = self.pick_hold(rng) else { return Ok("nothing to check out".into()) };
                let _ = self.store.checkout(&event, &id, &known.user, Duration::from_secs(3_600)).await;
                Ok(format!("checkout {id}"))
            }
            68..78 => {
                let Some((id, known)) = self.pick_hold(rng) else { return Ok("nothing to confirm".into()) };
                let booking = format!("booking-{id}");
                if self.store.confirm(&event, &id, &known.user, &booking).await.is_ok()
                    && let Some(k) = self.holds.get_mut(&id)
                {
                    k.booking = Some(booking);
                }
                Ok(format!("confirm {id} {:?}", known.seats))
            }
            78..84 => {
                let Some((id, known)) = self.pick_hold(rng) else { return Ok("nothing to return".into()) };
                let Some(booking) = known.booking.clone() else { return Ok("nothing sold to return".into()) };
                let request = SeatReturn {
                    booking_id: &booking,
                    hold_id: &id,
                    user_id: &known.user,
                    zone_id: &known.zone,
                    quantity: known.quantity,
                    seat_ids: &known.seats,
                };
                match self.store.return_seats(&event, &request).await {
                    Ok(
                        ReturnOutcome::Returned | ReturnOutcome::AlreadyReturned | ReturnOutcome::Announced,
                    ) => {
                        // Payment no longer lists a cancelled sale.
                        if let Some(k) = self.holds.get_mut(&id) {
                            k.booking = None;
                        }
                    }
                    Ok(ReturnOutcome::NotSold(why)) => bail!("return {id}: {why}"),
                    Err(outcome) => bail!("return {id}: {:?}", failed(outcome)?),
                }
                Ok(format!("return {id} {:?}", known.seats))
            }
            84..94 => {
                // Time runs out for a live hold: its record is overdue and its seat keys lapse
                // (what PXAT does), with nothing swept yet.
                let Some((id, _)) = self.pick_hold(rng) else { return Ok("nothing to expire".into()) };
                let hkey = format!("{}hold:{id}", self.base);
                let h: Vec<Option<String>> = self.redis.hmget(&hkey, vec!["state", "seats"]).await?;
                if !matches!(h[0].as_deref(), Some("held" | "checkout")) {
                    return Ok(format!("expire {id}: not live"));
                }
                let past = Self::now_ms() - 1_000;
                let _: i64 = self.redis.hset(&hkey, ("expires_at_ms", past)).await?;
                let _: i64 = self
                    .redis
                    .zadd(
                        format!("{}expiry", self.base),
                        None,
                        None,
                        false,
                        false,
                        (past as f64, id.as_str()),
                    )
                    .await?;
                for seat in h[1].clone().unwrap_or_default().split(',').filter(|s| !s.is_empty()) {
                    let key = format!("{}seat:{seat}", self.base);
                    let owner: Option<String> = self.redis.get(&key).await?;
                    if owner.as_deref() == Some(id.as_str()) {
                        let _: i64 = self.redis.del(&key).await?;
                    }
                }
                Ok(format!("expire {id}"))
            }
            94..97 => {
                self.store.sweep(&event).await?;
                Ok("sweep".into())
            }
            97..99 => {
                // The ready marker alone is lost: the rebuild keeps the seat keys it finds.
                let _: i64 = self.redis.del(format!("{}ready", self.base)).await?;
                let sold = self.sold();
                self.store.init(&self.layout, &sold).await?;
                Ok("ready marker lost, rebuilt".into())
            }
            _ => {
                // Redis loses everything; the rebuild writes payment's sales back.
                let sold = self.sold();
                self.lose_redis().await?;
                self.store.init(&self.layout, &sold).await?;
                self.holds.retain(|_, k| k.booking.is_some());
                Ok("Redis lost, rebuilt from the sales".into())
            }
        }
    }

    /// What payment would list: the sold holds not returned.
    fn sold(&self) -> BTreeMap<String, SoldHold> {
        self.holds
            .iter()
            .filter_map(|(id, k)| {
                Some((
                    id.clone(),
                    SoldHold {
                        user_id: k.user.clone(),
                        zone_id: k.zone.clone(),
                        seat_ids: k.seats.clone(),
                        quantity: k.quantity,
                        booking_id: k.booking.clone()?,
                    },
                ))
            })
            .collect()
    }

    async fn lose_redis(&self) -> anyhow::Result<()> {
        let mut keys = Vec::new();
        let mut scan = self.redis.scan_buffered(format!("{}*", self.prefix), Some(500), None);
        while let Some(key) = scan.next().await {
            keys.push(key?);
        }
        for key in keys {
            let _: i64 = self.redis.del(key).await?;
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seat_index_matches_the_seat_keys_after_every_step() -> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    // Steps by kind (first word of their description), over every seed.
    let mut kinds: BTreeMap<String, u32> = BTreeMap::new();
    let (mut lapsed_seen, mut best_held) = (0, 0);
    for seed in SEEDS {
        let mut harness = Harness::new(&env).await?;
        let mut rng = StdRng::seed_from_u64(seed);
        harness.check_index("init").await?;
        for n in 0..STEPS {
            let step = harness.step(&mut rng).await.with_context(|| format!("seed {seed}, step {n}"))?;
            harness.check_index(&format!("seed {seed}, step {n}: {step}")).await?;
            *kinds.entry(step.split(' ').next().unwrap_or_default().to_owned()).or_default() += 1;
        }
        lapsed_seen += harness.lapsed_seen;
        best_held += harness.best_held;
    }
    // Every kind of change ran, and lapsed keys were part of the checks.
    for kind in [
        "HoldSeats",
        "HoldBestAvailable",
        "release",
        "checkout",
        "confirm",
        "return",
        "expire",
        "sweep",
        "ready",
        "Redis",
    ] {
        ensure!(kinds.get(kind).copied().unwrap_or(0) > 0, "no {kind} step ran: {kinds:?}");
    }
    ensure!(lapsed_seen > 0, "no check saw a lapsed seat key");
    ensure!(best_held > 0, "no best-available hold was made");
    println!("steps: {kinds:?}; best-available holds {best_held}; lapsed seats checked: {lapsed_seen}");
    Ok(())
}
