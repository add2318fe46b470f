//! The trust model, tried as an outside caller would: through the load balancer of the real
//! processes, every user-facing RPC is called on Alice's objects (her place in the queue, her
//! pass, her holds, her payment and booking, her inbox) with no token, an expired token, a
//! token signed by a key the mesh does not know, a token for another audience, and Mallory's
//! valid token (naming Alice in `user_id`, and acting as herself on Alice's ids). Each gets
//! its exact answer, and Redis and Postgres are the same afterwards as before. The operator
//! actions refuse a user token with `ADMIN_SCOPE_REQUIRED`; `CreateEvent` works with the
//! admin token.
//!
//! Adding an RPC is one row of [`rpcs`] and a small call function.
//!
//! Needs the service binaries (`cargo build --bins`) and HAProxy, as `e2e.rs` does.

#![allow(clippy::expect_used, clippy::unwrap_used)]

#[path = "failures/helpers.rs"]
#[allow(dead_code)] // this test uses the stack harness, not the failure checks
mod helpers;

use std::{future::Future, pin::Pin, time::Duration};

use helpers::{buy_one_keep_one, one_row_venue, open_event, start_stack};
use service_runtime::auth::{TokenIssuer, bearer};
use test_support::testenv::{TestEnv, eventually};
use ticketing_proto::v1::{
    self as pb, admission_service_client::AdmissionServiceClient,
    inventory_service_client::InventoryServiceClient, notifier_service_client::NotifierServiceClient,
    payment_service_client::PaymentServiceClient, seat_lock_service_client::SeatLockServiceClient,
};
use tokio_stream::StreamExt;
use tonic::{
    Code, Status,
    metadata::{Ascii, MetadataValue},
    transport::Channel,
};
use tools::{
    identity::{self, Identity},
    snapshot::StoreSnapshot,
};

/// The victim, whose objects every attack aims at.
const ALICE: &str = "alice";
/// The attacker: a real user with a valid token of her own.
const MALLORY: &str = "mallory";
/// Longest wait for the mesh's background work (admission, notifications, settling).
const EVENTUALLY: Duration = Duration::from_secs(60);
/// Deadline of each attacking call.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Alice's objects, made through the load balancer with her token.
struct World {
    lb: Channel,
    event_id: String,
    pass: String,
    /// Held, unpaid.
    hold_id: String,
    payment_id: String,
    booking_id: String,
}

impl World {
    /// Strings that must never appear in an answer to someone else.
    fn secrets(&self) -> [&str; 5] {
        [&self.pass, &self.hold_id, &self.payment_id, &self.booking_id, ALICE]
    }
}

/// How an attacking call authenticates, and whom its `user_id` names.
struct Auth {
    bearer: Option<MetadataValue<Ascii>>,
    user_id: String,
}

impl Auth {
    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Some(bearer) = &self.bearer {
            request.metadata_mut().insert("authorization", bearer.clone());
        }
        request.set_timeout(CALL_TIMEOUT);
        request
    }
}

type Answer = Result<String, Status>;
type Call = for<'a> fn(&'a World, Auth) -> Pin<Box<dyn Future<Output = Answer> + Send + 'a>>;

