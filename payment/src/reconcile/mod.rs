//! Reconciliation: proves I2 against the provider's ledger, at any time.
//!
//! One run pages through every charge the provider lists and, page by page, reads what our
//! books say of those payments (status, live booking, refund); then it pages through our
//! payments that claim money moved but that the ledger did not list. The rules
//! ([`compare`]) name every charge without exactly one live booking or one refund, and every
//! live booking without a captured charge. Unless asked for a dry run, a finding is settled
//! where that is safe: an unsettled payment goes through recovery's state machine (which
//! re-drives the charge or refund with the same provider key, never assumes), a captured
//! charge nothing will ever book is refunded. What needs a person (amount mismatches,
//! bookings whose money is gone, statuses we do not know) is reported and stays unsettled.
//!
//! Runs in the service every `RECONCILE_INTERVAL_SECS`, on demand through the `Reconcile`
//! RPC, and from the `payment-reconcile` command. Each run is recorded in
//! `reconciliation_runs`; `payment_unreconciled_charges` is what the last run left
//! unsettled and `payment_reconciliation_seconds_since_clean` the time since a run left
//! nothing.

pub mod compare;

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use chrono::Utc;
use sea_orm::{ConnectionTrait, DatabaseConnection, QueryResult};
use ticketing_proto::v1;
use uuid::Uuid;

use self::compare::{Action, BookView, Finding, LedgerEntry, check_charge, check_uncharged};
use ticketing_proto::v1::DiscrepancyKind;
use tokio::sync::Mutex;

use crate::{
    checkout::Checkout,
    error::Error,
    gateway::{LedgerCharge, LedgerCursor},
    recovery::Recovered,
    refund::{RefundOrder, RequestedBy},
    store::{self, PaymentStatus, sql, timestamp},
};

/// Charges read from the provider per call, and payments read from Postgres per query:
/// bounds one run's memory to a page plus the set of charged payment ids.
pub const PAGE: u32 = 500;
/// Discrepancies carried in one report; the count of unsettled ones is always complete.
pub const MAX_REPORTED: usize = 1_000;

/// Our books' view of a payment, in `SELECT` order for [`BookView`].
const BOOK_COLUMNS: &str = "p.payment_id, p.status, p.amount_cents, p.currency, p.updated_at, \
     b.booking_id AS live_booking, \
     COALESCE(r.state, CASE WHEN p.status = 'refunded' THEN 'refunded' END) AS refund \
     FROM payments p \
     LEFT JOIN bookings b ON b.payment_id = p.payment_id AND b.status <> 'cancelled' \
     LEFT JOIN refunds r ON r.payment_id = p.payment_id";

fn book_from_row(row: &QueryResult) -> Result<BookView, sea_orm::DbErr> {
    Ok(BookView {
        payment_id: row.try_get("", "payment_id")?,
        status: row.try_get("", "status")?,
        amount_cents: row.try_get("", "amount_cents")?,
        currency: row.try_get("", "currency")?,
        live_booking: row.try_get("", "live_booking")?,
        refund: row.try_get("", "refund")?,
        updated_at: row.try_get("", "updated_at")?,
    })
}

/// Compares the provider's ledger with payments, bookings and refunds.
pub struct Reconciler {
    db: DatabaseConnection,
    /// Settles through checkout's gateway (its timeout layer), recovery and refunds.
    checkout: Arc<Checkout>,
    /// A payment that changed state more recently than this is still being settled by its
    /// request or by recovery, and is not a discrepancy yet.
    grace: Duration,
    /// One run at a time per process: the periodic run and an operator's overlap otherwise
    /// (runs on several replicas are safe, every settlement being a conditional step).
    running: Mutex<()>,
}

impl Reconciler {
    /// A reconciler that leaves payments changed within `grace` to their request and recovery.
    pub fn new(db: DatabaseConnection, checkout: Arc<Checkout>, grace: Duration) -> Self {
        Self { db, checkout, grace, running: Mutex::new(()) }
    }

