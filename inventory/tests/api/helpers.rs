//! Starting the real inventory service on a free port, and building requests and events.

use std::time::Duration;

use inventory::{App, Config};
use service_runtime::{
    auth::{TokenIssuer, WithToken},
    bus::{EventBus, envelope},
};
use test_support::testenv::TestEnv;
use ticketing_proto::{
    events::{BookingConfirmed, ReleaseReason, SeatsHeld, SeatsReleased, event_envelope::Body},
    seat_states::SeatCode,
    v1::{
        CreateEventRequest, CreateVenueRequest, Event, GeneralAdmissionLayout, GetSeatMapRequest,
        SeatedLayout, Venue, ZoneSeatMap, ZoneSpec, inventory_service_client::InventoryServiceClient,
        zone_spec::Layout,
    },
};
use tokio::{sync::oneshot, task::JoinHandle};
use tonic::{service::interceptor::InterceptedService, transport::Channel};

/// An inventory client that sends an operator's token on every call.
pub type Client = InventoryServiceClient<InterceptedService<Channel, WithToken>>;

/// The operator's token the test clients send (catalogue writes need the admin scope).
pub fn admin_token() -> String {
    TokenIssuer::for_tests().token("operator", true, Duration::from_secs(3600))
}

/// A client of the service on `port` that sends `token` on every call.
pub fn client_with(port: u16, token: &str) -> Client {
    let channel =
        ticketing_proto::connect(&format!("http://127.0.0.1:{port}"), Duration::from_secs(10)).unwrap();
    InventoryServiceClient::with_interceptor(channel, WithToken::new(token))
}

/// A running inventory service.
pub struct TestApp {
    pub client: Client,
    pub port: u16,
    shutdown: Option<oneshot::Sender<()>>,
    handle: JoinHandle<anyhow::Result<()>>,
}

/// Builds the app on `env` (port 0) and serves it in the background.
pub async fn spawn_app(env: &TestEnv) -> TestApp {
    spawn_app_with(Config::for_tests(&env.database_url, &env.nats_url, &env.nats_prefix)).await
}

/// Builds the app with `config` and serves it in the background.
pub async fn spawn_app_with(config: Config) -> TestApp {
    config.validate().unwrap();
    let app = App::build(config).await.unwrap();
    let port = app.port();
    let (tx, rx) = oneshot::channel::<()>();
    let handle = tokio::spawn(app.run_until_stopped(async {
        let _ = rx.await;
    }));
    TestApp { client: client_with(port, &admin_token()), port, shutdown: Some(tx), handle }
}

impl TestApp {
    /// Shuts the service down as SIGTERM would and waits until it has stopped.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        tokio::time::timeout(Duration::from_secs(15), self.handle).await.unwrap().unwrap().unwrap();
    }
}

pub fn seated(zone_id: &str, rows: &[&str], seats_per_row: u32) -> ZoneSpec {
    ZoneSpec {
        zone_id: zone_id.into(),
        name: format!("Zone {zone_id}"),
        price_cents: 5_000,
        layout: Some(Layout::Seated(SeatedLayout {
            row_labels: rows.iter().map(|r| (*r).to_owned()).collect(),
            seats_per_row,
            accessible_seat_ids: Vec::new(),
        })),
    }
}

pub fn general(zone_id: &str, capacity: u32) -> ZoneSpec {
    ZoneSpec {
        zone_id: zone_id.into(),
        name: format!("Standing {zone_id}"),
        price_cents: 2_500,
        layout: Some(Layout::GeneralAdmission(GeneralAdmissionLayout { capacity })),
    }
}

/// A venue with seated zone A (rows 1-3, 10 seats each) and GA zone FLOOR (100 places).
pub async fn create_venue(client: &mut Client) -> Venue {
    let mut a = seated("A", &["1", "2", "3"], 10);
    if let Some(Layout::Seated(layout)) = &mut a.layout {
        layout.accessible_seat_ids = vec!["A-1-1".into(), "A-1-2".into()];
    }
    client
        .create_venue(CreateVenueRequest { name: "Arena".into(), zones: vec![a, general("FLOOR", 100)] })
        .await
        .unwrap()
        .into_inner()
        .venue
        .unwrap()
}

