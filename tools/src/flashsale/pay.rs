//! Paying as a real client does: the same idempotency key on every retry until a final
//! answer (a replay never charges twice, so retrying an unknown outcome is safe), a payment
//! not final yet (PENDING, PROCESSING, REFUNDING) asked again with GetPayment, and the
//! notification stream reopened after the last notification seen when it breaks.

use std::time::{Duration, Instant};

use ticketing_proto::v1::{
    self as pb, notifier_service_client::NotifierServiceClient, payment_service_client::PaymentServiceClient,
};
use tokio_stream::StreamExt;
use tonic::{Code, Status, Streaming, transport::Channel};

use super::{
    ctx::Ctx,
    retry::{Retry, backoff, brief, call, timed},
    stats::Rpc,
};
use crate::{grpc::reason, identity::Bearer};

/// How long a user keeps at one payment (retries while it is in flight or its outcome is
/// unknown, then waits for a final state) before giving up; longer than the slowest sandbox
/// card (60 s) plus a restart of payment.
const PAY_PATIENCE: Duration = Duration::from_secs(150);
/// How often a payment that is not final yet is asked again.
const PAYMENT_POLL: Duration = Duration::from_millis(500);
/// How long a user waits for a notification after paying, reopening the stream as needed.
const NOTIFY_PATIENCE: Duration = Duration::from_secs(60);

/// How a payment ended for the user.
#[derive(Debug, Clone)]
pub enum Paid {
    /// A final answer: CONFIRMED, DECLINED or REFUNDED.
    Final(Box<pb::PayResponse>),
    /// Seat-lock no longer had the hold (NOT_FOUND, or FAILED_PRECONDITION `HOLD_EXPIRED`)
    /// when payment began the checkout, so no money moved.
    HoldLost(Status),
}

impl Paid {
    /// What two answers to one key must agree on: the payment, its status, its booking.
    pub fn summary(&self) -> String {
        match self {
            Paid::Final(answer) => {
                let payment = answer.payment.clone().unwrap_or_default();
                let booking =
                    answer.booking.as_ref().map_or(payment.booking_id.clone(), |b| b.booking_id.clone());
                format!("payment {} {:?} booking {booking:?}", payment.payment_id, payment.status())
            }
            Paid::HoldLost(status) => format!("hold lost: {}", brief(status)),
        }
    }
}

/// The status of an answer.
pub fn status_of(answer: &pb::PayResponse) -> pb::PaymentStatus {
    answer.payment.as_ref().map(|p| p.status()).unwrap_or_default()
}

fn is_final(status: pb::PaymentStatus) -> bool {
    matches!(status, pb::PaymentStatus::Confirmed | pb::PaymentStatus::Declined | pb::PaymentStatus::Refunded)
}

/// Whether seat-lock no longer has the hold: NOT_FOUND, or FAILED_PRECONDITION `HOLD_EXPIRED`.
pub fn hold_lost(status: &Status) -> bool {
    status.code() == Code::NotFound
        || (status.code() == Code::FailedPrecondition && reason(status) == "HOLD_EXPIRED")
}

