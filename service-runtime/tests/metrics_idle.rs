//! The exporter drops series nobody updates (a finished event's) and keeps live gauges.
//! Its own binary: the Prometheus recorder is process-wide. Real time, because the exporter
//! measures idleness with its own clock; the idle timeout is two seconds here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    time::{Duration, Instant},
};

use service_runtime::telemetry::{LiveGauge, serve_metrics_with_idle};

const IDLE: Duration = Duration::from_secs(2);

fn scrape(addr: SocketAddr) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(addr)?;
    stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut body = String::new();
    stream.read_to_string(&mut body)?;
    Ok(body)
}

/// Scrapes until the exporter answers (it starts on a background thread).
fn first_scrape(addr: SocketAddr) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match scrape(addr) {
            Ok(body) if body.contains("200 OK") => return body,
            _ if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            other => panic!("the exporter never answered: {other:?}"),
        }
    }
}

#[test]
fn a_series_nobody_updates_leaves_the_scrape_while_a_live_gauge_stays_true() {
    let addr = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    serve_metrics_with_idle(addr, IDLE).unwrap();

    metrics::gauge!("event_queue_length", "event_id" => "finished").set(7.0);
    metrics::counter!("event_admitted_total", "event_id" => "finished").increment(3);
    let live = LiveGauge::get("things_alive", &[("kind", "stream")]);
    live.add(2);
    live.add(1);

    let before = first_scrape(addr);
    assert!(before.contains("event_queue_length{event_id=\"finished\"} 7"), "{before}");
    assert!(before.contains("event_admitted_total{event_id=\"finished\"} 3"), "{before}");
    assert!(before.contains("things_alive{kind=\"stream\"} 3"), "{before}");

    // Past the idle timeout; the live gauge is re-published every quarter of it meanwhile.
    // Idle series are pruned when the exporter renders, so render once before looking.
    std::thread::sleep(IDLE + IDLE / 2);
    scrape(addr).unwrap();
    let after = scrape(addr).unwrap();
    assert!(after.contains("things_alive{kind=\"stream\"} 3"), "the live gauge stays, true: {after}");
    assert!(!after.contains("event_queue_length{"), "the idle gauge left the scrape: {after}");
    assert!(!after.contains("event_admitted_total{"), "the idle counter left the scrape: {after}");

    // A change after the quiet spell continues from the true value, not from a lost one.
    live.add(-1);
    let changed = scrape(addr).unwrap();
    assert!(changed.contains("things_alive{kind=\"stream\"} 2"), "{changed}");
}
