//! The recovery pass: drives on every payment that has not reached a final state for
//! `RECOVERY_AFTER_SECS`, from what its state says may have happened, never assuming:
//!
//! - `charging`, `unknown` (and `processing`, from old versions): the charge's outcome is not
//!   recorded. The provider's ledger decides: `captured` → `captured`, then as below;
//!   `declined` → `declined`; `pending` → left for a later pass (metric
//!   `payment_pending_charges`). No ledger row means the provider never saw the charge, or
//!   has not yet: the same charge is re-driven (same payment id as the provider's key, the
//!   stored method), and its answer counts.
//! - `captured`: seat-lock confirms the hold under the reserved booking id → booked; refused
//!   → refunded; seat-lock down → left for the next pass.
//! - `refunding`: the provider's refund (idempotent) is re-driven, then finished.
//!
//! A ledger status the state does not expect (a refunded charge nobody here refunded, a
//! status the code does not know) is [`Error::UnexpectedLedgerStatus`] with the counter
//! `payment_ledger_unexpected_status_total{status}`; the payment is left alone.
//!
//! No row lock is held and no transaction is open across a provider or seat-lock call: every
//! step is a conditional update (module `settle`, module `refund`), so the pass, the request
//! and other replicas' passes may drive one payment at once and only one moves each step.
//!
//! Two passes pick the payments, both reading [`RECOVERY_BATCH`] at a time until a batch is
//! not full and driving [`RECOVERY_CONCURRENCY`] at once, so a crash's backlog of thousands
//! settles within a minute:
//! - [`Checkout::recover_orphaned_payments`], every few seconds: the unsettled payments of a
//!   dead process (its lease expired, module `instances`), adopted (`owner_instance` set to
//!   this process in one statement, so two replicas never take the same batch), then driven.
//! - [`Checkout::recover_stuck_payments`]: every unsettled payment unchanged for
//!   `RECOVERY_AFTER_SECS`, whoever owns it (a charge still pending at the provider, a
//!   seat-lock that did not answer, rows of old versions without an owner).

use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::{StreamExt, stream};
use sea_orm::{ConnectionTrait, QueryResult};
use uuid::Uuid;

use crate::{
    checkout::{AfterCapture, Checkout},
    error::Error,
    gateway::{ChargeOutcome, ChargeStatus, LedgerCharge},
    instances::RELEASED,
    settle,
    store::{PAYMENT_COLUMNS, PaymentRecord, PaymentStatus, sql},
};

/// Unsettled payments read at once; a pass reads batches until one is not full. Large, so
/// a crash's backlog (thousands of payments in flight) is not metered out over minutes.
pub const RECOVERY_BATCH: i64 = 1_000;
/// Payments a pass drives at once: bounds the calls toward the provider and seat-lock and
/// the pooled connections a pass takes (the pool's default is 32), while a batch of 1,000
/// takes seconds, not minutes.
pub const RECOVERY_CONCURRENCY: usize = 16;
/// The states a payment may be left in between a request and its end.
const UNSETTLED: &str = "('processing', 'charging', 'unknown', 'captured', 'refunding')";

/// What one recovery pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecoveryPass {
    /// Payments of dead processes this pass adopted (the orphan pass only).
    pub adopted: usize,
    /// Payments it brought to a final state (or saw brought there by another driver).
    pub settled: usize,
    /// Charges still pending at the provider (or unknown with nothing to re-drive).
    pub pending: usize,
    /// Captured payments waiting for seat-lock to answer.
    pub waiting: usize,
    /// Payments whose step failed (logged); they are tried again on the next pass.
    pub failed: usize,
}

/// How driving one payment ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovered {
    Settled,
    Pending,
    Waiting,
}

