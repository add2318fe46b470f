//! The rest of the mesh payment talks to, faked: what seat-lock's internal `ReturnSeats` was
//! given (the fake seat-lock records it) and inventory's `GetEvent` (events the test
//! registers, for their cancellation cutoff).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

pub use ticketing_proto::v1::inventory_service_server::InventoryServiceServer;
use ticketing_proto::{
    internal::ReturnSeatsRequest,
    v1::{self, inventory_service_server::InventoryService},
};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::helpers::FakeSeatLock;

impl FakeSeatLock {
    /// The `ReturnSeats` calls seat-lock accepted so far.
    pub fn returned(&self) -> Vec<ReturnSeatsRequest> {
        self.returns.lock().unwrap().clone()
    }
}

/// Inventory's `GetEvent` over the events a test registered; NOT_FOUND for others.
#[derive(Default, Clone)]
pub struct FakeInventory {
    pub events: Arc<Mutex<HashMap<String, v1::Event>>>,
}

impl FakeInventory {
    /// Registers `event_id`, starting `starts_in_secs` from now (negative: already started),
    /// with owners' cancellations closing `cutoff_secs` before.
    pub fn add_event(&self, event_id: Uuid, starts_in_secs: i64, cutoff_secs: u32) {
        let starts_at = chrono::Utc::now().timestamp() + starts_in_secs;
        let event = v1::Event {
            event_id: event_id.to_string(),
            starts_at: Some(prost_types::Timestamp { seconds: starts_at, nanos: 0 }),
            cancellation_cutoff_seconds: cutoff_secs,
            ..v1::Event::default()
        };
        self.events.lock().unwrap().insert(event_id.to_string(), event);
    }
}

#[tonic::async_trait]
impl InventoryService for FakeInventory {
    async fn get_event(
        &self,
        request: Request<v1::GetEventRequest>,
    ) -> Result<Response<v1::GetEventResponse>, Status> {
        let event = self.events.lock().unwrap().get(&request.get_ref().event_id).cloned();
        match event {
            Some(event) => Ok(Response::new(v1::GetEventResponse { event: Some(event) })),
            None => Err(Status::not_found("no such event")),
        }
    }
    async fn create_venue(
        &self,
        _: Request<v1::CreateVenueRequest>,
    ) -> Result<Response<v1::CreateVenueResponse>, Status> {
        Err(Status::unimplemented("not in the fake"))
    }
    async fn create_event(
        &self,
        _: Request<v1::CreateEventRequest>,
    ) -> Result<Response<v1::CreateEventResponse>, Status> {
        Err(Status::unimplemented("not in the fake"))
    }
    async fn list_events(
        &self,
        _: Request<v1::ListEventsRequest>,
    ) -> Result<Response<v1::ListEventsResponse>, Status> {
        Err(Status::unimplemented("not in the fake"))
    }
    async fn get_seat_map(
        &self,
        _: Request<v1::GetSeatMapRequest>,
    ) -> Result<Response<v1::GetSeatMapResponse>, Status> {
        Err(Status::unimplemented("not in the fake"))
    }
    async fn get_availability(
        &self,
        _: Request<v1::GetAvailabilityRequest>,
    ) -> Result<Response<v1::GetAvailabilityResponse>, Status> {
        Err(Status::unimplemented("not in the fake"))
    }
    type WatchSeatMapStream = futures::stream::Empty<Result<v1::SeatMapUpdate, Status>>;
    async fn watch_seat_map(
        &self,
        _: Request<v1::WatchSeatMapRequest>,
    ) -> Result<Response<Self::WatchSeatMapStream>, Status> {
        Err(Status::unimplemented("not in the fake"))
    }
}
