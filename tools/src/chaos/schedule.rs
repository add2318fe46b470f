//! The faults of a chaos run, one after the other (never overlapping), each recorded with
//! when it started, when the failed part answered again and when the mesh had recovered.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use ticketing_proto::v1::{
    self as pb, admission_service_client::AdmissionServiceClient,
    notifier_service_client::NotifierServiceClient, payment_service_client::PaymentServiceClient,
    seat_lock_service_client::SeatLockServiceClient,
};
use tonic::{Code, transport::Channel};

use crate::{
    faults::{ChaosConfig, Disruption, Fault, FaultRecord, Target},
    stack::{backing::PrivateBacking, supervisor::Supervisor},
};

/// How often recovery is probed after a store came back.
const PROBE_EVERY: Duration = Duration::from_millis(200);
/// The longest one probe call may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The faults of a run and what they act on.
pub struct Schedule {
    pub config: ChaosConfig,
    pub supervisor: Arc<Supervisor>,
    pub backing: Arc<tokio::sync::Mutex<PrivateBacking>>,
    /// The mesh's JetStream stream prefix, for the NATS probe.
    pub nats_prefix: String,
    /// Mints the probes' token (user [`PROBE_USER`]).
    pub identity: Arc<crate::identity::Identity>,
}

/// The user the probes act as.
const PROBE_USER: &str = "chaos-probe";

/// What the probes call.
struct Probe {
    lb: Channel,
    /// [`PROBE_USER`]'s token.
    token: crate::identity::Bearer,
    event_id: String,
    nats_url: String,
    stream: String,
    /// Consumers of the event stream before NATS went down: the services consume again only
    /// once each has its consumer back (one that did not survive the restart re-created).
    consumers_before: usize,
}

/// A call answered by the service after it consulted its store: a result or a domain
/// refusal, not a failure to reach the service or its store.
fn answered<T>(result: Result<tonic::Response<T>, tonic::Status>) -> bool {
    match result {
        Ok(_) => true,
        Err(status) => matches!(
            status.code(),
            Code::NotFound | Code::FailedPrecondition | Code::PermissionDenied | Code::InvalidArgument
        ),
    }
}

fn probe_request<T>(token: &crate::identity::Bearer, message: T) -> tonic::Request<T> {
    let mut request = token.request(message);
    request.set_timeout(PROBE_TIMEOUT);
    request
}

impl Probe {
    /// The event stream's last sequence and, for each of its consumers, the messages left to
    /// deliver and the stream sequence delivered last; `None` when NATS does not answer.
    async fn consumers(&self) -> Option<(u64, Vec<(u64, u64)>)> {
        use futures::TryStreamExt;
        let ask = async {
            let client = async_nats::connect(&self.nats_url).await.ok()?;
            let stream = async_nats::jetstream::new(client).get_stream(&self.stream).await.ok()?;
            let last = stream.get_info().await.ok()?.state.last_sequence;
            let consumers: Vec<_> = stream.consumers().try_collect().await.ok()?;
            Some((last, consumers.iter().map(|c| (c.num_pending, c.delivered.stream_sequence)).collect()))
        };
        tokio::time::timeout(PROBE_TIMEOUT, ask).await.ok().flatten()
    }

    /// Whether the mesh serves what depends on the store `fault` hit; `back_at` is the event
    /// stream's last sequence when NATS came back (`None`: not known yet).
    async fn passes(&self, fault: Fault, back_at: Option<u64>) -> bool {
        let user = PROBE_USER.to_owned();
        match fault {
            Fault::Redis => {
                let hold = SeatLockServiceClient::new(self.lb.clone())
                    .get_hold(probe_request(
                        &self.token,
                        pb::GetHoldRequest {
                            event_id: self.event_id.clone(),
                            hold_id: uuid::Uuid::new_v4().to_string(),
                            user_id: user.clone(),
                        },
                    ))
                    .await;
                let place = AdmissionServiceClient::new(self.lb.clone())
                    .get_queue_status(probe_request(
                        &self.token,
                        pb::GetQueueStatusRequest { event_id: self.event_id.clone(), user_id: user },
                    ))
                    .await;
                answered(hold) && answered(place)
            }
            // A live sale keeps adding events, so a consumer that keeps up need not be empty at
            // the instant asked: caught up is past what the stream held when NATS came back.
            Fault::Nats => {
                let (Some(back_at), Some((_, consumers))) = (back_at, self.consumers().await) else {
                    return false;
                };
                consumers.len() >= self.consumers_before
                    && consumers.iter().all(|(pending, delivered)| *pending == 0 || *delivered >= back_at)
            }
            Fault::Postgres => {
                let sold = PaymentServiceClient::new(self.lb.clone())
                    .list_bookings(probe_request(
                        &self.token,
                        pb::ListBookingsRequest {
                            user_id: user.clone(),
                            event_id: self.event_id.clone(),
                            page_size: 1,
                            page_token: String::new(),
                        },
                    ))
                    .await;
                let inbox = NotifierServiceClient::new(self.lb.clone())
                    .list_notifications(probe_request(
                        &self.token,
                        pb::ListNotificationsRequest { user_id: user, after_id: 0, page_size: 1 },
                    ))
                    .await;
                answered(sold) && answered(inbox)
            }
            Fault::Kill(_) => true,
        }
    }
}

