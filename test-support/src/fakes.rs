//! Upstream services faked for one service's tests.
//!
//! [`FakeInventory`] stands in for inventory wherever a service only reads the catalogue
//! (admission and seat-lock look events up, payment reads an event's cancellation cutoff):
//! it answers `GetEvent` for the events a test put in and `UNIMPLEMENTED` for everything else.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
};

use ticketing_proto::v1::{
    self, Event,
    inventory_service_server::{InventoryService, InventoryServiceServer},
};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};

/// Inventory's `GetEvent` over the events a test put in ([`FakeInventory::insert`]); any other
/// id is `NOT_FOUND`. Clones share the events, so a test may add one after the fake started.
#[derive(Clone, Default)]
pub struct FakeInventory {
    events: Arc<Mutex<HashMap<String, Event>>>,
}

/// Like inventory, any spelling of an event's UUID names it (seat-lock's tests ask with the
/// id in capitals); an id that is no UUID names only itself.
fn key(event_id: &str) -> String {
    uuid::Uuid::parse_str(event_id).map_or_else(|_| event_id.to_owned(), |id| id.to_string())
}

impl FakeInventory {
    /// Serves `event` from now on, replacing one with the same id.
    pub fn insert(&self, event: Event) {
        self.events.lock().unwrap_or_else(PoisonError::into_inner).insert(key(&event.event_id), event);
    }

    /// The gRPC service, for a test that serves it next to other fakes.
    pub fn service(&self) -> InventoryServiceServer<Self> {
        InventoryServiceServer::new(self.clone())
    }

    /// Serves the fake on a free loopback port for the rest of the test; returns its URL
    /// (`http://127.0.0.1:<port>`).
    ///
    /// # Panics
    /// When no loopback port can be bound: the test cannot run at all.
    #[allow(clippy::expect_used)] // a test's fixture: failing to bind loopback fails the test
    pub async fn start(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind a loopback port");
        let url = format!("http://{}", listener.local_addr().expect("a bound listener's address"));
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(self.service())
                .serve_with_incoming(TcpListenerStream::new(listener)),
        );
        url
    }
}

type Answer<T> = Result<Response<T>, Status>;

fn not_faked<T>() -> Answer<T> {
    Err(Status::unimplemented("not in the fake inventory"))
}

#[tonic::async_trait]
impl InventoryService for FakeInventory {
    async fn get_event(&self, request: Request<v1::GetEventRequest>) -> Answer<v1::GetEventResponse> {
        let id = request.into_inner().event_id;
        let event = self.events.lock().unwrap_or_else(PoisonError::into_inner).get(&key(&id)).cloned();
        match event {
            Some(event) => Ok(Response::new(v1::GetEventResponse { event: Some(event) })),
            None => Err(Status::not_found(format!("event {id} not found"))),
        }
    }
    async fn create_venue(&self, _: Request<v1::CreateVenueRequest>) -> Answer<v1::CreateVenueResponse> {
        not_faked()
    }
    async fn create_event(&self, _: Request<v1::CreateEventRequest>) -> Answer<v1::CreateEventResponse> {
        not_faked()
    }
    async fn list_events(&self, _: Request<v1::ListEventsRequest>) -> Answer<v1::ListEventsResponse> {
        not_faked()
    }
    async fn get_seat_map(&self, _: Request<v1::GetSeatMapRequest>) -> Answer<v1::GetSeatMapResponse> {
        not_faked()
    }
    async fn get_availability(
        &self,
        _: Request<v1::GetAvailabilityRequest>,
    ) -> Answer<v1::GetAvailabilityResponse> {
        not_faked()
    }
    type WatchSeatMapStream = futures::stream::Empty<Result<v1::SeatMapUpdate, Status>>;
    async fn watch_seat_map(&self, _: Request<v1::WatchSeatMapRequest>) -> Answer<Self::WatchSeatMapStream> {
        not_faked()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test code: a panic is a failed test

    use ticketing_proto::v1::{GetEventRequest, inventory_service_client::InventoryServiceClient};

    use super::*;

    #[tokio::test]
    async fn answers_the_events_put_in_under_any_spelling_of_their_id() {
        let fake = FakeInventory::default();
        let id = uuid::Uuid::new_v4().to_string();
        let mut client = InventoryServiceClient::connect(fake.start().await).await.unwrap();
        fake.insert(Event { event_id: id.clone(), name: "late".into(), ..Event::default() });
        let ask = |event_id: String| Request::new(GetEventRequest { event_id });
        let event = client.get_event(ask(id.to_uppercase())).await.unwrap().into_inner().event.unwrap();
        assert_eq!(event.name, "late");
        let other = client.get_event(ask(uuid::Uuid::new_v4().to_string())).await.unwrap_err();
        assert_eq!(other.code(), tonic::Code::NotFound);
        let not_a_uuid = client.get_event(ask("nope".into())).await.unwrap_err();
        assert_eq!(not_a_uuid.code(), tonic::Code::NotFound);
    }
}
