//! `Pay`: each money state committed before the network call that follows it.
//!
//! 1. A key already used answers from where it stands (module `idempotency`): its stored
//!    answer, or, while its charge's outcome is unknown or its refund under way, the
//!    payment's current state (PENDING, REFUNDING).
//! 2. Seat-lock moves the hold into checkout, or refuses before any money moves (the refusal
//!    is stored as the key's answer; moving a hold into checkout again is harmless).
//! 3. One statement claims the key and writes the payment `charging`, with its method and the
//!    booking id the hold will be confirmed under; a second key for a hold that already has a
//!    live payment is refused there (`HOLD_ALREADY_BEING_PAID`), before any charge.
//! 4. The provider is charged (through the timeout layer) with the payment id as its
//!    idempotency key. Captured: `captured` is committed with the charge id. Declined:
//!    `declined`. Timed out, failed or pending: `unknown`, and the answer is PENDING; the
//!    recovery pass settles it from the provider and the user hears the outcome by event.
//! 5. Seat-lock confirms the hold; one statement then writes `confirmed` with the booking,
//!    its seats, seat guard rows, outbox event and the key's answer. A lost hold or a seat
//!    guard conflict refunds the charge (module `refund`).
//!
//! Every state change is conditional on the state it leaves, so the request and the recovery
//! pass (module `recovery`) may both drive one payment and only one of them moves it at each
//! step; the other answers the payment as it stands. The writes of a Pay share commits with
//! those of concurrent payments (module `commit`).

use std::{sync::Arc, time::Instant};

use sea_orm::{DatabaseConnection, TransactionTrait};
use sha2::{Digest, Sha256};
use ticketing_proto::v1;
use tokio::sync::Notify;
use tonic::{Code, Status, transport::Channel};
use uuid::Uuid;

use crate::{
    commit::CommitGroups,
    config::CrashPoint,
    error::Error,
    gateway::{ChargeOutcome, PaymentGateway},
    idempotency::{self, Claim, KeyState},
    instances::Owner,
    recovery::Recovered,
    refund::{Current, RefundOrder, Refunds, RequestedBy},
    seat_lock::{SeatLock, SeatLockAnswer, refusal_reason},
    settle::{self, Booked, On},
    store::{BookingRecord, BookingStatus, PaymentRecord, PaymentStatus},
};

/// Told to the user when a captured payment written by an old version, with no booking id
/// reserved, is refunded by recovery.
const INTERRUPTED_REASON: &str = "payment interrupted; the charge was refunded";

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

/// How driving a `captured` payment ended.
pub enum AfterCapture {
    /// Booked or refunded (or refunding, when the provider's refund must wait for recovery);
    /// or settled by another driver: the payment as it stands.
    Settled(Box<v1::PayResponse>),
    /// Seat-lock did not answer: the payment stays `captured` for the next recovery pass.
    SeatLockDown(Status),
}

/// Runs payments. Shared by the gRPC handlers and the recovery loop.
pub struct Checkout {
    pub(crate) db: DatabaseConnection,
    /// The writes of a Pay, committed in groups with those of concurrent payments.
    pub(crate) writes: CommitGroups,
    /// The provider behind its timeout layer.
    pub(crate) gateway: Arc<dyn PaymentGateway>,
    pub(crate) seat_lock: SeatLock,
    pub(crate) refunds: Refunds,
    outbox_ready: Arc<Notify>,
    /// This process: its instance id, written on the payments it claims, and the lease by
    /// which it judges other processes dead (module `instances`).
    pub(crate) owner: Owner,
    /// Test-only fault injection (`PAYMENT_CRASH_AT`); `None` in production.
    pub(crate) crash_at: Option<CrashPoint>,
}

impl Checkout {
    /// A checkout that writes through `writes`, charges through `gateway` (already behind its
    /// timeout layer), wakes the relay through `outbox_ready` after every commit and marks
    /// the payments it claims (and those recovery adopts) as `owner`'s. `crash_at` arms the
    /// test-only `PAYMENT_CRASH_AT` knob.
    pub fn new(
        db: DatabaseConnection,
        writes: CommitGroups,
        gateway: Arc<dyn PaymentGateway>,
        seat_lock: Channel,
        outbox_ready: Arc<Notify>,
        owner: Owner,
        crash_at: Option<CrashPoint>,
    ) -> Self {
        let refunds = Refunds::new(db.clone(), Arc::clone(&gateway), Arc::clone(&outbox_ready), crash_at);
        let seat_lock = SeatLock::new(seat_lock);
        Self { db, writes, gateway, seat_lock, refunds, outbox_ready, owner, crash_at }
    }

