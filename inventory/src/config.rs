//! Flags and environment of the inventory service.

use service_runtime::{
    args::{DatabaseArgs, NatsArgs},
    config::ServerArgs,
};

/// Everything the inventory service needs to start, from flags or the environment.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "inventory", about = "Catalogue and live seat map of the ticketing mesh")]
pub struct Config {
    #[command(flatten)]
    pub server: ServerArgs,
    /// Postgres holding the catalogue (schema `inventory`).
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Connections in the Postgres pool; the hot path is served from memory, so few suffice.
    #[arg(long, env = "DATABASE_MAX_CONNECTIONS", default_value_t = 8)]
    pub database_max_connections: u32,
    /// NATS JetStream whose events keep the seat map current. On production's R3 stream,
    /// `EVENT_STREAM_MIN_REPLICAS` is 3.
    #[command(flatten)]
    pub nats: NatsArgs,
    /// Longest `App::build` waits for the seat map to catch up with the event stream, in ms.
    #[arg(long, env = "CATCH_UP_TIMEOUT_MS", default_value_t = 30_000)]
    pub catch_up_timeout_ms: u64,
    /// Messages applied between two seat map snapshots (see `snapshot`).
    #[arg(long, env = "SNAPSHOT_EVERY_MESSAGES", default_value_t = 10_000)]
    pub snapshot_every_messages: u64,
    /// Longest between two seat map snapshots while anything changes, in ms.
    #[arg(long, env = "SNAPSHOT_INTERVAL_MS", default_value_t = 5_000)]
    pub snapshot_interval_ms: u64,
}

impl Config {
    /// A configuration for tests: loopback server on a free port and the given backing services.
    pub fn for_tests(database_url: &str, nats_url: &str, nats_prefix: &str) -> Self {
        Self {
            server: ServerArgs::loopback(),
            database: DatabaseArgs::new(database_url),
            database_max_connections: 4,
            nats: NatsArgs::new(nats_url, nats_prefix),
            catch_up_timeout_ms: 30_000,
            snapshot_every_messages: 10_000,
            snapshot_interval_ms: 5_000,
        }
    }

    /// Refuses a configuration the service could not work with, before anything is bound.
    pub fn validate(&self) -> Result<(), String> {
        self.server.validate()?;
        self.database.validate()?;
        self.nats.validate()?;
        if !(1..=256).contains(&self.database_max_connections) {
            return Err("DATABASE_MAX_CONNECTIONS must be 1-256".into());
        }
        if !(1..=10_000_000).contains(&self.snapshot_every_messages) {
            return Err("SNAPSHOT_EVERY_MESSAGES must be 1-10000000".into());
        }
        if !(100..=3_600_000).contains(&self.snapshot_interval_ms) {
            return Err("SNAPSHOT_INTERVAL_MS must be 100-3600000".into());
        }
        Ok(())
    }
}
