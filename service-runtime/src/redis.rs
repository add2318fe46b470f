//! The Redis client every service that uses Redis builds, with its timeouts set once.

use std::time::Duration;

use fred::{
    clients::Pool,
    prelude::{Builder, Config, ReconnectPolicy},
};

/// Longest opening one connection may take (TCP, TLS, AUTH, SELECT).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Reconnects at once, then after 100 ms doubling to 2 s, forever: a Redis that comes back is
/// found again without a restart.
fn reconnect_policy() -> ReconnectPolicy {
    ReconnectPolicy::new_exponential(0, 100, 2_000, 2)
}

/// A pool of `size` connections to `url` with [`CONNECT_TIMEOUT`] and the reconnect policy,
/// whose commands (scripts included) fail after `command_timeout` without a reply instead of
/// every caller waiting on a Redis that stopped answering. Services pass their request
/// timeout (`REQUEST_TIMEOUT_MS`, 5 s by default): a command never outlives the RPC that
/// needs it, and background loops get the same bound. Not connected yet: call `init()`.
pub fn pool(url: &str, size: usize, command_timeout: Duration) -> Result<Pool, fred::error::Error> {
    Builder::from_config(Config::from_url(url)?)
        .set_policy(reconnect_policy())
        .with_connection_config(|connection| {
            connection.connection_timeout = CONNECT_TIMEOUT;
        })
        .with_performance_config(|performance| {
            performance.default_command_timeout = command_timeout;
        })
        .build_pool(size)
}
