//! One simulated user's visit: Join, WatchQueue until admitted, GetAvailability, a hold
//! (chosen seats from the seat map, or best available), then what the user's behaviour says:
//! pay, pay with a declined card and then a good one, pay slowly, replay the payment, release
//! the hold, or walk away from it.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use rand::{Rng, SeedableRng, rngs::StdRng};
use ticketing_proto::v1::{
    self as pb, admission_service_client::AdmissionServiceClient,
    inventory_service_client::InventoryServiceClient, notifier_service_client::NotifierServiceClient,
    payment_service_client::PaymentServiceClient, seat_lock_service_client::SeatLockServiceClient,
};
use tokio_stream::StreamExt;
use tonic::{Code, Status, transport::Channel};

use super::{
    SimConfig,
    stats::{Rpc, Stats},
};

/// Hold attempts before a user gives up (seat taken, zone sold out in between).
const HOLD_ATTEMPTS: usize = 6;
/// Of those, how many a contention user spends on its chosen seats before taking the best
/// available ones.
const CONTENTION_ATTEMPTS: usize = 3;
/// Front rows of the first zone that contention users all aim at.
const POPULAR_ROWS: usize = 2;
/// Free blocks of the popular rows a contention user picks among: few, so that they collide.
const POPULAR_CHOICES: usize = 4;
/// Times a WatchQueue stream is reopened after it failed before the user gives up.
const WATCH_ATTEMPTS: usize = 8;
/// Retries of a call refused for overload (RESOURCE_EXHAUSTED, UNAVAILABLE).
const OVERLOAD_RETRIES: usize = 20;
/// How long a user keeps retrying one Pay (in flight, deadline exceeded) before giving up;
/// longer than the slowest sandbox card (60 s).
const PAY_PATIENCE: Duration = Duration::from_secs(150);
/// How often a pre-queue user asks for its place until admission has sealed the pre-queue
/// (within one controller tick of the opening).
const SEAL_POLL: Duration = Duration::from_millis(200);
/// How long a user waits for the confirmation notification after paying.
const NOTIFY_PATIENCE: Duration = Duration::from_secs(60);

/// What a user does once it holds seats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Pays with a good card.
    Buy,
    /// Releases the hold (ReleaseHold) and leaves.
    Release,
    /// Walks away; the hold must expire by itself.
    LetExpire,
    /// Pays with a declined card, then with a good card under a new key.
    Declined,
    /// Pays with a card slower than the hold's TTL (`pm_card_slow_<ms>`).
    Slow,
    /// Sends the same Pay twice at once with one idempotency key.
    Replay,
}

/// A user's plan, drawn from the configured mix.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub behaviour: Behaviour,
    /// Aims at popular seats of the seat map instead of HoldBestAvailable.
    pub contention: bool,
    pub quantity: u32,
}

impl Plan {
    /// The plan of user `index`, reproducible from the seed.
    pub fn draw(config: &SimConfig, index: u32) -> Self {
        let mut rng =
            StdRng::seed_from_u64(config.seed ^ (u64::from(index).wrapping_mul(0x9E37_79B9_7F4A_7C15)));
        let mix = &config.mix;
        let r: f64 = rng.random();
        let behaviour = [
            (mix.release, Behaviour::Release),
            (mix.let_expire, Behaviour::LetExpire),
            (mix.declined, Behaviour::Declined),
            (mix.slow, Behaviour::Slow),
            (mix.replay, Behaviour::Replay),
        ]
        .iter()
        .scan(0.0, |acc, (share, b)| {
            *acc += share;
            Some((*acc, *b))
        })
        .find(|(upto, _)| r < *upto)
        .map_or(Behaviour::Buy, |(_, b)| b);
        let contention = rng.random::<f64>() < mix.contention;
        let q: f64 = rng.random();
        let quantity = if q < 0.4 {
            1
        } else if q < 0.8 {
            2
        } else if q < 0.9 {
            3
        } else {
            4
        };
        Self { behaviour, contention, quantity: quantity.min(config.max_tickets_per_user).max(1) }
    }
}

