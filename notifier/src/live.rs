//! Live fan-out of stored notifications to `Subscribe` streams, on every replica.
//!
//! [`crate::inbox::Inbox::store`] sends a Postgres `NOTIFY` on [`CHANNEL`] in the
//! transaction that stores a notification, so it is delivered when (and only if) the row is
//! committed, to every replica that LISTENs: the consumer that stored it may run on another
//! replica than the user's stream. Each replica's [`listen`] task wakes the streams of that
//! user (the [`Hub`], keyed by user); a woken stream reads Postgres once from its cursor.
//! Postgres is therefore read once when a stream starts (its backlog) and then once per
//! notification of its user, never on a timer per stream: the reads do not grow with the
//! number of idle streams.
//!
//! Nothing is lost between the backlog and live: a stream registers in the hub before it
//! reads its backlog, and every read starts after the last id sent. A lost `NOTIFY` (the
//! LISTEN connection dropped) wakes every stream once after the listener is back; as a last
//! safety net, each replica asks Postgres every [`SAFETY_POLL`] (one query for all its
//! streams) for newer rows of its subscribed users.
//!
//! At most `MAX_SUBSCRIBERS` streams are live per replica; past it `Subscribe` answers
//! `RESOURCE_EXHAUSTED` (reason `TOO_MANY_SUBSCRIBERS`), and the client tries again later or
//! on another replica.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement, sqlx::postgres::PgListener};
use service_runtime::{CancellationToken, lifecycle::RetryPause};
use sha2::{Digest, Sha256};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use crate::Error;

/// The Postgres notification channel of stored notifications.
pub const CHANNEL: &str = "notifier_inbox";

/// Default of `MAX_SUBSCRIBERS`: live `Subscribe` streams per replica. Each costs a task, a
/// buffer of [`crate::service::STREAM_BUFFER`] notifications and an HTTP/2 stream; a few
/// thousand fit in tens of megabytes.
pub const DEFAULT_MAX_SUBSCRIBERS: usize = 5_000;

/// Inbox reads the live streams of one replica make at once (their backlog at start, their
/// new rows when woken); others wait their turn. Half of the notifier's Postgres pool
/// ([`crate::app::DB_MAX_CONNECTIONS`]), so a burst of thousands of streams starting at once
/// (clients reconnecting after a restart) queues here instead of exhausting the pool and
/// failing the consumer's and the RPCs' queries with acquire timeouts.
pub const CONCURRENT_READS: usize = 8;

/// How often each replica checks Postgres for rows of its subscribed users that no `NOTIFY`
/// announced (one query per replica, whatever the number of streams). Notifications normally
/// arrive within a round trip; this only bounds how late one can be if a `NOTIFY` was lost.
pub const SAFETY_POLL: Duration = Duration::from_secs(60);