    /// The refund state machine, for cancellations.
    pub fn refunds(&self) -> &Refunds {
        &self.refunds
    }

    /// Pays for a hold, once per idempotency key. See the module docs for the steps.
    pub async fn pay(&self, command: PayCommand) -> Result<v1::PayResponse, Error> {
        let hash = command.request_hash();
        match timed("key_lookup", idempotency::key_state(&self.db, &command.idempotency_key, &hash)).await? {
            KeyState::Unused => {}
            // Stalled with nobody driving it (its request failed, or its process died): this
            // retry takes it over instead of answering REQUEST_IN_FLIGHT until recovery.
            KeyState::InFlight(Some(payment)) if payment.status.needs_a_driver() => {
                return match self.take_over(payment.payment_id).await? {
                    Some(adopted) => self.drive_for_retry(adopted).await,
                    None => replayed(KeyState::InFlight(Some(payment))),
                };
            }
            state => return replayed(state),
        }

        let hold = match timed(
            "begin_checkout",
            self.seat_lock.begin_checkout(command.event_id, command.hold_id, &command.user_id),
        )
        .await
        {
            SeatLockAnswer::Hold(hold) => hold,
            // No such hold for this user (another user's hold looks the same): nothing is
            // remembered under the key, so a stranger's probe leaves no trace. Unless a
            // concurrent request under this key claimed it meanwhile, and the hold went after
            // (lost with seat-lock's Redis, or expired): the key's answer is that payment's.
            SeatLockAnswer::Refused(status) if status.code() == Code::NotFound => {
                return match idempotency::key_state(&self.db, &command.idempotency_key, &hash).await? {
                    KeyState::Unused => Err(Error::SeatLockRefused(status)),
                    state => replayed(state),
                };
            }
            SeatLockAnswer::Refused(status) => {
                if idempotency::store_failure(&self.db, &command, &hash, &status).await? {
                    return Err(Error::SeatLockRefused(status));
                }
                return self.answer_of_key(&command, &hash).await;
            }
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

        let claim =
            idempotency::claim(&self.writes, &self.db, &command, &hash, &hold, Uuid::now_v7(), self.owner.id);
        let payment = match timed("claim", claim).await? {
            Claim::Claimed(payment) => *payment,
            Claim::KeyTaken => return self.answer_of_key(&command, &hash).await,
            Claim::HoldTaken(live) => return Err(Error::HoldAlreadyBeingPaid(live)),
        };
        CrashPoint::abort_if(self.crash_at, CrashPoint::AfterChargingCommitted);

        let payment_id = payment.payment_id;
        let ended = self.charge_and_book(&command, payment).await;
        if ended.is_err() {
            // Left between states (seat-lock down, a failed write): nobody drives it now.
            self.release(payment_id).await;
        }
        ended
    }

    /// Steps 4 and 5 of a claimed payment (see the module docs).
    async fn charge_and_book(
        &self,
        command: &PayCommand,
        payment: PaymentRecord,
    ) -> Result<v1::PayResponse, Error> {
        let charge = self.gateway.charge(
            payment.payment_id,
            payment.amount_cents,
            &payment.currency,
            &command.payment_method,
        );
        let charge_id = match timed("charge", charge).await {
            Ok(ChargeOutcome::Captured { charge_id }) => charge_id,
            Ok(ChargeOutcome::Declined { reason }) => {
                metrics::counter!("payment_charges_total", "outcome" => "declined").increment(1);
                return match settle::settle_declined(&self.writes, payment.clone(), reason).await? {
                    Some(response) => {
                        self.outbox_ready.notify_one();
                        Ok(response)
                    }
                    None => self.as_it_stands(payment.payment_id).await,
                };
            }
            Ok(ChargeOutcome::Pending { charge_id }) => {
                tracing::info!(payment_id = %payment.payment_id, %charge_id, "charge pending at the provider");
                return self.charge_unknown(payment.payment_id).await;
            }
            Err(error) => {
                tracing::warn!(payment_id = %payment.payment_id, error = %format!("{error:#}"),
                    "charge outcome unknown; recovery settles it from the provider");
                return self.charge_unknown(payment.payment_id).await;
            }
        };
        metrics::counter!("payment_charges_total", "outcome" => "captured").increment(1);
        CrashPoint::abort_if(self.crash_at, CrashPoint::AfterCharge);
        let Some(payment) = settle::mark_captured(&self.writes, payment.payment_id, &charge_id).await? else {
            return self.as_it_stands(payment.payment_id).await;
        };
        CrashPoint::abort_if(self.crash_at, CrashPoint::AfterCapturedCommitted);

        match self.drive_captured(payment).await? {
            AfterCapture::Settled(response) => Ok(*response),
            AfterCapture::SeatLockDown(status) => Err(Error::SeatLockUnavailable(status)),
        }
    }

    /// Drives a payment this retry of its key took over (module `recovery`), answering it as it
    /// then stands; still stalled (seat-lock down, a failure), it is released again and the
    /// retry hears why.
    async fn drive_for_retry(&self, payment: PaymentRecord) -> Result<v1::PayResponse, Error> {
        let payment_id = payment.payment_id;
        let driven = self.recover_payment(payment).await;
        if !matches!(driven, Ok(Recovered::Settled | Recovered::Pending)) {
            self.release(payment_id).await;
        }
        if driven? == Recovered::Waiting {
            return Err(Error::SeatLockUnavailable(Status::unavailable(
                "seat-lock did not confirm the hold",
            )));
        }
        let mut response = self.as_it_stands(payment_id).await?;
        response.replayed = true;
        Ok(response)
    }

    /// Drives a `captured` payment to its end, for the request and for recovery: seat-lock
    /// confirms the hold under the payment's reserved booking id (answering a replay the same
    /// way, also after a crash), then the booking is written; a hold seat-lock refuses, a
    /// seat guard conflict or a hold another payment booked is refunded.
    pub(crate) async fn drive_captured(&self, payment: PaymentRecord) -> Result<AfterCapture, Error> {
        let Some(booking_id) = payment.reserved_booking_id else {
            return self.refund_captured(&payment, INTERRUPTED_REASON.to_owned()).await;
        };
        let confirm =
            self.seat_lock.confirm_hold(payment.event_id, payment.hold_id, &payment.user_id, booking_id);
        let hold = match timed("confirm_hold", confirm).await {
            SeatLockAnswer::Hold(hold) => hold,
            SeatLockAnswer::Refused(status) => {
                let reason = refusal_reason(&status);
                tracing::warn!(payment_id = %payment.payment_id, %reason, "hold lost after the charge; refunding");
                return self.refund_captured(&payment, reason).await;
            }
            SeatLockAnswer::Unavailable(status) => {
                tracing::error!(payment_id = %payment.payment_id, code = ?status.code(), message = status.message(),
                    "cannot confirm the hold after the charge; recovery will settle the payment");
                return Ok(AfterCapture::SeatLockDown(status));
            }
        };
        CrashPoint::abort_if(self.crash_at, CrashPoint::AfterConfirmHold);
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
            status: BookingStatus::Confirmed,
            cancelled_at: None,
            cancel_reason: None,
        };
        let seat_ids = booking.seat_ids.join(", ");
        match timed("book", self.commit_booking(payment.clone(), booking)).await? {
            Booked::Done(response) => {
                self.outbox_ready.notify_one();
                Ok(AfterCapture::Settled(response))
            }
            Booked::SeatTaken(seat_id) => {
                metrics::counter!("payment_seat_guard_conflicts_total").increment(1);
                tracing::error!(payment_id = %payment.payment_id, event_id = %payment.event_id, %seat_id, seats = %seat_ids,
                    "seat guard conflict: seat already sold in Postgres although seat-lock confirmed it; refunding");
                self.refund_captured(&payment, format!("seat {seat_id} was already sold")).await
            }
            Booked::HoldTaken => {
                tracing::error!(payment_id = %payment.payment_id, hold_id = %payment.hold_id,
                    "hold already booked by another payment; refunding");
                self.refund_captured(&payment, "hold was already paid by another payment".into()).await
            }
            Booked::Moved => {
                Ok(AfterCapture::Settled(Box::new(self.as_it_stands(payment.payment_id).await?)))
            }
        }
    }

