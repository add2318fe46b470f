//! The payment provider (PSP) behind a trait, and the sandbox provider the mesh runs with.
//!
//! The sandbox keeps its own ledger in `psp_ledger`, the way a real provider keeps its books:
//! a charge is keyed by the caller's idempotency key (our payment id), so a charge retried
//! after a timeout or crash returns the first charge instead of taking money twice.

use std::time::Duration;

use futures::future::BoxFuture;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, DbErr, Statement};
use uuid::Uuid;

use crate::commit::CommitGroups;

/// The longest a `pm_card_slow_<millis>` charge sleeps, so a test card cannot pin a task forever.
pub const MAX_SLOW_CARD: Duration = Duration::from_secs(60);

/// A payment method the sandbox understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaymentMethod {
    /// `pm_card_ok`: captured at once.
    CardOk,
    /// `pm_card_declined`: declined, nothing captured.
    CardDeclined,
    /// `pm_card_slow_<millis>`: captured after the delay (capped at [`MAX_SLOW_CARD`]).
    CardSlow(Duration),
}

impl PaymentMethod {
    /// Parses a method string; `None` for anything the provider would not accept.
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "pm_card_ok" => Some(Self::CardOk),
            "pm_card_declined" => Some(Self::CardDeclined),
            _ => {
                let millis = value.strip_prefix("pm_card_slow_")?;
                if millis.is_empty() || millis.len() > 9 || !millis.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                let millis: u64 = millis.parse().ok()?;
                Some(Self::CardSlow(Duration::from_millis(millis).min(MAX_SLOW_CARD)))
            }
        }
    }
}

/// What the provider answered to a charge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChargeOutcome {
    /// The money was taken.
    Captured { charge_id: String },
    /// The card was refused; nothing was taken.
    Declined { reason: String },
}

/// A charge as the provider's ledger shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerCharge {
    pub charge_id: String,
    pub amount_cents: i64,
    pub currency: String,
    /// `captured` or `refunded`.
    pub status: String,
}

/// Why a provider call failed: the outcome is unknown and must be settled later.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("the provider's ledger failed: {0}")]
    Ledger(#[from] DbErr),
    #[error("unsupported payment method {0:?}")]
    UnsupportedMethod(String),
    #[error("no charge {0} to refund")]
    UnknownCharge(String),
}

/// A payment provider. Implementations must be idempotent on `payment_id`.
pub trait PaymentGateway: Send + Sync + 'static {
    /// Charges `amount_cents`; `payment_id` is the provider-side idempotency key, so a
    /// retried charge returns the first one.
    fn charge<'a>(
        &'a self,
        payment_id: Uuid,
        amount_cents: i64,
        currency: &'a str,
        payment_method: &'a str,
    ) -> BoxFuture<'a, Result<ChargeOutcome, GatewayError>>;

    /// Refunds a captured charge in full; refunding twice is harmless. Returns the refund id.
    fn refund<'a>(&'a self, charge_id: &'a str) -> BoxFuture<'a, Result<String, GatewayError>>;

    /// The charge made for `payment_id`, if any: how recovery learns what really happened.
    fn lookup(&self, payment_id: Uuid) -> BoxFuture<'_, Result<Option<LedgerCharge>, GatewayError>>;
}

/// The sandbox provider, keeping its ledger in `psp_ledger`.
#[derive(Clone)]
pub struct SandboxGateway {
    db: DatabaseConnection,
    /// Charges commit in shared transactions, as a real provider's ledger would batch them.
    writes: CommitGroups,
}

impl SandboxGateway {
    /// A sandbox provider on the service's database, committing charges through `writes`.
    pub fn new(db: DatabaseConnection, writes: CommitGroups) -> Self {
        Self { db, writes }
    }

    async fn find(&self, payment_id: Uuid) -> Result<Option<LedgerCharge>, GatewayError> {
        let row = self
            .db
            .query_one_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "SELECT charge_id, amount_cents, currency, status FROM psp_ledger WHERE idempotency_key = $1",
                [payment_id.to_string().into()],
            ))
            .await?;
        row.map(|row| {
            Ok(LedgerCharge {
                charge_id: row.try_get("", "charge_id")?,
                amount_cents: row.try_get("", "amount_cents")?,
                currency: row.try_get("", "currency")?,
                status: row.try_get("", "status")?,
            })
        })
        .transpose()
    }
}

