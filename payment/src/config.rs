//! Flags and environment of the payment service.

use std::time::Duration;

use service_runtime::{
    args::{DatabaseArgs, NatsArgs, validate_http_url},
    config::ServerArgs,
    mtls::{MeshArgs, MeshTls, validate_internal_url},
};

/// The service's name: its certificate's identity and its callers' allow-lists.
pub const SERVICE: &str = "payment";

/// Everything the payment service needs to start.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "payment", about = "Idempotent checkout: charges, bookings, seat guard and outbox")]
pub struct Config {
    #[command(flatten)]
    pub server: ServerArgs,
    /// The internal listener and this service's mesh certificate (mutual TLS).
    #[command(flatten)]
    pub mesh: MeshArgs,
    /// Postgres holding schema `payment` (payments, bookings, seat guard, outbox, sandbox ledger).
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Pool size of Postgres connections.
    #[arg(long, env = "DATABASE_MAX_CONNECTIONS", default_value_t = 32)]
    pub database_max_connections: u32,
    /// Group-commit transactions run at once (module `commit`): the writes of concurrent
    /// payments share their commits. Each takes a pooled connection, so it must stay below
    /// DATABASE_MAX_CONNECTIONS, leaving room for reads, the outbox relay and recovery.
    #[arg(long, env = "DATABASE_COMMIT_GROUPS", default_value_t = 8)]
    pub database_commit_groups: u32,
    /// NATS JetStream the outbox relay publishes to (`<prefix>.booking.confirmed`, ...).
    #[command(flatten)]
    pub nats: NatsArgs,
    /// Seat-lock's internal listener (mutual TLS), which moves holds into checkout, confirms
    /// them and takes cancelled seats back. Its certificate must name the URL's host.
    #[arg(long, env = "SEAT_LOCK_INTERNAL_URL", default_value = "https://seat-lock-headless:50052")]
    pub seat_lock_internal_url: String,
    /// The inventory service, asked for an event's start and cancellation cutoff when an owner
    /// cancels a booking.
    #[arg(long, env = "INVENTORY_URL", default_value = "http://127.0.0.1:50053")]
    pub inventory_url: String,
    /// How often the outbox relay looks for rows when no payment woke it, in milliseconds.
    #[arg(long, env = "RELAY_INTERVAL_MS", default_value_t = 200)]
    pub relay_interval_ms: u64,
    /// Longest any call to the payment provider may take, in milliseconds (the one timeout
    /// layer, `gateway::TimeoutGateway`). A charge that takes longer is recorded `unknown`
    /// and Pay answers PENDING; recovery settles it from the provider's ledger. Must stay
    /// below REQUEST_TIMEOUT_MS, so the caller hears PENDING instead of a deadline error.
    #[arg(long, env = "PROVIDER_TIMEOUT_MS", default_value_t = 3_000)]
    pub provider_timeout_ms: u64,
    /// Age (since its last state change) after which a payment that is not final is driven
    /// on by the recovery pass, in seconds. Recovery driving a payment whose request is still
    /// running is safe (every step is a conditional update on the state it expects, and the
    /// provider is idempotent), so this only decides how soon a stuck payment is settled; keep
    /// it above PROVIDER_TIMEOUT_MS so a request normally settles its own payment. Tests that
    /// crash the service set it to 1.
    #[arg(long, env = "RECOVERY_AFTER_SECS", default_value_t = 300)]
    pub recovery_after_secs: u64,
    /// How long a payment process may go without refreshing its lease (every third of it)
    /// before another process takes it for dead and adopts its unsettled payments (module
    /// `instances`), in seconds. At least 3. Tests that crash the service on purpose set it
    /// to an hour, so the next process does not touch what the crash left.
    #[arg(long, env = "INSTANCE_LEASE_SECS", default_value_t = crate::instances::DEFAULT_LEASE.as_secs())]
    pub instance_lease_secs: u64,
    /// Payment tasks (`Pay`, `CancelBooking`, `RefundBooking`) running at once on this replica;
    /// MAX_IN_FLIGHT when unset. Each runs in a task of its own that a client who gives up
    /// cannot cut in half, and keeps its slot until it ends, so payments whose clients left
    /// still count; beyond it a call is refused with RESOURCE_EXHAUSTED
    /// (`TOO_MANY_PAYMENTS_IN_FLIGHT`) before anything is charged.
    #[arg(long, env = "MAX_PAYMENTS_IN_FLIGHT")]
    pub max_payments_in_flight: Option<usize>,
    /// How often the service reconciles the provider's ledger with payments, bookings and
    /// refunds (module `reconcile`), in seconds. A payment changed within the last
    /// RECOVERY_AFTER_SECS is left to its request and recovery, not reported.
    #[arg(long, env = "RECONCILE_INTERVAL_SECS", default_value_t = 300)]
    pub reconcile_interval_secs: u64,
    /// TEST-ONLY fault injection, never set in production: abort the process
    /// (`std::process::abort`, a real crash with no cleanup) when a Pay reaches this step, so
    /// tests can check that recovery keeps every captured charge either booked or refunded.
    #[arg(long, env = "PAYMENT_CRASH_AT", value_enum)]
    pub crash_at: Option<CrashPoint>,
}

