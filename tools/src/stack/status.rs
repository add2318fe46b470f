//! `stack status` (each process with its pid, ports and health; the backing servers) and
//! `stack logs` (the end of one log or all, followed with `-f`).

use std::{
    fs,
    io::{Read, Seek, SeekFrom},
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{
    cli::LogsArgs,
    data::Record,
    health,
    prereq::{answers_at, host_port},
    process::status as processes,
};

/// How long a health answer may take before it counts as none.
const HEALTH_ANSWER_TIMEOUT: Duration = Duration::from_secs(2);
/// How often `logs -f` looks for appended lines.
const FOLLOW_POLL: Duration = Duration::from_millis(250);
/// The most of a log's end read to find its last lines.
const TAIL_WINDOW_BYTES: u64 = 1 << 20;

/// `GET path` on `127.0.0.1:port` (HTTP/1.0, so the body ends with the connection and is
/// never chunked): the status code and the body. Reads a service's `/readyz` here and its
/// `/metrics` in the bench.
pub async fn http_get(port: u16, path: &str) -> anyhow::Result<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes()).await?;
    let mut text = String::new();
    stream.read_to_string(&mut text).await?;
    let (head, body) = text.split_once("\r\n\r\n").context("not an HTTP answer")?;
    let code =
        head.split_whitespace().nth(1).and_then(|code| code.parse().ok()).context("not an HTTP answer")?;
    Ok((code, body.to_owned()))
}

/// `GET /readyz` on `127.0.0.1:port`: the HTTP status code.
async fn readyz(port: u16) -> anyhow::Result<u16> {
    let (code, _) = tokio::time::timeout(HEALTH_ANSWER_TIMEOUT, http_get(port, "/readyz"))
        .await
        .context("no answer")??;
    Ok(code)
}

/// Prints the stack's processes and servers; true when every process runs and is ready.
pub async fn status(state_dir: &Path) -> anyhow::Result<bool> {
    let running = processes(state_dir);
    let record = Record::read(state_dir)?;
    if running.is_empty() {
        println!("nothing is running (no pid files in {})", state_dir.join("pids").display());
        return Ok(false);
    }
    if let Some(record) = &record {
        println!("stack in {} (started {})", state_dir.display(), record.started_at);
    }
    println!(
        "{:<10} {:>8}  {:<8} {:<16} {:>6} {:>8} {:>7} {:>11}",
        "process", "pid", "state", "health", "grpc", "internal", "metrics", "health-port"
    );
    let mut all_well = true;
    for (name, pid, alive) in &running {
        let ports = record.as_ref().and_then(|r| r.services.iter().find(|s| &s.name == name));
        let health_text = match (alive, ports, name.as_str()) {
            (false, _, _) => "-".to_owned(),
            (true, Some(ports), _) => match readyz(ports.health).await {
                Ok(200) => "ready".to_owned(),
                Ok(code) => format!("NOT READY ({code})"),
                Err(error) => format!("NO ANSWER ({error})"),
            },
            (true, None, "haproxy") => match record.as_ref().map(|r| r.lb_port) {
                Some(port) => match health(port).await {
                    Ok(true) => "SERVING".to_owned(),
                    Ok(false) => "NOT SERVING".to_owned(),
                    Err(_) => "UNAVAILABLE".to_owned(),
                },
                None => "unknown".to_owned(),
            },
            (true, None, _) => "unknown".to_owned(),
        };
        all_well &= *alive && matches!(health_text.as_str(), "ready" | "SERVING");
        let port = |p: u16| if p == 0 { "-".to_owned() } else { p.to_string() };
        let (grpc, internal, metrics, health_port) = match (ports, name.as_str()) {
            (Some(s), _) => (port(s.grpc), port(s.internal), port(s.metrics), port(s.health)),
            (None, "haproxy") => (
                record.as_ref().map_or("-".into(), |r| format!("{} (lb)", r.lb_port)),
                "-".into(),
                "-".into(),
                "-".into(),
            ),
            _ => ("-".into(), "-".into(), "-".into(), "-".into()),
        };
        println!(
            "{name:<10} {pid:>8}  {:<8} {health_text:<16} {grpc:>6} {internal:>8} {metrics:>7} {health_port:>11}",
            if *alive { "running" } else { "STOPPED" }
        );
    }
    if let Some(record) = &record {
        for (server, url, port) in [
            ("postgres", &record.database_url, 5432),
            ("redis", &record.redis_url, 6379),
            ("nats", &record.nats_url, 4222),
        ] {
            let (host, port) = host_port(url, port)?;
            let state = if answers_at(&host, port) { "answers" } else { "DOES NOT ANSWER" };
            all_well &= state == "answers";
            println!("{server:<10} {url} {state}");
        }
        println!(
            "prefixes: redis {:?}, nats {:?} (stream {}_events)",
            record.redis_prefix, record.nats_prefix, record.nats_prefix
        );
    }
    Ok(all_well)
}

