//! The payment service: idempotent checkout that never takes money twice and never loses a
//! paid booking, whatever the provider's latency.
//!
//! Parts, and how a Pay flows through them:
//! - [`service`]: the gRPC `PaymentService` — validation, `Pay`, and the owner-only reads
//!   (`GetPayment`, `GetBooking`, `ListBookings`).
//! - [`internal`]: `PaymentInternalService.ListSoldSeats`, seat-lock's rebuild feed, served
//!   only on the internal listener (mutual TLS) and only to seat-lock's certificate.
//! - [`checkout`]: the `Pay` flow, each money state committed before the network call that
//!   follows it: [`idempotency`] answers a used key or claims it with a `charging` payment
//!   (one live payment per hold); the provider is charged; `captured`, `declined` or
//!   `unknown` (timed out or pending: the answer is PENDING) is committed ([`settle`]);
//!   [`seat_lock`] confirms the hold; the booking, its seat guard rows and the outbox event
//!   commit in one statement. A lost hold or a seat guard conflict is refunded ([`refund`]).
//! - [`refund`]: the one refund state machine (`refunding` committed, the provider's refund
//!   with no transaction open, then `refunded`), used by Pay, recovery and cancellations.
//! - [`recovery`]: the passes that drive every payment left between states from the
//!   provider's ledger (re-driving the same charge when the provider has none), never
//!   assuming an outcome: a dead process's payments within seconds ([`instances`]: each
//!   process's id on its payments and its lease), any payment unchanged for
//!   `RECOVERY_AFTER_SECS`. `PAYMENT_CRASH_AT` (test-only) aborts the process at a chosen step.
//! - [`cancel`]: the owner's `CancelBooking`, until the event's cutoff asked from inventory,
//!   and the operator's `RefundBooking`: idempotent by key (`cancel:<key>`), they run the
//!   booking's refund through [`refund`], whose last commit cancels the booking, frees its
//!   seat guard and queues its seats.
//! - [`seat_returns`]: the outbox of a cancelled booking's seats, drained into seat-lock's
//!   internal `ReturnSeats` until seat-lock accepts them. Payment calls seat-lock's internal
//!   listener (`BeginCheckout`, `ConfirmHold`, `ReturnSeats`) with its own certificate.
//! - [`gateway`]: the `PaymentGateway` trait, the sandbox provider with its own ledger, and
//!   the one timeout layer every provider call goes through.
//! - [`commit`]: group commit, so the writes of concurrent payments share their commits.
//! - [`relay`]: the outbox relay, publishing events to JetStream with the outbox message id
//!   as `Nats-Msg-Id`, then deleting them.
//! - [`store`]: rows, their states and protobuf form, and read queries; [`migration`]: the
//!   schema.
#![forbid(unsafe_code)]

pub mod app;
pub mod cancel;
pub mod checkout;
pub mod commit;
pub mod config;
pub mod error;
pub mod gateway;
pub mod idempotency;
pub mod instances;
pub mod internal;
pub mod migration;
pub mod reconcile;
pub mod recovery;
pub mod refund;
pub mod relay;
pub mod seat_lock;
pub mod seat_returns;
pub mod service;
pub mod settle;
pub mod store;

pub use app::App;
pub use config::Config;
