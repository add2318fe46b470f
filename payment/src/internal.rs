//! `PaymentInternalService` (package `ticketing.internal.v1`): `ListSoldSeats`, the feed
//! seat-lock rebuilds an event's sold seats from after Redis lost them.
//!
//! It names every buyer of an event, so it is served only on the internal listener
//! (`INTERNAL_GRPC_ADDR`, mutual TLS) and answers only seat-lock's certificate ([`CALLERS`]);
//! any other service gets PERMISSION_DENIED.

use sea_orm::DatabaseConnection;
use service_runtime::{mtls::require_peer, status::uuid};
use ticketing_proto::internal::{
    ListSoldSeatsRequest, ListSoldSeatsResponse, payment_internal_service_server::PaymentInternalService,
};
use tonic::{Request, Response, Status};

use crate::{error::Error, store};

/// The services that may call these RPCs: seat-lock rebuilds from the sold seats.
pub const CALLERS: &[&str] = &["seat-lock"];

/// The internal service over payment's database.
#[derive(Clone)]
pub struct PaymentInternal {
    db: DatabaseConnection,
}

impl PaymentInternal {
    /// Reads from `db`.
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }
}

#[tonic::async_trait]
impl PaymentInternalService for PaymentInternal {
    async fn list_sold_seats(
        &self,
        request: Request<ListSoldSeatsRequest>,
    ) -> Result<Response<ListSoldSeatsResponse>, Status> {
        require_peer(&request, CALLERS)?;
        let event_id = uuid("event_id", &request.into_inner().event_id).map_err(Error::InvalidInput)?;
        let seats = store::sold_seats(&self.db, event_id).await?;
        Ok(Response::new(ListSoldSeatsResponse { seats }))
    }
}