/// One admission, for the order check (I5).
#[derive(Debug, Clone)]
pub struct Admission {
    pub ticket: u64,
    /// The pass id admission issued; a per-event sequence, so its order is admission order.
    pub pass_id: String,
    /// Joined after the sale opened (state WAITING at Join), so FIFO applies.
    pub after_open: bool,
}

/// A hold the user walked away from or released, for the I3 check.
#[derive(Debug, Clone)]
pub struct Abandoned {
    pub user_id: String,
    pub hold_id: String,
    pub released: bool,
}

/// What the users observed, for verification.
#[derive(Default)]
pub struct Records {
    pub admissions: Mutex<Vec<Admission>>,
    pub abandoned: Mutex<Vec<Abandoned>>,
    /// Replays whose two answers disagreed (I4).
    pub replay_problems: Mutex<Vec<String>>,
    /// A few unexpected errors, for the report.
    pub error_samples: Mutex<Vec<String>>,
}

/// What a joined user carries to its session.
#[derive(Debug, Clone)]
pub struct Joined {
    pub index: u32,
    pub ticket: u64,
    pub after_open: bool,
}

/// Shared by every user task.
pub struct Ctx {
    pub config: SimConfig,
    pub event: pb::Event,
    pub channels: Vec<Channel>,
    pub stats: Arc<Stats>,
    pub records: Records,
    /// The chaos schedule's faults so far (none outside a chaos run).
    pub faults: Arc<Mutex<Vec<crate::chaos::FaultRecord>>>,
}

impl Ctx {
    fn channel(&self, index: u32) -> Channel {
        self.channels[index as usize % self.channels.len()].clone()
    }

    /// Records an unexpected failure.
    pub fn error(&self, user: u32, what: String) {
        Stats::bump(&self.stats.stages.errors);
        tracing::warn!(user, error = %what, "user failed");
        if let Ok(mut samples) = self.records.error_samples.lock()
            && samples.len() < 20
        {
            samples.push(format!("user-{user}: {what}"));
        }
    }
}

/// The `google.rpc.ErrorInfo` reason of a refusal, or "".
pub fn reason(status: &Status) -> String {
    use tonic_types::StatusExt;
    status.get_error_details().error_info().map(|info| info.reason.clone()).unwrap_or_default()
}

fn user_id(index: u32) -> String {
    format!("user-{index}")
}

/// Times one unary call and records its code.
async fn timed<T>(
    stats: &Stats,
    rpc: Rpc,
    call: impl Future<Output = Result<tonic::Response<T>, Status>>,
) -> Result<T, Status> {
    let started = Instant::now();
    let result = call.await;
    stats.record(rpc, started.elapsed(), result.as_ref().map_or_else(Status::code, |_| Code::Ok));
    result.map(tonic::Response::into_inner)
}

fn overloaded(status: &Status) -> bool {
    matches!(status.code(), Code::ResourceExhausted | Code::Unavailable)
}

async fn backoff(attempt: usize) {
    let ms = (50u64 << attempt.min(5)) + rand::rng().random_range(0..50);
    tokio::time::sleep(Duration::from_millis(ms.min(2_000))).await;
}

/// Join, retried while the service sheds load.
pub async fn join(ctx: &Ctx, index: u32) -> Result<Joined, Status> {
    let mut admission = AdmissionServiceClient::new(ctx.channel(index));
    let request = pb::JoinRequest { event_id: ctx.event.event_id.clone(), user_id: user_id(index) };
    let mut attempt = 0;
    loop {
        match timed(&ctx.stats, Rpc::Join, admission.join(request.clone())).await {
            Ok(status) => {
                let after_open = status.state() != pb::QueueState::PreQueue;
                return Ok(Joined { index, ticket: status.ticket, after_open });
            }
            Err(status) if overloaded(&status) && attempt < OVERLOAD_RETRIES => {
                attempt += 1;
                backoff(attempt).await;
            }
            Err(status) => return Err(status),
        }
    }
}

