//! The plain HTTP/1 health port (`HEALTH_ADDR`): what the load balancer's backend checks and
//! Kubernetes' probes ask, outside the gRPC tower stack.
//!
//! - `GET /livez`: `200` while the process answers at all. Liveness: it never goes through
//!   load shedding or the concurrency limit, so a replica that sheds a burst is not restarted
//!   for it.
//! - `GET /readyz`: `200` while the server's overall `grpc.health.v1` status (the empty
//!   service name) is SERVING, `503` before [`crate::GrpcServer::serve`] and from the moment
//!   shutdown begins. HAProxy's backend checks and Kubernetes' readiness probe use it.
//!
//! Why a port of its own: HAProxy's HTTP checks cannot send a gRPC request (its body is
//! binary, with NUL bytes), and a probe through the gRPC port would be shed with the load it
//! is meant to survive. The answers come from the same `HealthReporter` as the gRPC health
//! service, so both always agree.

use std::{convert::Infallible, net::SocketAddr, sync::Arc, time::Duration};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode, body::Incoming};
use tokio::{net::TcpListener, sync::Semaphore};
use tonic_health::{
    pb::{HealthCheckRequest, health_check_response::ServingStatus, health_server::Health},
    server::{HealthReporter, HealthService},
};

/// Connections the health port serves at once: probes and checks come from a few load
/// balancers and one kubelet, one connection each at a time; more is a misbehaving client,
/// refused by closing rather than queued.
const MAX_HEALTH_CONNECTIONS: usize = 64;
/// Longest a health connection may stay open: a check is one request of a few bytes.
const HEALTH_CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);

/// A bound, not yet serving, health port.
pub struct HealthPort {
    listener: TcpListener,
    local_addr: SocketAddr,
}

impl HealthPort {
    /// Binds `addr` (port 0 allowed).
    pub async fn bind(addr: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let local_addr = listener.local_addr()?;
        Ok(Self { listener, local_addr })
    }

    /// The bound address, with the real port when port 0 was asked for.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves `/livez` and `/readyz` from `health` until the process ends: it must answer
    /// (503) through the drain, when the load balancer still asks.
    pub fn spawn(self, health: HealthReporter) -> tokio::task::JoinHandle<()> {
        let service = Arc::new(HealthService::from_health_reporter(health));
        let slots = Arc::new(Semaphore::new(MAX_HEALTH_CONNECTIONS));
        let addr = self.local_addr;
        tracing::info!(%addr, "serving /livez and /readyz");
        tokio::spawn(async move {
            loop {
                let stream = match self.listener.accept().await {
                    Ok((stream, _)) => stream,
                    Err(error) => {
                        // Out of file descriptors, typically: the next accept may work.
                        tracing::warn!(%error, "health port: accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                    continue;
                };
                let service = Arc::clone(&service);
                tokio::spawn(async move {
                    let answer = hyper::service::service_fn(move |request| {
                        let service = Arc::clone(&service);
                        async move { Ok::<_, Infallible>(answer(&service, &request).await) }
                    });
                    let connection = hyper::server::conn::http1::Builder::new()
                        .keep_alive(false)
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), answer);
                    let _ = tokio::time::timeout(HEALTH_CONNECTION_TIMEOUT, connection).await;
                    drop(slot);
                });
            }
        })
    }
}

async fn answer(service: &HealthService, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, text: &'static str| {
        let mut response = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
        *response.status_mut() = status;
        response
    };
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return reply(StatusCode::METHOD_NOT_ALLOWED, "GET /livez or /readyz\n");
    }
    match request.uri().path() {
        "/livez" => reply(StatusCode::OK, "alive\n"),
        "/readyz" => {
            let check = tonic::Request::new(HealthCheckRequest { service: String::new() });
            let serving = service
                .check(check)
                .await
                .is_ok_and(|response| response.get_ref().status() == ServingStatus::Serving);
            if serving {
                reply(StatusCode::OK, "SERVING\n")
            } else {
                reply(StatusCode::SERVICE_UNAVAILABLE, "NOT_SERVING\n")
            }
        }
        _ => reply(StatusCode::NOT_FOUND, "GET /livez or /readyz\n"),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use tonic_health::ServingStatus;

    /// One HTTP/1.0 request as HAProxy's `option httpchk` sends it; the status line back.
    async fn get(addr: SocketAddr, path: &str) -> String {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes()).await.unwrap();
        let mut answer = String::new();
        tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut answer))
            .await
            .expect("the health port answers and closes")
            .unwrap();
        answer.lines().next().unwrap_or_default().to_owned()
    }

    #[tokio::test]
    async fn readyz_follows_the_grpc_health_and_livez_always_answers() {
        let health = HealthReporter::new();
        health.set_service_status("", ServingStatus::NotServing).await;
        let port = HealthPort::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await.unwrap();
        let addr = port.local_addr();
        port.spawn(health.clone());

        assert_eq!(get(addr, "/livez").await, "HTTP/1.0 200 OK");
        assert_eq!(get(addr, "/readyz").await, "HTTP/1.0 503 Service Unavailable");
        health.set_service_status("", ServingStatus::Serving).await;
        assert_eq!(get(addr, "/readyz").await, "HTTP/1.0 200 OK");
        health.set_service_status("", ServingStatus::NotServing).await;
        assert_eq!(get(addr, "/readyz").await, "HTTP/1.0 503 Service Unavailable");
        assert_eq!(get(addr, "/metrics").await, "HTTP/1.0 404 Not Found");
    }
}
