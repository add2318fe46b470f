//! `stack demo`: `up`, then a small flash sale through the load balancer on an event of its
//! own, verified against ground truth. The sale creates its own venue and event and every
//! check reads that event's rows, so the demo runs the same on a stack that kept the data of
//! earlier demos (the closing reconciliation reads the whole ledger: earlier runs that settled
//! leave it nothing to find).

use std::path::Path;

use anyhow::bail;

use super::{cli::UpArgs, up};
use crate::{
    flashsale::{self, SimConfig},
    report,
};

/// The demo's hold TTL: short, so that the holds its users walk away from expire within the
/// minute the demo takes.
const DEMO_HOLD_TTL_SECS: u64 = 20;

/// Runs the demo; returns the exit code (1 when a check failed).
pub async fn demo(state_dir: &Path, mut args: UpArgs, seats: u32, users: u32) -> anyhow::Result<i32> {
    let hold_ttl = *args.hold_ttl_secs.get_or_insert(DEMO_HOLD_TTL_SECS);
    let stack = up::up(state_dir, &args).await?;
    println!("running a flash sale: {seats} seats, {users} users, through {}", stack.config.lb_url());
    let out = state_dir.join("reports").join(chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string());
    let mut config = SimConfig::new(
        stack.config.lb_url(),
        stack.config.database_url.clone(),
        out.clone(),
        stack.identity.clone(),
    )
    .with_hold_ttl(hold_ttl);
    config.seats = seats;
    config.users = users;
    config.admission_capacity = 500;
    config.pass_ttl_secs = 120;
    config.open_in_secs = 3.0;
    config.max_secs = 300;
    config.pids_dir = Some(state_dir.join("pids"));
    if let Err(problem) = config.validate() {
        bail!("{problem}");
    }
    let outcome = flashsale::run(config).await?;
    let html = report::write(&outcome, &out)?;
    println!("{}", report::summary(&outcome, &html));
    println!(
        "the stack is still running (`stack status`, `stack logs`, `stack down`); logs in {}",
        state_dir.join("logs").display()
    );
    Ok(if outcome.ok() { 0 } else { 1 })
}
