//! What a stack's processes are started with: [`StackConfig`] (ports, backing servers and
//! prefixes, keys, the services' environment) and [`StackConfig::spawn`].

use std::{
    collections::BTreeSet,
    fs,
    path::PathBuf,
    process::{Child, Command, Stdio},
};

use anyhow::{Context, bail};

use super::{certs, process::spawn_detached};
use crate::flashsale;

/// One service of the mesh as the stack runs it.
#[derive(Debug, Clone)]
pub struct ServiceProcess {
    /// Crate and binary name.
    pub name: &'static str,
    pub grpc_port: u16,
    pub metrics_port: u16,
    /// The plain HTTP/1 health port (`HEALTH_ADDR`: `/livez`, `/readyz`) that HAProxy's
    /// backend checks ask.
    pub health_port: u16,
    /// The internal (mutual TLS) listener's port, for a service with internal RPCs
    /// ([`INTERNAL_SERVICES`]); 0 for the others.
    pub internal_port: u16,
}

/// The services with internal RPCs, served on their own mutual-TLS port.
pub const INTERNAL_SERVICES: [&str; 2] = ["seat-lock", "payment"];

/// Everything the stack's processes are started with.
#[derive(Debug, Clone)]
pub struct StackConfig {
    /// Logs, pid files, certificates, kept keys, the record of the last start
    /// (`stack.json`) and the rendered HAProxy config.
    pub state_dir: PathBuf,
    /// Where the service binaries are.
    pub bin_dir: PathBuf,
    pub services: Vec<ServiceProcess>,
    pub lb_port: u16,
    pub database_url: String,
    pub redis_url: String,
    pub redis_prefix: String,
    pub nats_url: String,
    pub nats_prefix: String,
    /// `kid:seed` signing admission passes (admission's `PASS_SIGNING_KEYS`), made fresh for
    /// each config; `stack up` keeps the first in `<state>/keys` ([`super::data::keep_keys`]).
    pub pass_signing_keys: String,
    /// Its public half, `kid:public key`: seat-lock's `PASS_VERIFY_KEYS`.
    pub pass_verify_keys: String,
    /// Keys admission's fair pre-queue shuffle.
    pub shuffle_key: String,
    /// Seat holds' lifetime.
    pub hold_ttl_secs: u64,
    /// The identity provider's folder (token key and JWKS, see [`crate::identity`]); every
    /// service gets its JWKS as `AUTH_JWKS`.
    pub auth_dir: PathBuf,
    /// More variables for every service (each reads only its own), e.g. shorter checkout
    /// grace and recovery windows for a run that must settle within minutes.
    pub extra_env: Vec<(String, String)>,
    /// Bytes the event stream keeps (`StreamSpec::max_bytes`): the mesh's limit for the local
    /// stack, a test's small one on free ports (JetStream reserves it on the shared server).
    pub stream_max_bytes: i64,
}

/// notifier's committed example webhook key (`notifier::webhook::secret::EXAMPLE_SECRET_KEY`),
/// which notifier accepts only with `ALLOW_EXAMPLE_SECRETS=true`: local stacks only.
const NOTIFIER_EXAMPLE_SECRET_KEY: &str = "example:bm90aWZpZXItZXhhbXBsZS1rZXktbm90LXNlY3JldCE=";

/// The service names, in start order.
pub const SERVICES: [&str; 5] = ["inventory", "payment", "seat-lock", "admission", "notifier"];

/// The standard ports of the local stack: first gRPC port (one per service in
/// [`LOCAL_GRPC_PORTS`] order, internal listeners 10 above), first metrics port, first health
/// port, load balancer.
pub const LOCAL_PORTS: Ports = Ports { grpc: 50051, metrics: 9101, health: 9201, lb: 8080 };

/// Where the services' ports start: service `i` of [`LOCAL_GRPC_PORTS`] listens on `grpc + i`
/// (its internal mutual-TLS listener on `grpc + i + 10`), `metrics + i` and `health + i`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ports {
    pub grpc: u16,
    pub metrics: u16,
    pub health: u16,
    /// The load balancer.
    pub lb: u16,
}

/// The order of the services in a port block (admission first: 50051 in the README).
pub const LOCAL_GRPC_PORTS: [&str; 5] = ["admission", "seat-lock", "inventory", "payment", "notifier"];

/// Offset of an internal (mutual TLS) listener above its service's gRPC port.
const INTERNAL_PORT_OFFSET: u16 = 10;