impl Checkout {
    /// One recovery pass over payments unchanged for longer than `older_than` (see the module
    /// docs), whoever owns them. Also frees keys left `in_flight` without a payment (by
    /// versions that claimed the key before BeginCheckout and died before writing the payment).
    pub async fn recover_stuck_payments(&self, older_than: Duration) -> Result<RecoveryPass, Error> {
        let seconds = older_than.as_secs_f64();
        self.db
            .execute_raw(sql(
                "DELETE FROM idempotency_keys k WHERE k.state = 'in_flight' \
                 AND k.updated_at < now() - make_interval(secs => $1) \
                 AND NOT EXISTS (SELECT 1 FROM payments p WHERE p.idempotency_key = k.key)",
                [seconds.into()],
            ))
            .await?;
        // One cutoff for the whole pass, so a payment it moves (or leaves) is not read again.
        let cutoff: DateTime<Utc> = self
            .db
            .query_one_raw(sql("SELECT now() - make_interval(secs => $1) AS cutoff", [seconds.into()]))
            .await?
            .map(|row| row.try_get("", "cutoff"))
            .transpose()?
            .unwrap_or_else(Utc::now);
        let mut pass = RecoveryPass::default();
        // Pages in (updated_at, payment_id) order.
        let mut after: Option<(DateTime<Utc>, Uuid)> = None;
        loop {
            let rows = self
                .db
                .query_all_raw(sql(
                    &format!(
                        "SELECT {PAYMENT_COLUMNS}, updated_at FROM payments WHERE status IN {UNSETTLED} \
                         AND updated_at < $1 \
                         AND ($2::timestamptz IS NULL OR (updated_at, payment_id) > ($2, $3)) \
                         ORDER BY updated_at, payment_id LIMIT $4"
                    ),
                    [
                        cutoff.into(),
                        after.map(|(at, _)| at).into(),
                        after.map(|(_, id)| id).into(),
                        RECOVERY_BATCH.into(),
                    ],
                ))
                .await?;
            if let Some(last) = rows.last() {
                after = Some((last.try_get("", "updated_at")?, last.try_get("", "payment_id")?));
            }
            let full = rows.len() as i64 == RECOVERY_BATCH;
            self.drive_all(rows, &mut pass, false).await?;
            if !full {
                break;
            }
        }
        metrics::gauge!("payment_pending_charges").set(pass.pending as f64);
        Ok(pass)
    }

    /// Adopts and drives the unsettled payments of dead processes (module `instances`): their
    /// owner has not refreshed its lease for this process's lease, or its row is gone, or it
    /// was released ([`RELEASED`]). Payments without an owner (old versions) are left to
    /// [`Self::recover_stuck_payments`]. One seat-lock did not confirm is released again, so
    /// it is retried on the next pass (or by its user's retry) instead of after
    /// `RECOVERY_AFTER_SECS`.
    pub async fn recover_orphaned_payments(&self) -> Result<RecoveryPass, Error> {
        let mut pass = RecoveryPass::default();
        loop {
            // One statement picks and adopts a batch; SKIP LOCKED lets replicas adopt apart.
            let rows = self
                .db
                .query_all_raw(sql(
                    &format!(
                        "UPDATE payments SET owner_instance = $1 WHERE payment_id IN ( \
                         SELECT q.payment_id FROM payments q WHERE q.status IN {UNSETTLED} \
                         AND q.owner_instance IS NOT NULL AND q.owner_instance <> $1 \
                         AND NOT EXISTS (SELECT 1 FROM payment_instances i WHERE i.instance_id = q.owner_instance \
                         AND i.last_seen > now() - make_interval(secs => $2)) \
                         ORDER BY q.updated_at LIMIT $3 FOR UPDATE SKIP LOCKED) \
                         RETURNING {PAYMENT_COLUMNS}"
                    ),
                    [self.owner.id.into(), self.owner.lease.as_secs_f64().into(), RECOVERY_BATCH.into()],
                ))
                .await?;
            if rows.is_empty() {
                break;
            }
            pass.adopted += rows.len();
            metrics::counter!("payment_recovery_adopted_total").increment(rows.len() as u64);
            tracing::warn!(adopted = rows.len(), "adopting the unsettled payments of a dead payment process");
            let full = rows.len() as i64 == RECOVERY_BATCH;
            self.drive_all(rows, &mut pass, true).await?;
            if !full {
                break;
            }
        }
        Ok(pass)
    }

