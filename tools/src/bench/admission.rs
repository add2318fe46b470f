//! The waiting room's two load claims: a burst of unique joins, and many open `WatchQueue`
//! streams. Both run in the standard run (the join burst, [`join_bursts`]) or alone (`bench --join-burst-only N`,
//! `bench --watchqueue-only N`), and say where the machine's CPU went while they ran.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context;
use fred::{
    clients::Client,
    interfaces::ClientLike,
    types::{InfoKind, config::Config as RedisConfig},
};
use futures::StreamExt;
use prost::Message as _;
use test_support::order::fifo_inversions;
use ticketing_proto::v1::{self as pb, admission_service_client::AdmissionServiceClient};

use super::{
    config::{BenchConfig, CpuMeter, Row, Scenario, Tokens, result_text, token_array},
    sale::{channel, create_event},
};
use crate::{
    loadgen::{self, Comparison, Observer},
    procfs,
};

/// Streams per HTTP/2 connection in the watchers mode: what HAProxy allows, so the figures
/// hold for clients behind the load balancer too.
const STREAMS_PER_CONNECTION: usize = 100;

/// `Join` calls in flight while the watchers are queued.
const WATCH_JOIN_CONCURRENCY: usize = 1_000;

/// `WatchQueue` calls being opened at once: each open is one unary-like step on the server
/// (status from Redis) that counts against admission's in-flight limit until its first answer.
const WATCH_OPEN_CONCURRENCY: usize = 500;

/// Budget to queue and open the watchers, per thousand watchers; the sale opens after it plus
/// the watch window, so every stream is open (and idle in the pre-queue) during the window.
/// Opening 100,000 streams took 30 to 60 s on the 2-core machine with other work on it; what
/// is left of the budget only lengthens the window.
const SETUP_MS_PER_THOUSAND: u64 = 1_000;

/// The largest admission capacity inventory accepts for an event.
const MAX_CAPACITY: u32 = 100_000;

/// Longest the watchers may wait for their pass after the sale opened.
const ADMIT_TIMEOUT: Duration = Duration::from_secs(240);

/// The gap a watcher may see between two updates (the contract is "at least every second",
/// plus scheduling slack on a loaded machine).
const MAX_UPDATE_GAP: Duration = Duration::from_millis(1_500);

/// The join burst twice, with the FIFO check: one token per user (each user joins once, so
/// each call verifies one token), then fresh tokens; into `rows` and `scenarios`. Returns the
/// first run's event.
pub async fn join_bursts(
    config: &BenchConfig,
    date: &str,
    machine: &str,
    rows: &mut Vec<Row>,
    scenarios: &mut Vec<Scenario>,
) -> anyhow::Result<String> {
    let mut join_event_id = String::new();
    let mut per_user_rps = None;
    for tokens in [Tokens::PerUser, Tokens::FreshPerCall] {
        let (mut join_row, join_scenario) =
            join_burst(config, config.join_requests, tokens, date, machine).await?;
        if join_event_id.is_empty() {
            join_event_id = join_scenario.extra["eventId"].as_str().unwrap_or_default().to_owned();
        }
        if let Some(rps) = per_user_rps {
            join_row.result.push_str(&format!(
                "; {:.2}× the joins/s of one token per user",
                join_scenario.report.main.rps / rps
            ));
        }
        per_user_rps.get_or_insert(join_scenario.report.main.rps);
        rows.push(join_row);
        scenarios.push(join_scenario);
    }
    Ok(join_event_id)
}

