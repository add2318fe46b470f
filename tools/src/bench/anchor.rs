//! `Pay`'s physical anchor: Postgres alone doing the writes one confirmed booking commits,
//! with pgbench, measured in the same run as `Pay` so that the ratio survives a slow day.
//!
//! The transaction is the one statement payment's settle step runs, on payment's own
//! tables: a payment row, the booking, its two seats, their two seat guard rows and the
//! outbox row (a `BookingConfirmed`-sized payload), committed at once by 32 clients. The
//! tables are copied (`pg_dump --schema-only`, with every index and constraint) into a
//! scratch database of this run (`pay_anchor_<pid>`), which is dropped afterwards, so the
//! stack's data is untouched and the anchor's tables start empty.

use std::{path::Path, process::Command, time::Duration};

use anyhow::{Context, bail};
use sea_orm::{ConnectionTrait, Database};

use crate::stack::split_database_url;

/// pgbench clients: payment's pool of Postgres connections is 32 too.
pub const CLIENTS: u32 = 32;
/// Payment's schema, whose tables the anchor copies.
const SCHEMA: &str = "payment";
/// The tables one confirmed booking writes.
const TABLES: [&str; 5] = ["payments", "bookings", "booking_seats", "seat_guard", "outbox"];

/// One booking's writes, in one statement (so one transaction), as payment's settle step
/// writes them; every key is fresh, so no two clients conflict.
const BOOKING_TRANSACTION: &str = "\
WITH p AS (INSERT INTO payment.payments (payment_id, idempotency_key, event_id, hold_id, user_id, \
amount_cents, currency, status, provider_charge_id) VALUES (gen_random_uuid(), gen_random_uuid()::text, \
gen_random_uuid(), gen_random_uuid(), 'anchor-user-' || :client_id, 10000, 'EUR', 'confirmed', \
'ch_' || md5(random()::text)) RETURNING payment_id, event_id, hold_id), \
b AS (INSERT INTO payment.bookings (booking_id, payment_id, event_id, user_id, hold_id, zone_id, quantity, \
amount_cents, currency) SELECT gen_random_uuid(), payment_id, event_id, 'anchor-user-' || :client_id, hold_id, \
'A', 2, 10000, 'EUR' FROM p RETURNING booking_id, event_id), \
s AS (INSERT INTO payment.booking_seats (booking_id, event_id, zone_id, seat_id) \
SELECT booking_id, event_id, 'A', seat FROM b, unnest(ARRAY['A-1-1', 'A-1-2']) AS seat), \
g AS (INSERT INTO payment.seat_guard (event_id, seat_id, booking_id) \
SELECT event_id, seat, booking_id FROM b, unnest(ARRAY['A-1-1', 'A-1-2']) AS seat) \
INSERT INTO payment.outbox (message_id, kind, payload) \
SELECT booking_id::text, 'BookingConfirmed', decode(repeat('5a', 180), 'hex') FROM b;
";

/// What pgbench measured: one run, or the mean of the runs before and after the measured
/// scenario ([`Anchor::around`]).
#[derive(Debug, Clone, Copy)]
pub struct Anchor {
    /// Booking transactions committed per second.
    pub tps: f64,
    pub clients: u32,
    pub secs: u64,
    /// The two runs' rates, when this is their mean.
    pub runs: Option<(f64, f64)>,
}

impl Anchor {
    /// The mean of a run before the scenario and one after it.
    pub fn around(before: Anchor, after: Anchor) -> Anchor {
        Anchor { tps: (before.tps + after.tps) / 2.0, runs: Some((before.tps, after.tps)), ..before }
    }

    /// How the anchor is described in a row.
    pub fn text(&self) -> String {
        let runs = match self.runs {
            Some((before, after)) => format!(", the mean of {before:.0}/s before and {after:.0}/s after"),
            None => String::new(),
        };
        format!(
            "Postgres alone, pgbench {} clients, {} s: {:.0} booking transactions/s{runs} (payment, booking, \
             2 seats, 2 seat guard rows, outbox row in one transaction)",
            self.clients, self.secs, self.tps
        )
    }
}

