//! The service's errors and their gRPC statuses.

use service_runtime::status::with_reason;
use tonic::{Code, Status};

/// Machine-readable reason: the user is neither waiting nor holding a valid pass.
pub const REASON_NOT_IN_QUEUE: &str = "NOT_IN_QUEUE";
/// Machine-readable reason: the user joined too often; `retry-after` says when to retry.
pub const REASON_RATE_LIMITED: &str = "RATE_LIMITED";
/// Machine-readable reason: inventory does not know the event.
pub const REASON_EVENT_NOT_FOUND: &str = "EVENT_NOT_FOUND";
/// Machine-readable reason: this replica holds as many WatchQueue streams as it may.
pub const REASON_TOO_MANY_WATCHERS: &str = "TOO_MANY_WATCHERS";

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A field of the request is malformed; the status is already built by the validator.
    #[error("invalid argument: {0}")]
    InvalidArgument(Box<Status>),
    #[error("event {0} does not exist")]
    UnknownEvent(String),
    #[error("user {user_id} is not in the queue of event {event_id}")]
    NotInQueue { event_id: String, user_id: String },
    #[error("too many joins; retry after {retry_after_ms} ms")]
    RateLimited { retry_after_ms: u64 },
    #[error("this replica already holds {0} WatchQueue streams")]
    TooManyWatchers(usize),
    #[error("inventory is unreachable: {0}")]
    InventoryUnavailable(Box<Status>),
    #[error("redis failed: {0}")]
    Redis(#[from] fred::error::Error),
    #[error("redis answered something unexpected: {0}")]
    UnexpectedReply(String),
}

impl From<Status> for Error {
    fn from(status: Status) -> Self {
        Self::InvalidArgument(Box::new(status))
    }
}

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        match error {
            Error::InvalidArgument(status) => *status,
            Error::UnknownEvent(event_id) => with_reason(
                Code::NotFound,
                format!("event_id: event {event_id} does not exist"),
                REASON_EVENT_NOT_FOUND,
                [("event_id", event_id)],
            ),
            Error::NotInQueue { event_id, user_id } => with_reason(
                Code::NotFound,
                format!("user {user_id} is neither waiting for nor admitted to event {event_id}"),
                REASON_NOT_IN_QUEUE,
                [("event_id", event_id), ("user_id", user_id)],
            ),
            Error::RateLimited { retry_after_ms } => {
                let seconds = retry_after_ms.div_ceil(1000).max(1);
                let mut status = with_reason(
                    Code::ResourceExhausted,
                    format!("too many joins; retry after {seconds} s"),
                    REASON_RATE_LIMITED,
                    [("retry_after_seconds", seconds.to_string())],
                );
                status.metadata_mut().insert("retry-after", seconds.into());
                status
            }
            Error::TooManyWatchers(limit) => with_reason(
                Code::ResourceExhausted,
                format!(
                    "this replica already streams to {limit} watchers; poll GetQueueStatus or retry later"
                ),
                REASON_TOO_MANY_WATCHERS,
                [("limit", limit.to_string())],
            ),
            Error::InventoryUnavailable(status) => {
                tracing::error!(code = ?status.code(), message = status.message(), "inventory call failed");
                Status::unavailable("inventory is unavailable")
            }
            Error::Redis(error) => {
                tracing::error!(error = %format!("{error:#}"), "redis call failed");
                Status::unavailable("queue store is unavailable")
            }
            Error::UnexpectedReply(reply) => {
                tracing::error!(%reply, "unexpected redis reply");
                Status::internal("internal error")
            }
        }
    }
}
