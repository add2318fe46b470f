//! The edge as an outside caller meets it, through the load balancer of the real processes:
//!
//! - health answers for each service by name, from that service, and the empty name stands
//!   for the whole entry point; a dead service's health stops saying SERVING, and so does the
//!   entry point's;
//! - a huge value in any string field of any public RPC gets a small `INVALID_ARGUMENT`,
//!   and a request over the size limit a small `RESOURCE_EXHAUSTED`, through the load
//!   balancer exactly as directly, and nothing changes in the stores.
//!
//! The table of RPCs and string fields ([`rpcs`]) is checked against the proto descriptors,
//! so a new RPC or field that the table misses fails the test.
//!
//! Needs the service binaries (`cargo build --bins`) and HAProxy, as `e2e.rs` does.

#![allow(clippy::expect_used, clippy::unwrap_used)]

#[path = "failures/helpers.rs"]
#[allow(dead_code)] // this test uses the stack harness, not the failure checks
mod helpers;

use std::{collections::BTreeSet, future::Future, pin::Pin, time::Duration};

use helpers::{buy_one_keep_one, one_row_venue, open_event, start_stack};
use prost::Message as _;
use test_support::testenv::{TestEnv, eventually};
use ticketing_proto::v1::{
    self as pb, admission_service_client::AdmissionServiceClient,
    inventory_service_client::InventoryServiceClient, notifier_service_client::NotifierServiceClient,
    payment_service_client::PaymentServiceClient, seat_lock_service_client::SeatLockServiceClient,
};
use tokio_stream::StreamExt;
use tonic::{Code, Status, transport::Channel};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use tools::{
    identity::{Bearer, Identity},
    snapshot::StoreSnapshot,
    stack,
};

/// The user whose objects the requests name.
const ALICE: &str = "alice";
/// Longest wait for the mesh's background work (admission, the load balancer's checks).
const EVENTUALLY: Duration = Duration::from_secs(60);
/// Deadline of each call.
const CALL_TIMEOUT: Duration = Duration::from_secs(20);
/// The "1 MiB id" of the issue.
const HUGE: usize = 1 << 20;
/// The most bytes an error may take (message plus details).
const SMALL_ERROR: usize = 1024;
/// The five public services, by their gRPC names.
const SERVICES: [&str; 5] = [
    "ticketing.v1.AdmissionService",
    "ticketing.v1.SeatLockService",
    "ticketing.v1.InventoryService",
    "ticketing.v1.PaymentService",
    "ticketing.v1.NotifierService",
];

async fn channel(url: String) -> anyhow::Result<Channel> {
    Ok(tonic::transport::Endpoint::from_shared(url)?.connect().await?)
}

