//! Harness of the failure tests: the real stack on free ports, a way to replace one of its
//! processes (e.g. payment with its test-only crash knob), a private NATS server, and the
//! ground truth checks on Postgres and Redis.

use std::{
    collections::{BTreeMap, HashMap},
    fs,
    os::unix::process::CommandExt,
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{Context, bail};
use fred::prelude::*;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};
#[allow(unused_imports)] // failures.rs and redis_loss.rs lose Redis through it; the others do not
pub use test_support::redis::delete_prefix_keys;
use test_support::testenv::{TestEnv, eventually};
use ticketing_proto::v1::{
    self as pb, admission_service_client::AdmissionServiceClient,
    inventory_service_client::InventoryServiceClient, payment_service_client::PaymentServiceClient,
    seat_lock_service_client::SeatLockServiceClient,
};
use tokio_stream::StreamExt;
use tonic::transport::Channel;
use tools::{
    identity::Bearer,
    stack::{self, Stack, StackConfig, backing::PrivateNats},
};

/// Generous bound for anything the mesh does in the background; never a speed assertion.
pub const EVENTUALLY: Duration = Duration::from_secs(30);
/// How long a user may wait in the queue for a pass.
const ADMIT_TIMEOUT: Duration = Duration::from_secs(60);

/// Stops the stack's processes when the test ends, even when it fails.
pub struct Running(pub Stack);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.stop();
    }
}

impl Running {
    pub fn config(&self) -> &StackConfig {
        &self.0.config
    }

    /// A lazily connected channel straight to one service (not through HAProxy, so a
    /// restarted process is reached at once).
    pub fn channel(&self, service: &str) -> anyhow::Result<Channel> {
        Ok(tonic::transport::Endpoint::from_shared(format!(
            "http://127.0.0.1:{}",
            self.config().port(service)
        ))?
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(20))
        .connect_lazy())
    }

    pub fn inventory(&self) -> anyhow::Result<InventoryServiceClient<Channel>> {
        Ok(InventoryServiceClient::new(self.channel("inventory")?))
    }
    pub fn admission(&self) -> anyhow::Result<AdmissionServiceClient<Channel>> {
        Ok(AdmissionServiceClient::new(self.channel("admission")?))
    }
    pub fn seat_lock(&self) -> anyhow::Result<SeatLockServiceClient<Channel>> {
        Ok(SeatLockServiceClient::new(self.channel("seat-lock")?))
    }
    pub fn payment(&self) -> anyhow::Result<PaymentServiceClient<Channel>> {
        Ok(PaymentServiceClient::new(self.channel("payment")?))
    }

    /// `user`'s token from the stack's identity provider.
    pub fn token(&self, user: &str) -> Bearer {
        self.0.identity.user(user)
    }

    /// `message` as a request of `user`.
    pub fn as_user<T>(&self, user: &str, message: T) -> tonic::Request<T> {
        self.0.identity.as_user(user, message)
    }

    /// SIGKILLs the stack's own process of `service` (started by `Stack::start`) and waits
    /// until it is gone.
    pub async fn kill_started(&self, service: &str) -> anyhow::Result<()> {
        let pids = stack::pid_files(&self.config().state_dir);
        let (_, pid) = pids.iter().find(|(name, _)| name == service).context("no pid file")?;
        let pid = *pid;
        stack::signal(pid, "KILL");
        let gone = eventually(EVENTUALLY, || async move { (!stack::alive(pid)).then_some(()) }).await;
        gone.with_context(|| format!("{service} (pid {pid}) survived SIGKILL"))
    }

    /// Starts `name` again as a real process on its stack port with the stack's settings plus
    /// `extra` (e.g. payment's `PAYMENT_CRASH_AT`), records its pid so `stop` ends it too, and
    /// waits until it reports SERVING.
    pub async fn spawn_service(
        &self,
        name: &str,
        extra: &[(&str, &str)],
        tag: &str,
    ) -> anyhow::Result<Child> {
        let config = self.config();
        let service =
            config.services.iter().find(|s| s.name == name).with_context(|| format!("no {name}"))?;
        let log_path = config.state_dir.join("logs").join(format!("{name}-{tag}.log"));
        // A port the killed process had may briefly be unavailable to a new bind (seen once for
        // payment's metrics port in a full parallel run): a start that exits saying so is
        // tried again, a few times; any other exit fails at once with the process's last line.
        for attempt in 1..=BIND_ATTEMPTS {
            let log = fs::File::create(&log_path)?;
            // Through `sh` only to switch core dumps off: the crash tests abort on purpose and
            // must not leave core files behind; `exec` keeps the pid.
            let mut command = Command::new("sh");
            command
                .args(["-c", "ulimit -c 0 && exec \"$0\""])
                .arg(config.bin_dir.join(name))
                .envs(config.env_of(service))
                .envs(extra.iter().copied())
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .process_group(0);
            let mut child = command.spawn().with_context(|| format!("cannot start {name}"))?;
            fs::write(config.state_dir.join("pids").join(format!("{name}.pid")), child.id().to_string())?;
            let port = service.grpc_port;
            let started = eventually(EVENTUALLY, || {
                let exited = child.try_wait().ok().flatten().is_some();
                async move {
                    if exited {
                        Some(false)
                    } else {
                        stack::health(port).await.ok().filter(|s| *s)
                    }
                }
            })
            .await;
            match started {
                Some(true) => return Ok(child),
                Some(false) => {
                    let said = fs::read_to_string(&log_path).unwrap_or_default();
                    let last = said.lines().last().unwrap_or("").to_owned();
                    if last.contains("Address already in use") && attempt < BIND_ATTEMPTS {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                    bail!("{name} ({tag}) exited before SERVING: {last}");
                }
                None => {
                    let _ = child.kill();
                    bail!("{name} ({tag}) did not report SERVING");
                }
            }
        }
        bail!("{name} ({tag}) could not bind its ports")
    }
}

