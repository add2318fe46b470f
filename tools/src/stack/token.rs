//! `stack token`: tokens of the stack's identity provider, for grpcurl and ghz.

use std::path::{Path, PathBuf};

use anyhow::bail;

use crate::identity::{self, Identity};

/// The most tokens `stack token --users` writes: a ghz metadata array of a million tokens is
/// about 400 MB already.
const MAX_TOKEN_USERS: u64 = 1_000_000;

#[derive(clap::Args)]
pub struct TokenArgs {
    /// The token's subject: the user the calls act as.
    #[arg(long, required_unless_present = "users", conflicts_with = "users")]
    pub user: Option<String>,
    /// With the operator scope (catalogue writes, refunds, reconciliation).
    #[arg(long)]
    pub admin: bool,
    /// How long the token is valid.
    #[arg(long, default_value_t = 3_600, value_parser = clap::value_parser!(u64).range(1..=30 * 86_400))]
    pub ttl_secs: u64,
    /// Write a ghz metadata array of this many users' tokens to `--out`.
    #[arg(long, requires = "out", value_parser = clap::value_parser!(u64).range(1..=MAX_TOKEN_USERS))]
    pub users: Option<u64>,
    /// The metadata array file (ghz `--metadata-file`, loadgen `-M`).
    #[arg(long, requires = "users")]
    pub out: Option<PathBuf>,
    /// The users' ids are `<prefix><n>`.
    #[arg(long, default_value = "user-", requires = "users")]
    pub prefix: String,
}

/// `stack token`: one token on stdout, or a ghz metadata array in a file.
pub fn token(state_dir: &Path, args: &TokenArgs) -> anyhow::Result<()> {
    let issuer = Identity::of_stack(state_dir)?;
    let ttl = std::time::Duration::from_secs(args.ttl_secs);
    let valid = |user: &str| {
        !user.is_empty()
            && user.len() <= 128
            && user.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.@:-".contains(&b))
    };
    match (&args.user, args.users, &args.out) {
        (Some(user), _, _) => {
            if !valid(user) {
                bail!("--user must be 1-128 of [A-Za-z0-9_.@:-] (the services refuse other subjects)");
            }
            println!("{}", issuer.token(user, args.admin, ttl));
        }
        (None, Some(users), Some(out)) => {
            if !valid(&format!("{}{}", args.prefix, users - 1)) {
                bail!("--prefix must leave user ids of 1-128 of [A-Za-z0-9_.@:-]");
            }
            if args.admin {
                bail!("--admin is for one operator token (--user), not for a user array");
            }
            let array = identity::metadata_array(&issuer, users, &args.prefix, ttl);
            identity::write_private(out, &serde_json::to_string(&array)?)?;
            eprintln!(
                "{users} tokens ({}0 … {}{}) written to {}",
                args.prefix,
                args.prefix,
                users - 1,
                out.display()
            );
        }
        _ => bail!("give --user U, or --users N --out FILE"),
    }
    Ok(())
}
