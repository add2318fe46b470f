//! Postgres connections confined to one schema.

use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbErr};

/// Connects to `url`, creates `schema` if missing and makes it the only schema on the
/// search path, so the service's tables and its migration history live there and nowhere else.
pub async fn connect(url: &str, schema: &str, max_connections: u32) -> Result<DatabaseConnection, DbErr> {
    {
        // A short-lived connection to create the schema; the pool below pins the search path.
        let bootstrap =
            Database::connect(ConnectOptions::new(url).max_connections(1).sqlx_logging(false).to_owned())
                .await?;
        bootstrap.execute_unprepared(&format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\"")).await?;
        bootstrap.close().await?;
    }
    let mut options = ConnectOptions::new(url);
    options
        .max_connections(max_connections)
        .min_connections(1)
        .sqlx_logging(false)
        .set_schema_search_path(schema);
    Database::connect(options).await
}
