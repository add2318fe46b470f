//! `Pay`: idempotency, seat-lock checkout, the charge, and the one transaction that books.
//!
//! The order is what keeps money safe:
//! 1. a key already finished answers its stored result (a read, nothing written);
//! 2. seat-lock moves the hold into checkout, or refuses before any money moves (the refusal
//!    is stored as the key's answer; moving a hold into checkout again is harmless, so a
//!    retry after a crash here simply pays);
//! 3. one statement claims the idempotency key (`in_flight`) and writes the `processing`
//!    payment with the booking id the hold will be confirmed under (`reserved_booking_id`),
//!    or writes nothing when a concurrent request holds the key, so only one request ever
//!    reaches the provider; then the provider is charged with the payment id as its
//!    idempotency key;
//! 4. seat-lock confirms the hold; if it was lost, the charge is refunded;
//! 5. one statement commits booking, seats, seat guard, payment, outbox and the stored
//!    answer together, or nothing (a seat-guard or hold conflict fails it whole).
//!
//! A Pay that books makes one read and three one-statement writes (key with payment, the
//! provider's charge, the booking); each write commits in a group shared with concurrent
//! payments (module `commit`), and the Pay goes on only once that group has committed.
//!
//! Every settlement updates the payment only `WHERE status = 'processing'`, and takes the
//! row lock before anything else (the booking statement by its update, a refund and the
//! recovery pass by `FOR UPDATE` before the provider is called), so the request and the
//! recovery pass never both settle it. Anything unexpected after the charge leaves the payment
//! `processing` for recovery, which completes the booking when seat-lock confirms the hold
//! under the reserved booking id (also when a crashed request had already confirmed it),
//! and refunds otherwise.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use prost::Message;
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbErr, QueryResult, RuntimeErr, Statement,
    TransactionTrait, Value, sqlx::postgres::PgDatabaseError,
};
use service_runtime::bus::{envelope, kind};
use sha2::{Digest, Sha256};
use ticketing_proto::{
    events::{self, event_envelope::Body},
    v1::{self, seat_lock_service_client::SeatLockServiceClient},
};
use tokio::sync::Notify;
use tonic::{Code, Status, transport::Channel};
use uuid::Uuid;

use crate::{
    commit::CommitGroups,
    config::CrashPoint,
    error::Error,
    gateway::{ChargeOutcome, PaymentGateway},
    store::{BookingRecord, PAYMENT_COLUMNS, PaymentRecord, PaymentStatus, sql},
};

/// Attempts at ConfirmHold when seat-lock is briefly unreachable; the money is already taken,
/// so a short retry beats leaving the payment to recovery.
const CONFIRM_ATTEMPTS: u32 = 4;
/// Pause before the first ConfirmHold retry; doubles each time.
const CONFIRM_RETRY_PAUSE: Duration = Duration::from_millis(200);
/// Stuck payments settled per recovery query, so one pass stays short.
const RECOVERY_BATCH: i64 = 100;
/// The seat guard's primary key: a violation means a seat is already sold in Postgres.
const SEAT_GUARD_PKEY: &str = "seat_guard_pkey";
/// The unique hold of a booking: a violation means another payment booked this hold.
const BOOKING_HOLD_KEY: &str = "bookings_hold_id_key";
/// SQLSTATE of a unique violation.
const UNIQUE_VIOLATION: &str = "23505";

/// Told to the user when the hold was lost while the provider was charging.
pub const HOLD_LOST_REASON: &str = "hold expired before payment completed";

/// A validated `Pay` request.
#[derive(Debug, Clone)]
pub struct PayCommand {
    pub idempotency_key: String,
    pub event_id: Uuid,
    pub hold_id: Uuid,
    pub user_id: String,
    pub payment_method: String,
}

impl PayCommand {
    /// SHA-256 over the canonical request: every field, length-prefixed, ids in canonical form.
    pub fn request_hash(&self) -> Vec<u8> {
        let mut hasher = Sha256::new();
        for field in [
            "pay.v1",
            &self.idempotency_key,
            &self.event_id.to_string(),
            &self.hold_id.to_string(),
            &self.user_id,
            &self.payment_method,
        ] {
            hasher.update((field.len() as u64).to_be_bytes());
            hasher.update(field.as_bytes());
        }
        hasher.finalize().to_vec()
    }
}

/// How seat-lock answered.
enum SeatLockAnswer {
    Hold(v1::Hold),
    /// A definitive no for this hold.
    Refused(Status),
    /// Seat-lock is down or overloaded; nothing is decided.
    Unavailable(Status),
}

