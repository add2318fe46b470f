//! `SeatLockService`: validates a request, checks the pass, then runs one store script,
//! rebuilding the event's Redis state from payment first when it is missing.
//!
//! The user-facing RPCs (HoldSeats, HoldBestAvailable, ReleaseHold, GetHold) act as the
//! caller's verified token subject ([`auth::acting_user`]): a `user_id` naming someone else is
//! `PERMISSION_DENIED` (`USER_MISMATCH`); a pass issued to another user is `PASS_WRONG_USER`;
//! another user's hold answers exactly as a missing one (`NOT_FOUND`, `HOLD_NOT_FOUND`); the
//! ticket limit counts per subject. A pass admission has ended (PassEnded, recorded by
//! [`crate::passes`]) is refused inside the hold script (`PASS_REVOKED`).

use std::{collections::BTreeMap, collections::HashSet, sync::Arc, time::Duration};

use service_runtime::{auth, bus::timestamp_ms, status};
use ticketing_proto::{
    internal::{ListSoldSeatsRequest, payment_internal_service_client::PaymentInternalServiceClient},
    pass::{PassClaims, PassError, PassVerifier},
    v1::{
        GetHoldRequest, Hold, HoldBestAvailableRequest, HoldSeatsRequest, HoldState as ProtoState,
        ReleaseHoldRequest, ReleaseHoldResponse, seat_lock_service_server::SeatLockService as SeatLockRpc,
    },
};
use tonic::{Request, Response, Status, transport::Channel};

use crate::{
    catalogue::{Catalogue, Layout},
    error::Error,
    store::{HoldState, NewHold, Outcome, Pick, SoldHold, Store, StoredHold},
};

/// Largest `ListSoldSeats` answer accepted for a rebuild: room for 200,000 seats (the most an
/// event may have) with their ids.
const SOLD_SEATS_MAX_BYTES: usize = 64 * 1024 * 1024;

/// Longest wait for payment's list of sold seats during a rebuild.
pub const PAYMENT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a request waits for another rebuild of its event to finish before answering
/// UNAVAILABLE; below the request timeout.
const REBUILD_WAIT: Duration = Duration::from_secs(3);

/// How often a waiting request looks again whether the rebuild finished.
const REBUILD_POLL: Duration = Duration::from_millis(25);

/// Longest accepted booking id (payment issues UUIDs; this only bounds storage).
const MAX_BOOKING_ID_LEN: usize = 128;
/// The longest pass token looked at: admission's are a few hundred bytes (claims with a
/// user id of at most 128 bytes, and a signature). A longer one is malformed input, not a
/// pass to verify.
const MAX_PASS_TOKEN_LEN: usize = 2048;

/// The service: shared by every request, cheap to clone.
#[derive(Clone)]
pub struct SeatLockService {
    catalogue: Catalogue,
    store: Store,
    /// Payment's internal service (mutual TLS), for the sold seats of a rebuild.
    payment: PaymentInternalServiceClient<Channel>,
    passes: Arc<PassVerifier>,
    hold_ttl: Duration,
    checkout_grace: Duration,
}

impl SeatLockService {
    /// A service over its collaborators.
    pub fn new(
        catalogue: Catalogue,
        store: Store,
        payment: Channel,
        passes: PassVerifier,
        hold_ttl: Duration,
        checkout_grace: Duration,
    ) -> Self {
        Self {
            catalogue,
            store,
            // A 50,000-seat event's sold seats exceed tonic's 4 MiB default.
            payment: PaymentInternalServiceClient::new(payment)
                .max_decoding_message_size(SOLD_SEATS_MAX_BYTES),
            passes: Arc::new(passes),
            hold_ttl,
            checkout_grace,
        }
    }

    /// The event's layout; on first use in this process also registers the event for the
    /// sweeper and relay.
    pub(crate) async fn layout(&self, event_id: &str) -> Result<Arc<Layout>, Error> {
        let parsed = status::uuid("event_id", event_id).map_err(|s| Error::InvalidArgument(Box::new(s)))?;
        // The id names the event's Redis keys: another spelling of the same UUID (upper case,
        // braces) would be another key space, where the same seats could be held again.
        if parsed.hyphenated().to_string() != event_id {
            return Err(Error::invalid("event_id", "must be a UUID in lowercase hyphenated form"));
        }
        let (layout, fresh) = self.catalogue.layout(event_id).await?;
        if fresh {
            self.store.remember_event(event_id).await?;
        }
        Ok(layout)
    }

