//! The refund state machine, one for every refund: a Pay whose hold was lost after the
//! charge, the recovery pass, and cancellations (CancelBooking, RefundBooking).
//!
//! 1. [`Refunds::begin`], one commit: the payment moves `captured` (a Pay's lost hold) or
//!    `confirmed` (a booking being cancelled) to `refunding`; the `refunds` row records the
//!    reason, who asked and the booking; a booking moves to `cancelling` (its seats stay its
//!    own until the money is back).
//! 2. [`Refunds::provider_refund`]: the provider's refund, with no transaction open. The
//!    provider is idempotent on the charge, so driving this step twice refunds once.
//! 3. [`Refunds::finish`], one commit: the refund `refunded` with the provider's refund id,
//!    the payment `refunded`, outbox `Refunded`; for a booking also `cancelled`, its
//!    `seat_guard` rows deleted (the seats can be sold again), a `seat_returns` row for
//!    seat-lock and outbox `BookingCancelled`; for a Pay, the key's stored answer.
//!
//! Every step is a conditional update on the state the previous one committed, so any number
//! of drivers (the request, recovery on any replica) may run one refund: exactly one `finish`
//! commits, the others read what it wrote. A crash between steps leaves `refunding`, which
//! recovery drives on with [`Refunds::complete`].

use std::sync::Arc;

use prost::Message;
use sea_orm::{ConnectionTrait, DatabaseConnection, DatabaseTransaction, TransactionTrait};
use service_runtime::bus::envelope;
use ticketing_proto::{
    events::{self, event_envelope::Body},
    internal, v1,
};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::{
    config::CrashPoint,
    error::Error,
    gateway::PaymentGateway,
    relay,
    store::{self, BookingRecord, PAYMENT_COLUMNS, PaymentRecord, PaymentStatus, sql},
};

/// Who asked for a refund (`refunds.requested_by`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestedBy {
    /// The service itself: a Pay whose hold was lost, or the recovery pass.
    System,
    /// The booking's owner (CancelBooking).
    User,
    /// An operator (RefundBooking).
    Operator,
}

impl RequestedBy {
    /// The value stored in `refunds.requested_by`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::System => "system",
            Self::User => "user",
            Self::Operator => "operator",
        }
    }
}

/// A refund to start.
#[derive(Debug, Clone)]
pub struct RefundOrder {
    pub payment_id: Uuid,
    /// The booking to cancel with the refund; `None` for a Pay whose hold was lost (nothing
    /// was booked).
    pub booking_id: Option<Uuid>,
    /// Told to the user (`Refunded.reason`, the booking's `cancel_reason`).
    pub reason: String,
    pub requested_by: RequestedBy,
}

/// What [`Refunds::begin`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Begun {
    /// `refunding` is committed, by this call or an earlier one: drive it on with
    /// [`Refunds::complete`].
    Refunding,
    /// Already refunded: nothing is left to do.
    Refunded,
    /// The payment is in no state this order can refund (the booking or payment is not
    /// confirmed, a lost hold's payment is no longer `captured`...). Nothing was written.
    NotRefundable(PaymentStatus),
}

/// A payment and its booking, as they stand.
#[derive(Debug, Clone)]
pub struct Current {
    pub payment: PaymentRecord,
    pub booking: Option<BookingRecord>,
}

impl Current {
    /// The answer a Pay of this payment gives.
    pub fn pay_response(&self) -> v1::PayResponse {
        let booking = self.booking.as_ref().filter(|_| self.payment.status == PaymentStatus::Confirmed);
        v1::PayResponse {
            payment: Some(self.payment.to_proto()),
            booking: booking.map(BookingRecord::to_proto),
            replayed: false,
        }
    }
}

/// Runs refunds; cheap to clone.
#[derive(Clone)]
pub struct Refunds {
    db: DatabaseConnection,
    gateway: Arc<dyn PaymentGateway>,
    outbox_ready: Arc<Notify>,
    /// Test-only fault injection (`PAYMENT_CRASH_AT`); `None` in production.
    crash_at: Option<CrashPoint>,
}

impl Refunds {
    /// Refunds through `gateway` (the timeout layer), waking the relay after each commit.
    pub fn new(
        db: DatabaseConnection,
        gateway: Arc<dyn PaymentGateway>,
        outbox_ready: Arc<Notify>,
        crash_at: Option<CrashPoint>,
    ) -> Self {
        Self { db, gateway, outbox_ready, crash_at }
    }

    /// The three steps in a row. Returns where the payment stands: `refunded`; still
    /// `refunding` when the provider could not be reached (recovery drives it on; the error
    /// is logged); or untouched, in its own state, when the order could not refund it.
    pub async fn refund(&self, order: &RefundOrder) -> Result<Current, Error> {
        match self.begin(order).await? {
            Begun::Refunding => match self.complete(order.payment_id).await {
                Ok(current) => Ok(current),
                Err(error @ (Error::Gateway(_) | Error::MissingCharge(_))) => {
                    tracing::error!(payment_id = %order.payment_id, error = %format!("{error:#}"),
                        "refund not made yet; the recovery pass will drive it on");
                    self.current(order.payment_id).await
                }
                Err(error) => Err(error),
            },
            Begun::Refunded | Begun::NotRefundable(_) => self.current(order.payment_id).await,
        }
    }

