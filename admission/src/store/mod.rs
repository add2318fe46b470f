//! The waiting room in Redis: one Lua script per operation, so each is atomic and every
//! replica sees the same order.
//!
//! Keys of an event share the hash tag `{<event_id>}`, so the scripts run unchanged on Redis
//! Cluster:
//! - `<p>adm:{e}:seq` last ticket, `queue` ZSET user→score and `tickets` HASH user→ticket
//!   of the users still waiting. Scores below [`PREQUEUE_TIER`] are the pre-queue (the
//!   ticket before opening, the keyed shuffle score after); joins from opening on score
//!   `PREQUEUE_TIER + ticket`;
//! - `opening` HASH: `state` (`sealed` while the opening shuffle runs, then `open`),
//!   `sealed_ticket` (the last pre-queue ticket), `sealed_at`, `opened_at`, `prequeue`,
//!   `key_commitment` (SHA-256 of the event's shuffle key), `rebuilt_at` after a rebuild —
//!   the audit record;
//! - `passes` ZSET user→expiry (unix ms) of the active passes, `admitted` HASH
//!   user→`pass_id:expires_at_ms:ticket:checked_in_expiry_ms`, `passseq` last pass id,
//!   `admitted_total`; `stats` HASH of ended passes (`expired`, `unclaimed` ⊆ expired,
//!   `released` by a purchase, `left`);
//! - `lease` (the replica admitting in this tick) and `rl:<user>` (join rate limit);
//! - `ready`, the readiness marker: the event's state exists; its value is the state's epoch
//!   (Redis ms when it was made). Every script that reads or changes the event checks it.
//!   Before the sale opens a missing marker is simply set (nothing that matters can have been
//!   lost: no pass exists, and the pre-queue is shuffled anyway); from the opening on, a
//!   missing marker means Redis lost the event's state and the script answers "not ready"
//!   ([`Error::Rebuilding`]) until the controller has rebuilt it ([`Store::rebuild`]);
//! - `rebuild`, the lock of the replica rebuilding the event ([`Store::lock_rebuild`]);
//! - `outbox` STREAM, one entry per admitting tick (user → `pass_id:expires_at_ms:ticket`),
//!   written by the tick in the same atomic step as the passes, and one per pass ended early
//!   (user → `end:<left|bought>:pass_id:expires_at_ms`), written by Leave or a purchase in the
//!   same atomic step that drops the pass; drained by the consumer group `relay`
//!   ([`Store::take_outbox`], [`Store::outbox_done`]) into `Admitted` and `PassEnded` events.
//!
//! Plus `<p>adm:events`, a SET of the events that have a queue, which the controllers walk.
//! "Now" is Redis `TIME` inside the scripts, so all replicas agree on it.

use std::time::Duration;

use fred::{
    clients::Pool,
    interfaces::{ClientLike, KeysInterface, SetsInterface},
    types::{Expiration, Key, SetOptions, Value},
};
use service_runtime::lua::LuaScript;

use crate::{
    error::Error,
    fairness::{EventShuffleKey, PREQUEUE_TIER},
};

/// Connections to Redis; each pipelines many commands, so a few cover thousands of requests.
const REDIS_POOL_SIZE: usize = 8;

/// Pre-queue members looked at per page of the opening (`prequeue_page.lua`): a seal never
/// answers the whole pre-queue at once, so a 500,000-user pre-queue neither blocks Redis in
/// one long reply nor sits whole in this replica's memory.
pub const PREQUEUE_PAGE: usize = 1_000;

/// Restored passes written per rebuild script call; keeps each call short, like the ticks.
pub const REBUILD_BATCH: usize = 1_000;

/// How long a rebuild lock lasts unless released: longer than a rebuild takes (its history
/// read is bounded well below), short enough that a replica dying mid-rebuild delays another
/// by seconds only.
pub const REBUILD_LOCK: Duration = Duration::from_secs(30);

/// The reply code of a script that found the event's state missing after the opening.
const NOT_READY: i64 = -2;
/// The most users admitted in one tick of one event; bounds the script's run time (Redis is
/// single-threaded) while a large free capacity is filled over a few ticks.
pub const MAX_ADMIT_PER_TICK: u32 = 1_000;

