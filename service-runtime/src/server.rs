//! The gRPC server every service runs: one tower stack, health, reflection, graceful drain.
//!
//! Lifecycle: [`GrpcServer::bind`] binds the listener (port 0 allowed, see
//! [`GrpcServer::local_addr`]); [`GrpcServer::serve`] reports SERVING and serves until the
//! shutdown future resolves; then health turns NOT_SERVING, [`GrpcServer::stopping`] is
//! cancelled so long-lived streams end, the listener stops accepting, and in-flight requests
//! get the drain grace period to finish. Whether the drain finished is logged.
//!
//! With `HEALTH_ADDR` set, a plain HTTP/1 port serves `/livez` and `/readyz` from the same
//! health reporter (see [`crate::health`]): the load balancer's checks and Kubernetes' probes.
//! Every RPC's request message is bounded (see [`crate::size_limit`]).
//!
//! A service with internal RPCs (`ticketing.internal.*`) serves them on a second listener
//! ([`GrpcServer::bind_internal`]) that requires mutual TLS (see [`crate::mtls`]) and serves
//! nothing else but health. The public listener never serves them, so a request for one
//! through the load balancer can only be refused (`UNIMPLEMENTED` from a service, and the load
//! balancer refuses the path before that).

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
    health::HealthPort,
    mtls::MeshTls,
    size_limit::RequestSizeLimitLayer,
};

/// A bound, not yet serving, gRPC server.
pub struct GrpcServer {
    listener: TcpListener,
    local_addr: SocketAddr,
    args: ServerArgs,
    health: HealthReporter,
    stopping: CancellationToken,
    auth: Arc<Authenticator>,
    /// The internal listener, when the service has internal RPCs.
    internal: Option<Internal>,
    /// The plain HTTP/1 health port, when `HEALTH_ADDR` is set.
    health_port: Option<HealthPort>,
}

/// The mutual-TLS listener of a service's internal RPCs.
struct Internal {
    listener: TcpListener,
    local_addr: SocketAddr,
    tls: tonic::transport::ServerTlsConfig,
    routes: Routes,
    name: &'static str,
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
        let health_port = match args.health_addr {
            Some(addr) => Some(HealthPort::bind(addr).await?),
            None => None,
        };
        Ok(Self {
            listener,
            local_addr,
            args: args.clone(),
            health,
            stopping: CancellationToken::new(),
            auth,
            internal: None,
            health_port,
        })
    }

    /// Binds `addr` (port 0 allowed) for `service`, a service's internal RPCs
    /// (`ticketing.internal.*`): served there with health only, behind the same tower stack,
    /// to clients that present a certificate issued by the mesh CA (`tls`). Each RPC still
    /// checks which service calls ([`crate::mtls::require_peer`]).
    pub async fn bind_internal<S>(
        mut self,
        addr: SocketAddr,
        tls: &MeshTls,
        service: S,
    ) -> std::io::Result<Self>
    where
        S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        let listener = TcpListener::bind(addr).await?;
        let local_addr = listener.local_addr()?;
        self.internal = Some(Internal {
            listener,
            local_addr,
            tls: tls.server_tls(),
            routes: Routes::new(service),
            name: S::NAME,
        });
        Ok(self)
    }

    /// The internal listener's bound address, if [`Self::bind_internal`] was called.
    pub fn internal_addr(&self) -> Option<SocketAddr> {
        self.internal.as_ref().map(|internal| internal.local_addr)
    }

    /// The bound address, with the real port when port 0 was asked for.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The health port's bound address, if `HEALTH_ADDR` was set.
    pub fn health_addr(&self) -> Option<SocketAddr> {
        self.health_port.as_ref().map(HealthPort::local_addr)
    }

    /// Cancelled when shutdown begins: server streams and background loops end on it.
    pub fn stopping(&self) -> CancellationToken {
        self.stopping.clone()
    }

    /// Serves `service` (plus health and reflection), and the internal listener if bound,
    /// until `shutdown` resolves, then drains both.
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
        let Self { listener, local_addr, args, health, stopping, auth, internal, health_port } = self;
        auth.spawn_refresh(stopping.clone());
        if let Some(port) = health_port {
            port.spawn(health.clone());
        }
        let names: Vec<&'static str> =
            std::iter::once(S::NAME).chain(internal.as_ref().map(|i| i.name)).collect();
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
            .layer(stack(args.max_in_flight, Arc::clone(&auth)))
            .add_service(tonic_health::pb::health_server::HealthServer::new(
                tonic_health::server::HealthService::from_health_reporter(health.clone()),
            ))
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(service);

        let drain = CancellationToken::new();
        let public =
            tokio::spawn(router.serve_with_incoming_shutdown(
                TcpListenerStream::new(listener),
                drain.clone().cancelled_owned(),
            ));
        let internal = match internal {
            Some(internal) => {
                let addr = internal.local_addr;
                let router = Server::builder()
                    .tls_config(internal.tls)?
                    .timeout(args.request_timeout())
                    .tcp_nodelay(true)
                    // Its own concurrency limit: a burst on the public listener must not shed
                    // payment's ConfirmHold for a charge already taken.
                    .layer(stack(args.max_in_flight, Arc::clone(&auth)))
                    .add_routes(internal.routes)
                    .add_service(tonic_health::pb::health_server::HealthServer::new(
                        tonic_health::server::HealthService::from_health_reporter(health.clone()),
                    ));
                tracing::info!(%addr, service = internal.name, "serving internal RPCs (mutual TLS)");
                Some(tokio::spawn(router.serve_with_incoming_shutdown(
                    TcpListenerStream::new(internal.listener),
                    drain.clone().cancelled_owned(),
                )))
            }
            None => None,
        };
        // Ends at the first listener that fails, or when both drained.
        let server = async move {
            match internal {
                Some(internal) => tokio::try_join!(joined(public), joined(internal)).map(|_| ()),
                None => joined(public).await,
            }
        };
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
                return result;
            }
        }
        health.set_service_status("", ServingStatus::NotServing).await;
        for name in &names {
            health.set_service_status(*name, ServingStatus::NotServing).await;
        }
        stopping.cancel();
        drain.cancel();
        tracing::info!(grace_ms = args.drain_grace_ms, "shutting down: draining in-flight requests");
        match tokio::time::timeout(args.drain_grace(), &mut server).await {
            Ok(result) => {
                result?;
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

/// A server task's outcome: its own error, or its panic.
async fn joined(task: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>) -> anyhow::Result<()> {
    Ok(task.await??)
}

/// The tower stack around every RPC, outermost first.
type Stack = ServiceBuilder<
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
