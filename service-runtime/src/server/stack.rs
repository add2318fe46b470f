//! The tower stack around every RPC, and its telemetry layer.

use std::{
    collections::HashMap,
    sync::Arc,
    task::{Context, Poll},
    time::Instant,
};

use prost::Message as _;

use tonic::body::Body;
use tower::{Layer, Service, ServiceBuilder};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::{
    BoxFuture,
    auth::{AuthLayer, Authenticator},
    size_limit::RequestSizeLimitLayer,
};

/// The tower stack around every RPC, outermost first.
pub(super) type Stack = ServiceBuilder<
    tower::layer::util::Stack<
        RequestSizeLimitLayer,
        tower::layer::util::Stack<
            AuthLayer,
            tower::layer::util::Stack<
                tower::limit::GlobalConcurrencyLimitLayer,
                tower::layer::util::Stack<
                    tower::load_shed::LoadShedLayer,
                    tower::layer::util::Stack<RpcTelemetryLayer, tower::layer::util::Identity>,
                >,
            >,
        >,
    >,
>;

pub(super) fn stack(max_in_flight: usize, auth: Arc<Authenticator>, known: Arc<KnownMethods>) -> Stack {
    ServiceBuilder::new()
        // Outermost, so every request is traced and counted, including those shed below.
        .layer(RpcTelemetryLayer::new(known))
        // Fails fast with RESOURCE_EXHAUSTED when the limit below has no permit, rather than
        // queueing without bound behind it.
        .load_shed()
        // One limit for the whole process, not per connection: behind the load balancer a
        // few HTTP/2 connections carry all the traffic.
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(max_in_flight))
        // Inside the limit, so a flood of bad tokens is shed like any other load; before the
        // handler, so a bad token never reaches it (see `auth`).
        .layer(AuthLayer::new(auth))
        // After the token check, so a stranger's oversized request is refused unread; before
        // the handler, so an oversized one gets RESOURCE_EXHAUSTED instead of tonic's
        // OUT_OF_RANGE (see `size_limit`).
        .layer(RequestSizeLimitLayer)
}

/// The labels of a method no listener serves: a client choosing paths cannot add series.
pub const UNKNOWN: &str = "unknown";

/// One served RPC method: its labels and its server span's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcMethod {
    /// The fully qualified service, `ticketing.v1.PaymentService` (`grpc_service`).
    pub service: String,
    /// The method, `Pay` (`grpc_method`).
    pub method: String,
    /// `unary`, `client_stream`, `server_stream` or `bidi_stream` (`grpc_type`).
    pub kind: &'static str,
    /// The span name: the gRPC path without its leading slash,
    /// `ticketing.v1.PaymentService/Pay`.
    pub name: String,
}

impl RpcMethod {
    fn unknown() -> Self {
        Self { service: UNKNOWN.into(), method: UNKNOWN.into(), kind: UNKNOWN, name: UNKNOWN.into() }
    }
}

/// The methods a listener serves, read from the services' file descriptors: the only values
/// the `grpc_service` and `grpc_method` labels (and server span names) take; any other path
/// is [`UNKNOWN`].
#[derive(Debug)]
pub struct KnownMethods {
    by_path: HashMap<String, RpcMethod>,
    unknown: RpcMethod,
}

impl KnownMethods {
    /// The methods of `services` (fully qualified names) found in the descriptors of the
    /// ticketing protos, gRPC health and server reflection (v1 and v1alpha).
    pub fn of_services(services: &[&str]) -> Self {
        Self::from_descriptor_sets(
            &[
                ticketing_proto::FILE_DESCRIPTOR_SET,
                tonic_health::pb::FILE_DESCRIPTOR_SET,
                tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
                tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
            ],
            services,
        )
    }

    /// The methods of `services` found in the encoded descriptor `sets` (a set that does not
    /// decode contributes nothing).
    pub fn from_descriptor_sets(sets: &[&[u8]], services: &[&str]) -> Self {
        let mut by_path = HashMap::new();
        let files = sets
            .iter()
            .filter_map(|set| prost_types::FileDescriptorSet::decode(*set).ok())
            .flat_map(|set| set.file);
        for file in files {
            let package = file.package();
            for service in &file.service {
                let full = if package.is_empty() {
                    service.name().to_owned()
                } else {
                    format!("{package}.{}", service.name())
                };
                if !services.contains(&full.as_str()) {
                    continue;
                }
                for method in &service.method {
                    let kind = match (method.client_streaming(), method.server_streaming()) {
                        (false, false) => "unary",
                        (true, false) => "client_stream",
                        (false, true) => "server_stream",
                        (true, true) => "bidi_stream",
                    };
                    let name = format!("{full}/{}", method.name());
                    by_path.insert(
                        format!("/{name}"),
                        RpcMethod { service: full.clone(), method: method.name().to_owned(), kind, name },
                    );
                }
            }
        }
        Self { by_path, unknown: RpcMethod::unknown() }
    }

