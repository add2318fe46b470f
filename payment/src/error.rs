//! Every way a payment RPC can fail, and the one mapping to gRPC statuses.

use service_runtime::status::{ErrorReason, with_reason, with_received_reason};
use tonic::{Code, Status};

use crate::gateway::GatewayError;

/// Why a payment RPC failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request field is malformed; the status names the field.
    #[error("invalid request: {}", .0.message())]
    InvalidInput(Status),
    /// The idempotency key was first used for a different request.
    #[error("idempotency key reused with a different request")]
    IdempotencyKeyReused,
    /// The first request with this key has not finished yet.
    #[error("a request with this idempotency key is still in flight")]
    RequestInFlight,
    /// The stored final error of the first request with this key, replayed.
    #[error("replayed failure: {message}")]
    StoredFailure { code: i32, message: String, reason: Option<String> },
    /// Seat-lock refused to move the hold into checkout (expired, unknown, not the owner...);
    /// its status is passed on unchanged.
    #[error("seat-lock refused: {}", .0.message())]
    SeatLockRefused(Status),
    /// Seat-lock could not be reached or failed; nothing was charged.
    #[error("seat-lock unavailable: {}", .0.message())]
    SeatLockUnavailable(Status),
    /// Seat-lock answered with a hold that cannot be paid (negative price, no currency).
    #[error("seat-lock returned an unusable hold: {0}")]
    BadHold(String),
    /// Another live payment (another key) holds this hold; nothing was charged. Its id, when
    /// it could be read.
    #[error("hold is already being paid by payment {0:?}")]
    HoldAlreadyBeingPaid(Option<uuid::Uuid>),
    /// This replica runs as many payment tasks as `MAX_PAYMENTS_IN_FLIGHT` allows; nothing
    /// was done.
    #[error("too many payments in flight (limit {limit})")]
    TooManyPayments { limit: usize },
    /// No such payment for this user.
    #[error("payment {0} not found")]
    PaymentNotFound(String),
    /// No such booking for this user.
    #[error("booking {0} not found")]
    BookingNotFound(String),
    /// The owner asked to cancel after the event's cancellation cutoff (`cancel`).
    #[error("cancellations closed at {} ({cutoff_seconds} s before the event starts)", .closed_at.to_rfc3339())]
    CancellationClosed { closed_at: chrono::DateTime<chrono::Utc>, cutoff_seconds: u32 },
    /// Inventory could not answer the event's cutoff (`cancel`); nothing changed.
    #[error("inventory unavailable: {}", .0.message())]
    InventoryUnavailable(Status),
    /// Inventory does not know a booking's event (`cancel`): the books and the catalogue
    /// disagree.
    #[error("event {0} of a booking is unknown to inventory")]
    EventUnknown(uuid::Uuid),
    /// A confirmed booking whose payment is in a state no refund starts from (`cancel`).
    #[error("booking {booking_id} cannot be cancelled: its payment is {status}")]
    NotCancellable { booking_id: uuid::Uuid, status: &'static str },
    /// Postgres failed.
    #[error("database: {0}")]
    Database(#[from] sea_orm::DbErr),
    /// The payment provider failed; the charge's outcome is settled by recovery.
    #[error("payment provider: {0}")]
    Gateway(#[from] GatewayError),
    /// A stored response could not be decoded.
    #[error("stored response is corrupt: {0}")]
    CorruptResponse(#[from] prost::DecodeError),
    /// The provider's ledger shows a status this code does not expect for the payment's
    /// state; the payment is left as it is for an operator (and reconciliation) to look at.
    #[error("payment {payment_id}: the provider's ledger says {status:?}, which this state does not expect")]
    UnexpectedLedgerStatus { payment_id: uuid::Uuid, status: String },
    /// A payment past the charge has no provider charge id to refund.
    #[error("payment {0} has no provider charge id")]
    MissingCharge(uuid::Uuid),
    /// A refund row says `refunding` while its payment is not: the books disagree with each
    /// other, and nothing is finished until an operator looks.
    #[error("payment {0} is not refunding although its refund is")]
    RefundOutOfStep(uuid::Uuid),
    /// The outbox relay could not publish to NATS; the rows stay for the next attempt.
    #[error("publish: {0}")]
    Publish(#[from] service_runtime::bus::BusError),
    /// The task running the checkout died.
    #[error("checkout task failed: {0}")]
    CheckoutTask(#[from] tokio::task::JoinError),
}

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        match error {
            Error::InvalidInput(status) | Error::SeatLockRefused(status) => status,
            Error::IdempotencyKeyReused => with_reason(
                Code::FailedPrecondition,
                "idempotency_key was already used for a different request",
                ErrorReason::IdempotencyKeyReused,
                [],
            ),
            Error::RequestInFlight => with_reason(
                Code::Aborted,
                "a request with this idempotency_key is still being processed; retry later",
                ErrorReason::RequestInFlight,
                [],
            ),
            Error::StoredFailure { code, message, reason } => match reason {
                Some(reason) => with_received_reason(Code::from(code), message, &reason, []),
                None => Status::new(Code::from(code), message),
            },
            Error::SeatLockUnavailable(status) => {
                tracing::warn!(code = ?status.code(), message = status.message(), "seat-lock unavailable");
                with_reason(
                    Code::Unavailable,
                    "seat-lock is unavailable; retry later",
                    ErrorReason::SeatLockUnavailable,
                    [],
                )
            }
            Error::HoldAlreadyBeingPaid(payment_id) => with_reason(
                Code::FailedPrecondition,
                "this hold is already being paid with another idempotency_key",
                ErrorReason::HoldAlreadyBeingPaid,
                payment_id.map(|id| ("payment_id", id.to_string())),
            ),
            Error::TooManyPayments { limit } => with_reason(
                Code::ResourceExhausted,
                format!("this replica is running {limit} payments, its limit; retry later with the same key"),
                ErrorReason::TooManyPaymentsInFlight,
                [("limit", limit.to_string())],
            ),
            Error::PaymentNotFound(id) => with_reason(
                Code::NotFound,
                format!("payment {id} not found"),
                ErrorReason::PaymentNotFound,
                [],
            ),
            Error::BookingNotFound(id) => with_reason(
                Code::NotFound,
                format!("booking {id} not found"),
                ErrorReason::BookingNotFound,
                [],
            ),
            Error::CancellationClosed { closed_at, cutoff_seconds } => with_reason(
                Code::FailedPrecondition,
                format!(
                    "cancellations closed at {} ({cutoff_seconds} s before the event starts)",
                    closed_at.to_rfc3339()
                ),
                ErrorReason::CancellationClosed,
                [
                    ("cancellable_until", closed_at.to_rfc3339()),
                    ("cancellation_cutoff_seconds", cutoff_seconds.to_string()),
                ],
            ),
            Error::InventoryUnavailable(status) => {
                tracing::warn!(code = ?status.code(), message = status.message(), "inventory unavailable");
                with_reason(
                    Code::Unavailable,
                    "inventory is unavailable; retry later",
                    ErrorReason::InventoryUnavailable,
                    [],
                )
            }
            error @ (Error::BadHold(_)
            | Error::Database(_)
            | Error::Gateway(_)
            | Error::CorruptResponse(_)
            | Error::UnexpectedLedgerStatus { .. }
            | Error::MissingCharge(_)
            | Error::EventUnknown(_)
            | Error::NotCancellable { .. }
            | Error::RefundOutOfStep(_)
            | Error::Publish(_)
            | Error::CheckoutTask(_)) => {
                tracing::error!(error = %format!("{error:#}"), "payment request failed");
                Status::internal("internal error")
            }
        }
    }
}
