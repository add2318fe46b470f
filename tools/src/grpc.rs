//! The few gRPC helpers every tool shares: one way to dial the mesh ([`connect`]), status code
//! names ([`code_name`]) and refusal reasons ([`reason`]). Protobuf timestamps are
//! `service_runtime::bus::timestamp_ms`, as in the services.

use std::time::Duration;

use anyhow::Context;
use tonic::transport::Channel;

/// Longest a TCP connection to the mesh may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// HTTP/2 keep-alive pings on idle connections, so a long run's connections through the load
/// balancer stay open between bursts.
const KEEP_ALIVE: Duration = Duration::from_secs(30);
/// HTTP/2 flow-control windows: large responses (a 50,000-seat map) and many streams per
/// connection are not throttled by the client's defaults (64 KiB).
const CONNECTION_WINDOW: u32 = 4 * 1024 * 1024;
const STREAM_WINDOW: u32 = 1024 * 1024;

/// Opens `connections` (at least one) HTTP/2 connections to `target` (the load balancer or a
/// service); with `call_timeout`, every call on them is bounded by it.
pub async fn connect(
    target: &str,
    connections: usize,
    call_timeout: Option<Duration>,
) -> anyhow::Result<Vec<Channel>> {
    let mut endpoint = tonic::transport::Endpoint::from_shared(target.to_owned())
        .with_context(|| format!("{target} is no URL"))?
        .tcp_nodelay(true)
        .connect_timeout(CONNECT_TIMEOUT)
        .http2_keep_alive_interval(KEEP_ALIVE)
        .initial_connection_window_size(Some(CONNECTION_WINDOW))
        .initial_stream_window_size(Some(STREAM_WINDOW));
    if let Some(timeout) = call_timeout {
        endpoint = endpoint.timeout(timeout);
    }
    let mut channels = Vec::with_capacity(connections.max(1));
    for _ in 0..connections.max(1) {
        channels.push(
            endpoint
                .connect()
                .await
                .with_context(|| format!("cannot reach {target}: is the stack up (`stack up`)?"))?,
        );
    }
    Ok(channels)
}

/// One connection to `target`, every call bounded by `call_timeout`.
pub async fn connect_one(target: &str, call_timeout: Duration) -> anyhow::Result<Channel> {
    let mut channels = connect(target, 1, Some(call_timeout)).await?;
    channels.pop().with_context(|| format!("no connection to {target}"))
}

/// The `google.rpc.ErrorInfo` reason of a status (a refusal's machine-readable cause), or "".
pub fn reason(status: &tonic::Status) -> String {
    use tonic_types::StatusExt;
    status.get_error_details().error_info().map(|info| info.reason.clone()).unwrap_or_default()
}

/// The canonical name of a gRPC code, as in the gRPC spec.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}
