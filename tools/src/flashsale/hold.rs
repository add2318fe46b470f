//! A user's hold: chosen seats from the seat map (contention users, who aim at the same
//! popular rows) or the best available ones, asked again after a refusal as a person would.

use std::time::Duration;

use rand::{Rng, SeedableRng, rngs::StdRng};
use ticketing_proto::v1::{
    self as pb, inventory_service_client::InventoryServiceClient,
    seat_lock_service_client::SeatLockServiceClient,
};
use tonic::{Code, transport::Channel};

use super::{
    ctx::Ctx,
    plan::Plan,
    retry::{Retry, brief, call},
    stats::{Rpc, Stats},
};
use crate::{grpc::reason, identity::Bearer};

/// Hold attempts before a user gives up (seat taken, zone sold out in between).
const HOLD_ATTEMPTS: usize = 6;
/// Of those, how many a contention user spends on its chosen seats before taking the best
/// available ones.
const CONTENTION_ATTEMPTS: usize = 3;
/// Front rows of the first zone that contention users all aim at.
const POPULAR_ROWS: usize = 2;
/// Free blocks of the popular rows a contention user picks among: few, so that they collide.
const POPULAR_CHOICES: usize = 4;
/// After a refusal (seat taken, no adjacent seats, zone sold out) or a hold that timed out, a
/// user looks at the seat map again and takes a moment before asking again: a pause drawn
/// from this range, not an immediate retry storm.
const RETHINK_PAUSE_MS: std::ops::Range<u64> = 250..750;

/// Who asks for a hold, and how.
#[derive(Clone, Copy)]
pub struct Asker<'a> {
    pub ctx: &'a Ctx,
    /// The user's connection.
    pub channel: &'a Channel,
    pub pass: &'a pb::Pass,
    pub user: &'a str,
    pub token: &'a Bearer,
    pub index: u32,
    pub plan: Plan,
}

/// Holds seats as the plan says; `None` when the user found nothing (sold out, limit). Counts
/// the user under the number of times it asked again.
pub async fn hold(asker: Asker<'_>) -> anyhow::Result<Option<pb::Hold>> {
    let mut retries = 0;
    let held = try_hold(asker, &mut retries).await;
    let buckets = &asker.ctx.stats.stages.hold_retries_per_user;
    Stats::bump(&buckets[retries.min(buckets.len() - 1)]);
    held
}

