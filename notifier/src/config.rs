//! The notifier's configuration, from flags or the environment.

use std::time::Duration;

use service_runtime::config::{ServerArgs, validate_prefix};

/// Everything the notifier needs to start. Validate with [`Config::validate`] before use.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "notifier", about = "Durable per-user inbox, live streams and signed webhooks")]
pub struct Config {
    #[command(flatten)]
    pub server: ServerArgs,
    /// Postgres holding schema `notifier` (inbox, webhooks, deliveries).
    #[arg(long, env = "DATABASE_URL", default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    pub database_url: String,
    /// NATS server with JetStream, source of the domain events.
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// Subject prefix of the event stream (`<prefix>.<kind>`).
    #[arg(long, env = "NATS_PREFIX", default_value = "ticketing")]
    pub nats_prefix: String,
    /// Hosts a webhook URL may point at (comma list). Anything else is refused at
    /// registration, so webhooks cannot be aimed at internal addresses.
    #[arg(
        long,
        env = "WEBHOOK_ALLOWED_HOSTS",
        value_delimiter = ',',
        default_value = "127.0.0.1,localhost,::1"
    )]
    pub webhook_allowed_hosts: Vec<String>,
    /// Delivery attempts before a webhook delivery is marked dead.
    #[arg(long, env = "WEBHOOK_MAX_ATTEMPTS", default_value_t = 8)]
    pub webhook_max_attempts: u32,
    /// First retry delay of a failed delivery, in milliseconds; doubles per attempt.
    #[arg(long, env = "WEBHOOK_BACKOFF_BASE_MS", default_value_t = 1_000)]
    pub webhook_backoff_base_ms: u64,
    /// Longest retry delay of a failed delivery, in milliseconds.
    #[arg(long, env = "WEBHOOK_BACKOFF_CAP_MS", default_value_t = 600_000)]
    pub webhook_backoff_cap_ms: u64,
}

impl Config {
    /// Settings for tests: loopback server on port 0, the given backing services, fast retries.
    pub fn for_test(database_url: &str, nats_url: &str, nats_prefix: &str) -> Self {
        Self {
            server: ServerArgs::loopback(),
            database_url: database_url.to_owned(),
            nats_url: nats_url.to_owned(),
            nats_prefix: nats_prefix.to_owned(),
            webhook_allowed_hosts: vec!["127.0.0.1".into(), "localhost".into(), "::1".into()],
            webhook_max_attempts: 8,
            webhook_backoff_base_ms: 20,
            webhook_backoff_cap_ms: 1_000,
        }
    }

    /// Refuses any value that would make the service misbehave, before anything is bound.
    pub fn validate(&self) -> Result<(), String> {
        self.server.validate()?;
        validate_prefix("NATS_PREFIX", &self.nats_prefix)?;
        if !self.database_url.starts_with("postgres://") && !self.database_url.starts_with("postgresql://") {
            return Err("DATABASE_URL must be a postgres:// URL".into());
        }
        if !self.nats_url.starts_with("nats://") {
            return Err("NATS_URL must be a nats:// URL".into());
        }
        let hosts = self.allowed_hosts();
        if hosts.is_empty() || hosts.iter().any(|h| h.is_empty() || h.contains(['/', '@', ' '])) {
            return Err("WEBHOOK_ALLOWED_HOSTS must be a comma list of host names or IPs".into());
        }
        if !(1..=100).contains(&self.webhook_max_attempts) {
            return Err("WEBHOOK_MAX_ATTEMPTS must be 1-100".into());
        }
        if self.webhook_backoff_base_ms == 0 || self.webhook_backoff_cap_ms < self.webhook_backoff_base_ms {
            return Err("WEBHOOK_BACKOFF_BASE_MS must be positive and at most WEBHOOK_BACKOFF_CAP_MS".into());
        }
        Ok(())
    }

    /// The allowed webhook hosts, lowercase, without IPv6 brackets.
    pub fn allowed_hosts(&self) -> Vec<String> {
        self.webhook_allowed_hosts
            .iter()
            .map(|h| h.trim().trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase())
            .collect()
    }

    /// The retry delay before backoff jitter for a delivery that has failed `attempts` times before.
    pub fn backoff(&self, attempts: u32) -> Duration {
        let factor = 1u64.checked_shl(attempts.min(40)).unwrap_or(u64::MAX);
        Duration::from_millis(
            self.webhook_backoff_base_ms.saturating_mul(factor).min(self.webhook_backoff_cap_ms),
        )
    }
}
