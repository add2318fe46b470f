//! Real failures through the real processes: a 200-user race for ten seats, payment crashing
//! at each step of a Pay, Redis losing the sale's keys mid-sale, NATS going down mid-sale (for
//! payment's bookings and for admission's admissions, with admission killed too), and the
//! notifier killed while it consumes.
//! Every check reads the ground truth (Postgres tables, seat-lock's Redis keys, the sandbox
//! provider's ledger), and every test ends with payment's reconciliation finding nothing.
//!
//! Needs the service binaries (`cargo build --bins`, which the README's test command runs),
//! HAProxy and `nats-server`.

#![allow(clippy::expect_used, clippy::unwrap_used)]

#[path = "failures/helpers.rs"]
mod helpers;

use std::{os::unix::process::ExitStatusExt, time::Duration};

use prost::Message;

use helpers::*;
use test_support::testenv::{TestEnv, eventually};
use ticketing_proto::v1::{self as pb};
use tonic::Code;

/// A cheap pseudo-random number; the tests need variety, not quality.
fn random(below: usize) -> usize {
    (uuid::Uuid::new_v4().as_u128() % below as u128) as usize
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_users_race_for_ten_seats_and_each_seat_sells_once() -> anyhow::Result<()> {
    const USERS: usize = 200;
    const SEATS: u32 = 10;
    let env = TestEnv::new().await?;
    let stack = start_stack(&env, None).await?;
    let event_id = create_event(&stack, SEATS, 4, USERS as u32).await?;
    let seats = seat_ids(SEATS);
    let users: Vec<String> = (0..USERS).map(|i| format!("racer-{i}")).collect();
    let passes = admit_all(&stack, &event_id, &users).await?;
    assert_eq!(passes.len(), USERS, "every user is admitted (capacity {USERS})");

    let (seat_lock, payment) = (stack.seat_lock()?, stack.payment()?);
    let tasks = users.iter().map(|user| {
        let (mut seat_lock, mut payment) = (seat_lock.clone(), payment.clone());
        let mut wanted: Vec<String> = Vec::new();
        for _ in 0..=random(3) {
            let seat = seats[random(seats.len())].clone();
            if !wanted.contains(&seat) {
                wanted.push(seat);
            }
        }
        let request = stack.as_user(user, hold_request(&event_id, user, &passes[user], &wanted));
        let (event_id, identity) = (event_id.clone(), stack.0.identity.clone());
        tokio::spawn(async move {
            let hold = match seat_lock.hold_seats(request).await {
                Ok(hold) => hold.into_inner(),
                Err(status) => return anyhow::Ok(Err(status)),
            };
            let key = format!("race-{}", hold.hold_id);
            let paid = payment
                .pay(identity.as_user(&hold.user_id, pay_request(&key, &event_id, &hold)))
                .await?
                .into_inner();
            Ok(Ok((hold, paid)))
        })
    });
    let mut sold_to: std::collections::BTreeMap<String, String> = Default::default();
    let mut refused = 0;
    for outcome in futures::future::join_all(tasks).await {
        match outcome?? {
            Ok((hold, paid)) => {
                let status = paid.payment.as_ref().map(|p| p.status());
                assert_eq!(status, Some(pb::PaymentStatus::Confirmed), "a live hold pays: {paid:?}");
                for seat in &hold.seat_ids {
                    let before = sold_to.insert(seat.clone(), hold.hold_id.clone());
                    assert!(before.is_none(), "seat {seat} sold to {before:?} and {}", hold.hold_id);
                }
            }
            Err(status) => {
                refused += 1;
                let refusal = (status.code(), reason(&status));
                assert!(
                    refusal == (Code::Aborted, "SEAT_TAKEN".into())
                        || refusal == (Code::FailedPrecondition, "ZONE_SOLD_OUT".into()),
                    "{status:?}"
                );
            }
        }
    }
    assert!(!sold_to.is_empty() && sold_to.len() <= SEATS as usize, "{sold_to:?}");
    assert!(refused > 0, "200 users on 10 seats must collide");
    println!("{} seats sold, {refused} of {USERS} holds refused", sold_to.len());

    let db = env.database().await?;
    let redis = redis(&env).await?;
    let in_postgres = redis_agrees_with_postgres(&db, &redis, &env, &event_id, &seats).await?;
    assert_eq!(in_postgres, sold_to, "Postgres sold exactly the seats the callers were told");
    assert_eq!(i2_violations(&db).await?, Vec::<String>::new());
    reconciliation_finds_nothing(&stack).await?;
    Ok(())
}

/// Where payment is crashed, and what the replay after recovery must answer.
const CRASH_POINTS: [(&str, pb::PaymentStatus); 4] = [
    // Nothing written yet (the key is claimed with the payment row): the replay pays for real.
    ("after_begin_checkout", pb::PaymentStatus::Confirmed),
    // Charged, hold still in checkout: recovery confirms the hold and books.
    ("after_charge", pb::PaymentStatus::Confirmed),
    // Seats sold in seat-lock, nothing in Postgres: recovery replays ConfirmHold with the
    // reserved booking id and books (a refund here would leave the seats sold to nobody).
    ("after_confirm_hold", pb::PaymentStatus::Confirmed),
    // The booking transaction rolled back with the crash: as above.
    ("before_commit", pb::PaymentStatus::Confirmed),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payment_crashing_at_each_step_never_loses_or_keeps_money() -> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    let stack = start_stack(&env, None).await?;
    let event_id = create_event(&stack, 10, 4, 10).await?;
    let seats = seat_ids(10);
    let db = env.database().await?;
    let redis = redis(&env).await?;
    stack.kill_started("payment").await?;

    for (n, (point, expected)) in CRASH_POINTS.iter().enumerate() {
        // Payment with the knob armed; it serves everything else (seat-lock's rebuild reads
        // ListSoldSeats) until a Pay reaches `point`.
        let mut crashing = stack
            .spawn_service("payment", &[("PAYMENT_CRASH_AT", point), ("RECOVERY_AFTER_SECS", "1")], point)
            .await?;
        let user = format!("crash-{point}");
        let token = admit(stack.admission()?, stack.token(&user), event_id.clone(), user.clone()).await?;
        let hold = stack
            .seat_lock()?
            .hold_seats(stack.as_user(&user, hold_request(&event_id, &user, &token, &seats[n..=n])))
            .await?
            .into_inner();
        let request = pay_request(&format!("crash-key-{point}"), &event_id, &hold);

        // A real crash: the process aborts at `point` while serving this Pay.
        let answer = stack.payment()?.pay(stack.as_user(&user, request.clone())).await;
        assert!(answer.is_err(), "{point}: Pay must not answer when the process aborts: {answer:?}");
        let exit = eventually(EVENTUALLY, || {
            let status = crashing.try_wait().ok().flatten();
            async move { status }
        })
        .await
        .expect("payment exits");
        assert_eq!(exit.signal(), Some(libc_sigabrt()), "{point}: payment aborted ({exit:?})");
        // What the crash left, before any recovery: proof it stopped at `point`.
        let key = request.idempotency_key.clone();
        let left = |sql: &'static str| query_i64(&db, sql, vec![key.clone().into()]);
        let payments = left("SELECT count(*) FROM payment.payments WHERE idempotency_key = $1").await?;
        let charged = left(
            "SELECT count(*) FROM payment.psp_ledger l JOIN payment.payments p \
             ON p.payment_id::text = l.idempotency_key WHERE p.idempotency_key = $1",
        )
        .await?;
        let booked = left(
            "SELECT count(*) FROM payment.bookings b JOIN payment.payments p \
             ON p.payment_id = b.payment_id WHERE p.idempotency_key = $1",
        )
        .await?;
        let seat_key = format!("{}sl:{{{event_id}}}:seat:{}", env.redis_prefix, seats[n]);
        let seat: Option<String> = fred::prelude::KeysInterface::get(&redis, &seat_key).await?;
        let sold_mark = format!("sold:{}", hold.hold_id);
        let expected_left = match *point {
            "after_begin_checkout" => (0, 0, hold.hold_id.clone()),
            "after_charge" => (1, 1, hold.hold_id.clone()),
            _ => (1, 1, sold_mark),
        };
        assert_eq!(
            (payments, charged, seat.unwrap_or_default()),
            expected_left,
            "{point}: (payment rows, charges, seat key) after the crash"
        );
        assert_eq!(booked, 0, "{point}: nothing was booked before the crash");

        // Restart without the knob; recovery settles what the crash left.
        let mut restarted = stack
            .spawn_service("payment", &[("RECOVERY_AFTER_SECS", "1")], &format!("{point}-restart"))
            .await?;
        let mut payment = stack.payment()?;
        let replay = eventually(EVENTUALLY, || {
            let (mut payment, request) = (payment.clone(), stack.as_user(&user, request.clone()));
            async move {
                match payment.pay(request).await {
                    Ok(response) => Some(response.into_inner()),
                    // The key is still in flight until recovery frees or settles it.
                    Err(status) if status.code() == Code::Aborted => None,
                    Err(status) => panic!("{status:?}"),
                }
            }
        })
        .await
        .unwrap_or_else(|| panic!("{point}: the replay never got a final answer"));
        let status = replay.payment.as_ref().map(|p| p.status());
        assert_eq!(status, Some(*expected), "{point}: {replay:?}");
        // A second replay is the stored answer and charges nothing more.
        let again = payment.pay(stack.as_user(&user, request.clone())).await?.into_inner();
        assert!(again.replayed, "{point}");
        assert_eq!(
            again.payment.map(|p| p.payment_id),
            replay.payment.as_ref().map(|p| p.payment_id.clone())
        );

        let charges = query_i64(
            &db,
            "SELECT count(*) FROM payment.psp_ledger l JOIN payment.payments p \
             ON p.payment_id::text = l.idempotency_key WHERE p.hold_id::text = $1",
            vec![hold.hold_id.clone().into()],
        )
        .await?;
        assert_eq!(charges, 1, "{point}: exactly one charge for the hold");
        assert_eq!(i2_violations(&db).await?, Vec::<String>::new(), "{point}");
        let processing =
            query_i64(&db, "SELECT count(*) FROM payment.payments WHERE status = 'processing'", vec![])
                .await?;
        assert_eq!(processing, 0, "{point}: recovery settled every payment");
        // Seat-lock and Postgres agree: the paid seat is sold to this hold in both.
        let sold = redis_agrees_with_postgres(&db, &redis, &env, &event_id, &seats).await?;
        assert_eq!(sold.get(&seats[n]), Some(&hold.hold_id), "{point}: {sold:?}");
        reconciliation_finds_nothing(&stack).await.map_err(|e| e.context(*point))?;
        restarted.kill()?;
        restarted.wait()?;
    }
    Ok(())
}

fn libc_sigabrt() -> i32 {
    6
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_redis_keys_mid_sale_never_frees_a_sold_seat() -> anyhow::Result<()> {
    const SEATS: u32 = 12;
    let env = TestEnv::new().await?;
    let stack = start_stack(&env, None).await?;
    let event_id = create_event(&stack, SEATS, 4, 50).await?;
    let seats = seat_ids(SEATS);
    let users: Vec<String> = (0..10).map(|i| format!("buyer-{i}")).collect();
    let passes = admit_all(&stack, &event_id, &users).await?;
    let (mut seat_lock, mut payment) = (stack.seat_lock()?, stack.payment()?);

    // Before the loss: users 0-3 buy seats 1-4; user 4 holds seat 5 without paying.
    for (i, user) in users[..4].iter().enumerate() {
        let hold = seat_lock
            .hold_seats(stack.as_user(user, hold_request(&event_id, user, &passes[user], &seats[i..=i])))
            .await?;
        let paid = payment
            .pay(stack.as_user(user, pay_request(&format!("flush-key-{i}"), &event_id, hold.get_ref())))
            .await?;
        assert_eq!(paid.into_inner().payment.map(|p| p.status()), Some(pb::PaymentStatus::Confirmed));
    }
    let unpaid = seat_lock
        .hold_seats(
            stack.as_user(&users[4], hold_request(&event_id, &users[4], &passes[&users[4]], &seats[4..5])),
        )
        .await?
        .into_inner();

    let redis = redis(&env).await?;
    let deleted = delete_prefix_keys(&redis, &env.redis_prefix).await?;
    assert!(deleted > 0, "the sale had Redis keys to lose");

    // Every sold seat stays sold: seat-lock rebuilds from payment and answers SEAT_TAKEN.
    for (i, seat) in seats[..4].iter().enumerate() {
        let user = &users[5 + i];
        let request = hold_request(&event_id, user, &passes[user], std::slice::from_ref(seat));
        let refused = eventually(EVENTUALLY, || {
            let (mut seat_lock, request) = (seat_lock.clone(), stack.as_user(user, request.clone()));
            async move {
                match seat_lock.hold_seats(request).await {
                    Err(status) if status.code() == Code::Unavailable => None, // rebuilding
                    other => Some(other),
                }
            }
        })
        .await
        .expect("seat-lock answers after the rebuild");
        let status = refused.expect_err("a sold seat must not be held again");
        assert_eq!(
            (status.code(), reason(&status).as_str()),
            (Code::Aborted, "SEAT_TAKEN"),
            "{seat}: {status:?}"
        );
    }
    // The unpaid hold was lost with Redis: paying it is refused before any money moves.
    let lost = payment.pay(stack.as_user(&users[4], pay_request("flush-lost", &event_id, &unpaid))).await;
    let status = lost.expect_err("a hold Redis lost cannot be paid");
    assert!(matches!(status.code(), Code::NotFound | Code::FailedPrecondition), "{status:?}");
    let charged = query_i64(
        &env.database().await?,
        "SELECT count(*) FROM payment.payments WHERE idempotency_key = 'flush-lost'",
        vec![],
    )
    .await?;
    assert_eq!(charged, 0, "nothing was charged for the lost hold");

    // The sale goes on: free seats (the lost hold's included) sell; all of them, once.
    for (i, user) in users[5..9].iter().enumerate() {
        let wanted = &seats[4 + 2 * i..6 + 2 * i];
        let hold = seat_lock
            .hold_seats(stack.as_user(user, hold_request(&event_id, user, &passes[user], wanted)))
            .await?;
        let paid = payment
            .pay(stack.as_user(user, pay_request(&format!("flush-after-{i}"), &event_id, hold.get_ref())))
            .await?;
        assert_eq!(paid.into_inner().payment.map(|p| p.status()), Some(pb::PaymentStatus::Confirmed));
    }
    let status = seat_lock
        .hold_seats(
            stack.as_user(&users[9], hold_request(&event_id, &users[9], &passes[&users[9]], &seats[..1])),
        )
        .await
        .expect_err("sold out");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");

    let db = env.database().await?;
    let sold = redis_agrees_with_postgres(&db, &redis, &env, &event_id, &seats).await?;
    assert_eq!(sold.len(), SEATS as usize, "every seat sold exactly once: {sold:?}");
    assert_eq!(i2_violations(&db).await?, Vec::<String>::new());
    reconciliation_finds_nothing(&stack).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_outage_mid_sale_delays_but_never_loses_or_doubles_notifications() -> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    let mut nats = TestNats::start(&env.id).await?;
    let stack = start_stack(&env, Some(nats.url())).await?;
    let event_id = create_event(&stack, 10, 4, 50).await?;
    let seats = seat_ids(10);
    let users: Vec<String> = (0..6).map(|i| format!("fan-{i}")).collect();
    let passes = admit_all(&stack, &event_id, &users).await?;
    let (mut seat_lock, mut payment) = (stack.seat_lock()?, stack.payment()?);
    let db = env.database().await?;
    let mut bookings = Vec::new();

    let mut buy = async |i: usize| -> anyhow::Result<String> {
        let user = &users[i];
        let hold = seat_lock
            .hold_seats(stack.as_user(user, hold_request(&event_id, user, &passes[user], &seats[i..=i])))
            .await?;
        let paid = payment
            .pay(stack.as_user(user, pay_request(&format!("nats-key-{i}"), &event_id, hold.get_ref())))
            .await?
            .into_inner();
        Ok(paid.booking.expect("a booking").booking_id)
    };
    for i in 0..2 {
        bookings.push(buy(i).await?);
    }
    nats.kill();
    for i in 2..6 {
        bookings.push(buy(i).await?);
    }
    // The bookings committed; their events wait in the outbox while NATS is down.
    let pending = query_i64(&db, "SELECT count(*) FROM payment.outbox", vec![]).await?;
    assert!(pending >= 4, "the outbox holds the 4 bookings NATS could not take, has {pending}");
    let committed = query_i64(&db, "SELECT count(*) FROM payment.bookings", vec![]).await?;
    assert_eq!(committed, 6);

    nats.restart().await?;
    let drained = eventually(Duration::from_secs(60), || {
        let db = db.clone();
        let bookings = bookings.clone();
        async move {
            let outbox = query_i64(&db, "SELECT count(*) FROM payment.outbox", vec![]).await.ok()?;
            let mut delivered = 0;
            for booking in &bookings {
                delivered += query_i64(
                    &db,
                    "SELECT count(*) FROM notifier.inbox WHERE message_id = 'booking:' || $1",
                    vec![booking.clone().into()],
                )
                .await
                .ok()?;
            }
            (outbox == 0 && delivered == bookings.len() as i64).then_some(())
        }
    })
    .await;
    assert!(drained.is_some(), "the outbox drains and every booking is notified after NATS returns");
    // Exactly one BOOKING_CONFIRMED per booking, none for anything else.
    let notified = query_i64(
        &db,
        "SELECT count(*) FROM notifier.inbox WHERE message_id LIKE 'booking:%' AND kind = $1",
        vec![(pb::NotificationKind::BookingConfirmed as i32 as i16).into()],
    )
    .await?;
    assert_eq!(notified, bookings.len() as i64);
    for booking in &bookings {
        let n = query_i64(
            &db,
            "SELECT count(*) FROM notifier.inbox WHERE message_id = 'booking:' || $1",
            vec![booking.clone().into()],
        )
        .await?;
        assert_eq!(n, 1, "booking {booking}");
    }
    let sold = redis_agrees_with_postgres(&db, &redis(&env).await?, &env, &event_id, &seats).await?;
    assert_eq!(sold.len(), 6);
    assert_eq!(i2_violations(&db).await?, Vec::<String>::new());
    reconciliation_finds_nothing(&stack).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admissions_during_a_nats_outage_are_announced_once_even_after_admission_dies() -> anyhow::Result<()>
{
    let env = TestEnv::new().await?;
    let mut nats = TestNats::start(&env.id).await?;
    let stack = start_stack(&env, Some(nats.url())).await?;
    let event_id = create_event(&stack, 10, 4, 50).await?;
    let early: Vec<String> = (0..3).map(|i| format!("early-{i}")).collect();
    admit_all(&stack, &event_id, &early).await?;
    let nats_url = nats.url();
    let announced = async || admitted_users(&nats_url, &stack.config().nats_prefix, &event_id).await;
    let all_early =
        eventually(EVENTUALLY, || async { announced().await.ok().filter(|u| u.len() == 3) }).await;
    assert!(all_early.is_some(), "the first admissions are announced while NATS is up");

    // NATS goes down: admission keeps admitting, and its Admitted events wait in the outbox.
    nats.kill();
    let late: Vec<String> = (0..5).map(|i| format!("outage-{i}")).collect();
    let passes = admit_all(&stack, &event_id, &late).await?;
    assert_eq!(passes.len(), late.len(), "admission admits during the outage");
    // The replica that admitted them dies before it could publish anything.
    stack.kill_started("admission").await?;
    nats.restart().await?;
    let _restarted = stack.spawn_service("admission", &[], "restart").await?;

    // A new replica takes the dead one's outbox over: every admission is announced, once.
    let mut expected: Vec<String> = early.iter().chain(&late).cloned().collect();
    expected.sort();
    let everyone =
        eventually(Duration::from_secs(60), || async { announced().await.ok().filter(|u| u.len() >= 8) })
            .await;
    assert_eq!(everyone, Some(expected.clone()), "each admitted user announced exactly once");
    // Admission deletes an outbox entry only after JetStream stored its events, and the key
    // goes with its last entry. Once it is gone nothing is left to announce (nobody else is
    // admitted), so what the stream holds then is final.
    let redis = redis(&env).await?;
    let outbox = format!("{}adm:{{{event_id}}}:outbox", env.redis_prefix);
    let drained = eventually(EVENTUALLY, || async {
        (fred::prelude::KeysInterface::exists::<u64, _>(&redis, &outbox).await.ok()? == 0).then_some(())
    })
    .await;
    assert!(drained.is_some(), "the outbox drains once NATS is back");
    assert_eq!(announced().await?, expected, "and nothing is announced twice later");
    reconciliation_finds_nothing(&stack).await?;
    Ok(())
}

/// The users of every `Admitted` event of `event_id` stored in the stream of `prefix`, sorted
/// (a user announced twice appears twice).
async fn admitted_users(nats_url: &str, prefix: &str, event_id: &str) -> anyhow::Result<Vec<String>> {
    use async_nats::jetstream::consumer::{DeliverPolicy, pull};
    use ticketing_proto::events::{EventEnvelope, event_envelope::Body};
    use tokio_stream::StreamExt;
    let jetstream = async_nats::jetstream::new(async_nats::connect(nats_url).await?);
    let stream = jetstream.get_stream(format!("{prefix}_events")).await?;
    let consumer = stream
        .create_consumer(pull::Config {
            filter_subject: format!("{prefix}.admitted"),
            deliver_policy: DeliverPolicy::All,
            ack_policy: async_nats::jetstream::consumer::AckPolicy::None,
            ..Default::default()
        })
        .await?;
    let mut users = Vec::new();
    let mut messages =
        consumer.fetch().max_messages(10_000).expires(Duration::from_secs(1)).messages().await?;
    while let Some(message) = messages.next().await {
        let envelope = EventEnvelope::decode(message.map_err(|e| anyhow::anyhow!(e))?.payload.clone())?;
        if let Some(Body::Admitted(admitted)) = envelope.body
            && admitted.event_id == event_id
        {
            users.push(admitted.user_id);
        }
    }
    users.sort();
    Ok(users)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifier_killed_mid_stream_loses_and_duplicates_no_notification() -> anyhow::Result<()> {
    /// Events published while the notifier consumes, is killed and comes back.
    const EVENTS: usize = 400;
    let env = TestEnv::new().await?;
    let stack = start_stack(&env, None).await?;
    let db = env.database().await?;
    let nats = async_nats::connect(&stack.config().nats_url).await?;
    let (jetstream, subject) =
        (async_nats::jetstream::new(nats), format!("{}.booking.confirmed", stack.config().nats_prefix));
    let user = "killed-mid-stream";
    let published: Vec<String> = (0..EVENTS).map(|_| uuid::Uuid::new_v4().to_string()).collect();
    let publishing = tokio::spawn({
        let ids = published.clone();
        async move {
            for id in ids {
                let mut headers = async_nats::HeaderMap::new();
                headers.insert("Nats-Msg-Id", id.as_str());
                let body = booking_confirmed(&id, user).encode_to_vec().into();
                jetstream.publish_with_headers(subject.clone(), headers, body).await?.await?;
            }
            anyhow::Ok(())
        }
    });
    let stored = async || {
        query_i64(&db, "SELECT count(*) FROM notifier.inbox WHERE user_id = $1", vec![user.into()]).await
    };
    // SIGKILL while events still arrive: some stored, some fetched but neither stored nor acked.
    let started = eventually(EVENTUALLY, || async { stored().await.ok().filter(|&n| n >= 20) }).await;
    assert!(started.is_some(), "the notifier stored nothing");
    stack.kill_started("notifier").await?;
    let at_kill = stored().await?;
    publishing.await??;
    assert!(at_kill < EVENTS as i64, "the kill came after every event was stored");

    // Unacked messages come back after the consumer's ack wait (30 s).
    let _restarted = stack.spawn_service("notifier", &[], "restart").await?;
    let all =
        eventually(Duration::from_secs(90), || async { stored().await.ok().filter(|&n| n >= EVENTS as i64) })
            .await;
    assert_eq!(all, Some(EVENTS as i64), "every event reached the inbox after the restart");
    let distinct = query_i64(
        &db,
        "SELECT count(DISTINCT message_id) FROM notifier.inbox WHERE user_id = $1",
        vec![user.into()],
    )
    .await?;
    assert_eq!(distinct, EVENTS as i64, "each published event once");
    // Nothing arrives twice later on either. The notifier acks a message only after its
    // notification committed, and JetStream redelivers only what is unacked: once its consumer
    // has nothing pending and nothing awaiting an ack, no message can come again, so the
    // count then is final.
    let stream = async_nats::jetstream::new(async_nats::connect(&stack.config().nats_url).await?)
        .get_stream(format!("{}_events", stack.config().nats_prefix))
        .await?;
    let settled = eventually(EVENTUALLY, || async {
        let info = stream.consumer_info("notifier").await.ok()?;
        (info.num_pending == 0 && info.num_ack_pending == 0).then_some(())
    })
    .await;
    assert!(settled.is_some(), "the notifier acks every message it was given");
    assert_eq!(stored().await?, EVENTS as i64, "no notification stored twice");
    reconciliation_finds_nothing(&stack).await?;
    Ok(())
}

/// A `BookingConfirmed` event as payment's relay publishes it, with message id `id`.
fn booking_confirmed(id: &str, user: &str) -> ticketing_proto::events::EventEnvelope {
    use ticketing_proto::events::{BookingConfirmed, EventEnvelope, event_envelope::Body};
    EventEnvelope {
        message_id: id.to_owned(),
        occurred_at: None,
        body: Some(Body::BookingConfirmed(BookingConfirmed {
            event_id: uuid::Uuid::new_v4().to_string(),
            user_id: user.to_owned(),
            booking_id: uuid::Uuid::new_v4().to_string(),
            payment_id: uuid::Uuid::new_v4().to_string(),
            hold_id: uuid::Uuid::new_v4().to_string(),
            zone_id: "FLOOR".into(),
            seat_ids: Vec::new(),
            quantity: 1,
            amount_cents: 4_200,
            currency: "EUR".into(),
        })),
    }
}
