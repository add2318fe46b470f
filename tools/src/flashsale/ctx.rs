//! What every user task of a run shares ([`Ctx`]) and what the users record for
//! verification ([`Records`]).

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize},
    },
};

use ticketing_proto::v1 as pb;
use tonic::transport::Channel;

use super::{config::SimConfig, stats::Stats};
use crate::{faults::FaultRecord, identity::Bearer};

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
    pub faults: Arc<Mutex<Vec<FaultRecord>>>,
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
    /// The connection user `index` sends on.
    pub fn channel(&self, index: u32) -> Channel {
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

/// The id of user `index`.
pub fn user_id(index: u32) -> String {
    format!("user-{index}")
}

/// A new user's token: minted once, at its arrival.
pub fn token(ctx: &Ctx, index: u32) -> Bearer {
    ctx.config.identity.mint(&user_id(index))
}
