//! `payment-reconcile`: an operator's on-demand reconciliation of the provider's ledger with
//! payments, bookings and refunds (the same run the service makes every
//! `RECONCILE_INTERVAL_SECS`). Reads the payment service's own configuration (flags and
//! environment), so `kubectl exec deploy/payment -- payment-reconcile --dry-run` just works.
//!
//! Exit codes: 0 the ledger and the books agree (after settling, unless `--dry-run`),
//! 1 discrepancies remain (listed), 2 the run failed (Postgres, provider or seat-lock
//! unreachable), 64 bad arguments or configuration.

use payment::{Config, app};
use service_runtime::config::exit_bad_config;
use ticketing_proto::v1::{DiscrepancyKind, ReconcileReport};

#[derive(Debug, clap::Parser)]
#[command(
    name = "payment-reconcile",
    about = "Reconciles the provider's ledger with payments, bookings and refunds"
)]
struct Args {
    /// Only report; settle nothing and record no run.
    #[arg(long)]
    dry_run: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    config: Config,
}

#[tokio::main]
async fn main() {
    // Bad flags or environment exit 64, like the service.
    let args: Args = service_runtime::config::parse();
    if let Err(problem) = args.config.validate() {
        exit_bad_config("payment-reconcile", problem);
    }
    let report = match run(&args).await {
        Ok(report) => report,
        Err(error) => {
            eprintln!("payment-reconcile: {error:#}");
            std::process::exit(2);
        }
    };
    if args.json {
        println!("{}", to_json(&report));
    } else {
        print_text(&report, args.dry_run);
    }
    std::process::exit(if report.unsettled == 0 { 0 } else { 1 });
}

async fn run(args: &Args) -> anyhow::Result<ReconcileReport> {
    let reconciler = app::reconciler(&args.config).await?;
    Ok(reconciler.run(args.dry_run).await?)
}

fn kind(kind: i32) -> &'static str {
    let name = DiscrepancyKind::try_from(kind).unwrap_or(DiscrepancyKind::Unspecified).as_str_name();
    name.strip_prefix("DISCREPANCY_KIND_").unwrap_or(name)
}

fn print_text(report: &ReconcileReport, dry_run: bool) {
    println!(
        "checked {} charges and {} payments{}: {} discrepancies, {} left unsettled",
        report.charges_checked,
        report.payments_checked,
        if dry_run { " (dry run)" } else { "" },
        report.discrepancies.len(),
        report.unsettled
    );
    for found in &report.discrepancies {
        println!(
            "  {:<24} payment {} charge {} booking {} {}: {}",
            kind(found.kind),
            found.payment_id,
            if found.charge_id.is_empty() { "-" } else { &found.charge_id },
            if found.booking_id.is_empty() { "-" } else { &found.booking_id },
            if found.settled { "settled" } else { "UNSETTLED" },
            found.detail
        );
    }
    if report.truncated {
        println!("  (more discrepancies than listed)");
    }
}

fn to_json(report: &ReconcileReport) -> serde_json::Value {
    serde_json::json!({
        "charges_checked": report.charges_checked,
        "payments_checked": report.payments_checked,
        "unsettled": report.unsettled,
        "truncated": report.truncated,
        "discrepancies": report.discrepancies.iter().map(|d| serde_json::json!({
            "kind": kind(d.kind),
            "payment_id": d.payment_id,
            "charge_id": d.charge_id,
            "booking_id": d.booking_id,
            "detail": d.detail,
            "settled": d.settled,
        })).collect::<Vec<_>>(),
    })
}
