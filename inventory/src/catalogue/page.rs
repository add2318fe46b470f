//! `ListEvents` pages: their size bounds and the opaque token of where the next one starts.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use uuid::Uuid;

use crate::error::Error;

/// Events per page when the caller asks for 0.
pub const DEFAULT_PAGE_SIZE: u32 = 20;
/// Most events per page; bounds one answer.
pub const MAX_PAGE_SIZE: u32 = 100;

/// Where a page of events starts: after this (sale-open millis, event id).
pub type PageCursor = (i64, Uuid);

/// The opaque token of a page that starts after `cursor`.
pub fn encode_page_token(cursor: PageCursor) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}_{}", cursor.0, cursor.1))
}

/// Reads a page token: base64url of `<millis>_<uuid>`, or that text plainly.
pub fn decode_page_token(token: &str) -> Result<PageCursor, Error> {
    let bad = || Error::invalid("page_token", "is not a token from a previous ListEvents answer");
    let parse = |text: &str| -> Option<PageCursor> {
        let (ms, id) = text.split_once('_')?;
        Some((ms.parse().ok()?, Uuid::parse_str(id).ok()?))
    };
    if let Some(cursor) = parse(token) {
        return Ok(cursor);
    }
    let decoded = URL_SAFE_NO_PAD.decode(token.trim_end_matches('=')).map_err(|_| bad())?;
    let text = String::from_utf8(decoded).map_err(|_| bad())?;
    parse(&text).ok_or_else(bad)
}