/// `grpc.health.v1.Health/Check` for `service`: its status, or the call's error code.
async fn health(channel: &Channel, service: &str) -> Result<ServingStatus, Code> {
    let mut request = tonic::Request::new(HealthCheckRequest { service: service.to_owned() });
    request.set_timeout(Duration::from_secs(5));
    match HealthClient::new(channel.clone()).check(request).await {
        Ok(response) => Ok(response.into_inner().status()),
        Err(status) => Err(status.code()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_through_the_load_balancer_answers_for_each_service_and_the_whole() -> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    let stack = start_stack(&env, None).await?;
    let lb = channel(stack.0.config.lb_url()).await?;

    for service in SERVICES.into_iter().chain([""]) {
        let answer = eventually(EVENTUALLY, || async { health(&lb, service).await.ok() }).await;
        assert_eq!(
            health(&lb, service).await,
            Ok(ServingStatus::Serving),
            "health of {service:?} through the load balancer (first answer {answer:?})"
        );
    }
    // A name no service has is unknown, not SERVING.
    assert_eq!(health(&lb, "ticketing.v1.NoSuchService").await, Err(Code::NotFound));

    // Payment dies (no drain, no goodbye): its health through the load balancer stops
    // saying SERVING, and so does the entry point's; the others still answer SERVING.
    let payment = stack::pid_files(&stack.0.config.state_dir)
        .into_iter()
        .find(|(name, _)| name == "payment")
        .map(|(_, pid)| pid)
        .expect("payment's pid file");
    stack::signal(payment, "KILL");
    let killed = std::time::Instant::now();
    let not_serving = |answer: Result<ServingStatus, Code>| match answer {
        Ok(ServingStatus::Serving) => None,
        other => Some(other),
    };
    let payment_answer =
        eventually(EVENTUALLY, || async { not_serving(health(&lb, "ticketing.v1.PaymentService").await) })
            .await;
    assert!(
        matches!(payment_answer, Some(Ok(ServingStatus::NotServing) | Err(Code::Unavailable))),
        "payment's health through the load balancer after payment died: {payment_answer:?} (None: still SERVING)"
    );
    let whole_answer = eventually(EVENTUALLY, || async { not_serving(health(&lb, "").await) }).await;
    // For the record, not asserted: how long the entry point took to stop saying SERVING.
    eprintln!(
        "after payment died: payment {payment_answer:?}, the entry point {whole_answer:?} after {:?}",
        killed.elapsed()
    );
    assert!(
        matches!(whole_answer, Some(Ok(ServingStatus::NotServing) | Err(Code::Unavailable))),
        "the entry point's health after payment died: {whole_answer:?} (None: still SERVING)"
    );
    for service in SERVICES.into_iter().filter(|s| !s.ends_with("PaymentService")) {
        assert_eq!(health(&lb, service).await, Ok(ServingStatus::Serving), "{service} after payment died");
    }
    Ok(())
}

/// The objects the requests name: everything valid but the one field under test.
struct World {
    lb: Channel,
    alice: Bearer,
    admin: Bearer,
    venue_id: String,
    event_id: String,
    pass: String,
    /// Held, unpaid.
    hold_id: String,
    payment_id: String,
    booking_id: String,
}

type Answer = Result<(), Status>;
type Call = for<'a> fn(&'a World, &'a str, String) -> Pin<Box<dyn Future<Output = Answer> + Send + 'a>>;

/// Every public RPC with a string field: its full name and how to call it with one field
/// (a path of field names, `zones.seated.row_labels`) set to a given value.
fn rpcs() -> Vec<(&'static str, Call)> {
    vec![
        ("ticketing.v1.AdmissionService/Join", join as Call),
        ("ticketing.v1.AdmissionService/WatchQueue", watch_queue),
        ("ticketing.v1.AdmissionService/GetQueueStatus", get_queue_status),
        ("ticketing.v1.AdmissionService/Leave", leave),
        ("ticketing.v1.AdmissionService/PauseSale", pause_sale),
        ("ticketing.v1.AdmissionService/ResumeSale", resume_sale),
        ("ticketing.v1.AdmissionService/CloseSale", close_sale),
        ("ticketing.v1.AdmissionService/GetSaleStatus", get_sale_status),
        ("ticketing.v1.SeatLockService/HoldSeats", hold_seats),
        ("ticketing.v1.SeatLockService/HoldBestAvailable", hold_best_available),
        ("ticketing.v1.SeatLockService/ReleaseHold", release_hold),
        ("ticketing.v1.SeatLockService/GetHold", get_hold),
        ("ticketing.v1.InventoryService/CreateVenue", create_venue),
        ("ticketing.v1.InventoryService/CreateEvent", create_event),
        ("ticketing.v1.InventoryService/GetEvent", get_event),
        ("ticketing.v1.InventoryService/ListEvents", list_events),
        ("ticketing.v1.InventoryService/GetSeatMap", get_seat_map),
        ("ticketing.v1.InventoryService/GetAvailability", get_availability),
        ("ticketing.v1.InventoryService/WatchSeatMap", watch_seat_map),
        ("ticketing.v1.PaymentService/Pay", pay),
        ("ticketing.v1.PaymentService/GetPayment", get_payment),
        ("ticketing.v1.PaymentService/GetBooking", get_booking),
        ("ticketing.v1.PaymentService/ListBookings", list_bookings),
        ("ticketing.v1.PaymentService/CancelBooking", cancel_booking),
        ("ticketing.v1.PaymentService/RefundBooking", refund_booking),
        ("ticketing.v1.NotifierService/Subscribe", subscribe),
        ("ticketing.v1.NotifierService/ListNotifications", list_notifications),
        ("ticketing.v1.NotifierService/RegisterWebhook", register_webhook),
    ]
}

/// Every (RPC, string field path) of the public services, read from the proto descriptors.
fn string_fields_of_public_rpcs() -> BTreeSet<(String, String)> {
    use prost_types::field_descriptor_proto::Type;
    let set = prost_types::FileDescriptorSet::decode(ticketing_proto::FILE_DESCRIPTOR_SET).unwrap();
    let messages: std::collections::HashMap<String, prost_types::DescriptorProto> = set
        .file
        .iter()
        .flat_map(|file| {
            let package = file.package().to_owned();
            file.message_type.iter().map(move |m| (format!(".{package}.{}", m.name()), m.clone()))
        })
        .collect();
    fn walk(
        messages: &std::collections::HashMap<String, prost_types::DescriptorProto>,
        message: &prost_types::DescriptorProto,
        prefix: &str,
        out: &mut Vec<String>,
    ) {
        for field in &message.field {
            let path = format!("{prefix}{}", field.name());
            match field.r#type() {
                Type::String => out.push(path),
                Type::Message => {
                    if let Some(inner) = messages.get(field.type_name()) {
                        walk(messages, inner, &format!("{path}."), out);
                    }
                }
                _ => {}
            }
        }
    }
    let mut fields = BTreeSet::new();
    for file in set.file.iter().filter(|f| f.package() == "ticketing.v1") {
        for service in &file.service {
            for method in &service.method {
                let mut paths = Vec::new();
                walk(&messages, &messages[method.input_type()], "", &mut paths);
                for path in paths {
                    fields.insert((format!("ticketing.v1.{}/{}", service.name(), method.name()), path));
                }
            }
        }
    }
    fields
}

/// Sets the field at `path` of a request to `value`: the one slot whose name matches.
/// A repeated field gets `value` as its only element.
enum Slot<'a> {
    One(&'a mut String),
    Many(&'a mut Vec<String>),
}

fn set<'a>(path: &str, value: String, slots: impl IntoIterator<Item = (&'static str, Slot<'a>)>) {
    let (_, slot) =
        slots.into_iter().find(|(name, _)| *name == path).unwrap_or_else(|| panic!("no field {path}"));
    match slot {
        Slot::One(field) => *field = value,
        Slot::Many(field) => *field = vec![value],
    }
}

use Slot::{Many, One};

fn timed<T>(bearer: &Bearer, message: T) -> tonic::Request<T> {
    let mut request = bearer.request(message);
    request.set_timeout(CALL_TIMEOUT);
    request
}

/// A unary answer without its content.
fn done<T>(answer: Result<tonic::Response<T>, Status>) -> Answer {
    answer.map(drop)
}

/// A stream's refusal: the open call's, or its first message's.
async fn first<T>(opened: Result<tonic::Response<tonic::Streaming<T>>, Status>) -> Answer {
    let mut stream = opened?.into_inner();
    match tokio::time::timeout(Duration::from_secs(5), stream.next()).await {
        Ok(Some(message)) => message.map(drop),
        Ok(None) | Err(_) => Ok(()),
    }
}

fn join<'a>(w: &'a World, path: &'a str, value: String) -> Pin<Box<dyn Future<Output = Answer> + Send + 'a>> {
    Box::pin(async move {
        let mut r = pb::JoinRequest { event_id: w.event_id.clone(), user_id: ALICE.into() };
        set(path, value, [("event_id", One(&mut r.event_id)), ("user_id", One(&mut r.user_id))]);
        done(AdmissionServiceClient::new(w.lb.clone()).join(timed(&w.alice, r)).await)
    })
}

fn watch_queue<'a>(
    w: &'a World,
    path: &'a str,
    value: String,
) -> Pin<Box<dyn Future<Output = Answer> + Send + 'a>> {
    Box::pin(async move {
        let mut r = pb::WatchQueueRequest { event_id: w.event_id.clone(), user_id: ALICE.into() };
        set(path, value, [("event_id", One(&mut r.event_id)), ("user_id", One(&mut r.user_id))]);
        first(AdmissionServiceClient::new(w.lb.clone()).watch_queue(timed(&w.alice, r)).await).await
    })
}