/// Starts of a service whose port is still taken, before giving up.
const BIND_ATTEMPTS: u32 = 5;

/// Starts the real services on free ports with the test's database and prefixes, on
/// `nats_url` when given (a private server) or the test environment's NATS.
pub async fn start_stack(env: &TestEnv, nats_url: Option<String>) -> anyhow::Result<Running> {
    let state_dir = std::env::temp_dir().join(format!("ticketing-failures-{}", env.id));
    let mut config = StackConfig::on_free_ports(state_dir, stack::target_dir().join("debug"))?;
    config.database_url = env.database_url.clone();
    config.redis_url = env.redis_url.clone();
    config.redis_prefix = env.redis_prefix.clone();
    config.nats_url = nats_url.unwrap_or_else(|| env.nats_url.clone());
    config.nats_prefix = env.nats_prefix.clone();
    Ok(Running(Stack::start(config).await?))
}

/// A venue of one seated zone `A` ("Stalls", 50.00) of one row `1` with `seats` seats, of
/// which `accessible` are kept for wheelchair users.
pub fn one_row_venue(name: &str, seats: u32, accessible: &[&str]) -> pb::CreateVenueRequest {
    pb::CreateVenueRequest {
        name: name.into(),
        zones: vec![pb::ZoneSpec {
            zone_id: "A".into(),
            name: "Stalls".into(),
            price_cents: 5_000,
            layout: Some(pb::zone_spec::Layout::Seated(pb::SeatedLayout {
                row_labels: vec!["1".into()],
                seats_per_row: seats,
                accessible_seat_ids: accessible.iter().map(|s| (*s).to_owned()).collect(),
            })),
        }],
    }
}

/// An event on `venue_id` whose sale opened a second ago, starting a month ahead (so owners
/// may still cancel: the default cutoff is a day), passes valid for ten minutes.
pub fn open_event(
    venue_id: &str,
    name: &str,
    max_tickets_per_user: u32,
    admission_capacity: u32,
) -> pb::CreateEventRequest {
    let now = chrono::Utc::now().timestamp_millis();
    pb::CreateEventRequest {
        venue_id: venue_id.to_owned(),
        name: name.into(),
        starts_at: Some(service_runtime::bus::timestamp_ms(now + 30 * 86_400_000)),
        sale_opens_at: Some(service_runtime::bus::timestamp_ms(now - 1_000)),
        max_tickets_per_user,
        currency: "EUR".into(),
        admission_capacity,
        admission_tick_ms: 50,
        pass_ttl_seconds: 600,
        cancellation_cutoff_seconds: 0,
    }
}

