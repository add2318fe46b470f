//! `ticketctl`, the operator's command line: talks to the mesh over gRPC through the load
//! balancer with an admin token. See `ticketctl --help` for the commands and exit codes.

mod audit;
mod cli;
mod output;
mod venue;

use std::process::ExitCode;

use clap::Parser;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match cli::run(&cli).await {
        Ok(cli::Done::Printed(text)) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Ok(cli::Done::Exited(code)) => ExitCode::from(code),
        Err(failure) => {
            eprintln!("ticketctl: {failure}");
            ExitCode::from(failure.exit_code())
        }
    }
}
