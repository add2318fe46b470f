//! `CancelBooking` (the owner, until the event's cutoff) and `RefundBooking` (an operator, at
//! any time): the booking's charge is refunded and its seats go back on sale.
//!
//! 1. The key is claimed in `idempotency_keys` as `cancel:<key>`: Pay's keys are
//!    `[A-Za-z0-9_-]`, so the `cancel:` prefix is a key space of its own, shared by both RPCs
//!    (the request hash names the RPC, so one key cannot serve both). A key already answered
//!    replays its answer.
//! 2. The booking is read: another user's booking is NOT_FOUND exactly as a missing one. A
//!    confirmed booking is checked against the event's cutoff ([`cutoffs`], asked from
//!    inventory) unless an operator refunds it; one already cancelling or cancelled answers
//!    where it stands (and is driven on).
//! 3. [`crate::refund`] runs the refund: `refunding` and `cancelling` committed, the
//!    provider's refund with no transaction open, then one commit that records the refund,
//!    cancels the booking, deletes its `seat_guard` rows and queues its seats for seat-lock
//!    ([`crate::seat_returns`], woken here) and `Refunded` + `BookingCancelled` for the relay.
//! 4. The answer is stored on the key. When the provider could not refund yet, the answer is
//!    CANCELLING / REFUNDING: recovery finishes the refund, and a replay of the key drives it
//!    on and answers where it stands. Refusals (not found, cancellation closed) are stored
//!    and replayed; a failure of a backing service is not, so a retry runs again (a key left
//!    without an answer is dropped by recovery's cleanup after its window; a retry then
//!    claims it anew, to the same outcome, since every step goes by the booking's state).

pub mod cutoffs;

use std::sync::Arc;

use prost::Message;
use sea_orm::{ConnectionTrait, DatabaseConnection};
use sha2::{Digest, Sha256};
use ticketing_proto::v1;
use tokio::sync::Notify;
use tonic::{Code, Status};
use uuid::Uuid;

use crate::{
    error::Error,
    refund::{Current, RefundOrder, Refunds, RequestedBy},
    store::{self, BookingRecord, BookingStatus, PaymentStatus, sql},
};
use cutoffs::Cutoffs;

/// Prefix of a cancellation's key in `idempotency_keys`, keeping it apart from Pay's keys.
const KEY_SCOPE: &str = "cancel:";

/// Told to the user when the owner cancels (CancelBooking carries no reason).
pub const OWNER_CANCEL_REASON: &str = "cancelled by the customer";

/// Who cancels.
#[derive(Debug, Clone)]
pub enum Canceller {
    /// The booking's owner (CancelBooking), until the event's cutoff.
    Owner { user_id: String },
    /// An operator (RefundBooking), at any time, with the reason told to the user.
    Operator { reason: String },
}

/// A validated CancelBooking or RefundBooking.
#[derive(Debug, Clone)]
pub struct CancelCommand {
    pub idempotency_key: String,
    pub booking_id: Uuid,
    pub by: Canceller,
}

impl CancelCommand {
    /// SHA-256 over the canonical request: the RPC, then every field, length-prefixed.
    fn request_hash(&self) -> Vec<u8> {
        let booking_id = self.booking_id.to_string();
        let (rpc, who) = match &self.by {
            Canceller::Owner { user_id } => ("cancel_booking.v1", user_id.as_str()),
            Canceller::Operator { reason } => ("refund_booking.v1", reason.as_str()),
        };
        let mut hasher = Sha256::new();
        for field in [rpc, &self.idempotency_key, &booking_id, who] {
            hasher.update((field.len() as u64).to_be_bytes());
            hasher.update(field.as_bytes());
        }
        hasher.finalize().to_vec()
    }

    fn stored_key(&self) -> String {
        format!("{KEY_SCOPE}{}", self.idempotency_key)
    }
}

/// What claiming a key found.
enum Claim {
    /// The key is new: run.
    New,
    /// The key was used before without a final answer: its request crashed or met a backing
    /// service down (nothing stored), or its cancellation was still under way. Run again:
    /// every step is idempotent by the booking's state, so this drives it on.
    Again,
    /// Answered for good: replay it.
    Answered(Box<v1::CancelBookingResponse>),
}

