//! What the bench runs and what it produces: its settings ([`BenchConfig`]), how calls carry
//! tokens ([`Tokens`]), the README rows and scenario figures, and the one way every scenario
//! is measured against its `Health/Check` baseline ([`BenchConfig::measure`]).

use std::{
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use serde::Serialize;

use crate::{
    identity::{AUTHORIZATION, Identity},
    loadgen::{self, CallData, Comparison, LoadSpec, Observer},
    procfs::cpu::CpuSnapshot,
};

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// `http://127.0.0.1:8080`.
    pub target: String,
    /// The stack's folder (pid files; default output).
    pub state_dir: PathBuf,
    /// Where the JSON results go.
    pub output: PathBuf,
    /// README to update (`None`: print only).
    pub readme: Option<PathBuf>,
    /// Concurrent clients of the HoldSeats, Join and read scenarios.
    pub concurrency: usize,
    /// HTTP/2 connections shared by the clients.
    pub connections: usize,
    pub hold_requests: u64,
    pub hold_users: u32,
    pub join_requests: u64,
    /// Most holds paid in the Pay scenario.
    pub pay_max: usize,
    pub read_requests: u64,
    /// Cap of every scenario.
    pub scenario_max: Duration,
    /// Cap of every baseline.
    pub baseline_max: Duration,
    /// Where filled-in ghz configs (real event, pass and hold) are written.
    pub ghz_dir: Option<PathBuf>,
    /// Mints every token the bench sends (the stack's identity provider).
    pub identity: Arc<Identity>,
    /// The stack's Redis, for the `HoldBestAvailable` Redis CPU row ([`holdbest`]).
    pub redis_url: String,
    /// The stack's Postgres database: `Pay`'s anchor runs on a scratch copy of payment's
    /// tables on its server, and its commit counter is read.
    pub database_url: String,
}

/// How the calls of a scenario carry their tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tokens {
    /// One token per user, minted before the run and sent with each of its calls: the
    /// services verify it once and then find it in their cache.
    PerUser,
    /// A token no server has seen on every call (a unique `jti`): a full verification each.
    FreshPerCall,
}

impl Tokens {
    /// The row label's suffix.
    pub fn label(self) -> &'static str {
        match self {
            Self::PerUser => "one token per user",
            Self::FreshPerCall => "a fresh token per call (full verification each)",
        }
    }
}

/// A loadgen metadata array of `count` objects `{"authorization": "Bearer …"}`: object `n`
/// is the token of `user(n)`, minted here (before the measured run) as `tokens` says.
pub fn token_array(
    identity: &Identity,
    count: u64,
    tokens: Tokens,
    user: impl Fn(u64) -> String,
) -> serde_json::Value {
    serde_json::Value::Array(
        (0..count)
            .map(|n| {
                let token = match tokens {
                    Tokens::PerUser => identity.token(&user(n), false, crate::identity::TOOL_TOKEN_TTL),
                    Tokens::FreshPerCall => identity.fresh(&user(n)),
                };
                serde_json::json!({ AUTHORIZATION: format!("Bearer {token}") })
            })
            .collect(),
    )
}

/// One README row.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub what: String,
    pub result: String,
    pub baseline: String,
    pub target: String,
    /// Whether the target was met (`None` when there is none or it was not measured).
    pub met: Option<bool>,
    pub date: String,
    pub machine: String,
}

/// One scenario's figures.
#[derive(Debug, Clone, Serialize)]
pub struct Scenario {
    pub name: String,
    pub report: Comparison,
    /// Scenario-specific counts (holds, inversions, bookings).
    pub extra: serde_json::Value,
}

/// Peak and current memory of one service process.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessMemory {
    pub name: String,
    pub pid: u32,
    pub vm_hwm_kb: u64,
    pub vm_rss_kb: u64,
}

/// Everything the bench measured.
#[derive(Debug, Clone, Serialize)]
pub struct BenchResults {
    pub date: String,
    pub machine: String,
    pub cores: usize,
    pub target: String,
    pub hold_event_id: String,
    pub join_event_id: String,
    pub scenarios: Vec<Scenario>,
    pub memory: Vec<ProcessMemory>,
    pub rows: Vec<Row>,
}

/// Makes a row of the run's date and machine: (what, result, baseline, target, met).
pub type RowMaker<'a> = dyn Fn(&str, String, String, &str, Option<bool>) -> Row + 'a;

impl BenchConfig {
    /// A scenario's load; `metadata` is its tokens (an array used round robin), or `None`
    /// for a call that needs none (the catalogue reads).
    pub fn spec(
        &self,
        name: &str,
        call: &str,
        data: serde_json::Value,
        metadata: Option<serde_json::Value>,
        concurrency: usize,
        total: u64,
    ) -> anyhow::Result<LoadSpec> {
        let pool = loadgen::descriptor_pool()?;
        let method = loadgen::find_method(&pool, call)?;
        Ok(LoadSpec {
            name: name.into(),
            target: self.target.clone(),
            data: CallData::new(method, &data, metadata.as_ref())?,
            concurrency,
            connections: self.connections,
            total: Some(total),
            duration: Some(self.scenario_max),
            rps: None,
            timeout: Duration::from_secs(20),
        })
    }

    /// Runs `spec` after its `Health/Check` baseline and prints both.
    pub async fn measure(&self, spec: &LoadSpec, observer: Option<Observer>) -> anyhow::Result<Comparison> {
        let pool = loadgen::descriptor_pool()?;
        println!(
            "== {}: {} requests at most, {} clients, {} connections (Health/Check baseline first)",
            spec.name,
            spec.total.unwrap_or(0),
            spec.concurrency,
            spec.connections
        );
        let comparison = loadgen::run_with_baseline(spec, &pool, self.baseline_max, observer).await?;
        println!("{comparison}");
        Ok(comparison)
    }
}

/// A result cell: rate, median and p99 latency, calls and duration.
pub fn result_text(report: &loadgen::Report, unit: &str, rate: f64) -> String {
    format!(
        "{rate:.0} {unit}/s, p50 {:.1} ms / p99 {:.1} ms ({} calls in {:.1} s)",
        report.percentile_ms(50),
        report.percentile_ms(99),
        report.count,
        report.total as f64 / 1e9
    )
}

/// CPU seconds each process of the stack, each backing service and this client used between
/// [`CpuMeter::start`] and [`CpuMeter::used`].
pub struct CpuMeter {
    pub started: Instant,
    before: CpuSnapshot,
    pids: std::path::PathBuf,
}

impl CpuMeter {
    pub fn start(config: &BenchConfig) -> Self {
        let pids = config.state_dir.join("pids");
        Self { started: Instant::now(), before: CpuSnapshot::take(Some(&pids), "bench"), pids }
    }

    /// Seconds of CPU per process, busiest first.
    pub fn used(&self) -> Vec<(String, f64)> {
        let now = CpuSnapshot::take(Some(&self.pids), "bench");
        self.before.split_until(&now).into_iter().map(|u| (u.process, u.cpu_secs)).collect()
    }

    /// E.g. `CPU s: admission 41.2, redis-server 12.0 … in 30.1 s wall`.
    pub fn text(&self) -> String {
        let parts: Vec<String> =
            self.used().iter().map(|(name, seconds)| format!("{name} {seconds:.1}")).collect();
        format!("CPU s: {} in {:.1} s wall", parts.join(", "), self.started.elapsed().as_secs_f64())
    }
}
