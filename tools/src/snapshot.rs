//! What the stores hold, to prove that a request changed nothing.
//!
//! [`StoreSnapshot::take`] records every Redis key under the stack's prefix with its type and
//! a digest of its `DUMP` (the serialized value, without the TTL), except keys about to expire
//! by themselves ([`VOLATILE_TTL_MS`]), and every table of the
//! database outside PostgreSQL's own schemas with its row count and a digest of all its rows
//! (`md5` of the rows as text, in a stable order). [`StoreSnapshot::diff`] names what differs
//! between two snapshots. [`StoreSnapshot::settled`] waits until the stores stop changing by
//! themselves (outbox relays, consumers catching up), so a later difference is the caller's.

use std::{
    collections::BTreeMap,
    hash::{DefaultHasher, Hash, Hasher},
    time::Duration,
};

use anyhow::Context;
use fred::prelude::*;
use sea_orm::{ConnectionTrait, Database, DbBackend, Statement};

/// Keys asked per `SCAN` step.
const SCAN_COUNT: &str = "1000";
/// Keys that expire sooner than this (rate-limit windows, tick leases) are left out: they
/// vanish by themselves during a test, which is no change anyone made.
const VOLATILE_TTL_MS: i64 = 60_000;
/// Pause between two snapshots while waiting for the stores to settle.
const SETTLE_POLL: Duration = Duration::from_millis(500);

/// The stores' contents, digested.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StoreSnapshot {
    /// Redis key → `TYPE <bytes of DUMP> <digest>`.
    pub redis: BTreeMap<String, String>,
    /// `schema.table` → (rows, md5 of the rows).
    pub postgres: BTreeMap<String, (i64, String)>,
}

impl StoreSnapshot {
    /// Reads every key of Redis under `redis_prefix` (which must not be empty) and every
    /// table of the database at `database_url`.
    pub async fn take(database_url: &str, redis_url: &str, redis_prefix: &str) -> anyhow::Result<Self> {
        anyhow::ensure!(!redis_prefix.is_empty(), "a snapshot of every Redis key needs a prefix");
        Ok(Self {
            redis: redis_keys(redis_url, redis_prefix).await.context("Redis snapshot")?,
            postgres: postgres_tables(database_url).await.context("Postgres snapshot")?,
        })
    }

    /// A snapshot taken once two in a row agree: the stores no longer change by themselves.
    /// Fails after `timeout` with what kept changing.
    pub async fn settled(
        database_url: &str,
        redis_url: &str,
        redis_prefix: &str,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut last = Self::take(database_url, redis_url, redis_prefix).await?;
        loop {
            tokio::time::sleep(SETTLE_POLL).await;
            let now = Self::take(database_url, redis_url, redis_prefix).await?;
            if now == last {
                return Ok(now);
            }
            if tokio::time::Instant::now() > deadline {
                anyhow::bail!("the stores kept changing for {timeout:?}: {:?}", last.diff(&now));
            }
            last = now;
        }
    }

    /// Each difference from `self` to `after`: a key or table added, removed or changed.
    pub fn diff(&self, after: &Self) -> Vec<String> {
        let mut out = Vec::new();
        diff_maps("redis key", &self.redis, &after.redis, &mut out);
        diff_maps("table", &self.postgres, &after.postgres, &mut out);
        out
    }
}

fn diff_maps<V: PartialEq + std::fmt::Debug>(
    what: &str,
    before: &BTreeMap<String, V>,
    after: &BTreeMap<String, V>,
    out: &mut Vec<String>,
) {
    for (name, old) in before {
        match after.get(name) {
            None => out.push(format!("{what} {name} removed (was {old:?})")),
            Some(new) if new != old => out.push(format!("{what} {name} changed: {old:?} → {new:?}")),
            Some(_) => {}
        }
    }
    for (name, new) in after {
        if !before.contains_key(name) {
            out.push(format!("{what} {name} added: {new:?}"));
        }
    }
}

async fn redis_keys(redis_url: &str, prefix: &str) -> anyhow::Result<BTreeMap<String, String>> {
    let redis = Client::new(fred::types::config::Config::from_url(redis_url)?, None, None, None);
    redis.init().await?;
    let pattern = format!("{prefix}*");
    let mut keys = Vec::new();
    let mut cursor = "0".to_owned();
    loop {
        let (next, page): (String, Vec<String>) = redis
            .custom(
                fred::cmd!("SCAN"),
                vec![cursor.clone(), "MATCH".into(), pattern.clone(), "COUNT".into(), SCAN_COUNT.into()],
            )
            .await?;
        keys.extend(page);
        if next == "0" {
            break;
        }
        cursor = next;
    }
    let mut out = BTreeMap::new();
    for key in keys {
        let ttl_ms: i64 = redis.pttl(key.as_str()).await?;
        if (0..VOLATILE_TTL_MS).contains(&ttl_ms) {
            continue;
        }
        let kind: String = redis.custom(fred::cmd!("TYPE"), vec![key.clone()]).await?;
        let dump: fred::types::Value = redis.dump(key.as_str()).await?;
        // A key that expired between SCAN and DUMP is simply gone.
        let Some(bytes) = dump.as_bytes() else { continue };
        let mut hasher = DefaultHasher::new();
        bytes.hash(&mut hasher);
        out.insert(key, format!("{kind} {}B {:016x}", bytes.len(), hasher.finish()));
    }
    redis.quit().await?;
    Ok(out)
}

/// Tables left out of a snapshot: state written in the background on a timer, which no request
/// changes: inventory's seat map snapshots (a copy of the event stream's effect, taken every few
/// seconds) and payment's instance leases (a heartbeat every few seconds).
const DERIVED_TABLES: &[&str] = &["inventory.seat_map_snapshots", "payment.payment_instances"];

async fn postgres_tables(database_url: &str) -> anyhow::Result<BTreeMap<String, (i64, String)>> {
    let db = Database::connect(database_url).await?;
    let tables = db
        .query_all_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT table_schema, table_name FROM information_schema.tables \
             WHERE table_type = 'BASE TABLE' AND table_schema NOT IN ('pg_catalog', 'information_schema') \
             ORDER BY 1, 2",
        ))
        .await?;
    let mut out = BTreeMap::new();
    for table in tables {
        let schema: String = table.try_get_by_index(0)?;
        let name: String = table.try_get_by_index(1)?;
        if DERIVED_TABLES.contains(&format!("{schema}.{name}").as_str()) {
            continue;
        }
        let quoted = format!("\"{}\".\"{}\"", schema.replace('"', "\"\""), name.replace('"', "\"\""));
        let row = db
            .query_one_raw(Statement::from_string(
                DbBackend::Postgres,
                format!(
                    "SELECT count(*)::bigint, md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) \
                     FROM {quoted} t"
                ),
            ))
            .await?
            .with_context(|| format!("no answer for {quoted}"))?;
        out.insert(format!("{schema}.{name}"), (row.try_get_by_index(0)?, row.try_get_by_index(1)?));
    }
    db.close().await?;
    Ok(out)
}