/// What Mallory, acting as herself (empty `user_id`), gets on Alice's ids.
#[derive(Debug, Clone, Copy)]
enum AsHerself {
    /// `NOT_FOUND`, exactly as if the object did not exist.
    NotFound,
    /// This code and reason (e.g. Alice's pass is not Mallory's).
    Refused(Code, &'static str),
    /// Her own (empty) view: an answer or `NOT_FOUND`, and nothing of Alice's in it.
    NothingOfAlice,
    /// The call would act on Mallory's own account (Join, RegisterWebhook) and change the
    /// stores legitimately, or waits for her own events (Subscribe): not an attack on Alice.
    NotAnAttack,
}

/// Who may call an RPC.
#[derive(Debug, Clone, Copy)]
enum Role {
    /// A user, on the user's own objects.
    User(AsHerself),
    /// An operator: a user token is refused with `ADMIN_SCOPE_REQUIRED`.
    Admin,
}

struct Rpc {
    name: &'static str,
    role: Role,
    call: Call,
}

/// Every user-facing RPC and operator action: one row each.
fn rpcs() -> Vec<Rpc> {
    use AsHerself::*;
    let user = |name, as_herself, call| Rpc { name, role: Role::User(as_herself), call };
    let admin = |name, call| Rpc { name, role: Role::Admin, call };
    vec![
        user("AdmissionService/Join", NotAnAttack, join as Call),
        user("AdmissionService/WatchQueue", NothingOfAlice, watch_queue),
        user("AdmissionService/GetQueueStatus", NothingOfAlice, get_queue_status),
        user("AdmissionService/Leave", NothingOfAlice, leave),
        user("SeatLockService/HoldSeats", Refused(Code::PermissionDenied, "PASS_WRONG_USER"), hold_seats),
        user(
            "SeatLockService/HoldBestAvailable",
            Refused(Code::PermissionDenied, "PASS_WRONG_USER"),
            hold_best_available,
        ),
        user("SeatLockService/ReleaseHold", NotFound, release_hold),
        user("SeatLockService/GetHold", NotFound, get_hold),
        user("PaymentService/Pay", NotFound, pay),
        user("PaymentService/GetPayment", NotFound, get_payment),
        user("PaymentService/GetBooking", NotFound, get_booking),
        user("PaymentService/ListBookings", NothingOfAlice, list_bookings),
        user("PaymentService/CancelBooking", NotFound, cancel_booking),
        user("NotifierService/Subscribe", NotAnAttack, subscribe),
        user("NotifierService/ListNotifications", NothingOfAlice, list_notifications),
        user("NotifierService/RegisterWebhook", NotAnAttack, register_webhook),
        admin("InventoryService/CreateVenue", create_venue),
        admin("InventoryService/CreateEvent", create_event),
        admin("PaymentService/RefundBooking", refund_booking),
        admin("PaymentService/Reconcile", reconcile),
        admin("AdmissionService/PauseSale", pause_sale),
        admin("AdmissionService/ResumeSale", resume_sale),
        admin("AdmissionService/CloseSale", close_sale),
        admin("AdmissionService/GetSaleStatus", get_sale_status),
    ]
}

fn render<T: std::fmt::Debug>(answer: Result<tonic::Response<T>, Status>) -> Answer {
    answer.map(|response| format!("{:?}", response.into_inner()))
}

/// Opens a server stream and renders its first message (or that none came in time).
async fn first<T: std::fmt::Debug>(opened: Result<tonic::Response<tonic::Streaming<T>>, Status>) -> Answer {
    let mut stream = opened?.into_inner();
    match tokio::time::timeout(CALL_TIMEOUT, stream.next()).await {
        Ok(Some(message)) => Ok(format!("{:?}", message?)),
        Ok(None) => Ok("(the stream ended)".into()),
        Err(_) => Ok("(no message)".into()),
    }
}

fn join(w: &World, a: Auth) -> Pin<Box<dyn Future<Output = Answer> + Send + '_>> {
    Box::pin(async move {
        let request = a.request(pb::JoinRequest { event_id: w.event_id.clone(), user_id: a.user_id.clone() });
        render(AdmissionServiceClient::new(w.lb.clone()).join(request).await)
    })
}

fn watch_queue(w: &World, a: Auth) -> Pin<Box<dyn Future<Output = Answer> + Send + '_>> {
    Box::pin(async move {
        let request =
            a.request(pb::WatchQueueRequest { event_id: w.event_id.clone(), user_id: a.user_id.clone() });
        first(AdmissionServiceClient::new(w.lb.clone()).watch_queue(request).await).await
    })
}

fn get_queue_status(w: &World, a: Auth) -> Pin<Box<dyn Future<Output = Answer> + Send + '_>> {
    Box::pin(async move {
        let request =
            a.request(pb::GetQueueStatusRequest { event_id: w.event_id.clone(), user_id: a.user_id.clone() });
        render(AdmissionServiceClient::new(w.lb.clone()).get_queue_status(request).await)
    })
}

fn leave(w: &World, a: Auth) -> Pin<Box<dyn Future<Output = Answer> + Send + '_>> {
    Box::pin(async move {
        let request =
            a.request(pb::LeaveRequest { event_id: w.event_id.clone(), user_id: a.user_id.clone() });
        render(AdmissionServiceClient::new(w.lb.clone()).leave(request).await)
    })
}

