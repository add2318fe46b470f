//! A real Prometheus (Debian's `prometheus` package) scrapes every service of the local stack
//! through a short sale, with the alerting rules of `k8s/observability/` loaded; afterwards
//! every series the dashboard and the rules query must be in it. A renamed metric or a
//! dashboard query of a series nobody records fails here.
//!
//! It also checks the per-zone series carry the sale's zones and that both stream consumers
//! have caught up (lag 0) once the sale is over. With `TICKETING_SCREENSHOT_DIR` set, it then
//! runs `tools/observability/screenshot.sh` against this Prometheus, which writes PNGs of the
//! dashboard's key queries there (headless Chromium; README "Operating a sale").
//!
//! Needs the service binaries (`cargo build --bins`), HAProxy, `prometheus` and PyYAML (the
//! README's test command and `tools/k8s/check.sh` install them).

#![allow(clippy::expect_used, clippy::unwrap_used)]

#[path = "failures/helpers.rs"]
#[allow(dead_code)] // this test uses the stack harness, not the failure checks
mod helpers;

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{Context, bail};
use helpers::start_stack;
use test_support::testenv::{TestEnv, eventually};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tools::{
    flashsale::{self, Mix, SimConfig},
    stack::workspace_root,
};

/// Series that only appear when something goes wrong, which a healthy sale never records
/// (metrics-rs registers a counter at its first increment). Each is still checked to be
/// recorded by the code (tools/k8s/observability_check.py) and by its alert's
/// `promtool test rules` case.
const TROUBLE_ONLY: &[(&str, &str)] = &[
    ("payment_ledger_unexpected_status_total", "a charge status the provider should never report"),
    ("payment_recovery_adopted_total", "only when a payment's owner dies mid-Pay"),
    ("payment_provider_timeouts_total", "only when the provider does not answer in time"),
    ("seat_lock_expired_holds_total", "holds live 600 s in the test stack, longer than the sale"),
    ("seat_lock_returned_seats_total", "only when a booking is refunded or cancelled"),
];

/// The Prometheus server this test started, stopped when dropped.
struct Prometheus(Child);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `GET path` on 127.0.0.1:`port`: the status line and the body.
async fn get(port: u16, path: &str) -> anyhow::Result<(String, String)> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let (head, body) = response.split_once("\r\n\r\n").context("no HTTP header end")?;
    Ok((head.lines().next().unwrap_or_default().to_owned(), body.to_owned()))
}

