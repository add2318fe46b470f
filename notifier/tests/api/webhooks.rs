//! Webhooks through the real notifier: signed deliveries over http and https, retries, the
//! address policy at registration and at delivery, the per-user limit and sealed secrets.

use std::{
    path::PathBuf,
    sync::{Arc, Mutex},
};

use notifier::{Config, config::Redacted, migration::Migrator, webhook::secret::EXAMPLE_SECRET_KEY};
use sea_orm::{ConnectionTrait, DbBackend, Statement};
use sea_orm_migration::MigratorTrait;
use service_runtime::bus::envelope;
use test_support::testenv::{TestEnv, eventually};
use ticketing_proto::{
    events::{PaymentFailed, event_envelope::Body},
    v1::{NotificationKind, RegisterWebhookRequest},
};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::TcpListener,
};
use tokio_rustls::{
    TlsAcceptor,
    rustls::{
        self, ServerConfig,
        pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer},
    },
};
use tonic::Code;

use crate::helpers::{self, WAIT, booking_confirmed, bus, count, spawn_app_with};

const SECRET: &str = "a-secret-of-32-bytes-for-hmac!!!";
/// A second, non-example key for rotation tests.
const KEY_B: &str = "b:Hx4dHBsaGRgXFhUUExIREA8ODQwLCgkIBwYFBAMCAQA=";

/// One request a webhook receiver got.
#[derive(Debug, Clone)]
struct Received {
    head: String,
    body: Vec<u8>,
}

impl Received {
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim().eq_ignore_ascii_case(name).then(|| value.trim().to_owned())
        })
    }

    /// Checks the signature header against `secret`: the signature of this body at the sent
    /// timestamp, as [`notifier::webhook::signature`] computes it (its unit test pins it to
    /// known HMAC-SHA256 vectors, so this test does not compute the HMAC a second way).
    fn signed_with(&self, secret: &str) -> bool {
        let (Some(timestamp), Some(signature)) =
            (self.header("X-Ticketing-Timestamp"), self.header("X-Ticketing-Signature"))
        else {
            return false;
        };
        let Ok(timestamp) = timestamp.parse::<i64>() else { return false };
        signature == notifier::webhook::signature(secret.as_bytes(), timestamp, &self.body)
    }
}

type Log = Arc<Mutex<Vec<Received>>>;

/// Reads one request, logs it and answers `status`.
async fn serve_one<S: AsyncRead + AsyncWrite + Unpin>(mut socket: S, status: u16, log: &Log) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let (head, body) = loop {
        let Ok(n) = socket.read(&mut chunk).await else { break (String::new(), Vec::new()) };
        if n == 0 {
            break (String::new(), Vec::new());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let length: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned())
                })
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + length {
                break (head, buf[end + 4..end + 4 + length].to_vec());
            }
        }
    };
    log.lock().unwrap().push(Received { head, body });
    let answer = format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    let _ = socket.write_all(answer.as_bytes()).await;
    let _ = socket.shutdown().await;
}

/// A webhook receiver on 127.0.0.1 answering `statuses` in turn (the last one from then on),
/// over TLS when `tls` is given.
async fn receiver(statuses: Vec<u16>, tls: Option<TlsAcceptor>) -> anyhow::Result<(u16, Log)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let received: Log = Arc::default();
    let log = received.clone();
    tokio::spawn(async move {
        let mut served = 0usize;
        while let Ok((socket, _)) = listener.accept().await {
            let status = statuses[served.min(statuses.len() - 1)];
            served += 1;
            match &tls {
                Some(acceptor) => match acceptor.accept(socket).await {
                    Ok(stream) => serve_one(stream, status, &log).await,
                    Err(_) => served -= 1,
                },
                None => serve_one(socket, status, &log).await,
            }
        }
    });
    Ok((port, received))
}

