//! gRPC errors that callers can act on, and checks for the ids every request carries.

use std::collections::HashMap;

pub use ticketing_proto::errors::ErrorReason;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// The `domain` of every `google.rpc.ErrorInfo` the mesh sends.
pub const ERROR_DOMAIN: &str = "ticketing.v1";

/// A status with a `google.rpc.ErrorInfo` detail whose `reason` a client can match on: the
/// wire name of `reason` (`ErrorReason::SeatTaken` sends `"SEAT_TAKEN"`), so every reason the
/// mesh sends is a value of the contract's `ErrorReason` enum.
pub fn with_reason(
    code: Code,
    message: impl Into<String>,
    reason: ErrorReason,
    metadata: impl IntoIterator<Item = (&'static str, String)>,
) -> Status {
    error_info_status(code, message, reason.wire_name(), metadata)
}

/// A status that passes on the `reason` string another service sent (payment replaying
/// seat-lock's stored refusal), as received: a reason of a newer peer that this build's
/// enum does not know yet still reaches the caller unchanged.
pub fn with_received_reason(
    code: Code,
    message: impl Into<String>,
    reason: &str,
    metadata: impl IntoIterator<Item = (&'static str, String)>,
) -> Status {
    error_info_status(code, message, reason, metadata)
}

fn error_info_status(
    code: Code,
    message: impl Into<String>,
    reason: &str,
    metadata: impl IntoIterator<Item = (&'static str, String)>,
) -> Status {
    // The last guard for a site that formatted a caller's value without [`quote`] or
    // [`prefix`]: whatever it built, the status stays small (see [`QUOTE_MAX_BYTES`]).
    let metadata: HashMap<String, String> =
        metadata.into_iter().map(|(k, v)| (k.to_owned(), cut(&v, MAX_METADATA_VALUE_BYTES))).collect();
    Status::with_error_details(
        code,
        cut(&message.into(), MAX_MESSAGE_BYTES),
        ErrorDetails::with_error_info(reason, ERROR_DOMAIN, metadata),
    )
}

/// The most bytes of a caller's value that [`quote`] and [`prefix`] keep. An error that
/// repeats a whole bad value grows with it: from about 7 KB of `grpc-message` and
/// `grpc-status-details-bin` the load balancer resets the stream, and the caller sees
/// `UNAVAILABLE` instead of the error. 64 bytes name any id the mesh issues or accepts.
pub const QUOTE_MAX_BYTES: usize = 64;

/// The most bytes of a status message that [`with_reason`] sends: a bounded quote plus the
/// sentence around it fit with room to spare. The message travels twice (`grpc-message`, and
/// inside `grpc-status-details-bin`), and the whole status must stay far below the load
/// balancer's header buffer (16 KiB).
pub const MAX_MESSAGE_BYTES: usize = 512;

/// The most bytes of each `ErrorInfo` metadata value that [`with_reason`] sends: the seats of
/// a `SEAT_TAKEN` at the largest per-user limit (50 seat ids of up to 31 bytes) fit.
pub const MAX_METADATA_VALUE_BYTES: usize = 2048;

/// A caller's value for an error message: Rust-quoted (control characters escaped), at
/// most [`QUOTE_MAX_BYTES`] of it, cut at a character boundary and followed by
/// `…(N bytes)` when it is longer. `quote("A-1")` is `"A-1"` with the quotes.
pub fn quote(value: &str) -> String {
    let mut quoted = String::with_capacity(QUOTE_MAX_BYTES + 24);
    quoted.push('"');
    let mut truncated = false;
    for c in value.chars() {
        let escaped = c.escape_debug();
        let bytes: usize = escaped.clone().map(char::len_utf8).sum();
        if quoted.len() - 1 + bytes > QUOTE_MAX_BYTES {
            truncated = true;
            break;
        }
        quoted.extend(escaped);
    }
    quoted.push('"');
    if truncated {
        quoted.push_str(&format!("…({} bytes)", value.len()));
    }
    quoted
}

/// A caller's value for `ErrorInfo` metadata: the value itself when it has at most
/// [`QUOTE_MAX_BYTES`], else its longest prefix within that many bytes (cut at a character
/// boundary) followed by `…`.
pub fn prefix(value: &str) -> String {
    cut(value, QUOTE_MAX_BYTES)
}

/// `value` when it has at most `max` bytes, else its longest prefix within `max` bytes (at a
/// character boundary) followed by `…`.
fn cut(value: &str, max: usize) -> String {
    if value.len() <= max {
        return value.to_owned();
    }
    let mut end = max;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &value[..end])
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
        ErrorReason::InvalidArgument,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_keeps_short_values_and_bounds_long_ones() {
        assert_eq!(quote("A-1-1"), "\"A-1-1\"");
        assert_eq!(quote("a\nb"), "\"a\\nb\"");
        let long = "x".repeat(1 << 20);
        assert_eq!(quote(&long), format!("\"{}\"…(1048576 bytes)", "x".repeat(QUOTE_MAX_BYTES)));
        // Multi-byte characters are never cut, and escapes count at their escaped length.
        let wide = "€".repeat(1000);
        let quoted = quote(&wide);
        assert!(quoted.starts_with(&format!("\"{}\"", "€".repeat(QUOTE_MAX_BYTES / 3))));
        assert!(quoted.ends_with("…(3000 bytes)"));
        let controls = "\0".repeat(1000);
        assert!(quote(&controls).len() <= QUOTE_MAX_BYTES + 24);
    }

    #[test]
    fn prefix_cuts_at_a_character_boundary() {
        assert_eq!(prefix("zone-A"), "zone-A");
        let wide = "é".repeat(100);
        assert_eq!(prefix(&wide), format!("{}…", "é".repeat(QUOTE_MAX_BYTES / 2)));
    }

    #[test]
    fn a_status_stays_small_whatever_was_formatted_into_it() {
        let huge = "ü".repeat(1 << 19);
        let status = with_reason(
            Code::InvalidArgument,
            format!("zone {huge}"),
            ErrorReason::ZoneNotFound,
            [("zone_id", huge.clone())],
        );
        assert!(status.message().len() <= MAX_MESSAGE_BYTES + '…'.len_utf8(), "{}", status.message().len());
        // The details repeat the message, then carry the metadata.
        let most = 2 * (MAX_MESSAGE_BYTES + '…'.len_utf8()) + MAX_METADATA_VALUE_BYTES + 64;
        assert!(status.details().len() < most, "{}", status.details().len());
        let (_, metadata) = reason(&status).unwrap_or_default();
        assert_eq!(metadata.get("zone_id").map(String::len), Some(MAX_METADATA_VALUE_BYTES + '…'.len_utf8()));
    }

    #[test]
    fn reasons_travel_as_the_enum_name_without_its_prefix() {
        let status =
            with_reason(Code::Aborted, "taken", ErrorReason::SeatTaken, [("seat_ids", "A-1-1".into())]);
        let (sent, metadata) = reason(&status).unwrap_or_default();
        assert_eq!(
            (sent.as_str(), metadata.get("seat_ids").map(String::as_str)),
            ("SEAT_TAKEN", Some("A-1-1"))
        );
        assert_eq!(ErrorReason::from_wire_name(&sent), Some(ErrorReason::SeatTaken));
        // A received reason is passed on as it came, known to this build or not.
        let passed = with_received_reason(Code::FailedPrecondition, "later", "SOME_NEWER_REASON", []);
        assert_eq!(reason(&passed).map(|(r, _)| r).as_deref(), Some("SOME_NEWER_REASON"));
    }
}
