//! `loadgen`: one RPC of the mesh under load, ghz-style, with a `Health/Check` baseline.
//!
//! ```sh
//! loadgen --insecure --call ticketing.v1.AdmissionService/Join \
//!   -d '{"event_id":"<id>","user_id":"{{.UserId}}"}' -c 200 -n 50000 127.0.0.1:8080
//! loadgen --config tools/ghz/join.json          # the same files ghz reads
//! stack token --users 50000 --out users.json && \
//!   loadgen --call ticketing.v1.AdmissionService/Join -M users.json \
//!   -d '{"event_id":"<id>","user_id":"{{.UserId}}"}' -n 50000 127.0.0.1:8080
//! loadgen ... -m '{"authorization":"Bearer {{token .UserId}}"}'   # minted here, once per user
//! ```
//!
//! Prints ghz's summary (for the baseline, then the main run) and the ratios main/baseline of
//! requests per second and p99; `-o FILE` writes the same figures as JSON. Templates in the
//! data and metadata: see `tools::loadgen::template`.
#![forbid(unsafe_code)]

use std::{path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context;
use clap::Parser;
use tools::{
    identity::Identity,
    loadgen::{
        self, CallData, Comparison, LoadSpec,
        config::{GhzConfig, parse_duration},
    },
    stack,
};

#[derive(Parser, Debug)]
#[command(about = "Load-tests one unary RPC of the mesh, ghz-style, against a Health/Check baseline")]
struct Cli {
    /// A ghz JSON config file; flags given here override its keys.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Method by full name, e.g. ticketing.v1.SeatLockService/HoldSeats.
    #[arg(long)]
    call: Option<String>,
    /// Call data as JSON (an object, or an array used round robin), with templates.
    #[arg(short = 'd', long)]
    data: Option<String>,
    /// Call data from a JSON file.
    #[arg(short = 'D', long = "data-file")]
    data_file: Option<PathBuf>,
    /// Request metadata as a JSON object of strings (or an array of them, used round robin),
    /// with templates; `{{token .UserId}}` is a token of that user.
    #[arg(short = 'm', long)]
    metadata: Option<String>,
    /// Request metadata from a JSON file: an object, or an array of objects used round robin
    /// (`stack token --users N --out FILE` writes one token per user `user-<n>`, the users of
    /// `{{.UserId}}`).
    #[arg(short = 'M', long = "metadata-file")]
    metadata_file: Option<PathBuf>,
    /// The token signing key of `{{token …}}` [default: the local stack's,
    /// `.stack/auth/token-key`].
    #[arg(long, env = "TOKEN_KEY_FILE")]
    token_key: Option<PathBuf>,
    /// Concurrent workers [ghz default 50].
    #[arg(short = 'c', long)]
    concurrency: Option<usize>,
    /// Requests in total [default 200 unless -z is given].
    #[arg(short = 'n', long)]
    total: Option<u64>,
    /// Run for this long (e.g. 30s, 1m); with -n, whichever ends first.
    #[arg(short = 'z', long)]
    duration: Option<String>,
    /// Pace all workers together to this many requests per second.
    #[arg(short = 'r', long)]
    rps: Option<f64>,
    /// HTTP/2 connections; workers share them round robin [default 1].
    #[arg(long)]
    connections: Option<usize>,
    /// Per-call deadline [default 20s].
    #[arg(short = 't', long)]
    timeout: Option<String>,
    /// Write the report as JSON to this file.
    #[arg(short = 'o', long)]
    output: Option<PathBuf>,
    /// Output format as in ghz: `summary` (default), or `json` / `pretty` to print the JSON
    /// report instead.
    #[arg(short = 'O', long)]
    format: Option<String>,
    /// Accepted for ghz compatibility; connections are always plaintext HTTP/2.
    #[arg(long)]
    insecure: bool,
    /// A name for the report.
    #[arg(long)]
    name: Option<String>,
    /// Skip the Health/Check baseline.
    #[arg(long)]
    no_baseline: bool,
    /// Longest the baseline may run.
    #[arg(long, default_value = "20s")]
    baseline_max: String,
    /// host:port (or http://host:port) of the server or load balancer.
    host: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let file = match &cli.config {
        Some(path) => GhzConfig::load(path)?,
        None => GhzConfig::default(),
    };
    let pool = loadgen::descriptor_pool()?;
    let call = cli.call.clone().or(file.call.clone()).context("give --call or a config with \"call\"")?;
    let method = loadgen::find_method(&pool, &call)?;
    let data: serde_json::Value = match (&cli.data, &cli.data_file) {
        (Some(text), _) => serde_json::from_str(text).context("-d is not JSON")?,
        (None, Some(path)) => serde_json::from_str(
            &std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?,
        )
        .with_context(|| format!("{} is not JSON", path.display()))?,
        (None, None) => file.data.clone().unwrap_or(serde_json::json!({})),
    };
    let metadata: Option<serde_json::Value> = match (&cli.metadata, &cli.metadata_file) {
        // The message never repeats the text: it may hold tokens.
        (Some(text), _) => Some(serde_json::from_str(text).map_err(|_| anyhow::anyhow!("-m is not JSON"))?),
        (None, Some(path)) => Some(
            serde_json::from_str(
                &std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?,
            )
            .map_err(|_| anyhow::anyhow!("{} is not JSON", path.display()))?,
        ),
        (None, None) => file.metadata.clone(),
    };
    let identity = match &cli.token_key {
        Some(path) => Identity::from_key_file(path)?,
        None => Identity::of_stack(&stack::workspace_root().join(".stack"))?,
    };
    let host = cli.host.clone().or(file.host.clone()).unwrap_or_else(|| "127.0.0.1:8080".into());
    let target = if host.contains("://") { host } else { format!("http://{host}") };
    let duration = cli.duration.as_deref().or(file.duration.as_deref()).map(parse_duration).transpose()?;
    let total = cli.total.or(file.total).or(if duration.is_some() { None } else { Some(200) });
    let timeout = parse_duration(cli.timeout.as_deref().or(file.timeout.as_deref()).unwrap_or("20s"))?;
    let spec = LoadSpec {
        name: cli.name.clone().or(file.name.clone()).unwrap_or_default(),
        target,
        data: CallData::new(method, &data, metadata.as_ref())?.with_identity(Arc::new(identity)),
        concurrency: cli.concurrency.or(file.concurrency).unwrap_or(50),
        connections: cli.connections.or(file.connections).unwrap_or(1),
        total,
        duration,
        rps: cli.rps.or(file.rps),
        timeout,
    };
    let report = if cli.no_baseline {
        Comparison::new(loadgen::run(&spec, None).await?, None)
    } else {
        let cap: Duration = parse_duration(&cli.baseline_max)?;
        loadgen::run_with_baseline(&spec, &pool, cap, None).await?
    };
    match cli.format.as_deref() {
        Some("json") => println!("{}", serde_json::to_string(&report)?),
        Some("pretty") => println!("{}", serde_json::to_string_pretty(&report)?),
        _ => println!("{report}"),
    }
    if let Some(path) = cli.output.clone().or(file.output.clone().map(PathBuf::from)) {
        std::fs::write(&path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
        println!("report written to {}", path.display());
    }
    Ok(())
}
