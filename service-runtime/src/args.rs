//! The backing-store flags every service shares (Redis, NATS, Postgres), each group with its
//! one validation. A service flattens the groups it uses into its `Config`:
//!
//! ```ignore
//! #[command(flatten)]
//! pub redis: RedisArgs,
//! ```
//!
//! The flag and environment names are the ones the Kubernetes manifests (`k8s/base/config.env`)
//! and the `stack` runner set. URLs may carry passwords, so no error message repeats one.

use std::str::FromStr;

use crate::config::{validate_prefix, validate_redis_prefix};

/// Where the service's Redis is and which part of its key space the service uses.
#[derive(Debug, Clone, clap::Args)]
pub struct RedisArgs {
    /// Redis URL (`redis://`, `rediss://`, `redis-cluster://`, ...).
    #[arg(id = "redis_url", long = "redis-url", env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    pub url: String,
    /// Put in front of every Redis key, so several stacks (or tests) share one Redis.
    #[arg(id = "redis_prefix", long = "redis-prefix", env = "REDIS_PREFIX", default_value = "")]
    pub prefix: String,
}

impl RedisArgs {
    /// Redis at `url` under `prefix`.
    pub fn new(url: impl Into<String>, prefix: impl Into<String>) -> Self {
        Self { url: url.into(), prefix: prefix.into() }
    }

    /// Refuses a URL the Redis client cannot use and a prefix that would move keys out of
    /// their event's cluster slot.
    pub fn validate(&self) -> Result<(), String> {
        if self.url.is_empty() {
            return Err("REDIS_URL is required".into());
        }
        if let Err(error) = fred::types::config::Config::from_url(&self.url) {
            return Err(format!("REDIS_URL is not a Redis URL (value hidden): {error}"));
        }
        validate_redis_prefix(&self.prefix)
    }
}

/// The NATS JetStream carrying the mesh's events, and what the service expects of its stream.
#[derive(Debug, Clone, clap::Args)]
pub struct NatsArgs {
    /// NATS server URL, or a comma list of a cluster's servers (`nats://`, `tls://`, `ws://`,
    /// `wss://`; a bare `host:port` means `nats://`).
    #[arg(id = "nats_url", long = "nats-url", env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub url: String,
    /// Subject prefix of the mesh's events; the stream is `<prefix>_events`.
    #[arg(id = "nats_prefix", long = "nats-prefix", env = "NATS_PREFIX", default_value = "ticketing")]
    pub prefix: String,
    /// Fewest replicas the event stream must have; with fewer, the service refuses to start
    /// (1 on a single NATS server, 3 in production).
    #[arg(long, env = "EVENT_STREAM_MIN_REPLICAS", default_value_t = 1)]
    pub event_stream_min_replicas: usize,
}

impl NatsArgs {
    /// The stream of `prefix` on the NATS at `url`, one replica required.
    pub fn new(url: impl Into<String>, prefix: impl Into<String>) -> Self {
        Self { url: url.into(), prefix: prefix.into(), event_stream_min_replicas: 1 }
    }

    /// Refuses a server list the NATS client cannot dial, a malformed prefix and a replica
    /// count no stream can have.
    pub fn validate(&self) -> Result<(), String> {
        if self.url.trim().is_empty() {
            return Err("NATS_URL is required".into());
        }
        for (index, server) in nats_servers(&self.url).into_iter().enumerate() {
            if let Err(error) = async_nats::ServerAddr::from_str(server) {
                return Err(format!(
                    "NATS_URL server {} is not a NATS address (value hidden): {error}",
                    index + 1
                ));
            }
        }
        validate_prefix("NATS_PREFIX", &self.prefix)?;
        if !(1..=5).contains(&self.event_stream_min_replicas) {
            return Err(format!(
                "EVENT_STREAM_MIN_REPLICAS must be 1-5, got {}",
                self.event_stream_min_replicas
            ));
        }
        Ok(())
    }
}