fn get_queue_status<'a>(
    w: &'a World,
    path: &'a str,
    value: String,
) -> Pin<Box<dyn Future<Output = Answer> + Send + 'a>> {
    Box::pin(async move {
        let mut r = pb::GetQueueStatusRequest { event_id: w.event_id.clone(), user_id: ALICE.into() };
        set(path, value, [("event_id", One(&mut r.event_id)), ("user_id", One(&mut r.user_id))]);
        done(AdmissionServiceClient::new(w.lb.clone()).get_queue_status(timed(&w.alice, r)).await)
    })
}

fn leave<'a>(
    w: &'a World,
    path: &'a str,
    value: String,
) -> Pin<Box<dyn Future<Output = Answer> + Send + 'a>> {
    Box::pin(async move {
        let mut r = pb::LeaveRequest { event_id: w.event_id.clone(), user_id: ALICE.into() };
        set(path, value, [("event_id", One(&mut r.event_id)), ("user_id", One(&mut r.user_id))]);
        done(AdmissionServiceClient::new(w.lb.clone()).leave(timed(&w.alice, r)).await)
    })
}

/// An operator's sale request with one field set (the admin RPCs share the message).
fn sale_request(w: &World, path: &str, value: String) -> tonic::Request<pb::SaleControlRequest> {
    let mut r = pb::SaleControlRequest { event_id: w.event_id.clone() };
    set(path, value, [("event_id", One(&mut r.event_id))]);
    timed(&w.admin, r)
}

