//! Wiring: Postgres, migrations, the in-memory catalogue, the stream consumer and the server.

use std::{sync::Arc, time::Duration};

use sea_orm_migration::MigratorTrait;
use service_runtime::{GrpcServer, bus::EventBus, db};
use ticketing_proto::v1::inventory_service_server::InventoryServiceServer;
use tokio::sync::watch;

use crate::{
    Config, catalogue::Store, feed, migration::Migrator, registry::Registry, service::InventoryService,
};

/// The inventory service, built and bound, not yet serving.
pub struct App {
    server: GrpcServer,
    service: InventoryService,
}

impl App {
    /// Connects to Postgres and NATS, runs migrations, loads the catalogue, replays the event
    /// stream up to its head at start (so the maps are current before anything is served),
    /// and binds (port 0 allowed). Nothing is served yet.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let db = db::connect(&config.database_url, "inventory", config.database_max_connections).await?;
        Migrator::up(&db, None).await?;
        let registry = Arc::new(Registry::new(Store::new(db)));
        let loaded = registry.load_all().await?;
        let bus = EventBus::connect(&config.nats_url, &config.nats_prefix).await?;
        let head = feed::stream_head(&bus).await?;
        let server = GrpcServer::bind(&config.server).await?;

        let (applied_tx, mut applied) = watch::channel(0u64);
        // Tracked: `serve` waits for it, and a failed start (dropping the server) stops it.
        server.spawn(
            "inventory-feed",
            feed::run(bus, config.nats_prefix.clone(), registry.clone(), applied_tx, server.stopping()),
        );
        let caught_up = tokio::time::timeout(
            Duration::from_millis(config.catch_up_timeout_ms),
            applied.wait_for(|&sequence| sequence >= head),
        )
        .await;
        let caught_up = caught_up.map(|result| result.map(|_| ()));
        match caught_up {
            Ok(Ok(())) => tracing::info!(events = loaded, stream_sequence = head, "seat maps caught up"),
            Ok(Err(_)) => anyhow::bail!("the seat map consumer stopped before catching up"),
            Err(_) => tracing::warn!(
                stream_head = head,
                applied = *applied.borrow(),
                "seat maps still catching up with the event stream; serving anyway"
            ),
        }
        let service = InventoryService::new(registry, server.stopping());
        Ok(Self { server, service })
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.server.local_addr().port()
    }

    /// Serves until `shutdown` resolves; the consumer and watch streams stop with the server,
    /// which waits for the consumer (a tracked task) on every exit path.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let Self { server, service } = self;
        server.serve(InventoryServiceServer::new(service), shutdown).await
    }
}
