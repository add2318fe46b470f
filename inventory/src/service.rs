//! `ticketing.v1.InventoryService`: catalogue writes go to Postgres, reads come from memory.

use std::{collections::HashMap, pin::Pin, sync::Arc, time::Duration};

use futures::Stream;

use service_runtime::{CancellationToken, auth};
use ticketing_proto::v1::{
    CreateEventRequest, CreateEventResponse, CreateVenueRequest, CreateVenueResponse, GetAvailabilityRequest,
    GetAvailabilityResponse, GetEventRequest, GetEventResponse, GetSeatMapRequest, GetSeatMapResponse,
    ListEventsRequest, ListEventsResponse, SeatChange, SeatMapDelta, SeatMapUpdate, WatchSeatMapRequest,
    inventory_service_server::InventoryService as InventoryApi, seat_map_update::Update,
};
use tokio::sync::{
    OwnedSemaphorePermit, Semaphore,
    broadcast::{self, error::RecvError},
};
use tonic::{Request, Response, Status};

use crate::{
    catalogue::{
        DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, decode_page_token, encode_page_token, parse_id, validate_event,
        validate_venue,
    },
    error::Error,
    registry::{EventEntry, Registry},
    seatmap::Changes,
};

/// How long a watcher gathers changes into one delta: smooths a burst of holds into one
/// message per client instead of one per seat event.
pub const COALESCE_WINDOW: Duration = Duration::from_millis(100);
/// Seat map watch streams open at once on one replica; each costs its stream state and
/// HTTP/2 buffers (a few KiB).
pub const MAX_WATCHERS: usize = 10_000;

/// The gRPC service over the in-memory registry and the Postgres catalogue.
#[derive(Clone)]
pub struct InventoryService {
    registry: Arc<Registry>,
    watchers: Arc<Semaphore>,
    stopping: CancellationToken,
}

impl InventoryService {
    /// A service answering from `registry`; streams end when `stopping` is cancelled.
    pub fn new(registry: Arc<Registry>, stopping: CancellationToken) -> Self {
        Self { registry, watchers: Arc::new(Semaphore::new(MAX_WATCHERS)), stopping }
    }

    async fn entry(&self, event_id: &str) -> Result<Arc<EventEntry>, Error> {
        let id = parse_id("event_id", event_id)?;
        self.registry.get(id).await
    }
}

/// `None` for an empty zone filter; `INVALID_ARGUMENT` for one that cannot name a zone.
fn zone_filter(zone_id: &str) -> Result<Option<&str>, Error> {
    if zone_id.is_empty() {
        return Ok(None);
    }
    crate::catalogue::check_zone_id("zone_id", zone_id)?;
    Ok(Some(zone_id))
}

#[tonic::async_trait]
impl InventoryApi for InventoryService {
    async fn create_venue(
        &self,
        request: Request<CreateVenueRequest>,
    ) -> Result<Response<CreateVenueResponse>, Status> {
        auth::require_admin(&request)?;
        let request = request.into_inner();
        let (zones, total) = validate_venue(&request)?;
        let venue = self.registry.store().insert_venue(&request.name, zones, total).await?;
        tracing::info!(venue_id = %venue.venue_id, total_capacity = total, "venue created");
        Ok(Response::new(CreateVenueResponse { venue: Some(venue) }))
    }

    async fn create_event(
        &self,
        request: Request<CreateEventRequest>,
    ) -> Result<Response<CreateEventResponse>, Status> {
        auth::require_admin(&request)?;
        let new = validate_event(request.get_ref())?;
        let event = self.registry.store().insert_event(&new).await?;
        let entry = self.registry.insert(event)?;
        tracing::info!(event_id = %entry.event.event_id, venue_id = %entry.event.venue_id, "event created");
        Ok(Response::new(CreateEventResponse { event: Some(entry.event.clone()) }))
    }

    async fn get_event(
        &self,
        request: Request<GetEventRequest>,
    ) -> Result<Response<GetEventResponse>, Status> {
        let entry = self.entry(&request.get_ref().event_id).await?;
        Ok(Response::new(GetEventResponse { event: Some(entry.event.clone()) }))
    }

    async fn list_events(
        &self,
        request: Request<ListEventsRequest>,
    ) -> Result<Response<ListEventsResponse>, Status> {
        let request = request.into_inner();
        let page_size = match request.page_size {
            0 => DEFAULT_PAGE_SIZE,
            n if n <= MAX_PAGE_SIZE => n,
            n => {
                return Err(Error::invalid("page_size", format!("must be 0-{MAX_PAGE_SIZE}, got {n}")).into());
            }
        };
        let after =
            if request.page_token.is_empty() { None } else { Some(decode_page_token(&request.page_token)?) };
        // One more than asked tells whether another page follows.
        let mut events = self.registry.store().list_events(after, page_size + 1).await?;
        let next_page_token = if events.len() > page_size as usize {
            events.truncate(page_size as usize);
            let last = events.last().ok_or_else(|| Error::CorruptRow("empty page".into()))?;
            let ms = last.sale_opens_at.as_ref().map_or(0, service_runtime::bus::timestamp_to_ms);
            let id = parse_id("event_id", &last.event_id)?;
            encode_page_token((ms, id))
        } else {
            String::new()
        };
        Ok(Response::new(ListEventsResponse { events, next_page_token }))
    }

    async fn get_seat_map(
        &self,
        request: Request<GetSeatMapRequest>,
    ) -> Result<Response<GetSeatMapResponse>, Status> {
        let request = request.into_inner();
        let entry = self.entry(&request.event_id).await?;
        let snapshot = entry.map().snapshot(zone_filter(&request.zone_id)?);
        let snapshot = snapshot.ok_or_else(|| Error::ZoneNotFound {
            event_id: request.event_id.clone(),
            zone_id: request.zone_id.clone(),
        })?;
        Ok(Response::new(snapshot))
    }

