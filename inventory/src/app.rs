//! Wiring: Postgres, migrations, the in-memory catalogue restored from its snapshots, the
//! stream consumer with its snapshot writer, and the server.

use std::{sync::Arc, time::Duration};

use sea_orm_migration::MigratorTrait;
use service_runtime::{GrpcServer, bus::EventBus, db};
use ticketing_proto::v1::inventory_service_server::InventoryServiceServer;
use tokio::sync::{mpsc, watch};

use crate::{
    Config,
    catalogue::Store,
    feed, gauges,
    migration::Migrator,
    registry::Registry,
    service::InventoryService,
    snapshot::{self, CHECKPOINT_QUEUE, Checkpointer, Snapshots},
};

/// The inventory service, built and bound, not yet serving.
pub struct App {
    server: GrpcServer,
    service: InventoryService,
}

impl App {
    /// Connects to Postgres and NATS (refusing a missing or misconfigured event stream), runs
    /// migrations, loads the catalogue and the seat maps' snapshots, replays the event stream
    /// from the snapshots up to its head at start (so the maps are current before anything is
    /// served), and binds (port 0 allowed). Nothing is served yet.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let db = db::connect(&config.database.url, "inventory", config.database_max_connections).await?;
        Migrator::up(&db, None).await?;
        let snapshots = Snapshots::new(db.clone());
        // Snapshots before events: an event created in between has no snapshot and is
        // replayed in full, where the other order could skip its first messages.
        let stored = snapshots.load_all().await?;
        let registry = Arc::new(Registry::new(Store::new(db)));
        let loaded = registry.load_all().await?;
        let bus = EventBus::connect_checked(
            &config.nats.url,
            &config.nats.prefix,
            config.nats.event_stream_min_replicas,
        )
        .await?;
        let position = feed::stream_position(&bus).await?;
        let restored = stored.len();
        let resume = snapshot::restore(&registry, stored, position.epoch);
        if position.first > resume.start_after.saturating_add(1) && resume.start_after < position.last {
            let uncovered = registry
                .all()
                .iter()
                .filter(|(id, _)| resume.covered.get(id).is_none_or(|&c| c + 1 < position.first))
                .count();
            tracing::warn!(
                first_stored = position.first,
                resume_after = resume.start_after,
                events = uncovered,
                "the stream no longer holds every message after these events' snapshots (or they have none); \
                 their seat maps miss what was trimmed"
            );
        }
        tracing::info!(
            events = loaded,
            snapshots = restored,
            from = resume.start_after + 1,
            to = position.last,
            "replaying the event stream from the snapshots"
        );
        let server = GrpcServer::bind(&config.server).await?;

        let (checkpoint_tx, checkpoint_rx) = mpsc::channel(CHECKPOINT_QUEUE);
        // Tracked: it ends once the feed, stopping, has dropped its sender after handing
        // over the last checkpoint, and `serve` waits for it within the drain grace.
        server.spawn("inventory-snapshots", snapshot::write_loop(snapshots, checkpoint_rx));
        let checkpoints = Checkpointer::new(
            registry.clone(),
            checkpoint_tx,
            position.epoch,
            config.snapshot_every_messages,
            Duration::from_millis(config.snapshot_interval_ms),
            resume.start_after,
        );
        let (applied_tx, mut applied) = watch::channel(resume.start_after);
        let head = position.last;
        // Tracked: `serve` waits for it, and a failed start (dropping the server) stops it.
        // Tracked, so it stops with the server; it only reads the maps and the stream.
        server.spawn(
            "inventory-gauges",
            gauges::run(registry.clone(), bus.clone(), applied.clone(), server.stopping()),
        );
        server.spawn(
            "inventory-feed",
            feed::run(
                bus,
                config.nats.prefix.clone(),
                registry.clone(),
                resume,
                checkpoints,
                applied_tx,
                server.stopping(),
            ),
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
    /// which waits for the consumer and the snapshot writer (tracked tasks) on every exit path:
    /// the consumer hands over a last checkpoint as it stops, and the writer stores it.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let Self { server, service } = self;
        server.serve(InventoryServiceServer::new(service), shutdown).await
    }
}