fn hold_seats(w: &World, a: Auth) -> Pin<Box<dyn Future<Output = Answer> + Send + '_>> {
    Box::pin(async move {
        let request = a.request(pb::HoldSeatsRequest {
            pass_token: w.pass.clone(),
            event_id: w.event_id.clone(),
            user_id: a.user_id.clone(),
            seat_ids: vec!["A-1-5".into()],
        });
        render(SeatLockServiceClient::new(w.lb.clone()).hold_seats(request).await)
    })
}

fn hold_best_available(w: &World, a: Auth) -> Pin<Box<dyn Future<Output = Answer> + Send + '_>> {
    Box::pin(async move {
        let request = a.request(pb::HoldBestAvailableRequest {
            pass_token: w.pass.clone(),
            event_id: w.event_id.clone(),
            user_id: a.user_id.clone(),
            zone_id: "A".into(),
            quantity: 1,
            allow_split: true,
        });
        render(SeatLockServiceClient::new(w.lb.clone()).hold_best_available(request).await)
    })
}

fn release_hold(w: &World, a: Auth) -> Pin<Box<dyn Future<Output = Answer> + Send + '_>> {
    Box::pin(async move {
        let request = a.request(pb::ReleaseHoldRequest {
            event_id: w.event_id.clone(),
            hold_id: w.hold_id.clone(),
            user_id: a.user_id.clone(),
        });
        render(SeatLockServiceClient::new(w.lb.clone()).release_hold(request).await)
    })
}

fn get_hold(w: &World, a: Auth) -> Pin<Box<dyn Future<Output = Answer> + Send + '_>> {
    Box::pin(async move {
        let request = a.request(pb::GetHoldRequest {
            event_id: w.event_id.clone(),
            hold_id: w.hold_id.clone(),
            user_id: a.user_id.clone(),
        });
        render(SeatLockServiceClient::new(w.lb.clone()).get_hold(request).await)
    })
}

fn pay(w: &World, a: Auth) -> Pin<Box<dyn Future<Output = Answer> + Send + '_>> {
    Box::pin(async move {
        let request = a.request(pb::PayRequest {
            idempotency_key: format!("attack-{}", uuid::Uuid::new_v4().simple()),
            event_id: w.event_id.clone(),
            hold_id: w.hold_id.clone(),
            user_id: a.user_id.clone(),
            payment_method: "pm_card_ok".into(),
        });
        render(PaymentServiceClient::new(w.lb.clone()).pay(request).await)
    })
}

fn get_payment(w: &World, a: Auth) -> Pin<Box<dyn Future<Output = Answer> + Send + '_>> {
    Box::pin(async move {
        let request =
            a.request(pb::GetPaymentRequest { payment_id: w.payment_id.clone(), user_id: a.user_id.clone() });
        render(PaymentServiceClient::new(w.lb.clone()).get_payment(request).await)
    })
}

fn get_booking(w: &World, a: Auth) -> Pin<Box<dyn Future<Output = Answer> + Send + '_>> {
    Box::pin(async move {
        let request =
            a.request(pb::GetBookingRequest { booking_id: w.booking_id.clone(), user_id: a.user_id.clone() });
        render(PaymentServiceClient::new(w.lb.clone()).get_booking(request).await)
    })
}

fn list_bookings(w: &World, a: Auth) -> Pin<Box<dyn Future<Output = Answer> + Send + '_>> {
    Box::pin(async move {
        let request = a.request(pb::ListBookingsRequest {
            user_id: a.user_id.clone(),
            event_id: w.event_id.clone(),
            page_size: 10,
            page_token: String::new(),
        });
        render(PaymentServiceClient::new(w.lb.clone()).list_bookings(request).await)
    })
}

fn cancel_booking(w: &World, a: Auth) -> Pin<Box<dyn Future<Output = Answer> + Send + '_>> {
    Box::pin(async move {
        let request = a.request(pb::CancelBookingRequest {
            idempotency_key: format!("attack-{}", uuid::Uuid::new_v4().simple()),
            booking_id: w.booking_id.clone(),
            user_id: a.user_id.clone(),
        });
        render(PaymentServiceClient::new(w.lb.clone()).cancel_booking(request).await)
    })
}

