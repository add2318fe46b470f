//! The `reason` strings of the mesh's `google.rpc.ErrorInfo` details, made from the
//! [`ErrorReason`] enum of `ticketing/v1/errors.proto`.
//!
//! A reason travels as the enum value's name without its `ERROR_REASON_` prefix
//! (`ErrorReason::SeatTaken` is `"SEAT_TAKEN"`), so the proto's list and the strings clients
//! match cannot drift: the services only build statuses from an [`ErrorReason`].

pub use crate::v1::ErrorReason;

/// What every [`ErrorReason`] name starts with and no wire reason does.
const PREFIX: &str = "ERROR_REASON_";

impl ErrorReason {
    /// The string sent as `ErrorInfo.reason`: the value's proto name without `ERROR_REASON_`
    /// (`"SEAT_TAKEN"`). [`ErrorReason::Unspecified`] is `"UNSPECIFIED"`, which no service sends.
    pub fn wire_name(self) -> &'static str {
        let name = self.as_str_name();
        name.strip_prefix(PREFIX).unwrap_or(name)
    }

    /// The reason a received `ErrorInfo.reason` names, or `None` for a string that is no
    /// reason of this contract (or is `"UNSPECIFIED"`).
    pub fn from_wire_name(reason: &str) -> Option<Self> {
        if reason.starts_with(PREFIX) {
            return None;
        }
        Self::from_str_name(&format!("{PREFIX}{reason}")).filter(|r| *r != Self::Unspecified)
    }

    /// Every reason a service may send (all values but [`ErrorReason::Unspecified`]), in the
    /// proto's order.
    pub fn all() -> impl Iterator<Item = Self> {
        // The values are numbered densely from 1; the bound only has to be past the last one.
        (1..1_000).filter_map(|n| Self::try_from(n).ok())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

    use super::*;

    /// Every reason string a service sends today, as clients (tools, ticketctl, the tests,
    /// generated clients) match it. Keeping this list equal to the enum proves each string the
    /// code uses is an enum value and that renaming a value (a wire change) fails here.
    const WIRE_REASONS: &[&str] = &[
        "INVALID_ARGUMENT",
        "REQUEST_TOO_LARGE",
        "USER_MISMATCH",
        "ADMIN_SCOPE_REQUIRED",
        "TOKEN_MISSING",
        "TOKEN_MALFORMED",
        "TOKEN_UNSUPPORTED_ALGORITHM",
        "TOKEN_UNKNOWN_KEY",
        "TOKEN_BAD_SIGNATURE",
        "TOKEN_EXPIRED",
        "TOKEN_NOT_YET_VALID",
        "TOKEN_WRONG_ISSUER",
        "TOKEN_WRONG_AUDIENCE",
        "TOKEN_BAD_SUBJECT",
        "PEER_CERT_MISSING",
        "SERVICE_NOT_ALLOWED",
        "EVENT_NOT_FOUND",
        "TOO_MANY_WATCHERS",
        "NOT_IN_QUEUE",
        "RATE_LIMITED",
        "SALE_CLOSED",
        "QUEUE_REBUILDING",
        "SEAT_TAKEN",
        "ZONE_SOLD_OUT",
        "NO_ADJACENT_SEATS",
        "TICKET_LIMIT_EXCEEDED",
        "PASS_INVALID",
        "PASS_EXPIRED",
        "PASS_WRONG_USER",
        "PASS_WRONG_EVENT",
        "PASS_REVOKED",
        "HOLD_NOT_FOUND",
        "NOT_HOLD_OWNER",
        "HOLD_IN_CHECKOUT",
        "HOLD_SOLD",
        "HOLD_EXPIRED",
        "REBUILDING",
        "VENUE_NOT_FOUND",
        "ZONE_NOT_FOUND",
        "IDEMPOTENCY_KEY_REUSED",
        "REQUEST_IN_FLIGHT",
        "PAYMENT_NOT_FOUND",
        "BOOKING_NOT_FOUND",
        "HOLD_ALREADY_BEING_PAID",
        "SEAT_LOCK_UNAVAILABLE",
        "CANCELLATION_CLOSED",
        "INVENTORY_UNAVAILABLE",
        "TOO_MANY_PAYMENTS_IN_FLIGHT",
        "WEBHOOK_URL_NOT_ALLOWED",
        "WEBHOOK_ADDRESS_FORBIDDEN",
        "WEBHOOK_HOST_UNRESOLVED",
        "WEBHOOK_LIMIT_REACHED",
        "TOO_MANY_SUBSCRIBERS",
    ];

    #[test]
    fn every_wire_reason_is_an_enum_value_and_back() {
        for wire in WIRE_REASONS {
            let reason =
                ErrorReason::from_wire_name(wire).unwrap_or_else(|| panic!("{wire} is no ErrorReason"));
            assert_eq!(reason.wire_name(), *wire);
        }
        let enum_names: Vec<_> = ErrorReason::all().map(ErrorReason::wire_name).collect();
        assert_eq!(enum_names, WIRE_REASONS, "the enum and the wire strings differ");
    }

    #[test]
    fn unknown_and_unspecified_strings_are_no_reason() {
        assert_eq!(ErrorReason::from_wire_name("UNSPECIFIED"), None);
        assert_eq!(ErrorReason::from_wire_name("ERROR_REASON_SEAT_TAKEN"), None);
        assert_eq!(ErrorReason::from_wire_name("seat_taken"), None);
        assert_eq!(ErrorReason::from_wire_name(""), None);
        assert_eq!(ErrorReason::from_wire_name("HOLD_ALREADY_SOLD"), None);
        assert_eq!(ErrorReason::Unspecified.wire_name(), "UNSPECIFIED");
    }

    /// The README's list of reasons: one row per [`ErrorReason`] value, with its comment from
    /// `errors.proto` (read from the descriptor's source info).
    fn readme_table() -> String {
        use prost::Message;
        let set = prost_types::FileDescriptorSet::decode(crate::FILE_DESCRIPTOR_SET).unwrap();
        let file = set.file.iter().find(|f| f.name() == "ticketing/v1/errors.proto").unwrap();
        let enum_index = file.enum_type.iter().position(|e| e.name() == "ErrorReason").unwrap() as i32;
        let locations = &file.source_code_info.as_ref().unwrap().location;
        let mut table = String::from("| `reason` | code, RPCs and metadata |\n| --- | --- |\n");
        let values = &file.enum_type[enum_index as usize].value;
        for (index, value) in values.iter().enumerate() {
            let reason = ErrorReason::from_str_name(value.name()).unwrap();
            if reason == ErrorReason::Unspecified {
                continue;
            }
            // Path of the value: enum_type (5), the enum, value (2), the value.
            let path = [5, enum_index, 2, index as i32];
            let comment = locations
                .iter()
                .find(|l| l.path == path)
                .and_then(|l| l.leading_comments.clone())
                .unwrap_or_default();
            let comment = comment.split_whitespace().collect::<Vec<_>>().join(" ").replace('|', "\\|");
            assert!(!comment.is_empty(), "{} has no comment in errors.proto", value.name());
            table.push_str(&format!("| `{}` | {comment} |\n", reason.wire_name()));
        }
        table
    }

    /// The README lists the enum, not a second hand-kept list: its table of reasons is made
    /// from `errors.proto`. `WRITE_README=1 cargo test -p ticketing-proto` rewrites it.
    #[test]
    fn the_readme_lists_every_reason_as_errors_proto_says() {
        const BEGIN: &str = "<!-- ErrorReason table: made from proto/ticketing/v1/errors.proto by a test of ticketing_proto::errors -->\n";
        const END: &str = "<!-- end of the ErrorReason table -->";
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md");
        let readme = std::fs::read_to_string(path).unwrap();
        let start =
            readme.find(BEGIN).expect("the README has the ErrorReason table's begin marker") + BEGIN.len();
        let end = start + readme[start..].find(END).expect("the README has the table's end marker");
        let table = readme_table();
        if readme[start..end] != table && std::env::var_os("WRITE_README").is_some() {
            std::fs::write(path, format!("{}{table}{}", &readme[..start], &readme[end..])).unwrap();
            return;
        }
        assert_eq!(
            readme[start..end],
            table,
            "README.md's ErrorReason table differs from errors.proto; rewrite it with \
             WRITE_README=1 cargo test -p ticketing-proto"
        );
    }

    #[test]
    fn values_are_numbered_densely() {
        let numbers: Vec<i32> = ErrorReason::all().map(|r| r as i32).collect();
        assert_eq!(numbers, (1..=WIRE_REASONS.len() as i32).collect::<Vec<_>>());
    }
}
