//! The `notifier` schema: inbox, webhooks and webhook deliveries.

use sea_orm_migration::{
    MigrationName, MigrationTrait, MigratorTrait, SchemaManager, async_trait,
    sea_orm::{ConnectionTrait, DatabaseConnection, DbErr},
};

use crate::webhook::secret::{self, SecretKeys};

/// Applies the notifier's migrations in order.
pub struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(CreateTables), Box::new(AddSealedSecrets), Box::new(DropPlaintextSecrets)]
    }
}

/// Runs the pending migrations; right before the one that drops the plain-text secret column,
/// seals every plain-text secret with `keys` (a key from configuration, which a SQL migration
/// cannot have). Afterwards re-seals secrets of older keys under the first key.
pub async fn run(db: &DatabaseConnection, keys: &SecretKeys) -> anyhow::Result<()> {
    for migration in Migrator::get_pending_migrations(db).await? {
        if migration.name() == DropPlaintextSecrets.name() {
            let done = secret::reseal_all(db, keys, true).await?;
            tracing::info!(sealed = done.plaintext, "plain-text webhook secrets sealed");
        }
        Migrator::up(db, Some(1)).await?;
    }
    let done = secret::reseal_all(db, keys, false).await?;
    if done.rotated > 0 {
        tracing::info!(
            resealed = done.rotated,
            kid = keys.primary_kid(),
            "webhook secrets re-sealed under the first key"
        );
    }
    Ok(())
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

/// Room for sealed secrets beside the plain-text column, and the `blocked` delivery state (a
/// delivery whose host resolved to a forbidden address: never sent, never retried).
struct AddSealedSecrets;

impl MigrationName for AddSealedSecrets {
    fn name(&self) -> &str {
        "m20260101_000002_add_sealed_secrets"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for AddSealedSecrets {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared(
                r#"
ALTER TABLE webhooks
    ADD COLUMN secret_kid text,
    -- nonce || ChaCha20-Poly1305 ciphertext || tag, under key secret_kid (see webhook::secret).
    ADD COLUMN secret_sealed bytea,
    ALTER COLUMN secret DROP NOT NULL;
ALTER TABLE webhook_deliveries
    DROP CONSTRAINT webhook_deliveries_status_check,
    ADD CONSTRAINT webhook_deliveries_status_check
        CHECK (status IN ('pending', 'delivered', 'dead', 'blocked'));
"#,
            )
            .await?;
        Ok(())
    }
}

/// Drops the plain-text secret column, once [`run`] has sealed every secret in it. Refuses
/// (and so stops the start) if plain text is left, rather than losing it.
struct DropPlaintextSecrets;

impl MigrationName for DropPlaintextSecrets {
    fn name(&self) -> &str {
        "m20260101_000003_drop_plaintext_secrets"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for DropPlaintextSecrets {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared(
                r#"
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM webhooks WHERE secret IS NOT NULL OR secret_sealed IS NULL) THEN
        RAISE EXCEPTION 'webhook secrets in plain text remain; they are sealed at start with WEBHOOK_SECRET_KEY';
    END IF;
END
$$;
ALTER TABLE webhooks
    DROP COLUMN secret,
    ALTER COLUMN secret_kid SET NOT NULL,
    ALTER COLUMN secret_sealed SET NOT NULL;
"#,
            )
            .await?;
        Ok(())
    }
}
