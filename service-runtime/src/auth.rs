//! End-user and operator identity: bearer JWTs verified against a JWKS.
//!
//! Every public RPC may carry `authorization: Bearer <JWT>`. The server's tower stack
//! ([`AuthLayer`], installed by [`crate::GrpcServer`]) verifies it before the handler runs:
//! - the header is `Bearer <compact JWT>`, at most [`MAX_TOKEN_LEN`] bytes;
//! - the algorithm is `EdDSA` (Ed25519); the key is the JWKS key named by the header's `kid`
//!   (an unknown `kid` reloads the JWKS once, rate-limited, so a new key works without a
//!   restart; the JWKS is also reloaded every [`JWKS_REFRESH`], so a removed key stops working);
//! - `exp` and `nbf` hold (with [`CLOCK_LEEWAY`]), `iss` is `AUTH_ISSUER`, `aud` (a string or a
//!   list) contains `AUTH_AUDIENCE`, and `sub` is a valid user id.
//!
//! A bad token is answered `UNAUTHENTICATED` with a `google.rpc.ErrorInfo` reason
//! ([`TokenError::reason`]) and the handler never runs. A good one puts a [`Caller`] into the
//! request's extensions. No token at all is not an error here: public catalogue reads need
//! none; a handler that needs a caller asks [`caller`], [`acting_user`] or [`require_admin`].
//!
//! Verified tokens are cached (bounded, [`CACHE_CAPACITY`], until their `exp`), so a client
//! that sends the same token on every call pays one signature check, not one per call. The
//! cache is emptied whenever the key set changes.
//!
//! [`TokenIssuer`] mints tokens: the local stack's `stack token`, the load tools and tests.
//! Production tokens come from the organisation's identity provider, whose JWKS
//! `AUTH_JWKS` points at.