impl Schedule {
    /// Runs every fault, the first one interval after `opened_at`, into `log`; returns when
    /// the last one has recovered or timed out.
    pub async fn run(self, target: Target) {
        let Target { lb, event_id, opened_at, log } = target;
        let nats_url = self.backing.lock().await.nats.url();
        let mut probe = Probe {
            lb,
            token: self.identity.user(PROBE_USER),
            event_id,
            nats_url,
            stream: format!("{}_events", self.nats_prefix),
            consumers_before: 0,
        };
        let since_open = |at: Instant| at.saturating_duration_since(opened_at).as_secs_f64();
        let interval = Duration::from_secs_f64(self.config.interval_secs);
        let mut next = opened_at.max(Instant::now()) + interval;
        for fault in self.config.faults.iter().copied() {
            tokio::time::sleep_until(next.into()).await;
            let started = Instant::now();
            let mut record = FaultRecord {
                kind: fault.kind(),
                target: fault.target(),
                started_secs: since_open(started),
                back_secs: None,
                recovered_secs: None,
                recovery_secs: None,
                notes: Vec::new(),
            };
            tracing::info!(fault = fault.target(), kind = fault.kind(), "injecting a fault");
            if fault == Fault::Nats {
                probe.consumers_before = probe.consumers().await.map_or(0, |(_, c)| c.len());
            }
            match self.inject(fault, &probe).await {
                Ok((back, recovered)) => {
                    record.back_secs = back.map(since_open);
                    record.recovered_secs = recovered.map(since_open);
                    record.recovery_secs = recovered.map(|at| (at - started).as_secs_f64());
                    if recovered.is_none() {
                        record
                            .notes
                            .push(format!("not recovered within {:.0} s", self.config.recovery_timeout_secs));
                    }
                }
                Err(error) => record.notes.push(format!("the fault failed: {error:#}")),
            }
            if let Ok(mut log) = log.lock() {
                log.push(record);
            }
            next = Instant::now() + interval;
        }
    }

    /// Injects `fault`; returns when the store answered again (stores only) and when the
    /// mesh had recovered (`None`: not within the recovery timeout).
    async fn inject(
        &self,
        fault: Fault,
        probe: &Probe,
    ) -> anyhow::Result<(Option<Instant>, Option<Instant>)> {
        let timeout = Duration::from_secs_f64(self.config.recovery_timeout_secs);
        let outage = Duration::from_secs_f64(self.config.outage_secs);
        if let Fault::Kill(service) = fault {
            let killed = self.supervisor.kill(service)?;
            return Ok((None, self.supervisor.serving_after(service, killed, timeout).await));
        }
        {
            let mut backing = self.backing.lock().await;
            match fault {
                Fault::Redis => backing.redis.kill(),
                Fault::Nats => backing.nats.kill(),
                Fault::Postgres => backing.postgres.kill().await?,
                Fault::Kill(_) => {}
            }
            tokio::time::sleep(outage).await;
            match fault {
                Fault::Redis => backing.redis.restart().await?,
                Fault::Nats => backing.nats.restart().await?,
                Fault::Postgres => backing.postgres.restart().await?,
                Fault::Kill(_) => {}
            }
        }
        let back = Instant::now();
        let deadline = back + timeout;
        // The event stream's last sequence when NATS came back, once NATS answers.
        let mut back_at = None;
        while Instant::now() < deadline {
            if fault == Fault::Nats && back_at.is_none() {
                back_at = probe.consumers().await.map(|(last, _)| last);
            }
            if self.supervisor.all_serving() && probe.passes(fault, back_at).await {
                return Ok((Some(back), Some(Instant::now())));
            }
            tokio::time::sleep(PROBE_EVERY).await;
        }
        Ok((Some(back), None))
    }
}

impl Disruption for Schedule {
    fn disrupt(self: Box<Self>, target: Target) -> futures::future::BoxFuture<'static, ()> {
        Box::pin(self.run(target))
    }
}
