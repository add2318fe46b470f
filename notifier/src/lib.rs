//! The notifier: a durable per-user inbox of what happened, live gRPC streams and signed webhooks.
//!
//! Parts and flow:
//! - [`consumer`]: the durable JetStream consumer `notifier` maps domain events (admitted, hold
//!   expired, booking confirmed, payment failed, refunded) to notifications and acknowledges
//!   each event only after [`inbox::Inbox::store`] committed it.
//! - [`inbox`]: Postgres table `notifier.inbox`, unique by the event's `message_id`, so a
//!   redelivered event is stored once. The same transaction creates the webhook deliveries
//!   owed and sends a `NOTIFY`, delivered at the commit to every replica.
//! - [`live`]: each replica LISTENs and wakes the live streams of the notified user (a hub
//!   keyed by user, at most `MAX_SUBSCRIBERS` streams); a woken stream reads its new rows.
//! - [`service`]: every RPC acts as the caller's verified token subject
//!   (`service_runtime::auth::acting_user`). `Subscribe` registers in the live hub first,
//!   then sends the backlog from Postgres and then, each time its user is notified, the rows
//!   newer than the last one sent, so a resumed stream has no gap and no duplicate.
//!   `ListNotifications` pages the inbox; `RegisterWebhook` resolves the URL's host and checks
//!   every address against [`webhook::address`], then stores the webhook with its secret
//!   sealed ([`webhook::secret`]), at most `MAX_WEBHOOKS_PER_USER` per user.
//! - [`webhook`]: the delivery worker claims due deliveries (`FOR UPDATE SKIP LOCKED`),
//!   resolves and checks the target again (a forbidden address blocks the delivery, never
//!   sends it), POSTs HMAC-signed JSON over http or https to a checked address, and retries
//!   with capped exponential backoff until delivered or dead.
#![forbid(unsafe_code)]

pub mod app;
pub mod config;
pub mod consumer;
pub mod error;
pub mod inbox;
pub mod live;
pub mod migration;
pub mod service;
pub mod webhook;

pub use app::App;
pub use config::Config;
pub use error::Error;
