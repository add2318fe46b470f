//! The local stack: backing services, the five services and the load balancer as processes,
//! and the `stack` command that runs them.
//!
//! - [`prereq`]: Postgres, Redis and NATS (JetStream) answering, HAProxy installed; what to
//!   install when something is missing.
//! - [`config`]: [`StackConfig`], what the processes are started with (ports, servers,
//!   prefixes, keys, environment).
//! - [`process`]: [`Stack::start`] starts the services and HAProxy with their logs and pid
//!   files in one folder and waits until every health check answers SERVING; [`stop`] stops
//!   them by pid.
//! - [`data`]: what `up` does to the stores (creates, never deletes), `reset` (the only
//!   wipe), the keys kept across restarts, the record of the last start.
//! - [`cli`]: the `stack` command's arguments; [`up`] (up, down, reset), [`demo`],
//!   [`testing`] (`stack test`), [`status`] (status, logs) and [`token`] do its jobs.
//! - [`backing`]: private Redis, NATS and Postgres instances on free ports, which a chaos run
//!   may restart without touching the machine's shared servers.
//! - [`certs`]: the mesh CA and one certificate per service, made in `<state>/certs` on first
//!   start and reused; seat-lock and payment get `TLS_CERT`, `TLS_KEY`, `TLS_CA` and serve
//!   their internal RPCs on a second, mutual-TLS port that HAProxy never routes to.
//! - [`supervisor`]: restarts a service of a started stack that died, with the same
//!   environment and port, and records when it died and when it was SERVING again.
//!
//! The same code starts the real processes for the end-to-end tests, on free ports and with
//! the test's own database and prefixes.

pub mod backing;
pub mod certs;
pub mod cli;
pub mod config;
pub mod data;
pub mod demo;
pub mod prereq;
pub mod process;
pub mod status;
pub mod supervisor;
pub mod testing;
pub mod token;
pub mod up;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::bail;
pub use config::{INTERNAL_SERVICES, SERVICES, ServiceProcess, StackConfig, free_port};
pub use data::{setup_stream, split_database_url};
pub use prereq::{ensure_backing_services, ensure_haproxy, ensure_prometheus, ensure_pyyaml, haproxy};
pub use process::{Stack, alive, health, pid_files, signal, status, stop};

/// The workspace root, where `cargo` runs.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}

/// Where cargo puts binaries: `$CARGO_TARGET_DIR` or `<workspace>/target`.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| workspace_root().join("target"))
}

/// Runs cargo in the workspace. The variables `cargo run` set for this binary (its package
/// name, manifest dir, ...) are removed first: build scripts that watch them would otherwise
/// rerun and rebuild half the dependency tree on every call.
pub fn cargo(args: &[&str]) -> anyhow::Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(cargo);
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        let set_by_cargo_run =
            ["CARGO_PKG_", "CARGO_MANIFEST_", "CARGO_CRATE_", "CARGO_BIN_", "CARGO_PRIMARY_"]
                .iter()
                .any(|prefix| name.starts_with(prefix));
        if set_by_cargo_run || name == "OUT_DIR" {
            command.env_remove(name.as_ref());
        }
    }
    let status = command.args(args).current_dir(workspace_root()).status()?;
    if !status.success() {
        bail!("`cargo {}` failed with {status}", args.join(" "));
    }
    Ok(())
}

/// Which binaries [`build_binaries`] builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binaries {
    /// The five services: what `up`, `demo` and a chaos run start (the simulator runs inside
    /// the calling process). The first `demo` on a fresh clone builds no more than it runs.
    Services,
    /// Every binary of the workspace: the tests also drive `ticketctl`, `admission-audit`,
    /// `payment-reconcile` and `stream-setup`.
    All,
}

/// Builds `which` binaries, release or debug, and returns their folder. Always with
/// `--workspace` (then `--bin` picks the binaries): cargo unifies dependency features over the
/// packages a command selects, so selecting fewer packages would build shared dependencies
/// again with other features, while the same selection reuses everything `cargo run --bin
/// stack` already built.
pub fn build_binaries(debug: bool, which: Binaries) -> anyhow::Result<PathBuf> {
    let mut build = vec!["build", "--workspace"];
    match which {
        Binaries::All => build.push("--bins"),
        Binaries::Services => {
            for service in SERVICES {
                build.extend(["--bin", service]);
            }
        }
    }
    if !debug {
        build.push("--release");
    }
    cargo(&build)?;
    Ok(target_dir().join(if debug { "debug" } else { "release" }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `tools/demo` builds what `stack demo` runs in its one cargo invocation: a service
    /// missing there would be built by `demo` itself afterwards, as two invocations again.
    #[test]
    fn the_demo_script_builds_the_stack_tool_and_every_service() {
        let script = std::fs::read_to_string(workspace_root().join("tools/demo")).unwrap_or_default();
        let commands =
            script.lines().filter(|line| !line.trim_start().starts_with('#')).collect::<Vec<_>>().join("\n");
        let built: Vec<&str> =
            commands.split("--bin ").skip(1).filter_map(|rest| rest.split_whitespace().next()).collect();
        let mut expected: Vec<&str> = SERVICES.to_vec();
        expected.insert(0, "stack");
        assert_eq!(built, expected, "tools/demo's --bin list");
    }
}
