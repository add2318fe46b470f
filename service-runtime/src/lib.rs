//! What every service of the mesh starts with, so each `main.rs` stays a few lines long.
//!
//! - [`args`]: the Redis, NATS and Postgres flag groups, each with its one validation.
//! - [`catalogue`]: the event catalogue client: inventory's `GetEvent`, single-flight and cached.
//! - [`auth`]: bearer-token (JWT) verification, the caller's identity and roles.
//! - [`config`]: the server flags every service shares, and the exit code for bad configuration.
//! - [`telemetry`]: structured logs, OTLP traces and the Prometheus `/metrics` listener, plus
//!   W3C trace-context propagation through gRPC metadata and NATS headers.
//! - [`server`]: the gRPC server with its tower stack, `grpc.health.v1`, reflection and
//!   graceful shutdown.
//! - [`bus`]: the NATS JetStream event bus (one stream per prefix, protobuf envelopes).
//! - [`health`]: the plain HTTP/1 health port (`/livez`, `/readyz`) for load balancer checks
//!   and Kubernetes probes.
//! - [`db`]: a Postgres connection confined to the service's own schema.
//! - [`lua`]: Redis Lua scripts, loaded once and called by SHA with the NOSCRIPT fallback.
//! - [`lifecycle`]: the shutdown signal, the tracked background tasks and the retry pause.
//! - [`mtls`]: mutual TLS between services: internal listener and client settings, and the
//!   calling service's identity from its certificate.
//! - [`redis`]: the Redis connection pool with its command and connect timeouts.
//! - [`size_limit`]: the request size limit, answered with `RESOURCE_EXHAUSTED`.
//! - [`status`]: gRPC errors that carry a machine-readable reason, and input validation.
//! - [`global_allocator!`]: the one line a service's `main.rs` sets its allocator with.
#![forbid(unsafe_code)]

pub mod args;
pub mod auth;
pub mod bus;
pub mod catalogue;
pub mod config;
pub mod db;
pub mod health;
pub mod lifecycle;
pub mod lua;
pub mod mtls;
pub mod redis;
pub mod server;
pub mod size_limit;
pub mod status;
pub mod telemetry;

/// The boxed future of the tower middleware layers (token check, size limit, telemetry).
pub(crate) type BoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;

pub use server::{GrpcServer, shutdown_signal};

pub use tokio_util::sync::CancellationToken;

/// Sets mimalloc as the binary's `#[global_allocator]`: one line at the top of each service's
/// `main.rs`, `service_runtime::global_allocator!();`. A macro and not a static in this
/// library, because a library that sets the global allocator sets it for every binary that
/// links it (`stream-setup`, `admission-audit`, the tools, the tests); only the services ask.
///
/// Why mimalloc: under a burst of Joins glibc's malloc took about a quarter of admission's CPU
/// (`_int_malloc`, `unlink_chunk`, `malloc_consolidate`, `_int_free` in perf): each RPC
/// allocates and frees many small buffers across threads, which mimalloc's per-thread free
/// lists handle without the arena locks and consolidation.
#[macro_export]
macro_rules! global_allocator {
    () => {
        #[global_allocator]
        static ALLOCATOR: $crate::mimalloc::MiMalloc = $crate::mimalloc::MiMalloc;
    };
}

/// For [`global_allocator!`], so the services need no dependency of their own on mimalloc.
#[doc(hidden)]
pub use mimalloc;
