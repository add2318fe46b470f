//! `admission-audit`: an operator's check of one opening against the published key.
//!
//! It reads every `Admitted` event of the event from the JetStream stream (an ephemeral,
//! ordered consumer on `<prefix>.admitted`, from the start of the stream until it has caught
//! up), runs [`fairness::audit_admissions`](crate::fairness::audit_admissions) on them with
//! the published event key and `sealed_ticket`, and checks the key against the commitment
//! published before the sale. The read is bounded ([`MAX_MESSAGES`], [`IDLE_TIMEOUT`],
//! `--timeout-secs`) and never waits for events that are not in the stream.
//!
//! What counts: events of other event ids are skipped; an `Admitted` event seen twice under
//! one pass id (a publish retried after the stream's duplicate window) counts once; two
//! events that give one pass id to different users, or different tickets, are a finding.
//! The verdict is [`Verdict::Inconclusive`] when there is nothing to audit or some of the
//! event's admissions could not be read, since a fair verdict would then say more than the
//! stream does.

use std::{
    collections::{BTreeMap, HashSet, btree_map::Entry},
    fmt::Write as _,
    time::Duration,
};

use async_nats::jetstream::consumer::{DeliverPolicy, pull::OrderedConfig};
use futures::StreamExt;
use prost::Message as _;
use serde::Serialize;
use service_runtime::{
    bus::{BusError, EventBus, kind},
    config::{EXIT_BAD_CONFIG, validate_prefix},
};
use ticketing_proto::events::{EventEnvelope, event_envelope::Body};
use uuid::Uuid;

use crate::fairness::{Admission, AuditMismatch, EventShuffleKey, audit_admissions};

/// Exit codes of `admission-audit`.
pub mod exit {
    /// The admissions follow the keyed shuffle, then join order, and the key matches the
    /// commitment (when one was given).
    pub const FAIR: i32 = 0;
    /// The audit found a mismatch: admission order, a pass id given twice, or the key
    /// against the commitment.
    pub const UNFAIR: i32 = 1;
    /// The stream could not be read: NATS unreachable, no such stream, a stalled or too
    /// long read.
    pub const UNREADABLE: i32 = 2;
    /// Nothing contradicts fairness, but there was nothing to audit (no admission of the
    /// event in the stream) or some of the event's admissions could not be decoded.
    pub const INCONCLUSIVE: i32 = 3;
    /// Bad arguments (`EX_USAGE`), like the services' invalid configuration.
    pub const BAD_ARGUMENTS: i32 = super::EXIT_BAD_CONFIG;
}

/// Messages read at most. A sale of 500,000 users publishes about that many `Admitted`
/// events (a few more with rejoins); each costs about 100 bytes here, so the bound keeps the
/// tool under half a gigabyte on any stream.
pub const MAX_MESSAGES: u64 = 5_000_000;

/// Longest wait for the next message while the consumer still reports pending ones: the
/// server delivers them at once, so silence this long means the read is stuck.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest `--timeout-secs` accepted: an hour reads any bounded stream many times over.
const MAX_TIMEOUT_SECS: u64 = 3_600;

/// Arguments of `admission-audit`, from flags (the NATS ones also from the environment, as
/// the services read them).
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "admission-audit",
    about = "Audits an event's opening: reads its Admitted events from NATS and checks them against the published shuffle key",
    after_help = "Exit codes: 0 fair, 1 mismatch found, 2 stream unreadable, 3 inconclusive (nothing to audit or unreadable admissions), 64 bad arguments."
)]
pub struct AuditArgs {
    /// The event audited (UUID).
    #[arg(long)]
    pub event_id: Uuid,
    /// The event's shuffle key as published after the sale (64 hex digits).
    #[arg(long, value_parser = EventShuffleKey::from_hex)]
    pub event_key: EventShuffleKey,
    /// The last pre-queue ticket: `sealed_ticket` of the event's `opening` record, or of the
    /// "sale opened" log line.
    #[arg(long)]
    pub sealed_ticket: u64,
    /// The commitment published before the sale (SHA-256 of the event key, 64 hex digits);
    /// when given, the key must match it.
    #[arg(long, value_parser = parse_commitment)]
    pub commitment: Option<String>,
    /// NATS JetStream carrying the mesh's events.
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// Subject prefix (and stream name) of the mesh's events, as the services were given it.
    #[arg(long, env = "NATS_PREFIX", default_value = "ticketing")]
    pub nats_prefix: String,
    /// Longest the whole read may take, in seconds.
    #[arg(long, default_value_t = 120)]
    pub timeout_secs: u64,
    /// Print the report as JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Reads a commitment: 64 hex digits, any case; kept in lowercase.
fn parse_commitment(published: &str) -> Result<String, String> {
    let published = published.trim();
    if published.len() == 64 && published.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(published.to_ascii_lowercase())
    } else {
        Err("a commitment is 64 hex digits (SHA-256 of the event key)".into())
    }
}

