//! A small flash sale through the load balancer, verified against ground truth.
//!
//! Every simulated user joins the waiting room, watches the queue until admitted, looks at
//! availability, holds the best available seats, pays, and waits for the confirmation on
//! its notification stream. Afterwards the sale is checked: no seat sold twice (payment's
//! sold seats and the `seat_guard` table), no zone oversold, per-user limits kept, bookings
//! in Postgres, and inventory's map agreeing with payment.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use sea_orm::{ConnectionTrait, Database, DbBackend, Statement};
use ticketing_proto::v1::{
    self as pb, admission_service_client::AdmissionServiceClient,
    inventory_service_client::InventoryServiceClient, notifier_service_client::NotifierServiceClient,
    payment_service_client::PaymentServiceClient, seat_lock_service_client::SeatLockServiceClient,
};
use tokio_stream::StreamExt;
use tonic::transport::Channel;

/// HTTP/2 connections the simulated users share, as a real backend's pool would.
const CONNECTIONS: usize = 8;
/// Users in flight at once; bounds the simulator's memory and open streams.
const MAX_CONCURRENT_USERS: usize = 2_000;
/// Attempts a user makes to hold seats before giving up.
const HOLD_ATTEMPTS: usize = 5;
/// Seats per row in the generated venue.
const SEATS_PER_ROW: u32 = 25;

/// What to sell and to whom.
#[derive(Debug, Clone)]
pub struct SaleConfig {
    /// The load balancer, e.g. `http://127.0.0.1:8080`.
    pub lb_url: String,
    /// Postgres of the mesh, for the ground-truth checks (payment's tables).
    pub database_url: String,
    pub seats: u32,
    pub users: u32,
    /// The most tickets one user may buy.
    pub max_tickets_per_user: u32,
    /// Users admitted to checkout at once.
    pub admission_capacity: u32,
}

/// What happened, and whether the invariants held.
#[derive(Debug, Default)]
pub struct SaleReport {
    pub event_id: String,
    pub users: u64,
    pub joined: u64,
    pub admitted: u64,
    pub holds: u64,
    pub seats_held: u64,
    pub paid: u64,
    pub sold_out_seen: u64,
    pub errors: u64,
    pub notified: u64,
    pub bookings_in_postgres: u64,
    pub seats_sold: u64,
    pub seat_guard_rows: u64,
    pub inventory_sold: u64,
    pub elapsed: Duration,
    /// Broken invariants, empty when the sale was correct.
    pub violations: Vec<String>,
}

impl std::fmt::Display for SaleReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "flash sale of event {} finished in {:.1} s", self.event_id, self.elapsed.as_secs_f64())?;
        writeln!(f, "  users                     {}", self.users)?;
        writeln!(f, "  joined the queue          {}", self.joined)?;
        writeln!(f, "  admitted with a pass      {}", self.admitted)?;
        writeln!(f, "  holds / seats held        {} / {}", self.holds, self.seats_held)?;
        writeln!(f, "  payments confirmed        {}", self.paid)?;
        writeln!(f, "  users who found it sold out {}", self.sold_out_seen)?;
        writeln!(f, "  unexpected errors         {}", self.errors)?;
        writeln!(f, "  bookings in Postgres      {}", self.bookings_in_postgres)?;
        writeln!(f, "  seats sold (payment)      {}", self.seats_sold)?;
        writeln!(f, "  seat_guard rows           {}", self.seat_guard_rows)?;
        writeln!(f, "  seats sold (inventory)    {}", self.inventory_sold)?;
        writeln!(f, "  confirmations delivered   {}", self.notified)?;
        if self.violations.is_empty() {
            write!(
                f,
                "  invariants: OK (no seat sold twice, no zone oversold, limits kept, every booking notified)"
            )
        } else {
            writeln!(f, "  INVARIANT VIOLATIONS:")?;
            for violation in &self.violations {
                writeln!(f, "    - {violation}")?;
            }
            Ok(())
        }
    }
}

#[derive(Default)]
struct Counters {
    joined: AtomicU64,
    admitted: AtomicU64,
    holds: AtomicU64,
    seats_held: AtomicU64,
    paid: AtomicU64,
    sold_out: AtomicU64,
    errors: AtomicU64,
    notified: AtomicU64,
}