use std::{
    collections::HashMap,
    future::Future,
    hash::{BuildHasher, RandomState},
    sync::{Arc, Mutex, OnceLock, RwLock},
    task::{Context, Poll},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::Deserialize;
use tonic::{Code, Status, body::Body, metadata::MetadataValue};
use tower::{Layer, Service};

use crate::{CancellationToken, status::with_reason};

/// The scope (in the space-separated `scope` claim) that makes a caller an operator.
pub const ADMIN_SCOPE: &str = "ticketing:admin";
/// Clock skew tolerated on `exp` and `nbf`.
pub const CLOCK_LEEWAY: Duration = Duration::from_secs(30);
/// Longest `authorization` value accepted; a JWT of this mesh is a few hundred bytes.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;
/// Verified tokens remembered per process. 100,000 entries of about 400 bytes: 40 MB at
/// worst, and a flash sale's active users each send one token many times.
pub const CACHE_CAPACITY: usize = 100_000;
/// Cache shards: each has its own lock, so replicas' worker threads rarely contend.
const CACHE_SHARDS: usize = 16;
/// How often the JWKS is reloaded, so a key removed from it stops being accepted.
pub const JWKS_REFRESH: Duration = Duration::from_secs(30);
/// Least time between two reloads caused by an unknown `kid`: a stream of tokens with made-up
/// key ids must not turn into a stream of JWKS fetches.
pub const UNKNOWN_KID_RELOAD_INTERVAL: Duration = Duration::from_secs(1);
/// Largest JWKS document accepted, in bytes.
pub const MAX_JWKS_LEN: usize = 1024 * 1024;
/// Longest a JWKS fetch over HTTP(S) may take.
pub const JWKS_FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the public keys come from and what tokens must say.
#[derive(Debug, Clone, clap::Args)]
pub struct AuthArgs {
    /// The JWKS with the token-signing public keys: a file path, or an http(s) URL.
    #[arg(long = "auth-jwks", env = "AUTH_JWKS")]
    pub jwks: String,
    /// The `iss` every token must carry.
    #[arg(long = "auth-issuer", env = "AUTH_ISSUER", default_value = DEFAULT_ISSUER)]
    pub issuer: String,
    /// The value that a token's `aud` must contain.
    #[arg(long = "auth-audience", env = "AUTH_AUDIENCE", default_value = DEFAULT_AUDIENCE)]
    pub audience: String,
}

/// The default `iss`: the local stack's issuer.
pub const DEFAULT_ISSUER: &str = "https://auth.ticketing.local";
/// The default `aud`.
pub const DEFAULT_AUDIENCE: &str = "ticketing";

impl AuthArgs {
    /// Settings for tests: the process-wide [`TokenIssuer::for_tests`] key set.
    pub fn for_tests() -> Self {
        let issuer = TokenIssuer::for_tests();
        Self {
            jwks: test_jwks_path(issuer).to_owned(),
            issuer: DEFAULT_ISSUER.to_owned(),
            audience: DEFAULT_AUDIENCE.to_owned(),
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.jwks.trim().is_empty() {
            return Err("AUTH_JWKS must name a JWKS file or URL".into());
        }
        if self.issuer.is_empty() || self.audience.is_empty() {
            return Err("AUTH_ISSUER and AUTH_AUDIENCE must not be empty".into());
        }
        if !is_url(&self.jwks) {
            let text = std::fs::read_to_string(&self.jwks)
                .map_err(|error| format!("AUTH_JWKS: cannot read {}: {error}", self.jwks))?;
            KeySet::parse(&text).map_err(|error| format!("AUTH_JWKS: {}: {error}", self.jwks))?;
        }
        Ok(())
    }
}

/// Who is calling: the verified token's subject, and whether it carries [`ADMIN_SCOPE`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub subject: String,
    pub admin: bool,
}

/// The verified caller, or `UNAUTHENTICATED` (reason `TOKEN_MISSING`) when no token came.
pub fn caller<T>(request: &tonic::Request<T>) -> Result<&Caller, Status> {
    request.extensions().get::<Arc<Caller>>().map(|caller| &**caller).ok_or_else(|| {
        with_reason(
            Code::Unauthenticated,
            "this call needs `authorization: Bearer <token>`",
            TokenError::Missing.reason(),
            [],
        )
    })
}

/// The user a request acts for: the token's subject. A request that names another user in
/// its `user_id` field is refused with `PERMISSION_DENIED` (reason `USER_MISMATCH`), one whose
/// `user_id` is no valid id at all with `INVALID_ARGUMENT`; an empty field means the subject.
pub fn acting_user<T>(request: &tonic::Request<T>, claimed_user_id: &str) -> Result<String, Status> {
    let caller = caller(request)?;
    if !claimed_user_id.is_empty() {
        // A value that cannot be anyone's id is bad input, not someone else's name.
        crate::status::user_id(claimed_user_id)?;
    }
    if !claimed_user_id.is_empty() && claimed_user_id != caller.subject {
        return Err(with_reason(
            Code::PermissionDenied,
            "user_id must be the token's subject (or empty)",
            "USER_MISMATCH",
            [("field", "user_id".to_owned())],
        ));
    }
    Ok(caller.subject.clone())
}

/// The caller, if it is an operator; else `PERMISSION_DENIED` (reason `ADMIN_SCOPE_REQUIRED`).
pub fn require_admin<T>(request: &tonic::Request<T>) -> Result<&Caller, Status> {
    let caller = caller(request)?;
    if !caller.admin {
        return Err(with_reason(
            Code::PermissionDenied,
            format!("this call needs the {ADMIN_SCOPE} scope"),
            "ADMIN_SCOPE_REQUIRED",
            [],
        ));
    }
    Ok(caller)
}

/// The `authorization` metadata value for `token`.
pub fn bearer(token: &str) -> MetadataValue<tonic::metadata::Ascii> {
    match format!("Bearer {token}").parse() {
        Ok(value) => value,
        // A JWT is base64url and dots; only a caller passing garbage gets here.
        Err(_) => MetadataValue::from_static("Bearer invalid"),
    }
}

/// A client interceptor that sends one token on every call:
/// `XServiceClient::with_interceptor(channel, WithToken::new(&token))`.
#[derive(Clone)]
pub struct WithToken(MetadataValue<tonic::metadata::Ascii>);

impl WithToken {
    pub fn new(token: &str) -> Self {
        Self(bearer(token))
    }
}

impl tonic::service::Interceptor for WithToken {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        request.metadata_mut().insert("authorization", self.0.clone());
        Ok(request)
    }
}

/// Why a token was refused. [`Self::reason`] is the `ErrorInfo` reason the caller sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("no bearer token")]
    Missing,
    #[error("the authorization header is not `Bearer <JWT>`, or the token is malformed")]
    Malformed,
    #[error("the token's algorithm is not EdDSA")]
    UnsupportedAlgorithm,
    #[error("the token's key id is not in the key set")]
    UnknownKey,
    #[error("the token's signature does not verify")]
    BadSignature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token's issuer is not accepted")]
    WrongIssuer,
    #[error("the token is not meant for this audience")]
    WrongAudience,
    #[error("the token's subject is not a valid user id")]
    BadSubject,
}

