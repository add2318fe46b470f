//! `SeatLockInternalService` (package `ticketing.internal.v1`), payment's steps of a sale:
//! - `BeginCheckout`: the hold enters checkout and is extended to cover the payment;
//! - `ConfirmHold`: the paid hold becomes sold seats, under the booking id;
//! - `ReturnSeats`: payment's seat-return outbox gives a cancelled booking's seats back.
//!
//! Served only on the internal listener (`INTERNAL_GRPC_ADDR`, mutual TLS): the handshake
//! requires a certificate of the mesh CA, and every RPC first checks that the certificate is
//! payment's ([`CALLERS`]); any other service gets PERMISSION_DENIED. The public listener,
//! the one behind the load balancer, does not serve this service at all.

use std::collections::HashSet;

use service_runtime::{mtls::require_peer, status::quote};
use ticketing_proto::{
    internal::{
        BeginCheckoutRequest, ConfirmHoldRequest, ReturnSeatsRequest, ReturnSeatsResponse,
        seat_lock_internal_service_server::SeatLockInternalService as SeatLockInternalRpc,
    },
    v1::Hold,
};
use tonic::{Request, Response, Status};

use crate::{
    catalogue::Layout,
    error::Error,
    service::{SeatLockService, valid_booking, valid_user},
    store::{ReturnOutcome, SeatReturn},
};

/// The services that may call these RPCs: payment owns checkout, confirmation and returns.
pub const CALLERS: &[&str] = &["payment"];

/// The internal service; shares the public one's catalogue, store and rebuild.
#[derive(Clone)]
pub struct SeatLockInternal {
    service: SeatLockService,
}

impl SeatLockInternal {
    /// The internal RPCs over `service`'s state.
    pub fn new(service: SeatLockService) -> Self {
        Self { service }
    }

    async fn begin_checkout(&self, request: &BeginCheckoutRequest) -> Result<Hold, Error> {
        let service = &self.service;
        let (layout, user_id) =
            service.hold_ref(&request.event_id, &request.hold_id, &request.user_id).await?;
        let grace = service.checkout_grace();
        let store = service.store();
        let hold = service
            .with_state(&layout, || store.checkout(&request.event_id, &request.hold_id, user_id, grace))
            .await?;
        Ok(service.answer(&layout, &request.event_id, hold))
    }

    async fn confirm_hold(&self, request: &ConfirmHoldRequest) -> Result<Hold, Error> {
        let service = &self.service;
        let (layout, user_id) =
            service.hold_ref(&request.event_id, &request.hold_id, &request.user_id).await?;
        let booking_id = valid_booking(&request.booking_id)?;
        let store = service.store();
        let hold = service
            .with_state(&layout, || store.confirm(&request.event_id, &request.hold_id, user_id, booking_id))
            .await?;
        metrics::counter!("seat_lock_sold_seats_total", &layout.zone_labels(&hold.zone_id))
            .increment(u64::from(hold.quantity));
        Ok(service.answer(&layout, &request.event_id, hold))
    }

    async fn return_seats(&self, request: &ReturnSeatsRequest) -> Result<bool, Error> {
        let booking_id = valid_booking(&request.booking_id)?;
        let user_id = valid_user(&request.user_id)?;
        service_runtime::status::uuid("hold_id", &request.hold_id)
            .map_err(|s| Error::InvalidArgument(Box::new(s)))?;
        let layout = self.service.layout(&request.event_id).await?;
        check_places(&layout, request)?;
        let seats = SeatReturn {
            booking_id,
            hold_id: &request.hold_id,
            user_id,
            zone_id: &request.zone_id,
            quantity: request.quantity,
            seat_ids: &request.seat_ids,
        };
        let store = self.service.store();
        let outcome =
            self.service.with_state(&layout, || store.return_seats(&request.event_id, &seats)).await?;
        let (event_id, hold_id) = (&request.event_id, &request.hold_id);
        match &outcome {
            ReturnOutcome::Returned => {
                tracing::info!(%event_id, %hold_id, %booking_id, quantity = request.quantity, "sold seats returned to sale");
                metrics::counter!("seat_lock_returned_seats_total").increment(u64::from(request.quantity));
            }
            ReturnOutcome::AlreadyReturned => {
                tracing::debug!(%event_id, %hold_id, %booking_id, "seats already returned (replay)");
            }
            ReturnOutcome::Announced => tracing::warn!(
                %event_id, %hold_id, %booking_id,
                "hold unknown here (Redis rebuilt without it): nothing to return, release announced"
            ),
            ReturnOutcome::NotSold(why) => {
                tracing::warn!(%event_id, %hold_id, %booking_id, %why, "seats not returned: not sold under this booking");
            }
        }
        Ok(outcome == ReturnOutcome::Returned)
    }
}

/// The zone is the event's; a seated zone names 1 to the per-user limit distinct seats of
/// it, as many as `quantity`; a general-admission zone names none and 1 to the limit places.
fn check_places(layout: &Layout, request: &ReturnSeatsRequest) -> Result<(), Error> {
    if request.zone_id.is_empty() {
        return Err(Error::invalid("zone_id", "is required"));
    }
    let zone = layout.zone(&request.zone_id).ok_or_else(|| {
        Error::invalid("zone_id", format!("{} is not a zone of this event", quote(&request.zone_id)))
    })?;
    let max = layout.max_tickets_per_user;
    if request.quantity == 0 || request.quantity > max {
        return Err(Error::invalid("quantity", format!("must be 1 to {max}, got {}", request.quantity)));
    }
    if !zone.seated {
        if let Some(seat_id) = request.seat_ids.first() {
            return Err(Error::invalid(
                "seat_ids",
                format!("must be empty for general-admission zone {}, got {}", zone.zone_id, quote(seat_id)),
            ));
        }
        return Ok(());
    }
    if request.seat_ids.len() != request.quantity as usize {
        return Err(Error::invalid(
            "seat_ids",
            format!("must list quantity ({}) seats, got {}", request.quantity, request.seat_ids.len()),
        ));
    }
    let mut seen = HashSet::new();
    for seat_id in &request.seat_ids {
        if !seen.insert(seat_id.as_str()) {
            return Err(Error::invalid("seat_ids", format!("{} is listed twice", quote(seat_id))));
        }
        if layout.zone_of_seat(seat_id).is_none_or(|of| of.zone_id != zone.zone_id) {
            return Err(Error::invalid(
                "seat_ids",
                format!("{} is not a seat of zone {}", quote(seat_id), zone.zone_id),
            ));
        }
    }
    Ok(())
}

#[tonic::async_trait]
impl SeatLockInternalRpc for SeatLockInternal {
    async fn begin_checkout(&self, request: Request<BeginCheckoutRequest>) -> Result<Response<Hold>, Status> {
        require_peer(&request, CALLERS)?;
        Ok(Response::new(SeatLockInternal::begin_checkout(self, request.get_ref()).await?))
    }

    async fn confirm_hold(&self, request: Request<ConfirmHoldRequest>) -> Result<Response<Hold>, Status> {
        require_peer(&request, CALLERS)?;
        Ok(Response::new(SeatLockInternal::confirm_hold(self, request.get_ref()).await?))
    }

    async fn return_seats(
        &self,
        request: Request<ReturnSeatsRequest>,
    ) -> Result<Response<ReturnSeatsResponse>, Status> {
        require_peer(&request, CALLERS)?;
        let returned = SeatLockInternal::return_seats(self, request.get_ref()).await?;
        Ok(Response::new(ReturnSeatsResponse { returned }))
    }
}
