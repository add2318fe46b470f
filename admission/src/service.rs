//! The gRPC `AdmissionService`: validation, then the store, then the answer.

use std::{pin::Pin, sync::Arc, time::Duration};

use futures::Stream;
use service_runtime::{
    CancellationToken,
    bus::timestamp_ms,
    status::{user_id, uuid},
};
use ticketing_proto::{
    pass::{PassClaims, PassKeyRing},
    v1::{
        GetQueueStatusRequest, JoinRequest, LeaveRequest, LeaveResponse, Pass, QueueState, QueueStatus,
        WatchQueueRequest, admission_service_server::AdmissionService as AdmissionApi,
    },
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::{
    catalog::{Catalog, EventInfo},
    controller::{Controller, View},
    error::Error,
    store::{JoinOutcome, Standing, Store, StoredPass},
};

/// Messages buffered per WatchQueue stream; a slow reader gets the latest position a
/// moment later rather than an unbounded backlog.
const WATCH_BUFFER: usize = 4;

/// How often a WatchQueue stream reports, at the least.
const WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// Implements the generated `AdmissionService` trait.
#[derive(Clone)]
pub struct AdmissionService {
    pub(crate) store: Arc<Store>,
    pub(crate) catalog: Arc<Catalog>,
    pub(crate) controller: Arc<Controller>,
    pub(crate) ring: PassKeyRing,
    pub(crate) join_rate_limit: u32,
    pub(crate) stopping: CancellationToken,
}

/// The event id in canonical form (so keys do not depend on case) and the checked user id.
fn ids(event_id: &str, user: &str) -> Result<(String, String), Error> {
    let event_id = uuid("event_id", event_id)?.to_string();
    let user = user_id(user)?.to_owned();
    Ok((event_id, user))
}

impl AdmissionService {
    fn pass(&self, event_id: &str, user_id: &str, stored: &StoredPass) -> Pass {
        let token = self.ring.sign(PassClaims {
            key_id: String::new(),
            event_id: event_id.to_owned(),
            user_id: user_id.to_owned(),
            pass_id: stored.pass_id.clone(),
            expires_at_ms: stored.expires_at_ms,
        });
        Pass { token, pass_id: stored.pass_id.clone(), expires_at: Some(timestamp_ms(stored.expires_at_ms)) }
    }

    /// Turns a standing into the answer; NOT_FOUND when the user is not in the room.
    fn status(
        &self,
        info: &EventInfo,
        user_id: &str,
        standing: Standing,
        view: &View,
    ) -> Result<QueueStatus, Error> {
        let mut status = QueueStatus {
            event_id: info.event_id.clone(),
            user_id: user_id.to_owned(),
            sale_opens_at: Some(timestamp_ms(info.sale_opens_at_ms)),
            ..Default::default()
        };
        match standing {
            Standing::Absent => {
                return Err(Error::NotInQueue {
                    event_id: info.event_id.clone(),
                    user_id: user_id.to_owned(),
                });
            }
            Standing::Waiting { ticket, rank, queue_length, now_ms, .. } => {
                let position = rank + 1;
                status.state = waiting_state(info, now_ms) as i32;
                status.ticket = ticket;
                status.position = position;
                status.queue_length = queue_length;
                status.estimated_wait_seconds = view.estimated_wait_seconds(info, position, now_ms);
            }
            Standing::Admitted { pass, queue_length, .. } => {
                status.state = QueueState::Admitted as i32;
                status.ticket = pass.ticket;
                status.queue_length = queue_length;
                status.pass = Some(self.pass(&info.event_id, user_id, &pass));
            }
        }
        Ok(status)
    }

    async fn join(&self, request: JoinRequest) -> Result<QueueStatus, Error> {
        let (event_id, user_id) = ids(&request.event_id, &request.user_id)?;
        let info = self.catalog.get(&event_id).await?;
        let joined =
            self.store.join(&event_id, &user_id, self.join_rate_limit, info.sale_opens_at_ms).await?;
        let standing = match joined {
            JoinOutcome::RateLimited { retry_after_ms } => return Err(Error::RateLimited { retry_after_ms }),
            JoinOutcome::Joined(standing) => standing,
        };
        self.controller.register(&event_id).await?;
        self.status(&info, &user_id, standing, &self.controller.view(&event_id))
    }

    /// The user's status, and the queue score while waiting (what WatchQueue follows).
    async fn get_status(
        &self,
        event_id: &str,
        user_id: &str,
    ) -> Result<(Arc<EventInfo>, QueueStatus, u64), Error> {
        let (event_id, user_id) = ids(event_id, user_id)?;
        let info = self.catalog.get(&event_id).await?;
        let standing = self.store.standing(&event_id, &user_id).await?;
        let score = waiting_score(&standing);
        let status = self.status(&info, &user_id, standing, &self.controller.view(&event_id))?;
        Ok((info, status, score))
    }

    async fn leave(&self, request: LeaveRequest) -> Result<bool, Error> {
        let (event_id, user_id) = ids(&request.event_id, &request.user_id)?;
        self.catalog.get(&event_id).await?;
        self.store.leave(&event_id, &user_id).await
    }

    /// Feeds one WatchQueue stream from the event's "now serving" view. Redis is asked only
    /// when the stream's [`Turn`](crate::controller::Turn) comes: the head of the queue has
    /// passed the user's score (admitted, or left and rejoined), or the event has opened since
    /// the last answer (the shuffle moved the pre-queue). In between, once a second, the
    /// position is the last exact one minus the admissions since, never below 1.
    async fn watch(
        self,
        info: Arc<EventInfo>,
        mut last: QueueStatus,
        score: u64,
        tx: mpsc::Sender<Result<QueueStatus, Status>>,
    ) {
        let serving = self.controller.serving(&info.event_id);
        let mut turn = serving.turn(score, last.state == QueueState::PreQueue as i32);
        let mut exact_position = last.position;
        let mut admitted_then: Option<u64> = None;
        let mut interval = tokio::time::interval(WATCH_INTERVAL);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        interval.tick().await;
        loop {
            let refresh = tokio::select! {
                () = self.stopping.cancelled() => return,
                () = tx.closed() => return,
                () = &mut turn => true,
                _ = interval.tick() => false,
            };
            let view = serving.view();
            if refresh {
                let standing = match self.store.standing(&info.event_id, &last.user_id).await {
                    Ok(standing) => standing,
                    Err(error) => {
                        let _ = tx.send(Err(error.into())).await;
                        return;
                    }
                };
                let score = waiting_score(&standing);
                match self.status(&info, &last.user_id, standing, &view) {
                    Ok(status) => {
                        let admitted = status.state == QueueState::Admitted as i32;
                        exact_position = status.position;
                        admitted_then = Some(view.admitted_total);
                        last = status.clone();
                        if tx.send(Ok(status)).await.is_err() || admitted {
                            return;
                        }
                        interval.reset();
                        turn = serving.turn(score, last.state == QueueState::PreQueue as i32);
                    }
                    Err(error) => {
                        let _ = tx.send(Err(error.into())).await;
                        return;
                    }
                }
            } else {
                if view.refreshed {
                    let since =
                        view.admitted_total.saturating_sub(*admitted_then.get_or_insert(view.admitted_total));
                    let position = exact_position.saturating_sub(since);
                    last.position = last.position.min(position).max(1);
                    last.queue_length = view.queue_length;
                    last.state = waiting_state(&info, view.now_ms) as i32;
                    last.estimated_wait_seconds =
                        view.estimated_wait_seconds(&info, last.position, view.now_ms);
                }
                if tx.send(Ok(last.clone())).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// The queue score of a waiting user; `u64::MAX` (never passed) otherwise.
fn waiting_score(standing: &Standing) -> u64 {
    match standing {
        Standing::Waiting { score, .. } => *score,
        Standing::Absent | Standing::Admitted { .. } => u64::MAX,
    }
}

fn waiting_state(info: &EventInfo, now_ms: i64) -> QueueState {
    if now_ms < info.sale_opens_at_ms { QueueState::PreQueue } else { QueueState::Waiting }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<QueueStatus, Status>> + Send>>;

#[tonic::async_trait]
impl AdmissionApi for AdmissionService {
    async fn join(&self, request: Request<JoinRequest>) -> Result<Response<QueueStatus>, Status> {
        Ok(Response::new(AdmissionService::join(self, request.into_inner()).await?))
    }

    type WatchQueueStream = WatchStream;

    async fn watch_queue(
        &self,
        request: Request<WatchQueueRequest>,
    ) -> Result<Response<Self::WatchQueueStream>, Status> {
        let request = request.into_inner();
        let (info, first, score) = self.get_status(&request.event_id, &request.user_id).await?;
        let (tx, rx) = mpsc::channel(WATCH_BUFFER);
        let admitted = first.state == QueueState::Admitted as i32;
        // The first message goes out at once; the buffer has room for it.
        let _ = tx.try_send(Ok(first.clone()));
        if !admitted {
            tokio::spawn(self.clone().watch(info, first, score, tx));
        }
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn get_queue_status(
        &self,
        request: Request<GetQueueStatusRequest>,
    ) -> Result<Response<QueueStatus>, Status> {
        let request = request.into_inner();
        let (_, status, _) = self.get_status(&request.event_id, &request.user_id).await?;
        Ok(Response::new(status))
    }

    async fn leave(&self, request: Request<LeaveRequest>) -> Result<Response<LeaveResponse>, Status> {
        let left = AdmissionService::leave(self, request.into_inner()).await?;
        Ok(Response::new(LeaveResponse { left }))
    }
}