/// A user's standing once the pre-queue is sealed, as a waiting page learns it when the sale
/// opens: asks again while admission has not sealed the pre-queue yet (state still
/// `PRE_QUEUE`) or sheds load.
pub async fn status_after_opening(ctx: &Ctx, index: u32) -> Result<pb::QueueStatus, Status> {
    let mut admission = AdmissionServiceClient::new(ctx.channel(index));
    let request = pb::GetQueueStatusRequest { event_id: ctx.event.event_id.clone(), user_id: user_id(index) };
    let mut attempt = 0;
    loop {
        match timed(&ctx.stats, Rpc::GetQueueStatus, admission.get_queue_status(request.clone())).await {
            Ok(status) if status.state() == pb::QueueState::PreQueue => tokio::time::sleep(SEAL_POLL).await,
            Ok(status) => return Ok(status),
            Err(status) if overloaded(&status) && attempt < OVERLOAD_RETRIES => {
                attempt += 1;
                backoff(attempt).await;
            }
            Err(status) => return Err(status),
        }
    }
}

/// The rest of the visit of a user who joined.
pub async fn session(ctx: &Ctx, joined: Joined) -> anyhow::Result<()> {
    let index = joined.index;
    let plan = Plan::draw(&ctx.config, index);
    let user = user_id(index);
    let event_id = ctx.event.event_id.clone();
    let channel = ctx.channel(index);
    let stats = &ctx.stats;
    let mut admission = AdmissionServiceClient::new(channel.clone());

    // Wait in line.
    Stats::bump(&stats.stages.watching);
    let pass = watch_until_admitted(ctx, &mut admission, &user).await?;
    Stats::bump(&stats.stages.admitted);
    if let Ok(mut admissions) = ctx.records.admissions.lock() {
        admissions.push(Admission {
            ticket: joined.ticket,
            pass_id: pass.pass_id.clone(),
            after_open: joined.after_open,
        });
    }

    // Hold.
    let Some(hold) = hold(ctx, &channel, &pass, &user, index, plan).await? else {
        leave(ctx, &mut admission, &user).await;
        return Ok(());
    };
    Stats::bump(&stats.stages.held);
    stats.stages.seats_held.fetch_add(u64::from(hold.quantity), std::sync::atomic::Ordering::Relaxed);

    let mut seat_lock = SeatLockServiceClient::new(channel.clone());
    match plan.behaviour {
        Behaviour::Release => {
            timed(
                stats,
                Rpc::ReleaseHold,
                seat_lock.release_hold(pb::ReleaseHoldRequest {
                    event_id: event_id.clone(),
                    hold_id: hold.hold_id.clone(),
                    user_id: user.clone(),
                }),
            )
            .await?;
            Stats::bump(&stats.stages.released);
            abandon(ctx, &user, &hold, true);
            leave(ctx, &mut admission, &user).await;
            return Ok(());
        }
        Behaviour::LetExpire => {
            Stats::bump(&stats.stages.let_expire);
            abandon(ctx, &user, &hold, false);
            return Ok(());
        }
        _ => {}
    }

    // Subscribe before paying so the confirmation cannot slip past.
    let mut notifications = timed(
        stats,
        Rpc::Subscribe,
        NotifierServiceClient::new(channel.clone())
            .subscribe(pb::SubscribeRequest { user_id: user.clone(), after_id: 0 }),
    )
    .await?;
    let key = |n: u32| format!("sim-{}-{index}-{n}", &event_id[..8]);
    let request = |key: String, method: String| pb::PayRequest {
        idempotency_key: key,
        event_id: event_id.clone(),
        hold_id: hold.hold_id.clone(),
        user_id: user.clone(),
        payment_method: method,
    };
    let answer = match plan.behaviour {
        Behaviour::Declined => {
            let first = pay(ctx, &channel, request(key(1), "pm_card_declined".into())).await?;
            if status_of(&first) == pb::PaymentStatus::Declined {
                Stats::bump(&stats.stages.declined);
            } else {
                anyhow::bail!("a declined card answered {:?}", status_of(&first));
            }
            pay(ctx, &channel, request(key(2), "pm_card_ok".into())).await?
        }
        Behaviour::Slow => {
            pay(ctx, &channel, request(key(1), format!("pm_card_slow_{}", ctx.config.slow_pay_ms))).await?
        }
        Behaviour::Replay => {
            let first_request = request(key(1), "pm_card_ok".into());
            let (a, b) =
                tokio::join!(pay(ctx, &channel, first_request.clone()), pay(ctx, &channel, first_request));
            let (a, b) = (a?, b?);
            Stats::bump(&stats.stages.replays);
            let id =
                |r: &pb::PayResponse| r.payment.as_ref().map(|p| p.payment_id.clone()).unwrap_or_default();
            let booking = |r: &pb::PayResponse| r.booking.as_ref().map(|b| b.booking_id.clone());
            if (id(&a) != id(&b) || booking(&a) != booking(&b) || status_of(&a) != status_of(&b))
                && let Ok(mut problems) = ctx.records.replay_problems.lock()
            {
                problems.push(format!("{user}: payment {} vs {}", id(&a), id(&b)));
            }
            a
        }
        _ => pay(ctx, &channel, request(key(1), "pm_card_ok".into())).await?,
    };
    match status_of(&answer) {
        pb::PaymentStatus::Confirmed => {
            Stats::bump(&stats.stages.paid);
            stats.stages.seats_paid.fetch_add(u64::from(hold.quantity), std::sync::atomic::Ordering::Relaxed);
        }
        pb::PaymentStatus::Refunded => {
            Stats::bump(&stats.stages.refunded);
            return Ok(());
        }
        other => anyhow::bail!("payment ended {other:?}"),
    }
    let confirmed = tokio::time::timeout(NOTIFY_PATIENCE, async {
        while let Some(notification) = notifications.next().await {
            if notification?.kind() == pb::NotificationKind::BookingConfirmed {
                return Ok::<bool, Status>(true);
            }
        }
        Ok(false)
    })
    .await;
    match confirmed {
        Ok(Ok(true)) => {
            Stats::bump(&stats.stages.notified);
            Ok(())
        }
        Ok(Ok(false)) => anyhow::bail!("the notification stream ended before the confirmation"),
        Ok(Err(status)) => Err(status.into()),
        Err(_) => anyhow::bail!("no confirmation within {NOTIFY_PATIENCE:?}"),
    }
}

