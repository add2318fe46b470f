//! Live Subscribe streams at scale: the per-replica cap, Postgres reads that do not grow with
//! idle streams, and notifications stored by another replica arriving once on every stream.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

#[allow(dead_code)]
#[path = "api/helpers.rs"]
mod helpers;

use std::{collections::HashMap, time::Duration};

use futures::{StreamExt, stream};
use helpers::{TestApp, WAIT, booking_confirmed, config, spawn_app, spawn_app_with, token};
use notifier::inbox::{Draft, Inbox};
use sea_orm::{ConnectionTrait, Database, DbBackend, Statement};
use service_runtime::auth::WithToken;
use test_support::testenv::TestEnv;
use ticketing_proto::v1::{
    Notification, NotificationKind, SubscribeRequest, notifier_service_client::NotifierServiceClient,
};
use tonic::{Code, Streaming, transport::Channel};

/// Connections the streams are spread over (HTTP/2 allows a few hundred streams on each).
const CONNECTIONS: usize = 50;

/// Another replica's inbox: its own connection pool, nothing shared with the app's process
/// state, so what it stores reaches the app's streams only through Postgres.
async fn other_replica(env: &TestEnv) -> anyhow::Result<Inbox> {
    Ok(Inbox::new(service_runtime::db::connect(&env.database_url, "notifier", 4).await?))
}

/// Stores one notification for `user` as another replica's consumer would; its id.
async fn store(inbox: &Inbox, user: &str) -> anyhow::Result<u64> {
    let source = booking_confirmed(user);
    let draft = Draft {
        message_id: source.message_id.clone(),
        user_id: user.to_owned(),
        kind: NotificationKind::BookingConfirmed,
        event_id: uuid::Uuid::new_v4().to_string(),
        source,
    };
    let stored = inbox.store(draft).await?.ok_or_else(|| anyhow::anyhow!("not stored"))?;
    Ok(stored.notification_id)
}

/// `CONNECTIONS` separate HTTP/2 connections to the app.
async fn connections(app: &TestApp) -> anyhow::Result<Vec<Channel>> {
    let mut channels = Vec::with_capacity(CONNECTIONS);
    for _ in 0..CONNECTIONS {
        channels.push(
            tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{}", app.port))?
                .connect()
                .await?,
        );
    }
    Ok(channels)
}

/// Opens a Subscribe stream for `user` from the start of the inbox.
async fn subscribe(
    channel: Channel,
    user: &str,
    token: &str,
) -> Result<Streaming<Notification>, tonic::Status> {
    NotifierServiceClient::with_interceptor(channel, WithToken::new(token))
        .subscribe(SubscribeRequest { user_id: user.to_owned(), after_id: 0 })
        .await
        .map(tonic::Response::into_inner)
}

/// The next notification of `stream`, within [`WAIT`].
async fn next(stream: &mut Streaming<Notification>) -> anyhow::Result<Notification> {
    tokio::time::timeout(WAIT, stream.next())
        .await
        .map_err(|_| anyhow::anyhow!("no notification within {WAIT:?}"))?
        .ok_or_else(|| anyhow::anyhow!("stream ended"))?
        .map_err(Into::into)
}

/// Transactions committed in the test's database so far (`pg_stat_database`), read from
/// another database so the reading does not count itself.
async fn commits(env: &TestEnv) -> anyhow::Result<i64> {
    let postgres = env.database_url.rsplit_once('/').map_or("", |(server, _)| server);
    let admin = Database::connect(format!("{postgres}/postgres")).await?;
    let row = admin
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT xact_commit FROM pg_stat_database WHERE datname = $1",
            [env.id.clone().into()],
        ))
        .await?
        .ok_or_else(|| anyhow::anyhow!("no stats for {}", env.id))?;
    admin.close().await?;
    Ok(row.try_get_by_index(0)?)
}

/// How long a reading waits after the activity it must include: PG 15 flushes a backend's
/// counters to `pg_stat_database` a second after its transactions when it can, and retries
/// 10 s later when the flush met contention.
const STATS_FLUSH: Duration = Duration::from_secs(11);
/// The idle window over which transactions are counted: three periods of the old per-stream
/// poll (2 s), which would show as 15,000 reads with 5,000 streams.
const IDLE_WINDOW: Duration = Duration::from_secs(6);
/// Transactions the two windows may differ by: background work that does not depend on the
/// streams (the webhook worker's idle poll every 250 ms, a safety poll). Far below one read
/// per 50 streams.
const BACKGROUND_SLACK: i64 = 100;

