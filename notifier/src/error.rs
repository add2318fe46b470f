//! Every way a notifier request can fail, and the gRPC status each one becomes.

use service_runtime::status::{invalid, with_reason};
use tonic::{Code, Status};

/// The notifier's errors, one variant per cause.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request field is malformed or out of range.
    #[error("{field}: {problem}")]
    InvalidInput { field: &'static str, problem: String },
    /// A webhook URL that is not http(s) or points at a host outside `WEBHOOK_ALLOWED_HOSTS`.
    #[error("webhook url not allowed: {problem}")]
    WebhookUrlNotAllowed { problem: String },
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
                "WEBHOOK_URL_NOT_ALLOWED",
                [("field", "url".to_owned())],
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
