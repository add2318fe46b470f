//! The `payment` schema, created with sea-orm-migration from plain SQL.

use sea_orm_migration::prelude::*;

/// Runs the schema migrations in order.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(CreateTables), Box::new(ReserveBookingIds)]
    }
}

/// Payments, idempotency keys, bookings, the seat guard, the outbox and the sandbox ledger.
struct CreateTables;

impl MigrationName for CreateTables {
    fn name(&self) -> &str {
        "m20250101_000001_create_tables"
    }
}

const CREATE_TABLES: &str = r#"
CREATE TABLE idempotency_keys (
    key            text PRIMARY KEY,
    request_hash   bytea NOT NULL,
    state          text NOT NULL CHECK (state IN ('in_flight', 'done')),
    response       bytea NULL,
    error_code     int NULL,
    error_message  text NULL,
    error_reason   text NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE payments (
    payment_id          uuid PRIMARY KEY,
    idempotency_key     text NOT NULL UNIQUE,
    event_id            uuid NOT NULL,
    hold_id             uuid NOT NULL,
    user_id             text NOT NULL,
    amount_cents        bigint NOT NULL CHECK (amount_cents >= 0),
    currency            text NOT NULL,
    status              text NOT NULL CHECK (status IN ('processing', 'confirmed', 'declined', 'refunded')),
    provider_charge_id  text NULL,
    failure_reason      text NULL,
    booking_id          uuid NULL,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX payments_processing ON payments (created_at) WHERE status = 'processing';

CREATE TABLE bookings (
    booking_id    uuid PRIMARY KEY,
    payment_id    uuid NOT NULL UNIQUE REFERENCES payments (payment_id),
    event_id      uuid NOT NULL,
    user_id       text NOT NULL,
    hold_id       uuid NOT NULL UNIQUE,
    zone_id       text NOT NULL,
    quantity      int NOT NULL CHECK (quantity > 0),
    amount_cents  bigint NOT NULL,
    currency      text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX bookings_by_user ON bookings (user_id, booking_id DESC);
CREATE INDEX bookings_by_event ON bookings (event_id);

CREATE TABLE booking_seats (
    booking_id  uuid NOT NULL REFERENCES bookings (booking_id),
    event_id    uuid NOT NULL,
    zone_id     text NOT NULL,
    seat_id     text NOT NULL,
    PRIMARY KEY (booking_id, seat_id)
);
CREATE INDEX booking_seats_by_event ON booking_seats (event_id);

CREATE TABLE seat_guard (
    event_id    uuid NOT NULL,
    seat_id     text NOT NULL,
    booking_id  uuid NOT NULL REFERENCES bookings (booking_id),
    PRIMARY KEY (event_id, seat_id)
);

CREATE TABLE outbox (
    id          bigserial PRIMARY KEY,
    message_id  text NOT NULL UNIQUE,
    kind        text NOT NULL,
    payload     bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE psp_ledger (
    charge_id        text PRIMARY KEY,
    idempotency_key  text NOT NULL UNIQUE,
    amount_cents     bigint NOT NULL,
    currency         text NOT NULL,
    status           text NOT NULL CHECK (status IN ('captured', 'refunded')),
    refund_id        text NULL,
    created_at       timestamptz NOT NULL DEFAULT now()
);
"#;

#[async_trait::async_trait]
impl MigrationTrait for CreateTables {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.get_connection().execute_unprepared(CREATE_TABLES).await?;
        Ok(())
    }
}

/// `payments.reserved_booking_id`: the booking id a Pay confirms the hold under, chosen when
/// the payment row is written, so the recovery pass can replay ConfirmHold with the same id
/// after a crash and complete the booking instead of refunding a sale seat-lock already made.
struct ReserveBookingIds;

impl MigrationName for ReserveBookingIds {
    fn name(&self) -> &str {
        "m20250102_000001_reserve_booking_ids"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for ReserveBookingIds {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared("ALTER TABLE payments ADD COLUMN reserved_booking_id uuid NULL")
            .await?;
        Ok(())
    }
}
