//! Test harness: the fake inventory (`test_support`) serving the test's event, a fake payment
//! internal service on a port-0 mutual-TLS listener (payment's certificate), a real seat-lock
//! on the test's own Redis prefix and NATS prefix, its own service certificates, and pass
//! signing.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use fred::prelude::*;
use futures::StreamExt;
use seat_lock::{App, Config};
use service_runtime::{
    args::{NatsArgs, RedisArgs},
    config::ServerArgs,
    mtls::MeshArgs,
};
use test_support::{certs::MeshCerts, fakes::FakeInventory, testenv::TestEnv};
use ticketing_proto::{
    internal::{
        ConfirmHoldRequest, ListSoldSeatsRequest, ListSoldSeatsResponse, ReturnSeatsRequest, SoldSeat,
        payment_internal_service_server::{PaymentInternalService, PaymentInternalServiceServer},
        seat_lock_internal_service_client::SeatLockInternalServiceClient,
    },
    pass::{PassClaims, PassSigner, generate_signing_key},
    v1::{Event, HoldSeatsRequest, Zone, ZoneKind, seat_lock_service_client::SeatLockServiceClient, *},
};
use tonic::{
    Request, Response, Status,
    transport::{Certificate, Channel, Identity, ServerTlsConfig},
};

/// The pass key admission signs with in this test run: (PASS_SIGNING_KEYS, PASS_VERIFY_KEYS).
pub static CURRENT_KEY: std::sync::LazyLock<(String, String)> =
    std::sync::LazyLock::new(|| generate_signing_key("k2"));
/// The key before a rotation; seat-lock still verifies it.
pub static PREVIOUS_KEY: std::sync::LazyLock<(String, String)> =
    std::sync::LazyLock::new(|| generate_signing_key("k1"));
pub const MAX_TICKETS: u32 = 4;
/// Seated zone "A": rows R1..R5 of 10 seats.
pub const ROWS: [&str; 5] = ["R1", "R2", "R3", "R4", "R5"];
pub const SEATS_PER_ROW: u32 = 10;
pub const CAPACITY_A: u32 = 50;
pub const PRICE_A: i64 = 5_000;
pub const PRICE_GA: i64 = 2_000;

/// Lists the sold seats the test put in `sold`; fails while `down` is set.
#[derive(Clone, Default)]
pub struct FakePayment {
    pub sold: Arc<Mutex<Vec<SoldSeat>>>,
    pub down: Arc<AtomicBool>,
}

#[tonic::async_trait]
impl PaymentInternalService for FakePayment {
    async fn list_sold_seats(
        &self,
        request: Request<ListSoldSeatsRequest>,
    ) -> Result<Response<ListSoldSeatsResponse>, Status> {
        if self.down.load(Ordering::SeqCst) {
            return Err(Status::unavailable("payment is down"));
        }
        let event_id = request.into_inner().event_id;
        let seats = self.sold.lock().map_err(|_| Status::internal("poisoned"))?.clone();
        let _ = event_id;
        Ok(Response::new(ListSoldSeatsResponse { seats }))
    }
}

/// A token of `user` from the test issuer (the one `ServerArgs::loopback` trusts).
pub fn token(user: &str) -> String {
    service_runtime::auth::TokenIssuer::for_tests().token(user, false, Duration::from_secs(3600))
}

/// `message` with `authorization: Bearer <token>`, or with no token.
pub fn with_token<T>(token: Option<&str>, message: T) -> Request<T> {
    let mut request = Request::new(message);
    if let Some(token) = token {
        request.metadata_mut().insert("authorization", service_runtime::auth::bearer(token));
    }
    request
}

/// `message` as `user` sends it.
pub fn as_user<T>(user: &str, message: T) -> Request<T> {
    with_token(Some(&token(user)), message)
}

/// Seat-lock's client as the users' apps call it: see [`TestApp::client`].
#[derive(Clone)]
pub struct UserClient(pub SeatLockServiceClient<Channel>);

impl UserClient {
    pub async fn hold_seats(&mut self, request: HoldSeatsRequest) -> Result<Response<Hold>, Status> {
        let user = request.user_id.clone();
        self.0.hold_seats(as_user(&user, request)).await
    }

    pub async fn hold_best_available(
        &mut self,
        request: HoldBestAvailableRequest,
    ) -> Result<Response<Hold>, Status> {
        let user = request.user_id.clone();
        self.0.hold_best_available(as_user(&user, request)).await
    }

    pub async fn release_hold(
        &mut self,
        request: ReleaseHoldRequest,
    ) -> Result<Response<ReleaseHoldResponse>, Status> {
        let user = request.user_id.clone();
        self.0.release_hold(as_user(&user, request)).await
    }

    pub async fn get_hold(&mut self, request: GetHoldRequest) -> Result<Response<Hold>, Status> {
        let user = request.user_id.clone();
        self.0.get_hold(as_user(&user, request)).await
    }
}

