//! Who drives a payment in flight: each payment process has an instance id (random at
//! start), written on every payment it claims (`payments.owner_instance`), and a lease row in
//! `payment_instances` whose `last_seen` it refreshes every third of the lease
//! (`INSTANCE_LEASE_SECS`, [`DEFAULT_LEASE`]).
//!
//! An instance whose `last_seen` is older than the lease (or whose row is gone) is dead: the
//! recovery loop of any live process adopts its unsettled payments at once (module
//! `recovery`) instead of waiting `RECOVERY_AFTER_SECS` for them to look stuck. A graceful
//! stop deletes the row, so survivors adopt without waiting for the lease.
//!
//! Adoption only changes who drives a payment, never what is done with its money: recovery
//! drives an adopted payment exactly as a stuck one (what may have happened is looked up at
//! the provider). A process wrongly taken for dead (its heartbeats could not reach Postgres
//! for a whole lease) is harmless for the same reason as recovery running beside a request:
//! every step is a conditional update on the state it leaves. All times are Postgres's
//! clock, so the replicas' clocks need not agree.

use std::time::Duration;

use sea_orm::{ConnectionTrait, DatabaseConnection, DbErr};
use service_runtime::CancellationToken;
use uuid::Uuid;

use crate::store::sql;

/// The default lease: a dead process's payments are adopted a few seconds after its death.
/// It is refreshed every third of it, so a process must miss three heartbeats to be taken for
/// dead; two (a slow Postgres, a pause) are tolerated.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(6);
/// Rows of instances dead this long are deleted; their payments, if any are left, still count
/// as a dead owner's (a missing row is a dead owner).
pub const FORGET_AFTER: Duration = Duration::from_secs(24 * 3600);

/// The owner written on a payment that nobody drives any more (its request ended with the
/// payment between states, or recovery could not reach seat-lock): no instance has this id,
/// so the payment counts as a dead owner's and the next retry of its key, or the next orphan
/// pass of any replica, adopts it.
pub const RELEASED: Uuid = Uuid::nil();

/// Who this process is to the payments it drives: its instance id and the lease by which it
/// judges other instances dead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub id: Uuid,
    pub lease: Duration,
}

/// This process's lease.
#[derive(Clone)]
pub struct Instance {
    db: DatabaseConnection,
    id: Uuid,
    lease: Duration,
}

impl Instance {
    /// Picks a random instance id and takes a lease of `lease`.
    pub async fn register(db: &DatabaseConnection, lease: Duration) -> Result<Self, DbErr> {
        let instance = Self { db: db.clone(), id: Uuid::new_v4(), lease };
        instance.heartbeat().await?;
        tracing::info!(instance_id = %instance.id, "payment instance registered");
        Ok(instance)
    }

    /// The instance id written on the payments this process claims.
    pub fn id(&self) -> Uuid {
        self.id
    }

    /// How long an instance may go without a heartbeat before it counts as dead.
    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// This process as the owner of the payments it drives.
    pub fn owner(&self) -> Owner {
        Owner { id: self.id, lease: self.lease }
    }

    /// Refreshes the lease (re-taking it if the row was deleted meanwhile).
    pub async fn heartbeat(&self) -> Result<(), DbErr> {
        self.db
            .execute_raw(sql(
                "INSERT INTO payment_instances (instance_id) VALUES ($1) \
                 ON CONFLICT (instance_id) DO UPDATE SET last_seen = now()",
                [self.id.into()],
            ))
            .await?;
        Ok(())
    }

    /// Refreshes the lease every third of it until `stopping`, forgetting long-dead
    /// instances on the way. The lease is kept while the server drains; [`Self::retire`]
    /// gives it up after.
    pub async fn run(self, stopping: CancellationToken) {
        let mut ticks = tokio::time::interval(self.lease / 3);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stopping.cancelled() => break,
                _ = ticks.tick() => {}
            }
            if let Err(error) = self.heartbeat().await {
                tracing::warn!(error = %format!("{error:#}"), "cannot refresh this instance's lease");
            }
            if let Err(error) = self.forget_dead().await {
                tracing::warn!(error = %format!("{error:#}"), "cannot forget long-dead instances");
            }
        }
    }

    /// Gives the lease up, so the payments left to this process are adopted at once.
    pub async fn retire(&self) {
        let retired = self
            .db
            .execute_raw(sql("DELETE FROM payment_instances WHERE instance_id = $1", [self.id.into()]))
            .await;
        match retired {
            Ok(_) => tracing::info!(instance_id = %self.id, "payment instance retired"),
            Err(error) => {
                tracing::warn!(error = %format!("{error:#}"), "cannot retire this instance's lease")
            }
        }
    }

    async fn forget_dead(&self) -> Result<(), DbErr> {
        self.db
            .execute_raw(sql(
                "DELETE FROM payment_instances WHERE last_seen < now() - make_interval(secs => $1)",
                [FORGET_AFTER.as_secs_f64().into()],
            ))
            .await?;
        Ok(())
    }
}
