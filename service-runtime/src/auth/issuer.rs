//! Minting tokens: the local stack's identity provider, the load tools' and tests'.

use std::{sync::OnceLock, time::Duration};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use ed25519_dalek::{Signer, SigningKey};

use super::{ADMIN_SCOPE, DEFAULT_AUDIENCE, DEFAULT_ISSUER, verify::unix_now};

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
pub(super) fn test_jwks_path(issuer: &TokenIssuer) -> &'static str {
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
