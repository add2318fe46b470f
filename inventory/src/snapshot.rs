//! Durable snapshots of the seat maps, so a replica starts from a checkpoint instead of the
//! whole stream (which keeps only 7 days, and holds millions of messages after a big sale).
//!
//! - [`Checkpointer`] runs inside the feed, between two messages, so a snapshot and the stream
//!   sequence it covers always agree. Every [`Config::snapshot_every_messages`] messages, every
//!   [`Config::snapshot_interval_ms`] and at shutdown it copies the maps that changed since
//!   their last stored snapshot and hands them to the writer; maps that did not change only get
//!   their covered sequence moved forward. It never waits for Postgres: while the writer is
//!   busy, it takes no copy and tries again later.
//! - [`write_loop`] serialises and stores what it is handed, one checkpoint at a time.
//! - [`restore`] (at start) puts the stored maps back and says where replay resumes: after the
//!   lowest covered sequence; the feed skips each event's messages at or below its own.
//!
//! Several replicas write the same rows; an upsert only moves a row forward (a later stream
//! incarnation, or a higher sequence of the same one), and a move of the covered sequence
//! alone applies only while the stored map version is the writer's.
//!
//! [`Config::snapshot_every_messages`]: crate::Config::snapshot_every_messages
//! [`Config::snapshot_interval_ms`]: crate::Config::snapshot_interval_ms

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement, Value};
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::{
    error::Error,
    registry::{EventEntry, NOT_PERSISTED, Registry},
    seatmap::{MapState, SeatMap},
};

/// The encoding of `seat_map_snapshots.state`: [`MapState`] as JSON.
const FORMAT_JSON: i16 = 1;

/// Checkpoints waiting for the writer beyond the one it is writing: one, so the feed never
/// holds more than two copies of the maps and never waits.
pub const CHECKPOINT_QUEUE: usize = 1;

/// A stored snapshot, as read at start.
pub struct StoredSnapshot {
    pub event_id: Uuid,
    pub epoch: i64,
    pub sequence: u64,
    pub state: MapState,
}

/// What the maps hold at one stream position, handed from the feed to the writer.
pub struct Checkpoint {
    /// The stream incarnation ([`StreamPosition::epoch`](crate::feed::StreamPosition)).
    pub epoch: i64,
    /// Every message up to this stream sequence is in the maps.
    pub sequence: u64,
    /// Maps changed since their last stored snapshot, copied.
    pub changed: Vec<(Uuid, Arc<EventEntry>, MapState)>,
    /// Maps unchanged since their stored snapshot of this version.
    pub unchanged: Vec<(Uuid, u64)>,
}

/// The snapshots table.
#[derive(Clone)]
pub struct Snapshots {
    db: DatabaseConnection,
}