fn url_encode(query: &str) -> String {
    query
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'-' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// How many series `query` returns now.
async fn series_count(port: u16, query: &str) -> anyhow::Result<usize> {
    let (status, body) = get(port, &format!("/api/v1/query?query={}", url_encode(query))).await?;
    if !status.contains(" 200 ") {
        bail!("{query}: {status} {body}");
    }
    let json: serde_json::Value = serde_json::from_str(&body)?;
    Ok(json["data"]["result"].as_array().map_or(0, Vec::len))
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The dashboard's and rules' series (one a line) and the rules as a Prometheus rule file,
/// written into `dir` by the offline check's export mode.
fn export_observability(dir: &Path) -> anyhow::Result<Vec<String>> {
    let series = dir.join("series.txt");
    let status = Command::new("python3")
        .current_dir(workspace_root())
        .arg("tools/k8s/observability_check.py")
        .arg("--series")
        .arg(&series)
        .arg("--rules")
        .arg(dir.join("rules.json"))
        .status()
        .context("python3")?;
    if !status.success() {
        bail!("observability_check.py --series failed ({status}); PyYAML: pip install pyyaml");
    }
    Ok(std::fs::read_to_string(series)?.lines().map(str::to_owned).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_finds_every_series_the_dashboard_and_alerts_query() -> anyhow::Result<()> {
    let env = TestEnv::new().await?;
    let stack = start_stack(&env, None).await?;
    let dir = std::env::temp_dir().join(format!("ticketing-prometheus-{}", env.id));
    std::fs::create_dir_all(&dir)?;
    let series = export_observability(&dir)?;
    assert!(series.len() > 20, "{series:?}");

    // Every service's metrics port, scraped every second, with the alerting rules loaded (a
    // rule that does not load makes Prometheus exit, and the readiness wait below fail).
    let targets: String = stack
        .0
        .config
        .services
        .iter()
        .map(|s| {
            format!(
                "      - targets: ['127.0.0.1:{}']\n        labels: {{service: {}}}\n",
                s.metrics_port, s.name
            )
        })
        .collect();
    std::fs::write(
        dir.join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files: [rules.json]\n\
             scrape_configs:\n  - job_name: ticketing\n    static_configs:\n{targets}"
        ),
    )?;
    let port = free_port()?;
    let log = std::fs::File::create(dir.join("prometheus.log"))?;
    let _prometheus = Prometheus(
        Command::new("prometheus")
            .current_dir(&dir)
            .arg("--config.file=prometheus.yml")
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("prometheus not found: apt-get install prometheus")?,
    );
    let ready = eventually(Duration::from_secs(60), || async {
        get(port, "/-/ready").await.ok().filter(|(status, _)| status.contains(" 200 "))
    })
    .await;
    assert!(ready.is_some(), "Prometheus never got ready; see {}", dir.join("prometheus.log").display());
    let scraping_since = std::time::Instant::now();

    // A short sale with declined cards, releases and replays.
    let mut config = SimConfig::new(
        stack.0.config.lb_url(),
        env.database_url.clone(),
        dir.join("report"),
        stack.0.identity.clone(),
    );
    config.seats = 60;
    config.ga_capacity = 10;
    config.users = 150;
    config.admission_capacity = 40;
    config.open_in_secs = 2.0;
    config.mix =
        Mix { contention: 0.3, release: 0.05, let_expire: 0.0, declined: 0.1, slow: 0.0, replay: 0.1 };
    config.settle_secs = 20;
    config.max_secs = 240;
    config.progress = false;
    config.pids_dir = Some(stack.0.config.state_dir.join("pids"));
    let outcome = flashsale::run(config).await?;
    assert!(outcome.ok(), "the sale failed: {:?}", outcome.stages);

    // Every target was scraped.
    let up = eventually(Duration::from_secs(30), || async {
        series_count(port, "up == 1").await.ok().filter(|n| *n == stack.0.config.services.len())
    })
    .await;
    assert!(up.is_some(), "not every service was scraped");

    let mut missing = Vec::new();
    for name in &series {
        if TROUBLE_ONLY.iter().any(|(trouble, _)| trouble == name) {
            continue;
        }
        // A scrape or two after the sale's last update.
        let found = eventually(Duration::from_secs(15), || async {
            series_count(port, name).await.ok().filter(|n| *n > 0)
        })
        .await;
        if found.is_none() {
            missing.push(name.clone());
        }
    }
    assert!(
        missing.is_empty(),
        "series the dashboard or the alerts query but Prometheus never saw: {missing:?}"
    );
    // The rules loaded, and their recording series evaluate over the scraped data.
    for recorded in
        ["ticketing:grpc_server_handling_seconds:p99_rate5m", "ticketing:grpc_server_faults:ratio_rate5m"]
    {
        let found = eventually(Duration::from_secs(15), || async {
            series_count(port, recorded).await.ok().filter(|n| *n > 0)
        })
        .await;
        let (_, rules) = get(port, "/api/v1/rules").await?;
        assert!(found.is_some(), "{recorded} never evaluated; rules: {rules}");
    }
    // Each service's exporter serves the process series (metrics-process).
    assert_eq!(series_count(port, "process_resident_memory_bytes").await?, stack.0.config.services.len());
    // No service's method label took a value outside its served methods.
    assert_eq!(series_count(port, r#"grpc_server_handled_total{grpc_method="unknown"}"#).await?, 0);

    // Per zone: the sale's event has three seated zones and a general-admission one
    // (flashsale's setup); inventory reports free, held and sold seats of each, seat-lock the
    // seats sold in at least one.
    assert_eq!(series_count(port, "count by (event_id, zone) (inventory_zone_seats)").await?, 4);
    assert_eq!(series_count(port, "count by (event_id, zone, state) (inventory_zone_seats)").await?, 12);
    assert!(series_count(port, "sum by (event_id, zone) (seat_lock_sold_seats_total)").await? >= 1);
    assert_eq!(
        series_count(port, r#"seat_lock_sold_seats_total{zone=""}"#).await?,
        0,
        "a series without a zone"
    );
    // The consumers caught up with the stream after the sale.
    for lag in ["inventory_consumer_lag_messages", "notifier_consumer_lag_messages"] {
        let caught_up = eventually(Duration::from_secs(30), || async {
            series_count(port, &format!("max({lag}) == 0")).await.ok().filter(|n| *n == 1)
        })
        .await;
        assert!(caught_up.is_some(), "{lag} never came back to 0");
    }

    if let Some(out) = std::env::var_os("TICKETING_SCREENSHOT_DIR") {
        let script = workspace_root().join("tools/observability/screenshot.sh");
        // The graphs span what this Prometheus scraped; rates over 10 scrapes of 1 s.
        let range = format!("{}s", scraping_since.elapsed().as_secs() + 10);
        let status = Command::new("bash")
            .arg(&script)
            .arg(format!("http://127.0.0.1:{port}"))
            .arg(&out)
            .arg(range)
            .arg("10s")
            .status()
            .context("bash")?;
        assert!(status.success(), "{} failed: {status}", script.display());
    }
    Ok(())
}
