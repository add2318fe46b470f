//! Every way a seat-lock request can fail, and the one mapping to gRPC statuses.

use service_runtime::status::{ErrorReason, with_reason};
use ticketing_proto::pass::PassError;
use tonic::{Code, Status};

/// One variant per cause; [`From<Error> for Status`] gives each its precise code and reason.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad input, already phrased as an INVALID_ARGUMENT naming the field.
    #[error("invalid argument: {}", .0.message())]
    InvalidArgument(Box<Status>),
    #[error("event {0} does not exist")]
    EventNotFound(String),
    #[error("inventory is unavailable: {}", .0.message())]
    InventoryUnavailable(Box<Status>),
    #[error("pass refused: {0}")]
    Pass(PassError),
    #[error("seats already taken: {}", .0.join(","))]
    SeatTaken(Vec<String>),
    #[error("zone {zone_id} has only {free} free")]
    ZoneSoldOut { zone_id: String, free: String },
    #[error("zone {zone_id} has no {quantity} adjacent free seats")]
    NoAdjacentSeats { zone_id: String, quantity: u32 },
    #[error("ticket limit {limit} exceeded: {already} already held or bought")]
    TicketLimitExceeded { limit: String, already: String },
    #[error("hold {0} does not exist")]
    HoldNotFound(String),
    #[error("hold {0} belongs to another user")]
    NotHoldOwner(String),
    #[error("hold {0} is in checkout")]
    HoldInCheckout(String),
    #[error("hold {0} is already sold")]
    HoldSold(String),
    #[error("hold {0} has expired or was released")]
    HoldExpired(String),
    #[error("event {0} is being rebuilt from payment")]
    Rebuilding(String),
    #[error("payment is unavailable to rebuild event {event_id}: {}", .status.message())]
    PaymentUnavailable { event_id: String, status: Box<Status> },
    #[error("redis: {0}")]
    Redis(#[from] fred::error::Error),
    #[error("unexpected script reply: {0:?}")]
    UnexpectedReply(Vec<String>),
}

impl Error {
    /// An INVALID_ARGUMENT about `field`.
    pub fn invalid(field: &str, problem: impl std::fmt::Display) -> Self {
        Self::InvalidArgument(Box::new(service_runtime::status::invalid(field, problem)))
    }
}

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        let message = error.to_string();
        match error {
            Error::InvalidArgument(status) => *status,
            Error::EventNotFound(event_id) => {
                with_reason(Code::NotFound, message, ErrorReason::EventNotFound, [("event_id", event_id)])
            }
            Error::InventoryUnavailable(status) => {
                tracing::warn!(code = ?status.code(), error = status.message(), "inventory call failed");
                Status::unavailable("inventory is unavailable")
            }
            Error::Pass(problem) => {
                let reason = match problem {
                    PassError::Expired => ErrorReason::PassExpired,
                    PassError::WrongUser => ErrorReason::PassWrongUser,
                    PassError::WrongEvent => ErrorReason::PassWrongEvent,
                    PassError::Revoked => ErrorReason::PassRevoked,
                    PassError::Malformed
                    | PassError::UnknownKey
                    | PassError::BadSignature
                    | PassError::BadKeyConfig(_) => ErrorReason::PassInvalid,
                };
                with_reason(Code::PermissionDenied, message, reason, [])
            }
            Error::SeatTaken(seat_ids) => with_reason(
                Code::Aborted,
                message,
                ErrorReason::SeatTaken,
                [("seat_ids", seat_ids.join(","))],
            ),
            Error::ZoneSoldOut { zone_id, free } => with_reason(
                Code::FailedPrecondition,
                message,
                ErrorReason::ZoneSoldOut,
                [("zone_id", zone_id), ("free", free)],
            ),
            Error::NoAdjacentSeats { zone_id, quantity } => with_reason(
                Code::FailedPrecondition,
                message,
                ErrorReason::NoAdjacentSeats,
                [("zone_id", zone_id), ("quantity", quantity.to_string())],
            ),
            Error::TicketLimitExceeded { limit, already } => with_reason(
                Code::FailedPrecondition,
                message,
                ErrorReason::TicketLimitExceeded,
                [("limit", limit), ("already", already)],
            ),
            Error::HoldNotFound(hold_id) => {
                with_reason(Code::NotFound, message, ErrorReason::HoldNotFound, [("hold_id", hold_id)])
            }
            Error::NotHoldOwner(hold_id) => with_reason(
                Code::PermissionDenied,
                message,
                ErrorReason::NotHoldOwner,
                [("hold_id", hold_id)],
            ),
            Error::HoldInCheckout(hold_id) => with_reason(
                Code::FailedPrecondition,
                message,
                ErrorReason::HoldInCheckout,
                [("hold_id", hold_id)],
            ),
            Error::HoldSold(hold_id) => {
                with_reason(Code::FailedPrecondition, message, ErrorReason::HoldSold, [("hold_id", hold_id)])
            }
            Error::HoldExpired(hold_id) => with_reason(
                Code::FailedPrecondition,
                message,
                ErrorReason::HoldExpired,
                [("hold_id", hold_id)],
            ),
            Error::Rebuilding(event_id) => with_reason(
                Code::Unavailable,
                "rebuilding state from payment; retry shortly",
                ErrorReason::Rebuilding,
                [("event_id", event_id)],
            ),
            Error::PaymentUnavailable { event_id, status } => {
                tracing::warn!(%event_id, code = ?status.code(), error = status.message(), "cannot rebuild from payment");
                with_reason(
                    Code::Unavailable,
                    "rebuilding state from payment; payment is unavailable, retry shortly",
                    ErrorReason::Rebuilding,
                    [("event_id", event_id)],
                )
            }
            Error::Redis(error) => {
                tracing::error!(error = %format!("{error:#}"), "redis failed");
                match error.kind() {
                    fred::error::ErrorKind::IO
                    | fred::error::ErrorKind::Timeout
                    | fred::error::ErrorKind::Canceled => Status::unavailable("seat store is unavailable"),
                    _ => Status::internal("internal error"),
                }
            }
            Error::UnexpectedReply(reply) => {
                tracing::error!(?reply, "unexpected script reply");
                Status::internal("internal error")
            }
        }
    }
}
