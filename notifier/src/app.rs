//! Wiring: connections, migrations, the gRPC server and the background loops.

use std::{future::Future, sync::Arc};

use anyhow::Context as _;
use async_nats::jetstream::consumer::PullConsumer;
use sea_orm::{DatabaseConnection, sqlx::postgres::PgListener};
use service_runtime::{GrpcServer, bus::EventBus};
use ticketing_proto::v1::notifier_service_server::NotifierServiceServer;

use crate::{
    Config,
    consumer::{self, DURABLE, KINDS},
    inbox::Inbox,
    live::{self, Hub},
    migration,
    service::NotifierService,
    webhook::{DeliveryWorker, client::WebhookClient},
};

/// Postgres connections per replica: the consumer, the delivery worker and the RPCs share them.
pub const DB_MAX_CONNECTIONS: u32 = 16;

/// A built notifier: connected, migrated and bound, not serving yet.
pub struct App {
    server: GrpcServer,
    service: NotifierService,
    consumer: PullConsumer,
    worker: DeliveryWorker,
    /// LISTENing already, so no stream starts before notifications are heard.
    listener: PgListener,
    db: DatabaseConnection,
}

impl App {
    /// Connects to backing services, runs migrations, binds (port 0 allowed). Nothing is served yet.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        config.validate().map_err(anyhow::Error::msg)?;
        let keys = Arc::new(config.secret_keys().map_err(anyhow::Error::msg)?);
        let policy = Arc::new(config.address_policy().map_err(anyhow::Error::msg)?);
        let client = WebhookClient::new(config.webhook_ca_file.as_deref()).map_err(anyhow::Error::msg)?;
        let db = service_runtime::db::connect(&config.database.url, "notifier", DB_MAX_CONNECTIONS)
            .await
            .context("connecting to Postgres")?;
        migration::run(&db, &keys).await.context("running migrations")?;
        let bus = EventBus::connect_checked(
            &config.nats.url,
            &config.nats.prefix,
            config.nats.event_stream_min_replicas,
        )
        .await?;
        let consumer = bus.durable_consumer(DURABLE, KINDS).await?;
        let listener = live::listener(&db).await.context("LISTEN on Postgres")?;
        let server = GrpcServer::bind(&config.server).await.context("binding the gRPC address")?;

        let inbox = Inbox::new(db.clone());
        let max_webhooks_per_user = config.max_webhooks_per_user;
        let hub = Hub::new(config.max_subscribers);
        let worker = DeliveryWorker {
            db: db.clone(),
            config: Arc::new(config),
            policy: policy.clone(),
            keys: keys.clone(),
            client,
            wake: inbox.deliveries_due(),
        };
        let service = NotifierService {
            inbox,
            policy,
            keys,
            max_webhooks_per_user,
            hub,
            background: server.background(),
        };
        Ok(Self { server, service, consumer, worker, listener, db })
    }

    /// The bound gRPC port.
    pub fn port(&self) -> u16 {
        self.server.local_addr().port()
    }

    /// Serves until `shutdown` resolves; background loops stop on `server.stopping()` and
    /// `serve` waits for them (tracked tasks), so a handler in flight commits (and acks) before
    /// this returns.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let Self { server, service, consumer, worker, listener, db } = self;
        let stopping = server.stopping();
        server.spawn("notifier-consumer-lag", consumer::lag_loop(consumer.clone(), stopping.clone()));
        server.spawn("notifier-consumer", consumer::run(consumer, service.inbox.clone(), stopping.clone()));
        server.spawn("notifier-webhooks", worker.run(stopping.clone()));
        let hub = service.hub.clone();
        server.spawn("notifier-listen", live::listen(listener, db.clone(), hub.clone(), stopping.clone()));
        server.spawn("notifier-safety-poll", live::safety_polls(db, hub, stopping));
        server.serve(NotifierServiceServer::new(service), shutdown).await
    }
}