/// Transactions committed in the test's database during an idle [`IDLE_WINDOW`].
async fn idle_commits(env: &TestEnv) -> anyhow::Result<i64> {
    tokio::time::sleep(STATS_FLUSH).await;
    let before = commits(env).await?;
    tokio::time::sleep(IDLE_WINDOW).await;
    let after = commits(env).await?;
    Ok(after - before)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_streams_against_a_cap_of_five_thousand_and_reads_do_not_grow() -> anyhow::Result<()> {
    const CAP: usize = 5_000;
    const ATTEMPTS: usize = 10_000;
    const USERS: usize = 500;
    let env = TestEnv::new().await?;
    let mut config = config(&env);
    config.max_subscribers = CAP;
    let app = spawn_app_with(config).await?;
    let replica = other_replica(&env).await?;
    let users: Vec<String> = (0..USERS).map(|i| format!("sub{i:03}")).collect();
    let tokens: HashMap<&str, String> = users.iter().map(|user| (user.as_str(), token(user))).collect();
    // One notification per user: each stream's first message, proof that its backlog was read.
    let mut seeds = HashMap::new();
    for user in &users {
        seeds.insert(user.as_str(), store(&replica, user).await?);
    }
    let channels = connections(&app).await?;

    // Phase 1: 10 streams.
    let mut live = Vec::new();
    for (i, user) in users.iter().take(10).enumerate() {
        let mut stream = subscribe(channels[i % CONNECTIONS].clone(), user, &tokens[user.as_str()]).await?;
        assert_eq!(next(&mut stream).await?.notification_id, seeds[user.as_str()]);
        live.push((user.clone(), stream));
    }
    let with_ten = idle_commits(&env).await?;

    // Phase 2: the other 9,990 attempts at once, over all connections.
    let attempts = (10..ATTEMPTS).map(|i| {
        let user = users[i % USERS].clone();
        let channel = channels[i % CONNECTIONS].clone();
        let token = tokens[user.as_str()].clone();
        let seed = seeds[user.as_str()];
        async move {
            match subscribe(channel, &user, &token).await {
                Ok(mut stream) => {
                    let first = next(&mut stream).await?;
                    anyhow::ensure!(
                        first.notification_id == seed,
                        "first message {first:?}, not the seed {seed}"
                    );
                    Ok(Ok((user, stream)))
                }
                Err(status) => Ok(Err(status)),
            }
        }
    });
    let outcomes: Vec<anyhow::Result<_>> = stream::iter(attempts).buffer_unordered(500).collect().await;
    let mut refused = 0;
    for outcome in outcomes {
        match outcome? {
            Ok(stream) => live.push(stream),
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                let (reason, _) = service_runtime::status::reason(&status).expect("a reason");
                assert_eq!(reason, "TOO_MANY_SUBSCRIBERS");
                refused += 1;
            }
        }
    }
    assert_eq!(live.len(), CAP, "accepted streams");
    assert_eq!(refused, ATTEMPTS - CAP, "refused streams");
    // For the record (not asserted): this process holds the server and the client side.
    if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
        let rss = status.lines().find(|line| line.starts_with("VmRSS")).unwrap_or("VmRSS: ?");
        eprintln!("with {CAP} live streams (server and client in this process): {rss}");
    }
    let with_cap = idle_commits(&env).await?;
    eprintln!(
        "transactions in {IDLE_WINDOW:?} idle: {with_ten} with 10 streams, {with_cap} with {CAP} streams"
    );
    assert!(
        with_cap <= with_ten + BACKGROUND_SLACK,
        "Postgres work grew with idle streams: {with_ten} transactions with 10 streams, {with_cap} with {CAP}"
    );

    // Every stream is live: a notification for one user reaches each of that user's streams.
    let user = users[0].clone();
    let id = store(&replica, &user).await?;
    let mut reached = 0;
    for (owner, stream) in live.iter_mut().filter(|(owner, _)| *owner == user) {
        assert_eq!(next(stream).await?.notification_id, id, "stream of {owner}");
        reached += 1;
    }
    assert_eq!(reached, live.iter().filter(|(owner, _)| *owner == user).count());
    assert!(reached > 1);

    // A stream that ends frees its place.
    live.truncate(CAP - 1);
    let late = &users[1];
    let late_token = &tokens[late.as_str()];
    let mut again = test_support::testenv::eventually(WAIT, || {
        let channel = channels[0].clone();
        async move { subscribe(channel, late, late_token).await.ok() }
    })
    .await
    .ok_or_else(|| anyhow::anyhow!("a freed place was never given again"))?;
    assert_eq!(next(&mut again).await?.notification_id, seeds[late.as_str()]);
    drop(live);
    drop(again);
    app.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_stored_by_another_replica_arrive_once_on_every_stream() -> anyhow::Result<()> {
    const STREAMS: usize = 20;
    const STORED: usize = 60;
    let env = TestEnv::new().await?;
    let app = spawn_app(&env).await?;
    let replica = other_replica(&env).await?;
    let user = "ivy";
    let token = token(user);
    let channels = connections(&app).await?;
    let mut expected = vec![store(&replica, user).await?, store(&replica, user).await?];

    // Streams open while the other replica stores: some rows land before a stream's
    // backlog read, some between its registration and the read, some after.
    let storing = {
        let replica = replica.clone();
        tokio::spawn(async move {
            let mut ids = Vec::with_capacity(STORED);
            for _ in 0..STORED {
                ids.push(store(&replica, user).await?);
            }
            anyhow::Ok(ids)
        })
    };
    let mut streams = Vec::with_capacity(STREAMS);
    for i in 0..STREAMS {
        streams.push(subscribe(channels[i % CONNECTIONS].clone(), user, &token).await?);
    }
    expected.extend(storing.await??);
    // The last one closes the sequence: whatever a stream sends before it must be exactly
    // the rows above, once each and in order.
    let sentinel = store(&replica, user).await?;
    expected.push(sentinel);
    for (i, stream) in streams.iter_mut().enumerate() {
        let mut ids = Vec::with_capacity(expected.len());
        loop {
            let id = next(stream).await?.notification_id;
            ids.push(id);
            if id == sentinel {
                break;
            }
        }
        assert_eq!(ids, expected, "stream {i}");
    }
    app.stop().await
}

