//! The Redis side of seat-lock: one Lua script per operation, each atomic, plus the
//! typed outcomes the service maps to answers.
//!
//! Key layout (see `store/common.lua`): every key of an event starts with
//! `<prefix>sl:{<event_id>}:` so one event lives in one Redis Cluster slot; the set of known
//! events is `<prefix>sl:events`.
//!
//! Here: the connection, the scripts and the steps of each request; the typed outcomes and
//! the parsing of a hold reply are in `outcomes`.

mod outcomes;

pub use outcomes::*;

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use fred::prelude::*;
use service_runtime::lua::LuaScript;
use ticketing_proto::pass::PassError;

use crate::{catalogue::Layout, error::Error};

/// Connections to Redis. Scripts are short; a few connections keep the pipeline full.
const REDIS_POOL_SIZE: usize = 8;

/// Holds a sweep call ends at most, so one call never blocks Redis for long.
pub const SWEEP_BATCH: u32 = 500;

/// Outbox entries published per event and round, bounding one round's memory and latency.
pub const OUTBOX_BATCH: i64 = 200;

/// How long one replica may hold an event's rebuild lock; longer than a payment call.
const REBUILD_LOCK_TTL: Duration = Duration::from_secs(15);

/// A script built from the shared helpers and its own body.
fn with_helpers(body: &str) -> String {
    LuaScript::with_prelude(include_str!("common.lua"), body)
}

/// The Redis store with its loaded scripts.
#[derive(Clone)]
pub struct Store {
    pool: Pool,
    prefix: String,
    scripts: Arc<Scripts>,
}

struct Scripts {
    hold_seats: LuaScript,
    hold_best: LuaScript,
    release: LuaScript,
    get_hold: LuaScript,
    checkout: LuaScript,
    confirm: LuaScript,
    return_seats: LuaScript,
    sweep: LuaScript,
    init: LuaScript,
    end_pass: LuaScript,
    ack: LuaScript,
}

impl Store {
    /// Connects to Redis (commands time out after `command_timeout`) and loads every script.
    pub async fn connect(url: &str, prefix: &str, command_timeout: Duration) -> Result<Self, Error> {
        let pool = service_runtime::redis::pool(url, REDIS_POOL_SIZE, command_timeout)?;
        pool.init().await?;
        let scripts = Scripts {
            hold_seats: LuaScript::load(&pool, with_helpers(include_str!("hold_seats.lua"))).await?,
            hold_best: LuaScript::load(&pool, with_helpers(include_str!("hold_best.lua"))).await?,
            release: LuaScript::load(&pool, with_helpers(include_str!("release.lua"))).await?,
            get_hold: LuaScript::load(&pool, with_helpers(include_str!("get_hold.lua"))).await?,
            checkout: LuaScript::load(&pool, with_helpers(include_str!("checkout.lua"))).await?,
            confirm: LuaScript::load(&pool, with_helpers(include_str!("confirm.lua"))).await?,
            return_seats: LuaScript::load(&pool, with_helpers(include_str!("return.lua"))).await?,
            sweep: LuaScript::load(&pool, with_helpers(include_str!("sweep.lua"))).await?,
            init: LuaScript::load(&pool, with_helpers(include_str!("init.lua"))).await?,
            end_pass: LuaScript::load(&pool, with_helpers(include_str!("end_pass.lua"))).await?,
            ack: LuaScript::load(&pool, include_str!("ack.lua")).await?,
        };
        Ok(Self { pool, prefix: prefix.to_owned(), scripts: Arc::new(scripts) })
    }

    /// `<prefix>sl:{<event_id>}:`, the start of every key of the event.
    pub fn base(&self, event_id: &str) -> String {
        format!("{}sl:{{{event_id}}}:", self.prefix)
    }

    fn events_key(&self) -> String {
        format!("{}sl:events", self.prefix)
    }

    /// Remembers `event_id` so the sweeper and the relay visit it.
    pub async fn remember_event(&self, event_id: &str) -> Result<(), Error> {
        let _: i64 = self.pool.sadd(self.events_key(), event_id).await?;
        Ok(())
    }

