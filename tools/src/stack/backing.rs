//! Private backing servers: Redis, NATS (JetStream) and a throwaway Postgres cluster, each on
//! a free port with its data under one folder, so a chaos run or a failure test can kill and
//! restart them without touching the machine's shared servers that other tests and sessions
//! use.
//!
//! - [`PrivateRedis`] keeps nothing across a restart (no RDB, no AOF), as a cache node that
//!   lost its memory.
//! - [`PrivateNats`] keeps its JetStream store directory across a restart, as a real cluster
//!   node keeps its disk.
//! - [`PrivatePostgres`] is a cluster made by `initdb` (trust auth, as the unprivileged
//!   `postgres` user when this runs as root, since `initdb` refuses root), stopped with
//!   `pg_ctl -m immediate` (a crash: recovery from the WAL at the next start).

use std::{
    fs,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{Context, bail};

use super::free_port;
use test_support::testenv::eventually;

/// How long a private server may take to answer after being started (Postgres replays its
/// WAL after an immediate stop).
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// `max_connections` of the private Postgres: payment's and inventory's pools, the notifier,
/// the simulator's checks and restarts overlapping with connections not yet timed out.
const POSTGRES_MAX_CONNECTIONS: u32 = 300;

/// Starts `command` in its own process group (a Ctrl-C at the terminal does not reach it)
/// with its output appended to `log`.
fn spawn_logged(command: &mut Command, log: &Path) -> anyhow::Result<Child> {
    let log = fs::OpenOptions::new().create(true).append(true).open(log)?;
    Ok(command.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log).process_group(0).spawn()?)
}

fn kill_child(child: &mut Option<Child>) {
    if let Some(mut child) = child.take() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// A `redis-server` on a free port that keeps nothing on disk.
pub struct PrivateRedis {
    pub port: u16,
    dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl PrivateRedis {
    /// Starts it with its working directory `dir` and its log at `log`.
    pub async fn start(dir: PathBuf, log: PathBuf) -> anyhow::Result<Self> {
        fs::create_dir_all(&dir)?;
        let mut redis = Self { port: free_port()?, dir, log, child: None };
        redis.restart().await?;
        Ok(redis)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The server's pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Starts the server (again) on the same port, empty.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        let port = self.port.to_string();
        let mut command = Command::new("redis-server");
        command.args(["--port", &port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]);
        command.arg("--dir").arg(&self.dir);
        self.child = Some(spawn_logged(&mut command, &self.log).context("cannot start redis-server")?);
        let port = self.port;
        let up =
            eventually(START_TIMEOUT, || async move { super::prereq::answers(port).then_some(()) }).await;
        up.context("private redis-server did not answer")
    }

    /// Kills the server (SIGKILL: everything it held is gone).
    pub fn kill(&mut self) {
        kill_child(&mut self.child);
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A private `nats-server` with JetStream on a free port and its own store directory, so a
/// test can stop and restart it without touching the machine's shared NATS.
pub struct PrivateNats {
    pub port: u16,
    store: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl PrivateNats {
    /// Starts it with its JetStream store in `store` and its log at `log`.
    pub async fn start(store: PathBuf, log: PathBuf) -> anyhow::Result<Self> {
        fs::create_dir_all(&store)?;
        let mut nats = Self { port: free_port()?, store, log, child: None };
        nats.restart().await?;
        Ok(nats)
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The server's pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Starts the server (again) on the same port and store directory.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        let mut command = Command::new("/usr/sbin/nats-server");
        command.args(["-a", "127.0.0.1", "-p", &self.port.to_string(), "-js", "-sd"]).arg(&self.store);
        self.child = Some(spawn_logged(&mut command, &self.log).context("cannot start nats-server")?);
        let url = self.url();
        let up = eventually(START_TIMEOUT, || {
            let url = url.clone();
            async move { async_nats::connect(url).await.ok().map(|_| ()) }
        })
        .await;
        up.context("private nats-server did not answer")
    }

    /// Kills the server (SIGKILL: a crash, not a clean shutdown).
    pub fn kill(&mut self) {
        kill_child(&mut self.child);
    }

    /// Kills the server and deletes its store.
    pub fn remove(&mut self) {
        self.kill();
        let _ = fs::remove_dir_all(&self.store);
    }
}

impl Drop for PrivateNats {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A throwaway Postgres cluster on a free port (loopback only, trust auth).
pub struct PrivatePostgres {
    pub port: u16,
    bin: PathBuf,
    data: PathBuf,
    /// Where its Unix socket goes (the data folder's parent, a short path).
    socket_dir: PathBuf,
    log: PathBuf,
    /// The user the server runs as, when this process is root: (uid, gid) of `postgres`.
    run_as: Option<(u32, u32)>,
    running: bool,
}

impl PrivatePostgres {
    /// Creates the cluster in `data` (which must not exist yet), starts it and creates
    /// `databases`.
    pub async fn start(data: PathBuf, log: PathBuf, databases: &[&str]) -> anyhow::Result<Self> {
        let bin = postgres_bin_dir()?;
        let socket_dir = data.parent().context("the data folder has no parent")?.to_path_buf();
        fs::create_dir_all(&data)?;
        fs::OpenOptions::new().create(true).append(true).open(&log)?;
        let run_as = if is_root() { Some(user_ids("postgres")?) } else { None };
        if let Some((uid, gid)) = run_as {
            for path in [&socket_dir, &data, &log] {
                std::os::unix::fs::chown(path, Some(uid), Some(gid))?;
            }
        }
        let mut postgres = Self { port: free_port()?, bin, data, socket_dir, log, run_as, running: false };
        let mut initdb = postgres.command("initdb");
        initdb.args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync", "-D"]).arg(&postgres.data);
        run_quietly(initdb, "initdb").await?;
        postgres.restart().await?;
        let admin = sea_orm::Database::connect(postgres.url("postgres")).await?;
        for database in databases {
            sea_orm::ConnectionTrait::execute_unprepared(&admin, &format!("CREATE DATABASE {database}"))
                .await?;
        }
        admin.close().await?;
        Ok(postgres)
    }

    /// `postgres://postgres@127.0.0.1:<port>/<database>`.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// The postmaster's pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        let pid = fs::read_to_string(self.data.join("postmaster.pid")).ok()?;
        pid.lines().next()?.trim().parse().ok()
    }

    fn command(&self, program: &str) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(self.bin.join(program));
        command.stdin(Stdio::null()).process_group(0);
        if let Some((uid, gid)) = self.run_as {
            command.uid(uid).gid(gid);
        }
        command
    }

    /// Starts the server (again) and waits until it accepts connections.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections={POSTGRES_MAX_CONNECTIONS} -c fsync=off",
            self.port,
            self.socket_dir.display()
        );
        let mut start = self.command("pg_ctl");
        start.args(["start", "-w", "-t", &START_TIMEOUT.as_secs().to_string(), "-D"]).arg(&self.data);
        start.arg("-l").arg(&self.log).args(["-o", &options]);
        // pg_ctl's own output says little; the server logs to `log`.
        run_quietly(start, "pg_ctl start").await?;
        self.running = true;
        Ok(())
    }

    /// Stops the server at once, as a crash would (`pg_ctl stop -m immediate`): no
    /// checkpoint, connections cut, WAL replayed at the next start.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        let mut stop = self.command("pg_ctl");
        stop.args(["stop", "-m", "immediate", "-w", "-D"]).arg(&self.data);
        run_quietly(stop, "pg_ctl stop").await?;
        self.running = false;
        Ok(())
    }

    /// Stops the server and deletes its data.
    pub async fn remove(&mut self) {
        if self.running {
            let _ = self.kill().await;
        }
        let _ = fs::remove_dir_all(&self.data);
    }
}

impl Drop for PrivatePostgres {
    /// Last resort when [`PrivatePostgres::remove`] was not called: SIGQUIT to the postmaster
    /// is the immediate shutdown.
    fn drop(&mut self) {
        if self.running
            && let Some(pid) = self.pid()
        {
            super::signal(pid, "QUIT");
        }
    }
}

/// The newest `/usr/lib/postgresql/<version>/bin` (Debian's layout).
fn postgres_bin_dir() -> anyhow::Result<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .context("no /usr/lib/postgresql: install postgresql")?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version = entry.file_name().to_string_lossy().parse().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .filter(|(_, bin)| bin.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).context("no initdb under /usr/lib/postgresql/*/bin")
}

