//! `stack up` twice in a row keeps a booking made in between, and `stack reset` is what
//! deletes it.
//!
//! Runs the real `stack` command on the test's own database, Redis prefix, NATS prefix (so
//! its own stream), ports and state dir, with the debug service binaries as they are built
//! (`--bin-dir`; `cargo build --bins` first, as `stack test` does), so it runs in parallel
//! with other tests and twice in a row. Every command is bounded; the stack is stopped and
//! its data deleted at the end, also when the test fails.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::{
    path::{Path, PathBuf},
    process::Output,
    time::Duration,
};

use sea_orm::{ConnectionTrait, Database, DbBackend, Statement};
use test_support::testenv::{TestEnv, eventually};
use ticketing_proto::v1::{
    self as pb, admission_service_client::AdmissionServiceClient,
    inventory_service_client::InventoryServiceClient, payment_service_client::PaymentServiceClient,
    seat_lock_service_client::SeatLockServiceClient,
};
use tokio_stream::StreamExt;
use tonic::transport::Channel;
use tools::{catalogue, identity::Identity, stack};

/// The most one `stack` command may take (an `up` waits up to 60 s for health): a hang
/// fails the test instead of blocking it.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(300);
/// Ports the stack's port blocks take above their first: gRPC +0..4 (internal +10..14),
/// metrics +20..24, health +30..34, load balancer +40.
const PORT_SPAN: u16 = 41;

/// The `stack` command's arguments that pin a stack to this test's servers, prefixes, ports
/// and state dir.
struct StackArgs {
    state_dir: PathBuf,
    servers: Vec<String>,
    ports: Vec<String>,
    lb_port: u16,
}

impl StackArgs {
    fn new(env: &TestEnv) -> anyhow::Result<Self> {
        let base = free_port_block()?;
        let state_dir = std::env::temp_dir().join(format!("ticketing-stack-keeps-{}", env.id));
        let servers = vec![
            "--database-url".into(),
            env.database_url.clone(),
            "--redis-url".into(),
            env.redis_url.clone(),
            "--redis-prefix".into(),
            env.redis_prefix.clone(),
            "--nats-url".into(),
            env.nats_url.clone(),
            "--nats-prefix".into(),
            env.nats_prefix.clone(),
        ];
        let ports = [("--grpc-port", 0), ("--metrics-port", 20), ("--health-port", 30), ("--lb-port", 40)]
            .into_iter()
            .flat_map(|(flag, offset)| [flag.to_owned(), (base + offset).to_string()])
            .collect();
        Ok(Self { state_dir, servers, ports, lb_port: base + 40 })
    }

    /// `stack --state-dir <dir> <command> <args>` as this test runs it.
    fn command(&self, args: &[&str]) -> std::process::Command {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_stack"));
        command.arg("--state-dir").arg(&self.state_dir).args(args).stdin(std::process::Stdio::null());
        command
    }

    async fn run(&self, args: &[&str]) -> anyhow::Result<Output> {
        let mut command = tokio::process::Command::from(self.command(args));
        command.kill_on_drop(true);
        let output = tokio::time::timeout(COMMAND_TIMEOUT, command.output()).await??;
        Ok(output)
    }

    /// `stack up` on this test's servers and ports with the built debug binaries.
    async fn up(&self) -> anyhow::Result<()> {
        let bin_dir = stack::target_dir().join("debug");
        let mut args = vec!["up", "--bin-dir", bin_dir.to_str().unwrap()];
        args.extend(self.servers.iter().chain(&self.ports).map(String::as_str));
        let output = self.run(&args).await?;
        assert!(output.status.success(), "stack up failed:\n{}", text(&output));
        let progress = String::from_utf8_lossy(&output.stderr);
        assert!(progress.contains("load balancer SERVING"), "up tells how the wait goes:\n{progress}");
        Ok(())
    }

    /// `stack reset --yes` on this test's servers.
    async fn reset(&self) -> anyhow::Result<Output> {
        let mut args = vec!["reset", "--yes"];
        args.extend(self.servers.iter().map(String::as_str));
        self.run(&args).await
    }
}

