//! Events' cancellation cutoffs, asked from inventory (`GetEvent`) and kept briefly, so a
//! burst of cancellations for one event costs one call.

use std::{collections::HashMap, sync::Mutex, time::Duration};

use chrono::{DateTime, TimeDelta, Utc};
use ticketing_proto::v1::{Event, GetEventRequest, inventory_service_client::InventoryServiceClient};
use tokio::time::Instant;
use tonic::{Code, transport::Channel};
use uuid::Uuid;

use crate::error::Error;

/// Longest a call to inventory may take; `GetEvent` answers from memory.
pub const INVENTORY_TIMEOUT: Duration = Duration::from_secs(3);
/// How long an event's answer is reused. Events do not change once created today; a minute
/// bounds how stale a future edit of the cutoff could be seen.
const CACHE_TTL: Duration = Duration::from_secs(60);
/// Events remembered at once, a few dozen bytes each; when full, answers are not kept until
/// older ones age out (each cancellation then asks inventory).
const MAX_CACHED_EVENTS: usize = 10_000;
/// The cutoff of an event whose answer says 0 (inventory's default, one day).
const DEFAULT_CUTOFF_SECS: u32 = 86_400;

/// When an event's cancellations close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Deadline {
    closes_at: DateTime<Utc>,
    cutoff_seconds: u32,
}

impl Deadline {
    /// `cancellation_cutoff_seconds` before the start; `None` without a start time.
    fn of(event: &Event) -> Option<Self> {
        let starts_at = event.starts_at.as_ref()?;
        let starts_at = DateTime::from_timestamp(starts_at.seconds, u32::try_from(starts_at.nanos).ok()?)?;
        let cutoff_seconds = match event.cancellation_cutoff_seconds {
            0 => DEFAULT_CUTOFF_SECS,
            seconds => seconds,
        };
        Some(Self { closes_at: starts_at - TimeDelta::seconds(i64::from(cutoff_seconds)), cutoff_seconds })
    }
}

/// Inventory's answers about cutoffs, with a small cache.
pub struct Cutoffs {
    inventory: InventoryServiceClient<Channel>,
    /// Locked for map operations only, never across a call.
    cache: Mutex<HashMap<Uuid, (Instant, Deadline)>>,
}

impl Cutoffs {
    /// Asks inventory over `channel`.
    pub fn new(channel: Channel) -> Self {
        Self { inventory: InventoryServiceClient::new(channel), cache: Mutex::default() }
    }

    /// `Ok` while the owner may still cancel a booking of `event_id`, else
    /// `CancellationClosed` with when it closed.
    pub async fn check_open(&self, event_id: Uuid) -> Result<(), Error> {
        let deadline = self.deadline(event_id).await?;
        if Utc::now() < deadline.closes_at {
            Ok(())
        } else {
            Err(Error::CancellationClosed {
                closed_at: deadline.closes_at,
                cutoff_seconds: deadline.cutoff_seconds,
            })
        }
    }

    async fn deadline(&self, event_id: Uuid) -> Result<Deadline, Error> {
        if let Some(deadline) = self.cached(event_id) {
            return Ok(deadline);
        }
        let mut request = tonic::Request::new(GetEventRequest { event_id: event_id.to_string() });
        request.set_timeout(INVENTORY_TIMEOUT);
        service_runtime::telemetry::inject_grpc(&mut request);
        let event = match self.inventory.clone().get_event(request).await {
            Ok(response) => response.into_inner().event,
            Err(status) if status.code() == Code::NotFound => None,
            Err(status) => return Err(Error::InventoryUnavailable(status)),
        };
        let deadline = event.as_ref().and_then(Deadline::of).ok_or(Error::EventUnknown(event_id))?;
        self.remember(event_id, deadline);
        Ok(deadline)
    }

    fn cached(&self, event_id: Uuid) -> Option<Deadline> {
        let cache = self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        cache.get(&event_id).filter(|(at, _)| at.elapsed() < CACHE_TTL).map(|(_, deadline)| *deadline)
    }

    fn remember(&self, event_id: Uuid, deadline: Deadline) {
        let mut cache = self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if cache.len() >= MAX_CACHED_EVENTS {
            cache.retain(|_, (at, _)| at.elapsed() < CACHE_TTL);
        }
        if cache.len() < MAX_CACHED_EVENTS {
            cache.insert(event_id, (Instant::now(), deadline));
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test code: a panic is a failed test

    use super::*;

    #[test]
    fn cancellations_close_the_cutoff_before_the_start() {
        let starts = prost_types::Timestamp { seconds: 2_000_000_000, nanos: 0 };
        let event = Event { starts_at: Some(starts), cancellation_cutoff_seconds: 3_600, ..Event::default() };
        let deadline = Deadline::of(&event).unwrap();
        assert_eq!(deadline.closes_at.timestamp(), 2_000_000_000 - 3_600);
        assert_eq!(deadline.cutoff_seconds, 3_600);
        // An answer without a cutoff (an older inventory) means the default, one day.
        let defaulted = Deadline::of(&Event { cancellation_cutoff_seconds: 0, ..event }).unwrap();
        assert_eq!(
            (defaulted.closes_at.timestamp(), defaulted.cutoff_seconds),
            (2_000_000_000 - 86_400, 86_400)
        );
        assert_eq!(Deadline::of(&Event::default()), None);
    }
}
