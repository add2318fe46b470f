//! `admission-audit` against real sales: the admission service on the real Redis and NATS
//! (fake inventory) runs an opening, then the audit reads the test's stream, as an operator
//! would, and judges it; forged events and wrong keys must be caught. The tool is a binary
//! (`src/bin/admission-audit/`), so it is judged by what it prints (`--json`) and its exit
//! code, as a script of an operator would judge it.

// Test code and its helpers: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "api/helpers.rs"]
#[allow(dead_code)] // this binary uses only part of the shared helpers
mod helpers;

use std::{collections::HashMap, process::Output, time::Duration};

use admission::fairness::{EventShuffleKey, ShuffleKey, opening_order};
use fred::interfaces::HashesInterface;
use helpers::*;
use serde_json::{Value, json};
use service_runtime::bus::{EventBus, envelope};
use test_support::testenv::TestEnv;
use ticketing_proto::{
    events::{Admitted, event_envelope::Body},
    v1::{JoinRequest, QueueState},
};

/// The exit codes `admission-audit --help` documents.
mod exit {
    pub const FAIR: i32 = 0;
    pub const UNFAIR: i32 = 1;
    pub const UNREADABLE: i32 = 2;
    pub const INCONCLUSIVE: i32 = 3;
    pub const BAD_ARGUMENTS: i32 = 64;
}

/// Users who join before the opening, and after it; capacity admits them all.
const EARLY: usize = 12;
const LATE: usize = 6;

/// A sale that has opened and admitted everyone, with what an operator publishes about it.
struct Sale {
    env: TestEnv,
    event_id: String,
    key: EventShuffleKey,
    sealed_ticket: u64,
    /// The pre-queue users in the order of the keyed shuffle.
    prequeue: Vec<String>,
    /// Every Admitted event the service published, as read from the stream.
    admitted: Vec<Admitted>,
}

/// Runs a real sale: EARLY joins before the opening, LATE after it, all admitted and their
/// Admitted events in the test's stream.
async fn run_sale() -> Sale {
    let env = TestEnv::new().await.unwrap();
    let inventory = FakeInventory::default();
    let event_id = inventory.add_event(1_500, (EARLY + LATE) as u32, 20, 600);
    let mut client = spawn_app(&env, &inventory.start().await).await;
    let early: Vec<String> = (0..EARLY).map(|i| format!("fan-{i}")).collect();
    for user in &early {
        let request = as_user(user, JoinRequest { event_id: event_id.clone(), user_id: user.clone() });
        let status = client.join(request).await.unwrap().into_inner();
        assert_eq!(status.state, QueueState::PreQueue as i32, "{user} joined before the opening");
    }
    let redis = redis(&env).await;
    let opening_key = key(&env, &event_id, "opening");
    wait_until_open(&redis, &opening_key).await;
    for i in 0..LATE {
        let user = format!("late-{i}");
        let request = as_user(&user, JoinRequest { event_id: event_id.clone(), user_id: user.clone() });
        let status = client.join(request).await.unwrap().into_inner();
        assert_ne!(status.state, QueueState::PreQueue as i32, "late-{i} joined after the opening");
    }
    let admitted = admitted_events(&env, EARLY + LATE, Duration::from_secs(20)).await;
    assert_eq!(admitted.len(), EARLY + LATE, "everyone is admitted and announced");

    let record: HashMap<String, String> = redis.hgetall(&opening_key).await.unwrap();
    let sealed_ticket: u64 = record["sealed_ticket"].parse().unwrap();
    assert_eq!(sealed_ticket, EARLY as u64);
    let published = SHUFFLE_KEY.parse::<ShuffleKey>().unwrap().event_key(&event_id).to_hex();
    let key = EventShuffleKey::from_hex(&published).unwrap();
    assert_eq!(record["key_commitment"], key.commitment());
    let prequeue = opening_order(&key, early.iter().map(String::as_str));
    Sale { env, event_id, key, sealed_ticket, prequeue, admitted }
}

impl Sale {
    /// The tool's JSON report and exit code for this sale, with `key` and `commitment` as
    /// given.
    async fn audit_with(&self, key: &EventShuffleKey, commitment: Option<String>) -> (Value, i32) {
        let mut args = vec![
            "--event-id".to_owned(),
            self.event_id.clone(),
            "--event-key".to_owned(),
            key.to_hex(),
            "--sealed-ticket".to_owned(),
            self.sealed_ticket.to_string(),
            "--nats-url".to_owned(),
            self.env.nats_url.clone(),
            "--nats-prefix".to_owned(),
            self.env.nats_prefix.clone(),
            "--timeout-secs".to_owned(),
            "30".to_owned(),
            "--json".to_owned(),
        ];
        if let Some(commitment) = commitment {
            args.extend(["--commitment".to_owned(), commitment]);
        }
        let tool = run_tool(&args.iter().map(String::as_str).collect::<Vec<_>>()).await;
        let report: Value = serde_json::from_slice(&tool.stdout)
            .unwrap_or_else(|_| panic!("JSON report; stderr: {}", String::from_utf8_lossy(&tool.stderr)));
        (report, tool.status.code().unwrap())
    }