impl Snapshots {
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }

    /// Every stored snapshot; a row that cannot be decoded is logged and left out (its event
    /// is then replayed from the stream).
    pub async fn load_all(&self) -> Result<Vec<StoredSnapshot>, Error> {
        let rows = self
            .db
            .query_all_raw(Statement::from_string(
                DbBackend::Postgres,
                "SELECT event_id, stream_epoch, stream_sequence, format, state FROM seat_map_snapshots",
            ))
            .await?;
        let mut snapshots = Vec::with_capacity(rows.len());
        for row in rows {
            let event_id: Uuid = row.try_get("", "event_id")?;
            let format: i16 = row.try_get("", "format")?;
            let bytes: Vec<u8> = row.try_get("", "state")?;
            let state = match format {
                FORMAT_JSON => serde_json::from_slice::<MapState>(&bytes).map_err(|e| e.to_string()),
                other => Err(format!("unknown format {other}")),
            };
            match state {
                Ok(state) => snapshots.push(StoredSnapshot {
                    event_id,
                    epoch: row.try_get("", "stream_epoch")?,
                    sequence: row.try_get::<i64>("", "stream_sequence")?.max(0) as u64,
                    state,
                }),
                Err(problem) => {
                    tracing::error!(%event_id, %problem, "unreadable seat map snapshot; the event is replayed");
                }
            }
        }
        Ok(snapshots)
    }

    /// Stores a checkpoint: one upsert per changed map, one statement for the unchanged ones.
    /// Marks each changed entry persisted at its version.
    pub async fn write(&self, checkpoint: &Checkpoint) -> Result<(), Error> {
        let sequence = i64::try_from(checkpoint.sequence).unwrap_or(i64::MAX);
        for (event_id, entry, state) in &checkpoint.changed {
            let bytes = serde_json::to_vec(state).map_err(|e| Error::CorruptRow(e.to_string()))?;
            self.db
                .execute_raw(Statement::from_sql_and_values(
                    DbBackend::Postgres,
                    "INSERT INTO seat_map_snapshots AS s \
                       (event_id, stream_epoch, stream_sequence, map_version, format, state) \
                     VALUES ($1, $2, $3, $4, $5, $6) \
                     ON CONFLICT (event_id) DO UPDATE SET stream_epoch = excluded.stream_epoch, \
                       stream_sequence = excluded.stream_sequence, map_version = excluded.map_version, \
                       format = excluded.format, state = excluded.state, taken_at = now() \
                     WHERE (excluded.stream_epoch, excluded.stream_sequence) > (s.stream_epoch, s.stream_sequence)",
                    vec![
                        Value::from(*event_id),
                        Value::from(checkpoint.epoch),
                        Value::from(sequence),
                        Value::from(i64::try_from(state.version).unwrap_or(i64::MAX)),
                        Value::from(FORMAT_JSON),
                        Value::from(bytes),
                    ],
                ))
                .await?;
            entry.set_persisted(state.version);
        }
        if !checkpoint.unchanged.is_empty() {
            let rows: Vec<serde_json::Value> = checkpoint
                .unchanged
                .iter()
                .map(|(id, version)| serde_json::json!({"event_id": id, "map_version": version}))
                .collect();
            self.db
                .execute_raw(Statement::from_sql_and_values(
                    DbBackend::Postgres,
                    "UPDATE seat_map_snapshots AS s SET stream_sequence = $2, taken_at = now() \
                     FROM jsonb_to_recordset($3::jsonb) AS c(event_id uuid, map_version bigint) \
                     WHERE s.event_id = c.event_id AND s.map_version = c.map_version \
                       AND s.stream_epoch = $1 AND s.stream_sequence < $2",
                    vec![
                        Value::from(checkpoint.epoch),
                        Value::from(sequence),
                        Value::from(serde_json::Value::Array(rows)),
                    ],
                ))
                .await?;
        }
        Ok(())
    }
}

/// Stores each checkpoint handed over until the feed drops its sender. A failed write is
/// logged; the maps it carried stay unpersisted, so the next checkpoint copies them again.
pub async fn write_loop(snapshots: Snapshots, mut checkpoints: mpsc::Receiver<Checkpoint>) {
    while let Some(checkpoint) = checkpoints.recv().await {
        let started = Instant::now();
        match snapshots.write(&checkpoint).await {
            Ok(()) => {
                metrics::counter!("inventory_snapshots_written_total")
                    .increment(checkpoint.changed.len() as u64);
                metrics::gauge!("inventory_snapshot_sequence").set(checkpoint.sequence as f64);
                tracing::debug!(
                    stream_sequence = checkpoint.sequence,
                    changed = checkpoint.changed.len(),
                    unchanged = checkpoint.unchanged.len(),
                    ms = started.elapsed().as_millis() as u64,
                    "seat map snapshot stored"
                );
            }
            Err(error) => {
                tracing::warn!(%error, stream_sequence = checkpoint.sequence, "cannot store seat map snapshots; retried at the next checkpoint");
            }
        }
    }
}

/// Where the feed resumes after [`restore`].
#[derive(Debug, Clone, Default)]
pub struct Resume {
    /// Replay starts after this sequence: the lowest covered sequence of the known events
    /// (0, the whole stream, if one of them has no usable snapshot).
    pub start_after: u64,
    /// Per event, the sequence its restored map already covers; the feed skips that event's
    /// messages at or below it.
    pub covered: HashMap<Uuid, u64>,
}

