//! One simulated user's visit: Join, WatchQueue until admitted, GetAvailability, a hold
//! (chosen seats from the seat map, or best available), then what the user's behaviour says:
//! pay, pay with a declined card and then a good one, pay slowly, replay the payment, release
//! the hold, or walk away from it.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use rand::{Rng, SeedableRng, rngs::StdRng};
use ticketing_proto::v1::{
    self as pb, admission_service_client::AdmissionServiceClient,
    inventory_service_client::InventoryServiceClient, seat_lock_service_client::SeatLockServiceClient,
};
use tokio_stream::StreamExt;
use tonic::{Code, Status, transport::Channel};

use super::{
    super::identity::Bearer,
    SimConfig,
    pay::{self, Paid},
    retry::{PATIENCE, Retry, backoff, brief, call},
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
/// After a refusal (seat taken, no adjacent seats, zone sold out) or a hold that timed out, a
/// user looks at the seat map again and takes a moment before asking again: a pause drawn
/// from this range, not an immediate retry storm.
const RETHINK_PAUSE_MS: std::ops::Range<u64> = 250..750;
/// How often a pre-queue user asks for its place until admission has sealed the pre-queue
/// (within one controller tick of the opening).
const SEAL_POLL: Duration = Duration::from_millis(200);
/// How often a session waiting in line checks whether a user without a session is ahead of it
/// in admission's order (see [`wait_in_line`]).
const GIVE_WAY_CHECK: Duration = Duration::from_secs(1);

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
    /// Joined after the sale opened (state WAITING at Join), so FIFO applies; not for a Join
    /// answered with a pass issued before it (kept across a Redis loss).
    pub after_open: bool,
    /// When the Join that gave `ticket` started, and when the pass arrived, in seconds since
    /// the opening: an admission whose wait spans a Redis restart is not comparable.
    pub joined_at: f64,
    pub admitted_at: f64,
}

/// A hold the user walked away from or released, for the I3 check.
#[derive(Debug, Clone)]
pub struct Abandoned {
    pub user_id: String,
    pub hold_id: String,
    pub released: bool,
    /// When the user asked for the hold, in seconds since the opening: a Redis restart that
    /// ended after it may have taken the hold.
    pub held_at: f64,
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
    /// When the Join started, in seconds since the opening.
    pub joined_at: f64,
    /// The pass the Join answered with, when the user was already admitted.
    pub pass: Option<pb::Pass>,
    /// The user's token, minted once at its first Join and sent with each of its calls.
    pub token: Bearer,
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
    /// The latest `joined_at` of a user whose place admission no longer knew (its queue was
    /// lost): the dispatcher then has every waiting user join again.
    pub queue_lost: tokio::sync::watch::Sender<Option<f64>>,
    /// The users whose sessions wait in line (index → ticket), first to join again.
    pub waiting: Mutex<HashMap<u32, u64>>,
    /// The lowest ticket of a user without a session, once admission serves in ticket order
    /// (after it lost its queue); `u64::MAX` otherwise. The dispatcher keeps it.
    pub line_head: AtomicU64,
    /// Where a session waiting behind [`Ctx::line_head`] sends its user back to the line.
    pub back_to_line: tokio::sync::mpsc::UnboundedSender<Joined>,
    /// Users sent to [`Ctx::back_to_line`] and not yet received by the dispatcher.
    pub going_back: AtomicUsize,
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

/// A new user's token: minted once, at its arrival.
pub fn token(ctx: &Ctx, index: u32) -> Bearer {
    ctx.config.identity.mint(&user_id(index))
}

/// Join (again, after the place was lost) with the user's `token`, retried while admission
/// cannot answer.
pub async fn join(ctx: &Ctx, index: u32, token: Bearer) -> Result<Joined, Status> {
    let admission = AdmissionServiceClient::new(ctx.channel(index));
    let request = pb::JoinRequest { event_id: ctx.event.event_id.clone(), user_id: user_id(index) };
    let joined_at = ctx.stats.since_open();
    let status = call(&ctx.stats, Rpc::Join, Retry::Idempotent, || {
        let (mut admission, request) = (admission.clone(), token.request(request.clone()));
        async move { admission.join(request).await }
    })
    .await?;
    // Only a Join that queued the user is compared for FIFO: one answered with a pass the user
    // already held (admission restores live passes after a Redis loss) queued nobody.
    let after_open = status.state() == pb::QueueState::Waiting;
    Ok(Joined { index, ticket: status.ticket, after_open, joined_at, pass: status.pass, token })
}

/// A user's standing once the pre-queue is sealed, as a waiting page learns it when the sale
/// opens: asks again while admission has not sealed the pre-queue yet (state still
/// `PRE_QUEUE`) or cannot answer.
pub async fn status_after_opening(ctx: &Ctx, joined: &Joined) -> Result<pb::QueueStatus, Status> {
    let admission = AdmissionServiceClient::new(ctx.channel(joined.index));
    let request =
        pb::GetQueueStatusRequest { event_id: ctx.event.event_id.clone(), user_id: user_id(joined.index) };
    loop {
        let status = call(&ctx.stats, Rpc::GetQueueStatus, Retry::Idempotent, || {
            let (mut admission, request) = (admission.clone(), joined.token.request(request.clone()));
            async move { admission.get_queue_status(request).await }
        })
        .await?;
        if status.state() != pb::QueueState::PreQueue {
            return Ok(status);
        }
        tokio::time::sleep(SEAL_POLL).await;
    }
}

/// How a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Visit {
    /// The user's visit is over.
    Ended,
    /// The user went back to the line without a pass: admission serves another user first,
    /// who gets this session's slot (see [`wait_in_line`]).
    BackInLine,
}

