//! `stream-setup`: creates or updates the mesh's JetStream stream from
//! [`service_runtime::bus::StreamSpec`], then exits. The Kubernetes Job `stream-setup` runs it
//! before the services (which refuse to start without the stream); locally `stack` does the
//! same in-process (`stack stream-setup`).
#![forbid(unsafe_code)]

use clap::Parser;
use service_runtime::{
    args::StreamSetupArgs,
    bus::{StreamSpec, setup_stream},
};

#[derive(Debug, Parser)]
#[command(name = "stream-setup", about = "Creates or updates the mesh's JetStream event stream")]
struct Args {
    #[command(flatten)]
    stream: StreamSetupArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse().stream;
    if let Err(problem) = args.validate() {
        service_runtime::config::exit_bad_config("stream-setup", problem);
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
