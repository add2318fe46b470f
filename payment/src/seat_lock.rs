//! The seat-lock adapter: the two calls a Pay makes (BeginCheckout, ConfirmHold) and how
//! their answers are read: a definitive refusal, or seat-lock being unreachable (nothing
//! decided). Both go to seat-lock's internal listener, over mutual TLS with payment's
//! certificate.

use std::time::Duration;

use ticketing_proto::{
    internal::{self, seat_lock_internal_service_client::SeatLockInternalServiceClient},
    v1,
};
use tonic::{Code, Status, transport::Channel};
use uuid::Uuid;

/// Attempts at ConfirmHold when seat-lock is briefly unreachable; the money is already taken,
/// so a short retry beats leaving the payment to recovery.
const CONFIRM_ATTEMPTS: u32 = 4;
/// Pause before the first ConfirmHold retry; doubles each time.
const CONFIRM_RETRY_PAUSE: Duration = Duration::from_millis(200);

/// Told to the user when the hold was lost while the provider was charging.
pub const HOLD_LOST_REASON: &str = "hold expired before payment completed";

/// How seat-lock answered.
pub enum SeatLockAnswer {
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

/// Why a refund follows seat-lock's refusal to confirm a paid hold, in the user's words.
pub fn refusal_reason(status: &Status) -> String {
    match service_runtime::status::reason(status) {
        Some((reason, _)) if reason == "HOLD_EXPIRED" || reason == "HOLD_NOT_FOUND" => {
            HOLD_LOST_REASON.to_owned()
        }
        _ if status.code() == Code::NotFound => HOLD_LOST_REASON.to_owned(),
        _ => format!("seat-lock refused to confirm the hold: {}", status.message()),
    }
}

/// Seat-lock's internal API as a Pay uses it; cheap to clone.
#[derive(Clone)]
pub struct SeatLock {
    client: SeatLockInternalServiceClient<Channel>,
}

impl SeatLock {
    /// A client on `channel` (mutual TLS to seat-lock's internal listener; it carries the
    /// call timeout).
    pub fn new(channel: Channel) -> Self {
        Self { client: SeatLockInternalServiceClient::new(channel) }
    }

    /// Moves the hold into checkout (seat-lock extends it to cover the payment), or refuses.
    pub async fn begin_checkout(&self, event_id: Uuid, hold_id: Uuid, user_id: &str) -> SeatLockAnswer {
        classify(
            self.client
                .clone()
                .begin_checkout(traced(internal::BeginCheckoutRequest {
                    event_id: event_id.to_string(),
                    hold_id: hold_id.to_string(),
                    user_id: user_id.to_owned(),
                }))
                .await,
        )
    }

    /// Sells the hold under `booking_id`, with a few retries while seat-lock is unreachable.
    /// Seat-lock answers a replay under the same booking id with the sold hold.
    pub async fn confirm_hold(
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
                self.client
                    .clone()
                    .confirm_hold(traced(internal::ConfirmHoldRequest {
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
}

/// A request to seat-lock carrying the current trace context.
fn traced<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    service_runtime::telemetry::inject_grpc(&mut request);
    request
}