    /// Runs `op`; when the event's state is missing, rebuilds it from payment and runs it again.
    /// A caller that finds another replica (or request) rebuilding waits for it, up to
    /// [`REBUILD_WAIT`], so the first second of a sale is not a wall of UNAVAILABLE.
    pub(crate) async fn with_state<T, F, Fut>(&self, layout: &Layout, op: F) -> Result<T, Error>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, Outcome>>,
    {
        let deadline = tokio::time::Instant::now() + REBUILD_WAIT;
        loop {
            match op().await {
                Ok(answer) => return Ok(answer),
                Err(Outcome::Failed(error)) => return Err(error),
                Err(Outcome::NotReady(_)) => {}
            }
            match self.rebuild(layout).await {
                Ok(()) => {}
                Err(Error::Rebuilding(event_id)) => {
                    if tokio::time::Instant::now() >= deadline {
                        return Err(Error::Rebuilding(event_id));
                    }
                    tokio::time::sleep(REBUILD_POLL).await;
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// Rebuilds the event's sold seats and counters from payment, the source of truth.
    /// One replica at a time (a short Redis lock); the others answer UNAVAILABLE meanwhile.
    async fn rebuild(&self, layout: &Layout) -> Result<(), Error> {
        let event_id = &layout.event_id;
        let token = uuid::Uuid::new_v4().to_string();
        if !self.store.lock_rebuild(event_id, &token).await? {
            return Err(Error::Rebuilding(event_id.clone()));
        }
        let result = self.rebuild_locked(layout).await;
        if let Err(error) = self.store.unlock_rebuild(event_id).await {
            tracing::warn!(%event_id, %error, "cannot release the rebuild lock; it expires by itself");
        }
        result
    }

    async fn rebuild_locked(&self, layout: &Layout) -> Result<(), Error> {
        let event_id = &layout.event_id;
        let mut request = Request::new(ListSoldSeatsRequest { event_id: event_id.clone() });
        request.set_timeout(PAYMENT_TIMEOUT);
        service_runtime::telemetry::inject_grpc(&mut request);
        let seats = self
            .payment
            .clone()
            .list_sold_seats(request)
            .await
            .map_err(|status| Error::PaymentUnavailable {
                event_id: event_id.clone(),
                status: Box::new(status),
            })?
            .into_inner()
            .seats;
        let mut sold: BTreeMap<String, SoldHold> = BTreeMap::new();
        for seat in seats {
            let hold = sold.entry(seat.hold_id).or_default();
            hold.user_id = seat.user_id;
            hold.zone_id = seat.zone_id;
            hold.booking_id = seat.booking_id;
            hold.quantity += 1;
            if !seat.seat_id.is_empty() {
                hold.seat_ids.push(seat.seat_id);
            }
        }
        let count = sold.len();
        if self.store.init(layout, &sold).await? {
            tracing::info!(%event_id, sold_holds = count, "event state initialised from payment");
            metrics::counter!("seat_lock_rebuilds_total").increment(1);
        }
        self.store.remember_event(event_id).await?;
        Ok(())
    }

    /// The Redis store.
    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    /// How far a checkout extends a hold.
    pub(crate) fn checkout_grace(&self) -> Duration {
        self.checkout_grace
    }

    /// The claims of a pass signed by admission for this event and user, not expired. Whether
    /// admission has ended it is checked by the hold script.
    fn check_pass(&self, token: &str, event_id: &str, user_id: &str) -> Result<PassClaims, Error> {
        if token.is_empty() {
            return Err(Error::invalid("pass_token", "is required"));
        }
        if token.len() > MAX_PASS_TOKEN_LEN {
            return Err(Error::invalid("pass_token", format!("must be at most {MAX_PASS_TOKEN_LEN} bytes")));
        }
        let claims = self.passes.verify(token).map_err(Error::Pass)?;
        claims.check(event_id, user_id, chrono::Utc::now().timestamp_millis()).map_err(Error::Pass)?;
        if claims.pass_id.is_empty() {
            return Err(Error::Pass(PassError::Malformed));
        }
        Ok(claims)
    }

    pub(crate) fn answer(&self, layout: &Layout, event_id: &str, hold: StoredHold) -> Hold {
        let state = match hold.state {
            HoldState::Held => ProtoState::Held,
            HoldState::Checkout => ProtoState::Checkout,
            HoldState::Sold => ProtoState::Sold,
            // The contract has no state of its own for a sale given back: it ended unsold now.
            HoldState::Released | HoldState::Returned => ProtoState::Released,
            HoldState::Expired => ProtoState::Expired,
        };
        Hold {
            hold_id: hold.hold_id,
            event_id: event_id.to_owned(),
            user_id: hold.user_id,
            zone_id: hold.zone_id,
            seat_ids: hold.seat_ids,
            quantity: hold.quantity,
            state: state as i32,
            expires_at: (hold.expires_at_ms > 0).then(|| timestamp_ms(hold.expires_at_ms)),
            total_price_cents: hold.total_price_cents,
            currency: layout.currency.clone(),
        }
    }

    async fn hold_seats(&self, user: &str, request: HoldSeatsRequest) -> Result<Hold, Error> {
        let user_id = valid_user(user)?;
        let layout = self.layout(&request.event_id).await?;
        let max = layout.max_tickets_per_user as usize;
        if request.seat_ids.is_empty() || request.seat_ids.len() > max {
            return Err(Error::invalid("seat_ids", format!("must list 1 to {max} seats")));
        }
        let mut seen = HashSet::new();
        let mut zone = None;
        for seat_id in &request.seat_ids {
            if !seen.insert(seat_id.as_str()) {
                return Err(Error::invalid(
                    "seat_ids",
                    format!("{} is listed twice", status::quote(seat_id)),
                ));
            }
            let seat_zone = layout.zone_of_seat(seat_id).ok_or_else(|| {
                Error::invalid("seat_ids", format!("{} is not a seat of this event", status::quote(seat_id)))
            })?;
            match zone {
                None => zone = Some(seat_zone),
                Some(first) if first.zone_id != seat_zone.zone_id => {
                    return Err(Error::invalid("seat_ids", "all seats must be in one zone"));
                }
                Some(_) => {}
            }
        }
        let zone = zone.ok_or_else(|| Error::invalid("seat_ids", "is required"))?;
        let pass = self.check_pass(&request.pass_token, &request.event_id, user_id)?;
        let new = NewHold {
            hold_id: uuid::Uuid::now_v7().to_string(),
            user_id,
            pass_id: &pass.pass_id,
            pass_expires_at_ms: pass.expires_at_ms,
            zone_id: &zone.zone_id,
            ttl: self.hold_ttl,
            price_cents: zone.price_cents,
            limit: layout.max_tickets_per_user,
        };
        let pick = Pick::Seats(&request.seat_ids);
        let hold = self.with_state(&layout, || self.store.hold(&request.event_id, &new, &pick)).await?;
        let labels = layout.zone_labels(&hold.zone_id);
        metrics::counter!("seat_lock_holds_total", &labels).increment(1);
        metrics::counter!("seat_lock_held_seats_total", &labels).increment(u64::from(hold.quantity));
        Ok(self.answer(&layout, &request.event_id, hold))
    }

    async fn hold_best(&self, user: &str, request: HoldBestAvailableRequest) -> Result<Hold, Error> {
        let user_id = valid_user(user)?;
        let layout = self.layout(&request.event_id).await?;
        if request.zone_id.is_empty() {
            return Err(Error::invalid("zone_id", "is required"));
        }
        let zone = layout.zone(&request.zone_id).ok_or_else(|| {
            Error::invalid(
                "zone_id",
                format!("{} is not a zone of this event", status::quote(&request.zone_id)),
            )
        })?;
        let max = layout.max_tickets_per_user;
        if request.quantity == 0 || request.quantity > max {
            return Err(Error::invalid("quantity", format!("must be 1 to {max}")));
        }
        let pass = self.check_pass(&request.pass_token, &request.event_id, user_id)?;
        let new = NewHold {
            hold_id: uuid::Uuid::now_v7().to_string(),
            user_id,
            pass_id: &pass.pass_id,
            pass_expires_at_ms: pass.expires_at_ms,
            zone_id: &zone.zone_id,
            ttl: self.hold_ttl,
            price_cents: zone.price_cents,
            limit: max,
        };
        let pick = Pick::Best {
            quantity: request.quantity,
            seated: zone.seated,
            allow_split: request.allow_split,
            seats_per_row: zone.seats_per_row,
            row_labels: &zone.row_labels,
        };
        let hold = self.with_state(&layout, || self.store.hold(&request.event_id, &new, &pick)).await?;
        let labels = layout.zone_labels(&hold.zone_id);
        metrics::counter!("seat_lock_holds_total", &labels).increment(1);
        metrics::counter!("seat_lock_held_seats_total", &labels).increment(u64::from(hold.quantity));
        Ok(self.answer(&layout, &request.event_id, hold))
    }

    /// The validated (event layout, hold id, user id) every per-hold RPC starts with.
    pub(crate) async fn hold_ref<'a>(
        &self,
        event_id: &str,
        hold_id: &str,
        user_id: &'a str,
    ) -> Result<(Arc<Layout>, &'a str), Error> {
        let user_id = valid_user(user_id)?;
        status::uuid("event_id", event_id).map_err(|s| Error::InvalidArgument(Box::new(s)))?;
        status::uuid("hold_id", hold_id).map_err(|s| Error::InvalidArgument(Box::new(s)))?;
        Ok((self.layout(event_id).await?, user_id))
    }
}

pub(crate) fn valid_user(user_id: &str) -> Result<&str, Error> {
    status::user_id(user_id).map_err(|s| Error::InvalidArgument(Box::new(s)))
}

/// Checks a booking id: payment issues UUIDs; any 1-[`MAX_BOOKING_ID_LEN`] of
/// `[A-Za-z0-9_-]` is stored as given.
pub(crate) fn valid_booking(booking_id: &str) -> Result<&str, Error> {
    let ok = !booking_id.is_empty()
        && booking_id.len() <= MAX_BOOKING_ID_LEN
        && booking_id.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-".contains(&b));
    if ok {
        Ok(booking_id)
    } else {
        Err(Error::invalid("booking_id", format!("must be 1-{MAX_BOOKING_ID_LEN} of [A-Za-z0-9_-]")))
    }
}

#[tonic::async_trait]
impl SeatLockRpc for SeatLockService {
    async fn hold_seats(&self, request: Request<HoldSeatsRequest>) -> Result<Response<Hold>, Status> {
        let user = auth::acting_user(&request, &request.get_ref().user_id)?;
        Ok(Response::new(SeatLockService::hold_seats(self, &user, request.into_inner()).await?))
    }

    async fn hold_best_available(
        &self,
        request: Request<HoldBestAvailableRequest>,
    ) -> Result<Response<Hold>, Status> {
        let user = auth::acting_user(&request, &request.get_ref().user_id)?;
        Ok(Response::new(self.hold_best(&user, request.into_inner()).await?))
    }

    async fn release_hold(
        &self,
        request: Request<ReleaseHoldRequest>,
    ) -> Result<Response<ReleaseHoldResponse>, Status> {
        let user = auth::acting_user(&request, &request.get_ref().user_id)?;
        let r = request.into_inner();
        let (layout, user_id) = self.hold_ref(&r.event_id, &r.hold_id, &user).await?;
        let hold = self.with_state(&layout, || self.store.release(&r.event_id, &r.hold_id, user_id)).await?;
        Ok(Response::new(ReleaseHoldResponse { hold: Some(self.answer(&layout, &r.event_id, hold)) }))
    }

    async fn get_hold(&self, request: Request<GetHoldRequest>) -> Result<Response<Hold>, Status> {
        let user = auth::acting_user(&request, &request.get_ref().user_id)?;
        let r = request.into_inner();
        let (layout, user_id) = self.hold_ref(&r.event_id, &r.hold_id, &user).await?;
        let hold = self.with_state(&layout, || self.store.get(&r.event_id, &r.hold_id, user_id)).await?;
        Ok(Response::new(self.answer(&layout, &r.event_id, hold)))
    }
}