impl StackConfig {
    /// The local stack on its standard ports ([`LOCAL_PORTS`]: services 50051-50055, metrics
    /// 9101-9105, health ports 9201-9205, internal listeners of seat-lock and payment 50062
    /// and 50064, load balancer 8080) with a fresh pass key.
    pub fn local(state_dir: PathBuf, bin_dir: PathBuf) -> Self {
        let (pass_signing_keys, pass_verify_keys) = ticketing_proto::pass::generate_signing_key(&format!(
            "k{}",
            chrono::Utc::now().format("%Y%m%d%H%M%S")
        ));
        let mut config = Self {
            auth_dir: crate::identity::auth_dir(&state_dir),
            state_dir,
            bin_dir,
            services: Vec::new(),
            lb_port: 0,
            database_url: "postgres://postgres@127.0.0.1:5432/ticketing".into(),
            redis_url: "redis://127.0.0.1:6379".into(),
            redis_prefix: "ticketing:".into(),
            nats_url: "nats://127.0.0.1:4222".into(),
            nats_prefix: "ticketing".into(),
            pass_signing_keys,
            pass_verify_keys,
            shuffle_key: uuid::Uuid::new_v4().simple().to_string(),
            hold_ttl_secs: 600,
            extra_env: Vec::new(),
            stream_max_bytes: service_runtime::bus::MAX_BYTES,
        };
        config.set_ports(LOCAL_PORTS);
        config
    }

    /// Puts the services and the load balancer on the port blocks of `ports`.
    pub fn set_ports(&mut self, ports: Ports) {
        self.services = SERVICES
            .iter()
            .map(|name| {
                let index = LOCAL_GRPC_PORTS.iter().position(|n| n == name).unwrap_or_default() as u16;
                let grpc_port = ports.grpc + index;
                ServiceProcess {
                    name,
                    grpc_port,
                    metrics_port: ports.metrics + index,
                    health_port: ports.health + index,
                    internal_port: if INTERNAL_SERVICES.contains(name) {
                        grpc_port + INTERNAL_PORT_OFFSET
                    } else {
                        0
                    },
                }
            })
            .collect();
        self.lb_port = ports.lb;
    }

    /// A stack on free ports, for tests.
    pub fn on_free_ports(state_dir: PathBuf, bin_dir: PathBuf) -> anyhow::Result<Self> {
        let mut config = Self::local(state_dir, bin_dir);
        for service in &mut config.services {
            service.grpc_port = free_port()?;
            service.metrics_port = free_port()?;
            service.health_port = free_port()?;
            if service.internal_port != 0 {
                service.internal_port = free_port()?;
            }
        }
        config.lb_port = free_port()?;
        config.stream_max_bytes = test_support::testenv::TEST_STREAM_MAX_BYTES;
        Ok(config)
    }

    /// The stack's identity provider: its key is created in [`Self::auth_dir`] on first use
    /// and kept afterwards.
    pub fn identity(&self) -> anyhow::Result<crate::identity::Identity> {
        crate::identity::Identity::load_or_create(&self.auth_dir)
    }

    /// The gRPC port of a service.
    pub fn port(&self, name: &str) -> u16 {
        self.services.iter().find(|s| s.name == name).map_or(0, |s| s.grpc_port)
    }

