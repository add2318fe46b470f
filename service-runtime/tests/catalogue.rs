//! The event catalogue client against a fake inventory: concurrent lookups of one event make
//! one GetEvent call, unknown events and failures are asked again, a forgotten event too.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use service_runtime::catalogue::{CatalogueError, EventCatalogue};
use ticketing_proto::v1::{
    CreateEventRequest, CreateEventResponse, CreateVenueRequest, CreateVenueResponse, Event,
    GetAvailabilityRequest, GetAvailabilityResponse, GetEventRequest, GetEventResponse, GetSeatMapRequest,
    GetSeatMapResponse, ListEventsRequest, ListEventsResponse, SeatMapUpdate, WatchSeatMapRequest,
    inventory_service_server::{InventoryService, InventoryServiceServer},
};
use tokio::sync::{Barrier, Semaphore, mpsc};
use tonic::{Request, Response, Status};

/// Knows event "known" (and "down", which it answers UNAVAILABLE); every GetEvent reports
/// that it entered, then waits for a permit from the test.
struct FakeInventory {
    calls: Arc<AtomicUsize>,
    entered: mpsc::UnboundedSender<String>,
    answer: Arc<Semaphore>,
}

#[tonic::async_trait]
impl InventoryService for FakeInventory {
    async fn get_event(
        &self,
        request: Request<GetEventRequest>,
    ) -> Result<Response<GetEventResponse>, Status> {
        let event_id = request.into_inner().event_id;
        self.calls.fetch_add(1, Ordering::SeqCst);
        let _ = self.entered.send(event_id.clone());
        self.answer.acquire().await.map_err(|_| Status::aborted("closed"))?.forget();
        match event_id.as_str() {
            "known" => Ok(Response::new(GetEventResponse {
                event: Some(Event { event_id, max_tickets_per_user: 4, ..Default::default() }),
            })),
            "down" => Err(Status::unavailable("inventory is restarting")),
            _ => Err(Status::not_found("no such event")),
        }
    }

    async fn create_venue(
        &self,
        _: Request<CreateVenueRequest>,
    ) -> Result<Response<CreateVenueResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn create_event(
        &self,
        _: Request<CreateEventRequest>,
    ) -> Result<Response<CreateEventResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn list_events(
        &self,
        _: Request<ListEventsRequest>,
    ) -> Result<Response<ListEventsResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn get_seat_map(
        &self,
        _: Request<GetSeatMapRequest>,
    ) -> Result<Response<GetSeatMapResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn get_availability(
        &self,
        _: Request<GetAvailabilityRequest>,
    ) -> Result<Response<GetAvailabilityResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    type WatchSeatMapStream = tokio_stream::Empty<Result<SeatMapUpdate, Status>>;

    async fn watch_seat_map(
        &self,
        _: Request<WatchSeatMapRequest>,
    ) -> Result<Response<Self::WatchSeatMapStream>, Status> {
        Err(Status::unimplemented("fake"))
    }
}

struct Fixture {
    catalogue: Arc<EventCatalogue<u32>>,
    calls: Arc<AtomicUsize>,
    entered: mpsc::UnboundedReceiver<String>,
    answer: Arc<Semaphore>,
}

async fn fixture() -> Fixture {
    let calls = Arc::new(AtomicUsize::new(0));
    let answer = Arc::new(Semaphore::new(0));
    let (entered_tx, entered) = mpsc::unbounded_channel();
    let fake = FakeInventory { calls: calls.clone(), entered: entered_tx, answer: answer.clone() };
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(InventoryServiceServer::new(fake))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let channel = ticketing_proto::connect(&url, Duration::from_secs(30)).unwrap();
    // What the service keeps of an event: here its ticket limit.
    let catalogue = Arc::new(EventCatalogue::new(channel, Duration::from_secs(30), |event: Event| {
        event.max_tickets_per_user
    }));
    Fixture { catalogue, calls, entered, answer }
}

#[tokio::test]
async fn a_crowd_asking_for_a_new_event_makes_one_call_and_one_caller_is_told_it_fetched() {
    let Fixture { catalogue, calls, mut entered, answer } = fixture().await;
    const CROWD: usize = 50;
    let started = Arc::new(Barrier::new(CROWD + 1));
    let lookups: Vec<_> = (0..CROWD)
        .map(|_| {
            let (catalogue, started) = (catalogue.clone(), started.clone());
            tokio::spawn(async move {
                started.wait().await;
                catalogue.get("known").await
            })
        })
        .collect();
    started.wait().await;
    // The first call is in inventory and held there while the crowd piles up behind it.
    assert_eq!(entered.recv().await.unwrap(), "known");
    tokio::task::yield_now().await;
    answer.add_permits(CROWD);
    let mut fetched = 0;
    for lookup in lookups {
        let described = lookup.await.unwrap().unwrap();
        assert_eq!(*described.event, 4);
        fetched += usize::from(described.fetched);
    }
    assert_eq!((calls.load(Ordering::SeqCst), fetched), (1, 1));
    // Cached: no call, nobody fetched.
    let again = catalogue.get("known").await.unwrap();
    assert_eq!((calls.load(Ordering::SeqCst), again.fetched), (1, false));
    // Forgotten: asked again.
    catalogue.forget("known");
    assert!(catalogue.get("known").await.unwrap().fetched);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn unknown_events_and_failures_are_not_remembered() {
    let Fixture { catalogue, calls, answer, .. } = fixture().await;
    answer.add_permits(4);
    for round in 1..=2 {
        let unknown = catalogue.get("nobody-knows").await.unwrap_err();
        assert!(matches!(&unknown, CatalogueError::UnknownEvent(id) if id == "nobody-knows"), "{unknown:?}");
        let down = catalogue.get("down").await.unwrap_err();
        assert!(
            matches!(&down, CatalogueError::Unavailable(status) if status.code() == tonic::Code::Unavailable)
        );
        assert_eq!(calls.load(Ordering::SeqCst), 2 * round, "every failure asks inventory again");
    }
}
