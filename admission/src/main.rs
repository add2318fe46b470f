use admission::{App, Config};
use service_runtime::{
    config::{self, exit_bad_config},
    shutdown_signal, telemetry,
};

/// mimalloc, the mesh's allocator (see `service_runtime`'s crate docs for why); set here in
/// the binary, never in a library that other binaries link.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _telemetry = telemetry::init("admission");
    let config: Config = config::parse();
    if let Err(problem) = config.validate() {
        exit_bad_config("admission", problem);
    }
    if let Some(addr) = config.server.metrics_addr {
        telemetry::serve_metrics(addr).unwrap_or_else(|problem| exit_bad_config("admission", problem));
    }
    let app = App::build(config).await?;
    app.run_until_stopped(shutdown_signal()).await
}