fn classify(result: Result<tonic::Response<v1::Hold>, Status>) -> SeatLockAnswer {
    match result {
        Ok(response) => SeatLockAnswer::Hold(response.into_inner()),
        Err(status) => match status.code() {
            Code::InvalidArgument
            | Code::NotFound
            | Code::PermissionDenied
            | Code::FailedPrecondition
            | Code::AlreadyExists
            | Code::OutOfRange => SeatLockAnswer::Refused(status),
            _ => SeatLockAnswer::Unavailable(status),
        },
    }
}

/// Runs payments. Shared by the gRPC handlers and the recovery loop.
pub struct Checkout {
    db: DatabaseConnection,
    /// The writes of a Pay, committed in groups with those of concurrent payments.
    writes: CommitGroups,
    gateway: Arc<dyn PaymentGateway>,
    seat_lock: SeatLockServiceClient<Channel>,
    outbox_ready: Arc<Notify>,
    /// Test-only fault injection (`PAYMENT_CRASH_AT`); `None` in production.
    crash_at: Option<CrashPoint>,
}

impl Checkout {
    /// A checkout that writes through `writes` and wakes the relay through `outbox_ready`
    /// after every commit.
    pub fn new(
        db: DatabaseConnection,
        writes: CommitGroups,
        gateway: Arc<dyn PaymentGateway>,
        seat_lock: Channel,
        outbox_ready: Arc<Notify>,
    ) -> Self {
        Self {
            db,
            writes,
            gateway,
            seat_lock: SeatLockServiceClient::new(seat_lock),
            outbox_ready,
            crash_at: None,
        }
    }

    /// Arms the test-only `PAYMENT_CRASH_AT` knob: the process aborts when a Pay reaches `point`.
    pub fn with_crash_point(mut self, point: Option<CrashPoint>) -> Self {
        self.crash_at = point;
        self
    }

    /// Pays for a hold, once per idempotency key. See the module docs for the steps.
    pub async fn pay(&self, command: PayCommand) -> Result<v1::PayResponse, Error> {
        let hash = command.request_hash();
        if let Some(response) =
            timed("key_lookup", self.stored_answer(&command.idempotency_key, &hash)).await?
        {
            return Ok(response);
        }

        let mut seat_lock = self.seat_lock.clone();
        let checkout = timed(
            "begin_checkout",
            seat_lock.begin_checkout(traced(v1::BeginCheckoutRequest {
                event_id: command.event_id.to_string(),
                hold_id: command.hold_id.to_string(),
                user_id: command.user_id.clone(),
            })),
        )
        .await;
        let hold = match classify(checkout) {
            SeatLockAnswer::Hold(hold) => hold,
            SeatLockAnswer::Refused(status) => return self.store_failure(&command, &hash, status).await,
            SeatLockAnswer::Unavailable(status) => {
                return Err(match status.code() {
                    Code::Aborted | Code::ResourceExhausted => Error::SeatLockRefused(status),
                    _ => Error::SeatLockUnavailable(status),
                });
            }
        };
        CrashPoint::abort_if(self.crash_at, CrashPoint::AfterBeginCheckout);
        if hold.total_price_cents < 0 || hold.currency.is_empty() || hold.quantity == 0 {
            return Err(Error::BadHold(format!(
                "price {} {:?}, quantity {}",
                hold.total_price_cents, hold.currency, hold.quantity
            )));
        }

        let booking_id = Uuid::now_v7();
        let Some(payment) = timed("claim", self.insert_payment(&command, &hash, &hold, booking_id)).await?
        else {
            // A concurrent request with this key got there first.
            return self.taken_key_answer(&command.idempotency_key, &hash).await;
        };

        // From here on money may move: on unexpected errors the payment stays `processing`
        // and the key `in_flight`, for the recovery pass to settle from the provider's ledger.
        let outcome = timed(
            "charge",
            self.gateway.charge(
                payment.payment_id,
                payment.amount_cents,
                &payment.currency,
                &command.payment_method,
            ),
        )
        .await?;
        let charge_id = match outcome {
            ChargeOutcome::Declined { reason } => {
                metrics::counter!("payment_charges_total", "outcome" => "declined").increment(1);
                return self.settle_declined(payment, reason).await;
            }
            // Interim (replaced by the money states): a pending charge is left to recovery.
            ChargeOutcome::Pending { .. } => return Err(Error::RequestInFlight),
            ChargeOutcome::Captured { charge_id } => {
                metrics::counter!("payment_charges_total", "outcome" => "captured").increment(1);
                charge_id
            }
        };
        CrashPoint::abort_if(self.crash_at, CrashPoint::AfterCharge);

        match timed("confirm_hold", self.confirm_hold(&command, booking_id)).await {
            SeatLockAnswer::Hold(_) => CrashPoint::abort_if(self.crash_at, CrashPoint::AfterConfirmHold),
            SeatLockAnswer::Refused(status) => {
                let reason = match service_runtime::status::reason(&status) {
                    Some((reason, _)) if reason == "HOLD_EXPIRED" || reason == "HOLD_NOT_FOUND" => {
                        HOLD_LOST_REASON.to_owned()
                    }
                    _ if status.code() == Code::NotFound => HOLD_LOST_REASON.to_owned(),
                    _ => format!("seat-lock refused to confirm the hold: {}", status.message()),
                };
                tracing::warn!(payment_id = %payment.payment_id, %reason, "hold lost after the charge; refunding");
                return self.refund_and_settle(payment, charge_id, reason).await;
            }
            SeatLockAnswer::Unavailable(status) => {
                tracing::error!(
                    payment_id = %payment.payment_id,
                    code = ?status.code(),
                    message = status.message(),
                    "cannot confirm the hold after the charge; recovery will settle the payment"
                );
                return Err(Error::SeatLockUnavailable(status));
            }
        }

        let booking = BookingRecord {
            booking_id,
            payment_id: payment.payment_id,
            event_id: command.event_id,
            user_id: command.user_id.clone(),
            hold_id: command.hold_id,
            zone_id: hold.zone_id.clone(),
            seat_ids: hold.seat_ids.clone(),
            quantity: hold.quantity,
            amount_cents: payment.amount_cents,
            currency: payment.currency.clone(),
            created_at: chrono::Utc::now(),
            status: crate::store::BookingStatus::Confirmed,
            cancelled_at: None,
            cancel_reason: None,
        };
        match timed("book", self.commit_booking(payment.clone(), charge_id.clone(), booking)).await? {
            Booked::Done(response) => Ok(*response),
            Booked::SeatTaken(seat_id) => {
                metrics::counter!("payment_seat_guard_conflicts_total").increment(1);
                tracing::error!(
                    payment_id = %payment.payment_id,
                    event_id = %command.event_id,
                    %seat_id,
                    "seat guard conflict: seat already sold in Postgres although seat-lock confirmed it; refunding"
                );
                self.refund_and_settle(payment, charge_id, format!("seat {seat_id} was already sold")).await
            }
            Booked::HoldTaken => {
                tracing::error!(
                    payment_id = %payment.payment_id,
                    hold_id = %command.hold_id,
                    "hold already booked by another payment; refunding"
                );
                self.refund_and_settle(payment, charge_id, "hold was already paid by another payment".into())
                    .await
            }
        }
    }