/// A step of `Pay` where the test-only `PAYMENT_CRASH_AT` knob aborts the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum CrashPoint {
    /// Seat-lock moved the hold into checkout; no payment row, no charge yet.
    AfterBeginCheckout,
    /// The key and the `charging` payment are committed; the provider not yet called.
    AfterChargingCommitted,
    /// The provider captured the charge; `captured` not yet committed.
    AfterCharge,
    /// `captured` is committed; seat-lock not yet asked to confirm.
    AfterCapturedCommitted,
    /// Seat-lock sold the seats; nothing of the booking is in Postgres yet.
    AfterConfirmHold,
    /// The booking transaction is written but not committed (it rolls back with the crash).
    BeforeCommit,
    /// A refund's `refunding` is committed; the provider not yet asked to refund.
    AfterRefundingCommitted,
    /// The provider refunded; `refunded` not yet committed.
    AfterProviderRefund,
}

impl CrashPoint {
    /// Aborts the process when `armed` is this point. Test-only fault injection.
    pub fn abort_if(armed: Option<Self>, here: Self) {
        if armed == Some(here) {
            tracing::error!(point = ?here, "PAYMENT_CRASH_AT reached: aborting the process (test-only knob)");
            std::process::abort();
        }
    }
}

impl Config {
    /// Checks everything before anything is bound or connected.
    /// A payment process's lease (`INSTANCE_LEASE_SECS`).
    pub fn instance_lease(&self) -> Duration {
        Duration::from_secs(self.instance_lease_secs)
    }

    /// The bound on payment tasks: MAX_PAYMENTS_IN_FLIGHT, or MAX_IN_FLIGHT when unset.
    pub fn payments_in_flight(&self) -> usize {
        self.max_payments_in_flight.unwrap_or(self.server.max_in_flight)
    }

    pub fn validate(&self) -> Result<(), String> {
        self.server.validate()?;
        self.database.validate()?;
        self.nats.validate()?;
        if self.database_max_connections == 0 {
            return Err("DATABASE_MAX_CONNECTIONS must be positive".into());
        }
        if self.database_commit_groups == 0 || self.database_commit_groups >= self.database_max_connections {
            return Err(format!(
                "DATABASE_COMMIT_GROUPS must be at least 1 and below DATABASE_MAX_CONNECTIONS ({}), got {}",
                self.database_max_connections, self.database_commit_groups
            ));
        }
        if self.provider_timeout_ms == 0 || self.provider_timeout_ms >= self.server.request_timeout_ms {
            return Err(format!(
                "PROVIDER_TIMEOUT_MS must be positive and below REQUEST_TIMEOUT_MS ({} ms), so Pay answers \
                 PENDING before the caller's deadline; got {}",
                self.server.request_timeout_ms, self.provider_timeout_ms
            ));
        }
        if self.relay_interval_ms == 0 {
            return Err("RELAY_INTERVAL_MS must be positive".into());
        }
        // 1 s is allowed for crash tests; production should keep it above the slowest Pay
        // (see the flag's docs), which the default of 300 s does.
        if self.recovery_after_secs == 0 {
            return Err("RECOVERY_AFTER_SECS must be at least 1".into());
        }
        if self.reconcile_interval_secs == 0 {
            return Err("RECONCILE_INTERVAL_SECS must be at least 1".into());
        }
        if self.instance_lease_secs < 3 {
            return Err(format!("INSTANCE_LEASE_SECS must be at least 3, got {}", self.instance_lease_secs));
        }
        if self.max_payments_in_flight == Some(0) {
            return Err("MAX_PAYMENTS_IN_FLIGHT must be positive (unset: MAX_IN_FLIGHT)".into());
        }
        validate_http_url("INVENTORY_URL", &self.inventory_url)?;
        validate_internal_url("SEAT_LOCK_INTERNAL_URL", &self.seat_lock_internal_url)?;
        self.mesh_tls()?;
        Ok(())
    }

