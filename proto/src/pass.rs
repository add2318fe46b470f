//! Admission passes: Ed25519-signed [`PassClaims`], verified without a network call.
//!
//! A token is `base64url(claims) "." base64url(Ed25519(signing key, claims))`, where `claims`
//! is the protobuf encoding of [`PassClaims`]. The claims name the key that signed them
//! (`key_id`), so a verifier holding the current and previous public keys accepts passes
//! across a key rotation.
//!
//! The two halves are separate types, so the split of trust is in the type system:
//! - [`PassSigner`] (admission, `PASS_SIGNING_KEYS`): private keys; the first signs, all
//!   verify.
//! - [`PassVerifier`] (seat-lock, `PASS_VERIFY_KEYS`): public keys only. It has no way to
//!   sign, so a seat-lock that is broken into cannot mint passes.
//!
//! Both parse `kid:base64url(32 bytes)[,kid:base64url(32 bytes)...]`, newest first: a 32-byte
//! seed for a signing key, a 32-byte public key for a verify key. [`generate_signing_key`]
//! makes a fresh pair of configuration strings. Rotation: put the new key first in
//! `PASS_SIGNING_KEYS` and add its public key to `PASS_VERIFY_KEYS` (verifiers first, then the
//! signer); drop the old one once every pass it signed has expired.
//!
//! Secrets never print: `Debug` shows key ids only, and a configuration error names the entry
//! by position, never by its text.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use prost::Message;

pub use crate::v1::PassClaims;

/// The public keys of example keys committed to the repository (the development overlay in
/// `k8s/base`, documentation). Anyone can read their seeds, so a service refuses to start
/// with one of them unless told that this is a development stack (`ALLOW_EXAMPLE_SECRETS`).
pub const EXAMPLE_VERIFY_KEYS: &[&str] = &[
    // k8s/base/pass-signing-keys.env, kid "dev".
    "dQVP4OIiOupBbpdIFFjwCUs0-_qgx73ZYAEmAatd7HE",
];

/// The longest key id accepted.
pub const MAX_KEY_ID_LEN: usize = 32;

/// Checks a key id: 1-[`MAX_KEY_ID_LEN`] characters of `[A-Za-z0-9_.-]`.
fn valid_key_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_KEY_ID_LEN
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

/// Splits a key configuration into `(kid, 32 bytes)` entries. Errors name the entry by its
/// position and never repeat the input, which holds secrets.
fn parse_entries(s: &str, what: &str) -> Result<Vec<(String, [u8; 32])>, PassError> {
    let mut entries: Vec<(String, [u8; 32])> = Vec::new();
    for (index, entry) in s.split(',').enumerate() {
        let position = index + 1;
        let (id, encoded) = entry.trim().split_once(':').ok_or_else(|| {
            PassError::BadKeyConfig(format!(
                "entry {position}: {what} must look like kid:base64url[,kid:base64url...]"
            ))
        })?;
        if !valid_key_id(id) {
            return Err(PassError::BadKeyConfig(format!(
                "entry {position}: the key id must be 1-{MAX_KEY_ID_LEN} of [A-Za-z0-9_.-]"
            )));
        }
        let bytes = URL_SAFE_NO_PAD.decode(encoded.trim_end_matches('=')).ok();
        let Some(bytes) = bytes.and_then(|bytes| <[u8; 32]>::try_from(bytes).ok()) else {
            return Err(PassError::BadKeyConfig(format!(
                "entry {position} (key id {id}): the key must be 32 bytes in base64url"
            )));
        };
        if entries.iter().any(|(known, _)| known == id) {
            return Err(PassError::BadKeyConfig(format!("entry {position}: key id {id} is listed twice")));
        }
        entries.push((id.to_owned(), bytes));
    }
    Ok(entries)
}

/// A named Ed25519 public key.
#[derive(Clone)]
struct VerifyKey {
    id: String,
    key: VerifyingKey,
}

impl VerifyKey {
    fn encoded(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.key.as_bytes())
    }

    fn is_example(&self) -> bool {
        EXAMPLE_VERIFY_KEYS.contains(&self.encoded().as_str())
    }
}

/// The public keys that verify passes (seat-lock's `PASS_VERIFY_KEYS`). It cannot sign.
#[derive(Clone)]
pub struct PassVerifier {
    keys: Vec<VerifyKey>,
}

impl std::fmt::Debug for PassVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PassVerifier").field("key_ids", &self.key_ids()).finish()
    }
}

impl std::str::FromStr for PassVerifier {
    type Err = PassError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let keys = parse_entries(s, "pass verify keys")?
            .into_iter()
            .enumerate()
            .map(|(index, (id, bytes))| {
                let key = VerifyingKey::from_bytes(&bytes).map_err(|_| {
                    PassError::BadKeyConfig(format!(
                        "entry {} (key id {id}): not an Ed25519 public key",
                        index + 1
                    ))
                })?;
                Ok(VerifyKey { id, key })
            })
            .collect::<Result<Vec<_>, PassError>>()?;
        Ok(Self { keys })
    }
}