/// A running seat-lock with its fakes.
pub struct TestApp {
    pub env: TestEnv,
    pub client: SeatLockServiceClient<Channel>,
    /// The internal service, on the internal port, as payment (its one allowed caller).
    pub internal: SeatLockInternalServiceClient<Channel>,
    /// The public listener's channel.
    pub channel: Channel,
    /// The internal listener's port.
    pub internal_port: u16,
    /// The test's service certificates.
    pub certs: MeshCerts,
    pub event_id: String,
    /// The URL of the fake inventory.
    pub fakes_url: String,
    pub payment: FakePayment,
    /// Signs passes as admission does (seat-lock itself holds only the public keys).
    pub signer: PassSigner,
    pub redis: Client,
}

fn event(event_id: &str) -> Event {
    Event {
        event_id: event_id.to_owned(),
        venue_id: uuid::Uuid::new_v4().to_string(),
        name: "Test concert".into(),
        max_tickets_per_user: MAX_TICKETS,
        currency: "EUR".into(),
        zones: vec![
            Zone {
                zone_id: "A".into(),
                name: "Stalls".into(),
                kind: ZoneKind::Seated as i32,
                price_cents: PRICE_A,
                row_labels: ROWS.iter().map(|r| (*r).to_owned()).collect(),
                seats_per_row: SEATS_PER_ROW,
                accessible_seat_ids: vec![],
                capacity: CAPACITY_A,
            },
            Zone {
                zone_id: "GA".into(),
                name: "Standing".into(),
                kind: ZoneKind::GeneralAdmission as i32,
                price_cents: PRICE_GA,
                capacity: 100,
                ..Default::default()
            },
        ],
        total_capacity: CAPACITY_A + 100,
        // What admission reads, for the tests that run it beside seat-lock: on sale already.
        sale_opens_at: Some(service_runtime::bus::timestamp_ms(now_ms() - 60_000)),
        admission_capacity: 2,
        admission_tick_ms: 20,
        pass_ttl_seconds: 600,
        ..Default::default()
    }
}

/// Starts the fakes and seat-lock with holds lasting `hold_ttl_secs`.
pub async fn spawn_app(hold_ttl_secs: u64) -> anyhow::Result<TestApp> {
    let env = TestEnv::new().await?;
    let redis_url = env.redis_url.clone();
    spawn_app_on(env, &redis_url, hold_ttl_secs, uuid::Uuid::new_v4().to_string()).await
}

/// Like [`spawn_app`], with seat-lock (and the test's own Redis client) on `redis_url`, e.g.
/// a `redis-cluster://` URL, and the fake inventory serving `event_id`.
pub async fn spawn_app_on(
    env: TestEnv,
    redis_url: &str,
    hold_ttl_secs: u64,
    event_id: String,
) -> anyhow::Result<TestApp> {
    let payment = FakePayment::default();

    let certs = test_support::certs::ensure(
        &std::env::temp_dir().join(format!("seat-lock-certs-{}", env.nats_prefix)),
    )?;
    // Inventory serves one event, NOT_FOUND for any other.
    let inventory = FakeInventory::default();
    inventory.insert(event(&event_id));
    let inventory_url = inventory.start().await;
    // Payment's internal listener: its certificate, clients of the mesh CA only.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let payment_addr = listener.local_addr()?;
    let tls = ServerTlsConfig::new()
        .identity(Identity::from_pem(
            std::fs::read(certs.cert("payment"))?,
            std::fs::read(certs.key("payment"))?,
        ))
        .client_ca_root(Certificate::from_pem(std::fs::read(certs.ca())?));
    let router = tonic::transport::Server::builder()
        .tls_config(tls)?
        .add_service(PaymentInternalServiceServer::new(payment.clone()));
    tokio::spawn(router.serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)));

    let config = Config {
        server: ServerArgs::loopback(),
        mesh: mesh_args(&certs, "seat-lock"),
        redis: RedisArgs::new(redis_url, &env.redis_prefix),
        nats: NatsArgs::new(&env.nats_url, &env.nats_prefix),
        inventory_url: inventory_url.clone(),
        payment_internal_url: format!("https://{payment_addr}"),
        pass_verify_keys: format!("{},{}", CURRENT_KEY.1, PREVIOUS_KEY.1).parse()?,
        allow_example_secrets: false,
        hold_ttl_secs,
        checkout_grace_secs: 300,
        sweep_interval_ms: 100,
    };
    config.validate().map_err(anyhow::Error::msg)?;
    let app = App::build(config).await?;
    let port = app.port();
    let internal_port = app.internal_port();
    tokio::spawn(app.run_until_stopped(std::future::pending()));
    let channel = Channel::from_shared(format!("http://127.0.0.1:{port}"))?.connect().await?;
    let client = SeatLockServiceClient::new(channel.clone());
    let internal = SeatLockInternalServiceClient::new(certs.channel(internal_port, Some("payment"))?);

    let redis = Builder::from_config(fred::prelude::Config::from_url(redis_url)?).build()?;
    redis.init().await?;
    Ok(TestApp {
        env,
        client,
        internal,
        channel,
        internal_port,
        certs,
        event_id,
        payment,
        fakes_url: inventory_url,
        signer: CURRENT_KEY.0.parse()?,
        redis,
    })
}