fn status_of(answer: &pb::PayResponse) -> pb::PaymentStatus {
    answer.payment.as_ref().map(|p| p.status()).unwrap_or_default()
}

fn abandon(ctx: &Ctx, user: &str, hold: &pb::Hold, released: bool) {
    if let Ok(mut abandoned) = ctx.records.abandoned.lock() {
        abandoned.push(Abandoned { user_id: user.to_owned(), hold_id: hold.hold_id.clone(), released });
    }
}

async fn leave(ctx: &Ctx, admission: &mut AdmissionServiceClient<Channel>, user: &str) {
    let request = pb::LeaveRequest { event_id: ctx.event.event_id.clone(), user_id: user.to_owned() };
    let _ = timed(&ctx.stats, Rpc::Leave, admission.leave(request)).await;
}

/// WatchQueue until the pass arrives; reopens the stream (and asks GetQueueStatus) if it fails.
async fn watch_until_admitted(
    ctx: &Ctx,
    admission: &mut AdmissionServiceClient<Channel>,
    user: &str,
) -> anyhow::Result<pb::Pass> {
    let event_id = ctx.event.event_id.clone();
    let mut last_error = None;
    for attempt in 0..WATCH_ATTEMPTS {
        if attempt > 0 {
            backoff(attempt).await;
            let status = timed(
                &ctx.stats,
                Rpc::GetQueueStatus,
                admission.get_queue_status(pb::GetQueueStatusRequest {
                    event_id: event_id.clone(),
                    user_id: user.to_owned(),
                }),
            )
            .await;
            if let Ok(status) = &status
                && let Some(pass) = &status.pass
            {
                return Ok(pass.clone());
            }
        }
        let opened = timed(
            &ctx.stats,
            Rpc::WatchQueue,
            admission
                .watch_queue(pb::WatchQueueRequest { event_id: event_id.clone(), user_id: user.to_owned() }),
        )
        .await;
        let mut updates = match opened {
            Ok(updates) => updates,
            Err(status) => {
                last_error = Some(status);
                continue;
            }
        };
        while let Some(status) = updates.next().await {
            match status {
                Ok(status) => {
                    ctx.stats
                        .stages
                        .queue_length
                        .store(status.queue_length, std::sync::atomic::Ordering::Relaxed);
                    if let Some(pass) = status.pass {
                        return Ok(pass);
                    }
                }
                Err(status) => {
                    last_error = Some(status);
                    break;
                }
            }
        }
    }
    anyhow::bail!("no pass after {WATCH_ATTEMPTS} WatchQueue streams (last error: {last_error:?})")
}