impl TokenError {
    pub fn reason(self) -> &'static str {
        match self {
            Self::Missing => "TOKEN_MISSING",
            Self::Malformed => "TOKEN_MALFORMED",
            Self::UnsupportedAlgorithm => "TOKEN_UNSUPPORTED_ALGORITHM",
            Self::UnknownKey => "TOKEN_UNKNOWN_KEY",
            Self::BadSignature => "TOKEN_BAD_SIGNATURE",
            Self::Expired => "TOKEN_EXPIRED",
            Self::NotYetValid => "TOKEN_NOT_YET_VALID",
            Self::WrongIssuer => "TOKEN_WRONG_ISSUER",
            Self::WrongAudience => "TOKEN_WRONG_AUDIENCE",
            Self::BadSubject => "TOKEN_BAD_SUBJECT",
        }
    }

    /// The `UNAUTHENTICATED` answer. The message names the problem, never the token.
    pub fn status(self) -> Status {
        with_reason(Code::Unauthenticated, self.to_string(), self.reason(), [])
    }
}

/// The public keys of a JWKS that this mesh can use (OKP / Ed25519), by `kid`.
#[derive(Debug, Default, Clone, PartialEq)]
struct KeySet {
    keys: HashMap<String, VerifyingKey>,
}

#[derive(Deserialize)]
struct JwksDoc {
    keys: Vec<JwkDoc>,
}

#[derive(Deserialize)]
struct JwkDoc {
    kty: String,
    #[serde(default)]
    crv: Option<String>,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    x: Option<String>,
    #[serde(rename = "use", default)]
    key_use: Option<String>,
}

impl KeySet {
    /// Parses a JWKS. Keys of other types, or not for signatures, are skipped; a set without
    /// one usable key is an error (it would refuse every token).
    fn parse(text: &str) -> Result<Self, String> {
        let doc: JwksDoc =
            serde_json::from_str(text).map_err(|error| format!("not a JWKS document: {error}"))?;
        let mut keys = HashMap::new();
        for jwk in doc.keys {
            let usable = jwk.kty == "OKP"
                && jwk.crv.as_deref() == Some("Ed25519")
                && jwk.key_use.as_deref().is_none_or(|u| u == "sig");
            if !usable {
                continue;
            }
            let kid = jwk.kid.filter(|kid| !kid.is_empty()).ok_or("an Ed25519 key has no kid")?;
            let x = jwk.x.ok_or_else(|| format!("key {kid:?} has no x"))?;
            let bytes: [u8; 32] = URL_SAFE_NO_PAD
                .decode(x)
                .ok()
                .and_then(|bytes| bytes.try_into().ok())
                .ok_or_else(|| format!("key {kid:?}: x is not 32 base64url bytes"))?;
            let key = VerifyingKey::from_bytes(&bytes)
                .map_err(|_| format!("key {kid:?} is not an Ed25519 point"))?;
            if keys.insert(kid.clone(), key).is_some() {
                return Err(format!("kid {kid:?} appears twice"));
            }
        }
        if keys.is_empty() {
            return Err("no Ed25519 signing key (kty OKP, crv Ed25519) in the set".into());
        }
        Ok(Self { keys })
    }
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    iss: String,
    aud: Audience,
    exp: u64,
    #[serde(default)]
    nbf: Option<u64>,
    #[serde(default)]
    scope: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    fn contains(&self, audience: &str) -> bool {
        match self {
            Self::One(one) => one == audience,
            Self::Many(many) => many.iter().any(|a| a == audience),
        }
    }
}

/// Verifies tokens; one per process, shared by every connection.
pub struct Authenticator {
    jwks: String,
    issuer: String,
    audience: String,
    keys: RwLock<Arc<KeySet>>,
    cache: TokenCache,
    /// When the last reload caused by an unknown `kid` ran.
    last_kid_reload: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator").field("jwks", &self.jwks).field("issuer", &self.issuer).finish()
    }
}

impl Authenticator {
    /// Loads the key set; fails when it cannot be read or holds no usable key.
    pub async fn load(args: &AuthArgs) -> Result<Arc<Self>, String> {
        let keys = load_jwks(&args.jwks).await?;
        Ok(Arc::new(Self {
            jwks: args.jwks.clone(),
            issuer: args.issuer.clone(),
            audience: args.audience.clone(),
            keys: RwLock::new(Arc::new(keys)),
            cache: TokenCache::default(),
            last_kid_reload: Mutex::new(None),
        }))
    }

