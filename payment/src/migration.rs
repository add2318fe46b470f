//! The `payment` schema, created with sea-orm-migration from plain SQL.

use sea_orm_migration::prelude::*;

/// Runs the schema migrations in order.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(Sql { name: "m20250101_000001_create_tables", sql: CREATE_TABLES }),
            Box::new(Sql { name: "m20250102_000001_reserve_booking_ids", sql: RESERVE_BOOKING_IDS }),
            Box::new(Sql { name: "m20261201_000001_money_states", sql: MONEY_STATES }),
            Box::new(Sql { name: "m20261202_000001_instances", sql: INSTANCES }),
            Box::new(Sql { name: "m20261203_000001_ledger_indexes", sql: LEDGER_INDEXES }),
        ]
    }
}

/// One migration: its SQL, run once under its name (the name is what `seaql_migrations`
/// records, so it never changes).
struct Sql {
    name: &'static str,
    sql: &'static str,
}

impl MigrationName for Sql {
    fn name(&self) -> &str {
        self.name
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Sql {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.get_connection().execute_unprepared(self.sql).await?;
        Ok(())
    }
}

/// Payments, idempotency keys, bookings, the seat guard, the outbox and the sandbox ledger.
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

/// `payments.reserved_booking_id`: the booking id a Pay confirms the hold under, chosen when
/// the payment row is written, so the recovery pass can replay ConfirmHold with the same id
/// after a crash and complete the booking instead of refunding a sale seat-lock already made.
const RESERVE_BOOKING_IDS: &str = "ALTER TABLE payments ADD COLUMN reserved_booking_id uuid NULL";

/// Money states committed before every network call, refunds and cancellations:
/// - `payments.status` gains `charging` (committed before the provider is called), `unknown`
///   (the provider timed out or failed: settled from the provider, never assumed),
///   `captured` (charged, the booking not yet written) and `refunding` (committed before the
///   refund call); `processing` stays for rows written by older versions and for the instant
///   between the key claim and the charge.
/// - At most one live payment per hold (`payments_one_live_per_hold`): a new key for a hold
///   that is being paid or is paid cannot charge it twice. Declined and refunded payments
///   leave the hold free to retry.
/// - `refunds`: one full refund per payment, its own state (`refunding` → `refunded`) and
///   who asked for it.
/// - `bookings.status` (`confirmed` → `cancelling` → `cancelled`); a cancelled booking's
///   `seat_guard` rows are deleted in the transaction that records its refund, so the seat
///   can be sold again (I1: a seat has at most one live booking).
/// - `seat_returns`: the outbox of seats to give back to seat-lock (internal RPC
///   `ReturnSeats`), written in that same transaction and drained until seat-lock accepts.
/// - The sandbox ledger learns `pending` charges that capture at `settles_at` (asynchronous
///   mode, and slow synchronous ones the caller stopped waiting for) and `declined` ones.
/// - `reconciliation_runs`: each run's outcome, for the time since the last clean run.
const MONEY_STATES: &str = r#"
ALTER TABLE payments DROP CONSTRAINT payments_status_check;
ALTER TABLE payments ADD CONSTRAINT payments_status_check CHECK (status IN
    ('processing', 'charging', 'unknown', 'captured', 'refunding', 'confirmed', 'declined', 'refunded'));
ALTER TABLE payments ADD COLUMN charge_attempts int NOT NULL DEFAULT 0;
ALTER TABLE payments ADD COLUMN payment_method text NULL;
DROP INDEX payments_processing;
CREATE INDEX payments_unsettled ON payments (updated_at)
    WHERE status IN ('processing', 'charging', 'unknown', 'captured', 'refunding');
CREATE UNIQUE INDEX payments_one_live_per_hold ON payments (hold_id)
    WHERE status NOT IN ('declined', 'refunded');

CREATE TABLE refunds (
    payment_id          uuid PRIMARY KEY REFERENCES payments (payment_id),
    booking_id          uuid NULL REFERENCES bookings (booking_id),
    state               text NOT NULL CHECK (state IN ('refunding', 'refunded')),
    reason              text NOT NULL,
    requested_by        text NOT NULL CHECK (requested_by IN ('system', 'user', 'operator')),
    provider_refund_id  text NULL,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX refunds_refunding ON refunds (updated_at) WHERE state = 'refunding';

ALTER TABLE bookings ADD COLUMN status text NOT NULL DEFAULT 'confirmed'
    CHECK (status IN ('confirmed', 'cancelling', 'cancelled'));
ALTER TABLE bookings ADD COLUMN cancelled_at timestamptz NULL;
ALTER TABLE bookings ADD COLUMN cancel_reason text NULL;

CREATE TABLE seat_returns (
    booking_id  uuid PRIMARY KEY REFERENCES bookings (booking_id),
    payload     bytea NOT NULL,
    attempts    int NOT NULL DEFAULT 0,
    created_at  timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE psp_ledger DROP CONSTRAINT psp_ledger_status_check;
ALTER TABLE psp_ledger ADD CONSTRAINT psp_ledger_status_check CHECK (status IN
    ('pending', 'captured', 'declined', 'refunded'));
ALTER TABLE psp_ledger ADD COLUMN settles_at timestamptz NULL;
ALTER TABLE psp_ledger ADD COLUMN decline_reason text NULL;

CREATE TABLE reconciliation_runs (
    run_id          bigserial PRIMARY KEY,
    started_at      timestamptz NOT NULL,
    finished_at     timestamptz NOT NULL DEFAULT now(),
    charges_checked bigint NOT NULL,
    discrepancies   int NOT NULL,
    unsettled       int NOT NULL
);
"#;

/// Who drives a payment in flight (module `instances`): `payment_instances` holds each
/// process's lease (`last_seen`, refreshed every heartbeat), `payments.owner_instance` the
/// process that claimed (or adopted) the payment. Rows of older versions have no owner and
/// are recovered by age only. The orphan pass reads the unsettled payments through
/// `payments_unsettled` (few rows), so the owner needs no index of its own.
const INSTANCES: &str = r#"
CREATE TABLE payment_instances (
    instance_id  uuid PRIMARY KEY,
    started_at   timestamptz NOT NULL DEFAULT now(),
    last_seen    timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE payments ADD COLUMN owner_instance uuid NULL;
"#;

/// The sandbox ledger's listing order and its pending charges, indexed: reconciliation pages
/// through the ledger by `(created_at, charge_id)` and every page first captures the due
/// pending charges. Without them each page sorted the whole ledger, so a run grew with the
/// square of the charges: over 73,000 charges (a few full sales kept by `stack up`) the
/// `Reconcile` RPC outlasted the 5 s request timeout.
const LEDGER_INDEXES: &str = r#"
CREATE INDEX psp_ledger_listing ON psp_ledger (created_at, charge_id);
CREATE INDEX psp_ledger_pending ON psp_ledger (settles_at) WHERE status = 'pending';
"#;