/// The rest of the visit of a user who joined: waits in line, then shops.
pub async fn session(ctx: &Ctx, mut joined: Joined) -> anyhow::Result<Visit> {
    let stats = &ctx.stats;
    Stats::bump(&stats.stages.watching);
    let (pass, joined) = match joined.pass.take() {
        Some(pass) => (pass, joined),
        None => {
            let admission = AdmissionServiceClient::new(ctx.channel(joined.index));
            match watch_until_admitted(ctx, &admission, joined).await? {
                Waited::Admitted(admitted) => *admitted,
                Waited::GaveWay => {
                    // Not watching any more; it counts again when its next session starts.
                    stats.stages.watching.fetch_sub(1, Ordering::Relaxed);
                    return Ok(Visit::BackInLine);
                }
            }
        }
    };
    shop(ctx, pass, joined).await?;
    Ok(Visit::Ended)
}

/// The visit of an admitted user: holds, then pays, releases or walks away.
async fn shop(ctx: &Ctx, pass: pb::Pass, joined: Joined) -> anyhow::Result<()> {
    let index = joined.index;
    let plan = Plan::draw(&ctx.config, index);
    let user = user_id(index);
    let token = joined.token.clone();
    let event_id = ctx.event.event_id.clone();
    let channel = ctx.channel(index);
    let stats = &ctx.stats;
    let admission = AdmissionServiceClient::new(channel.clone());
    Stats::bump(&stats.stages.admitted);
    if let Ok(mut admissions) = ctx.records.admissions.lock() {
        admissions.push(Admission {
            ticket: joined.ticket,
            pass_id: pass.pass_id.clone(),
            after_open: joined.after_open,
            joined_at: joined.joined_at,
            admitted_at: stats.since_open(),
        });
    }

    // Hold.
    let held_at = stats.since_open();
    let Some(hold) = hold(ctx, &channel, &pass, &user, &token, index, plan).await? else {
        leave(ctx, &admission, &user, &token).await;
        return Ok(());
    };
    Stats::bump(&stats.stages.held);
    stats.stages.seats_held.fetch_add(u64::from(hold.quantity), Ordering::Relaxed);

    match plan.behaviour {
        Behaviour::Release => {
            let seat_lock = SeatLockServiceClient::new(channel.clone());
            let request = pb::ReleaseHoldRequest {
                event_id: event_id.clone(),
                hold_id: hold.hold_id.clone(),
                user_id: user.clone(),
            };
            let released = call(stats, Rpc::ReleaseHold, Retry::Idempotent, || {
                let (mut seat_lock, request) = (seat_lock.clone(), token.request(request.clone()));
                async move { seat_lock.release_hold(request).await }
            })
            .await;
            if let Err(status) = released {
                return lost_hold(ctx, &status);
            }
            Stats::bump(&stats.stages.released);
            abandon(ctx, &user, &hold, held_at, true);
            leave(ctx, &admission, &user, &token).await;
            return Ok(());
        }
        Behaviour::LetExpire => {
            Stats::bump(&stats.stages.let_expire);
            abandon(ctx, &user, &hold, held_at, false);
            return Ok(());
        }
        _ => {}
    }

    // Subscribe before paying so the confirmation cannot slip past.
    let mut confirmation = pay::Confirmation::subscribe(ctx, &channel, &user, &token).await?;
    let key = |n: u32| format!("sim-{}-{index}-{n}", &event_id[..8]);
    let request = |key: String, method: String| pb::PayRequest {
        idempotency_key: key,
        event_id: event_id.clone(),
        hold_id: hold.hold_id.clone(),
        user_id: user.clone(),
        payment_method: method,
    };
    let paid = match plan.behaviour {
        Behaviour::Declined => {
            match pay::pay(ctx, &channel, &token, request(key(1), "pm_card_declined".into())).await? {
                Paid::Final(first) if pay::status_of(&first) == pb::PaymentStatus::Declined => {
                    Stats::bump(&stats.stages.declined);
                    pay::pay(ctx, &channel, &token, request(key(2), "pm_card_ok".into())).await?
                }
                Paid::Final(first) => anyhow::bail!("a declined card answered {:?}", pay::status_of(&first)),
                lost => lost,
            }
        }
        Behaviour::Slow => {
            let method = format!("pm_card_slow_{}", ctx.config.slow_pay_ms);
            pay::pay(ctx, &channel, &token, request(key(1), method)).await?
        }
        Behaviour::Replay => {
            let first_request = request(key(1), "pm_card_ok".into());
            let (a, b) = tokio::join!(
                pay::pay(ctx, &channel, &token, first_request.clone()),
                pay::pay(ctx, &channel, &token, first_request)
            );
            let (a, b) = (a?, b?);
            Stats::bump(&stats.stages.replays);
            if a.summary() != b.summary()
                && let Ok(mut problems) = ctx.records.replay_problems.lock()
            {
                problems.push(format!("{user}: {:?} vs {:?}", a.summary(), b.summary()));
            }
            a
        }
        _ => pay::pay(ctx, &channel, &token, request(key(1), "pm_card_ok".into())).await?,
    };
    // A crash of payment never declines a payment (recovery settles it from the provider):
    // a good card answered DECLINED falls to the error below, in a chaos run too.
    let answer = match paid {
        Paid::Final(answer) => *answer,
        Paid::HoldLost(status) => return lost_hold(ctx, &status),
    };
    match pay::status_of(&answer) {
        pb::PaymentStatus::Confirmed => {
            Stats::bump(&stats.stages.paid);
            stats.stages.seats_paid.fetch_add(u64::from(hold.quantity), Ordering::Relaxed);
        }
        pb::PaymentStatus::Refunded => {
            Stats::bump(&stats.stages.refunded);
            return Ok(());
        }
        other => anyhow::bail!("payment ended {other:?}"),
    }
    confirmation.wait(ctx, pb::NotificationKind::BookingConfirmed).await?;
    Stats::bump(&stats.stages.notified);
    Ok(())
}

