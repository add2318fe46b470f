//! The checks after the sale, against ground truth: payment's sold seats (the rows payment's
//! internal `ListSoldSeats` answers, read from Postgres: that RPC is seat-lock's only), the
//! `payment` schema in Postgres (bookings, booking_seats, seat_guard, payments, the
//! sandbox provider's `psp_ledger`), inventory's availability and seat-lock's holds.

use std::{
    collections::{HashMap, HashSet},
    time::{Duration, Instant},
};

use anyhow::Context;
use sea_orm::{ConnectionTrait, Database, DatabaseConnection, DbBackend, Statement};
use serde::Serialize;
use ticketing_proto::v1::{
    self as pb, inventory_service_client::InventoryServiceClient,
    seat_lock_service_client::SeatLockServiceClient,
};

use super::{
    admission_order::admission_order,
    ctx::Ctx,
    retry::brief,
    stats::{Stats, Timings},
};

/// Abandoned holds whose final state is asked of seat-lock (GetHold); a sample when more.
const ABANDONED_CHECKS: usize = 2_000;
/// Every sold place of the event (`$1`): as payment's `ListSoldSeats` answers them, one row
/// per seat of a live (`confirmed` or `cancelling`) booking and `quantity` rows per live
/// general-admission booking.
const SOLD_SEATS: &str = "SELECT s.zone_id, s.seat_id, b.user_id FROM payment.booking_seats s \
     JOIN payment.bookings b ON b.booking_id = s.booking_id WHERE s.event_id::text = $1 \
     AND b.status IN ('confirmed', 'cancelling') \
     UNION ALL SELECT b.zone_id, '' AS seat_id, b.user_id FROM payment.bookings b \
     CROSS JOIN LATERAL generate_series(1, b.quantity) \
     WHERE b.event_id::text = $1 AND b.status IN ('confirmed', 'cancelling') \
     AND NOT EXISTS (SELECT 1 FROM payment.booking_seats s WHERE s.booking_id = b.booking_id)";

/// One sold place.
struct SoldSeat {
    zone_id: String,
    /// Empty for general admission.
    seat_id: String,
    user_id: String,
}
/// How often the settle loop looks again.
const SETTLE_POLL: Duration = Duration::from_millis(500);
/// Payments of the event (`$1`) not in a final state (processing, charging, unknown,
/// captured, refunding, or any state added later), and refunds not yet made: money still
/// moving, which the settle loop waits for and the I2 checks require to be none.
const UNSETTLED_PAYMENTS: &str = "SELECT (SELECT count(*) FROM payment.payments WHERE event_id::text = $1 \
     AND status NOT IN ('confirmed', 'declined', 'refunded')) \
     + (SELECT count(*) FROM payment.refunds r JOIN payment.payments p ON p.payment_id = r.payment_id \
     WHERE p.event_id::text = $1 AND r.state = 'refunding')";
/// Live (not cancelled) bookings of the event (`$1`), as a table expression.
const LIVE_BOOKINGS: &str = "(SELECT * FROM payment.bookings WHERE status <> 'cancelled')";

/// One invariant check and its result.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub invariant: &'static str,
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

/// The result of every check; `violations` is empty when the sale was correct.
#[derive(Debug, Default, Serialize)]
pub struct Verification {
    pub checks: Vec<Check>,
    pub violations: Vec<String>,
    /// Not invariants, but worth knowing (e.g. a notification that did not arrive in time).
    pub warnings: Vec<String>,
    pub seats_sold: u64,
    pub bookings: u64,
    pub captured_charges: u64,
    pub refunded_charges: u64,
    pub admission_inversions: u64,
    pub admissions_compared: u64,
}

impl Verification {
    fn check(
        &mut self,
        invariant: &'static str,
        name: impl Into<String>,
        ok: bool,
        detail: impl Into<String>,
    ) {
        let (name, detail) = (name.into(), detail.into());
        if !ok {
            self.violations.push(format!("{invariant} {name}: {detail}"));
        }
        self.checks.push(Check { invariant, name, ok, detail });
    }
}