impl PassVerifier {
    /// The key ids, newest first.
    pub fn key_ids(&self) -> Vec<&str> {
        self.keys.iter().map(|key| key.id.as_str()).collect()
    }

    /// The ids of keys that are committed examples ([`EXAMPLE_VERIFY_KEYS`]).
    pub fn example_key_ids(&self) -> Vec<&str> {
        self.keys.iter().filter(|key| key.is_example()).map(|key| key.id.as_str()).collect()
    }

    /// `kid:base64url(public key)[,...]`, the form [`PassVerifier`] parses.
    pub fn to_config(&self) -> String {
        self.keys.iter().map(|key| format!("{}:{}", key.id, key.encoded())).collect::<Vec<_>>().join(",")
    }

    /// Checks the signature of `token` and returns its claims; expiry and scope are the
    /// caller's to check with [`PassClaims::check`].
    pub fn verify(&self, token: &str) -> Result<PassClaims, PassError> {
        let (body, signature) = token.split_once('.').ok_or(PassError::Malformed)?;
        let body = URL_SAFE_NO_PAD.decode(body).map_err(|_| PassError::Malformed)?;
        let signature = URL_SAFE_NO_PAD.decode(signature).map_err(|_| PassError::Malformed)?;
        let signature = Signature::from_slice(&signature).map_err(|_| PassError::Malformed)?;
        let claims = PassClaims::decode(body.as_slice()).map_err(|_| PassError::Malformed)?;
        let key = self.keys.iter().find(|key| key.id == claims.key_id).ok_or(PassError::UnknownKey)?;
        key.key.verify_strict(&body, &signature).map_err(|_| PassError::BadSignature)?;
        Ok(claims)
    }
}

/// A named Ed25519 signing key. Its `Debug` never prints the seed.
struct SignKey {
    id: String,
    key: SigningKey,
}

/// The private keys that sign passes (admission's `PASS_SIGNING_KEYS`): the first signs new
/// passes; the public halves of all of them verify.
pub struct PassSigner {
    keys: Vec<SignKey>,
    verifier: PassVerifier,
}

impl Clone for PassSigner {
    fn clone(&self) -> Self {
        let keys = self.keys.iter().map(|key| SignKey { id: key.id.clone(), key: key.key.clone() }).collect();
        Self { keys, verifier: self.verifier.clone() }
    }
}

impl std::fmt::Debug for PassSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PassSigner")
            .field("key_ids", &self.verifier.key_ids())
            .field("seeds", &"<redacted>")
            .finish()
    }
}

impl std::str::FromStr for PassSigner {
    type Err = PassError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let keys = parse_entries(s, "pass signing keys")?
            .into_iter()
            .map(|(id, seed)| SignKey { id, key: SigningKey::from_bytes(&seed) })
            .collect();
        Self::new(keys)
    }
}

impl PassSigner {
    fn new(keys: Vec<SignKey>) -> Result<Self, PassError> {
        if keys.is_empty() {
            return Err(PassError::BadKeyConfig("at least one pass key is needed".into()));
        }
        let verifier = PassVerifier {
            keys: keys
                .iter()
                .map(|key| VerifyKey { id: key.id.clone(), key: key.key.verifying_key() })
                .collect(),
        };
        Ok(Self { keys, verifier })
    }

    /// The public half: what `PASS_VERIFY_KEYS` must hold for these signing keys.
    pub fn verifier(&self) -> &PassVerifier {
        &self.verifier
    }

    /// The ids of keys that are committed examples ([`EXAMPLE_VERIFY_KEYS`]).
    pub fn example_key_ids(&self) -> Vec<&str> {
        self.verifier.example_key_ids()
    }

    /// Signs `claims` with the current key, overwriting `claims.key_id`.
    pub fn sign(&self, mut claims: PassClaims) -> String {
        let key = &self.keys[0];
        claims.key_id = key.id.clone();
        let body = claims.encode_to_vec();
        let signature = key.key.sign(&body);
        format!("{}.{}", URL_SAFE_NO_PAD.encode(&body), URL_SAFE_NO_PAD.encode(signature.to_bytes()))
    }

    /// Checks a token signed by any of these keys (see [`PassVerifier::verify`]).
    pub fn verify(&self, token: &str) -> Result<PassClaims, PassError> {
        self.verifier.verify(token)
    }
}

