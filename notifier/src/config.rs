//! The notifier's configuration, from flags or the environment.

use std::{convert::Infallible, ops::RangeInclusive, path::PathBuf, str::FromStr, time::Duration};

use ipnet::IpNet;
use service_runtime::{
    args::{DatabaseArgs, NatsArgs},
    config::ServerArgs,
};

use crate::webhook::{
    address::AddressPolicy,
    secret::{EXAMPLE_SECRET_KEY, SecretKeys},
};

/// Default of `MAX_WEBHOOKS_PER_USER`.
pub const DEFAULT_MAX_WEBHOOKS_PER_USER: u32 = 10;
/// Largest `MAX_WEBHOOKS_PER_USER`: every stored notification fans out to that many deliveries.
pub const MAX_MAX_WEBHOOKS_PER_USER: u32 = 1_000;

/// Largest `MAX_SUBSCRIBERS`: each stream holds a task and a buffer on the replica.
pub const MAX_MAX_SUBSCRIBERS: usize = 100_000;

/// A setting that must never be printed: `Debug` shows `Redacted(..)` and parsing it never
/// fails (so clap never echoes it in an error); it is checked in [`Config::validate`].
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Redacted(String);

impl Redacted {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value itself, for the one place that parses it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl FromStr for Redacted {
    type Err = Infallible;

    fn from_str(value: &str) -> Result<Self, Infallible> {
        Ok(Self(value.to_owned()))
    }
}

impl std::fmt::Debug for Redacted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Redacted(..)")
    }
}

/// Everything the notifier needs to start. Validate with [`Config::validate`] before use.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "notifier", about = "Durable per-user inbox, live streams and signed webhooks")]
pub struct Config {
    #[command(flatten)]
    pub server: ServerArgs,
    /// Postgres holding schema `notifier` (inbox, webhooks, deliveries).
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// NATS JetStream, source of the domain events (`<prefix>.<kind>`).
    #[command(flatten)]
    pub nats: NatsArgs,
    /// Allow plain http:// webhooks. Off in production: secrets and payloads would cross the
    /// network in clear. The local stack turns it on for its loopback demo receiver.
    #[arg(long, env = "WEBHOOK_ALLOW_HTTP", default_value_t = false, action = clap::ArgAction::Set)]
    pub webhook_allow_http: bool,
    /// Ports a webhook URL may use (comma list of ports or `low-high` ranges). Empty means 443,
    /// plus 80 when http is allowed.
    #[arg(long, env = "WEBHOOK_ALLOWED_PORTS", value_delimiter = ',')]
    pub webhook_allowed_ports: Vec<String>,
    /// Networks (CIDRs or addresses, comma list) a webhook may reach even though they are
    /// loopback, private, link-local or otherwise special. Empty in production.
    #[arg(long, env = "WEBHOOK_ALLOWED_NETWORKS", value_delimiter = ',')]
    pub webhook_allowed_networks: Vec<String>,
    /// PEM file of extra CA certificates trusted for https webhooks, beside the system's roots.
    #[arg(long, env = "WEBHOOK_CA_FILE")]
    pub webhook_ca_file: Option<PathBuf>,
    /// Most webhooks one user may register.
    #[arg(long, env = "MAX_WEBHOOKS_PER_USER", default_value_t = DEFAULT_MAX_WEBHOOKS_PER_USER)]
    pub max_webhooks_per_user: u32,
    /// Live Subscribe streams one replica serves at once; past it Subscribe answers
    /// RESOURCE_EXHAUSTED (reason TOO_MANY_SUBSCRIBERS).
    #[arg(long, env = "MAX_SUBSCRIBERS", default_value_t = crate::live::DEFAULT_MAX_SUBSCRIBERS)]
    pub max_subscribers: usize,
    /// Keys sealing webhook secrets at rest: `kid:base64-32-byte-key[,kid:key...]`; the first
    /// seals, all open (rotation: put the new key first, restart, then drop the old one).
    #[arg(long, env = "WEBHOOK_SECRET_KEY", hide_env_values = true)]
    pub webhook_secret_key: Option<Redacted>,
    /// Accept the committed example WEBHOOK_SECRET_KEY. Only the local stack and tests set it.
    #[arg(long, env = "ALLOW_EXAMPLE_SECRETS", default_value_t = false, action = clap::ArgAction::Set)]
    pub allow_example_secrets: bool,
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
    /// Settings for tests: loopback server on port 0, the given backing services, fast
    /// retries, http and loopback receivers on any port allowed, the example secret key.
    pub fn for_test(database_url: &str, nats_url: &str, nats_prefix: &str) -> Self {
        Self {
            server: ServerArgs::loopback(),
            database: DatabaseArgs::new(database_url),
            nats: NatsArgs::new(nats_url, nats_prefix),
            webhook_allow_http: true,
            webhook_allowed_ports: vec!["1-65535".into()],
            webhook_allowed_networks: vec!["127.0.0.0/8".into(), "::1/128".into()],
            webhook_ca_file: None,
            max_webhooks_per_user: DEFAULT_MAX_WEBHOOKS_PER_USER,
            max_subscribers: crate::live::DEFAULT_MAX_SUBSCRIBERS,
            webhook_secret_key: Some(Redacted::new(EXAMPLE_SECRET_KEY)),
            allow_example_secrets: true,
            webhook_max_attempts: 8,
            webhook_backoff_base_ms: 20,
            webhook_backoff_cap_ms: 1_000,
        }
    }