fn pause_sale<'a>(
    w: &'a World,
    path: &'a str,
    value: String,
) -> Pin<Box<dyn Future<Output = Answer> + Send + 'a>> {
    Box::pin(async move {
        done(AdmissionServiceClient::new(w.lb.clone()).pause_sale(sale_request(w, path, value)).await)
    })
}

fn resume_sale<'a>(
    w: &'a World,
    path: &'a str,
    value: String,
) -> Pin<Box<dyn Future<Output = Answer> + Send + 'a>> {
    Box::pin(async move {
        done(AdmissionServiceClient::new(w.lb.clone()).resume_sale(sale_request(w, path, value)).await)
    })
}

fn close_sale<'a>(
    w: &'a World,
    path: &'a str,
    value: String,
) -> Pin<Box<dyn Future<Output = Answer> + Send + 'a>> {
    Box::pin(async move {
        done(AdmissionServiceClient::new(w.lb.clone()).close_sale(sale_request(w, path, value)).await)
    })
}

fn get_sale_status<'a>(
    w: &'a World,
    path: &'a str,
    value: String,
) -> Pin<Box<dyn Future<Output = Answer> + Send + 'a>> {
    Box::pin(async move {
        done(AdmissionServiceClient::new(w.lb.clone()).get_sale_status(sale_request(w, path, value)).await)
    })
}

fn hold_seats<'a>(
    w: &'a World,
    path: &'a str,
    value: String,
) -> Pin<Box<dyn Future<Output = Answer> + Send + 'a>> {
    Box::pin(async move {
        let mut r = pb::HoldSeatsRequest {
            pass_token: w.pass.clone(),
            event_id: w.event_id.clone(),
            user_id: ALICE.into(),
            seat_ids: vec!["A-1-9".into()],
        };
        set(
            path,
            value,
            [
                ("pass_token", One(&mut r.pass_token)),
                ("event_id", One(&mut r.event_id)),
                ("user_id", One(&mut r.user_id)),
                ("seat_ids", Many(&mut r.seat_ids)),
            ],
        );
        done(SeatLockServiceClient::new(w.lb.clone()).hold_seats(timed(&w.alice, r)).await)
    })
}

fn hold_best_available<'a>(
    w: &'a World,
    path: &'a str,
    value: String,
) -> Pin<Box<dyn Future<Output = Answer> + Send + 'a>> {
    Box::pin(async move {
        let mut r = pb::HoldBestAvailableRequest {
            pass_token: w.pass.clone(),
            event_id: w.event_id.clone(),
            user_id: ALICE.into(),
            zone_id: "A".into(),
            quantity: 1,
            allow_split: true,
        };
        set(
            path,
            value,
            [
                ("pass_token", One(&mut r.pass_token)),
                ("event_id", One(&mut r.event_id)),
                ("user_id", One(&mut r.user_id)),
                ("zone_id", One(&mut r.zone_id)),
            ],
        );
        done(SeatLockServiceClient::new(w.lb.clone()).hold_best_available(timed(&w.alice, r)).await)
    })
}

