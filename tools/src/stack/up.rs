//! `stack up` and `stack reset`.
//!
//! `up` starts what is missing and keeps what is there: backing servers are started only if
//! they do not answer, the database and the event stream are created only if they do not
//! exist, and nothing is deleted. The services and the load balancer of this state dir are
//! restarted with the binaries just built. Data goes only through [`reset`] (or
//! `up --reset`), which asks first on a terminal.

use std::{
    io::{BufRead, IsTerminal, Write},
    path::Path,
    time::Instant,
};

use anyhow::bail;

use super::{
    Binaries, Stack, StackConfig, build_binaries,
    cli::{ServerArgs, UpArgs},
    data::{self, Record},
    prereq::{self, BackingUrls},
    process::Progress,
    stop,
};

/// The configuration `up` starts with: the local stack with `args`' servers and ports, and
/// the keys kept in `state_dir`.
pub fn config(state_dir: &Path, bin_dir: &Path, args: &UpArgs) -> anyhow::Result<StackConfig> {
    let mut config = StackConfig::local(state_dir.to_path_buf(), bin_dir.to_path_buf());
    config.set_ports(args.ports.ports());
    args.servers.apply(&mut config, None);
    if let Some(secs) = args.hold_ttl_secs {
        config.hold_ttl_secs = secs;
    }
    data::keep_keys(&mut config)?;
    Ok(config)
}

/// Brings the stack up, keeping its data (see the module docs).
pub async fn up(state_dir: &Path, args: &UpArgs) -> anyhow::Result<Stack> {
    let started = Instant::now();
    // The servers and the confirmation first: a refusal costs no build.
    let bin_dir_guess = args.bin_dir.clone().unwrap_or_default();
    let mut config = config(state_dir, &bin_dir_guess, args)?;
    prereq::ensure_backing_at(&BackingUrls {
        database: &config.database_url,
        redis: &config.redis_url,
        nats: &config.nats_url,
    })?;
    prereq::ensure_haproxy()?;
    if args.reset {
        confirm(&data::describe_wipe(&config), args.yes)?;
    }
    config.bin_dir = match &args.bin_dir {
        Some(dir) => dir.clone(),
        None => {
            eprintln!("building the {} binaries", if args.debug { "debug" } else { "release" });
            build_binaries(args.debug, Binaries::Services)?
        }
    };
    let built = Instant::now();
    stop(state_dir)?;
    if args.reset {
        data::wipe(&config).await?;
        eprintln!("deleted {}", data::describe_wipe(&config));
    }
    data::prepare(&config).await?;
    eprintln!("starting the services and the load balancer; waiting until each is SERVING");
    let stack = Stack::start_with(config, Progress::Print).await?;
    println!(
        "stack up in {:.1} s (build {:.1} s, start {:.1} s); load balancer at {}",
        started.elapsed().as_secs_f64(),
        (built - started).as_secs_f64(),
        built.elapsed().as_secs_f64(),
        stack.config.lb_url()
    );
    Ok(stack)
}

/// `stack reset`: stops the stack of `state_dir` and deletes its data (the servers and
/// prefixes given, else those of its last start, else the local defaults).
pub async fn reset(state_dir: &Path, servers: &ServerArgs, yes: bool) -> anyhow::Result<()> {
    let record = Record::read(state_dir)?;
    let mut config = StackConfig::local(state_dir.to_path_buf(), state_dir.to_path_buf());
    servers.apply(&mut config, record.as_ref());
    let what = data::describe_wipe(&config);
    confirm(&what, yes)?;
    stop(state_dir)?;
    data::wipe(&config).await?;
    println!("deleted {what}; `stack up` starts an empty stack");
    Ok(())
}

/// Asks on the terminal whether to delete `what`; `yes` answers for a script. Without a
/// terminal and without `yes`, refuses.
fn confirm(what: &str, yes: bool) -> anyhow::Result<()> {
    if yes {
        return Ok(());
    }
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        bail!("this deletes {what}; pass --yes to confirm without a terminal");
    }
    eprint!("This deletes {what}.\nType yes to delete it: ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    stdin.lock().read_line(&mut answer)?;
    if answer.trim() != "yes" {
        bail!("not confirmed: nothing was deleted");
    }
    Ok(())
}