/// A fresh key named `kid`: `(signing configuration, verify configuration)`, i.e. the values
/// of `PASS_SIGNING_KEYS` and `PASS_VERIFY_KEYS` for a one-key setup (`kid:seed`,
/// `kid:public key`, both base64url). For the local stack, tests and key generation. `kid`
/// must be 1-[`MAX_KEY_ID_LEN`] of `[A-Za-z0-9_.-]`, or the configurations will not parse.
pub fn generate_signing_key(kid: &str) -> (String, String) {
    let seed: [u8; 32] = rand::random();
    let key = SigningKey::from_bytes(&seed);
    let signing = format!("{kid}:{}", URL_SAFE_NO_PAD.encode(seed));
    let verify = format!("{kid}:{}", URL_SAFE_NO_PAD.encode(key.verifying_key().as_bytes()));
    (signing, verify)
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

/// Why a pass was refused, or a key configuration could not be read.
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
    /// Admission ended the pass (its holder left or bought); its slot went to the next in line.
    #[error("the pass has been ended by admission (left or used); join the queue again")]
    Revoked,
    /// The message never contains key material: entries are named by position.
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

    fn pair(kid: &str) -> (String, String) {
        generate_signing_key(kid)
    }

    #[test]
    fn a_signed_pass_verifies_across_a_rotation_and_a_forged_one_does_not() {
        let (k1_sign, k1_verify) = pair("k1");
        let (k2_sign, k2_verify) = pair("k2");
        let old: PassSigner = k1_sign.parse().unwrap();
        let rotated: PassVerifier = format!("{k2_verify},{k1_verify}").parse().unwrap();
        let token = old.sign(claims());
        let verified = rotated.verify(&token).unwrap();
        assert_eq!(verified.user_id, "u1");
        assert_eq!(verified.key_id, "k1");
        assert_eq!(verified.check("e1", "u1", 1_000), Ok(()));
        assert_eq!(verified.check("e1", "u1", 2_000), Err(PassError::Expired));
        assert_eq!(verified.check("e2", "u1", 1_000), Err(PassError::WrongEvent));
        assert_eq!(verified.check("e1", "u2", 1_000), Err(PassError::WrongUser));

        // The signer's own public half is the verify configuration.
        assert_eq!(old.verifier().to_config(), k1_verify);

        let (body, _) = token.split_once('.').unwrap();
        let forged = format!("{body}.{}", URL_SAFE_NO_PAD.encode([0u8; 64]));
        assert_eq!(rotated.verify(&forged), Err(PassError::BadSignature));
        // Claims changed under a valid signature (another user) do not verify.
        let (_, signature) = token.split_once('.').unwrap();
        let other_user = PassClaims { key_id: "k1".into(), user_id: "u2".into(), ..claims() };
        let swapped = format!("{}.{signature}", URL_SAFE_NO_PAD.encode(other_user.encode_to_vec()));
        assert_eq!(rotated.verify(&swapped), Err(PassError::BadSignature));
        // Another key under the same id does not verify.
        let (_, impostor) = pair("k1");
        let other: PassVerifier = impostor.parse().unwrap();
        assert_eq!(other.verify(&token), Err(PassError::BadSignature));
        assert_eq!(rotated.verify("garbage"), Err(PassError::Malformed));
        let retired: PassVerifier = k2_verify.parse().unwrap();
        assert_eq!(retired.verify(&token), Err(PassError::UnknownKey));
        // The new key signs once it is first.
        let new: PassSigner = format!("{k2_sign},{k1_sign}").parse().unwrap();
        assert_eq!(rotated.verify(&new.sign(claims())).unwrap().key_id, "k2");
    }

    #[test]
    fn key_configurations_never_print_their_keys() {
        let (signing, verify) = pair("k1");
        let seed = signing.split_once(':').unwrap().1.to_owned();
        let signer: PassSigner = signing.parse().unwrap();
        assert!(!format!("{signer:?}").contains(&seed));
        assert!(format!("{signer:?}").contains("k1"));
        let verifier: PassVerifier = verify.parse().unwrap();
        assert!(format!("{verifier:?}").contains("k1"));

        // Malformed entries: short, not base64, no kid, bad kid, duplicate; none is echoed.
        let truncated = format!("k1:{}", &seed[..20]);
        let not_base64 = format!("k1:{seed}!!");
        for bad in [truncated.as_str(), not_base64.as_str(), seed.as_str(), "k 1:AAAA", ""] {
            let error = bad.parse::<PassSigner>().unwrap_err().to_string();
            assert!(!error.contains(&seed[..20]), "{error}");
            assert!(bad.parse::<PassVerifier>().is_err());
        }
        let twice = format!("{signing},{signing}");
        let error = twice.parse::<PassSigner>().unwrap_err().to_string();
        assert!(error.contains("twice") && !error.contains(&seed), "{error}");
    }

    #[test]
    fn the_committed_example_key_is_recognised() {
        let example: PassVerifier = format!("dev:{}", EXAMPLE_VERIFY_KEYS[0]).parse().unwrap();
        assert_eq!(example.example_key_ids(), ["dev"]);
        // The seed committed in k8s/base/pass-signing-keys.env.
        let committed: PassSigner = "dev:j0qaVnym6i8KY9oX21flE4s6OfdGmYP5kSWkEBOnE30".parse().unwrap();
        assert_eq!(committed.example_key_ids(), ["dev"]);
        let (signing, verify) = pair("fresh");
        assert!(verify.parse::<PassVerifier>().unwrap().example_key_ids().is_empty());
        assert!(signing.parse::<PassSigner>().unwrap().example_key_ids().is_empty());
    }
}
