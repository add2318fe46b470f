//! Every way a notifier request can fail, and the gRPC status each one becomes.

use service_runtime::status::{ErrorReason, invalid, quote, with_reason};
use tonic::{Code, Status};

use crate::webhook::address::Refusal;

/// The notifier's errors, one variant per cause.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request field is malformed or out of range.
    #[error("{field}: {problem}")]
    InvalidInput { field: &'static str, problem: String },
    /// A webhook URL that is not http(s).
    #[error("webhook url not allowed: {problem}")]
    WebhookUrlNotAllowed { problem: String },
    /// A webhook URL whose scheme, port or resolved addresses the policy refuses.
    #[error("webhook refused: {0}")]
    WebhookRefused(#[from] Refusal),
    /// The user already has `MAX_WEBHOOKS_PER_USER` webhooks.
    #[error("at most {limit} webhooks per user")]
    WebhookLimitReached { limit: u32 },
    /// The replica already serves `MAX_SUBSCRIBERS` live streams.
    #[error("at most {limit} live Subscribe streams per replica")]
    TooManySubscribers { limit: usize },
    /// Postgres failed.
    #[error("database: {0}")]
    Database(#[from] sea_orm::DbErr),
    /// A stored notification's source envelope does not decode.
    #[error("stored envelope does not decode: {0}")]
    CorruptEnvelope(#[from] prost::DecodeError),
}

impl Error {
    /// An [`Error::InvalidInput`] for `field`.
    pub fn invalid(field: &'static str, problem: impl Into<String>) -> Self {
        Self::InvalidInput { field, problem: problem.into() }
    }
}

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        match error {
            Error::InvalidInput { field, problem } => invalid(field, problem),
            Error::WebhookUrlNotAllowed { problem } => with_reason(
                Code::InvalidArgument,
                format!("url: {problem}"),
                ErrorReason::WebhookUrlNotAllowed,
                [("field", "url".to_owned())],
            ),
            Error::WebhookRefused(refusal) => match refusal {
                Refusal::HttpNotAllowed | Refusal::PortNotAllowed(_) => with_reason(
                    Code::InvalidArgument,
                    format!("url: {refusal}"),
                    ErrorReason::WebhookUrlNotAllowed,
                    [("field", "url".to_owned())],
                ),
                // The address itself is not echoed: callers must not learn what internal
                // names resolve to.
                Refusal::AddressForbidden { host, address: _, class } => with_reason(
                    Code::InvalidArgument,
                    format!(
                        "url: host {} resolves to a {} address, which webhooks may not reach",
                        quote(&host),
                        class.name()
                    ),
                    ErrorReason::WebhookAddressForbidden,
                    [("field", "url".to_owned()), ("range", class.name().to_owned())],
                ),
                Refusal::Unresolved { host, problem } => with_reason(
                    Code::InvalidArgument,
                    format!("url: host {} does not resolve: {problem}", quote(&host)),
                    ErrorReason::WebhookHostUnresolved,
                    [("field", "url".to_owned())],
                ),
            },
            Error::WebhookLimitReached { limit } => with_reason(
                Code::FailedPrecondition,
                format!("at most {limit} webhooks per user; this user has them all"),
                ErrorReason::WebhookLimitReached,
                [("limit", limit.to_string())],
            ),
            Error::TooManySubscribers { limit } => with_reason(
                Code::ResourceExhausted,
                format!(
                    "this replica already serves its {limit} live Subscribe streams; retry later \
                     (ListNotifications reads the inbox meanwhile)"
                ),
                ErrorReason::TooManySubscribers,
                [("limit", limit.to_string())],
            ),
            Error::Database(e) => {
                tracing::error!(error = %format!("{e:#}"), "database error");
                match e {
                    sea_orm::DbErr::Conn(_) | sea_orm::DbErr::ConnectionAcquire(_) => {
                        Status::unavailable("database unavailable")
                    }
                    _ => Status::internal("internal error"),
                }
            }
            Error::CorruptEnvelope(e) => {
                tracing::error!(error = %format!("{e:#}"), "corrupt stored notification");
                Status::internal("internal error")
            }
        }
    }
}