fn subscribe(w: &World, a: Auth) -> Pin<Box<dyn Future<Output = Answer> + Send + '_>> {
    Box::pin(async move {
        let request = a.request(pb::SubscribeRequest { user_id: a.user_id.clone(), after_id: 0 });
        first(NotifierServiceClient::new(w.lb.clone()).subscribe(request).await).await
    })
}

fn list_notifications(w: &World, a: Auth) -> Pin<Box<dyn Future<Output = Answer> + Send + '_>> {
    Box::pin(async move {
        let request = a.request(pb::ListNotificationsRequest {
            user_id: a.user_id.clone(),
            after_id: 0,
            page_size: 50,
        });
        render(NotifierServiceClient::new(w.lb.clone()).list_notifications(request).await)
    })
}

fn register_webhook(w: &World, a: Auth) -> Pin<Box<dyn Future<Output = Answer> + Send + '_>> {
    Box::pin(async move {
        let request = a.request(pb::RegisterWebhookRequest {
            user_id: a.user_id.clone(),
            url: "https://hooks.example.com/ticketing".into(),
            secret: "attack-secret-0123456789".into(),
            kinds: vec![],
        });
        render(NotifierServiceClient::new(w.lb.clone()).register_webhook(request).await)
    })
}

fn venue_request() -> pb::CreateVenueRequest {
    one_row_venue("Security Hall", 10, &[])
}

fn event_request(venue_id: &str) -> pb::CreateEventRequest {
    open_event(venue_id, "Security", 4, 10)
}

fn create_venue(w: &World, a: Auth) -> Pin<Box<dyn Future<Output = Answer> + Send + '_>> {
    Box::pin(async move {
        render(InventoryServiceClient::new(w.lb.clone()).create_venue(a.request(venue_request())).await)
    })
}

fn create_event(w: &World, a: Auth) -> Pin<Box<dyn Future<Output = Answer> + Send + '_>> {
    Box::pin(async move {
        // Alice's event's venue: the only thing missing is the scope.
        let event = InventoryServiceClient::new(w.lb.clone())
            .get_event(pb::GetEventRequest { event_id: w.event_id.clone() })
            .await?
            .into_inner()
            .event
            .unwrap_or_default();
        let request = a.request(event_request(&event.venue_id));
        render(InventoryServiceClient::new(w.lb.clone()).create_event(request).await)
    })
}

fn refund_booking(w: &World, a: Auth) -> Pin<Box<dyn Future<Output = Answer> + Send + '_>> {
    Box::pin(async move {
        let request = a.request(pb::RefundBookingRequest {
            idempotency_key: format!("attack-{}", uuid::Uuid::new_v4().simple()),
            booking_id: w.booking_id.clone(),
            reason: "an attacker's refund".into(),
        });
        render(PaymentServiceClient::new(w.lb.clone()).refund_booking(request).await)
    })
}

fn sale_request(w: &World, a: &Auth) -> tonic::Request<pb::SaleControlRequest> {
    a.request(pb::SaleControlRequest { event_id: w.event_id.clone() })
}

fn pause_sale(w: &World, a: Auth) -> Pin<Box<dyn Future<Output = Answer> + Send + '_>> {
    Box::pin(async move {
        render(AdmissionServiceClient::new(w.lb.clone()).pause_sale(sale_request(w, &a)).await)
    })
}

fn resume_sale(w: &World, a: Auth) -> Pin<Box<dyn Future<Output = Answer> + Send + '_>> {
    Box::pin(async move {
        render(AdmissionServiceClient::new(w.lb.clone()).resume_sale(sale_request(w, &a)).await)
    })
}

fn close_sale(w: &World, a: Auth) -> Pin<Box<dyn Future<Output = Answer> + Send + '_>> {
    Box::pin(async move {
        render(AdmissionServiceClient::new(w.lb.clone()).close_sale(sale_request(w, &a)).await)
    })
}

fn get_sale_status(w: &World, a: Auth) -> Pin<Box<dyn Future<Output = Answer> + Send + '_>> {
    Box::pin(async move {
        render(AdmissionServiceClient::new(w.lb.clone()).get_sale_status(sale_request(w, &a)).await)
    })
}

