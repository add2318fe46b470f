//! Admission passes: HMAC-SHA256 signed [`PassClaims`], verified without a network call.
//!
//! A token is `base64url(claims) "." base64url(HMAC-SHA256(key, claims))`, where `claims` is
//! the protobuf encoding of [`PassClaims`]. The claims name the key that signed them, so a
//! verifier holding the current and previous keys accepts passes across a key rotation.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use hmac::{Hmac, KeyInit, Mac};
use prost::Message;
use sha2::Sha256;

pub use crate::v1::PassClaims;

type HmacSha256 = Hmac<Sha256>;

/// A named HMAC key. Its `Debug` never prints the secret.
#[derive(Clone)]
pub struct PassKey {
    id: String,
    secret: Vec<u8>,
}

impl std::fmt::Debug for PassKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PassKey").field("id", &self.id).field("secret", &"<redacted>").finish()
    }
}

impl PassKey {
    /// The shortest secret accepted, in bytes.
    pub const MIN_SECRET_LEN: usize = 16;

    /// A key with id `id` and secret `secret` (at least [`Self::MIN_SECRET_LEN`] bytes).
    pub fn new(id: impl Into<String>, secret: impl Into<Vec<u8>>) -> Result<Self, PassError> {
        let id = id.into();
        let secret = secret.into();
        if id.is_empty() || id.len() > 32 || id.contains([',', ':', ' ']) {
            return Err(PassError::BadKeyConfig(format!(
                "key id {id:?} must be 1-32 characters without ',', ':' or spaces"
            )));
        }
        if secret.len() < Self::MIN_SECRET_LEN {
            return Err(PassError::BadKeyConfig(format!(
                "secret of key {id:?} must have at least {} bytes",
                Self::MIN_SECRET_LEN
            )));
        }
        Ok(Self { id, secret })
    }

    /// The key's id, as carried in [`PassClaims::key_id`].
    pub fn id(&self) -> &str {
        &self.id
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
        match HmacSha256::new_from_slice(&self.secret) {
            Ok(mac) => mac,
            Err(_) => unreachable!("HMAC takes keys of any length"),
        }
    }
}

/// The ring of keys: the first signs, all verify.
///
/// Parsed from `id:secret[,id:secret...]`, newest first, e.g. `k2:...,k1:...`.
#[derive(Clone, Debug)]
pub struct PassKeyRing {
    keys: Vec<PassKey>,
}

impl std::str::FromStr for PassKeyRing {
    type Err = PassError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let keys = s
            .split(',')
            .map(|entry| {
                let (id, secret) = entry.trim().split_once(':').ok_or_else(|| {
                    PassError::BadKeyConfig("pass keys must look like id:secret[,id:secret...]".into())
                })?;
                PassKey::new(id, secret.as_bytes().to_vec())
            })
            .collect::<Result<Vec<_>, _>>()?;
        Self::new(keys)
    }
}

impl PassKeyRing {
    /// A ring whose first key signs new passes.
    pub fn new(keys: Vec<PassKey>) -> Result<Self, PassError> {
        if keys.is_empty() {
            return Err(PassError::BadKeyConfig("at least one pass key is needed".into()));
        }
        Ok(Self { keys })
    }

    /// Signs `claims` with the current key, overwriting `claims.key_id`.
    pub fn sign(&self, mut claims: PassClaims) -> String {
        let key = &self.keys[0];
        claims.key_id = key.id.clone();
        let body = claims.encode_to_vec();
        let mut mac = key.mac();
        mac.update(&body);
        let signature = mac.finalize().into_bytes();
        format!("{}.{}", URL_SAFE_NO_PAD.encode(&body), URL_SAFE_NO_PAD.encode(signature))
    }

