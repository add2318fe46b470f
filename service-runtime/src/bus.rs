//! The event bus: one JetStream stream per prefix, protobuf [`EventEnvelope`]s on
//! `<prefix>.<kind>` subjects, deduplicated by `Nats-Msg-Id` = `message_id`.
//!
//! Every service calls [`EventBus::connect`], which creates the stream if it is missing with
//! the same settings, so start order does not matter. Tests pass their own prefix and get
//! their own stream.

use std::{future::Future, time::Duration};

use async_nats::jetstream::{self, AckKind, consumer::PullConsumer, stream::Stream};
use futures::StreamExt;
use prost::Message;
use ticketing_proto::events::{EventEnvelope, event_envelope::Body};
use tokio_util::sync::CancellationToken;

use crate::lifecycle::RetryPause;

/// How long JetStream remembers message ids to drop duplicate publishes. A publisher that
/// retries within it (e.g. the outbox relay after a crash) never delivers twice.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(10 * 60);

/// How long events are kept: a consumer that was down this long still catches up.
pub const RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// Messages a consumer may have unacknowledged at once; bounds a consumer's memory.
pub const MAX_ACK_PENDING: i64 = 1_024;

/// How long [`EventBus::open_existing`] waits for NATS to accept the connection.
pub const OPEN_TIMEOUT: Duration = Duration::from_secs(3);

/// Longest a NATS request, a JetStream API call or a publish acknowledgement may take. Beyond
/// it the call fails (the outbox relays retry; a consumer's handler naks) instead of hanging
/// behind a NATS node that stopped answering.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest connecting to a NATS server may take, per attempt.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Subject suffixes, one per event kind.
pub mod kind {
    pub const ADMITTED: &str = "admitted";
    pub const SEATS_HELD: &str = "seats.held";
    pub const SEATS_RELEASED: &str = "seats.released";
    pub const BOOKING_CONFIRMED: &str = "booking.confirmed";
    pub const PAYMENT_FAILED: &str = "payment.failed";
    pub const REFUNDED: &str = "payment.refunded";
    pub const BOOKING_CANCELLED: &str = "booking.cancelled";
    pub const PASS_ENDED: &str = "pass.ended";
}

/// Why the bus failed.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("cannot connect to NATS at {url}: {source}")]
    Connect { url: String, source: async_nats::ConnectError },
    #[error("cannot create or open stream {stream}: {message}")]
    Stream { stream: String, message: String },
    #[error("cannot create consumer {consumer}: {message}")]
    Consumer { consumer: String, message: String },
    #[error("publish to {subject} failed: {message}")]
    Publish { subject: String, message: String },
    #[error("the envelope has no body")]
    EmptyEnvelope,
}

/// A connection to the event stream of one prefix.
#[derive(Clone)]
pub struct EventBus {
    client: async_nats::Client,
    jetstream: jetstream::Context,
    prefix: String,
    stream_name: String,
}

impl EventBus {
    /// Connects to NATS at `url` and opens (or creates) the stream `<prefix>_events`
    /// holding `<prefix>.>`.
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, BusError> {
        let options = async_nats::ConnectOptions::new().retry_on_initial_connect();
        let bus = Self::dial(url, prefix, options).await?;
        bus.stream().await?;
        Ok(bus)
    }

    /// Connects to NATS at `url` and opens the existing stream of `prefix`, creating nothing
    /// and failing at once (within [`OPEN_TIMEOUT`]) when NATS is unreachable: for read-only
    /// tools, which must not leave an empty stream behind a mistyped prefix nor wait for a
    /// server that is down.
    pub async fn open_existing(url: &str, prefix: &str) -> Result<Self, BusError> {
        let options = async_nats::ConnectOptions::new();
        let bus = Self::dial(url, prefix, options.connection_timeout(OPEN_TIMEOUT)).await?;
        bus.existing_stream().await?;
        Ok(bus)
    }

