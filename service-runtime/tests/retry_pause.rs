//! The retry pause, on tokio's paused clock.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::time::Duration;

use service_runtime::{CancellationToken, lifecycle::RetryPause};

#[test]
fn pauses_double_up_to_the_cap_and_reset_after_a_success() {
    let mut pause = RetryPause::new(Duration::from_millis(100), Duration::from_millis(700));
    let taken: Vec<u128> = (0..5).map(|_| pause.next_pause().as_millis()).collect();
    assert_eq!(taken, [100, 200, 400, 700, 700]);
    pause.reset();
    assert_eq!(pause.next_pause(), Duration::from_millis(100));
}

#[tokio::test(start_paused = true)]
async fn wait_sleeps_the_pause_and_ends_at_once_on_stopping() {
    let stopping = CancellationToken::new();
    let mut pause = RetryPause::standard();
    let start = tokio::time::Instant::now();
    assert!(pause.wait(&stopping).await);
    assert!(pause.wait(&stopping).await);
    // 100 ms then 200 ms of the paused clock, exactly.
    assert_eq!(start.elapsed(), Duration::from_millis(300));

    stopping.cancel();
    let before = tokio::time::Instant::now();
    assert!(!pause.wait(&stopping).await, "a cancelled loop must not keep retrying");
    assert_eq!(before.elapsed(), Duration::ZERO);
}
