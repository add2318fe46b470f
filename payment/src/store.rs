//! Rows of the `payment` schema as Rust values, their protobuf form, and the read queries.

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DbBackend, DbErr, QueryResult, Statement, Value};
use ticketing_proto::{internal, v1};
use uuid::Uuid;

use crate::error::Error;

/// Bookings per page when the caller asks for none.
pub const DEFAULT_PAGE_SIZE: u32 = 20;
/// Largest page of bookings, so one call cannot read a user's whole history at once.
pub const MAX_PAGE_SIZE: u32 = 100;

/// Life of a payment row. Each state is committed before the network call that follows it,
/// so the recovery pass knows from the state alone what may have happened:
/// `charging → captured → confirmed`, `charging → declined`, `charging → unknown` (the
/// provider's answer is not known yet), `captured → refunding → refunded` (a lost hold) and
/// `confirmed → refunding → refunded` (a cancellation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaymentStatus {
    /// Written by versions before the money states, between the key claim and the booking.
    Processing,
    /// The key is claimed; the provider is being (or is about to be) charged.
    Charging,
    /// The charge timed out, failed or is pending at the provider: settled from the provider.
    Unknown,
    /// The provider captured the charge; the booking is not written yet.
    Captured,
    /// A refund is committed as started; the provider may or may not have made it.
    Refunding,
    Confirmed,
    Declined,
    Refunded,
}

impl PaymentStatus {
    /// The value stored in `payments.status`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Processing => "processing",
            Self::Charging => "charging",
            Self::Unknown => "unknown",
            Self::Captured => "captured",
            Self::Refunding => "refunding",
            Self::Confirmed => "confirmed",
            Self::Declined => "declined",
            Self::Refunded => "refunded",
        }
    }

    /// Reads a stored `payments.status`.
    pub fn parse(value: &str) -> Result<Self, DbErr> {
        Ok(match value {
            "processing" => Self::Processing,
            "charging" => Self::Charging,
            "unknown" => Self::Unknown,
            "captured" => Self::Captured,
            "refunding" => Self::Refunding,
            "confirmed" => Self::Confirmed,
            "declined" => Self::Declined,
            "refunded" => Self::Refunded,
            other => return Err(DbErr::Type(format!("unknown payment status {other:?}"))),
        })
    }

    /// The states only a driver moves on (nothing is awaited from the provider): a payment
    /// left in one is stalled until a request or recovery takes it.
    pub fn needs_a_driver(self) -> bool {
        matches!(self, Self::Processing | Self::Charging | Self::Captured)
    }

    /// The API form: the steps between the claim and the booking are all PROCESSING.
    pub fn to_proto(self) -> v1::PaymentStatus {
        match self {
            Self::Processing | Self::Charging | Self::Captured => v1::PaymentStatus::Processing,
            Self::Unknown => v1::PaymentStatus::Pending,
            Self::Refunding => v1::PaymentStatus::Refunding,
            Self::Confirmed => v1::PaymentStatus::Confirmed,
            Self::Declined => v1::PaymentStatus::Declined,
            Self::Refunded => v1::PaymentStatus::Refunded,
        }
    }
}

/// Life of a booking: `confirmed`, then `cancelling` while its refund is under way (its
/// seats stay its own), then `cancelled` (refunded, seats back on sale).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BookingStatus {
    Confirmed,
    Cancelling,
    Cancelled,
}

impl BookingStatus {
    /// The value stored in `bookings.status`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Confirmed => "confirmed",
            Self::Cancelling => "cancelling",
            Self::Cancelled => "cancelled",
        }
    }

    /// Reads a stored `bookings.status`.
    pub fn parse(value: &str) -> Result<Self, DbErr> {
        Ok(match value {
            "confirmed" => Self::Confirmed,
            "cancelling" => Self::Cancelling,
            "cancelled" => Self::Cancelled,
            other => return Err(DbErr::Type(format!("unknown booking status {other:?}"))),
        })
    }

    /// The API form.
    pub fn to_proto(self) -> v1::BookingStatus {
        match self {
            Self::Confirmed => v1::BookingStatus::Confirmed,
            Self::Cancelling => v1::BookingStatus::Cancelling,
            Self::Cancelled => v1::BookingStatus::Cancelled,
        }
    }
}

