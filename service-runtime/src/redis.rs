//! The Redis client every service that uses Redis builds, with its timeouts set once.

use std::time::Duration;

use fred::{
    clients::Pool,
    prelude::{Builder, Config, ReconnectPolicy},
};

/// Longest one Redis command (a script included) may wait for its reply. Past it the command
/// fails with a timeout and the RPC answers an error, instead of every caller waiting on a
/// Redis that stopped answering. Scripts of the mesh run in milliseconds.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest opening one connection may take (TCP, TLS, AUTH, SELECT).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Reconnects at once, then after 100 ms doubling to 2 s, forever: a Redis that comes back is
/// found again without a restart.
fn reconnect_policy() -> ReconnectPolicy {
    ReconnectPolicy::new_exponential(0, 100, 2_000, 2)
}

/// A pool of `size` connections to `url` with [`COMMAND_TIMEOUT`], [`CONNECT_TIMEOUT`] and
/// the reconnect policy. Not connected yet: call `init()`.
pub fn pool(url: &str, size: usize) -> Result<Pool, fred::error::Error> {
    Builder::from_config(Config::from_url(url)?)
        .set_policy(reconnect_policy())
        .with_connection_config(|connection| {
            connection.connection_timeout = CONNECT_TIMEOUT;
        })
        .with_performance_config(|performance| {
            performance.default_command_timeout = COMMAND_TIMEOUT;
        })
        .build_pool(size)
}
