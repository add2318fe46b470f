//! `report.html`: the sale's timeline, latencies, faults and figures as one self-contained
//! page (inline SVG, no external JS or CSS).

use std::fmt::Write as _;

use super::summary::throughput;
use crate::{
    faults::FaultRecord,
    flashsale::{Outcome, stats::Sample},
};

fn esc(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

const COLOURS: [&str; 6] = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"];

/// A named series of a chart: its label and how to read it from a sample.
type Series<'a> = (&'a str, fn(&Sample) -> f64);

/// A line chart of several series over the sale's timeline, with each fault of a chaos run
/// as a shaded band from its start to its recovery, labelled with its target.
fn line_chart(title: &str, timeline: &[Sample], series: &[Series<'_>], faults: &[FaultRecord]) -> String {
    let (w, h, left, bottom, top, right) = (720.0, 260.0, 70.0, 30.0, 30.0, 20.0);
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" role="img"><title>{}</title>"#,
        esc(title)
    );
    let _ = write!(svg, r#"<text x="{left}" y="18" font-size="14" font-weight="bold">{}</text>"#, esc(title));
    if timeline.is_empty() {
        svg.push_str("</svg>");
        return svg;
    }
    let t0 = timeline.first().map_or(0.0, |s| s.t);
    let t1 = timeline.last().map_or(1.0, |s| s.t).max(t0 + 1.0);
    let ymax = series
        .iter()
        .flat_map(|(_, f)| timeline.iter().map(f))
        .filter(|y| y.is_finite())
        .fold(1.0f64, f64::max);
    let x = |t: f64| left + (t - t0) / (t1 - t0) * (w - left - right);
    let y = |v: f64| h - bottom - v / ymax * (h - bottom - top);
    let _ = write!(
        svg,
        r##"<line x1="{left}" y1="{}" x2="{}" y2="{}" stroke="#333"/><line x1="{left}" y1="{top}" x2="{left}" y2="{}" stroke="#333"/>"##,
        h - bottom,
        w - right,
        h - bottom,
        h - bottom
    );
    for k in 0..=4 {
        let v = ymax * f64::from(k) / 4.0;
        let _ = write!(
            svg,
            r##"<text x="{}" y="{}" font-size="10" text-anchor="end">{v:.0}</text><line x1="{left}" x2="{}" y1="{}" y2="{}" stroke="#eee"/>"##,
            left - 4.0,
            y(v) + 3.0,
            w - right,
            y(v),
            y(v)
        );
        let t = t0 + (t1 - t0) * f64::from(k) / 4.0;
        let _ = write!(
            svg,
            r#"<text x="{}" y="{}" font-size="10" text-anchor="middle">{t:.0} s</text>"#,
            x(t),
            h - bottom + 14.0
        );
    }
    for (i, fault) in faults.iter().enumerate() {
        let start = x(fault.started_secs.clamp(t0, t1));
        // Not recovered: the band runs to the end of the plot.
        let end = x(fault.recovered_secs.unwrap_or(t1).clamp(t0, t1)).max(start + 2.0);
        let _ = write!(
            svg,
            r##"<rect x="{start:.1}" y="{top}" width="{:.1}" height="{}" fill="#d62728" fill-opacity="0.15"><title>{} {}: {}</title></rect><line x1="{start:.1}" x2="{start:.1}" y1="{top}" y2="{}" stroke="#d62728" stroke-dasharray="3,2"/><text x="{:.1}" y="{}" font-size="9" fill="#d62728">{}</text>"##,
            end - start,
            h - bottom - top,
            esc(fault.target),
            esc(fault.kind),
            fault.recovery_secs.map_or("not recovered".to_owned(), |r| format!("recovered in {r:.2} s")),
            h - bottom,
            start + 2.0,
            top + 8.0 + 9.0 * (i % 3) as f64,
            esc(fault.target)
        );
    }
    for (i, (name, f)) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let points: Vec<String> = timeline
            .iter()
            .filter(|s| f(s).is_finite())
            .map(|s| format!("{:.1},{:.1}", x(s.t), y(f(s))))
            .collect();
        let _ = write!(
            svg,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{}"/>"#,
            points.join(" ")
        );
        let _ = write!(
            svg,
            r#"<text x="{}" y="{}" font-size="11" fill="{colour}">{}</text>"#,
            w - right - 160.0,
            top + 12.0 + 13.0 * i as f64,
            esc(name)
        );
    }
    svg.push_str("</svg>");
    svg
}