fn reconcile(w: &World, a: Auth) -> Pin<Box<dyn Future<Output = Answer> + Send + '_>> {
    Box::pin(async move {
        let request = a.request(pb::ReconcileRequest { dry_run: false });
        render(PaymentServiceClient::new(w.lb.clone()).reconcile(request).await)
    })
}

/// The `google.rpc.ErrorInfo` reason of a refusal, or "".
fn reason(status: &Status) -> String {
    use tonic_types::StatusExt;
    status.get_details_error_info().map(|info| info.reason).unwrap_or_default()
}

/// The bad tokens: each with the reason it must be refused with.
struct BadTokens {
    expired: String,
    unknown_key: String,
    wrong_audience: String,
}

impl BadTokens {
    fn new(identity: &Identity, subject: &str, admin: bool) -> Self {
        let issuer = identity.issuer();
        let now = chrono::Utc::now().timestamp();
        let mut expired = issuer.claims(subject, admin, Duration::from_secs(60));
        // Well past the verifier's clock leeway.
        expired["iat"] = serde_json::Value::from(now - 600);
        expired["nbf"] = serde_json::Value::from(now - 600);
        expired["exp"] = serde_json::Value::from(now - 300);
        let mut other_audience = issuer.claims(subject, admin, Duration::from_secs(600));
        other_audience["aud"] = serde_json::Value::from("another-mesh");
        let intruder = TokenIssuer::generate("intruder");
        Self {
            expired: issuer.sign(&expired),
            unknown_key: intruder.token(subject, admin, Duration::from_secs(600)),
            wrong_audience: issuer.sign(&other_audience),
        }
    }

    /// (attack, token, reason).
    fn cases(&self) -> [(&'static str, Option<&str>, &'static str); 4] {
        [
            ("no token", None, "TOKEN_MISSING"),
            ("expired token", Some(&self.expired), "TOKEN_EXPIRED"),
            ("token of an unknown key", Some(&self.unknown_key), "TOKEN_UNKNOWN_KEY"),
            ("wrong-audience token", Some(&self.wrong_audience), "TOKEN_WRONG_AUDIENCE"),
        ]
    }
}

