//! Postgres connections confined to one schema, with timeouts on every wait.

use std::time::Duration;

use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbErr};

/// Longest opening one connection may take: a Postgres that does not answer fails the start
/// (or the request that needed a new connection) instead of hanging it.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest a caller waits for a free pooled connection. Past it the call fails (an RPC gets
/// `UNAVAILABLE` or `INTERNAL` from its service) instead of queueing without bound behind a
/// pool that a slow database has exhausted.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest one statement may run (Postgres `statement_timeout`, set on every pooled
/// connection): a lock wait or a runaway query is cancelled by the server. Large enough for
/// the heaviest reads (a 200,000-seat event's sold seats, a reconciliation page).
pub const STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);

/// Connects to `url`, creates `schema` if missing and makes it the only schema on the
/// search path, so the service's tables and its migration history live there and nowhere else.
/// Every connection has [`CONNECT_TIMEOUT`], [`ACQUIRE_TIMEOUT`] and [`STATEMENT_TIMEOUT`].
pub async fn connect(url: &str, schema: &str, max_connections: u32) -> Result<DatabaseConnection, DbErr> {
    {
        // A short-lived connection to create the schema; the pool below pins the search path.
        let mut bootstrap = ConnectOptions::new(url);
        bootstrap.max_connections(1).sqlx_logging(false);
        let bootstrap = Database::connect(with_timeouts(bootstrap)).await?;
        bootstrap.execute_unprepared(&format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\"")).await?;
        bootstrap.close().await?;
    }
    let mut options = ConnectOptions::new(url);
    options
        .max_connections(max_connections)
        .min_connections(1)
        .sqlx_logging(false)
        .set_schema_search_path(schema);
    Database::connect(with_timeouts(options)).await
}

/// `options` with the mesh's timeouts.
pub fn with_timeouts(mut options: ConnectOptions) -> ConnectOptions {
    options
        .connect_timeout(CONNECT_TIMEOUT)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .statement_timeout(STATEMENT_TIMEOUT);
    options
}
