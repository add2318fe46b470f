//! The local stack: `up`, `down`, `status`, `demo` (up + a small verified flash sale),
//! `token` (tokens of the stack's identity provider, for grpcurl and ghz) and `test`
//! (backing services + every test of the workspace).
#![forbid(unsafe_code)]

use std::{path::PathBuf, process::Command};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use tools::{
    flashsale::{self, SimConfig},
    identity::{self, Identity},
    report,
    stack::{self, Stack, StackConfig},
};

/// The demo's hold TTL: short, so that the holds its users walk away from expire within the
/// minute the demo takes.
const DEMO_HOLD_TTL_SECS: u64 = 20;

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
    /// `up`, then a small flash sale through the load balancer (the `flashsale` simulator),
    /// verified against ground truth, with a report in `.stack/reports/`.
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
    /// Prints a token of the stack's identity provider (its key is created in
    /// `<state dir>/auth/` on first use), e.g.
    /// `grpcurl -H "authorization: Bearer $(stack token --user alice)" ...`; with `--users N
    /// --out FILE`, writes a ghz metadata array instead: N objects
    /// `{"authorization": "Bearer ..."}` for users `<prefix>0` … `<prefix>N-1`.
    Token(TokenArgs),
    /// Creates or updates the JetStream event stream (what `up` does before starting the
    /// services, which refuse to start without it; the Kubernetes Job `stream-setup` does the
    /// same in a cluster).
    StreamSetup {
        #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
        nats_url: String,
        /// The stream is `<prefix>_events`.
        #[arg(long, env = "NATS_PREFIX", default_value = "ticketing")]
        nats_prefix: String,
        /// Copies of each message (1 on one NATS server).
        #[arg(long, env = "EVENT_STREAM_REPLICAS", default_value_t = 1)]
        replicas: usize,
    },
    /// Starts the backing services if needed, builds the services, runs every test and the
    /// offline check of the Kubernetes manifests.
    Test {
        /// Extra arguments for `cargo test`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

/// The most tokens `stack token --users` writes: a ghz metadata array of a million tokens is
/// about 400 MB already.
const MAX_TOKEN_USERS: u64 = 1_000_000;

#[derive(clap::Args)]
struct TokenArgs {
    /// The token's subject: the user the calls act as.
    #[arg(long, required_unless_present = "users", conflicts_with = "users")]
    user: Option<String>,
    /// With the operator scope (catalogue writes, refunds, reconciliation).
    #[arg(long)]
    admin: bool,
    /// How long the token is valid.
    #[arg(long, default_value_t = 3_600, value_parser = clap::value_parser!(u64).range(1..=30 * 86_400))]
    ttl_secs: u64,
    /// Write a ghz metadata array of this many users' tokens to `--out`.
    #[arg(long, requires = "out", value_parser = clap::value_parser!(u64).range(1..=MAX_TOKEN_USERS))]
    users: Option<u64>,
    /// The metadata array file (ghz `--metadata-file`, loadgen `-M`).
    #[arg(long, requires = "users")]
    out: Option<PathBuf>,
    /// The users' ids are `<prefix><n>`.
    #[arg(long, default_value = "user-", requires = "users")]
    prefix: String,
}

#[derive(clap::Args)]
struct UpArgs {
    /// Use debug binaries (faster to build, slower to run).
    #[arg(long)]
    debug: bool,
    /// Seat holds' lifetime (seat-lock HOLD_TTL_SECS); default 600, and 20 for `demo`.
    #[arg(long)]
    hold_ttl_secs: Option<u64>,
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
        Cmd::Demo { up: mut args, seats, users } => {
            let hold_ttl = *args.hold_ttl_secs.get_or_insert(DEMO_HOLD_TTL_SECS);
            let stack = up(&state_dir, &args).await?;
            println!("running a flash sale: {seats} seats, {users} users, through {}", stack.config.lb_url());
            let out = state_dir.join("reports").join(chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string());
            let mut config = SimConfig::new(
                stack.config.lb_url(),
                stack.config.database_url.clone(),
                out.clone(),
                stack.identity.clone(),
            )
            .with_hold_ttl(hold_ttl);
            config.seats = seats;
            config.users = users;
            config.admission_capacity = 500;
            config.pass_ttl_secs = 120;
            config.open_in_secs = 3.0;
            config.max_secs = 300;
            config.pids_dir = Some(state_dir.join("pids"));
            if let Err(problem) = config.validate() {
                bail!("{problem}");
            }
            let outcome = flashsale::run(config).await?;
            let html = report::write(&outcome, &out)?;
            println!("{}", report::summary(&outcome, &html));
            println!(
                "the stack is still running (`stack status`, `stack down`); logs in {}",
                state_dir.join("logs").display()
            );
            if !outcome.ok() {
                std::process::exit(1);
            }
        }
        Cmd::Token(args) => token(&state_dir, &args)?,
        Cmd::StreamSetup { nats_url, nats_prefix, replicas } => {
            stack::setup_stream(&nats_url, &nats_prefix, replicas, service_runtime::bus::MAX_BYTES).await?;
            println!("stream {nats_prefix}_events ready on {nats_url} ({replicas} replica(s))");
        }
        Cmd::Test { args } => {
            stack::ensure_backing_services()?;
            stack::ensure_haproxy()?;
            stack::build_binaries(true)?;
            let mut test = vec!["test", "--workspace"];
            test.extend(args.iter().map(String::as_str));
            stack::cargo(&test)?;
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

/// `stack token`: one token on stdout, or a ghz metadata array in a file.
fn token(state_dir: &std::path::Path, args: &TokenArgs) -> anyhow::Result<()> {
    let issuer = Identity::of_stack(state_dir)?;
    let ttl = std::time::Duration::from_secs(args.ttl_secs);
    let valid = |user: &str| {
        !user.is_empty()
            && user.len() <= 128
            && user.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.@:-".contains(&b))
    };
    match (&args.user, args.users, &args.out) {
        (Some(user), _, _) => {
            if !valid(user) {
                bail!("--user must be 1-128 of [A-Za-z0-9_.@:-] (the services refuse other subjects)");
            }
            println!("{}", issuer.token(user, args.admin, ttl));
        }
        (None, Some(users), Some(out)) => {
            if !valid(&format!("{}{}", args.prefix, users - 1)) {
                bail!("--prefix must leave user ids of 1-128 of [A-Za-z0-9_.@:-]");
            }
            if args.admin {
                bail!("--admin is for one operator token (--user), not for a user array");
            }
            let array = identity::metadata_array(&issuer, users, &args.prefix, ttl);
            identity::write_private(out, &serde_json::to_string(&array)?)?;
            eprintln!(
                "{users} tokens ({}0 … {}{}) written to {}",
                args.prefix,
                args.prefix,
                users - 1,
                out.display()
            );
        }
        _ => bail!("give --user U, or --users N --out FILE"),
    }
    Ok(())
}

/// Brings the local stack up from a clean slate.
async fn up(state_dir: &std::path::Path, args: &UpArgs) -> anyhow::Result<Stack> {
    stack::stop(state_dir)?;
    stack::ensure_backing_services()?;
    stack::ensure_haproxy()?;
    let started = std::time::Instant::now();
    let bin_dir = stack::build_binaries(args.debug)?;
    let mut config = StackConfig::local(state_dir.to_path_buf(), bin_dir);
    if let Some(secs) = args.hold_ttl_secs {
        config.hold_ttl_secs = secs;
    }
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
