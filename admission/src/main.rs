use admission::{App, Config};
use service_runtime::{
    config::{self, exit_bad_config},
    shutdown_signal, telemetry,
};

service_runtime::global_allocator!();

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
