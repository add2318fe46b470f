//! The gRPC server every service runs: one tower stack, health, reflection, graceful drain.
//!
//! Lifecycle: [`GrpcServer::bind`] binds the listener (port 0 allowed, see
//! [`GrpcServer::local_addr`]); background loops are spawned with [`GrpcServer::spawn`]
//! (tracked, see [`crate::lifecycle`]); [`GrpcServer::serve`] reports SERVING and serves until
//! the shutdown future resolves or a listener fails; then health turns NOT_SERVING,
//! [`GrpcServer::stopping`] is cancelled so long-lived streams and background loops end, the
//! listener stops accepting, and in-flight requests and tracked tasks share the drain grace
//! period to finish. Whether the drain finished is logged. The same happens on every exit
//! path: a failed listener (`serve` then returns its error), an error while starting, or a
//! server dropped without serving (its `stopping` is cancelled on drop).
//!
//! Accept errors: one that concerns a single connection (reset, aborted) is skipped; running
//! out of descriptors or memory pauses accepting ([`RetryPause`]) and retries; any other error
//! means the listener is broken, and the server stops and `serve` returns the error, so the
//! process exits and its orchestrator restarts it instead of a replica that accepts nothing.
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
    sync::Arc,
    task::{Context, Poll},
    time::Instant,
};

use futures::Stream;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::{CancellationToken, DropGuard};
use tonic::{body::Body, server::NamedService, service::Routes, transport::Server};
use tonic_health::{ServingStatus, server::HealthReporter};
use tower::{Layer, Service, ServiceBuilder};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::{
    auth::{AuthLayer, Authenticator},
    config::ServerArgs,
    health::HealthPort,
    lifecycle::{Background, RetryPause},
    mtls::MeshTls,
    size_limit::RequestSizeLimitLayer,
};

/// A bound, not yet serving, gRPC server.
pub struct GrpcServer {
    listener: TcpListener,
    local_addr: SocketAddr,
    args: ServerArgs,
    health: HealthReporter,
    /// The shutdown signal and the tracked background tasks.
    background: Background,
    /// Cancels `stopping` when the server is dropped without serving (a failed start).
    stop_on_drop: DropGuard,
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
        let listener = TcpListener::bind(args.grpc_addr).await?;
        Self::with_listener(args, listener).await
    }

    /// [`Self::bind`] on a listener bound elsewhere (its address wins over `GRPC_ADDR`): for
    /// tests that need a handle on the socket, e.g. to break it.
    pub async fn with_listener(args: &ServerArgs, listener: TcpListener) -> std::io::Result<Self> {
        let auth = Authenticator::load(&args.auth).await.map_err(std::io::Error::other)?;
        let local_addr = listener.local_addr()?;
        let health = HealthReporter::new();
        health.set_service_status("", ServingStatus::NotServing).await;
        let background = Background::new();
        let stop_on_drop = background.stopping().drop_guard();
        let health_port = match args.health_addr {
            Some(addr) => Some(HealthPort::bind(addr).await?),
            None => None,
        };
        Ok(Self {
            listener,
            local_addr,
            args: args.clone(),
            health,
            background,
            stop_on_drop,
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
        self.background.stopping()
    }

    /// The shutdown signal and task set, for parts that spawn their own tracked tasks.
    pub fn background(&self) -> Background {
        self.background.clone()
    }

    /// Runs a background loop next to the server, tracked: it should end on
    /// [`Self::stopping`], and [`Self::serve`] waits for it (within the drain grace) on every
    /// exit path.
    pub fn spawn<F>(&self, name: &'static str, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.background.spawn(name, task);
    }

    /// Serves `service` (plus health and reflection), and the internal listener if bound,
    /// until `shutdown` resolves or a listener fails, then drains both and the tracked tasks.
    /// Returns the failure when a listener stopped on its own.
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
        let Self {
            listener,
            local_addr,
            args,
            health,
            background,
            stop_on_drop,
            auth,
            internal,
            health_port,
        } = self;
        // From here on, any return (an error below included) cancels `stopping`.
        let _stop_on_drop = stop_on_drop;
        background.spawn("jwks-refresh", auth.refresh_loop(background.stopping()));
        if let Some(port) = health_port {
            // Not a tracked task: it answers (503) through the drain and until the process ends.
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
        let accept_failure = Arc::new(AcceptFailure::default());
        let public = AbortOnDrop(tokio::spawn(router.serve_with_incoming_shutdown(
            accepted(listener, local_addr, Arc::clone(&accept_failure)),
            drain.clone().cancelled_owned(),
        )));
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
                Some(AbortOnDrop(tokio::spawn(router.serve_with_incoming_shutdown(
                    accepted(internal.listener, addr, Arc::clone(&accept_failure)),
                    drain.clone().cancelled_owned(),
                ))))
            }
            None => None,
        };
        // Ends at the first listener that stops (it fails, or its accept loop ends), or when
        // both drained. Dropping it aborts both server tasks.
        let server = async move {
            match internal {
                Some(internal) => {
                    tokio::select! {
                        result = joined(public) => result,
                        result = joined(internal) => result,
                    }
                }
                None => joined(public).await,
            }
        };
        health.set_service_status("", ServingStatus::Serving).await;
        for name in &names {
            health.set_service_status(*name, ServingStatus::Serving).await;
        }
        tracing::info!(%local_addr, services = ?names, "serving");

        let mut server = std::pin::pin!(server);
        let stop = tokio::select! {
            () = shutdown => Stop::Asked,
            () = accept_failure.failed.cancelled() => Stop::ListenerFailed,
            result = &mut server => Stop::ServerEnded(result),
        };
        if !matches!(stop, Stop::Asked) {
            tracing::error!("a listener stopped on its own; shutting down");
        }
        health.set_service_status("", ServingStatus::NotServing).await;
        for name in &names {
            health.set_service_status(*name, ServingStatus::NotServing).await;
        }
        background.stopping().cancel();
        drain.cancel();
        let deadline = tokio::time::Instant::now() + args.drain_grace();
        tracing::info!(
            grace_ms = args.drain_grace_ms,
            "shutting down: draining in-flight requests and background tasks"
        );
        let drained = match &stop {
            // The other listener, if any, was aborted with `server`: the process is failing.
            Stop::ServerEnded(_) => true,
            Stop::Asked | Stop::ListenerFailed => {
                match tokio::time::timeout_at(deadline, &mut server).await {
                    Ok(Ok(())) => true,
                    Ok(Err(error)) => {
                        tracing::error!(error = %format!("{error:#}"), "server failed while draining");
                        true
                    }
                    Err(_) => false,
                }
            }
        };
        let tasks_ended = background.stop(deadline).await;
        if drained && tasks_ended {
            tracing::info!("drain finished; stopped cleanly");
        } else {
            tracing::warn!(
                grace_ms = args.drain_grace_ms,
                requests_drained = drained,
                tasks_running = background.running(),
                "drain grace elapsed with work still in flight; stopping anyway"
            );
        }
        match stop {
            Stop::Asked => Ok(()),
            Stop::ListenerFailed => Err(anyhow::anyhow!("{}", accept_failure.reason())),
            Stop::ServerEnded(result) => {
                result?;
                match accept_failure.failed.is_cancelled() {
                    true => Err(anyhow::anyhow!("{}", accept_failure.reason())),
                    false => Err(anyhow::anyhow!("the gRPC server stopped without being asked to")),
                }
            }
        }
    }
}

