//! The local stack: backing services, the five services and the load balancer as processes.
//!
//! - [`ensure_backing_services`] makes Postgres, Redis and NATS (JetStream) answer on
//!   loopback, installing them from Debian's packages and starting them where needed.
//! - [`ensure_haproxy`] installs HAProxy, the L7 gRPC load balancer, if it is missing.
//!   Only the `stack` commands set the host up; tests and the simulator find what is
//!   installed ([`haproxy`]) and say what is missing.
//! - [`Stack::start`] starts the services and HAProxy with their logs and pid files in one
//!   folder and waits until every health check answers SERVING; [`stop`] stops them by pid.
//! - [`backing`]: private Redis, NATS and Postgres instances on free ports, which a chaos run
//!   may restart without touching the machine's shared servers.
//! - [`certs`]: the mesh CA and one certificate per service, made in `<state>/certs` on first
//!   start and reused; seat-lock and payment get `TLS_CERT`, `TLS_KEY`, `TLS_CA` and serve
//!   their internal RPCs on a second, mutual-TLS port that HAProxy never routes to.
//! - [`supervisor`]: restarts a service of a started stack that died, with the same
//!   environment and port, and records when it died and when it was SERVING again.
//!
//! The same code starts the real processes for the end-to-end test, on free ports and with
//! the test's own database and prefixes.

pub mod backing;
pub mod certs;
pub mod supervisor;

use std::{
    collections::BTreeSet,
    fs,
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};

/// How long a backing service may take to answer after being started.
const BACKING_START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the services may take to report SERVING (migrations, first connections).
const HEALTH_TIMEOUT: Duration = Duration::from_secs(60);
/// How long `stop` waits after SIGTERM before SIGKILL; longer than the services' drain grace.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// The workspace root, where `cargo` runs.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}

/// Where cargo puts binaries: `$CARGO_TARGET_DIR` or `<workspace>/target`.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| workspace_root().join("target"))
}

fn answers(port: u16) -> bool {
    TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], port)), Duration::from_millis(500)).is_ok()
}

fn run(program: &str, args: &[&str]) -> anyhow::Result<()> {
    let status = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .status()
        .with_context(|| format!("cannot run {program}"))?;
    if !status.success() {
        bail!("`{program} {}` failed with {status}", args.join(" "));
    }
    Ok(())
}