    /// One full run. With `dry_run` nothing is settled or recorded.
    pub async fn run(&self, dry_run: bool) -> Result<v1::ReconcileReport, Error> {
        let _one_at_a_time = self.running.lock().await;
        let started_at = Utc::now();
        let settled_before =
            started_at - chrono::Duration::from_std(self.grace).unwrap_or_else(|_| chrono::Duration::days(1));
        let mut run = Run::default();

        let mut charged: HashSet<Uuid> = HashSet::new();
        let mut after: Option<LedgerCursor> = None;
        loop {
            let page = self.checkout.gateway.charges(after.as_ref(), PAGE).await?;
            let Some(last) = page.last() else { break };
            after = Some(last.cursor());
            let page: Vec<LedgerEntry> = page.iter().map(LedgerEntry::from).collect();
            let ids: Vec<Uuid> = page.iter().filter_map(|charge| charge.payment_id).collect();
            let books = self.books_of(&ids).await?;
            for charge in &page {
                charged.extend(charge.payment_id);
                run.charges_checked += 1;
                let book = charge.payment_id.and_then(|id| books.get(&id));
                if let Some(finding) = check_charge(charge, book, settled_before) {
                    self.record(&mut run, finding, Some(charge), dry_run).await;
                }
            }
            if page.len() < PAGE as usize {
                break;
            }
        }

        let mut after = Uuid::nil();
        loop {
            let rows = self
                .db
                .query_all_raw(sql(
                    &format!(
                        "SELECT {BOOK_COLUMNS} WHERE p.payment_id > $1 AND p.status <> 'declined' \
                         ORDER BY p.payment_id LIMIT $2"
                    ),
                    [after.into(), i64::from(PAGE).into()],
                ))
                .await?;
            for row in &rows {
                let book = book_from_row(row)?;
                after = book.payment_id;
                run.payments_checked += 1;
                if charged.contains(&book.payment_id) {
                    continue;
                }
                if let Some(finding) = check_uncharged(&book, settled_before) {
                    self.record(&mut run, finding, None, dry_run).await;
                }
            }
            if rows.len() < PAGE as usize {
                break;
            }
        }

        let report = run.into_report();
        metrics::gauge!("payment_unreconciled_charges").set(report.unsettled as f64);
        if !dry_run {
            self.db
                .execute_raw(sql(
                    "INSERT INTO reconciliation_runs (started_at, charges_checked, discrepancies, unsettled) \
                     VALUES ($1, $2, $3, $4)",
                    [
                        started_at.into(),
                        i64::try_from(report.charges_checked).unwrap_or(i64::MAX).into(),
                        i32::try_from(report.discrepancies.len()).unwrap_or(i32::MAX).into(),
                        i32::try_from(report.unsettled).unwrap_or(i32::MAX).into(),
                    ],
                ))
                .await?;
            self.publish_since_clean().await?;
        }
        Ok(report)
    }

    /// Sets `payment_reconciliation_seconds_since_clean` from the last recorded run that left
    /// nothing unsettled (across restarts and replicas); `-1` before the first clean run.
    pub async fn publish_since_clean(&self) -> Result<(), Error> {
        let row = self
            .db
            .query_one_raw(sql(
                "SELECT EXTRACT(EPOCH FROM now() - max(finished_at))::float8 AS since \
                 FROM reconciliation_runs WHERE unsettled = 0",
                [],
            ))
            .await?;
        let since: Option<f64> = row.map(|row| row.try_get("", "since")).transpose()?.flatten();
        metrics::gauge!("payment_reconciliation_seconds_since_clean").set(since.unwrap_or(-1.0));
        Ok(())
    }

    /// Our books for the payments `ids`, by payment id.
    async fn books_of(&self, ids: &[Uuid]) -> Result<HashMap<Uuid, BookView>, Error> {
        let rows = self
            .db
            .query_all_raw(sql(
                &format!("SELECT {BOOK_COLUMNS} WHERE p.payment_id = ANY($1)"),
                [ids.to_vec().into()],
            ))
            .await?;
        rows.iter()
            .map(|row| book_from_row(row).map(|book| (book.payment_id, book)))
            .collect::<Result<_, _>>()
            .map_err(Error::from)
    }

    /// Settles `finding` unless `dry_run` or it needs a person, and adds it to the run.
    async fn record(&self, run: &mut Run, finding: Finding, charge: Option<&LedgerEntry>, dry_run: bool) {
        let settled = if dry_run {
            false
        } else {
            match self.settle(&finding, charge).await {
                Ok(settled) => settled,
                Err(error) => {
                    tracing::error!(payment_id = %finding.payment_id, error = %format!("{error:#}"),
                        "reconciliation could not settle a discrepancy");
                    false
                }
            }
        };
        tracing::warn!(payment_id = %finding.payment_id, kind = finding.kind.as_str_name(),
            detail = %finding.detail, settled, "reconciliation discrepancy");
        run.add(finding, settled);
    }