/// Why [`GrpcServer::serve`] began to stop.
enum Stop {
    /// The shutdown future resolved.
    Asked,
    /// A listener's accept loop failed ([`accepted`]).
    ListenerFailed,
    /// A server task ended (or panicked) by itself.
    ServerEnded(anyhow::Result<()>),
}

/// The first fatal accept error of a server's listeners.
#[derive(Default)]
struct AcceptFailure {
    reason: std::sync::OnceLock<String>,
    /// Cancelled once `reason` is set.
    failed: CancellationToken,
}

impl AcceptFailure {
    fn record(&self, reason: String) {
        let _ = self.reason.set(reason);
        self.failed.cancel();
    }

    fn reason(&self) -> &str {
        self.reason.get().map_or("a listener failed", String::as_str)
    }
}

/// Aborts a server task when dropped, so a server abandoned after the grace stops serving.
struct AbortOnDrop(tokio::task::JoinHandle<Result<(), tonic::transport::Error>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A server task's outcome: its own error, or its panic.
async fn joined(mut task: AbortOnDrop) -> anyhow::Result<()> {
    Ok((&mut task.0).await??)
}

/// Pauses after running out of descriptors or memory: 10 ms doubling to 1 s.
const ACCEPT_PAUSE: RetryPause =
    RetryPause::new(std::time::Duration::from_millis(10), std::time::Duration::from_secs(1));

/// The connections `listener` accepts. Per-connection errors are skipped, a shortage of
/// descriptors or memory pauses ([`ACCEPT_PAUSE`]), and any other error ends the stream
/// after recording it in `failure`: the listener is broken, and retrying would spin (tonic
/// itself skips every accept error and polls again).
fn accepted(
    listener: TcpListener,
    addr: SocketAddr,
    failure: Arc<AcceptFailure>,
) -> impl Stream<Item = std::io::Result<TcpStream>> + Send + 'static {
    futures::stream::unfold((listener, ACCEPT_PAUSE), move |(listener, mut pause)| {
        let failure = Arc::clone(&failure);
        async move {
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => {
                        pause.reset();
                        // Small replies go out at once rather than waiting for Nagle.
                        let _ = stream.set_nodelay(true);
                        return Some((Ok(stream), (listener, pause)));
                    }
                    Err(error) => match AcceptError::classify(&error) {
                        AcceptError::Connection => continue,
                        AcceptError::Shortage => {
                            let pause = pause.next_pause();
                            tracing::warn!(%addr, %error, pause_ms = pause.as_millis() as u64, "cannot accept connections; pausing");
                            tokio::time::sleep(pause).await;
                        }
                        AcceptError::Fatal => {
                            tracing::error!(%addr, %error, "the listener failed; the server stops");
                            failure.record(format!("accepting connections on {addr} failed: {error}"));
                            return None;
                        }
                    },
                }
            }
        }
    })
}

/// What an accept error means for the listener.
enum AcceptError {
    /// One connection failed before it was accepted; the listener is fine.
    Connection,
    /// The process or system is short of descriptors or memory; it may pass.
    Shortage,
    /// The listener itself is broken.
    Fatal,
}

impl AcceptError {
    fn classify(error: &std::io::Error) -> Self {
        use std::io::ErrorKind;
        /// Linux errno values of the shortages: ENOMEM, ENFILE, EMFILE, ENOBUFS.
        const SHORTAGES: [i32; 4] = [12, 23, 24, 105];
        match error.kind() {
            ErrorKind::ConnectionAborted
            | ErrorKind::ConnectionReset
            | ErrorKind::ConnectionRefused
            | ErrorKind::BrokenPipe
            | ErrorKind::Interrupted
            | ErrorKind::WouldBlock
            | ErrorKind::TimedOut => Self::Connection,
            ErrorKind::OutOfMemory => Self::Shortage,
            _ if error.raw_os_error().is_some_and(|code| SHORTAGES.contains(&code)) => Self::Shortage,
            _ => Self::Fatal,
        }
    }
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

use crate::BoxFuture;

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