/// A hold that vanished under the user (seat-lock answered NOT_FOUND or HOLD_EXPIRED before
/// any money moved): expected in a chaos run, where Redis loses every hold, and then counted;
/// an error otherwise.
fn lost_hold(ctx: &Ctx, status: &Status) -> anyhow::Result<()> {
    if ctx.config.chaos.is_some() && pay::hold_lost(status) {
        Stats::bump(&ctx.stats.stages.holds_lost);
        return Ok(());
    }
    anyhow::bail!("the hold was refused: {}", brief(status))
}

fn abandon(ctx: &Ctx, user: &str, hold: &pb::Hold, held_at: f64, released: bool) {
    if let Ok(mut abandoned) = ctx.records.abandoned.lock() {
        abandoned.push(Abandoned {
            user_id: user.to_owned(),
            hold_id: hold.hold_id.clone(),
            released,
            held_at,
        });
    }
}

async fn leave(ctx: &Ctx, admission: &AdmissionServiceClient<Channel>, user: &str, token: &Bearer) {
    let request = pb::LeaveRequest { event_id: ctx.event.event_id.clone(), user_id: user.to_owned() };
    let _ = call(&ctx.stats, Rpc::Leave, Retry::Idempotent, || {
        let (mut admission, request) = (admission.clone(), token.request(request.clone()));
        async move { admission.leave(request).await }
    })
    .await;
}

