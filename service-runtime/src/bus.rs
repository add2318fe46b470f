//! The event bus: one JetStream stream per prefix, protobuf [`EventEnvelope`]s on
//! `<prefix>.<kind>` subjects, deduplicated by `Nats-Msg-Id` = `message_id`.
//!
//! The stream is infrastructure: [`StreamSpec`] is the one definition of its settings
//! (subjects, replicas, retention, duplicate window, limits). `stack` and the Kubernetes Job
//! (`stream-setup`) create or update it with [`StreamSpec::apply`]; tests do the same through
//! `test_support::testenv`. A service never creates it: [`EventBus::connect_checked`] refuses to start
//! on a missing or misconfigured stream, naming the stream and the fix, instead of creating an
//! R1 stream with client defaults.

use std::{future::Future, time::Duration};

use async_nats::jetstream::{
    self, AckKind,
    consumer::PullConsumer,
    stream::{DiscardPolicy, RetentionPolicy, StorageType, Stream},
};
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

/// Most bytes the stream keeps; beyond it the oldest messages go (`DiscardPolicy::Old`), so a
/// full disk never stops a sale. A 500,000-user sale's stream is about 0.2 GB; inventory's
/// snapshots make the oldest messages dispensable. JetStream reserves it on the server's
/// storage when the stream is created.
pub const MAX_BYTES: i64 = 2 * 1024 * 1024 * 1024;

/// Largest message the stream accepts: an envelope is well under 1 KiB, seat ids included.
pub const MAX_MESSAGE_SIZE: i32 = 64 * 1024;

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
    #[error(
        "JetStream stream {stream} does not exist; services do not create it. Create it first: \
         `stack stream-setup` locally, the `stream-setup` Job in Kubernetes"
    )]
    StreamMissing { stream: String },
    #[error(
        "JetStream stream {stream} is misconfigured: {problems}. Fix it with `stack stream-setup` \
         (locally) or the `stream-setup` Job (Kubernetes), or recreate it"
    )]
    StreamMisconfigured { stream: String, problems: String },
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
    /// [`Self::connect_checked`] with a minimum of one replica: for tests and tools, whose
    /// streams are made by `test_support::testenv` or `stack`.
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, BusError> {
        Self::connect_checked(url, prefix, 1).await
    }

    /// Connects to NATS at `url` and opens the existing stream `<prefix>_events`, checking it
    /// against [`StreamSpec::for_prefix`] with at least `min_replicas` replicas. A missing or
    /// misconfigured stream is an error naming the stream and the fix ([`BusError::StreamMissing`],
    /// [`BusError::StreamMisconfigured`]): a service refuses to start rather than create it.
    pub async fn connect_checked(url: &str, prefix: &str, min_replicas: usize) -> Result<Self, BusError> {
        let options = async_nats::ConnectOptions::new().retry_on_initial_connect();
        let bus = Self::dial(url, prefix, options).await?;
        let info = bus
            .stream()
            .await?
            .get_info()
            .await
            .map_err(|e| BusError::Stream { stream: bus.stream_name.clone(), message: e.to_string() })?;
        StreamSpec::for_prefix(prefix).check(&info.config, min_replicas)?;
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
            .connect(crate::args::nats_servers(url))
            .await
            .map_err(|source| BusError::Connect { url: url.to_owned(), source })?;
        let mut jetstream = jetstream::new(client.clone());
        jetstream.set_timeout(REQUEST_TIMEOUT);
        Ok(Self { client, jetstream, prefix: prefix.to_owned(), stream_name: format!("{prefix}_events") })
    }

    /// The stream as it is; [`BusError::StreamMissing`] if it does not exist.
    pub async fn existing_stream(&self) -> Result<Stream, BusError> {
        open_stream(&self.jetstream, &self.stream_name).await
    }

    /// The stream (never created here: see [`StreamSpec::apply`]).
    pub async fn stream(&self) -> Result<Stream, BusError> {
        self.existing_stream().await
    }

    /// The stream's name, `<prefix>_events`.
    pub fn stream_name(&self) -> &str {
        &self.stream_name
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

/// Opens the stream `name`, telling a missing stream apart from NATS failing.
async fn open_stream(jetstream: &jetstream::Context, name: &str) -> Result<Stream, BusError> {
    use jetstream::context::GetStreamErrorKind;
    match jetstream.get_stream(name).await {
        Ok(stream) => Ok(stream),
        Err(error) => match error.kind() {
            GetStreamErrorKind::JetStream(inner)
                if inner.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND =>
            {
                Err(BusError::StreamMissing { stream: name.to_owned() })
            }
            _ => Err(BusError::Stream { stream: name.to_owned(), message: error.to_string() }),
        },
    }
}

/// The event stream of one prefix and every setting it must have: the single definition that
/// `stack`, the `stream-setup` Job and the tests create the stream from, and that services
/// check at start. Only the replica count varies by deployment (R1 on one NATS server, R3 in
/// production).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSpec {
    /// `<prefix>_events`.
    pub name: String,
    /// `<prefix>.>`: every event kind of the mesh.
    pub subjects: Vec<String>,
    /// Copies of each message across NATS servers; R3 survives one server's loss.
    pub replicas: usize,
    /// [`RETENTION`].
    pub max_age: Duration,
    /// [`DUPLICATE_WINDOW`]; the outbox relay's retries rely on it.
    pub duplicate_window: Duration,
    /// [`MAX_BYTES`].
    pub max_bytes: i64,
    /// [`MAX_MESSAGE_SIZE`].
    pub max_message_size: i32,
}

