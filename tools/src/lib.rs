//! Tools around the mesh:
//! - [`stack`]: the local stack (backing services, the five services, HAProxy) as processes;
//! - [`chaos`]: the flash sale on a private stack while services and stores fail on a
//!   schedule; [`faults`] holds what a fault is and what it recorded;
//! - [`identity`]: the stack's token signing key and JWKS, and the tokens the tools send;
//! - [`flashsale`]: the flash-sale simulator through the load balancer, verified against
//!   ground truth; [`report`] writes its JSON and HTML reports;
//! - [`loadgen`]: one RPC under load, ghz-style, with a `grpc.health.v1` baseline measured in
//!   the same run; [`bench`] runs the standard set and rewrites the README's table;
//! - [`reconciliation`]: payment's `Reconcile`, the last check of every verification;
//! - [`snapshot`]: digests of Redis and Postgres, to prove a request changed nothing;
//! - shared by the above: [`grpc`] (dialing, timestamps, code names), [`catalogue`] (a venue
//!   and an event), [`procfs`] (memory and CPU from `/proc`).
//!
//! The services' tests do not link this crate: what they share is in `test-support`.
//! Modules depend on each other in one direction only: the shared leaves first, then
//! `reconciliation`, `flashsale`, `report`, `stack`, `chaos` and `bench`.
#![forbid(unsafe_code)]

pub mod bench;
pub mod catalogue;
pub mod chaos;
pub mod faults;
pub mod flashsale;
pub mod grpc;
pub mod identity;
pub mod loadgen;
pub mod procfs;
pub mod reconciliation;
pub mod report;
pub mod snapshot;
pub mod stack;
