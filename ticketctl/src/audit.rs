//! `ticketctl audit`: runs `admission-audit` (a binary of the admission crate, shipped beside
//! the service) on one event, so the operator has one command line. The audit reads the
//! event stream from NATS, not the load balancer, so it takes NATS options, not `--target`;
//! its output and its exit code are admission-audit's own, passed through unchanged.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use clap::Args;

use crate::cli::Failure;

/// The audit binary's name.
pub const AUDIT_BINARY: &str = "admission-audit";

/// `ticketctl audit`'s exit codes: admission-audit's, and one for a missing binary.
pub const EXIT_CODES: &str = "\
Exit codes (admission-audit's own, passed through):
  0    fair: admissions follow the keyed shuffle, then join order; the key matches --commitment
  1    mismatch: admission order, a pass id given twice, or the key against the commitment
  2    the stream could not be read (NATS down, no such stream, read timed out); also bad
       ticketctl arguments
  3    inconclusive: no admission of the event in the stream, or undecodable ones
  64   arguments admission-audit refused
  127  admission-audit was found neither beside ticketctl nor on PATH";

/// Exit code when admission-audit cannot be found or started (the shell's "command not
/// found"), apart from every code the audit itself gives.
pub const EXIT_MISSING: u8 = 127;

/// Exit code when admission-audit ended without one (killed by a signal).
const EXIT_KILLED: u8 = 1;

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// The event audited (a UUID).
    #[arg(value_name = "EVENT")]
    pub event_id: String,
    /// The event's shuffle key as published after the sale (64 hex digits).
    #[arg(long)]
    pub event_key: String,
    /// The last pre-queue ticket (`sealed_ticket` of the event's opening record).
    #[arg(long)]
    pub sealed_ticket: u64,
    /// The commitment published before the sale (SHA-256 of the key, 64 hex digits).
    #[arg(long)]
    pub commitment: Option<String>,
    /// NATS JetStream carrying the mesh's events (admission-audit's default or `NATS_URL`
    /// when left out).
    #[arg(long)]
    pub nats_url: Option<String>,
    /// Subject prefix and stream name of the mesh's events (admission-audit's default or
    /// `NATS_PREFIX` when left out).
    #[arg(long)]
    pub nats_prefix: Option<String>,
    /// Longest the read of the stream may take, in seconds (admission-audit's default, 120 s,
    /// when left out; the global --timeout-secs is for gRPC calls).
    #[arg(long)]
    pub read_timeout_secs: Option<u64>,
}

impl AuditArgs {
    /// admission-audit's arguments for this audit.
    fn arguments(&self, json: bool) -> Vec<String> {
        let mut arguments = vec![
            "--event-id".to_owned(),
            self.event_id.clone(),
            "--event-key".to_owned(),
            self.event_key.clone(),
            "--sealed-ticket".to_owned(),
            self.sealed_ticket.to_string(),
        ];
        let optional = [
            ("--commitment", self.commitment.clone()),
            ("--nats-url", self.nats_url.clone()),
            ("--nats-prefix", self.nats_prefix.clone()),
            ("--timeout-secs", self.read_timeout_secs.map(|s| s.to_string())),
        ];
        for (flag, value) in optional {
            if let Some(value) = value {
                arguments.extend([flag.to_owned(), value]);
            }
        }
        if json {
            arguments.push("--json".to_owned());
        }
        arguments
    }
}

/// Where admission-audit is: beside ticketctl's own executable (an install or a cargo target
/// directory puts both there), else the first in `PATH`.
pub fn find(own_executable: Option<&Path>, path: Option<&std::ffi::OsStr>) -> Option<PathBuf> {
    let beside = own_executable.and_then(Path::parent).map(|dir| dir.join(AUDIT_BINARY));
    let on_path = path.into_iter().flat_map(std::env::split_paths).map(|dir| dir.join(AUDIT_BINARY));
    beside.into_iter().chain(on_path).find(|candidate| candidate.is_file())
}

/// Runs admission-audit with its output on ours; answers its exit code.
pub fn run(args: &AuditArgs, json: bool) -> Result<u8, Failure> {
    let own = std::env::current_exe().ok();
    let binary = find(own.as_deref(), std::env::var_os("PATH").as_deref()).ok_or_else(|| {
        Failure::Missing(format!(
            "{AUDIT_BINARY} is neither beside ticketctl ({}) nor on PATH; build it with \
             `cargo build --bin {AUDIT_BINARY}` or install it beside ticketctl",
            own.as_deref().and_then(Path::parent).map_or_else(|| "?".to_owned(), |d| d.display().to_string())
        ))
    })?;
    let status = Command::new(&binary)
        .args(args.arguments(json))
        .status()
        .map_err(|e| Failure::Missing(format!("cannot start {}: {e}", binary.display())))?;
    Ok(status.code().and_then(|code| u8::try_from(code).ok()).unwrap_or(EXIT_KILLED))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_binary_beside_ticketctl_wins_then_path_in_order() {
        let root = std::env::temp_dir().join(format!("ticketctl-audit-find-{}", std::process::id()));
        let (own_dir, first, second) = (root.join("bin"), root.join("p1"), root.join("p2"));
        for dir in [&own_dir, &first, &second] {
            std::fs::create_dir_all(dir).unwrap();
        }
        let own = own_dir.join("ticketctl");
        let path = std::env::join_paths([&first, &second]).unwrap();
        assert_eq!(find(Some(&own), Some(&path)), None);
        std::fs::write(second.join(AUDIT_BINARY), "").unwrap();
        assert_eq!(find(Some(&own), Some(&path)), Some(second.join(AUDIT_BINARY)));
        std::fs::write(first.join(AUDIT_BINARY), "").unwrap();
        assert_eq!(find(Some(&own), Some(&path)), Some(first.join(AUDIT_BINARY)));
        std::fs::write(own_dir.join(AUDIT_BINARY), "").unwrap();
        assert_eq!(find(Some(&own), Some(&path)), Some(own_dir.join(AUDIT_BINARY)));
        assert_eq!(find(None, None), None);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn options_given_are_passed_and_others_left_to_the_audit() {
        let mut args = AuditArgs {
            event_id: "E".into(),
            event_key: "K".into(),
            sealed_ticket: 7,
            commitment: None,
            nats_url: None,
            nats_prefix: None,
            read_timeout_secs: None,
        };
        assert_eq!(args.arguments(false), ["--event-id", "E", "--event-key", "K", "--sealed-ticket", "7"]);
        args.nats_prefix = Some("t1".into());
        args.read_timeout_secs = Some(30);
        let given = args.arguments(true);
        assert_eq!(given[6..], ["--nats-prefix", "t1", "--timeout-secs", "30", "--json"]);
    }
}
