//! Flags and environment of the payment service.

use std::time::Duration;

use service_runtime::config::{ServerArgs, validate_prefix};

/// Everything the payment service needs to start.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "payment", about = "Idempotent checkout: charges, bookings, seat guard and outbox")]
pub struct Config {
    #[command(flatten)]
    pub server: ServerArgs,
    /// Postgres holding schema `payment` (payments, bookings, seat guard, outbox, sandbox ledger).
    #[arg(long, env = "DATABASE_URL", default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    pub database_url: String,
    /// Pool size of Postgres connections.
    #[arg(long, env = "DATABASE_MAX_CONNECTIONS", default_value_t = 32)]
    pub database_max_connections: u32,
    /// NATS server the outbox relay publishes to.
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// Subject prefix of the event stream (`<prefix>.booking.confirmed`, ...).
    #[arg(long, env = "NATS_PREFIX", default_value = "ticketing")]
    pub nats_prefix: String,
    /// The seat-lock service, which moves holds into checkout and confirms them.
    #[arg(long, env = "SEAT_LOCK_URL", default_value = "http://127.0.0.1:50052")]
    pub seat_lock_url: String,
    /// How often the outbox relay looks for rows when no payment woke it, in milliseconds.
    #[arg(long, env = "RELAY_INTERVAL_MS", default_value_t = 200)]
    pub relay_interval_ms: u64,
    /// Age after which a payment still `processing` is settled by the recovery pass, in
    /// seconds. Must exceed the longest a Pay can take (slow provider included).
    #[arg(long, env = "RECOVERY_AFTER_SECS", default_value_t = 300)]
    pub recovery_after_secs: u64,
}

impl Config {
    /// Checks everything before anything is bound or connected.
    pub fn validate(&self) -> Result<(), String> {
        self.server.validate()?;
        validate_prefix("NATS_PREFIX", &self.nats_prefix)?;
        if self.database_url.is_empty() {
            return Err("DATABASE_URL is required".into());
        }
        if self.database_max_connections == 0 {
            return Err("DATABASE_MAX_CONNECTIONS must be positive".into());
        }
        if self.relay_interval_ms == 0 {
            return Err("RELAY_INTERVAL_MS must be positive".into());
        }
        if self.recovery_after_secs < 90 {
            return Err("RECOVERY_AFTER_SECS must be at least 90 (a slow charge may take 60 s)".into());
        }
        for (name, url) in [("NATS_URL", &self.nats_url), ("SEAT_LOCK_URL", &self.seat_lock_url)] {
            if url.is_empty() {
                return Err(format!("{name} is required"));
            }
        }
        if !(self.seat_lock_url.starts_with("http://") || self.seat_lock_url.starts_with("https://")) {
            return Err(format!("SEAT_LOCK_URL must be an http(s) URL, got {:?}", self.seat_lock_url));
        }
        Ok(())
    }

    /// The relay's polling period.
    pub fn relay_interval(&self) -> Duration {
        Duration::from_millis(self.relay_interval_ms)
    }
}
