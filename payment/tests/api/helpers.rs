//! Test harness: the real payment service on port 0 against the test's Postgres and NATS,
//! with a small in-test seat-lock whose answers each test controls, on a mutual-TLS listener
//! with seat-lock's certificate (the process's test certificates, [`certs`]).

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use payment::{App, Config};
use prost::Message;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};
use service_runtime::{
    args::{DatabaseArgs, NatsArgs},
    auth::{TokenIssuer, bearer},
    bus::EventBus,
    config::ServerArgs,
    mtls::{MeshArgs, require_peer},
    status::{ErrorReason, with_reason, with_received_reason},
};
use test_support::{certs::MeshCerts, testenv::TestEnv};
use ticketing_proto::{
    events::EventEnvelope,
    internal::{
        self,
        payment_internal_service_client::PaymentInternalServiceClient,
        seat_lock_internal_service_server::{SeatLockInternalService, SeatLockInternalServiceServer},
    },
    v1::{self, payment_service_client::PaymentServiceClient},
};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{
    Code, Request, Response, Status,
    transport::{Certificate, Channel, Identity, ServerTlsConfig},
};
use uuid::Uuid;

/// What the fake seat-lock knows and how it should answer.
#[derive(Default)]
pub struct FakeState {
    pub holds: HashMap<String, v1::Hold>,
    /// When set, BeginCheckout refuses with this code and reason.
    pub refuse_begin: Option<(Code, &'static str)>,
    /// When set, ConfirmHold refuses with this code and reason (e.g. the hold expired).
    pub refuse_confirm: Option<(Code, &'static str)>,
    /// When set, a hold lives this long from its creation, and BeginCheckout extends it by
    /// `checkout_grace` from then: past its deadline, BeginCheckout and ConfirmHold refuse
    /// with `HOLD_EXPIRED`, as seat-lock does. `None`: holds never expire.
    pub hold_ttl: Option<Duration>,
    pub checkout_grace: Duration,
    /// Each hold's deadline, and the booking id it was sold under.
    pub deadlines: HashMap<String, Instant>,
    pub sold_under: HashMap<String, String>,
    /// The next BeginCheckout waits this long before it looks at the hold (a seat-lock slowed
    /// down by a Redis that is restarting), once.
    pub begin_delay: Option<Duration>,
}

/// An honest, minimal seat-lock: holds live in a map; checkout and confirm check ownership.
/// Its server also answers seat-lock's internal `ReturnSeats` and inventory's `GetEvent`
/// (module `mesh_fakes`).
#[derive(Default, Clone)]
pub struct FakeSeatLock {
    pub state: Arc<Mutex<FakeState>>,
    pub begin_calls: Arc<AtomicUsize>,
    pub confirm_calls: Arc<AtomicUsize>,
    /// Every `ReturnSeats` seat-lock accepted, in order.
    pub returns: Arc<Mutex<Vec<ticketing_proto::internal::ReturnSeatsRequest>>>,
    /// While set, `ReturnSeats` answers UNAVAILABLE.
    pub refuse_returns: Arc<std::sync::atomic::AtomicBool>,
    pub inventory: crate::mesh_fakes::FakeInventory,
}

impl FakeSeatLock {
    /// Adds a seated hold of `seats` in zone A (or a GA hold of `quantity` when `seats` is empty).
    pub fn add_hold(&self, event_id: Uuid, user_id: &str, seats: &[&str], quantity: u32) -> Uuid {
        let hold_id = Uuid::now_v7();
        let hold = v1::Hold {
            hold_id: hold_id.to_string(),
            event_id: event_id.to_string(),
            user_id: user_id.to_owned(),
            zone_id: "A".to_owned(),
            seat_ids: seats.iter().map(|s| (*s).to_owned()).collect(),
            quantity,
            state: v1::HoldState::Held.into(),
            expires_at: None,
            total_price_cents: 5_000 * i64::from(quantity),
            currency: "EUR".to_owned(),
        };
        let mut state = self.state.lock().unwrap();
        if let Some(ttl) = state.hold_ttl {
            state.deadlines.insert(hold_id.to_string(), Instant::now() + ttl);
        }
        state.holds.insert(hold_id.to_string(), hold);
        hold_id
    }

    pub fn refuse_begin(&self, refusal: Option<(Code, &'static str)>) {
        self.state.lock().unwrap().refuse_begin = refusal;
    }

    pub fn refuse_confirm(&self, refusal: Option<(Code, &'static str)>) {
        self.state.lock().unwrap().refuse_confirm = refusal;
    }

    /// Holds added from now on expire `ttl` after creation, or `grace` after BeginCheckout.
    pub fn expire_holds(&self, ttl: Duration, grace: Duration) {
        let mut state = self.state.lock().unwrap();
        state.hold_ttl = Some(ttl);
        state.checkout_grace = grace;
    }

    pub fn begin_calls(&self) -> usize {
        self.begin_calls.load(Ordering::SeqCst)
    }

    /// Moves a hold to `state`: checkout (`booking_id` None) or sold under `booking_id`.
    fn transition(
        &self,
        event_id: &str,
        hold_id: &str,
        user_id: &str,
        refusal: Option<(Code, &'static str)>,
        booking_id: Option<&str>,
    ) -> Result<Response<v1::Hold>, Status> {
        if let Some((code, reason)) = refusal {
            // The wire string a seat-lock would send, as the test chose it (some are faults, not reasons).
            return Err(with_received_reason(code, format!("refused: {reason}"), reason, []));
        }
        let mut guard = self.state.lock().unwrap();
        let FakeState { holds, deadlines, sold_under, checkout_grace, .. } = &mut *guard;
        // Another user's hold does not exist for the paying user, as in seat-lock.
        let hold = holds
            .get_mut(hold_id)
            .filter(|hold| hold.event_id == event_id && hold.user_id == user_id)
            .ok_or_else(|| with_reason(Code::NotFound, "no such hold", ErrorReason::HoldNotFound, []))?;
        if let Some(sold) = sold_under.get(hold_id) {
            // Seat-lock answers a replay under the same booking id with the sold hold.
            return if booking_id == Some(sold.as_str()) {
                Ok(Response::new(hold.clone()))
            } else {
                Err(with_reason(Code::FailedPrecondition, "hold already sold", ErrorReason::HoldSold, []))
            };
        }
        if deadlines.get(hold_id).is_some_and(|deadline| Instant::now() >= *deadline) {
            return Err(with_reason(Code::FailedPrecondition, "hold expired", ErrorReason::HoldExpired, []));
        }
        match booking_id {
            None => {
                if let Some(deadline) = deadlines.get_mut(hold_id) {
                    *deadline = Instant::now() + *checkout_grace;
                }
                hold.state = v1::HoldState::Checkout.into();
            }
            Some(booking_id) => {
                sold_under.insert(hold_id.to_owned(), booking_id.to_owned());
                hold.state = v1::HoldState::Sold.into();
            }
        }
        Ok(Response::new(hold.clone()))
    }
}

#[tonic::async_trait]
impl SeatLockInternalService for FakeSeatLock {
    async fn return_seats(
        &self,
        request: Request<internal::ReturnSeatsRequest>,
    ) -> Result<Response<internal::ReturnSeatsResponse>, Status> {
        require_peer(&request, &["payment"])?;
        if self.refuse_returns.load(Ordering::SeqCst) {
            return Err(Status::unavailable("seat-lock is down"));
        }
        let request = request.into_inner();
        let mut returns = self.returns.lock().unwrap();
        let returned = !returns.iter().any(|r| r.booking_id == request.booking_id);
        returns.push(request);
        Ok(Response::new(internal::ReturnSeatsResponse { returned }))
    }
    async fn begin_checkout(
        &self,
        request: Request<internal::BeginCheckoutRequest>,
    ) -> Result<Response<v1::Hold>, Status> {
        // Payment calls with its own certificate, as seat-lock checks.
        require_peer(&request, &["payment"])?;
        self.begin_calls.fetch_add(1, Ordering::SeqCst);
        let r = request.into_inner();
        let delay = self.state.lock().unwrap().begin_delay.take();
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
        let refusal = self.state.lock().unwrap().refuse_begin;
        self.transition(&r.event_id, &r.hold_id, &r.user_id, refusal, None)
    }
    async fn confirm_hold(
        &self,
        request: Request<internal::ConfirmHoldRequest>,
    ) -> Result<Response<v1::Hold>, Status> {
        require_peer(&request, &["payment"])?;
        self.confirm_calls.fetch_add(1, Ordering::SeqCst);
        let r = request.into_inner();
        assert!(Uuid::parse_str(&r.booking_id).is_ok(), "ConfirmHold without a booking id");
        let refusal = self.state.lock().unwrap().refuse_confirm;
        self.transition(&r.event_id, &r.hold_id, &r.user_id, refusal, Some(&r.booking_id))
    }
}

/// The service certificates of this test process, made once in a directory of its own.
pub fn certs() -> &'static MeshCerts {
    static CERTS: std::sync::OnceLock<MeshCerts> = std::sync::OnceLock::new();
    CERTS.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("payment-test-certs-{}", std::process::id()));
        test_support::certs::ensure(&dir).unwrap()
    })
}

/// Where the fakes listen: seat-lock's internal listener (mutual TLS) and inventory.
#[derive(Clone, Debug)]
pub struct FakeUrls {
    /// `https://127.0.0.1:<port>`, with seat-lock's certificate.
    pub seat_lock: String,
    /// `http://127.0.0.1:<port>`.
    pub inventory: String,
}

/// Serves `fake` as seat-lock's internal service on a free loopback port (mutual TLS, with
/// seat-lock's certificate), and its inventory on another; returns their URLs.
pub async fn spawn_fake_seat_lock(fake: FakeSeatLock) -> FakeUrls {
    let certs = certs();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let seat_lock = listener.local_addr().unwrap();
    let tls = ServerTlsConfig::new()
        .identity(Identity::from_pem(
            std::fs::read(certs.cert("seat-lock")).unwrap(),
            std::fs::read(certs.key("seat-lock")).unwrap(),
        ))
        .client_ca_root(Certificate::from_pem(std::fs::read(certs.ca()).unwrap()));
    tokio::spawn(
        tonic::transport::Server::builder()
            .tls_config(tls)
            .unwrap()
            .add_service(SeatLockInternalServiceServer::new(fake.clone()))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    let inventory = fake.inventory.start().await;
    FakeUrls { seat_lock: format!("https://{seat_lock}"), inventory }
}

/// `TLS_CERT`, `TLS_KEY`, `TLS_CA` and a free internal port, for a payment process.
pub fn mesh_env() -> Vec<(String, String)> {
    let mut env = certs().env("payment");
    env.push(("INTERNAL_GRPC_ADDR".into(), "127.0.0.1:0".into()));
    env
}

/// A running payment service with its fake seat-lock and a view of its database.
pub struct TestApp {
    pub env: TestEnv,
    pub client: PaymentServiceClient<Channel>,
    /// Payment's internal service, as seat-lock (its one allowed caller) calls it.
    pub internal: PaymentInternalServiceClient<Channel>,
    /// The public listener's port.
    pub port: u16,
    /// The internal listener's port.
    pub internal_port: u16,
    pub seat_lock: FakeSeatLock,
    pub db: DatabaseConnection,
    pub bus: EventBus,
    pub event_id: Uuid,
}

pub fn config(env: &TestEnv, urls: &FakeUrls) -> Config {
    let certs = certs();
    Config {
        server: ServerArgs::loopback(),
        mesh: MeshArgs {
            internal_grpc_addr: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            tls_cert: certs.cert("payment"),
            tls_key: certs.key("payment"),
            tls_ca: certs.ca(),
        },
        database: DatabaseArgs::new(&env.database_url),
        database_max_connections: 16,
        database_commit_groups: 4,
        nats: NatsArgs::new(&env.nats_url, &env.nats_prefix),
        seat_lock_internal_url: urls.seat_lock.clone(),
        inventory_url: urls.inventory.clone(),
        relay_interval_ms: 50,
        provider_timeout_ms: 20_000,
        recovery_after_secs: 300,
        max_payments_in_flight: None,
        instance_lease_secs: 6,
        reconcile_interval_secs: 300,
        crash_at: None,
    }
}

/// Starts `app` in the background and connects a client to it.
pub async fn serve(app: App) -> PaymentServiceClient<Channel> {
    let port = app.port();
    tokio::spawn(app.run_until_stopped(std::future::pending()));
    let channel =
        ticketing_proto::connect(&format!("http://127.0.0.1:{port}"), Duration::from_secs(30)).unwrap();
    PaymentServiceClient::new(channel)
}

/// A fresh environment, fake seat-lock and payment service.
pub async fn spawn_app() -> TestApp {
    let env = TestEnv::new().await.unwrap();
    let seat_lock = FakeSeatLock::default();
    let url = spawn_fake_seat_lock(seat_lock.clone()).await;
    let app = App::build(config(&env, &url)).await.unwrap();
    attach(env, seat_lock, app).await
}

/// Serves a built `app` and gathers what the tests need around it.
pub async fn attach(env: TestEnv, seat_lock: FakeSeatLock, app: App) -> TestApp {
    let (port, internal_port) = (app.port(), app.internal_port());
    let client = serve(app).await;
    let internal =
        PaymentInternalServiceClient::new(certs().channel(internal_port, Some("seat-lock")).unwrap());
    let db = env.database().await.unwrap();
    let bus = EventBus::connect(&env.nats_url, &env.nats_prefix).await.unwrap();
    TestApp { env, client, internal, port, internal_port, seat_lock, db, bus, event_id: Uuid::now_v7() }
}

impl TestApp {
    /// Payment's internal service as seat-lock calls it.
    pub fn internal(&self) -> PaymentInternalServiceClient<Channel> {
        self.internal.clone()
    }

    /// Payment's internal service as `identity` (`None`: no client certificate).
    pub fn internal_as(&self, identity: Option<&str>) -> PaymentInternalServiceClient<Channel> {
        PaymentInternalServiceClient::new(certs().channel(self.internal_port, identity).unwrap())
    }

    pub fn pay_request(&self, key: &str, hold_id: Uuid, user_id: &str, method: &str) -> v1::PayRequest {
        v1::PayRequest {
            idempotency_key: key.to_owned(),
            event_id: self.event_id.to_string(),
            hold_id: hold_id.to_string(),
            user_id: user_id.to_owned(),
            payment_method: method.to_owned(),
        }
    }

    /// One reconciliation run through the RPC.
    pub async fn reconcile(&self, dry_run: bool) -> v1::ReconcileReport {
        self.client.clone().reconcile(as_admin(v1::ReconcileRequest { dry_run })).await.unwrap().into_inner()
    }

    /// What a reconciliation (report only) finds; the end of every money test expects nothing.
    pub async fn reconciliation_findings(&self) -> Vec<v1::Discrepancy> {
        self.reconcile(true).await.discrepancies
    }

    pub async fn pay(&self, request: v1::PayRequest) -> Result<v1::PayResponse, Status> {
        self.client.clone().pay(authed(request)).await.map(Response::into_inner)
    }

    /// `SELECT count(*)` of a table of schema `payment`, with an optional `WHERE`.
    pub async fn count(&self, table: &str, filter: &str) -> i64 {
        let where_clause = if filter.is_empty() { String::new() } else { format!(" WHERE {filter}") };
        self.scalar(&format!("SELECT count(*) AS n FROM payment.{table}{where_clause}")).await
    }

    pub async fn scalar(&self, query: &str) -> i64 {
        self.first_value(query).await
    }

    pub async fn scalar_bytes(&self, query: &str) -> Vec<u8> {
        self.first_value(query).await
    }

    pub async fn scalar_text(&self, query: &str) -> String {
        self.first_value(query).await
    }

    /// The first column of the one row `query` returns.
    async fn first_value<T: sea_orm::TryGetable>(&self, query: &str) -> T {
        let row = self
            .db
            .query_one_raw(Statement::from_string(DbBackend::Postgres, query.to_owned()))
            .await
            .unwrap()
            .unwrap();
        row.try_get_by_index::<T>(0).unwrap()
    }

    /// Waits until the relay has emptied the outbox; false if it did not within 15 s.
    pub async fn outbox_drained(&self) -> bool {
        test_support::testenv::eventually(Duration::from_secs(15), || async {
            (self.count("outbox", "").await == 0).then_some(())
        })
        .await
        .is_some()
    }

    /// Every message in the test's stream: (subject, Nats-Msg-Id, envelope).
    pub async fn stream_events(&self) -> Vec<(String, String, EventEnvelope)> {
        let stream = self.bus.stream().await.unwrap();
        let mut stream = stream;
        let info = stream.info().await.unwrap().clone();
        let mut events = Vec::new();
        if info.state.messages == 0 {
            return events;
        }
        for sequence in info.state.first_sequence..=info.state.last_sequence {
            let Ok(message) = stream.get_raw_message(sequence).await else { continue };
            let id = message.headers.get("Nats-Msg-Id").map(|v| v.as_str().to_owned()).unwrap_or_default();
            let envelope = EventEnvelope::decode(message.payload).unwrap();
            events.push((message.subject.to_string(), id, envelope));
        }
        events
    }

    /// Waits until the stream holds a message with this id.
    pub async fn event_with_id(&self, message_id: &str) -> Option<(String, EventEnvelope)> {
        test_support::testenv::eventually(Duration::from_secs(15), || async {
            self.stream_events()
                .await
                .into_iter()
                .find(|(_, id, _)| id == message_id)
                .map(|(subject, _, envelope)| (subject, envelope))
        })
        .await
    }
}

impl TestApp {
    /// Every disagreement between the provider's ledger and the books (I2): a captured charge
    /// has exactly one live booking of a confirmed payment and no refund; a refunded one a
    /// refunded payment, its finished refund and no live booking; a declined one a declined
    /// payment; no charge stays pending; no confirmed payment lacks a captured charge.
    pub async fn ledger_violations(&self) -> Vec<String> {
        let rows = self
            .db
            .query_all_raw(Statement::from_string(
                DbBackend::Postgres,
                "SELECT l.charge_id, l.status AS charge, p.status AS payment, \
                 (SELECT count(*) FROM payment.bookings b WHERE b.payment_id = p.payment_id \
                  AND b.status IN ('confirmed', 'cancelling')) AS live, \
                 (SELECT count(*) FROM payment.refunds r WHERE r.payment_id = p.payment_id \
                  AND r.state = 'refunded') AS refunds \
                 FROM payment.psp_ledger l LEFT JOIN payment.payments p ON p.payment_id::text = l.idempotency_key \
                 UNION ALL \
                 SELECT 'none', 'none', p.status, 1, 0 FROM payment.payments p WHERE p.status = 'confirmed' \
                 AND NOT EXISTS (SELECT 1 FROM payment.psp_ledger l \
                 WHERE l.idempotency_key = p.payment_id::text AND l.status = 'captured')",
            ))
            .await
            .unwrap();
        let mut violations = Vec::new();
        for row in rows {
            let charge: String = row.try_get("", "charge_id").unwrap();
            let status: String = row.try_get("", "charge").unwrap();
            let payment: Option<String> = row.try_get("", "payment").unwrap();
            let live: i64 = row.try_get("", "live").unwrap();
            let refunds: i64 = row.try_get("", "refunds").unwrap();
            let fine = match (status.as_str(), payment.as_deref()) {
                ("captured", Some("confirmed")) => live == 1 && refunds == 0,
                ("refunded", Some("refunded")) => live == 0 && refunds == 1,
                ("declined", Some("declined")) => live == 0 && refunds == 0,
                _ => false,
            };
            if !fine {
                violations.push(format!(
                    "charge {charge} is {status}: payment {payment:?}, {live} live bookings, {refunds} refunds"
                ));
            }
        }
        violations
    }

    /// Waits until no payment is left between states and no charge is pending at the
    /// provider; false if that did not happen within 30 s.
    pub async fn all_settled(&self) -> bool {
        test_support::testenv::eventually(Duration::from_secs(30), || async {
            let open = self
                .count("payments", "status IN ('processing', 'charging', 'unknown', 'captured', 'refunding')")
                .await
                + self.count("psp_ledger", "status = 'pending'").await;
            (open == 0).then_some(())
        })
        .await
        .is_some()
    }
}

/// The metrics this test binary records (one global recorder, installed on first use):
/// tests look for series only they produce.
pub fn metrics() -> &'static metrics_exporter_prometheus::PrometheusHandle {
    static HANDLE: std::sync::OnceLock<metrics_exporter_prometheus::PrometheusHandle> =
        std::sync::OnceLock::new();
    HANDLE.get_or_init(|| metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder().unwrap())
}

/// The ErrorInfo reason of a status, if any.
pub fn reason(status: &Status) -> Option<String> {
    service_runtime::status::reason(status).map(|(reason, _)| reason)
}

/// A request whose `user_id` names the user it acts for.
pub trait ActsFor {
    fn user(&self) -> &str;
}

macro_rules! acts_for {
    ($($request:ty),*) => {$(
        impl ActsFor for $request {
            fn user(&self) -> &str {
                &self.user_id
            }
        }
    )*};
}
acts_for!(
    v1::PayRequest,
    v1::GetPaymentRequest,
    v1::GetBookingRequest,
    v1::ListBookingsRequest,
    v1::CancelBookingRequest
);

/// A user's token from the tests' issuer (one per user, minted once).
pub fn token_of(user: &str) -> String {
    static TOKENS: std::sync::LazyLock<std::sync::Mutex<std::collections::HashMap<String, String>>> =
        std::sync::LazyLock::new(Default::default);
    let mut tokens = TOKENS.lock().unwrap();
    tokens
        .entry(user.to_owned())
        .or_insert_with(|| TokenIssuer::for_tests().token(user, false, Duration::from_secs(3600)))
        .clone()
}

/// `message` sent with the token of the user it names (a request with an empty `user_id`
/// goes as `tester`, so it acts for the token's subject).
pub fn authed<T: ActsFor>(message: T) -> tonic::Request<T> {
    let user = match message.user() {
        "" => "tester".to_owned(),
        user => user.to_owned(),
    };
    as_user(&user, message)
}

/// `message` sent with `user`'s token.
pub fn as_user<T>(user: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("authorization", bearer(&token_of(user)));
    request
}

/// `message` sent with an operator's token.
pub fn as_admin<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    let token = TokenIssuer::for_tests().token("operator", true, Duration::from_secs(3600));
    request.metadata_mut().insert("authorization", bearer(&token));
    request
}