/// The logs of `state_dir`, as (name, path), sorted by name.
fn log_files(state_dir: &Path) -> Vec<(String, PathBuf)> {
    let Ok(entries) = fs::read_dir(state_dir.join("logs")) else { return Vec::new() };
    let mut logs: Vec<(String, PathBuf)> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|e| e == "log"))
        .filter_map(|path| Some((path.file_stem()?.to_string_lossy().into_owned(), path)))
        .collect();
    logs.sort();
    logs
}

/// The last `lines` lines of `path` and the offset its end had.
fn tail(path: &Path, lines: usize) -> anyhow::Result<(Vec<String>, u64)> {
    let mut file = fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let end = file.metadata()?.len();
    let start = end.saturating_sub(TAIL_WINDOW_BYTES);
    file.seek(SeekFrom::Start(start))?;
    let mut bytes = Vec::new();
    file.take(end - start).read_to_end(&mut bytes)?;
    let text = String::from_utf8_lossy(&bytes);
    let all: Vec<&str> = text.lines().collect();
    // A window that starts mid-file starts mid-line: drop that partial line.
    let skip = usize::from(start > 0);
    let from = all.len().saturating_sub(lines).max(skip);
    Ok((all[from..].iter().map(|l| (*l).to_owned()).collect(), end))
}

/// What was appended to `path` since `offset`, in whole lines, and the new offset; from the
/// start when the file is shorter than `offset` (a new `up` began it again).
fn appended(path: &Path, offset: u64) -> anyhow::Result<(Vec<String>, u64)> {
    let mut file = fs::File::open(path)?;
    let len = file.metadata()?.len();
    let offset = if len < offset { 0 } else { offset };
    file.seek(SeekFrom::Start(offset))?;
    let mut bytes = Vec::new();
    file.take(len - offset).read_to_end(&mut bytes)?;
    // Keep a partial last line for the next round.
    let whole = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    let text = String::from_utf8_lossy(&bytes[..whole]);
    Ok((text.lines().map(str::to_owned).collect(), offset + whole as u64))
}

/// `stack logs`: prints the end of one log or of all; with `follow`, keeps printing what is
/// appended (each line prefixed by its process when there are several) until interrupted.
pub async fn logs(state_dir: &Path, args: &LogsArgs) -> anyhow::Result<()> {
    let all = log_files(state_dir);
    let chosen: Vec<(String, PathBuf)> = match &args.service {
        Some(service) => match all.iter().find(|(name, _)| name == service) {
            Some(log) => vec![log.clone()],
            None => {
                let names: Vec<&str> = all.iter().map(|(name, _)| name.as_str()).collect();
                bail!(
                    "no log of {service} in {} (logs: {})",
                    state_dir.join("logs").display(),
                    names.join(", ")
                )
            }
        },
        None if all.is_empty() => {
            bail!("no logs in {}: start the stack with `stack up`", state_dir.join("logs").display())
        }
        None => all,
    };
    let several = chosen.len() > 1;
    let mut offsets = Vec::with_capacity(chosen.len());
    for (name, path) in &chosen {
        let (lines, end) = tail(path, args.lines)?;
        if several && !args.follow {
            println!("==> {name} <==");
        }
        for line in lines {
            print_line(name, &line, several && args.follow);
        }
        offsets.push(end);
    }
    if !args.follow {
        return Ok(());
    }
    loop {
        tokio::time::sleep(FOLLOW_POLL).await;
        for ((name, path), offset) in chosen.iter().zip(offsets.iter_mut()) {
            // A log that is gone for a moment (a new `up` recreating it) is read next round.
            if let Ok((lines, end)) = appended(path, *offset) {
                for line in lines {
                    print_line(name, &line, several);
                }
                *offset = end;
            }
        }
    }
}

fn print_line(name: &str, line: &str, prefixed: bool) {
    if prefixed {
        println!("{name:<10}| {line}");
    } else {
        println!("{line}");
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::io::Write;

    #[test]
    fn tail_and_follow_read_whole_lines() {
        let dir = std::env::temp_dir().join(format!("stack-logs-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("payment.log");
        std::fs::write(&path, "one\ntwo\nthree\n").unwrap();
        let (lines, end) = super::tail(&path, 2).unwrap();
        assert_eq!(lines, ["two", "three"]);
        let mut file = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(b"four\nfi").unwrap();
        let (lines, end) = super::appended(&path, end).unwrap();
        assert_eq!(lines, ["four"], "a partial line waits");
        file.write_all(b"ve\n").unwrap();
        assert_eq!(super::appended(&path, end).unwrap().0, ["five"]);
        std::fs::write(&path, "new\n").unwrap();
        assert_eq!(
            super::appended(&path, end).unwrap().0,
            ["new"],
            "a log begun again is read from its start"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
