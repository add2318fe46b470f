//! Wiring: connects Redis, NATS, inventory and payment, binds the public and internal
//! listeners, runs the loops.

use std::future::Future;

use service_runtime::{GrpcServer, bus::EventBus};
use ticketing_proto::{
    internal::seat_lock_internal_service_server::SeatLockInternalServiceServer,
    v1::seat_lock_service_server::SeatLockServiceServer,
};

use crate::{
    Config,
    catalogue::{Catalogue, INVENTORY_TIMEOUT},
    internal::SeatLockInternal,
    passes, relay,
    service::{PAYMENT_TIMEOUT, SeatLockService},
    store::Store,
};

/// A built seat-lock: connected and bound, not yet serving.
pub struct App {
    server: GrpcServer,
    service: SeatLockService,
    store: Store,
    bus: EventBus,
    config: Config,
}

impl App {
    /// Connects to backing services, loads the scripts, binds (port 0 allowed). Nothing is served yet.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let store =
            Store::connect(&config.redis.url, &config.redis.prefix, config.server.request_timeout()).await?;
        let bus = EventBus::connect_checked(
            &config.nats.url,
            &config.nats.prefix,
            config.nats.event_stream_min_replicas,
        )
        .await?;
        let inventory = ticketing_proto::connect(&config.inventory_url, INVENTORY_TIMEOUT)?;
        let mesh = config.mesh_tls().map_err(anyhow::Error::msg)?;
        let payment = mesh.channel(&config.payment_internal_url, PAYMENT_TIMEOUT)?;
        let service = SeatLockService::new(
            Catalogue::new(inventory),
            store.clone(),
            payment,
            config.pass_verify_keys.clone(),
            config.hold_ttl(),
            config.checkout_grace(),
        );
        // Payment's RPCs only on the internal listener, behind mutual TLS.
        let internal = SeatLockInternalServiceServer::new(SeatLockInternal::new(service.clone()));
        let server = GrpcServer::bind(&config.server)
            .await?
            .bind_internal(config.mesh.internal_grpc_addr, &mesh, internal)
            .await?;
        Ok(Self { server, service, store, bus, config })
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.server.local_addr().port()
    }

    /// The internal listener's bound port.
    pub fn internal_port(&self) -> u16 {
        self.server.internal_addr().map_or(0, |addr| addr.port())
    }

    /// Serves until `shutdown` resolves; the sweeper, the relay and the `PassEnded` consumer
    /// stop on `server.stopping()`, and `serve` waits for them (tracked tasks).
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let Self { server, service, store, bus, config } = self;
        let stopping = server.stopping();
        let interval = config.sweep_interval();
        server.spawn("seat-lock-sweeper", relay::sweep_loop(store.clone(), interval, stopping.clone()));
        let ended = passes::consumer(&bus).await?;
        server.spawn(
            "seat-lock-pass-ended",
            passes::record_ended_passes(store.clone(), ended, stopping.clone()),
        );
        server.spawn("seat-lock-relay", relay::relay_loop(store, bus, interval, stopping));
        server.serve(SeatLockServiceServer::new(service), shutdown).await
    }
}