impl AuditArgs {
    /// Refuses arguments the audit cannot run with, naming the setting.
    pub fn validate(&self) -> Result<(), String> {
        validate_prefix("NATS_PREFIX", &self.nats_prefix)?;
        if !(1..=MAX_TIMEOUT_SECS).contains(&self.timeout_secs) {
            return Err(format!("--timeout-secs must be 1-{MAX_TIMEOUT_SECS}"));
        }
        Ok(())
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs)
    }
}

/// Why the stream could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error("cannot read the Admitted events: {0}")]
    Consumer(String),
    #[error("no message for {idle:?} while {pending} were still pending")]
    Stalled { idle: Duration, pending: u64 },
    #[error("the read did not finish within {0:?} (raise --timeout-secs)")]
    Timeout(Duration),
    #[error("more than {MAX_MESSAGES} Admitted messages: too many to audit in one run")]
    TooMany,
}

/// Two `Admitted` events that give one pass id to different users or tickets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PassConflict {
    pub pass_id: u64,
    pub first_user: String,
    pub first_ticket: u64,
    pub second_user: String,
    pub second_ticket: u64,
}

/// The `Admitted` events of one event, as read from the stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reading {
    /// One per pass id, by pass id.
    pub admissions: Vec<Admission>,
    /// Messages read on the `Admitted` subject, of any event.
    pub messages: u64,
    /// Messages of other events, skipped.
    pub other_events: u64,
    /// Repeats of an admission already read (same pass id, user and ticket).
    pub duplicates: u64,
    /// Messages that are not `Admitted` envelopes, or admissions of this event whose pass id
    /// is not a number: they might hide admissions, so the audit cannot call the sale fair.
    pub unreadable: u64,
    pub conflicts: Vec<PassConflict>,
}

/// Collects the admissions of one event from raw stream payloads.
#[derive(Debug)]
pub struct Collector {
    event_id: Uuid,
    by_pass: BTreeMap<u64, Admission>,
    reading: Reading,
}

impl Collector {
    pub fn new(event_id: Uuid) -> Self {
        Self { event_id, by_pass: BTreeMap::new(), reading: Reading::default() }
    }

    /// Takes one message payload from the `Admitted` subject.
    pub fn add(&mut self, payload: &[u8]) {
        self.reading.messages += 1;
        let admitted = match EventEnvelope::decode(payload) {
            Ok(EventEnvelope { body: Some(Body::Admitted(admitted)), .. }) => admitted,
            Ok(_) | Err(_) => {
                self.reading.unreadable += 1;
                return;
            }
        };
        // The service stores event ids in canonical form; compare as UUIDs all the same.
        if Uuid::parse_str(&admitted.event_id).ok() != Some(self.event_id) {
            self.reading.other_events += 1;
            return;
        }
        let Ok(pass_id) = admitted.pass_id.parse::<u64>() else {
            self.reading.unreadable += 1;
            return;
        };
        let admission = Admission { pass_id, user_id: admitted.user_id, ticket: admitted.ticket };
        match self.by_pass.entry(pass_id) {
            Entry::Vacant(slot) => {
                slot.insert(admission);
            }
            Entry::Occupied(first) if *first.get() == admission => self.reading.duplicates += 1,
            Entry::Occupied(first) => self.reading.conflicts.push(PassConflict {
                pass_id,
                first_user: first.get().user_id.clone(),
                first_ticket: first.get().ticket,
                second_user: admission.user_id,
                second_ticket: admission.ticket,
            }),
        }
    }

    /// The reading, admissions ordered by pass id.
    pub fn finish(mut self) -> Reading {
        self.reading.admissions = self.by_pass.into_values().collect();
        self.reading
    }
}

