//! The local stack: `up`, `down`, `status`, `demo` (up + a small verified flash sale) and
//! `test` (backing services + every test of the workspace).
#![forbid(unsafe_code)]

use std::{path::PathBuf, process::Command};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use tools::{
    sale::{self, SaleConfig},
    stack::{self, Stack, StackConfig},
};

#[derive(Parser)]
#[command(about = "Runs the ticketing mesh on loopback")]
struct Cli {
    /// Logs, pid files and the load balancer's config.
    #[arg(long, env = "STACK_DIR", global = true)]
    state_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Starts Postgres, Redis and NATS if needed, builds the release binaries, starts the five
    /// services and the load balancer, and waits until all are SERVING.
    Up(UpArgs),
    /// Stops what `up` started.
    Down,
    /// Shows what is running.
    Status,
    /// `up`, then a small flash sale through the load balancer, verified.
    Demo {
        #[command(flatten)]
        up: UpArgs,
        /// Seats on sale.
        #[arg(long, default_value_t = 1_000)]
        seats: u32,
        /// Users pressing "Buy".
        #[arg(long, default_value_t = 5_000)]
        users: u32,
    },
    /// Starts the backing services if needed, builds the services, runs every test and the
    /// offline check of the Kubernetes manifests.
    Test {
        /// Extra arguments for `cargo test`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

#[derive(clap::Args)]
struct UpArgs {
    /// Use debug binaries (faster to build, slower to run).
    #[arg(long)]
    debug: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::new("warn")).init();
    let cli = Cli::parse();
    let state_dir = cli.state_dir.unwrap_or_else(|| stack::workspace_root().join(".stack"));
    match cli.command {
        Cmd::Up(args) => {
            up(&state_dir, &args).await?;
        }
        Cmd::Down => {
            stack::stop(&state_dir)?;
            println!("stopped");
        }
        Cmd::Status => {
            let processes = stack::status(&state_dir);
            if processes.is_empty() {
                println!("nothing is running (no pid files in {})", state_dir.display());
            }
            for (name, pid, running) in processes {
                println!("{name:<10} pid {pid:<8} {}", if running { "running" } else { "STOPPED" });
            }
        }
        Cmd::Demo { up: args, seats, users } => {
            let stack = up(&state_dir, &args).await?;
            println!("running a flash sale: {seats} seats, {users} users, through {}", stack.config.lb_url());
            let report = sale::run(SaleConfig {
                lb_url: stack.config.lb_url(),
                database_url: stack.config.database_url.clone(),
                seats,
                users,
                max_tickets_per_user: 4,
                admission_capacity: 500,
            })
            .await?;
            println!("{report}");
            println!(
                "the stack is still running (`stack status`, `stack down`); logs in {}",
                state_dir.join("logs").display()
            );
            if !report.violations.is_empty() {
                std::process::exit(1);
            }
        }
        Cmd::Test { args } => {
            stack::ensure_backing_services()?;
            stack::ensure_haproxy()?;
            cargo(&["build", "--bins"])?;
            let mut test = vec!["test", "--workspace"];
            test.extend(args.iter().map(String::as_str));
            cargo(&test)?;
            // The deployment is checked offline: schemas, patch targets, ports, images.
            let k8s = Command::new("bash")
                .arg("tools/k8s/check.sh")
                .current_dir(stack::workspace_root())
                .status()?;
            if !k8s.success() {
                bail!("the offline Kubernetes check failed");
            }
        }
    }
    Ok(())
}

/// Brings the local stack up from a clean slate.
async fn up(state_dir: &std::path::Path, args: &UpArgs) -> anyhow::Result<Stack> {
    stack::stop(state_dir)?;
    stack::ensure_backing_services()?;
    let started = std::time::Instant::now();
    let mut build = vec!["build", "--bins"];
    if !args.debug {
        build.push("--release");
    }
    for service in stack::SERVICES {
        build.extend(["-p", service]);
    }
    cargo(&build)?;
    let bin_dir = stack::target_dir().join(if args.debug { "debug" } else { "release" });
    let config = StackConfig::local(state_dir.to_path_buf(), bin_dir);
    stack::reset_local_state(&config).await.context("cannot reset the local stack's state")?;
    let booted = std::time::Instant::now();
    let stack = Stack::start(config).await?;
    println!(
        "stack up in {:.1} s (build {:.1} s, start {:.1} s); load balancer at {}",
        started.elapsed().as_secs_f64(),
        (booted - started).as_secs_f64(),
        booted.elapsed().as_secs_f64(),
        stack.config.lb_url()
    );
    Ok(stack)
}

fn cargo(args: &[&str]) -> anyhow::Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo).args(args).current_dir(stack::workspace_root()).status()?;
    if !status.success() {
        bail!("`cargo {}` failed with {status}", args.join(" "));
    }
    Ok(())
}
