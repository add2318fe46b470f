//! The sandbox provider, modelled on a real PSP whose ledger lives outside our process.
//!
//! Its ledger is `psp_ledger`. A charge writes its row when the call starts (`pending` with
//! `settles_at` for slow and asynchronous cards), so a call the caller abandoned, or a
//! process that crashed mid-call, still captures at `settles_at`, as a real provider's
//! would. Settlement is evaluated lazily: a due `pending` row becomes `captured` in the one
//! UPDATE of whoever reads it next (a lookup, a listing, a refund, a repeated charge).

use std::time::Duration;

use futures::future::BoxFuture;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbErr, QueryResult};
use uuid::Uuid;

use super::{ChargeOutcome, ChargeStatus, GatewayError, LedgerCharge, LedgerCursor, PaymentGateway};
use crate::{commit::CommitGroups, store::sql};

/// The longest delay a `pm_card_slow_<millis>` or `pm_card_async_<millis>` card accepts: far
/// beyond any hold TTL, so the case study's 12-minute charge can be played.
pub const MAX_CARD_DELAY: Duration = Duration::from_secs(24 * 3600);

/// Why a sandbox card is declined.
const DECLINE_REASON: &str = "card declined";

/// Ledger columns of [`LedgerCharge`], in `SELECT` order.
const LEDGER_COLUMNS: &str =
    "charge_id, idempotency_key, amount_cents, currency, status, decline_reason, refund_id, created_at";

/// A payment method the sandbox understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaymentMethod {
    /// `pm_card_ok`: captured at once.
    CardOk,
    /// `pm_card_declined`: declined, nothing captured.
    CardDeclined,
    /// `pm_card_slow_<millis>`: the call waits until the charge captures after the delay.
    CardSlow(Duration),
    /// `pm_card_async_<millis>`: the call answers `Pending` at once; the charge captures
    /// after the delay.
    CardAsync(Duration),
}

impl PaymentMethod {
    /// Parses a method string; `None` for anything the provider would not accept.
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "pm_card_ok" => Some(Self::CardOk),
            "pm_card_declined" => Some(Self::CardDeclined),
            _ => {
                if let Some(millis) = value.strip_prefix("pm_card_slow_") {
                    Some(Self::CardSlow(delay(millis)?))
                } else {
                    Some(Self::CardAsync(delay(value.strip_prefix("pm_card_async_")?)?))
                }
            }
        }
    }
}

/// A card's delay in milliseconds: 1-9 digits, capped at [`MAX_CARD_DELAY`].
fn delay(millis: &str) -> Option<Duration> {
    if millis.is_empty() || millis.len() > 9 || !millis.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(Duration::from_millis(millis.parse().ok()?).min(MAX_CARD_DELAY))
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

    /// The charge for `payment_id`, captured first if it was pending and is due.
    async fn find(&self, payment_id: Uuid) -> Result<Option<LedgerCharge>, GatewayError> {
        let row = self
            .db
            .query_one_raw(sql(
                &format!(
                    "WITH due AS (UPDATE psp_ledger SET status = 'captured' WHERE idempotency_key = $1 \
                     AND status = 'pending' AND settles_at <= now() RETURNING {LEDGER_COLUMNS}) \
                     SELECT {LEDGER_COLUMNS} FROM due UNION ALL SELECT {LEDGER_COLUMNS} FROM psp_ledger \
                     WHERE idempotency_key = $1 AND NOT EXISTS (SELECT 1 FROM due)"
                ),
                [payment_id.to_string().into()],
            ))
            .await?;
        Ok(row.as_ref().map(ledger_charge).transpose()?)
    }

    async fn charge_once(
        &self,
        payment_id: Uuid,
        amount_cents: i64,
        currency: &str,
        payment_method: &str,
    ) -> Result<ChargeOutcome, GatewayError> {
        let method = PaymentMethod::parse(payment_method)
            .ok_or_else(|| GatewayError::UnsupportedMethod(payment_method.to_owned()))?;
        let (status, settles_after, decline_reason) = match method {
            PaymentMethod::CardOk => ("captured", None, None),
            PaymentMethod::CardDeclined => ("declined", None, Some(DECLINE_REASON)),
            PaymentMethod::CardSlow(delay) | PaymentMethod::CardAsync(delay) => {
                ("pending", Some(delay.as_secs_f64()), None)
            }
        };
        // The row is written before anything else: from here on the provider has the charge,
        // whatever happens to this call.
        let inserted = self
            .writes
            .query_one(sql(
                "INSERT INTO psp_ledger (charge_id, idempotency_key, amount_cents, currency, status, settles_at, \
                 decline_reason) VALUES ($1, $2, $3, $4, $5, now() + make_interval(secs => $6), $7) \
                 ON CONFLICT (idempotency_key) DO NOTHING RETURNING charge_id",
                [
                    format!("ch_{}", Uuid::new_v4().simple()).into(),
                    payment_id.to_string().into(),
                    amount_cents.into(),
                    currency.into(),
                    status.into(),
                    settles_after.into(),
                    decline_reason.into(),
                ],
            ))
            .await?;
        let Some(row) = inserted else {
            // A repeated charge: the first one's current state, never a second charge.
            let charge = self
                .find(payment_id)
                .await?
                .ok_or_else(|| GatewayError::UnknownCharge(format!("for {payment_id}")))?;
            return outcome_of(charge);
        };
        let charge_id: String = row.try_get("", "charge_id")?;
        match method {
            PaymentMethod::CardOk => Ok(ChargeOutcome::Captured { charge_id }),
            PaymentMethod::CardDeclined => Ok(ChargeOutcome::Declined { reason: DECLINE_REASON.to_owned() }),
            PaymentMethod::CardAsync(_) => Ok(ChargeOutcome::Pending { charge_id }),
            PaymentMethod::CardSlow(delay) => {
                tokio::time::sleep(delay).await;
                let charge =
                    self.find(payment_id).await?.ok_or_else(|| GatewayError::UnknownCharge(charge_id))?;
                outcome_of(charge)
            }
        }
    }

    async fn refund_once(&self, charge_id: &str) -> Result<String, GatewayError> {
        // One statement on one connection: a due pending charge captures and refunds at once;
        // a refunded one answers its first refund id.
        let refunded = self
            .db
            .query_one_raw(sql(
                "UPDATE psp_ledger SET status = 'refunded', refund_id = COALESCE(refund_id, $2) \
                 WHERE charge_id = $1 AND (status IN ('captured', 'refunded') \
                 OR (status = 'pending' AND settles_at <= now())) RETURNING refund_id",
                [charge_id.into(), format!("re_{}", Uuid::new_v4().simple()).into()],
            ))
            .await?;
        if let Some(row) = refunded {
            return Ok(row.try_get("", "refund_id")?);
        }
        let status = self
            .db
            .query_one_raw(sql("SELECT status FROM psp_ledger WHERE charge_id = $1", [charge_id.into()]))
            .await?;
        match status {
            Some(row) => Err(GatewayError::NotRefundable {
                charge_id: charge_id.to_owned(),
                status: row.try_get("", "status")?,
            }),
            None => Err(GatewayError::UnknownCharge(charge_id.to_owned())),
        }
    }

    async fn list(
        &self,
        after: Option<&LedgerCursor>,
        limit: u32,
    ) -> Result<Vec<LedgerCharge>, GatewayError> {
        self.db
            .execute_raw(sql(
                "UPDATE psp_ledger SET status = 'captured' WHERE status = 'pending' AND settles_at <= now()",
                [],
            ))
            .await?;
        let rows = self
            .db
            .query_all_raw(sql(
                // The first page has no cursor: `-infinity` keeps one sargable predicate for
                // the listing index (an `IS NULL OR` would sort the whole ledger each page).
                &format!(
                    "SELECT {LEDGER_COLUMNS} FROM psp_ledger \
                     WHERE (created_at, charge_id) > (COALESCE($1::timestamptz, '-infinity'), COALESCE($2, '')) \
                     ORDER BY created_at, charge_id LIMIT $3"
                ),
                [
                    after.map(|cursor| cursor.created_at).into(),
                    after.map(|cursor| cursor.charge_id.clone()).into(),
                    i64::from(limit).into(),
                ],
            ))
            .await?;
        Ok(rows.iter().map(ledger_charge).collect::<Result<_, _>>()?)
    }
}

