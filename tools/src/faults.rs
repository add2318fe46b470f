//! What a chaos run does to the mesh and what it records, as plain data: the sale carries it
//! (its users expect holds lost with Redis, its report shows each fault) without knowing how
//! faults are made, which is [`crate::chaos`]'s job.

use std::{
    sync::{Arc, Mutex},
    time::Instant,
};

use futures::future::BoxFuture;
use serde::Serialize;
use tonic::transport::Channel;

/// One fault of the schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// `kill -9` of a service; the stack's supervisor starts it again.
    Kill(&'static str),
    /// Redis killed and started again empty: it keeps nothing.
    Redis,
    /// NATS killed and started again on its JetStream store, as a cluster node keeps its disk.
    Nats,
    /// Postgres stopped immediately (a crash, WAL replay at the start) and started again.
    Postgres,
}

impl Fault {
    /// Each service in turn, with the stores between them so every kind of fault lands
    /// somewhere in the middle of the sale.
    pub const EVERY: [Fault; 8] = [
        Fault::Kill("admission"),
        Fault::Redis,
        Fault::Kill("seat-lock"),
        Fault::Nats,
        Fault::Kill("inventory"),
        Fault::Postgres,
        Fault::Kill("payment"),
        Fault::Kill("notifier"),
    ];

    /// What is done.
    pub fn kind(self) -> &'static str {
        match self {
            Fault::Kill(_) => "kill -9",
            Fault::Redis => "restart, keeping nothing",
            Fault::Nats => "restart, keeping its store",
            Fault::Postgres => "immediate stop and start",
        }
    }

    /// To what.
    pub fn target(self) -> &'static str {
        match self {
            Fault::Kill(service) => service,
            Fault::Redis => "redis",
            Fault::Nats => "nats",
            Fault::Postgres => "postgres",
        }
    }

    /// The fault aimed at `target` (a service or `redis`, `nats`, `postgres`).
    pub fn parse(target: &str) -> Option<Fault> {
        Fault::EVERY.into_iter().find(|fault| fault.target() == target)
    }
}

/// When and how faults happen.
#[derive(Debug, Clone, Serialize)]
pub struct ChaosConfig {
    /// From the opening to the first fault, and from each recovery to the next fault.
    pub interval_secs: f64,
    /// How long a store stays down before it is started again.
    pub outage_secs: f64,
    /// The longest wait for the mesh to recover from one fault before the next one.
    pub recovery_timeout_secs: f64,
    /// In order; each target at most once is the usual schedule.
    #[serde(serialize_with = "targets")]
    pub faults: Vec<Fault>,
}

fn targets<S: serde::Serializer>(faults: &[Fault], serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_seq(faults.iter().map(|fault| fault.target()))
}

impl Default for ChaosConfig {
    fn default() -> Self {
        Self {
            interval_secs: 5.0,
            outage_secs: 1.0,
            recovery_timeout_secs: 90.0,
            faults: Fault::EVERY.to_vec(),
        }
    }
}

/// One fault as it happened; instants in seconds since the sale opened.
#[derive(Debug, Clone, Serialize)]
pub struct FaultRecord {
    pub kind: &'static str,
    pub target: &'static str,
    pub started_secs: f64,
    /// When the killed store answered again (stores only).
    pub back_secs: Option<f64>,
    /// When the mesh had recovered: the killed service SERVING again; for Redis or Postgres,
    /// every service SERVING and a call through the load balancer that needs the store
    /// answered; for NATS, every service SERVING and every consumer of the event stream back
    /// (as many as before) and past what the stream held when NATS came back (or with nothing
    /// left to deliver).
    pub recovered_secs: Option<f64>,
    /// `recovered_secs - started_secs`.
    pub recovery_secs: Option<f64>,
    /// What else happened meanwhile (a service that died by itself), or why it did not recover.
    pub notes: Vec<String>,
}

/// A service's death and its way back; instants in seconds since the sale opened.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceRestart {
    pub service: &'static str,
    /// The schedule killed it; otherwise it died by itself.
    pub killed_by_schedule: bool,
    /// `kill -9 by the schedule`, or `died by itself (<exit>)`.
    pub cause: String,
    pub died_secs: f64,
    /// When the new process answered SERVING.
    pub serving_secs: Option<f64>,
    /// From the kill (or the death) to SERVING.
    pub recovery_secs: Option<f64>,
    /// The end of its log, when it died by itself.
    pub log_tail: Vec<String>,
}

/// The sale a disruption acts on: the load balancer `lb` it probes recovery through, the
/// sale's event, when it opened, and the log each fault is recorded in.
pub struct Target {
    pub lb: Channel,
    pub event_id: String,
    pub opened_at: Instant,
    pub log: Arc<Mutex<Vec<FaultRecord>>>,
}

/// Faults made beside a running sale (the chaos schedule). The sale starts it at its opening
/// and verifies only once it has finished, so the mesh must have come back from every fault.
pub trait Disruption: Send + 'static {
    /// Makes every fault, the first one after the opening, recording each; ends when the last
    /// one has recovered or timed out.
    fn disrupt(self: Box<Self>, target: Target) -> BoxFuture<'static, ()>;
}