    /// This service's mesh identity, read from `TLS_CERT`, `TLS_KEY` and `TLS_CA`.
    pub fn mesh_tls(&self) -> Result<MeshTls, String> {
        MeshTls::load(&self.mesh, SERVICE)
    }

    /// The one timeout of every provider call.
    pub fn provider_timeout(&self) -> Duration {
        Duration::from_millis(self.provider_timeout_ms)
    }

    /// The relay's polling period.
    pub fn relay_interval(&self) -> Duration {
        Duration::from_millis(self.relay_interval_ms)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test code: a panic is a failed test

    use clap::ValueEnum;

    use super::*;

    /// `payment` and flags naming this test process's service certificates as payment's.
    fn args(more: &[&str]) -> Vec<String> {
        static CERTS: std::sync::OnceLock<test_support::certs::MeshCerts> = std::sync::OnceLock::new();
        let certs = CERTS.get_or_init(|| {
            let dir = std::env::temp_dir().join(format!("payment-unit-certs-{}", std::process::id()));
            test_support::certs::ensure(&dir).unwrap()
        });
        let path = |p: std::path::PathBuf| p.display().to_string();
        let mut args = vec![
            "payment".to_owned(),
            "--tls-cert".to_owned(),
            path(certs.cert("payment")),
            "--tls-key".to_owned(),
            path(certs.key("payment")),
            "--tls-ca".to_owned(),
            path(certs.ca()),
            "--auth-jwks".to_owned(),
            service_runtime::auth::AuthArgs::for_tests().jwks,
        ];
        // A flag given in `more` replaces the default one.
        for pair in more.chunks(2) {
            match args.iter().position(|a| a == pair[0]) {
                Some(at) if pair.len() == 2 => args[at + 1] = pair[1].to_owned(),
                _ => args.extend(pair.iter().map(|s| (*s).to_owned())),
            }
        }
        args
    }

    #[test]
    fn crash_points_parse_by_their_documented_names() {
        for (name, point) in [
            ("after_begin_checkout", CrashPoint::AfterBeginCheckout),
            ("after_charging_committed", CrashPoint::AfterChargingCommitted),
            ("after_charge", CrashPoint::AfterCharge),
            ("after_captured_committed", CrashPoint::AfterCapturedCommitted),
            ("after_confirm_hold", CrashPoint::AfterConfirmHold),
            ("before_commit", CrashPoint::BeforeCommit),
            ("after_refunding_committed", CrashPoint::AfterRefundingCommitted),
            ("after_provider_refund", CrashPoint::AfterProviderRefund),
        ] {
            assert_eq!(CrashPoint::from_str(name, false), Ok(point));
        }
        assert!(CrashPoint::from_str("after-charge", false).is_err());
        // Unarmed or armed elsewhere: nothing happens.
        CrashPoint::abort_if(None, CrashPoint::AfterCharge);
        CrashPoint::abort_if(Some(CrashPoint::BeforeCommit), CrashPoint::AfterCharge);
    }

    #[test]
    fn inventory_url_is_checked_like_seat_lock_url() {
        use clap::Parser;
        let config =
            Config::try_parse_from(args(&["--seat-lock-internal-url", "https://127.0.0.1:1"])).unwrap();
        assert_eq!(config.inventory_url, "http://127.0.0.1:50053");
        assert_eq!(config.validate(), Ok(()));
        let bad = Config::try_parse_from(args(&["--inventory-url", "inventory:50053"])).unwrap();
        assert_eq!(
            bad.validate(),
            Err("INVENTORY_URL must be an http(s) URL, got \"inventory:50053\"".into())
        );
        let empty = Config::try_parse_from(args(&["--inventory-url", ""])).unwrap();
        assert_eq!(empty.validate(), Err("INVENTORY_URL is required".into()));
        let plain =
            Config::try_parse_from(args(&["--seat-lock-internal-url", "http://seat-lock:50052"])).unwrap();
        assert!(plain.validate().unwrap_err().starts_with("SEAT_LOCK_INTERNAL_URL must be an https:// URL"));
    }

    #[test]
    fn bad_certificate_files_are_refused_by_name_without_their_content() {
        use clap::Parser;
        let parse = |more: &[&str]| Config::try_parse_from(args(more)).unwrap().validate();
        let missing = parse(&["--tls-key", "/nonexistent/payment-key.pem"]).unwrap_err();
        assert!(missing.starts_with("TLS_KEY /nonexistent/payment-key.pem: cannot read it"), "{missing}");
        // Another service's key, or a key given as the certificate: named, never printed.
        let base = args(&[]);
        let (cert, key, ca) = (&base[2], &base[4], &base[6]);
        let seat_lock_key = key.replace("payment-key.pem", "seat-lock-key.pem");
        let mismatch = parse(&["--tls-key", &seat_lock_key]).unwrap_err();
        assert!(mismatch.starts_with("TLS_KEY"), "{mismatch}");
        let key_text = std::fs::read_to_string(&seat_lock_key).unwrap();
        let secret_line = key_text.lines().nth(1).unwrap();
        assert!(!mismatch.contains(secret_line), "the key's content is never shown");
        let not_a_cert = parse(&["--tls-cert", key]).unwrap_err();
        assert!(not_a_cert.starts_with("TLS_CERT") && !not_a_cert.contains(secret_line), "{not_a_cert}");
        let not_a_ca = parse(&["--tls-ca", key]).unwrap_err();
        assert!(not_a_ca.starts_with("TLS_CA"), "{not_a_ca}");
        let seat_lock_cert = cert.replace("payment.pem", "seat-lock.pem");
        let wrong = parse(&["--tls-cert", &seat_lock_cert, "--tls-key", &seat_lock_key]).unwrap_err();
        assert!(wrong.contains("is \"seat-lock\"'s, this is \"payment\""), "{wrong}");
        assert_eq!(parse(&["--tls-ca", ca]), Ok(()));
    }

    #[test]
    fn the_provider_answers_before_the_callers_deadline() {
        use clap::Parser;
        let parse = |more: &[&str]| Config::try_parse_from(args(more)).unwrap().validate();
        assert_eq!(parse(&[]), Ok(()), "defaults: 3 s provider, 5 s request");
        assert!(parse(&["--provider-timeout-ms", "5000"]).unwrap_err().contains("below REQUEST_TIMEOUT_MS"));
        assert_eq!(parse(&["--provider-timeout-ms", "20000", "--request-timeout-ms", "30000"]), Ok(()));
        assert!(parse(&["--reconcile-interval-secs", "0"]).is_err());
    }

    #[test]
    fn payment_tasks_default_to_max_in_flight_and_leases_are_at_least_three_seconds() {
        use clap::Parser;
        let parse = |more: &[&str]| Config::try_parse_from(args(more)).unwrap();
        let defaults = parse(&[]);
        assert_eq!((defaults.payments_in_flight(), defaults.instance_lease_secs), (4_096, 6));
        assert_eq!(parse(&["--max-in-flight", "64"]).payments_in_flight(), 64);
        let own = parse(&["--max-in-flight", "64", "--max-payments-in-flight", "16"]);
        assert_eq!((own.payments_in_flight(), own.validate()), (16, Ok(())));
        let zero = parse(&["--max-payments-in-flight", "0"]).validate().unwrap_err();
        assert!(zero.starts_with("MAX_PAYMENTS_IN_FLIGHT must be positive"), "{zero}");
        let short = parse(&["--instance-lease-secs", "2"]).validate().unwrap_err();
        assert_eq!(short, "INSTANCE_LEASE_SECS must be at least 3, got 2");
        assert_eq!(parse(&["--instance-lease-secs", "3600"]).validate(), Ok(()));
    }
}
