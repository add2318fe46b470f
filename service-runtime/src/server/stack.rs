//! The tower stack around every RPC, and its telemetry layer.

use std::{
    sync::Arc,
    task::{Context, Poll},
    time::Instant,
};

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

pub(super) fn stack(max_in_flight: usize, auth: Arc<Authenticator>) -> Stack {
    ServiceBuilder::new()
        // Outermost, so every request is traced and counted, including those shed below.
        .layer(RpcTelemetryLayer)
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

/// Wraps services in [`RpcTelemetry`].
#[derive(Clone, Copy)]
pub struct RpcTelemetryLayer;

impl<S> Layer<S> for RpcTelemetryLayer {
    type Service = RpcTelemetry<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RpcTelemetry { inner }
    }
}

/// Traces each RPC as a server span (child of the caller's `traceparent`) and records the
/// Prometheus series `grpc_server_requests_total{method,code}` and
/// `grpc_server_request_duration_seconds{method}`.
#[derive(Clone)]
pub struct RpcTelemetry<S> {
    inner: S,
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
        let method = request.uri().path().to_owned();
        let span = tracing::info_span!("rpc", rpc.method = %method, otel.kind = "server", rpc.grpc.status_code = tracing::field::Empty);
        let _ = span.set_parent(crate::telemetry::extract_http(request.headers()));
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
            metrics::counter!("grpc_server_requests_total", "method" => method.clone(), "code" => format!("{code:?}")).increment(1);
            metrics::histogram!("grpc_server_request_duration_seconds", "method" => method)
                .record(started.elapsed().as_secs_f64());
            result
        })
    }
}