/// The key a user's streams are registered under, and the one a `NOTIFY` names: the first 8
/// bytes of SHA-256 of the user id, so the payload is small whatever the id's length (Postgres
/// refuses payloads over 8000 bytes) and the same on every replica. Two users that share a
/// key only cost each other an extra read.
pub fn user_key(user_id: &str) -> u64 {
    let digest = Sha256::digest(user_id.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// What follows the notification id in a `NOTIFY` payload of `user_id`'s notification, which
/// is `<id>:<key in hex>`. The inbox appends it to the id Postgres assigns, in the statement
/// that stores the row.
pub fn payload_suffix(user_id: &str) -> String {
    format!(":{:016x}", user_key(user_id))
}

/// The notification id and user key of a payload (see [`payload_suffix`]).
fn parse_payload(payload: &str) -> Option<(i64, u64)> {
    let (id, key) = payload.split_once(':')?;
    Some((id.parse().ok()?, u64::from_str_radix(key, 16).ok()?))
}

/// The live streams of one replica, by user, and the cap on their number.
#[derive(Debug)]
pub struct Hub {
    users: Mutex<HashMap<u64, Streams>>,
    /// One permit per stream that may still start.
    slots: Arc<Semaphore>,
    max: usize,
    /// Bumped to make every stream re-read its user's rows (a LISTEN connection was lost).
    resync: watch::Sender<u64>,
    /// [`CONCURRENT_READS`] permits.
    reads: Arc<Semaphore>,
}

/// The streams of one user key.
#[derive(Debug)]
struct Streams {
    /// The newest notification id announced for the key.
    newest: watch::Sender<i64>,
    /// The user id (of the first stream), for the safety poll.
    user_id: String,
    count: usize,
}

impl Hub {
    /// A hub allowing `max` live streams.
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            users: Mutex::new(HashMap::new()),
            slots: Arc::new(Semaphore::new(max)),
            max,
            resync: watch::channel(0).0,
            reads: Arc::new(Semaphore::new(CONCURRENT_READS)),
        })
    }

    /// The permits a stream takes for each inbox read ([`CONCURRENT_READS`]).
    pub fn reads(&self) -> Arc<Semaphore> {
        Arc::clone(&self.reads)
    }

    fn users(&self) -> MutexGuard<'_, HashMap<u64, Streams>> {
        self.users.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers a stream of `user_id`, or refuses it when `MAX_SUBSCRIBERS` are live.
    /// Register before reading the backlog: whatever is announced from now on wakes it.
    pub fn subscribe(self: &Arc<Self>, user_id: &str) -> Result<Subscription, Error> {
        let slot = Arc::clone(&self.slots)
            .try_acquire_owned()
            .map_err(|_| Error::TooManySubscribers { limit: self.max })?;
        let key = user_key(user_id);
        let newest = {
            let mut users = self.users();
            let streams = users.entry(key).or_insert_with(|| Streams {
                newest: watch::channel(0).0,
                user_id: user_id.to_owned(),
                count: 0,
            });
            streams.count += 1;
            streams.newest.subscribe()
        };
        Ok(Subscription { hub: Arc::clone(self), key, newest, resync: self.resync.subscribe(), _slot: slot })
    }

    /// Announces notification `id` of the user with `key`; wakes its streams, if any here.
    pub fn announce(&self, key: u64, id: i64) {
        if let Some(streams) = self.users().get(&key) {
            streams.newest.send_if_modified(|newest| {
                let newer = id > *newest;
                if newer {
                    *newest = id;
                }
                newer
            });
        }
    }

    /// Wakes every stream to re-read its user's rows.
    pub fn resync_all(&self) {
        self.resync.send_modify(|generation| *generation += 1);
    }

    /// Live streams now.
    pub fn live(&self) -> usize {
        self.max - self.slots.available_permits()
    }

    /// The user ids with live streams here.
    fn subscribed_users(&self) -> Vec<String> {
        self.users().values().map(|streams| streams.user_id.clone()).collect()
    }
}

/// One live stream's registration; unregisters when dropped.
#[derive(Debug)]
pub struct Subscription {
    hub: Arc<Hub>,
    key: u64,
    /// Changes when a newer notification of the user is announced.
    pub newest: watch::Receiver<i64>,
    /// Changes when every stream must re-read.
    pub resync: watch::Receiver<u64>,
    _slot: OwnedSemaphorePermit,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut users = self.hub.users();
        if let Some(streams) = users.get_mut(&self.key) {
            streams.count -= 1;
            if streams.count == 0 {
                users.remove(&self.key);
            }
        }
    }
}

/// A LISTEN connection on [`CHANNEL`], open before the service serves, so no stream can
/// start before notifications are heard.
pub async fn listener(db: &DatabaseConnection) -> Result<PgListener, sea_orm::sqlx::Error> {
    let mut listener = PgListener::connect_with(db.get_postgres_connection_pool()).await?;
    listener.listen(CHANNEL).await?;
    Ok(listener)
}