    /// The stored answer of `key`: `None` when the key is unused, the replayed response or
    /// failure when it is done, and a refusal when it is in flight or was used for a
    /// different request.
    async fn stored_answer(&self, key: &str, hash: &[u8]) -> Result<Option<v1::PayResponse>, Error> {
        let Some(row) = self
            .db
            .query_one_raw(sql(
                "SELECT request_hash, state, response, error_code, error_message, error_reason \
                 FROM idempotency_keys WHERE key = $1",
                [key.into()],
            ))
            .await?
        else {
            return Ok(None);
        };
        let stored_hash: Vec<u8> = row.try_get("", "request_hash")?;
        if stored_hash != hash {
            return Err(Error::IdempotencyKeyReused);
        }
        let state: String = row.try_get("", "state")?;
        if state != "done" {
            return Err(Error::RequestInFlight);
        }
        let response: Option<Vec<u8>> = row.try_get("", "response")?;
        if let Some(bytes) = response {
            let mut response = v1::PayResponse::decode(bytes.as_slice())?;
            response.replayed = true;
            return Ok(Some(response));
        }
        Err(Error::StoredFailure {
            code: row.try_get::<Option<i32>>("", "error_code")?.unwrap_or(Code::Internal as i32),
            message: row.try_get::<Option<String>>("", "error_message")?.unwrap_or_default(),
            reason: row.try_get("", "error_reason")?,
        })
    }

    /// The answer when our write found `key` already taken by a concurrent request.
    async fn taken_key_answer(&self, key: &str, hash: &[u8]) -> Result<v1::PayResponse, Error> {
        self.stored_answer(key, hash).await?.ok_or(Error::RequestInFlight)
    }

