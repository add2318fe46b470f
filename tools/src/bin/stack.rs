//! The local stack: `up` (keeps data), `down`, `reset` (the only wipe), `status`, `logs`,
//! `demo` (up + a small verified flash sale), `token` (tokens of the stack's identity
//! provider, for grpcurl and ghz), `stream-setup` and `test` (backing services + every test of
//! the workspace + the Kubernetes check). The jobs live in `tools::stack`.
#![forbid(unsafe_code)]

use clap::Parser;
use tools::stack::cli::{self, Cli};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::new("warn")).init();
    let code = cli::run(Cli::parse()).await?;
    if code != 0 {
        std::process::exit(code);
    }
    Ok(())
}
