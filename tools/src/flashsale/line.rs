//! The line of joined users waiting for a session, kept in the order admission will admit
//! them: the shuffled pre-queue first, then latecomers first come, first served. Sessions
//! start in that order, or passes would go to users who have no session to collect them.

use std::{collections::VecDeque, sync::Arc};

use tokio::sync::{mpsc, watch};

use futures::StreamExt;

use super::{
    ctx::{Ctx, Joined},
    retry::brief,
    stats::Stats,
    user,
};

/// Joins in flight at once: a Join is short, so this is just enough to keep the admission
/// service busy without opening a task per user at the opening instant.
pub const JOIN_CONCURRENCY: usize = 512;
/// Pre-queue users asked for their place at once after the opening: enough to order 100,000
/// users well within the check-in window, few enough not to crowd out the sale itself.
const ORDER_CONCURRENCY: usize = 256;
/// Users joining again at once after admission lost its queue, as Joins at the opening.
const REJOIN_CONCURRENCY: usize = JOIN_CONCURRENCY;

/// What the arrivals task tells the dispatcher.
pub enum Arrival {
    Joined(Joined),
    /// Every user of the pre-queue window has joined (or failed to).
    PreQueueComplete,
}

/// Joined users without a session yet, in the order admission will admit them.
pub struct Line {
    /// Joined before the opening; their order is only known once admission shuffles them.
    pre_queue: Vec<Joined>,
    /// Pre-queue users in their shuffled order, as [`order_pre_queue`] learns it.
    shuffled: VecDeque<Joined>,
    /// Joined after the opening: first come, first served, behind the whole pre-queue.
    fifo: VecDeque<Joined>,
    /// The first user who joined after the opening: [`order_pre_queue`]'s reference.
    latecomer: watch::Sender<Option<Joined>>,
    /// Admission lost its queue: there is no pre-queue any more, only tickets.
    queue_lost: bool,
}

impl Default for Line {
    fn default() -> Self {
        Self {
            pre_queue: Vec::new(),
            shuffled: VecDeque::new(),
            fifo: VecDeque::new(),
            latecomer: watch::Sender::new(None),
            queue_lost: false,
        }
    }
}

impl Line {
    pub fn arrive(
        &mut self,
        arrival: Arrival,
        ctx: &Arc<Ctx>,
        ordered: &mut Option<mpsc::UnboundedSender<Joined>>,
    ) {
        match arrival {
            Arrival::Joined(joined) if joined.after_open => {
                if self.latecomer.borrow().is_none() {
                    self.latecomer.send_replace(Some(joined.clone()));
                }
                self.latecomer_by_ticket(joined);
            }
            // A pre-queue answer after the pre-queue was handed to the ordering (a retried
            // Join) joins the ordered line at its end rather than waiting for an order forever.
            Arrival::Joined(joined) if ordered.is_none() => self.shuffled.push_back(joined),
            Arrival::Joined(joined) => self.pre_queue.push(joined),
            Arrival::PreQueueComplete => {
                if let Some(ordered) = ordered.take() {
                    let pre_queue = std::mem::take(&mut self.pre_queue);
                    tokio::spawn(order_pre_queue(
                        ctx.clone(),
                        pre_queue,
                        self.latecomer.subscribe(),
                        ordered,
                    ));
                }
            }
        }
    }

    /// The next user to give a session: the shuffled pre-queue first; latecomers only once
    /// the whole pre-queue is ordered (`ordering_open` false), since admission serves them after.
    pub fn next(&mut self, ordering_open: bool) -> Option<Joined> {
        let latecomers_wait = ordering_open && !self.queue_lost;
        self.shuffled.pop_front().or_else(|| if latecomers_wait { None } else { self.fifo.pop_front() })
    }

    /// The next pre-queue user in admission's shuffled order, from the ordering; or one it
    /// had join again after admission lost its queue, a latecomer now.
    pub fn ordered(&mut self, joined: Joined) {
        if joined.after_open {
            self.latecomer_by_ticket(joined);
        } else {
            self.shuffled.push_back(joined);
        }
    }

    /// A user who joined again after admission lost its queue: a latecomer now.
    pub fn rejoined(&mut self, joined: Joined) {
        self.latecomer_by_ticket(joined);
    }

    /// Files a latecomer by ticket, admission's order. Joins answer about in ticket order, so
    /// this is nearly always the end; after admission lost its queue, users joining again and
    /// users arriving interleave.
    fn latecomer_by_ticket(&mut self, joined: Joined) {
        let at = self.fifo.iter().rposition(|other| other.ticket <= joined.ticket).map_or(0, |i| i + 1);
        self.fifo.insert(at, joined);
    }

    /// Every user waiting for a session, in line order, leaving the line empty: admission lost
    /// its queue, and they join again.
    pub fn drain(&mut self) -> Vec<Joined> {
        self.queue_lost = true;
        let mut users: Vec<Joined> = self.shuffled.drain(..).collect();
        users.append(&mut self.pre_queue);
        users.extend(self.fifo.drain(..));
        users
    }

    /// The lowest ticket waiting here once admission serves in ticket order (it lost its
    /// queue, so everyone joined again); `u64::MAX` before, or when nobody waits.
    pub fn head_ticket(&self) -> u64 {
        match self.fifo.front() {
            Some(head) if self.queue_lost => head.ticket,
            _ => u64::MAX,
        }
    }

    pub fn put_back(&mut self, joined: Joined) {
        if joined.after_open {
            self.fifo.push_front(joined);
        } else {
            self.shuffled.push_front(joined);
        }
    }
}