    /// Records seat-lock's refusal as the final answer of the command's key and returns it,
    /// unless a concurrent request took the key first (then that request's answer counts).
    async fn store_failure(
        &self,
        command: &PayCommand,
        hash: &[u8],
        status: Status,
    ) -> Result<v1::PayResponse, Error> {
        let reason = service_runtime::status::reason(&status).map(|(reason, _)| reason);
        let stored = self
            .db
            .execute_raw(sql(
                "INSERT INTO idempotency_keys (key, request_hash, state, error_code, error_message, error_reason) \
                 VALUES ($1, $2, 'done', $3, $4, $5) ON CONFLICT (key) DO NOTHING",
                [
                    command.idempotency_key.as_str().into(),
                    hash.to_vec().into(),
                    (status.code() as i32).into(),
                    status.message().into(),
                    reason.into(),
                ],
            ))
            .await?;
        if stored.rows_affected() == 1 {
            Err(Error::SeatLockRefused(status))
        } else {
            self.taken_key_answer(&command.idempotency_key, hash).await
        }
    }

    /// In one statement, claims the command's key (`in_flight`) and writes its `processing`
    /// payment with the booking id its hold will be confirmed under. `None` (and nothing
    /// written) when the key is already taken.
    async fn insert_payment(
        &self,
        command: &PayCommand,
        hash: &[u8],
        hold: &v1::Hold,
        booking_id: Uuid,
    ) -> Result<Option<PaymentRecord>, Error> {
        let payment_id = Uuid::now_v7();
        let row = self
            .writes
            .query_one(sql(
                &format!(
                    "WITH claimed AS (INSERT INTO idempotency_keys (key, request_hash, state) \
                     VALUES ($2, $9, 'in_flight') ON CONFLICT (key) DO NOTHING RETURNING key) \
                     INSERT INTO payments (payment_id, idempotency_key, event_id, hold_id, user_id, \
                     amount_cents, currency, status, reserved_booking_id) \
                     SELECT $1, key, $3, $4, $5, $6, $7, 'processing', $8 FROM claimed RETURNING {PAYMENT_COLUMNS}"
                ),
                [
                    payment_id.into(),
                    command.idempotency_key.as_str().into(),
                    command.event_id.into(),
                    command.hold_id.into(),
                    command.user_id.as_str().into(),
                    hold.total_price_cents.into(),
                    hold.currency.as_str().into(),
                    booking_id.into(),
                    hash.to_vec().into(),
                ],
            ))
            .await?;
        Ok(row.as_ref().map(PaymentRecord::from_row).transpose()?)
    }

    async fn confirm_hold(&self, command: &PayCommand, booking_id: Uuid) -> SeatLockAnswer {
        self.confirm_hold_of(command.event_id, command.hold_id, &command.user_id, booking_id).await
    }

    /// ConfirmHold with a few retries while seat-lock is unreachable.
    async fn confirm_hold_of(
        &self,
        event_id: Uuid,
        hold_id: Uuid,
        user_id: &str,
        booking_id: Uuid,
    ) -> SeatLockAnswer {
        let mut pause = CONFIRM_RETRY_PAUSE;
        let mut attempt = 1;
        loop {
            let answer = classify(
                self.seat_lock
                    .clone()
                    .confirm_hold(traced(v1::ConfirmHoldRequest {
                        event_id: event_id.to_string(),
                        hold_id: hold_id.to_string(),
                        user_id: user_id.to_owned(),
                        booking_id: booking_id.to_string(),
                    }))
                    .await,
            );
            match answer {
                SeatLockAnswer::Unavailable(status) if attempt < CONFIRM_ATTEMPTS => {
                    tracing::warn!(attempt, code = ?status.code(), "ConfirmHold failed; retrying");
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                    attempt += 1;
                }
                answer => return answer,
            }
        }
    }

    async fn settle_declined(
        &self,
        mut payment: PaymentRecord,
        reason: String,
    ) -> Result<v1::PayResponse, Error> {
        payment.status = PaymentStatus::Declined;
        payment.failure_reason = Some(reason.clone());
        let event = envelope(
            format!("payment_failed:{}", payment.payment_id),
            Body::PaymentFailed(events::PaymentFailed {
                event_id: payment.event_id.to_string(),
                user_id: payment.user_id.clone(),
                payment_id: payment.payment_id.to_string(),
                hold_id: payment.hold_id.to_string(),
                reason,
            }),
        );
        let response = v1::PayResponse { payment: Some(payment.to_proto()), booking: None, replayed: false };
        settle(On::Group(&self.writes), &payment, &event, &response, None).await?;
        self.outbox_ready.notify_one();
        Ok(response)
    }

