//! Wiring: connections, migrations, the gRPC server and the background loops.

use std::{future::Future, sync::Arc, time::Duration};

use anyhow::Context;
use sea_orm::DatabaseConnection;
use sea_orm_migration::MigratorTrait;
use service_runtime::{CancellationToken, GrpcServer, bus::EventBus};
use ticketing_proto::{
    internal::payment_internal_service_server::PaymentInternalServiceServer,
    v1::payment_service_server::PaymentServiceServer,
};
use tokio::sync::Notify;
use tonic::transport::Channel;

use crate::{
    cancel::{
        Cancellations,
        cutoffs::{Cutoffs, INVENTORY_TIMEOUT},
    },
    checkout::Checkout,
    commit::CommitGroups,
    config::Config,
    gateway::{SandboxGateway, TimeoutGateway},
    instances::{Instance, Owner},
    internal::PaymentInternal,
    migration::Migrator,
    reconcile::Reconciler,
    recovery::RecoveryPass,
    relay::OutboxRelay,
    seat_returns::SeatReturns,
    service::PaymentService,
};

/// Largest `ListSoldSeats` answer sent: room for 200,000 seats (the most an event may have)
/// with their ids; seat-lock accepts as much.
const SOLD_SEATS_MAX_BYTES: usize = 64 * 1024 * 1024;

/// Longest a call to seat-lock may take; BeginCheckout and ConfirmHold are single Redis scripts.
const SEAT_LOCK_TIMEOUT: Duration = Duration::from_secs(5);

/// The payment service, bound and ready to serve.
pub struct App {
    server: GrpcServer,
    service: PaymentService,
    checkout: Arc<Checkout>,
    relay: OutboxRelay,
    seat_returns: SeatReturns,
    reconciler: Arc<Reconciler>,
    instance: Instance,
    recovery_after: Duration,
    reconcile_every: Duration,
}