impl StreamSpec {
    /// The mesh's stream for `prefix`, with one replica.
    pub fn for_prefix(prefix: &str) -> Self {
        Self {
            name: format!("{prefix}_events"),
            subjects: vec![format!("{prefix}.>")],
            replicas: 1,
            max_age: RETENTION,
            duplicate_window: DUPLICATE_WINDOW,
            max_bytes: MAX_BYTES,
            max_message_size: MAX_MESSAGE_SIZE,
        }
    }

    /// The same stream with `replicas` copies.
    pub fn with_replicas(mut self, replicas: usize) -> Self {
        self.replicas = replicas;
        self
    }

    /// The same stream keeping at most `max_bytes` (tests: many small streams on one server,
    /// each reserving its limit).
    pub fn with_max_bytes(mut self, max_bytes: i64) -> Self {
        self.max_bytes = max_bytes;
        self
    }

    /// The JetStream configuration: limits retention (every consumer reads every message,
    /// none removes it), file storage, the oldest messages discarded at the byte limit.
    pub fn config(&self) -> jetstream::stream::Config {
        jetstream::stream::Config {
            name: self.name.clone(),
            subjects: self.subjects.clone(),
            retention: RetentionPolicy::Limits,
            storage: StorageType::File,
            num_replicas: self.replicas,
            max_age: self.max_age,
            duplicate_window: self.duplicate_window,
            max_bytes: self.max_bytes,
            max_message_size: self.max_message_size,
            discard: DiscardPolicy::Old,
            ..Default::default()
        }
    }

    /// Creates the stream, or updates an existing one to these settings (JetStream refuses
    /// changes it cannot make, such as the retention policy or the storage type: the error
    /// says so). Answers the stream's configuration afterwards.
    pub async fn apply(&self, jetstream: &jetstream::Context) -> Result<jetstream::stream::Config, BusError> {
        let failed = |e: &dyn std::fmt::Display| BusError::Stream {
            stream: self.name.clone(),
            message: e.to_string(),
        };
        let info = match open_stream(jetstream, &self.name).await {
            Ok(_) => jetstream.update_stream(self.config()).await.map_err(|e| failed(&e))?,
            Err(BusError::StreamMissing { .. }) => jetstream
                .create_stream(self.config())
                .await
                .map_err(|e| failed(&e))?
                .get_info()
                .await
                .map_err(|e| failed(&e))?,
            Err(error) => return Err(error),
        };
        Ok(info.config)
    }

