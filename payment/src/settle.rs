//! The one-statement state changes of a payment after its charge: `captured`, `unknown`,
//! `declined` and `confirmed` (with its booking). Refunds are module `refund`'s.
//!
//! Each is an `UPDATE ... WHERE status IN (<the states it may leave>)`, so two drivers of one
//! payment (the request and recovery) never both make it: the one that finds the state
//! moved on writes nothing and answers the payment as it now stands.

use prost::Message;
use sea_orm::{
    ConnectionTrait, DatabaseTransaction, DbErr, QueryResult, RuntimeErr, Statement, Value,
    sqlx::postgres::PgDatabaseError,
};
use service_runtime::bus::{envelope, kind};
use ticketing_proto::{
    events::{self, event_envelope::Body},
    v1,
};
use uuid::Uuid;

use crate::{
    commit::CommitGroups,
    error::Error,
    store::{BookingRecord, PAYMENT_COLUMNS, PaymentRecord, PaymentStatus, sql},
};

/// The seat guard's primary key: a violation means a seat is already sold in Postgres.
pub const SEAT_GUARD_PKEY: &str = "seat_guard_pkey";
/// The unique hold of a booking: a violation means another payment booked this hold.
pub const BOOKING_HOLD_KEY: &str = "bookings_hold_id_key";
/// At most one payment per hold that is not declined or refunded: a violation means another
/// key is paying (or has paid) this hold.
pub const ONE_LIVE_PER_HOLD: &str = "payments_one_live_per_hold";
/// SQLSTATE of a unique violation.
const UNIQUE_VIOLATION: &str = "23505";

/// The states whose charge outcome nobody has recorded yet: a charge's answer may move them.
const CHARGE_OPEN: &str = "('processing', 'charging', 'unknown')";

/// Where a settlement's one statement runs.
#[derive(Clone, Copy)]
pub enum On<'a> {
    /// In a commit group, shared with concurrent payments.
    Group(&'a CommitGroups),
    /// In a transaction the caller commits (the test-only crash before the commit).
    Txn(&'a DatabaseTransaction),
}

impl On<'_> {
    async fn query_one(self, statement: Statement) -> Result<Option<QueryResult>, DbErr> {
        match self {
            Self::Group(groups) => groups.query_one(statement).await,
            Self::Txn(txn) => txn.query_one_raw(statement).await,
        }
    }
}

/// Records the provider's capture: `processing|charging|unknown → captured` with the charge
/// id. `None` when someone else already recorded the charge's outcome.
pub async fn mark_captured(
    writes: &CommitGroups,
    payment_id: Uuid,
    charge_id: &str,
) -> Result<Option<PaymentRecord>, Error> {
    let row = writes
        .query_one(sql(
            &format!(
                "UPDATE payments SET status = 'captured', provider_charge_id = $2, updated_at = now() \
                 WHERE payment_id = $1 AND status IN {CHARGE_OPEN} RETURNING {PAYMENT_COLUMNS}"
            ),
            [payment_id.into(), charge_id.into()],
        ))
        .await?;
    Ok(row.as_ref().map(PaymentRecord::from_row).transpose()?)
}

/// Records that the charge's outcome is not known (timed out, failed, or pending at the
/// provider): `processing|charging → unknown`; an `unknown` payment stays as it is. `None`
/// when the outcome was recorded meanwhile.
pub async fn mark_unknown(writes: &CommitGroups, payment_id: Uuid) -> Result<Option<PaymentRecord>, Error> {
    let row = writes
        .query_one(sql(
            &format!(
                "UPDATE payments SET status = 'unknown', \
                 updated_at = CASE WHEN status = 'unknown' THEN updated_at ELSE now() END \
                 WHERE payment_id = $1 AND status IN {CHARGE_OPEN} RETURNING {PAYMENT_COLUMNS}"
            ),
            [payment_id.into()],
        ))
        .await?;
    Ok(row.as_ref().map(PaymentRecord::from_row).transpose()?)
}

