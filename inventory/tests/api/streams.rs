//! The event stream is infrastructure: inventory refuses to start without it, or with one
//! that is misconfigured, and says which stream and how to fix it.

use std::{process::Stdio, time::Duration};

use async_nats::jetstream;
use service_runtime::bus::StreamSpec;
use test_support::testenv::TestEnv;

/// Longest the binary may take to give up; it should take well under a second.
const EXIT_WITHIN: Duration = Duration::from_secs(60);

/// Runs the inventory binary on `env`'s database with NATS prefix `prefix` and `extra`
/// variables; answers its exit status and standard error.
async fn run_inventory(env: &TestEnv, prefix: &str, extra: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_inventory"));
    command
        .env_clear()
        .env("DATABASE_URL", &env.database_url)
        .env("NATS_URL", &env.nats_url)
        .env("NATS_PREFIX", prefix)
        .env("GRPC_ADDR", "127.0.0.1:0")
        .env("METRICS_ADDR", "127.0.0.1:0")
        .env("AUTH_JWKS", service_runtime::auth::AuthArgs::for_tests().jwks)
        .envs(extra.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = command.spawn().unwrap();
    let output = tokio::time::timeout(EXIT_WITHIN, child.wait_with_output())
        .await
        .unwrap_or_else(|_| {
            panic!("inventory did not exit within {EXIT_WITHIN:?}: it started on prefix {prefix}")
        })
        .unwrap();
    (output.status.code(), String::from_utf8_lossy(&output.stderr).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inventory_refuses_to_start_without_its_stream_and_creates_none() {
    let env = TestEnv::new().await.unwrap();
    let prefix = format!("{}_missing", env.nats_prefix);
    let (code, stderr) = run_inventory(&env, &prefix, &[]).await;
    assert!(code.is_some_and(|c| c != 0), "exit {code:?}: {stderr}");
    assert!(stderr.contains(&format!("JetStream stream {prefix}_events does not exist")), "{stderr}");
    assert!(stderr.contains("stack stream-setup"), "{stderr}");
    let nats = async_nats::connect(&env.nats_url).await.unwrap();
    assert!(
        jetstream::new(nats).get_stream(format!("{prefix}_events")).await.is_err(),
        "a stream was created"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inventory_refuses_a_misconfigured_stream() {
    let env = TestEnv::new().await.unwrap();
    let nats = async_nats::connect(&env.nats_url).await.unwrap();
    let js = jetstream::new(nats);

    // Wrong subjects and a work-queue retention (each message consumed once, by one reader).
    let prefix = format!("{}_wrong", env.nats_prefix);
    let mut config = StreamSpec::for_prefix(&prefix).config();
    config.subjects = vec![format!("{prefix}.seats.>")];
    config.retention = jetstream::stream::RetentionPolicy::WorkQueue;
    js.create_stream(config).await.unwrap();
    let (code, stderr) = run_inventory(&env, &prefix, &[]).await;
    assert!(code.is_some_and(|c| c != 0), "exit {code:?}: {stderr}");
    assert!(stderr.contains(&format!("JetStream stream {prefix}_events is misconfigured")), "{stderr}");
    assert!(stderr.contains("subjects are") && stderr.contains("retention is WorkQueue"), "{stderr}");
    let _ = js.delete_stream(format!("{prefix}_events")).await;

    // The right stream, but with fewer replicas than the deployment requires.
    let (code, stderr) = run_inventory(&env, &env.nats_prefix, &[("EVENT_STREAM_MIN_REPLICAS", "3")]).await;
    assert!(code.is_some_and(|c| c != 0), "exit {code:?}: {stderr}");
    assert!(stderr.contains("1 replica(s), fewer than EVENT_STREAM_MIN_REPLICAS=3"), "{stderr}");
}