/// Reads every `Admitted` event of `event_id` from the start of the stream until the
/// consumer has no message pending. Bounded by [`MAX_MESSAGES`] and [`IDLE_TIMEOUT`]; the
/// caller bounds the whole.
pub async fn read_admissions(bus: &EventBus, event_id: Uuid) -> Result<Reading, ReadError> {
    let stream = bus.existing_stream().await?;
    let mut consumer = stream
        .create_consumer(OrderedConfig {
            filter_subject: bus.subject(kind::ADMITTED),
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .map_err(|e| ReadError::Consumer(e.to_string()))?;
    let mut pending = consumer.info().await.map_err(|e| ReadError::Consumer(e.to_string()))?.num_pending;
    let mut collector = Collector::new(event_id);
    if pending == 0 {
        return Ok(collector.finish());
    }
    let mut messages = consumer.messages().await.map_err(|e| ReadError::Consumer(e.to_string()))?;
    while pending > 0 {
        let message = match tokio::time::timeout(IDLE_TIMEOUT, messages.next()).await {
            Err(_) => return Err(ReadError::Stalled { idle: IDLE_TIMEOUT, pending }),
            Ok(None) => return Err(ReadError::Consumer("the consumer ended before catching up".into())),
            Ok(Some(Err(error))) => return Err(ReadError::Consumer(error.to_string())),
            Ok(Some(Ok(message))) => message,
        };
        if collector.reading.messages >= MAX_MESSAGES {
            return Err(ReadError::TooMany);
        }
        pending = message.info().map_err(|e| ReadError::Consumer(e.to_string()))?.pending;
        collector.add(&message.payload);
    }
    Ok(collector.finish())
}

/// The commitment check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum CommitmentCheck {
    /// No `--commitment`: the key was not checked against one.
    NotGiven,
    Matches,
    Mismatch {
        published: String,
        /// SHA-256 of the given key.
        computed: String,
    },
}

/// What the audit concludes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Fair,
    Unfair,
    Inconclusive,
}

/// The audit of one opening.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    pub event_id: String,
    pub nats_prefix: String,
    pub sealed_ticket: u64,
    /// Messages read on the `Admitted` subject, of any event.
    pub messages_read: u64,
    /// Admissions of this event (one per pass id).
    pub admissions: usize,
    /// Users admitted (first admission each) with a ticket <= `sealed_ticket`.
    pub prequeue_users: usize,
    /// Users admitted (first admission each) who joined after the opening.
    pub later_joiners: usize,
    /// Admissions after a user's first one (rejoins); they do not count for the order.
    pub readmissions: usize,
    pub duplicates: u64,
    pub other_events: u64,
    pub unreadable: u64,
    pub commitment: CommitmentCheck,
    /// The first order mismatch, if any.
    pub mismatch: Option<AuditMismatch>,
    pub pass_conflicts: Vec<PassConflict>,
    pub verdict: Verdict,
}

/// Audits a reading of the stream.
pub fn audit(
    event_id: Uuid,
    nats_prefix: &str,
    key: &EventShuffleKey,
    sealed_ticket: u64,
    commitment: Option<&str>,
    reading: Reading,
) -> Report {
    let commitment = match commitment {
        None => CommitmentCheck::NotGiven,
        Some(published) if published.eq_ignore_ascii_case(&key.commitment()) => CommitmentCheck::Matches,
        Some(published) => CommitmentCheck::Mismatch {
            published: published.to_ascii_lowercase(),
            computed: key.commitment(),
        },
    };
    let mut users = HashSet::new();
    let first: Vec<&Admission> =
        reading.admissions.iter().filter(|a| users.insert(a.user_id.as_str())).collect();
    let prequeue_users = first.iter().filter(|a| a.ticket <= sealed_ticket).count();
    let mismatch = audit_admissions(key, sealed_ticket, &reading.admissions).err();
    let unfair = mismatch.is_some()
        || !reading.conflicts.is_empty()
        || matches!(commitment, CommitmentCheck::Mismatch { .. });
    let verdict = if unfair {
        Verdict::Unfair
    } else if reading.admissions.is_empty() || reading.unreadable > 0 {
        Verdict::Inconclusive
    } else {
        Verdict::Fair
    };
    Report {
        event_id: event_id.to_string(),
        nats_prefix: nats_prefix.to_owned(),
        sealed_ticket,
        messages_read: reading.messages,
        admissions: reading.admissions.len(),
        prequeue_users,
        later_joiners: first.len() - prequeue_users,
        readmissions: reading.admissions.len() - first.len(),
        duplicates: reading.duplicates,
        other_events: reading.other_events,
        unreadable: reading.unreadable,
        commitment,
        mismatch,
        pass_conflicts: reading.conflicts,
        verdict,
    }
}