    /// Refunds the charge, then records the payment as refunded with `reason`. The payment row
    /// is locked first, so a recovery pass that already settled it (possibly by booking) is
    /// never undone by a refund. If the refund fails the payment stays `processing`.
    async fn refund_and_settle(
        &self,
        payment: PaymentRecord,
        charge_id: String,
        reason: String,
    ) -> Result<v1::PayResponse, Error> {
        let txn = self.db.begin().await?;
        lock_processing(&txn, payment.payment_id).await?;
        self.gateway.refund(&charge_id).await?;
        metrics::counter!("payment_refunds_total").increment(1);
        let response = settle_refunded(&txn, payment, charge_id, reason).await?;
        txn.commit().await?;
        self.outbox_ready.notify_one();
        Ok(response)
    }

    /// Commits the booking of a payment this request still owns, in one statement that
    /// settles it only while it is `processing` (its row lock makes a concurrent recovery
    /// pass and this request never both settle it).
    async fn commit_booking(
        &self,
        payment: PaymentRecord,
        charge_id: String,
        booking: BookingRecord,
    ) -> Result<Booked, Error> {
        let booked = if self.crash_at == Some(CrashPoint::BeforeCommit) {
            // Test-only: the same statement, in a transaction the crash leaves uncommitted.
            let txn = self.db.begin().await?;
            let booked = write_booking(On::Txn(&txn), payment, charge_id, booking).await?;
            if matches!(booked, Booked::Done(_)) {
                CrashPoint::abort_if(self.crash_at, CrashPoint::BeforeCommit);
            }
            txn.rollback().await?;
            booked
        } else {
            write_booking(On::Group(&self.writes), payment, charge_id, booking).await?
        };
        if matches!(booked, Booked::Done(_)) {
            self.outbox_ready.notify_one();
        }
        Ok(booked)
    }

    /// Settles payments left `processing` for longer than `older_than` (a crash, a provider
    /// or seat-lock failure after the charge) from the provider's ledger: a captured charge
    /// completes its booking when seat-lock confirms the hold under the payment's reserved
    /// booking id, and is refunded when the hold is lost or the payment has no reserved id;
    /// while seat-lock is unreachable it stays `processing` for the next pass. No charge
    /// means nothing was taken. Also frees keys left `in_flight` without a payment (by
    /// versions that claimed the key before BeginCheckout and died before writing the
    /// payment). Returns how many payments it settled.
    pub async fn recover_stuck_payments(&self, older_than: Duration) -> Result<usize, Error> {
        let seconds = older_than.as_secs_f64();
        self.db
            .execute_raw(sql(
                "DELETE FROM idempotency_keys k WHERE k.state = 'in_flight' \
                 AND k.updated_at < now() - make_interval(secs => $1) \
                 AND NOT EXISTS (SELECT 1 FROM payments p WHERE p.idempotency_key = k.key)",
                [seconds.into()],
            ))
            .await?;
        let stuck = self
            .db
            .query_all_raw(sql(
                "SELECT payment_id FROM payments WHERE status = 'processing' \
                 AND created_at < now() - make_interval(secs => $1) ORDER BY created_at LIMIT $2",
                [seconds.into(), RECOVERY_BATCH.into()],
            ))
            .await?;
        let mut settled = 0;
        for row in stuck {
            let payment_id: Uuid = row.try_get("", "payment_id")?;
            if self.recover_payment(payment_id).await? {
                settled += 1;
            }
        }
        Ok(settled)
    }

    /// Finishes what a crashed Pay started after the charge: replays ConfirmHold under the
    /// payment's reserved booking id (seat-lock answers the same for a hold it already sold
    /// under that id, and sells a hold still in checkout), then writes the booking in `txn`
    /// behind a savepoint, so a seat-guard conflict rolls back only the booking.
    async fn complete_booking(
        &self,
        txn: &DatabaseTransaction,
        payment: &PaymentRecord,
        charge_id: &str,
        booking_id: Uuid,
    ) -> Result<Completion, Error> {
        let hold =
            match self.confirm_hold_of(payment.event_id, payment.hold_id, &payment.user_id, booking_id).await
            {
                SeatLockAnswer::Hold(hold) => hold,
                SeatLockAnswer::Unavailable(status) => {
                    tracing::warn!(payment_id = %payment.payment_id, code = ?status.code(),
                        "recovery cannot reach seat-lock; retrying on the next pass");
                    return Ok(Completion::SeatLockDown);
                }
                SeatLockAnswer::Refused(status) => {
                    return Ok(Completion::Refund(format!(
                        "{HOLD_LOST_REASON} (payment interrupted: {})",
                        status.message()
                    )));
                }
            };
        let booking = BookingRecord {
            booking_id,
            payment_id: payment.payment_id,
            event_id: payment.event_id,
            user_id: payment.user_id.clone(),
            hold_id: payment.hold_id,
            zone_id: hold.zone_id,
            seat_ids: hold.seat_ids,
            quantity: hold.quantity,
            amount_cents: payment.amount_cents,
            currency: payment.currency.clone(),
            created_at: chrono::Utc::now(),
            status: crate::store::BookingStatus::Confirmed,
            cancelled_at: None,
            cancel_reason: None,
        };
        let savepoint = txn.begin().await?;
        match write_booking(On::Txn(&savepoint), payment.clone(), charge_id.to_owned(), booking).await? {
            Booked::Done(_) => {
                savepoint.commit().await?;
                Ok(Completion::Booked)
            }
            Booked::SeatTaken(seat_id) => {
                savepoint.rollback().await?;
                metrics::counter!("payment_seat_guard_conflicts_total").increment(1);
                Ok(Completion::Refund(format!("seat {seat_id} was already sold")))
            }
            Booked::HoldTaken => {
                savepoint.rollback().await?;
                Ok(Completion::Refund("hold was already paid by another payment".into()))
            }
        }
    }