    /// Every event the sweeper and relay visit.
    pub async fn known_events(&self) -> Result<Vec<String>, Error> {
        Ok(self.pool.smembers(self.events_key()).await?)
    }

    /// Holds seats as `pick` says, all or nothing.
    pub async fn hold(
        &self,
        event_id: &str,
        new: &NewHold<'_>,
        pick: &Pick<'_>,
    ) -> Result<StoredHold, Outcome> {
        let mut args = vec![
            new.hold_id.clone(),
            new.user_id.to_owned(),
            new.zone_id.to_owned(),
            new.ttl.as_millis().to_string(),
            new.price_cents.to_string(),
            new.limit.to_string(),
            new.pass_id.to_owned(),
            new.pass_expires_at_ms.to_string(),
        ];
        let reply: Vec<String> = match pick {
            Pick::Seats(seat_ids) => {
                args.extend(seat_ids.iter().cloned());
                self.run(&self.scripts.hold_seats, self.base(event_id), args).await?
            }
            Pick::Best { quantity, seated, allow_split, seats_per_row, row_labels } => {
                args.push(quantity.to_string());
                args.push(if *seated { "seated" } else { "ga" }.to_owned());
                args.push(if *allow_split { "1" } else { "0" }.to_owned());
                args.push(seats_per_row.to_string());
                args.extend(row_labels.iter().cloned());
                self.run(&self.scripts.hold_best, self.base(event_id), args).await?
            }
        };
        let zone_id = new.zone_id.to_owned();
        let quantity = match pick {
            Pick::Seats(seat_ids) => seat_ids.len() as u32,
            Pick::Best { quantity, .. } => *quantity,
        };
        match reply.first().map(String::as_str) {
            Some("PASS_REVOKED") => Err(Error::Pass(PassError::Revoked).into()),
            Some("SEAT_TAKEN") => Err(Error::SeatTaken(reply[1..].to_vec()).into()),
            Some("ZONE_SOLD_OUT") => {
                Err(Error::ZoneSoldOut { zone_id, free: reply.get(1).cloned().unwrap_or_default() }.into())
            }
            Some("NO_ADJACENT_SEATS") => Err(Error::NoAdjacentSeats { zone_id, quantity }.into()),
            Some("TICKET_LIMIT_EXCEEDED") => Err(Error::TicketLimitExceeded {
                limit: reply.get(1).cloned().unwrap_or_default(),
                already: reply.get(2).cloned().unwrap_or_default(),
            }
            .into()),
            _ => self.parse_common(reply),
        }
    }

    /// Ends a held hold (owner only: another user's hold is [`Error::HoldNotFound`], exactly
    /// as a missing one).
    pub async fn release(&self, event_id: &str, hold_id: &str, user_id: &str) -> Result<StoredHold, Outcome> {
        let reply = self.per_hold(&self.scripts.release, event_id, hold_id, user_id, None).await?;
        owner_only(self.parse_per_hold(hold_id, reply))
    }

    /// The hold as it stands (owner only: another user's hold is [`Error::HoldNotFound`],
    /// exactly as a missing one).
    pub async fn get(&self, event_id: &str, hold_id: &str, user_id: &str) -> Result<StoredHold, Outcome> {
        let reply = self.per_hold(&self.scripts.get_hold, event_id, hold_id, user_id, None).await?;
        owner_only(self.parse_per_hold(hold_id, reply))
    }

    /// Records that admission ended `pass_id` (PassEnded), until `expires_at_ms`; false when
    /// nothing was recorded (expired already, or a record already covers it).
    pub async fn end_pass(&self, event_id: &str, pass_id: &str, expires_at_ms: i64) -> Result<bool, Error> {
        let recorded: i64 = self
            .run(
                &self.scripts.end_pass,
                self.base(event_id),
                vec![pass_id.to_owned(), expires_at_ms.to_string()],
            )
            .await?;
        Ok(recorded == 1)
    }