fn release_hold<'a>(
    w: &'a World,
    path: &'a str,
    value: String,
) -> Pin<Box<dyn Future<Output = Answer> + Send + 'a>> {
    Box::pin(async move {
        let mut r = pb::ReleaseHoldRequest {
            event_id: w.event_id.clone(),
            hold_id: w.hold_id.clone(),
            user_id: ALICE.into(),
        };
        set(
            path,
            value,
            [
                ("event_id", One(&mut r.event_id)),
                ("hold_id", One(&mut r.hold_id)),
                ("user_id", One(&mut r.user_id)),
            ],
        );
        done(SeatLockServiceClient::new(w.lb.clone()).release_hold(timed(&w.alice, r)).await)
    })
}

fn get_hold<'a>(
    w: &'a World,
    path: &'a str,
    value: String,
) -> Pin<Box<dyn Future<Output = Answer> + Send + 'a>> {
    Box::pin(async move {
        let mut r = pb::GetHoldRequest {
            event_id: w.event_id.clone(),
            hold_id: w.hold_id.clone(),
            user_id: ALICE.into(),
        };
        set(
            path,
            value,
            [
                ("event_id", One(&mut r.event_id)),
                ("hold_id", One(&mut r.hold_id)),
                ("user_id", One(&mut r.user_id)),
            ],
        );
        done(SeatLockServiceClient::new(w.lb.clone()).get_hold(timed(&w.alice, r)).await)
    })
}

fn venue_request() -> pb::CreateVenueRequest {
    one_row_venue("Edge Hall", 10, &["A-1-1"])
}

fn event_request(venue_id: &str) -> pb::CreateEventRequest {
    open_event(venue_id, "Edge", 4, 10)
}

fn create_venue<'a>(
    w: &'a World,
    path: &'a str,
    value: String,
) -> Pin<Box<dyn Future<Output = Answer> + Send + 'a>> {
    Box::pin(async move {
        let mut r = venue_request();
        let zone = &mut r.zones[0];
        let Some(pb::zone_spec::Layout::Seated(seated)) = &mut zone.layout else { unreachable!() };
        set(
            path,
            value,
            [
                ("name", One(&mut r.name)),
                ("zones.zone_id", One(&mut zone.zone_id)),
                ("zones.name", One(&mut zone.name)),
                ("zones.seated.row_labels", Many(&mut seated.row_labels)),
                ("zones.seated.accessible_seat_ids", Many(&mut seated.accessible_seat_ids)),
            ],
        );
        done(InventoryServiceClient::new(w.lb.clone()).create_venue(timed(&w.admin, r)).await)
    })
}

fn create_event<'a>(
    w: &'a World,
    path: &'a str,
    value: String,
) -> Pin<Box<dyn Future<Output = Answer> + Send + 'a>> {
    Box::pin(async move {
        let mut r = event_request(&w.venue_id);
        set(
            path,
            value,
            [
                ("venue_id", One(&mut r.venue_id)),
                ("name", One(&mut r.name)),
                ("currency", One(&mut r.currency)),
            ],
        );
        done(InventoryServiceClient::new(w.lb.clone()).create_event(timed(&w.admin, r)).await)
    })
}

fn get_event<'a>(
    w: &'a World,
    path: &'a str,
    value: String,
) -> Pin<Box<dyn Future<Output = Answer> + Send + 'a>> {
    Box::pin(async move {
        let mut r = pb::GetEventRequest { event_id: w.event_id.clone() };
        set(path, value, [("event_id", One(&mut r.event_id))]);
        done(InventoryServiceClient::new(w.lb.clone()).get_event(timed(&w.alice, r)).await)
    })
}

fn list_events<'a>(
    w: &'a World,
    path: &'a str,
    value: String,
) -> Pin<Box<dyn Future<Output = Answer> + Send + 'a>> {
    Box::pin(async move {
        let mut r = pb::ListEventsRequest { page_size: 10, page_token: String::new() };
        set(path, value, [("page_token", One(&mut r.page_token))]);
        done(InventoryServiceClient::new(w.lb.clone()).list_events(timed(&w.alice, r)).await)
    })
}

