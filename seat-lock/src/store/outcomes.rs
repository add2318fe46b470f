//! The typed outcomes of seat-lock's scripts, and the parsing of a hold as a script answers it.

use std::time::Duration;

use crate::error::Error;

/// The state of a hold as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldState {
    Held,
    Checkout,
    Sold,
    Released,
    Expired,
    /// Was sold; the booking was cancelled and the seats went back on sale.
    Returned,
}

/// A hold as a script answered it.
#[derive(Debug, Clone)]
pub struct StoredHold {
    pub hold_id: String,
    pub user_id: String,
    pub zone_id: String,
    pub seat_ids: Vec<String>,
    pub quantity: u32,
    pub state: HoldState,
    pub expires_at_ms: i64,
    pub total_price_cents: i64,
    pub booking_id: String,
}

impl StoredHold {
    /// Parses the `{'OK', hold_id, user, zone, seats, quantity, state, expires_at_ms,
    /// price_cents, booking_id}` reply of `hold_reply` in common.lua.
    pub(super) fn parse(reply: &[String]) -> Option<Self> {
        let [ok, hold_id, user_id, zone_id, seats, quantity, state, expires, price, booking] = reply else {
            return None;
        };
        if ok != "OK" {
            return None;
        }
        let state = match state.as_str() {
            "held" => HoldState::Held,
            "checkout" => HoldState::Checkout,
            "sold" => HoldState::Sold,
            "released" => HoldState::Released,
            "expired" => HoldState::Expired,
            "returned" => HoldState::Returned,
            _ => return None,
        };
        Some(Self {
            hold_id: hold_id.clone(),
            user_id: user_id.clone(),
            zone_id: zone_id.clone(),
            seat_ids: seats.split(',').filter(|s| !s.is_empty()).map(str::to_owned).collect(),
            quantity: quantity.parse().ok()?,
            state,
            expires_at_ms: parse_number(expires)?,
            total_price_cents: parse_number(price)?,
            booking_id: booking.clone(),
        })
    }
}

/// Lua numbers may come back as "1.7e+12"-style floats; read both forms.
fn parse_number(text: &str) -> Option<i64> {
    text.parse::<i64>().ok().or_else(|| text.parse::<f64>().ok().map(|f| f as i64))
}

/// A new hold to create.
pub struct NewHold<'a> {
    pub hold_id: String,
    pub user_id: &'a str,
    /// The pass it is made under: refused when admission ended it (`ended:<pass_id>`).
    pub pass_id: &'a str,
    /// The presented token's expiry: a record of the pass's end covers the token when it is
    /// at least this.
    pub pass_expires_at_ms: i64,
    pub zone_id: &'a str,
    pub ttl: Duration,
    pub price_cents: i64,
    pub limit: u32,
}

/// What to hold: named seats, or the best `quantity` of the zone.
pub enum Pick<'a> {
    Seats(&'a [String]),
    Best { quantity: u32, seated: bool, allow_split: bool, seats_per_row: u32, row_labels: &'a [String] },
}

/// A sale that payment knows of, grouped by hold, for a rebuild.
#[derive(Debug, Default)]
pub struct SoldHold {
    pub user_id: String,
    pub zone_id: String,
    pub seat_ids: Vec<String>,
    pub quantity: u32,
    pub booking_id: String,
}

/// The sold seats of a cancelled booking to give back, as payment's `ReturnSeats` names them.
#[derive(Debug)]
pub struct SeatReturn<'a> {
    pub booking_id: &'a str,
    pub hold_id: &'a str,
    pub user_id: &'a str,
    pub zone_id: &'a str,
    pub quantity: u32,
    /// Empty for general admission.
    pub seat_ids: &'a [String],
}

/// What `return.lua` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReturnOutcome {
    /// The seats are back on sale and the release is in the outbox.
    Returned,
    /// A replay: they had already been returned under this booking.
    AlreadyReturned,
    /// The hold is unknown here (Redis rebuilt without the cancelled booking): nothing to
    /// give back; only the release was announced, for inventory.
    Announced,
    /// The hold is not sold under this booking with these seats; nothing changed.
    NotSold(String),
}

/// Sentinel raised by scripts when the event's state is missing and must be rebuilt.
#[derive(Debug)]
pub struct NotReady;

/// An end user's view of a per-hold answer: someone else's hold does not exist for them. The
/// answer (code, message, reason, metadata) is the one of a hold id nobody has, so a caller
/// cannot tell another user's hold from a missing one.
pub(super) fn owner_only(answer: Result<StoredHold, Outcome>) -> Result<StoredHold, Outcome> {
    match answer {
        Err(Outcome::Failed(Error::NotHoldOwner(hold_id))) => Err(Error::HoldNotFound(hold_id).into()),
        other => other,
    }
}

/// A script's answer that is not a hold: a refusal, or "rebuild first".
#[derive(Debug)]
pub enum Outcome {
    NotReady(NotReady),
    Failed(Error),
}

impl From<Error> for Outcome {
    fn from(error: Error) -> Self {
        Self::Failed(error)
    }
}