/// Runs cancellations; shared by the gRPC handlers.
pub struct Cancellations {
    db: DatabaseConnection,
    refunds: Refunds,
    cutoffs: Cutoffs,
    /// Wakes the seat-return drainer once a cancellation has queued seats.
    seat_returns: Arc<Notify>,
}

impl Cancellations {
    /// Cancellations refunding through `refunds`, asking `cutoffs` for events' cutoffs.
    pub fn new(
        db: DatabaseConnection,
        refunds: Refunds,
        cutoffs: Cutoffs,
        seat_returns: Arc<Notify>,
    ) -> Self {
        Self { db, refunds, cutoffs, seat_returns }
    }

    /// Cancels and refunds a booking, once per key. See the module docs for the steps.
    pub async fn cancel(&self, command: CancelCommand) -> Result<v1::CancelBookingResponse, Error> {
        let key = command.stored_key();
        let hash = command.request_hash();
        let replayed = match self.claim(&key, &hash).await? {
            Claim::Answered(response) => {
                return Ok(v1::CancelBookingResponse { replayed: true, ..*response });
            }
            Claim::New => false,
            Claim::Again => true,
        };
        match self.run(&command).await {
            Ok(mut response) => {
                self.store_answer(&key, &response).await?;
                response.replayed = replayed;
                Ok(response)
            }
            // No such booking for this caller (another user's booking looks the same): the
            // key is given back, so a stranger's probe leaves no trace.
            Err(error @ Error::BookingNotFound(_)) => {
                self.release_key(&key).await?;
                Err(error)
            }
            Err(error) => {
                if let Some(status) = refusal(&error) {
                    self.store_refusal(&key, &status).await?;
                }
                Err(error)
            }
        }
    }

    /// The steps after the key: owner, state, cutoff, refund.
    async fn run(&self, command: &CancelCommand) -> Result<v1::CancelBookingResponse, Error> {
        let booking = match &command.by {
            Canceller::Owner { user_id } => {
                store::booking_of_user(&self.db, command.booking_id, user_id).await?
            }
            Canceller::Operator { .. } => store::booking(&self.db, command.booking_id)
                .await?
                .ok_or_else(|| Error::BookingNotFound(command.booking_id.to_string()))?,
        };
        let (reason, requested_by) = match &command.by {
            Canceller::Owner { .. } => {
                if booking.status == BookingStatus::Confirmed {
                    self.cutoffs.check_open(booking.event_id).await?;
                }
                (OWNER_CANCEL_REASON.to_owned(), RequestedBy::User)
            }
            Canceller::Operator { reason } => (reason.clone(), RequestedBy::Operator),
        };
        let order = RefundOrder {
            payment_id: booking.payment_id,
            booking_id: Some(booking.booking_id),
            reason,
            requested_by,
        };
        let current = self.refunds.refund(&order).await?;
        self.seat_returns.notify_one();
        answer(&booking, current)
    }

    /// Claims `key` for `hash`, or reads what it holds: a stored refusal is returned as the
    /// error it was.
    async fn claim(&self, key: &str, hash: &[u8]) -> Result<Claim, Error> {
        let claimed = self
            .db
            .execute_raw(sql(
                "INSERT INTO idempotency_keys (key, request_hash, state) VALUES ($1, $2, 'in_flight') \
                 ON CONFLICT (key) DO NOTHING",
                [key.into(), hash.to_vec().into()],
            ))
            .await?
            .rows_affected();
        if claimed == 1 {
            return Ok(Claim::New);
        }
        let row = self
            .db
            .query_one_raw(sql(
                "SELECT request_hash, state, response, error_code, error_message, error_reason \
                 FROM idempotency_keys WHERE key = $1",
                [key.into()],
            ))
            .await?
            // Cleaned up between the two statements (a stale `in_flight` key): the caller retries.
            .ok_or(Error::RequestInFlight)?;
        if row.try_get::<Vec<u8>>("", "request_hash")? != hash {
            return Err(Error::IdempotencyKeyReused);
        }
        if row.try_get::<String>("", "state")? != "done" {
            return Ok(Claim::Again);
        }
        if let Some(bytes) = row.try_get::<Option<Vec<u8>>>("", "response")? {
            let response = v1::CancelBookingResponse::decode(bytes.as_slice())?;
            return Ok(if is_final(&response) { Claim::Answered(Box::new(response)) } else { Claim::Again });
        }
        Err(Error::StoredFailure {
            code: row.try_get::<Option<i32>>("", "error_code")?.unwrap_or(Code::Internal as i32),
            message: row.try_get::<Option<String>>("", "error_message")?.unwrap_or_default(),
            reason: row.try_get("", "error_reason")?,
        })
    }

