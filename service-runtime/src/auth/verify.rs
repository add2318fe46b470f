//! The [`Authenticator`]: a token's signature against the key set, then its claims; the
//! key set reloaded on a timer and on an unknown `kid`.

use std::{
    future::Future,
    sync::{Arc, Mutex, RwLock},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use ed25519_dalek::Signature;
use serde::Deserialize;

use super::{
    ADMIN_SCOPE, AuthArgs, Caller, TokenError,
    cache::TokenCache,
    jwks::{KeySet, load_jwks},
};
use crate::CancellationToken;

/// Clock skew tolerated on `exp` and `nbf`.
pub const CLOCK_LEEWAY: Duration = Duration::from_secs(30);
/// How often the JWKS is reloaded, so a key removed from it stops being accepted.
pub const JWKS_REFRESH: Duration = Duration::from_secs(30);
/// Least time between two reloads caused by an unknown `kid`: a stream of tokens with made-up
/// key ids must not turn into a stream of JWKS fetches.
pub const UNKNOWN_KID_RELOAD_INTERVAL: Duration = Duration::from_secs(1);

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

pub(super) fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};

    use super::*;
    use crate::auth::{DEFAULT_AUDIENCE, DEFAULT_ISSUER, TokenIssuer};

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

    /// On tokio's paused clock: a key removed from the JWKS is accepted (from the cache) until
    /// the refresh loop's next reload, [`JWKS_REFRESH`] after it started, and refused after.
    #[tokio::test(start_paused = true)]
    async fn a_removed_key_stops_working_at_the_next_refresh() {
        let old = TokenIssuer::generate("old");
        let new = TokenIssuer::generate("new");
        let (auth, file) = authenticator(&[&old, &new]).await;
        let old_token = old.token("alice", false, Duration::from_secs(3_600));
        assert!(auth.verify(&old_token).await.is_ok(), "verified, and now cached");
        std::fs::write(&file.0, TokenIssuer::jwks_json(&[&new])).unwrap_or_else(|e| panic!("{e}"));

        let stopping = CancellationToken::new();
        let started = tokio::time::Instant::now();
        let refresh = tokio::spawn(auth.refresh_loop(stopping.clone()));
        tokio::task::yield_now().await; // the loop takes its first, immediate tick
        tokio::time::advance(JWKS_REFRESH - Duration::from_millis(1)).await;
        assert!(auth.verify(&old_token).await.is_ok(), "no reload yet: the cached token passes");

        // The reload reads the file off the runtime; poll until its outcome shows.
        let refused = tokio::time::timeout(JWKS_REFRESH / 2, async {
            while auth.verify(&old_token).await.is_ok() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        assert!(refused.is_ok(), "the refresh never dropped the removed key");
        assert!(started.elapsed() >= JWKS_REFRESH, "refused only once the refresh was due");
        assert_eq!(auth.verify(&old_token).await, Err(TokenError::UnknownKey));
        assert!(auth.verify(&new.token("alice", false, Duration::from_secs(60))).await.is_ok());

        stopping.cancel();
        refresh.await.unwrap_or_else(|e| panic!("{e}"));
    }
}