/// Puts the stored maps of the registry's events back and answers where replay resumes.
/// A snapshot of another stream incarnation (`epoch`) keeps its state (the sales it knows)
/// but covers nothing: the whole new stream is applied on top of it.
pub fn restore(registry: &Registry, stored: Vec<StoredSnapshot>, epoch: i64) -> Resume {
    let mut covered = HashMap::new();
    for snapshot in stored {
        let Some(entry) = registry.cached(snapshot.event_id) else {
            continue;
        };
        match SeatMap::restore(&entry.event, &snapshot.state) {
            Ok(map) => {
                entry.restore(map);
                if snapshot.epoch == epoch {
                    covered.insert(snapshot.event_id, snapshot.sequence);
                } else {
                    // Not persisted for this stream: the first checkpoint stores it anew,
                    // with the current epoch.
                    entry.set_persisted(NOT_PERSISTED);
                    tracing::warn!(
                        event_id = %snapshot.event_id,
                        "seat map snapshot of an earlier incarnation of the event stream; \
                         kept, and the whole current stream is applied on top of it"
                    );
                }
            }
            Err(problem) => {
                tracing::error!(event_id = %snapshot.event_id, %problem, "seat map snapshot does not fit the catalogue; the event is replayed");
            }
        }
    }
    let start_after =
        registry.all().iter().map(|(id, _)| covered.get(id).copied().unwrap_or(0)).min().unwrap_or(0);
    Resume { start_after, covered }
}

/// Decides, between two messages of the feed, when to take a checkpoint, and takes it.
pub struct Checkpointer {
    registry: Arc<Registry>,
    writer: mpsc::Sender<Checkpoint>,
    epoch: i64,
    every_messages: u64,
    /// The longest between two checkpoints while messages arrive.
    interval: Duration,
    /// Messages applied since the last checkpoint handed over.
    pending: u64,
    /// The sequence of the last checkpoint handed over.
    last_sequence: u64,
}

impl Checkpointer {
    /// A checkpointer handing its checkpoints to `writer`; `start_after` is already covered.
    pub fn new(
        registry: Arc<Registry>,
        writer: mpsc::Sender<Checkpoint>,
        epoch: i64,
        every_messages: u64,
        interval: Duration,
        start_after: u64,
    ) -> Self {
        Self {
            registry,
            writer,
            epoch,
            every_messages: every_messages.max(1),
            interval,
            pending: 0,
            last_sequence: start_after,
        }
    }

    /// The interval of [`Self::tick`].
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// One more message applied, up to `sequence`: a checkpoint every `every_messages`.
    pub fn applied(&mut self, sequence: u64) {
        self.pending += 1;
        if self.pending >= self.every_messages {
            self.try_checkpoint(sequence);
        }
    }

    /// The interval elapsed: a checkpoint if anything moved or an event has no snapshot yet.
    pub fn tick(&mut self, sequence: u64) {
        if sequence > self.last_sequence || self.any_unpersisted() {
            self.try_checkpoint(sequence);
        }
    }

    /// At shutdown: a last checkpoint, waiting for room in the queue; then the writer ends
    /// once it has stored everything (the sender is dropped here).
    pub async fn finish(self, sequence: u64) {
        let checkpoint = self.capture(sequence);
        if self.writer.send(checkpoint).await.is_err() {
            tracing::warn!("the snapshot writer is gone; no snapshot at shutdown");
        }
    }

    fn any_unpersisted(&self) -> bool {
        self.registry.all().iter().any(|(_, entry)| entry.persisted_version() != entry.map().version())
    }

    /// Copies the maps if the writer can take them now; otherwise leaves it for later.
    fn try_checkpoint(&mut self, sequence: u64) {
        let Ok(permit) = self.writer.try_reserve() else {
            return;
        };
        permit.send(self.capture(sequence));
        self.pending = 0;
        self.last_sequence = sequence;
    }

    fn capture(&self, sequence: u64) -> Checkpoint {
        let mut changed = Vec::new();
        let mut unchanged = Vec::new();
        for (id, entry) in self.registry.all() {
            let map = entry.map();
            let version = map.version();
            if entry.persisted_version() == version {
                unchanged.push((id, version));
            } else {
                let state = map.state();
                drop(map);
                changed.push((id, entry, state));
            }
        }
        Checkpoint { epoch: self.epoch, sequence, changed, unchanged }
    }
}
