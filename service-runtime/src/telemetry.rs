//! Logs, traces and metrics.
//!
//! - Logs go to stderr through `tracing`; `LOG_FORMAT=json` makes them JSON (for production),
//!   `RUST_LOG` filters them (default `info`).
//! - Every span gets OpenTelemetry ids; when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, spans are
//!   exported over OTLP/gRPC in batches (an absent collector only costs dropped batches, never
//!   a failed request). Each RPC's server span is named by the RPC
//!   (`ticketing.v1.PaymentService/Pay`) and carries `trace_id` and `span_id` fields, so every
//!   log line inside it names its trace (see [`record_trace_ids`]).
//! - Metrics are served for Prometheus by [`serve_metrics`]. A series that has not been updated
//!   for [`METRICS_IDLE`] leaves the scrape (a finished event's series, once admission forgot
//!   the event), so the number of series follows what is alive, not everything since the
//!   process started. Gauges that count live things use [`LiveGauge`], re-published while true.
//!   The process' own series (CPU seconds, resident memory, open file descriptors: the
//!   `process_*` names of Prometheus' client libraries) come from `metrics-process`, collected
//!   every [`PROCESS_METRICS_PERIOD`].
//! - W3C trace context (`traceparent`) travels in gRPC metadata and NATS headers: see
//!   [`inject_grpc`], [`extract_http`], [`inject_nats`] and [`extract_nats`].

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicI64, Ordering},
    },
    time::Duration,
};

use opentelemetry::{
    Context, global,
    propagation::{Extractor, Injector},
    trace::TracerProvider as _,
};
use opentelemetry_sdk::{Resource, propagation::TraceContextPropagator, trace::SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{EnvFilter, Layer, layer::SubscriberExt, util::SubscriberInitExt};

/// Flushes pending spans when dropped at the end of `main`.
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            let _ = provider.shutdown();
        }
    }
}

/// Installs the global subscriber: filtered, plain or JSON logs, plus OTLP export when
/// `OTEL_EXPORTER_OTLP_ENDPOINT` is set. Call once, at the top of `main`, inside the runtime.
pub fn init(service_name: &'static str) -> TelemetryGuard {
    global::set_text_map_propagator(TraceContextPropagator::new());
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let fmt = log_layer(json, std::io::stderr);

    let exporting = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT")
        .ok()
        .filter(|endpoint| !endpoint.is_empty())
        .and_then(|endpoint| match otlp_provider(service_name, &endpoint) {
            Ok(provider) => Some(provider),
            Err(error) => {
                eprintln!("{service_name}: OTLP export disabled: {error}");
                None
            }
        });
    // Without an exporter, a provider that exports nothing still gives every span its trace
    // and span ids, which the log lines carry.
    let provider = exporting.unwrap_or_else(|| {
        SdkTracerProvider::builder()
            .with_resource(Resource::builder().with_service_name(service_name).build())
            .build()
    });
    let otel = tracing_opentelemetry::layer().with_tracer(provider.tracer(service_name));
    let _ = tracing_subscriber::registry().with(filter).with(fmt).with(otel).try_init();
    TelemetryGuard { provider: Some(provider) }
}

/// The log lines' layer, writing to `writer`: plain text, or JSON (one object a line) with the
/// current span's fields (an RPC's `trace_id` and `span_id` among them) and the span list.
pub fn log_layer<S, W>(json: bool, writer: W) -> Box<dyn Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    if json {
        tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .with_writer(writer)
            .boxed()
    } else {
        tracing_subscriber::fmt::layer().with_writer(writer).boxed()
    }
}

fn otlp_provider(
    service_name: &'static str,
    endpoint: &str,
) -> Result<SdkTracerProvider, Box<dyn std::error::Error>> {
    use opentelemetry_otlp::WithExportConfig;
    let exporter =
        opentelemetry_otlp::SpanExporter::builder().with_tonic().with_endpoint(endpoint).build()?;
    let provider = SdkTracerProvider::builder()
        .with_resource(Resource::builder().with_service_name(service_name).build())
        .with_batch_exporter(exporter)
        .build();
    global::set_tracer_provider(provider.clone());
    Ok(provider)
}

/// Records `span`'s OpenTelemetry trace and span ids (lower-case hex) in its `trace_id` and
/// `span_id` fields, which it must declare (`tracing::field::Empty`). Call after setting its
/// parent: the ids are fixed from then on. Without the OpenTelemetry layer, records nothing.
pub fn record_trace_ids(span: &tracing::Span) {
    use opentelemetry::trace::TraceContextExt as _;
    let context = span.context();
    let ids = context.span().span_context().clone();
    if ids.is_valid() {
        span.record("trace_id", tracing::field::display(ids.trace_id()));
        span.record("span_id", tracing::field::display(ids.span_id()));
    }
}

/// How often the process' own series (`process_cpu_seconds_total`,
/// `process_resident_memory_bytes`, `process_open_fds`, ...) are read from `/proc`: a few
/// times per usual scrape interval (15 s), at the cost of a few syscalls.
pub const PROCESS_METRICS_PERIOD: Duration = Duration::from_secs(5);

/// How long a series may go without an update before the exporter drops it from the scrape:
/// longer than admission's `FINISHED_EVENT_AFTER_MS` (10 min by default) and than any loop's
/// update period, so only the series of what ended go. A counter that comes back starts from
/// zero again, which Prometheus' `rate`/`increase` read as a reset.
pub const METRICS_IDLE: Duration = Duration::from_secs(30 * 60);

