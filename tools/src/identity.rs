//! The local stack's identity provider, and the tokens every tool sends.
//!
//! The services verify `authorization: Bearer <JWT>` against the JWKS named by `AUTH_JWKS`
//! ([`service_runtime::auth`]). Locally, the stack is the identity provider:
//! [`Identity::load_or_create`] keeps one Ed25519 signing key in `<state dir>/auth/token-key`
//! (created on first start, mode 0600, kept across runs) and writes its public JWKS to
//! `<state dir>/auth/jwks.json`, which every service of the stack is started with.
//!
//! The tools (`stack demo`, `stack token`, `flashsale`, `bench`, `loadgen`, the tests) mint
//! their tokens with the same key. A token is minted once per user and reused for every call
//! of that user ([`Bearer`] holds the ready metadata value), so the tools pay one signature
//! per user, and the services one verification per token (their cache does the rest).
//! [`Identity::fresh`] mints a token that no server has seen yet (a unique `jti`): the bench
//! uses it to measure the worst case, a full verification on every call.

use std::{
    fs,
    io::Write as _,
    os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, bail};
use service_runtime::auth::{self, TokenIssuer};
use tonic::metadata::{Ascii, MetadataValue};

/// The folder of the stack's identity provider, under the stack's state directory.
pub const AUTH_DIR: &str = "auth";
/// The private signing key (`kid:base64url(seed)`), readable by its owner only.
pub const KEY_FILE: &str = "token-key";
/// The public key set the services verify tokens with (`AUTH_JWKS`).
pub const JWKS_FILE: &str = "jwks.json";
/// The metadata key of the bearer token.
pub const AUTHORIZATION: &str = "authorization";
/// Lifetime of the tokens the tools mint for their simulated users and operators: longer
/// than the longest run (a full flash sale, a bench) plus its verification.
pub const TOOL_TOKEN_TTL: Duration = Duration::from_secs(12 * 3600);
/// The subject of the operator token the tools use for catalogue writes and reconciliation.
pub const OPERATOR: &str = "operator";
/// Users whose tokens [`Identity::user`] remembers: the tests' and the bench's users. Full,
/// it forgets them all (each is minted again on its next use): 10,000 tokens are about 4 MB.
const TOKEN_CACHE_CAPACITY: usize = 10_000;

/// The `authorization` value of one token, ready to attach: cloning it is a reference count.
#[derive(Clone)]
pub struct Bearer(MetadataValue<Ascii>);

impl std::fmt::Debug for Bearer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Bearer(<redacted>)")
    }
}

impl Bearer {
    /// The value for `token` (a compact JWT).
    pub fn new(token: &str) -> Self {
        Self(auth::bearer(token))
    }

    /// `message` as a request carrying this token.
    pub fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        self.attach(&mut request);
        request
    }

    /// Adds this token to `request`.
    pub fn attach<T>(&self, request: &mut tonic::Request<T>) {
        request.metadata_mut().insert(AUTHORIZATION, self.0.clone());
    }

    /// The header value, `Bearer <JWT>`.
    pub fn value(&self) -> &MetadataValue<Ascii> {
        &self.0
    }
}

/// The stack's token signing key and where its JWKS is.
pub struct Identity {
    issuer: TokenIssuer,
    dir: PathBuf,
    /// Tokens minted by [`Self::user`], by user.
    tokens: std::sync::Mutex<std::collections::HashMap<String, Bearer>>,
    /// The operator's token, minted on first use.
    admin: std::sync::OnceLock<Bearer>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity").field("issuer", &self.issuer).field("dir", &self.dir).finish()
    }
}

/// `<state_dir>/auth`.
pub fn auth_dir(state_dir: &Path) -> PathBuf {
    state_dir.join(AUTH_DIR)
}

/// `<state_dir>/auth/jwks.json`: what the stack's services get as `AUTH_JWKS`.
pub fn jwks_path(state_dir: &Path) -> PathBuf {
    auth_dir(state_dir).join(JWKS_FILE)
}

impl Identity {
    /// The identity provider of the stack whose state directory is `state_dir`
    /// (`<state_dir>/auth`, see [`Self::load_or_create`]).
    pub fn of_stack(state_dir: &Path) -> anyhow::Result<Self> {
        Self::load_or_create(&auth_dir(state_dir))
    }

