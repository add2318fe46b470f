//! The seat-return outbox: gives a cancelled booking's seats back to seat-lock.
//!
//! The refund's last commit ([`crate::refund`]) cancels the booking, deletes its `seat_guard`
//! rows and writes a `seat_returns` row holding the encoded `ReturnSeatsRequest`, all in one
//! transaction. This loop reads a batch of rows (one statement, no transaction kept), calls
//! seat-lock's internal `ReturnSeats` for each, and deletes a row only once seat-lock
//! answered OK. `ReturnSeats` is idempotent by booking, so a row sent twice (a crash between
//! the call and the delete, or two replicas draining at once) returns the seats once.
//! Failures count `attempts` and back off; rows that failed least go first, so a few that
//! keep failing never starve new ones.

use std::{sync::Arc, time::Duration};

use prost::Message;
use sea_orm::{ConnectionTrait, DatabaseConnection};
use service_runtime::CancellationToken;
use ticketing_proto::internal::{
    ReturnSeatsRequest, seat_lock_internal_service_client::SeatLockInternalServiceClient,
};
use tokio::sync::Notify;
use tonic::transport::Channel;
use uuid::Uuid;

use crate::{error::Error, store::sql};

/// Rows sent per round: bounds one round's memory and how long it runs before it looks at
/// `stopping` again.
pub const SEAT_RETURN_BATCH: i64 = 100;
/// Pause between rounds when nothing failed and no cancellation woke the loop; rows written
/// by recovery (which does not wake it) wait at most this long.
pub const SEAT_RETURN_INTERVAL: Duration = Duration::from_secs(1);
/// Longest pause after failures (the pause doubles from the interval while seat-lock keeps
/// failing), so a seat-lock outage is not hammered.
pub const SEAT_RETURN_MAX_BACKOFF: Duration = Duration::from_secs(30);

/// One round's result.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Round {
    /// Rows seat-lock accepted (and were deleted).
    pub sent: usize,
    /// Rows that failed and stay for a later round.
    pub failed: usize,
}

/// Drains `seat_returns` into seat-lock.
pub struct SeatReturns {
    db: DatabaseConnection,
    seat_lock: SeatLockInternalServiceClient<Channel>,
    /// Notified after a cancellation queued seats, so they go back on sale at once.
    wake: Arc<Notify>,
}

impl SeatReturns {
    /// A drainer calling seat-lock over `seat_lock` (the channel payment already has).
    pub fn new(db: DatabaseConnection, seat_lock: Channel, wake: Arc<Notify>) -> Self {
        Self { db, seat_lock: SeatLockInternalServiceClient::new(seat_lock), wake }
    }

    /// Rounds until `stopping`: right after a wake-up, every [`SEAT_RETURN_INTERVAL`]
    /// otherwise, backing off to [`SEAT_RETURN_MAX_BACKOFF`] while rounds fail.
    pub async fn run(self, stopping: CancellationToken) {
        let mut pause = SEAT_RETURN_INTERVAL;
        loop {
            pause = match self.round().await {
                Ok(Round { failed: 0, .. }) => SEAT_RETURN_INTERVAL,
                Ok(_) => (pause * 2).min(SEAT_RETURN_MAX_BACKOFF),
                Err(error) => {
                    tracing::warn!(error = %format!("{error:#}"), "cannot read the seat-return outbox; retrying");
                    (pause * 2).min(SEAT_RETURN_MAX_BACKOFF)
                }
            };
            tokio::select! {
                () = stopping.cancelled() => return,
                () = self.wake.notified() => {}
                () = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// Sends one batch; each row is deleted once seat-lock accepted it.
    pub async fn round(&self) -> Result<Round, Error> {
        let rows = self
            .db
            .query_all_raw(sql(
                "SELECT booking_id, payload, attempts FROM seat_returns ORDER BY attempts, created_at LIMIT $1",
                [SEAT_RETURN_BATCH.into()],
            ))
            .await?;
        let mut round = Round::default();
        for row in rows {
            let booking_id: Uuid = row.try_get("", "booking_id")?;
            let payload: Vec<u8> = row.try_get("", "payload")?;
            let attempts: i32 = row.try_get("", "attempts")?;
            if self.send(booking_id, &payload, attempts).await? {
                round.sent += 1;
            } else {
                round.failed += 1;
            }
        }
        if round.sent + round.failed > 0 {
            metrics::counter!("payment_seat_returns_total", "outcome" => "sent").increment(round.sent as u64);
            metrics::counter!("payment_seat_returns_total", "outcome" => "failed")
                .increment(round.failed as u64);
        }
        Ok(round)
    }

    /// Sends one row; true when seat-lock accepted it and the row is gone.
    async fn send(&self, booking_id: Uuid, payload: &[u8], attempts: i32) -> Result<bool, Error> {
        let outcome = match ReturnSeatsRequest::decode(payload) {
            Ok(request) => {
                let mut request = tonic::Request::new(request);
                service_runtime::telemetry::inject_grpc(&mut request);
                self.seat_lock.clone().return_seats(request).await.map(|r| r.into_inner().returned)
            }
            Err(error) => {
                // Written by this service's own code: kept for an operator, never dropped.
                tracing::error!(%booking_id, %error, "undecodable seat-return row; kept");
                return self.count_attempt(booking_id).await.map(|()| false);
            }
        };
        match outcome {
            Ok(returned) => {
                self.db
                    .execute_raw(sql("DELETE FROM seat_returns WHERE booking_id = $1", [booking_id.into()]))
                    .await?;
                tracing::info!(%booking_id, returned, "seats of a cancelled booking handed back to seat-lock");
                Ok(true)
            }
            Err(status) => {
                tracing::warn!(%booking_id, attempts = attempts + 1, code = ?status.code(),
                    message = status.message(), "seat-lock did not take a cancelled booking's seats; retrying");
                self.count_attempt(booking_id).await.map(|()| false)
            }
        }
    }

    async fn count_attempt(&self, booking_id: Uuid) -> Result<(), Error> {
        self.db
            .execute_raw(sql(
                "UPDATE seat_returns SET attempts = attempts + 1 WHERE booking_id = $1",
                [booking_id.into()],
            ))
            .await?;
        Ok(())
    }
}
