//! The internal listener: mutual TLS, and only payment's certificate may call
//! `SeatLockInternalService`. Refusals change nothing.

use ticketing_proto::{
    internal::{
        BeginCheckoutRequest, ConfirmHoldRequest,
        seat_lock_internal_service_client::SeatLockInternalServiceClient,
    },
    v1::{GetHoldRequest, HoldState},
};
use tonic::Code;

use super::helpers::*;

/// The three internal RPCs for `hold`, as `client`, each answer's status (or OK).
async fn call_all(
    app: &TestApp,
    mut client: SeatLockInternalServiceClient<tonic::transport::Channel>,
    hold: &ticketing_proto::v1::Hold,
) -> Vec<(&'static str, Result<(), tonic::Status>)> {
    let checkout = BeginCheckoutRequest {
        event_id: app.event_id.clone(),
        hold_id: hold.hold_id.clone(),
        user_id: hold.user_id.clone(),
    };
    let confirm = ConfirmHoldRequest {
        event_id: app.event_id.clone(),
        hold_id: hold.hold_id.clone(),
        user_id: hold.user_id.clone(),
        booking_id: "booking-attack".into(),
    };
    vec![
        ("BeginCheckout", client.begin_checkout(checkout).await.map(|_| ())),
        ("ConfirmHold", client.confirm_hold(confirm).await.map(|_| ())),
        ("ReturnSeats", client.return_seats(app.return_request(hold, "booking-attack")).await.map(|_| ())),
    ]
}

/// The hold is still HELD and zone A still counts its two seats taken.
async fn unchanged(app: &TestApp, hold: &ticketing_proto::v1::Hold) -> anyhow::Result<()> {
    let request = GetHoldRequest {
        event_id: app.event_id.clone(),
        hold_id: hold.hold_id.clone(),
        user_id: "u1".into(),
    };
    let got = app.client().get_hold(request).await?.into_inner();
    assert_eq!(got.state, HoldState::Held as i32, "{got:?}");
    assert_eq!(app.free("A").await?, i64::from(CAPACITY_A) - 2);
    assert_eq!(app.bought("u1").await?, 0);
    Ok(())
}

#[tokio::test]
async fn another_services_certificate_is_refused_with_permission_denied() -> anyhow::Result<()> {
    let app = spawn_app(600).await?;
    let hold = app.hold("u1", &["A-R1-1", "A-R1-2"]).await?;
    for identity in ["notifier", "admission", "tools"] {
        for (rpc, result) in call_all(&app, app.internal_as(Some(identity))?, &hold).await {
            let status = result.expect_err("another service is refused");
            assert_eq!(status.code(), Code::PermissionDenied, "{identity} → {rpc}: {status:?}");
            let (reason, metadata) = reason_of(&status);
            assert_eq!(reason, "SERVICE_NOT_ALLOWED", "{identity} → {rpc}");
            assert_eq!(metadata.get("caller").map(String::as_str), Some(identity));
        }
    }
    unchanged(&app, &hold).await?;

    // Payment's certificate: the same calls work.
    let checkout = BeginCheckoutRequest {
        event_id: app.event_id.clone(),
        hold_id: hold.hold_id.clone(),
        user_id: "u1".into(),
    };
    let in_checkout = app.internal_as(Some("payment"))?.begin_checkout(checkout).await?.into_inner();
    assert_eq!(in_checkout.state, HoldState::Checkout as i32);
    assert_eq!(app.sell(&hold, "booking-1").await?.state, HoldState::Sold as i32);
    Ok(())
}

#[tokio::test]
async fn a_caller_without_a_mesh_certificate_fails_the_handshake() -> anyhow::Result<()> {
    let app = spawn_app(600).await?;
    let hold = app.hold("u1", &["A-R1-1", "A-R1-2"]).await?;
    // No client certificate at all.
    for (rpc, result) in call_all(&app, app.internal_as(None)?, &hold).await {
        let status = result.expect_err("no certificate is refused");
        assert!(
            matches!(
                status.code(),
                Code::Unavailable | Code::Unknown | Code::Cancelled | Code::Unauthenticated
            ),
            "{rpc}: {status:?}"
        );
    }
    // A "payment" certificate made by another CA (anyone can make one).
    let forged_dir = std::env::temp_dir().join(format!("forged-certs-{}", app.env.nats_prefix));
    let forged = test_support::certs::ensure(&forged_dir)?;
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(std::fs::read(app.certs.ca())?))
        .identity(tonic::transport::Identity::from_pem(
            std::fs::read(forged.cert("payment"))?,
            std::fs::read(forged.key("payment"))?,
        ));
    let channel = ticketing_proto::connect_tls(
        &format!("https://127.0.0.1:{}", app.internal_port),
        std::time::Duration::from_secs(5),
        tls,
    )?;
    for (rpc, result) in call_all(&app, SeatLockInternalServiceClient::new(channel), &hold).await {
        let status = result.expect_err("a certificate of another CA is refused");
        assert!(
            matches!(status.code(), Code::Unavailable | Code::Unknown | Code::Cancelled),
            "{rpc}: {status:?}"
        );
    }
    // Plaintext to the internal port.
    let plain = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{}", app.internal_port))?
        .connect_lazy();
    for (rpc, result) in call_all(&app, SeatLockInternalServiceClient::new(plain), &hold).await {
        assert!(result.is_err(), "{rpc}: plaintext is refused");
    }
    unchanged(&app, &hold).await?;
    std::fs::remove_dir_all(forged_dir)?;
    Ok(())
}

#[tokio::test]
async fn the_public_listener_does_not_serve_internal_rpcs() -> anyhow::Result<()> {
    let app = spawn_app(600).await?;
    let hold = app.hold("u1", &["A-R1-1", "A-R1-2"]).await?;
    for (rpc, result) in call_all(&app, SeatLockInternalServiceClient::new(app.channel.clone()), &hold).await
    {
        let status = result.expect_err("the public port has no internal service");
        assert_eq!(status.code(), Code::Unimplemented, "{rpc}: {status:?}");
    }
    unchanged(&app, &hold).await?;
    Ok(())
}