    async fn get_availability(
        &self,
        request: Request<GetAvailabilityRequest>,
    ) -> Result<Response<GetAvailabilityResponse>, Status> {
        let request = request.into_inner();
        let entry = self.entry(&request.event_id).await?;
        let map = entry.map();
        Ok(Response::new(GetAvailabilityResponse {
            event_id: request.event_id,
            zones: map.availability(None),
            version: map.version(),
        }))
    }

    type WatchSeatMapStream = Pin<Box<dyn Stream<Item = Result<SeatMapUpdate, Status>> + Send>>;

    async fn watch_seat_map(
        &self,
        request: Request<WatchSeatMapRequest>,
    ) -> Result<Response<Self::WatchSeatMapStream>, Status> {
        let request = request.into_inner();
        let entry = self.entry(&request.event_id).await?;
        let zone = zone_filter(&request.zone_id)?.map(str::to_owned);
        if let Some(zone_id) = &zone
            && !entry.map().has_zone(zone_id)
        {
            return Err(Error::ZoneNotFound { event_id: request.event_id, zone_id: zone_id.clone() }.into());
        }
        let permit = self.watchers.clone().try_acquire_owned().map_err(|_| Error::TooManyWatchers)?;
        let watcher = Watcher { entry, zone, feed: None, stopping: self.stopping.clone(), _permit: permit };
        let updates = futures::stream::unfold(watcher, |mut watcher| async move {
            let update = watcher.next().await?;
            Some((Ok(update), watcher))
        });
        Ok(Response::new(Box::pin(updates)))
    }
}

/// One `WatchSeatMap` stream. It has no task or queue of its own: HTTP/2 polls it when the
/// client's flow-control window has room, so what a watcher buffers is bounded by that window
/// and by its place in the event's shared change feed. A watcher that falls further behind
/// than [`CHANGE_FEED_CAPACITY`](crate::registry::CHANGE_FEED_CAPACITY) change batches gets a
/// fresh snapshot instead of the backlog.
struct Watcher {
    entry: Arc<EventEntry>,
    /// The watched zone; `None` for every zone.
    zone: Option<String>,
    /// Changes after the last snapshot; `None` until the first one and after lagging.
    feed: Option<broadcast::Receiver<Arc<Changes>>>,
    stopping: CancellationToken,
    /// This watcher's place among [`MAX_WATCHERS`].
    _permit: OwnedSemaphorePermit,
}

impl Watcher {
    /// The next update: a snapshot first and after lagging, otherwise one delta of the changes
    /// gathered over a [`COALESCE_WINDOW`]. `None` ends the stream: the server is stopping.
    async fn next(&mut self) -> Option<SeatMapUpdate> {
        loop {
            let zone = self.zone.as_deref();
            let Some(feed) = &mut self.feed else {
                let (snapshot, feed) = self.entry.subscribe(|map| map.snapshot(zone));
                self.feed = Some(feed);
                return Some(SeatMapUpdate { update: Some(Update::Snapshot(snapshot?)) });
            };
            // Wait for the first change of a window, then gather the rest of the window.
            let mut pending = Pending::default();
            let first = tokio::select! {
                () = self.stopping.cancelled() => return None,
                received = feed.recv() => received,
            };
            let mut lagged = !pending.receive(first, zone)?;
            let window = tokio::time::sleep(COALESCE_WINDOW);
            tokio::pin!(window);
            while !lagged {
                tokio::select! {
                    () = self.stopping.cancelled() => return None,
                    () = &mut window => break,
                    received = feed.recv() => lagged = !pending.receive(received, zone)?,
                }
            }
            if lagged {
                // Changes were lost; a fresh snapshot is the only correct answer.
                self.feed = None;
                continue;
            }
            if pending.touched == 0 {
                continue;
            }
            let (availability, version) = {
                let map = self.entry.map();
                (map.availability(zone), map.version())
            };
            let delta = SeatMapDelta {
                event_id: self.entry.event.event_id.clone(),
                changes: pending.seats,
                availability,
                version: version.max(pending.version),
            };
            return Some(SeatMapUpdate { update: Some(Update::Delta(delta)) });
        }
    }
}

/// Changes gathered in one window, the last state of each seat kept.
#[derive(Default)]
struct Pending {
    seats: Vec<SeatChange>,
    index: HashMap<String, usize>,
    touched: usize,
    version: u64,
}

impl Pending {
    /// Takes in what the feed answered: `Some(false)` if the watcher lagged, `None` if the
    /// feed is closed.
    fn receive(&mut self, received: Result<Arc<Changes>, RecvError>, zone: Option<&str>) -> Option<bool> {
        match received {
            Ok(changes) => {
                self.add(&changes, zone);
                Some(true)
            }
            Err(RecvError::Lagged(_)) => Some(false),
            Err(RecvError::Closed) => None,
        }
    }

    fn add(&mut self, changes: &Changes, zone: Option<&str>) {
        self.version = self.version.max(changes.version);
        if zone.is_some_and(|zone| !changes.zones.iter().any(|z| z == zone)) {
            return;
        }
        self.touched += 1;
        for change in changes.seats.iter().filter(|c| zone.is_none_or(|zone| c.zone_id == zone)) {
            match self.index.get(&change.seat_id) {
                Some(&i) => self.seats[i].state = change.state,
                None => {
                    self.index.insert(change.seat_id.clone(), self.seats.len());
                    self.seats.push(change.clone());
                }
            }
        }
    }
}