/// [`hold`]'s attempts; `retries` counts the attempts after the first.
async fn try_hold(asker: Asker<'_>, retries: &mut usize) -> anyhow::Result<Option<pb::Hold>> {
    let Asker { ctx, channel, pass, user, token, index, plan } = asker;
    let stats = &ctx.stats;
    let event_id = ctx.event.event_id.clone();
    let inventory = InventoryServiceClient::new(channel.clone());
    let seat_lock = SeatLockServiceClient::new(channel.clone());
    let mut rng = StdRng::seed_from_u64(ctx.config.seed ^ u64::from(index) ^ 0xA5A5);
    let mut refused = false;
    for attempt in 0..HOLD_ATTEMPTS {
        if attempt > 0 {
            *retries += 1;
        }
        let availability = call(stats, Rpc::GetAvailability, Retry::Idempotent, || {
            let mut inventory = inventory.clone();
            let request = pb::GetAvailabilityRequest { event_id: event_id.clone() };
            async move { inventory.get_availability(request).await }
        })
        .await?;
        let mut open: Vec<&pb::ZoneAvailability> =
            availability.zones.iter().filter(|z| z.free >= plan.quantity).collect();
        if open.is_empty() {
            Stats::bump(&stats.stages.sold_out);
            return Ok(None);
        }
        let seated = ctx.event.zones.iter().find(|z| z.kind() == pb::ZoneKind::Seated);
        let chosen = if plan.contention
            && attempt < CONTENTION_ATTEMPTS
            && let Some(zone) = seated
        {
            popular_seats(ctx, &inventory, zone, plan.quantity, &mut rng).await?
        } else {
            None
        };
        if plan.contention && chosen.is_none() && attempt < CONTENTION_ATTEMPTS {
            Stats::bump(&stats.stages.fell_back_to_best);
        }
        // Refused a moment ago and about to ask for the best seats: the user picks a zone and
        // looks at its seat map first (a contention user just did, for its seats); a seated
        // zone that shows fewer free seats than it wants is left out.
        if refused && chosen.is_none() {
            let pick = rng.random_range(0..open.len());
            let zone_id = open[pick].zone_id.clone();
            Stats::bump(&stats.stages.map_looks_after_refusal);
            let request = pb::GetSeatMapRequest { event_id: event_id.clone(), zone_id: zone_id.clone() };
            let map = call(stats, Rpc::GetSeatMap, Retry::Idempotent, || {
                let (mut inventory, request) = (inventory.clone(), request.clone());
                async move { inventory.get_seat_map(request).await }
            })
            .await?;
            let enough = map.zones.iter().find(|z| z.zone_id == zone_id).is_none_or(|z| {
                z.seats_per_row == 0
                    || z.decode_seat_states().map_or(true, |states| {
                        states.iter().filter(|s| **s == pb::SeatState::Free).count() >= plan.quantity as usize
                    })
            });
            if enough {
                open = vec![open[pick]];
            } else {
                open.swap_remove(pick);
            }
            if open.is_empty() {
                Stats::bump(&stats.stages.sold_out);
                return Ok(None);
            }
        }
        // A hold is retried only when seat-lock was not reached: a second hold after a lost
        // answer would be a hold of the user's own (it expires).
        let result = if let Some(seat_ids) = chosen {
            let request = pb::HoldSeatsRequest {
                pass_token: pass.token.clone(),
                event_id: event_id.clone(),
                user_id: user.to_owned(),
                seat_ids,
            };
            call(stats, Rpc::HoldSeats, Retry::Unserved, || {
                let (mut seat_lock, request) = (seat_lock.clone(), token.request(request.clone()));
                async move { seat_lock.hold_seats(request).await }
            })
            .await
        } else {
            let zone = open[rng.random_range(0..open.len())];
            let request = pb::HoldBestAvailableRequest {
                pass_token: pass.token.clone(),
                event_id: event_id.clone(),
                user_id: user.to_owned(),
                zone_id: zone.zone_id.clone(),
                quantity: plan.quantity,
                allow_split: true,
            };
            call(stats, Rpc::HoldBestAvailable, Retry::Unserved, || {
                let (mut seat_lock, request) = (seat_lock.clone(), token.request(request.clone()));
                async move { seat_lock.hold_best_available(request).await }
            })
            .await
        };
        match result {
            Ok(hold) => return Ok(Some(hold)),
            Err(status) => match reason(&status).as_str() {
                "SEAT_TAKEN" => Stats::bump(&stats.stages.seat_taken),
                "ZONE_SOLD_OUT" | "NO_ADJACENT_SEATS" => {}
                "TICKET_LIMIT_EXCEEDED" => {
                    Stats::bump(&stats.stages.limit_refused);
                    return Ok(None);
                }
                // Seat-lock ran out of time (its request timeout, or the deadline): the hold may
                // have been taken and will expire; the user tries again, as for a taken seat.
                _ if matches!(status.code(), Code::Cancelled | Code::DeadlineExceeded) => {
                    Stats::bump(&stats.stages.hold_timeouts);
                }
                _ => anyhow::bail!("hold refused: {}", brief(&status)),
            },
        }
        refused = true;
        tokio::time::sleep(Duration::from_millis(rng.random_range(RETHINK_PAUSE_MS))).await;
    }
    Stats::bump(&stats.stages.sold_out);
    Ok(None)
}

/// `quantity` adjacent free seats in the popular front rows (or anywhere in the zone when
/// those are gone), from the seat map; `None` when the zone has no such block.
async fn popular_seats(
    ctx: &Ctx,
    inventory: &InventoryServiceClient<Channel>,
    zone: &pb::Zone,
    quantity: u32,
    rng: &mut StdRng,
) -> anyhow::Result<Option<Vec<String>>> {
    let request =
        pb::GetSeatMapRequest { event_id: ctx.event.event_id.clone(), zone_id: zone.zone_id.clone() };
    let map = call(&ctx.stats, Rpc::GetSeatMap, Retry::Idempotent, || {
        let (mut inventory, request) = (inventory.clone(), request.clone());
        async move { inventory.get_seat_map(request).await }
    })
    .await?;
    let Some(zone_map) = map.zones.iter().find(|z| z.zone_id == zone.zone_id) else { return Ok(None) };
    let per_row = zone_map.seats_per_row as usize;
    let states = zone_map.decode_seat_states()?;
    let mut blocks = Vec::new();
    'rows: for (row, label) in zone_map.row_labels.iter().enumerate() {
        let mut run = 0usize;
        for n in 0..per_row {
            if states.get(row * per_row + n) == Some(&pb::SeatState::Free) {
                run += 1;
                if run >= quantity as usize {
                    let first = n + 1 - quantity as usize;
                    blocks.push(
                        (first..=n)
                            .map(|k| format!("{}-{label}-{}", zone.zone_id, k + 1))
                            .collect::<Vec<_>>(),
                    );
                    run = 0;
                    if blocks.len() >= POPULAR_CHOICES {
                        break 'rows;
                    }
                }
            } else {
                run = 0;
            }
        }
        if row + 1 >= POPULAR_ROWS && !blocks.is_empty() {
            break;
        }
    }
    if blocks.is_empty() {
        return Ok(None);
    }
    let pick = rng.random_range(0..blocks.len());
    Ok(Some(blocks.swap_remove(pick)))
}
