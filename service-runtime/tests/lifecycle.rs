//! The server's lifecycle against real sockets: load shedding past `MAX_IN_FLIGHT`, health
//! turning NOT_SERVING when shutdown begins, the drain of in-flight requests and tracked
//! tasks within the grace, and the exit on a broken listener.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

mod common;

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use common::{PATIENCE, Served, args, next_status, wait_call, watch_health};
use service_runtime::GrpcServer;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

#[tokio::test]
async fn requests_past_max_in_flight_are_shed_with_resource_exhausted() {
    let mut served = Served::bind(args(2, 5_000)).await;
    let channel = served.channel().await;
    let first = tokio::spawn(wait_call(channel.clone()));
    let second = tokio::spawn(wait_call(channel.clone()));
    served.wait_entered(2).await;

    let shed = wait_call(channel.clone()).await.expect_err("a third request must be shed");
    assert_eq!(shed.code(), Code::ResourceExhausted, "shed with: {shed:?}");
    // Shed before the handler: it never saw the third request.
    assert!(served.entered.try_recv().is_err(), "the shed request reached the handler");

    served.open.add_permits(2);
    first.await.expect("join").expect("first request");
    second.await.expect("join").expect("second request");
    // The permits came back: the next request is served again.
    served.open.add_permits(1);
    wait_call(channel).await.expect("a request after the burst");

    served.stop();
    served.serving.await.expect("join").expect("clean stop");
}

#[tokio::test]
async fn shutdown_turns_health_not_serving_while_requests_still_drain() {
    let mut served = Served::bind(args(64, 10_000)).await;
    let channel = served.channel().await;
    let mut health = watch_health(channel.clone()).await;
    assert_eq!(next_status(&mut health).await, Some(ServingStatus::Serving));
    let in_flight = tokio::spawn(wait_call(channel.clone()));
    served.wait_entered(1).await;

    served.stop();
    // The load balancer hears NOT_SERVING while the server still drains (the request above
    // has not finished, so serve cannot have returned).
    let status = tokio::time::timeout(PATIENCE, next_status(&mut health)).await.expect("a status change");
    assert_eq!(status, Some(ServingStatus::NotServing));
    assert!(served.background.stopping().is_cancelled(), "stopping must be cancelled with NOT_SERVING");
    assert!(!served.serving.is_finished(), "serve returned before its in-flight request finished");
    served.finish_drain(health, in_flight).await;
}

#[tokio::test]
async fn drain_waits_for_in_flight_requests_and_tracked_tasks() {
    let server = GrpcServer::bind(&args(64, 10_000)).await.expect("bind");
    // A background loop that has work to finish after `stopping`: a commit, an ack.
    let (finish_tx, finish_rx) = tokio::sync::oneshot::channel::<()>();
    let finished = Arc::new(AtomicBool::new(false));
    let stopping = server.stopping();
    let flag = Arc::clone(&finished);
    server.spawn("test-loop", async move {
        stopping.cancelled().await;
        let _ = finish_rx.await;
        flag.store(true, Ordering::SeqCst);
    });
    let mut served = Served::start(server);
    let channel = served.channel().await;
    let in_flight = tokio::spawn(wait_call(channel));
    served.wait_entered(1).await;

    served.stop();
    served.background.stopping().cancelled().await;
    served.open.add_permits(1);
    in_flight.await.expect("join").expect("the in-flight request completes during the drain");
    // The server has drained its requests; the loop finishes its work only now.
    finish_tx.send(()).expect("the loop is still waiting");
    tokio::time::timeout(PATIENCE, served.serving)
        .await
        .expect("serve returns")
        .expect("join")
        .expect("clean stop");
    assert!(finished.load(Ordering::SeqCst), "serve returned before its tracked task ended");
    assert_eq!(served.background.running(), 0);
}

#[tokio::test]
async fn drain_gives_up_after_the_grace() {
    let server = GrpcServer::bind(&args(64, 300)).await.expect("bind");
    // A loop that ignores `stopping`, and a request that never finishes.
    server.spawn("stuck-loop", std::future::pending());
    let mut served = Served::start(server);
    let channel = served.channel().await;
    let in_flight = tokio::spawn(wait_call(channel));
    served.wait_entered(1).await;

    served.stop();
    let outcome =
        tokio::time::timeout(PATIENCE, served.serving).await.expect("serve returns after the grace");
    outcome.expect("join").expect("a stop on the signal is not an error");
    assert_eq!(served.background.running(), 1, "the stuck loop is still running");
    // serve gave up on the request rather than waiting for it (the process exits next; in
    // this test the connection's task lives on until the gate closes).
    assert!(!in_flight.is_finished(), "the request was answered, so there was nothing to give up");
    served.open.close();
    let cut = in_flight.await.expect("join");
    assert!(cut.is_err(), "the request past the grace was never answered: {cut:?}");
}

#[tokio::test]
async fn a_broken_listener_stops_the_server_its_streams_and_its_tasks() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let breaker = socket2::Socket::from(listener.try_clone().expect("dup the listener"));
    let server = GrpcServer::with_listener(
        &args(64, 2_000),
        tokio::net::TcpListener::from_std(listener).expect("tokio listener"),
    )
    .await
    .expect("server");
    let ended = Arc::new(AtomicBool::new(false));
    let stopping = server.stopping();
    let flag = Arc::clone(&ended);
    server.spawn("test-loop", async move {
        stopping.cancelled().await;
        flag.store(true, Ordering::SeqCst);
    });
    let served = Served::start(server);
    // The server answers before the fault.
    let channel = served.channel().await;
    let mut health = watch_health(channel).await;
    assert_eq!(next_status(&mut health).await, Some(ServingStatus::Serving));
    drop(health);

    // Every accept now fails with EINVAL: the listener is broken for good.
    breaker.shutdown(std::net::Shutdown::Read).expect("shut the listener down");

    let outcome = tokio::time::timeout(PATIENCE, served.serving)
        .await
        .expect("serve must return after its listener broke")
        .expect("join");
    let error = outcome.expect_err("a broken listener is a failure, not a clean stop");
    assert!(format!("{error:#}").contains("accepting connections"), "error: {error:#}");
    assert!(served.background.stopping().is_cancelled(), "stopping not cancelled");
    assert!(ended.load(Ordering::SeqCst), "the tracked task did not end");
    assert_eq!(served.background.running(), 0);
}