    async fn store_answer(&self, key: &str, response: &v1::CancelBookingResponse) -> Result<(), Error> {
        self.db
            .execute_raw(sql(
                "UPDATE idempotency_keys SET state = 'done', response = $2, updated_at = now() WHERE key = $1",
                [key.into(), response.encode_to_vec().into()],
            ))
            .await?;
        Ok(())
    }

    async fn release_key(&self, key: &str) -> Result<(), Error> {
        self.db
            .execute_raw(sql(
                "DELETE FROM idempotency_keys WHERE key = $1 AND state = 'in_flight'",
                [key.into()],
            ))
            .await?;
        Ok(())
    }

    async fn store_refusal(&self, key: &str, status: &Status) -> Result<(), Error> {
        let reason = service_runtime::status::reason(status).map(|(reason, _)| reason);
        self.db
            .execute_raw(sql(
                "UPDATE idempotency_keys SET state = 'done', error_code = $2, error_message = $3, \
                 error_reason = $4, updated_at = now() WHERE key = $1",
                [key.into(), (status.code() as i32).into(), status.message().into(), reason.into()],
            ))
            .await?;
        Ok(())
    }
}

/// The status of a refusal that is the key's final answer; `None` for failures a retry may
/// get past (a backing service down), which are not stored.
fn refusal(error: &Error) -> Option<Status> {
    let status = match error {
        Error::CancellationClosed { closed_at, cutoff_seconds } => {
            Error::CancellationClosed { closed_at: *closed_at, cutoff_seconds: *cutoff_seconds }
        }
        _ => return None,
    };
    Some(status.into())
}

/// Cancelled and refunded: nothing is left to drive.
fn is_final(response: &v1::CancelBookingResponse) -> bool {
    response.booking.as_ref().is_some_and(|b| b.status == v1::BookingStatus::Cancelled as i32)
        && response.payment.as_ref().is_some_and(|p| p.status == v1::PaymentStatus::Refunded as i32)
}

/// The answer from where the refund left the payment and booking.
fn answer(asked: &BookingRecord, current: Current) -> Result<v1::CancelBookingResponse, Error> {
    let booking = current.booking.ok_or_else(|| Error::BookingNotFound(asked.booking_id.to_string()))?;
    if booking.status == BookingStatus::Confirmed {
        // The refund could not start: the payment is in a state no refund starts from.
        return Err(Error::NotCancellable {
            booking_id: booking.booking_id,
            status: current.payment.status.as_str(),
        });
    }
    if current.payment.status != PaymentStatus::Refunded {
        tracing::warn!(booking_id = %booking.booking_id, payment = current.payment.status.as_str(),
            "cancellation answered before the refund finished; recovery or a replay finishes it");
    }
    Ok(v1::CancelBookingResponse {
        booking: Some(booking.to_proto()),
        payment: Some(current.payment.to_proto()),
        replayed: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command(by: Canceller) -> CancelCommand {
        CancelCommand { idempotency_key: "key-0001".into(), booking_id: Uuid::nil(), by }
    }

    #[test]
    fn the_hash_names_the_rpc_and_every_field() {
        let owner = command(Canceller::Owner { user_id: "u1".into() });
        let operator = command(Canceller::Operator { reason: "u1".into() });
        assert_ne!(owner.request_hash(), operator.request_hash());
        let other_user = command(Canceller::Owner { user_id: "u2".into() });
        assert_ne!(owner.request_hash(), other_user.request_hash());
        let other_booking = CancelCommand { booking_id: Uuid::max(), ..owner.clone() };
        assert_ne!(owner.request_hash(), other_booking.request_hash());
        assert_eq!(owner.request_hash(), owner.clone().request_hash());
        assert_eq!(owner.stored_key(), "cancel:key-0001");
    }
}