    async fn recover_payment(&self, payment_id: Uuid) -> Result<bool, Error> {
        let txn = self.db.begin().await?;
        // The row lock makes a late commit of the original request wait for us, and then
        // find the payment no longer `processing`.
        let Some(row) = txn
            .query_one_raw(sql(
                &format!(
                    "SELECT {PAYMENT_COLUMNS}, reserved_booking_id FROM payments \
                     WHERE payment_id = $1 AND status = 'processing' FOR UPDATE SKIP LOCKED"
                ),
                [payment_id.into()],
            ))
            .await?
        else {
            return Ok(false);
        };
        let payment = PaymentRecord::from_row(&row)?;
        let reserved_booking_id: Option<Uuid> = row.try_get("", "reserved_booking_id")?;
        match self.gateway.lookup(payment_id).await? {
            Some(charge) => {
                let mut reason = "payment interrupted; the charge was refunded".to_owned();
                if charge.status == crate::gateway::ChargeStatus::Captured {
                    if let Some(booking_id) = reserved_booking_id {
                        match self.complete_booking(&txn, &payment, &charge.charge_id, booking_id).await? {
                            Completion::Booked => {
                                txn.commit().await?;
                                self.outbox_ready.notify_one();
                                tracing::warn!(%payment_id, %booking_id, "recovery completed a stuck payment's booking");
                                return Ok(true);
                            }
                            Completion::SeatLockDown => {
                                txn.rollback().await?;
                                return Ok(false);
                            }
                            Completion::Refund(why) => reason = why,
                        }
                    }
                    self.gateway.refund(&charge.charge_id).await?;
                    metrics::counter!("payment_refunds_total").increment(1);
                }
                tracing::warn!(%payment_id, charge_id = %charge.charge_id, %reason, "recovery refunded a stuck payment");
                settle_refunded(&txn, payment, charge.charge_id, reason).await?;
            }
            None => {
                tracing::warn!(%payment_id, "recovery closed a stuck payment that was never charged");
                let mut payment = payment;
                payment.status = PaymentStatus::Declined;
                payment.failure_reason =
                    Some("payment interrupted before the charge; nothing was taken".into());
                let event = envelope(
                    format!("payment_failed:{payment_id}"),
                    Body::PaymentFailed(events::PaymentFailed {
                        event_id: payment.event_id.to_string(),
                        user_id: payment.user_id.clone(),
                        payment_id: payment_id.to_string(),
                        hold_id: payment.hold_id.to_string(),
                        reason: payment.failure_reason.clone().unwrap_or_default(),
                    }),
                );
                let response =
                    v1::PayResponse { payment: Some(payment.to_proto()), booking: None, replayed: false };
                settle(On::Txn(&txn), &payment, &event, &response, None).await?;
            }
        }
        txn.commit().await?;
        self.outbox_ready.notify_one();
        Ok(true)
    }
}

/// What recovery could do with a captured charge whose hold it asked seat-lock to confirm.
enum Completion {
    /// The booking is written in the recovery transaction (to commit).
    Booked,
    /// Seat-lock did not answer: leave the payment `processing` for the next pass.
    SeatLockDown,
    /// The hold is gone or its seats are sold elsewhere: refund, telling the user why.
    Refund(String),
}

/// How the booking transaction ended.
enum Booked {
    Done(Box<v1::PayResponse>),
    /// The seat guard already holds this seat: rolled back.
    SeatTaken(String),
    /// Another payment already booked this hold: rolled back.
    HoldTaken,
}