/// Learns the pre-queue's shuffled order once the sale opens, as each waiting page does
/// (one GetQueueStatus per user), and sends its users in that order: users already admitted
/// at once, so they collect their passes within the check-in window, then the others by
/// place. The channel closes when the whole pre-queue is sent.
///
/// Places move while admission admits the head of the line, so a place is turned into the
/// user's fixed rank in the shuffled pre-queue: rank = position + R, where R, the pre-queue
/// users admitted so far, is read in the same instant from a post-opening user `u` (tickets
/// count every join, the pre-queue holds tickets 1..=P, so u's position is ticket_u − R), or
/// while nobody has joined after opening, from the queue length (P − R).
async fn order_pre_queue(
    ctx: Arc<Ctx>,
    pre_queue: Vec<Joined>,
    latecomer: watch::Receiver<Option<Joined>>,
    ordered: mpsc::UnboundedSender<Joined>,
) {
    let pre = pre_queue.len() as u64;
    let mut ranked = Vec::with_capacity(pre_queue.len());
    let mut lost = Vec::new();
    let mut queue_lost = false;
    for chunk in pre_queue.chunks(ORDER_CONCURRENCY) {
        let reference = latecomer.borrow().clone();
        let reference = async {
            match reference {
                Some(u) => user::status_after_opening(&ctx, &u).await.ok().map(|s| (u.ticket, s)),
                None => None,
            }
        };
        let places =
            futures::future::join_all(chunk.iter().map(|joined| user::status_after_opening(&ctx, joined)));
        let (reference, places) = tokio::join!(reference, places);
        for (joined, place) in chunk.iter().zip(places) {
            let status = match place {
                Ok(status) => status,
                // Admission lost its queue meanwhile, or admitted the user, whose pass expired
                // before its page collected it.
                Err(status) if status.code() == tonic::Code::NotFound => {
                    queue_lost |= user::place_was_lost(&ctx, joined, &status);
                    lost.push(joined.clone());
                    continue;
                }
                Err(status) => {
                    Stats::bump(&ctx.stats.stages.finished);
                    ctx.error(joined.index, format!("GetQueueStatus: {}", brief(&status)));
                    continue;
                }
            };
            if status.pass.is_some() || status.position == 0 {
                let _ = ordered.send(joined.clone());
                continue;
            }
            let admitted_ahead = match &reference {
                Some((ticket, u)) if u.pass.is_none() && u.position > 0 => ticket.saturating_sub(u.position),
                _ => pre.saturating_sub(status.queue_length),
            };
            ranked.push((status.position + admitted_ahead, joined.clone()));
        }
    }
    ranked.sort_unstable_by_key(|(rank, _)| *rank);
    let ranked = ranked.into_iter().map(|(_, joined)| joined);
    if !queue_lost {
        // The places learnt hold; users whose passes expired join again, behind everyone.
        for joined in ranked {
            let _ = ordered.send(joined);
        }
        join_again(&ctx, lost, |joined| {
            let _ = ordered.send(joined);
        })
        .await;
        return;
    }
    // Admission lost its queue while the pre-queue was being ordered: every place learnt is
    // gone too. The users join again, as their waiting pages would, in the order they had.
    user::report_lost_place(&ctx, &lost[0]);
    join_again(&ctx, ranked.chain(lost).collect(), |joined| {
        let _ = ordered.send(joined);
    })
    .await;
}

/// Has `users` join again, [`REJOIN_CONCURRENCY`] at a time, and hands each one to `send` in
/// the order given (about the order of their new tickets); one that cannot join has failed.
async fn join_again(ctx: &Arc<Ctx>, users: Vec<Joined>, mut send: impl FnMut(Joined)) {
    let mut joins = futures::stream::iter(users)
        .map(|joined| {
            let ctx = ctx.clone();
            async move { (joined.index, user::join(&ctx, joined.index, joined.token).await) }
        })
        .buffered(REJOIN_CONCURRENCY);
    while let Some((index, joined)) = joins.next().await {
        match joined {
            Ok(joined) => {
                Stats::bump(&ctx.stats.stages.rejoined);
                send(joined);
            }
            Err(status) => {
                Stats::bump(&ctx.stats.stages.finished);
                ctx.error(index, format!("Join again: {}", brief(&status)));
            }
        }
    }
}

/// What a mass re-join sends back to the dispatcher.
pub enum Rejoin {
    /// A user joined again (a latecomer now, whatever it was before).
    Joined(Joined),
    /// Every user of this re-join has been sent or failed.
    Done,
}

/// Has every waiting user join again after admission lost its queue, as their waiting pages
/// would, in their old order: first the users whose sessions wait in line (they were ahead;
/// each also learns its new ticket from its own stream), then `users`, the line without a
/// session yet, which go back to the dispatcher in that order (about the order of their new
/// tickets).
pub async fn rejoin(ctx: Arc<Ctx>, users: Vec<Joined>, back: mpsc::UnboundedSender<Rejoin>) {
    let mut in_session: Vec<(u64, u32)> = ctx
        .waiting
        .lock()
        .map(|w| w.iter().map(|(index, ticket)| (*ticket, *index)).collect())
        .unwrap_or_default();
    in_session.sort_unstable();
    futures::stream::iter(in_session)
        .map(|(_, index)| {
            let ctx = ctx.clone();
            async move {
                let _ = user::join(&ctx, index, super::ctx::token(&ctx, index)).await;
            }
        })
        .buffered(REJOIN_CONCURRENCY)
        .collect::<()>()
        .await;
    join_again(&ctx, users, |joined| {
        let _ = back.send(Rejoin::Joined(joined));
    })
    .await;
    let _ = back.send(Rejoin::Done);
}
