//! Every RPC acts as the caller's verified token subject: no token, a bad token or another
//! user's token never reads an inbox or registers a webhook, and changes nothing.

use std::time::Duration;

use futures::StreamExt;
use service_runtime::auth::TokenIssuer;
use test_support::testenv::TestEnv;
use ticketing_proto::v1::{ListNotificationsRequest, RegisterWebhookRequest, SubscribeRequest};
use tonic::{Code, Status};

use crate::helpers::{Client, WAIT, booking_confirmed, bus, count, spawn_app, wait_for_inbox};

/// The ErrorInfo reason of a status.
fn reason(status: &Status) -> String {
    service_runtime::status::reason(status).map(|(reason, _)| reason).unwrap_or_default()
}

/// Calls all three RPCs as `client` naming `user_id`; returns each one's refusal.
async fn refusals(client: &mut Client, user_id: &str) -> Vec<Status> {
    let mut refused = Vec::new();
    match client.subscribe(SubscribeRequest { user_id: user_id.into(), after_id: 0 }).await {
        Ok(_) => panic!("Subscribe({user_id:?}) was answered"),
        Err(status) => refused.push(status),
    }
    match client
        .list_notifications(ListNotificationsRequest { user_id: user_id.into(), after_id: 0, page_size: 0 })
        .await
    {
        Ok(page) => panic!("ListNotifications({user_id:?}) was answered: {page:?}"),
        Err(status) => refused.push(status),
    }
    match client
        .register_webhook(RegisterWebhookRequest {
            user_id: user_id.into(),
            url: "http://127.0.0.1:9/hook".into(),
            secret: "s".repeat(16),
            kinds: vec![],
        })
        .await
    {
        Ok(webhook) => panic!("RegisterWebhook({user_id:?}) was answered: {webhook:?}"),
        Err(status) => refused.push(status),
    }
    refused
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_acts_as_the_token_subject_only() -> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    let app = spawn_app(&env).await?;
    let bus = bus(&env).await?;
    bus.publish(&booking_confirmed("alice")).await?;
    wait_for_inbox(&app, "alice", 1).await?;

    let issuer = TokenIssuer::for_tests();
    let mut expired = issuer.claims("alice", false, Duration::from_secs(60));
    let now = expired["iat"].as_u64().unwrap_or_default();
    expired["iat"] = (now - 7_200).into();
    expired["nbf"] = (now - 7_200).into();
    expired["exp"] = (now - 3_600).into();
    let mut wrong_audience = issuer.claims("alice", false, Duration::from_secs(60));
    wrong_audience["aud"] = "some-other-service".into();
    let bad_tokens = [
        (issuer.sign(&expired), "TOKEN_EXPIRED"),
        (
            TokenIssuer::generate("stranger").token("alice", false, Duration::from_secs(60)),
            "TOKEN_UNKNOWN_KEY",
        ),
        (issuer.sign(&wrong_audience), "TOKEN_WRONG_AUDIENCE"),
    ];
    for user_id in ["alice", ""] {
        // No token at all.
        let mut anonymous = app.anonymous();
        let status = anonymous
            .list_notifications(ListNotificationsRequest {
                user_id: user_id.into(),
                after_id: 0,
                page_size: 0,
            })
            .await
            .expect_err("no token");
        assert_eq!((status.code(), reason(&status).as_str()), (Code::Unauthenticated, "TOKEN_MISSING"));
        let status = anonymous
            .subscribe(SubscribeRequest { user_id: user_id.into(), after_id: 0 })
            .await
            .expect_err("no token");
        assert_eq!((status.code(), reason(&status).as_str()), (Code::Unauthenticated, "TOKEN_MISSING"));
        let status = anonymous
            .register_webhook(RegisterWebhookRequest {
                user_id: user_id.into(),
                url: "http://127.0.0.1:9/hook".into(),
                secret: "s".repeat(16),
                kinds: vec![],
            })
            .await
            .expect_err("no token");
        assert_eq!((status.code(), reason(&status).as_str()), (Code::Unauthenticated, "TOKEN_MISSING"));
        // Expired, unknown key, wrong audience.
        for (token, expected) in &bad_tokens {
            for status in refusals(&mut app.client_with(token), user_id).await {
                assert_eq!((status.code(), reason(&status).as_str()), (Code::Unauthenticated, *expected));
            }
        }
    }
    // Bob's valid token naming alice.
    for status in refusals(&mut app.client("bob"), "alice").await {
        assert_eq!((status.code(), reason(&status).as_str()), (Code::PermissionDenied, "USER_MISMATCH"));
    }
    assert_eq!(count(&env, "SELECT count(*) FROM notifier.webhooks").await?, 0, "nothing registered");

    // Without a user_id, bob gets bob's inbox and stream: never alice's backlog.
    let mut bob = app.client("bob");
    let page = bob
        .list_notifications(ListNotificationsRequest { user_id: String::new(), after_id: 0, page_size: 0 })
        .await?
        .into_inner();
    assert!(page.notifications.is_empty(), "{page:?}");
    let mut stream =
        bob.subscribe(SubscribeRequest { user_id: String::new(), after_id: 0 }).await?.into_inner();
    let for_bob = booking_confirmed("bob");
    bus.publish(&for_bob).await?;
    let first =
        tokio::time::timeout(WAIT, stream.next()).await?.ok_or_else(|| anyhow::anyhow!("stream ended"))??;
    assert_eq!((first.user_id.as_str(), first.message_id.as_str()), ("bob", for_bob.message_id.as_str()));

    // Alice without a user_id: her own inbox, and a webhook registered in her name.
    let mut alice = app.client("alice");
    let page = alice
        .list_notifications(ListNotificationsRequest { user_id: String::new(), after_id: 0, page_size: 0 })
        .await?
        .into_inner();
    assert_eq!(page.notifications.len(), 1);
    assert!(page.notifications.iter().all(|n| n.user_id == "alice"));
    alice
        .register_webhook(RegisterWebhookRequest {
            user_id: String::new(),
            url: "http://127.0.0.1:9/hook".into(),
            secret: "s".repeat(16),
            kinds: vec![],
        })
        .await?;
    assert_eq!(count(&env, "SELECT count(*) FROM notifier.webhooks WHERE user_id = 'alice'").await?, 1);
    app.stop().await
}
