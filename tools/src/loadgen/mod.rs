//! A ghz-style load generator for one unary RPC of the mesh.
//!
//! How a run goes: the method is looked up by its full name in a [`DescriptorPool`] built
//! from the contract's descriptor set (plus `grpc.health.v1`); the call data (JSON, with the
//! [`template`] actions) is rendered per request, turned into a [`DynamicMessage`] of the
//! method's input type and encoded to bytes; `concurrency` workers send it over
//! `connections` HTTP/2 connections (worker `i` uses connection `i % connections`) with
//! [`tonic::client::Grpc::unary`] and a raw-bytes codec, until `total` requests are sent or
//! `duration` ends, optionally paced to `rps`. Latencies go into an HDR histogram; the
//! [`report::Report`] has ghz's figures. [`run_with_baseline`] first runs
//! `grpc.health.v1.Health/Check` the same way, so every figure comes with its ratio to what
//! the server, the load balancer and the machine can do for an empty call.

pub mod call;
pub mod config;
pub mod report;
pub mod template;

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use bytes::{Buf, BufMut, Bytes};
use hdrhistogram::Histogram;
use prost_reflect::DescriptorPool;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

pub use self::{
    call::{CallData, descriptor_pool, encode_json, find_method},
    report::{Comparison, Report, RunOptions},
};
use crate::grpc::reason;

/// The baseline's method: an empty call every server of the mesh answers.
pub const HEALTH_CHECK: &str = "grpc.health.v1.Health/Check";
/// Distinct error messages kept in the error distribution; the rest are counted together,
/// so refusals that name a seat do not grow the report without bound.
const MAX_ERROR_KINDS: usize = 30;
/// Longest latency the histogram records (60 s, in microseconds); longer ones are clamped.
const MAX_LATENCY_US: u64 = 60_000_000;
/// The most bytes one answer may have (a seat map of 200,000 seats is about 50 KB).
const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

/// A codec that sends the bytes it is given and hands back the answer's bytes, so one client
/// calls any method of the descriptor pool.
#[derive(Debug, Clone, Copy, Default)]
pub struct RawCodec;

/// [`RawCodec`]'s encoder: writes the already encoded message.
#[derive(Debug, Clone, Copy, Default)]
pub struct RawEncoder;

/// [`RawCodec`]'s decoder: returns the message's bytes undecoded.
#[derive(Debug, Clone, Copy, Default)]
pub struct RawDecoder;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        RawEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawDecoder
    }
}

impl Encoder for RawEncoder {
    type Item = Bytes;
    type Error = tonic::Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawDecoder {
    type Item = Bytes;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, tonic::Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// What a run does; the CLI flags and ghz config keys map onto it one to one.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    /// Shown in the report.
    pub name: String,
    /// `http://host:port`.
    pub target: String,
    pub data: CallData,
    pub concurrency: usize,
    pub connections: usize,
    /// Stop after this many requests (`-n`).
    pub total: Option<u64>,
    /// Stop after this long (`-z`); with `total`, whichever comes first.
    pub duration: Option<Duration>,
    /// Pace the requests to this rate (`--rps`).
    pub rps: Option<f64>,
    /// Per-call deadline (`-t`).
    pub timeout: Duration,
}

impl LoadSpec {
    /// The same run, but calling `grpc.health.v1.Health/Check` with an empty request.
    pub fn baseline(&self, pool: &DescriptorPool) -> anyhow::Result<Self> {
        let method = find_method(pool, HEALTH_CHECK)?;
        Ok(Self {
            name: format!("{} baseline", self.name).trim().to_owned(),
            data: CallData::new(method, &serde_json::json!({}), None)?,
            ..self.clone()
        })
    }
}

/// One finished call, for callers that look at the answers (tickets, hold ids).
#[derive(Debug)]
pub struct Outcome<'a> {
    pub request_number: u64,
    pub sent: Instant,
    pub received: Instant,
    /// The answer's encoded message, or the status.
    pub result: &'a Result<Bytes, tonic::Status>,
}

