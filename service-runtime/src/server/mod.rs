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
//! Accept errors (module `accept`): one that concerns a single connection (reset, aborted)
//! is skipped; running out of descriptors or memory pauses accepting
//! ([`RetryPause`](crate::lifecycle::RetryPause)) and retries; any other error means the
//! listener is broken, and the server stops and `serve` returns the error, so the process
//! exits and its orchestrator restarts it instead of a replica that accepts nothing.
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
//!
//! Its parts: this module (binding, serving, the drain), `accept` (which accept errors stop
//! a listener), `stack` (the tower stack and its RPC telemetry) and `signal` (SIGTERM and
//! SIGINT).

mod accept;
mod signal;
mod stack;

use std::{convert::Infallible, future::Future, net::SocketAddr, sync::Arc};

use tokio::net::TcpListener;
use tokio_util::sync::{CancellationToken, DropGuard};
use tonic::{body::Body, server::NamedService, service::Routes, transport::Server};
use tonic_health::{ServingStatus, server::HealthReporter};
use tower::Service;

use self::{
    accept::{AcceptFailure, accepted},
    stack::stack,
};
pub use self::{
    signal::shutdown_signal,
    stack::{KnownMethods, RpcMethod, RpcTelemetry, RpcTelemetryLayer, UNKNOWN, grpc_code_label},
};
use crate::{
    auth::Authenticator, config::ServerArgs, health::HealthPort, lifecycle::Background, mtls::MeshTls,
};

/// gRPC health, served on every listener next to a service's own RPCs.
const HEALTH: &str = "grpc.health.v1.Health";
/// Server reflection (v1), served on the public listener.
const REFLECTION_V1: &str = "grpc.reflection.v1.ServerReflection";
/// Server reflection (v1alpha, for older clients), served on the public listener.
const REFLECTION_V1ALPHA: &str = "grpc.reflection.v1alpha.ServerReflection";

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
        // The public contract with every import, so reflection clients resolve each file; the
        // internal RPCs are left out, as this listener does not serve them.
        let reflection_v1 = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(ticketing_proto::PUBLIC_FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()?;
        let reflection_v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(ticketing_proto::PUBLIC_FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1alpha()?;

        let router = Server::builder()
            // Deadline for unary calls when the client sets none or a longer one; a stream's
            // deadline covers only its start.
            .timeout(args.request_timeout())
            .tcp_nodelay(true)
            .layer(stack(
                args.max_in_flight,
                Arc::clone(&auth),
                Arc::new(KnownMethods::of_services(&[S::NAME, HEALTH, REFLECTION_V1, REFLECTION_V1ALPHA])),
            ))
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
                    .layer(stack(
                        args.max_in_flight,
                        Arc::clone(&auth),
                        Arc::new(KnownMethods::of_services(&[internal.name, HEALTH])),
                    ))
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
    /// A listener's accept loop failed ([`accept::accepted`]).
    ListenerFailed,
    /// A server task ended (or panicked) by itself.
    ServerEnded(anyhow::Result<()>),
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