#[derive(Clone)]
struct Clients {
    channels: Arc<Vec<Channel>>,
}

impl Clients {
    async fn connect(url: &str) -> anyhow::Result<Self> {
        let mut channels = Vec::with_capacity(CONNECTIONS);
        for _ in 0..CONNECTIONS {
            channels.push(
                tonic::transport::Endpoint::from_shared(url.to_owned())?
                    .tcp_nodelay(true)
                    .timeout(Duration::from_secs(30))
                    .connect()
                    .await
                    .with_context(|| format!("cannot connect to the load balancer at {url}"))?,
            );
        }
        Ok(Self { channels: Arc::new(channels) })
    }

    fn channel(&self, user: u32) -> Channel {
        self.channels[user as usize % self.channels.len()].clone()
    }
}

/// The `google.rpc.ErrorInfo` reason of a refusal, or "".
fn reason(status: &tonic::Status) -> String {
    use tonic_types::StatusExt;
    status.get_error_details().error_info().map(|info| info.reason.clone()).unwrap_or_default()
}

/// Creates a venue of `seats` seats in two zones and an event on it opening in two seconds.
async fn create_event(clients: &Clients, config: &SaleConfig) -> anyhow::Result<pb::Event> {
    let mut inventory = InventoryServiceClient::new(clients.channel(0));
    let rows_total = config.seats.div_ceil(SEATS_PER_ROW).max(2);
    let zone = |zone_id: &str, name: &str, price: i64, rows: u32, first: u32| pb::ZoneSpec {
        zone_id: zone_id.into(),
        name: name.into(),
        price_cents: price,
        layout: Some(pb::zone_spec::Layout::Seated(pb::SeatedLayout {
            row_labels: (first..first + rows).map(|r| format!("R{r}")).collect(),
            seats_per_row: SEATS_PER_ROW,
            accessible_seat_ids: vec![],
        })),
    };
    let front = rows_total / 2;
    let venue = inventory
        .create_venue(pb::CreateVenueRequest {
            name: "Flash-sale arena".into(),
            zones: vec![
                zone("FLOOR", "Floor", 12_000, front, 1),
                zone("BALCONY", "Balcony", 6_500, rows_total - front, 1),
            ],
        })
        .await?
        .into_inner()
        .venue
        .context("CreateVenue answered no venue")?;
    let now = chrono::Utc::now().timestamp_millis();
    let event = inventory
        .create_event(pb::CreateEventRequest {
            venue_id: venue.venue_id,
            name: "The flash-sale concert".into(),
            starts_at: Some(timestamp(now + 30 * 86_400_000)),
            sale_opens_at: Some(timestamp(now + 2_000)),
            max_tickets_per_user: config.max_tickets_per_user,
            currency: "EUR".into(),
            admission_capacity: config.admission_capacity,
            admission_tick_ms: 100,
            pass_ttl_seconds: 120,
        })
        .await?
        .into_inner()
        .event
        .context("CreateEvent answered no event")?;
    Ok(event)
}

fn timestamp(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: ms / 1000, nanos: ((ms % 1000) * 1_000_000) as i32 }
}