/// Sees every finished call; must be cheap, it runs on the workers.
pub type Observer = Arc<dyn Fn(&Outcome<'_>) + Send + Sync>;

/// ghz's (Go's) name of a status code.
pub fn code_name(code: tonic::Code) -> String {
    match code {
        tonic::Code::Ok => "OK".into(),
        tonic::Code::Cancelled => "Canceled".into(),
        other => format!("{other:?}"),
    }
}

fn error_key(status: &tonic::Status) -> String {
    let reason = reason(status);
    let desc = if reason.is_empty() { status.message().chars().take(160).collect() } else { reason };
    format!("rpc error: code = {} desc = {desc}", code_name(status.code()))
}

struct WorkerStats {
    latencies: Histogram<u64>,
    codes: HashMap<tonic::Code, u64>,
    errors: HashMap<String, u64>,
}

/// Runs the load and reports it. Render or encode failures of the data stop the run with an
/// error; call failures are counted by status.
pub async fn run(spec: &LoadSpec, observer: Option<Observer>) -> anyhow::Result<Report> {
    if spec.total.is_none() && spec.duration.is_none() {
        bail!("give a total (-n) or a duration (-z)");
    }
    let channels = crate::grpc::connect(&spec.target, spec.connections, None).await?;
    let method = spec.data.method();
    let path: tonic::codegen::http::uri::PathAndQuery =
        format!("/{}/{}", method.parent_service().full_name(), method.name()).parse()?;
    let counter = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = spec.duration.map(|d| started + d);
    let mut workers = tokio::task::JoinSet::new();
    // One copy shared by every worker: a data array (e.g. 2,000 users' passes) is large.
    let shared = Arc::new(spec.clone());
    for worker_id in 0..spec.concurrency.max(1) {
        let channel = channels[worker_id % channels.len()].clone();
        let (counter, path, observer) = (counter.clone(), path.clone(), observer.clone());
        let spec = shared.clone();
        workers.spawn(async move {
            let mut stats = WorkerStats {
                latencies: Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)?,
                codes: HashMap::new(),
                errors: HashMap::new(),
            };
            let mut grpc = tonic::client::Grpc::new(channel).max_decoding_message_size(MAX_RESPONSE_BYTES);
            loop {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                if spec.total.is_some_and(|total| n >= total) {
                    break;
                }
                if let Some(rps) = spec.rps.filter(|r| *r > 0.0) {
                    let at = started + Duration::from_secs_f64(n as f64 / rps);
                    if deadline.is_some_and(|d| at >= d) {
                        break;
                    }
                    tokio::time::sleep_until(at.into()).await;
                }
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    break;
                }
                let body = spec.data.encode(n, worker_id)?;
                let mut request = tonic::Request::new(body);
                request.set_timeout(spec.timeout);
                spec.data.attach_metadata(n, worker_id, &mut request);
                let sent = Instant::now();
                let result = match grpc.ready().await {
                    Ok(()) => {
                        grpc.unary(request, path.clone(), RawCodec).await.map(tonic::Response::into_inner)
                    }
                    Err(error) => Err(tonic::Status::unavailable(format!("connection not ready: {error}"))),
                };
                let received = Instant::now();
                let micros = (received - sent).as_micros().clamp(1, u128::from(MAX_LATENCY_US)) as u64;
                stats.latencies.saturating_record(micros);
                match &result {
                    Ok(_) => *stats.codes.entry(tonic::Code::Ok).or_default() += 1,
                    Err(status) => {
                        *stats.codes.entry(status.code()).or_default() += 1;
                        *stats.errors.entry(error_key(status)).or_default() += 1;
                    }
                }
                if let Some(observer) = &observer {
                    observer(&Outcome { request_number: n, sent, received, result: &result });
                }
            }
            Ok::<WorkerStats, anyhow::Error>(stats)
        });
    }
    let mut latencies = Histogram::<u64>::new_with_bounds(1, MAX_LATENCY_US, 3)?;
    let mut codes: BTreeMap<String, u64> = BTreeMap::new();
    let mut errors: HashMap<String, u64> = HashMap::new();
    let mut failure = None;
    while let Some(joined) = workers.join_next().await {
        match joined {
            Ok(Ok(stats)) => {
                latencies.add(&stats.latencies)?;
                for (code, n) in stats.codes {
                    *codes.entry(code_name(code)).or_default() += n;
                }
                for (error, n) in stats.errors {
                    *errors.entry(error).or_default() += n;
                }
            }
            Ok(Err(error)) => failure = Some(error),
            Err(join) => failure = Some(anyhow::anyhow!("a worker panicked: {join}")),
        }
    }
    if let Some(error) = failure {
        return Err(error);
    }
    let elapsed = started.elapsed();
    let timed_out = spec.total.is_none_or(|total| latencies.len() < total);
    Ok(Report::new(
        spec.name.clone(),
        RunOptions {
            call: format!("{}/{}", method.parent_service().full_name(), method.name()),
            host: spec.target.clone(),
            concurrency: spec.concurrency,
            connections: spec.connections,
            total: spec.total.unwrap_or(0),
            duration: spec.duration.map_or(0.0, |d| d.as_secs_f64()),
            rps: spec.rps.unwrap_or(0.0),
        },
        elapsed,
        timed_out,
        &latencies,
        codes,
        top_errors(errors),
    ))
}

fn top_errors(errors: HashMap<String, u64>) -> BTreeMap<String, u64> {
    let mut sorted: Vec<(String, u64)> = errors.into_iter().collect();
    sorted.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let mut out = BTreeMap::new();
    let mut other = 0;
    for (i, (error, n)) in sorted.into_iter().enumerate() {
        if i < MAX_ERROR_KINDS {
            out.insert(error, n);
        } else {
            other += n;
        }
    }
    if other > 0 {
        out.insert("(other errors)".into(), other);
    }
    out
}

/// Runs the `grpc.health.v1.Health/Check` baseline (same target, concurrency, connections and
/// count; at most `baseline_cap` long), then the main load, and pairs them.
pub async fn run_with_baseline(
    spec: &LoadSpec,
    pool: &DescriptorPool,
    baseline_cap: Duration,
    observer: Option<Observer>,
) -> anyhow::Result<Comparison> {
    let mut baseline = spec.baseline(pool)?;
    baseline.duration = Some(baseline.duration.map_or(baseline_cap, |d| d.min(baseline_cap)));
    let base = run(&baseline, None).await.context("the Health/Check baseline failed")?;
    let main = run(spec, observer).await?;
    Ok(Comparison::new(main, Some(base)))
}
