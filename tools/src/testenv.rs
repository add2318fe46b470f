//! An isolated environment on the real Postgres, Redis and NATS, one per test.
//!
//! Each [`TestEnv`] gets its own Postgres database, Redis key prefix and NATS prefix (hence
//! its own JetStream stream), all named after one random id, so tests run in parallel and
//! twice in a row without seeing each other's data.
//!
//! The servers default to the loopback ones; `TEST_POSTGRES_URL`, `TEST_REDIS_URL` and
//! `TEST_NATS_URL` point elsewhere.

use sea_orm::{ConnectionTrait, Database};

/// URLs and prefixes of one test's private slice of the backing services.
#[derive(Debug, Clone)]
pub struct TestEnv {
    /// The random id all names derive from: `t` and 12 hex digits.
    pub id: String,
    /// A fresh, empty database of its own.
    pub database_url: String,
    pub redis_url: String,
    /// Ends with `:`; services put it in front of every key.
    pub redis_prefix: String,
    pub nats_url: String,
    /// The stream is `<nats_prefix>_events`.
    pub nats_prefix: String,
}

fn server_url(var: &str, default: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| default.to_owned())
}

impl TestEnv {
    /// Creates the test's database and picks its prefixes.
    pub async fn new() -> anyhow::Result<Self> {
        let id = format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let postgres = server_url("TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432");
        let admin = Database::connect(format!("{postgres}/postgres")).await?;
        admin.execute_unprepared(&format!("CREATE DATABASE {id}")).await?;
        admin.close().await?;
        Ok(Self {
            database_url: format!("{postgres}/{id}"),
            redis_url: server_url("TEST_REDIS_URL", "redis://127.0.0.1:6379"),
            redis_prefix: format!("{id}:"),
            nats_url: server_url("TEST_NATS_URL", "nats://127.0.0.1:4222"),
            nats_prefix: id.clone(),
            id,
        })
    }

    /// A direct connection to the test's database, for assertions on stored rows.
    pub async fn database(&self) -> anyhow::Result<sea_orm::DatabaseConnection> {
        Ok(Database::connect(&self.database_url).await?)
    }
}

/// Waits until `check` returns `Some`, polling every 50 ms for at most `timeout`.
pub async fn eventually<T, F, Fut>(timeout: std::time::Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return Some(value);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
