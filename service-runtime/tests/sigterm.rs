//! SIGTERM through [`service_runtime::shutdown_signal`]: health turns NOT_SERVING, the
//! in-flight request finishes, serve returns. Its own test binary, since the signal goes to
//! the whole process.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

mod common;

use common::{PATIENCE, Served, args, next_status, wait_call, watch_health};
use service_runtime::{GrpcServer, shutdown_signal};
use tonic_health::pb::health_check_response::ServingStatus;

#[tokio::test]
async fn sigterm_turns_health_not_serving_and_drains() {
    // Installs the process's SIGTERM handler before anything sends one, so the signal below
    // can never take the default action (terminate the test).
    let mut installed =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    let server = GrpcServer::bind(&args(64, 10_000)).await.expect("bind");
    let addr = server.local_addr();
    let background = server.background();
    let mut served = Served::start_with(server, shutdown_signal());
    assert_eq!(served.addr, addr);
    let channel = served.channel().await;
    let mut health = watch_health(channel.clone()).await;
    assert_eq!(next_status(&mut health).await, Some(ServingStatus::Serving));
    let in_flight = tokio::spawn(wait_call(channel));
    served.wait_entered(1).await;

    // `shutdown_signal` starts listening when serve first polls it; a SIGTERM sent before
    // that is not seen by it, so send one until health changes.
    let status = tokio::time::timeout(PATIENCE, async {
        loop {
            let sent = std::process::Command::new("kill")
                .args(["-TERM", &std::process::id().to_string()])
                .status()
                .expect("kill");
            assert!(sent.success());
            let _ = installed.recv().await;
            if let Ok(status) =
                tokio::time::timeout(std::time::Duration::from_millis(200), next_status(&mut health)).await
            {
                return status;
            }
        }
    })
    .await
    .expect("health changes after SIGTERM");
    assert_eq!(status, Some(ServingStatus::NotServing));
    assert!(background.stopping().is_cancelled());
    assert!(!served.serving.is_finished(), "serve returned before its in-flight request finished");
    served.finish_drain(health, in_flight).await;
}
