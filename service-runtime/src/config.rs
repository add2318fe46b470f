//! Flags shared by every service, read from the command line or the environment.

use std::{net::SocketAddr, time::Duration};

/// Exit code for invalid configuration (`EX_USAGE` from sysexits.h).
pub const EXIT_BAD_CONFIG: i32 = 64;

/// How the gRPC server listens and protects itself.
#[derive(Debug, Clone, clap::Args)]
pub struct ServerArgs {
    /// Address of the gRPC listener; port 0 picks a free port.
    #[arg(long, env = "GRPC_ADDR", default_value = "0.0.0.0:50051")]
    pub grpc_addr: SocketAddr,
    /// Address of the Prometheus `/metrics` listener.
    #[arg(long, env = "METRICS_ADDR", default_value = "0.0.0.0:9090")]
    pub metrics_addr: Option<SocketAddr>,
    /// Address of the plain HTTP/1 health port (`/livez`, `/readyz`) that the load balancer's
    /// backend checks and Kubernetes' probes use; unset, no health port (see [`crate::health`]).
    #[arg(long, env = "HEALTH_ADDR")]
    pub health_addr: Option<SocketAddr>,
    /// Longest a unary RPC may run before it is cancelled, in milliseconds.
    #[arg(long, env = "REQUEST_TIMEOUT_MS", default_value_t = 5_000)]
    pub request_timeout_ms: u64,
    /// Requests served at once; beyond it, requests fail fast with RESOURCE_EXHAUSTED.
    #[arg(long, env = "MAX_IN_FLIGHT", default_value_t = 4_096)]
    pub max_in_flight: usize,
    /// How long shutdown waits for in-flight requests, in milliseconds. Keep it below the
    /// orchestrator's termination grace period.
    #[arg(long, env = "DRAIN_GRACE_MS", default_value_t = 10_000)]
    pub drain_grace_ms: u64,
    /// How bearer tokens are verified.
    #[command(flatten)]
    pub auth: crate::auth::AuthArgs,
}

impl ServerArgs {
    /// Settings for a test server on a free loopback port, accepting the tokens of
    /// [`crate::auth::TokenIssuer::for_tests`].
    pub fn loopback() -> Self {
        Self {
            grpc_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            metrics_addr: None,
            health_addr: None,
            request_timeout_ms: 10_000,
            max_in_flight: 4_096,
            drain_grace_ms: 2_000,
            auth: crate::auth::AuthArgs::for_tests(),
        }
    }

    /// Refuses values that would make the server useless.
    pub fn validate(&self) -> Result<(), String> {
        if self.request_timeout_ms == 0 {
            return Err("REQUEST_TIMEOUT_MS must be positive".into());
        }
        if self.max_in_flight == 0 {
            return Err("MAX_IN_FLIGHT must be positive".into());
        }
        self.auth.validate()
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    pub fn drain_grace(&self) -> Duration {
        Duration::from_millis(self.drain_grace_ms)
    }
}

/// Parses the configuration from flags and environment. `--help` and `--version` print and
/// exit 0; anything else wrong (a missing or malformed setting) exits with [`EXIT_BAD_CONFIG`].
pub fn parse<C: clap::Parser>() -> C {
    use clap::error::ErrorKind;
    match C::try_parse() {
        Ok(config) => config,
        Err(error) if matches!(error.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            error.exit()
        }
        Err(error) => {
            let _ = error.print();
            std::process::exit(EXIT_BAD_CONFIG)
        }
    }
}

/// Prints `message` as a configuration error and exits with [`EXIT_BAD_CONFIG`].
pub fn exit_bad_config(service: &str, message: impl std::fmt::Display) -> ! {
    eprintln!("{service}: invalid configuration: {message}");
    std::process::exit(EXIT_BAD_CONFIG)
}

/// Checks a NATS subject prefix or Redis key prefix: 1-48 of `[a-z0-9_]`.
pub fn validate_prefix(name: &str, value: &str) -> Result<(), String> {
    let ok = !value.is_empty()
        && value.len() <= 48
        && value.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok { Ok(()) } else { Err(format!("{name} must be 1-48 of [a-z0-9_], got {value:?}")) }
}

/// Checks a Redis key prefix: at most 64 characters, no braces (they would change the keys'
/// cluster hash tag) and no spaces. Empty is allowed.
pub fn validate_redis_prefix(value: &str) -> Result<(), String> {
    if value.len() > 64 || value.contains(['{', '}', ' ']) {
        return Err(format!(
            "REDIS_PREFIX must be at most 64 characters without braces or spaces, got {value:?}"
        ));
    }
    Ok(())
}

/// A clap value parser for settings that hold secrets (signing keys, webhook keys): parses
/// with `T::from_str` like clap's own, but its error names the setting and says what is wrong
/// without repeating the value, which clap's error message would print. Use it with
/// `hide_env_values = true`, so `--help` does not show the value either:
/// `#[arg(long, env = "PASS_SIGNING_KEYS", hide_env_values = true, value_parser = secret::<PassSigner>())]`.
/// `T::Err`'s text must not contain the input either.
pub fn secret<T>() -> SecretParser<T> {
    SecretParser(std::marker::PhantomData)
}

/// See [`secret`].
pub struct SecretParser<T>(std::marker::PhantomData<fn() -> T>);

impl<T> Clone for SecretParser<T> {
    fn clone(&self) -> Self {
        Self(std::marker::PhantomData)
    }
}

impl<T> clap::builder::TypedValueParser for SecretParser<T>
where
    T: std::str::FromStr + Clone + Send + Sync + 'static,
    T::Err: std::fmt::Display,
{
    type Value = T;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<T, clap::Error> {
        use clap::error::ErrorKind;
        let name = arg
            .and_then(|arg| arg.get_env())
            .map(|env| env.to_string_lossy().into_owned())
            .or_else(|| arg.map(|arg| format!("--{}", arg.get_id())))
            .unwrap_or_else(|| "a secret setting".to_owned());
        let text = value.to_str().ok_or_else(|| {
            clap::Error::raw(ErrorKind::InvalidUtf8, format!("{name} is not valid UTF-8 (value hidden)\n"))
                .with_cmd(cmd)
        })?;
        text.parse().map_err(|problem| {
            clap::Error::raw(
                ErrorKind::ValueValidation,
                format!("invalid {name} (value hidden): {problem}\n"),
            )
            .with_cmd(cmd)
        })
    }
}
