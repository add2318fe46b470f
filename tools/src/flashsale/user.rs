//! One simulated user's visit: Join, WatchQueue until admitted, GetAvailability, a hold
//! (chosen seats from the seat map, or best available), then what the user's behaviour says:
//! pay, pay with a declined card and then a good one, pay slowly, replay the payment, release
//! the hold, or walk away from it.

use std::{
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use ticketing_proto::v1::{
    self as pb, admission_service_client::AdmissionServiceClient,
    seat_lock_service_client::SeatLockServiceClient,
};
use tokio_stream::StreamExt;
use tonic::{Code, Status, transport::Channel};

use super::{
    ctx::{Abandoned, Admission, Ctx, Joined, user_id},
    hold::{Asker, hold},
    pay::{self, Paid},
    plan::{Behaviour, Plan},
    retry::{PATIENCE, Retry, backoff, brief, call},
    stats::{Rpc, Stats},
};
use crate::identity::Bearer;

/// How often a pre-queue user asks for its place until admission has sealed the pre-queue
/// (within one controller tick of the opening).
const SEAL_POLL: Duration = Duration::from_millis(200);
/// How often a session waiting in line checks whether a user without a session is ahead of it
/// in admission's order (see [`wait_in_line`]).
const GIVE_WAY_CHECK: Duration = Duration::from_secs(1);

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
    let Some(hold) =
        hold(Asker { ctx, channel: &channel, pass: &pass, user: &user, token: &token, index, plan }).await?
    else {
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