    /// Moves a live hold into checkout, extending it by `grace`. Payment asks on behalf of the
    /// paying user, so another user's hold is [`Error::HoldNotFound`] here too.
    pub async fn checkout(
        &self,
        event_id: &str,
        hold_id: &str,
        user_id: &str,
        grace: Duration,
    ) -> Result<StoredHold, Outcome> {
        let grace = grace.as_millis().to_string();
        let reply = self.per_hold(&self.scripts.checkout, event_id, hold_id, user_id, Some(grace)).await?;
        owner_only(self.parse_per_hold(hold_id, reply))
    }

    /// Turns a live hold into a sale under `booking_id`; a replay answers the same.
    pub async fn confirm(
        &self,
        event_id: &str,
        hold_id: &str,
        user_id: &str,
        booking_id: &str,
    ) -> Result<StoredHold, Outcome> {
        let reply = self
            .per_hold(&self.scripts.confirm, event_id, hold_id, user_id, Some(booking_id.to_owned()))
            .await?;
        if reply.first().map(String::as_str) == Some("LOST") {
            tracing::error!(%event_id, %hold_id, seats = ?&reply[1..], "a live hold lost its seats; refusing to sell");
            return Err(Error::HoldExpired(hold_id.to_owned()).into());
        }
        self.parse_per_hold(hold_id, reply)
    }

    /// Gives the sold seats of a cancelled booking back to sale, once (see `return.lua`).
    pub async fn return_seats(
        &self,
        event_id: &str,
        seats: &SeatReturn<'_>,
    ) -> Result<ReturnOutcome, Outcome> {
        let mut args = vec![
            seats.booking_id.to_owned(),
            seats.hold_id.to_owned(),
            seats.user_id.to_owned(),
            seats.zone_id.to_owned(),
            seats.quantity.to_string(),
        ];
        args.extend(seats.seat_ids.iter().cloned());
        let reply: Vec<String> = self.run(&self.scripts.return_seats, self.base(event_id), args).await?;
        match reply.first().map(String::as_str) {
            Some("NOT_READY") => Err(Outcome::NotReady(NotReady)),
            Some("RETURNED") => Ok(ReturnOutcome::Returned),
            Some("ALREADY_RETURNED") => Ok(ReturnOutcome::AlreadyReturned),
            Some("ANNOUNCED") => Ok(ReturnOutcome::Announced),
            Some("NOT_SOLD") => Ok(ReturnOutcome::NotSold(reply.get(1).cloned().unwrap_or_default())),
            _ => Err(Error::UnexpectedReply(reply).into()),
        }
    }

    async fn per_hold(
        &self,
        script: &LuaScript,
        event_id: &str,
        hold_id: &str,
        user_id: &str,
        extra: Option<String>,
    ) -> Result<Vec<String>, Error> {
        let mut args = vec![hold_id.to_owned(), user_id.to_owned()];
        args.extend(extra);
        self.run(script, self.base(event_id), args).await
    }

    /// Runs `script` on the event (or outbox) key `key`.
    async fn run<R: FromValue>(
        &self,
        script: &LuaScript,
        key: String,
        args: Vec<String>,
    ) -> Result<R, Error> {
        Ok(script.call(&self.pool, vec![key], args).await?)
    }

    fn parse_per_hold(&self, hold_id: &str, reply: Vec<String>) -> Result<StoredHold, Outcome> {
        let hold_id = hold_id.to_owned();
        match reply.first().map(String::as_str) {
            Some("NOT_FOUND") => Err(Error::HoldNotFound(hold_id).into()),
            Some("NOT_OWNER") => Err(Error::NotHoldOwner(hold_id).into()),
            Some("IN_CHECKOUT") => Err(Error::HoldInCheckout(hold_id).into()),
            Some("SOLD") => Err(Error::HoldSold(hold_id).into()),
            Some("EXPIRED") => Err(Error::HoldExpired(hold_id).into()),
            _ => self.parse_common(reply),
        }
    }