/// In one statement on `db` (a commit group, or a transaction the caller commits): the booking,
/// its seats, one seat_guard row per seat, the confirmed payment, its outbox event and the
/// stored answer; or nothing, when the seat guard or the hold's booking refuses it.
async fn write_booking(
    db: On<'_>,
    mut payment: PaymentRecord,
    charge_id: String,
    booking: BookingRecord,
) -> Result<Booked, Error> {
    payment.status = PaymentStatus::Confirmed;
    payment.provider_charge_id = Some(charge_id);
    payment.booking_id = Some(booking.booking_id);
    let event = envelope(
        format!("booking:{}", booking.booking_id),
        Body::BookingConfirmed(events::BookingConfirmed {
            event_id: booking.event_id.to_string(),
            user_id: booking.user_id.clone(),
            booking_id: booking.booking_id.to_string(),
            payment_id: booking.payment_id.to_string(),
            hold_id: booking.hold_id.to_string(),
            zone_id: booking.zone_id.clone(),
            seat_ids: booking.seat_ids.clone(),
            quantity: booking.quantity,
            amount_cents: booking.amount_cents,
            currency: booking.currency.clone(),
        }),
    );
    let response = v1::PayResponse {
        payment: Some(payment.to_proto()),
        booking: Some(booking.to_proto()),
        replayed: false,
    };
    match settle(db, &payment, &event, &response, Some(&booking)).await {
        Ok(()) => Ok(Booked::Done(Box::new(response))),
        Err(Error::Database(error)) => match unique_violation(&error) {
            Some((SEAT_GUARD_PKEY, detail)) => {
                // The detail names the key: `Key (event_id, seat_id)=(<event>, <seat>) ...`.
                let taken = booking
                    .seat_ids
                    .iter()
                    .find(|seat| detail.contains(&format!("{}, {seat})", booking.event_id)))
                    .cloned()
                    .unwrap_or_else(|| format!("of {}", booking.seat_ids.join(", ")));
                Ok(Booked::SeatTaken(taken))
            }
            Some((BOOKING_HOLD_KEY, _)) => Ok(Booked::HoldTaken),
            _ => Err(Error::Database(error)),
        },
        Err(error) => Err(error),
    }
}

/// Where a settlement's one statement runs.
#[derive(Clone, Copy)]
enum On<'a> {
    /// In a commit group, shared with concurrent payments (the request path).
    Group(&'a CommitGroups),
    /// In a transaction the caller commits (refunds, recovery, the crash test).
    Txn(&'a DatabaseTransaction),
}

impl On<'_> {
    async fn query_one(self, statement: Statement) -> Result<Option<QueryResult>, DbErr> {
        match self {
            Self::Group(groups) => groups.query_one(statement).await,
            Self::Txn(txn) => txn.query_one_raw(statement).await,
        }
    }
}

/// The constraint (one of ours) and detail of a unique violation, if `error` is one.
fn unique_violation(error: &DbErr) -> Option<(&'static str, String)> {
    let (DbErr::Exec(RuntimeErr::SqlxError(error)) | DbErr::Query(RuntimeErr::SqlxError(error))) = error
    else {
        return None;
    };
    let sea_orm::sqlx::Error::Database(error) = error.as_ref() else {
        return None;
    };
    let error = error.try_downcast_ref::<PgDatabaseError>()?;
    if error.code() != UNIQUE_VIOLATION {
        return None;
    }
    let constraint =
        [SEAT_GUARD_PKEY, BOOKING_HOLD_KEY].into_iter().find(|c| error.constraint() == Some(*c))?;
    Some((constraint, error.detail().unwrap_or_default().to_owned()))
}

/// Locks the payment row in `txn`, refusing when it is no longer `processing` (someone else
/// settled it).
async fn lock_processing(txn: &DatabaseTransaction, payment_id: Uuid) -> Result<(), Error> {
    let locked = txn
        .query_one_raw(sql(
            "SELECT payment_id FROM payments WHERE payment_id = $1 AND status = 'processing' FOR UPDATE",
            [payment_id.into()],
        ))
        .await?;
    match locked {
        Some(_) => Ok(()),
        None => Err(Error::SettledConcurrently(payment_id)),
    }
}

