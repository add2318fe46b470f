//! A started stack as processes: [`Stack::start`] starts the five services and HAProxy with
//! their logs and pid files under the state folder and waits until each answers SERVING;
//! [`stop`] stops them by pid, whoever started them.

use std::{
    fs,
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};

use super::{StackConfig, data, prereq, supervisor, workspace_root};

/// How long the services may take to report SERVING (migrations, first connections).
const HEALTH_TIMEOUT: Duration = Duration::from_secs(60);
/// How long `stop` waits after SIGTERM before SIGKILL; longer than the services' drain grace.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// How often [`Progress::Print`] repeats what is still awaited.
const PROGRESS_EVERY: Duration = Duration::from_secs(3);

/// The load balancer's name in progress lines.
const LOAD_BALANCER: &str = "load balancer";

/// Whether [`Stack::start_with`] tells how the wait for health goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Nothing (tests).
    Quiet,
    /// A line on stderr when each process is SERVING, and every few seconds which are not yet.
    Print,
}

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
        Self::start_with(config, Progress::Quiet).await
    }

    /// [`Stack::start`], telling how the wait goes when `progress` says so. Records the
    /// stack's ports and servers in `<state>/stack.json` for `stack status` and `stack logs`.
    pub async fn start_with(config: StackConfig, progress: Progress) -> anyhow::Result<Self> {
        let logs = config.state_dir.join("logs");
        let pids = config.state_dir.join("pids");
        fs::create_dir_all(&logs)?;
        fs::create_dir_all(&pids)?;
        config.certs()?;
        let haproxy = prereq::haproxy()?;
        // The token key and JWKS exist before any service reads AUTH_JWKS.
        let identity = std::sync::Arc::new(config.identity()?);
        // The event stream is infrastructure: made here, from the mesh's one definition,
        // before any service (which refuses to start without it).
        data::setup_stream(&config.nats_url, &config.nats_prefix, 1, config.stream_max_bytes).await?;
        data::Record::of(&config).write(&config.state_dir)?;
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
        stack.wait_healthy(progress).await?;
        Ok(stack)
    }

    /// Waits until every service and then the load balancer answer SERVING (the load
    /// balancer's empty-name health is SERVING only once every service has a replica up).
    async fn wait_healthy(&self, progress: Progress) -> anyhow::Result<()> {
        let started = Instant::now();
        let deadline = started + HEALTH_TIMEOUT;
        let mut waiting: Vec<(String, u16)> =
            self.config.services.iter().map(|s| (s.name.to_owned(), s.grpc_port)).collect();
        waiting.push((LOAD_BALANCER.into(), self.config.lb_port));
        let mut told = started;
        while !waiting.is_empty() {
            self.fail_if_any_died()?;
            // The load balancer last: its health means something once every service serves.
            let services_serving = waiting.len() == 1;
            let answers = futures::future::join_all(
                waiting
                    .iter()
                    .map(|(_, port)| async move { health(*port).await.is_ok_and(|serving| serving) }),
            )
            .await;
            let mut still = Vec::new();
            for ((name, port), serving) in waiting.into_iter().zip(answers) {
                let counted = serving && (name != LOAD_BALANCER || services_serving);
                if counted {
                    if progress == Progress::Print {
                        eprintln!(
                            "  {name:<13} SERVING on {port} after {:.1} s",
                            started.elapsed().as_secs_f64()
                        );
                    }
                } else {
                    still.push((name, port));
                }
            }
            waiting = still;
            if waiting.is_empty() {
                break;
            }
            if Instant::now() > deadline {
                let names: Vec<&str> = waiting.iter().map(|(name, _)| name.as_str()).collect();
                bail!(
                    "not SERVING after {HEALTH_TIMEOUT:?}: {}; see `stack logs` or {}",
                    names.join(", "),
                    self.config.state_dir.join("logs").display()
                )
            }
            if progress == Progress::Print && told.elapsed() >= PROGRESS_EVERY {
                told = Instant::now();
                let names: Vec<&str> = waiting.iter().map(|(name, _)| name.as_str()).collect();
                eprintln!("  waiting for {} ({:.0} s)", names.join(", "), started.elapsed().as_secs_f64());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
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

    pub(super) fn adopt(&self, children: Vec<(&'static str, Child)>) {
        if let Ok(mut mine) = self.children.lock() {
            mine.extend(children);
        }
    }
}

/// Starts `command` in its own process group, so a Ctrl-C at the terminal that ran
/// `stack up` does not reach the stack.
pub(super) fn spawn_detached(command: &mut Command) -> std::io::Result<Child> {
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