impl App {
    /// Connects to backing services, runs migrations, binds (port 0 allowed). Nothing is served yet.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let db =
            service_runtime::db::connect(&config.database.url, "payment", config.database_max_connections)
                .await
                .context("cannot connect to Postgres")?;
        Migrator::up(&db, None).await.context("cannot migrate schema payment")?;
        let instance = Instance::register(&db, config.instance_lease())
            .await
            .context("cannot register this payment instance")?;
        let bus = EventBus::connect_checked(
            &config.nats.url,
            &config.nats.prefix,
            config.nats.event_stream_min_replicas,
        )
        .await?;
        let seat_lock = seat_lock_channel(&config)?;
        let inventory = ticketing_proto::connect(&config.inventory_url, INVENTORY_TIMEOUT)
            .with_context(|| format!("bad INVENTORY_URL {}", config.inventory_url))?;
        let outbox_ready = Arc::new(Notify::new());
        let checkout =
            Arc::new(checkout(&config, &db, seat_lock.clone(), Arc::clone(&outbox_ready), instance.owner()));
        let returns_ready = Arc::new(Notify::new());
        let cancellations = Cancellations::new(
            db.clone(),
            checkout.refunds().clone(),
            Cutoffs::new(inventory),
            Arc::clone(&returns_ready),
        );
        let seat_returns = SeatReturns::new(db.clone(), seat_lock, returns_ready);
        let recovery_after = Duration::from_secs(config.recovery_after_secs);
        let reconciler = Arc::new(Reconciler::new(db.clone(), Arc::clone(&checkout), recovery_after));
        let service = PaymentService::new(
            db.clone(),
            Arc::clone(&checkout),
            Arc::new(cancellations),
            Arc::clone(&reconciler),
            config.payments_in_flight(),
        );
        let internal = PaymentInternalServiceServer::new(PaymentInternal::new(db.clone()))
            // A 50,000-seat event's sold seats exceed tonic's 4 MiB default.
            .max_encoding_message_size(SOLD_SEATS_MAX_BYTES);
        let relay = OutboxRelay::new(db, bus, outbox_ready, config.relay_interval());
        let mesh = config.mesh_tls().map_err(anyhow::Error::msg)?;
        let server = GrpcServer::bind(&config.server)
            .await
            .context("cannot bind the gRPC address")?
            .bind_internal(config.mesh.internal_grpc_addr, &mesh, internal)
            .await
            .context("cannot bind the internal gRPC address")?;
        Ok(Self {
            server,
            service,
            checkout,
            relay,
            seat_returns,
            reconciler,
            instance,
            recovery_after,
            reconcile_every: Duration::from_secs(config.reconcile_interval_secs),
        })
    }

    /// The bound gRPC port.
    pub fn port(&self) -> u16 {
        self.server.local_addr().port()
    }

    /// The internal listener's bound port.
    pub fn internal_port(&self) -> u16 {
        self.server.internal_addr().map_or(0, |addr| addr.port())
    }

    /// This process's instance id, written on the payments it claims (module `instances`).
    pub fn instance_id(&self) -> uuid::Uuid {
        self.instance.id()
    }

    /// One recovery pass over payments unchanged for longer than `older_than` (module
    /// `recovery`); the service also runs it at startup and periodically.
    pub async fn recover_stuck_payments(&self, older_than: Duration) -> anyhow::Result<RecoveryPass> {
        Ok(self.checkout.recover_stuck_payments(older_than).await?)
    }

    /// One pass adopting and driving the payments of dead processes (module `recovery`); the
    /// service runs it every half lease.
    pub async fn recover_orphaned_payments(&self) -> anyhow::Result<RecoveryPass> {
        Ok(self.checkout.recover_orphaned_payments().await?)
    }

    /// Serves until `shutdown` resolves; the lease, relay, seat-return and recovery loops stop
    /// on `server.stopping()`, and `serve` waits for them (tracked tasks) on every exit path;
    /// the lease is given up last, after the drain.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let server = self.server;
        let background = server.background();
        let stopping = server.stopping();
        let lease = self.instance.lease();
        server.spawn("payment-lease", self.instance.clone().run(stopping.clone()));
        server.spawn("payment-relay", self.relay.run(stopping.clone()));
        server.spawn("payment-seat-returns", self.seat_returns.run(stopping.clone()));
        server.spawn(
            "payment-recovery",
            recovery_loop(self.checkout, self.recovery_after, lease, stopping.clone()),
        );
        server.spawn("payment-reconcile", reconcile_loop(self.reconciler, self.reconcile_every, stopping));
        let served = server.serve(PaymentServiceServer::new(self.service), shutdown).await;
        if background.running() == 0 {
            // Drained: whatever this process leaves unsettled is adopted at once, not after a lease.
            self.instance.retire().await;
        } else {
            // A loop outlived the drain grace: its payments are adopted when the lease expires.
            tracing::warn!(
                tasks_running = background.running(),
                "not retiring the lease: loops still running"
            );
        }
        served
    }
}

/// Checkout on `db`: the sandbox provider behind its timeout layer, seat-lock's client, and
/// `outbox_ready` woken after every commit that queues an event.
fn checkout(
    config: &Config,
    db: &DatabaseConnection,
    seat_lock: Channel,
    outbox_ready: Arc<Notify>,
    owner: Owner,
) -> Checkout {
    let writes = CommitGroups::start(db.clone(), config.database_commit_groups as usize);
    let sandbox = Arc::new(SandboxGateway::new(db.clone(), writes.clone()));
    let gateway = Arc::new(TimeoutGateway::new(sandbox, config.provider_timeout()));
    if let Some(point) = config.crash_at {
        tracing::warn!(?point, "PAYMENT_CRASH_AT is set: this process will abort there (test-only)");
    }
    Checkout::new(db.clone(), writes, gateway, seat_lock, outbox_ready, owner, config.crash_at)
}

/// The balanced channel to seat-lock's internal listener (mutual TLS), connecting lazily.
fn seat_lock_channel(config: &Config) -> anyhow::Result<Channel> {
    let mesh = config.mesh_tls().map_err(anyhow::Error::msg)?;
    mesh.channel(&config.seat_lock_internal_url, SEAT_LOCK_TIMEOUT)
        .with_context(|| format!("bad SEAT_LOCK_INTERNAL_URL {}", config.seat_lock_internal_url))
}