    /// Reloads the key set every [`JWKS_REFRESH`] until `stopping`. A failed reload keeps
    /// the keys it has (and says so in the log).
    /// The server runs it as a tracked task ([`crate::lifecycle::Background`]).
    pub fn refresh_loop(
        self: &Arc<Self>,
        stopping: CancellationToken,
    ) -> impl Future<Output = ()> + Send + 'static {
        let this = Arc::clone(self);
        async move {
            let mut every = tokio::time::interval(JWKS_REFRESH);
            every.tick().await;
            loop {
                tokio::select! {
                    () = stopping.cancelled() => return,
                    _ = every.tick() => {}
                }
                this.reload().await;
            }
        }
    }

    async fn reload(&self) {
        match load_jwks(&self.jwks).await {
            Ok(keys) => {
                let changed = {
                    let mut current = self.keys.write().unwrap_or_else(|poison| poison.into_inner());
                    let changed = **current != keys;
                    if changed {
                        *current = Arc::new(keys);
                    }
                    changed
                };
                if changed {
                    self.cache.clear();
                    tracing::info!(jwks = %self.jwks, "token keys reloaded");
                }
            }
            Err(error) => {
                tracing::warn!(jwks = %self.jwks, %error, "cannot reload token keys; keeping the old ones")
            }
        }
    }

    fn keys(&self) -> Arc<KeySet> {
        Arc::clone(&self.keys.read().unwrap_or_else(|poison| poison.into_inner()))
    }

    /// Verifies `token` (the compact JWT, without `Bearer `).
    pub async fn verify(&self, token: &str) -> Result<Arc<Caller>, TokenError> {
        let now = unix_now();
        if let Some(caller) = self.cache.get(token, now) {
            return Ok(caller);
        }
        let result = match self.verify_uncached(token, &self.keys(), now) {
            Err(TokenError::UnknownKey) if self.may_reload_for_kid() => {
                self.reload().await;
                self.verify_uncached(token, &self.keys(), now)
            }
            other => other,
        };
        let (caller, exp) = result?;
        self.cache.insert(token, Arc::clone(&caller), exp);
        Ok(caller)
    }

    fn may_reload_for_kid(&self) -> bool {
        let mut last = self.last_kid_reload.lock().unwrap_or_else(|poison| poison.into_inner());
        let due = last.is_none_or(|at| at.elapsed() >= UNKNOWN_KID_RELOAD_INTERVAL);
        if due {
            *last = Some(Instant::now());
        }
        due
    }

    fn verify_uncached(
        &self,
        token: &str,
        keys: &KeySet,
        now: u64,
    ) -> Result<(Arc<Caller>, u64), TokenError> {
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let decode = |part: &str| URL_SAFE_NO_PAD.decode(part).map_err(|_| TokenError::Malformed);
        let header: Header = serde_json::from_slice(&decode(header)?).map_err(|_| TokenError::Malformed)?;
        if header.alg != "EdDSA" {
            return Err(TokenError::UnsupportedAlgorithm);
        }
        let key = header.kid.as_deref().and_then(|kid| keys.keys.get(kid)).ok_or(TokenError::UnknownKey)?;
        let signature: [u8; 64] = decode(signature)?.try_into().map_err(|_| TokenError::Malformed)?;
        let signed = &token[..token.len() - token.rsplit('.').next().map_or(0, str::len) - 1];
        key.verify_strict(signed.as_bytes(), &Signature::from_bytes(&signature))
            .map_err(|_| TokenError::BadSignature)?;
        // Only signed claims are looked at.
        let claims: Claims = serde_json::from_slice(&decode(payload)?).map_err(|_| TokenError::Malformed)?;
        let leeway = CLOCK_LEEWAY.as_secs();
        if now >= claims.exp.saturating_add(leeway) {
            return Err(TokenError::Expired);
        }
        if claims.nbf.is_some_and(|nbf| nbf > now.saturating_add(leeway)) {
            return Err(TokenError::NotYetValid);
        }
        if claims.iss != self.issuer {
            return Err(TokenError::WrongIssuer);
        }
        if !claims.aud.contains(&self.audience) {
            return Err(TokenError::WrongAudience);
        }
        if crate::status::user_id(&claims.sub).is_err() {
            return Err(TokenError::BadSubject);
        }
        let admin = claims.scope.as_deref().is_some_and(|scope| scope.split(' ').any(|s| s == ADMIN_SCOPE));
        Ok((Arc::new(Caller { subject: claims.sub, admin }), claims.exp.saturating_add(leeway)))
    }
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn is_url(source: &str) -> bool {
    source.starts_with("http://") || source.starts_with("https://")
}