/// Holds seats as the plan says; `None` when the user found nothing (sold out, limit).
async fn hold(
    ctx: &Ctx,
    channel: &Channel,
    pass: &pb::Pass,
    user: &str,
    index: u32,
    plan: Plan,
) -> anyhow::Result<Option<pb::Hold>> {
    let stats = &ctx.stats;
    let event_id = ctx.event.event_id.clone();
    let mut inventory = InventoryServiceClient::new(channel.clone());
    let mut seat_lock = SeatLockServiceClient::new(channel.clone());
    let mut rng = StdRng::seed_from_u64(ctx.config.seed ^ u64::from(index) ^ 0xA5A5);
    let mut overload = 0;
    for attempt in 0..HOLD_ATTEMPTS {
        let availability = match timed(
            stats,
            Rpc::GetAvailability,
            inventory.get_availability(pb::GetAvailabilityRequest { event_id: event_id.clone() }),
        )
        .await
        {
            Ok(a) => a,
            Err(status) if overloaded(&status) && overload < OVERLOAD_RETRIES => {
                overload += 1;
                backoff(overload).await;
                continue;
            }
            Err(status) => return Err(status.into()),
        };
        let open: Vec<&pb::ZoneAvailability> =
            availability.zones.iter().filter(|z| z.free >= plan.quantity).collect();
        if open.is_empty() {
            Stats::bump(&stats.stages.sold_out);
            return Ok(None);
        }
        let seated = ctx.event.zones.iter().find(|z| z.kind() == pb::ZoneKind::Seated);
        let chosen = if plan.contention
            && attempt < CONTENTION_ATTEMPTS
            && let Some(zone) = seated
        {
            popular_seats(ctx, &mut inventory, zone, plan.quantity, &mut rng).await?
        } else {
            None
        };
        if plan.contention && chosen.is_none() && attempt < CONTENTION_ATTEMPTS {
            Stats::bump(&stats.stages.fell_back_to_best);
        }
        let result = if let Some(seat_ids) = chosen {
            timed(
                stats,
                Rpc::HoldSeats,
                seat_lock.hold_seats(pb::HoldSeatsRequest {
                    pass_token: pass.token.clone(),
                    event_id: event_id.clone(),
                    user_id: user.to_owned(),
                    seat_ids,
                }),
            )
            .await
        } else {
            let zone = open[rng.random_range(0..open.len())];
            timed(
                stats,
                Rpc::HoldBestAvailable,
                seat_lock.hold_best_available(pb::HoldBestAvailableRequest {
                    pass_token: pass.token.clone(),
                    event_id: event_id.clone(),
                    user_id: user.to_owned(),
                    zone_id: zone.zone_id.clone(),
                    quantity: plan.quantity,
                    allow_split: true,
                }),
            )
            .await
        };
        match result {
            Ok(hold) => return Ok(Some(hold)),
            Err(status) => match reason(&status).as_str() {
                "SEAT_TAKEN" => Stats::bump(&stats.stages.seat_taken),
                "ZONE_SOLD_OUT" | "NO_ADJACENT_SEATS" => {}
                "TICKET_LIMIT_EXCEEDED" => {
                    Stats::bump(&stats.stages.limit_refused);
                    return Ok(None);
                }
                _ if overloaded(&status) && overload < OVERLOAD_RETRIES => {
                    overload += 1;
                    backoff(overload).await;
                }
                _ => return Err(status.into()),
            },
        }
    }
    Stats::bump(&stats.stages.sold_out);
    Ok(None)
}