pub fn event_request(venue_id: &str, name: &str, sale_opens_ms: i64) -> CreateEventRequest {
    CreateEventRequest {
        venue_id: venue_id.into(),
        name: name.into(),
        starts_at: Some(service_runtime::bus::timestamp_ms(sale_opens_ms + 86_400_000)),
        sale_opens_at: Some(service_runtime::bus::timestamp_ms(sale_opens_ms)),
        max_tickets_per_user: 4,
        ..Default::default()
    }
}

pub async fn create_event(client: &mut Client, venue_id: &str, sale_opens_ms: i64) -> Event {
    client
        .create_event(event_request(venue_id, "Concert", sale_opens_ms))
        .await
        .unwrap()
        .into_inner()
        .event
        .unwrap()
}

/// The states (0 free, 1 held, 2 sold) of every seat of `zone`, whichever its encoding.
pub fn decode(zone: &ZoneSeatMap) -> Vec<u8> {
    zone.decode_seat_states().unwrap().into_iter().map(|s| SeatCode::of_state(s).unwrap().bits()).collect()
}

/// The decoded states of zone `zone_id` of `event_id`.
pub async fn seat_states(client: &mut Client, event_id: &str, zone_id: &str) -> Vec<u8> {
    let map = client
        .get_seat_map(GetSeatMapRequest { event_id: event_id.into(), zone_id: zone_id.into() })
        .await
        .unwrap()
        .into_inner();
    decode(&map.zones[0])
}

/// Publishes seat events as seat-lock and payment would.
pub struct Publisher {
    bus: EventBus,
}

impl Publisher {
    pub async fn new(env: &TestEnv) -> Self {
        Self { bus: EventBus::connect(&env.nats_url, &env.nats_prefix).await.unwrap() }
    }

    /// The bus it publishes on (for the stream itself).
    pub fn bus(&self) -> &EventBus {
        &self.bus
    }

    async fn publish(&self, body: Body) {
        self.bus.publish(&envelope(uuid::Uuid::new_v4().to_string(), body)).await.unwrap();
    }

    pub async fn held(&self, event_id: &str, hold_id: &str, zone_id: &str, seat_ids: &[&str], quantity: u32) {
        self.publish(Body::SeatsHeld(SeatsHeld {
            event_id: event_id.into(),
            user_id: "u1".into(),
            hold_id: hold_id.into(),
            zone_id: zone_id.into(),
            seat_ids: seat_ids.iter().map(|s| (*s).to_owned()).collect(),
            quantity,
            expires_at: None,
        }))
        .await;
    }

    pub async fn released(
        &self,
        event_id: &str,
        hold_id: &str,
        zone_id: &str,
        seat_ids: &[&str],
        quantity: u32,
    ) {
        self.release(event_id, hold_id, zone_id, seat_ids, quantity, ReleaseReason::Released).await;
    }

    /// Seat-lock gave a cancelled booking's sold seats back.
    pub async fn cancelled(
        &self,
        event_id: &str,
        hold_id: &str,
        zone_id: &str,
        seat_ids: &[&str],
        quantity: u32,
    ) {
        self.release(event_id, hold_id, zone_id, seat_ids, quantity, ReleaseReason::Cancelled).await;
    }

    async fn release(
        &self,
        event_id: &str,
        hold_id: &str,
        zone_id: &str,
        seat_ids: &[&str],
        quantity: u32,
        reason: ReleaseReason,
    ) {
        self.publish(Body::SeatsReleased(SeatsReleased {
            event_id: event_id.into(),
            user_id: "u1".into(),
            hold_id: hold_id.into(),
            zone_id: zone_id.into(),
            seat_ids: seat_ids.iter().map(|s| (*s).to_owned()).collect(),
            quantity,
            reason: reason as i32,
        }))
        .await;
    }

    pub async fn confirmed(
        &self,
        event_id: &str,
        hold_id: &str,
        zone_id: &str,
        seat_ids: &[&str],
        quantity: u32,
    ) {
        self.publish(Body::BookingConfirmed(BookingConfirmed {
            event_id: event_id.into(),
            user_id: "u1".into(),
            booking_id: uuid::Uuid::now_v7().to_string(),
            payment_id: uuid::Uuid::now_v7().to_string(),
            hold_id: hold_id.into(),
            zone_id: zone_id.into(),
            seat_ids: seat_ids.iter().map(|s| (*s).to_owned()).collect(),
            quantity,
            amount_cents: 5_000,
            currency: "EUR".into(),
        }))
        .await;
    }
}
