//! The payment provider (PSP) behind a trait: charges, refunds, and the ledger reads
//! recovery and reconciliation settle from.
//!
//! - [`sandbox`]: the provider the mesh runs with, its ledger in `psp_ledger`;
//! - [`timeout`]: the one layer every provider call goes through, so no call waits forever.
//!
//! A provider is idempotent on the caller's key (our payment id): a charge repeated after a
//! timeout or crash answers the first charge's current state instead of taking money twice.

pub mod sandbox;
pub mod timeout;

use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use sea_orm::DbErr;
use uuid::Uuid;

pub use sandbox::{PaymentMethod, SandboxGateway};
pub use timeout::TimeoutGateway;

/// What the provider answered to a charge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChargeOutcome {
    /// The money was taken.
    Captured { charge_id: String },
    /// The card was refused; nothing was taken.
    Declined { reason: String },
    /// Accepted but not final (an asynchronous method): it captures or fails later, and the
    /// ledger tells which.
    Pending { charge_id: String },
}

/// A charge's status in the provider's ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChargeStatus {
    Pending,
    Captured,
    Declined,
    Refunded,
    /// A status this code does not know (a provider may add some): never guessed at.
    Unrecognised(String),
}

impl ChargeStatus {
    /// Reads a provider's status string.
    pub fn parse(value: &str) -> Self {
        match value {
            "pending" => Self::Pending,
            "captured" => Self::Captured,
            "declined" => Self::Declined,
            "refunded" => Self::Refunded,
            other => Self::Unrecognised(other.to_owned()),
        }
    }

    /// The provider's string.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Pending => "pending",
            Self::Captured => "captured",
            Self::Declined => "declined",
            Self::Refunded => "refunded",
            Self::Unrecognised(other) => other,
        }
    }
}

/// A charge as the provider's ledger shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerCharge {
    pub charge_id: String,
    /// The caller's idempotency key: our payment id.
    pub idempotency_key: String,
    pub amount_cents: i64,
    pub currency: String,
    pub status: ChargeStatus,
    /// Why a declined charge was declined.
    pub decline_reason: Option<String>,
    /// Set once refunded.
    pub refund_id: Option<String>,
    pub created_at: DateTime<Utc>,
}

impl LedgerCharge {
    /// The payment this charge was made for, when its key is one of our payment ids.
    pub fn payment_id(&self) -> Option<Uuid> {
        Uuid::parse_str(&self.idempotency_key).ok()
    }

    /// Where a listing continues after this charge.
    pub fn cursor(&self) -> LedgerCursor {
        LedgerCursor { created_at: self.created_at, charge_id: self.charge_id.clone() }
    }
}

/// A position in the ledger's listing, which is ordered by `(created_at, charge_id)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerCursor {
    pub created_at: DateTime<Utc>,
    pub charge_id: String,
}

/// Why a provider call failed. For a charge the outcome is then unknown, and is settled
/// later from the ledger, never assumed.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("the provider's ledger failed: {0}")]
    Ledger(#[from] DbErr),
    #[error("unsupported payment method {0:?}")]
    UnsupportedMethod(String),
    #[error("no charge {0}")]
    UnknownCharge(String),
    /// A refund of a charge that is not captured (pending, declined, or unknown status).
    #[error("charge {charge_id} is {status}, not refundable")]
    NotRefundable { charge_id: String, status: String },
    /// A repeated charge whose first charge is in a state a charge cannot answer.
    #[error("charge {charge_id} for this key is already {status}")]
    ChargeAlready { charge_id: String, status: String },
    /// The provider did not answer within the configured timeout.
    #[error("the provider did not answer within {0:?}")]
    Timeout(Duration),
}

/// A payment provider. Implementations must be idempotent on `payment_id`.
pub trait PaymentGateway: Send + Sync + 'static {
    /// Charges `amount_cents`; `payment_id` is the provider-side idempotency key, so a
    /// retried charge answers the first one's current state.
    fn charge<'a>(
        &'a self,
        payment_id: Uuid,
        amount_cents: i64,
        currency: &'a str,
        payment_method: &'a str,
    ) -> BoxFuture<'a, Result<ChargeOutcome, GatewayError>>;

    /// Refunds a captured charge in full; refunding twice answers the same refund id.
    fn refund<'a>(&'a self, charge_id: &'a str) -> BoxFuture<'a, Result<String, GatewayError>>;

    /// The charge made for `payment_id`, if any: how recovery learns what really happened.
    fn lookup(&self, payment_id: Uuid) -> BoxFuture<'_, Result<Option<LedgerCharge>, GatewayError>>;

    /// The ledger's charges after `after` (from the start when `None`), oldest first, at
    /// most `limit`: the provider's report that reconciliation compares with the books.
    fn charges<'a>(
        &'a self,
        after: Option<&'a LedgerCursor>,
        limit: u32,
    ) -> BoxFuture<'a, Result<Vec<LedgerCharge>, GatewayError>>;
}
