//! Flags and environment of seat-lock.

use std::time::Duration;

use service_runtime::{
    args::{NatsArgs, RedisArgs, validate_http_url},
    config::{ServerArgs, secret},
    mtls::{MeshArgs, MeshTls, validate_internal_url},
};
use ticketing_proto::pass::PassVerifier;

/// The service's name: its certificate's identity and its callers' allow-lists.
pub const SERVICE: &str = "seat-lock";

/// Everything seat-lock needs to start, read from flags or the environment.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "seat-lock", about = "Atomic, expiring seat holds in Redis")]
pub struct Config {
    #[command(flatten)]
    pub server: ServerArgs,
    /// The internal listener and this service's mesh certificate (mutual TLS).
    #[command(flatten)]
    pub mesh: MeshArgs,
    /// Redis holding the holds, sold marks and zone counters.
    #[command(flatten)]
    pub redis: RedisArgs,
    /// NATS JetStream carrying the SeatsHeld / SeatsReleased events.
    #[command(flatten)]
    pub nats: NatsArgs,
    /// Inventory, asked once per event for its layout.
    #[arg(long, env = "INVENTORY_URL", default_value = "http://127.0.0.1:50053")]
    pub inventory_url: String,
    /// Payment's internal listener (mutual TLS), asked for the sold seats when Redis lost an
    /// event's state. Its certificate must name the URL's host.
    #[arg(long, env = "PAYMENT_INTERNAL_URL", default_value = "https://payment-headless:50052")]
    pub payment_internal_url: String,
    /// Public keys verifying admission passes (Ed25519), `kid:base64url(32-byte public
    /// key)[,...]`: every listed kid verifies, so a new key is added here before admission
    /// signs with it. Seat-lock holds no signing key and cannot mint passes.
    #[arg(long, env = "PASS_VERIFY_KEYS", hide_env_values = true, value_parser = secret::<PassVerifier>())]
    pub pass_verify_keys: PassVerifier,
    /// Accept the example pass key committed to the repository (the development overlay's),
    /// whose seed anyone can read; without this the service refuses to start with it. Only
    /// development stacks set it.
    #[arg(long, env = "ALLOW_EXAMPLE_SECRETS")]
    pub allow_example_secrets: bool,
    /// How long a hold lasts before its seats return to sale, in seconds.
    #[arg(long, env = "HOLD_TTL_SECS", default_value_t = 600)]
    pub hold_ttl_secs: u64,
    /// How far BeginCheckout extends a hold so the payment can finish, in seconds.
    #[arg(long, env = "CHECKOUT_GRACE_SECS", default_value_t = 300)]
    pub checkout_grace_secs: u64,
    /// How often the sweeper ends expired holds and the relay publishes the outbox, in ms.
    #[arg(long, env = "SWEEP_INTERVAL_MS", default_value_t = 250)]
    pub sweep_interval_ms: u64,
}

impl Config {
    /// Refuses settings the service cannot run with, before anything is bound.
    pub fn validate(&self) -> Result<(), String> {
        self.server.validate()?;
        self.redis.validate()?;
        self.nats.validate()?;
        validate_http_url("INVENTORY_URL", &self.inventory_url)?;
        validate_internal_url("PAYMENT_INTERNAL_URL", &self.payment_internal_url)?;
        self.mesh_tls()?;
        if !(1..=86_400).contains(&self.hold_ttl_secs) {
            return Err("HOLD_TTL_SECS must be 1-86400".into());
        }
        if !(1..=3_600).contains(&self.checkout_grace_secs) {
            return Err("CHECKOUT_GRACE_SECS must be 1-3600".into());
        }
        if !(10..=60_000).contains(&self.sweep_interval_ms) {
            return Err("SWEEP_INTERVAL_MS must be 10-60000".into());
        }
        let examples = self.pass_verify_keys.example_key_ids();
        if !examples.is_empty() && !self.allow_example_secrets {
            return Err(format!(
                "PASS_VERIFY_KEYS holds the committed example key {}, whose private half anyone can \
                 read; use the public half of admission's generated key, or set \
                 ALLOW_EXAMPLE_SECRETS=true on a development stack",
                examples.join(",")
            ));
        }
        Ok(())
    }

    /// This service's mesh identity, read from `TLS_CERT`, `TLS_KEY` and `TLS_CA`.
    pub fn mesh_tls(&self) -> Result<MeshTls, String> {
        MeshTls::load(&self.mesh, SERVICE)
    }

    /// How long a new hold lasts.
    pub fn hold_ttl(&self) -> Duration {
        Duration::from_secs(self.hold_ttl_secs)
    }

    /// How far a checkout extends a hold.
    pub fn checkout_grace(&self) -> Duration {
        Duration::from_secs(self.checkout_grace_secs)
    }

    /// The sweeper's and relay's period.
    pub fn sweep_interval(&self) -> Duration {
        Duration::from_millis(self.sweep_interval_ms)
    }
}