/// One `payments` row.
#[derive(Debug, Clone)]
pub struct PaymentRecord {
    pub payment_id: Uuid,
    pub idempotency_key: String,
    pub event_id: Uuid,
    pub hold_id: Uuid,
    pub user_id: String,
    pub amount_cents: i64,
    pub currency: String,
    pub status: PaymentStatus,
    pub provider_charge_id: Option<String>,
    pub failure_reason: Option<String>,
    pub booking_id: Option<Uuid>,
    /// The booking id a Pay confirms the hold under, chosen with the payment, so recovery
    /// replays ConfirmHold under the same id. `None` for rows of old versions.
    pub reserved_booking_id: Option<Uuid>,
    /// The method charged, so recovery re-drives the same charge. `None` for old rows.
    pub payment_method: Option<String>,
    /// The process driving it (module `instances`); `None` for rows of old versions.
    pub owner_instance: Option<Uuid>,
    pub created_at: DateTime<Utc>,
}

/// Columns of [`PaymentRecord`], in `SELECT` order.
pub const PAYMENT_COLUMNS: &str = "payment_id, idempotency_key, event_id, hold_id, user_id, amount_cents, \
     currency, status, provider_charge_id, failure_reason, booking_id, reserved_booking_id, payment_method, \
     owner_instance, created_at";

impl PaymentRecord {
    /// Reads a row selected with [`PAYMENT_COLUMNS`].
    pub fn from_row(row: &QueryResult) -> Result<Self, DbErr> {
        Ok(Self {
            payment_id: row.try_get("", "payment_id")?,
            idempotency_key: row.try_get("", "idempotency_key")?,
            event_id: row.try_get("", "event_id")?,
            hold_id: row.try_get("", "hold_id")?,
            user_id: row.try_get("", "user_id")?,
            amount_cents: row.try_get("", "amount_cents")?,
            currency: row.try_get("", "currency")?,
            status: PaymentStatus::parse(&row.try_get::<String>("", "status")?)?,
            provider_charge_id: row.try_get("", "provider_charge_id")?,
            failure_reason: row.try_get("", "failure_reason")?,
            booking_id: row.try_get("", "booking_id")?,
            reserved_booking_id: row.try_get("", "reserved_booking_id")?,
            payment_method: row.try_get("", "payment_method")?,
            owner_instance: row.try_get("", "owner_instance")?,
            created_at: row.try_get("", "created_at")?,
        })
    }

    /// The API form.
    pub fn to_proto(&self) -> v1::Payment {
        v1::Payment {
            payment_id: self.payment_id.to_string(),
            idempotency_key: self.idempotency_key.clone(),
            event_id: self.event_id.to_string(),
            hold_id: self.hold_id.to_string(),
            user_id: self.user_id.clone(),
            status: self.status.to_proto().into(),
            amount_cents: self.amount_cents,
            currency: self.currency.clone(),
            provider_charge_id: self.provider_charge_id.clone().unwrap_or_default(),
            failure_reason: self.failure_reason.clone().unwrap_or_default(),
            booking_id: self.booking_id.map(|id| id.to_string()).unwrap_or_default(),
            created_at: Some(timestamp(self.created_at)),
        }
    }
}

/// One `bookings` row with its seats.
#[derive(Debug, Clone)]
pub struct BookingRecord {
    pub booking_id: Uuid,
    pub payment_id: Uuid,
    pub event_id: Uuid,
    pub user_id: String,
    pub hold_id: Uuid,
    pub zone_id: String,
    /// Empty for general admission.
    pub seat_ids: Vec<String>,
    pub quantity: u32,
    pub amount_cents: i64,
    pub currency: String,
    pub created_at: DateTime<Utc>,
    pub status: BookingStatus,
    pub cancelled_at: Option<DateTime<Utc>>,
    pub cancel_reason: Option<String>,
}

/// Columns of [`BookingRecord`] (table alias `b`), its seats included, in `SELECT` order.
pub const BOOKING_COLUMNS: &str = "b.booking_id, b.payment_id, b.event_id, b.user_id, b.hold_id, b.zone_id, \
     b.quantity, b.amount_cents, b.currency, b.created_at, b.status, b.cancelled_at, b.cancel_reason, \
     COALESCE((SELECT string_agg(s.seat_id, ',' ORDER BY s.seat_id) FROM booking_seats s \
               WHERE s.booking_id = b.booking_id), '') AS seat_ids";

