//! Seat-lock's scripts on a real Redis Cluster: three masters from Debian's `redis-server` on
//! free loopback ports, no replicas, in temporary directories, killed when the test ends.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{Context, bail};
use fred::prelude::*;
use futures::future::join_all;
use test_support::testenv::{TestEnv, eventually};
use ticketing_proto::{
    internal::{BeginCheckoutRequest, ConfirmHoldRequest, SoldSeat},
    v1::{HoldBestAvailableRequest, HoldState, ReleaseHoldRequest},
};
use tonic::Code;

use super::helpers::*;

/// Three masters, no replicas: the smallest cluster that spreads slots across nodes.
const MASTERS: usize = 3;

/// The cluster's processes and directories; dropping it kills the servers and removes the
/// directories, also when the test fails.
struct RedisCluster {
    ports: Vec<u16>,
    servers: Vec<Child>,
    dir: PathBuf,
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for server in &mut self.servers {
            let _ = server.kill();
            let _ = server.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn redis_cli(args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new("redis-cli").args(args).stdin(Stdio::null()).output()?;
    if !output.status.success() {
        bail!("redis-cli {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

impl RedisCluster {
    async fn start(id: &str) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("seat-lock-cluster-{id}"));
        let mut cluster = Self { ports: Vec::new(), servers: Vec::new(), dir };
        for n in 0..MASTERS {
            let port = free_port()?;
            let dir = cluster.dir.join(format!("node-{n}"));
            std::fs::create_dir_all(&dir)?;
            let log = std::fs::File::create(dir.join("redis.log"))?;
            let server = Command::new("redis-server")
                .args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--cluster-enabled", "yes"])
                .args(["--cluster-node-timeout", "5000", "--save", "", "--appendonly", "no"])
                .arg("--cluster-config-file")
                .arg(dir.join("nodes.conf"))
                .arg("--dir")
                .arg(&dir)
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .context("cannot start redis-server (Debian package redis-server)")?;
            cluster.servers.push(server);
            cluster.ports.push(port);
        }
        for port in cluster.ports.clone() {
            let up = eventually(Duration::from_secs(20), || async move {
                redis_cli(&["-p", &port.to_string(), "ping"]).ok().filter(|r| r.trim() == "PONG")
            })
            .await;
            up.with_context(|| format!("redis-server on {port} did not answer"))?;
        }
        let nodes: Vec<String> = cluster.ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let mut args = vec!["--cluster", "create"];
        args.extend(nodes.iter().map(String::as_str));
        args.extend(["--cluster-replicas", "0", "--cluster-yes"]);
        redis_cli(&args)?;
        for port in cluster.ports.clone() {
            let ok = eventually(Duration::from_secs(30), || async move {
                redis_cli(&["-p", &port.to_string(), "cluster", "info"])
                    .ok()
                    .filter(|info| info.contains("cluster_state:ok"))
            })
            .await;
            ok.with_context(|| format!("node {port} never saw the cluster ok"))?;
        }
        Ok(cluster)
    }

    /// fred's cluster URL: one node as the host, the others as `node` parameters.
    fn url(&self) -> String {
        let others: Vec<String> = self.ports[1..].iter().map(|p| format!("node=127.0.0.1:{p}")).collect();
        format!("redis-cluster://127.0.0.1:{}?{}", self.ports[0], others.join("&"))
    }

    /// The port of the master serving `key`'s slot.
    fn node_of(&self, key: &str) -> anyhow::Result<u16> {
        let slot: u16 =
            redis_cli(&["-p", &self.ports[0].to_string(), "cluster", "keyslot", key])?.trim().parse()?;
        for port in &self.ports {
            let nodes = redis_cli(&["-p", &port.to_string(), "cluster", "nodes"])?;
            for line in nodes.lines().filter(|l| l.contains("myself")) {
                for range in line.split_whitespace().skip(8) {
                    let (from, to) = range.split_once('-').unwrap_or((range, range));
                    if (from.parse::<u16>()?..=to.parse::<u16>()?).contains(&slot) {
                        return Ok(*port);
                    }
                }
            }
        }
        bail!("no master serves slot {slot}")
    }
}

/// Seat-lock's scripts exactly as `Store::connect` loads them (`with_helpers` in store/mod.rs).
fn script_sources() -> Vec<String> {
    let common = include_str!("../../src/store/common.lua");
    let mut sources: Vec<String> = [
        include_str!("../../src/store/hold_seats.lua"),
        include_str!("../../src/store/hold_best.lua"),
        include_str!("../../src/store/release.lua"),
        include_str!("../../src/store/get_hold.lua"),
        include_str!("../../src/store/checkout.lua"),
        include_str!("../../src/store/confirm.lua"),
        include_str!("../../src/store/sweep.lua"),
        include_str!("../../src/store/init.lua"),
        include_str!("../../src/store/end_pass.lua"),
    ]
    .iter()
    .map(|body| service_runtime::lua::LuaScript::with_prelude(common, body))
    .collect();
    sources.push(include_str!("../../src/store/ack.lua").to_owned());
    sources
}

/// An event id whose keys live on a master other than the URL's first node (where
/// `Store::connect`'s SCRIPT LOAD lands), as two out of three events do.
fn event_on_another_master(cluster: &RedisCluster, prefix: &str) -> anyhow::Result<String> {
    for _ in 0..64 {
        let event_id = uuid::Uuid::new_v4().to_string();
        if cluster.node_of(&format!("{prefix}sl:{{{event_id}}}:ready"))? != cluster.ports[0] {
            return Ok(event_id);
        }
    }
    bail!("every event landed on the first master")
}

/// Loads every seat-lock script on every master, as `script_load_cluster` would.
async fn load_scripts_on_every_master(cluster: &RedisCluster) -> anyhow::Result<()> {
    for port in &cluster.ports {
        let node =
            Builder::from_config(fred::prelude::Config::from_url(&format!("redis://127.0.0.1:{port}"))?)
                .build()?;
        node.init().await?;
        for source in script_sources() {
            let _: String = node.script_load(source).await?;
        }
        node.quit().await?;
    }
    Ok(())
}

/// The scripts run unchanged on a cluster once every master has them: all keys of an event
/// share its hash tag, so the undeclared keys a script builds from KEYS[1] are in the slot
/// the script was routed to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hold_scripts_run_unchanged_on_a_redis_cluster() -> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    let cluster = RedisCluster::start(&env.id).await?;
    let event_id = event_on_another_master(&cluster, &env.redis_prefix)?;
    // Short holds so the expiry sweep is part of the run; checkout extends past them.
    let app = spawn_app_on(env, &cluster.url(), 3, event_id).await?;
    load_scripts_on_every_master(&cluster).await?;
    run_hold_scenario(&app, &cluster).await
}

/// Seat-lock loads its scripts on ONE node at start (`script_load`), not on every master; an
/// event whose slot lives on another master must still work from its first hold: the
/// NOSCRIPT fallback sends the whole script with EVAL, which Redis routes to the owning
/// master. (Reloading on a random node instead made these holds fail with INTERNAL.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holds_work_on_a_master_the_scripts_were_not_loaded_on() -> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    let cluster = RedisCluster::start(&env.id).await?;
    let event_id = event_on_another_master(&cluster, &env.redis_prefix)?;
    let app = spawn_app_on(env, &cluster.url(), 3, event_id).await?;
    run_hold_scenario(&app, &cluster).await
}

async fn run_hold_scenario(app: &TestApp, cluster: &RedisCluster) -> anyhow::Result<()> {
    // Every key of the event hashes to one slot, on one of the masters.
    let node = cluster.node_of(&app.key("ready"))?;
    assert_eq!(cluster.node_of(&app.key("seat:A-R1-1"))?, node);
    assert_eq!(cluster.node_of(&app.key("free:A"))?, node);
    for index in ["taken:A", "runs:A", "idx:A"] {
        assert_eq!(cluster.node_of(&app.key(index))?, node, "the seat index shares the event's slot");
    }

    // Hold two seats and move them into checkout at once (extended well past the 3 s TTL).
    let first = app.hold("u1", &["A-R1-1", "A-R1-2"]).await?;
    let mut client = app.client();
    let checkout = app
        .internal()
        .begin_checkout(BeginCheckoutRequest {
            event_id: app.event_id.clone(),
            hold_id: first.hold_id.clone(),
            user_id: "u1".into(),
        })
        .await?
        .into_inner();
    assert_eq!(checkout.state, HoldState::Checkout as i32);
    assert_eq!(first.quantity, 2);
    assert_eq!(app.free("A").await?, i64::from(CAPACITY_A) - 2);
    let seat: Option<String> = app.redis.get(app.key("seat:A-R1-1")).await?;
    assert_eq!(seat.as_deref(), Some(first.hold_id.as_str()), "the seat key lives in the cluster");

    // Contention: twenty users race for one seat; exactly one wins.
    let racers = (0..20).map(|i| {
        let request = app.hold_request(&format!("racer-{i}"), &["A-R1-3"]);
        let mut client = app.client();
        tokio::spawn(async move { client.hold_seats(request).await })
    });
    let mut winners = Vec::new();
    for result in join_all(racers).await {
        match result? {
            Ok(hold) => winners.push(hold.into_inner()),
            Err(status) => {
                assert_eq!(status.code(), Code::Aborted, "{status:?}");
                assert_eq!(reason_of(&status).0, "SEAT_TAKEN");
            }
        }
    }
    assert_eq!(winners.len(), 1, "exactly one racer holds the seat");
    assert_eq!(app.free("A").await?, i64::from(CAPACITY_A) - 3);

    // Confirm the first hold: checkout kept it past its 3 s TTL; now it is sold for good.
    let sold = app
        .internal()
        .confirm_hold(ConfirmHoldRequest {
            event_id: app.event_id.clone(),
            hold_id: first.hold_id.clone(),
            user_id: "u1".into(),
            booking_id: "booking-cluster-1".into(),
        })
        .await?
        .into_inner();
    assert_eq!(sold.state, HoldState::Sold as i32);
    let seat: Option<String> = app.redis.get(app.key("seat:A-R1-1")).await?;
    assert_eq!(seat, Some(format!("sold:{}", first.hold_id)));

    // Release: a second hold given back frees its seat at once.
    let released = app.hold("u2", &["A-R2-1"]).await?;
    let answer = client
        .release_hold(ReleaseHoldRequest {
            event_id: app.event_id.clone(),
            hold_id: released.hold_id.clone(),
            user_id: "u2".into(),
        })
        .await?
        .into_inner();
    assert_eq!(answer.hold.map(|h| h.state), Some(HoldState::Released as i32));
    let seat: Option<String> = app.redis.get(app.key("seat:A-R2-1")).await?;
    assert_eq!(seat, None);

    // Expiry: the racer's hold ends by itself through the sweeper; the sold seats stay sold.
    let swept = eventually(EVENTUALLY, || async {
        (app.free("A").await.ok()? == i64::from(CAPACITY_A) - 2).then_some(())
    })
    .await;
    assert!(swept.is_some(), "the expired hold's seat returned; free = {:?}", app.free("A").await);
    let seat: Option<String> = app.redis.get(app.key("seat:A-R1-3")).await?;
    assert_eq!(seat, None, "the expired seat is free again");
    let taken = app.hold("u3", &["A-R1-1"]).await.expect_err("a sold seat stays sold");
    assert_eq!(reason_of(&taken).0, "SEAT_TAKEN");
    app.hold("u3", &["A-R1-3"]).await?;

    // Best available: the script's search over the zone runs on the cluster too.
    let best = client
        .hold_best_available(HoldBestAvailableRequest {
            pass_token: app.pass("u4"),
            event_id: app.event_id.clone(),
            user_id: "u4".into(),
            zone_id: "A".into(),
            quantity: 2,
            allow_split: false,
        })
        .await?
        .into_inner();
    assert_eq!(best.seat_ids, vec!["A-R1-4".to_owned(), "A-R1-5".to_owned()]);

    // The cluster loses the event's keys: seat-lock rebuilds the sale from payment (the init
    // script) and the sold seats stay sold.
    app.payment.sold.lock().expect("lock").extend(["A-R1-1", "A-R1-2"].map(|seat| SoldSeat {
        zone_id: "A".into(),
        seat_id: seat.into(),
        user_id: "u1".into(),
        booking_id: "booking-cluster-1".into(),
        hold_id: first.hold_id.clone(),
    }));
    let mut deleted = 0;
    for port in &cluster.ports {
        let port = port.to_string();
        let keys = redis_cli(&["-p", &port, "--scan", "--pattern", &format!("{}*", app.env.redis_prefix)])?;
        for key in keys.lines().filter(|k| !k.is_empty()) {
            redis_cli(&["-p", &port, "del", key])?;
            deleted += 1;
        }
    }
    assert!(deleted > 0);
    let request = app.hold_request("u5", &["A-R1-1"]);
    let after = eventually(EVENTUALLY, || {
        let (mut client, request) = (app.client(), request.clone());
        async move {
            match client.hold_seats(request).await {
                Err(status) if status.code() == Code::Unavailable => None,
                other => Some(other),
            }
        }
    })
    .await
    .expect("seat-lock answers after the rebuild");
    let status = after.expect_err("a sold seat stays sold after the rebuild");
    assert_eq!(reason_of(&status).0, "SEAT_TAKEN", "{status:?}");
    assert_eq!(app.free("A").await?, i64::from(CAPACITY_A) - 2, "free = capacity - sold after the rebuild");
    let seat: Option<String> = app.redis.get(app.key("seat:A-R1-2")).await?;
    assert_eq!(seat, Some(format!("sold:{}", first.hold_id)));

    // The booking is cancelled: the return script gives the rebuilt sale back, on the cluster too.
    assert!(app.return_seats(app.return_request(&first, "booking-cluster-1")).await?);
    let seat: Option<String> = app.redis.get(app.key("seat:A-R1-2")).await?;
    assert_eq!(seat, None);
    assert_eq!(app.free("A").await?, i64::from(CAPACITY_A));
    Ok(())
}
