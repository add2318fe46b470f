//! `PaymentService`: input validation and the read RPCs; `Pay` hands over to [`Checkout`],
//! `CancelBooking` and `RefundBooking` to [`Cancellations`].

use std::{future::Future, sync::Arc};

use sea_orm::DatabaseConnection;
use service_runtime::{
    auth,
    status::{invalid, uuid},
};
use ticketing_proto::v1::{self, payment_service_server::PaymentService as PaymentApi};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::{Request, Response, Status};

use crate::{
    cancel::{CancelCommand, Cancellations, Canceller},
    checkout::{Checkout, PayCommand},
    error::Error,
    gateway::PaymentMethod,
    reconcile::Reconciler,
    store::{self, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE},
};

/// The gRPC face of the payment service.
#[derive(Clone)]
pub struct PaymentService {
    db: DatabaseConnection,
    checkout: Arc<Checkout>,
    cancellations: Arc<Cancellations>,
    reconciler: Arc<Reconciler>,
    /// One permit per payment task running (`MAX_PAYMENTS_IN_FLIGHT`), held by the task.
    tasks: Arc<Semaphore>,
    /// The number of permits, told to a refused caller.
    task_limit: usize,
}

impl PaymentService {
    /// Serves reads from `db`, payments through `checkout`, cancellations through
    /// `cancellations` and operators' reconciliations through `reconciler`; at most
    /// `task_limit` payment tasks run at once.
    pub fn new(
        db: DatabaseConnection,
        checkout: Arc<Checkout>,
        cancellations: Arc<Cancellations>,
        reconciler: Arc<Reconciler>,
        task_limit: usize,
    ) -> Self {
        let tasks = Arc::new(Semaphore::new(task_limit));
        Self { db, checkout, cancellations, reconciler, tasks, task_limit }
    }

    /// Runs `work` in a task of its own, holding one of the payment task permits until it
    /// ends: a client that gives up (or a deadline) must not cut a payment in half between
    /// the provider's call and the commit that records it, and a task whose client left still
    /// counts against the bound. No permit free: refused before anything is done.
    async fn detached<T: Send + 'static>(
        &self,
        work: impl Future<Output = Result<T, Error>> + Send + 'static,
    ) -> Result<T, Error> {
        let permit = Arc::clone(&self.tasks).try_acquire_owned().map_err(|_| {
            metrics::counter!("payment_tasks_refused_total").increment(1);
            Error::TooManyPayments { limit: self.task_limit }
        })?;
        let slot = TaskSlot::take(permit);
        let span = tracing::Span::current();
        let task = tokio::spawn(tracing::Instrument::instrument(
            async move {
                let ended = work.await;
                drop(slot);
                ended
            },
            span,
        ));
        task.await?
    }

    /// Runs a cancellation in its own task (see [`Self::detached`]).
    async fn cancel(&self, command: CancelCommand) -> Result<Response<v1::CancelBookingResponse>, Status> {
        let cancellations = Arc::clone(&self.cancellations);
        let response = self.detached(async move { cancellations.cancel(command).await }).await?;
        Ok(Response::new(response))
    }
}

/// A payment task's permit, counted in `payment_tasks_in_flight` until dropped (also when
/// the task panics).
struct TaskSlot {
    _permit: OwnedSemaphorePermit,
}

/// `payment_tasks_in_flight`, a live gauge (set absolutely, never dropped while alive).
static TASKS_IN_FLIGHT: std::sync::LazyLock<std::sync::Arc<service_runtime::telemetry::LiveGauge>> =
    std::sync::LazyLock::new(|| service_runtime::telemetry::LiveGauge::get("payment_tasks_in_flight", &[]));

impl TaskSlot {
    fn take(permit: OwnedSemaphorePermit) -> Self {
        TASKS_IN_FLIGHT.add(1);
        Self { _permit: permit }
    }
}

impl Drop for TaskSlot {
    fn drop(&mut self) {
        TASKS_IN_FLIGHT.add(-1);
    }
}

/// Longest reason an operator may give for a refund (told to the user).
const MAX_REASON_CHARS: usize = 200;

/// Checks an idempotency key: 8-128 of `[A-Za-z0-9_-]`.
fn idempotency_key(value: &str) -> Result<String, Status> {
    let ok = (8..=128).contains(&value.len())
        && value.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok { Ok(value.to_owned()) } else { Err(invalid("idempotency_key", "must be 8-128 of [A-Za-z0-9_-]")) }
}

fn cancel_command(request: v1::CancelBookingRequest, user_id: String) -> Result<CancelCommand, Status> {
    let idempotency_key = idempotency_key(&request.idempotency_key)?;
    let booking_id = uuid("booking_id", &request.booking_id)?;
    Ok(CancelCommand { idempotency_key, booking_id, by: Canceller::Owner { user_id } })
}

/// Whose bookings `ListBookings` reads: an operator (admin scope) any user's, by naming
/// them in `user_id` (to answer a customer or find the booking to refund); anyone else only
/// their own, as every user-facing call.
fn bookings_owner(request: &Request<v1::ListBookingsRequest>) -> Result<String, Status> {
    let named = request.get_ref().user_id.as_str();
    match auth::caller(request) {
        Ok(caller) if caller.admin && !named.is_empty() => {
            Ok(service_runtime::status::user_id(named)?.to_owned())
        }
        _ => auth::acting_user(request, named),
    }
}

fn refund_command(request: v1::RefundBookingRequest) -> Result<CancelCommand, Status> {
    let idempotency_key = idempotency_key(&request.idempotency_key)?;
    let booking_id = uuid("booking_id", &request.booking_id)?;
    let chars = request.reason.chars().count();
    if request.reason.trim().is_empty() || chars > MAX_REASON_CHARS {
        return Err(invalid(
            "reason",
            format!("must be 1-{MAX_REASON_CHARS} characters, not blank; got {chars}"),
        ));
    }
    Ok(CancelCommand { idempotency_key, booking_id, by: Canceller::Operator { reason: request.reason } })
}