/// Grouped bars of p50/p95/p99 per RPC on a log scale.
fn latency_chart(outcome: &Outcome) -> String {
    let rpcs = &outcome.rpcs;
    let (w, left, row) = (720.0, 130.0, 16.0);
    let h = 40.0 + rpcs.len() as f64 * row * 3.5;
    let max = rpcs.iter().map(|r| r.p99_ms).fold(1.0f64, f64::max);
    let scale = |ms: f64| (ms.max(0.01) / 0.01).log10() / (max / 0.01).log10() * (w - left - 80.0);
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" role="img"><title>latency per RPC</title>"#
    );
    svg.push_str(r#"<text x="10" y="18" font-size="14" font-weight="bold">Latency per RPC (p50 / p95 / p99, log scale from 0.01 ms)</text>"#);
    for (i, r) in rpcs.iter().enumerate() {
        let y0 = 32.0 + i as f64 * row * 3.5;
        let _ = write!(
            svg,
            r#"<text x="{}" y="{}" font-size="11" text-anchor="end">{}</text>"#,
            left - 6.0,
            y0 + row * 1.5,
            esc(r.rpc)
        );
        for (k, (label, ms)) in
            [("p50", r.p50_ms), ("p95", r.p95_ms), ("p99", r.p99_ms)].into_iter().enumerate()
        {
            let y = y0 + k as f64 * row;
            let _ = write!(
                svg,
                r#"<rect x="{left}" y="{y}" width="{:.1}" height="{}" fill="{}"/><text x="{:.1}" y="{}" font-size="10">{label} {ms:.1} ms</text>"#,
                scale(ms).max(1.0),
                row - 3.0,
                COLOURS[k],
                left + scale(ms).max(1.0) + 4.0,
                y + row - 5.0
            );
        }
    }
    svg.push_str("</svg>");
    svg
}

/// The chaos run's tables: each fault with its recovery, and each service's deaths with how
/// long it took to answer SERVING again (with the end of its log when it died by itself).
fn render_faults(h: &mut String, o: &Outcome) {
    if o.faults.is_empty() {
        return;
    }
    h.push_str("<h2>Faults</h2><p>Seconds since the opening. A store is back when it answers again; the mesh has recovered when every service is SERVING and a call through the load balancer that needs the store is answered.</p><table><tr><th>target</th><th>fault</th><th>at</th><th>back</th><th>recovered</th><th>recovery (s)</th><th>notes</th></tr>");
    let secs = |x: Option<f64>| x.map_or("—".to_owned(), |x| format!("{x:.2}"));
    for f in &o.faults {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{:.2}</td><td>{}</td><td>{}</td><td>{}</td><td style=\"text-align:left\">{}</td></tr>",
            esc(f.target),
            esc(f.kind),
            f.started_secs,
            secs(f.back_secs),
            secs(f.recovered_secs),
            f.recovery_secs
                .map_or("<b style=\"color:#d62728\">not recovered</b>".to_owned(), |r| format!("{r:.2}")),
            esc(&f.notes.join("; "))
        );
    }
    h.push_str("</table><h2>Service restarts</h2><table><tr><th>service</th><th>cause</th><th>died</th><th>SERVING again</th><th>recovery (s)</th></tr>");
    for r in &o.restarts {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{:.2}</td><td>{}</td><td>{}</td></tr>",
            esc(r.service),
            esc(&r.cause),
            r.died_secs,
            secs(r.serving_secs),
            secs(r.recovery_secs)
        );
    }
    h.push_str("</table>");
    for r in o.restarts.iter().filter(|r| !r.log_tail.is_empty()) {
        let _ = write!(
            h,
            "<p>{} {} at {:.2} s; end of its log:</p><pre>{}</pre>",
            esc(r.service),
            esc(&r.cause),
            r.died_secs,
            esc(&r.log_tail.join("\n"))
        );
    }
}