    /// Adopts one stalled payment for a retry of its key when nobody drives it: its owner is
    /// dead or released (module `instances`). `None` when its owner is alive (a request or
    /// recovery drives it right now), or another retry took it first.
    pub(crate) async fn take_over(&self, payment_id: Uuid) -> Result<Option<PaymentRecord>, Error> {
        let row = self
            .db
            .query_one_raw(sql(
                &format!(
                    "UPDATE payments p SET owner_instance = $2 WHERE p.payment_id = $1 \
                     AND p.status IN ('processing', 'charging', 'captured') \
                     AND p.owner_instance IS NOT NULL AND p.owner_instance <> $2 \
                     AND NOT EXISTS (SELECT 1 FROM payment_instances i WHERE i.instance_id = p.owner_instance \
                     AND i.last_seen > now() - make_interval(secs => $3)) \
                     RETURNING {PAYMENT_COLUMNS}"
                ),
                [payment_id.into(), self.owner.id.into(), self.owner.lease.as_secs_f64().into()],
            ))
            .await?;
        Ok(row.as_ref().map(PaymentRecord::from_row).transpose()?)
    }

    /// Hands a payment this process drives, and leaves stalled, over to whoever comes next
    /// (a retry of its key, any replica's orphan pass). A failure is only logged: the
    /// payment then waits for `RECOVERY_AFTER_SECS`, as before.
    pub(crate) async fn release(&self, payment_id: Uuid) {
        let released = self
            .db
            .execute_raw(sql(
                "UPDATE payments SET owner_instance = $3 WHERE payment_id = $1 AND owner_instance = $2 \
                 AND status IN ('processing', 'charging', 'captured')",
                [payment_id.into(), self.owner.id.into(), RELEASED.into()],
            ))
            .await;
        if let Err(error) = released {
            tracing::warn!(%payment_id, error = %format!("{error:#}"), "cannot release a stalled payment");
        }
    }

    /// Drives `rows` (payments), [`RECOVERY_CONCURRENCY`] at once, adding their ends to `pass`;
    /// with `release_waiting`, one seat-lock did not confirm is released.
    async fn drive_all(
        &self,
        rows: Vec<QueryResult>,
        pass: &mut RecoveryPass,
        release_waiting: bool,
    ) -> Result<(), Error> {
        let payments = rows.iter().map(PaymentRecord::from_row).collect::<Result<Vec<_>, _>>()?;
        let mut driven = stream::iter(payments)
            .map(|payment| async move {
                let payment_id = payment.payment_id;
                (payment_id, self.recover_payment(payment).await)
            })
            .buffer_unordered(RECOVERY_CONCURRENCY);
        while let Some((payment_id, ended)) = driven.next().await {
            match ended {
                Ok(Recovered::Settled) => pass.settled += 1,
                Ok(Recovered::Pending) => pass.pending += 1,
                Ok(Recovered::Waiting) => {
                    pass.waiting += 1;
                    if release_waiting {
                        self.release(payment_id).await;
                    }
                }
                Err(error) => {
                    pass.failed += 1;
                    tracing::error!(%payment_id, error = %format!("{error:#}"), "recovery could not drive a payment");
                }
            }
        }
        Ok(())
    }

    /// Drives one payment on from its state (see the module docs).
    pub async fn recover_payment(&self, payment: PaymentRecord) -> Result<Recovered, Error> {
        match payment.status {
            PaymentStatus::Processing | PaymentStatus::Charging | PaymentStatus::Unknown => {
                self.settle_charge(payment).await
            }
            PaymentStatus::Captured => self.recover_captured(payment).await,
            PaymentStatus::Refunding => {
                let current = self.refunds.complete(payment.payment_id).await?;
                Ok(match current.payment.status {
                    PaymentStatus::Refunding => Recovered::Pending,
                    _ => Recovered::Settled,
                })
            }
            PaymentStatus::Confirmed | PaymentStatus::Declined | PaymentStatus::Refunded => {
                Ok(Recovered::Settled)
            }
        }
    }

