//! The stack's data and what keeps it usable across restarts.
//!
//! - [`prepare`]: what `stack up` does to the stores: creates the database if it is missing
//!   and the event stream (create or update); it never deletes anything.
//! - [`wipe`]: `stack reset` and `up --reset`, the only way to delete data: drops the
//!   database, deletes the event stream and the Redis keys of the stack's prefix.
//! - [`keep_keys`]: the pass signing key and the shuffle key, made once in `<state>/keys` and
//!   reused, so a pass issued before a restart still verifies at seat-lock and an event's
//!   pre-queue is shuffled with the key it was committed to.
//! - [`Record`]: the ports and servers of the last start, in `<state>/stack.json`, which
//!   `status`, `logs` and `reset` read.

use std::{fs, path::Path};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use super::StackConfig;
use crate::identity::write_private;

/// The folder under the state dir that keeps the pass and shuffle keys.
const KEYS_DIR: &str = "keys";
/// The record of the last start, under the state dir.
const RECORD_FILE: &str = "stack.json";
/// Redis keys deleted per `DEL` while wiping.
const SCAN_BATCH: usize = 1_000;

/// Creates or updates the event stream of `prefix` (`StreamSpec::for_prefix`) with
/// `replicas` copies keeping at most `max_bytes`: `stack stream-setup`, and a step of
/// [`super::Stack::start`]. An existing stream keeps its messages.
pub async fn setup_stream(
    nats_url: &str,
    prefix: &str,
    replicas: usize,
    max_bytes: i64,
) -> anyhow::Result<()> {
    let spec = service_runtime::bus::StreamSpec::for_prefix(prefix)
        .with_replicas(replicas)
        .with_max_bytes(max_bytes);
    service_runtime::bus::setup_stream(nats_url, &spec)
        .await
        .with_context(|| format!("cannot create the event stream {} on {nats_url}", spec.name))?;
    Ok(())
}

/// `(server URL, database name)` of a `postgres://…/<name>` URL; the name must be a plain
/// identifier, as it is spliced into `CREATE DATABASE` and `DROP DATABASE`.
pub fn split_database_url(url: &str) -> anyhow::Result<(&str, &str)> {
    let (server, database) = url.rsplit_once('/').context("the database URL has no database name")?;
    let database = database.split('?').next().unwrap_or_default();
    let plain = !database.is_empty()
        && database.len() <= 63
        && database.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !database.starts_with(|c: char| c.is_ascii_digit());
    if !plain {
        bail!("database name {database:?}: use 1-63 of [a-z0-9_], not starting with a digit");
    }
    Ok((server, database))
}

/// Creates the stack's database if it does not exist (through the server's `postgres`
/// database). A server where that database is not reachable, but the stack's is, is fine:
/// the database exists.
async fn ensure_database(url: &str) -> anyhow::Result<()> {
    use sea_orm::{ConnectionTrait, Database, DbBackend, Statement};
    let (server, database) = split_database_url(url)?;
    let Ok(admin) = Database::connect(format!("{server}/postgres")).await else {
        let own = Database::connect(url).await.with_context(|| format!("cannot connect to {url}"))?;
        own.close().await?;
        return Ok(());
    };
    let exists = admin
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT 1 FROM pg_database WHERE datname = $1",
            [database.into()],
        ))
        .await?
        .is_some();
    if !exists {
        eprintln!("creating database {database}");
        admin.execute_unprepared(&format!("CREATE DATABASE \"{database}\"")).await?;
    }
    admin.close().await?;
    Ok(())
}

/// What `up` does to the stores before starting the services: the database exists, the
/// stream exists (and has the mesh's settings). Nothing is deleted.
pub async fn prepare(config: &StackConfig) -> anyhow::Result<()> {
    ensure_database(&config.database_url).await?;
    setup_stream(&config.nats_url, &config.nats_prefix, 1, config.stream_max_bytes).await
}

/// What [`wipe`] deletes, in words for the confirmation prompt.
pub fn describe_wipe(config: &StackConfig) -> String {
    let (server, database) = split_database_url(&config.database_url).unwrap_or(("?", "?"));
    format!(
        "database {database} on {server}, the event stream {}_events on {}, and every Redis key \
         starting with {:?} on {}",
        config.nats_prefix, config.nats_url, config.redis_prefix, config.redis_url
    )
}

