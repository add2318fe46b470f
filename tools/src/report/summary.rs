//! The text summary of a sale, and the per-stage throughput it and the HTML page show.

use std::{fmt::Write as _, path::Path};

use crate::flashsale::{Outcome, stats::Sample};

/// A stage of the journey: its label, its key in the stage counters, its timeline series.
type Stage = (&'static str, &'static str, fn(&Sample) -> u64);

/// Per-stage throughput: how many reached the stage, the mean rate over the stage's active
/// window (first to last change in the timeline), and the peak rate over one sample.
pub fn throughput(outcome: &Outcome) -> Vec<(&'static str, u64, f64, f64)> {
    let stage = |key: &str| outcome.stages.get(key).and_then(serde_json::Value::as_u64).unwrap_or(0);
    let series: [Stage; 5] = [
        ("joined", "joined", |s| s.joined),
        ("admitted", "admitted", |s| s.admitted),
        ("held", "holds", |s| s.holds),
        ("paid", "paid", |s| s.paid),
        ("seats sold", "seats_paid", |s| s.inventory_sold),
    ];
    series
        .into_iter()
        .map(|(label, key, f)| {
            let timeline = &outcome.timeline;
            let total = stage(key);
            let mut peak = 0.0f64;
            let (mut first, mut last) = (None, None);
            for pair in timeline.windows(2) {
                let (a, b) = (f(&pair[0]), f(&pair[1]));
                if b > a {
                    first.get_or_insert(pair[0].t);
                    last = Some(pair[1].t);
                    peak = peak.max((b - a) as f64 / (pair[1].t - pair[0].t).max(0.001));
                }
            }
            let window = match (first, last) {
                (Some(a), Some(b)) if b > a => b - a,
                _ => outcome.timings.users_done_secs.max(1.0),
            };
            (label, total, total as f64 / window, peak)
        })
        .collect()
}

/// The short text summary printed at the end of a run.
pub fn summary(outcome: &Outcome, html: &Path) -> String {
    let mut s = String::new();
    let t = &outcome.timings;
    let _ = writeln!(
        s,
        "flash sale of event {} — {} seats, {} users",
        outcome.event_id, outcome.capacity, outcome.config.users
    );
    let at = |x: Option<f64>| x.map_or("not reached".to_owned(), |x| format!("{x:.1} s"));
    let _ = writeln!(
        s,
        "  time to sell out {} (no free seat at {}); users done at {:.1} s{}; settled in {:.1} s",
        at(t.sold_out_secs),
        at(t.no_free_seat_secs),
        t.users_done_secs,
        if t.stopped_by_max_secs { " (stopped by --max-secs)" } else { "" },
        t.settle_secs
    );
    let _ = writeln!(s, "  {:<12} {:>8} {:>11} {:>11}", "stage", "count", "mean /s", "peak /s");
    for (label, n, rate, peak) in throughput(outcome) {
        let _ = writeln!(s, "  {label:<12} {n:>8} {rate:>11.1} {peak:>11.1}");
    }
    let _ = writeln!(s, "  stages: {}", outcome.stages);
    let _ = writeln!(
        s,
        "  {:<18} {:>8} {:>8} {:>8} {:>8} {:>9}",
        "rpc", "count", "p50 ms", "p95 ms", "p99 ms", "max ms"
    );
    for r in &outcome.rpcs {
        let _ = writeln!(
            s,
            "  {:<18} {:>8} {:>8.1} {:>8.1} {:>8.1} {:>9.1}",
            r.rpc, r.count, r.p50_ms, r.p95_ms, r.p99_ms, r.max_ms
        );
    }
    if !outcome.peak_memory_kib.is_empty() {
        let mem: Vec<String> = outcome
            .peak_memory_kib
            .iter()
            .map(|(n, k)| format!("{n} {:.0} MiB", *k as f64 / 1024.0))
            .collect();
        let _ = writeln!(s, "  peak memory: {}", mem.join(", "));
    }
    if !outcome.cpu.is_empty() {
        let cpu: Vec<String> = outcome
            .cpu
            .iter()
            .map(|u| format!("{} {:.1} s ({:.0}%)", u.process, u.cpu_secs, u.machine_percent))
            .collect();
        let _ = writeln!(s, "  cpu (share of all cores): {}", cpu.join(", "));
    }
    if let Some(per_seat) = outcome.cpu_per_seat {
        let _ = writeln!(
            s,
            "  cpu per seat sold: mesh {:.2} ms (services, load balancer, Redis, Postgres, NATS), simulator {:.2} ms",
            per_seat.mesh, per_seat.simulator
        );
    }
    if let Some(slowest) =
        outcome.rpcs.iter().filter(|r| r.count > 0).max_by(|a, b| a.p99_ms.total_cmp(&b.p99_ms))
    {
        let _ = writeln!(
            s,
            "  slowest rpc: {} (p99 {:.1} ms over {} calls)",
            slowest.rpc, slowest.p99_ms, slowest.count
        );
    }
    if !outcome.faults.is_empty() {
        let _ = writeln!(s, "  faults (seconds since opening; recovery = until the mesh served again):");
        for f in &outcome.faults {
            let _ = writeln!(
                s,
                "    {:>6.1} s  {:<10} {:<27} recovered in {}{}",
                f.started_secs,
                f.target,
                f.kind,
                f.recovery_secs.map_or("—(not recovered)".to_owned(), |r| format!("{r:.2} s")),
                if f.notes.is_empty() { String::new() } else { format!("; {}", f.notes.join("; ")) }
            );
        }
        let unplanned: Vec<String> = outcome
            .restarts
            .iter()
            .filter(|r| !r.killed_by_schedule)
            .map(|r| format!("{} {} at {:.1} s", r.service, r.cause, r.died_secs))
            .collect();
        if !unplanned.is_empty() {
            let _ = writeln!(s, "  services that died by themselves: {}", unplanned.join(", "));
        }
    }
    let v = &outcome.verification;
    let _ = writeln!(
        s,
        "  ground truth: {} seats sold, {} bookings, {} charges captured, {} refunded, {} admission inversions in {}",
        v.seats_sold,
        v.bookings,
        v.captured_charges,
        v.refunded_charges,
        v.admission_inversions,
        v.admissions_compared
    );
    for w in &v.warnings {
        let _ = writeln!(s, "  warning: {w}");
    }
    if v.violations.is_empty() {
        let _ = writeln!(s, "  invariants I1-I6 and reconciliation: OK ({} checks)", v.checks.len());
    } else {
        let _ = writeln!(s, "  INVARIANT VIOLATIONS:");
        for violation in &v.violations {
            let _ = writeln!(s, "    - {violation}");
        }
    }
    let _ = write!(s, "  report: {}", html.display());
    s
}
