//! Shared test plumbing: events on the fake inventory (`test_support`), the admission app on a
//! free port, Redis and NATS readers.

use std::time::Duration;

use admission::{App, Config};
use fred::{
    clients::Client,
    interfaces::{ClientLike, HashesInterface},
    types::config::Config as RedisConfig,
};
use futures::StreamExt;
use prost::Message;
use service_runtime::{
    args::{NatsArgs, RedisArgs},
    bus::{EventBus, kind, timestamp_ms},
    config::ServerArgs,
};
use test_support::testenv::{TestEnv, eventually};
use ticketing_proto::{
    events::{Admitted, EventEnvelope, PassEnded, event_envelope::Body},
    v1::{Event, admission_service_client::AdmissionServiceClient},
};
use tonic::{Request, transport::Channel};

/// A pass key made for this test run: (PASS_SIGNING_KEYS, PASS_VERIFY_KEYS).
pub static PASS_KEYS: std::sync::LazyLock<(String, String)> =
    std::sync::LazyLock::new(|| ticketing_proto::pass::generate_signing_key("k1"));
pub const SHUFFLE_KEY: &str = "shuffle-secret-for-tests-0123";

pub use test_support::fakes::FakeInventory;

/// The events admission's tests define on the fake inventory.
pub trait AddEvent {
    /// Defines an event; `opens_in_ms` may be negative (already open).
    fn add_event(&self, opens_in_ms: i64, capacity: u32, tick_ms: u32, pass_ttl_seconds: u32) -> String;
}

impl AddEvent for FakeInventory {
    fn add_event(&self, opens_in_ms: i64, capacity: u32, tick_ms: u32, pass_ttl_seconds: u32) -> String {
        let event_id = uuid::Uuid::new_v4().to_string();
        let now = chrono::Utc::now().timestamp_millis();
        self.insert(Event {
            event_id: event_id.clone(),
            name: "test".into(),
            sale_opens_at: Some(timestamp_ms(now + opens_in_ms)),
            admission_capacity: capacity,
            admission_tick_ms: tick_ms,
            pass_ttl_seconds,
            ..Default::default()
        });
        event_id
    }
}

pub fn config(env: &TestEnv, inventory_url: &str) -> Config {
    Config {
        server: ServerArgs::loopback(),
        redis: RedisArgs::new(&env.redis_url, &env.redis_prefix),
        nats: NatsArgs::new(&env.nats_url, &env.nats_prefix),
        inventory_url: inventory_url.to_owned(),
        pass_signing_keys: PASS_KEYS.0.parse().unwrap(),
        allow_example_secrets: false,
        controller_poll_ms: 10,
        join_rate_limit: 5,
        shuffle_key: Some(SHUFFLE_KEY.parse().unwrap()),
        check_in_window_ms: 60_000,
        max_watchers: 1_000,
        finished_event_after_ms: 600_000,
    }
}

/// A token of `user` from the test issuer (the one `ServerArgs::loopback` trusts).
pub fn token(user: &str) -> String {
    service_runtime::auth::TokenIssuer::for_tests().token(user, false, Duration::from_secs(3600))
}

/// `message` as `user` sends it: with `authorization: Bearer <user's token>`.
pub fn as_user<T>(user: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert("authorization", service_runtime::auth::bearer(&token(user)));
    request
}

/// Builds and runs the app; returns its URL.
pub async fn spawn_app_url(config: Config) -> String {
    config.validate().unwrap();
    let app = App::build(config).await.unwrap();
    let port = app.port();
    tokio::spawn(app.run_until_stopped(std::future::pending()));
    format!("http://127.0.0.1:{port}")
}

/// A client on a connection of its own.
pub fn client(url: &str) -> AdmissionServiceClient<Channel> {
    client_with_timeout(url, Duration::from_secs(10))
}