/// Runs the booking transaction with pgbench for `duration` against a scratch copy of
/// payment's tables on the server of `database_url` (the stack's database).
pub async fn measure(database_url: &str, duration: Duration) -> anyhow::Result<Anchor> {
    let (server, database) = split_database_url(database_url)?;
    let scratch = format!("pay_anchor_{}", std::process::id());
    let admin = Database::connect(format!("{server}/postgres"))
        .await
        .with_context(|| format!("cannot connect to {server}/postgres"))?;
    // Only this process's own scratch database, left by nothing but a crash of this run.
    admin.execute_unprepared(&format!("DROP DATABASE IF EXISTS {scratch}")).await?;
    admin.execute_unprepared(&format!("CREATE DATABASE {scratch}")).await?;
    let scratch_url = format!("{server}/{scratch}");
    let dir = std::env::temp_dir().join(format!("pay-anchor-{}", std::process::id()));
    let measured = std::fs::create_dir_all(&dir)
        .map_err(anyhow::Error::from)
        .and_then(|()| copy_tables(database_url, database, &scratch_url, &dir))
        .and_then(|()| pgbench(&scratch_url, duration, &dir));
    let _ = std::fs::remove_dir_all(&dir);
    let dropped = admin.execute_unprepared(&format!("DROP DATABASE {scratch} WITH (FORCE)")).await;
    admin.close().await?;
    let anchor = measured?;
    dropped.with_context(|| format!("cannot drop the anchor's scratch database {scratch}"))?;
    Ok(anchor)
}

/// Copies payment's booking tables (definitions only) from `database` into `scratch_url`,
/// through a file in `dir`.
fn copy_tables(database_url: &str, database: &str, scratch_url: &str, dir: &Path) -> anyhow::Result<()> {
    let mut dump = Command::new("pg_dump");
    dump.args(["--schema-only", "--no-owner", "--no-privileges", "--dbname", database_url]);
    for table in TABLES {
        dump.arg("--table").arg(format!("{SCHEMA}.{table}"));
    }
    let ddl = dump.output().context("cannot run pg_dump (Debian package postgresql-client)")?;
    if !ddl.status.success() {
        bail!(
            "pg_dump of {database}'s {SCHEMA} tables failed: {}",
            String::from_utf8_lossy(&ddl.stderr).trim()
        );
    }
    let file = dir.join("schema.sql");
    // The dump names the schema but does not create it.
    let mut sql = format!("CREATE SCHEMA {SCHEMA};\n").into_bytes();
    sql.extend_from_slice(&ddl.stdout);
    std::fs::write(&file, sql)?;
    run_psql(scratch_url, &file)
}

fn run_psql(url: &str, file: &Path) -> anyhow::Result<()> {
    let out = Command::new("psql")
        .args(["-q", "-v", "ON_ERROR_STOP=1", "--dbname", url, "-f"])
        .arg(file)
        .output()
        .context("cannot run psql (Debian package postgresql-client)")?;
    if !out.status.success() {
        bail!("psql could not create the anchor's tables: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// pgbench's booking run, its script in `dir`; its `tps = … (without initial connection time)`.
fn pgbench(url: &str, duration: Duration, dir: &Path) -> anyhow::Result<Anchor> {
    let script = dir.join("booking.sql");
    std::fs::write(&script, BOOKING_TRANSACTION)?;
    let secs = duration.as_secs().max(1);
    let out = Command::new("pgbench")
        .args(["--no-vacuum", "--client", &CLIENTS.to_string(), "--jobs", "2", "--time", &secs.to_string()])
        .arg("--file")
        .arg(&script)
        .arg(url)
        .output()
        .context("cannot run pgbench (Debian package postgresql-contrib or postgresql-client)")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("pgbench failed: {}{}", stdout.trim(), String::from_utf8_lossy(&out.stderr).trim());
    }
    let tps = parse_tps(&stdout).with_context(|| format!("no tps in pgbench's output: {stdout}"))?;
    Ok(Anchor { tps, clients: CLIENTS, secs, runs: None })
}

/// The `tps = N (without initial connection time)` figure of pgbench's report.
fn parse_tps(report: &str) -> Option<f64> {
    report
        .lines()
        .find(|l| l.starts_with("tps = ") && l.contains("without initial connection time"))
        .and_then(|l| l.trim_start_matches("tps = ").split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::{Anchor, CLIENTS, parse_tps};

    #[test]
    fn reads_the_tps_without_connection_time() {
        let report = "number of failed transactions: 0 (0.000%)\nlatency average = 5.1 ms\n\
                      initial connection time = 21.3 ms\ntps = 6243.871 (without initial connection time)\n";
        assert_eq!(parse_tps(report), Some(6243.871));
        assert_eq!(parse_tps("tps = 12.0 (including connections establishing)\n"), None);
    }

    #[test]
    fn the_anchor_around_a_scenario_is_the_mean_of_its_two_runs() {
        let run = |tps| Anchor { tps, clients: CLIENTS, secs: 10, runs: None };
        let anchor = Anchor::around(run(1_500.0), run(2_500.0));
        assert_eq!(anchor.tps, 2_000.0);
        assert!(
            anchor.text().contains("2000 booking transactions/s, the mean of 1500/s before and 2500/s after")
        );
        assert!(!run(1_500.0).text().contains("mean"));
    }
}