impl BookingRecord {
    /// Reads a row selected with [`BOOKING_COLUMNS`].
    pub fn from_row(row: &QueryResult) -> Result<Self, DbErr> {
        let seats: String = row.try_get("", "seat_ids")?;
        let quantity: i32 = row.try_get("", "quantity")?;
        Ok(Self {
            booking_id: row.try_get("", "booking_id")?,
            payment_id: row.try_get("", "payment_id")?,
            event_id: row.try_get("", "event_id")?,
            user_id: row.try_get("", "user_id")?,
            hold_id: row.try_get("", "hold_id")?,
            zone_id: row.try_get("", "zone_id")?,
            seat_ids: seats.split(',').filter(|s| !s.is_empty()).map(str::to_owned).collect(),
            quantity: u32::try_from(quantity).map_err(|_| DbErr::Type(format!("quantity {quantity}")))?,
            amount_cents: row.try_get("", "amount_cents")?,
            currency: row.try_get("", "currency")?,
            created_at: row.try_get("", "created_at")?,
            status: BookingStatus::parse(&row.try_get::<String>("", "status")?)?,
            cancelled_at: row.try_get("", "cancelled_at")?,
            cancel_reason: row.try_get("", "cancel_reason")?,
        })
    }

    /// The API form.
    pub fn to_proto(&self) -> v1::Booking {
        v1::Booking {
            booking_id: self.booking_id.to_string(),
            payment_id: self.payment_id.to_string(),
            event_id: self.event_id.to_string(),
            user_id: self.user_id.clone(),
            hold_id: self.hold_id.to_string(),
            zone_id: self.zone_id.clone(),
            seat_ids: self.seat_ids.clone(),
            quantity: self.quantity,
            amount_cents: self.amount_cents,
            currency: self.currency.clone(),
            created_at: Some(timestamp(self.created_at)),
            status: self.status.to_proto().into(),
            cancelled_at: self.cancelled_at.map(timestamp),
            cancel_reason: self.cancel_reason.clone().unwrap_or_default(),
        }
    }
}

/// A time as a protobuf timestamp.
pub fn timestamp(at: DateTime<Utc>) -> prost_types::Timestamp {
    service_runtime::bus::timestamp_ms(at.timestamp_millis())
}

/// A raw Postgres statement.
pub fn sql<I: IntoIterator<Item = Value>>(sql: &str, values: I) -> Statement {
    Statement::from_sql_and_values(DbBackend::Postgres, sql, values)
}

/// The payment, if it exists and belongs to `user_id` (someone else's is "not found").
pub async fn payment_of_user(
    db: &impl ConnectionTrait,
    payment_id: Uuid,
    user_id: &str,
) -> Result<PaymentRecord, Error> {
    let row = db
        .query_one_raw(sql(
            &format!("SELECT {PAYMENT_COLUMNS} FROM payments WHERE payment_id = $1 AND user_id = $2"),
            [payment_id.into(), user_id.into()],
        ))
        .await?
        .ok_or_else(|| Error::PaymentNotFound(payment_id.to_string()))?;
    Ok(PaymentRecord::from_row(&row)?)
}

/// The booking, if it exists and belongs to `user_id`.
pub async fn booking_of_user(
    db: &impl ConnectionTrait,
    booking_id: Uuid,
    user_id: &str,
) -> Result<BookingRecord, Error> {
    let row = db
        .query_one_raw(sql(
            &format!("SELECT {BOOKING_COLUMNS} FROM bookings b WHERE b.booking_id = $1 AND b.user_id = $2"),
            [booking_id.into(), user_id.into()],
        ))
        .await?
        .ok_or_else(|| Error::BookingNotFound(booking_id.to_string()))?;
    Ok(BookingRecord::from_row(&row)?)
}

/// The booking with this id, whoever owns it.
pub async fn booking(db: &impl ConnectionTrait, booking_id: Uuid) -> Result<Option<BookingRecord>, DbErr> {
    let row = db
        .query_one_raw(sql(
            &format!("SELECT {BOOKING_COLUMNS} FROM bookings b WHERE b.booking_id = $1"),
            [booking_id.into()],
        ))
        .await?;
    row.as_ref().map(BookingRecord::from_row).transpose()
}