/// A client on a connection of its own whose calls may take up to `timeout`.
pub fn client_with_timeout(url: &str, timeout: Duration) -> AdmissionServiceClient<Channel> {
    AdmissionServiceClient::new(ticketing_proto::connect(url, timeout).unwrap())
}

/// Builds and runs the app; returns a connected client.
pub async fn spawn_app_with(config: Config) -> AdmissionServiceClient<Channel> {
    client(&spawn_app_url(config).await)
}

pub async fn spawn_app(env: &TestEnv, inventory_url: &str) -> AdmissionServiceClient<Channel> {
    spawn_app_with(config(env, inventory_url)).await
}

pub async fn redis(env: &TestEnv) -> Client {
    let client = Client::new(RedisConfig::from_url(&env.redis_url).unwrap(), None, None, None);
    client.init().await.unwrap();
    client
}

/// Waits until the event's opening record (`opening_key`) says `open`: shuffled, admitting.
pub async fn wait_until_open(redis: &Client, opening_key: &str) {
    let open = eventually(Duration::from_secs(20), || async {
        let state: Option<String> = redis.hget(opening_key, "state").await.unwrap();
        (state.as_deref() == Some("open")).then_some(())
    })
    .await;
    assert!(open.is_some(), "the event opens");
}

pub fn key(env: &TestEnv, event_id: &str, name: &str) -> String {
    format!("{}adm:{{{event_id}}}:{name}", env.redis_prefix)
}

/// Every key under the test's prefix.
pub async fn keys_under_prefix(env: &TestEnv) -> Vec<String> {
    let client = redis(env).await;
    let mut keys: Vec<String> = Vec::new();
    let mut cursor = "0".to_owned();
    loop {
        let (next, mut page): (String, Vec<String>) = client
            .custom(
                fred::cmd!("SCAN"),
                vec![
                    cursor.clone(),
                    "MATCH".into(),
                    format!("{}*", env.redis_prefix),
                    "COUNT".into(),
                    "1000".into(),
                ],
            )
            .await
            .unwrap();
        keys.append(&mut page);
        if next == "0" {
            return keys;
        }
        cursor = next;
    }
}

/// Reads `expected` Admitted events from the test's stream (or what came within `timeout`).
pub async fn admitted_events(env: &TestEnv, expected: usize, timeout: Duration) -> Vec<Admitted> {
    read_events(env, "test-reader", kind::ADMITTED, expected, timeout, |body| match body {
        Body::Admitted(admitted) => Some(admitted),
        _ => None,
    })
    .await
}

/// Reads `expected` PassEnded events from the test's stream (or what came within `timeout`),
/// in stream order.
pub async fn pass_ended_events(env: &TestEnv, expected: usize, timeout: Duration) -> Vec<PassEnded> {
    read_events(env, "test-pass-ended", kind::PASS_ENDED, expected, timeout, |body| match body {
        Body::PassEnded(ended) => Some(ended),
        _ => None,
    })
    .await
}

/// Reads up to `expected` events of `kind` from the test's stream with a durable consumer
/// named `durable`, keeping those `pick` accepts, until `timeout`.
async fn read_events<T>(
    env: &TestEnv,
    durable: &str,
    kind: &str,
    expected: usize,
    timeout: Duration,
    pick: impl Fn(Body) -> Option<T>,
) -> Vec<T> {
    let bus = EventBus::connect(&env.nats_url, &env.nats_prefix).await.unwrap();
    let consumer = bus.durable_consumer(durable, &[kind]).await.unwrap();
    let mut messages = consumer.messages().await.unwrap();
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + timeout;
    while events.len() < expected {
        let Ok(Some(message)) = tokio::time::timeout_at(deadline, messages.next()).await else { break };
        let message = message.unwrap();
        let envelope = EventEnvelope::decode(message.payload.clone()).unwrap();
        message.ack().await.unwrap();
        if let Some(event) = envelope.body.and_then(&pick) {
            events.push(event);
        }
    }
    events
}
