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

use std::time::Duration;

use sea_orm::ConnectionTrait;
use uuid::Uuid;

use crate::{
    checkout::{AfterCapture, Checkout},
    error::Error,
    gateway::{ChargeOutcome, ChargeStatus, LedgerCharge},
    settle,
    store::{PAYMENT_COLUMNS, PaymentRecord, PaymentStatus, sql},
};

/// Unsettled payments driven per pass, so one pass stays short.
const RECOVERY_BATCH: i64 = 100;

/// What one recovery pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecoveryPass {
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
    /// docs). Also frees keys left `in_flight` without a payment (by versions that claimed
    /// the key before BeginCheckout and died before writing the payment).
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
        let stuck = self
            .db
            .query_all_raw(sql(
                &format!(
                    "SELECT {PAYMENT_COLUMNS} FROM payments \
                     WHERE status IN ('processing', 'charging', 'unknown', 'captured', 'refunding') \
                     AND updated_at < now() - make_interval(secs => $1) ORDER BY updated_at LIMIT $2"
                ),
                [seconds.into(), RECOVERY_BATCH.into()],
            ))
            .await?;
        let mut pass = RecoveryPass::default();
        for row in stuck {
            let payment = PaymentRecord::from_row(&row)?;
            let payment_id = payment.payment_id;
            match self.recover_payment(payment).await {
                Ok(Recovered::Settled) => pass.settled += 1,
                Ok(Recovered::Pending) => pass.pending += 1,
                Ok(Recovered::Waiting) => pass.waiting += 1,
                Err(error) => {
                    pass.failed += 1;
                    tracing::error!(%payment_id, error = %format!("{error:#}"), "recovery could not drive a payment");
                }
            }
        }
        metrics::gauge!("payment_pending_charges").set(pass.pending as f64);
        Ok(pass)
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