impl PaymentGateway for SandboxGateway {
    fn charge<'a>(
        &'a self,
        payment_id: Uuid,
        amount_cents: i64,
        currency: &'a str,
        payment_method: &'a str,
    ) -> BoxFuture<'a, Result<ChargeOutcome, GatewayError>> {
        Box::pin(async move {
            let method = PaymentMethod::parse(payment_method)
                .ok_or_else(|| GatewayError::UnsupportedMethod(payment_method.to_owned()))?;
            match method {
                PaymentMethod::CardDeclined => {
                    return Ok(ChargeOutcome::Declined { reason: "card declined".to_owned() });
                }
                PaymentMethod::CardSlow(delay) => tokio::time::sleep(delay).await,
                PaymentMethod::CardOk => {}
            }
            // One statement: take the charge, or find the one an earlier call took. (A call
            // racing another for the same payment id finds nothing and fails; the payment then
            // stays `processing` for recovery. Checkout never charges one payment twice at once.)
            let row = self
                .writes
                .query_one(Statement::from_sql_and_values(
                    DbBackend::Postgres,
                    "WITH taken AS (INSERT INTO psp_ledger (charge_id, idempotency_key, amount_cents, currency, status) \
                     VALUES ($1, $2, $3, $4, 'captured') ON CONFLICT (idempotency_key) DO NOTHING RETURNING charge_id) \
                     SELECT charge_id FROM taken UNION ALL \
                     SELECT charge_id FROM psp_ledger WHERE idempotency_key = $2 AND NOT EXISTS (SELECT 1 FROM taken)",
                    [
                        format!("ch_{}", Uuid::new_v4().simple()).into(),
                        payment_id.to_string().into(),
                        amount_cents.into(),
                        currency.into(),
                    ],
                ))
                .await?
                .ok_or_else(|| GatewayError::Ledger(DbErr::RecordNotFound(format!("charge for {payment_id}"))))?;
            // Whether this call or an earlier one made it, the first charge is the answer.
            Ok(ChargeOutcome::Captured { charge_id: row.try_get("", "charge_id")? })
        })
    }

    fn refund<'a>(&'a self, charge_id: &'a str) -> BoxFuture<'a, Result<String, GatewayError>> {
        Box::pin(async move {
            let refund_id = format!("re_{}", Uuid::new_v4().simple());
            let row = self
                .db
                .query_one_raw(Statement::from_sql_and_values(
                    DbBackend::Postgres,
                    "UPDATE psp_ledger SET status = 'refunded', refund_id = COALESCE(refund_id, $2) \
                     WHERE charge_id = $1 RETURNING refund_id",
                    [charge_id.into(), refund_id.into()],
                ))
                .await?
                .ok_or_else(|| GatewayError::UnknownCharge(charge_id.to_owned()))?;
            Ok(row.try_get("", "refund_id")?)
        })
    }

    fn lookup(&self, payment_id: Uuid) -> BoxFuture<'_, Result<Option<LedgerCharge>, GatewayError>> {
        Box::pin(self.find(payment_id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_sandbox_methods() {
        assert_eq!(PaymentMethod::parse("pm_card_ok"), Some(PaymentMethod::CardOk));
        assert_eq!(PaymentMethod::parse("pm_card_declined"), Some(PaymentMethod::CardDeclined));
        assert_eq!(
            PaymentMethod::parse("pm_card_slow_250"),
            Some(PaymentMethod::CardSlow(Duration::from_millis(250)))
        );
        assert_eq!(
            PaymentMethod::parse("pm_card_slow_999999999"),
            Some(PaymentMethod::CardSlow(MAX_SLOW_CARD))
        );
        for bad in
            ["", "pm_card_slow_", "pm_card_slow_-1", "pm_card_slow_1x", "visa", "pm_card_slow_9999999999"]
        {
            assert_eq!(PaymentMethod::parse(bad), None, "{bad}");
        }
    }
}
