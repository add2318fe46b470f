//! An event's life beyond requests and ticks: the opening (seal, keyed shuffle, open), the
//! rebuild after Redis lost the event's state, and forgetting a finished event.

use fred::{
    interfaces::{KeysInterface, SetsInterface},
    types::{Expiration, Key, SetOptions, Value},
};

use super::{
    Counters, Opening, PREQUEUE_PAGE, REBUILD_BATCH, REBUILD_LOCK, Rebuilt, RestoredPass, Store,
    reply::{int, number, ready, string, uint},
};
use crate::{
    error::Error,
    fairness::{EventShuffleKey, PREQUEUE_TIER},
};

impl Store {
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