    /// The audit with the published key and commitment.
    async fn audit(&self) -> Value {
        self.audit_with(&self.key, Some(self.key.commitment())).await.0
    }

    /// Publishes an Admitted event into the sale's stream, under a message id of its own.
    async fn publish(&self, message_id: &str, admitted: Admitted) {
        let bus = EventBus::connect(&self.env.nats_url, &self.env.nats_prefix).await.unwrap();
        bus.publish(&envelope(message_id, Body::Admitted(admitted))).await.unwrap();
    }

    /// The user's Admitted event as the service published it.
    fn admitted_of(&self, user: &str) -> Admitted {
        self.admitted.iter().find(|a| a.user_id == user).cloned().unwrap()
    }
}

/// Runs the `admission-audit` binary with `args`.
async fn run_tool(args: &[&str]) -> Output {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_admission-audit"))
        .args(args)
        .env_remove("NATS_URL")
        .env_remove("NATS_PREFIX")
        .output();
    tokio::time::timeout(Duration::from_secs(60), output).await.expect("the tool finishes").unwrap()
}

fn tool_args(sale: &Sale) -> Vec<String> {
    vec![
        "--event-id".into(),
        sale.event_id.clone(),
        "--event-key".into(),
        sale.key.to_hex(),
        "--sealed-ticket".into(),
        sale.sealed_ticket.to_string(),
        "--commitment".into(),
        sale.key.commitment(),
        "--nats-url".into(),
        sale.env.nats_url.clone(),
        "--nats-prefix".into(),
        sale.env.nats_prefix.clone(),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_audits_a_real_sale_from_the_stream_and_a_forged_admission_is_named() {
    let sale = run_sale().await;

    let (report, code) = sale.audit_with(&sale.key, Some(sale.key.commitment())).await;
    assert_eq!((&report["verdict"], code), (&json!("fair"), exit::FAIR), "{report:#}");
    assert_eq!(report["messages_read"], EARLY + LATE);
    assert_eq!(report["admissions"], EARLY + LATE);
    assert_eq!((&report["prequeue_users"], &report["later_joiners"]), (&json!(EARLY), &json!(LATE)));
    assert_eq!(report["commitment"], json!({ "status": "matches" }));
    let args = tool_args(&sale);

    // A publish repeated after the duplicate window (same pass, new message id) counts once;
    // another event's admission is skipped.
    let first = sale.admitted_of(&sale.prequeue[0]);
    sale.publish("replayed-after-the-window", first.clone()).await;
    let elsewhere = Admitted { event_id: uuid::Uuid::new_v4().to_string(), pass_id: "0".into(), ..first };
    sale.publish("another-event", elsewhere).await;
    let report = sale.audit().await;
    assert_eq!(report["verdict"], "fair", "{report:#}");
    assert_eq!(
        (&report["messages_read"], &report["admissions"]),
        (&json!(EARLY + LATE + 2), &json!(EARLY + LATE))
    );
    assert_eq!((&report["duplicates"], &report["other_events"]), (&json!(1), &json!(1)));

    // Forged: the shuffle's second user gets a pass before everyone else.
    let second = sale.admitted_of(&sale.prequeue[1]);
    sale.publish("forged", Admitted { pass_id: "0".into(), ..second }).await;
    let report = sale.audit().await;
    assert_eq!(report["verdict"], "unfair", "{report:#}");
    assert_eq!(
        report["mismatch"],
        json!({ "index": 0, "expected": sale.prequeue[0], "found": sale.prequeue[1] })
    );
    let tool = run_tool(&args.iter().map(String::as_str).collect::<Vec<_>>()).await;
    assert_eq!(tool.status.code(), Some(exit::UNFAIR));
    let text = String::from_utf8_lossy(&tool.stdout);
    assert!(
        text.contains(&format!("at index 0 expected {:?}, found {:?}", sale.prequeue[0], sale.prequeue[1])),
        "{text}"
    );
    assert!(text.contains("UNFAIR"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commitment_the_key_does_not_match_or_a_wrong_key_fails_the_audit_of_a_real_sale() {
    let sale = run_sale().await;
    let other_key = ShuffleKey::new(b"some-other-secret-0123".to_vec()).unwrap().event_key(&sale.event_id);

    // The right key, but not the one committed to before the sale.
    let (report, _) = sale.audit_with(&sale.key, Some(other_key.commitment())).await;
    assert_eq!(report["verdict"], "unfair", "{report:#}");
    assert_eq!(
        report["commitment"],
        json!({ "status": "mismatch", "published": other_key.commitment(), "computed": sale.key.commitment() })
    );
    assert!(report["mismatch"].is_null(), "the order itself follows the key: {report:#}");

    // Another key with its own commitment: the admissions do not follow it.
    let (report, _) = sale.audit_with(&other_key, Some(other_key.commitment())).await;
    assert_eq!(report["verdict"], "unfair", "{report:#}");
    assert_eq!(report["commitment"], json!({ "status": "matches" }));
    let index = report["mismatch"]["index"]
        .as_u64()
        .expect("12 users in the same order under another key: odds 1 in 12!");
    assert!(index < EARLY as u64, "the mismatch is in the pre-queue: {report:#}");

    // And against the published commitment, both checks fail.
    let (report, code) = sale.audit_with(&other_key, Some(sale.key.commitment())).await;
    assert_eq!(report["commitment"]["status"], "mismatch", "{report:#}");
    assert!(report["mismatch"].is_object(), "{report:#}");
    assert_eq!(code, exit::UNFAIR);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tool_refuses_bad_arguments_and_says_when_it_cannot_read_or_has_nothing_to_audit() {
    let env = TestEnv::new().await.unwrap();
    let event_id = uuid::Uuid::new_v4().to_string();
    let key = SHUFFLE_KEY.parse::<ShuffleKey>().unwrap().event_key(&event_id).to_hex();
    let run_on = |event_id: String, key: String, nats_url: String, prefix: String| async move {
        let args = [
            "--event-id",
            &event_id,
            "--event-key",
            &key,
            "--sealed-ticket",
            "3",
            "--nats-url",
            &nats_url,
            "--nats-prefix",
            &prefix,
            "--timeout-secs",
            "20",
        ];
        run_tool(&args).await
    };
    let run = |event_id: String, key: String, nats_url: String| {
        run_on(event_id, key, nats_url, env.nats_prefix.clone())
    };
    let url = env.nats_url.clone();

    let bad_key = run(event_id.clone(), key[..63].to_owned() + "g", url.clone()).await;
    assert_eq!(bad_key.status.code(), Some(exit::BAD_ARGUMENTS));
    assert!(String::from_utf8_lossy(&bad_key.stderr).contains("64 hex digits"));
    let bad_event = run("not-a-uuid".into(), key.clone(), url.clone()).await;
    assert_eq!(bad_event.status.code(), Some(exit::BAD_ARGUMENTS));
    assert!(String::from_utf8_lossy(&bad_event.stderr).contains("--event-id"));

    let no_nats = run(event_id.clone(), key.clone(), "nats://127.0.0.1:1".into()).await;
    assert_eq!(no_nats.status.code(), Some(exit::UNREADABLE));
    // A prefix without a stream (the test's own exists from the start), and the audit does
    // not create one.
    let missing = format!("{}_none", env.nats_prefix);
    let no_stream = run_on(event_id.clone(), key.clone(), url.clone(), missing.clone()).await;
    assert_eq!(no_stream.status.code(), Some(exit::UNREADABLE));
    assert!(
        String::from_utf8_lossy(&no_stream.stderr)
            .contains(&format!("JetStream stream {missing}_events does not exist")),
        "{}",
        String::from_utf8_lossy(&no_stream.stderr)
    );

    // A stream with admissions of another event only: nothing to audit, not "fair".
    let bus = EventBus::connect(&env.nats_url, &env.nats_prefix).await.unwrap();
    let nothing = run(event_id.clone(), key.clone(), url.clone()).await;
    assert_eq!(nothing.status.code(), Some(exit::INCONCLUSIVE));
    let other = Admitted {
        event_id: uuid::Uuid::new_v4().to_string(),
        user_id: "ann".into(),
        pass_id: "1".into(),
        pass_expires_at: None,
        ticket: 1,
    };
    bus.publish(&envelope("other", Body::Admitted(other))).await.unwrap();
    let skipped = run(event_id, key, url).await;
    assert_eq!(skipped.status.code(), Some(exit::INCONCLUSIVE));
    let text = String::from_utf8_lossy(&skipped.stdout);
    assert!(text.contains("1 of other events") && text.contains("INCONCLUSIVE"), "{text}");
}