/// A script that uses the helpers of `common.lua` (the pass check-in rule), with them.
fn with_common(body: &str) -> String {
    LuaScript::with_prelude(include_str!("common.lua"), body)
}

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
    /// Neither waiting nor holding a valid pass.
    Absent,
    /// In line; `rank` counts the users ahead; `score` orders the queue (see the module docs).
    Waiting { ticket: u64, rank: u64, queue_length: u64, now_ms: i64, score: u64 },
    /// Holds a valid pass.
    Admitted { pass: StoredPass, queue_length: u64, now_ms: i64 },
}

/// The answer of a join.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinOutcome {
    RateLimited { retry_after_ms: u64 },
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

/// The Redis side of admission.
pub struct Store {
    pool: Pool,
    prefix: String,
    /// Stored in the lease so an operator sees which replica admits.
    replica_id: String,
    join: LuaScript,
    status: LuaScript,
    leave: LuaScript,
    release: LuaScript,
    tick: LuaScript,
    seal: LuaScript,
    shuffle: LuaScript,
    outbox_take: LuaScript,
    outbox_done: LuaScript,
    prequeue_page: LuaScript,
    rebuild: LuaScript,
    finished: LuaScript,
}

/// A script argument from a count or duration; every one the service passes is far below
/// `i64::MAX` (scores stay below 2^53, settings are validated), so saturating never happens.
fn number(value: u64) -> Value {
    Value::Integer(i64::try_from(value).unwrap_or(i64::MAX))
}

fn int(value: Option<&Value>) -> Result<i64, Error> {
    value.and_then(Value::as_i64).ok_or_else(|| Error::UnexpectedReply(format!("{value:?}")))
}

fn uint(value: Option<&Value>) -> Result<u64, Error> {
    u64::try_from(int(value)?).map_err(|_| Error::UnexpectedReply(format!("{value:?}")))
}

fn string(value: Option<&Value>) -> Result<String, Error> {
    value.and_then(Value::as_string).ok_or_else(|| Error::UnexpectedReply(format!("{value:?}")))
}

/// Parses `pass_id:expires_at_ms:ticket[:checked_in_expiry_ms]`, as stored in the `admitted`
/// hash and the outbox.
fn stored_pass(value: Option<&Value>) -> Result<StoredPass, Error> {
    let raw = string(value)?;
    let mut parts = raw.split(':');
    let parsed = (|| {
        let pass_id = parts.next()?.to_owned();
        let expires_at_ms = parts.next()?.parse().ok()?;
        let ticket = parts.next()?.parse().ok()?;
        Some(StoredPass { pass_id, expires_at_ms, ticket })
    })();
    parsed.ok_or_else(|| Error::UnexpectedReply(raw.clone()))
}

/// Parses `end:<left|bought>:pass_id:expires_at_ms`, an ended pass in the outbox; `None` for
/// any other value (an admission).
fn ended_pass(user_id: &str, raw: &str) -> Option<Result<EndedPass, Error>> {
    let rest = raw.strip_prefix("end:")?;
    let parsed = (|| {
        let mut parts = rest.split(':');
        let reason = match parts.next()? {
            "left" => EndReason::Left,
            "bought" => EndReason::Bought,
            _ => return None,
        };
        let pass_id = parts.next()?.to_owned();
        let expires_at_ms = parts.next()?.parse().ok()?;
        Some(EndedPass { user_id: user_id.to_owned(), pass_id, reason, expires_at_ms })
    })();
    Some(parsed.ok_or_else(|| Error::UnexpectedReply(raw.to_owned())))
}

/// `Err(Rebuilding)` when a script answered `{-2}`: the event's state is missing after the
/// sale opened.
fn ready(reply: &[Value], event_id: &str) -> Result<(), Error> {
    if reply.len() == 1 && int(reply.first())? == NOT_READY {
        return Err(Error::Rebuilding(event_id.to_owned()));
    }
    Ok(())
}

/// Reads the `{0}` / `{1, ...}` / `{2, ...}` shapes that join.lua and status.lua share.
fn standing(reply: &[Value]) -> Result<Standing, Error> {
    match int(reply.first())? {
        0 if reply.len() == 1 => Ok(Standing::Absent),
        0 | 1 => Ok(Standing::Waiting {
            ticket: uint(reply.get(1))?,
            rank: uint(reply.get(2))?,
            queue_length: uint(reply.get(3))?,
            now_ms: int(reply.get(4))?,
            score: uint(reply.get(5))?,
        }),
        2 => Ok(Standing::Admitted {
            pass: stored_pass(reply.get(1))?,
            now_ms: int(reply.get(2))?,
            queue_length: uint(reply.get(3))?,
        }),
        other => Err(Error::UnexpectedReply(format!("standing code {other}"))),
    }
}

