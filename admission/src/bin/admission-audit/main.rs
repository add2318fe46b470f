//! `admission-audit`: an operator's check of one opening against the published key. An
//! operator command, not part of the service: it lives here, beside the service's binary.
//!
//! It reads every `Admitted` event of the event from the JetStream stream (an ephemeral,
//! ordered consumer on `<prefix>.admitted`, from the start of the stream until it has caught
//! up), runs [`admission::fairness::audit_admissions`] on them with
//! the published event key and `sealed_ticket`, and checks the key against the commitment
//! published before the sale. The read is bounded ([`read::MAX_MESSAGES`], [`read::IDLE_TIMEOUT`],
//! `--timeout-secs`) and never waits for events that are not in the stream.
//!
//! What counts: events of other event ids are skipped; an `Admitted` event seen twice under
//! one pass id (a publish retried after the stream's duplicate window) counts once; two
//! events that give one pass id to different users, or different tickets, are a finding.
//! The verdict is [`report::Verdict::Inconclusive`] when there is nothing to audit or some of the
//! event's admissions could not be read, since a fair verdict would then say more than the
//! stream does.
//!
//! Here: the arguments, the exit codes and the run; reading the stream is in [`read`], the
//! audit and its report in [`report`].

mod read;
mod report;

use std::time::Duration;

use admission::fairness::EventShuffleKey;
use service_runtime::{
    bus::EventBus,
    config::{self, exit_bad_config, validate_prefix},
};
use uuid::Uuid;

use crate::{
    read::{ReadError, read_admissions},
    report::{Report, audit},
};

/// Exit codes of `admission-audit`. Bad arguments exit with `EXIT_BAD_CONFIG` (64,
/// `EX_USAGE`), like the services' invalid configuration.
pub mod exit {
    /// The admissions follow the keyed shuffle, then join order, and the key matches the
    /// commitment (when one was given).
    pub const FAIR: i32 = 0;
    /// The audit found a mismatch: admission order, a pass id given twice, or the key
    /// against the commitment.
    pub const UNFAIR: i32 = 1;
    /// The stream could not be read: NATS unreachable, no such stream, a stalled or too
    /// long read.
    pub const UNREADABLE: i32 = 2;
    /// Nothing contradicts fairness, but there was nothing to audit (no admission of the
    /// event in the stream) or some of the event's admissions could not be decoded.
    pub const INCONCLUSIVE: i32 = 3;
}

/// Longest `--timeout-secs` accepted: an hour reads any bounded stream many times over.
const MAX_TIMEOUT_SECS: u64 = 3_600;

/// Arguments of `admission-audit`, from flags (the NATS ones also from the environment, as
/// the services read them).
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "admission-audit",
    about = "Audits an event's opening: reads its Admitted events from NATS and checks them against the published shuffle key",
    after_help = "Exit codes: 0 fair, 1 mismatch found, 2 stream unreadable, 3 inconclusive (nothing to audit or unreadable admissions), 64 bad arguments."
)]
struct AuditArgs {
    /// The event audited (UUID).
    #[arg(long)]
    pub event_id: Uuid,
    /// The event's shuffle key as published after the sale (64 hex digits).
    #[arg(long, value_parser = EventShuffleKey::from_hex)]
    pub event_key: EventShuffleKey,
    /// The last pre-queue ticket: `sealed_ticket` of the event's `opening` record, or of the
    /// "sale opened" log line.
    #[arg(long)]
    pub sealed_ticket: u64,
    /// The commitment published before the sale (SHA-256 of the event key, 64 hex digits);
    /// when given, the key must match it.
    #[arg(long, value_parser = parse_commitment)]
    pub commitment: Option<String>,
    /// NATS JetStream carrying the mesh's events.
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// Subject prefix (and stream name) of the mesh's events, as the services were given it.
    #[arg(long, env = "NATS_PREFIX", default_value = "ticketing")]
    pub nats_prefix: String,
    /// Longest the whole read may take, in seconds.
    #[arg(long, default_value_t = 120)]
    pub timeout_secs: u64,
    /// Print the report as JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Reads a commitment: 64 hex digits, any case; kept in lowercase.
fn parse_commitment(published: &str) -> Result<String, String> {
    let published = published.trim();
    if published.len() == 64 && published.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(published.to_ascii_lowercase())
    } else {
        Err("a commitment is 64 hex digits (SHA-256 of the event key)".into())
    }
}

impl AuditArgs {
    /// Refuses arguments the audit cannot run with, naming the setting.
    fn validate(&self) -> Result<(), String> {
        validate_prefix("NATS_PREFIX", &self.nats_prefix)?;
        if !(1..=MAX_TIMEOUT_SECS).contains(&self.timeout_secs) {
            return Err(format!("--timeout-secs must be 1-{MAX_TIMEOUT_SECS}"));
        }
        Ok(())
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs)
    }
}

/// Reads the stream and audits it, as `admission-audit` does; the whole read within
/// `--timeout-secs`.
async fn run(args: &AuditArgs) -> Result<Report, ReadError> {
    let reading = tokio::time::timeout(args.timeout(), async {
        let bus = EventBus::open_existing(&args.nats_url, &args.nats_prefix).await?;
        read_admissions(&bus, args.event_id).await
    })
    .await
    .map_err(|_| ReadError::Timeout(args.timeout()))??;
    Ok(audit(
        args.event_id,
        &args.nats_prefix,
        &args.event_key,
        args.sealed_ticket,
        args.commitment.as_deref(),
        reading,
    ))
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: AuditArgs = config::parse();
    if let Err(problem) = args.validate() {
        exit_bad_config("admission-audit", problem);
    }
    match run(&args).await {
        Ok(report) => {
            println!("{}", if args.json { report.to_json() } else { report.to_text() });
            std::process::exit(report.exit_code());
        }
        Err(error) => {
            if args.json {
                println!("{}", serde_json::json!({ "verdict": "unreadable", "error": error.to_string() }));
            }
            eprintln!("admission-audit: cannot read the stream: {error}");
            std::process::exit(exit::UNREADABLE);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commitments_are_64_hex_digits() {
        assert_eq!(parse_commitment(&"AB".repeat(32)), Ok("ab".repeat(32)));
        assert!(parse_commitment("abc").is_err());
        assert!(parse_commitment(&"zz".repeat(32)).is_err());
    }
}