    /// Connects with `options`; the stream of `prefix` is not touched yet.
    async fn dial(url: &str, prefix: &str, options: async_nats::ConnectOptions) -> Result<Self, BusError> {
        let client = options
            .connection_timeout(CONNECT_TIMEOUT)
            .request_timeout(Some(REQUEST_TIMEOUT))
            .connect(url)
            .await
            .map_err(|source| BusError::Connect { url: url.to_owned(), source })?;
        let mut jetstream = jetstream::new(client.clone());
        jetstream.set_timeout(REQUEST_TIMEOUT);
        Ok(Self { client, jetstream, prefix: prefix.to_owned(), stream_name: format!("{prefix}_events") })
    }

    /// The stream as it is; an error if it does not exist.
    pub async fn existing_stream(&self) -> Result<Stream, BusError> {
        self.jetstream
            .get_stream(&self.stream_name)
            .await
            .map_err(|e| BusError::Stream { stream: self.stream_name.clone(), message: e.to_string() })
    }

    /// The stream, created with the mesh's settings if it does not exist.
    pub async fn stream(&self) -> Result<Stream, BusError> {
        self.jetstream
            .get_or_create_stream(jetstream::stream::Config {
                name: self.stream_name.clone(),
                subjects: vec![format!("{}.>", self.prefix)],
                duplicate_window: DUPLICATE_WINDOW,
                max_age: RETENTION,
                storage: jetstream::stream::StorageType::File,
                ..Default::default()
            })
            .await
            .map_err(|e| BusError::Stream { stream: self.stream_name.clone(), message: e.to_string() })
    }

    /// The full subject of an event kind, e.g. `ticketing.booking.confirmed`.
    pub fn subject(&self, kind: &str) -> String {
        format!("{}.{kind}", self.prefix)
    }

    /// The JetStream context, for consumers this module does not cover.
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.jetstream
    }

    /// The plain NATS client.
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// Publishes `envelope` and waits until the stream has stored it (or recognised it as a
    /// duplicate of the same `message_id`). Carries the current trace context in headers.
    pub async fn publish(&self, envelope: &EventEnvelope) -> Result<(), BusError> {
        let kind = kind_of(envelope).ok_or(BusError::EmptyEnvelope)?;
        let subject = self.subject(kind);
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", envelope.message_id.as_str());
        crate::telemetry::inject_nats(&mut headers);
        let publish_error = |e: &dyn std::fmt::Display| BusError::Publish {
            subject: subject.clone(),
            message: e.to_string(),
        };
        let ack = self
            .jetstream
            .publish_with_headers(subject.clone(), headers, envelope.encode_to_vec().into())
            .await
            .map_err(|e| publish_error(&e))?;
        ack.await.map_err(|e| publish_error(&e))?;
        Ok(())
    }

    /// A durable pull consumer named `durable`, created if missing. Explicit acks;
    /// redelivery after 30 s without one.
    ///
    /// With one kind it filters on that subject; with several it takes the whole prefix
    /// (nats-server 2.9 has no multi-subject filters) and the handler skips other kinds.
    pub async fn durable_consumer(&self, durable: &str, kinds: &[&str]) -> Result<PullConsumer, BusError> {
        let filter_subject = match kinds {
            [kind] => self.subject(kind),
            _ => format!("{}.>", self.prefix),
        };
        let stream = self.stream().await?;
        stream
            .get_or_create_consumer(
                durable,
                jetstream::consumer::pull::Config {
                    durable_name: Some(durable.to_owned()),
                    filter_subject,
                    ack_policy: jetstream::consumer::AckPolicy::Explicit,
                    ack_wait: Duration::from_secs(30),
                    max_ack_pending: MAX_ACK_PENDING,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| BusError::Consumer { consumer: durable.to_owned(), message: e.to_string() })
    }
}

