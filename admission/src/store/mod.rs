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
//!
//! Here: the connection, the scripts and the requests' and ticks' steps. The typed answers
//! are in `outcomes`, the parsing of script replies in `reply`, an event's opening, rebuild
//! and forgetting in `lifecycle`.

mod lifecycle;
mod outcomes;
mod reply;

pub use outcomes::*;
use reply::{ended_pass, int, number, ready, standing, stored_pass, string, uint};

use std::time::Duration;

use fred::{
    clients::Pool,
    interfaces::{ClientLike, SetsInterface},
    types::{Key, Value},
};
use service_runtime::lua::LuaScript;

use crate::{error::Error, fairness::PREQUEUE_TIER};

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
/// The reply code of a script that found the sale closed by an operator (`sale.lua`).
const SALE_CLOSED: i64 = -3;
/// The most users admitted in one tick of one event; bounds the script's run time (Redis is
/// single-threaded) while a large free capacity is filled over a few ticks.
pub const MAX_ADMIT_PER_TICK: u32 = 1_000;

/// A script that uses the helpers of `common.lua` (Redis time, readiness, the pass check-in
/// rule), with them.
fn with_common(body: &str) -> String {
    LuaScript::with_prelude(include_str!("common.lua"), body)
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
    sale: LuaScript,
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
            sale: LuaScript::load(&pool, with_common(include_str!("sale.lua"))).await?,
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
        if int(reply.first())? == SALE_CLOSED {
            return Ok(JoinOutcome::SaleClosed);
        }
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

    /// Drops the user's pass after a purchase or an abandoned hold (`why`), freeing the slot
    /// and announcing its end through the outbox in the same atomic step; false if there was
    /// none.
    pub async fn release_pass(&self, event_id: &str, user_id: &str, why: EndReason) -> Result<bool, Error> {
        let keys = vec![
            self.key(event_id, "passes"),
            self.key(event_id, "admitted"),
            self.key(event_id, "stats"),
            self.key(event_id, "outbox"),
            self.key(event_id, "ready"),
        ];
        let reply = self
            .release
            .call::<Value, _, _>(&self.pool, keys, vec![Value::from(user_id), Value::from(why.word())])
            .await?;
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

    /// An operator's action on the sale (`sale.lua`, atomic): pause, resume or close it, or
    /// only read it; answers the sale's state and figures after the action.
    /// [`Error::SaleClosed`] when pausing or resuming a closed sale.
    pub async fn sale(
        &self,
        event_id: &str,
        action: SaleAction,
        sale_opens_at_ms: i64,
    ) -> Result<SaleFigures, Error> {
        let keys = vec![
            self.key(event_id, "opening"),
            self.key(event_id, "queue"),
            self.key(event_id, "tickets"),
            self.key(event_id, "passes"),
            self.key(event_id, "admitted_total"),
            self.key(event_id, "ready"),
        ];
        let args = vec![Value::from(action.as_str()), Value::Integer(sale_opens_at_ms)];
        let reply = self.run(&self.sale, keys, args).await?;
        ready(&reply, event_id)?;
        if reply.len() == 1 && int(reply.first())? == SALE_CLOSED {
            return Err(Error::SaleClosed(event_id.to_owned()));
        }
        Ok(SaleFigures {
            opened: int(reply.first())? == 1,
            paused: int(reply.get(1))? == 1,
            closed: int(reply.get(2))? == 1,
            queue_length: uint(reply.get(3))?,
            admitted_total: uint(reply.get(4))?,
            active_passes: uint(reply.get(5))?,
        })
    }

    /// This replica's id: its name in the lease and among the outbox relays.
    pub fn replica_id(&self) -> &str {
        &self.replica_id
    }
}
