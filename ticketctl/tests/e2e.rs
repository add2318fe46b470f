//! `ticketctl` against the real mesh behind HAProxy: the sale's pause (joins still queue,
//! nobody is admitted), resume and close, the queue (with its rate and wait) and the seats
//! (with a zone's seat map), a user's bookings and an operator's refund, the audit of the
//! opening through admission-audit, and the exit code of every error path.
//!
//! Needs the service binaries (`cargo build --bins`) and HAProxy, as tools' end-to-end tests.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::Duration;

use serde_json::Value;
use test_support::testenv::{TestEnv, eventually};
use ticketing_proto::v1::{
    self as pb, QueueState, admission_service_client::AdmissionServiceClient,
    payment_service_client::PaymentServiceClient, seat_lock_service_client::SeatLockServiceClient,
};
use tools::stack::{self, Stack, StackConfig};

/// Stops the stack's processes when the test ends, even when it fails.
struct Running(Stack);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.stop();
    }
}

/// What one run of ticketctl gave: exit code, stdout, stderr.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        assert_eq!(self.code, 0, "ticketctl failed: {}", self.stderr);
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("{e}: {}", self.stdout))
    }
}

/// Runs ticketctl with `args`, the stack's load balancer as target (from the environment,
/// as an operator sets it) and `token` when given.
async fn ctl(target: &str, token: Option<&str>, args: &[&str]) -> Run {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_ticketctl"));
    command.args(args).env("TICKETCTL_TARGET", target).env_remove("TICKETCTL_TOKEN");
    if let Some(token) = token {
        command.env("TICKETCTL_TOKEN", token);
    }
    let output = command.output().await.unwrap();
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

const VENUE_FILE: &str = "\
name: Ctl Hall
zones:
  - id: A
    name: Stalls
    price_cents: 5000
    rows: ['1', '2']
    seats_per_row: 5
  - id: FLOOR
    name: Floor
    price_cents: 3500
    capacity: 30
";

/// Creates an event whose sale opened a second ago with ticketctl; returns its id.
async fn create_event(target: &str, token: &str, venue_id: &str, name: &str) -> String {
    let now = chrono::Utc::now();
    let starts_at = (now + chrono::Duration::days(30)).to_rfc3339();
    let opens_at = (now - chrono::Duration::seconds(1)).to_rfc3339();
    let args = [
        "event",
        "create",
        "--venue",
        venue_id,
        "--name",
        name,
        "--starts-at",
        &starts_at,
        "--sale-opens-at",
        &opens_at,
        "--admission-capacity",
        "10",
        "--admission-tick-ms",
        "50",
        "--json",
    ];
    let event = ctl(target, Some(token), &args).await.json();
    assert_eq!((event["name"].as_str(), event["admission_capacity"].as_u64()), (Some(name), Some(10)));
    event["event_id"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_pauses_resumes_and_closes_a_sale_and_reads_its_queue_and_seats() {
    let env = TestEnv::new().await.unwrap();
    let state_dir = std::env::temp_dir().join(format!("ticketctl-e2e-{}", env.id));
    let mut config = StackConfig::on_free_ports(state_dir, stack::target_dir().join("debug")).unwrap();
    config.database_url = env.database_url.clone();
    config.redis_url = env.redis_url.clone();
    config.redis_prefix = env.redis_prefix.clone();
    config.nats_url = env.nats_url.clone();
    config.nats_prefix = env.nats_prefix.clone();
    let stack = Running(Stack::start(config).await.unwrap());
    let target = stack.0.config.lb_url();
    let identity = stack.0.identity.clone();
    let ops = identity.token("ops", true, Duration::from_secs(3600));
    let ann_token = identity.token("ann", false, Duration::from_secs(3600));
    let lb = tonic::transport::Endpoint::from_shared(target.clone()).unwrap().connect().await.unwrap();

    // Catalogue: a venue from a file, two events on it.
    let venue_file = std::env::temp_dir().join(format!("ticketctl-venue-{}.yaml", env.id));
    std::fs::write(&venue_file, VENUE_FILE).unwrap();
    let venue_path = venue_file.to_str().unwrap();
    let created = ctl(&target, Some(&ops), &["venue", "create", "-f", venue_path]).await;
    assert_eq!(created.code, 0, "{}", created.stderr);
    assert!(created.stdout.contains("Ctl Hall") && created.stdout.contains("FLOOR"), "{}", created.stdout);
    let venue = ctl(&target, Some(&ops), &["venue", "create", "-f", venue_path, "--json"]).await.json();
    assert_eq!(venue["total_capacity"].as_u64(), Some(40), "{venue}");
    let venue_id = venue["venue_id"].as_str().unwrap();
    let event_id = create_event(&target, &ops, venue_id, "Paused Tour").await;
    let other_id = create_event(&target, &ops, venue_id, "Running Tour").await;
    let ev = event_id.as_str();

    // Catalogue.
    let listed = ctl(&target, Some(&ops), &["event", "list", "--json"]).await.json();
    let ids: Vec<&str> = listed.as_array().unwrap().iter().map(|e| e["event_id"].as_str().unwrap()).collect();
    assert!(ids.contains(&ev) && ids.contains(&other_id.as_str()), "{ids:?}");
    let table = ctl(&target, Some(&ops), &["event", "list"]).await;
    assert_eq!(table.code, 0, "{}", table.stderr);
    assert!(table.stdout.starts_with("EVENT") && table.stdout.contains("Paused Tour"), "{}", table.stdout);
    let got = ctl(&target, Some(&ops), &["event", "get", ev]).await;
    assert_eq!(got.code, 0, "{}", got.stderr);
    assert!(got.stdout.contains("Paused Tour") && got.stdout.contains("FLOOR"), "{}", got.stdout);
    let got = ctl(&target, Some(&ops), &["event", "get", ev, "--json"]).await.json();
    assert_eq!((got["total_capacity"].as_u64(), got["zones"].as_array().unwrap().len()), (Some(40), 2));

    // Pause: joins still queue, nobody is admitted.
    let paused = ctl(&target, Some(&ops), &["sale", "pause", ev, "--json"]).await.json();
    assert_eq!(paused["state"], "paused");
    let mut admission = AdmissionServiceClient::new(lb.clone());
    for (i, user) in ["ann", "bob"].into_iter().enumerate() {
        let request =
            identity.as_user(user, pb::JoinRequest { event_id: event_id.clone(), user_id: String::new() });
        let status = admission.join(request).await.unwrap().into_inner();
        assert_eq!((status.state, status.position), (QueueState::Waiting as i32, i as u64 + 1));
    }
    // A user of another event with the same tick, joined later, is admitted: the controllers
    // have ticked since the joins, and the paused event admitted nobody.
    let request =
        identity.as_user("cat", pb::JoinRequest { event_id: other_id.clone(), user_id: String::new() });
    admission.join(request).await.unwrap();
    let other_admitted = eventually(Duration::from_secs(30), || {
        let (target, ops, other) = (target.clone(), ops.clone(), other_id.clone());
        async move {
            let queue = ctl(&target, Some(&ops), &["queue", "show", &other, "--json"]).await.json();
            (queue["admitted_total"].as_u64() == Some(1)).then_some(())
        }
    })
    .await;
    assert!(other_admitted.is_some(), "the running sale admits");
    let queue = ctl(&target, Some(&ops), &["queue", "show", ev, "--json"]).await.json();
    assert_eq!(queue["state"], "paused");
    assert_eq!(
        (queue["queue_length"].as_u64(), queue["admitted_total"].as_u64(), queue["active_passes"].as_u64()),
        (Some(2), Some(0), Some(0)),
        "{queue}"
    );
    // Two wait: the wait at the back of the line is some seconds (at the measured rate, or
    // capacity / pass ttl), and the rate is a number.
    assert!(queue["estimated_wait_seconds"].as_u64().unwrap() > 0, "{queue}");
    assert!(queue["admission_rate"].as_f64().unwrap() >= 0.0, "{queue}");
    let shown = ctl(&target, Some(&ops), &["queue", "show", ev]).await;
    assert_eq!(shown.code, 0);
    assert!(shown.stdout.contains("paused") && shown.stdout.contains("waiting"), "{}", shown.stdout);
    assert!(
        shown.stdout.contains("admission rate") && shown.stdout.contains("(last in line), once resumed"),
        "{}",
        shown.stdout
    );

    // Resume: both are admitted.
    let resumed = ctl(&target, Some(&ops), &["sale", "resume", ev]).await;
    assert_eq!(resumed.code, 0, "{}", resumed.stderr);
    assert!(resumed.stdout.contains("resumed"), "{}", resumed.stdout);
    let admitted = eventually(Duration::from_secs(30), || {
        let (target, ops, ev) = (target.clone(), ops.clone(), event_id.clone());
        async move {
            let queue = ctl(&target, Some(&ops), &["queue", "show", &ev, "--json"]).await.json();
            (queue["admitted_total"].as_u64() == Some(2)).then_some(queue)
        }
    })
    .await
    .expect("the resumed sale admits both");
    assert_eq!((admitted["state"].as_str(), admitted["queue_length"].as_u64()), (Some("open"), Some(0)));
    assert_eq!(admitted["estimated_wait_seconds"].as_u64(), Some(0), "nobody waits: {admitted}");

    // A booking: ann buys A-1-1 and A-1-2; bob holds A-2-5 and does not pay.
    let mut seat_lock = SeatLockServiceClient::new(lb.clone());
    let mut holds = Vec::new();
    for (user, seats) in [("ann", vec!["A-1-1", "A-1-2"]), ("bob", vec!["A-2-5"])] {
        let request = identity
            .as_user(user, pb::GetQueueStatusRequest { event_id: event_id.clone(), user_id: String::new() });
        let pass = admission.get_queue_status(request).await.unwrap().into_inner().pass.expect("admitted");
        let request = identity.as_user(
            user,
            pb::HoldSeatsRequest {
                pass_token: pass.token,
                event_id: event_id.clone(),
                user_id: String::new(),
                seat_ids: seats.into_iter().map(String::from).collect(),
            },
        );
        holds.push(seat_lock.hold_seats(request).await.unwrap().into_inner());
    }
    let request = identity.as_user(
        "ann",
        pb::PayRequest {
            idempotency_key: format!("ticketctl-e2e-{}", env.id),
            event_id: event_id.clone(),
            hold_id: holds[0].hold_id.clone(),
            user_id: String::new(),
            payment_method: "pm_card_ok".into(),
        },
    );
    let paid = PaymentServiceClient::new(lb.clone()).pay(request).await.unwrap().into_inner();
    let booking_id = paid.booking.expect("a confirmed payment books").booking_id;
    let booking = booking_id.as_str();

    // The seat map of zone A: ann's two seats sold, bob's held, the rest free.
    let row_seats =
        |map: &Value, row: usize| map["seat_map"]["rows"][row]["seats"].as_str().unwrap().to_owned();
    let map = eventually(Duration::from_secs(30), || {
        let (target, ops, ev) = (target.clone(), ops.clone(), event_id.clone());
        async move {
            let map = ctl(&target, Some(&ops), &["seats", "show", &ev, "--zone", "A", "--json"]).await.json();
            (row_seats(&map, 0) == "XX..." && row_seats(&map, 1) == "....h").then_some(map)
        }
    })
    .await
    .expect("inventory shows the sale and the hold seat by seat");
    assert_eq!(map["seat_map"]["rows"][1]["row"], "2", "{map}");
    let shown = ctl(&target, Some(&ops), &["seats", "show", ev, "--zone", "A"]).await;
    assert_eq!(shown.code, 0, "{}", shown.stderr);
    assert!(shown.stdout.starts_with("ZONE") && shown.stdout.contains("TOTAL"), "{}", shown.stdout);
    assert!(shown.stdout.contains(". free  h held  X sold"), "{}", shown.stdout);
    let rows: Vec<&str> =
        shown.stdout.lines().filter(|l| l.ends_with("XX...") || l.ends_with("....h")).collect();
    assert_eq!(rows, ["1       1  XX...", "2       1  ....h"], "{}", shown.stdout);
    let floor = ctl(&target, Some(&ops), &["seats", "show", ev, "--zone", "FLOOR"]).await;
    assert_eq!(floor.code, 0, "{}", floor.stderr);
    assert!(floor.stdout.contains("general admission: no seats to map"), "{}", floor.stdout);

    // Bookings: the operator lists ann's; ann lists her own.
    let listed = ctl(&target, Some(&ops), &["bookings", "list", "--user", "ann", "--json"]).await.json();
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(
        (listed[0]["booking_id"].as_str(), listed[0]["status"].as_str(), listed[0]["amount_cents"].as_i64()),
        (Some(booking), Some("confirmed"), Some(10_000)),
    );
    assert_eq!(listed[0]["seat_ids"], serde_json::json!(["A-1-1", "A-1-2"]));
    let own = ctl(&target, Some(&ann_token), &["bookings", "list", "--event", ev]).await;
    assert_eq!(own.code, 0, "{}", own.stderr);
    assert!(own.stdout.starts_with("BOOKING") && own.stdout.contains(booking), "{}", own.stdout);
    assert!(own.stdout.contains("A-1-1,A-1-2") && own.stdout.contains("100.00 EUR"), "{}", own.stdout);
    let none = ctl(&target, Some(&ops), &["bookings", "list", "--user", "bob", "--json"]).await.json();
    assert_eq!(none.as_array().map(Vec::len), Some(0), "{none}");

    // Refund: the booking is cancelled, its seats are free again, a rerun replays it.
    let refunded =
        ctl(&target, Some(&ops), &["refund", booking, "--reason", "show moved", "--json"]).await.json();
    assert_eq!(
        (
            refunded["booking"]["status"].as_str(),
            refunded["payment_status"].as_str(),
            refunded["replayed"].as_bool()
        ),
        (Some("cancelled"), Some("refunded"), Some(false)),
        "{refunded}"
    );
    assert_eq!(refunded["booking"]["cancel_reason"], "show moved");
    let again = ctl(&target, Some(&ops), &["refund", booking, "--reason", "show moved"]).await;
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert!(
        again.stdout.contains("refunded and cancelled") && again.stdout.contains("a replay"),
        "{}",
        again.stdout
    );
    let freed = eventually(Duration::from_secs(30), || {
        let (target, ops, ev) = (target.clone(), ops.clone(), event_id.clone());
        async move {
            let map = ctl(&target, Some(&ops), &["seats", "show", &ev, "--zone", "A", "--json"]).await.json();
            (row_seats(&map, 0) == ".....").then_some(())
        }
    })
    .await;
    assert!(freed.is_some(), "the refunded seats are back on sale");
    let listed = ctl(&target, Some(&ops), &["bookings", "list", "--user", "ann", "--json"]).await.json();
    assert_eq!(listed[0]["status"], "cancelled", "{listed}");

    // Seats: a per-zone table and its JSON (without --zone, no map).
    let seats = ctl(&target, Some(&ops), &["seats", "show", ev]).await;
    assert_eq!(seats.code, 0, "{}", seats.stderr);
    let lines: Vec<&str> = seats.stdout.lines().collect();
    assert!(lines[0].starts_with("ZONE") && lines.iter().any(|l| l.starts_with("FLOOR")), "{}", seats.stdout);
    assert!(
        lines.last().unwrap().starts_with("TOTAL") && !seats.stdout.contains("seat map"),
        "{}",
        seats.stdout
    );
    let seats = ctl(&target, Some(&ops), &["seats", "show", ev, "--json"]).await.json();
    let zones = seats["zones"].as_array().unwrap();
    let capacity: u64 = zones.iter().map(|z| z["capacity"].as_u64().unwrap()).sum();
    let free: u64 = zones.iter().map(|z| z["free"].as_u64().unwrap()).sum();
    let held: u64 = zones.iter().map(|z| z["held"].as_u64().unwrap()).sum();
    assert_eq!((capacity, free, held), (40, 39, 1), "ann's seats refunded, bob's held: {seats}");

    // Close: joins are refused, and the sale cannot be resumed (refused: 3).
    let closed = ctl(&target, Some(&ops), &["sale", "close", ev, "--json"]).await.json();
    assert_eq!(closed["state"], "closed");
    let request =
        identity.as_user("dan", pb::JoinRequest { event_id: event_id.clone(), user_id: String::new() });
    assert_eq!(admission.join(request).await.unwrap_err().code(), tonic::Code::FailedPrecondition);
    let refused = ctl(&target, Some(&ops), &["sale", "resume", ev]).await;
    assert_eq!(refused.code, 3, "{}", refused.stderr);
    assert!(refused.stderr.contains("SALE_CLOSED"), "{}", refused.stderr);

    // The audit of the opening: nobody joined before it (sealed ticket 0), so ann and bob
    // were admitted in join order whatever the key; a key that is not the commitment's is
    // a mismatch; an event without admissions is inconclusive; an unreachable NATS is 2.
    let key = "ab".repeat(32);
    let other_commitment = "cd".repeat(32);
    let audit = |event: String, extra: Vec<String>| {
        let (target, ops, key, env_nats, prefix) =
            (target.clone(), ops.clone(), key.clone(), env.nats_url.clone(), env.nats_prefix.clone());
        async move {
            let mut args = vec![
                "audit".to_owned(),
                event,
                "--event-key".into(),
                key,
                "--sealed-ticket".into(),
                "0".into(),
            ];
            args.extend(["--nats-prefix".to_owned(), prefix, "--read-timeout-secs".into(), "30".into()]);
            if !extra.iter().any(|a| a == "--nats-url") {
                args.extend(["--nats-url".to_owned(), env_nats]);
            }
            args.extend(extra);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            ctl(&target, Some(&ops), &args).await
        }
    };
    let fair = audit(event_id.clone(), vec!["--json".into()]).await;
    assert_eq!(fair.code, 0, "{}{}", fair.stdout, fair.stderr);
    let report: Value =
        serde_json::from_str(fair.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {}", fair.stdout));
    assert_eq!(report["verdict"], "fair", "{report}");
    let unfair = audit(event_id.clone(), vec!["--commitment".into(), other_commitment]).await;
    assert_eq!(unfair.code, 1, "{}{}", unfair.stdout, unfair.stderr);
    let nothing = audit("00000000-0000-4000-8000-000000000001".into(), vec![]).await;
    assert_eq!(nothing.code, 3, "{}{}", nothing.stdout, nothing.stderr);
    let unreadable = audit(event_id.clone(), vec!["--nats-url".into(), "nats://127.0.0.1:1".into()]).await;
    assert_eq!(unreadable.code, 2, "{}{}", unreadable.stdout, unreadable.stderr);
    // Without admission-audit beside it or on PATH: 127 and what to do.
    let lone_dir = std::env::temp_dir().join(format!("ticketctl-lone-{}", env.id));
    std::fs::create_dir_all(&lone_dir).unwrap();
    let lone = lone_dir.join("ticketctl");
    std::fs::copy(env!("CARGO_BIN_EXE_ticketctl"), &lone).unwrap();
    let output = tokio::process::Command::new(&lone)
        .args(["audit", ev, "--event-key", &key, "--sealed-ticket", "0"])
        .env("PATH", "")
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(127), "{stderr}");
    assert!(stderr.contains("admission-audit is neither beside ticketctl"), "{stderr}");
    let _ = std::fs::remove_dir_all(&lone_dir);

    // Every error path's exit code.
    let unknown = "00000000-0000-4000-8000-000000000000";
    let bad_file = std::env::temp_dir().join(format!("ticketctl-bad-venue-{}.yaml", env.id));
    std::fs::write(&bad_file, "name: Bad Hall\nzones:\n  - id: A\n    name: Stalls\n    price_cents: 1\n")
        .unwrap();
    let bad_path = bad_file.to_str().unwrap();
    let missing = "/nonexistent/venue.yaml";
    let cases: [(Option<&str>, Vec<&str>, i32, &str); 26] = [
        (Some(&ops), vec!["queue", "show", unknown], 5, "NotFound"),
        (Some(&ops), vec!["seats", "show", unknown], 5, "NotFound"),
        (Some(&ops), vec!["event", "get", unknown], 5, "NotFound"),
        (Some(&ops), vec!["seats", "show", ev, "--zone", "NOPE"], 5, "ZONE_NOT_FOUND"),
        (Some(&ops), vec!["seats", "show", ev, "--zone", "no zone!"], 3, "InvalidArgument"),
        (Some(&ops), vec!["seats", "show", ev, "--zone", "A", "--width", "5"], 2, "--width"),
        (Some(&ops), vec!["refund", unknown], 5, "BOOKING_NOT_FOUND"),
        (Some(&ops), vec!["refund", "not-a-uuid"], 3, "InvalidArgument"),
        (Some(&ops), vec!["refund", booking, "--reason", "another reason"], 3, "IDEMPOTENCY_KEY_REUSED"),
        (Some(&ops), vec!["refund", booking, "--reason", " "], 3, "reason"),
        (Some(&ann_token), vec!["refund", booking], 3, "ADMIN_SCOPE_REQUIRED"),
        (Some(&ann_token), vec!["bookings", "list", "--user", "bob"], 3, "USER_MISMATCH"),
        (Some(&ops), vec!["bookings", "list", "--user", "not a user"], 3, "InvalidArgument"),
        (Some(&ops), vec!["refund"], 2, "BOOKING"),
        (Some(&ops), vec!["sale", "pause", "not-a-uuid"], 3, "InvalidArgument"),
        (None, vec!["sale", "pause", ev], 3, "Unauthenticated"),
        (Some(&ann_token), vec!["sale", "pause", ev], 3, "ADMIN_SCOPE_REQUIRED"),
        (Some("not.a.jwt"), vec!["queue", "show", ev], 3, "Unauthenticated"),
        (Some(&ops), vec!["sale", "pause"], 2, "EVENT"),
        (Some(&ops), vec!["sale", "reopen", ev], 2, "reopen"),
        (Some(&ops), vec!["--target", "ftp://nowhere", "queue", "show", ev], 2, "--target"),
        (Some(&ops), vec!["venue", "create", "-f", bad_path], 2, "give rows"),
        (Some(&ops), vec!["venue", "create", "-f", missing], 2, missing),
        (Some(&ann_token), vec!["venue", "create", "-f", venue_path], 3, "ADMIN_SCOPE_REQUIRED"),
        (Some(&ops), vec!["event", "create", "--venue", venue_id, "--name", "x"], 2, "--starts-at"),
        (
            Some(&ops),
            vec![
                "event",
                "create",
                "--venue",
                unknown,
                "--name",
                "x",
                "--starts-at",
                "2030-01-01T00:00:00Z",
                "--sale-opens-at",
                "2029-01-01T00:00:00Z",
            ],
            5,
            "NotFound",
        ),
    ];
    for (token, args, code, names) in cases {
        let run = ctl(&target, token, &args).await;
        assert_eq!(run.code, code, "{args:?}: {}", run.stderr);
        assert!(run.stderr.contains(names), "{args:?}: {}", run.stderr);
    }
    let _ = std::fs::remove_file(&venue_file);
    let _ = std::fs::remove_file(&bad_file);
    let unreachable = ctl("http://127.0.0.1:1", Some(&ops), &["queue", "show", ev]).await;
    assert_eq!(unreachable.code, 4, "{}", unreachable.stderr);
    assert!(unreachable.stderr.contains("unreachable"), "{}", unreachable.stderr);
    let help = ctl(&target, None, &["sale", "pause", "--help"]).await;
    assert_eq!(help.code, 0);
    assert!(help.stdout.contains("Exit codes") && help.stdout.contains("unreachable"), "{}", help.stdout);
}
