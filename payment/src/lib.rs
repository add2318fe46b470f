//! The payment service: idempotent checkout that never takes money twice and never loses a
//! paid booking.
//!
//! Parts:
//! - [`service`]: the gRPC `PaymentService` — validation, `Pay`, and the owner-only reads
//!   (`GetPayment`, `GetBooking`, `ListBookings`) plus `ListSoldSeats` for seat-lock.
//! - [`checkout`]: the `Pay` flow. A request answers a finished key from its stored result,
//!   asks seat-lock to move the hold into checkout, claims its idempotency key (`in_flight`)
//!   together with a `processing` payment, charges the provider (idempotent on the payment
//!   id), asks seat-lock to confirm the hold, and commits booking, seats, `seat_guard` rows,
//!   the confirmed payment, an outbox event and the stored answer in one statement. A lost hold or a seat-guard conflict refunds the
//!   charge; anything unexpected after the charge (a crash included) leaves the payment
//!   `processing` for the recovery pass, which settles it from the provider's ledger: it
//!   replays ConfirmHold under the payment's reserved booking id and books, or refunds when
//!   the hold is lost. `PAYMENT_CRASH_AT` (test-only) aborts the process at a chosen step.
//! - [`cancel`]: `CancelBooking` (the owner, until the event's cutoff asked from inventory)
//!   and `RefundBooking` (an operator): idempotent by key (`cancel:<key>`), they run the
//!   booking's refund through [`refund`], which cancels it and frees its seat guard.
//! - [`seat_returns`]: the outbox of a cancelled booking's seats, drained into seat-lock's
//!   internal `ReturnSeats` until seat-lock accepts them.
//! - [`commit`]: group commit, so the writes of concurrent payments share their commits.
//! - [`gateway`]: the `PaymentGateway` trait and the sandbox provider with its own ledger.
//! - [`relay`]: the outbox relay, publishing events to JetStream with the outbox message id
//!   as `Nats-Msg-Id`, then deleting them.
//! - [`store`]: rows, their protobuf form, and read queries; [`migration`]: the schema.
#![forbid(unsafe_code)]

pub mod app;
pub mod cancel;
pub mod checkout;
pub mod commit;
pub mod config;
pub mod error;
pub mod gateway;
pub mod migration;
pub mod refund;
pub mod relay;
pub mod seat_returns;
pub mod service;
pub mod store;

pub use app::App;
pub use config::Config;