/// The event stream to create or update: the flags of `stream-setup` (the Kubernetes Job) and
/// of `stack stream-setup`.
#[derive(Debug, Clone, clap::Args)]
pub struct StreamSetupArgs {
    /// NATS server (any node of the cluster).
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// Subject prefix of the mesh's events; the stream is `<prefix>_events`.
    #[arg(long, env = "NATS_PREFIX", default_value = "ticketing")]
    pub nats_prefix: String,
    /// Copies of each message: 1 on a single NATS server, 3 in production.
    #[arg(long, env = "EVENT_STREAM_REPLICAS", default_value_t = 1)]
    pub replicas: usize,
}

impl StreamSetupArgs {
    /// Refuses a malformed prefix and a replica count no stream can have.
    pub fn validate(&self) -> Result<(), String> {
        validate_prefix("NATS_PREFIX", &self.nats_prefix)?;
        if !(1..=5).contains(&self.replicas) {
            return Err(format!("EVENT_STREAM_REPLICAS must be 1-5, got {}", self.replicas));
        }
        Ok(())
    }
}

/// The servers of a `NATS_URL`: one URL or a comma list of a cluster's. The NATS client reads
/// a single string as one address, so a list must be split before it dials.
pub fn nats_servers(url: &str) -> Vec<&str> {
    url.split(',').map(str::trim).collect()
}

/// The Postgres holding the service's schema.
#[derive(Debug, Clone, clap::Args)]
pub struct DatabaseArgs {
    /// Postgres URL (`postgres://` or `postgresql://`).
    #[arg(
        id = "database_url",
        long = "database-url",
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    pub url: String,
}

impl DatabaseArgs {
    /// The Postgres at `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self { url: url.into() }
    }

    /// Refuses anything but a Postgres URL with a host part.
    pub fn validate(&self) -> Result<(), String> {
        if self.url.is_empty() {
            return Err("DATABASE_URL is required".into());
        }
        let rest = ["postgres://", "postgresql://"].iter().find_map(|scheme| self.url.strip_prefix(scheme));
        match rest {
            None => Err("DATABASE_URL must be a postgres:// or postgresql:// URL (value hidden)".into()),
            Some("") => Err("DATABASE_URL names no server".into()),
            Some(_) => Ok(()),
        }
    }
}