/// Deletes the stack's data: drops its database (and creates it again, empty), deletes its
/// event stream and its Redis keys. The processes must be stopped first.
pub async fn wipe(config: &StackConfig) -> anyhow::Result<()> {
    use sea_orm::{ConnectionTrait, Database};
    if config.redis_prefix.is_empty() {
        bail!("refusing to delete every Redis key: the stack needs a Redis prefix");
    }
    let (server, database) = split_database_url(&config.database_url)?;
    let admin = Database::connect(format!("{server}/postgres")).await?;
    admin.execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{database}\" WITH (FORCE)")).await?;
    admin.execute_unprepared(&format!("CREATE DATABASE \"{database}\"")).await?;
    admin.close().await?;

    let nats = async_nats::connect(&config.nats_url).await?;
    let stream = format!("{}_events", config.nats_prefix);
    match async_nats::jetstream::new(nats).delete_stream(&stream).await {
        Ok(_) => {}
        Err(error) if error.to_string().contains("not found") => {}
        Err(error) => return Err(error).with_context(|| format!("cannot delete the stream {stream}")),
    }

    use fred::prelude::*;
    let redis = Client::new(fred::types::config::Config::from_url(&config.redis_url)?, None, None, None);
    redis.init().await?;
    let pattern = format!("{}*", config.redis_prefix);
    let mut cursor = "0".to_owned();
    loop {
        let (next, keys): (String, Vec<String>) = redis
            .custom(
                fred::cmd!("SCAN"),
                vec![cursor.clone(), "MATCH".into(), pattern.clone(), "COUNT".into(), SCAN_BATCH.to_string()],
            )
            .await?;
        if !keys.is_empty() {
            let _: i64 = redis.del(keys).await?;
        }
        if next == "0" {
            break;
        }
        cursor = next;
    }
    redis.quit().await?;
    Ok(())
}

/// Reads the pass signing key, its public half and the shuffle key from `<state>/keys`, or
/// stores `config`'s there on first use; `config` then carries the kept ones.
pub fn keep_keys(config: &mut StackConfig) -> anyhow::Result<()> {
    let dir = config.state_dir.join(KEYS_DIR);
    fs::create_dir_all(&dir)?;
    let files = [
        ("pass-signing-keys", &mut config.pass_signing_keys),
        ("pass-verify-keys", &mut config.pass_verify_keys),
        ("shuffle-key", &mut config.shuffle_key),
    ];
    let all_there = files.iter().all(|(name, _)| dir.join(name).exists());
    for (name, value) in files {
        let path = dir.join(name);
        if all_there {
            *value = fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
            *value = value.trim().to_owned();
        } else {
            write_private(&path, value)?;
        }
    }
    Ok(())
}

/// The ports and servers of a stack's last start (no secrets): what `status`, `logs` and
/// `reset` need to find it again.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub lb_port: u16,
    pub services: Vec<ServicePorts>,
    pub database_url: String,
    pub redis_url: String,
    pub redis_prefix: String,
    pub nats_url: String,
    pub nats_prefix: String,
    /// When it started (RFC 3339).
    pub started_at: String,
}

/// One service's ports in a [`Record`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServicePorts {
    pub name: String,
    pub grpc: u16,
    /// 0 when the service has no internal listener.
    pub internal: u16,
    pub metrics: u16,
    pub health: u16,
}

impl Record {
    pub fn of(config: &StackConfig) -> Self {
        Self {
            lb_port: config.lb_port,
            services: config
                .services
                .iter()
                .map(|s| ServicePorts {
                    name: s.name.to_owned(),
                    grpc: s.grpc_port,
                    internal: s.internal_port,
                    metrics: s.metrics_port,
                    health: s.health_port,
                })
                .collect(),
            database_url: config.database_url.clone(),
            redis_url: config.redis_url.clone(),
            redis_prefix: config.redis_prefix.clone(),
            nats_url: config.nats_url.clone(),
            nats_prefix: config.nats_prefix.clone(),
            started_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        }
    }

    pub fn write(&self, state_dir: &Path) -> anyhow::Result<()> {
        fs::create_dir_all(state_dir)?;
        fs::write(state_dir.join(RECORD_FILE), serde_json::to_string_pretty(self)?)?;
        Ok(())
    }

    /// The record in `state_dir`, if a stack was started there.
    pub fn read(state_dir: &Path) -> anyhow::Result<Option<Self>> {
        let path = state_dir.join(RECORD_FILE);
        match fs::read_to_string(&path) {
            Ok(text) => Ok(Some(
                serde_json::from_str(&text).with_context(|| format!("{} is damaged", path.display()))?,
            )),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(error).with_context(|| format!("cannot read {}", path.display())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::split_database_url;

    #[test]
    fn only_plain_database_names_are_spliced() {
        assert_eq!(
            split_database_url("postgres://postgres@127.0.0.1:5432/ticketing").ok(),
            Some(("postgres://postgres@127.0.0.1:5432", "ticketing"))
        );
        assert_eq!(split_database_url("postgres://h/t_1?sslmode=disable").ok().map(|(_, d)| d), Some("t_1"));
        for bad in [
            "postgres://h/",
            "postgres://h/x;DROP",
            "postgres://h/\"x\"",
            "postgres://h/1x",
            "postgres://h/Tic",
        ] {
            assert!(split_database_url(bad).is_err(), "{bad}");
        }
    }
}
