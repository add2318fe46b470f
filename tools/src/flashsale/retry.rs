//! How a simulated user makes a call, as a real client would: timed and counted, and retried
//! with capped, jittered backoff while it fails for a passing reason (load shedding, a
//! service restarting, a store coming back), for as long as a user's patience lasts.

use std::{
    future::Future,
    time::{Duration, Instant},
};

use rand::Rng;
use tonic::{Code, Status};

use super::stats::{Rpc, Stats};

/// How long a user keeps retrying one call that fails for a passing reason before giving
/// up: longer than a service's restart, a store's outage and the catch-up that follows.
pub const PATIENCE: Duration = Duration::from_secs(90);
/// The longest pause between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Which failures a call is retried on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Only refusals that say the call was not served (UNAVAILABLE: no server or the store
    /// behind it is down; RESOURCE_EXHAUSTED: shed). For calls that must not run twice by
    /// accident, such as taking a hold.
    Unserved,
    /// Also failures that leave the outcome unknown (the connection broke mid-call, the
    /// deadline passed, an internal error): for calls that are safe to repeat.
    Idempotent,
}

impl Retry {
    /// Whether `status` is worth another attempt.
    pub fn applies(self, status: &Status) -> bool {
        matches!(
            (self, status.code()),
            (_, Code::Unavailable | Code::ResourceExhausted)
                | (
                    Retry::Idempotent,
                    Code::Unknown | Code::Internal | Code::DeadlineExceeded | Code::Cancelled
                )
        )
    }
}

/// Sleeps before attempt `attempt` + 1: 100 ms doubling to [`MAX_BACKOFF`], plus jitter so
/// that users refused together do not come back together.
pub async fn backoff(attempt: usize) {
    let ms = (50u64 << attempt.clamp(1, 6)) + rand::rng().random_range(0..50);
    tokio::time::sleep(Duration::from_millis(ms).min(MAX_BACKOFF)).await;
}

/// Times one attempt of a unary call and records its code.
pub async fn timed<T>(
    stats: &Stats,
    rpc: Rpc,
    call: impl Future<Output = Result<tonic::Response<T>, Status>>,
) -> Result<T, Status> {
    let started = Instant::now();
    let result = call.await;
    stats.record(rpc, started.elapsed(), result.as_ref().map_or_else(Status::code, |_| Code::Ok));
    result.map(tonic::Response::into_inner)
}

/// Makes the call `attempt` builds, again while `retry` applies, for at most [`PATIENCE`].
pub async fn call<T, F, Fut>(stats: &Stats, rpc: Rpc, retry: Retry, mut attempt: F) -> Result<T, Status>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<tonic::Response<T>, Status>>,
{
    let deadline = Instant::now() + PATIENCE;
    let mut attempts = 0;
    loop {
        match timed(stats, rpc, attempt()).await {
            Err(status) if retry.applies(&status) && Instant::now() < deadline => {
                attempts += 1;
                backoff(attempts).await;
            }
            result => return result,
        }
    }
}

/// A status as one short line: its code name and message.
pub fn brief(status: &Status) -> String {
    format!("{} {}", crate::grpc::code_name(status.code()), status.message())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_idempotent_calls_are_retried_when_the_outcome_is_unknown() {
        let broken = Status::unknown("connection reset");
        assert!(Retry::Idempotent.applies(&broken));
        assert!(!Retry::Unserved.applies(&broken));
        assert!(Retry::Unserved.applies(&Status::unavailable("no server")));
        assert!(!Retry::Idempotent.applies(&Status::aborted("SEAT_TAKEN")));
    }
}
