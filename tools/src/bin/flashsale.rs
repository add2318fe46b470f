//! `flashsale`: the flash-sale simulator against a running mesh (by default the local stack's
//! load balancer), verified against ground truth, with a JSON and an HTML report.
//!
//! ```sh
//! cargo run --release --bin stack -- up --hold-ttl-secs 60
//! cargo run --release -p tools --bin flashsale -- --target http://127.0.0.1:8080 --hold-ttl-secs 60
//! ```
//! With `--chaos` it starts a private stack of its own (see [`tools::chaos`]) and runs the sale
//! while services are killed and Redis, NATS and Postgres restart, one fault at a time.
//!
//! Exits 1 when an invariant was violated.
#![forbid(unsafe_code)]

use std::{path::PathBuf, sync::Arc};

use clap::Parser;
use tools::{
    chaos::{self, ChaosConfig, ChaosRun, Fault},
    flashsale::{self, Mix, SimConfig},
    identity::Identity,
    report, stack,
};

#[derive(Parser)]
#[command(about = "Simulates a flash sale through the load balancer and verifies every invariant")]
struct Cli {
    /// The load balancer.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    target: String,
    /// The mesh's Postgres, for the ground-truth checks (the `payment` schema).
    #[arg(long, env = "DATABASE_URL", default_value = "postgres://postgres@127.0.0.1:5432/ticketing")]
    database_url: String,
    /// Seats in the seated zones (FLOOR 20 %, LOWER 40 %, UPPER 40 %).
    #[arg(long, default_value_t = 50_000)]
    seats: u32,
    /// Places of an extra general-admission zone (0: none).
    #[arg(long, default_value_t = 0)]
    ga_capacity: u32,
    /// Users pressing "Buy".
    #[arg(long, default_value_t = 500_000)]
    users: u32,
    #[arg(long, default_value_t = 4)]
    max_tickets_per_user: u32,
    /// Users in checkout at once (the event's admission capacity).
    #[arg(long, default_value_t = 1_000)]
    admission_capacity: u32,
    #[arg(long, default_value_t = 100)]
    admission_tick_ms: u32,
    #[arg(long, default_value_t = 300)]
    pass_ttl_secs: u32,
    /// The sale opens this long after the event is created.
    #[arg(long, default_value_t = 5.0)]
    open_in_secs: f64,
    /// Share of users already waiting before the sale opens.
    #[arg(long, default_value_t = 0.2)]
    prequeue_share: f64,
    /// The other users arrive evenly over this many seconds (0: all at the opening instant).
    #[arg(long, default_value_t = 0.0)]
    ramp_secs: f64,
    /// Share aiming at the same popular seats (GetSeatMap + HoldSeats).
    #[arg(long, default_value_t = 0.3)]
    contention_share: f64,
    /// Share releasing their hold (ReleaseHold).
    #[arg(long, default_value_t = 0.03)]
    release_share: f64,
    /// Share walking away from their hold (it must expire: see --hold-ttl-secs).
    #[arg(long, default_value_t = 0.02)]
    expire_share: f64,
    /// Share whose card is declined (`pm_card_declined`), who then pay with a good card.
    #[arg(long, default_value_t = 0.03)]
    declined_share: f64,
    /// Share paying with a card slower than the hold TTL (`pm_card_slow_<ms>`).
    #[arg(long, default_value_t = 0.01)]
    slow_share: f64,
    /// Share sending the same Pay twice with one idempotency key.
    #[arg(long, default_value_t = 0.05)]
    replay_share: f64,
    /// The stack's hold TTL (seat-lock HOLD_TTL_SECS; the local stack uses 600 unless
    /// `stack up --hold-ttl-secs N`): abandoned holds are waited for this long, and the slow
    /// card takes this long plus 2 s (capped at the sandbox's 60 s).
    #[arg(long, default_value_t = 600)]
    hold_ttl_secs: u64,
    /// The slow card's delay; default: hold TTL + 2 s, at most 60 s.
    #[arg(long)]
    slow_pay_ms: Option<u64>,
    /// HTTP/2 connections the users share.
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Users in a session (waiting in line, holding, paying) at once.
    #[arg(long, default_value_t = 1_200)]
    max_in_flight: usize,
    /// Stop the users after this many seconds from opening, then verify.
    #[arg(long, default_value_t = 900)]
    max_secs: u64,
    /// Longest wait for holds to expire after the users are done (default: hold TTL + 30 s).
    #[arg(long)]
    settle_secs: Option<u64>,
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// No live progress display (it is off anyway when stdout is not a terminal).
    #[arg(long)]
    no_progress: bool,
    /// Where the reports go (default `.stack/reports/<timestamp>/`).
    #[arg(long)]
    out: Option<PathBuf>,
    /// The stack's state directory, for the services' pid files (peak memory); a chaos run
    /// keeps its private stack in `<state dir>/chaos`.
    #[arg(long, env = "STACK_DIR")]
    state_dir: Option<PathBuf>,
    /// The token signing key the users' and the operator's tokens are minted with [default:
    /// the local stack's, `<state dir>/auth/token-key`, created on first use]. A mesh elsewhere
    /// must trust its public key (its JWKS in the services' `AUTH_JWKS`).
    #[arg(long, env = "TOKEN_KEY_FILE")]
    token_key: Option<PathBuf>,
    /// Run on a private stack of its own (its own Redis, NATS and Postgres on free ports; the
    /// binaries are built first) while faults happen one at a time: `kill -9` of each service,
    /// restarts of Redis (keeping nothing), NATS and Postgres. `--target` and
    /// `--database-url` are then ignored.
    #[arg(long)]
    chaos: bool,
    /// Seconds from the opening to the first fault, and from each recovery to the next fault.
    #[arg(long, default_value_t = 5.0)]
    chaos_interval_secs: f64,
    /// How long Redis, NATS and Postgres stay down.
    #[arg(long, default_value_t = 1.0)]
    chaos_outage_secs: f64,
    /// The longest wait for the mesh to recover from one fault before the next one.
    #[arg(long, default_value_t = 90.0)]
    chaos_recovery_timeout_secs: f64,
    /// The faults, in order: service names and `redis`, `nats`, `postgres` (default: each
    /// service in turn, with the stores between them).
    #[arg(long, value_delimiter = ',')]
    chaos_faults: Vec<String>,
    /// With `--chaos`: debug binaries (faster to build, slower to run).
    #[arg(long)]
    debug: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let chaos = match cli.chaos.then(|| chaos_config(&cli)).transpose() {
        Ok(chaos) => chaos,
        Err(problem) => {
            eprintln!("flashsale: {problem}");
            std::process::exit(64);
        }
    };
    let state_dir = cli.state_dir.unwrap_or_else(|| stack::workspace_root().join(".stack"));
    let out = cli.out.unwrap_or_else(|| default_out(&state_dir));
    let identity = match &cli.token_key {
        Some(path) => Identity::from_key_file(path)?,
        None => Identity::of_stack(&state_dir)?,
    };
    let mut config = SimConfig::new(cli.target, cli.database_url, out.clone(), Arc::new(identity))
        .with_hold_ttl(cli.hold_ttl_secs);
    config.seats = cli.seats;
    config.ga_capacity = cli.ga_capacity;
    config.users = cli.users;
    config.max_tickets_per_user = cli.max_tickets_per_user;
    config.admission_capacity = cli.admission_capacity;
    config.admission_tick_ms = cli.admission_tick_ms;
    config.pass_ttl_secs = cli.pass_ttl_secs;
    config.open_in_secs = cli.open_in_secs;
    config.prequeue_share = cli.prequeue_share;
    config.ramp_secs = cli.ramp_secs;
    config.mix = Mix {
        contention: cli.contention_share,
        release: cli.release_share,
        let_expire: cli.expire_share,
        declined: cli.declined_share,
        slow: cli.slow_share,
        replay: cli.replay_share,
    };
    if let Some(ms) = cli.slow_pay_ms {
        config.slow_pay_ms = ms;
    }
    if let Some(secs) = cli.settle_secs {
        config.settle_secs = secs;
    }
    config.connections = cli.connections;
    config.max_in_flight = cli.max_in_flight;
    config.max_secs = cli.max_secs;
    config.seed = cli.seed;
    config.progress = !cli.no_progress;
    config.pids_dir = Some(state_dir.join("pids"));
    if let Err(problem) = config.validate() {
        eprintln!("flashsale: {problem}");
        std::process::exit(64);
    }
    let outcome = if let Some(chaos) = chaos {
        let bin_dir = stack::build_binaries(cli.debug, stack::Binaries::Services)?;
        println!(
            "flash sale under chaos: {} seats (+{} GA), {} users, faults {:?} every {} s on a private stack in {}",
            config.seats,
            config.ga_capacity,
            config.users,
            chaos.faults.iter().map(|f| f.target()).collect::<Vec<_>>(),
            chaos.interval_secs,
            state_dir.join("chaos").display()
        );
        chaos::run(ChaosRun::new(config, chaos, bin_dir, state_dir.join("chaos"))).await?
    } else {
        println!(
            "flash sale: {} seats (+{} GA), {} users through {}",
            config.seats, config.ga_capacity, config.users, config.target
        );
        flashsale::run(config).await?
    };
    let html = report::write(&outcome, &out)?;
    println!("{}", report::summary(&outcome, &html));
    if !outcome.ok() {
        std::process::exit(1);
    }
    Ok(())
}