fn get_seat_map<'a>(
    w: &'a World,
    path: &'a str,
    value: String,
) -> Pin<Box<dyn Future<Output = Answer> + Send + 'a>> {
    Box::pin(async move {
        let mut r = pb::GetSeatMapRequest { event_id: w.event_id.clone(), zone_id: "A".into() };
        set(path, value, [("event_id", One(&mut r.event_id)), ("zone_id", One(&mut r.zone_id))]);
        done(InventoryServiceClient::new(w.lb.clone()).get_seat_map(timed(&w.alice, r)).await)
    })
}

fn get_availability<'a>(
    w: &'a World,
    path: &'a str,
    value: String,
) -> Pin<Box<dyn Future<Output = Answer> + Send + 'a>> {
    Box::pin(async move {
        let mut r = pb::GetAvailabilityRequest { event_id: w.event_id.clone() };
        set(path, value, [("event_id", One(&mut r.event_id))]);
        done(InventoryServiceClient::new(w.lb.clone()).get_availability(timed(&w.alice, r)).await)
    })
}

fn watch_seat_map<'a>(
    w: &'a World,
    path: &'a str,
    value: String,
) -> Pin<Box<dyn Future<Output = Answer> + Send + 'a>> {
    Box::pin(async move {
        let mut r = pb::WatchSeatMapRequest { event_id: w.event_id.clone(), zone_id: "A".into() };
        set(path, value, [("event_id", One(&mut r.event_id)), ("zone_id", One(&mut r.zone_id))]);
        first(InventoryServiceClient::new(w.lb.clone()).watch_seat_map(timed(&w.alice, r)).await).await
    })
}

fn pay<'a>(w: &'a World, path: &'a str, value: String) -> Pin<Box<dyn Future<Output = Answer> + Send + 'a>> {
    Box::pin(async move {
        let mut r = pb::PayRequest {
            idempotency_key: format!("edge-{}", uuid::Uuid::new_v4().simple()),
            event_id: w.event_id.clone(),
            hold_id: w.hold_id.clone(),
            user_id: ALICE.into(),
            payment_method: "pm_card_ok".into(),
        };
        set(
            path,
            value,
            [
                ("idempotency_key", One(&mut r.idempotency_key)),
                ("event_id", One(&mut r.event_id)),
                ("hold_id", One(&mut r.hold_id)),
                ("user_id", One(&mut r.user_id)),
                ("payment_method", One(&mut r.payment_method)),
            ],
        );
        done(PaymentServiceClient::new(w.lb.clone()).pay(timed(&w.alice, r)).await)
    })
}

fn get_payment<'a>(
    w: &'a World,
    path: &'a str,
    value: String,
) -> Pin<Box<dyn Future<Output = Answer> + Send + 'a>> {
    Box::pin(async move {
        let mut r = pb::GetPaymentRequest { payment_id: w.payment_id.clone(), user_id: ALICE.into() };
        set(path, value, [("payment_id", One(&mut r.payment_id)), ("user_id", One(&mut r.user_id))]);
        done(PaymentServiceClient::new(w.lb.clone()).get_payment(timed(&w.alice, r)).await)
    })
}

fn get_booking<'a>(
    w: &'a World,
    path: &'a str,
    value: String,
) -> Pin<Box<dyn Future<Output = Answer> + Send + 'a>> {
    Box::pin(async move {
        let mut r = pb::GetBookingRequest { booking_id: w.booking_id.clone(), user_id: ALICE.into() };
        set(path, value, [("booking_id", One(&mut r.booking_id)), ("user_id", One(&mut r.user_id))]);
        done(PaymentServiceClient::new(w.lb.clone()).get_booking(timed(&w.alice, r)).await)
    })
}

fn list_bookings<'a>(
    w: &'a World,
    path: &'a str,
    value: String,
) -> Pin<Box<dyn Future<Output = Answer> + Send + 'a>> {
    Box::pin(async move {
        let mut r = pb::ListBookingsRequest {
            user_id: ALICE.into(),
            event_id: w.event_id.clone(),
            page_size: 10,
            page_token: String::new(),
        };
        set(
            path,
            value,
            [
                ("user_id", One(&mut r.user_id)),
                ("event_id", One(&mut r.event_id)),
                ("page_token", One(&mut r.page_token)),
            ],
        );
        done(PaymentServiceClient::new(w.lb.clone()).list_bookings(timed(&w.alice, r)).await)
    })
}