/// The subject suffix of an envelope's body.
pub fn kind_of(envelope: &EventEnvelope) -> Option<&'static str> {
    Some(match envelope.body.as_ref()? {
        Body::Admitted(_) => kind::ADMITTED,
        Body::SeatsHeld(_) => kind::SEATS_HELD,
        Body::SeatsReleased(_) => kind::SEATS_RELEASED,
        Body::BookingConfirmed(_) => kind::BOOKING_CONFIRMED,
        Body::PaymentFailed(_) => kind::PAYMENT_FAILED,
        Body::Refunded(_) => kind::REFUNDED,
        Body::BookingCancelled(_) => kind::BOOKING_CANCELLED,
        Body::PassEnded(_) => kind::PASS_ENDED,
    })
}

/// An envelope for `body`, stamped now.
pub fn envelope(message_id: impl Into<String>, body: Body) -> EventEnvelope {
    EventEnvelope { message_id: message_id.into(), occurred_at: Some(now_timestamp()), body: Some(body) }
}

/// The current time as a protobuf timestamp.
pub fn now_timestamp() -> prost_types::Timestamp {
    timestamp_ms(chrono::Utc::now().timestamp_millis())
}

/// Unix milliseconds as a protobuf timestamp.
pub fn timestamp_ms(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: ms.div_euclid(1000), nanos: (ms.rem_euclid(1000) * 1_000_000) as i32 }
}

/// A protobuf timestamp as Unix milliseconds.
pub fn timestamp_to_ms(ts: &prost_types::Timestamp) -> i64 {
    ts.seconds * 1000 + i64::from(ts.nanos) / 1_000_000
}

/// Runs `handle` on every message of `consumer` until `stopping` is cancelled.
///
/// A message is acknowledged only after `handle` succeeds; on failure it is redelivered
/// after a pause. A message that is not an envelope is logged and terminated, since no
/// redelivery can fix it. Reconnects after stream errors, pausing between failures
/// ([`RetryPause::standard`], reset by the next message), so a NATS outage is not a hot loop.
pub async fn consume<F, Fut>(
    consumer: PullConsumer,
    name: &'static str,
    stopping: CancellationToken,
    mut handle: F,
) where
    F: FnMut(EventEnvelope) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let mut pause = RetryPause::standard();
    loop {
        let mut messages = match consumer.messages().await {
            Ok(messages) => messages,
            Err(error) => {
                tracing::warn!(consumer = name, %error, "cannot open message stream; retrying");
                if !pause.wait(&stopping).await {
                    return;
                }
                continue;
            }
        };
        loop {
            let next = tokio::select! {
                () = stopping.cancelled() => return,
                next = messages.next() => next,
            };
            let message = match next {
                Some(Ok(message)) => {
                    pause.reset();
                    message
                }
                Some(Err(error)) => {
                    tracing::warn!(consumer = name, %error, "message stream error; pausing");
                    if !pause.wait(&stopping).await {
                        return;
                    }
                    continue;
                }
                None => {
                    if !pause.wait(&stopping).await {
                        return;
                    }
                    break;
                }
            };
            let envelope = match EventEnvelope::decode(message.payload.clone()) {
                Ok(envelope) => envelope,
                Err(error) => {
                    tracing::error!(consumer = name, subject = %message.subject, %error, "undecodable event; terminating it");
                    let _ = message.ack_with(AckKind::Term).await;
                    continue;
                }
            };
            let span = tracing::info_span!("consume", consumer = name, message_id = %envelope.message_id);
            crate::telemetry::extract_nats(message.headers.as_ref(), &span);
            let result = {
                use tracing::Instrument;
                handle(envelope).instrument(span).await
            };
            match result {
                Ok(()) => {
                    if let Err(error) = message.ack().await {
                        tracing::warn!(consumer = name, %error, "ack failed; the event will be redelivered");
                    }
                }
                Err(error) => {
                    tracing::warn!(
                        consumer = name,
                        error = format!("{error:#}"),
                        "handling failed; redelivering later"
                    );
                    let _ = message.ack_with(AckKind::Nak(Some(Duration::from_secs(1)))).await;
                }
            }
        }
    }
}
