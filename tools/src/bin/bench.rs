//! `bench`: the standard benchmark against a running local stack (`stack up`), written to
//! `bench-results.json` and to the README's benchmark table. See `tools::bench`.
#![forbid(unsafe_code)]

use std::{path::PathBuf, sync::Arc, time::Duration};

use clap::Parser;
use tools::{
    bench::{self, BenchConfig},
    identity::Identity,
    loadgen::config::parse_duration,
    stack,
};

#[derive(Parser, Debug)]
#[command(
    about = "Runs the standard load scenarios against the running stack and updates the README's table"
)]
struct Cli {
    /// The load balancer.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    target: String,
    /// The stack's folder (pid files, default output).
    #[arg(long, env = "STACK_DIR")]
    state_dir: Option<PathBuf>,
    /// Results file [default: <state dir>/bench-results.json].
    #[arg(short = 'o', long)]
    output: Option<PathBuf>,
    /// README whose table between `<!-- bench:start -->` and `<!-- bench:end -->` is replaced.
    #[arg(long)]
    readme: Option<PathBuf>,
    /// Print the table only; leave the README alone.
    #[arg(long)]
    no_readme: bool,
    /// Concurrent clients.
    #[arg(short = 'c', long, default_value_t = 1_000)]
    concurrency: usize,
    /// HTTP/2 connections the clients share (HAProxy allows 100 streams per connection, so
    /// 1,000 clients need at least 10).
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// HoldSeats requests.
    #[arg(long, default_value_t = 100_000)]
    hold_requests: u64,
    /// Users with a pass in the HoldSeats scenario (each may hold 50 seats).
    #[arg(long, default_value_t = 2_000)]
    hold_users: u32,
    /// Joins of unique users.
    #[arg(long, default_value_t = 200_000)]
    join_requests: u64,
    /// Most holds paid in the Pay scenario.
    #[arg(long, default_value_t = 20_000)]
    pay_max: usize,
    /// GetAvailability requests (GetSeatMap gets half).
    #[arg(long, default_value_t = 50_000)]
    read_requests: u64,
    /// Longest any scenario runs.
    #[arg(long, default_value = "60s")]
    scenario_max: String,
    /// Longest any Health/Check baseline runs.
    #[arg(long, default_value = "15s")]
    baseline_max: String,
    /// Measure only the seat-map fan-out lag to this many `WatchSeatMap` watchers, print its
    /// row and leave the README alone.
    #[arg(long)]
    fanout_only: Option<usize>,
    /// Measure only a burst of this many unique `Join`s (after its Health/Check baseline),
    /// print its row and leave the README alone.
    #[arg(long)]
    join_burst_only: Option<u64>,
    /// Measure only this many open `WatchQueue` streams (then their passes), print the row and
    /// leave the README alone.
    #[arg(long)]
    watchqueue_only: Option<usize>,
    /// Measure only inventory's restart after a sale of this many users (`--inventory-seats`
    /// seats): full replay of the event stream against the start from its snapshots, with
    /// the release inventory binary on a database and stream of its own; print the row and
    /// leave the README alone.
    #[arg(long)]
    inventory_restart_only: Option<u64>,
    /// Seats of the `--inventory-restart-only` sale.
    #[arg(long, default_value_t = 50_000)]
    inventory_seats: u32,
    /// Where the watchers connect: admission itself, since HAProxy allows 100 streams per
    /// connection and the point is the service's cost per stream.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    watch_target: String,
    /// How long the watchers sit idle in the pre-queue while admission's CPU, memory and
    /// Redis commands are measured.
    #[arg(long, default_value = "20s")]
    watch_window: String,
    /// Measure only Redis CPU per `HoldBestAvailable` on a 20,000-seat zone 95 % sold against
    /// the same zone empty (seat-lock's script through its store, on `--redis-url`: give it a
    /// Redis nobody else uses, since `INFO cpu` counts the whole server), print the row and
    /// leave the README alone.
    #[arg(long)]
    holdbest_only: bool,
    /// Measured `HoldBestAvailable` calls per zone in `--holdbest-only`.
    #[arg(long, default_value_t = bench::holdbest::DEFAULT_CALLS)]
    holdbest_calls: u32,
    /// Seats per measured hold in `--holdbest-only`.
    #[arg(long, default_value_t = bench::holdbest::DEFAULT_QUANTITY)]
    holdbest_quantity: u32,
    /// The token signing key every call's token is minted with [default: the stack's,
    /// `<state dir>/auth/token-key`].
    #[arg(long, env = "TOKEN_KEY_FILE")]
    token_key: Option<PathBuf>,
    /// The Redis the stack uses (for its command counter during the watch, and the
    /// `HoldBestAvailable` Redis CPU row).
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
    /// The stack's database: `Pay`'s pgbench anchor runs on a scratch copy of payment's tables
    /// on its server, and the commits per `Pay` are read from it.
    #[arg(long, env = "DATABASE_URL", default_value = "postgres://postgres@127.0.0.1:5432/ticketing")]
    database_url: String,
    /// Measure only `Pay` (for holds made as the HoldSeats scenario makes them; `--hold-requests`
    /// bounds them) against its pgbench anchor, print its row and leave the README alone.
    #[arg(long)]
    pay_only: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if cli.holdbest_only {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let date = chrono::Utc::now().format("%Y-%m-%d").to_string();
        let config = bench::holdbest::HoldBestConfig {
            redis_url: cli.redis_url.clone(),
            calls: cli.holdbest_calls,
            quantity: cli.holdbest_quantity,
        };
        let row = bench::holdbest::hold_best_cost(&config, &date, &format!("{cores} cores")).await?;
        println!("{}", bench::table(&[row]));
        return Ok(());
    }
    let state_dir = cli.state_dir.unwrap_or_else(|| stack::workspace_root().join(".stack"));
    if let Some(users) = cli.inventory_restart_only {
        // Needs no running stack: the scenario starts its own inventory.
        let date = chrono::Utc::now().format("%Y-%m-%d").to_string();
        let row = bench::inventory::restart(users, cli.inventory_seats, &date).await?;
        println!("{}", bench::table(&[row]));
        return Ok(());
    }
    let readme = if cli.no_readme {
        None
    } else {
        Some(cli.readme.unwrap_or_else(|| stack::workspace_root().join("README.md")))
    };
    let identity = match &cli.token_key {
        Some(path) => Identity::from_key_file(path)?,
        None => Identity::of_stack(&state_dir)?,
    };
    let config = BenchConfig {
        identity: Arc::new(identity),
        redis_url: cli.redis_url.clone(),
        database_url: cli.database_url.clone(),
        target: cli.target,
        output: cli.output.unwrap_or_else(|| state_dir.join("bench-results.json")),
        ghz_dir: Some(state_dir.join("ghz")),
        state_dir,
        readme: readme.clone(),
        concurrency: cli.concurrency,
        connections: cli.connections,
        hold_requests: cli.hold_requests,
        hold_users: cli.hold_users,
        join_requests: cli.join_requests,
        pay_max: cli.pay_max,
        read_requests: cli.read_requests,
        scenario_max: parse_duration(&cli.scenario_max)?,
        baseline_max: parse_duration(&cli.baseline_max).unwrap_or(Duration::from_secs(15)),
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let date = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let machine = format!("{cores} cores");
    let single = if cli.pay_only {
        Some(bench::run::pay_only(&config).await?)
    } else if let Some(watchers) = cli.fanout_only {
        Some(bench::fanout_lag(&config, watchers, &date, &machine).await?)
    } else if let Some(joins) = cli.join_burst_only {
        Some(bench::admission::join_burst(&config, joins, bench::Tokens::PerUser, &date, &machine).await?.0)
    } else if let Some(streams) = cli.watchqueue_only {
        let window = parse_duration(&cli.watch_window)?;
        Some(
            bench::admission::watch_queue(
                &config,
                streams,
                &cli.watch_target,
                &cli.redis_url,
                window,
                &date,
                &machine,
            )
            .await?,
        )
    } else {
        None
    };
    if let Some(row) = single {
        println!("{}", bench::table(&[row]));
        return Ok(());
    }
    let results = bench::run(&config).await?;
    let table = bench::table(&results.rows);
    println!("\n{table}");
    match readme {
        Some(path) if bench::update_readme(&path, &table)? => {
            println!("updated the table in {}", path.display())
        }
        Some(path) => println!(
            "{} has no `{}` … `{}` markers: the table above was not written there",
            path.display(),
            bench::TABLE_START,
            bench::TABLE_END
        ),
        None => {}
    }
    Ok(())
}
