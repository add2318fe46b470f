//! The notifier: a durable per-user inbox of what happened, live gRPC streams and signed webhooks.
//!
//! Parts and flow:
//! - [`consumer`]: the durable JetStream consumer `notifier` maps domain events (admitted, hold
//!   expired, booking confirmed, payment failed, refunded) to notifications and acknowledges
//!   each event only after [`inbox::Inbox::store`] committed it.
//! - [`inbox`]: Postgres table `notifier.inbox`, unique by the event's `message_id`, so a
//!   redelivered event is stored once. The same transaction creates the webhook deliveries
//!   owed; after the commit the notification goes to a broadcast channel for live streams.
//! - [`service`]: `Subscribe` subscribes to the broadcast first, then sends the backlog from
//!   Postgres and then live notifications newer than the last one sent (re-reading Postgres
//!   when it lags), so a resumed stream has no gap and no duplicate. `ListNotifications`
//!   pages the inbox; `RegisterWebhook` accepts only http(s) URLs on allowed hosts.
//! - [`webhook`]: the delivery worker claims due deliveries (`FOR UPDATE SKIP LOCKED`), POSTs
//!   HMAC-signed JSON and retries with capped exponential backoff until delivered or dead.
#![forbid(unsafe_code)]

pub mod app;
pub mod config;
pub mod consumer;
pub mod error;
pub mod inbox;
pub mod migration;
pub mod service;
pub mod webhook;

pub use app::App;
pub use config::Config;
pub use error::Error;