/// The `Join` burst of `requests` unique users on a fresh open event, after its Health/Check
/// baseline: joins/s, p50/p99, errors, FIFO inversions (a join answered before another was
/// sent must hold the lower ticket), duplicate tickets, and the CPU each process used. Each
/// user `user-<n>` sends its token (`tokens`, all minted before the run).
pub async fn join_burst(
    config: &BenchConfig,
    requests: u64,
    tokens: Tokens,
    date: &str,
    machine: &str,
) -> anyhow::Result<(Row, Scenario)> {
    let lb = channel(&config.target).await?;
    let join_event = create_event(&lb, &config.identity, "Bench: join burst", 1, 10, 1_000).await?;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    // Every answer keeps 24 bytes here: half a million joins take 12 MB.
    let joins: Arc<Mutex<Vec<(Instant, Instant, u64)>>> =
        Arc::new(Mutex::new(Vec::with_capacity(requests.min(10_000_000) as usize)));
    let observer: Observer = {
        let joins = joins.clone();
        Arc::new(move |outcome| {
            if let Ok(bytes) = outcome.result
                && let Ok(status) = pb::QueueStatus::decode(bytes.clone())
                && let Ok(mut joins) = joins.lock()
            {
                joins.push((outcome.sent, outcome.received, status.ticket));
            }
        })
    };
    let metadata = token_array(&config.identity, requests, tokens, |n| format!("user-{n}"));
    let spec = config.spec(
        &format!("Join ({})", tokens.label()),
        "ticketing.v1.AdmissionService/Join",
        serde_json::json!({"event_id": join_event.event_id, "user_id": "{{.UserId}}"}),
        Some(metadata),
        config.concurrency,
        requests,
    )?;
    let pool = loadgen::descriptor_pool()?;
    println!(
        "== Join burst: {requests} unique users, {} clients, {} connections (Health/Check baseline first)",
        spec.concurrency, spec.connections
    );
    let mut baseline = spec.baseline(&pool)?;
    baseline.duration = Some(config.baseline_max);
    let base = loadgen::run(&baseline, None).await.context("the Health/Check baseline failed")?;
    let cpu = CpuMeter::start(config);
    let main = loadgen::run(&spec, Some(observer)).await?;
    let cpu_text = cpu.text();
    let join = Comparison::new(main, Some(base));
    println!("{join}\n{cpu_text}");

    let mut joins = std::mem::take(&mut *joins.lock().map_err(|_| anyhow::anyhow!("poisoned"))?);
    let distinct: HashSet<u64> = joins.iter().map(|j| j.2).collect();
    let duplicate_tickets = joins.len() - distinct.len();
    let inversions = fifo_inversions(&mut joins);
    let errors = join.main.count - join.main.ok();
    let joins_per_sec = join.main.ok() as f64 / (join.main.total as f64 / 1e9).max(1e-9);
    let client_memory = procfs::memory_kib(std::process::id()).map_or(0, |m| m.peak_kib / 1024);
    let row = Row {
        what: format!(
            "Join burst: {} clients, {requests} unique users; {}",
            config.concurrency,
            tokens.label()
        ),
        result: format!(
            "{}; {errors} errors; FIFO inversions {inversions}, duplicate tickets {duplicate_tickets}; {cpu_text}; bench peak RSS {client_memory} MB",
            result_text(&join.main, "joins", joins_per_sec)
        ),
        baseline: join.ratio_text(),
        target: "≥40,000 joins/s, FIFO inversions 0".into(),
        met: Some(joins_per_sec >= 40_000.0 && inversions == 0 && duplicate_tickets == 0 && errors == 0),
        date: date.into(),
        machine: machine.into(),
    };
    let scenario = Scenario {
        name: format!("Join ({})", tokens.label()),
        report: join,
        extra: serde_json::json!({
            "eventId": join_event.event_id,
            "joined": joins.len(),
            "errors": errors,
            "fifoInversions": inversions,
            "duplicateTickets": duplicate_tickets,
            "cpuSeconds": cpu.used(),
        }),
    };
    Ok((row, scenario))
}

/// What one watcher saw.
#[derive(Debug, Default, Clone, Copy)]
struct Watched {
    opened: bool,
    updates: u64,
    /// Largest gap between two updates before the sale opened (streams idle in the pre-queue).
    max_gap: Duration,
    /// Largest gap between two updates after the opening (the shuffle moves everyone, then
    /// the admissions).
    max_gap_open: Duration,
    got_pass: bool,
    /// The server ended the stream after the pass.
    closed: bool,
}