/// `identity`'s certificate from `certs`, and an internal listener on a free loopback port.
pub fn mesh_args(certs: &MeshCerts, identity: &str) -> MeshArgs {
    MeshArgs {
        internal_grpc_addr: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        tls_cert: certs.cert(identity),
        tls_key: certs.key(identity),
        tls_ca: certs.ca(),
    }
}

impl TestApp {
    /// A valid pass for `user` on this event, signed with the current key.
    pub fn pass(&self, user: &str) -> String {
        self.signer.sign(claims(&self.event_id, user, now_ms() + 60_000))
    }

    /// A client that sends each call with the token of the request's `user_id`, as that
    /// user's app would. Use `self.client` to send crafted tokens.
    pub fn client(&self) -> UserClient {
        UserClient(self.client.clone())
    }

    /// The internal service, as payment calls it.
    pub fn internal(&self) -> SeatLockInternalServiceClient<Channel> {
        self.internal.clone()
    }

    /// The internal service as `identity` (`None`: no client certificate).
    pub fn internal_as(
        &self,
        identity: Option<&str>,
    ) -> anyhow::Result<SeatLockInternalServiceClient<Channel>> {
        Ok(SeatLockInternalServiceClient::new(self.certs.channel(self.internal_port, identity)?))
    }

    /// A HoldSeats request for `user` with a valid pass.
    pub fn hold_request(&self, user: &str, seats: &[&str]) -> HoldSeatsRequest {
        HoldSeatsRequest {
            pass_token: self.pass(user),
            event_id: self.event_id.clone(),
            user_id: user.to_owned(),
            seat_ids: seats.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    /// Holds `seats` for `user`.
    pub async fn hold(&self, user: &str, seats: &[&str]) -> Result<Hold, Status> {
        self.client().hold_seats(self.hold_request(user, seats)).await.map(Response::into_inner)
    }

    /// Sells `hold` under `booking_id` (ConfirmHold as payment calls it).
    pub async fn sell(&self, hold: &Hold, booking_id: &str) -> Result<Hold, Status> {
        let confirm = ConfirmHoldRequest {
            event_id: self.event_id.clone(),
            hold_id: hold.hold_id.clone(),
            user_id: hold.user_id.clone(),
            booking_id: booking_id.to_owned(),
        };
        self.internal().confirm_hold(confirm).await.map(Response::into_inner)
    }

    /// The ReturnSeats request payment's seat-return outbox sends for `hold` sold under
    /// `booking_id`.
    pub fn return_request(&self, hold: &Hold, booking_id: &str) -> ReturnSeatsRequest {
        ReturnSeatsRequest {
            event_id: self.event_id.clone(),
            booking_id: booking_id.to_owned(),
            hold_id: hold.hold_id.clone(),
            user_id: hold.user_id.clone(),
            zone_id: hold.zone_id.clone(),
            seat_ids: hold.seat_ids.clone(),
            quantity: hold.quantity,
        }
    }

    /// Calls ReturnSeats; answers `returned`.
    pub async fn return_seats(&self, request: ReturnSeatsRequest) -> Result<bool, Status> {
        Ok(self.internal.clone().return_seats(request).await?.into_inner().returned)
    }

    /// Tickets `user` has bought, read straight from Redis (0 when the key is absent).
    pub async fn bought(&self, user: &str) -> anyhow::Result<i64> {
        Ok(self.redis.get::<Option<i64>, _>(self.key(&format!("bought:{user}"))).await?.unwrap_or(0))
    }

    /// A Redis key of this test's event.
    pub fn key(&self, suffix: &str) -> String {
        format!("{}sl:{{{}}}:{suffix}", self.env.redis_prefix, self.event_id)
    }

    /// The free counter of a zone, read straight from Redis.
    pub async fn free(&self, zone: &str) -> anyhow::Result<i64> {
        Ok(self.redis.get::<Option<i64>, _>(self.key(&format!("free:{zone}"))).await?.unwrap_or(-1))
    }

    /// Deletes every key of this test (never FLUSHALL: other tests share the server).
    pub async fn flush_test_keys(&self) -> anyhow::Result<()> {
        let mut keys = Vec::new();
        let mut scan = self.redis.scan_buffered(format!("{}*", self.env.redis_prefix), Some(500), None);
        while let Some(key) = scan.next().await {
            keys.push(key?);
        }
        for key in keys {
            let _: i64 = self.redis.del(key).await?;
        }
        Ok(())
    }
}

pub fn claims(event_id: &str, user: &str, expires_at_ms: i64) -> PassClaims {
    PassClaims {
        key_id: String::new(),
        event_id: event_id.to_owned(),
        user_id: user.to_owned(),
        pass_id: uuid::Uuid::new_v4().to_string(),
        expires_at_ms,
    }
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The ErrorInfo reason and metadata of a refusal (empty when it has none).
pub fn reason_of(status: &Status) -> (String, std::collections::HashMap<String, String>) {
    service_runtime::status::reason(status).unwrap_or_default()
}

/// Generous bound for background work (sweeper, relay) in tests; never a speed assertion.
pub const EVENTUALLY: Duration = Duration::from_secs(15);