impl Store {
    /// Connects to Redis and loads the scripts. Every command fails after `command_timeout`
    /// (the service passes its request timeout, so no Redis call outlives the RPC that made
    /// it, and the controller's calls to a Redis that stopped answering fail instead of
    /// hanging the loop); every script is bounded, so only a stalled Redis or a client queue
    /// that long reaches it. The pool and its other timeouts are the mesh's
    /// ([`service_runtime::redis::pool`]).
    pub async fn connect(url: &str, prefix: &str, command_timeout: Duration) -> anyhow::Result<Self> {
        let pool = service_runtime::redis::pool(url, REDIS_POOL_SIZE, command_timeout)?;
        pool.init().await?;
        Ok(Self {
            prefix: prefix.to_owned(),
            replica_id: uuid::Uuid::new_v4().to_string(),
            join: LuaScript::load(&pool, with_common(include_str!("join.lua"))).await?,
            status: LuaScript::load(&pool, with_common(include_str!("status.lua"))).await?,
            leave: LuaScript::load(&pool, include_str!("leave.lua")).await?,
            release: LuaScript::load(&pool, include_str!("release.lua")).await?,
            tick: LuaScript::load(&pool, include_str!("tick.lua")).await?,
            seal: LuaScript::load(&pool, include_str!("seal.lua")).await?,
            shuffle: LuaScript::load(&pool, include_str!("shuffle.lua")).await?,
            outbox_take: LuaScript::load(&pool, include_str!("outbox_take.lua")).await?,
            outbox_done: LuaScript::load(&pool, include_str!("outbox_done.lua")).await?,
            prequeue_page: LuaScript::load(&pool, include_str!("prequeue_page.lua")).await?,
            rebuild: LuaScript::load(&pool, include_str!("rebuild.lua")).await?,
            finished: LuaScript::load(&pool, include_str!("finished.lua")).await?,
            pool,
        })
    }

    fn key(&self, event_id: &str, name: &str) -> Key {
        Key::from(format!("{}adm:{{{event_id}}}:{name}", self.prefix))
    }

    fn events_key(&self) -> String {
        format!("{}adm:events", self.prefix)
    }

    /// Runs a script whose reply is an array.
    async fn run(&self, script: &LuaScript, keys: Vec<Key>, args: Vec<Value>) -> Result<Vec<Value>, Error> {
        match script.call(&self.pool, keys, args).await? {
            Value::Array(values) => Ok(values),
            other => Err(Error::UnexpectedReply(format!("{other:?}"))),
        }
    }

    /// Queues the user (once), after the per-user rate limit: in the pre-queue before
    /// `sale_opens_at_ms` (Redis time) and the opening, behind it after.
    pub async fn join(
        &self,
        event_id: &str,
        user_id: &str,
        rate_limit: u32,
        sale_opens_at_ms: i64,
    ) -> Result<JoinOutcome, Error> {
        let keys = vec![
            self.key(event_id, &format!("rl:{user_id}")),
            self.key(event_id, "seq"),
            self.key(event_id, "queue"),
            self.key(event_id, "tickets"),
            self.key(event_id, "passes"),
            self.key(event_id, "admitted"),
            self.key(event_id, "opening"),
            self.key(event_id, "ready"),
        ];
        let args = vec![
            Value::from(user_id),
            Value::Integer(rate_limit.into()),
            Value::Integer(sale_opens_at_ms),
            number(PREQUEUE_TIER),
        ];
        let reply = self.run(&self.join, keys, args).await?;
        ready(&reply, event_id)?;
        if int(reply.first())? == -1 {
            return Ok(JoinOutcome::RateLimited { retry_after_ms: uint(reply.get(1))? });
        }
        Ok(JoinOutcome::Joined(standing(&reply)?))
    }

    /// Adds the event to the set the controllers walk; repeating it is harmless.
    pub async fn register_event(&self, event_id: &str) -> Result<(), Error> {
        let _: i64 = self.pool.sadd(self.events_key(), event_id).await?;
        Ok(())
    }

    /// The events that have a queue.
    pub async fn events(&self) -> Result<Vec<String>, Error> {
        Ok(self.pool.smembers(self.events_key()).await?)
    }

    fn user_keys(&self, event_id: &str) -> Vec<Key> {
        vec![
            self.key(event_id, "queue"),
            self.key(event_id, "tickets"),
            self.key(event_id, "passes"),
            self.key(event_id, "admitted"),
        ]
    }

