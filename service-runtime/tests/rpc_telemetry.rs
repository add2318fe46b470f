//! The RPC telemetry layer: series named and labelled as go-grpc-prometheus does, with only
//! the served methods as label values; server spans named by the RPC, whose `trace_id` and
//! `span_id` the JSON log lines inside them carry; the process' own series in the scrape.
//! Its own binary: the Prometheus recorder is process-wide.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::BTreeSet,
    convert::Infallible,
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use opentelemetry::trace::TracerProvider as _;
use service_runtime::{
    server::{KnownMethods, RpcTelemetryLayer, UNKNOWN, grpc_code_label},
    telemetry::{log_layer, serve_metrics},
};
use tonic::body::Body;
use tower::{Layer, Service, ServiceExt};
use tracing_subscriber::layer::SubscriberExt;

const PAYMENT: &str = "ticketing.v1.PaymentService";
const HEALTH: &str = "grpc.health.v1.Health";

fn scrape(addr: SocketAddr) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(addr)?;
    stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut body = String::new();
    stream.read_to_string(&mut body)?;
    Ok(body)
}

/// Scrapes until the exporter answers with `wanted` (it starts on a background thread).
fn scrape_until(addr: SocketAddr, wanted: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match scrape(addr) {
            Ok(body) if body.contains("200 OK") && body.contains(wanted) => return body,
            _ if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            other => panic!("the exporter never served {wanted}: {other:?}"),
        }
    }
}

/// A label's value in a series line, `grpc_method="Pay"` → `Pay`.
fn label<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let start = line.find(&format!("{name}=\""))? + name.len() + 2;
    let len = line[start..].find('"')?;
    Some(&line[start..start + len])
}

/// A handler answering every request with `code` (OK as plain headers, others trailers-only).
fn answering(
    code: tonic::Code,
) -> impl Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible, Future: Send + 'static>
+ Clone {
    tower::service_fn(move |_request: http::Request<Body>| async move {
        tracing::info!("inside the handler");
        let mut response = http::Response::new(Body::empty());
        if code != tonic::Code::Ok {
            response.headers_mut().insert("grpc-status", (code as i32).to_string().parse().unwrap());
        }
        Ok::<_, Infallible>(response)
    })
}

fn request(path: &str) -> http::Request<Body> {
    http::Request::builder().uri(format!("http://localhost{path}")).body(Body::empty()).unwrap()
}

#[test]
fn only_the_served_methods_are_known() {
    let known = KnownMethods::of_services(&[PAYMENT, HEALTH]);
    let pay = known.resolve("/ticketing.v1.PaymentService/Pay");
    assert_eq!(
        (pay.service.as_str(), pay.method.as_str(), pay.kind, pay.name.as_str()),
        (PAYMENT, "Pay", "unary", "ticketing.v1.PaymentService/Pay")
    );
    assert_eq!(known.resolve("/grpc.health.v1.Health/Watch").kind, "server_stream");
    for path in [
        "/ticketing.v1.PaymentService/NoSuchMethod",
        // A real method of a service this listener does not serve.
        "/ticketing.v1.AdmissionService/Join",
        "/ticketing.v1.PaymentService/Pay/",
        "ticketing.v1.PaymentService/Pay",
        "/",
        "",
    ] {
        let rpc = known.resolve(path);
        assert_eq!(
            (rpc.service.as_str(), rpc.method.as_str(), rpc.kind, rpc.name.as_str()),
            (UNKNOWN, UNKNOWN, UNKNOWN, UNKNOWN),
            "{path}"
        );
    }
    assert!(known.len() > 2, "{known:?}");
    assert!(KnownMethods::of_services(&["no.such.Service"]).is_empty());
}

#[test]
fn go_grpc_prometheus_code_names() {
    assert_eq!(grpc_code_label(tonic::Code::Ok), "OK");
    assert_eq!(grpc_code_label(tonic::Code::Cancelled), "Canceled");
    assert_eq!(grpc_code_label(tonic::Code::ResourceExhausted), "ResourceExhausted");
}

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn rpcs_are_counted_by_known_method_and_logged_with_their_trace() {
    let addr = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    serve_metrics(addr).unwrap();
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    let logs = Captured::default();
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::registry()
        .with(log_layer(true, move || writer.clone()))
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    let _default = tracing::subscriber::set_default(subscriber);

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let known = Arc::new(KnownMethods::of_services(&[PAYMENT, HEALTH]));
    let layer = RpcTelemetryLayer::new(known);
    runtime.block_on(async {
        // One traced Pay with its caller's trace context.
        let trace_id = "4bf92f3577b34da6a3ce929067f0e4e1";
        let mut traced = request("/ticketing.v1.PaymentService/Pay");
        traced
            .headers_mut()
            .insert("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01").parse().unwrap());
        layer.layer(answering(tonic::Code::Ok)).oneshot(traced).await.unwrap();
        let captured = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
        let line =
            captured.lines().find(|l| l.contains("inside the handler")).expect("the handler's log line");
        let json: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(json["span"]["trace_id"], trace_id, "{line}");
        let span_id = json["span"]["span_id"].as_str().expect("span_id");
        assert!(span_id.len() == 16 && span_id != "00f067aa0ba902b7", "a span of its own: {line}");
        assert_eq!(json["span"]["otel.name"], "ticketing.v1.PaymentService/Pay", "{line}");

        // Refused Pays, and a client sending 500 made-up paths.
        for _ in 0..3 {
            layer
                .layer(answering(tonic::Code::FailedPrecondition))
                .oneshot(request("/ticketing.v1.PaymentService/Pay"))
                .await
                .unwrap();
        }
        for n in 0..500 {
            layer
                .layer(answering(tonic::Code::Unimplemented))
                .oneshot(request(&format!("/ticketing.v1.PaymentService/Made{n}")))
                .await
                .unwrap();
        }
    });

    let body = scrape_until(addr, "grpc_server_handled_total");
    let handled: Vec<&str> = body.lines().filter(|l| l.starts_with("grpc_server_handled_total{")).collect();
    let methods: BTreeSet<&str> = handled.iter().filter_map(|l| label(l, "grpc_method")).collect();
    assert_eq!(methods, BTreeSet::from(["Pay", UNKNOWN]), "{body}");
    assert!(
        handled.contains(
            &"grpc_server_handled_total{grpc_type=\"unary\",grpc_service=\"ticketing.v1.PaymentService\",grpc_method=\"Pay\",grpc_code=\"OK\"} 1"
        ),
        "{body}"
    );
    assert!(
        handled.iter().any(|l| l.contains("grpc_code=\"FailedPrecondition\"") && l.ends_with(" 3")),
        "{body}"
    );
    assert!(
        handled.contains(
            &"grpc_server_handled_total{grpc_type=\"unknown\",grpc_service=\"unknown\",grpc_method=\"unknown\",grpc_code=\"Unimplemented\"} 500"
        ),
        "{body}"
    );
    assert!(
        body.contains("grpc_server_started_total{grpc_type=\"unary\",grpc_service=\"ticketing.v1.PaymentService\",grpc_method=\"Pay\"} 4"),
        "{body}"
    );
    assert!(
        body.contains("grpc_server_handling_seconds_count{grpc_type=\"unary\",grpc_service=\"ticketing.v1.PaymentService\",grpc_method=\"Pay\"} 4"),
        "{body}"
    );
    // The process' own series, from metrics-process.
    for series in ["process_cpu_seconds_total ", "process_resident_memory_bytes ", "process_open_fds "] {
        assert!(body.lines().any(|l| l.starts_with(series)), "{series}missing: {body}");
    }
}
