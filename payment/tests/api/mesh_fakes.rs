//! The rest of the mesh payment talks to, faked: what seat-lock's internal `ReturnSeats` was
//! given (the fake seat-lock records it) and the events the test registers on the fake
//! inventory, for their cancellation cutoff.

pub use test_support::fakes::FakeInventory;
use ticketing_proto::{internal::ReturnSeatsRequest, v1};
use uuid::Uuid;

use crate::helpers::FakeSeatLock;

impl FakeSeatLock {
    /// The `ReturnSeats` calls seat-lock accepted so far.
    pub fn returned(&self) -> Vec<ReturnSeatsRequest> {
        self.returns.lock().unwrap().clone()
    }
}

/// The events payment's tests register on the fake inventory (`test_support`).
pub trait AddEvent {
    /// Registers `event_id`, starting `starts_in_secs` from now (negative: already started),
    /// with owners' cancellations closing `cutoff_secs` before.
    fn add_event(&self, event_id: Uuid, starts_in_secs: i64, cutoff_secs: u32);
}

impl AddEvent for FakeInventory {
    fn add_event(&self, event_id: Uuid, starts_in_secs: i64, cutoff_secs: u32) {
        let starts_at = chrono::Utc::now().timestamp() + starts_in_secs;
        self.insert(v1::Event {
            event_id: event_id.to_string(),
            starts_at: Some(prost_types::Timestamp { seconds: starts_at, nanos: 0 }),
            cancellation_cutoff_seconds: cutoff_secs,
            ..v1::Event::default()
        });
    }
}