/// Runs the sale and verifies it.
pub async fn run(config: SaleConfig) -> anyhow::Result<SaleReport> {
    let clients = Clients::connect(&config.lb_url).await?;
    let event = create_event(&clients, &config).await?;
    let started = Instant::now();
    let counters = Arc::new(Counters::default());
    let semaphore = Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT_USERS));
    let mut tasks = tokio::task::JoinSet::new();
    for user in 0..config.users {
        let permit = semaphore.clone().acquire_owned().await?;
        let (clients, counters, event) = (clients.clone(), counters.clone(), event.clone());
        tasks.spawn(async move {
            let _permit = permit;
            if let Err(error) = shop(&clients, &counters, &event, user).await {
                counters.errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(user, error = format!("{error:#}"), "user failed");
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let elapsed = started.elapsed();

    let mut report = SaleReport {
        event_id: event.event_id.clone(),
        users: u64::from(config.users),
        joined: counters.joined.load(Ordering::Relaxed),
        admitted: counters.admitted.load(Ordering::Relaxed),
        holds: counters.holds.load(Ordering::Relaxed),
        seats_held: counters.seats_held.load(Ordering::Relaxed),
        paid: counters.paid.load(Ordering::Relaxed),
        sold_out_seen: counters.sold_out.load(Ordering::Relaxed),
        errors: counters.errors.load(Ordering::Relaxed),
        notified: counters.notified.load(Ordering::Relaxed),
        elapsed,
        ..Default::default()
    };
    verify(&clients, &config, &event, &mut report).await?;
    Ok(report)
}

/// One user's whole visit.
async fn shop(clients: &Clients, counters: &Counters, event: &pb::Event, user: u32) -> anyhow::Result<()> {
    let user_id = format!("user-{user}");
    let event_id = event.event_id.clone();
    let channel = clients.channel(user);
    let mut admission = AdmissionServiceClient::new(channel.clone());
    admission.join(pb::JoinRequest { event_id: event_id.clone(), user_id: user_id.clone() }).await?;
    counters.joined.fetch_add(1, Ordering::Relaxed);

    let mut updates = admission
        .watch_queue(pb::WatchQueueRequest { event_id: event_id.clone(), user_id: user_id.clone() })
        .await?
        .into_inner();
    let mut pass = None;
    while let Some(status) = updates.next().await {
        let status = status?;
        if let Some(p) = status.pass {
            pass = Some(p);
            break;
        }
    }
    let pass = pass.context("the queue stream ended without a pass")?;
    counters.admitted.fetch_add(1, Ordering::Relaxed);

    let quantity = 1 + user % 2;
    let mut inventory = InventoryServiceClient::new(channel.clone());
    let mut seat_lock = SeatLockServiceClient::new(channel.clone());
    let mut hold = None;
    for _ in 0..HOLD_ATTEMPTS {
        let availability = inventory
            .get_availability(pb::GetAvailabilityRequest { event_id: event_id.clone() })
            .await?
            .into_inner();
        let open: Vec<_> = availability.zones.iter().filter(|z| z.free >= quantity).collect();
        let Some(zone) = open.get(user as usize % open.len().max(1)) else { break };
        match seat_lock
            .hold_best_available(pb::HoldBestAvailableRequest {
                pass_token: pass.token.clone(),
                event_id: event_id.clone(),
                user_id: user_id.clone(),
                zone_id: zone.zone_id.clone(),
                quantity,
                allow_split: true,
            })
            .await
        {
            Ok(response) => {
                hold = Some(response.into_inner());
                break;
            }
            Err(status) if matches!(reason(&status).as_str(), "SEAT_TAKEN" | "ZONE_SOLD_OUT") => continue,
            Err(status) => return Err(status.into()),
        }
    }
    let Some(hold) = hold else {
        counters.sold_out.fetch_add(1, Ordering::Relaxed);
        admission.leave(pb::LeaveRequest { event_id, user_id }).await?;
        return Ok(());
    };
    counters.holds.fetch_add(1, Ordering::Relaxed);
    counters.seats_held.fetch_add(u64::from(hold.quantity), Ordering::Relaxed);

    // Subscribe before paying, so the confirmation cannot slip past.
    let mut notifications = NotifierServiceClient::new(channel.clone())
        .subscribe(pb::SubscribeRequest { user_id: user_id.clone(), after_id: 0 })
        .await?
        .into_inner();
    let paid = PaymentServiceClient::new(channel)
        .pay(pb::PayRequest {
            idempotency_key: format!("pay-{}-{user_id}", &event_id[..8]),
            event_id: event_id.clone(),
            hold_id: hold.hold_id.clone(),
            user_id: user_id.clone(),
            payment_method: "pm_card_ok".into(),
        })
        .await?
        .into_inner();
    let status = paid.payment.as_ref().map(|p| p.status()).unwrap_or_default();
    if status != pb::PaymentStatus::Confirmed {
        bail!("payment ended {status:?}");
    }
    counters.paid.fetch_add(1, Ordering::Relaxed);
    let confirmed = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(notification) = notifications.next().await {
            if notification?.kind() == pb::NotificationKind::BookingConfirmed {
                return Ok::<bool, tonic::Status>(true);
            }
        }
        Ok(false)
    })
    .await;
    match confirmed {
        Ok(Ok(true)) => {
            counters.notified.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
        Ok(Ok(false)) => bail!("the notification stream ended before the confirmation"),
        Ok(Err(status)) => Err(status.into()),
        Err(_) => bail!("no confirmation within 30 s"),
    }
}

async fn count(db: &sea_orm::DatabaseConnection, sql: &str, event_id: &str) -> anyhow::Result<u64> {
    let row = db
        .query_one_raw(Statement::from_sql_and_values(DbBackend::Postgres, sql, [event_id.into()]))
        .await?
        .context("count query returned no row")?;
    Ok(row.try_get_by_index::<i64>(0)? as u64)
}

/// Checks the sale against ground truth: payment's sold seats, Postgres, inventory.
async fn verify(
    clients: &Clients,
    config: &SaleConfig,
    event: &pb::Event,
    report: &mut SaleReport,
) -> anyhow::Result<()> {
    let event_id = event.event_id.clone();
    let sold = PaymentServiceClient::new(clients.channel(0))
        .max_decoding_message_size(64 * 1024 * 1024)
        .list_sold_seats(pb::ListSoldSeatsRequest { event_id: event_id.clone() })
        .await?
        .into_inner()
        .seats;
    report.seats_sold = sold.len() as u64;
    let mut seen = HashSet::new();
    let mut per_zone: HashMap<&str, u32> = HashMap::new();
    let mut per_user: HashMap<&str, u32> = HashMap::new();
    for seat in &sold {
        if !seat.seat_id.is_empty() && !seen.insert(seat.seat_id.as_str()) {
            report.violations.push(format!("I1: seat {} sold twice", seat.seat_id));
        }
        *per_zone.entry(seat.zone_id.as_str()).or_default() += 1;
        *per_user.entry(seat.user_id.as_str()).or_default() += 1;
    }
    for zone in &event.zones {
        let sold = per_zone.get(zone.zone_id.as_str()).copied().unwrap_or(0);
        if sold > zone.capacity {
            report.violations.push(format!("I1: zone {} oversold: {sold} > {}", zone.zone_id, zone.capacity));
        }
    }
    for (user, tickets) in per_user {
        if tickets > config.max_tickets_per_user {
            report.violations.push(format!("I6: {user} bought {tickets} > {}", config.max_tickets_per_user));
        }
    }

    let db = Database::connect(&config.database_url).await?;
    report.bookings_in_postgres =
        count(&db, "SELECT count(*) FROM payment.bookings WHERE event_id::text = $1", &event_id).await?;
    report.seat_guard_rows =
        count(&db, "SELECT count(*) FROM payment.seat_guard WHERE event_id::text = $1", &event_id).await?;
    let doubles = count(
        &db,
        "SELECT count(*) FROM (SELECT seat_id FROM payment.booking_seats WHERE event_id::text = $1 \
         GROUP BY seat_id HAVING count(*) > 1) d",
        &event_id,
    )
    .await?;
    if doubles > 0 {
        report.violations.push(format!("I1: {doubles} seats in two bookings in Postgres"));
    }
    if report.seat_guard_rows != report.seats_sold {
        report.violations.push(format!(
            "seat_guard has {} rows for {} sold seats",
            report.seat_guard_rows, report.seats_sold
        ));
    }
    if report.bookings_in_postgres != report.paid {
        report
            .violations
            .push(format!("{} confirmed payments but {} bookings", report.paid, report.bookings_in_postgres));
    }
    if report.notified != report.paid {
        report
            .violations
            .push(format!("{} bookings but {} confirmations delivered", report.paid, report.notified));
    }

    // Inventory is fed by events; give it a moment to catch up, then compare.
    let mut inventory = InventoryServiceClient::new(clients.channel(0));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let availability = inventory
            .get_availability(pb::GetAvailabilityRequest { event_id: event_id.clone() })
            .await?
            .into_inner();
        report.inventory_sold = availability.zones.iter().map(|z| u64::from(z.sold)).sum();
        if report.inventory_sold == report.seats_sold || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if report.inventory_sold != report.seats_sold {
        report.violations.push(format!(
            "inventory shows {} sold seats, payment {}",
            report.inventory_sold, report.seats_sold
        ));
    }
    Ok(())
}