/// A reconciler wired as the service's, for the `payment-reconcile` command: it settles
/// through the same provider and seat-lock, and leaves its outbox rows to the service's
/// relay. It runs no migrations: the schema must be the service's.
pub async fn reconciler(config: &Config) -> anyhow::Result<Reconciler> {
    let db = service_runtime::db::connect(&config.database.url, "payment", config.database_max_connections)
        .await
        .context("cannot connect to Postgres")?;
    // Its own instance id, never registered: it claims no payment and adopts none.
    let owner = Owner { id: uuid::Uuid::new_v4(), lease: config.instance_lease() };
    let checkout =
        Arc::new(checkout(config, &db, seat_lock_channel(config)?, Arc::new(Notify::new()), owner));
    Ok(Reconciler::new(db, checkout, Duration::from_secs(config.recovery_after_secs)))
}

/// How often the recovery pass looks for stuck payments at most; it looks every half
/// `RECOVERY_AFTER_SECS` when that is shorter, so a stuck payment waits at most one and a half
/// times that age.
const RECOVERY_PERIOD: Duration = Duration::from_secs(60);

/// Adopts dead processes' payments every half `lease` (at once after a start: a dead
/// process's payments wait at most one and a half leases after its last heartbeat; one
/// indexed query when there are none), and drives payments stuck for `older_than` every
/// [`RECOVERY_PERIOD`] or half `older_than`.
async fn recovery_loop(
    checkout: Arc<Checkout>,
    older_than: Duration,
    lease: Duration,
    stopping: CancellationToken,
) {
    let mut next_stuck = tokio::time::Instant::now();
    loop {
        match checkout.recover_orphaned_payments().await {
            Ok(pass) if pass == RecoveryPass::default() => {}
            Ok(pass) => tracing::warn!(?pass, "recovery adopted a dead process's payments"),
            Err(error) => tracing::error!(error = %format!("{error:#}"), "orphan recovery pass failed"),
        }
        if tokio::time::Instant::now() >= next_stuck {
            next_stuck = tokio::time::Instant::now() + RECOVERY_PERIOD.min(older_than / 2);
            match checkout.recover_stuck_payments(older_than).await {
                Ok(pass) if pass == RecoveryPass::default() => {}
                Ok(pass) => tracing::warn!(?pass, "recovery pass drove unsettled payments"),
                Err(error) => tracing::error!(error = %format!("{error:#}"), "recovery pass failed"),
            }
        }
        tokio::select! {
            () = stopping.cancelled() => return,
            () = tokio::time::sleep(lease / 2) => {}
        }
    }
}

/// How often `payment_reconciliation_seconds_since_clean` is refreshed between runs.
const SINCE_CLEAN_REFRESH: Duration = Duration::from_secs(15);

/// Reconciles every `every` (the first run right away, after a start or a crash), and keeps
/// the time since the last clean run current in between.
async fn reconcile_loop(reconciler: Arc<Reconciler>, every: Duration, stopping: CancellationToken) {
    let mut next_run = tokio::time::Instant::now();
    loop {
        if tokio::time::Instant::now() >= next_run {
            next_run += every;
            match reconciler.run(false).await {
                Ok(report) if report.discrepancies.is_empty() => {}
                Ok(report) => tracing::warn!(
                    found = report.discrepancies.len(),
                    unsettled = report.unsettled,
                    "reconciliation found discrepancies"
                ),
                Err(error) => tracing::error!(error = %format!("{error:#}"), "reconciliation failed"),
            }
        } else if let Err(error) = reconciler.publish_since_clean().await {
            tracing::warn!(error = %format!("{error:#}"), "cannot read the last clean reconciliation");
        }
        tokio::select! {
            () = stopping.cancelled() => return,
            () = tokio::time::sleep_until(next_run.min(tokio::time::Instant::now() + SINCE_CLEAN_REFRESH)) => {}
        }
    }
}