    /// The identity provider whose files are in `dir`: its key is read from `dir/token-key`,
    /// or created there (mode 0600) on first use; `dir/jwks.json` is (re)written from the
    /// key, so it always matches.
    pub fn load_or_create(dir: &Path) -> anyhow::Result<Self> {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
        let key_path = dir.join(KEY_FILE);
        if !key_path.exists() {
            create_key(&key_path)?;
        }
        let issuer = read_key(&key_path)?;
        let identity = Self::new(issuer, dir.to_path_buf());
        identity.write_jwks()?;
        Ok(identity)
    }

    /// An identity whose key is read from `key_file` (a `token-key` file of a stack, or the
    /// key of a deployment's test issuer); nothing is written.
    pub fn from_key_file(key_file: &Path) -> anyhow::Result<Self> {
        let issuer = read_key(key_file)?;
        let dir = key_file.parent().map(Path::to_path_buf).unwrap_or_default();
        Ok(Self::new(issuer, dir))
    }

    fn new(issuer: TokenIssuer, dir: PathBuf) -> Self {
        Self { issuer, dir, tokens: Default::default(), admin: Default::default() }
    }

    /// The JWKS file the services verify with.
    pub fn jwks_path(&self) -> PathBuf {
        self.dir.join(JWKS_FILE)
    }

    /// The signing key, for crafted tokens (tests).
    pub fn issuer(&self) -> &TokenIssuer {
        &self.issuer
    }

    /// A token for `user`, valid for `ttl`; an operator token when `admin`.
    pub fn token(&self, user: &str, admin: bool, ttl: Duration) -> String {
        self.issuer.token(user, admin, ttl)
    }

    /// A new token for `user`, valid for a tool run ([`TOOL_TOKEN_TTL`]): for callers that
    /// keep it for every call of that user (the simulator's users carry theirs).
    pub fn mint(&self, user: &str) -> Bearer {
        Bearer::new(&self.token(user, false, TOOL_TOKEN_TTL))
    }

    /// `user`'s token ([`Self::mint`] on first use, then the same one again, up to
    /// [`TOKEN_CACHE_CAPACITY`] users).
    pub fn user(&self, user: &str) -> Bearer {
        let mut tokens = self.tokens.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(bearer) = tokens.get(user) {
            return bearer.clone();
        }
        if tokens.len() >= TOKEN_CACHE_CAPACITY {
            tokens.clear();
        }
        let bearer = self.mint(user);
        tokens.insert(user.to_owned(), bearer.clone());
        bearer
    }

    /// The operator's token ([`OPERATOR`], with the admin scope), minted once.
    pub fn admin(&self) -> Bearer {
        self.admin.get_or_init(|| Bearer::new(&self.token(OPERATOR, true, TOOL_TOKEN_TTL))).clone()
    }

    /// `message` as a request of `user` (with its [`Self::user`] token).
    pub fn as_user<T>(&self, user: &str, message: T) -> tonic::Request<T> {
        self.user(user).request(message)
    }

    /// `message` as a request of the operator.
    pub fn as_admin<T>(&self, message: T) -> tonic::Request<T> {
        self.admin().request(message)
    }

    /// A token for `user` that no server has cached yet: its claims carry a unique `jti`, so
    /// the service verifies its signature in full.
    pub fn fresh(&self, user: &str) -> String {
        let mut claims = self.issuer.claims(user, false, TOOL_TOKEN_TTL);
        claims["jti"] = serde_json::Value::from(uuid::Uuid::new_v4().simple().to_string());
        self.issuer.sign(&claims)
    }

    fn write_jwks(&self) -> anyhow::Result<()> {
        let path = self.jwks_path();
        let temporary = self.dir.join(format!(".{JWKS_FILE}.{}", std::process::id()));
        fs::write(&temporary, TokenIssuer::jwks_json(&[&self.issuer]))
            .with_context(|| format!("cannot write {}", temporary.display()))?;
        // A rename replaces the file in one step: a service reloading it never reads half.
        fs::rename(&temporary, &path).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(())
    }
}

