//! Inventory's restart after a big sale: the time until a replica serves again when it replays
//! the whole event stream, against the time from its seat map snapshots, in the same run
//! (`bench --inventory-restart-only USERS`).
//!
//! The stream is synthetic: the events a sale of `users` users and `seats` seats emits, as
//! seat-lock and payment publish them, straight onto a stream of its own. Every user holds one
//! pair of seats once; each pair is held by `users / pairs` users in turn, all but the last
//! hold ending in a release (expired or given up), the last in a confirmation. For 500,000
//! users and 50,000 seats: 500,000 `SeatsHeld`, 475,000 `SeatsReleased` and 25,000
//! `BookingConfirmed`, one million messages, and every seat sold.
//!
//! The real inventory binary (release) runs on a database and NATS prefix of its own: started
//! once with the catalogue, stopped, the stream published, then started twice; the first
//! start replays everything (its only snapshot covers nothing yet) and stores snapshots when
//! it stops, the second starts from them. A start is timed from spawning the process until its
//! health check answers SERVING, which inventory does only after catching up with the stream.

use std::{
    path::Path,
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use futures::StreamExt;
use sea_orm::{ConnectionTrait, DbBackend, Statement};
use service_runtime::{
    auth::{AuthArgs, TokenIssuer, WithToken},
    bus::{EventBus, StreamSpec, envelope, setup_stream},
};
use ticketing_proto::{
    events::{BookingConfirmed, ReleaseReason, SeatsHeld, SeatsReleased, event_envelope::Body},
    v1::{
        CreateEventRequest, CreateVenueRequest, GetAvailabilityRequest,
        inventory_service_client::InventoryServiceClient,
    },
};

use super::config::Row;
use test_support::testenv::TestEnv;

use crate::{catalogue, identity::Bearer, stack};

/// Publishes in flight at once: enough to keep NATS busy, few enough to bound memory.
const PUBLISH_CONCURRENCY: usize = 1_024;
/// The synthetic hold ids: a UUIDv7-shaped prefix and the user's number.
const HOLD_ID_BASE: u128 = 0x0190_0000_0000_7000_8000_0000_0000_0000;
/// Seats per row of the synthetic venue.
const SEATS_PER_ROW: u32 = 100;
/// Longest a start may take to report SERVING (a full replay of millions of messages).
const START_TIMEOUT: Duration = Duration::from_secs(1_800);
/// Longest a stop may take (the last snapshot is stored on the way out).
const STOP_TIMEOUT: Duration = Duration::from_secs(120);

/// One timed start of the inventory binary.
struct Start {
    serving_after: Duration,
    sold: u32,
    peak_rss_mb: u64,
    stop_took: Duration,
}

/// Runs the scenario and answers its README row.
pub async fn restart(users: u64, seats: u32, date: &str) -> anyhow::Result<Row> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let machine = format!("{cores} cores, {}", crate::procfs::memory_total());
    if seats == 0 || !seats.is_multiple_of(2 * SEATS_PER_ROW) || users < u64::from(seats / 2) {
        bail!("seats must be a positive multiple of {} and users at least seats / 2", 2 * SEATS_PER_ROW);
    }
    let binary = stack::target_dir().join("release/inventory");
    if !binary.exists() {
        bail!("{} is missing: cargo build --release -p inventory", binary.display());
    }
    let env = TestEnv::new().await?;
    // The test environment's stream is small; a million messages need the mesh's limit.
    setup_stream(&env.nats_url, &StreamSpec::for_prefix(&env.nats_prefix)).await?;
    let result = measure(&env, &binary, users, seats).await;
    let nats = async_nats::connect(&env.nats_url).await?;
    let _ = async_nats::jetstream::new(nats).delete_stream(format!("{}_events", env.nats_prefix)).await;
    let (messages, full, from_snapshot, snapshot_bytes) = result?;
    let ratio = full.serving_after.as_secs_f64() / from_snapshot.serving_after.as_secs_f64().max(1e-3);
    Ok(Row {
        what: format!(
            "Inventory restart after a {users}-user, {seats}-seat sale: {messages} stream messages \
             (holds, releases, confirmations), release binary (`bench --inventory-restart-only {users} --inventory-seats {seats}`)"
        ),
        result: format!(
            "full replay: SERVING after {:.2} s, peak RSS {} MB; from snapshot: SERVING after {:.2} s, \
             peak RSS {} MB; **{ratio:.0}× faster**; both showed {} of {seats} seats sold; the snapshot \
             (one row, {:.1} MB) stored at shutdown in {:.2} s; ANALYZE not run (the start reads the \
             snapshot table whole, one row per event)",
            full.serving_after.as_secs_f64(),
            full.peak_rss_mb,
            from_snapshot.serving_after.as_secs_f64(),
            from_snapshot.peak_rss_mb,
            from_snapshot.sold,
            snapshot_bytes as f64 / 1e6,
            full.stop_took.as_secs_f64(),
        ),
        baseline: format!("full replay {:.2} s", full.serving_after.as_secs_f64()),
        target: "a restart does not replay the sale".into(),
        met: Some(full.sold == seats && from_snapshot.sold == seats),
        date: date.into(),
        machine,
    })
}