fn has_program(path: &str) -> bool {
    Path::new(path).exists()
        || Command::new("sh")
            .args(["-c", &format!("command -v {path}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
}

/// Installs Debian packages, refreshing the package lists once if the first try fails.
fn apt_install(packages: &[&str]) -> anyhow::Result<()> {
    eprintln!("installing {} from Debian's packages", packages.join(", "));
    let mut args = vec!["install", "-y", "-q", "--no-install-recommends"];
    args.extend_from_slice(packages);
    if run("apt-get", &args).is_ok() {
        return Ok(());
    }
    run("apt-get", &["update", "-q"])?;
    run("apt-get", &args)
}

fn wait_for_port(name: &str, port: u16) -> anyhow::Result<()> {
    let deadline = Instant::now() + BACKING_START_TIMEOUT;
    while !answers(port) {
        if Instant::now() > deadline {
            bail!("{name} did not answer on 127.0.0.1:{port} within {BACKING_START_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

fn ensure_postgres() -> anyhow::Result<()> {
    if answers(5432) {
        return Ok(());
    }
    let fresh = !has_program("pg_ctlcluster");
    if fresh {
        apt_install(&["postgresql"])?;
    }
    let versions: Vec<String> = fs::read_dir("/etc/postgresql")
        .context("no /etc/postgresql after installing postgresql")?
        .filter_map(|entry| entry.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    let version = versions.iter().max().context("no PostgreSQL cluster configured")?;
    if fresh {
        // The mesh connects as `postgres` over TCP without a password, as on the project's
        // machines: trust loopback connections.
        let hba = format!("/etc/postgresql/{version}/main/pg_hba.conf");
        let existing = fs::read_to_string(&hba).unwrap_or_default();
        fs::write(&hba, format!("host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust\n{existing}"))?;
    }
    run("pg_ctlcluster", &["--skip-systemctl-redirect", version, "main", "start"])?;
    wait_for_port("PostgreSQL", 5432)
}

fn ensure_redis() -> anyhow::Result<()> {
    if answers(6379) {
        return Ok(());
    }
    if !has_program("redis-server") {
        apt_install(&["redis-server"])?;
    }
    fs::create_dir_all("/var/lib/redis").ok();
    fs::create_dir_all("/var/log/redis").ok();
    run(
        "redis-server",
        &[
            "--daemonize",
            "yes",
            "--bind",
            "127.0.0.1",
            "-::1",
            "--port",
            "6379",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            "/var/lib/redis",
            "--logfile",
            "/var/log/redis/ci.log",
        ],
    )?;
    wait_for_port("Redis", 6379)
}

fn ensure_nats() -> anyhow::Result<()> {
    if answers(4222) {
        return Ok(());
    }
    if !has_program("/usr/sbin/nats-server") {
        apt_install(&["nats-server"])?;
    }
    fs::create_dir_all("/var/lib/nats-server").ok();
    run(
        "start-stop-daemon",
        &[
            "--start",
            "--oknodo",
            "--background",
            "--exec",
            "/usr/sbin/nats-server",
            "--",
            "-a",
            "127.0.0.1",
            "-p",
            "4222",
            "-js",
            "-sd",
            "/var/lib/nats-server",
            "-l",
            "/var/log/nats-server.log",
        ],
    )?;
    wait_for_port("NATS", 4222)
}

/// Runs cargo in the workspace. The variables `cargo run` set for this binary (its package
/// name, manifest dir, ...) are removed first: build scripts that watch them would otherwise
/// rerun and rebuild half the dependency tree on every call.
pub fn cargo(args: &[&str]) -> anyhow::Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(cargo);
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        let set_by_cargo_run =
            ["CARGO_PKG_", "CARGO_MANIFEST_", "CARGO_CRATE_", "CARGO_BIN_", "CARGO_PRIMARY_"]
                .iter()
                .any(|prefix| name.starts_with(prefix));
        if set_by_cargo_run || name == "OUT_DIR" {
            command.env_remove(name.as_ref());
        }
    }
    let status = command.args(args).current_dir(workspace_root()).status()?;
    if !status.success() {
        bail!("`cargo {}` failed with {status}", args.join(" "));
    }
    Ok(())
}

/// Builds every binary of the workspace, release or debug, and returns their folder. The
/// whole workspace, not `-p <service>`: cargo unifies dependency features over the packages a
/// command selects, so building a subset would rebuild shared dependencies with other
/// features each time the selection changes.
pub fn build_binaries(debug: bool) -> anyhow::Result<PathBuf> {
    let mut build = vec!["build", "--workspace", "--bins"];
    if !debug {
        build.push("--release");
    }
    cargo(&build)?;
    Ok(target_dir().join(if debug { "debug" } else { "release" }))
}

/// Makes PostgreSQL (5432), Redis (6379) and NATS with JetStream (4222) answer on loopback.
pub fn ensure_backing_services() -> anyhow::Result<()> {
    ensure_postgres().context("PostgreSQL")?;
    ensure_redis().context("Redis")?;
    ensure_nats().context("NATS")?;
    Ok(())
}

/// Where Debian's package puts HAProxy.
const HAPROXY: &str = "/usr/sbin/haproxy";

/// The HAProxy binary, or an error saying how to get it. Installs nothing: tests and the
/// simulator start stacks through this, and only `stack` sets the host up
/// ([`ensure_haproxy`]).
pub fn haproxy() -> anyhow::Result<PathBuf> {
    let path = PathBuf::from(HAPROXY);
    if !path.exists() {
        bail!(
            "haproxy not found at {HAPROXY}: `cargo run --bin stack -- test` (or `stack up`) installs it, \
             or run `apt-get install haproxy`"
        );
    }
    Ok(path)
}

/// The HAProxy binary, installed from Debian's packages if missing: `stack`'s host setup.
pub fn ensure_haproxy() -> anyhow::Result<PathBuf> {
    if !Path::new(HAPROXY).exists() {
        apt_install(&["haproxy"])?;
    }
    haproxy()
}

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
    /// Logs, pid files and the rendered HAProxy config.
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
    /// each stack.
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

/// The service names, in start order.
/// notifier's committed example webhook key (`notifier::webhook::secret::EXAMPLE_SECRET_KEY`),
/// which notifier accepts only with `ALLOW_EXAMPLE_SECRETS=true`: local stacks only.
const NOTIFIER_EXAMPLE_SECRET_KEY: &str = "example:bm90aWZpZXItZXhhbXBsZS1rZXktbm90LXNlY3JldCE=";

pub const SERVICES: [&str; 5] = ["inventory", "payment", "seat-lock", "admission", "notifier"];

impl StackConfig {
    /// The local stack on its standard ports (services 50051-50055, metrics 9101-9105, health
    /// ports 9201-9205, internal listeners of seat-lock and payment 50062 and 50064, load
    /// balancer 8080) with a fresh pass key.
    pub fn local(state_dir: PathBuf, bin_dir: PathBuf) -> Self {
        let (pass_signing_keys, pass_verify_keys) = ticketing_proto::pass::generate_signing_key(&format!(
            "k{}",
            chrono::Utc::now().format("%Y%m%d%H%M%S")
        ));
        let ports = [
            ("admission", 50051),
            ("seat-lock", 50052),
            ("inventory", 50053),
            ("payment", 50054),
            ("notifier", 50055),
        ];
        Self {
            auth_dir: crate::identity::auth_dir(&state_dir),
            state_dir,
            bin_dir,
            services: SERVICES
                .iter()
                .map(|name| {
                    let grpc_port = ports.iter().find(|(n, _)| n == name).map_or(0, |(_, p)| *p);
                    let internal_port = if INTERNAL_SERVICES.contains(name) { grpc_port + 10 } else { 0 };
                    ServiceProcess {
                        name,
                        grpc_port,
                        metrics_port: grpc_port - 50051 + 9101,
                        health_port: grpc_port - 50051 + 9201,
                        internal_port,
                    }
                })
                .collect(),
            lb_port: 8080,
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
        }
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

    /// The slowest card the simulator pays with for this stack's hold TTL, in whole seconds.
    fn slowest_card_secs(&self) -> u64 {
        crate::flashsale::default_slow_pay_ms(self.hold_ttl_secs).div_ceil(1000)
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
                    (self.slowest_card_secs() + 2 * WINDOW_MARGIN_SECS).to_string(),
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
                        (self.slowest_card_secs() + WINDOW_MARGIN_SECS).to_string(),
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

/// Margin of the stack's checkout grace and recovery windows over the slowest card.
const WINDOW_MARGIN_SECS: u64 = 10;

/// A started stack. Dropping it leaves the processes running; call [`Stack::stop`].
pub struct Stack {
    pub config: StackConfig,
    /// The stack's identity provider: mints the tokens its callers send.
    pub identity: std::sync::Arc<crate::identity::Identity>,
    /// The services as this process started them (while no [`supervisor::Supervisor`] has
    /// them), so that [`Stack::stop`] reaps them.
    children: std::sync::Mutex<Vec<(&'static str, Child)>>,
}

impl Stack {
    /// Starts the five services and HAProxy, then waits until all report SERVING.
    pub async fn start(config: StackConfig) -> anyhow::Result<Self> {
        let logs = config.state_dir.join("logs");
        let pids = config.state_dir.join("pids");
        fs::create_dir_all(&logs)?;
        fs::create_dir_all(&pids)?;
        config.certs()?;
        let haproxy = haproxy()?;
        // The token key and JWKS exist before any service reads AUTH_JWKS.
        let identity = std::sync::Arc::new(config.identity()?);
        // The event stream is infrastructure: made here, from the mesh's one definition,
        // before any service (which refuses to start without it).
        setup_stream(&config.nats_url, &config.nats_prefix, 1, config.stream_max_bytes).await?;
        let mut children = Vec::new();
        for service in &config.services {
            // A fresh log per start of the stack; restarts append to it.
            fs::File::create(logs.join(format!("{}.log", service.name)))?;
            children.push((service.name, config.spawn(service)?));
        }
        let cfg = config.state_dir.join("haproxy.cfg");
        fs::copy(workspace_root().join("k8s/base/haproxy/haproxy.cfg"), &cfg)?;
        let log = fs::File::create(logs.join("haproxy.log"))?;
        let mut command = Command::new(haproxy);
        command
            .arg("-db")
            .arg("-f")
            .arg(&cfg)
            .env("LB_ADDR", format!("127.0.0.1:{}", config.lb_port))
            .envs(config.services.iter().flat_map(|s| {
                let name = s.name.replace('-', "_").to_uppercase();
                [
                    (format!("{name}_ADDR"), format!("127.0.0.1:{}", s.grpc_port)),
                    (format!("{name}_HEALTH_PORT"), s.health_port.to_string()),
                ]
            }))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let child = spawn_detached(&mut command).context("cannot start haproxy")?;
        fs::write(pids.join("haproxy.pid"), child.id().to_string())?;

        let stack = Self { config, identity, children: std::sync::Mutex::new(children) };
        stack.wait_healthy().await?;
        Ok(stack)
    }

    async fn wait_healthy(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + HEALTH_TIMEOUT;
        let mut targets: Vec<(String, u16)> =
            self.config.services.iter().map(|s| (s.name.to_owned(), s.grpc_port)).collect();
        targets.push(("load balancer".into(), self.config.lb_port));
        for (name, port) in targets {
            loop {
                self.fail_if_any_died()?;
                match health(port).await {
                    Ok(true) => break,
                    _ if Instant::now() > deadline => {
                        bail!(
                            "{name} is not SERVING on port {port} after {HEALTH_TIMEOUT:?}; see {}",
                            self.config.state_dir.join("logs").display()
                        )
                    }
                    _ => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        }
        Ok(())
    }

    /// Fails with the end of its log when a process of the stack has exited.
    fn fail_if_any_died(&self) -> anyhow::Result<()> {
        for (name, pid, running) in status(&self.config.state_dir) {
            if !running {
                let log = self.config.state_dir.join("logs").join(format!("{name}.log"));
                let text = fs::read_to_string(&log).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(15).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                bail!(
                    "{name} (pid {pid}) exited during start-up; end of {}:\n{}",
                    log.display(),
                    tail.join("\n")
                );
            }
        }
        Ok(())
    }

    /// Stops every process of the stack.
    pub fn stop(&self) -> anyhow::Result<()> {
        stop(&self.config.state_dir)?;
        for (_, child) in self.take_children() {
            let mut child = child;
            let _ = child.try_wait();
        }
        Ok(())
    }

    /// Hands the service processes to a supervisor, which restarts any that dies; give them
    /// back with [`supervisor::Supervisor::stop`].
    pub fn supervise(&self) -> supervisor::Supervisor {
        supervisor::Supervisor::start(self.config.clone(), self.take_children())
    }

    fn take_children(&self) -> Vec<(&'static str, Child)> {
        self.children.lock().map(|mut c| std::mem::take(&mut *c)).unwrap_or_default()
    }

    fn adopt(&self, children: Vec<(&'static str, Child)>) {
        if let Ok(mut mine) = self.children.lock() {
            mine.extend(children);
        }
    }
}

/// Starts `command` in its own process group, so a Ctrl-C at the terminal that ran
/// `stack up` does not reach the stack.
fn spawn_detached(command: &mut Command) -> std::io::Result<Child> {
    use std::os::unix::process::CommandExt;
    command.process_group(0).spawn()
}

/// Asks `grpc.health.v1.Health/Check` on `127.0.0.1:port` whether the server is SERVING.
pub async fn health(port: u16) -> anyhow::Result<bool> {
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };
    let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))?
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(2))
        .connect()
        .await?;
    let response = HealthClient::new(channel).check(HealthCheckRequest { service: String::new() }).await?;
    Ok(response.into_inner().status == ServingStatus::Serving as i32)
}

/// Whether `pid` runs (exists and is not a zombie).
pub fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| stat.contains(") Z "))
}

/// Sends signal `name` (`TERM`, `KILL`, ...) to `pid`.
pub fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill").arg(format!("-{name}")).arg(pid.to_string()).stderr(Stdio::null()).status();
}

/// The pid files under `state_dir`, as (name, pid).
pub fn pid_files(state_dir: &Path) -> Vec<(String, u32)> {
    let Ok(entries) = fs::read_dir(state_dir.join("pids")) else { return Vec::new() };
    let mut pids: Vec<(String, u32)> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.path().file_stem()?.to_string_lossy().into_owned();
            let pid = fs::read_to_string(entry.path()).ok()?.trim().parse().ok()?;
            Some((name, pid))
        })
        .collect();
    pids.sort();
    pids
}

/// SIGTERM to every process with a pid file under `state_dir`, SIGKILL to those still
/// running after [`STOP_TIMEOUT`]; removes the pid files.
pub fn stop(state_dir: &Path) -> anyhow::Result<()> {
    let pids = pid_files(state_dir);
    for (_, pid) in &pids {
        if alive(*pid) {
            signal(*pid, "TERM");
        }
    }
    let deadline = Instant::now() + STOP_TIMEOUT;
    for (name, pid) in &pids {
        while alive(*pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        if alive(*pid) {
            eprintln!("{name} (pid {pid}) did not stop within {STOP_TIMEOUT:?}; killing it");
            signal(*pid, "KILL");
        }
        let _ = fs::remove_file(state_dir.join("pids").join(format!("{name}.pid")));
    }
    Ok(())
}

/// Whether each process with a pid file is running, as (name, pid, running).
pub fn status(state_dir: &Path) -> Vec<(String, u32, bool)> {
    pid_files(state_dir).into_iter().map(|(name, pid)| (name, pid, alive(pid))).collect()
}

/// Creates or updates the event stream of `prefix` (`StreamSpec::for_prefix`) with
/// `replicas` copies keeping at most `max_bytes`: `stack stream-setup`, and the first step of
/// [`Stack::start`].
pub async fn setup_stream(
    nats_url: &str,
    prefix: &str,
    replicas: usize,
    max_bytes: i64,
) -> anyhow::Result<()> {
    let spec = service_runtime::bus::StreamSpec::for_prefix(prefix)
        .with_replicas(replicas)
        .with_max_bytes(max_bytes);
    service_runtime::bus::setup_stream(nats_url, &spec)
        .await
        .with_context(|| format!("cannot create the event stream {} on {nats_url}", spec.name))?;
    Ok(())
}

/// Gives the local stack a clean slate: a fresh `ticketing` database, no JetStream stream
/// and no Redis keys of the local prefix, so a run never depends on an earlier one.
pub async fn reset_local_state(config: &StackConfig) -> anyhow::Result<()> {
    use sea_orm::{ConnectionTrait, Database};
    let (server, database) =
        config.database_url.rsplit_once('/').context("DATABASE_URL has no database name")?;
    let admin = Database::connect(format!("{server}/postgres")).await?;
    admin.execute_unprepared(&format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)")).await?;
    admin.execute_unprepared(&format!("CREATE DATABASE {database}")).await?;
    admin.close().await?;

    let nats = async_nats::connect(&config.nats_url).await?;
    let _ = async_nats::jetstream::new(nats).delete_stream(format!("{}_events", config.nats_prefix)).await;

    use fred::prelude::*;
    let redis = Client::new(fred::types::config::Config::from_url(&config.redis_url)?, None, None, None);
    redis.init().await?;
    if config.redis_prefix.is_empty() {
        bail!("refusing to delete every Redis key: the local stack needs a Redis prefix");
    }
    let pattern = format!("{}*", config.redis_prefix);
    let mut cursor = "0".to_owned();
    loop {
        let (next, keys): (String, Vec<String>) = redis
            .custom(
                fred::cmd!("SCAN"),
                vec![cursor.clone(), "MATCH".into(), pattern.clone(), "COUNT".into(), "1000".into()],
            )
            .await?;
        if !keys.is_empty() {
            let _: i64 = redis.del(keys).await?;
        }
        if next == "0" {
            break;
        }
        cursor = next;
    }
    redis.quit().await?;
    Ok(())
}
