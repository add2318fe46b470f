//! gRPC errors that callers can act on, and checks for the ids every request carries.

use std::collections::HashMap;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// The `domain` of every `google.rpc.ErrorInfo` the mesh sends.
pub const ERROR_DOMAIN: &str = "ticketing.v1";

/// A status with a `google.rpc.ErrorInfo` detail whose `reason` a client can match on.
pub fn with_reason(
    code: Code,
    message: impl Into<String>,
    reason: &str,
    metadata: impl IntoIterator<Item = (&'static str, String)>,
) -> Status {
    let metadata: HashMap<String, String> = metadata.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
    Status::with_error_details(code, message, ErrorDetails::with_error_info(reason, ERROR_DOMAIN, metadata))
}

/// The `reason` and metadata of a status made by [`with_reason`], if it has them.
pub fn reason(status: &Status) -> Option<(String, HashMap<String, String>)> {
    status.get_error_details().error_info().map(|info| (info.reason.clone(), info.metadata.clone()))
}

/// An `INVALID_ARGUMENT` naming the offending field.
pub fn invalid(field: &str, problem: impl std::fmt::Display) -> Status {
    with_reason(
        Code::InvalidArgument,
        format!("{field}: {problem}"),
        "INVALID_ARGUMENT",
        [("field", field.to_owned())],
    )
}

/// Checks a caller-chosen user id: 1-128 of `[A-Za-z0-9_.@:-]`.
pub fn user_id(value: &str) -> Result<&str, Status> {
    let ok = !value.is_empty()
        && value.len() <= 128
        && value.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.@:-".contains(&b));
    if ok { Ok(value) } else { Err(invalid("user_id", "must be 1-128 of [A-Za-z0-9_.@:-]")) }
}

/// Checks an id the mesh issued (events, venues, holds, payments, bookings): a UUID.
pub fn uuid(field: &str, value: &str) -> Result<uuid::Uuid, Status> {
    if value.is_empty() {
        return Err(invalid(field, "is required"));
    }
    uuid::Uuid::parse_str(value).map_err(|_| invalid(field, "must be a UUID"))
}
