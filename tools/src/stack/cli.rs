//! The `stack` command's arguments, and [`run`], which hands each subcommand to the module
//! that does its job.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use super::{
    StackConfig,
    config::{LOCAL_PORTS, Ports},
    data::Record,
    demo, status, testing, token, up, workspace_root,
};

#[derive(Parser)]
#[command(
    about = "Runs the ticketing mesh on loopback; `up` keeps the data of earlier runs, `reset` wipes it"
)]
pub struct Cli {
    /// Logs, pid files, keys, certificates and the load balancer's config.
    #[arg(long, env = "STACK_DIR", global = true)]
    pub state_dir: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Cmd,
}

#[derive(Subcommand)]
pub enum Cmd {
    /// Starts Postgres, Redis and NATS if they are missing, builds the binaries, (re)starts
    /// the five services and the load balancer, and waits until all are SERVING. Keeps every
    /// booking, event and message of earlier runs (`--reset` or `stack reset` wipe them).
    Up(UpArgs),
    /// Stops what `up` started (the data stays).
    Down,
    /// Stops the stack and deletes its data: the database, the event stream and the Redis keys
    /// of its prefix (those of the last `up` in this state dir, unless given). Asks first on a
    /// terminal; `--yes` for scripts.
    Reset {
        #[command(flatten)]
        servers: ServerArgs,
        /// Do not ask.
        #[arg(long)]
        yes: bool,
    },
    /// Shows each process with its pid, ports and health (`/readyz` of each service, gRPC
    /// health of the load balancer) and whether the backing servers answer. Exit code 1 when
    /// anything is not running or not ready.
    Status,
    /// Prints the end of the stack's logs (one service's, or all), `-f` to follow them.
    Logs(LogsArgs),
    /// `up`, then a small flash sale through the load balancer (the `flashsale` simulator) on
    /// an event of its own, verified against ground truth, with a report in
    /// `<state dir>/reports/`.
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
    Token(token::TokenArgs),
    /// Creates or updates the JetStream event stream (what `up` does before starting the
    /// services, which refuse to start without it; the Kubernetes Job `stream-setup` does the
    /// same in a cluster).
    StreamSetup(service_runtime::args::StreamSetupArgs),
    /// Starts the backing services if needed, builds the services, runs every test and the
    /// offline check of the Kubernetes manifests.
    Test {
        /// Extra arguments for `cargo test`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

/// The servers and prefixes a stack uses; each defaults to the local one.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ServerArgs {
    /// PostgreSQL database of the services (created if missing) [default:
    /// postgres://postgres@127.0.0.1:5432/ticketing]. On the standard loopback port a missing
    /// server is installed and started; any other must answer already.
    #[arg(long)]
    pub database_url: Option<String>,
    /// Redis server [default: redis://127.0.0.1:6379].
    #[arg(long)]
    pub redis_url: Option<String>,
    /// Prefix of every Redis key of the stack [default: ticketing:].
    #[arg(long)]
    pub redis_prefix: Option<String>,
    /// NATS server with JetStream [default: nats://127.0.0.1:4222].
    #[arg(long)]
    pub nats_url: Option<String>,
    /// The event stream is `<prefix>_events`, subjects start with `<prefix>.` [default:
    /// ticketing].
    #[arg(long)]
    pub nats_prefix: Option<String>,
}

impl ServerArgs {
    /// Sets `config`'s servers: each given one, else the one `record` (the last start)
    /// used, else the default already in `config`.
    pub fn apply(&self, config: &mut StackConfig, record: Option<&Record>) {
        let pick = |given: &Option<String>, recorded: Option<&String>, current: &mut String| {
            if let Some(value) = given.as_ref().or(recorded) {
                current.clone_from(value);
            }
        };
        pick(&self.database_url, record.map(|r| &r.database_url), &mut config.database_url);
        pick(&self.redis_url, record.map(|r| &r.redis_url), &mut config.redis_url);
        pick(&self.redis_prefix, record.map(|r| &r.redis_prefix), &mut config.redis_prefix);
        pick(&self.nats_url, record.map(|r| &r.nats_url), &mut config.nats_url);
        pick(&self.nats_prefix, record.map(|r| &r.nats_prefix), &mut config.nats_prefix);
    }
}

/// Where the stack listens. Service `i` (admission, seat-lock, inventory, payment, notifier)
/// gets the first port + `i` of each block; seat-lock's and payment's internal listeners are
/// 10 above their gRPC ports.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct PortArgs {
    /// The load balancer's port [default: 8080].
    #[arg(long)]
    pub lb_port: Option<u16>,
    /// The first of the services' gRPC ports [default: 50051].
    #[arg(long)]
    pub grpc_port: Option<u16>,
    /// The first of the services' Prometheus ports [default: 9101].
    #[arg(long)]
    pub metrics_port: Option<u16>,
    /// The first of the services' health ports (`/livez`, `/readyz`) [default: 9201].
    #[arg(long)]
    pub health_port: Option<u16>,
}