/// Whether admission's NOT_FOUND for `joined` says its place was lost with the queue: the
/// queue exists only since after that Join (`queue_started_at_ms`), as after a Redis loss.
/// Otherwise the user was admitted meanwhile and let the pass expire (a session that started
/// late), which concerns this user alone.
pub fn place_was_lost(ctx: &Ctx, joined: &Joined, status: &Status) -> bool {
    use tonic_types::StatusExt;
    let started_ms = status
        .get_error_details()
        .error_info()
        .and_then(|info| info.metadata.get("queue_started_at_ms").and_then(|ms| ms.parse::<i64>().ok()));
    let Some(started_ms) = started_ms else { return true };
    let now_ms = chrono::Utc::now().timestamp_millis();
    let joined_ms = now_ms - ((ctx.stats.since_open() - joined.joined_at) * 1000.0) as i64;
    started_ms > joined_ms
}

/// Sends `joined` back to the dispatcher's line when a user of the line comes before it in
/// admission's order (see [`wait_in_line`]); false when it stays.
fn go_back_to_line(ctx: &Ctx, joined: &Joined) -> bool {
    if !joined.after_open || joined.ticket <= ctx.line_head.load(Ordering::Relaxed) {
        return false;
    }
    ctx.going_back.fetch_add(1, Ordering::Relaxed);
    if ctx.back_to_line.send(joined.clone()).is_err() {
        // The dispatcher has stopped: keep waiting here.
        ctx.going_back.fetch_sub(1, Ordering::Relaxed);
        return false;
    }
    Stats::bump(&ctx.stats.stages.gave_way);
    true
}

/// Tells the dispatcher that admission no longer knew `joined`'s place: its queue was lost
/// after that Join.
pub fn report_lost_place(ctx: &Ctx, joined: &Joined) {
    let at = joined.joined_at;
    ctx.queue_lost.send_modify(|latest| *latest = Some(latest.map_or(at, |l| l.max(at))));
}

/// Takes the ticket admission reports for the user when it differs from the one it joined
/// with: the dispatcher's mass re-join gave it a new one.
fn renumbered(ctx: &Ctx, joined: &mut Joined, status: &pb::QueueStatus) {
    if status.ticket != 0 && status.ticket != joined.ticket {
        joined.ticket = status.ticket;
        joined.after_open = status.state() != pb::QueueState::PreQueue;
        waiting(ctx, joined);
    }
}

/// Files `joined` among the users whose sessions wait in line.
fn waiting(ctx: &Ctx, joined: &Joined) {
    if let Ok(mut waiting) = ctx.waiting.lock() {
        waiting.insert(joined.index, joined.ticket);
    }
}

/// How waiting in line ended.
enum Waited {
    /// With a pass; the [`Joined`] of the user's last Join.
    Admitted(Box<(pb::Pass, Joined)>),
    /// The user went back to the dispatcher's line (see [`wait_in_line`]).
    GaveWay,
}

/// WatchQueue until the pass arrives. When the stream breaks it asks GetQueueStatus and opens
/// another; when admission no longer knows the user (NOT_FOUND: its Redis lost the queue) the
/// user joins again, as a waiting page would, and returns the [`Joined`] of that last Join.
/// Gives up after failing for [`PATIENCE`] in a row.
async fn watch_until_admitted(
    ctx: &Ctx,
    admission: &AdmissionServiceClient<Channel>,
    joined: Joined,
) -> anyhow::Result<Waited> {
    waiting(ctx, &joined);
    let index = joined.index;
    let admitted = wait_in_line(ctx, admission, joined).await;
    if let Ok(mut waiting) = ctx.waiting.lock() {
        waiting.remove(&index);
    }
    admitted
}