    /// Refuses any value that would make the service misbehave, before anything is bound.
    pub fn validate(&self) -> Result<(), String> {
        self.server.validate()?;
        self.database.validate()?;
        self.nats.validate()?;
        self.address_policy()?;
        self.secret_keys()?;
        if !(1..=MAX_MAX_WEBHOOKS_PER_USER).contains(&self.max_webhooks_per_user) {
            return Err(format!("MAX_WEBHOOKS_PER_USER must be 1-{MAX_MAX_WEBHOOKS_PER_USER}"));
        }
        if !(1..=MAX_MAX_SUBSCRIBERS).contains(&self.max_subscribers) {
            return Err(format!("MAX_SUBSCRIBERS must be 1-{MAX_MAX_SUBSCRIBERS}"));
        }
        if !(1..=100).contains(&self.webhook_max_attempts) {
            return Err("WEBHOOK_MAX_ATTEMPTS must be 1-100".into());
        }
        if self.webhook_backoff_base_ms == 0 || self.webhook_backoff_cap_ms < self.webhook_backoff_base_ms {
            return Err("WEBHOOK_BACKOFF_BASE_MS must be positive and at most WEBHOOK_BACKOFF_CAP_MS".into());
        }
        Ok(())
    }

    /// The keys sealing webhook secrets; refuses the committed example key unless allowed.
    /// Errors never contain key material.
    pub fn secret_keys(&self) -> Result<SecretKeys, String> {
        let spec = self.webhook_secret_key.as_ref().map_or("", Redacted::expose);
        let keys = SecretKeys::parse(spec).map_err(|e| e.to_string())?;
        if keys.uses_example_key() && !self.allow_example_secrets {
            return Err("WEBHOOK_SECRET_KEY holds the committed example key, which protects nothing; \
                 generate one (openssl rand -base64 32) or set ALLOW_EXAMPLE_SECRETS=true for a local stack"
                .into());
        }
        Ok(keys)
    }

    /// Where webhooks may be sent, from `WEBHOOK_ALLOW_HTTP`, `WEBHOOK_ALLOWED_PORTS` and
    /// `WEBHOOK_ALLOWED_NETWORKS`.
    pub fn address_policy(&self) -> Result<AddressPolicy, String> {
        let mut allowed_ports = Vec::new();
        for item in self.webhook_allowed_ports.iter().map(|p| p.trim()).filter(|p| !p.is_empty()) {
            allowed_ports.push(parse_ports(item).ok_or_else(|| {
                format!("WEBHOOK_ALLOWED_PORTS: {item:?} is not a port or a low-high range of ports 1-65535")
            })?);
        }
        if allowed_ports.is_empty() {
            allowed_ports.push(443..=443);
            if self.webhook_allow_http {
                allowed_ports.push(80..=80);
            }
        }
        let mut allowed_networks = Vec::new();
        for item in self.webhook_allowed_networks.iter().map(|n| n.trim()).filter(|n| !n.is_empty()) {
            let net = IpNet::from_str(item)
                .or_else(|_| item.parse::<std::net::IpAddr>().map(IpNet::from))
                .map_err(|_| format!("WEBHOOK_ALLOWED_NETWORKS: {item:?} is not a CIDR or an IP address"))?;
            allowed_networks.push(net.trunc());
        }
        Ok(AddressPolicy { allow_http: self.webhook_allow_http, allowed_ports, allowed_networks })
    }