fn is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| status.lines().find(|l| l.starts_with("Uid:")).map(str::to_owned))
        .and_then(|line| line.split_whitespace().nth(1).map(|uid| uid == "0"))
        .unwrap_or(false)
}

/// (uid, gid) of a local user, from `/etc/passwd`.
fn user_ids(user: &str) -> anyhow::Result<(u32, u32)> {
    let passwd = fs::read_to_string("/etc/passwd")?;
    let line = passwd
        .lines()
        .find(|l| l.split(':').next() == Some(user))
        .with_context(|| format!("no user {user} to run Postgres as (initdb refuses root)"))?;
    let fields: Vec<&str> = line.split(':').collect();
    Ok((fields.get(2).context("uid")?.parse()?, fields.get(3).context("gid")?.parse()?))
}

/// Runs a command to its end; on failure, its output is the error.
async fn run_quietly(mut command: tokio::process::Command, what: &str) -> anyhow::Result<()> {
    let output = command.output().await.with_context(|| format!("cannot run {what}"))?;
    if !output.status.success() {
        bail!(
            "{what} failed with {}: {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// Redis, NATS and Postgres of one private stack, under `<dir>/data` with their logs in
/// `<dir>/logs`.
pub struct PrivateBacking {
    pub redis: PrivateRedis,
    pub nats: PrivateNats,
    pub postgres: PrivatePostgres,
    data: PathBuf,
}

impl PrivateBacking {
    /// The database the private stack's services share.
    pub const DATABASE: &'static str = "ticketing";

    pub async fn start(dir: &Path) -> anyhow::Result<Self> {
        let (data, logs) = (dir.join("data"), dir.join("logs"));
        fs::create_dir_all(&logs)?;
        if data.exists() {
            fs::remove_dir_all(&data)?;
        }
        Ok(Self {
            redis: PrivateRedis::start(data.join("redis"), logs.join("redis.log")).await?,
            nats: PrivateNats::start(data.join("nats"), logs.join("nats.log")).await?,
            postgres: PrivatePostgres::start(
                data.join("pg").join("data"),
                logs.join("postgres.log"),
                &[Self::DATABASE],
            )
            .await?,
            data,
        })
    }

    /// Stops all three and deletes their data (the logs stay).
    pub async fn remove(&mut self) {
        self.redis.kill();
        self.nats.remove();
        self.postgres.remove().await;
        let _ = fs::remove_dir_all(&self.data);
    }
}
