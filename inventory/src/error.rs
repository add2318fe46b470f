//! The one error type of the service and its mapping to gRPC statuses.

use service_runtime::status::{ErrorReason, invalid, prefix, quote, with_reason};
use tonic::{Code, Status};

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad input; `field` names the offending request field.
    #[error("{field}: {problem}")]
    Invalid { field: String, problem: String },
    /// The venue id is well-formed but no venue has it.
    #[error("venue {0} not found")]
    VenueNotFound(String),
    /// The event id is well-formed but no event has it.
    #[error("event {0} not found")]
    EventNotFound(String),
    /// The event has no zone with this id.
    #[error("event {event_id} has no zone {zone_id}")]
    ZoneNotFound { event_id: String, zone_id: String },
    /// Too many `WatchSeatMap` streams are open on this replica.
    #[error("too many seat map watchers")]
    TooManyWatchers,
    /// Postgres failed.
    #[error("database error: {0}")]
    Database(#[from] sea_orm::DbErr),
    /// A stored row could not be read back (a bug or a manual edit).
    #[error("corrupt stored row: {0}")]
    CorruptRow(String),
    /// A status answered by a shared check (`service_runtime::status`) or another service,
    /// passed on as received: its code, message and details.
    #[error("{}: {}", .0.code(), .0.message())]
    Rejected(Box<Status>),
}

impl Error {
    /// An INVALID_ARGUMENT naming `field`.
    pub fn invalid(field: impl Into<String>, problem: impl Into<String>) -> Self {
        Self::Invalid { field: field.into(), problem: problem.into() }
    }
}

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        match error {
            Error::Invalid { field, problem } => invalid(&field, problem),
            Error::VenueNotFound(id) => with_reason(
                Code::NotFound,
                format!("venue_id: venue {id} not found"),
                ErrorReason::VenueNotFound,
                [("venue_id", id)],
            ),
            Error::EventNotFound(id) => with_reason(
                Code::NotFound,
                format!("event_id: event {id} not found"),
                ErrorReason::EventNotFound,
                [("event_id", id)],
            ),
            Error::ZoneNotFound { event_id, zone_id } => with_reason(
                Code::NotFound,
                format!("zone_id: event {event_id} has no zone {}", quote(&zone_id)),
                ErrorReason::ZoneNotFound,
                [("event_id", event_id), ("zone_id", prefix(&zone_id))],
            ),
            Error::TooManyWatchers => with_reason(
                Code::ResourceExhausted,
                "too many seat map watchers on this replica; retry later",
                ErrorReason::TooManyWatchers,
                [],
            ),
            Error::Database(error) => {
                tracing::error!(error = %format!("{error:#}"), "database error");
                Status::unavailable("catalogue database unavailable")
            }
            Error::CorruptRow(problem) => {
                tracing::error!(%problem, "corrupt stored row");
                Status::internal("internal error")
            }
            Error::Rejected(status) => *status,
        }
    }
}

impl From<Status> for Error {
    /// Keeps the status whole: its own code (an upstream NOT_FOUND or UNAVAILABLE stays one)
    /// and its `ErrorInfo` naming the field.
    fn from(status: Status) -> Self {
        Self::Rejected(Box::new(status))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test code: a panic is a failed test

    use super::*;

    /// A status received from a shared check or another service keeps its code and its
    /// details on the way out; before, every one became INVALID_ARGUMENT.
    #[test]
    fn a_received_status_is_passed_on_with_its_own_code() {
        for code in [Code::NotFound, Code::Unavailable, Code::ResourceExhausted, Code::PermissionDenied] {
            let received = Status::new(code, "from upstream");
            let passed: Status = Error::from(received).into();
            assert_eq!(passed.code(), code, "{passed:?}");
            assert_eq!(passed.message(), "from upstream");
        }
        let invalid = service_runtime::status::uuid("event_id", "nope").unwrap_err();
        let passed: Status = Error::from(invalid.clone()).into();
        assert_eq!(passed.code(), Code::InvalidArgument);
        assert_eq!(service_runtime::status::reason(&passed), service_runtime::status::reason(&invalid));
    }
}