async fn load_jwks(source: &str) -> Result<KeySet, String> {
    let text = if is_url(source) {
        tokio::time::timeout(JWKS_FETCH_TIMEOUT, fetch(source))
            .await
            .map_err(|_| format!("fetching {source} took over {JWKS_FETCH_TIMEOUT:?}"))??
    } else {
        let bytes =
            tokio::fs::read(source).await.map_err(|error| format!("cannot read {source}: {error}"))?;
        if bytes.len() > MAX_JWKS_LEN {
            return Err(format!("{source} is over {MAX_JWKS_LEN} bytes"));
        }
        String::from_utf8(bytes).map_err(|_| format!("{source} is not UTF-8"))?
    };
    KeySet::parse(&text)
}

/// GETs a JWKS over HTTP/1.1, with TLS (system roots) for `https`.
async fn fetch(url: &str) -> Result<String, String> {
    use http_body_util::{BodyExt, Empty, Limited};
    use hyper_util::rt::TokioIo;

    let uri: http::Uri = url.parse().map_err(|_| format!("{url} is not a URL"))?;
    let https = uri.scheme_str() == Some("https");
    let host = uri.host().ok_or_else(|| format!("{url} has no host"))?.to_owned();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|error| format!("cannot connect to {host}:{port}: {error}"))?;
    let request = http::Request::get(uri.path_and_query().map_or("/", |p| p.as_str()))
        .header(http::header::HOST, &host)
        .header(http::header::ACCEPT, "application/json")
        .body(Empty::<bytes::Bytes>::new())
        .map_err(|error| error.to_string())?;

    async fn send<IO>(io: IO, request: http::Request<Empty<bytes::Bytes>>) -> Result<String, String>
    where
        IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(io).await.map_err(|error| error.to_string())?;
        tokio::spawn(connection);
        let response = sender.send_request(request).await.map_err(|error| error.to_string())?;
        if !response.status().is_success() {
            return Err(format!("answered HTTP {}", response.status()));
        }
        let body = Limited::new(response.into_body(), MAX_JWKS_LEN)
            .collect()
            .await
            .map_err(|error| format!("reading the body: {error}"))?
            .to_bytes();
        String::from_utf8(body.to_vec()).map_err(|_| "the body is not UTF-8".to_owned())
    }

    if https {
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(cert);
        }
        let config =
            rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(|error| error.to_string())?
                .with_root_certificates(roots)
                .with_no_client_auth();
        let name =
            rustls::pki_types::ServerName::try_from(host.clone()).map_err(|error| error.to_string())?;
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(|error| format!("TLS with {host}: {error}"))?;
        send(TokioIo::new(tls), request).await
    } else {
        send(TokioIo::new(tcp), request).await
    }
    .map_err(|error| format!("GET {url}: {error}"))
}

/// One cache shard: token → (caller, unix second it stops being valid).
type CacheShard = HashMap<Box<str>, (Arc<Caller>, u64)>;

/// Verified tokens until their expiry, in [`CACHE_SHARDS`] locked maps.
struct TokenCache {
    hasher: RandomState,
    shards: Vec<Mutex<CacheShard>>,
}

impl Default for TokenCache {
    fn default() -> Self {
        Self { hasher: RandomState::new(), shards: (0..CACHE_SHARDS).map(|_| Mutex::default()).collect() }
    }
}

impl TokenCache {
    fn shard(&self, token: &str) -> std::sync::MutexGuard<'_, CacheShard> {
        let index = self.hasher.hash_one(token) as usize % CACHE_SHARDS;
        self.shards[index].lock().unwrap_or_else(|poison| poison.into_inner())
    }

    fn get(&self, token: &str, now: u64) -> Option<Arc<Caller>> {
        let shard = self.shard(token);
        shard.get(token).filter(|(_, expires)| now < *expires).map(|(caller, _)| Arc::clone(caller))
    }

    fn insert(&self, token: &str, caller: Arc<Caller>, expires: u64) {
        let mut shard = self.shard(token);
        if shard.len() >= CACHE_CAPACITY / CACHE_SHARDS {
            let now = unix_now();
            shard.retain(|_, (_, expires)| now < *expires);
            if shard.len() >= CACHE_CAPACITY / CACHE_SHARDS {
                // Full of live tokens: forget them all; each costs one more check next time.
                shard.clear();
            }
        }
        shard.insert(token.into(), (caller, expires));
    }

    fn clear(&self) {
        for shard in &self.shards {
            shard.lock().unwrap_or_else(|poison| poison.into_inner()).clear();
        }
    }
}