    /// The method served at `path` (`/ticketing.v1.PaymentService/Pay`), or the unknown one.
    pub fn resolve(&self, path: &str) -> &RpcMethod {
        self.by_path.get(path).unwrap_or(&self.unknown)
    }

    /// How many methods are known.
    pub fn len(&self) -> usize {
        self.by_path.len()
    }

    /// Whether no method is known.
    pub fn is_empty(&self) -> bool {
        self.by_path.is_empty()
    }
}

/// A status code as go-grpc-prometheus' `grpc_code` label spells it (Go's `codes.Code`).
pub fn grpc_code_label(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "Canceled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

/// Wraps services in [`RpcTelemetry`].
#[derive(Clone)]
pub struct RpcTelemetryLayer {
    known: Arc<KnownMethods>,
}

impl RpcTelemetryLayer {
    /// Labels and names RPCs from `known`.
    pub fn new(known: Arc<KnownMethods>) -> Self {
        Self { known }
    }
}

impl<S> Layer<S> for RpcTelemetryLayer {
    type Service = RpcTelemetry<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RpcTelemetry { inner, known: Arc::clone(&self.known) }
    }
}

/// Traces each RPC as a server span named by the RPC (`ticketing.v1.PaymentService/Pay`, a
/// child of the caller's `traceparent`) whose `trace_id` and `span_id` fields every log line
/// inside it carries, and records go-grpc-prometheus' series:
/// `grpc_server_started_total{grpc_type,grpc_service,grpc_method}`,
/// `grpc_server_handled_total{grpc_type,grpc_service,grpc_method,grpc_code}` and the histogram
/// `grpc_server_handling_seconds{grpc_type,grpc_service,grpc_method}`. Labels come from
/// [`KnownMethods`]; an unknown path counts as `unknown`.
#[derive(Clone)]
pub struct RpcTelemetry<S> {
    inner: S,
    known: Arc<KnownMethods>,
}

impl<S, ResBody> Service<http::Request<Body>> for RpcTelemetry<S>
where
    S: Service<http::Request<Body>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let rpc = self.known.resolve(request.uri().path());
        let span = tracing::info_span!(
            "rpc",
            otel.name = %rpc.name,
            otel.kind = "server",
            rpc.system = "grpc",
            rpc.service = %rpc.service,
            rpc.method = %rpc.method,
            rpc.grpc.status_code = tracing::field::Empty,
            trace_id = tracing::field::Empty,
            span_id = tracing::field::Empty,
        );
        let _ = span.set_parent(crate::telemetry::extract_http(request.headers()));
        crate::telemetry::record_trace_ids(&span);
        let labels = [
            ("grpc_type", rpc.kind),
            ("grpc_service", rpc.service.as_str()),
            ("grpc_method", rpc.method.as_str()),
        ]
        .map(|(key, value)| metrics::Label::new(key, value.to_owned()));
        metrics::counter!("grpc_server_started_total", labels.to_vec()).increment(1);
        let started = Instant::now();
        let future = self.inner.call(request);
        Box::pin(async move {
            let result = future.instrument(span.clone()).await;
            let code = match &result {
                // Errors are trailers-only responses with the status in the headers; a
                // success (or a stream) reports its status in trailers, after this point.
                Ok(response) => response
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<i32>().ok())
                    .map_or(tonic::Code::Ok, tonic::Code::from),
                // The only error this stack raises itself is load shedding.
                Err(_) => tonic::Code::ResourceExhausted,
            };
            span.record("rpc.grpc.status_code", code as i32);
            let mut handled = labels.to_vec();
            handled.push(metrics::Label::new("grpc_code", grpc_code_label(code)));
            metrics::counter!("grpc_server_handled_total", handled).increment(1);
            metrics::histogram!("grpc_server_handling_seconds", labels.to_vec())
                .record(started.elapsed().as_secs_f64());
            result
        })
    }
}