fn ledger_charge(row: &QueryResult) -> Result<LedgerCharge, DbErr> {
    Ok(LedgerCharge {
        charge_id: row.try_get("", "charge_id")?,
        idempotency_key: row.try_get("", "idempotency_key")?,
        amount_cents: row.try_get("", "amount_cents")?,
        currency: row.try_get("", "currency")?,
        status: ChargeStatus::parse(&row.try_get::<String>("", "status")?),
        decline_reason: row.try_get("", "decline_reason")?,
        refund_id: row.try_get("", "refund_id")?,
        created_at: row.try_get("", "created_at")?,
    })
}

/// What a charge call answers for a ledger row.
fn outcome_of(charge: LedgerCharge) -> Result<ChargeOutcome, GatewayError> {
    match charge.status {
        ChargeStatus::Captured => Ok(ChargeOutcome::Captured { charge_id: charge.charge_id }),
        ChargeStatus::Pending => Ok(ChargeOutcome::Pending { charge_id: charge.charge_id }),
        ChargeStatus::Declined => Ok(ChargeOutcome::Declined {
            reason: charge.decline_reason.unwrap_or_else(|| DECLINE_REASON.to_owned()),
        }),
        status @ (ChargeStatus::Refunded | ChargeStatus::Unrecognised(_)) => {
            Err(GatewayError::ChargeAlready {
                charge_id: charge.charge_id,
                status: status.as_str().to_owned(),
            })
        }
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
        Box::pin(self.charge_once(payment_id, amount_cents, currency, payment_method))
    }

    fn refund<'a>(&'a self, charge_id: &'a str) -> BoxFuture<'a, Result<String, GatewayError>> {
        Box::pin(self.refund_once(charge_id))
    }

    fn lookup(&self, payment_id: Uuid) -> BoxFuture<'_, Result<Option<LedgerCharge>, GatewayError>> {
        Box::pin(self.find(payment_id))
    }

    fn charges<'a>(
        &'a self,
        after: Option<&'a LedgerCursor>,
        limit: u32,
    ) -> BoxFuture<'a, Result<Vec<LedgerCharge>, GatewayError>> {
        Box::pin(self.list(after, limit))
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
            PaymentMethod::parse("pm_card_async_720000"),
            Some(PaymentMethod::CardAsync(Duration::from_secs(720)))
        );
        assert_eq!(
            PaymentMethod::parse("pm_card_slow_999999999"),
            Some(PaymentMethod::CardSlow(MAX_CARD_DELAY))
        );
        for bad in [
            "",
            "pm_card_slow_",
            "pm_card_async_",
            "pm_card_slow_-1",
            "pm_card_slow_1x",
            "visa",
            "pm_card_slow_9999999999",
            "pm_card_async_x",
        ] {
            assert_eq!(PaymentMethod::parse(bad), None, "{bad}");
        }
    }
}
