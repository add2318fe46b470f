//! Prerequisites: PostgreSQL, Redis and NATS (JetStream) answering, and HAProxy installed.
//!
//! A backing service whose URL is the standard loopback one is installed from Debian's
//! packages and started where it is missing; one given by URL elsewhere (`--database-url`,
//! `--redis-url`, `--nats-url`) must answer already. Whatever cannot be had ends with what to
//! install, e.g. "haproxy not found: apt-get install haproxy", never with an exit status
//! of apt-get alone.

use std::{
    fs,
    net::{TcpStream, ToSocketAddrs},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};

/// How long a backing service may take to answer after being started.
const BACKING_START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long one connection attempt to a server may take.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// Whether something accepts TCP connections on `127.0.0.1:port`.
pub fn answers(port: u16) -> bool {
    answers_at("127.0.0.1", port)
}

/// Whether something accepts TCP connections on `host:port`.
pub fn answers_at(host: &str, port: u16) -> bool {
    let Ok(addrs) = (host, port).to_socket_addrs() else { return false };
    addrs.into_iter().any(|addr| TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT).is_ok())
}

/// `(host, port)` of a `scheme://[user@]host[:port][/path]` URL, with `default_port` when it
/// names none.
pub fn host_port(url: &str, default_port: u16) -> anyhow::Result<(String, u16)> {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
    if host_port.is_empty() {
        bail!("{url}: no host");
    }
    if let Some(ipv6) = host_port.strip_prefix('[') {
        let (host, port) = ipv6.split_once(']').with_context(|| format!("{url}: unclosed ["))?;
        let port = port.strip_prefix(':').map(str::parse).transpose()?.unwrap_or(default_port);
        return Ok((host.to_owned(), port));
    }
    match host_port.rsplit_once(':') {
        Some((host, port)) => {
            Ok((host.to_owned(), port.parse().with_context(|| format!("{url}: bad port {port}"))?))
        }
        None => Ok((host_port.to_owned(), default_port)),
    }
}

fn is_loopback(host: &str) -> bool {
    matches!(host, "127.0.0.1" | "localhost" | "::1")
}

