//! Reading script replies: every shape a script answers is parsed here, and anything else
//! is [`Error::UnexpectedReply`].

use fred::types::Value;

use super::{EndReason, EndedPass, NOT_READY, Standing, StoredPass};
use crate::error::Error;

/// A script argument from a count or duration; every one the service passes is far below
/// `i64::MAX` (scores stay below 2^53, settings are validated), so saturating never happens.
pub(super) fn number(value: u64) -> Value {
    Value::Integer(i64::try_from(value).unwrap_or(i64::MAX))
}

pub(super) fn int(value: Option<&Value>) -> Result<i64, Error> {
    value.and_then(Value::as_i64).ok_or_else(|| Error::UnexpectedReply(format!("{value:?}")))
}

pub(super) fn uint(value: Option<&Value>) -> Result<u64, Error> {
    u64::try_from(int(value)?).map_err(|_| Error::UnexpectedReply(format!("{value:?}")))
}

pub(super) fn string(value: Option<&Value>) -> Result<String, Error> {
    value.and_then(Value::as_string).ok_or_else(|| Error::UnexpectedReply(format!("{value:?}")))
}

/// Parses `pass_id:expires_at_ms:ticket[:checked_in_expiry_ms]`, as stored in the `admitted`
/// hash and the outbox.
pub(super) fn stored_pass(value: Option<&Value>) -> Result<StoredPass, Error> {
    let raw = string(value)?;
    let mut parts = raw.split(':');
    let parsed = (|| {
        let pass_id = parts.next()?.to_owned();
        let expires_at_ms = parts.next()?.parse().ok()?;
        let ticket = parts.next()?.parse().ok()?;
        Some(StoredPass { pass_id, expires_at_ms, ticket })
    })();
    parsed.ok_or_else(|| Error::UnexpectedReply(raw.clone()))
}

/// Parses `end:<left|bought|abandoned>:pass_id:expires_at_ms`, an ended pass in the outbox;
/// `None` for any other value (an admission).
pub(super) fn ended_pass(user_id: &str, raw: &str) -> Option<Result<EndedPass, Error>> {
    let rest = raw.strip_prefix("end:")?;
    let parsed = (|| {
        let mut parts = rest.split(':');
        let reason = match parts.next()? {
            "left" => EndReason::Left,
            "bought" => EndReason::Bought,
            "abandoned" => EndReason::Abandoned,
            _ => return None,
        };
        let pass_id = parts.next()?.to_owned();
        let expires_at_ms = parts.next()?.parse().ok()?;
        Some(EndedPass { user_id: user_id.to_owned(), pass_id, reason, expires_at_ms })
    })();
    Some(parsed.ok_or_else(|| Error::UnexpectedReply(raw.to_owned())))
}

/// `Err(Rebuilding)` when a script answered `{-2}`: the event's state is missing after the
/// sale opened.
pub(super) fn ready(reply: &[Value], event_id: &str) -> Result<(), Error> {
    if reply.len() == 1 && int(reply.first())? == NOT_READY {
        return Err(Error::Rebuilding(event_id.to_owned()));
    }
    Ok(())
}

/// Reads the `{0, ...}` / `{1, ...}` / `{2, ...}` / `{3, epoch}` shapes that join.lua and
/// status.lua share.
pub(super) fn standing(reply: &[Value]) -> Result<Standing, Error> {
    match int(reply.first())? {
        0 | 1 => Ok(Standing::Waiting {
            ticket: uint(reply.get(1))?,
            rank: uint(reply.get(2))?,
            queue_length: uint(reply.get(3))?,
            now_ms: int(reply.get(4))?,
            score: uint(reply.get(5))?,
        }),
        2 => Ok(Standing::Admitted {
            pass: stored_pass(reply.get(1))?,
            now_ms: int(reply.get(2))?,
            queue_length: uint(reply.get(3))?,
        }),
        3 => Ok(Standing::Absent { queue_started_at_ms: int(reply.get(1))? }),
        other => Err(Error::UnexpectedReply(format!("standing code {other}"))),
    }
}