async fn measure(
    env: &TestEnv,
    binary: &Path,
    users: u64,
    seats: u32,
) -> anyhow::Result<(u64, Start, Start, i64)> {
    let token = TokenIssuer::for_tests().token("operator", true, Duration::from_secs(3_600));
    // The catalogue, with the stream still empty.
    let (mut child, port) = spawn(env, binary).await?;
    wait_serving(&mut child, port).await?;
    let channel = ticketing_proto::connect(&format!("http://127.0.0.1:{port}"), Duration::from_secs(10))?;
    let rows = seats / SEATS_PER_ROW;
    let venue = CreateVenueRequest {
        name: "Bench arena".into(),
        zones: vec![catalogue::seated_zone(
            "A",
            "Zone A",
            5_000,
            (1..=rows).map(|r| r.to_string()).collect(),
            SEATS_PER_ROW,
        )],
    };
    let opens = chrono::Utc::now().timestamp_millis() + 3_600_000;
    let event = CreateEventRequest {
        name: "Bench sale".into(),
        starts_at: Some(service_runtime::bus::timestamp_ms(opens + 86_400_000)),
        sale_opens_at: Some(service_runtime::bus::timestamp_ms(opens)),
        max_tickets_per_user: 4,
        ..Default::default()
    };
    let event = catalogue::create_event(channel, &Bearer::new(&token), venue, event).await?;
    stop(child).await?;

    let started = Instant::now();
    let messages = publish_sale(env, &event.event_id, users, seats).await?;
    eprintln!("published {messages} messages in {:.1} s", started.elapsed().as_secs_f64());

    let full = timed_start(env, binary, &token, &event.event_id).await?;
    eprintln!("full replay: SERVING after {:.2} s", full.serving_after.as_secs_f64());
    let db = env.database().await?;
    let row = db
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT coalesce(sum(octet_length(state)), 0)::bigint AS bytes FROM inventory.seat_map_snapshots",
        ))
        .await?
        .context("no snapshot size")?;
    let snapshot_bytes: i64 = row.try_get("", "bytes")?;
    let from_snapshot = timed_start(env, binary, &token, &event.event_id).await?;
    eprintln!("from snapshot: SERVING after {:.2} s", from_snapshot.serving_after.as_secs_f64());
    Ok((messages, full, from_snapshot, snapshot_bytes))
}