/// Wraps services in [`Authenticate`].
#[derive(Clone)]
pub struct AuthLayer {
    auth: Arc<Authenticator>,
}

impl AuthLayer {
    pub fn new(auth: Arc<Authenticator>) -> Self {
        Self { auth }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Authenticate<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Authenticate { inner, auth: Arc::clone(&self.auth) }
    }
}

/// Verifies the bearer token of each request; see the module docs.
#[derive(Clone)]
pub struct Authenticate<S> {
    inner: S,
    auth: Arc<Authenticator>,
}

use crate::BoxFuture;

impl<S, ResBody> Service<http::Request<Body>> for Authenticate<S>
where
    S: Service<http::Request<Body>, Response = http::Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        let Some(header) = request.headers().get(http::header::AUTHORIZATION) else {
            return Box::pin(self.inner.call(request));
        };
        let token = bearer_token(header).map(str::to_owned);
        let auth = Arc::clone(&self.auth);
        // The permit poll_ready took belongs to this clone's inner service; keep it for the call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let verified = match token {
                Ok(token) => auth.verify(&token).await,
                Err(error) => Err(error),
            };
            match verified {
                Ok(caller) => {
                    request.extensions_mut().insert(caller);
                    inner.call(request).await
                }
                Err(error) => Ok(error.status().into_http()),
            }
        })
    }
}

fn bearer_token(header: &http::HeaderValue) -> Result<&str, TokenError> {
    let value = header.to_str().map_err(|_| TokenError::Malformed)?;
    if value.len() > MAX_TOKEN_LEN {
        return Err(TokenError::Malformed);
    }
    let (scheme, token) = value.split_once(' ').ok_or(TokenError::Malformed)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(TokenError::Malformed);
    }
    Ok(token.trim())
}

/// Mints Ed25519-signed tokens and publishes their JWKS: the local stack's identity provider.
pub struct TokenIssuer {
    kid: String,
    key: SigningKey,
    issuer: String,
    audience: String,
}

impl std::fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenIssuer").field("kid", &self.kid).field("key", &"<redacted>").finish()
    }
}

impl TokenIssuer {
    /// A new random key named `kid`, issuing for [`DEFAULT_ISSUER`] and [`DEFAULT_AUDIENCE`].
    pub fn generate(kid: &str) -> Self {
        Self::from_seed(kid, rand::random())
    }

    /// The key whose 32-byte secret seed is `seed`.
    pub fn from_seed(kid: &str, seed: [u8; 32]) -> Self {
        Self {
            kid: kid.to_owned(),
            key: SigningKey::from_bytes(&seed),
            issuer: DEFAULT_ISSUER.to_owned(),
            audience: DEFAULT_AUDIENCE.to_owned(),
        }
    }

    /// Reads a key written by [`Self::to_secret_string`]: `kid:base64url(seed)`.
    pub fn from_secret_string(text: &str) -> Result<Self, String> {
        let (kid, seed) = text.trim().split_once(':').ok_or("a token key looks like kid:base64url(seed)")?;
        let seed: [u8; 32] = URL_SAFE_NO_PAD
            .decode(seed)
            .ok()
            .and_then(|seed| seed.try_into().ok())
            .ok_or("the token key's seed is not 32 base64url bytes")?;
        if kid.is_empty() {
            return Err("the token key's kid is empty".into());
        }
        Ok(Self::from_seed(kid, seed))
    }

    /// `kid:base64url(seed)`: the private key. Store it as a secret.
    pub fn to_secret_string(&self) -> String {
        format!("{}:{}", self.kid, URL_SAFE_NO_PAD.encode(self.key.to_bytes()))
    }

    pub fn with_issuer(mut self, issuer: &str) -> Self {
        issuer.clone_into(&mut self.issuer);
        self
    }

