//! The flags that say where the public keys come from and what tokens must say.

use super::{
    issuer::{TokenIssuer, test_jwks_path},
    jwks::{KeySet, is_url},
};

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