pub(super) fn render_html(o: &Outcome) -> String {
    let mut h = String::new();
    let v = &o.verification;
    let status = if o.ok() {
        "<b style=\"color:#2ca02c\">all invariants held</b>"
    } else {
        "<b style=\"color:#d62728\">INVARIANTS VIOLATED</b>"
    };
    let _ = write!(
        h,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Flash sale {}</title><style>body{{font-family:sans-serif;max-width:780px;margin:2em auto}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:2px 8px;text-align:right}}td:first-child,th:first-child{{text-align:left}}</style></head><body>",
        esc(&o.event_id)
    );
    let _ = write!(
        h,
        "<h1>Flash sale</h1><p>event {} — {} seats, {} users — {status}</p>",
        esc(&o.event_id),
        o.capacity,
        o.config.users
    );
    let t = &o.timings;
    let at = |x: Option<f64>| x.map_or("not reached".to_owned(), |x| format!("{x:.1} s"));
    let _ = write!(
        h,
        "<table><tr><th>figure</th><th>value</th></tr><tr><td>time to sell out</td><td>{}</td></tr><tr><td>no free seat (all held or sold)</td><td>{}</td></tr><tr><td>users done</td><td>{:.1} s{}</td></tr><tr><td>setup</td><td>{:.1} s</td></tr><tr><td>settle (expiries, releases)</td><td>{:.1} s</td></tr></table>",
        at(t.sold_out_secs),
        at(t.no_free_seat_secs),
        t.users_done_secs,
        if t.stopped_by_max_secs { " (stopped by max-secs)" } else { "" },
        t.setup_secs,
        t.settle_secs
    );
    h.push_str("<h2>Throughput per stage</h2><table><tr><th>stage</th><th>count</th><th>mean per second (active window)</th><th>peak per second</th></tr>");
    for (label, n, rate, peak) in throughput(o) {
        let _ = write!(h, "<tr><td>{label}</td><td>{n}</td><td>{rate:.1}</td><td>{peak:.1}</td></tr>");
    }
    h.push_str("</table><h2>Over time</h2>");
    let faults = &o.faults;
    h.push_str(&line_chart(
        "Queue length",
        &o.timeline,
        &[("queue length", |s| s.queue_length as f64)],
        faults,
    ));
    h.push_str(&line_chart(
        "Joined and admitted (cumulative)",
        &o.timeline,
        &[("joined", |s| s.joined as f64), ("admitted", |s| s.admitted as f64)],
        faults,
    ));
    h.push_str(&line_chart(
        "Seats held and sold (inventory)",
        &o.timeline,
        &[
            ("held", |s| s.inventory_held as f64),
            ("sold", |s| s.inventory_sold as f64),
            ("free", |s| if s.inventory_free == u64::MAX { f64::NAN } else { s.inventory_free as f64 }),
        ],
        faults,
    ));
    h.push_str(&line_chart(
        "Holds and payments (cumulative)",
        &o.timeline,
        &[("holds", |s| s.holds as f64), ("paid", |s| s.paid as f64)],
        faults,
    ));
    render_faults(&mut h, o);
    h.push_str("<h2>Latency per RPC</h2>");
    h.push_str(&latency_chart(o));
    h.push_str("<table><tr><th>rpc</th><th>count</th><th>p50 ms</th><th>p95 ms</th><th>p99 ms</th><th>max ms</th><th>status codes</th></tr>");
    for r in &o.rpcs {
        let codes: Vec<String> = r.codes.iter().map(|(c, n)| format!("{c} {n}")).collect();
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{:.1}</td><td>{:.1}</td><td>{:.1}</td><td>{:.1}</td><td>{}</td></tr>",
            r.rpc,
            r.count,
            r.p50_ms,
            r.p95_ms,
            r.p99_ms,
            r.max_ms,
            esc(&codes.join(", "))
        );
    }
    h.push_str("</table><h2>Peak memory (VmHWM)</h2><table><tr><th>process</th><th>MiB</th></tr>");
    for (name, kib) in &o.peak_memory_kib {
        let _ = write!(h, "<tr><td>{}</td><td>{:.1}</td></tr>", esc(name), *kib as f64 / 1024.0);
    }
    h.push_str("</table><h2>CPU per process (from the first arrival until the users were done)</h2><table><tr><th>process</th><th>CPU seconds</th><th>% of all cores</th></tr>");
    for u in &o.cpu {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{:.1}</td><td>{:.1}</td></tr>",
            esc(&u.process),
            u.cpu_secs,
            u.machine_percent
        );
    }
    h.push_str("</table>");
    if let Some(per_seat) = o.cpu_per_seat {
        let _ = write!(
            h,
            "<p>CPU per seat sold: mesh {:.2} ms (services, load balancer, Redis, Postgres, NATS), simulator {:.2} ms</p>",
            per_seat.mesh, per_seat.simulator
        );
    }
    h.push_str("<h2>Invariants</h2><table><tr><th>check</th><th>result</th><th>detail</th></tr>");
    for c in &v.checks {
        let _ = write!(
            h,
            "<tr><td>{} {}</td><td>{}</td><td style=\"text-align:left\">{}</td></tr>",
            c.invariant,
            esc(&c.name),
            if c.ok { "ok" } else { "<b style=\"color:#d62728\">VIOLATED</b>" },
            esc(&c.detail)
        );
    }
    h.push_str("</table>");
    for w in &v.warnings {
        let _ = write!(h, "<p>warning: {}</p>", esc(w));
    }
    let _ = write!(
        h,
        "<h2>Stages</h2><pre>{}</pre>",
        esc(&serde_json::to_string_pretty(&o.stages).unwrap_or_default())
    );
    if !o.error_samples.is_empty() {
        let _ = write!(h, "<h2>Sample errors</h2><pre>{}</pre>", esc(&o.error_samples.join("\n")));
    }
    let _ = write!(
        h,
        "<h2>Configuration</h2><pre>{}</pre></body></html>",
        esc(&serde_json::to_string_pretty(&o.config).unwrap_or_default())
    );
    h
}
