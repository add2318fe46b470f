//! `admission-audit`: checks an event's opening against its published shuffle key. The logic
//! and the exit codes are in [`admission::audit`].

use admission::audit::{self, AuditArgs};
use service_runtime::config::{self, exit_bad_config};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: AuditArgs = config::parse();
    if let Err(problem) = args.validate() {
        exit_bad_config("admission-audit", problem);
    }
    match audit::run(&args).await {
        Ok(report) => {
            println!("{}", if args.json { report.to_json() } else { report.to_text() });
            std::process::exit(report.exit_code());
        }
        Err(error) => {
            if args.json {
                println!("{}", serde_json::json!({ "verdict": "unreadable", "error": error.to_string() }));
            }
            eprintln!("admission-audit: cannot read the stream: {error}");
            std::process::exit(audit::exit::UNREADABLE);
        }
    }
}