/// Publishes the sale round by round: every pair held once per round, then released (or, in
/// the last round, confirmed). Within a round the pairs are independent, so their messages go
/// out concurrently; a pair's hold is stored before its release.
async fn publish_sale(env: &TestEnv, event_id: &str, users: u64, seats: u32) -> anyhow::Result<u64> {
    let bus = EventBus::connect(&env.nats_url, &env.nats_prefix).await?;
    let pairs = u64::from(seats / 2);
    let rounds = users / pairs;
    let seat_ids = |pair: u64| -> Vec<String> {
        let first = (pair * 2) as u32;
        (first..first + 2).map(|i| format!("A-{}-{}", i / SEATS_PER_ROW + 1, i % SEATS_PER_ROW + 1)).collect()
    };
    let mut published = 0u64;
    for round in 0..rounds {
        let last = round + 1 == rounds;
        for phase in 0..2 {
            let bodies = (0..pairs).map(|pair| {
                let user = round * pairs + pair;
                // A UUID as seat-lock's hold ids are, the same for a hold and its outcome.
                let hold_id = uuid::Uuid::from_u128(HOLD_ID_BASE | u128::from(user)).to_string();
                let user_id = format!("user-{user}");
                let seat_ids = seat_ids(pair);
                match (phase, last) {
                    (0, _) => Body::SeatsHeld(SeatsHeld {
                        event_id: event_id.into(),
                        user_id,
                        hold_id,
                        zone_id: "A".into(),
                        seat_ids,
                        quantity: 2,
                        expires_at: None,
                    }),
                    (_, false) => Body::SeatsReleased(SeatsReleased {
                        event_id: event_id.into(),
                        user_id,
                        hold_id,
                        zone_id: "A".into(),
                        seat_ids,
                        quantity: 2,
                        reason: ReleaseReason::Expired as i32,
                    }),
                    (_, true) => Body::BookingConfirmed(BookingConfirmed {
                        event_id: event_id.into(),
                        user_id,
                        booking_id: uuid::Uuid::now_v7().to_string(),
                        payment_id: uuid::Uuid::now_v7().to_string(),
                        hold_id,
                        zone_id: "A".into(),
                        seat_ids,
                        quantity: 2,
                        amount_cents: 10_000,
                        currency: "EUR".into(),
                    }),
                }
            });
            let mut sends = futures::stream::iter(bodies.map(|body| {
                let bus = bus.clone();
                async move { bus.publish(&envelope(uuid::Uuid::new_v4().to_string(), body)).await }
            }))
            .buffer_unordered(PUBLISH_CONCURRENCY);
            while let Some(result) = sends.next().await {
                result?;
                published += 1;
            }
        }
    }
    Ok(published)
}

/// Starts the binary, times it to SERVING, reads the sold count and its peak memory, stops it.
async fn timed_start(env: &TestEnv, binary: &Path, token: &str, event_id: &str) -> anyhow::Result<Start> {
    let started = Instant::now();
    let (mut child, port) = spawn(env, binary).await?;
    wait_serving(&mut child, port).await?;
    let serving_after = started.elapsed();
    let availability = client(port, token)?
        .get_availability(GetAvailabilityRequest { event_id: event_id.into() })
        .await?
        .into_inner();
    let sold = availability.zones.iter().map(|z| z.sold).sum();
    let peak_rss_mb = child.id().and_then(crate::procfs::memory_kib).map_or(0, |m| m.peak_kib / 1024);
    let stopping = Instant::now();
    stop(child).await?;
    Ok(Start { serving_after, sold, peak_rss_mb, stop_took: stopping.elapsed() })
}

async fn spawn(env: &TestEnv, binary: &Path) -> anyhow::Result<(tokio::process::Child, u16)> {
    let port = stack::free_port()?;
    let child = tokio::process::Command::new(binary)
        .env("DATABASE_URL", &env.database_url)
        .env("NATS_URL", &env.nats_url)
        .env("NATS_PREFIX", &env.nats_prefix)
        .env("GRPC_ADDR", format!("127.0.0.1:{port}"))
        .env("METRICS_ADDR", "127.0.0.1:0")
        .env("AUTH_JWKS", AuthArgs::for_tests().jwks)
        .env("CATCH_UP_TIMEOUT_MS", START_TIMEOUT.as_millis().to_string())
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start {}", binary.display()))?;
    Ok((child, port))
}

async fn wait_serving(child: &mut tokio::process::Child, port: u16) -> anyhow::Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait()? {
            bail!("inventory exited with {status} before serving");
        }
        if stack::health(port).await.unwrap_or(false) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("inventory did not serve within {START_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn stop(mut child: tokio::process::Child) -> anyhow::Result<()> {
    if let Some(pid) = child.id() {
        stack::signal(pid, "TERM");
    }
    let status =
        tokio::time::timeout(STOP_TIMEOUT, child.wait()).await.context("inventory did not stop")??;
    if !status.success() {
        bail!("inventory stopped with {status}");
    }
    Ok(())
}

fn client(
    port: u16,
    token: &str,
) -> anyhow::Result<
    InventoryServiceClient<
        tonic::service::interceptor::InterceptedService<tonic::transport::Channel, WithToken>,
    >,
> {
    let channel = ticketing_proto::connect(&format!("http://127.0.0.1:{port}"), Duration::from_secs(10))?;
    Ok(InventoryServiceClient::with_interceptor(channel, WithToken::new(token))
        .max_decoding_message_size(64 << 20))
}