impl PortArgs {
    pub fn ports(&self) -> Ports {
        Ports {
            grpc: self.grpc_port.unwrap_or(LOCAL_PORTS.grpc),
            metrics: self.metrics_port.unwrap_or(LOCAL_PORTS.metrics),
            health: self.health_port.unwrap_or(LOCAL_PORTS.health),
            lb: self.lb_port.unwrap_or(LOCAL_PORTS.lb),
        }
    }
}

#[derive(clap::Args, Debug, Clone, Default)]
pub struct UpArgs {
    /// Use debug binaries (faster to build, slower to run).
    #[arg(long)]
    pub debug: bool,
    /// Use the binaries in this folder as they are, without building.
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    /// Seat holds' lifetime (seat-lock HOLD_TTL_SECS); default 600, and 20 for `demo`.
    #[arg(long)]
    pub hold_ttl_secs: Option<u64>,
    /// Delete the stack's data first (as `stack reset`), asking on a terminal.
    #[arg(long)]
    pub reset: bool,
    /// With `--reset`: do not ask.
    #[arg(long, requires = "reset")]
    pub yes: bool,
    #[command(flatten)]
    pub servers: ServerArgs,
    #[command(flatten)]
    pub ports: PortArgs,
}

#[derive(clap::Args, Debug, Clone)]
pub struct LogsArgs {
    /// One process's log (admission, seat-lock, inventory, payment, notifier, haproxy);
    /// every log when left out.
    pub service: Option<String>,
    /// Keep printing what is appended, until interrupted.
    #[arg(short, long)]
    pub follow: bool,
    /// Lines from the end of each log to start with.
    #[arg(short = 'n', long, default_value_t = 40)]
    pub lines: usize,
}

/// Runs one `stack` command; returns the process's exit code.
pub async fn run(cli: Cli) -> anyhow::Result<i32> {
    let state_dir = cli.state_dir.unwrap_or_else(|| workspace_root().join(".stack"));
    match cli.command {
        Cmd::Up(args) => {
            up::up(&state_dir, &args).await?;
        }
        Cmd::Down => {
            super::stop(&state_dir)?;
            println!("stopped (the data stays; `stack reset` deletes it)");
        }
        Cmd::Reset { servers, yes } => up::reset(&state_dir, &servers, yes).await?,
        Cmd::Status => return Ok(if status::status(&state_dir).await? { 0 } else { 1 }),
        Cmd::Logs(args) => status::logs(&state_dir, &args).await?,
        Cmd::Demo { up, seats, users } => return demo::demo(&state_dir, up, seats, users).await,
        Cmd::Token(args) => token::token(&state_dir, &args)?,
        Cmd::StreamSetup(args) => {
            args.validate().map_err(anyhow::Error::msg)?;
            let service_runtime::args::StreamSetupArgs { nats_url, nats_prefix, replicas } = args;
            super::setup_stream(&nats_url, &nats_prefix, replicas, service_runtime::bus::MAX_BYTES).await?;
            println!("stream {nats_prefix}_events ready on {nats_url} ({replicas} replica(s))");
        }
        Cmd::Test { args } => testing::test(&args)?,
    }
    Ok(0)
}