/// A test CA (its PEM written to a file, for WEBHOOK_CA_FILE) and a TLS acceptor whose
/// certificate it signed, for `localhost` and 127.0.0.1.
fn test_pki(dir: &tempfile::TempDir) -> anyhow::Result<(PathBuf, TlsAcceptor)> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "notifier test CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf_key = KeyPair::generate()?;
    let leaf = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?
        .signed_by(&leaf_key, &issuer)?;
    let ca_file = dir.path().join("webhook-ca.pem");
    std::fs::write(&ca_file, ca_cert.pem())?;
    let config = ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(leaf.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
        )?;
    Ok((ca_file, TlsAcceptor::from(Arc::new(config))))
}

fn webhook(user: &str, url: &str) -> RegisterWebhookRequest {
    RegisterWebhookRequest { user_id: user.into(), url: url.into(), secret: SECRET.into(), kinds: vec![] }
}

/// The ErrorInfo reason of a status.
fn reason(status: &tonic::Status) -> String {
    service_runtime::status::reason(status).map(|(reason, _)| reason).unwrap_or_default()
}

/// Waits until `sql` counts `expected`.
async fn wait_count(env: &TestEnv, sql: &str, expected: i64) -> bool {
    eventually(WAIT, || async { (count(env, sql).await.ok()? == expected).then_some(()) }).await.is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_are_signed_and_retried() -> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    let mut config = helpers::config(&env);
    config.webhook_max_attempts = 3;
    let app = spawn_app_with(config).await?;
    let mut client = app.client("frank");
    let bus = bus(&env).await?;

    // frank's receiver fails twice, then accepts; it only wants booking confirmations.
    let (port, received) = receiver(vec![500, 503, 200], None).await?;
    let url = format!("http://127.0.0.1:{port}/hook");
    let status = client
        .register_webhook(RegisterWebhookRequest { secret: "too-short".into(), ..webhook("frank", &url) })
        .await
        .expect_err("short secret");
    assert_eq!(status.code(), Code::InvalidArgument);
    let registered = client
        .register_webhook(RegisterWebhookRequest {
            kinds: vec![NotificationKind::BookingConfirmed as i32],
            ..webhook("frank", &url)
        })
        .await?
        .into_inner();
    uuid::Uuid::parse_str(&registered.webhook_id)?;
    // grace's receiver always fails: the delivery dies after WEBHOOK_MAX_ATTEMPTS (3).
    let (dead_port, dead_received) = receiver(vec![500], None).await?;
    app.client("grace").register_webhook(webhook("grace", &format!("http://localhost:{dead_port}/"))).await?;

    let confirmed = booking_confirmed("frank");
    bus.publish(&confirmed).await?;
    bus.publish(&envelope(
        uuid::Uuid::new_v4().to_string(),
        Body::PaymentFailed(PaymentFailed {
            event_id: "e".into(),
            user_id: "frank".into(),
            payment_id: "p".into(),
            hold_id: "h".into(),
            reason: "declined".into(),
        }),
    ))
    .await?;
    bus.publish(&booking_confirmed("grace")).await?;

    assert!(
        wait_count(&env, "SELECT count(*) FROM notifier.webhook_deliveries WHERE status <> 'pending'", 2)
            .await,
        "both deliveries finished"
    );
    let requests = received.lock().unwrap().clone();
    assert_eq!(requests.len(), 3, "two failures, then success; the payment failure is not subscribed");
    for request in &requests {
        assert!(request.head.starts_with("POST /hook HTTP/1.1\r\n"), "{}", request.head);
        assert!(request.signed_with(SECRET), "{request:?}");
        let json: serde_json::Value = serde_json::from_slice(&request.body)?;
        assert_eq!(json["message_id"], confirmed.message_id.as_str());
        assert_eq!(json["user_id"], "frank");
        assert_eq!(json["kind"], "BOOKING_CONFIRMED");
    }
    assert_eq!(
        count(
            &env,
            "SELECT count(*) FROM notifier.webhook_deliveries WHERE status = 'delivered' AND attempts = 3"
        )
        .await?,
        1
    );
    assert_eq!(
        count(&env, "SELECT count(*) FROM notifier.webhook_deliveries WHERE status = 'dead' AND attempts = 3 AND last_error LIKE '%500%'").await?,
        1
    );
    assert_eq!(dead_received.lock().unwrap().len(), 3);
    app.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_are_delivered_over_https_and_http_is_refused_unless_allowed() -> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    let dir = tempfile::tempdir()?;
    let (ca_file, acceptor) = test_pki(&dir)?;
    let mut config = helpers::config(&env);
    config.webhook_allow_http = false;
    config.webhook_ca_file = Some(ca_file);
    let app = spawn_app_with(config).await?;
    let mut client = app.client("ivan");
    let bus = bus(&env).await?;

    let (port, received) = receiver(vec![200], Some(acceptor)).await?;
    let status = client
        .register_webhook(webhook("ivan", &format!("http://localhost:{port}/hook")))
        .await
        .expect_err("http is not allowed");
    assert_eq!((status.code(), reason(&status).as_str()), (Code::InvalidArgument, "WEBHOOK_URL_NOT_ALLOWED"));
    // By name (the certificate's DNS name) and by IP literal (its IP SAN).
    client.register_webhook(webhook("ivan", &format!("https://localhost:{port}/hook"))).await?;
    client.register_webhook(webhook("ivan", &format!("https://127.0.0.1:{port}/ip"))).await?;

    let confirmed = booking_confirmed("ivan");
    bus.publish(&confirmed).await?;
    assert!(
        wait_count(&env, "SELECT count(*) FROM notifier.webhook_deliveries WHERE status = 'delivered'", 2)
            .await,
        "both https deliveries delivered"
    );
    let requests = received.lock().unwrap().clone();
    assert_eq!(requests.len(), 2);
    let mut paths: Vec<_> =
        requests.iter().map(|r| r.head.lines().next().unwrap_or_default().to_owned()).collect();
    paths.sort();
    assert_eq!(paths, ["POST /hook HTTP/1.1", "POST /ip HTTP/1.1"]);
    assert!(requests.iter().all(|r| r.signed_with(SECRET)));
    app.stop().await?;

    // Without the test CA the receiver's certificate is not trusted: never delivered.
    let mut config = helpers::config(&env);
    config.webhook_allow_http = false;
    config.webhook_max_attempts = 1;
    let app = spawn_app_with(config).await?;
    bus.publish(&booking_confirmed("ivan")).await?;
    assert!(
        wait_count(&env, "SELECT count(*) FROM notifier.webhook_deliveries WHERE status = 'dead' AND last_error LIKE 'TLS%'", 2).await,
        "an untrusted certificate fails the delivery"
    );
    assert_eq!(received.lock().unwrap().len(), 2, "nothing more was received");
    app.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_cannot_be_aimed_inside() -> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    // As in production: nothing allow-listed (http stays allowed, to show the address decides).
    let mut config = helpers::config(&env);
    config.webhook_allowed_networks = vec![];
    let app = spawn_app_with(config).await?;
    let mut client = app.client("judy");
    let (port, received) = receiver(vec![200], None).await?;

    for (url, expected_reason) in [
        // A real name that resolves to 127.0.0.1 (and ::1).
        (format!("http://localhost:{port}/hook"), "WEBHOOK_ADDRESS_FORBIDDEN"),
        (format!("http://127.0.0.1:{port}/hook"), "WEBHOOK_ADDRESS_FORBIDDEN"),
        (format!("http://127.1.2.3:{port}/hook"), "WEBHOOK_ADDRESS_FORBIDDEN"),
        (format!("http://[::1]:{port}/hook"), "WEBHOOK_ADDRESS_FORBIDDEN"),
        (format!("http://[::ffff:127.0.0.1]:{port}/hook"), "WEBHOOK_ADDRESS_FORBIDDEN"),
        // Literal private, link-local (cloud metadata), CGNAT and unspecified addresses:
        // refused before any connection is tried.
        ("http://10.0.0.1/hook".into(), "WEBHOOK_ADDRESS_FORBIDDEN"),
        ("http://192.168.1.10:8080/hook".into(), "WEBHOOK_ADDRESS_FORBIDDEN"),
        ("http://169.254.169.254/latest/meta-data".into(), "WEBHOOK_ADDRESS_FORBIDDEN"),
        ("http://100.64.0.1/".into(), "WEBHOOK_ADDRESS_FORBIDDEN"),
        ("http://0.0.0.0:8080/".into(), "WEBHOOK_ADDRESS_FORBIDDEN"),
        ("http://[fd00::1]/".into(), "WEBHOOK_ADDRESS_FORBIDDEN"),
        ("file:///etc/passwd".into(), "WEBHOOK_URL_NOT_ALLOWED"),
    ] {
        let status = client.register_webhook(webhook("judy", &url)).await.expect_err(&url);
        assert_eq!(status.code(), Code::InvalidArgument, "{url}");
        assert_eq!(reason(&status), expected_reason, "{url}: {}", status.message());
        assert!(!status.message().contains("127.0.0.1") || url.contains("127.0.0.1"), "{}", status.message());
    }
    assert_eq!(count(&env, "SELECT count(*) FROM notifier.webhooks").await?, 0);
    app.stop().await?;

    // Ports are allow-listed too.
    let mut config = helpers::config(&env);
    config.webhook_allowed_ports = vec!["443".into()];
    let app = spawn_app_with(config).await?;
    let status = app
        .client("judy")
        .register_webhook(webhook("judy", &format!("http://127.0.0.1:{port}/hook")))
        .await
        .expect_err("port");
    assert_eq!((status.code(), reason(&status).as_str()), (Code::InvalidArgument, "WEBHOOK_URL_NOT_ALLOWED"));
    assert!(status.message().contains(&port.to_string()));
    app.stop().await?;

    // Registered while localhost was allow-listed; the allow-list is gone at delivery (as if
    // the name now resolved inside): the delivery is blocked, never sent, never retried.
    let app = spawn_app_with(helpers::config(&env)).await?;
    app.client("judy").register_webhook(webhook("judy", &format!("http://localhost:{port}/hook"))).await?;
    app.stop().await?;
    let mut config = helpers::config(&env);
    config.webhook_allowed_networks = vec![];
    let app = spawn_app_with(config).await?;
    bus(&env).await?.publish(&booking_confirmed("judy")).await?;
    assert!(
        wait_count(
            &env,
            "SELECT count(*) FROM notifier.webhook_deliveries WHERE status = 'blocked' AND attempts = 1 \
             AND last_error LIKE '%loopback%'",
            1
        )
        .await,
        "the delivery is blocked"
    );
    assert!(received.lock().unwrap().is_empty(), "nothing reached the receiver");
    app.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_registrations_never_exceed_the_per_user_limit() -> anyhow::Result<()> {
    const LIMIT: u32 = 3;
    const ATTEMPTS: usize = 24;
    let env = TestEnv::new().await?;
    let mut config = helpers::config(&env);
    config.max_webhooks_per_user = LIMIT;
    let app = spawn_app_with(config).await?;

    let barrier = Arc::new(tokio::sync::Barrier::new(ATTEMPTS));
    let tasks: Vec<_> = (0..ATTEMPTS)
        .map(|i| {
            let mut client = app.client("mallory");
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                client.register_webhook(webhook("mallory", &format!("http://127.0.0.1:9/{i}"))).await
            })
        })
        .collect();
    let mut accepted = 0;
    for task in tasks {
        match task.await? {
            Ok(_) => accepted += 1,
            Err(status) => {
                assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
                assert_eq!(reason(&status), "WEBHOOK_LIMIT_REACHED");
            }
        }
    }
    assert_eq!(accepted, LIMIT as usize);
    assert_eq!(count(&env, "SELECT count(*) FROM notifier.webhooks WHERE user_id = 'mallory'").await?, 3);
    // Another user's quota is their own.
    app.client("niaj").register_webhook(webhook("niaj", "http://127.0.0.1:9/")).await?;
    app.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_stored_sealed_and_plain_text_rows_are_sealed_at_start() -> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    // The schema as it was before sealing, with a webhook whose secret is in plain text.
    let db = service_runtime::db::connect(&env.database_url, "notifier", 2).await?;
    Migrator::up(&db, Some(1)).await?;
    let (port, received) = receiver(vec![200], None).await?;
    let legacy_id = uuid::Uuid::new_v4();
    db.execute_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "INSERT INTO webhooks (webhook_id, user_id, url, secret) VALUES ($1, 'olivia', $2, $3)",
        [legacy_id.into(), format!("http://127.0.0.1:{port}/legacy").into(), SECRET.into()],
    ))
    .await?;
    db.close().await?;

    let app = spawn_app_with(helpers::config(&env)).await?;
    let columns = count(
        &env,
        "SELECT count(*) FROM information_schema.columns \
         WHERE table_schema = 'notifier' AND table_name = 'webhooks' AND column_name = 'secret'",
    )
    .await?;
    assert_eq!(columns, 0, "the plain-text column is gone");
    let other_secret = "another-secret-of-32-bytes-long!";
    app.client("olivia")
        .register_webhook(RegisterWebhookRequest {
            secret: other_secret.into(),
            ..webhook("olivia", &format!("http://127.0.0.1:{port}/new"))
        })
        .await?;
    // Neither secret is stored in clear.
    for secret in [SECRET, other_secret] {
        let found = count(
            &env,
            &format!(
                "SELECT count(*) FROM notifier.webhooks WHERE position('{secret}'::bytea IN secret_sealed) > 0 \
                 OR url LIKE '%{secret}%'"
            ),
        )
        .await?;
        assert_eq!(found, 0, "{secret} is in the table");
    }
    assert_eq!(
        count(&env, "SELECT count(*) FROM notifier.webhooks WHERE secret_kid = 'example' AND length(secret_sealed) > 12").await?,
        2
    );
    app.stop().await?;

    // Rotation: the new key first; start re-seals every secret under it, then the old key can go.
    let mut config = helpers::config(&env);
    config.webhook_secret_key = Some(Redacted::new(format!("{KEY_B},{EXAMPLE_SECRET_KEY}")));
    spawn_app_with(config).await?.stop().await?;
    assert_eq!(count(&env, "SELECT count(*) FROM notifier.webhooks WHERE secret_kid = 'b'").await?, 2);
    let mut config = helpers::config(&env);
    config.webhook_secret_key = Some(Redacted::new(KEY_B));
    let app = spawn_app_with(config).await?;
    bus(&env).await?.publish(&booking_confirmed("olivia")).await?;
    assert!(
        wait_count(&env, "SELECT count(*) FROM notifier.webhook_deliveries WHERE status = 'delivered'", 2)
            .await,
        "both delivered"
    );
    let requests = received.lock().unwrap().clone();
    let legacy = requests.iter().find(|r| r.head.starts_with("POST /legacy ")).expect("legacy delivery");
    let new = requests.iter().find(|r| r.head.starts_with("POST /new ")).expect("new delivery");
    assert!(legacy.signed_with(SECRET), "the plain-text secret survived sealing and rotation");
    assert!(new.signed_with(other_secret));
    app.stop().await?;

    // A key ring that cannot open the stored secrets is refused at start, naming the key id
    // and never a key.
    let mut config = helpers::config(&env);
    config.webhook_secret_key = Some(Redacted::new("c:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="));
    let error = format!("{:#}", spawn_app_with(config).await.err().expect("refused"));
    assert!(error.contains("\"b\"") && !error.contains("Hx4dHB") && !error.contains("AAECAw"), "{error}");
    Ok(())
}

#[tokio::test]
async fn the_example_secret_key_is_refused_at_start_unless_allowed() -> anyhow::Result<()> {
    let mut config: Config = Config::for_test("postgres://x", "nats://x", "p");
    config.allow_example_secrets = false;
    let error = spawn_app_with(config).await.err().expect("refused").to_string();
    assert!(error.contains("example key"), "{error}");
    assert!(!error.contains(EXAMPLE_SECRET_KEY.split(':').nth(1).unwrap_or("-")), "{error}");
    Ok(())
}
