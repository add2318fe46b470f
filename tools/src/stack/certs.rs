//! The local stack's service certificates, made in `<state>/certs` on first start: the same
//! code the services' tests use, which lives in `test_support::certs` so that those tests do
//! not link `tools`.

pub use test_support::certs::*;
