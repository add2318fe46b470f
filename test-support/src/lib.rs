//! What the services' integration tests share, kept out of `tools` so that editing the
//! simulator or the stack runner does not relink every service's tests (linkerd's
//! `linkerd-app-test` is the model):
//! - [`testenv`]: one test's private slice of the real Postgres, Redis and NATS
//!   ([`testenv::TestEnv`]), its event stream, and [`testenv::eventually`];
//! - [`certs`]: the mesh CA and one certificate per service, for tests that call or serve an
//!   internal (mutual TLS) listener; the local stack makes its certificates with it too;
//! - [`fakes`]: upstream services faked for one service's tests ([`fakes::FakeInventory`]);
//! - [`order`]: FIFO inversions of joins as a client saw them;
//! - `redis` (feature `redis`): a test's Redis keys deleted, as a Redis restart loses them.
//!
//! Nothing here installs or configures the host: the backing services must already answer
//! (`cargo run --bin stack -- test` makes sure they do before it runs the tests).
#![forbid(unsafe_code)]

pub mod certs;
pub mod fakes;
pub mod order;
#[cfg(feature = "redis")]
pub mod redis;
pub mod testenv;
