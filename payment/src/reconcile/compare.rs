//! The rules of reconciliation, as a pure function of one provider charge and what our books
//! say of its payment, so every rule is tested without a database or a provider.
//!
//! I2 says every captured charge ends in exactly one live booking or exactly one refund. A
//! charge or payment still inside the grace period (a Pay in flight, recovery not yet due) is
//! not a discrepancy: the request or recovery settles it.

use chrono::{DateTime, Utc};
use ticketing_proto::v1::DiscrepancyKind;
use uuid::Uuid;

/// A charge as the provider's ledger lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerEntry {
    pub charge_id: String,
    /// The provider idempotency key we charged with, when it is one of our payment ids.
    pub payment_id: Option<Uuid>,
    pub amount_cents: i64,
    pub currency: String,
    /// The provider's word: `pending`, `captured`, `declined`, `refunded`, or anything else.
    pub status: String,
    pub created_at: DateTime<Utc>,
}

/// What our books say of one payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BookView {
    pub payment_id: Uuid,
    /// `payments.status`.
    pub status: String,
    pub amount_cents: i64,
    pub currency: String,
    /// The booking of the payment that is not cancelled, if any (`bookings.payment_id` is
    /// unique, so there is at most one).
    pub live_booking: Option<Uuid>,
    /// `refunds.state`, or `refunded` for a payment settled as refunded by versions that wrote
    /// no `refunds` row.
    pub refund: Option<String>,
    /// When the payment last changed state.
    pub updated_at: DateTime<Utc>,
}

/// What settles a finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Nothing safe to do automatically; an operator decides.
    Report,
    /// The payment is not settled: recovery's state machine finishes it from the provider.
    Recover,
    /// A captured charge that nothing in our books will ever settle: refund it.
    Refund,
}

/// One discrepancy between the ledger and our books.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub kind: DiscrepancyKind,
    /// Nil for a charge whose key is none of our payment ids.
    pub payment_id: Uuid,
    pub charge_id: Option<String>,
    pub booking_id: Option<Uuid>,
    pub detail: String,
    pub action: Action,
}

/// Payment states that are not final: the request or recovery is still settling them.
const UNSETTLED: &[&str] = &["processing", "charging", "unknown", "captured", "refunding"];

fn unsettled(status: &str) -> bool {
    UNSETTLED.contains(&status)
}

