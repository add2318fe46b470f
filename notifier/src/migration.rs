//! The `notifier` schema: inbox, webhooks and webhook deliveries.

use sea_orm_migration::{
    MigrationName, MigrationTrait, MigratorTrait, SchemaManager, async_trait,
    sea_orm::{ConnectionTrait, DbErr},
};

/// Applies the notifier's migrations in order.
pub struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(CreateTables)]
    }
}

/// The first version of the schema.
struct CreateTables;

impl MigrationName for CreateTables {
    fn name(&self) -> &str {
        "m20250101_000001_create_tables"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateTables {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared(
                r#"
CREATE TABLE inbox (
    id          bigserial PRIMARY KEY,
    -- The domain event's message id: a redelivered event finds it and is stored once.
    message_id  text NOT NULL UNIQUE,
    user_id     text NOT NULL,
    kind        smallint NOT NULL,
    event_id    text NOT NULL,
    -- The encoded EventEnvelope the notification came from.
    source      bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX inbox_user_id_id ON inbox (user_id, id);

CREATE TABLE webhooks (
    webhook_id  uuid PRIMARY KEY,
    user_id     text NOT NULL,
    url         text NOT NULL,
    secret      text NOT NULL,
    -- JSON array of NotificationKind numbers; empty means every kind.
    kinds       jsonb NOT NULL DEFAULT '[]'::jsonb,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhooks_user_id ON webhooks (user_id);

CREATE TABLE webhook_deliveries (
    id               bigserial PRIMARY KEY,
    webhook_id       uuid NOT NULL REFERENCES webhooks (webhook_id),
    notification_id  bigint NOT NULL REFERENCES inbox (id),
    status           text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'dead')),
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    last_error       text,
    UNIQUE (webhook_id, notification_id)
);
-- The delivery worker's scan: due pending rows only.
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
"#,
            )
            .await?;
        Ok(())
    }
}
