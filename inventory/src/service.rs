//! `ticketing.v1.InventoryService`: catalogue writes go to Postgres, reads come from memory.

use std::{collections::HashMap, sync::Arc, time::Duration};

use service_runtime::CancellationToken;
use ticketing_proto::v1::{
    CreateEventRequest, CreateEventResponse, CreateVenueRequest, CreateVenueResponse, GetAvailabilityRequest,
    GetAvailabilityResponse, GetEventRequest, GetEventResponse, GetSeatMapRequest, GetSeatMapResponse,
    ListEventsRequest, ListEventsResponse, SeatChange, SeatMapDelta, SeatMapUpdate, WatchSeatMapRequest,
    inventory_service_server::InventoryService as InventoryApi, seat_map_update::Update,
};
use tokio::sync::{Semaphore, broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
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
/// Updates queued per watcher before its task waits; a client this slow lags and then gets
/// a fresh snapshot.
pub const WATCH_OUTBOX: usize = 8;
/// Seat map watch streams open at once on one replica; each costs a task and a buffer.
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

/// `None` for an empty zone filter.
fn zone_filter(zone_id: &str) -> Option<&str> {
    (!zone_id.is_empty()).then_some(zone_id)
}

#[tonic::async_trait]
impl InventoryApi for InventoryService {
    async fn create_venue(
        &self,
        request: Request<CreateVenueRequest>,
    ) -> Result<Response<CreateVenueResponse>, Status> {
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
        let snapshot = entry.map().snapshot(zone_filter(&request.zone_id));
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

    type WatchSeatMapStream = ReceiverStream<Result<SeatMapUpdate, Status>>;

    async fn watch_seat_map(
        &self,
        request: Request<WatchSeatMapRequest>,
    ) -> Result<Response<Self::WatchSeatMapStream>, Status> {
        let request = request.into_inner();
        let entry = self.entry(&request.event_id).await?;
        let zone = zone_filter(&request.zone_id).map(str::to_owned);
        if let Some(zone_id) = &zone
            && !entry.map().has_zone(zone_id)
        {
            return Err(Error::ZoneNotFound { event_id: request.event_id, zone_id: zone_id.clone() }.into());
        }
        let permit = self.watchers.clone().try_acquire_owned().map_err(|_| Error::TooManyWatchers)?;
        let (tx, rx) = mpsc::channel(WATCH_OUTBOX);
        let stopping = self.stopping.clone();
        tokio::spawn(async move {
            let _permit = permit;
            watch(entry, zone, tx, stopping).await;
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

type Outbox = mpsc::Sender<Result<SeatMapUpdate, Status>>;

/// Sends a snapshot and subscribes to the changes after it, atomically.
async fn snapshot(
    entry: &EventEntry,
    zone: Option<&str>,
    tx: &Outbox,
) -> Option<broadcast::Receiver<Arc<Changes>>> {
    let (snapshot, receiver) = entry.subscribe(|map| map.snapshot(zone));
    let update = SeatMapUpdate { update: Some(Update::Snapshot(snapshot?)) };
    tx.send(Ok(update)).await.ok()?;
    Some(receiver)
}

/// Feeds one watcher: a snapshot, then one delta per [`COALESCE_WINDOW`] with changes, or a
/// new snapshot after lagging. Ends when the client goes away or the server stops.
async fn watch(entry: Arc<EventEntry>, zone: Option<String>, tx: Outbox, stopping: CancellationToken) {
    let zone = zone.as_deref();
    let Some(mut receiver) = snapshot(&entry, zone, &tx).await else { return };
    loop {
        // Wait for the first change of a window.
        let mut pending = Pending::default();
        let mut lagged = false;
        tokio::select! {
            () = stopping.cancelled() => return,
            () = tx.closed() => return,
            received = receiver.recv() => match received {
                Ok(changes) => pending.add(&changes, zone),
                Err(broadcast::error::RecvError::Lagged(_)) => lagged = true,
                Err(broadcast::error::RecvError::Closed) => return,
            },
        }
        // Gather the rest of the window.
        let window = tokio::time::sleep(COALESCE_WINDOW);
        tokio::pin!(window);
        while !lagged {
            tokio::select! {
                () = stopping.cancelled() => return,
                () = &mut window => break,
                received = receiver.recv() => match received {
                    Ok(changes) => pending.add(&changes, zone),
                    Err(broadcast::error::RecvError::Lagged(_)) => lagged = true,
                    Err(broadcast::error::RecvError::Closed) => return,
                },
            }
        }
        if lagged {
            // Changes were lost; a fresh snapshot is the only correct answer.
            match snapshot(&entry, zone, &tx).await {
                Some(fresh) => receiver = fresh,
                None => return,
            }
            continue;
        }
        if pending.touched == 0 {
            continue;
        }
        let (availability, version) = {
            let map = entry.map();
            (map.availability(zone), map.version())
        };
        let delta = SeatMapDelta {
            event_id: entry.event.event_id.clone(),
            changes: pending.seats,
            availability,
            version: version.max(pending.version),
        };
        let sent = tokio::select! {
            () = stopping.cancelled() => return,
            sent = tx.send(Ok(SeatMapUpdate { update: Some(Update::Delta(delta)) })) => sent,
        };
        if sent.is_err() {
            return;
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
