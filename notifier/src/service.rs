//! The gRPC API: Subscribe, ListNotifications and RegisterWebhook.
//!
//! Every RPC acts for the caller's verified token subject ([`auth::acting_user`]): a request
//! without a token is `UNAUTHENTICATED`, one whose `user_id` names someone else is
//! `PERMISSION_DENIED`, and an empty `user_id` means the subject. Nobody reads another
//! user's inbox or registers webhooks in their name.

use std::sync::Arc;

use sea_orm::DatabaseConnection;
use service_runtime::{CancellationToken, auth};
use ticketing_proto::v1::{
    ListNotificationsRequest, ListNotificationsResponse, Notification, RegisterWebhookRequest,
    RegisterWebhookResponse, SubscribeRequest, notifier_service_server,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::{
    Error,
    inbox::Inbox,
    live::{Hub, Subscription},
    webhook::{self, SECRET_LEN, Target, address::AddressPolicy, secret::SecretKeys},
};

/// Notifications queued per Subscribe stream for a slow client; when full, the stream's
/// task waits (wake-ups meanwhile coalesce into one read from its cursor).
pub const STREAM_BUFFER: usize = 64;
/// Rows read per query when a stream catches up from Postgres.
pub const CATCH_UP_PAGE: u32 = 200;
/// ListNotifications page size when the request says 0.
pub const DEFAULT_PAGE_SIZE: u32 = 50;
/// Largest ListNotifications page.
pub const MAX_PAGE_SIZE: u32 = 500;

/// Implements the generated `NotifierService` trait over the inbox.
#[derive(Clone)]
pub struct NotifierService {
    pub inbox: Inbox,
    /// Where webhooks may point; checked on the resolved addresses at registration.
    pub policy: Arc<AddressPolicy>,
    /// Seal webhook secrets before they are stored.
    pub keys: Arc<SecretKeys>,
    /// `MAX_WEBHOOKS_PER_USER`.
    pub max_webhooks_per_user: u32,
    /// The live streams of this replica, by user, capped at `MAX_SUBSCRIBERS`.
    pub hub: Arc<Hub>,
    /// Runs each stream's task, tracked, and ends them at shutdown.
    pub background: service_runtime::lifecycle::Background,
}

/// A notification id from a request, which must fit Postgres' bigint.
fn after_id(value: u64) -> Result<i64, Error> {
    i64::try_from(value).map_err(|_| Error::invalid("after_id", "out of range"))
}

#[tonic::async_trait]
impl notifier_service_server::NotifierService for NotifierService {
    type SubscribeStream = ReceiverStream<Result<Notification, Status>>;

    async fn subscribe(
        &self,
        request: Request<SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let user_id = auth::acting_user(&request, &request.get_ref().user_id)?;
        let request = request.into_inner();
        let after = after_id(request.after_id)?;
        // Register for wake-ups before reading the backlog, so nothing stored in between is
        // missed; every read starts after the last id sent, so nothing is sent twice.
        let subscription = self.hub.subscribe(&user_id)?;
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let stream = LiveStream {
            inbox: self.inbox.clone(),
            reads: self.hub.reads(),
            user_id,
            last_sent: after,
            tx,
            stopping: self.background.stopping(),
        };
        self.background.spawn("notifier-subscribe-stream", stream.run(subscription));
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn list_notifications(
        &self,
        request: Request<ListNotificationsRequest>,
    ) -> Result<Response<ListNotificationsResponse>, Status> {
        let user_id = auth::acting_user(&request, &request.get_ref().user_id)?;
        let request = request.into_inner();
        let after = after_id(request.after_id)?;
        let page_size = match request.page_size {
            0 => DEFAULT_PAGE_SIZE,
            n if n <= MAX_PAGE_SIZE => n,
            _ => return Err(Error::invalid("page_size", format!("must be 0-{MAX_PAGE_SIZE}")).into()),
        };
        let notifications = self.inbox.page(&user_id, after, page_size).await?;
        let next_after_id = match notifications.last() {
            Some(last) if notifications.len() == page_size as usize => last.notification_id,
            _ => 0,
        };
        Ok(Response::new(ListNotificationsResponse { notifications, next_after_id }))
    }

    async fn register_webhook(
        &self,
        request: Request<RegisterWebhookRequest>,
    ) -> Result<Response<RegisterWebhookResponse>, Status> {
        let user_id = auth::acting_user(&request, &request.get_ref().user_id)?;
        let request = request.into_inner();
        let target = Target::parse(&request.url)?;
        if !SECRET_LEN.contains(&request.secret.len()) {
            return Err(Error::invalid(
                "secret",
                format!("must be {}-{} bytes", SECRET_LEN.start(), SECRET_LEN.end()),
            )
            .into());
        }
        let kinds = webhook::parse_kinds(&request.kinds)?;
        // Resolved and checked now, and again at every delivery.
        self.policy.resolve(&target).await.map_err(Error::from)?;
        let db: &DatabaseConnection = self.inbox.db();
        let webhook_id = webhook::register(
            db,
            &self.keys,
            self.max_webhooks_per_user,
            &user_id,
            &request.url,
            &request.secret,
            &kinds,
        )
        .await?;
        Ok(Response::new(RegisterWebhookResponse { webhook_id: webhook_id.to_string() }))
    }
}

/// Counts live subscribers in `notifier_live_subscribers` while alive.
struct SubscriberGauge;

/// `notifier_live_subscribers`, a live gauge (set absolutely, never dropped while alive).
static LIVE_SUBSCRIBERS: std::sync::LazyLock<std::sync::Arc<service_runtime::telemetry::LiveGauge>> =
    std::sync::LazyLock::new(|| service_runtime::telemetry::LiveGauge::get("notifier_live_subscribers", &[]));

impl SubscriberGauge {
    fn new() -> Self {
        LIVE_SUBSCRIBERS.add(1);
        Self
    }
}

impl Drop for SubscriberGauge {
    fn drop(&mut self) {
        LIVE_SUBSCRIBERS.add(-1);
    }
}

/// The task behind one Subscribe stream.
struct LiveStream {
    inbox: Inbox,
    /// Taken for each page read, so a burst of streams queues instead of draining the pool.
    reads: Arc<tokio::sync::Semaphore>,
    user_id: String,
    /// The id of the last notification sent; everything sent is strictly increasing.
    last_sent: i64,
    tx: mpsc::Sender<Result<Notification, Status>>,
    stopping: CancellationToken,
}

/// Why a stream's task ends.
enum End {
    Stopping,
    ClientGone,
}

impl LiveStream {
    async fn run(mut self, mut subscription: Subscription) {
        let _gauge = SubscriberGauge::new();
        if self.catch_up().await.is_err() {
            return;
        }
        loop {
            let step = tokio::select! {
                () = self.stopping.cancelled() => Err(End::Stopping),
                () = self.tx.closed() => Err(End::ClientGone),
                changed = subscription.newest.changed() => match changed {
                    // Read only when the announced row is one this stream has not sent.
                    Ok(()) if *subscription.newest.borrow_and_update() > self.last_sent => self.catch_up().await,
                    Ok(()) => Ok(()),
                    Err(_) => Err(End::Stopping),
                },
                changed = subscription.resync.changed() => match changed {
                    Ok(()) => {
                        subscription.resync.borrow_and_update();
                        self.catch_up().await
                    }
                    Err(_) => Err(End::Stopping),
                },
            };
            if step.is_err() {
                return;
            }
        }
    }

    /// Sends every stored notification after `last_sent`, page by page.
    async fn catch_up(&mut self) -> Result<(), End> {
        loop {
            let page = {
                let Ok(_read) = self.reads.acquire().await else {
                    return Err(End::Stopping);
                };
                self.inbox.page(&self.user_id, self.last_sent, CATCH_UP_PAGE).await
            };
            let page = match page {
                Ok(page) => page,
                Err(e) => {
                    let _ = self.tx.send(Err(Status::from(e))).await;
                    return Err(End::ClientGone);
                }
            };
            let full = page.len() == CATCH_UP_PAGE as usize;
            for notification in page {
                self.send(notification).await?;
            }
            if !full {
                return Ok(());
            }
        }
    }

    async fn send(&mut self, notification: Notification) -> Result<(), End> {
        let id = notification.notification_id as i64;
        tokio::select! {
            () = self.stopping.cancelled() => Err(End::Stopping),
            sent = self.tx.send(Ok(notification)) => match sent {
                Ok(()) => {
                    self.last_sent = id;
                    Ok(())
                }
                Err(_) => Err(End::ClientGone),
            },
        }
    }
}