/// Records a refunded payment, its event and answer in `txn`.
async fn settle_refunded(
    txn: &DatabaseTransaction,
    mut payment: PaymentRecord,
    charge_id: String,
    reason: String,
) -> Result<v1::PayResponse, Error> {
    payment.status = PaymentStatus::Refunded;
    payment.provider_charge_id = Some(charge_id);
    payment.failure_reason = Some(reason.clone());
    payment.booking_id = None;
    let event = envelope(
        format!("refunded:{}", payment.payment_id),
        Body::Refunded(events::Refunded {
            event_id: payment.event_id.to_string(),
            user_id: payment.user_id.clone(),
            payment_id: payment.payment_id.to_string(),
            hold_id: payment.hold_id.to_string(),
            amount_cents: payment.amount_cents,
            currency: payment.currency.clone(),
            reason,
        }),
    );
    let response = v1::PayResponse { payment: Some(payment.to_proto()), booking: None, replayed: false };
    settle(On::Txn(txn), &payment, &event, &response, None).await?;
    Ok(response)
}

/// In one statement on `db` (a commit group, or a transaction the caller commits): moves the
/// payment out of `processing` (refusing if someone else already did), queues `event` in the
/// outbox, stores `response` as the key's final answer and, given a `booking`, writes it with
/// its seats and seat guard rows. A conflict in any of them fails the whole statement.
async fn settle(
    db: On<'_>,
    payment: &PaymentRecord,
    event: &events::EventEnvelope,
    response: &v1::PayResponse,
    booking: Option<&BookingRecord>,
) -> Result<(), Error> {
    let event_kind = service_runtime::bus::kind_of(event).unwrap_or(kind::PAYMENT_FAILED);
    let mut statement = String::from(
        "WITH p AS (UPDATE payments SET status = $2, provider_charge_id = $3, failure_reason = $4, \
         booking_id = $5, updated_at = now() WHERE payment_id = $1 AND status = 'processing' \
         RETURNING payment_id, idempotency_key), \
         o AS (INSERT INTO outbox (message_id, kind, payload) SELECT $6, $7, $8 FROM p \
         ON CONFLICT (message_id) DO NOTHING), \
         k AS (UPDATE idempotency_keys SET state = 'done', response = $9, updated_at = now() \
         WHERE key IN (SELECT idempotency_key FROM p))",
    );
    let mut values: Vec<Value> = vec![
        payment.payment_id.into(),
        payment.status.as_str().into(),
        payment.provider_charge_id.clone().into(),
        payment.failure_reason.clone().into(),
        payment.booking_id.into(),
        event.message_id.as_str().into(),
        event_kind.into(),
        event.encode_to_vec().into(),
        response.encode_to_vec().into(),
    ];
    if let Some(booking) = booking {
        // The guard rows go in seat order, so two bookings that (wrongly) share seats wait
        // on each other instead of deadlocking.
        let mut seats = booking.seat_ids.clone();
        seats.sort_unstable();
        statement.push_str(
            ", b AS (INSERT INTO bookings (booking_id, payment_id, event_id, user_id, hold_id, zone_id, \
             quantity, amount_cents, currency) SELECT $10, payment_id, $11, $12, $13, $14, $15, $16, $17 \
             FROM p RETURNING booking_id), \
             s AS (INSERT INTO booking_seats (booking_id, event_id, zone_id, seat_id) \
             SELECT booking_id, $11, $14, seat FROM b, jsonb_array_elements_text($18::jsonb) AS seat), \
             g AS (INSERT INTO seat_guard (event_id, seat_id, booking_id) \
             SELECT $11, seat, booking_id FROM b, jsonb_array_elements_text($18::jsonb) AS seat)",
        );
        values.extend([
            booking.booking_id.into(),
            booking.event_id.into(),
            booking.user_id.as_str().into(),
            booking.hold_id.into(),
            booking.zone_id.as_str().into(),
            i32::try_from(booking.quantity).unwrap_or(i32::MAX).into(),
            booking.amount_cents.into(),
            booking.currency.as_str().into(),
            serde_json::Value::from(seats).into(),
        ]);
    }
    statement.push_str(" SELECT count(*) AS settled FROM p");
    let settled = db
        .query_one(sql(&statement, values))
        .await?
        .map(|row| row.try_get::<i64>("", "settled"))
        .transpose()?
        .unwrap_or(0);
    if settled != 1 {
        return Err(Error::SettledConcurrently(payment.payment_id));
    }
    Ok(())
}

/// Runs one step of a Pay, recording its time in `payment_pay_step_seconds{step}`, so a
/// benchmark shows where a Pay's time goes (waits for a pooled connection included).
async fn timed<F: Future>(step: &'static str, future: F) -> F::Output {
    let started = Instant::now();
    let output = future.await;
    metrics::histogram!("payment_pay_step_seconds", "step" => step).record(started.elapsed().as_secs_f64());
    output
}

/// A request to seat-lock carrying the current trace context.
fn traced<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    service_runtime::telemetry::inject_grpc(&mut request);
    request
}
