//! Starts the real notifier on a free port against a test's own Postgres database and NATS prefix.

use std::time::Duration;

use notifier::{App, Config};
use sea_orm::{ConnectionTrait, DbBackend, Statement};
use service_runtime::{
    auth::{TokenIssuer, WithToken},
    bus::{EventBus, envelope},
};
use test_support::testenv::TestEnv;
use ticketing_proto::{
    events::{BookingConfirmed, EventEnvelope, event_envelope::Body},
    v1::{ListNotificationsRequest, Notification, notifier_service_client::NotifierServiceClient},
};
use tokio::{sync::oneshot, task::JoinHandle};
use tonic::{service::interceptor::InterceptedService, transport::Channel};

/// How long tests wait for something asynchronous to happen (generous: CI machines are shared).
pub const WAIT: Duration = Duration::from_secs(20);

/// A notifier client that sends one user's token on every call.
pub type Client = NotifierServiceClient<InterceptedService<Channel, WithToken>>;

/// A token for `user` from the test issuer the services trust.
pub fn token(user: &str) -> String {
    TokenIssuer::for_tests().token(user, false, Duration::from_secs(3600))
}

/// A running notifier.
pub struct TestApp {
    /// The bound gRPC port, for tests that open their own connections (`tests/subscribers.rs`).
    #[allow(dead_code)]
    pub port: u16,
    channel: Channel,
    shutdown: oneshot::Sender<()>,
    handle: JoinHandle<anyhow::Result<()>>,
}

impl TestApp {
    /// A client acting as `user` (with `user`'s token).
    pub fn client(&self, user: &str) -> Client {
        self.client_with(&token(user))
    }

    /// A client sending `token`, whatever it is.
    pub fn client_with(&self, token: &str) -> Client {
        NotifierServiceClient::with_interceptor(self.channel.clone(), WithToken::new(token))
    }

    /// A client sending no token.
    pub fn anonymous(&self) -> NotifierServiceClient<Channel> {
        NotifierServiceClient::new(self.channel.clone())
    }

    /// Shuts the app down and waits until its loops have stopped.
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(());
        self.handle.await?
    }
}

/// The test configuration for `env`.
pub fn config(env: &TestEnv) -> Config {
    Config::for_test(&env.database_url, &env.nats_url, &env.nats_prefix)
}

/// Builds and starts the notifier with `config`.
pub async fn spawn_app_with(config: Config) -> anyhow::Result<TestApp> {
    let app = App::build(config).await?;
    let port = app.port();
    let (shutdown, stopped) = oneshot::channel::<()>();
    let handle = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    let channel = ticketing_proto::connect(&format!("http://127.0.0.1:{port}"), Duration::from_secs(10))?;
    Ok(TestApp { port, channel, shutdown, handle })
}

/// Builds and starts the notifier with the test configuration of `env`.
pub async fn spawn_app(env: &TestEnv) -> anyhow::Result<TestApp> {
    spawn_app_with(config(env)).await
}

/// A bus on the test's own prefix, for publishing events as the other services would.
pub async fn bus(env: &TestEnv) -> anyhow::Result<EventBus> {
    Ok(EventBus::connect(&env.nats_url, &env.nats_prefix).await?)
}

/// A BookingConfirmed event for `user_id` with a fresh message id.
pub fn booking_confirmed(user_id: &str) -> EventEnvelope {
    envelope(
        uuid::Uuid::new_v4().to_string(),
        Body::BookingConfirmed(BookingConfirmed {
            event_id: uuid::Uuid::new_v4().to_string(),
            user_id: user_id.to_owned(),
            booking_id: uuid::Uuid::new_v4().to_string(),
            payment_id: uuid::Uuid::new_v4().to_string(),
            hold_id: uuid::Uuid::new_v4().to_string(),
            zone_id: "floor".into(),
            seat_ids: vec!["A-1".into()],
            quantity: 1,
            amount_cents: 4_200,
            currency: "EUR".into(),
        }),
    )
}

/// The user's whole inbox through ListNotifications, following pages.
pub async fn list_all(client: &mut Client, user_id: &str) -> anyhow::Result<Vec<Notification>> {
    let mut all = Vec::new();
    let mut after_id = 0;
    loop {
        let page = client
            .list_notifications(ListNotificationsRequest { user_id: user_id.into(), after_id, page_size: 7 })
            .await?
            .into_inner();
        all.extend(page.notifications);
        if page.next_after_id == 0 {
            return Ok(all);
        }
        after_id = page.next_after_id;
    }
}

/// Waits until the user's inbox holds at least `count` notifications, and returns it.
pub async fn wait_for_inbox(app: &TestApp, user_id: &str, count: usize) -> anyhow::Result<Vec<Notification>> {
    let client = app.client(user_id);
    test_support::testenv::eventually(WAIT * 3, || {
        let mut client = client.clone();
        async move { list_all(&mut client, user_id).await.ok().filter(|all| all.len() >= count) }
    })
    .await
    .ok_or_else(|| anyhow::anyhow!("inbox of {user_id} never reached {count} notifications"))
}

/// Waits until the user's inbox holds the notification of message `message_id`, and returns
/// the inbox.
pub async fn wait_for_inbox_until(
    app: &TestApp,
    user_id: &str,
    message_id: &str,
) -> anyhow::Result<Vec<Notification>> {
    let client = app.client(user_id);
    test_support::testenv::eventually(WAIT * 3, || {
        let mut client = client.clone();
        async move {
            list_all(&mut client, user_id)
                .await
                .ok()
                .filter(|all| all.iter().any(|n| n.message_id == message_id))
        }
    })
    .await
    .ok_or_else(|| anyhow::anyhow!("{message_id} never reached the inbox of {user_id}"))
}

/// The first column of the first row of `sql`, as a count.
pub async fn count(env: &TestEnv, sql: &str) -> anyhow::Result<i64> {
    let db = env.database().await?;
    let row = db
        .query_one_raw(Statement::from_string(DbBackend::Postgres, sql.to_owned()))
        .await?
        .ok_or_else(|| anyhow::anyhow!("no row"))?;
    Ok(row.try_get_by_index(0)?)
}