    /// Refunds a `captured` payment that will not be booked (module `refund`), answering the
    /// payment as it then stands: refunded, refunding (the provider's refund is left to
    /// recovery), or whatever another driver made of it.
    async fn refund_captured(&self, payment: &PaymentRecord, reason: String) -> Result<AfterCapture, Error> {
        let order = RefundOrder {
            payment_id: payment.payment_id,
            booking_id: None,
            reason,
            requested_by: RequestedBy::System,
        };
        let current = timed("refund", self.refunds.refund(&order)).await?;
        Ok(AfterCapture::Settled(Box::new(current.pay_response())))
    }

    /// Commits the booking of a `captured` payment in one statement (in a commit group).
    async fn commit_booking(&self, payment: PaymentRecord, booking: BookingRecord) -> Result<Booked, Error> {
        if self.crash_at != Some(CrashPoint::BeforeCommit) {
            return settle::write_booking(On::Group(&self.writes), payment, booking).await;
        }
        // Test-only: the same statement, in a transaction the crash leaves uncommitted.
        let txn = self.db.begin().await?;
        let booked = settle::write_booking(On::Txn(&txn), payment, booking).await?;
        if matches!(booked, Booked::Done(_)) {
            CrashPoint::abort_if(self.crash_at, CrashPoint::BeforeCommit);
        }
        txn.rollback().await?;
        Ok(booked)
    }