/// Records a declined charge with its `PaymentFailed` event and the key's stored answer.
/// `None` when the charge's outcome was recorded meanwhile.
pub async fn settle_declined(
    writes: &CommitGroups,
    mut payment: PaymentRecord,
    reason: String,
) -> Result<Option<v1::PayResponse>, Error> {
    payment.status = PaymentStatus::Declined;
    payment.failure_reason = Some(reason.clone());
    let event = envelope(
        format!("payment_failed:{}", payment.payment_id),
        Body::PaymentFailed(events::PaymentFailed {
            event_id: payment.event_id.to_string(),
            user_id: payment.user_id.clone(),
            payment_id: payment.payment_id.to_string(),
            hold_id: payment.hold_id.to_string(),
            reason,
        }),
    );
    let response = v1::PayResponse { payment: Some(payment.to_proto()), booking: None, replayed: false };
    let settled = settle(On::Group(writes), &payment, CHARGE_OPEN, &event, &response, None).await?;
    Ok(settled.then_some(response))
}

/// How the booking statement ended.
pub enum Booked {
    Done(Box<v1::PayResponse>),
    /// The seat guard already holds this seat: nothing written.
    SeatTaken(String),
    /// Another payment already booked this hold: nothing written.
    HoldTaken,
    /// The payment was no longer `captured` (another driver settled it): nothing written.
    Moved,
}

/// In one statement on `db`: `captured → confirmed`, the booking, its seats, one seat_guard
/// row per seat, `BookingConfirmed` in the outbox and the key's stored answer; or nothing,
/// when the seat guard or the hold's booking refuses it.
pub async fn write_booking(
    db: On<'_>,
    mut payment: PaymentRecord,
    booking: BookingRecord,
) -> Result<Booked, Error> {
    payment.status = PaymentStatus::Confirmed;
    payment.booking_id = Some(booking.booking_id);
    let event = envelope(
        format!("booking:{}", booking.booking_id),
        Body::BookingConfirmed(events::BookingConfirmed {
            event_id: booking.event_id.to_string(),
            user_id: booking.user_id.clone(),
            booking_id: booking.booking_id.to_string(),
            payment_id: booking.payment_id.to_string(),
            hold_id: booking.hold_id.to_string(),
            zone_id: booking.zone_id.clone(),
            seat_ids: booking.seat_ids.clone(),
            quantity: booking.quantity,
            amount_cents: booking.amount_cents,
            currency: booking.currency.clone(),
        }),
    );
    let response = v1::PayResponse {
        payment: Some(payment.to_proto()),
        booking: Some(booking.to_proto()),
        replayed: false,
    };
    match settle(db, &payment, "('captured')", &event, &response, Some(&booking)).await {
        Ok(true) => Ok(Booked::Done(Box::new(response))),
        Ok(false) => Ok(Booked::Moved),
        Err(Error::Database(error)) => match unique_violation(&error) {
            Some((SEAT_GUARD_PKEY, detail)) => {
                // The detail names the key: `Key (event_id, seat_id)=(<event>, <seat>) ...`.
                let taken = booking
                    .seat_ids
                    .iter()
                    .find(|seat| detail.contains(&format!("{}, {seat})", booking.event_id)))
                    .cloned()
                    .unwrap_or_else(|| format!("of {}", booking.seat_ids.join(", ")));
                Ok(Booked::SeatTaken(taken))
            }
            Some((BOOKING_HOLD_KEY, _)) => Ok(Booked::HoldTaken),
            _ => Err(Error::Database(error)),
        },
        Err(error) => Err(error),
    }
}