/// The discrepancy of one provider charge, if any. `book` is `None` when no payment has the
/// charge's idempotency key. Anything that changed after `settled_before` is still in flight.
pub fn check_charge(
    charge: &LedgerEntry,
    book: Option<&BookView>,
    settled_before: DateTime<Utc>,
) -> Option<Finding> {
    let finding = |kind, detail: String, action| Finding {
        kind,
        payment_id: charge.payment_id.unwrap_or_default(),
        charge_id: Some(charge.charge_id.clone()),
        booking_id: book.and_then(|b| b.live_booking),
        detail,
        action,
    };
    let Some(book) = book else {
        // Payments are committed before the provider is called, so this is a charge we did
        // not make, or lost: money taken with nothing to show for it.
        return match charge.status.as_str() {
            "captured" => Some(finding(
                DiscrepancyKind::ChargeWithoutBooking,
                "captured charge with no payment of ours".into(),
                Action::Refund,
            )),
            "pending" | "declined" | "refunded" => None,
            other => Some(finding(
                DiscrepancyKind::UnexpectedStatus,
                format!("provider status {other:?}"),
                Action::Report,
            )),
        };
    };
    if (charge.amount_cents, charge.currency.as_str()) != (book.amount_cents, book.currency.as_str()) {
        return Some(finding(
            DiscrepancyKind::AmountMismatch,
            format!(
                "provider {} {}, payment {} {}",
                charge.amount_cents, charge.currency, book.amount_cents, book.currency
            ),
            Action::Report,
        ));
    }
    let in_flight = book.updated_at >= settled_before;
    let refunded_here = book.refund.as_deref() == Some("refunded");
    match charge.status.as_str() {
        "captured" => match (book.live_booking, book.refund.as_deref()) {
            (Some(_), None) => None,
            (Some(_), Some(_)) if book.status == "refunding" && in_flight => None,
            (Some(booking), Some(state)) => Some(finding(
                if state == "refunded" {
                    DiscrepancyKind::ChargeSettledTwice
                } else {
                    DiscrepancyKind::Stuck
                },
                format!("booking {booking} is live and its refund is {state}"),
                if state == "refunded" { Action::Report } else { Action::Recover },
            )),
            (None, Some("refunded")) => Some(finding(
                DiscrepancyKind::RefundMismatch,
                "refunded in our books, captured at the provider".into(),
                Action::Refund,
            )),
            (None, _) if unsettled(&book.status) => (!in_flight).then(|| {
                finding(
                    DiscrepancyKind::Stuck,
                    format!("captured charge, payment still {}", book.status),
                    Action::Recover,
                )
            }),
            (None, _) => Some(finding(
                DiscrepancyKind::ChargeWithoutBooking,
                format!("captured charge, payment {} with no live booking and no refund", book.status),
                Action::Refund,
            )),
        },
        "refunded" => match book.live_booking {
            Some(booking) if !(book.status == "refunding" && in_flight) => Some(finding(
                DiscrepancyKind::BookingWithoutCharge,
                format!("booking {booking} is live but its charge was refunded"),
                if unsettled(&book.status) { Action::Recover } else { Action::Report },
            )),
            Some(_) => None,
            None if refunded_here => None,
            None if unsettled(&book.status) => (!in_flight).then(|| {
                finding(
                    DiscrepancyKind::Stuck,
                    format!("refunded at the provider, payment still {}", book.status),
                    Action::Recover,
                )
            }),
            None => Some(finding(
                DiscrepancyKind::RefundMismatch,
                format!("refunded at the provider, payment {} with no refund recorded", book.status),
                Action::Report,
            )),
        },
        "declined" => match book.live_booking {
            Some(booking) => Some(finding(
                DiscrepancyKind::BookingWithoutCharge,
                format!("booking {booking} is live but its charge was declined"),
                Action::Report,
            )),
            None if unsettled(&book.status) && !in_flight => Some(finding(
                DiscrepancyKind::Stuck,
                format!("declined at the provider, payment still {}", book.status),
                Action::Recover,
            )),
            None => None,
        },
        "pending" => (!in_flight).then(|| {
            finding(
                DiscrepancyKind::Stuck,
                format!("charge still pending at the provider, payment {}", book.status),
                if unsettled(&book.status) { Action::Recover } else { Action::Report },
            )
        }),
        other => Some(finding(
            DiscrepancyKind::UnexpectedStatus,
            format!("provider status {other:?}"),
            Action::Report,
        )),
    }
}

/// The discrepancy of a payment the provider's ledger has no charge for, if any.
pub fn check_uncharged(book: &BookView, settled_before: DateTime<Utc>) -> Option<Finding> {
    let finding = |kind, detail: String, action| Finding {
        kind,
        payment_id: book.payment_id,
        charge_id: None,
        booking_id: book.live_booking,
        detail,
        action,
    };
    if let Some(booking) = book.live_booking {
        return Some(finding(
            DiscrepancyKind::BookingWithoutCharge,
            format!("booking {booking} has no charge at the provider"),
            Action::Report,
        ));
    }
    match book.status.as_str() {
        "declined" => None,
        status if unsettled(status) => (book.updated_at < settled_before).then(|| {
            finding(
                DiscrepancyKind::Stuck,
                format!("payment {status} and the provider has no charge"),
                Action::Recover,
            )
        }),
        status => Some(finding(
            DiscrepancyKind::RefundMismatch,
            format!("payment {status} but the provider has no charge"),
            Action::Report,
        )),
    }
}

#[cfg(test)]
mod tests {
    use chrono::Duration;

    use super::*;

    fn now() -> DateTime<Utc> {
        Utc::now()
    }

    fn charge(status: &str) -> LedgerEntry {
        LedgerEntry {
            charge_id: "ch_1".into(),
            payment_id: Some(Uuid::nil()),
            amount_cents: 5_000,
            currency: "EUR".into(),
            status: status.into(),
            created_at: now() - Duration::hours(1),
        }
    }

    fn book(status: &str, booked: bool, refund: Option<&str>, age: Duration) -> BookView {
        BookView {
            payment_id: Uuid::nil(),
            status: status.into(),
            amount_cents: 5_000,
            currency: "EUR".into(),
            live_booking: booked.then(Uuid::nil),
            refund: refund.map(str::to_owned),
            updated_at: now() - age,
        }
    }