/// `quantity` adjacent free seats in the popular front rows (or anywhere in the zone when
/// those are gone), from the seat map; `None` when the zone has no such block.
async fn popular_seats(
    ctx: &Ctx,
    inventory: &mut InventoryServiceClient<Channel>,
    zone: &pb::Zone,
    quantity: u32,
    rng: &mut StdRng,
) -> anyhow::Result<Option<Vec<String>>> {
    let map = timed(
        &ctx.stats,
        Rpc::GetSeatMap,
        inventory.get_seat_map(pb::GetSeatMapRequest {
            event_id: ctx.event.event_id.clone(),
            zone_id: zone.zone_id.clone(),
        }),
    )
    .await?;
    let Some(zone_map) = map.zones.iter().find(|z| z.zone_id == zone.zone_id) else { return Ok(None) };
    let per_row = zone_map.seats_per_row as usize;
    let states = zone_map.decode_seat_states()?;
    let mut blocks = Vec::new();
    'rows: for (row, label) in zone_map.row_labels.iter().enumerate() {
        let mut run = 0usize;
        for n in 0..per_row {
            if states.get(row * per_row + n) == Some(&pb::SeatState::Free) {
                run += 1;
                if run >= quantity as usize {
                    let first = n + 1 - quantity as usize;
                    blocks.push(
                        (first..=n)
                            .map(|k| format!("{}-{label}-{}", zone.zone_id, k + 1))
                            .collect::<Vec<_>>(),
                    );
                    run = 0;
                    if blocks.len() >= POPULAR_CHOICES {
                        break 'rows;
                    }
                }
            } else {
                run = 0;
            }
        }
        if row + 1 >= POPULAR_ROWS && !blocks.is_empty() {
            break;
        }
    }
    if blocks.is_empty() {
        return Ok(None);
    }
    let pick = rng.random_range(0..blocks.len());
    Ok(Some(blocks.swap_remove(pick)))
}

/// Pay, retried with the same key while the first attempt is in flight or timed out, until
/// the final answer.
async fn pay(ctx: &Ctx, channel: &Channel, request: pb::PayRequest) -> anyhow::Result<pb::PayResponse> {
    let mut payment = PaymentServiceClient::new(channel.clone());
    let deadline = Instant::now() + PAY_PATIENCE;
    let mut attempt = 0;
    loop {
        match timed(&ctx.stats, Rpc::Pay, payment.pay(request.clone())).await {
            Ok(answer) => return Ok(answer),
            Err(status)
                if Instant::now() < deadline
                    && matches!(
                        status.code(),
                        Code::Aborted
                            | Code::DeadlineExceeded
                            | Code::Cancelled
                            | Code::Unavailable
                            | Code::ResourceExhausted
                    ) =>
            {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(if attempt < 3 { 200 } else { 1_000 })).await;
            }
            Err(status) => {
                anyhow::bail!(
                    "Pay {} refused: {} {}",
                    request.idempotency_key,
                    status.code(),
                    status.message()
                )
            }
        }
    }
}
