//! The internal listener: mutual TLS, and only seat-lock's certificate may call
//! `PaymentInternalService.ListSoldSeats` (it names every buyer).

use ticketing_proto::internal::{
    ListSoldSeatsRequest, payment_internal_service_client::PaymentInternalServiceClient,
};
use tonic::Code;

use crate::helpers::{reason, spawn_app};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_seat_lock_lists_the_sold_seats() {
    let app = spawn_app().await;
    let hold_id = app.seat_lock.add_hold(app.event_id, "alice", &["A-1-1"], 1);
    app.pay(app.pay_request("mtls-key-1", hold_id, "alice", "pm_card_ok")).await.unwrap();
    let request = || ListSoldSeatsRequest { event_id: app.event_id.to_string() };

    for identity in ["payment", "notifier", "admission", "tools"] {
        let status = app.internal_as(Some(identity)).list_sold_seats(request()).await.unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied, "{identity}: {status:?}");
        assert_eq!(reason(&status).as_deref(), Some("SERVICE_NOT_ALLOWED"), "{identity}");
    }
    // No client certificate: the handshake fails.
    let status = app.internal_as(None).list_sold_seats(request()).await.unwrap_err();
    assert!(matches!(status.code(), Code::Unavailable | Code::Unknown | Code::Cancelled), "{status:?}");
    // The public port does not serve it at all.
    let public = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{}", app.port)).unwrap();
    let public = PaymentInternalServiceClient::new(public.connect_lazy());
    let status = public.clone().list_sold_seats(request()).await.unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented, "{status:?}");

    // Seat-lock's certificate: the buyer's seat.
    let seats = app.internal().list_sold_seats(request()).await.unwrap().into_inner().seats;
    assert_eq!(
        seats.iter().map(|s| (s.seat_id.as_str(), s.user_id.as_str())).collect::<Vec<_>>(),
        [("A-1-1", "alice")]
    );
}