    /// The retry delay before backoff jitter for a delivery that has failed `attempts` times before.
    pub fn backoff(&self, attempts: u32) -> Duration {
        let factor = 1u64.checked_shl(attempts.min(40)).unwrap_or(u64::MAX);
        Duration::from_millis(
            self.webhook_backoff_base_ms.saturating_mul(factor).min(self.webhook_backoff_cap_ms),
        )
    }
}

/// `443` or `8000-8999`, ports 1-65535.
fn parse_ports(item: &str) -> Option<RangeInclusive<u16>> {
    let (low, high) = item.split_once('-').unwrap_or((item, item));
    let low: u16 = low.trim().parse().ok().filter(|p| *p != 0)?;
    let high: u16 = high.trim().parse().ok()?;
    (low <= high).then_some(low..=high)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;

    fn test_config() -> Config {
        Config::for_test("postgres://x", "nats://x", "p")
    }

    #[test]
    fn ports_and_networks() {
        let mut config = test_config();
        config.webhook_allowed_ports = vec![];
        config.webhook_allow_http = false;
        assert_eq!(config.address_policy().unwrap().allowed_ports, vec![443..=443]);
        config.webhook_allow_http = true;
        assert_eq!(config.address_policy().unwrap().allowed_ports, vec![443..=443, 80..=80]);
        config.webhook_allowed_ports = vec!["8443".into(), " 9000-9100".into()];
        assert_eq!(config.address_policy().unwrap().allowed_ports, vec![8443..=8443, 9000..=9100]);
        for bad in ["0", "65536", "9-1", "x", "1-"] {
            config.webhook_allowed_ports = vec![bad.into()];
            assert!(config.validate().unwrap_err().contains("WEBHOOK_ALLOWED_PORTS"), "{bad}");
        }
        config.webhook_allowed_ports = vec![];
        config.webhook_allowed_networks = vec!["127.0.0.1".into(), "10.1.2.3/8".into(), "fd00::/8".into()];
        let nets: Vec<String> =
            config.address_policy().unwrap().allowed_networks.iter().map(ToString::to_string).collect();
        assert_eq!(nets, ["127.0.0.1/32", "10.0.0.0/8", "fd00::/8"]);
        config.webhook_allowed_networks = vec!["10.0.0.0/33".into()];
        assert!(config.validate().unwrap_err().contains("WEBHOOK_ALLOWED_NETWORKS"));
    }

    #[test]
    fn secret_keys_are_required_and_the_example_key_is_refused_unless_allowed() {
        let mut config = test_config();
        assert!(config.validate().is_ok());
        config.allow_example_secrets = false;
        assert!(config.validate().unwrap_err().contains("example key"));
        config.webhook_secret_key = None;
        assert!(config.validate().unwrap_err().contains("WEBHOOK_SECRET_KEY is required"));
        config.webhook_secret_key = Some(Redacted::new("k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="));
        assert!(config.validate().is_ok());
        config.max_webhooks_per_user = 0;
        assert!(config.validate().unwrap_err().contains("MAX_WEBHOOKS_PER_USER"));
    }

    #[test]
    fn the_secret_key_is_never_printed() {
        let value = "k1:c2VjcmV0LXZhbHVlLXRoYXQtbXVzdC1ub3QtbGVhaw==";
        let jwks = service_runtime::auth::AuthArgs::for_tests().jwks;
        // A clap error elsewhere on the same command line does not echo the key.
        let error = Config::try_parse_from([
            "notifier",
            "--auth-jwks",
            &jwks,
            "--webhook-secret-key",
            value,
            "--max-webhooks-per-user",
            "many",
        ])
        .unwrap_err()
        .to_string();
        assert!(error.contains("many") && !error.contains("c2VjcmV0"), "{error}");
        // A malformed key is refused by validation without its value.
        let config =
            Config::try_parse_from(["notifier", "--auth-jwks", &jwks, "--webhook-secret-key", value])
                .unwrap();
        let problem = config.validate().unwrap_err();
        assert!(problem.contains("entry 1") && !problem.contains("c2VjcmV0"), "{problem}");
        assert!(!format!("{config:?}").contains("c2VjcmV0"));
        // --help never shows the environment's value.
        let command = Config::command();
        let arg = command.get_arguments().find(|a| a.get_id() == "webhook_secret_key").unwrap();
        assert!(arg.is_hide_env_values_set());
    }
}
