//! Flags and environment of the admission service.

use service_runtime::{
    args::{NatsArgs, RedisArgs, validate_http_url},
    config::{ServerArgs, secret},
};
use ticketing_proto::pass::PassSigner;

use crate::fairness::ShuffleKey;

/// Everything the service reads at start-up; validated before anything is bound.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "admission", about = "The virtual waiting room of the ticketing mesh")]
pub struct Config {
    #[command(flatten)]
    pub server: ServerArgs,
    /// Redis holding the queues and passes.
    #[command(flatten)]
    pub redis: RedisArgs,
    /// NATS JetStream carrying the mesh's events (`Admitted`, `PassEnded`).
    #[command(flatten)]
    pub nats: NatsArgs,
    /// The inventory service, which describes events (sale opening, capacity, tick, pass ttl).
    #[arg(long, env = "INVENTORY_URL", default_value = "http://127.0.0.1:50053")]
    pub inventory_url: String,
    /// Pass-signing keys (Ed25519), `kid:base64url(32-byte seed)[,...]`, newest first: the
    /// first signs, all verify. Only admission holds them; seat-lock gets the public halves
    /// (`PASS_VERIFY_KEYS`). Never printed, not even when malformed.
    #[arg(long, env = "PASS_SIGNING_KEYS", hide_env_values = true, value_parser = secret::<PassSigner>())]
    pub pass_signing_keys: PassSigner,
    /// How often the controller looks for events whose admission tick is due, in milliseconds.
    #[arg(long, env = "CONTROLLER_POLL_MS", default_value_t = 50)]
    pub controller_poll_ms: u64,
    /// Joins one user may make per event per second before RESOURCE_EXHAUSTED.
    #[arg(long, env = "JOIN_RATE_LIMIT", default_value_t = 5)]
    pub join_rate_limit: u32,
    /// Master secret of the pre-queue shuffle (at least 16 bytes); never printed. Each event's
    /// key is HMAC-SHA256(SHUFFLE_KEY, "admission-shuffle:" + event_id) and may be published
    /// after the sale for audit. When unset, one derived from the current pass-signing key
    /// stands in (with a warning): set it so rotating pass keys cannot change how an event was
    /// shuffled.
    #[arg(long, env = "SHUFFLE_KEY", hide_env_values = true, value_parser = secret::<ShuffleKey>())]
    pub shuffle_key: Option<ShuffleKey>,
    /// Accept the example secrets committed to the repository (the development overlay's
    /// pass key and shuffle key). Anyone can read those, so without this the service refuses
    /// to start with them; only development stacks set it.
    #[arg(long, env = "ALLOW_EXAMPLE_SECRETS")]
    pub allow_example_secrets: bool,
    /// How long an admitted user has to collect the pass (Join, GetQueueStatus or WatchQueue
    /// answering it) before the slot goes to the next in line, in milliseconds. Collecting
    /// extends the pass to the event's full pass ttl. A no-show thus holds a slot this long
    /// instead of the whole ttl.
    #[arg(long, env = "CHECK_IN_WINDOW_MS", default_value_t = 60_000)]
    pub check_in_window_ms: u64,
    /// WatchQueue streams this replica holds at once; a new one beyond it is refused with
    /// `RESOURCE_EXHAUSTED` (`TOO_MANY_WATCHERS`) and can poll GetQueueStatus instead. An idle
    /// stream costs admission a few KiB, so the default bounds them to a few hundred MB.
    #[arg(long, env = "MAX_WATCHERS", default_value_t = 150_000)]
    pub max_watchers: usize,
    /// How long an event must have been finished (open, nobody waiting, no pass out, nothing
    /// to publish) before the controllers stop walking it and this replica drops its per-event
    /// state (view, clock, catalogue entry, and updates of its `admission_*` series), in
    /// milliseconds. A later request for the event brings it back.
    #[arg(long, env = "FINISHED_EVENT_AFTER_MS", default_value_t = 600_000)]
    pub finished_event_after_ms: u64,
}

impl Config {
    /// Refuses a configuration the service cannot run with, naming the setting.
    pub fn validate(&self) -> Result<(), String> {
        self.server.validate()?;
        self.redis.validate()?;
        self.nats.validate()?;
        validate_http_url("INVENTORY_URL", &self.inventory_url)?;
        if !(1..=60_000).contains(&self.controller_poll_ms) {
            return Err("CONTROLLER_POLL_MS must be 1-60000".into());
        }
        if !(100..=3_600_000).contains(&self.check_in_window_ms) {
            return Err("CHECK_IN_WINDOW_MS must be 100-3600000".into());
        }
        if self.join_rate_limit == 0 {
            return Err("JOIN_RATE_LIMIT must be positive".into());
        }
        if !(1_000..=86_400_000).contains(&self.finished_event_after_ms) {
            return Err("FINISHED_EVENT_AFTER_MS must be 1000-86400000".into());
        }
        if !(1..=1_000_000).contains(&self.max_watchers) {
            return Err("MAX_WATCHERS must be 1-1000000".into());
        }
        self.refuse_example_secrets()
    }

    /// Refuses the committed example secrets unless `ALLOW_EXAMPLE_SECRETS` is set; names
    /// the setting and key id, never the value.
    fn refuse_example_secrets(&self) -> Result<(), String> {
        if self.allow_example_secrets {
            return Ok(());
        }
        let examples = self.pass_signing_keys.example_key_ids();
        if !examples.is_empty() {
            return Err(format!(
                "PASS_SIGNING_KEYS holds the committed example key {}, which anyone can read; generate \
                 a key (tools/deploy/gen-secrets.sh), or set ALLOW_EXAMPLE_SECRETS=true on a development stack",
                examples.join(",")
            ));
        }
        if self.shuffle_key.as_ref().is_some_and(ShuffleKey::is_example) {
            return Err("SHUFFLE_KEY is a committed example value, which anyone can read; generate one \
                 (tools/deploy/gen-secrets.sh), or set ALLOW_EXAMPLE_SECRETS=true on a development stack"
                .into());
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use clap::Parser;

    use super::Config;

    #[test]
    fn example_secrets_pass_only_when_allowed() {
        let example = "dev:j0qaVnym6i8KY9oX21flE4s6OfdGmYP5kSWkEBOnE30";
        let jwks = service_runtime::auth::AuthArgs::for_tests().jwks;
        let args = [
            "admission",
            "--auth-jwks",
            &jwks,
            "--pass-signing-keys",
            example,
            "--shuffle-key",
            "a-shuffle-key-of-tests",
        ];
        let refused = Config::try_parse_from(args).unwrap().validate().unwrap_err();
        assert!(refused.contains("PASS_SIGNING_KEYS") && !refused.contains(&example[4..]), "{refused}");
        let allowed = Config::try_parse_from(args.into_iter().chain(["--allow-example-secrets"])).unwrap();
        assert_eq!(allowed.validate(), Ok(()));
    }
}