    pub fn with_audience(mut self, audience: &str) -> Self {
        audience.clone_into(&mut self.audience);
        self
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// This key's public JWK.
    pub fn jwk(&self) -> serde_json::Value {
        serde_json::json!({
            "kty": "OKP",
            "crv": "Ed25519",
            "use": "sig",
            "alg": "EdDSA",
            "kid": self.kid,
            "x": URL_SAFE_NO_PAD.encode(self.key.verifying_key().to_bytes()),
        })
    }

    /// A JWKS with the public keys of `issuers` (e.g. the new and the old key during a rotation).
    pub fn jwks_json(issuers: &[&Self]) -> String {
        serde_json::json!({ "keys": issuers.iter().map(|issuer| issuer.jwk()).collect::<Vec<_>>() })
            .to_string()
    }

    /// The standard claims of a token for `subject`, valid from now for `ttl`.
    pub fn claims(&self, subject: &str, admin: bool, ttl: Duration) -> serde_json::Value {
        let now = unix_now();
        let mut claims = serde_json::json!({
            "iss": self.issuer,
            "aud": self.audience,
            "sub": subject,
            "iat": now,
            "nbf": now,
            "exp": now + ttl.as_secs(),
        });
        if admin {
            claims["scope"] = serde_json::Value::from(ADMIN_SCOPE);
        }
        claims
    }

    /// A token for `subject`, valid for `ttl`; with [`ADMIN_SCOPE`] when `admin`.
    pub fn token(&self, subject: &str, admin: bool, ttl: Duration) -> String {
        self.sign(&self.claims(subject, admin, ttl))
    }

    /// Signs any claims: for tests that need an expired, early or wrong-audience token.
    pub fn sign(&self, claims: &serde_json::Value) -> String {
        let header = serde_json::json!({ "alg": "EdDSA", "typ": "JWT", "kid": self.kid });
        let signed = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = self.key.sign(signed.as_bytes());
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()))
    }

    /// One random key per process whose JWKS [`AuthArgs::for_tests`] points at, so in-process
    /// test servers and their clients agree without setup.
    pub fn for_tests() -> &'static Self {
        static ISSUER: OnceLock<TokenIssuer> = OnceLock::new();
        ISSUER.get_or_init(|| Self::generate("test"))
    }
}