    /// Step 1, one commit (see the module docs).
    pub async fn begin(&self, order: &RefundOrder) -> Result<Begun, Error> {
        let txn = self.db.begin().await?;
        let (from, booking_filter) = match order.booking_id {
            Some(_) => (PaymentStatus::Confirmed, "booking_id = $3"),
            None => (PaymentStatus::Captured, "$3::uuid IS NULL"),
        };
        let moved = txn
            .execute_raw(sql(
                &format!(
                    "UPDATE payments SET status = 'refunding', updated_at = now() \
                     WHERE payment_id = $1 AND status = $2 AND {booking_filter}"
                ),
                [order.payment_id.into(), from.as_str().into(), order.booking_id.into()],
            ))
            .await?
            .rows_affected();
        if moved == 1 {
            let cancelling = match order.booking_id {
                None => 1,
                Some(booking_id) => txn
                    .execute_raw(sql(
                        "UPDATE bookings SET status = 'cancelling' \
                         WHERE booking_id = $1 AND payment_id = $2 AND status = 'confirmed'",
                        [booking_id.into(), order.payment_id.into()],
                    ))
                    .await?
                    .rows_affected(),
            };
            if cancelling == 1 {
                txn.execute_raw(sql(
                    "INSERT INTO refunds (payment_id, booking_id, state, reason, requested_by) \
                     VALUES ($1, $2, 'refunding', $3, $4)",
                    [
                        order.payment_id.into(),
                        order.booking_id.into(),
                        order.reason.as_str().into(),
                        order.requested_by.as_str().into(),
                    ],
                ))
                .await?;
                txn.commit().await?;
                tracing::info!(payment_id = %order.payment_id, booking_id = ?order.booking_id,
                    requested_by = order.requested_by.as_str(), reason = %order.reason, "refund started");
                CrashPoint::abort_if(self.crash_at, CrashPoint::AfterRefundingCommitted);
                return Ok(Begun::Refunding);
            }
        }
        txn.rollback().await?;
        let payment = store::payment(&self.db, order.payment_id)
            .await?
            .ok_or_else(|| Error::PaymentNotFound(order.payment_id.to_string()))?;
        Ok(match payment.status {
            PaymentStatus::Refunding => Begun::Refunding,
            PaymentStatus::Refunded => Begun::Refunded,
            other => Begun::NotRefundable(other),
        })
    }

    /// Steps 2 and 3, for a payment that is `refunding` (what recovery re-drives). A payment
    /// someone else already finished answers as it stands.
    pub async fn complete(&self, payment_id: Uuid) -> Result<Current, Error> {
        match self.provider_refund(payment_id).await? {
            Some(refund_id) => self.finish(payment_id, &refund_id).await,
            None => self.current(payment_id).await,
        }
    }

    /// Step 2: the provider's refund of the payment's charge, with no transaction open.
    /// Returns the provider's refund id, or `None` when the payment is no longer `refunding`
    /// (another driver finished it).
    pub async fn provider_refund(&self, payment_id: Uuid) -> Result<Option<String>, Error> {
        let Some(row) = self
            .db
            .query_one_raw(sql(
                "SELECT provider_charge_id FROM payments WHERE payment_id = $1 AND status = 'refunding'",
                [payment_id.into()],
            ))
            .await?
        else {
            return Ok(None);
        };
        let charge_id: Option<String> = row.try_get("", "provider_charge_id")?;
        let charge_id = charge_id.ok_or(Error::MissingCharge(payment_id))?;
        let refund_id = self.gateway.refund(&charge_id).await?;
        metrics::counter!("payment_refunds_total").increment(1);
        CrashPoint::abort_if(self.crash_at, CrashPoint::AfterProviderRefund);
        Ok(Some(refund_id))
    }