/// [`watch_until_admitted`]'s loop.
///
/// Sessions are few (`max_in_flight`) and go to users in the order admission will admit them;
/// a pass that admission gives to a user without a session goes uncollected until its check-in
/// window ends, and admission then serves no one who is really there. After admission lost its
/// queue every waiting page joins again at once, so sessions and the line interleave in the new
/// order: a session that finds a user of the line ahead of it ([`Ctx::line_head`]) sends its
/// user back to the line and ends, and that user gets the slot.
async fn wait_in_line(
    ctx: &Ctx,
    admission: &AdmissionServiceClient<Channel>,
    mut joined: Joined,
) -> anyhow::Result<Waited> {
    let user = user_id(joined.index);
    let event_id = ctx.event.event_id.clone();
    let mut failing_since: Option<Instant> = None;
    let mut attempt = 0;
    let mut give_way = tokio::time::interval(GIVE_WAY_CHECK);
    give_way.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if attempt > 0 {
            backoff(attempt).await;
            let asked = call(&ctx.stats, Rpc::GetQueueStatus, Retry::Idempotent, || {
                let mut admission = admission.clone();
                let request = pb::GetQueueStatusRequest { event_id: event_id.clone(), user_id: user.clone() };
                let request = joined.token.request(request);
                async move { admission.get_queue_status(request).await }
            })
            .await;
            match asked {
                Ok(status) if status.pass.is_some() => {
                    return Ok(Waited::Admitted(Box::new((status.pass.unwrap_or_default(), joined))));
                }
                Ok(status) => renumbered(ctx, &mut joined, &status),
                Err(status) if status.code() == Code::NotFound => {
                    if place_was_lost(ctx, &joined, &status) {
                        report_lost_place(ctx, &joined);
                    }
                    joined = join(ctx, joined.index, joined.token.clone()).await?;
                    waiting(ctx, &joined);
                    Stats::bump(&ctx.stats.stages.rejoined);
                }
                _ => {}
            }
        }
        attempt += 1;
        let opened = call(&ctx.stats, Rpc::WatchQueue, Retry::Idempotent, || {
            let mut admission = admission.clone();
            let request = pb::WatchQueueRequest { event_id: event_id.clone(), user_id: user.clone() };
            let request = joined.token.request(request);
            async move { admission.watch_queue(request).await }
        })
        .await;
        let last_error = match opened {
            Ok(mut updates) => loop {
                let update = tokio::select! {
                    update = updates.next() => update,
                    _ = give_way.tick() => {
                        if go_back_to_line(ctx, &joined) {
                            return Ok(Waited::GaveWay);
                        }
                        continue;
                    }
                };
                match update {
                    Some(Ok(status)) => {
                        failing_since = None;
                        attempt = 1;
                        renumbered(ctx, &mut joined, &status);
                        ctx.stats.stages.queue_length.store(status.queue_length, Ordering::Relaxed);
                        if let Some(pass) = status.pass {
                            return Ok(Waited::Admitted(Box::new((pass, joined))));
                        }
                    }
                    Some(Err(status)) => break Some(status),
                    None => break None,
                }
            },
            Err(status) => Some(status),
        };
        let since = *failing_since.get_or_insert_with(Instant::now);
        if since.elapsed() > PATIENCE {
            let last = last_error.as_ref().map_or_else(|| "the stream ended".to_owned(), brief);
            anyhow::bail!("no pass: WatchQueue failing for {PATIENCE:?} (last: {last})");
        }
    }
}

/// Holds seats as the plan says; `None` when the user found nothing (sold out, limit). Counts
/// the user under the number of times it asked again.
async fn hold(
    ctx: &Ctx,
    channel: &Channel,
    pass: &pb::Pass,
    user: &str,
    token: &Bearer,
    index: u32,
    plan: Plan,
) -> anyhow::Result<Option<pb::Hold>> {
    let mut retries = 0;
    let held = try_hold(ctx, channel, pass, user, token, index, plan, &mut retries).await;
    let buckets = &ctx.stats.stages.hold_retries_per_user;
    Stats::bump(&buckets[retries.min(buckets.len() - 1)]);
    held
}