/// The JWKS file of [`TokenIssuer::for_tests`], written once per process.
fn test_jwks_path(issuer: &TokenIssuer) -> &'static str {
    static PATH: OnceLock<String> = OnceLock::new();
    PATH.get_or_init(|| {
        let path = std::env::temp_dir().join(format!("ticketing-test-jwks-{}.json", std::process::id()));
        if let Err(error) = std::fs::write(&path, TokenIssuer::jwks_json(&[issuer])) {
            panic!("cannot write the test JWKS {}: {error}", path.display());
        }
        path.to_string_lossy().into_owned()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn authenticator(issuers: &[&TokenIssuer]) -> (Arc<Authenticator>, tempfile_path::Path) {
        let path = tempfile_path::Path::new();
        std::fs::write(&path.0, TokenIssuer::jwks_json(issuers)).unwrap_or_else(|e| panic!("{e}"));
        let args = AuthArgs {
            jwks: path.0.to_string_lossy().into_owned(),
            issuer: DEFAULT_ISSUER.into(),
            audience: DEFAULT_AUDIENCE.into(),
        };
        (Authenticator::load(&args).await.unwrap_or_else(|e| panic!("{e}")), path)
    }

    /// A temp file removed on drop (no extra crate for one test module).
    mod tempfile_path {
        pub struct Path(pub std::path::PathBuf);
        impl Path {
            pub fn new() -> Self {
                Self(std::env::temp_dir().join(format!("jwks-{}.json", uuid::Uuid::new_v4())))
            }
        }
        impl Drop for Path {
            fn drop(&mut self) {
                let _ = std::fs::remove_file(&self.0);
            }
        }
    }

    #[tokio::test]
    async fn a_good_token_names_its_subject_and_scope() {
        let issuer = TokenIssuer::generate("k1");
        let (auth, _file) = authenticator(&[&issuer]).await;
        let user = auth.verify(&issuer.token("alice", false, Duration::from_secs(60))).await;
        assert_eq!(user, Ok(Arc::new(Caller { subject: "alice".into(), admin: false })));
        let admin = auth.verify(&issuer.token("ops", true, Duration::from_secs(60))).await;
        assert_eq!(admin, Ok(Arc::new(Caller { subject: "ops".into(), admin: true })));
    }

    #[tokio::test]
    async fn every_bad_token_gets_its_own_reason() {
        let issuer = TokenIssuer::generate("k1");
        let stranger = TokenIssuer::generate("k1");
        let unknown = TokenIssuer::generate("k9");
        let (auth, _file) = authenticator(&[&issuer]).await;
        let now = unix_now();
        let with = |patch: serde_json::Value| {
            let mut claims = issuer.claims("alice", false, Duration::from_secs(60));
            for (k, v) in patch.as_object().into_iter().flatten() {
                claims[k] = v.clone();
            }
            issuer.sign(&claims)
        };
        let good = issuer.token("alice", false, Duration::from_secs(60));
        let good: Vec<&str> = good.split('.').collect();
        let mallory = issuer.token("mallory", false, Duration::from_secs(60));
        let mallory: Vec<&str> = mallory.split('.').collect();
        let forged_payload = format!("{}.{}.{}", good[0], mallory[1], good[2]);
        let none_alg = format!("{}.{}.", URL_SAFE_NO_PAD.encode(r#"{"alg":"none","kid":"k1"}"#), good[1]);
        let cases = [
            ("garbage", "not-a-jwt".to_owned(), TokenError::Malformed),
            ("expired", with(serde_json::json!({"exp": now - 120})), TokenError::Expired),
            ("not yet valid", with(serde_json::json!({"nbf": now + 600})), TokenError::NotYetValid),
            ("wrong issuer", with(serde_json::json!({"iss": "https://evil"})), TokenError::WrongIssuer),
            ("wrong audience", with(serde_json::json!({"aud": "other"})), TokenError::WrongAudience),
            (
                "audience list without ours",
                with(serde_json::json!({"aud": ["a", "b"]})),
                TokenError::WrongAudience,
            ),
            ("bad subject", with(serde_json::json!({"sub": "a b"})), TokenError::BadSubject),
            (
                "same kid, other key",
                stranger.token("alice", false, Duration::from_secs(60)),
                TokenError::BadSignature,
            ),
            ("unknown kid", unknown.token("alice", false, Duration::from_secs(60)), TokenError::UnknownKey),
            ("payload swapped", forged_payload, TokenError::BadSignature),
            ("alg none", none_alg, TokenError::UnsupportedAlgorithm),
        ];
        for (name, token, expected) in cases {
            assert_eq!(auth.verify(&token).await, Err(expected), "{name}");
        }
        let list = with(serde_json::json!({"aud": ["a", DEFAULT_AUDIENCE]}));
        assert!(auth.verify(&list).await.is_ok(), "an audience list that holds ours is accepted");
    }

    #[tokio::test]
    async fn a_new_key_works_without_a_restart_and_a_removed_one_stops() {
        let old = TokenIssuer::generate("old");
        let new = TokenIssuer::generate("new");
        let (auth, file) = authenticator(&[&old]).await;
        let old_token = old.token("alice", false, Duration::from_secs(60));
        assert!(auth.verify(&old_token).await.is_ok());
        std::fs::write(&file.0, TokenIssuer::jwks_json(&[&new])).unwrap_or_else(|e| panic!("{e}"));
        // An unknown kid reloads the set at once.
        assert!(auth.verify(&new.token("alice", false, Duration::from_secs(60))).await.is_ok());
        // The reload emptied the cache: the removed key's token is checked again and refused.
        assert_eq!(auth.verify(&old_token).await, Err(TokenError::UnknownKey));
    }

    #[test]
    fn a_jwks_without_a_usable_key_is_refused() {
        assert!(KeySet::parse(r#"{"keys":[]}"#).is_err());
        assert!(KeySet::parse(r#"{"keys":[{"kty":"RSA","kid":"r","n":"x","e":"AQAB"}]}"#).is_err());
        assert!(KeySet::parse("nonsense").is_err());
        let issuer = TokenIssuer::generate("k");
        assert!(KeySet::parse(&TokenIssuer::jwks_json(&[&issuer, &issuer])).is_err(), "duplicate kid");
    }

    #[test]
    fn the_secret_string_round_trips_and_debug_hides_it() {
        let issuer = TokenIssuer::generate("k");
        let secret = issuer.to_secret_string();
        let again = TokenIssuer::from_secret_string(&secret).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(again.jwk(), issuer.jwk());
        let seed = secret.split_once(':').map(|(_, s)| s.to_owned()).unwrap_or_default();
        assert!(!format!("{issuer:?}").contains(&seed));
    }
}
