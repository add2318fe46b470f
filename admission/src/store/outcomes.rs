//! The typed answers of the store's operations.

/// An issued pass as stored: any replica re-signs the same token from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPass {
    pub pass_id: String,
    pub expires_at_ms: i64,
    pub ticket: u64,
}

/// How an event's opening went, from the replica that ran (or finished) it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opening {
    /// Redis time is before `sale_opens_at`.
    NotYet,
    /// The event was already open.
    AlreadyOpen,
    /// This replica sealed (or resealed) and shuffled `prequeue` users; `sealed_ticket` is
    /// the last ticket of the pre-queue.
    Shuffled { prequeue: usize, sealed_ticket: u64 },
}

/// Where a user stands in an event's waiting room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    /// Neither waiting nor holding a valid pass. The event's queue exists since
    /// `queue_started_at_ms` (Redis time): a place taken before then was lost with Redis.
    Absent { queue_started_at_ms: i64 },
    /// In line; `rank` counts the users ahead; `score` orders the queue (see the module docs).
    Waiting { ticket: u64, rank: u64, queue_length: u64, now_ms: i64, score: u64 },
    /// Holds a valid pass.
    Admitted { pass: StoredPass, queue_length: u64, now_ms: i64 },
}

/// The answer of a join.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinOutcome {
    RateLimited {
        retry_after_ms: u64,
    },
    /// An operator closed the sale; nothing changed.
    SaleClosed,
    Joined(Standing),
}

/// A user the controller admitted in a tick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdmittedUser {
    pub user_id: String,
    pub pass: StoredPass,
}

/// Why a pass ended before its expiry (see [`EndedPass`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// Given back with Leave.
    Left,
    /// Its holder bought.
    Bought,
    /// Its holder walked away: a hold of theirs expired.
    Abandoned,
}

impl EndReason {
    /// The word `release.lua` writes into the outbox entry (`end:<word>:…`).
    pub fn word(self) -> &'static str {
        match self {
            Self::Left => "left",
            Self::Bought => "bought",
            Self::Abandoned => "abandoned",
        }
    }
}

/// A pass ended before its expiry, whose `PassEnded` event tells seat-lock to refuse it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndedPass {
    pub user_id: String,
    pub pass_id: String,
    pub reason: EndReason,
    /// The latest expiry any token of the pass carries: seat-lock refuses it until then.
    pub expires_at_ms: i64,
}

/// One outbox entry: the users one tick admitted, or a pass that ended, whose events are not
/// yet known to be published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    /// The stream entry id, for [`Store::outbox_done`].
    pub id: String,
    pub admitted: Vec<AdmittedUser>,
    pub ended: Vec<EndedPass>,
}

/// What Leave did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Left {
    /// The user was neither waiting nor holding a valid pass.
    Nothing,
    /// The user left the queue.
    Queue,
    /// The user gave back a valid pass; its `PassEnded` is in the outbox.
    Pass,
}

/// What one controller tick saw and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TickReport {
    /// The epoch of the event's state (the readiness marker): it changes when the state was
    /// lost and rebuilt, and every queue place with it.
    pub epoch: i64,
    /// Redis time of the tick, unix ms.
    pub now_ms: i64,
    /// The lowest ticket still waiting; last ticket + 1 when nobody waits.
    pub head: u64,
    pub queue_length: u64,
    /// Passes issued for the event so far, by every replica.
    pub admitted_total: u64,
    pub active_passes: u64,
    /// True once the event is open (pre-queue shuffled, admissions running).
    pub opened: bool,
    /// Passes that ended, by every replica, since the event began.
    pub ended: EndedPasses,
    /// Admitted by this tick (0 when another replica held the lease).
    pub admitted: u64,
    /// Outbox entries whose `Admitted` events are not yet published (by any replica).
    pub outbox: u64,
}

/// Counts of passes that ended, by how.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EndedPasses {
    /// Expired unused: the no-shows (including the uncollected ones).
    pub expired: u64,
    /// Expired at the end of the check-in window, never collected; part of `expired`.
    pub unclaimed: u64,
    /// Dropped after a purchase.
    pub released: u64,
    /// Given back with Leave.
    pub left: u64,
}

impl EndedPasses {
    /// The share of ended passes that expired unused; `None` before any ended.
    pub fn no_show_share(&self) -> Option<f64> {
        let ended = self.expired + self.released + self.left;
        (ended > 0).then(|| self.expired as f64 / ended as f64)
    }
}

/// The settings a tick needs.
#[derive(Debug, Clone, Copy)]
pub struct TickParams {
    pub sale_opens_at_ms: i64,
    pub capacity: u32,
    pub pass_ttl_ms: u64,
    pub tick_ms: u32,
    /// How long an admitted user has to collect the pass before the slot is freed.
    pub check_in_window_ms: u64,
}

/// A pass still live per the event's history, to restore after a Redis loss.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoredPass {
    pub user_id: String,
    pub pass: StoredPass,
}

/// What the rebuild restores besides the live passes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// The highest pass id in the history: new passes are numbered above it.
    pub max_pass_id: u64,
    /// The highest ticket in the history: new joiners are numbered above it.
    pub max_ticket: u64,
}

/// What a rebuild did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rebuilt {
    /// The state was restored; its new epoch.
    Restored { epoch: i64 },
    /// The event was ready already (another replica rebuilt it, or the marker survived).
    AlreadyReady,
    /// The lock expired before the rebuild finished; another replica may be rebuilding.
    LockLost,
}

/// What an operator does to a sale ([`super::Store::sale`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaleAction {
    /// Only reads the figures.
    Status,
    Pause,
    Resume,
    Close,
}

impl SaleAction {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Self::Status => "status",
            Self::Pause => "pause",
            Self::Resume => "resume",
            Self::Close => "close",
        }
    }
}

/// A sale's state and figures after an operator's action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaleFigures {
    /// The opening step has run (state `open`).
    pub opened: bool,
    pub paused: bool,
    pub closed: bool,
    pub queue_length: u64,
    pub admitted_total: u64,
    pub active_passes: u64,
}