    /// Checks an existing stream's configuration: the subjects, limits retention, at least
    /// `min_replicas` replicas and a duplicate window no shorter than this spec's (a shorter
    /// one would let a retried publish through twice). Limits such as max age and bytes are
    /// the operator's to tune and are not checked.
    pub fn check(&self, actual: &jetstream::stream::Config, min_replicas: usize) -> Result<(), BusError> {
        let mut problems = Vec::new();
        if actual.subjects != self.subjects {
            problems.push(format!("subjects are {:?}, expected {:?}", actual.subjects, self.subjects));
        }
        if actual.retention != RetentionPolicy::Limits {
            problems.push(format!("retention is {:?}, expected Limits", actual.retention));
        }
        if actual.num_replicas.max(1) < min_replicas {
            problems.push(format!(
                "{} replica(s), fewer than EVENT_STREAM_MIN_REPLICAS={min_replicas}",
                actual.num_replicas.max(1)
            ));
        }
        if actual.duplicate_window < self.duplicate_window {
            problems.push(format!(
                "duplicate window is {:?}, shorter than {:?}",
                actual.duplicate_window, self.duplicate_window
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(BusError::StreamMisconfigured { stream: self.name.clone(), problems: problems.join("; ") })
        }
    }
}

/// Connects to NATS at `url` and creates or updates `spec`'s stream: what `stack`, the
/// `stream-setup` Job and the test environment run before any service starts.
pub async fn setup_stream(url: &str, spec: &StreamSpec) -> Result<jetstream::stream::Config, BusError> {
    let options = async_nats::ConnectOptions::new().connection_timeout(OPEN_TIMEOUT);
    let client = options
        .connect(crate::args::nats_servers(url))
        .await
        .map_err(|source| BusError::Connect { url: url.to_owned(), source })?;
    spec.apply(&jetstream::new(client)).await
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
    handle: F,
) where
    F: Fn(EventEnvelope) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    read(&consumer, name, &stopping, |message, envelope| handle_one(name, message, envelope, &handle)).await;
}

/// Messages a partition of [`consume_partitioned`] may have waiting.
const PARTITION_QUEUE: usize = 64;

/// [`consume`] with `partitions` handlers at work at once. Events with the same `key` (a
/// user, say) go to the same partition and are handled one after another in stream order,
/// so their order is kept; events of other keys proceed in parallel. For a handler that
/// waits on I/O (a database commit per event) throughput grows with the partitions, which
/// one handler at a time caps at one commit's latency per event. Each message is
/// acknowledged after its own handler succeeds, as in [`consume`]; what the partitions hold
/// when `stopping` is cancelled is handled first.
pub async fn consume_partitioned<K, F, Fut>(
    consumer: PullConsumer,
    name: &'static str,
    stopping: CancellationToken,
    partitions: usize,
    key: K,
    handle: F,
) where
    K: Fn(&EventEnvelope) -> u64,
    F: Fn(EventEnvelope) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let partitions = partitions.max(1);
    let (senders, receivers): (Vec<_>, Vec<_>) = (0..partitions)
        .map(|_| tokio::sync::mpsc::channel::<(jetstream::Message, EventEnvelope)>(PARTITION_QUEUE))
        .unzip();
    let reader = async move {
        read(&consumer, name, &stopping, |message, envelope| {
            let partition = senders[(key(&envelope) % partitions as u64) as usize].clone();
            async move {
                // A closed partition only happens at shutdown: the message is redelivered.
                let _ = partition.send((message, envelope)).await;
            }
        })
        .await;
        // `senders` is dropped here: each partition ends once it has handled its queue.
    };
    let handle = &handle;
    let workers = receivers.into_iter().map(|mut queue| async move {
        while let Some((message, envelope)) = queue.recv().await {
            handle_one(name, message, envelope, handle).await;
        }
    });
    futures::future::join(reader, futures::future::join_all(workers)).await;
}

/// Reads `consumer` until `stopping`, passing each decoded message to `dispatch` (awaited
/// before the next one is read); see [`consume`] for the errors.
async fn read<D, DFut>(
    consumer: &PullConsumer,
    name: &'static str,
    stopping: &CancellationToken,
    mut dispatch: D,
) where
    D: FnMut(jetstream::Message, EventEnvelope) -> DFut,
    DFut: Future<Output = ()>,
{
    let mut pause = RetryPause::standard();
    loop {
        let mut messages = match consumer.messages().await {
            Ok(messages) => messages,
            Err(error) => {
                tracing::warn!(consumer = name, %error, "cannot open message stream; retrying");
                if !pause.wait(stopping).await {
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
                    if !pause.wait(stopping).await {
                        return;
                    }
                    continue;
                }
                None => {
                    if !pause.wait(stopping).await {
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
            dispatch(message, envelope).await;
        }
    }
}

/// Runs `handle` on one message's envelope in a span joined to the publisher's trace, then
/// acknowledges the message, or has it redelivered after a pause when `handle` failed.
async fn handle_one<F, Fut>(
    name: &'static str,
    message: jetstream::Message,
    envelope: EventEnvelope,
    handle: &F,
) where
    F: Fn(EventEnvelope) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
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

#[cfg(test)]
mod timestamp_tests {
    use super::timestamp_ms;

    #[test]
    fn timestamps_split_milliseconds_into_seconds_and_nanos() {
        assert_eq!(timestamp_ms(1_500), prost_types::Timestamp { seconds: 1, nanos: 500_000_000 });
        assert_eq!(timestamp_ms(-1), prost_types::Timestamp { seconds: -1, nanos: 999_000_000 });
    }
}
