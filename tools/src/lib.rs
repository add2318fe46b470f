//! Tools around the mesh:
//! - [`stack`]: the local stack (backing services, the five services, HAProxy) as processes;
//! - [`sale`]: a small flash sale through the load balancer, verified against ground truth;
//! - [`testenv`]: the isolated backing-service environment every integration test uses.
#![forbid(unsafe_code)]

pub mod sale;
pub mod stack;
pub mod testenv;