/// The payment with this id, whoever owns it.
pub async fn payment(db: &impl ConnectionTrait, payment_id: Uuid) -> Result<Option<PaymentRecord>, DbErr> {
    let row = db
        .query_one_raw(sql(
            &format!("SELECT {PAYMENT_COLUMNS} FROM payments WHERE payment_id = $1"),
            [payment_id.into()],
        ))
        .await?;
    row.as_ref().map(PaymentRecord::from_row).transpose()
}

/// The payment of `hold_id` that is neither declined nor refunded, if any (there is at most
/// one: `payments_one_live_per_hold`).
pub async fn live_payment_of_hold(db: &impl ConnectionTrait, hold_id: Uuid) -> Result<Option<Uuid>, DbErr> {
    let row = db
        .query_one_raw(sql(
            "SELECT payment_id FROM payments WHERE hold_id = $1 AND status NOT IN ('declined', 'refunded')",
            [hold_id.into()],
        ))
        .await?;
    row.map(|row| row.try_get("", "payment_id")).transpose()
}

/// A page of the user's bookings, newest first (booking ids are UUIDv7, so id order is time
/// order), after `after` when given. Returns the page and the next page token.
pub async fn bookings_of_user(
    db: &impl ConnectionTrait,
    user_id: &str,
    event_id: Option<Uuid>,
    page_size: u32,
    after: Option<Uuid>,
) -> Result<(Vec<BookingRecord>, Option<Uuid>), Error> {
    let limit = i64::from(page_size) + 1;
    let rows = db
        .query_all_raw(sql(
            &format!(
                "SELECT {BOOKING_COLUMNS} FROM bookings b WHERE b.user_id = $1 \
                 AND ($2::uuid IS NULL OR b.event_id = $2) AND ($3::uuid IS NULL OR b.booking_id < $3) \
                 ORDER BY b.booking_id DESC LIMIT $4"
            ),
            [user_id.into(), event_id.into(), after.into(), limit.into()],
        ))
        .await?;
    let mut bookings = rows.iter().map(BookingRecord::from_row).collect::<Result<Vec<_>, _>>()?;
    let next = if bookings.len() > page_size as usize {
        bookings.truncate(page_size as usize);
        bookings.last().map(|b| b.booking_id)
    } else {
        None
    };
    Ok((bookings, next))
}

/// Every sold place of an event: one entry per seat of a live booking (`confirmed`, or
/// `cancelling` while its refund is under way: its seats are not back on sale yet), and
/// `quantity` entries with no seat id per live general-admission booking.
pub async fn sold_seats(db: &impl ConnectionTrait, event_id: Uuid) -> Result<Vec<internal::SoldSeat>, Error> {
    let rows = db
        .query_all_raw(sql(
            "SELECT s.zone_id, s.seat_id, b.user_id, b.booking_id, b.hold_id, 1 AS places \
             FROM booking_seats s JOIN bookings b ON b.booking_id = s.booking_id WHERE s.event_id = $1 \
             AND b.status IN ('confirmed', 'cancelling') \
             UNION ALL \
             SELECT b.zone_id, '' AS seat_id, b.user_id, b.booking_id, b.hold_id, b.quantity AS places \
             FROM bookings b WHERE b.event_id = $1 AND b.status IN ('confirmed', 'cancelling') \
             AND NOT EXISTS (SELECT 1 FROM booking_seats s WHERE s.booking_id = b.booking_id) \
             ORDER BY booking_id, seat_id",
            [event_id.into()],
        ))
        .await?;
    let mut seats = Vec::new();
    for row in rows {
        let places: i32 = row.try_get("", "places")?;
        let booking_id: Uuid = row.try_get("", "booking_id")?;
        let hold_id: Uuid = row.try_get("", "hold_id")?;
        let seat = internal::SoldSeat {
            zone_id: row.try_get("", "zone_id")?,
            seat_id: row.try_get("", "seat_id")?,
            user_id: row.try_get("", "user_id")?,
            booking_id: booking_id.to_string(),
            hold_id: hold_id.to_string(),
        };
        for _ in 1..places.max(1) {
            seats.push(seat.clone());
        }
        seats.push(seat);
    }
    Ok(seats)
}
