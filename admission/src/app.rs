//! Wiring: connects Redis, NATS and inventory, binds the server, and runs the background
//! tasks (controller, the consumers that end passes early) next to it.

use std::{future::Future, sync::Arc, time::Duration};

use service_runtime::{
    GrpcServer,
    bus::{EventBus, consume, kind},
};
use ticketing_proto::{
    events::{ReleaseReason, event_envelope::Body},
    pass::{PassClaims, PassSigner},
    v1::admission_service_server::AdmissionServiceServer,
};

use crate::{
    catalogue::{Catalogue, INVENTORY_TIMEOUT},
    config::Config,
    controller::Controller,
    error::Error,
    fairness::ShuffleKey,
    service::AdmissionService,
    store::{EndReason, Store},
};

/// The name of the durable NATS consumer that frees passes after purchases; shared by all
/// replicas, so each confirmation is handled once.
pub const CONSUMER_NAME: &str = "admission";
/// The durable NATS consumer that frees the passes of users who walked away (their hold
/// expired), so the slot goes to the next in line instead of idling until the pass expires.
pub const ABANDONED_CONSUMER_NAME: &str = "admission-abandoned-holds";

/// Ends the pass a `BookingConfirmed` or an expired hold's `SeatsReleased` speaks of; other
/// events (a hold given back by its holder, who is still choosing) end nothing.
async fn end_pass_on(body: Option<Body>, store: Arc<Store>, relay: Arc<Controller>) -> anyhow::Result<()> {
    let (event_id, user_id, why) = match body {
        Some(Body::BookingConfirmed(booking)) => (booking.event_id, booking.user_id, EndReason::Bought),
        Some(Body::SeatsReleased(released)) if released.reason == ReleaseReason::Expired as i32 => {
            (released.event_id, released.user_id, EndReason::Abandoned)
        }
        _ => return Ok(()),
    };
    let Ok(event_id) = uuid::Uuid::parse_str(&event_id) else { return Ok(()) };
    let event_id = event_id.to_string();
    let freed = match store.release_pass(&event_id, &user_id, why).await {
        Err(Error::Rebuilding(_)) => {
            // Redis lost the event: redelivered after the rebuild, which may have restored
            // this pass.
            let _ = relay.rebuild_soon(&event_id);
            anyhow::bail!("the waiting room of event {event_id} is being rebuilt");
        }
        freed => freed?,
    };
    if freed {
        // The PassEnded is in the outbox; publish it now, not at the next tick.
        relay.start_relay(&event_id);
    }
    tracing::debug!(%event_id, %user_id, freed, ?why, "pass released");
    Ok(())
}

/// A shuffle secret derived from the signing pass key, for deployments without SHUFFLE_KEY:
/// the signer does not hand out its seed, but its signature over fixed claims that no pass
/// carries is a secret value (only the seed makes it) and deterministic (Ed25519 signatures
/// are), so every replica computes it alike (and that changes when the pass key
/// rotates, which is why SHUFFLE_KEY should be set).
fn fallback_shuffle_key(signer: &PassSigner) -> anyhow::Result<ShuffleKey> {
    let token = signer.sign(PassClaims { event_id: "admission-shuffle-key".into(), ..Default::default() });
    ShuffleKey::new(token.into_bytes()).map_err(anyhow::Error::msg)
}

/// A built, bound, not yet serving admission service.
pub struct App {
    server: GrpcServer,
    service: AdmissionService,
    bus: EventBus,
}

impl App {
    /// Connects to backing services and binds (port 0 allowed). Nothing is served yet.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let store = Arc::new(
            Store::connect(&config.redis.url, &config.redis.prefix, config.server.request_timeout()).await?,
        );
        let bus = EventBus::connect_checked(
            &config.nats.url,
            &config.nats.prefix,
            config.nats.event_stream_min_replicas,
        )
        .await?;
        let channel = ticketing_proto::connect(&config.inventory_url, INVENTORY_TIMEOUT)?;
        let shuffle_key = match config.shuffle_key.clone() {
            Some(key) => key,
            None => {
                tracing::warn!(
                    "SHUFFLE_KEY is not set; the pre-queue shuffle key is derived from the current pass key"
                );
                fallback_shuffle_key(&config.pass_signing_keys)?
            }
        };
        let catalogue = Arc::new(Catalogue::new(channel));
        let server = GrpcServer::bind(&config.server).await?;
        let controller = Arc::new(Controller::new(
            store.clone(),
            catalogue.clone(),
            bus.clone(),
            Duration::from_millis(config.controller_poll_ms),
            shuffle_key,
            config.check_in_window_ms,
            Duration::from_millis(config.finished_event_after_ms),
            server.background(),
        ));
        let service = AdmissionService {
            store,
            catalogue,
            controller,
            signer: Arc::new(config.pass_signing_keys.clone()),
            join_rate_limit: config.join_rate_limit,
            stopping: server.stopping(),
            watchers: Arc::new(tokio::sync::Semaphore::new(config.max_watchers)),
            max_watchers: config.max_watchers,
        };
        Ok(Self { server, service, bus })
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.server.local_addr().port()
    }

    /// Serves until `shutdown` resolves; the controller, the consumer and the streams stop
    /// on `server.stopping()`, and `serve` waits for them (tracked tasks).
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let Self { server, service, bus } = self;
        let stopping = server.stopping();
        server.spawn("admission-controller", service.controller.clone().run(stopping.clone()));

        // A pass ends early when its holder bought, or walked away (a hold of theirs expired):
        // one durable consumer per kind, so each reads only its own subject.
        for (name, event_kind, task) in [
            (CONSUMER_NAME, kind::BOOKING_CONFIRMED, "admission-booking-consumer"),
            (ABANDONED_CONSUMER_NAME, kind::SEATS_RELEASED, "admission-abandoned-hold-consumer"),
        ] {
            let consumer = bus.durable_consumer(name, &[event_kind]).await?;
            let (store, relay) = (service.store.clone(), service.controller.clone());
            server.spawn(
                task,
                consume(consumer, name, stopping.clone(), move |event| {
                    end_pass_on(event.body, store.clone(), relay.clone())
                }),
            );
        }

        server.serve(AdmissionServiceServer::new(service), shutdown).await
    }
}
