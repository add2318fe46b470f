//! A gRPC server around a gate service, for the lifecycle tests: each `Gate/Wait` call
//! reports that it entered, then waits until the test opens the gate for it.
#![allow(dead_code)]

use std::{convert::Infallible, future::Future, net::SocketAddr, pin::Pin, sync::Arc, task::Poll};

use service_runtime::{GrpcServer, config::ServerArgs, lifecycle::Background};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tonic::{Request, Response, Status, body::Body, server::NamedService, transport::Channel};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// The test service: `/test.v1.Gate/Wait` takes and returns an empty message.
#[derive(Clone)]
pub struct Gate {
    entered: mpsc::UnboundedSender<()>,
    open: Arc<Semaphore>,
}

impl NamedService for Gate {
    const NAME: &'static str = "test.v1.Gate";
}

struct Wait(Gate);

impl tonic::server::UnaryService<()> for Wait {
    type Response = ();
    type Future = BoxFuture<Result<Response<()>, Status>>;

    fn call(&mut self, _request: Request<()>) -> Self::Future {
        let gate = self.0.clone();
        Box::pin(async move {
            let _ = gate.entered.send(());
            match gate.open.acquire().await {
                Ok(permit) => permit.forget(),
                Err(_) => return Err(Status::aborted("gate closed")),
            }
            Ok(Response::new(()))
        })
    }
}

impl tower::Service<http::Request<Body>> for Gate {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut std::task::Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let gate = self.clone();
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::<(), ()>::default());
            Ok(grpc.unary(Wait(gate), request).await)
        })
    }
}

/// A served gate and the handles a test drives it with.
pub struct Served {
    pub addr: SocketAddr,
    /// Resolves the shutdown future given to `serve`.
    pub shutdown: Option<oneshot::Sender<()>>,
    /// `serve`'s outcome.
    pub serving: tokio::task::JoinHandle<anyhow::Result<()>>,
    pub background: Background,
    /// One message per call that reached the handler.
    pub entered: mpsc::UnboundedReceiver<()>,
    /// Each permit added lets one waiting call finish.
    pub open: Arc<Semaphore>,
}

impl Served {
    /// Starts `server` (bound already) serving the gate until [`Self::stop`].
    pub fn start(server: GrpcServer) -> Self {
        let (shutdown, stop) = oneshot::channel::<()>();
        let mut served = Self::start_with(server, async move {
            let _ = stop.await;
        });
        served.shutdown = Some(shutdown);
        served
    }

    /// Starts `server` serving the gate until `shutdown` resolves.
    pub fn start_with(server: GrpcServer, shutdown: impl Future<Output = ()> + Send + 'static) -> Self {
        let addr = server.local_addr();
        let background = server.background();
        let (entered_tx, entered) = mpsc::unbounded_channel();
        let open = Arc::new(Semaphore::new(0));
        let gate = Gate { entered: entered_tx, open: Arc::clone(&open) };
        let serving = tokio::spawn(server.serve(gate, shutdown));
        Self { addr, shutdown: None, serving, background, entered, open }
    }

    /// Binds `args` and starts serving.
    pub async fn bind(args: ServerArgs) -> Self {
        let server = GrpcServer::bind(&args).await.expect("bind");
        Self::start(server)
    }

    /// Resolves the shutdown future.
    pub fn stop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }

    /// A new connection to the server.
    pub async fn channel(&self) -> Channel {
        tonic::transport::Endpoint::from_shared(format!("http://{}", self.addr))
            .expect("endpoint")
            .connect()
            .await
            .expect("connect")
    }

    /// The end of a drain the test started: closes the health `Watch` (it never ends by
    /// itself), lets the one waiting call finish, and checks that it completes and that
    /// `serve` then returns cleanly.
    pub async fn finish_drain<H>(self, health: H, in_flight: tokio::task::JoinHandle<Result<(), Status>>) {
        drop(health);
        self.open.add_permits(1);
        in_flight.await.expect("join").expect("the in-flight request completes during the drain");
        tokio::time::timeout(PATIENCE, self.serving)
            .await
            .expect("serve returns")
            .expect("join")
            .expect("clean stop");
    }

    /// Waits until `n` more calls reached the handler.
    pub async fn wait_entered(&mut self, n: usize) {
        for _ in 0..n {
            self.entered.recv().await.expect("gate alive");
        }
    }
}

/// Settings for a test server: loopback, test tokens, the given limits.
pub fn args(max_in_flight: usize, drain_grace_ms: u64) -> ServerArgs {
    ServerArgs { max_in_flight, drain_grace_ms, ..ServerArgs::loopback() }
}

/// Calls `Gate/Wait` on `channel`.
pub async fn wait_call(channel: Channel) -> Result<(), Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.map_err(|error| Status::unavailable(error.to_string()))?;
    grpc.unary(
        Request::new(()),
        http::uri::PathAndQuery::from_static("/test.v1.Gate/Wait"),
        tonic_prost::ProstCodec::<(), ()>::default(),
    )
    .await
    .map(|_| ())
}

/// The overall health (`""`) as a stream of statuses, from a Watch opened now.
pub async fn watch_health(channel: Channel) -> tonic::Streaming<tonic_health::pb::HealthCheckResponse> {
    HealthClient::new(channel)
        .watch(HealthCheckRequest { service: String::new() })
        .await
        .expect("health watch")
        .into_inner()
}

/// The next status a health Watch reports.
pub async fn next_status(
    watch: &mut tonic::Streaming<tonic_health::pb::HealthCheckResponse>,
) -> Option<ServingStatus> {
    match watch.message().await {
        Ok(Some(response)) => Some(response.status()),
        _ => None,
    }
}

/// A generous bound on how long a step that should happen at once may take: a test that
/// hits it fails instead of hanging (it is a failure detector, not a speed claim).
pub const PATIENCE: std::time::Duration = std::time::Duration::from_secs(20);