    /// Checks the signature of `token` and returns its claims; expiry and scope are the
    /// caller's to check with [`PassClaims::check`].
    pub fn verify(&self, token: &str) -> Result<PassClaims, PassError> {
        let (body, signature) = token.split_once('.').ok_or(PassError::Malformed)?;
        let body = URL_SAFE_NO_PAD.decode(body).map_err(|_| PassError::Malformed)?;
        let signature = URL_SAFE_NO_PAD.decode(signature).map_err(|_| PassError::Malformed)?;
        let claims = PassClaims::decode(body.as_slice()).map_err(|_| PassError::Malformed)?;
        let key = self.keys.iter().find(|key| key.id == claims.key_id).ok_or(PassError::UnknownKey)?;
        let mut mac = key.mac();
        mac.update(&body);
        mac.verify_slice(&signature).map_err(|_| PassError::BadSignature)?;
        Ok(claims)
    }
}

impl PassClaims {
    /// Refuses a pass that has expired at `now_ms` or was issued for another event or user.
    pub fn check(&self, event_id: &str, user_id: &str, now_ms: i64) -> Result<(), PassError> {
        if self.event_id != event_id {
            return Err(PassError::WrongEvent);
        }
        if self.user_id != user_id {
            return Err(PassError::WrongUser);
        }
        if self.expires_at_ms <= now_ms {
            return Err(PassError::Expired);
        }
        Ok(())
    }
}

/// Why a pass was refused, or a key ring could not be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PassError {
    #[error("the pass token is malformed")]
    Malformed,
    #[error("the pass was signed with an unknown key")]
    UnknownKey,
    #[error("the pass signature is invalid")]
    BadSignature,
    #[error("the pass has expired")]
    Expired,
    #[error("the pass was issued for another event")]
    WrongEvent,
    #[error("the pass was issued for another user")]
    WrongUser,
    #[error("invalid pass key configuration: {0}")]
    BadKeyConfig(String),
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn claims() -> PassClaims {
        PassClaims {
            key_id: String::new(),
            event_id: "e1".into(),
            user_id: "u1".into(),
            pass_id: "p1".into(),
            expires_at_ms: 2_000,
        }
    }

    #[test]
    fn a_signed_pass_verifies_across_a_rotation_and_a_forged_one_does_not() {
        let old: PassKeyRing = "k1:0123456789abcdef0123".parse().unwrap();
        let rotated: PassKeyRing = "k2:fedcba9876543210fedc,k1:0123456789abcdef0123".parse().unwrap();
        let token = old.sign(claims());
        let verified = rotated.verify(&token).unwrap();
        assert_eq!(verified.user_id, "u1");
        assert_eq!(verified.key_id, "k1");
        assert_eq!(verified.check("e1", "u1", 1_000), Ok(()));
        assert_eq!(verified.check("e1", "u1", 2_000), Err(PassError::Expired));
        assert_eq!(verified.check("e2", "u1", 1_000), Err(PassError::WrongEvent));
        assert_eq!(verified.check("e1", "u2", 1_000), Err(PassError::WrongUser));

        let (body, _) = token.split_once('.').unwrap();
        let forged = format!("{body}.{}", URL_SAFE_NO_PAD.encode([0u8; 32]));
        assert_eq!(rotated.verify(&forged), Err(PassError::BadSignature));
        let other: PassKeyRing = "k1:another-secret-entirely".parse().unwrap();
        assert_eq!(other.verify(&token), Err(PassError::BadSignature));
        assert_eq!(rotated.verify("garbage"), Err(PassError::Malformed));
        let retired: PassKeyRing = "k2:fedcba9876543210fedc".parse().unwrap();
        assert_eq!(retired.verify(&token), Err(PassError::UnknownKey));
    }

    #[test]
    fn the_key_ring_refuses_short_secrets_and_does_not_print_them() {
        assert!("k1:short".parse::<PassKeyRing>().is_err());
        let ring: PassKeyRing = "k1:0123456789abcdef0123".parse().unwrap();
        assert!(!format!("{ring:?}").contains("0123456789"));
    }
}
