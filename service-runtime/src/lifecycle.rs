//! What a service's background work shares with its server: the shutdown signal, the set of
//! tracked tasks, and the pause between retries.
//!
//! [`crate::GrpcServer`] owns one [`Background`]: every loop a service runs next to its RPCs
//! (consumers, relays, sweepers, controllers) is spawned through it, so `serve()` can cancel
//! them all on every exit path and wait for them within the drain grace. A loop spawned with
//! `tokio::spawn` instead would outlive shutdown unseen.

use std::{future::Future, time::Duration};

use tokio_util::{sync::CancellationToken, task::TaskTracker};

/// The shutdown signal and the tracked tasks of one process. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Background {
    tracker: TaskTracker,
    stopping: CancellationToken,
}

impl Background {
    /// An empty set with a fresh signal.
    pub fn new() -> Self {
        Self::default()
    }

    /// Cancelled when shutdown begins (or the server stopped on its own): every loop ends on it.
    pub fn stopping(&self) -> CancellationToken {
        self.stopping.clone()
    }

    /// Runs `task` as a tracked task: shutdown waits for it (within the drain grace). `name`
    /// goes to the log when the task ends, so a loop that stopped early is visible.
    pub fn spawn<F>(&self, name: &'static str, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let gauge = crate::telemetry::LiveGauge::get("background_tasks", &[("task", name)]);
        gauge.add(1);
        self.tracker.spawn(async move {
            let _gauge = TaskGauge(gauge);
            task.await;
            tracing::debug!(task = name, "background task ended");
        });
    }

    /// Tracked tasks still running.
    pub fn running(&self) -> usize {
        self.tracker.len()
    }

    /// Cancels [`Self::stopping`], accepts no more tasks and waits for the running ones until
    /// `deadline`. True when all ended.
    pub async fn stop(&self, deadline: tokio::time::Instant) -> bool {
        self.stopping.cancel();
        self.tracker.close();
        tokio::time::timeout_at(deadline, self.tracker.wait()).await.is_ok()
    }
}

/// Counts a task in `background_tasks{task}` while it runs, also when it panics.
struct TaskGauge(std::sync::Arc<crate::telemetry::LiveGauge>);

impl Drop for TaskGauge {
    fn drop(&mut self) {
        self.0.add(-1);
    }
}

/// The pause between attempts of a retry loop: doubles from `first` after every failure up to
/// `cap`, and starts again at `first` after a success ([`Self::reset`]). Without it a loop
/// whose backing service is down retries as fast as the error comes back.
#[derive(Debug, Clone)]
pub struct RetryPause {
    first: Duration,
    cap: Duration,
    next: Duration,
}

impl RetryPause {
    /// Pauses of `first`, `2 × first`, … up to `cap`.
    pub const fn new(first: Duration, cap: Duration) -> Self {
        Self { first, cap, next: first }
    }

    /// The mesh's default for loops that talk to Redis, Postgres or NATS: 100 ms doubling to 5 s.
    pub const fn standard() -> Self {
        Self::new(Duration::from_millis(100), Duration::from_secs(5))
    }

    /// The pause to take now; the next one is twice as long, up to the cap.
    pub fn next_pause(&mut self) -> Duration {
        let pause = self.next;
        self.next = (self.next * 2).min(self.cap);
        pause
    }

    /// After a success: the next failure pauses `first` again.
    pub fn reset(&mut self) {
        self.next = self.first;
    }

    /// Sleeps [`Self::next_pause`]; false (at once) when `stopping` is cancelled first.
    pub async fn wait(&mut self, stopping: &CancellationToken) -> bool {
        let pause = self.next_pause();
        tokio::select! {
            () = stopping.cancelled() => false,
            () = tokio::time::sleep(pause) => true,
        }
    }
}