/// Writes a new key to `path` with mode 0600. Two processes racing here agree on one key: the
/// key is written to a private temporary file and linked into place, which fails if another
/// process linked its key first; then that key is used.
fn create_key(path: &Path) -> anyhow::Result<()> {
    let kid = format!("stack-{}", chrono::Utc::now().format("%Y%m%d%H%M%S"));
    let issuer = TokenIssuer::generate(&kid);
    let temporary = path.with_extension(format!("new.{}", std::process::id()));
    let _ = fs::remove_file(&temporary);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temporary)
        .with_context(|| format!("cannot create {}", temporary.display()))?;
    file.write_all(issuer.to_secret_string().as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()?;
    drop(file);
    let linked = fs::hard_link(&temporary, path);
    let _ = fs::remove_file(&temporary);
    match linked {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(error) => Err(error).with_context(|| format!("cannot create {}", path.display())),
    }
}

/// Reads a key file; refuses one that others than its owner may read.
fn read_key(path: &Path) -> anyhow::Result<TokenIssuer> {
    let mode =
        fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?.permissions().mode();
    if mode & 0o077 != 0 {
        bail!("{} is readable by others (mode {:o}): `chmod 600` it", path.display(), mode & 0o777);
    }
    let text = fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    // The parse error never repeats the text: it is the private key.
    TokenIssuer::from_secret_string(&text).map_err(|problem| anyhow::anyhow!("{}: {problem}", path.display()))
}

/// Writes `text` to `path`, readable by its owner only (a file of tokens is a credential).
pub fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
    file.write_all(text.as_bytes()).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// A ghz metadata array: one `{"authorization": "Bearer …"}` object per user
/// `<prefix><n>`, `n` from 0 to `users - 1` (ghz applies the array round robin per call).
pub fn metadata_array(identity: &Identity, users: u64, prefix: &str, ttl: Duration) -> serde_json::Value {
    serde_json::Value::Array(
        (0..users)
            .map(|n| {
                let token = identity.token(&format!("{prefix}{n}"), false, ttl);
                serde_json::json!({ AUTHORIZATION: format!("Bearer {token}") })
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state_dir() -> PathBuf {
        std::env::temp_dir().join(format!("identity-{}", uuid::Uuid::new_v4().simple()))
    }

    #[test]
    fn the_key_is_created_once_private_and_kept() -> anyhow::Result<()> {
        let dir = state_dir();
        let first = Identity::of_stack(&dir)?;
        let key = dir.join(AUTH_DIR).join(KEY_FILE);
        assert_eq!(fs::metadata(&key)?.permissions().mode() & 0o777, 0o600);
        let again = Identity::of_stack(&dir)?;
        assert_eq!(first.issuer().jwk(), again.issuer().jwk(), "the second start keeps the key");
        let jwks: serde_json::Value = serde_json::from_str(&fs::read_to_string(jwks_path(&dir))?)?;
        assert_eq!(jwks["keys"][0], first.issuer().jwk());
        assert!(!fs::read_to_string(jwks_path(&dir))?.contains(&first.issuer().to_secret_string()));
        fs::remove_dir_all(&dir).ok();
        Ok(())
    }

    #[test]
    fn a_key_others_can_read_is_refused_without_printing_it() -> anyhow::Result<()> {
        let dir = state_dir();
        let identity = Identity::of_stack(&dir)?;
        let key = dir.join(AUTH_DIR).join(KEY_FILE);
        fs::set_permissions(&key, fs::Permissions::from_mode(0o644))?;
        let error = format!("{:#}", Identity::of_stack(&dir).err().context("accepted")?);
        assert!(error.contains("chmod 600"), "{error}");
        let secret = identity.issuer().to_secret_string();
        assert!(!error.contains(secret.split_once(':').map_or("", |(_, s)| s)));
        fs::remove_dir_all(&dir).ok();
        Ok(())
    }

    #[test]
    fn fresh_tokens_differ_and_the_metadata_array_has_one_per_user() -> anyhow::Result<()> {
        let dir = state_dir();
        let identity = Identity::of_stack(&dir)?;
        assert_ne!(identity.fresh("u"), identity.fresh("u"));
        let array = metadata_array(&identity, 3, "user-", Duration::from_secs(60));
        let items = array.as_array().context("an array")?;
        assert_eq!(items.len(), 3);
        for item in items {
            assert!(item[AUTHORIZATION].as_str().is_some_and(|v| v.starts_with("Bearer ey")));
        }
        assert!(!format!("{:?}", identity.user("u")).contains("ey"), "Debug hides the token");
        fs::remove_dir_all(&dir).ok();
        Ok(())
    }
}