    /// Where the user stands. Answering a valid pass counts as collecting it (check-in),
    /// which extends it from the check-in window to the full pass ttl.
    pub async fn standing(
        &self,
        event_id: &str,
        user_id: &str,
        sale_opens_at_ms: i64,
    ) -> Result<Standing, Error> {
        let mut keys = self.user_keys(event_id);
        keys.push(self.key(event_id, "ready"));
        let args = vec![Value::from(user_id), Value::Integer(sale_opens_at_ms)];
        let reply = self.run(&self.status, keys, args).await?;
        ready(&reply, event_id)?;
        standing(&reply)
    }

    /// Takes the user out of the queue or drops the user's valid pass (announcing its end
    /// through the outbox in the same atomic step).
    pub async fn leave(&self, event_id: &str, user_id: &str, sale_opens_at_ms: i64) -> Result<Left, Error> {
        let mut keys = self.user_keys(event_id);
        keys.push(self.key(event_id, "stats"));
        keys.push(self.key(event_id, "outbox"));
        keys.push(self.key(event_id, "ready"));
        let args = vec![Value::from(user_id), Value::Integer(sale_opens_at_ms)];
        let reply = self.leave.call::<Value, _, _>(&self.pool, keys, args).await?;
        match int(Some(&reply))? {
            NOT_READY => Err(Error::Rebuilding(event_id.to_owned())),
            0 => Ok(Left::Nothing),
            1 => Ok(Left::Queue),
            2 => Ok(Left::Pass),
            other => Err(Error::UnexpectedReply(format!("leave code {other}"))),
        }
    }

    /// Drops the user's pass after a purchase, freeing the slot and announcing its end through
    /// the outbox in the same atomic step; false if there was none.
    pub async fn release_pass(&self, event_id: &str, user_id: &str) -> Result<bool, Error> {
        let keys = vec![
            self.key(event_id, "passes"),
            self.key(event_id, "admitted"),
            self.key(event_id, "stats"),
            self.key(event_id, "outbox"),
            self.key(event_id, "ready"),
        ];
        let reply = self.release.call::<Value, _, _>(&self.pool, keys, vec![Value::from(user_id)]).await?;
        match int(Some(&reply))? {
            NOT_READY => Err(Error::Rebuilding(event_id.to_owned())),
            released => Ok(released == 1),
        }
    }

    /// One controller step: admits the head of the queue when the sale is open and this
    /// replica wins the tick's lease, and always reports the "now serving" figures.
    pub async fn tick(&self, event_id: &str, params: TickParams) -> Result<TickReport, Error> {
        let keys = vec![
            self.key(event_id, "lease"),
            self.key(event_id, "queue"),
            self.key(event_id, "tickets"),
            self.key(event_id, "passes"),
            self.key(event_id, "admitted"),
            self.key(event_id, "passseq"),
            self.key(event_id, "admitted_total"),
            self.key(event_id, "seq"),
            self.key(event_id, "opening"),
            self.key(event_id, "stats"),
            self.key(event_id, "outbox"),
            self.key(event_id, "ready"),
        ];
        let args = vec![
            Value::Integer(params.sale_opens_at_ms),
            Value::Integer(params.capacity.into()),
            number(params.pass_ttl_ms),
            Value::Integer(params.tick_ms.into()),
            Value::Integer(MAX_ADMIT_PER_TICK.into()),
            Value::from(self.replica_id.as_str()),
            number(params.check_in_window_ms),
            number(PREQUEUE_TIER),
        ];
        let reply = self.run(&self.tick, keys, args).await?;
        ready(&reply, event_id)?;
        Ok(TickReport {
            epoch: int(reply.get(12))?,
            now_ms: int(reply.first())?,
            head: uint(reply.get(1))?,
            queue_length: uint(reply.get(2))?,
            admitted_total: uint(reply.get(3))?,
            active_passes: uint(reply.get(4))?,
            opened: int(reply.get(5))? == 1,
            ended: EndedPasses {
                expired: uint(reply.get(6))?,
                unclaimed: uint(reply.get(7))?,
                released: uint(reply.get(8))?,
                left: uint(reply.get(9))?,
            },
            admitted: uint(reply.get(10))?,
            outbox: uint(reply.get(11))?,
        })
    }

