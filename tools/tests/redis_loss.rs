//! Redis losing the whole mesh's state mid-sale, through the real processes: admission
//! rebuilds its waiting room from the event history, seat-lock its seats from payment, and
//! the sale goes on: joins, admissions, holds and payments resume, active passes stay within
//! the admission capacity, and no seat is sold twice.
//!
//! Needs the service binaries (`cargo build --bins`), HAProxy and `nats-server`, like
//! `failures.rs`, whose harness it shares.

#![allow(clippy::expect_used, clippy::unwrap_used)]

#[allow(dead_code)] // shared with failures.rs, which uses all of it
#[path = "failures/helpers.rs"]
mod helpers;

use std::{
    collections::HashSet,
    time::{Duration, Instant},
};

use fred::interfaces::SortedSetsInterface;
use helpers::*;
use prost::Message;
use test_support::testenv::{TestEnv, eventually};
use ticketing_proto::{
    events::{EventEnvelope, event_envelope::Body},
    v1::{self as pb},
};
use tonic::Code;

/// Every envelope stored on `<prefix>.<kind>` (read without a durable consumer).
async fn stored_events(nats_url: &str, prefix: &str, kind: &str) -> anyhow::Result<Vec<EventEnvelope>> {
    use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
    use tokio_stream::StreamExt;
    let jetstream = async_nats::jetstream::new(async_nats::connect(nats_url).await?);
    let stream = jetstream.get_stream(format!("{prefix}_events")).await?;
    let consumer = stream
        .create_consumer(pull::Config {
            filter_subject: format!("{prefix}.{kind}"),
            deliver_policy: DeliverPolicy::All,
            ack_policy: AckPolicy::None,
            ..Default::default()
        })
        .await?;
    let mut events = Vec::new();
    let mut messages =
        consumer.fetch().max_messages(10_000).expires(Duration::from_secs(1)).messages().await?;
    while let Some(message) = messages.next().await {
        events.push(EventEnvelope::decode(message.map_err(|e| anyhow::anyhow!(e))?.payload.clone())?);
    }
    Ok(events)
}