    /// Carries out the finding's action; true when the payment reached a final state.
    async fn settle(&self, finding: &Finding, charge: Option<&LedgerEntry>) -> Result<bool, Error> {
        match (finding.action, charge) {
            (Action::Report, _) | (Action::Refund, None) => Ok(false),
            (Action::Recover, _) => {
                let Some(payment) = store::payment(&self.db, finding.payment_id).await? else {
                    return Ok(false);
                };
                Ok(self.checkout.recover_payment(payment).await? == Recovered::Settled)
            }
            (Action::Refund, Some(charge)) => self.refund_unbooked(finding, charge).await,
        }
    }

    /// Refunds a captured charge that no booking will ever use. Where our books already say
    /// refunded (or know no such payment), only the provider's refund is missing; where they
    /// say the payment ended otherwise (declined by an old version's recovery that assumed
    /// "no charge"), the capture is recorded first and the refund goes through the refund
    /// state machine, so the user is told and the key's answer becomes the truth.
    async fn refund_unbooked(&self, finding: &Finding, charge: &LedgerEntry) -> Result<bool, Error> {
        if finding.kind == DiscrepancyKind::RefundMismatch || charge.payment_id.is_none() {
            self.checkout.gateway.refund(&charge.charge_id).await?;
            metrics::counter!("payment_refunds_total").increment(1);
            return Ok(true);
        }
        let recorded = self
            .db
            .execute_raw(sql(
                "UPDATE payments SET status = 'captured', provider_charge_id = $2, updated_at = now() \
                 WHERE payment_id = $1 AND status IN ('declined', 'confirmed', 'refunded') \
                 AND NOT EXISTS (SELECT 1 FROM bookings b WHERE b.payment_id = $1 AND b.status <> 'cancelled') \
                 AND NOT EXISTS (SELECT 1 FROM refunds r WHERE r.payment_id = $1)",
                [finding.payment_id.into(), charge.charge_id.as_str().into()],
            ))
            .await?
            .rows_affected();
        if recorded == 0 {
            return Ok(false);
        }
        let order = RefundOrder {
            payment_id: finding.payment_id,
            booking_id: None,
            reason: "the provider captured this charge after it was settled without it; refunded".into(),
            requested_by: RequestedBy::System,
        };
        let current = self.checkout.refunds().refund(&order).await?;
        Ok(current.payment.status == PaymentStatus::Refunded)
    }
}

/// What one run found so far.
#[derive(Default)]
struct Run {
    charges_checked: u64,
    payments_checked: u64,
    discrepancies: Vec<v1::Discrepancy>,
    found: usize,
    unsettled: u64,
}

impl Run {
    fn add(&mut self, finding: Finding, settled: bool) {
        self.found += 1;
        if !settled {
            self.unsettled += 1;
        }
        if self.discrepancies.len() < MAX_REPORTED {
            self.discrepancies.push(v1::Discrepancy {
                kind: finding.kind.into(),
                payment_id: finding.payment_id.to_string(),
                charge_id: finding.charge_id.unwrap_or_default(),
                booking_id: finding.booking_id.map(|id| id.to_string()).unwrap_or_default(),
                detail: finding.detail,
                settled,
            });
        }
    }

    fn into_report(self) -> v1::ReconcileReport {
        v1::ReconcileReport {
            charges_checked: self.charges_checked,
            payments_checked: self.payments_checked,
            truncated: self.found > self.discrepancies.len(),
            discrepancies: self.discrepancies,
            unsettled: self.unsettled,
            finished_at: Some(timestamp(Utc::now())),
        }
    }
}

impl From<&LedgerCharge> for LedgerEntry {
    fn from(charge: &LedgerCharge) -> Self {
        Self {
            charge_id: charge.charge_id.clone(),
            payment_id: charge.payment_id(),
            amount_cents: charge.amount_cents,
            currency: charge.currency.clone(),
            status: charge.status.as_str().to_owned(),
            created_at: charge.created_at,
        }
    }
}
