//! The bench's sales: its 50,000-seat venue and events on it, and users with passes.

use std::time::Duration;

use anyhow::{Context, bail};
use futures::StreamExt;
use ticketing_proto::v1::{self as pb, admission_service_client::AdmissionServiceClient};
use tonic::transport::Channel;

use crate::{catalogue, grpc, identity::Identity};

/// Rows of the bench venue: numeric labels `1`..=`ROWS`.
pub const ROWS: u32 = 500;
/// Seats per row of the bench venue (500 × 100 = 50,000 seats).
pub const SEATS_PER_ROW: u32 = 100;
/// Tickets one user may hold and buy: the contract's maximum, so 2,000 users cover
/// 100,000 holds.
const MAX_TICKETS_PER_USER: u32 = 50;
/// Join/WatchQueue calls in flight while collecting passes.
const PASS_FETCH_CONCURRENCY: usize = 500;
/// How long collecting the passes may take.
const PASS_FETCH_TIMEOUT: Duration = Duration::from_secs(120);

/// Longest one call of the bench's own (setup, not measured load) may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// A user with a pass.
#[derive(Debug, Clone)]
pub struct PassHolder {
    pub user_id: String,
    /// The pass itself (admission's signed token), not the user's bearer token.
    pub token: String,
}

/// One connection to the load balancer at `target` for the bench's own calls.
pub async fn channel(target: &str) -> anyhow::Result<Channel> {
    grpc::connect_one(target, CALL_TIMEOUT).await
}

/// Creates the 50,000-seat venue and an event on it whose sale opens in `opens_in_ms`, as the
/// operator.
pub async fn create_event(
    channel: &Channel,
    identity: &Identity,
    name: &str,
    capacity: u32,
    pass_ttl: u32,
    opens_in_ms: i64,
) -> anyhow::Result<pb::Event> {
    let venue = pb::CreateVenueRequest {
        name: format!("Bench arena {}", chrono::Utc::now().format("%H:%M:%S")),
        zones: vec![catalogue::seated_zone(
            "A",
            "Arena",
            5_000,
            (1..=ROWS).map(|r| r.to_string()).collect(),
            SEATS_PER_ROW,
        )],
    };
    let now = chrono::Utc::now().timestamp_millis();
    let event = pb::CreateEventRequest {
        venue_id: String::new(),
        name: name.into(),
        starts_at: Some(service_runtime::bus::timestamp_ms(now + 30 * 86_400_000)),
        sale_opens_at: Some(service_runtime::bus::timestamp_ms(now + opens_in_ms)),
        max_tickets_per_user: MAX_TICKETS_PER_USER,
        currency: "EUR".into(),
        admission_capacity: capacity,
        admission_tick_ms: 100,
        pass_ttl_seconds: pass_ttl,
        cancellation_cutoff_seconds: 0,
    };
    catalogue::create_event(channel.clone(), &identity.admin(), venue, event).await
}

/// Joins `users` users and watches their queue until each has a pass.
pub async fn collect_passes(
    channel: &Channel,
    identity: &Identity,
    event_id: &str,
    users: u32,
) -> anyhow::Result<Vec<PassHolder>> {
    let work = futures::stream::iter(0..users)
        .map(|u| {
            let mut admission = AdmissionServiceClient::new(channel.clone());
            let event_id = event_id.to_owned();
            let user_id = format!("bench-{u}");
            let token = identity.user(&user_id);
            async move {
                admission
                    .join(
                        token.request(pb::JoinRequest {
                            event_id: event_id.clone(),
                            user_id: user_id.clone(),
                        }),
                    )
                    .await?;
                let mut updates = admission
                    .watch_queue(token.request(pb::WatchQueueRequest { event_id, user_id: user_id.clone() }))
                    .await?
                    .into_inner();
                while let Some(status) = updates.next().await {
                    if let Some(pass) = status?.pass {
                        return Ok(PassHolder { user_id, token: pass.token });
                    }
                }
                bail!("the queue stream of {user_id} ended without a pass")
            }
        })
        .buffer_unordered(PASS_FETCH_CONCURRENCY)
        .collect::<Vec<anyhow::Result<PassHolder>>>();
    let results = tokio::time::timeout(PASS_FETCH_TIMEOUT, work)
        .await
        .with_context(|| format!("collecting {users} passes took longer than {PASS_FETCH_TIMEOUT:?}"))?;
    let mut passes: Vec<PassHolder> = results.into_iter().collect::<anyhow::Result<_>>()?;
    passes.sort_by_key(|p| p.user_id.trim_start_matches("bench-").parse::<u32>().unwrap_or(0));
    Ok(passes)
}