async fn rows(
    db: &DatabaseConnection,
    sql: &str,
    event_id: &str,
) -> anyhow::Result<Vec<sea_orm::QueryResult>> {
    Ok(db.query_all_raw(Statement::from_sql_and_values(DbBackend::Postgres, sql, [event_id.into()])).await?)
}

async fn scalar(db: &DatabaseConnection, sql: &str, event_id: &str) -> anyhow::Result<i64> {
    let row = rows(db, sql, event_id).await?.into_iter().next().context("no row")?;
    Ok(row.try_get_by_index::<Option<i64>>(0)?.unwrap_or(0))
}

/// Waits for the sale to settle (holds released or expired, payments finished), then checks.
pub async fn verify(ctx: &Ctx, timings: &mut Timings) -> anyhow::Result<Verification> {
    let event = &ctx.event;
    let event_id = event.event_id.clone();
    let db = Database::connect(&ctx.config.database_url).await.context("cannot connect to Postgres")?;
    let channel = ctx.channels[0].clone();
    let mut inventory = InventoryServiceClient::new(channel.clone());
    let mut v = Verification::default();

    // Settle: nothing held, no payment in flight, inventory agreeing with payment.
    let started = Instant::now();
    let settle_deadline = started + Duration::from_secs(ctx.config.settle_secs);
    let mut availability;
    loop {
        availability = inventory
            .get_availability(pb::GetAvailabilityRequest { event_id: event_id.clone() })
            .await?
            .into_inner();
        let held: u64 = availability.zones.iter().map(|z| u64::from(z.held)).sum();
        let sold: u64 = availability.zones.iter().map(|z| u64::from(z.sold)).sum();
        let unsettled = scalar(&db, UNSETTLED_PAYMENTS, &event_id).await?;
        let booked = scalar(
            &db,
            "SELECT COALESCE(sum(quantity), 0)::bigint FROM payment.bookings WHERE event_id::text = $1 AND status <> 'cancelled'",
            &event_id,
        )
        .await?;
        if (held == 0 && unsettled == 0 && sold == booked as u64) || Instant::now() > settle_deadline {
            break;
        }
        tokio::time::sleep(SETTLE_POLL).await;
    }
    timings.settle_secs = started.elapsed().as_secs_f64();

    // I1 and I6 from payment's sold seats.
    let sold = rows(&db, SOLD_SEATS, &event_id)
        .await?
        .into_iter()
        .map(|row| {
            Ok(SoldSeat {
                zone_id: row.try_get_by_index(0)?,
                seat_id: row.try_get_by_index(1)?,
                user_id: row.try_get_by_index(2)?,
            })
        })
        .collect::<Result<Vec<_>, sea_orm::DbErr>>()?;
    v.seats_sold = sold.len() as u64;
    let mut seen = HashSet::new();
    let mut doubles = Vec::new();
    let mut per_zone: HashMap<&str, u64> = HashMap::new();
    let mut per_user: HashMap<&str, u64> = HashMap::new();
    for seat in &sold {
        if !seat.seat_id.is_empty() && !seen.insert(seat.seat_id.as_str()) {
            doubles.push(seat.seat_id.clone());
        }
        *per_zone.entry(seat.zone_id.as_str()).or_default() += 1;
        *per_user.entry(seat.user_id.as_str()).or_default() += 1;
    }
    v.check(
        "I1",
        "no seat sold twice (sold seats)",
        doubles.is_empty(),
        format!("{} seats sold, {} twice {:?}", sold.len(), doubles.len(), &doubles[..doubles.len().min(5)]),
    );
    for zone in &event.zones {
        let n = per_zone.get(zone.zone_id.as_str()).copied().unwrap_or(0);
        v.check(
            "I1",
            format!("zone {} not oversold (sold seats)", zone.zone_id),
            n <= u64::from(zone.capacity),
            format!("{n} of {}", zone.capacity),
        );
    }
    let pg_doubles = scalar(
        &db,
        &format!(
            "SELECT count(*) FROM (SELECT s.seat_id FROM payment.booking_seats s JOIN {LIVE_BOOKINGS} b USING (booking_id) \
             WHERE s.event_id::text = $1 GROUP BY s.seat_id HAVING count(*) > 1) d"
        ),
        &event_id,
    )
    .await?;
    v.check(
        "I1",
        "no seat in two live bookings (Postgres booking_seats)",
        pg_doubles == 0,
        format!("{pg_doubles} seats in two bookings"),
    );
    let seated_sold = sold.iter().filter(|s| !s.seat_id.is_empty()).count() as i64;
    let guard =
        scalar(&db, "SELECT count(*) FROM payment.seat_guard WHERE event_id::text = $1", &event_id).await?;
    let booked_seats = scalar(
        &db,
        &format!(
            "SELECT count(*) FROM payment.booking_seats s JOIN {LIVE_BOOKINGS} b USING (booking_id) WHERE s.event_id::text = $1"
        ),
        &event_id,
    )
    .await?;
    v.check(
        "I1",
        "one seat_guard row per sold seat",
        guard == seated_sold && guard == booked_seats,
        format!("seat_guard {guard}, booking_seats {booked_seats}, sold seated {seated_sold}"),
    );
    for row in rows(
        &db,
        &format!("SELECT zone_id, sum(quantity)::bigint FROM {LIVE_BOOKINGS} b WHERE event_id::text = $1 GROUP BY zone_id"),
        &event_id,
    )
    .await?
    {
        let zone: String = row.try_get_by_index(0)?;
        let n: i64 = row.try_get_by_index(1)?;
        let capacity = event.zones.iter().find(|z| z.zone_id == zone).map_or(0, |z| i64::from(z.capacity));
        v.check("I1", format!("zone {zone} not oversold (Postgres bookings)"), n <= capacity, format!("{n} of {capacity}"));
    }
    v.bookings =
        scalar(&db, &format!("SELECT count(*) FROM {LIVE_BOOKINGS} b WHERE event_id::text = $1"), &event_id)
            .await? as u64;

    let max = u64::from(event.max_tickets_per_user);
    let over: Vec<String> =
        per_user.iter().filter(|(_, n)| **n > max).map(|(u, n)| format!("{u} bought {n}")).take(5).collect();
    v.check(
        "I6",
        "per-user limit kept (sold seats)",
        over.is_empty(),
        format!("limit {max}; {} users over {over:?}", over.len()),
    );
    let pg_over = scalar(
        &db,
        &format!("SELECT count(*) FROM (SELECT user_id FROM {LIVE_BOOKINGS} b WHERE event_id::text = $1 GROUP BY user_id HAVING sum(quantity) > {max}) o"),
        &event_id,
    )
    .await?;
    v.check(
        "I6",
        "per-user limit kept (Postgres bookings)",
        pg_over == 0,
        format!("{pg_over} users over {max}"),
    );

    // I2: every sandbox charge of this event's payments ends in one live booking or one
    // refund (a declined one in neither), and no money is still moving.
    let ledger = rows(
        &db,
        &format!(
            "SELECT l.status, p.status, (SELECT count(*) FROM {LIVE_BOOKINGS} b WHERE b.payment_id = p.payment_id)::bigint \
             FROM payment.psp_ledger l JOIN payment.payments p ON p.payment_id::text = l.idempotency_key \
             WHERE p.event_id::text = $1"
        ),
        &event_id,
    )
    .await?;
    let (mut unmatched, mut declined, mut pending) = (Vec::new(), 0u64, 0u64);
    for row in &ledger {
        let charge: String = row.try_get_by_index(0)?;
        let payment: String = row.try_get_by_index(1)?;
        let live_bookings: i64 = row.try_get_by_index(2)?;
        let matched = match charge.as_str() {
            "captured" => {
                v.captured_charges += 1;
                payment == "confirmed" && live_bookings == 1
            }
            "refunded" => {
                v.refunded_charges += 1;
                payment == "refunded" && live_bookings == 0
            }
            "declined" => {
                declined += 1;
                payment == "declined" && live_bookings == 0
            }
            // Still pending at the provider after the sale settled, or a status this check
            // does not know: either way not settled.
            _ => {
                pending += 1;
                false
            }
        };
        if !matched {
            unmatched.push(format!("{charge} charge, payment {payment}, {live_bookings} live bookings"));
        }
    }
    v.check(
        "I2",
        "every charge matched by exactly one booking or one refund",
        unmatched.is_empty(),
        format!(
            "{} captured, {} refunded, {declined} declined, {pending} pending or unknown; {} unmatched {:?}",
            v.captured_charges,
            v.refunded_charges,
            unmatched.len(),
            &unmatched[..unmatched.len().min(5)]
        ),
    );
    let uncharged = scalar(
        &db,
        "SELECT count(*) FROM payment.payments p WHERE p.event_id::text = $1 AND p.status IN ('confirmed', 'refunded') \
         AND NOT EXISTS (SELECT 1 FROM payment.psp_ledger l WHERE l.idempotency_key = p.payment_id::text)",
        &event_id,
    )
    .await?;
    v.check(
        "I2",
        "every confirmed or refunded payment has its charge",
        uncharged == 0,
        format!("{uncharged} without a ledger row"),
    );
    let stuck = scalar(&db, UNSETTLED_PAYMENTS, &event_id).await?;
    v.check(
        "I2",
        "no payment or refund left unsettled (between states, or refunding)",
        stuck == 0,
        format!("{stuck} unsettled after {:.0} s", timings.settle_secs),
    );

    // I4: a replay charges once.
    let replay_problems = ctx.records.replay_problems.lock().map(|p| p.clone()).unwrap_or_default();
    v.check(
        "I4",
        "replayed Pay answered the same payment",
        replay_problems.is_empty(),
        format!(
            "{} disagreements {:?}",
            replay_problems.len(),
            &replay_problems[..replay_problems.len().min(5)]
        ),
    );
    let double_charged = scalar(
        &db,
        "SELECT count(*) FROM (SELECT p.hold_id FROM payment.psp_ledger l JOIN payment.payments p ON p.payment_id::text = l.idempotency_key \
         WHERE p.event_id::text = $1 AND l.status = 'captured' GROUP BY p.hold_id HAVING count(*) > 1) d",
        &event_id,
    )
    .await?;
    v.check(
        "I4",
        "no hold charged twice and kept (psp_ledger)",
        double_charged == 0,
        format!("{double_charged} holds with two captured charges"),
    );

    // I3: nothing stays held; abandoned holds ended; inventory agrees with payment.
    let held: u64 = availability.zones.iter().map(|z| u64::from(z.held)).sum();
    let inventory_sold: u64 = availability.zones.iter().map(|z| u64::from(z.sold)).sum();
    v.check(
        "I3",
        "nothing held after the sale settled (inventory)",
        held == 0,
        format!("{held} seats held after {:.0} s", timings.settle_secs),
    );
    let consistent = availability.zones.iter().all(|z| z.free + z.held + z.sold == z.capacity);
    v.check(
        "I3",
        "free + held + sold = capacity in every zone",
        consistent,
        format!(
            "{:?}",
            availability
                .zones
                .iter()
                .map(|z| (z.zone_id.as_str(), z.free, z.held, z.sold, z.capacity))
                .collect::<Vec<_>>()
        ),
    );
    v.check(
        "I3",
        "inventory's sold seats equal payment's",
        inventory_sold == v.seats_sold,
        format!("inventory {inventory_sold}, payment {}", v.seats_sold),
    );
    // Freshness seat by seat: the seats inventory's map shows sold are exactly payment's.
    let map = inventory
        .get_seat_map(pb::GetSeatMapRequest { event_id: event_id.clone(), zone_id: String::new() })
        .await?
        .into_inner();
    let mut shown_sold = HashSet::new();
    for zone in &map.zones {
        let per_row = zone.seats_per_row.max(1) as usize;
        for (index, state) in zone.decode_seat_states()?.into_iter().enumerate() {
            if let (pb::SeatState::Sold, Some(row)) = (state, zone.row_labels.get(index / per_row)) {
                shown_sold.insert(format!("{}-{row}-{}", zone.zone_id, index % per_row + 1));
            }
        }
    }
    let paid: HashSet<String> =
        sold.iter().filter(|s| !s.seat_id.is_empty()).map(|s| s.seat_id.clone()).collect();
    let (unshown, unpaid) = (paid.difference(&shown_sold).count(), shown_sold.difference(&paid).count());
    v.check(
        "I3",
        "inventory's seat map shows exactly payment's sold seats as sold",
        unshown == 0 && unpaid == 0,
        format!("{unshown} sold seats not shown sold, {unpaid} shown sold but not sold"),
    );
    let abandoned = ctx.records.abandoned.lock().map(|a| a.clone()).unwrap_or_default();
    // Redis restarts of a chaos run, as (went down, answered again) in seconds since opening:
    // a restart takes every hold and the whole queue with it.
    let redis_outages: Vec<(f64, f64)> = ctx
        .faults
        .lock()
        .map(|faults| {
            faults
                .iter()
                .filter(|f| f.target == "redis")
                .map(|f| (f.started_secs, f.back_secs.unwrap_or(f64::INFINITY)))
                .collect()
        })
        .unwrap_or_default();
    let mut seat_lock = SeatLockServiceClient::new(channel);
    let mut still_held = Vec::new();
    let mut asked = 0;
    for hold in abandoned.iter().take(ABANDONED_CHECKS) {
        asked += 1;
        let answer = seat_lock
            .get_hold(ctx.config.identity.user(&hold.user_id).request(pb::GetHoldRequest {
                event_id: event_id.clone(),
                hold_id: hold.hold_id.clone(),
                user_id: hold.user_id.clone(),
            }))
            .await;
        let lost_with_redis = redis_outages.iter().any(|(_, up)| *up >= hold.held_at);
        let ended = match &answer {
            Ok(h) => match h.get_ref().state() {
                pb::HoldState::Released => true,
                pb::HoldState::Expired => !hold.released,
                _ => false,
            },
            Err(status) => status.code() == tonic::Code::NotFound && lost_with_redis,
        };
        if !ended {
            let state = answer.as_ref().map(|h| format!("{:?}", h.get_ref().state()));
            still_held.push(format!("{} {}", hold.hold_id, state.unwrap_or_else(brief)));
        }
    }
    v.check(
        "I3",
        "abandoned holds are RELEASED or EXPIRED, or gone with a Redis restart (seat-lock GetHold)",
        still_held.is_empty(),
        format!(
            "{asked} of {} asked; not ended: {} {:?}",
            abandoned.len(),
            still_held.len(),
            &still_held[..still_held.len().min(5)]
        ),
    );

    // I5: after opening, admission order (pass ids are a per-event sequence) = join order.
    let admissions = ctx.records.admissions.lock().map(|a| a.clone()).unwrap_or_default();
    let order = admission_order(&admissions, &redis_outages);
    v.admissions_compared = order.compared;
    v.admission_inversions = order.inversions;
    v.check(
        "I5",
        "no admission-order inversion among users who joined after opening",
        v.admission_inversions == 0 && order.unparsable == 0,
        format!(
            "{} inversions among {} admissions (pass ids not numeric: {}; not comparable, waiting across a Redis restart: {})",
            v.admission_inversions, v.admissions_compared, order.unparsable, order.across_restarts
        ),
    );

    let stages = &ctx.stats.stages;
    let (paid, notified) = (Stats::get(&stages.paid), Stats::get(&stages.notified));
    if paid != notified {
        v.warnings.push(format!("{paid} confirmed payments but {notified} confirmations seen on Subscribe"));
    }
    if v.bookings < paid {
        v.violations.push(format!(
            "I2 users were told {paid} payments confirmed but Postgres has {} bookings",
            v.bookings
        ));
    }

    // Last: the provider's ledger against the books, by payment's own reconciliation, which
    // must find nothing once the mesh has settled by itself.
    let finding =
        crate::reconciliation::reconcile(ctx.channels[0].clone(), &ctx.config.identity.admin()).await;
    v.check("I2", "reconciliation finds nothing (payment Reconcile)", finding.clean, finding.detail);
    Ok(v)
}