/// Stops the stack and deletes its data when the test ends, also when it fails: a left
/// stream would keep reserving its byte limit on the shared NATS.
impl Drop for StackArgs {
    fn drop(&mut self) {
        let _ = self.command(&["down"]).output();
        let mut reset = self.command(&["reset", "--yes"]);
        reset.args(&self.servers);
        let _ = reset.output();
        let _ = std::fs::remove_dir_all(&self.state_dir);
    }
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

/// The first of [`PORT_SPAN`] ports that were all free a moment ago, below the ephemeral
/// range like [`stack::free_port`].
fn free_port_block() -> anyhow::Result<u16> {
    for _ in 0..1_000 {
        let base = 20_000 + (uuid::Uuid::new_v4().as_u128() % 11_900) as u16;
        if (base..base + PORT_SPAN).all(|port| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()) {
            return Ok(base);
        }
    }
    anyhow::bail!("no block of {PORT_SPAN} free ports")
}

/// `user`'s pass for `event_id`: joins and watches the queue until admitted.
async fn pass_of(lb: &Channel, identity: &Identity, event_id: &str, user: &str) -> anyhow::Result<pb::Pass> {
    let mut admission = AdmissionServiceClient::new(lb.clone());
    let bearer = identity.user(user);
    admission
        .join(bearer.request(pb::JoinRequest { event_id: event_id.into(), user_id: user.into() }))
        .await?;
    let mut watch = admission
        .watch_queue(
            bearer.request(pb::WatchQueueRequest { event_id: event_id.into(), user_id: user.into() }),
        )
        .await?
        .into_inner();
    while let Some(status) = tokio::time::timeout(Duration::from_secs(30), watch.next()).await? {
        if let Some(pass) = status?.pass {
            return Ok(pass);
        }
    }
    anyhow::bail!("{user} was never admitted")
}

async fn lb_channel(port: u16) -> anyhow::Result<Channel> {
    Ok(tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))?.connect().await?)
}

