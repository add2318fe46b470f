//! The reconciliation that ends every verification (the flash sale's, every failure test's):
//! payment's `Reconcile` (not a dry run) compares the provider's ledger with payments,
//! bookings and refunds. A mesh that settled its money by itself leaves it nothing to find,
//! so anything it reports, settled by this run or not, is a finding.

use std::{fmt::Write as _, time::Duration};

use ticketing_proto::v1::{self as pb, payment_service_client::PaymentServiceClient};
use tonic::transport::Channel;

use crate::{grpc::code_name, identity::Bearer};

/// How long one reconciliation may take: it reads the whole ledger of the mesh.
const RECONCILE_TIMEOUT: Duration = Duration::from_secs(120);
/// Discrepancies spelled out in the finding; the count says how many more there were.
const SHOWN_DISCREPANCIES: usize = 20;

/// What one reconciliation found.
#[derive(Debug, Clone)]
pub struct Finding {
    /// Nothing unsettled and no discrepancy reported.
    pub clean: bool,
    /// The counts when clean; otherwise each discrepancy (kind, payment, charge, booking,
    /// detail, whether this run settled it), or why the call failed.
    pub detail: String,
}

/// Runs `Reconcile { dry_run: false }` on the payment service behind `channel`, as the
/// operator `admin` (an operator action needs the admin scope).
pub async fn reconcile(channel: Channel, admin: &Bearer) -> Finding {
    let mut payment = PaymentServiceClient::new(channel);
    let mut request = admin.request(pb::ReconcileRequest { dry_run: false });
    request.set_timeout(RECONCILE_TIMEOUT);
    match payment.reconcile(request).await {
        Ok(report) => describe(&report.into_inner()),
        Err(status) => Finding {
            clean: false,
            detail: format!("Reconcile failed: {} {}", code_name(status.code()), status.message()),
        },
    }
}

/// Reads a report: clean when it left nothing unsettled and found no discrepancy.
pub fn describe(report: &pb::ReconcileReport) -> Finding {
    let clean = report.unsettled == 0 && report.discrepancies.is_empty() && !report.truncated;
    let mut detail = format!(
        "{} charges and {} payments checked; {} discrepancies{}, {} unsettled",
        report.charges_checked,
        report.payments_checked,
        report.discrepancies.len(),
        if report.truncated { " (truncated)" } else { "" },
        report.unsettled
    );
    for d in report.discrepancies.iter().take(SHOWN_DISCREPANCIES) {
        let _ = write!(
            detail,
            "; {} payment {} charge {} booking {}: {}{}",
            d.kind().as_str_name(),
            d.payment_id,
            d.charge_id,
            d.booking_id,
            d.detail,
            if d.settled { " (settled by this run)" } else { " (UNSETTLED)" }
        );
    }
    if report.discrepancies.len() > SHOWN_DISCREPANCIES {
        let _ = write!(detail, "; and {} more", report.discrepancies.len() - SHOWN_DISCREPANCIES);
    }
    Finding { clean, detail }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_settled_discrepancy_is_still_a_finding() {
        let clean = pb::ReconcileReport { charges_checked: 3, payments_checked: 4, ..Default::default() };
        assert!(describe(&clean).clean);
        let settled = pb::ReconcileReport {
            discrepancies: vec![pb::Discrepancy {
                kind: pb::DiscrepancyKind::ChargeWithoutBooking as i32,
                payment_id: "p1".into(),
                settled: true,
                ..Default::default()
            }],
            ..clean
        };
        let finding = describe(&settled);
        assert!(!finding.clean);
        assert!(finding.detail.contains("DISCREPANCY_KIND_CHARGE_WITHOUT_BOOKING payment p1"), "{finding:?}");
        assert!(finding.detail.contains("settled by this run"), "{finding:?}");
    }
}