/// The schedule the flags ask for.
fn chaos_config(cli: &Cli) -> Result<ChaosConfig, String> {
    let mut chaos = ChaosConfig {
        interval_secs: cli.chaos_interval_secs,
        outage_secs: cli.chaos_outage_secs,
        recovery_timeout_secs: cli.chaos_recovery_timeout_secs,
        ..ChaosConfig::default()
    };
    if !cli.chaos_faults.is_empty() {
        chaos.faults = cli
            .chaos_faults
            .iter()
            .map(|target| Fault::parse(target).ok_or_else(|| format!("no fault for {target:?}")))
            .collect::<Result<_, _>>()?;
    }
    let bounds = [
        ("--chaos-interval-secs", chaos.interval_secs, 0.0, 600.0),
        ("--chaos-outage-secs", chaos.outage_secs, 0.0, 60.0),
        ("--chaos-recovery-timeout-secs", chaos.recovery_timeout_secs, 1.0, 600.0),
    ];
    if let Some((flag, _, low, high)) = bounds.iter().find(|(_, v, low, high)| !(low..=high).contains(&v)) {
        return Err(format!("{flag} must be {low}-{high}"));
    }
    Ok(chaos)
}

/// `<state dir>/reports/<UTC timestamp>/`.
fn default_out(state_dir: &std::path::Path) -> PathBuf {
    state_dir.join("reports").join(chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string())
}