/// Checks the URL of a plain gRPC dependency (inventory): `http://` or `https://` and a host.
/// Internal (mutual TLS) URLs are checked by [`crate::mtls::validate_internal_url`] instead.
pub fn validate_http_url(name: &str, url: &str) -> Result<(), String> {
    if url.is_empty() {
        return Err(format!("{name} is required"));
    }
    match url.strip_prefix("http://").or_else(|| url.strip_prefix("https://")) {
        Some(host) if !host.is_empty() => Ok(()),
        _ => Err(format!("{name} must be an http(s) URL, got {url:?}")),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test code: a panic is a failed test

    use clap::Parser;

    use super::*;

    /// A service's flags: the three groups side by side, as a service flattens them.
    #[derive(Debug, clap::Parser)]
    struct Flags {
        #[command(flatten)]
        redis: RedisArgs,
        #[command(flatten)]
        nats: NatsArgs,
        #[command(flatten)]
        database: DatabaseArgs,
    }

    #[test]
    fn the_groups_keep_the_flag_names_and_defaults_the_manifests_use() {
        let flags = Flags::try_parse_from([
            "svc",
            "--redis-url",
            "redis://r:6379",
            "--redis-prefix",
            "t1:",
            "--nats-url",
            "nats://n:4222",
            "--nats-prefix",
            "t1",
            "--event-stream-min-replicas",
            "3",
            "--database-url",
            "postgres://p/db",
        ])
        .unwrap();
        assert_eq!((flags.redis.url.as_str(), flags.redis.prefix.as_str()), ("redis://r:6379", "t1:"));
        assert_eq!((flags.nats.url.as_str(), flags.nats.prefix.as_str()), ("nats://n:4222", "t1"));
        assert_eq!(
            (flags.nats.event_stream_min_replicas, flags.database.url.as_str()),
            (3, "postgres://p/db")
        );
        let defaults = Flags::try_parse_from(["svc"]).unwrap();
        assert_eq!(defaults.redis.validate(), Ok(()));
        assert_eq!(defaults.nats.validate(), Ok(()));
        assert_eq!(defaults.database.validate(), Ok(()));
        // Every group reads its environment variable (checked through clap's model, not by
        // changing this process's environment under other tests).
        let command = <Flags as clap::CommandFactory>::command();
        let envs: Vec<String> = command
            .get_arguments()
            .filter_map(|arg| arg.get_env().map(|env| env.to_string_lossy().into_owned()))
            .collect();
        assert_eq!(
            envs,
            [
                "REDIS_URL",
                "REDIS_PREFIX",
                "NATS_URL",
                "NATS_PREFIX",
                "EVENT_STREAM_MIN_REPLICAS",
                "DATABASE_URL"
            ]
        );
    }

    #[test]
    fn redis_urls_are_parsed_and_never_printed() {
        let ok = |url: &str| RedisArgs::new(url, "").validate();
        assert_eq!(ok("redis://127.0.0.1:6379"), Ok(()));
        assert_eq!(ok("redis-cluster://h:7000?node=h:7001"), Ok(()));
        let bad = ok("http//:secret@nowhere").unwrap_err();
        assert!(bad.starts_with("REDIS_URL is not a Redis URL") && !bad.contains("secret"), "{bad}");
        assert_eq!(ok(""), Err("REDIS_URL is required".into()));
        let prefix = RedisArgs::new("redis://h", "{t}").validate().unwrap_err();
        assert!(prefix.starts_with("REDIS_PREFIX"), "{prefix}");
    }

    #[test]
    fn nats_urls_may_list_a_clusters_servers() {
        let ok = |url: &str| NatsArgs::new(url, "ticketing").validate();
        assert_eq!(ok("nats://127.0.0.1:4222"), Ok(()));
        assert_eq!(ok("nats:4222"), Ok(()), "a bare host:port means nats://");
        // The production overlay's value, which the client reads as one (bad) address unless
        // it is split first.
        let cluster = "nats://nats-0.nats-headless:4222,nats://nats-1.nats-headless:4222";
        assert_eq!(ok(cluster), Ok(()));
        assert!(async_nats::ServerAddr::from_str(cluster).is_err());
        assert_eq!(nats_servers(cluster).len(), 2);
        let bad = ok("nats://a:4222,postgres://user:secret@b").unwrap_err();
        assert!(
            bad.starts_with("NATS_URL server 2 is not a NATS address") && !bad.contains("secret"),
            "{bad}"
        );
        assert_eq!(ok(" "), Err("NATS_URL is required".into()));
        let prefix = NatsArgs::new("nats://h", "Bad-Prefix").validate().unwrap_err();
        assert!(prefix.starts_with("NATS_PREFIX"), "{prefix}");
        let mut replicas = NatsArgs::new("nats://h", "t");
        replicas.event_stream_min_replicas = 0;
        assert_eq!(replicas.validate(), Err("EVENT_STREAM_MIN_REPLICAS must be 1-5, got 0".into()));
    }

    #[test]
    fn database_urls_are_postgres_and_never_printed() {
        let ok = |url: &str| DatabaseArgs::new(url).validate();
        assert_eq!(ok("postgres://postgres@127.0.0.1:5432/postgres"), Ok(()));
        assert_eq!(ok("postgresql://u@h/db"), Ok(()));
        let bad = ok("mysql://root:secret@h/db").unwrap_err();
        assert!(bad.starts_with("DATABASE_URL must be a postgres://") && !bad.contains("secret"), "{bad}");
        assert_eq!(ok("postgres://"), Err("DATABASE_URL names no server".into()));
        assert_eq!(ok(""), Err("DATABASE_URL is required".into()));
    }

    #[test]
    fn http_urls_need_a_scheme_and_a_host() {
        assert_eq!(validate_http_url("INVENTORY_URL", "http://inventory:50053"), Ok(()));
        assert_eq!(validate_http_url("INVENTORY_URL", "https://inventory"), Ok(()));
        assert_eq!(
            validate_http_url("INVENTORY_URL", "inventory:50053"),
            Err("INVENTORY_URL must be an http(s) URL, got \"inventory:50053\"".into())
        );
        assert!(validate_http_url("INVENTORY_URL", "http://").is_err());
        assert_eq!(validate_http_url("INVENTORY_URL", ""), Err("INVENTORY_URL is required".into()));
    }
}