/// Reads the stream and audits it, as `admission-audit` does; the whole read within
/// `--timeout-secs`.
pub async fn run(args: &AuditArgs) -> Result<Report, ReadError> {
    let reading = tokio::time::timeout(args.timeout(), async {
        let bus = EventBus::open_existing(&args.nats_url, &args.nats_prefix).await?;
        read_admissions(&bus, args.event_id).await
    })
    .await
    .map_err(|_| ReadError::Timeout(args.timeout()))??;
    Ok(audit(
        args.event_id,
        &args.nats_prefix,
        &args.event_key,
        args.sealed_ticket,
        args.commitment.as_deref(),
        reading,
    ))
}

impl Report {
    /// The process exit code for this verdict (see [`exit`]).
    pub fn exit_code(&self) -> i32 {
        match self.verdict {
            Verdict::Fair => exit::FAIR,
            Verdict::Unfair => exit::UNFAIR,
            Verdict::Inconclusive => exit::INCONCLUSIVE,
        }
    }

    /// The report as an operator reads it.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let _ =
            writeln!(out, "admission audit of event {} (stream {}_events)", self.event_id, self.nats_prefix);
        let _ = writeln!(
            out,
            "  messages read:    {} ({} duplicates, {} of other events, {} unreadable)",
            self.messages_read, self.duplicates, self.other_events, self.unreadable
        );
        let _ = writeln!(
            out,
            "  admissions:       {} ({} pre-queue users, ticket <= {}; {} later joiners; {} readmissions)",
            self.admissions, self.prequeue_users, self.sealed_ticket, self.later_joiners, self.readmissions
        );
        let commitment = match &self.commitment {
            CommitmentCheck::NotGiven => "not checked (no --commitment)".to_owned(),
            CommitmentCheck::Matches => "SHA-256(event key) matches the published commitment".to_owned(),
            CommitmentCheck::Mismatch { published, computed } => {
                format!("MISMATCH: published {published}, SHA-256(event key) is {computed}")
            }
        };
        let _ = writeln!(out, "  commitment:       {commitment}");
        if let Some(AuditMismatch { index, expected, found }) = &self.mismatch {
            let _ = writeln!(
                out,
                "  first mismatch:   at index {index} expected {expected:?}, found {found:?} (users' first admissions by pass id)"
            );
        }
        for conflict in &self.pass_conflicts {
            let _ = writeln!(
                out,
                "  pass id conflict: pass {} went to {:?} (ticket {}) and to {:?} (ticket {})",
                conflict.pass_id,
                conflict.first_user,
                conflict.first_ticket,
                conflict.second_user,
                conflict.second_ticket
            );
        }
        let verdict = match self.verdict {
            Verdict::Fair => {
                "FAIR: pre-queue in key order, before every later joiner; later joiners in join order"
            }
            Verdict::Unfair => "UNFAIR: see above",
            Verdict::Inconclusive if self.admissions == 0 => {
                "INCONCLUSIVE: no admission of this event in the stream (wrong --event-id or --nats-prefix?)"
            }
            Verdict::Inconclusive => "INCONCLUSIVE: some admissions of the stream could not be read",
        };
        let _ = writeln!(out, "  verdict:          {verdict}");
        out
    }

    /// The report as pretty JSON.
    pub fn to_json(&self) -> String {
        match serde_json::to_string_pretty(self) {
            Ok(json) => json,
            Err(error) => unreachable!("a report of strings and numbers always serializes: {error}"),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use service_runtime::bus::envelope;
    use ticketing_proto::events::{Admitted, SeatsHeld};

    use super::*;
    use crate::fairness::{ShuffleKey, opening_order};

    fn payload(event_id: &str, user: &str, pass_id: &str, ticket: u64) -> Vec<u8> {
        let admitted = Admitted {
            event_id: event_id.into(),
            user_id: user.into(),
            pass_id: pass_id.into(),
            pass_expires_at: None,
            ticket,
        };
        envelope(format!("admitted:{event_id}:{user}:{pass_id}"), Body::Admitted(admitted)).encode_to_vec()
    }

    #[test]
    fn the_collector_skips_other_events_counts_repeats_once_and_names_conflicts() {
        let event = Uuid::new_v4();
        let id = event.to_string();
        let mut collector = Collector::new(event);
        collector.add(&payload(&id, "ann", "2", 7));
        collector.add(&payload(&id.to_uppercase(), "bob", "1", 3));
        collector.add(&payload(&id, "ann", "2", 7));
        collector.add(&payload(&Uuid::new_v4().to_string(), "eve", "1", 1));
        collector.add(&payload(&id, "eve", "2", 1));
        collector.add(&payload(&id, "mallory", "not-a-number", 1));
        collector.add(b"\xff not protobuf");
        let held = SeatsHeld { event_id: id.clone(), ..Default::default() };
        collector.add(&envelope("held", Body::SeatsHeld(held)).encode_to_vec());
        let reading = collector.finish();
        assert_eq!(reading.messages, 8);
        assert_eq!(
            reading.admissions,
            vec![
                Admission { pass_id: 1, user_id: "bob".into(), ticket: 3 },
                Admission { pass_id: 2, user_id: "ann".into(), ticket: 7 },
            ]
        );
        assert_eq!((reading.duplicates, reading.other_events, reading.unreadable), (1, 1, 3));
        assert_eq!(reading.conflicts.len(), 1);
        assert_eq!(
            (reading.conflicts[0].first_user.as_str(), reading.conflicts[0].second_user.as_str()),
            ("ann", "eve")
        );
    }

    #[test]
    fn the_verdict_needs_admissions_a_clean_read_and_every_check_passing() {
        let event = Uuid::new_v4();
        let key = ShuffleKey::new(b"0123456789abcdef".to_vec()).unwrap().event_key(&event.to_string());
        let order = opening_order(&key, ["a", "b", "c"]);
        let mut reading = Reading::default();
        for (i, user) in order.iter().enumerate() {
            reading.admissions.push(Admission {
                pass_id: i as u64 + 1,
                user_id: user.clone(),
                ticket: i as u64 + 1,
            });
        }
        reading.admissions.push(Admission { pass_id: 4, user_id: "late".into(), ticket: 9 });
        reading.admissions.push(Admission { pass_id: 5, user_id: order[0].clone(), ticket: 10 });
        let report = |reading: &Reading, commitment: Option<&str>| {
            audit(event, "ticketing", &key, 3, commitment, reading.clone())
        };

        let fair = report(&reading, Some(&key.commitment().to_uppercase()));
        assert_eq!((fair.verdict, fair.exit_code()), (Verdict::Fair, exit::FAIR));
        assert_eq!((fair.prequeue_users, fair.later_joiners, fair.readmissions), (3, 1, 1));
        assert_eq!(fair.commitment, CommitmentCheck::Matches);
        assert!(fair.to_text().contains("FAIR"));

        let other = ShuffleKey::new(b"fedcba9876543210".to_vec()).unwrap().event_key(&event.to_string());
        let wrong = report(&reading, Some(&other.commitment()));
        assert_eq!((wrong.verdict, wrong.exit_code()), (Verdict::Unfair, exit::UNFAIR));
        assert!(matches!(wrong.commitment, CommitmentCheck::Mismatch { .. }));

        let mut swapped = reading.clone();
        swapped.admissions[0].pass_id = 2;
        swapped.admissions[1].pass_id = 1;
        let unfair = report(&swapped, None);
        assert_eq!(unfair.verdict, Verdict::Unfair);
        let mismatch = unfair.mismatch.clone().unwrap();
        assert_eq!(
            (mismatch.index, mismatch.expected, mismatch.found),
            (0, order[0].clone(), order[1].clone())
        );
        assert!(unfair.to_text().contains("at index 0"));
        let json: serde_json::Value = serde_json::from_str(&unfair.to_json()).unwrap();
        assert_eq!(json["verdict"], "unfair");
        assert_eq!(json["mismatch"]["index"], 0);

        let mut unreadable = reading.clone();
        unreadable.unreadable = 1;
        assert_eq!(report(&unreadable, None).exit_code(), exit::INCONCLUSIVE);
        assert_eq!(report(&Reading::default(), None).verdict, Verdict::Inconclusive);
    }

    #[test]
    fn commitments_are_64_hex_digits() {
        assert_eq!(parse_commitment(&"AB".repeat(32)), Ok("ab".repeat(32)));
        assert!(parse_commitment("abc").is_err());
        assert!(parse_commitment(&"zz".repeat(32)).is_err());
    }
}