fn cancel_booking<'a>(
    w: &'a World,
    path: &'a str,
    value: String,
) -> Pin<Box<dyn Future<Output = Answer> + Send + 'a>> {
    Box::pin(async move {
        let mut r = pb::CancelBookingRequest {
            idempotency_key: format!("edge-{}", uuid::Uuid::new_v4().simple()),
            booking_id: w.booking_id.clone(),
            user_id: ALICE.into(),
        };
        set(
            path,
            value,
            [
                ("idempotency_key", One(&mut r.idempotency_key)),
                ("booking_id", One(&mut r.booking_id)),
                ("user_id", One(&mut r.user_id)),
            ],
        );
        done(PaymentServiceClient::new(w.lb.clone()).cancel_booking(timed(&w.alice, r)).await)
    })
}

fn refund_booking<'a>(
    w: &'a World,
    path: &'a str,
    value: String,
) -> Pin<Box<dyn Future<Output = Answer> + Send + 'a>> {
    Box::pin(async move {
        let mut r = pb::RefundBookingRequest {
            idempotency_key: format!("edge-{}", uuid::Uuid::new_v4().simple()),
            booking_id: w.booking_id.clone(),
            reason: "goodwill".into(),
        };
        set(
            path,
            value,
            [
                ("idempotency_key", One(&mut r.idempotency_key)),
                ("booking_id", One(&mut r.booking_id)),
                ("reason", One(&mut r.reason)),
            ],
        );
        done(PaymentServiceClient::new(w.lb.clone()).refund_booking(timed(&w.admin, r)).await)
    })
}

fn subscribe<'a>(
    w: &'a World,
    path: &'a str,
    value: String,
) -> Pin<Box<dyn Future<Output = Answer> + Send + 'a>> {
    Box::pin(async move {
        let mut r = pb::SubscribeRequest { user_id: ALICE.into(), after_id: 0 };
        set(path, value, [("user_id", One(&mut r.user_id))]);
        first(NotifierServiceClient::new(w.lb.clone()).subscribe(timed(&w.alice, r)).await).await
    })
}

fn list_notifications<'a>(
    w: &'a World,
    path: &'a str,
    value: String,
) -> Pin<Box<dyn Future<Output = Answer> + Send + 'a>> {
    Box::pin(async move {
        let mut r = pb::ListNotificationsRequest { user_id: ALICE.into(), after_id: 0, page_size: 10 };
        set(path, value, [("user_id", One(&mut r.user_id))]);
        done(NotifierServiceClient::new(w.lb.clone()).list_notifications(timed(&w.alice, r)).await)
    })
}

fn register_webhook<'a>(
    w: &'a World,
    path: &'a str,
    value: String,
) -> Pin<Box<dyn Future<Output = Answer> + Send + 'a>> {
    Box::pin(async move {
        let mut r = pb::RegisterWebhookRequest {
            user_id: ALICE.into(),
            url: "http://127.0.0.1:9/hook".into(),
            secret: "a-webhook-secret-of-enough-length".into(),
            kinds: vec![],
        };
        set(
            path,
            value,
            [("user_id", One(&mut r.user_id)), ("url", One(&mut r.url)), ("secret", One(&mut r.secret))],
        );
        done(NotifierServiceClient::new(w.lb.clone()).register_webhook(timed(&w.alice, r)).await)
    })
}

/// Alice's objects through the load balancer: an event on sale, her pass, a hold she keeps
/// and a paid booking.
async fn alice_world(lb: Channel, identity: &Identity) -> anyhow::Result<World> {
    let admin = identity.admin();
    let alice = identity.user(ALICE);
    let event = event_request("");
    let bought =
        buy_one_keep_one(&lb, &admin, (ALICE, &alice), venue_request(), event, "alice-edge-1").await?;
    Ok(World {
        lb,
        alice,
        admin,
        venue_id: bought.event.venue_id,
        event_id: bought.event.event_id,
        pass: bought.pass,
        hold_id: bought.kept_hold_id,
        payment_id: bought.paid.payment.expect("a payment").payment_id,
        booking_id: bought.paid.booking.expect("a booking").booking_id,
    })
}