/// Joins as `user`, repeating while admission answers UNAVAILABLE with QUEUE_REBUILDING (the
/// only UNAVAILABLE allowed).
async fn join_through_rebuild(
    stack: &Running,
    event_id: &str,
    user: &str,
) -> anyhow::Result<pb::QueueStatus> {
    let mut admission = stack.admission()?;
    let deadline = Instant::now() + EVENTUALLY;
    loop {
        let request = pb::JoinRequest { event_id: event_id.to_owned(), user_id: user.to_owned() };
        match admission.join(stack.as_user(user, request)).await {
            Err(status) if status.code() == Code::Unavailable => {
                anyhow::ensure!(reason(&status) == "QUEUE_REBUILDING", "{status:?}");
                anyhow::ensure!(Instant::now() < deadline, "the waiting room was never rebuilt");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            answer => return Ok(answer?.into_inner()),
        }
    }
}

/// The user's status once ADMITTED.
async fn admitted(stack: &Running, event_id: &str, user: &str) -> anyhow::Result<pb::QueueStatus> {
    let admission = stack.admission()?;
    let status = eventually(EVENTUALLY, || {
        let (mut admission, request) = (
            admission.clone(),
            stack
                .as_user(user, pb::GetQueueStatusRequest { event_id: event_id.into(), user_id: user.into() }),
        );
        async move {
            let status = admission.get_queue_status(request).await.ok()?.into_inner();
            (status.state == pb::QueueState::Admitted as i32).then_some(status)
        }
    })
    .await;
    status.ok_or_else(|| anyhow::anyhow!("{user} was never admitted"))
}

/// Holds `seat` with the user's pass and pays for it; the payment is confirmed.
async fn buy(
    stack: &Running,
    event_id: &str,
    user: &str,
    pass: &str,
    seat: &str,
    key: &str,
) -> anyhow::Result<()> {
    let hold = stack
        .seat_lock()?
        .hold_seats(stack.as_user(user, hold_request(event_id, user, pass, &[seat.to_owned()])))
        .await?
        .into_inner();
    let paid =
        stack.payment()?.pay(stack.as_user(user, pay_request(key, event_id, &hold))).await?.into_inner();
    anyhow::ensure!(
        paid.payment.as_ref().map(|p| p.status()) == Some(pb::PaymentStatus::Confirmed),
        "{user} paid {seat}: {paid:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_redis_mid_sale_resumes_joins_admissions_and_holds_within_capacity() -> anyhow::Result<()> {
    const SEATS: u32 = 8;
    const CAPACITY: u64 = 4;
    let env = TestEnv::new().await?;
    let stack = start_stack(&env, None).await?;
    let event_id = create_event(&stack, SEATS, 2, CAPACITY as u32).await?;
    let seats = seat_ids(SEATS);
    let users: Vec<String> = (0..7).map(|i| format!("fan-{i}")).collect();
    let mut passes = admit_all(&stack, &event_id, &users[..4]).await?;

    // Before the loss: fans 0 and 1 buy seats 1 and 2, which ends their passes (PassEnded);
    // fans 2 and 3 keep theirs.
    for i in 0..2 {
        buy(&stack, &event_id, &users[i], &passes[&users[i]], &seats[i], &format!("redis-loss-before-{i}"))
            .await?;
    }
    let ended = eventually(EVENTUALLY, || async {
        let events = stored_events(&env.nats_url, &env.nats_prefix, "pass.ended").await.ok()?;
        (events.len() == 2).then_some(())
    })
    .await;
    assert!(ended.is_some(), "both purchases ended their passes in the event history");

    let redis = redis(&env).await?;
    let deleted = delete_prefix_keys(&redis, &env.redis_prefix).await?;
    assert!(deleted > 0, "the sale had Redis keys to lose");
    let lost_at = Instant::now();

    // Three newcomers join; the passes of fans 2 and 3 still count: two get a pass, one waits.
    let mut joined = Vec::new();
    for user in &users[4..7] {
        joined.push(join_through_rebuild(&stack, &event_id, user).await?);
    }
    let first = admitted(&stack, &event_id, &users[4]).await?;
    let first_admission = lost_at.elapsed();
    passes.insert(users[4].clone(), first.pass.unwrap().token);
    passes.insert(users[5].clone(), admitted(&stack, &event_id, &users[5]).await?.pass.unwrap().token);
    let passes_key = format!("{}adm:{{{event_id}}}:passes", env.redis_prefix);
    let active: u64 = redis.zcard(&passes_key).await?;
    assert_eq!(active, CAPACITY, "the restored passes and the new ones fill the capacity, no more");
    let mut admission = stack.admission()?;
    let waiting = admission
        .get_queue_status(stack.as_user(
            &users[6],
            pb::GetQueueStatusRequest { event_id: event_id.clone(), user_id: users[6].clone() },
        ))
        .await?
        .into_inner();
    assert_eq!((waiting.state, waiting.position), (pb::QueueState::Waiting as i32, 1), "{waiting:?}");

    // Holds resume: a seat sold before the loss stays sold; free seats sell, pre-loss passes too.
    let taken = stack
        .seat_lock()?
        .hold_seats(
            stack.as_user(&users[4], hold_request(&event_id, &users[4], &passes[&users[4]], &seats[..1])),
        )
        .await
        .expect_err("a seat sold before the loss is not held again");
    assert_eq!((taken.code(), reason(&taken).as_str()), (Code::Aborted, "SEAT_TAKEN"), "{taken:?}");
    buy(&stack, &event_id, &users[2], &passes[&users[2]], &seats[2], "redis-loss-after-2").await?;
    buy(&stack, &event_id, &users[4], &passes[&users[4]], &seats[3], "redis-loss-after-4").await?;
    buy(&stack, &event_id, &users[5], &passes[&users[5]], &seats[4], "redis-loss-after-5").await?;
    // The purchases free their slots: the fan who waited is admitted and buys.
    let last = admitted(&stack, &event_id, &users[6]).await?.pass.unwrap().token;
    buy(&stack, &event_id, &users[6], &last, &seats[5], "redis-loss-after-6").await?;

    // No pass id was issued twice, and every admission is announced once.
    let announced = stored_events(&env.nats_url, &env.nats_prefix, "admitted").await?;
    let admissions: Vec<(String, String)> = announced
        .into_iter()
        .filter_map(|event| match event.body {
            Some(Body::Admitted(a)) if a.event_id == event_id => Some((a.user_id, a.pass_id)),
            _ => None,
        })
        .collect();
    let pass_ids: HashSet<&str> = admissions.iter().map(|(_, pass_id)| pass_id.as_str()).collect();
    assert_eq!((admissions.len(), pass_ids.len()), (7, 7), "{admissions:?}");

    let db = env.database().await?;
    let sold = redis_agrees_with_postgres(&db, &redis, &env, &event_id, &seats).await?;
    assert_eq!(sold.len(), 6, "six seats sold, each once: {sold:?}");
    assert_eq!(i2_violations(&db).await?, Vec::<String>::new());
    reconciliation_finds_nothing(&stack).await?;
    eprintln!("loss -> first admission after the rebuild: {first_admission:?}");
    Ok(())
}