    /// Step 3, one commit (see the module docs). When another driver finished first, nothing
    /// is written and the payment answers as it stands.
    pub async fn finish(&self, payment_id: Uuid, provider_refund_id: &str) -> Result<Current, Error> {
        let txn = self.db.begin().await?;
        let Some(refund) = txn
            .query_one_raw(sql(
                "UPDATE refunds SET state = 'refunded', provider_refund_id = $2, updated_at = now() \
                 WHERE payment_id = $1 AND state = 'refunding' RETURNING booking_id, reason, requested_by",
                [payment_id.into(), provider_refund_id.into()],
            ))
            .await?
        else {
            txn.rollback().await?;
            return self.current(payment_id).await;
        };
        let booking_id: Option<Uuid> = refund.try_get("", "booking_id")?;
        let reason: String = refund.try_get("", "reason")?;
        let requested_by: String = refund.try_get("", "requested_by")?;
        let payment = txn
            .query_one_raw(sql(
                &format!(
                    "UPDATE payments SET status = 'refunded', failure_reason = $2, updated_at = now() \
                     WHERE payment_id = $1 AND status = 'refunding' RETURNING {PAYMENT_COLUMNS}"
                ),
                [payment_id.into(), reason.as_str().into()],
            ))
            .await?
            .ok_or(Error::RefundOutOfStep(payment_id))?;
        let payment = PaymentRecord::from_row(&payment)?;
        relay::enqueue(&txn, &refunded_event(&payment, &reason)).await?;
        let booking = match booking_id {
            Some(booking_id) => {
                let by_operator = requested_by == RequestedBy::Operator.as_str();
                Some(cancel_booking(&txn, booking_id, &reason, by_operator).await?)
            }
            None => {
                let current = Current { payment: payment.clone(), booking: None };
                txn.execute_raw(sql(
                    "UPDATE idempotency_keys SET state = 'done', response = $2, updated_at = now() \
                     WHERE key = $1",
                    [payment.idempotency_key.as_str().into(), current.pay_response().encode_to_vec().into()],
                ))
                .await?;
                None
            }
        };
        txn.commit().await?;
        self.outbox_ready.notify_one();
        tracing::warn!(%payment_id, booking_id = ?booking_id, %reason, "refunded");
        Ok(Current { payment, booking })
    }

    /// The payment and its booking (if any), as they stand.
    pub async fn current(&self, payment_id: Uuid) -> Result<Current, Error> {
        let payment = store::payment(&self.db, payment_id)
            .await?
            .ok_or_else(|| Error::PaymentNotFound(payment_id.to_string()))?;
        let booking = match payment.booking_id {
            Some(booking_id) => store::booking(&self.db, booking_id).await?,
            None => None,
        };
        Ok(Current { payment, booking })
    }
}

/// In `txn`: the booking `cancelling → cancelled`, its seat guard rows deleted, the seats
/// queued for seat-lock (`seat_returns`) and `BookingCancelled` in the outbox.
async fn cancel_booking(
    txn: &DatabaseTransaction,
    booking_id: Uuid,
    reason: &str,
    by_operator: bool,
) -> Result<BookingRecord, Error> {
    let cancelled = txn
        .execute_raw(sql(
            "UPDATE bookings SET status = 'cancelled', cancelled_at = now(), cancel_reason = $2 \
             WHERE booking_id = $1 AND status = 'cancelling'",
            [booking_id.into(), reason.into()],
        ))
        .await?
        .rows_affected();
    if cancelled != 1 {
        return Err(Error::BookingNotFound(booking_id.to_string()));
    }
    let booking = store::booking(txn, booking_id)
        .await?
        .ok_or_else(|| Error::BookingNotFound(booking_id.to_string()))?;
    txn.execute_raw(sql("DELETE FROM seat_guard WHERE booking_id = $1", [booking_id.into()])).await?;
    let seats = internal::ReturnSeatsRequest {
        event_id: booking.event_id.to_string(),
        booking_id: booking_id.to_string(),
        hold_id: booking.hold_id.to_string(),
        user_id: booking.user_id.clone(),
        zone_id: booking.zone_id.clone(),
        seat_ids: booking.seat_ids.clone(),
        quantity: booking.quantity,
    };
    txn.execute_raw(sql(
        "INSERT INTO seat_returns (booking_id, payload) VALUES ($1, $2) ON CONFLICT (booking_id) DO NOTHING",
        [booking_id.into(), seats.encode_to_vec().into()],
    ))
    .await?;
    relay::enqueue(txn, &cancelled_event(&booking, reason, by_operator)).await?;
    Ok(booking)
}

/// `Refunded`, once per payment.
fn refunded_event(payment: &PaymentRecord, reason: &str) -> events::EventEnvelope {
    envelope(
        format!("refunded:{}", payment.payment_id),
        Body::Refunded(events::Refunded {
            event_id: payment.event_id.to_string(),
            user_id: payment.user_id.clone(),
            payment_id: payment.payment_id.to_string(),
            hold_id: payment.hold_id.to_string(),
            amount_cents: payment.amount_cents,
            currency: payment.currency.clone(),
            reason: reason.to_owned(),
        }),
    )
}

/// `BookingCancelled`, once per booking.
fn cancelled_event(booking: &BookingRecord, reason: &str, by_operator: bool) -> events::EventEnvelope {
    envelope(
        format!("booking_cancelled:{}", booking.booking_id),
        Body::BookingCancelled(events::BookingCancelled {
            event_id: booking.event_id.to_string(),
            user_id: booking.user_id.clone(),
            booking_id: booking.booking_id.to_string(),
            payment_id: booking.payment_id.to_string(),
            hold_id: booking.hold_id.to_string(),
            zone_id: booking.zone_id.clone(),
            seat_ids: booking.seat_ids.clone(),
            quantity: booking.quantity,
            amount_cents: booking.amount_cents,
            currency: booking.currency.clone(),
            reason: reason.to_owned(),
            by_operator,
        }),
    )
}
