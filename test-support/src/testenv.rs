//! An isolated environment on the real Postgres, Redis and NATS, one per test.
//!
//! Each [`TestEnv`] gets its own Postgres database, Redis key prefix and NATS prefix (hence
//! its own JetStream stream, created by [`create_stream`] from the mesh's `StreamSpec`, as
//! services no longer create it), all named after one random id, so tests run in parallel
//! and twice in a row without seeing each other's data.
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
        let env = Self {
            database_url: format!("{postgres}/{id}"),
            redis_url: server_url("TEST_REDIS_URL", "redis://127.0.0.1:6379"),
            redis_prefix: format!("{id}:"),
            nats_url: server_url("TEST_NATS_URL", "nats://127.0.0.1:4222"),
            nats_prefix: id.clone(),
            id,
        };
        create_stream(&env.nats_url, &env.nats_prefix).await?;
        Ok(env)
    }

    /// A direct connection to the test's database, for assertions on stored rows.
    pub async fn database(&self) -> anyhow::Result<sea_orm::DatabaseConnection> {
        Ok(Database::connect(&self.database_url).await?)
    }
}

/// Bytes a test's stream may keep: no limit. JetStream reserves a stream's byte limit against
/// the server's storage, and tests leave their streams behind, so even a small limit per test
/// stream adds up to the whole server after a few hundred tests (64 MiB each did, at 920
/// streams); a test publishes little, and [`TEST_STREAM_MAX_AGE`] bounds what it keeps.
pub const TEST_STREAM_MAX_BYTES: i64 = -1;

/// How long a test's stream keeps its messages.
pub const TEST_STREAM_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(3600);

/// Creates (or updates) the event stream of `prefix` from the mesh's one definition,
/// `StreamSpec::for_prefix`, with one replica, no byte limit and [`TEST_STREAM_MAX_AGE`]: what
/// `stack stream-setup` does for a stack.
pub async fn create_stream(nats_url: &str, prefix: &str) -> anyhow::Result<()> {
    let mut spec = service_runtime::bus::StreamSpec::for_prefix(prefix).with_max_bytes(TEST_STREAM_MAX_BYTES);
    spec.max_age = TEST_STREAM_MAX_AGE;
    service_runtime::bus::setup_stream(nats_url, &spec).await?;
    Ok(())
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