/// One seated zone `A` of one row `1` with `seats` seats; the sale is open. Returns the event id.
pub async fn create_event(
    stack: &Running,
    seats: u32,
    max_tickets_per_user: u32,
    admission_capacity: u32,
) -> anyhow::Result<String> {
    let mut inventory = stack.inventory()?;
    let identity = &stack.0.identity;
    let venue = inventory
        .create_venue(identity.as_admin(one_row_venue("Failure Hall", seats, &[])))
        .await?
        .into_inner()
        .venue
        .context("no venue")?;
    let event = open_event(&venue.venue_id, "Failures", max_tickets_per_user, admission_capacity);
    let event =
        inventory.create_event(identity.as_admin(event)).await?.into_inner().event.context("no event")?;
    Ok(event.event_id)
}

/// What [`buy_one_keep_one`] made.
#[allow(dead_code)] // for edge.rs and security.rs; failures.rs, which uses the rest, buys otherwise
pub struct Bought {
    pub event: pb::Event,
    /// The buyer's pass token.
    pub pass: String,
    /// The hold the buyer keeps (seat `A-1-2`).
    pub kept_hold_id: String,
    /// The answer to the payment of seat `A-1-1`.
    pub paid: pb::PayResponse,
}

/// Through the load balancer `lb`: the operator makes `venue` and `event` on it; `user`
/// (sending `token`) is admitted, holds seats `A-1-1` and `A-1-2` (both before paying: a
/// purchase ends the pass) and pays for the first with idempotency key `key`.
#[allow(dead_code)] // for edge.rs and security.rs, as `Bought`
pub async fn buy_one_keep_one(
    lb: &Channel,
    admin: &Bearer,
    (user, token): (&str, &Bearer),
    venue: pb::CreateVenueRequest,
    event: pb::CreateEventRequest,
    key: &str,
) -> anyhow::Result<Bought> {
    let event = tools::catalogue::create_event(lb.clone(), admin, venue, event).await?;
    let pass =
        admit(AdmissionServiceClient::new(lb.clone()), token.clone(), event.event_id.clone(), user.into())
            .await?;
    let seat_lock = SeatLockServiceClient::new(lb.clone());
    let hold = |seat: &str| {
        let mut seat_lock = seat_lock.clone();
        let request = token.request(pb::HoldSeatsRequest {
            pass_token: pass.clone(),
            event_id: event.event_id.clone(),
            user_id: user.into(),
            seat_ids: vec![seat.into()],
        });
        async move { seat_lock.hold_seats(request).await }
    };
    let paid_hold = hold("A-1-1").await?.into_inner();
    let kept_hold = hold("A-1-2").await?.into_inner();
    let paid = PaymentServiceClient::new(lb.clone())
        .pay(token.request(pb::PayRequest {
            idempotency_key: key.into(),
            event_id: event.event_id.clone(),
            hold_id: paid_hold.hold_id,
            user_id: user.into(),
            payment_method: "pm_card_ok".into(),
        }))
        .await?
        .into_inner();
    Ok(Bought { event, pass, kept_hold_id: kept_hold.hold_id, paid })
}

/// The seat ids of the event's one row: `A-1-1` ... `A-1-<seats>`.
pub fn seat_ids(seats: u32) -> Vec<String> {
    (1..=seats).map(|n| format!("A-1-{n}")).collect()
}

/// Joins the queue as the owner of `token` and watches it until admitted; returns the pass
/// token.
pub async fn admit(
    mut admission: AdmissionServiceClient<Channel>,
    token: Bearer,
    event_id: String,
    user_id: String,
) -> anyhow::Result<String> {
    let joined = admission
        .join(token.request(pb::JoinRequest { event_id: event_id.clone(), user_id: user_id.clone() }))
        .await?;
    if let Some(pass) = joined.into_inner().pass {
        return Ok(pass.token);
    }
    let mut watch =
        admission.watch_queue(token.request(pb::WatchQueueRequest { event_id, user_id })).await?.into_inner();
    while let Some(status) = tokio::time::timeout(ADMIT_TIMEOUT, watch.next()).await? {
        if let Some(pass) = status?.pass {
            return Ok(pass.token);
        }
    }
    bail!("the queue stream ended without a pass")
}

