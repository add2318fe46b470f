//! `stream-setup`: creates or updates the mesh's JetStream stream from
//! [`service_runtime::bus::StreamSpec`], then exits. The Kubernetes Job `stream-setup` runs it
//! before the services (which refuse to start without the stream); locally `stack` does the
//! same in-process (`stack stream-setup`).
#![forbid(unsafe_code)]

use clap::Parser;
use service_runtime::bus::{StreamSpec, setup_stream};

#[derive(Debug, Parser)]
#[command(name = "stream-setup", about = "Creates or updates the mesh's JetStream event stream")]
struct Args {
    /// NATS server (any node of the cluster).
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    nats_url: String,
    /// Subject prefix of the mesh's events; the stream is `<prefix>_events`.
    #[arg(long, env = "NATS_PREFIX", default_value = "ticketing")]
    nats_prefix: String,
    /// Copies of each message: 1 on a single NATS server, 3 in production.
    #[arg(long, env = "EVENT_STREAM_REPLICAS", default_value_t = 1)]
    replicas: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Err(problem) = service_runtime::config::validate_prefix("NATS_PREFIX", &args.nats_prefix) {
        service_runtime::config::exit_bad_config("stream-setup", problem);
    }
    if !(1..=5).contains(&args.replicas) {
        service_runtime::config::exit_bad_config("stream-setup", "EVENT_STREAM_REPLICAS must be 1-5");
    }
    let spec = StreamSpec::for_prefix(&args.nats_prefix).with_replicas(args.replicas);
    let config = setup_stream(&args.nats_url, &spec).await?;
    println!(
        "stream {} ready: subjects {:?}, {} replica(s), max age {:?}, duplicate window {:?}, max bytes {}",
        config.name,
        config.subjects,
        config.num_replicas,
        config.max_age,
        config.duplicate_window,
        config.max_bytes
    );
    Ok(())
}