fn has_program(path: &str) -> bool {
    Path::new(path).exists()
        || Command::new("sh")
            .args(["-c", &format!("command -v {path}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
}

fn is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| status.lines().find(|l| l.starts_with("Uid:")).map(str::to_owned))
        .is_some_and(|line| line.split_whitespace().nth(1) == Some("0"))
}

/// Runs a command to its end; on failure the error is its last line of output.
fn run(program: &str, args: &[&str]) -> anyhow::Result<()> {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {program}"))?;
    if !output.status.success() {
        let text =
            format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        let last = text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("no output");
        bail!("`{program} {}` failed ({}): {last}", args.join(" "), output.status);
    }
    Ok(())
}

/// Makes `program` exist: installs `package` from Debian's packages when it is missing and
/// this runs as root (refreshing the package lists once if the first try fails). Fails with
/// what to install otherwise.
fn require(program: &str, package: &str) -> anyhow::Result<()> {
    if has_program(program) {
        return Ok(());
    }
    let name = Path::new(program).file_name().map_or(program.into(), |n| n.to_string_lossy());
    if !is_root() {
        bail!("{name} not found: apt-get install {package} (as root), then run this again");
    }
    eprintln!("{name} not found: installing {package} from Debian's packages");
    let args = ["install", "-y", "-q", "--no-install-recommends", package];
    let installed = run("apt-get", &args).or_else(|_| {
        run("apt-get", &["update", "-q"])?;
        run("apt-get", &args)
    });
    match installed {
        Ok(()) if has_program(program) => Ok(()),
        Ok(()) => bail!("{name} not found after installing {package}: apt-get install {package}"),
        Err(error) => {
            bail!("{name} not found: apt-get install {package} (installing it here failed: {error:#})")
        }
    }
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
    require("pg_ctlcluster", "postgresql")?;
    let versions: Vec<String> = fs::read_dir("/etc/postgresql")
        .context("no /etc/postgresql: apt-get install postgresql")?
        .filter_map(|entry| entry.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    let version = versions.iter().max().context("no PostgreSQL cluster configured: pg_createcluster")?;
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
    require("redis-server", "redis-server")?;
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
    require("/usr/sbin/nats-server", "nats-server")?;
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

/// Makes PostgreSQL (5432), Redis (6379) and NATS with JetStream (4222) answer on loopback.
pub fn ensure_backing_services() -> anyhow::Result<()> {
    ensure_postgres().context("PostgreSQL")?;
    ensure_redis().context("Redis")?;
    ensure_nats().context("NATS")?;
    Ok(())
}

/// The backing servers a stack uses, by URL.
#[derive(Debug, Clone)]
pub struct BackingUrls<'a> {
    pub database: &'a str,
    pub redis: &'a str,
    pub nats: &'a str,
}

/// Makes the servers at `urls` answer: one on its standard loopback port is installed and
/// started here if needed ([`ensure_backing_services`]); any other must answer already.
pub fn ensure_backing_at(urls: &BackingUrls<'_>) -> anyhow::Result<()> {
    type Ensure = fn() -> anyhow::Result<()>;
    let servers: [(&str, &str, u16, Ensure); 3] = [
        ("PostgreSQL", urls.database, 5432, ensure_postgres),
        ("Redis", urls.redis, 6379, ensure_redis),
        ("NATS", urls.nats, 4222, ensure_nats),
    ];
    for (name, url, standard_port, ensure) in servers {
        let (host, port) = host_port(url, standard_port)?;
        if is_loopback(&host) && port == standard_port {
            ensure().context(name)?;
        } else if !answers_at(&host, port) {
            bail!(
                "{name} at {url} does not answer on {host}:{port}: start it, or leave the URL out to use a local one"
            );
        }
    }
    Ok(())
}

/// Where Debian's package puts HAProxy.
const HAPROXY: &str = "/usr/sbin/haproxy";

/// The HAProxy binary, or an error saying how to get it. Installs nothing: tests and the
/// simulator start stacks through [`crate::stack::Stack::start`], and only the `stack`
/// commands set the host up ([`ensure_haproxy`]).
pub fn haproxy() -> anyhow::Result<PathBuf> {
    if !std::path::Path::new(HAPROXY).exists() {
        bail!(
            "haproxy not found at {HAPROXY}: `cargo run --bin stack -- test` (or `stack up`) installs it, \
             or run `apt-get install haproxy`"
        );
    }
    Ok(PathBuf::from(HAPROXY))
}

/// The HAProxy binary, installed from Debian's packages if missing: `stack`'s host setup.
pub fn ensure_haproxy() -> anyhow::Result<PathBuf> {
    let path = PathBuf::from("/usr/sbin/haproxy");
    require("/usr/sbin/haproxy", "haproxy")?;
    Ok(path)
}

/// Prometheus (Debian's `prometheus`, which brings `promtool` too), installed if missing:
/// `tools/tests/prometheus.rs` scrapes the local stack with it.
pub fn ensure_prometheus() -> anyhow::Result<()> {
    require("/usr/bin/prometheus", "prometheus")
}

/// PyYAML, installed with pip if missing: `tools/k8s/observability_check.py` reads the
/// PrometheusRule with it, for `tools/tests/prometheus.rs` and the offline check.
pub fn ensure_pyyaml() -> anyhow::Result<()> {
    if run("python3", &["-c", "import yaml"]).is_ok() {
        return Ok(());
    }
    run("python3", &["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "pyyaml"])
        .map_err(|error| anyhow::anyhow!("PyYAML not found: python3 -m pip install pyyaml ({error:#})"))
}

/// The oldest Node.js the TypeScript client's pinned packages support.
const NODE_MAJOR: u32 = 20;

/// What the generated clients' tests need (`clients/check`, `clients/generate --check`, run by
/// `tools/tests/clients.rs`): python3 with venv (installed from Debian's packages if missing),
/// Node.js 20+ and npm. Debian 12's own nodejs is 18, too old, so a missing or old node (or
/// npm, which comes with it) is not installed here but named with what to install. The
/// pinned Python and npm packages are installed by the scripts themselves (clients/lib.sh).
pub fn ensure_client_toolchains() -> anyhow::Result<()> {
    require("python3", "python3")?;
    if run("python3", &["-c", "import ensurepip, venv"]).is_err() {
        require_module_package("python3-venv")?;
    }
    let version = Command::new("node").arg("--version").output().ok().filter(|o| o.status.success());
    let major = version.as_ref().and_then(|o| {
        String::from_utf8_lossy(&o.stdout)
            .trim()
            .trim_start_matches('v')
            .split('.')
            .next()?
            .parse::<u32>()
            .ok()
    });
    match major {
        Some(major) if major >= NODE_MAJOR => {}
        Some(major) => bail!(
            "node {major} is too old for clients/typescript: install Node.js {NODE_MAJOR} or newer (NodeSource's nodejs package)"
        ),
        None => bail!(
            "node not found: install Node.js {NODE_MAJOR} or newer with npm (NodeSource's nodejs package; Debian 12's is 18)"
        ),
    }
    if !has_program("npm") {
        // Not installed here either: Debian's npm would pull in Debian's older nodejs.
        bail!("npm not found: it comes with NodeSource's nodejs {NODE_MAJOR}+ package");
    }
    Ok(())
}

/// Installs a Debian package that brings a Python module (no program to look for), as root.
fn require_module_package(package: &str) -> anyhow::Result<()> {
    if !is_root() {
        bail!("python3 cannot make a venv: apt-get install {package} (as root), then run this again");
    }
    eprintln!("python3 cannot make a venv: installing {package} from Debian's packages");
    let args = ["install", "-y", "-q", "--no-install-recommends", package];
    run("apt-get", &args)
        .or_else(|_| {
            run("apt-get", &["update", "-q"])?;
            run("apt-get", &args)
        })
        .map_err(|error| anyhow::anyhow!("python3 cannot make a venv: apt-get install {package} ({error:#})"))
}

#[cfg(test)]
mod tests {
    use super::host_port;

    #[test]
    fn urls_give_their_host_and_port() {
        let cases = [
            ("postgres://postgres@127.0.0.1:5432/ticketing", ("127.0.0.1", 5432)),
            ("postgres://u:p@db.example:6543/x?sslmode=require", ("db.example", 6543)),
            ("redis://127.0.0.1", ("127.0.0.1", 6379)),
            ("nats://[::1]:4223", ("::1", 4223)),
            ("nats://nats", ("nats", 6379)),
        ];
        for (url, (host, port)) in cases {
            assert_eq!(host_port(url, 6379).ok(), Some((host.to_owned(), port)), "{url}");
        }
        assert!(host_port("redis://", 6379).is_err());
        assert!(host_port("redis://h:x", 6379).is_err());
    }
}