    /// Up to `max` outbox entries for the relay `consumer` to publish: entries another relay
    /// took at least `stalled_ms` ago without finishing first, else new ones.
    pub async fn take_outbox(
        &self,
        event_id: &str,
        consumer: &str,
        stalled_ms: u64,
        max: usize,
    ) -> Result<Vec<OutboxEntry>, Error> {
        let args = vec![Value::from(consumer), number(stalled_ms), number(max as u64)];
        let reply = self.run(&self.outbox_take, vec![self.key(event_id, "outbox")], args).await?;
        reply
            .chunks(2)
            .map(|entry| {
                let fields = match entry.get(1) {
                    Some(Value::Array(fields)) => fields,
                    other => return Err(Error::UnexpectedReply(format!("{other:?}"))),
                };
                let (mut admitted, mut ended) = (Vec::new(), Vec::new());
                for pair in fields.chunks(2) {
                    let user_id = string(pair.first())?;
                    match ended_pass(&user_id, &string(pair.get(1))?) {
                        Some(pass) => ended.push(pass?),
                        None => admitted.push(AdmittedUser { user_id, pass: stored_pass(pair.get(1))? }),
                    }
                }
                Ok(OutboxEntry { id: string(entry.first())?, admitted, ended })
            })
            .collect()
    }

    /// Drops outbox entries whose events are published; returns how many entries are left.
    pub async fn outbox_done(&self, event_id: &str, ids: &[String]) -> Result<u64, Error> {
        let args: Vec<Value> = ids.iter().map(|id| Value::from(id.as_str())).collect();
        let reply = self
            .outbox_done
            .call::<Value, _, _>(&self.pool, vec![self.key(event_id, "outbox")], args)
            .await?;
        uint(Some(&reply))
    }

    /// This replica's id: its name in the lease and among the outbox relays.
    pub fn replica_id(&self) -> &str {
        &self.replica_id
    }

    /// The opening step: seals the pre-queue, then rescores it by the keyed shuffle page by
    /// page ([`PREQUEUE_PAGE`]), then opens the event. Safe to run on several replicas at once
    /// or to repeat after a crash: every run computes the same scores, and pages after the
    /// event opened are refused.
    pub async fn open_sale(
        &self,
        event_id: &str,
        sale_opens_at_ms: i64,
        key: &EventShuffleKey,
    ) -> Result<Opening, Error> {
        let keys = vec![
            self.key(event_id, "opening"),
            self.key(event_id, "queue"),
            self.key(event_id, "seq"),
            self.key(event_id, "ready"),
        ];
        let args =
            vec![Value::Integer(sale_opens_at_ms), number(PREQUEUE_TIER), Value::from(key.commitment())];
        let reply = self.run(&self.seal, keys, args).await?;
        ready(&reply, event_id)?;
        match int(reply.first())? {
            0 => return Ok(Opening::NotYet),
            2 => return Ok(Opening::AlreadyOpen),
            1 => {}
            other => return Err(Error::UnexpectedReply(format!("seal code {other}"))),
        }
        let sealed_ticket = uint(reply.get(1))?;
        let prequeue = uint(reply.get(2))?;
        let keys = vec![self.key(event_id, "opening"), self.key(event_id, "queue")];
        let mut cursor = "0".to_owned();
        loop {
            let (next, users) = self.prequeue_page(event_id, &cursor).await?;
            let last = next == "0";
            let mut args =
                vec![Value::from(if last { "1" } else { "0" }), number(prequeue), number(PREQUEUE_TIER)];
            for user in &users {
                args.push(Value::from(user.as_str()));
                args.push(number(key.score(user)));
            }
            let applied = self.shuffle.call::<Value, _, _>(&self.pool, keys.clone(), args).await?;
            if int(Some(&applied))? == 0 {
                return Ok(Opening::AlreadyOpen);
            }
            if last {
                break;
            }
            cursor = next;
        }
        Ok(Opening::Shuffled { prequeue: usize::try_from(prequeue).unwrap_or(usize::MAX), sealed_ticket })
    }

    /// One page of the sealed pre-queue: the next cursor ("0" at the end) and the users of the
    /// page still holding a pre-queue score.
    async fn prequeue_page(&self, event_id: &str, cursor: &str) -> Result<(String, Vec<String>), Error> {
        let args = vec![Value::from(cursor), number(PREQUEUE_PAGE as u64), number(PREQUEUE_TIER)];
        let reply = self.run(&self.prequeue_page, vec![self.key(event_id, "queue")], args).await?;
        let next = string(reply.first())?;
        let users = match reply.get(1) {
            Some(Value::Array(users)) => {
                users.iter().map(|user| string(Some(user))).collect::<Result<_, _>>()?
            }
            other => return Err(Error::UnexpectedReply(format!("{other:?}"))),
        };
        Ok((next, users))
    }

