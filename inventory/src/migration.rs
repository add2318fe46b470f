//! The `inventory` schema: venues, their zones, events on them, and the seat maps' snapshots.

use sea_orm_migration::prelude::*;

/// Runs the catalogue migrations in order.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(CreateCatalogue), Box::new(CancellationCutoff), Box::new(SeatMapSnapshots)]
    }
}

/// Venues, zones (row labels and accessible seats as jsonb arrays) and events.
#[derive(DeriveMigrationName)]
struct CreateCatalogue;

#[async_trait::async_trait]
impl MigrationTrait for CreateCatalogue {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared(
                r#"
CREATE TABLE venues (
    venue_id       uuid PRIMARY KEY,
    name           text NOT NULL,
    total_capacity integer NOT NULL CHECK (total_capacity > 0),
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE zones (
    venue_id            uuid NOT NULL REFERENCES venues (venue_id) ON DELETE CASCADE,
    zone_id             text NOT NULL,
    position            integer NOT NULL,
    name                text NOT NULL,
    kind                smallint NOT NULL,
    price_cents         bigint NOT NULL CHECK (price_cents >= 0),
    row_labels          jsonb NOT NULL DEFAULT '[]',
    seats_per_row       integer NOT NULL DEFAULT 0,
    capacity            integer NOT NULL CHECK (capacity > 0),
    accessible_seat_ids jsonb NOT NULL DEFAULT '[]',
    PRIMARY KEY (venue_id, zone_id),
    UNIQUE (venue_id, position)
);
CREATE TABLE events (
    event_id             uuid PRIMARY KEY,
    venue_id             uuid NOT NULL REFERENCES venues (venue_id),
    name                 text NOT NULL,
    starts_at            timestamptz NOT NULL,
    sale_opens_at        timestamptz NOT NULL,
    max_tickets_per_user integer NOT NULL,
    currency             text NOT NULL,
    admission_capacity   integer NOT NULL,
    admission_tick_ms    integer NOT NULL,
    pass_ttl_seconds     integer NOT NULL,
    created_at           timestamptz NOT NULL DEFAULT now(),
    CHECK (sale_opens_at <= starts_at)
);
CREATE INDEX events_by_sale_opening ON events (sale_opens_at, event_id);
"#,
            )
            .await?;
        Ok(())
    }
}

/// `events.cancellation_cutoff_seconds`: owners may cancel a booking until this long before
/// the event starts (payment asks for it through `GetEvent`). Events stored before it get the
/// default of one day.
///
/// Named explicitly: `DeriveMigrationName` names a migration after its file, which would give
/// it the name of `CreateCatalogue` and have it skipped as already applied.
struct CancellationCutoff;

impl MigrationName for CancellationCutoff {
    fn name(&self) -> &str {
        "m20261201_000002_cancellation_cutoff"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CancellationCutoff {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared(
                "ALTER TABLE events ADD COLUMN cancellation_cutoff_seconds integer NOT NULL DEFAULT 86400 \
                 CHECK (cancellation_cutoff_seconds BETWEEN 1 AND 31536000)",
            )
            .await?;
        Ok(())
    }
}

/// `seat_map_snapshots`: per event, the seat map's state (`crate::seatmap::MapState` as JSON,
/// `format` 1) and the stream position it covers: every message up to `stream_sequence` of
/// the stream incarnation `stream_epoch` (the stream's creation time in ns; the sequences of a
/// recreated stream mean nothing to an older snapshot). Replicas write it concurrently; an
/// upsert only ever moves a row forward.
struct SeatMapSnapshots;

impl MigrationName for SeatMapSnapshots {
    fn name(&self) -> &str {
        "m20261202_000003_seat_map_snapshots"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for SeatMapSnapshots {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared(
                r#"
CREATE TABLE seat_map_snapshots (
    event_id        uuid PRIMARY KEY REFERENCES events (event_id) ON DELETE CASCADE,
    stream_epoch    bigint NOT NULL,
    stream_sequence bigint NOT NULL CHECK (stream_sequence >= 0),
    map_version     bigint NOT NULL CHECK (map_version >= 0),
    format          smallint NOT NULL,
    state           bytea NOT NULL,
    taken_at        timestamptz NOT NULL DEFAULT now()
);
"#,
            )
            .await?;
        Ok(())
    }
}