    fn parse_common(&self, reply: Vec<String>) -> Result<StoredHold, Outcome> {
        if reply.first().map(String::as_str) == Some("NOT_READY") {
            return Err(Outcome::NotReady(NotReady));
        }
        StoredHold::parse(&reply).ok_or_else(|| Error::UnexpectedReply(reply).into())
    }

    /// Ends up to [`SWEEP_BATCH`] expired holds of the event; returns how many.
    pub async fn sweep(&self, event_id: &str) -> Result<i64, Error> {
        self.run(&self.scripts.sweep, self.base(event_id), vec![SWEEP_BATCH.to_string()]).await
    }

    /// The first facts of the event's outbox, oldest first.
    pub async fn outbox(&self, event_id: &str) -> Result<Vec<String>, Error> {
        Ok(self.pool.lrange(format!("{}outbox", self.base(event_id)), 0, OUTBOX_BATCH - 1).await?)
    }

    /// Removes published facts from the event's outbox.
    pub async fn ack(&self, event_id: &str, entries: Vec<String>) -> Result<(), Error> {
        let _: i64 = self.run(&self.scripts.ack, format!("{}outbox", self.base(event_id)), entries).await?;
        Ok(())
    }

    /// The raw fields of a hold, for building an event from an outbox fact.
    pub async fn hold_fields(&self, event_id: &str, hold_id: &str) -> Result<Option<StoredHold>, Error> {
        let fields: Vec<Option<String>> = self
            .pool
            .hmget(
                format!("{}hold:{hold_id}", self.base(event_id)),
                vec![
                    "user",
                    "zone",
                    "seats",
                    "quantity",
                    "state",
                    "expires_at_ms",
                    "price_cents",
                    "booking_id",
                ],
            )
            .await?;
        if fields.iter().all(Option::is_none) {
            return Ok(None);
        }
        let mut reply = vec!["OK".to_owned(), hold_id.to_owned()];
        reply.extend(fields.into_iter().map(Option::unwrap_or_default));
        Ok(StoredHold::parse(&reply))
    }

    /// Takes the event's rebuild lock for this replica; false when another replica has it.
    pub async fn lock_rebuild(&self, event_id: &str, token: &str) -> Result<bool, Error> {
        let taken: Option<String> = self
            .pool
            .set(
                format!("{}rebuild", self.base(event_id)),
                token,
                Some(Expiration::PX(REBUILD_LOCK_TTL.as_millis() as i64)),
                Some(SetOptions::NX),
                false,
            )
            .await?;
        Ok(taken.is_some())
    }

    /// Gives the rebuild lock back.
    pub async fn unlock_rebuild(&self, event_id: &str) -> Result<(), Error> {
        let _: i64 = self.pool.del(format!("{}rebuild", self.base(event_id))).await?;
        Ok(())
    }

    /// Initialises the event's counters, sold seats and seat index (once; a no-op when
    /// already ready).
    pub async fn init(&self, layout: &Layout, sold: &BTreeMap<String, SoldHold>) -> Result<bool, Error> {
        let mut args = vec![layout.zones.len().to_string()];
        for zone in &layout.zones {
            args.push(zone.zone_id.clone());
            args.push(zone.capacity.to_string());
            // The seat index of a seated zone is built from its rows (see init.lua).
            let rows: &[String] = if zone.seated { &zone.row_labels } else { &[] };
            args.push(if zone.seated { zone.seats_per_row } else { 0 }.to_string());
            args.push(rows.len().to_string());
            args.extend(rows.iter().cloned());
        }
        for (hold_id, hold) in sold {
            let price =
                layout.zone(&hold.zone_id).map_or(0, |zone| zone.price_cents) * i64::from(hold.quantity);
            args.extend([
                hold_id.clone(),
                hold.user_id.clone(),
                hold.zone_id.clone(),
                hold.seat_ids.join(","),
                hold.quantity.to_string(),
                hold.booking_id.clone(),
                price.to_string(),
            ]);
        }
        let initialised: i64 = self.run(&self.scripts.init, self.base(&layout.event_id), args).await?;
        Ok(initialised == 1)
    }
}