/// Hears `NOTIFY`s and wakes the streams they concern until `stopping`. When the LISTEN
/// connection is lost it connects again (pausing between failures) and then wakes every
/// stream once, since notifications sent meanwhile were not heard. Nothing else shares this
/// loop: a receive is never abandoned half-way but to stop.
pub async fn listen(
    mut listener: PgListener,
    db: DatabaseConnection,
    hub: Arc<Hub>,
    stopping: CancellationToken,
) {
    let mut pause = RetryPause::standard();
    loop {
        let received = tokio::select! {
            () = stopping.cancelled() => return,
            received = listener.try_recv() => received,
        };
        match received {
            Ok(Some(notification)) => match parse_payload(notification.payload()) {
                Some((id, key)) => hub.announce(key, id),
                None => {
                    tracing::warn!(payload = notification.payload(), "malformed inbox notification; ignored")
                }
            },
            Ok(None) | Err(_) => {
                if let Err(error) = received {
                    tracing::warn!(%error, "LISTEN connection failed");
                }
                // Connect again now (not lazily at the next receive), then re-read.
                listener = loop {
                    match self::listener(&db).await {
                        Ok(listener) => break listener,
                        Err(error) => {
                            tracing::warn!(%error, "cannot LISTEN on Postgres; retrying");
                            if !pause.wait(&stopping).await {
                                return;
                            }
                        }
                    }
                };
                pause.reset();
                tracing::info!(
                    streams = hub.live(),
                    "LISTEN connection back; live streams re-read their inboxes"
                );
                hub.resync_all();
            }
        }
    }
}

/// Runs the safety poll every [`SAFETY_POLL`] until `stopping`.
pub async fn safety_polls(db: DatabaseConnection, hub: Arc<Hub>, stopping: CancellationToken) {
    let mut every = tokio::time::interval(SAFETY_POLL);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut floors = SafetyFloors::default();
    loop {
        tokio::select! {
            () = stopping.cancelled() => return,
            _ = every.tick() => {}
        }
        if let Err(error) = safety_poll(&db, &hub, &mut floors).await {
            tracing::warn!(error = %format!("{error:#}"), "live safety poll failed");
        }
    }
}

/// The notification ids below which the safety poll no longer looks: it covers the rows
/// stored since the poll before the last one, so a row whose transaction committed late (it
/// took its id earlier) is still seen.
#[derive(Debug, Default)]
struct SafetyFloors {
    older: i64,
    newer: i64,
}

/// One safety poll: the newest row of each subscribed user since [`SafetyFloors::older`],
/// announced like a `NOTIFY` (a stream that sent it already does not read again).
async fn safety_poll(db: &DatabaseConnection, hub: &Hub, floors: &mut SafetyFloors) -> Result<(), Error> {
    let users = hub.subscribed_users();
    let rows = if users.is_empty() {
        Vec::new()
    } else {
        db.query_all_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT user_id, max(id) AS newest FROM inbox WHERE user_id = ANY($1) AND id > $2 GROUP BY user_id",
            [users.into(), floors.older.into()],
        ))
        .await?
    };
    let mut newest = floors.newer;
    for row in rows {
        let user_id: String = row.try_get_by("user_id")?;
        let id: i64 = row.try_get_by("newest")?;
        newest = newest.max(id);
        hub.announce(user_key(&user_id), id);
    }
    *floors = SafetyFloors { older: floors.newer, newer: newest };
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip_and_stay_small() {
        let long = "u".repeat(10_000);
        let text = format!("42{}", payload_suffix(&long));
        assert!(text.len() < 64, "{text}");
        assert_eq!(parse_payload(&text), Some((42, user_key(&long))));
        assert_eq!(parse_payload("x:y"), None);
    }

    #[test]
    fn the_cap_refuses_past_max_and_frees_on_drop() {
        let hub = Hub::new(2);
        let a = hub.subscribe("alice").unwrap();
        let _b = hub.subscribe("alice").unwrap();
        assert!(matches!(hub.subscribe("bob"), Err(Error::TooManySubscribers { limit: 2 })));
        drop(a);
        let mut c = hub.subscribe("bob").unwrap();
        assert_eq!(hub.live(), 2);
        hub.announce(user_key("bob"), 7);
        assert!(c.newest.has_changed().unwrap());
        assert_eq!(*c.newest.borrow_and_update(), 7);
        // An older id does not wake anyone.
        hub.announce(user_key("bob"), 5);
        assert!(!c.newest.has_changed().unwrap());
    }
}