/// Admits every user concurrently; returns user -> pass token.
pub async fn admit_all(
    stack: &Running,
    event_id: &str,
    users: &[String],
) -> anyhow::Result<HashMap<String, String>> {
    let admission = stack.admission()?;
    let tasks = users.iter().map(|user| {
        let (admission, event_id, user) = (admission.clone(), event_id.to_owned(), user.clone());
        let bearer = stack.token(&user);
        tokio::spawn(async move {
            let token = admit(admission, bearer, event_id, user.clone()).await?;
            anyhow::Ok((user, token))
        })
    });
    let mut passes = HashMap::new();
    for joined in futures::future::join_all(tasks).await {
        let (user, token) = joined??;
        passes.insert(user, token);
    }
    Ok(passes)
}

pub fn hold_request(event_id: &str, user: &str, token: &str, seats: &[String]) -> pb::HoldSeatsRequest {
    pb::HoldSeatsRequest {
        pass_token: token.to_owned(),
        event_id: event_id.to_owned(),
        user_id: user.to_owned(),
        seat_ids: seats.to_vec(),
    }
}

pub fn pay_request(key: &str, event_id: &str, hold: &pb::Hold) -> pb::PayRequest {
    pb::PayRequest {
        idempotency_key: key.to_owned(),
        event_id: event_id.to_owned(),
        hold_id: hold.hold_id.clone(),
        user_id: hold.user_id.clone(),
        payment_method: "pm_card_ok".into(),
    }
}

/// The ErrorInfo reason of a refusal, or "".
pub fn reason(status: &tonic::Status) -> String {
    use tonic_types::StatusExt;
    status.get_details_error_info().map(|info| info.reason).unwrap_or_default()
}

pub async fn query_i64(
    db: &DatabaseConnection,
    sql: &str,
    values: Vec<sea_orm::Value>,
) -> anyhow::Result<i64> {
    let row = db
        .query_one_raw(Statement::from_sql_and_values(DbBackend::Postgres, sql, values))
        .await?
        .context("no row")?;
    Ok(row.try_get_by_index::<i64>(0)?)
}

/// A Redis client on the test's server.
pub async fn redis(env: &TestEnv) -> anyhow::Result<Client> {
    let client = Builder::from_config(fred::prelude::Config::from_url(&env.redis_url)?).build()?;
    client.init().await?;
    Ok(client)
}

/// The seats sold in Postgres: seat id -> hold id of its booking, checked for double sales
/// (I1): every booked seat is in exactly one booking and has exactly one seat_guard row.
pub async fn sold_in_postgres(
    db: &DatabaseConnection,
    event_id: &str,
) -> anyhow::Result<BTreeMap<String, String>> {
    let doubles = query_i64(
        db,
        "SELECT count(*) FROM (SELECT seat_id FROM payment.booking_seats WHERE event_id::text = $1 \
         GROUP BY seat_id HAVING count(*) > 1) d",
        vec![event_id.into()],
    )
    .await?;
    anyhow::ensure!(doubles == 0, "{doubles} seats are in more than one booking");
    let booked = query_i64(
        db,
        "SELECT count(*) FROM payment.booking_seats WHERE event_id::text = $1",
        vec![event_id.into()],
    )
    .await?;
    let rows = db
        .query_all_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT g.seat_id, b.hold_id::text AS hold_id FROM payment.seat_guard g \
             JOIN payment.bookings b ON b.booking_id = g.booking_id WHERE g.event_id::text = $1",
            [event_id.into()],
        ))
        .await?;
    let mut sold = BTreeMap::new();
    for row in rows {
        sold.insert(row.try_get::<String>("", "seat_id")?, row.try_get::<String>("", "hold_id")?);
    }
    anyhow::ensure!(sold.len() as i64 == booked, "{} seat_guard rows for {booked} booked seats", sold.len());
    Ok(sold)
}