/// The bytes an error takes on the wire: its message and its details.
fn error_size(status: &Status) -> usize {
    status.message().len() + status.details().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_value_in_any_string_field_of_any_rpc_gets_a_small_invalid_argument() -> anyhow::Result<()> {
    // The table names every string field of every public RPC, as the descriptors do.
    let table: BTreeSet<String> = rpcs().iter().map(|(name, _)| (*name).to_owned()).collect();
    let fields = string_fields_of_public_rpcs();
    let described: BTreeSet<String> = fields.iter().map(|(rpc, _)| rpc.clone()).collect();
    assert_eq!(table, described, "the table lists exactly the public RPCs with string fields");

    let env = TestEnv::new().await?;
    let stack = start_stack(&env, None).await?;
    let lb = channel(stack.0.config.lb_url()).await?;
    let world = alice_world(lb, &stack.0.identity).await?;
    let before =
        StoreSnapshot::settled(&env.database_url, &env.redis_url, &env.redis_prefix, EVENTUALLY).await?;

    // ASCII, and a value of multi-byte characters (a bounded quote must not cut one).
    let values = [("x", "x".repeat(HUGE)), ("€", "€".repeat(HUGE / 3))];
    let mut wrong = Vec::new();
    let mut checked = 0;
    let mut largest = (0, String::new());
    for (rpc, path) in &fields {
        let call = rpcs().into_iter().find(|(name, _)| name == rpc).map(|(_, call)| call).unwrap();
        for (kind, value) in &values {
            let answer = call(&world, path, value.clone()).await;
            checked += 1;
            match answer {
                Err(status)
                    if status.code() == Code::InvalidArgument && error_size(&status) < SMALL_ERROR =>
                {
                    if error_size(&status) > largest.0 {
                        largest = (error_size(&status), format!("{rpc} {path}: {}", status.message()));
                    }
                }
                Err(status) => wrong.push(format!(
                    "{rpc} {path}={kind}×{}: {:?} with a {}-byte error: {:.200}",
                    value.len(),
                    status.code(),
                    error_size(&status),
                    status.message()
                )),
                Ok(()) => wrong.push(format!("{rpc} {path}={kind}×{}: accepted", value.len())),
            }
        }
    }
    // For the record, not asserted: the largest error that came back.
    eprintln!("{checked} calls; the largest error: {} bytes ({})", largest.0, largest.1);
    assert!(
        wrong.is_empty(),
        "{} of {checked} calls did not get a small INVALID_ARGUMENT:\n{}",
        wrong.len(),
        wrong.join("\n")
    );

    let after = StoreSnapshot::take(&env.database_url, &env.redis_url, &env.redis_prefix).await?;
    let changed = before.diff(&after);
    assert!(changed.is_empty(), "huge values changed the stores: {changed:#?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_over_the_size_limit_gets_resource_exhausted_directly_and_through_the_load_balancer()
-> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    let stack = start_stack(&env, None).await?;
    let identity = stack.0.identity.clone();
    let lb = channel(stack.0.config.lb_url()).await?;
    let direct = channel(format!("http://127.0.0.1:{}", stack.0.config.port("inventory"))).await?;
    let mut wrong = Vec::new();
    for (route, channel) in [("load balancer", &lb), ("inventory directly", &direct)] {
        // Over the 4 MiB limit: read to its end before the refusal, and past the 64 MiB the
        // service reads of one (refused while the caller still sends).
        for size in [5 << 20, 80 << 20] {
            let request = timed(&identity.admin(), pb::GetEventRequest { event_id: "x".repeat(size) });
            let answer = InventoryServiceClient::new(channel.clone())
                .max_encoding_message_size(usize::MAX)
                .get_event(request)
                .await;
            match answer {
                Err(status)
                    if status.code() == Code::ResourceExhausted && error_size(&status) < SMALL_ERROR => {}
                Err(status) => wrong.push(format!(
                    "{route}, {size} bytes: {:?} with a {}-byte error: {:.200}",
                    status.code(),
                    error_size(&status),
                    status.message()
                )),
                Ok(_) => wrong.push(format!("{route}, {size} bytes: accepted")),
            }
        }
    }
    assert!(wrong.is_empty(), "oversized requests:\n{}", wrong.join("\n"));
    // The connection is still good for the next caller.
    let answer = InventoryServiceClient::new(lb)
        .get_event(timed(&identity.admin(), pb::GetEventRequest { event_id: "not-a-uuid".into() }))
        .await;
    assert_eq!(answer.map(drop).map_err(|s| s.code()), Err(Code::InvalidArgument));
    Ok(())
}