    /// Takes the rebuild lock of the event for `token` ([`REBUILD_LOCK`]); false when another
    /// replica holds it.
    pub async fn lock_rebuild(&self, event_id: &str, token: &str) -> Result<bool, Error> {
        let expiry = Expiration::PX(i64::try_from(REBUILD_LOCK.as_millis()).unwrap_or(i64::MAX));
        let set: Option<String> = self
            .pool
            .set(self.key(event_id, "rebuild"), token, Some(expiry), Some(SetOptions::NX), false)
            .await?;
        Ok(set.is_some())
    }

    /// Releases the rebuild lock if `token` still holds it (after a failed rebuild, so another
    /// attempt need not wait for it to expire). Two steps: at worst another holder's lock is
    /// released early, and a second rebuild then finds the event ready and changes nothing.
    pub async fn unlock_rebuild(&self, event_id: &str, token: &str) -> Result<(), Error> {
        let key = self.key(event_id, "rebuild");
        let holder: Option<String> = self.pool.get(key.clone()).await?;
        if holder.as_deref() == Some(token) {
            let _: i64 = self.pool.del(key).await?;
        }
        Ok(())
    }

    /// Restores the event's state from its history under the lock `token`: the live passes in
    /// batches ([`REBUILD_BATCH`]), then the counters, the opening record and the readiness
    /// marker (which releases the lock) in the last call. Until that call the event stays not
    /// ready, so nobody is admitted from a half-restored state.
    pub async fn rebuild(
        &self,
        event_id: &str,
        token: &str,
        passes: &[RestoredPass],
        counters: &Counters,
        key_commitment: &str,
    ) -> Result<Rebuilt, Error> {
        let keys = vec![
            self.key(event_id, "rebuild"),
            self.key(event_id, "ready"),
            self.key(event_id, "opening"),
            self.key(event_id, "passes"),
            self.key(event_id, "admitted"),
            self.key(event_id, "passseq"),
            self.key(event_id, "seq"),
        ];
        let batches: Vec<&[RestoredPass]> =
            if passes.is_empty() { vec![&[]] } else { passes.chunks(REBUILD_BATCH).collect() };
        let count = batches.len();
        for (index, batch) in batches.into_iter().enumerate() {
            let last = index + 1 == count;
            let mut args = vec![
                Value::from(token),
                Value::from(if last { "1" } else { "0" }),
                number(counters.max_pass_id),
                number(counters.max_ticket),
                Value::from(key_commitment),
            ];
            for restored in batch {
                args.push(Value::from(restored.user_id.as_str()));
                args.push(Value::from(restored.pass.pass_id.as_str()));
                args.push(Value::Integer(restored.pass.expires_at_ms));
                args.push(number(restored.pass.ticket));
            }
            let reply = self.rebuild.call::<Value, _, _>(&self.pool, keys.clone(), args).await?;
            match int(Some(&reply))? {
                -1 => return Ok(Rebuilt::LockLost),
                0 => return Ok(Rebuilt::AlreadyReady),
                epoch if last => return Ok(Rebuilt::Restored { epoch }),
                _ => {}
            }
        }
        Ok(Rebuilt::AlreadyReady)
    }

    /// Takes a finished event (nobody waiting, no pass, nothing to publish) out of the set the
    /// controllers walk; false when it is not finished. A join racing with this either makes
    /// the event unfinished before the check, or registers it again after the removal (the
    /// check after the removal puts it back if a join slipped in between).
    pub async fn forget_event(&self, event_id: &str) -> Result<bool, Error> {
        let keys =
            vec![self.key(event_id, "queue"), self.key(event_id, "passes"), self.key(event_id, "outbox")];
        let finished = |keys: Vec<Key>| async move {
            let reply = self.finished.call::<Value, _, _>(&self.pool, keys, Vec::<Value>::new()).await?;
            Ok::<bool, Error>(int(Some(&reply))? == 1)
        };
        if !finished(keys.clone()).await? {
            return Ok(false);
        }
        let _: i64 = self.pool.srem(self.events_key(), event_id).await?;
        if !finished(keys).await? {
            self.register_event(event_id).await?;
            return Ok(false);
        }
        Ok(true)
    }
}