/// [`hold`]'s attempts; `retries` counts the attempts after the first.
#[allow(clippy::too_many_arguments)]
async fn try_hold(
    ctx: &Ctx,
    channel: &Channel,
    pass: &pb::Pass,
    user: &str,
    token: &Bearer,
    index: u32,
    plan: Plan,
    retries: &mut usize,
) -> anyhow::Result<Option<pb::Hold>> {
    let stats = &ctx.stats;
    let event_id = ctx.event.event_id.clone();
    let inventory = InventoryServiceClient::new(channel.clone());
    let seat_lock = SeatLockServiceClient::new(channel.clone());
    let mut rng = StdRng::seed_from_u64(ctx.config.seed ^ u64::from(index) ^ 0xA5A5);
    let mut refused = false;
    for attempt in 0..HOLD_ATTEMPTS {
        if attempt > 0 {
            *retries += 1;
        }
        let availability = call(stats, Rpc::GetAvailability, Retry::Idempotent, || {
            let mut inventory = inventory.clone();
            let request = pb::GetAvailabilityRequest { event_id: event_id.clone() };
            async move { inventory.get_availability(request).await }
        })
        .await?;
        let mut open: Vec<&pb::ZoneAvailability> =
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
            popular_seats(ctx, &inventory, zone, plan.quantity, &mut rng).await?
        } else {
            None
        };
        if plan.contention && chosen.is_none() && attempt < CONTENTION_ATTEMPTS {
            Stats::bump(&stats.stages.fell_back_to_best);
        }
        // Refused a moment ago and about to ask for the best seats: the user picks a zone and
        // looks at its seat map first (a contention user just did, for its seats); a seated
        // zone that shows fewer free seats than it wants is left out.
        if refused && chosen.is_none() {
            let pick = rng.random_range(0..open.len());
            let zone_id = open[pick].zone_id.clone();
            Stats::bump(&stats.stages.map_looks_after_refusal);
            let request = pb::GetSeatMapRequest { event_id: event_id.clone(), zone_id: zone_id.clone() };
            let map = call(stats, Rpc::GetSeatMap, Retry::Idempotent, || {
                let (mut inventory, request) = (inventory.clone(), request.clone());
                async move { inventory.get_seat_map(request).await }
            })
            .await?;
            let enough = map.zones.iter().find(|z| z.zone_id == zone_id).is_none_or(|z| {
                z.seats_per_row == 0
                    || z.decode_seat_states().map_or(true, |states| {
                        states.iter().filter(|s| **s == pb::SeatState::Free).count() >= plan.quantity as usize
                    })
            });
            if enough {
                open = vec![open[pick]];
            } else {
                open.swap_remove(pick);
            }
            if open.is_empty() {
                Stats::bump(&stats.stages.sold_out);
                return Ok(None);
            }
        }
        // A hold is retried only when seat-lock was not reached: a second hold after a lost
        // answer would be a hold of the user's own (it expires).
        let result = if let Some(seat_ids) = chosen {
            let request = pb::HoldSeatsRequest {
                pass_token: pass.token.clone(),
                event_id: event_id.clone(),
                user_id: user.to_owned(),
                seat_ids,
            };
            call(stats, Rpc::HoldSeats, Retry::Unserved, || {
                let (mut seat_lock, request) = (seat_lock.clone(), token.request(request.clone()));
                async move { seat_lock.hold_seats(request).await }
            })
            .await
        } else {
            let zone = open[rng.random_range(0..open.len())];
            let request = pb::HoldBestAvailableRequest {
                pass_token: pass.token.clone(),
                event_id: event_id.clone(),
                user_id: user.to_owned(),
                zone_id: zone.zone_id.clone(),
                quantity: plan.quantity,
                allow_split: true,
            };
            call(stats, Rpc::HoldBestAvailable, Retry::Unserved, || {
                let (mut seat_lock, request) = (seat_lock.clone(), token.request(request.clone()));
                async move { seat_lock.hold_best_available(request).await }
            })
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
                // Seat-lock ran out of time (its request timeout, or the deadline): the hold may
                // have been taken and will expire; the user tries again, as for a taken seat.
                _ if matches!(status.code(), Code::Cancelled | Code::DeadlineExceeded) => {
                    Stats::bump(&stats.stages.hold_timeouts);
                }
                _ => anyhow::bail!("hold refused: {}", brief(&status)),
            },
        }
        refused = true;
        tokio::time::sleep(Duration::from_millis(rng.random_range(RETHINK_PAUSE_MS))).await;
    }
    Stats::bump(&stats.stages.sold_out);
    Ok(None)
}

/// `quantity` adjacent free seats in the popular front rows (or anywhere in the zone when
/// those are gone), from the seat map; `None` when the zone has no such block.
async fn popular_seats(
    ctx: &Ctx,
    inventory: &InventoryServiceClient<Channel>,
    zone: &pb::Zone,
    quantity: u32,
    rng: &mut StdRng,
) -> anyhow::Result<Option<Vec<String>>> {
    let request =
        pb::GetSeatMapRequest { event_id: ctx.event.event_id.clone(), zone_id: zone.zone_id.clone() };
    let map = call(&ctx.stats, Rpc::GetSeatMap, Retry::Idempotent, || {
        let (mut inventory, request) = (inventory.clone(), request.clone());
        async move { inventory.get_seat_map(request).await }
    })
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