/// Alice's objects through the load balancer: the operator makes the event (with the admin
/// token: that is the positive half of the CreateEvent check); Alice joins, holds two seats,
/// pays for one, and her confirmation reaches her inbox.
async fn alice_world(lb: Channel, identity: &Identity) -> anyhow::Result<World> {
    let alice = identity.user(ALICE);
    let bought = buy_one_keep_one(
        &lb,
        &identity.admin(),
        (ALICE, &alice),
        venue_request(),
        event_request(""),
        "alice-security-1",
    )
    .await?;
    let (event_id, pass, paid) = (bought.event.event_id, bought.pass, bought.paid);
    let payment = paid.payment.expect("a payment");
    assert_eq!(payment.status(), pb::PaymentStatus::Confirmed);
    let booking = paid.booking.expect("a booking");
    let notifier = NotifierServiceClient::new(lb.clone());
    let told = eventually(EVENTUALLY, || {
        let (mut notifier, alice) = (notifier.clone(), alice.clone());
        async move {
            let request = alice.request(pb::ListNotificationsRequest {
                user_id: ALICE.into(),
                after_id: 0,
                page_size: 10,
            });
            let inbox = notifier.list_notifications(request).await.ok()?.into_inner();
            (!inbox.notifications.is_empty()).then_some(())
        }
    })
    .await;
    assert!(told.is_some(), "alice's booking reaches her inbox");
    Ok(World {
        lb,
        event_id,
        pass,
        hold_id: bought.kept_hold_id,
        payment_id: payment.payment_id,
        booking_id: booking.booking_id,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_user_facing_rpc_refuses_strangers_and_changes_nothing() -> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    let stack = start_stack(&env, None).await?;
    let identity = stack.0.identity.clone();
    let lb = tonic::transport::Endpoint::from_shared(stack.0.config.lb_url())?.connect().await?;
    let world = alice_world(lb, &identity).await?;
    let before =
        StoreSnapshot::settled(&env.database_url, &env.redis_url, &env.redis_prefix, EVENTUALLY).await?;

    let mut failures = Vec::new();
    let mut tried = 0;
    let mut check =
        |rpc: &str, attack: &str, answer: Answer, expected: &dyn Fn(&Answer) -> bool, want: &str| {
            tried += 1;
            if !expected(&answer) {
                let got = match &answer {
                    Ok(text) => format!("OK {}", text.chars().take(300).collect::<String>()),
                    Err(status) => format!("{:?} {} {:?}", status.code(), reason(status), status.message()),
                };
                failures.push(format!("{rpc} with {attack}: want {want}, got {got}"));
            }
        };
    let refused = |code: Code, why: &'static str| move |answer: &Answer| matches!(answer, Err(status) if status.code() == code && reason(status) == why);
    let secrets: Vec<String> = world.secrets().iter().map(|s| (*s).to_owned()).collect();
    let nothing_of_alice = move |answer: &Answer| match answer {
        Ok(text) => !secrets.iter().any(|secret| text.contains(secret.as_str())),
        Err(status) => status.code() == Code::NotFound,
    };

    let user_tokens = BadTokens::new(&identity, ALICE, false);
    let admin_tokens = BadTokens::new(&identity, identity::OPERATOR, true);
    let mallory = identity.user(MALLORY);
    for rpc in rpcs() {
        let bad = if matches!(rpc.role, Role::Admin) { &admin_tokens } else { &user_tokens };
        for (attack, token, why) in bad.cases() {
            let auth = Auth { bearer: token.map(bearer), user_id: ALICE.into() };
            let answer = (rpc.call)(&world, auth).await;
            check(
                rpc.name,
                attack,
                answer,
                &refused(Code::Unauthenticated, why),
                &format!("UNAUTHENTICATED {why}"),
            );
        }
        match rpc.role {
            Role::Admin => {
                let auth = Auth { bearer: Some(identity.user(ALICE).value().clone()), user_id: ALICE.into() };
                let answer = (rpc.call)(&world, auth).await;
                let want = refused(Code::PermissionDenied, "ADMIN_SCOPE_REQUIRED");
                check(rpc.name, "a user token", answer, &want, "PERMISSION_DENIED ADMIN_SCOPE_REQUIRED");
            }
            Role::User(as_herself) => {
                // Mallory's token, naming Alice.
                let auth = Auth { bearer: Some(mallory.value().clone()), user_id: ALICE.into() };
                let answer = (rpc.call)(&world, auth).await;
                let want = refused(Code::PermissionDenied, "USER_MISMATCH");
                check(
                    rpc.name,
                    "Mallory's token naming alice",
                    answer,
                    &want,
                    "PERMISSION_DENIED USER_MISMATCH",
                );
                // Mallory as herself, on Alice's ids.
                let auth = Auth { bearer: Some(mallory.value().clone()), user_id: String::new() };
                let attack = "Mallory's token on alice's objects";
                match as_herself {
                    AsHerself::NotFound => {
                        let answer = (rpc.call)(&world, auth).await;
                        check(
                            rpc.name,
                            attack,
                            answer,
                            &|a| matches!(a, Err(s) if s.code() == Code::NotFound),
                            "NOT_FOUND",
                        );
                    }
                    AsHerself::Refused(code, why) => {
                        let answer = (rpc.call)(&world, auth).await;
                        check(rpc.name, attack, answer, &refused(code, why), &format!("{code:?} {why}"));
                    }
                    AsHerself::NothingOfAlice => {
                        let answer = (rpc.call)(&world, auth).await;
                        check(rpc.name, attack, answer, &nothing_of_alice, "nothing of alice's");
                    }
                    AsHerself::NotAnAttack => {}
                }
            }
        }
    }
    let after = StoreSnapshot::take(&env.database_url, &env.redis_url, &env.redis_prefix).await?;
    let changed = before.diff(&after);
    println!("{tried} attacks tried; {} answered wrong; {} store differences", failures.len(), changed.len());
    assert!(
        failures.is_empty(),
        "{} of {tried} attacks got the wrong answer:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(changed.is_empty(), "the attacks changed the stores:\n{}", changed.join("\n"));
    Ok(())
}