/// Starts the Prometheus exporter: `GET /metrics` on `addr`. Process-wide; call from `main`.
pub fn serve_metrics(addr: SocketAddr) -> Result<(), String> {
    serve_metrics_with_idle(addr, METRICS_IDLE)
}

/// [`serve_metrics`] with its idle timeout: a series not updated for `idle` leaves the scrape.
/// [`LiveGauge`]s are re-published every quarter of it, so they never do while alive.
pub fn serve_metrics_with_idle(addr: SocketAddr, idle: Duration) -> Result<(), String> {
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets(&[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0])
        .map_err(|e| e.to_string())?
        .idle_timeout(metrics_util::MetricKindMask::ALL, Some(idle))
        .install()
        .map_err(|e| format!("cannot serve metrics on {addr}: {e}"))?;
    let process = metrics_process::Collector::default();
    process.describe();
    process.collect();
    std::thread::Builder::new()
        .name("process-metrics".into())
        .spawn(move || {
            loop {
                std::thread::sleep(PROCESS_METRICS_PERIOD);
                process.collect();
            }
        })
        .map_err(|e| format!("cannot start the process metrics collector: {e}"))?;
    std::thread::Builder::new()
        .name("live-gauges".into())
        .spawn(move || {
            loop {
                std::thread::sleep(idle / 4);
                LiveGauge::republish_all();
            }
        })
        .map_err(|e| format!("cannot start the live gauge refresher: {e}"))?;
    Ok(())
}

/// A gauge that counts things alive (tasks, streams, payments in flight): set to its absolute
/// value on every change and re-published while the exporter runs, so the idle timeout never
/// drops it while it is true, and a change after a quiet spell never starts from a lost value
/// (an `increment`/`decrement` gauge would). One per name and labels, for the process' life.
pub struct LiveGauge {
    name: &'static str,
    labels: Vec<metrics::Label>,
    value: AtomicI64,
}

/// Every live gauge of the process; a handful, created once each.
static LIVE_GAUGES: Mutex<Vec<Arc<LiveGauge>>> = Mutex::new(Vec::new());

impl LiveGauge {
    /// The live gauge `name` with `labels`, created at zero on first use.
    pub fn get(name: &'static str, labels: &[(&'static str, &'static str)]) -> Arc<Self> {
        let labels: Vec<metrics::Label> = labels.iter().map(|(k, v)| metrics::Label::new(*k, *v)).collect();
        let mut all = LIVE_GAUGES.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(found) = all.iter().find(|g| g.name == name && g.labels == labels) {
            return found.clone();
        }
        let gauge = Arc::new(Self { name, labels, value: AtomicI64::new(0) });
        all.push(gauge.clone());
        gauge
    }

    /// Adds `delta` (negative to subtract) and publishes the new value.
    pub fn add(&self, delta: i64) {
        let value = self.value.fetch_add(delta, Ordering::Relaxed) + delta;
        self.publish(value);
    }

    fn publish(&self, value: i64) {
        metrics::gauge!(self.name, self.labels.clone()).set(value as f64);
    }

    fn republish_all() {
        let all = LIVE_GAUGES.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        for gauge in all {
            gauge.publish(gauge.value.load(Ordering::Relaxed));
        }
    }
}

struct HeaderInjector<'a>(&'a mut tonic::metadata::MetadataMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (
            tonic::metadata::MetadataKey::from_bytes(key.as_bytes()),
            tonic::metadata::MetadataValue::try_from(value.as_str()),
        ) {
            self.0.insert(key, value);
        }
    }
}

struct HttpExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HttpExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// Adds the current span's trace context to an outgoing gRPC request.
pub fn inject_grpc<T>(request: &mut tonic::Request<T>) {
    let context = tracing::Span::current().context();
    global::get_text_map_propagator(|p| {
        p.inject_context(&context, &mut HeaderInjector(request.metadata_mut()))
    });
}

/// The trace context an incoming HTTP/2 request carries, if any.
pub fn extract_http(headers: &http::HeaderMap) -> Context {
    global::get_text_map_propagator(|p| p.extract(&HttpExtractor(headers)))
}

struct NatsInjector<'a>(&'a mut async_nats::HeaderMap);

impl Injector for NatsInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key, value.as_str());
    }
}

struct NatsExtractor<'a>(&'a async_nats::HeaderMap);

impl Extractor for NatsExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(|v| v.as_str())
    }
    fn keys(&self) -> Vec<&str> {
        Vec::new()
    }
}

/// Adds the current span's trace context to outgoing NATS headers.
pub fn inject_nats(headers: &mut async_nats::HeaderMap) {
    let context = tracing::Span::current().context();
    global::get_text_map_propagator(|p| p.inject_context(&context, &mut NatsInjector(headers)));
}

/// Makes `span` a child of the trace context in NATS `headers`, when there is one.
pub fn extract_nats(headers: Option<&async_nats::HeaderMap>, span: &tracing::Span) {
    if let Some(headers) = headers {
        let parent = global::get_text_map_propagator(|p| p.extract(&NatsExtractor(headers)));
        let _ = span.set_parent(parent);
    }
}