    /// `http://127.0.0.1:<port>` of the load balancer.
    pub fn lb_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.lb_port)
    }

    fn url(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}", self.port(name))
    }

    /// The internal (mutual TLS) port of a service; 0 when it has none.
    pub fn internal_port(&self, name: &str) -> u16 {
        self.services.iter().find(|s| s.name == name).map_or(0, |s| s.internal_port)
    }

    fn internal_url(&self, name: &str) -> String {
        format!("https://127.0.0.1:{}", self.internal_port(name))
    }

    /// The stack's service certificates (`<state>/certs`), made on first use and reused.
    pub fn certs(&self) -> anyhow::Result<certs::MeshCerts> {
        certs::ensure(&self.state_dir.join("certs"))
    }

    /// The environment `service` runs with in this stack. Seat-lock's checkout grace and
    /// payment's recovery window are cut from 300 s to the slowest card plus a margin, so a
    /// payment left pending (a charge that outlasts `PROVIDER_TIMEOUT_MS`) or interrupted
    /// settles within a sale of minutes, while a slow card still completes as it would with
    /// the defaults.
    pub fn env_of(&self, service: &ServiceProcess) -> Vec<(String, String)> {
        let mut env = vec![
            ("GRPC_ADDR", format!("127.0.0.1:{}", service.grpc_port)),
            ("METRICS_ADDR", format!("127.0.0.1:{}", service.metrics_port)),
            ("HEALTH_ADDR", format!("127.0.0.1:{}", service.health_port)),
            ("NATS_URL", self.nats_url.clone()),
            ("NATS_PREFIX", self.nats_prefix.clone()),
            ("DRAIN_GRACE_MS", "5000".into()),
            ("AUTH_JWKS", self.auth_dir.join(crate::identity::JWKS_FILE).to_string_lossy().into_owned()),
        ];
        match service.name {
            "inventory" => env.push(("DATABASE_URL", self.database_url.clone())),
            "notifier" => {
                env.push(("DATABASE_URL", self.database_url.clone()));
                // The local stack only: the committed example key seals webhook secrets, and
                // loopback receivers on any high port are allowed for demos.
                env.push(("WEBHOOK_SECRET_KEY", NOTIFIER_EXAMPLE_SECRET_KEY.to_owned()));
                env.push(("ALLOW_EXAMPLE_SECRETS", "true".into()));
                env.push(("WEBHOOK_ALLOW_HTTP", "true".into()));
                env.push(("WEBHOOK_ALLOWED_NETWORKS", "127.0.0.1/32".into()));
                env.push(("WEBHOOK_ALLOWED_PORTS", "1024-65535".into()));
            }
            "payment" => {
                env.push(("DATABASE_URL", self.database_url.clone()));
                env.push(("SEAT_LOCK_INTERNAL_URL", self.internal_url("seat-lock")));
                env.push((
                    "RECOVERY_AFTER_SECS",
                    flashsale::recovery_after_secs(self.hold_ttl_secs).to_string(),
                ));
                env.push(("INVENTORY_URL", self.url("inventory")));
            }
            "seat-lock" | "admission" => {
                env.push(("REDIS_URL", self.redis_url.clone()));
                env.push(("REDIS_PREFIX", self.redis_prefix.clone()));
                env.push(("INVENTORY_URL", self.url("inventory")));
                if service.name == "admission" {
                    env.push(("PASS_SIGNING_KEYS", self.pass_signing_keys.clone()));
                    env.push(("SHUFFLE_KEY", self.shuffle_key.clone()));
                }
                if service.name == "seat-lock" {
                    env.push(("PASS_VERIFY_KEYS", self.pass_verify_keys.clone()));
                    env.push(("PAYMENT_INTERNAL_URL", self.internal_url("payment")));
                    env.push(("HOLD_TTL_SECS", self.hold_ttl_secs.to_string()));
                    env.push((
                        "CHECKOUT_GRACE_SECS",
                        (flashsale::slowest_card_secs(self.hold_ttl_secs) + flashsale::WINDOW_MARGIN_SECS)
                            .to_string(),
                    ));
                }
            }
            _ => {}
        }
        if service.internal_port != 0 {
            env.push(("INTERNAL_GRPC_ADDR", format!("127.0.0.1:{}", service.internal_port)));
        }
        // Every service gets its identity (only seat-lock and payment read it today).
        let certs = certs::MeshCerts::at(&self.state_dir.join("certs"));
        env.into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .chain(certs.env(service.name))
            .chain(self.extra_env.iter().cloned())
            .collect()
    }

    /// Starts `service` with its environment, its output appended to `<state>/logs/<name>.log`
    /// (so a restarted process continues the same log), in its own process group.
    pub fn spawn(&self, service: &ServiceProcess) -> anyhow::Result<Child> {
        let binary = self.bin_dir.join(service.name);
        if !binary.exists() {
            bail!("{} is missing: build the services first (`cargo build --bins`)", binary.display());
        }
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.state_dir.join("logs").join(format!("{}.log", service.name)))?;
        let mut command = Command::new(&binary);
        command.envs(self.env_of(service)).stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
        let child =
            spawn_detached(&mut command).with_context(|| format!("cannot start {}", binary.display()))?;
        fs::write(self.state_dir.join("pids").join(format!("{}.pid", service.name)), child.id().to_string())?;
        Ok(child)
    }
}

/// A port that was free a moment ago.
pub fn free_port() -> anyhow::Result<u16> {
    // Below the kernel's ephemeral range (32768 and up by default): an outgoing connection of
    // another process never takes the port between this pick and the service's bind (a port
    // from `bind(0)` is an ephemeral one and did get taken so). Never twice per process.
    static GIVEN: std::sync::Mutex<BTreeSet<u16>> = std::sync::Mutex::new(BTreeSet::new());
    let mut given = GIVEN.lock().map_err(|_| anyhow::anyhow!("port registry poisoned"))?;
    for _ in 0..FREE_PORT_ATTEMPTS {
        let port =
            FREE_PORTS.start + (uuid::Uuid::new_v4().as_u128() % u128::from(FREE_PORTS.len() as u16)) as u16;
        if !given.contains(&port) && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.insert(port);
            return Ok(port);
        }
    }
    anyhow::bail!("no free port in {FREE_PORTS:?} after {FREE_PORT_ATTEMPTS} attempts")
}

/// Where [`free_port`] picks: below the default ephemeral range, above well-known services.
const FREE_PORTS: std::ops::Range<u16> = 20_000..32_000;
/// Picks [`free_port`] tries before giving up.
const FREE_PORT_ATTEMPTS: usize = 1_000;
