//! The service's errors and their gRPC statuses.

use service_runtime::status::{ErrorReason, with_reason};
use tonic::{Code, Status};

/// `NOT_IN_QUEUE`'s metadata: since when (unix ms) the event's queue exists. A waiting page
/// that joined earlier lost its place with Redis; one that joined later was admitted and let
/// its pass expire, or left.
pub const QUEUE_STARTED_AT_MS: &str = "queue_started_at_ms";

/// When a caller should ask again while the event's waiting room is rebuilt: a rebuild reads
/// the last pass ttl of the event's history and takes about a second.
const REBUILD_RETRY_AFTER_SECONDS: u64 = 1;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A field of the request is malformed; the status is already built by the validator.
    #[error("invalid argument: {0}")]
    InvalidArgument(Box<Status>),
    /// A status received from a call (validation helpers of `service-runtime`, another
    /// service) other than INVALID_ARGUMENT: passed on with its own code.
    #[error("{code:?}: {message}", code = .0.code(), message = .0.message())]
    Received(Box<Status>),
    /// Redis lost the event's state after its sale opened; it is being rebuilt.
    #[error("the waiting room of event {0} is being rebuilt")]
    Rebuilding(String),
    /// The event's history (the JetStream stream) could not be read for a rebuild.
    #[error("cannot read the event history: {0}")]
    HistoryUnreadable(String),
    #[error("the sale of event {0} is closed")]
    SaleClosed(String),
    #[error("event {0} does not exist")]
    UnknownEvent(String),
    /// `queue_started_at_ms`: since when the event's queue exists (Redis time, unix ms); a
    /// place taken before then was lost with Redis, and the user must join again.
    #[error("user {user_id} is not in the queue of event {event_id}")]
    NotInQueue { event_id: String, user_id: String, queue_started_at_ms: i64 },
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

/// A received status keeps its code: a validator's INVALID_ARGUMENT stays one, a callee's
/// UNAVAILABLE or NOT_FOUND is not turned into bad input.
impl From<Status> for Error {
    fn from(status: Status) -> Self {
        match status.code() {
            Code::InvalidArgument => Self::InvalidArgument(Box::new(status)),
            _ => Self::Received(Box::new(status)),
        }
    }
}

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        match error {
            Error::InvalidArgument(status) => *status,
            Error::Received(status) => match status.code() {
                // A callee's own failure says nothing the caller can act on and may carry its
                // internals: logged here, a plain INTERNAL out.
                Code::Internal | Code::Unknown | Code::DataLoss | Code::Ok => {
                    tracing::error!(code = ?status.code(), message = status.message(), "a call failed");
                    Status::internal("internal error")
                }
                _ => *status,
            },
            Error::Rebuilding(event_id) => {
                let mut status = with_reason(
                    Code::Unavailable,
                    format!(
                        "the waiting room of event {event_id} lost its state and is being rebuilt; \
                         retry in {REBUILD_RETRY_AFTER_SECONDS} s (a waiting user joins again)"
                    ),
                    ErrorReason::QueueRebuilding,
                    [
                        ("event_id", event_id),
                        ("retry_after_seconds", REBUILD_RETRY_AFTER_SECONDS.to_string()),
                    ],
                );
                status.metadata_mut().insert("retry-after", REBUILD_RETRY_AFTER_SECONDS.into());
                status
            }
            Error::HistoryUnreadable(error) => {
                tracing::error!(%error, "cannot read the event history");
                Status::unavailable("the event history is unavailable")
            }
            Error::SaleClosed(event_id) => with_reason(
                Code::FailedPrecondition,
                format!("event_id: the sale of event {event_id} is closed"),
                ErrorReason::SaleClosed,
                [("event_id", event_id)],
            ),
            Error::UnknownEvent(event_id) => with_reason(
                Code::NotFound,
                format!("event_id: event {event_id} does not exist"),
                ErrorReason::EventNotFound,
                [("event_id", event_id)],
            ),
            Error::NotInQueue { event_id, user_id, queue_started_at_ms } => with_reason(
                Code::NotFound,
                format!(
                    "user {user_id} is neither waiting for nor admitted to event {event_id}; join to get a place \
                     (this queue exists since {queue_started_at_ms} ms: a place taken before then was lost)"
                ),
                ErrorReason::NotInQueue,
                [
                    ("event_id", event_id),
                    ("user_id", user_id),
                    (QUEUE_STARTED_AT_MS, queue_started_at_ms.to_string()),
                ],
            ),
            Error::RateLimited { retry_after_ms } => {
                let seconds = retry_after_ms.div_ceil(1000).max(1);
                let mut status = with_reason(
                    Code::ResourceExhausted,
                    format!("too many joins; retry after {seconds} s"),
                    ErrorReason::RateLimited,
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
                ErrorReason::TooManyWatchers,
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use service_runtime::status::reason;
    use tonic::{Code, Status};

    use super::{Error, ErrorReason};

    /// What a caller receives for a status that reached the service from a call.
    fn passed_on(status: Status) -> Status {
        Status::from(Error::from(status))
    }

    #[test]
    fn a_received_status_is_passed_on_with_its_own_code() {
        for code in [
            Code::InvalidArgument,
            Code::NotFound,
            Code::Unavailable,
            Code::PermissionDenied,
            Code::Unauthenticated,
            Code::ResourceExhausted,
            Code::FailedPrecondition,
            Code::DeadlineExceeded,
        ] {
            let error = Error::from(Status::new(code, "the callee's message"));
            if code != Code::InvalidArgument {
                assert!(!matches!(error, Error::InvalidArgument(_)), "{code:?} became {error}");
            }
            let status = Status::from(error);
            assert_eq!((status.code(), status.message()), (code, "the callee's message"));
        }
    }

    #[test]
    fn a_callees_internal_failure_is_logged_not_leaked() {
        let status = passed_on(Status::internal("pq: password authentication failed for user admin"));
        assert_eq!((status.code(), status.message()), (Code::Internal, "internal error"));
    }

    #[test]
    fn a_rebuilding_queue_is_unavailable_with_a_reason_and_retry_after() {
        let status = Status::from(Error::Rebuilding("e1".into()));
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(reason(&status).unwrap().0, ErrorReason::QueueRebuilding.wire_name());
        assert_eq!(status.metadata().get("retry-after").unwrap(), "1");
    }
}