/// Pays: the same request again while the first is in flight (ABORTED `REQUEST_IN_FLIGHT`),
/// not served or of unknown outcome; then, if the answer is not final, GetPayment until it is.
pub async fn pay(
    ctx: &Ctx,
    channel: &Channel,
    token: &Bearer,
    request: pb::PayRequest,
) -> anyhow::Result<Paid> {
    let mut payment = PaymentServiceClient::new(channel.clone());
    let deadline = Instant::now() + PAY_PATIENCE;
    let mut attempt = 0;
    let answer = loop {
        match timed(&ctx.stats, Rpc::Pay, payment.pay(token.request(request.clone()))).await {
            Ok(answer) => break answer,
            Err(status)
                if Instant::now() < deadline
                    && (status.code() == Code::Aborted || Retry::Idempotent.applies(&status)) =>
            {
                attempt += 1;
                backoff(attempt).await;
            }
            Err(status) if hold_lost(&status) => return Ok(Paid::HoldLost(status)),
            Err(status) => anyhow::bail!("Pay {} refused: {}", request.idempotency_key, brief(&status)),
        }
    };
    if is_final(status_of(&answer)) {
        return Ok(Paid::Final(Box::new(answer)));
    }
    let payment_id = answer.payment.as_ref().map(|p| p.payment_id.clone()).unwrap_or_default();
    let get = pb::GetPaymentRequest { payment_id, user_id: request.user_id.clone() };
    loop {
        let current = call(&ctx.stats, Rpc::GetPayment, Retry::Idempotent, || {
            let (mut payment, get) = (payment.clone(), token.request(get.clone()));
            async move { payment.get_payment(get).await }
        })
        .await
        .map_err(|status| anyhow::anyhow!("GetPayment {}: {}", get.payment_id, brief(&status)))?;
        if is_final(current.status()) {
            return Ok(Paid::Final(Box::new(pb::PayResponse { payment: Some(current), ..answer })));
        }
        if Instant::now() > deadline {
            anyhow::bail!("payment {} still {:?} after {PAY_PATIENCE:?}", get.payment_id, current.status());
        }
        tokio::time::sleep(PAYMENT_POLL).await;
    }
}

/// A user's notification stream, resumable after the last notification seen.
pub struct Confirmation {
    notifier: NotifierServiceClient<Channel>,
    user_id: String,
    token: Bearer,
    stream: Option<Streaming<pb::Notification>>,
    last_id: u64,
}

impl Confirmation {
    /// Opens the stream (before paying, so the notification cannot slip past).
    pub async fn subscribe(
        ctx: &Ctx,
        channel: &Channel,
        user_id: &str,
        token: &Bearer,
    ) -> anyhow::Result<Self> {
        let mut confirmation = Self {
            notifier: NotifierServiceClient::new(channel.clone()),
            user_id: user_id.to_owned(),
            token: token.clone(),
            stream: None,
            last_id: 0,
        };
        confirmation.open(ctx).await.map_err(|status| anyhow::anyhow!("Subscribe: {}", brief(&status)))?;
        Ok(confirmation)
    }

    async fn open(&mut self, ctx: &Ctx) -> Result<(), Status> {
        let request = pb::SubscribeRequest { user_id: self.user_id.clone(), after_id: self.last_id };
        let stream = call(&ctx.stats, Rpc::Subscribe, Retry::Idempotent, || {
            let (mut notifier, request) = (self.notifier.clone(), self.token.request(request.clone()));
            async move { notifier.subscribe(request).await }
        })
        .await?;
        self.stream = Some(stream);
        Ok(())
    }

    /// Waits for a notification of `kind`, reopening the stream after the last id seen when
    /// it breaks (a notifier restart), for at most [`NOTIFY_PATIENCE`].
    pub async fn wait(&mut self, ctx: &Ctx, kind: pb::NotificationKind) -> anyhow::Result<()> {
        let waited = tokio::time::timeout(NOTIFY_PATIENCE, async {
            let mut attempt = 0;
            loop {
                let next = match self.stream.as_mut() {
                    Some(stream) => stream.next().await,
                    None => None,
                };
                match next {
                    Some(Ok(notification)) => {
                        self.last_id = self.last_id.max(notification.notification_id);
                        if notification.kind() == kind {
                            return Ok(());
                        }
                    }
                    // Broken or ended: resume after the last notification seen.
                    Some(Err(_)) | None => {
                        attempt += 1;
                        backoff(attempt).await;
                        self.open(ctx).await?;
                    }
                }
            }
        })
        .await;
        match waited {
            Ok(Ok(())) => Ok(()),
            Ok(Err(status)) => anyhow::bail!("Subscribe: {}", brief(&status)),
            Err(_) => anyhow::bail!("no {kind:?} notification within {NOTIFY_PATIENCE:?}"),
        }
    }
}