async fn count(database_url: &str, sql: &str) -> anyhow::Result<i64> {
    let db = Database::connect(database_url).await?;
    let row = db.query_one_raw(Statement::from_string(DbBackend::Postgres, sql)).await?.expect("a row");
    let n = row.try_get_by_index(0)?;
    db.close().await?;
    Ok(n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_booking_survives_stack_up_twice_and_goes_with_reset() -> anyhow::Result<()> {
    stack::ensure_haproxy()?;
    let env = TestEnv::new().await?;
    let stack = StackArgs::new(&env)?;
    stack.up().await?;
    let status = stack.run(&["status"]).await?;
    assert!(status.status.success(), "status after up:\n{}", text(&status));
    assert!(text(&status).contains("ready"), "status shows health:\n{}", text(&status));

    // A booking: alice holds and pays for A-1-1; bob is admitted and keeps his pass.
    let identity = Identity::of_stack(&stack.state_dir)?;
    let lb = lb_channel(stack.lb_port).await?;
    let venue = pb::CreateVenueRequest {
        name: "Restart Hall".into(),
        zones: vec![catalogue::seated_zone("A", "Stalls", 5_000, vec!["1".into()], 10)],
    };
    let now = chrono::Utc::now().timestamp_millis();
    let event = pb::CreateEventRequest {
        venue_id: String::new(),
        name: "Kept".into(),
        starts_at: Some(service_runtime::bus::timestamp_ms(now + 86_400_000)),
        sale_opens_at: Some(service_runtime::bus::timestamp_ms(now - 1_000)),
        max_tickets_per_user: 4,
        currency: "EUR".into(),
        admission_capacity: 10,
        admission_tick_ms: 50,
        pass_ttl_seconds: 600,
        cancellation_cutoff_seconds: 0,
    };
    let event = catalogue::create_event(lb.clone(), &identity.admin(), venue, event).await?;
    let event_id = event.event_id.clone();
    let alice_pass = pass_of(&lb, &identity, &event_id, "alice").await?;
    let bob_pass = pass_of(&lb, &identity, &event_id, "bob").await?;
    let alice = identity.user("alice");
    let hold = SeatLockServiceClient::new(lb.clone())
        .hold_seats(alice.request(pb::HoldSeatsRequest {
            pass_token: alice_pass.token.clone(),
            event_id: event_id.clone(),
            user_id: "alice".into(),
            seat_ids: vec!["A-1-1".into()],
        }))
        .await?
        .into_inner();
    let paid = PaymentServiceClient::new(lb.clone())
        .pay(alice.request(pb::PayRequest {
            idempotency_key: "stack-keeps-data-1".into(),
            event_id: event_id.clone(),
            hold_id: hold.hold_id.clone(),
            user_id: "alice".into(),
            payment_method: "pm_card_ok".into(),
        }))
        .await?
        .into_inner();
    let booking = paid.booking.expect("a booking");
    drop(lb);

    // Up again: everything restarts on the same data.
    stack.up().await?;
    let lb = lb_channel(stack.lb_port).await?;
    let kept = PaymentServiceClient::new(lb.clone())
        .get_booking(alice.request(pb::GetBookingRequest {
            booking_id: booking.booking_id.clone(),
            user_id: "alice".into(),
        }))
        .await?
        .into_inner();
    assert_eq!(kept.booking_id, booking.booking_id);
    assert_eq!(kept.seat_ids, ["A-1-1"], "{kept:?}");
    assert_eq!(kept.status, pb::BookingStatus::Confirmed as i32, "{kept:?}");
    let mut inventory = InventoryServiceClient::new(lb.clone());
    let sold = eventually(Duration::from_secs(30), || {
        let mut inventory = inventory.clone();
        let event_id = event_id.clone();
        async move {
            let a =
                inventory.get_availability(pb::GetAvailabilityRequest { event_id }).await.ok()?.into_inner();
            (a.zones.first()?.sold == 1).then_some(())
        }
    })
    .await;
    assert!(sold.is_some(), "inventory still shows the sold seat after the restart");
    let kept_event =
        inventory.get_event(pb::GetEventRequest { event_id: event_id.clone() }).await?.into_inner();
    assert_eq!(kept_event.event.map(|e| e.event_id), Some(event_id.clone()), "the event is still there");
    // Bob's pass from before the restart still verifies (the pass key was kept), and the
    // sold seat is still taken at seat-lock (its Redis keys were kept).
    let bob = identity.user("bob");
    let mut seat_lock = SeatLockServiceClient::new(lb.clone());
    let taken = seat_lock
        .hold_seats(bob.request(pb::HoldSeatsRequest {
            pass_token: bob_pass.token.clone(),
            event_id: event_id.clone(),
            user_id: "bob".into(),
            seat_ids: vec!["A-1-1".into()],
        }))
        .await
        .expect_err("A-1-1 is sold");
    assert_eq!(taken.code(), tonic::Code::Aborted, "{taken:?}");
    let held = seat_lock
        .hold_seats(bob.request(pb::HoldSeatsRequest {
            pass_token: bob_pass.token.clone(),
            event_id: event_id.clone(),
            user_id: "bob".into(),
            seat_ids: vec!["A-1-2".into()],
        }))
        .await?
        .into_inner();
    assert_eq!(held.seat_ids, ["A-1-2"]);
    drop(lb);

    // Reset deletes it all: an empty database, no stream, no Redis key of the prefix.
    let reset = stack.reset().await?;
    assert!(reset.status.success(), "stack reset failed:\n{}", text(&reset));
    let tables =
        count(&env.database_url, "SELECT count(*) FROM pg_tables WHERE schemaname = 'payment'").await?;
    assert_eq!(tables, 0, "reset leaves an empty database");
    let nats = async_nats::jetstream::new(async_nats::connect(&env.nats_url).await?);
    assert!(
        nats.get_stream(format!("{}_events", env.nats_prefix)).await.is_err(),
        "reset deletes the stream"
    );
    let redis = redis_keys(&env).await?;
    assert_eq!(redis, 0, "reset deletes the prefix's Redis keys");
    assert_pids_gone(&stack.state_dir);
    Ok(())
}

/// Keys under the test's Redis prefix (SCAN, not KEYS: the Redis is shared).
async fn redis_keys(env: &TestEnv) -> anyhow::Result<usize> {
    use fred::prelude::*;
    let redis = Client::new(fred::types::config::Config::from_url(&env.redis_url)?, None, None, None);
    redis.init().await?;
    let (mut cursor, mut found) = ("0".to_owned(), 0);
    loop {
        let (next, keys): (String, Vec<String>) = redis
            .custom(
                fred::cmd!("SCAN"),
                vec![cursor, "MATCH".into(), format!("{}*", env.redis_prefix), "COUNT".into(), "1000".into()],
            )
            .await?;
        found += keys.len();
        if next == "0" {
            break;
        }
        cursor = next;
    }
    redis.quit().await?;
    Ok(found)
}

/// After `reset` no process of the stack runs.
fn assert_pids_gone(state_dir: &Path) {
    let running: Vec<(String, u32, bool)> =
        stack::status(state_dir).into_iter().filter(|(_, _, alive)| *alive).collect();
    assert!(running.is_empty(), "reset stops the stack: {running:?}");
}
