//! The gRPC server every service runs: one tower stack, health, reflection, graceful drain.
//!
//! Lifecycle: [`GrpcServer::bind`] binds the listener (port 0 allowed, see
//! [`GrpcServer::local_addr`]); [`GrpcServer::serve`] reports SERVING and serves until the
//! shutdown future resolves; then health turns NOT_SERVING, [`GrpcServer::stopping`] is
//! cancelled so long-lived streams end, the listener stops accepting, and in-flight requests
//! get the drain grace period to finish. Whether the drain finished is logged.

use std::{
    convert::Infallible,
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Instant,
};

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::{body::Body, server::NamedService, service::Routes, transport::Server};
use tonic_health::{ServingStatus, server::HealthReporter};
use tower::{Layer, Service, ServiceBuilder};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::{
    auth::{AuthLayer, Authenticator},
    config::ServerArgs,
};

/// A bound, not yet serving, gRPC server.
pub struct GrpcServer {
    listener: TcpListener,
    local_addr: SocketAddr,
    args: ServerArgs,
    health: HealthReporter,
    stopping: CancellationToken,
    auth: Arc<Authenticator>,
    /// Services served beside the main one (see [`Self::also_serve`]), with their names for
    /// health.
    also: Routes,
    also_names: Vec<&'static str>,
}

impl GrpcServer {
    /// Binds the configured address. Health answers NOT_SERVING until [`Self::serve`].
    /// Loads the token keys (`AUTH_JWKS`) first: a server that cannot verify tokens does not
    /// start.
    pub async fn bind(args: &ServerArgs) -> std::io::Result<Self> {
        let auth = Authenticator::load(&args.auth).await.map_err(std::io::Error::other)?;
        let listener = TcpListener::bind(args.grpc_addr).await?;
        let local_addr = listener.local_addr()?;
        let health = HealthReporter::new();
        health.set_service_status("", ServingStatus::NotServing).await;
        Ok(Self {
            listener,
            local_addr,
            args: args.clone(),
            health,
            stopping: CancellationToken::new(),
            auth,
            also: Routes::default(),
            also_names: Vec::new(),
        })
    }

    /// Serves `service` too, on the same port, behind the same tower stack, reported by
    /// health and reflection like the main one: e.g. a service's internal RPCs
    /// (`ticketing.internal.*`), which the load balancer never routes.
    pub fn also_serve<S>(mut self, service: S) -> Self
    where
        S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        self.also = self.also.add_service(service);
        self.also_names.push(S::NAME);
        self
    }

    /// The bound address, with the real port when port 0 was asked for.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Cancelled when shutdown begins: server streams and background loops end on it.
    pub fn stopping(&self) -> CancellationToken {
        self.stopping.clone()
    }

    /// Serves `service` (plus health, reflection and any [`Self::also_serve`] services) until
    /// `shutdown` resolves, then drains.
    pub async fn serve<S>(self, service: S, shutdown: impl Future<Output = ()>) -> anyhow::Result<()>
    where
        S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        let Self { listener, local_addr, args, health, stopping, auth, also, also_names } = self;
        auth.spawn_refresh(stopping.clone());
        let names: Vec<&'static str> = std::iter::once(S::NAME).chain(also_names).collect();
        let reflection_v1 = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(ticketing_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()?;
        let reflection_v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(ticketing_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1alpha()?;

        let router = Server::builder()
            // Deadline for unary calls when the client sets none or a longer one; a stream's
            // deadline covers only its start.
            .timeout(args.request_timeout())
            .tcp_nodelay(true)
            .layer(stack(args.max_in_flight, auth))
            .add_routes(also)
            .add_service(tonic_health::pb::health_server::HealthServer::new(
                tonic_health::server::HealthService::from_health_reporter(health.clone()),
            ))
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(service);

        let (drain_tx, drain_rx) = tokio::sync::oneshot::channel::<()>();
        let server =
            tokio::spawn(router.serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                let _ = drain_rx.await;
            }));
        health.set_service_status("", ServingStatus::Serving).await;
        for name in &names {
            health.set_service_status(*name, ServingStatus::Serving).await;
        }
        tracing::info!(%local_addr, services = ?names, "serving");

        let mut server = std::pin::pin!(server);
        tokio::select! {
            () = shutdown => {}
            result = &mut server => {
                // The server stopped on its own: an accept error. Report it as the failure it is.
                result??;
                return Ok(());
            }
        }
        health.set_service_status("", ServingStatus::NotServing).await;
        for name in &names {
            health.set_service_status(*name, ServingStatus::NotServing).await;
        }
        stopping.cancel();
        let _ = drain_tx.send(());
        tracing::info!(grace_ms = args.drain_grace_ms, "shutting down: draining in-flight requests");
        match tokio::time::timeout(args.drain_grace(), &mut server).await {
            Ok(result) => {
                result??;
                tracing::info!("drain finished; stopped cleanly");
            }
            Err(_) => tracing::warn!(
                grace_ms = args.drain_grace_ms,
                "drain grace elapsed with requests still in flight; stopping anyway"
            ),
        }
        Ok(())
    }
}

/// The tower stack around every RPC, outermost first.
type Stack = ServiceBuilder<
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
>;

fn stack(max_in_flight: usize, auth: Arc<Authenticator>) -> Stack {
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

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

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

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("SIGINT received"),
        () = terminate => tracing::info!("SIGTERM received"),
    }
}