/// Redis's `total_commands_processed` (every client of the shared Redis, so an upper bound
/// of admission's share).
async fn redis_commands(redis: &Client) -> anyhow::Result<u64> {
    let info: String = redis.info(Some(InfoKind::Stats)).await?;
    info.lines()
        .find_map(|line| line.strip_prefix("total_commands_processed:"))
        .and_then(|value| value.trim().parse().ok())
        .context("INFO stats has no total_commands_processed")
}

/// `streams` `WatchQueue` streams held open on admission (at `watch_target`, over one HTTP/2
/// connection per [`STREAMS_PER_CONNECTION`]), for a `watch` window in the pre-queue; then the
/// sale opens (capacity for everyone) and each stream must receive its pass and close.
/// Reports: streams opened, the largest gap between two updates on any stream, admission's
/// RSS and CPU seconds during the window, Redis commands per second during the window (every
/// client of Redis counts, so it is an upper bound), and this client's own peak RSS.
pub async fn watch_queue(
    config: &BenchConfig,
    streams: usize,
    watch_target: &str,
    redis_url: &str,
    watch: Duration,
    date: &str,
    machine: &str,
) -> anyhow::Result<Row> {
    let lb = channel(&config.target).await?;
    let setup = Duration::from_millis(SETUP_MS_PER_THOUSAND * (streams as u64).div_ceil(1_000).max(4));
    // Room for everyone at once, within inventory's largest admission capacity.
    let capacity = u32::try_from(streams).unwrap_or(u32::MAX).clamp(1, MAX_CAPACITY);
    let opens_in = setup + watch;
    let event = create_event(
        &lb,
        &config.identity,
        "Bench: WatchQueue watchers",
        capacity,
        600,
        opens_in.as_millis() as i64,
    )
    .await?;
    let opens_at = Instant::now() + opens_in;
    let connections = streams.div_ceil(STREAMS_PER_CONNECTION).max(1);
    println!(
        "== WatchQueue: {streams} streams over {connections} connections to {watch_target}; the sale opens in {:.0} s",
        opens_in.as_secs_f64()
    );
    let channels = crate::grpc::connect(watch_target, connections, None).await?;
    let user = |i: usize| format!("watcher-{i}");

    // Queue everyone in the pre-queue.
    let started = Instant::now();
    let joined = futures::stream::iter(0..streams)
        .map(|i| {
            let mut admission = AdmissionServiceClient::new(channels[i % channels.len()].clone());
            let token = config.identity.mint(&user(i));
            let request =
                token.request(pb::JoinRequest { event_id: event.event_id.clone(), user_id: user(i) });
            async move { admission.join(request).await.is_ok() }
        })
        .buffer_unordered(WATCH_JOIN_CONCURRENCY)
        .filter(|ok| futures::future::ready(*ok))
        .count()
        .await;
    println!("{joined} of {streams} joined in {:.1} s", started.elapsed().as_secs_f64());

    // Open the streams, a bounded number at a time; each then reads until its pass.
    let opening = Arc::new(tokio::sync::Semaphore::new(WATCH_OPEN_CONCURRENCY));
    let opened = Arc::new(tokio::sync::Semaphore::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    let deadline = tokio::time::Instant::from_std(opens_at) + ADMIT_TIMEOUT;
    for i in 0..streams {
        let mut admission = AdmissionServiceClient::new(channels[i % channels.len()].clone());
        let token = config.identity.mint(&user(i));
        let request =
            token.request(pb::WatchQueueRequest { event_id: event.event_id.clone(), user_id: user(i) });
        let (opening, opened) = (opening.clone(), opened.clone());
        tasks.spawn(async move {
            let mut seen = Watched::default();
            let read = async {
                let permit = opening.acquire_owned().await;
                let mut updates = admission.watch_queue(request).await?.into_inner();
                let mut last = Instant::now();
                drop(permit);
                seen.opened = true;
                opened.add_permits(1);
                while let Some(status) = updates.message().await? {
                    let now = Instant::now();
                    if seen.updates > 0 {
                        let gap = if now < opens_at { &mut seen.max_gap } else { &mut seen.max_gap_open };
                        *gap = (*gap).max(now - last);
                    }
                    last = now;
                    seen.updates += 1;
                    if status.pass.is_some() {
                        seen.got_pass = true;
                    }
                }
                seen.closed = seen.got_pass;
                anyhow::Ok(())
            };
            let _ = tokio::time::timeout_at(deadline, read).await;
            seen
        });
    }
    let all_open = tokio::time::timeout_at(tokio::time::Instant::from_std(opens_at), async {
        let _ = opened.acquire_many(streams as u32).await;
    })
    .await
    .is_ok();
    let open_count = if all_open { streams } else { opened.available_permits() };
    println!("{open_count} streams open {:.1} s after the joins began", started.elapsed().as_secs_f64());

    // The window: every stream open and idle in the pre-queue, until just before the opening.
    let redis = Client::new(RedisConfig::from_url(redis_url)?, None, None, None);
    redis.init().await.context("cannot reach Redis for INFO stats")?;
    let window_end = opens_at.checked_sub(Duration::from_millis(500)).unwrap_or(opens_at);
    let admission_pid =
        crate::stack::pid_files(&config.state_dir).into_iter().find(|(name, _)| name == "admission");
    let commands_before = redis_commands(&redis).await?;
    let cpu = CpuMeter::start(config);
    tokio::time::sleep_until(tokio::time::Instant::from_std(window_end)).await;
    let window = cpu.started.elapsed().as_secs_f64();
    if window < 1.0 {
        anyhow::bail!(
            "only {open_count} of {streams} streams were open when the sale opened: no watch window to measure"
        );
    }
    let commands_per_sec = (redis_commands(&redis).await?.saturating_sub(commands_before)) as f64 / window;
    let cpu_used = cpu.used();
    let admission_cpu = cpu_used.iter().find(|(name, _)| name == "admission").map_or(f64::NAN, |c| c.1);
    let admission_rss =
        admission_pid.and_then(|(_, pid)| procfs::memory_kib(pid)).map_or(0, |m| m.rss_kib / 1024);
    println!("watch window {window:.1} s: {}; Redis {commands_per_sec:.0} commands/s", cpu.text());

    // The sale opens: everyone is admitted and must get the pass, then the end of the stream.
    let mut watched = Vec::with_capacity(streams);
    while let Some(result) = tasks.join_next().await {
        watched.push(result.unwrap_or_default());
    }
    let admitted_after = Instant::now().saturating_duration_since(opens_at).as_secs_f64();
    let passes = watched.iter().filter(|w| w.got_pass).count();
    let closed = watched.iter().filter(|w| w.closed).count();
    let max_gap = watched.iter().map(|w| w.max_gap).max().unwrap_or_default();
    let late = watched.iter().filter(|w| w.max_gap > MAX_UPDATE_GAP).count();
    let max_gap_open = watched.iter().map(|w| w.max_gap_open).max().unwrap_or_default();
    let late_open = watched.iter().filter(|w| w.max_gap_open > MAX_UPDATE_GAP).count();
    let updates: u64 = watched.iter().map(|w| w.updates).sum();
    let client_memory = procfs::memory_kib(std::process::id()).map_or(0, |m| m.peak_kib / 1024);
    let opened_total = watched.iter().filter(|w| w.opened).count();
    Ok(Row {
        what: format!(
            "WatchQueue: {streams} open streams, {connections} HTTP/2 connections straight to admission"
        ),
        result: format!(
            "{opened_total} opened, {updates} updates; largest gap between updates before the opening {:.2} s ({late} streams over {:.1} s), after it {:.2} s ({late_open} streams); \
             during a {window:.0} s watch: admission {:.2} CPU s/s, RSS {admission_rss} MB, Redis {commands_per_sec:.0} commands/s (whole server); \
             then {passes} passes received and {closed} streams closed within {admitted_after:.0} s of the opening; bench peak RSS {client_memory} MB",
            max_gap.as_secs_f64(),
            MAX_UPDATE_GAP.as_secs_f64(),
            max_gap_open.as_secs_f64(),
            admission_cpu / window
        ),
        baseline: "—".into(),
        target: "an update at least every second; no Redis call per stream per tick".into(),
        met: Some(
            opened_total == streams && passes == streams && closed == streams && late == 0 && late_open == 0,
        ),
        date: date.into(),
        machine: machine.into(),
    })
}