fn pay_command(request: v1::PayRequest, user_id: String) -> Result<PayCommand, Status> {
    let idempotency_key = idempotency_key(&request.idempotency_key)?;
    let event_id = uuid("event_id", &request.event_id)?;
    let hold_id = uuid("hold_id", &request.hold_id)?;
    if PaymentMethod::parse(&request.payment_method).is_none() {
        return Err(invalid(
            "payment_method",
            "must be pm_card_ok, pm_card_declined, pm_card_slow_<millis> or pm_card_async_<millis>",
        ));
    }
    Ok(PayCommand { idempotency_key, event_id, hold_id, user_id, payment_method: request.payment_method })
}

#[tonic::async_trait]
impl PaymentApi for PaymentService {
    async fn pay(&self, request: Request<v1::PayRequest>) -> Result<Response<v1::PayResponse>, Status> {
        let user_id = auth::acting_user(&request, &request.get_ref().user_id)?;
        let command = pay_command(request.into_inner(), user_id).map_err(Error::InvalidInput)?;
        // Its own task, inside the bound (see `detached`).
        let checkout = Arc::clone(&self.checkout);
        let response = self.detached(async move { checkout.pay(command).await }).await?;
        Ok(Response::new(response))
    }

    async fn get_payment(
        &self,
        request: Request<v1::GetPaymentRequest>,
    ) -> Result<Response<v1::Payment>, Status> {
        let user_id = auth::acting_user(&request, &request.get_ref().user_id)?;
        let request = request.into_inner();
        let payment_id = uuid("payment_id", &request.payment_id).map_err(Error::InvalidInput)?;
        let payment = store::payment_of_user(&self.db, payment_id, &user_id).await?;
        Ok(Response::new(payment.to_proto()))
    }

    async fn get_booking(
        &self,
        request: Request<v1::GetBookingRequest>,
    ) -> Result<Response<v1::Booking>, Status> {
        let user_id = auth::acting_user(&request, &request.get_ref().user_id)?;
        let request = request.into_inner();
        let booking_id = uuid("booking_id", &request.booking_id).map_err(Error::InvalidInput)?;
        let booking = store::booking_of_user(&self.db, booking_id, &user_id).await?;
        Ok(Response::new(booking.to_proto()))
    }

    async fn list_bookings(
        &self,
        request: Request<v1::ListBookingsRequest>,
    ) -> Result<Response<v1::ListBookingsResponse>, Status> {
        let user_id = bookings_owner(&request)?;
        let request = request.into_inner();
        let event_id = match request.event_id.as_str() {
            "" => None,
            id => Some(uuid("event_id", id).map_err(Error::InvalidInput)?),
        };
        let after = match request.page_token.as_str() {
            "" => None,
            token => Some(uuid::Uuid::parse_str(token).map_err(|_| {
                Error::InvalidInput(invalid("page_token", "is not a token this service issued"))
            })?),
        };
        let page_size = match request.page_size {
            0 => DEFAULT_PAGE_SIZE,
            size => size.min(MAX_PAGE_SIZE),
        };
        let (bookings, next) =
            store::bookings_of_user(&self.db, &user_id, event_id, page_size, after).await?;
        Ok(Response::new(v1::ListBookingsResponse {
            bookings: bookings.iter().map(store::BookingRecord::to_proto).collect(),
            next_page_token: next.map(|id| id.to_string()).unwrap_or_default(),
        }))
    }

    async fn cancel_booking(
        &self,
        request: Request<v1::CancelBookingRequest>,
    ) -> Result<Response<v1::CancelBookingResponse>, Status> {
        let user_id = auth::acting_user(&request, &request.get_ref().user_id)?;
        let command = cancel_command(request.into_inner(), user_id).map_err(Error::InvalidInput)?;
        self.cancel(command).await
    }

    /// The operator's refund: the admin scope only.
    async fn refund_booking(
        &self,
        request: Request<v1::RefundBookingRequest>,
    ) -> Result<Response<v1::CancelBookingResponse>, Status> {
        auth::require_admin(&request)?;
        let command = refund_command(request.into_inner()).map_err(Error::InvalidInput)?;
        self.cancel(command).await
    }

    async fn reconcile(
        &self,
        request: Request<v1::ReconcileRequest>,
    ) -> Result<Response<v1::ReconcileReport>, Status> {
        auth::require_admin(&request)?;
        let report = self.reconciler.run(request.into_inner().dry_run).await?;
        Ok(Response::new(report))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test code: a panic is a failed test

    use super::*;

    #[test]
    fn idempotency_keys_are_checked() {
        assert!(idempotency_key("abcd-123_X").is_ok());
        assert!(idempotency_key(&"k".repeat(128)).is_ok());
        for bad in ["", "short", "has space!", "ключ-ключ-ключ", &"k".repeat(129)] {
            assert!(idempotency_key(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn refund_reasons_are_one_to_two_hundred_characters() {
        let request = |reason: &str| v1::RefundBookingRequest {
            idempotency_key: "refund-0001".into(),
            booking_id: uuid::Uuid::now_v7().to_string(),
            reason: reason.into(),
        };
        assert!(refund_command(request("x")).is_ok());
        assert!(refund_command(request(&"é".repeat(200))).is_ok());
        for bad in ["", "   ", &"x".repeat(201)] {
            let status = refund_command(request(bad)).unwrap_err();
            assert!(status.message().starts_with("reason: must be 1-200 characters"), "{}", status.message());
        }
    }
}