/// Checks that Redis and Postgres agree seat by seat: a seat sold in Postgres is
/// `sold:<its hold>` in seat-lock's keys, and a seat marked sold in Redis is sold in Postgres
/// to the same hold. Returns the Postgres sales.
pub async fn redis_agrees_with_postgres(
    db: &DatabaseConnection,
    redis: &Client,
    env: &TestEnv,
    event_id: &str,
    seats: &[String],
) -> anyhow::Result<BTreeMap<String, String>> {
    let sold = sold_in_postgres(db, event_id).await?;
    for seat in seats {
        let key = format!("{}sl:{{{event_id}}}:seat:{seat}", env.redis_prefix);
        let value: Option<String> = redis.get(&key).await?;
        let in_redis = value.as_deref().and_then(|v| v.strip_prefix("sold:"));
        anyhow::ensure!(
            in_redis == sold.get(seat).map(String::as_str),
            "seat {seat}: Redis says {value:?}, Postgres says sold to hold {:?}",
            sold.get(seat)
        );
    }
    Ok(sold)
}

/// I2 over the whole sandbox ledger: every captured charge belongs to exactly one confirmed
/// payment with exactly one live booking; every refunded charge to a refunded payment with no
/// live booking; every declined one to a declined payment with none; and no payment is
/// confirmed without a captured charge. Returns the violations.
pub async fn i2_violations(db: &DatabaseConnection) -> anyhow::Result<Vec<String>> {
    let rows = db
        .query_all_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT l.charge_id, l.status AS charge_status, p.status AS payment_status, \
             (SELECT count(*) FROM payment.bookings b WHERE b.payment_id = p.payment_id AND b.status <> 'cancelled') \
             AS bookings \
             FROM payment.psp_ledger l LEFT JOIN payment.payments p ON p.payment_id::text = l.idempotency_key",
        ))
        .await?;
    let mut violations = Vec::new();
    for row in rows {
        let charge: String = row.try_get("", "charge_id")?;
        let charge_status: String = row.try_get("", "charge_status")?;
        let payment_status: Option<String> = row.try_get("", "payment_status")?;
        let bookings: i64 = row.try_get("", "bookings")?;
        let fine = match charge_status.as_str() {
            "captured" => payment_status.as_deref() == Some("confirmed") && bookings == 1,
            "refunded" => payment_status.as_deref() == Some("refunded") && bookings == 0,
            "declined" => payment_status.as_deref() == Some("declined") && bookings == 0,
            _ => false,
        };
        if !fine {
            violations.push(format!(
                "charge {charge} {charge_status}: payment {payment_status:?} with {bookings} bookings"
            ));
        }
    }
    let unpaid = query_i64(
        db,
        "SELECT count(*) FROM payment.payments p WHERE p.status = 'confirmed' AND NOT EXISTS \
         (SELECT 1 FROM payment.psp_ledger l WHERE l.idempotency_key = p.payment_id::text AND l.status = 'captured')",
        vec![],
    )
    .await?;
    if unpaid > 0 {
        violations.push(format!("{unpaid} confirmed payments without a captured charge"));
    }
    Ok(violations)
}

/// The check every failure test ends with: payment's reconciliation (not a dry run) finds
/// nothing, once the mesh has settled by itself.
pub async fn reconciliation_finds_nothing(stack: &Running) -> anyhow::Result<()> {
    let finding =
        tools::reconciliation::reconcile(stack.channel("payment")?, &stack.0.identity.admin()).await;
    anyhow::ensure!(finding.clean, "reconciliation found something: {}", finding.detail);
    Ok(())
}

/// The test's private NATS server (see [`PrivateNats`]); its store is deleted when the test
/// ends.
pub struct TestNats(PrivateNats);

impl TestNats {
    pub async fn start(id: &str) -> anyhow::Result<Self> {
        let store = std::env::temp_dir().join(format!("ticketing-nats-{id}"));
        let log = std::env::temp_dir().join(format!("ticketing-nats-{id}.log"));
        Ok(Self(PrivateNats::start(store, log).await?))
    }
}

impl std::ops::Deref for TestNats {
    type Target = PrivateNats;
    fn deref(&self) -> &PrivateNats {
        &self.0
    }
}

impl std::ops::DerefMut for TestNats {
    fn deref_mut(&mut self) -> &mut PrivateNats {
        &mut self.0
    }
}

impl Drop for TestNats {
    fn drop(&mut self) {
        self.0.remove();
    }
}