    /// Learns a charge's outcome from the provider (re-driving the charge when the provider
    /// has none) and records it.
    async fn settle_charge(&self, payment: PaymentRecord) -> Result<Recovered, Error> {
        let payment_id = payment.payment_id;
        let outcome = match self.gateway.lookup(payment_id).await? {
            Some(charge) => expected_outcome(payment_id, charge)?,
            None => match payment.payment_method.as_deref() {
                Some(method) => {
                    tracing::warn!(%payment_id, "the provider has no charge for this payment; re-driving the same charge");
                    self.db
                        .execute_raw(sql(
                            "UPDATE payments SET charge_attempts = charge_attempts + 1 WHERE payment_id = $1",
                            [payment_id.into()],
                        ))
                        .await?;
                    self.gateway.charge(payment_id, payment.amount_cents, &payment.currency, method).await?
                }
                None => {
                    // Written by an old version that did not keep the method: nothing to
                    // re-drive with; wait for the provider (reconciliation reports it).
                    tracing::error!(%payment_id, "no charge at the provider and no stored method; left unknown");
                    settle::mark_unknown(&self.writes, payment_id).await?;
                    return Ok(Recovered::Pending);
                }
            },
        };
        match outcome {
            ChargeOutcome::Captured { charge_id } => {
                match settle::mark_captured(&self.writes, payment_id, &charge_id).await? {
                    Some(payment) => self.recover_captured(payment).await,
                    None => Ok(Recovered::Settled),
                }
            }
            ChargeOutcome::Declined { reason } => {
                settle::settle_declined(&self.writes, payment, reason).await?;
                Ok(Recovered::Settled)
            }
            ChargeOutcome::Pending { .. } => {
                settle::mark_unknown(&self.writes, payment_id).await?;
                Ok(Recovered::Pending)
            }
        }
    }

    async fn recover_captured(&self, payment: PaymentRecord) -> Result<Recovered, Error> {
        let payment_id = payment.payment_id;
        match self.drive_captured(payment).await? {
            AfterCapture::Settled(response) => {
                let status = response.payment.map(|payment| payment.status());
                tracing::warn!(%payment_id, ?status, "recovery drove a captured payment on");
                Ok(Recovered::Settled)
            }
            AfterCapture::SeatLockDown(status) => {
                tracing::warn!(%payment_id, code = ?status.code(), "recovery cannot reach seat-lock; retrying on the next pass");
                Ok(Recovered::Waiting)
            }
        }
    }
}

/// The outcome a ledger row gives a payment whose charge's outcome is not recorded yet, or
/// [`Error::UnexpectedLedgerStatus`] (counted) for a status that state does not expect.
fn expected_outcome(payment_id: Uuid, charge: LedgerCharge) -> Result<ChargeOutcome, Error> {
    match charge.status {
        ChargeStatus::Captured => Ok(ChargeOutcome::Captured { charge_id: charge.charge_id }),
        ChargeStatus::Pending => Ok(ChargeOutcome::Pending { charge_id: charge.charge_id }),
        ChargeStatus::Declined => Ok(ChargeOutcome::Declined {
            reason: charge.decline_reason.unwrap_or_else(|| "card declined".to_owned()),
        }),
        status @ (ChargeStatus::Refunded | ChargeStatus::Unrecognised(_)) => {
            let status = status.as_str().to_owned();
            metrics::counter!("payment_ledger_unexpected_status_total", "status" => status.clone())
                .increment(1);
            Err(Error::UnexpectedLedgerStatus { payment_id, status })
        }
    }
}