/// The constraint (one of ours) and detail of a unique violation, if `error` is one.
pub fn unique_violation(error: &DbErr) -> Option<(&'static str, String)> {
    let (DbErr::Exec(RuntimeErr::SqlxError(error)) | DbErr::Query(RuntimeErr::SqlxError(error))) = error
    else {
        return None;
    };
    let sea_orm::sqlx::Error::Database(error) = error.as_ref() else {
        return None;
    };
    let error = error.try_downcast_ref::<PgDatabaseError>()?;
    if error.code() != UNIQUE_VIOLATION {
        return None;
    }
    let constraint = [SEAT_GUARD_PKEY, BOOKING_HOLD_KEY, ONE_LIVE_PER_HOLD]
        .into_iter()
        .find(|c| error.constraint() == Some(*c))?;
    Some((constraint, error.detail().unwrap_or_default().to_owned()))
}

/// In one statement on `db`: moves the payment from one of the states `from` (an SQL list)
/// to `payment.status` with its charge id, reason and booking id, queues `event` in the
/// outbox, stores `response` as the key's final answer and, given a `booking`, writes it
/// with its seats and seat guard rows. A conflict in any of them fails the whole statement.
/// `false` (nothing written) when the payment was in none of `from`.
async fn settle(
    db: On<'_>,
    payment: &PaymentRecord,
    from: &str,
    event: &events::EventEnvelope,
    response: &v1::PayResponse,
    booking: Option<&BookingRecord>,
) -> Result<bool, Error> {
    let event_kind = service_runtime::bus::kind_of(event).unwrap_or(kind::PAYMENT_FAILED);
    let mut statement = format!(
        "WITH p AS (UPDATE payments SET status = $2, provider_charge_id = $3, failure_reason = $4, \
         booking_id = $5, updated_at = now() WHERE payment_id = $1 AND status IN {from} \
         RETURNING payment_id, idempotency_key), \
         o AS (INSERT INTO outbox (message_id, kind, payload) SELECT $6, $7, $8 FROM p \
         ON CONFLICT (message_id) DO NOTHING), \
         k AS (UPDATE idempotency_keys SET state = 'done', response = $9, updated_at = now() \
         WHERE key IN (SELECT idempotency_key FROM p))"
    );
    let mut values: Vec<Value> = vec![
        payment.payment_id.into(),
        payment.status.as_str().into(),
        payment.provider_charge_id.clone().into(),
        payment.failure_reason.clone().into(),
        payment.booking_id.into(),
        event.message_id.as_str().into(),
        event_kind.into(),
        event.encode_to_vec().into(),
        response.encode_to_vec().into(),
    ];
    if let Some(booking) = booking {
        // The guard rows go in seat order, so two bookings that (wrongly) share seats wait
        // on each other instead of deadlocking.
        let mut seats = booking.seat_ids.clone();
        seats.sort_unstable();
        statement.push_str(
            ", b AS (INSERT INTO bookings (booking_id, payment_id, event_id, user_id, hold_id, zone_id, \
             quantity, amount_cents, currency) SELECT $10, payment_id, $11, $12, $13, $14, $15, $16, $17 \
             FROM p RETURNING booking_id), \
             s AS (INSERT INTO booking_seats (booking_id, event_id, zone_id, seat_id) \
             SELECT booking_id, $11, $14, seat FROM b, jsonb_array_elements_text($18::jsonb) AS seat), \
             g AS (INSERT INTO seat_guard (event_id, seat_id, booking_id) \
             SELECT $11, seat, booking_id FROM b, jsonb_array_elements_text($18::jsonb) AS seat)",
        );
        values.extend([
            booking.booking_id.into(),
            booking.event_id.into(),
            booking.user_id.as_str().into(),
            booking.hold_id.into(),
            booking.zone_id.as_str().into(),
            i32::try_from(booking.quantity).unwrap_or(i32::MAX).into(),
            booking.amount_cents.into(),
            booking.currency.as_str().into(),
            serde_json::Value::from(seats).into(),
        ]);
    }
    statement.push_str(" SELECT count(*) AS settled FROM p");
    let settled = db
        .query_one(sql(&statement, values))
        .await?
        .map(|row| row.try_get::<i64>("", "settled"))
        .transpose()?
        .unwrap_or(0);
    Ok(settled == 1)
}