    /// Records the charge's outcome as unknown and answers PENDING (or the payment as it
    /// stands, when its outcome was recorded meanwhile).
    async fn charge_unknown(&self, payment_id: Uuid) -> Result<v1::PayResponse, Error> {
        metrics::counter!("payment_charges_total", "outcome" => "unknown").increment(1);
        match settle::mark_unknown(&self.writes, payment_id).await? {
            Some(payment) => Ok(Current { payment, booking: None }.pay_response()),
            None => self.as_it_stands(payment_id).await,
        }
    }

    /// The answer of a payment someone else moved on: as it now stands.
    async fn as_it_stands(&self, payment_id: Uuid) -> Result<v1::PayResponse, Error> {
        Ok(self.refunds.current(payment_id).await?.pay_response())
    }

    /// The answer when our write found the key already taken by a concurrent request.
    async fn answer_of_key(&self, command: &PayCommand, hash: &[u8]) -> Result<v1::PayResponse, Error> {
        match idempotency::key_state(&self.db, &command.idempotency_key, hash).await? {
            KeyState::Unused => Err(Error::RequestInFlight),
            state => replayed(state),
        }
    }
}

/// What a used key answers: its stored answer once done; while in flight, PENDING or
/// REFUNDING when the payment waits on the provider, and "still in flight" otherwise (a
/// request, or recovery, is driving it right now).
fn replayed(state: KeyState) -> Result<v1::PayResponse, Error> {
    let mut response = match state {
        KeyState::Done(answer) => (*answer)?,
        KeyState::InFlight(Some(payment))
            if matches!(payment.status, PaymentStatus::Unknown | PaymentStatus::Refunding) =>
        {
            Current { payment: *payment, booking: None }.pay_response()
        }
        KeyState::InFlight(_) | KeyState::Unused => return Err(Error::RequestInFlight),
    };
    response.replayed = true;
    Ok(response)
}

/// Runs one step of a Pay, recording its time in `payment_pay_step_seconds{step}`, so a
/// benchmark shows where a Pay's time goes (waits for a pooled connection included).
async fn timed<F: Future>(step: &'static str, future: F) -> F::Output {
    let started = Instant::now();
    let output = future.await;
    metrics::histogram!("payment_pay_step_seconds", "step" => step).record(started.elapsed().as_secs_f64());
    output
}
