//! The gRPC `AdmissionService`: identity, validation, then the store, then the answer.
//!
//! Every RPC acts for the caller's verified token subject ([`auth::acting_user`]): the queue
//! place, the rate limit and the pass are the subject's, and a request whose `user_id` names
//! someone else is refused (`PERMISSION_DENIED`, `USER_MISMATCH`) before anything is read, so
//! no answer ever carries another user's pass.

use std::{future::Future, pin::Pin, sync::Arc};

use futures::Stream;
use service_runtime::{
    CancellationToken, auth,
    bus::timestamp_ms,
    status::{user_id, uuid},
};
use ticketing_proto::{
    pass::{PassClaims, PassSigner},
    v1::{
        GetQueueStatusRequest, JoinRequest, LeaveRequest, LeaveResponse, Pass, QueueState, QueueStatus,
        SaleControlRequest, SaleState, SaleStatus, WatchQueueRequest,
        admission_service_server::AdmissionService as AdmissionApi,
    },
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tonic::{Request, Response, Status};

use crate::{
    catalogue::{Catalogue, EventInfo},
    controller::{Controller, NowServing, Turn, View},
    error::Error,
    store::{JoinOutcome, Left, SaleAction, SaleFigures, Standing, Store, StoredPass},
};

/// How long a request waits for its event's waiting room to be rebuilt (see
/// [`AdmissionService::with_state`]) before answering `UNAVAILABLE`; well below the request
/// timeout.
const REBUILD_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// Implements the generated `AdmissionService` trait.
#[derive(Clone)]
pub struct AdmissionService {
    pub(crate) store: Arc<Store>,
    pub(crate) catalogue: Arc<Catalogue>,
    pub(crate) controller: Arc<Controller>,
    /// Shared, not copied: every WatchQueue stream holds a clone of the service.
    pub(crate) signer: Arc<PassSigner>,
    pub(crate) join_rate_limit: u32,
    pub(crate) stopping: CancellationToken,
    /// Places for WatchQueue streams on this replica (`MAX_WATCHERS`).
    pub(crate) watchers: Arc<Semaphore>,
    pub(crate) max_watchers: usize,
}

/// The event id in canonical form (so keys do not depend on case) and the checked user id.
fn ids(event_id: &str, user: &str) -> Result<(String, String), Error> {
    let event_id = uuid("event_id", event_id)?.to_string();
    let user = user_id(user)?.to_owned();
    Ok((event_id, user))
}

impl AdmissionService {
    /// Passes `result` on; when it says the event's state is missing (Redis lost it), starts
    /// the rebuild first, so the caller's `UNAVAILABLE` (`QUEUE_REBUILDING`) is soon over.
    fn noticing<T>(&self, event_id: &str, result: Result<T, Error>) -> Result<T, Error> {
        if let Err(Error::Rebuilding(_)) = &result {
            let _ = self.controller.rebuild_soon(event_id);
        }
        result
    }

    /// Runs `op`; when the event's state is missing, has it rebuilt and runs it again, for up
    /// to [`REBUILD_WAIT`]; after that the caller gets `UNAVAILABLE` (`QUEUE_REBUILDING`). The
    /// first request of an event first used after its opening (whose state may as well have
    /// been lost) thus waits for one short history read instead of failing.
    async fn with_state<T, F, Fut>(&self, event_id: &str, op: F) -> Result<T, Error>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, Error>>,
    {
        let deadline = tokio::time::Instant::now() + REBUILD_WAIT;
        loop {
            match op().await {
                Err(Error::Rebuilding(id)) => {
                    let mut done = self.controller.rebuild_soon(event_id);
                    if tokio::time::Instant::now() >= deadline {
                        return Err(Error::Rebuilding(id));
                    }
                    let _ = tokio::time::timeout_at(deadline, done.wait_for(|done| *done)).await;
                }
                other => return other,
            }
        }
    }

    fn pass(&self, event_id: &str, user_id: &str, stored: &StoredPass) -> Pass {
        let token = self.signer.sign(PassClaims {
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
            Standing::Absent { queue_started_at_ms } => {
                return Err(Error::NotInQueue {
                    event_id: info.event_id.clone(),
                    user_id: user_id.to_owned(),
                    queue_started_at_ms,
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

    async fn join(&self, user: &str, request: JoinRequest) -> Result<QueueStatus, Error> {
        let (event_id, user_id) = ids(&request.event_id, user)?;
        let info = self.catalogue.get(&event_id).await?;
        let joined = self
            .with_state(&event_id, || {
                self.store.join(&event_id, &user_id, self.join_rate_limit, info.sale_opens_at_ms)
            })
            .await?;
        let standing = match joined {
            JoinOutcome::RateLimited { retry_after_ms } => return Err(Error::RateLimited { retry_after_ms }),
            JoinOutcome::SaleClosed => return Err(Error::SaleClosed(event_id)),
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
        let info = self.catalogue.get(&event_id).await?;
        let standing = self
            .with_state(&event_id, || self.store.standing(&event_id, &user_id, info.sale_opens_at_ms))
            .await?;
        let score = waiting_score(&standing);
        let status = self.status(&info, &user_id, standing, &self.controller.view(&event_id))?;
        Ok((info, status, score))
    }

    /// Takes the user out of the queue, or ends the user's pass: the end goes to the outbox
    /// in the same script, and the relay starts at once so seat-lock refuses the pass soon.
    async fn leave(&self, user: &str, request: LeaveRequest) -> Result<bool, Error> {
        let (event_id, user_id) = ids(&request.event_id, user)?;
        let info = self.catalogue.get(&event_id).await?;
        match self
            .with_state(&event_id, || self.store.leave(&event_id, &user_id, info.sale_opens_at_ms))
            .await?
        {
            Left::Nothing => Ok(false),
            Left::Queue => Ok(true),
            Left::Pass => {
                self.controller.start_relay(&event_id);
                Ok(true)
            }
        }
    }
}

impl AdmissionService {
    /// An operator's action on the sale of a known event; the caller checked the admin scope.
    async fn control_sale(
        &self,
        request: &SaleControlRequest,
        action: SaleAction,
    ) -> Result<SaleStatus, Error> {
        let event_id = uuid("event_id", &request.event_id)?.to_string();
        let info = self.catalogue.get(&event_id).await?;
        let figures =
            self.with_state(&event_id, || self.store.sale(&event_id, action, info.sale_opens_at_ms)).await?;
        if action != SaleAction::Status {
            // The controllers walk registered events only: a sale paused before anyone joined
            // still shows up in their figures, and a closed one is forgotten once drained.
            self.controller.register(&event_id).await?;
        }
        Ok(sale_status(&info, &figures, &self.controller.view(&event_id)))
    }
}

/// The sale's figures from Redis, with the admission rate and the wait at the back of the
/// queue from this replica's last tick of the event.
fn sale_status(info: &EventInfo, figures: &SaleFigures, view: &View) -> SaleStatus {
    let state = if figures.closed {
        SaleState::Closed
    } else if figures.paused {
        SaleState::Paused
    } else if figures.opened {
        SaleState::Open
    } else {
        SaleState::NotOpen
    };
    SaleStatus {
        event_id: info.event_id.clone(),
        state: state as i32,
        queue_length: figures.queue_length,
        admitted_total: figures.admitted_total,
        active_passes: figures.active_passes,
        sale_opens_at: Some(timestamp_ms(info.sale_opens_at_ms)),
        admission_rate: view.rate.unwrap_or(0.0),
        estimated_wait_seconds: if figures.queue_length == 0 || state == SaleState::Closed {
            0
        } else {
            let now_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
            view.estimated_wait_seconds(info, figures.queue_length, now_ms)
        },
    }
}

/// The queue score of a waiting user; `u64::MAX` (never passed) otherwise.
fn waiting_score(standing: &Standing) -> u64 {
    match standing {
        Standing::Waiting { score, .. } => *score,
        Standing::Absent { .. } | Standing::Admitted { .. } => u64::MAX,
    }
}

fn waiting_state(info: &EventInfo, now_ms: i64) -> QueueState {
    if now_ms < info.sale_opens_at_ms { QueueState::PreQueue } else { QueueState::Waiting }
}

/// A [`Watcher`]'s Redis call for its exact standing.
type Refresh = Pin<Box<dyn Future<Output = Result<Standing, Error>> + Send>>;

/// One `WatchQueue` stream. It has no task or queue of its own: HTTP/2 polls it when the
/// client's flow-control window has room. It reports on the event's shared clock
/// ([`NowServing::seconds`]) from the "now serving" view, and asks Redis only when its
/// [`Turn`] comes: the head of the queue has passed the user's score (admitted, or left and
/// rejoined), or the event has opened since the last answer (the shuffle moved the pre-queue).
/// In between, the position is the last exact one minus the admissions since, never below 1.
struct Watcher {
    service: AdmissionService,
    info: Arc<EventInfo>,
    serving: Arc<NowServing>,
    turn: Turn,
    seconds: watch::Receiver<u64>,
    /// The Redis call of the current turn, while it runs.
    refreshing: Option<Refresh>,
    /// The last status sent (or, while `first`, the one to send first).
    last: QueueStatus,
    first: bool,
    /// The pass went out (or an error did): the stream ends.
    finished: bool,
    exact_position: u64,
    /// [`NowServing::published`] when the last exact standing was asked for.
    asked_at: u64,
    /// `admitted_total` of the view when the position was last exact.
    admitted_then: Option<u64>,
    /// This stream's place among the replica's `MAX_WATCHERS`.
    _permit: OwnedSemaphorePermit,
}

impl Watcher {
    fn new(
        service: AdmissionService,
        info: Arc<EventInfo>,
        first: QueueStatus,
        score: u64,
        permit: OwnedSemaphorePermit,
    ) -> Self {
        let serving = service.controller.serving(&info.event_id);
        // Noted after `first` was read, so a tick that ran meanwhile is not taken as newer:
        // at worst the stream waits for the next tick to ask again.
        let asked_at = serving.published();
        let turn = serving.turn(score, first.state == QueueState::PreQueue as i32, asked_at);
        let seconds = serving.seconds();
        Self {
            finished: first.state == QueueState::Admitted as i32,
            exact_position: first.position,
            asked_at,
            service,
            info,
            serving,
            turn,
            seconds,
            refreshing: None,
            last: first,
            first: true,
            admitted_then: None,
            _permit: permit,
        }
    }

    /// The next message; `None` ends the stream (pass sent, error sent, or server stopping).
    /// A Redis call started by the turn runs beside the clock, so a slow answer (say, a whole
    /// pre-queue asking at the opening) never holds back the once-a-second reports.
    async fn next(&mut self) -> Option<Result<QueueStatus, Status>> {
        if std::mem::take(&mut self.first) {
            return Some(Ok(self.last.clone()));
        }
        if self.finished {
            return None;
        }
        loop {
            let Self { service, info, serving, turn, seconds, refreshing, last, asked_at, .. } = &mut *self;
            tokio::select! {
                () = service.stopping.cancelled() => return None,
                () = turn, if refreshing.is_none() => {
                    *asked_at = serving.published();
                    let (store, event_id, user_id, opens) =
                        (service.store.clone(), info.event_id.clone(), last.user_id.clone(), info.sale_opens_at_ms);
                    // Boxed: the call's future is large and lives only while the call runs.
                    *refreshing = Some(Box::pin(async move { store.standing(&event_id, &user_id, opens).await }));
                }
                standing = async {
                    match refreshing.as_mut() {
                        Some(call) => call.await,
                        None => std::future::pending().await,
                    }
                }, if refreshing.is_some() => {
                    self.refreshing = None;
                    return Some(self.answer(standing));
                }
                changed = seconds.changed() => {
                    changed.ok()?;
                    return Some(Ok(self.estimate()));
                }
            }
        }
    }

    /// The last exact position minus the admissions since, from the "now serving" view.
    fn estimate(&mut self) -> QueueStatus {
        let view = self.serving.view();
        if view.refreshed {
            let since =
                view.admitted_total.saturating_sub(*self.admitted_then.get_or_insert(view.admitted_total));
            let last = &mut self.last;
            last.position = last.position.min(self.exact_position.saturating_sub(since)).max(1);
            last.queue_length = view.queue_length;
            last.state = waiting_state(&self.info, view.now_ms) as i32;
            last.estimated_wait_seconds = view.estimated_wait_seconds(&self.info, last.position, view.now_ms);
        }
        self.last.clone()
    }

    /// The exact status from Redis's answer; files the stream for its next turn.
    fn answer(&mut self, standing: Result<Standing, Error>) -> Result<QueueStatus, Status> {
        let view = self.serving.view();
        let standing = self.service.noticing(&self.info.event_id, standing);
        let answered = standing.and_then(|standing| {
            let score = waiting_score(&standing);
            Ok((self.service.status(&self.info, &self.last.user_id, standing, &view)?, score))
        });
        match answered {
            Ok((status, score)) => {
                self.finished = status.state == QueueState::Admitted as i32;
                self.exact_position = status.position;
                self.admitted_then = Some(view.admitted_total);
                self.turn =
                    self.serving.turn(score, status.state == QueueState::PreQueue as i32, self.asked_at);
                self.last = status;
                Ok(self.last.clone())
            }
            Err(error) => {
                self.finished = true;
                Err(error.into())
            }
        }
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<QueueStatus, Status>> + Send>>;

#[tonic::async_trait]
impl AdmissionApi for AdmissionService {
    async fn join(&self, request: Request<JoinRequest>) -> Result<Response<QueueStatus>, Status> {
        let user = auth::acting_user(&request, &request.get_ref().user_id)?;
        Ok(Response::new(AdmissionService::join(self, &user, request.into_inner()).await?))
    }

    type WatchQueueStream = WatchStream;

    async fn watch_queue(
        &self,
        request: Request<WatchQueueRequest>,
    ) -> Result<Response<Self::WatchQueueStream>, Status> {
        let user = auth::acting_user(&request, &request.get_ref().user_id)?;
        let request = request.into_inner();
        let permit = self
            .watchers
            .clone()
            .try_acquire_owned()
            .map_err(|_| Error::TooManyWatchers(self.max_watchers))?;
        let (info, first, score) = self.get_status(&request.event_id, &user).await?;
        let watcher = Watcher::new(self.clone(), info, first, score, permit);
        let updates = futures::stream::unfold(watcher, |mut watcher| async move {
            let update = watcher.next().await?;
            Some((update, watcher))
        });
        Ok(Response::new(Box::pin(updates)))
    }

    async fn get_queue_status(
        &self,
        request: Request<GetQueueStatusRequest>,
    ) -> Result<Response<QueueStatus>, Status> {
        let user = auth::acting_user(&request, &request.get_ref().user_id)?;
        let (_, status, _) = self.get_status(&request.get_ref().event_id, &user).await?;
        Ok(Response::new(status))
    }

    async fn leave(&self, request: Request<LeaveRequest>) -> Result<Response<LeaveResponse>, Status> {
        let user = auth::acting_user(&request, &request.get_ref().user_id)?;
        let left = AdmissionService::leave(self, &user, request.into_inner()).await?;
        Ok(Response::new(LeaveResponse { left }))
    }

    async fn pause_sale(&self, request: Request<SaleControlRequest>) -> Result<Response<SaleStatus>, Status> {
        auth::require_admin(&request)?;
        Ok(Response::new(self.control_sale(request.get_ref(), SaleAction::Pause).await?))
    }

    async fn resume_sale(
        &self,
        request: Request<SaleControlRequest>,
    ) -> Result<Response<SaleStatus>, Status> {
        auth::require_admin(&request)?;
        Ok(Response::new(self.control_sale(request.get_ref(), SaleAction::Resume).await?))
    }

    async fn close_sale(&self, request: Request<SaleControlRequest>) -> Result<Response<SaleStatus>, Status> {
        auth::require_admin(&request)?;
        Ok(Response::new(self.control_sale(request.get_ref(), SaleAction::Close).await?))
    }

    async fn get_sale_status(
        &self,
        request: Request<SaleControlRequest>,
    ) -> Result<Response<SaleStatus>, Status> {
        auth::require_admin(&request)?;
        Ok(Response::new(self.control_sale(request.get_ref(), SaleAction::Status).await?))
    }
}