    /// The discrepancy kind and action for a charge, with the grace period at 5 minutes.
    fn verdict(status: &str, book: Option<BookView>) -> Option<(DiscrepancyKind, Action)> {
        check_charge(&charge(status), book.as_ref(), now() - Duration::minutes(5)).map(|f| (f.kind, f.action))
    }

    const OLD: Duration = Duration::hours(1);
    const FRESH: Duration = Duration::seconds(1);

    #[test]
    fn a_captured_charge_needs_exactly_one_booking_or_one_refund() {
        assert_eq!(verdict("captured", Some(book("confirmed", true, None, OLD))), None);
        assert_eq!(verdict("refunded", Some(book("refunded", false, Some("refunded"), OLD))), None);
        assert_eq!(
            verdict("captured", Some(book("confirmed", true, Some("refunded"), OLD))),
            Some((DiscrepancyKind::ChargeSettledTwice, Action::Report))
        );
        // The original bug: declined in our books although the provider captured it later.
        assert_eq!(
            verdict("captured", Some(book("declined", false, None, OLD))),
            Some((DiscrepancyKind::ChargeWithoutBooking, Action::Refund))
        );
        assert_eq!(verdict("captured", None), Some((DiscrepancyKind::ChargeWithoutBooking, Action::Refund)));
        assert_eq!(
            verdict("captured", Some(book("refunded", false, Some("refunded"), OLD))),
            Some((DiscrepancyKind::RefundMismatch, Action::Refund))
        );
    }

    #[test]
    fn payments_in_flight_are_left_to_the_request_and_recovery() {
        for status in ["charging", "unknown", "captured", "refunding"] {
            assert_eq!(verdict("captured", Some(book(status, false, None, FRESH))), None, "{status}");
            assert_eq!(
                verdict("captured", Some(book(status, false, None, OLD))),
                Some((DiscrepancyKind::Stuck, Action::Recover)),
                "{status}"
            );
        }
        assert_eq!(verdict("pending", Some(book("unknown", false, None, FRESH))), None);
        assert_eq!(
            verdict("pending", Some(book("unknown", false, None, OLD))),
            Some((DiscrepancyKind::Stuck, Action::Recover))
        );
        // A cancellation under way: booking live, refund started, provider already refunded.
        assert_eq!(verdict("refunded", Some(book("refunding", true, Some("refunding"), FRESH))), None);
        assert_eq!(
            verdict("refunded", Some(book("refunding", true, Some("refunding"), OLD))),
            Some((DiscrepancyKind::BookingWithoutCharge, Action::Recover))
        );
    }

    #[test]
    fn bookings_need_a_captured_charge() {
        assert_eq!(
            verdict("declined", Some(book("confirmed", true, None, OLD))),
            Some((DiscrepancyKind::BookingWithoutCharge, Action::Report))
        );
        assert_eq!(
            verdict("refunded", Some(book("confirmed", true, None, OLD))),
            Some((DiscrepancyKind::BookingWithoutCharge, Action::Report))
        );
        let settled_before = now() - Duration::minutes(5);
        let booked = book("confirmed", true, None, OLD);
        assert_eq!(
            check_uncharged(&booked, settled_before).map(|f| f.kind),
            Some(DiscrepancyKind::BookingWithoutCharge)
        );
        assert_eq!(check_uncharged(&book("declined", false, None, OLD), settled_before), None);
        assert_eq!(check_uncharged(&book("charging", false, None, FRESH), settled_before), None);
        assert_eq!(
            check_uncharged(&book("charging", false, None, OLD), settled_before).map(|f| f.action),
            Some(Action::Recover)
        );
    }

    #[test]
    fn odd_answers_are_reported_never_assumed() {
        assert_eq!(
            verdict("disputed", Some(book("confirmed", true, None, OLD))),
            Some((DiscrepancyKind::UnexpectedStatus, Action::Report))
        );
        let mut cheaper = book("confirmed", true, None, OLD);
        cheaper.amount_cents = 1;
        assert_eq!(
            verdict("captured", Some(cheaper)),
            Some((DiscrepancyKind::AmountMismatch, Action::Report))
        );
        assert_eq!(verdict("declined", Some(book("declined", false, None, OLD))), None);
        assert_eq!(verdict("declined", None), None);
    }
}