/// Terminates the backends of the test's database whose last statement was a LISTEN: the
/// app's live listener. How many.
async fn kill_listeners(env: &TestEnv) -> anyhow::Result<i64> {
    let postgres = env.database_url.rsplit_once('/').map_or("", |(server, _)| server);
    let admin = Database::connect(format!("{postgres}/postgres")).await?;
    let row = admin
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE datname = $1 AND query LIKE 'LISTEN%'",
            [env.id.clone().into()],
        ))
        .await?
        .ok_or_else(|| anyhow::anyhow!("no row"))?;
    admin.close().await?;
    Ok(row.try_get_by_index(0)?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_listen_connection_is_reopened_and_streams_miss_nothing() -> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    let app = spawn_app(&env).await?;
    let replica = other_replica(&env).await?;
    let user = "jay";
    let channels = connections(&app).await?;
    let mut stream = subscribe(channels[0].clone(), user, &token(user)).await?;
    let first = store(&replica, user).await?;
    assert_eq!(next(&mut stream).await?.notification_id, first);

    assert_eq!(kill_listeners(&env).await?, 1, "the app's LISTEN connection");
    // Stored right away, while the listener is down or reconnecting: heard after it is back,
    // or read by the re-read every stream makes then. Not by the 60 s safety poll: the wait
    // below gives up well before it.
    let mut expected = Vec::new();
    for _ in 0..5 {
        expected.push(store(&replica, user).await?);
    }
    let mut seen = Vec::new();
    while seen.len() < expected.len() {
        seen.push(next(&mut stream).await?.notification_id);
    }
    assert_eq!(seen, expected, "once each, in order");
    // Live again: the next one is the next message.
    let last = store(&replica, user).await?;
    assert_eq!(next(&mut stream).await?.notification_id, last);
    app.stop().await
}
