//! Webhook secrets at rest: sealed with ChaCha20-Poly1305 under a key from configuration.
//!
//! `WEBHOOK_SECRET_KEY` is `kid:base64key[,kid:base64key...]`, each key 32 bytes. The first
//! key seals; every key opens, so a key rotates by putting the new one first: at start the
//! notifier re-seals every secret under the first key ([`reseal_all`]), after which the old
//! key may be dropped. A sealed secret is `nonce (12 random bytes) || ciphertext || tag`,
//! stored beside the key id that sealed it, with the webhook's id as associated data (a
//! sealed secret copied onto another webhook's row does not open).
//!
//! Nothing here ever prints a key: parse errors name the entry, not its value, and
//! [`SecretKeys`]' `Debug` shows key ids only.

use base64::{Engine as _, engine::general_purpose::STANDARD};
use chacha20poly1305::{
    ChaCha20Poly1305, Key, KeyInit, Nonce,
    aead::{Aead, Payload},
};
use rand::RngCore;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};

/// Key length of ChaCha20-Poly1305.
pub const KEY_LEN: usize = 32;
/// Nonce length of ChaCha20-Poly1305; nonces are random (96 bits: no practical collision for
/// the number of secrets one key seals).
pub const NONCE_LEN: usize = 12;
/// Longest key id.
pub const MAX_KID_LEN: usize = 32;
/// Secrets re-sealed per statement batch at start.
pub const RESEAL_BATCH: u64 = 500;
/// Domain separation of the associated data, versioned with the sealing format.
const AAD_PREFIX: &[u8] = b"ticketing.notifier.webhook-secret.v1:";

/// The example key committed for the local stack and tests. Refused at start unless
/// `ALLOW_EXAMPLE_SECRETS=true`: anyone can read it, so it protects nothing.
pub const EXAMPLE_SECRET_KEY: &str = "example:bm90aWZpZXItZXhhbXBsZS1rZXktbm90LXNlY3JldCE=";

/// Why the configured keys are unusable. Never carries key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("WEBHOOK_SECRET_KEY is required (kid:base64-32-byte-key[,kid:key...])")]
    Missing,
    #[error("WEBHOOK_SECRET_KEY entry {0}: expected kid:base64-32-byte-key")]
    Malformed(usize),
    #[error("WEBHOOK_SECRET_KEY entry {0}: key id must be 1-{MAX_KID_LEN} of [A-Za-z0-9_-]")]
    BadKid(usize),
    #[error("WEBHOOK_SECRET_KEY entry {0}: key must be {KEY_LEN} bytes of standard base64")]
    BadKey(usize),
    #[error("WEBHOOK_SECRET_KEY entry {0}: key id {1:?} is given twice")]
    DuplicateKid(usize, String),
}

/// Why a sealed secret did not open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("secret sealed under key id {0:?}, which WEBHOOK_SECRET_KEY does not hold")]
    UnknownKid(String),
    #[error("sealed secret does not open (wrong key or tampered)")]
    Corrupt,
}

/// The configured keys; the first seals.
#[derive(Clone)]
pub struct SecretKeys {
    keys: Vec<(String, [u8; KEY_LEN])>,
}

impl std::fmt::Debug for SecretKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kids: Vec<&str> = self.keys.iter().map(|(kid, _)| kid.as_str()).collect();
        f.debug_struct("SecretKeys").field("kids", &kids).finish_non_exhaustive()
    }
}

/// A secret as stored: the sealing key's id and `nonce || ciphertext || tag`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub kid: String,
    pub bytes: Vec<u8>,
}

impl SecretKeys {
    /// Parses `kid:base64key[,kid:base64key...]`.
    pub fn parse(spec: &str) -> Result<Self, KeyError> {
        if spec.trim().is_empty() {
            return Err(KeyError::Missing);
        }
        let mut keys: Vec<(String, [u8; KEY_LEN])> = Vec::new();
        for (index, entry) in spec.split(',').enumerate() {
            let number = index + 1;
            let (kid, key) = entry.trim().split_once(':').ok_or(KeyError::Malformed(number))?;
            let kid_ok = (1..=MAX_KID_LEN).contains(&kid.len())
                && kid.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if !kid_ok {
                return Err(KeyError::BadKid(number));
            }
            let key: [u8; KEY_LEN] = STANDARD
                .decode(key.trim())
                .ok()
                .and_then(|bytes| bytes.try_into().ok())
                .ok_or(KeyError::BadKey(number))?;
            if keys.iter().any(|(known, _)| known == kid) {
                return Err(KeyError::DuplicateKid(number, kid.to_owned()));
            }
            keys.push((kid.to_owned(), key));
        }
        Ok(Self { keys })
    }

    /// Whether any key is the committed example key (whatever its key id).
    pub fn uses_example_key(&self) -> bool {
        let Ok(example) = Self::parse(EXAMPLE_SECRET_KEY) else { return false };
        self.keys.iter().any(|(_, key)| example.keys.iter().any(|(_, e)| e == key))
    }

    /// The id of the key that seals.
    pub fn primary_kid(&self) -> &str {
        self.keys.first().map_or("", |(kid, _)| kid.as_str())
    }

    fn cipher(key: &[u8; KEY_LEN]) -> ChaCha20Poly1305 {
        ChaCha20Poly1305::new(&Key::from(*key))
    }

    fn aad(webhook_id: uuid::Uuid) -> Vec<u8> {
        [AAD_PREFIX, webhook_id.as_bytes()].concat()
    }

    /// Seals `secret` for the webhook `webhook_id` under the first key, with a fresh nonce.
    pub fn seal(&self, webhook_id: uuid::Uuid, secret: &[u8]) -> Sealed {
        let Some((kid, key)) = self.keys.first() else {
            unreachable!("SecretKeys::parse refuses an empty key list")
        };
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let aad = Self::aad(webhook_id);
        let ciphertext =
            match Self::cipher(key).encrypt(&Nonce::from(nonce), Payload { msg: secret, aad: &aad }) {
                Ok(ciphertext) => ciphertext,
                // Only a message longer than 256 GiB fails; secrets are at most 256 bytes.
                Err(_) => unreachable!("ChaCha20-Poly1305 seals any message of this size"),
            };
        Sealed { kid: kid.clone(), bytes: [nonce.as_slice(), &ciphertext].concat() }
    }

    /// Opens what [`SecretKeys::seal`] made for `webhook_id`.
    pub fn open(&self, webhook_id: uuid::Uuid, sealed: &Sealed) -> Result<Vec<u8>, OpenError> {
        let (_, key) = self
            .keys
            .iter()
            .find(|(kid, _)| *kid == sealed.kid)
            .ok_or_else(|| OpenError::UnknownKid(sealed.kid.clone()))?;
        let (nonce, ciphertext) = sealed.bytes.split_at_checked(NONCE_LEN).ok_or(OpenError::Corrupt)?;
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| OpenError::Corrupt)?;
        let aad = Self::aad(webhook_id);
        Self::cipher(key)
            .decrypt(&Nonce::from(nonce), Payload { msg: ciphertext, aad: &aad })
            .map_err(|_| OpenError::Corrupt)
    }
}

/// What [`reseal_all`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Resealed {
    /// Plain-text secrets (from before secrets were sealed) now sealed.
    pub plaintext: u64,
    /// Secrets sealed under an older key now sealed under the first key.
    pub rotated: u64,
}

/// Why start-up sealing failed.
#[derive(Debug, thiserror::Error)]
pub enum ResealError {
    #[error("database: {0}")]
    Database(#[from] sea_orm::DbErr),
    #[error("webhook {webhook_id}: {source}")]
    Open { webhook_id: uuid::Uuid, source: OpenError },
}

/// Seals every plain-text secret left from before sealing, and re-seals every secret sealed
/// under a key other than the first, so after it no plain text is stored and only the first
/// key is needed. Each row is updated only if it is still as read, so replicas starting
/// together do not undo each other. `plaintext_column` says whether the legacy `secret`
/// column still exists.
pub async fn reseal_all(
    db: &DatabaseConnection,
    keys: &SecretKeys,
    plaintext_column: bool,
) -> Result<Resealed, ResealError> {
    let mut done = Resealed::default();
    if plaintext_column {
        loop {
            let rows = db
                .query_all_raw(Statement::from_sql_and_values(
                    DbBackend::Postgres,
                    "SELECT webhook_id, secret FROM webhooks WHERE secret IS NOT NULL LIMIT $1",
                    [(RESEAL_BATCH as i64).into()],
                ))
                .await?;
            if rows.is_empty() {
                break;
            }
            for row in &rows {
                let webhook_id: uuid::Uuid = row.try_get_by("webhook_id")?;
                let secret: String = row.try_get_by("secret")?;
                let sealed = keys.seal(webhook_id, secret.as_bytes());
                done.plaintext += db
                    .execute_raw(Statement::from_sql_and_values(
                        DbBackend::Postgres,
                        "UPDATE webhooks SET secret = NULL, secret_kid = $2, secret_sealed = $3 \
                         WHERE webhook_id = $1 AND secret IS NOT NULL",
                        [webhook_id.into(), sealed.kid.into(), sealed.bytes.into()],
                    ))
                    .await?
                    .rows_affected();
            }
        }
    }
    let mut after = uuid::Uuid::nil();
    loop {
        let rows = db
            .query_all_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                "SELECT webhook_id, secret_kid, secret_sealed FROM webhooks \
                 WHERE secret_kid <> $1 AND webhook_id > $2 ORDER BY webhook_id LIMIT $3",
                [keys.primary_kid().into(), after.into(), (RESEAL_BATCH as i64).into()],
            ))
            .await?;
        let Some(last) = rows.last() else { break };
        after = last.try_get_by("webhook_id")?;
        for row in &rows {
            let webhook_id: uuid::Uuid = row.try_get_by("webhook_id")?;
            let old = Sealed { kid: row.try_get_by("secret_kid")?, bytes: row.try_get_by("secret_sealed")? };
            let secret =
                keys.open(webhook_id, &old).map_err(|source| ResealError::Open { webhook_id, source })?;
            let sealed = keys.seal(webhook_id, &secret);
            done.rotated += db
                .execute_raw(Statement::from_sql_and_values(
                    DbBackend::Postgres,
                    "UPDATE webhooks SET secret_kid = $2, secret_sealed = $3 \
                     WHERE webhook_id = $1 AND secret_kid = $4 AND secret_sealed = $5",
                    [
                        webhook_id.into(),
                        sealed.kid.into(),
                        sealed.bytes.into(),
                        old.kid.into(),
                        old.bytes.into(),
                    ],
                ))
                .await?
                .rows_affected();
        }
    }
    Ok(done)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const KEY_A: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    const KEY_B: &str = "Hx4dHBsaGRgXFhUUExIREA8ODQwLCgkIBwYFBAMCAQA=";

    #[test]
    fn seals_with_the_first_key_and_opens_with_any() {
        let old = SecretKeys::parse(&format!("a:{KEY_A}")).unwrap();
        let rotated = SecretKeys::parse(&format!("b:{KEY_B}, a:{KEY_A}")).unwrap();
        let id = uuid::Uuid::new_v4();
        let sealed = old.seal(id, b"the-webhook-secret");
        assert_eq!(sealed.kid, "a");
        assert_eq!(sealed.bytes.len(), NONCE_LEN + 18 + 16);
        assert!(!sealed.bytes.windows(6).any(|w| w == b"secret"), "no plain text in the sealed bytes");
        assert_eq!(rotated.open(id, &sealed).unwrap(), b"the-webhook-secret");
        let resealed = rotated.seal(id, b"the-webhook-secret");
        assert_eq!(resealed.kid, "b");
        assert_eq!(old.open(id, &resealed), Err(OpenError::UnknownKid("b".into())));
        // Fresh nonce every time.
        assert_ne!(old.seal(id, b"x").bytes, old.seal(id, b"x").bytes);
        // Bound to its webhook, and to its bytes.
        assert_eq!(old.open(uuid::Uuid::new_v4(), &sealed), Err(OpenError::Corrupt));
        let mut tampered = sealed.clone();
        tampered.bytes[NONCE_LEN] ^= 1;
        assert_eq!(old.open(id, &tampered), Err(OpenError::Corrupt));
        assert_eq!(old.open(id, &Sealed { kid: "a".into(), bytes: vec![1, 2] }), Err(OpenError::Corrupt));
    }

    #[test]
    fn bad_specs_are_refused_without_printing_the_key() {
        let secretish = "c2VjcmV0LWtleS1ub3QtMzItYnl0ZXM=";
        for (spec, expected) in [
            ("", KeyError::Missing),
            ("  ", KeyError::Missing),
            (secretish, KeyError::Malformed(1)),
            (&format!("a:{KEY_A},{secretish}") as &str, KeyError::Malformed(2)),
            (&format!(":{KEY_A}"), KeyError::BadKid(1)),
            (&format!("a b:{KEY_A}"), KeyError::BadKid(1)),
            (&format!("a:{secretish}"), KeyError::BadKey(1)),
            ("a:not base64!", KeyError::BadKey(1)),
            (&format!("a:{KEY_A},a:{KEY_B}"), KeyError::DuplicateKid(2, "a".into())),
        ] {
            let error = SecretKeys::parse(spec).unwrap_err();
            assert_eq!(error, expected, "{spec}");
            assert!(!error.to_string().contains(secretish), "{error}");
        }
        let keys = SecretKeys::parse(&format!("a:{KEY_A},b:{KEY_B}")).unwrap();
        let debug = format!("{keys:?}");
        assert!(debug.contains("\"a\"") && !debug.contains(KEY_A) && !debug.contains("0, 1, 2"), "{debug}");
    }

    #[test]
    fn the_example_key_is_recognised_under_any_kid() {
        assert!(SecretKeys::parse(EXAMPLE_SECRET_KEY).unwrap().uses_example_key());
        let renamed = EXAMPLE_SECRET_KEY.replacen("example", "prod", 1);
        assert!(SecretKeys::parse(&format!("a:{KEY_A},{renamed}")).unwrap().uses_example_key());
        assert!(!SecretKeys::parse(&format!("a:{KEY_A}")).unwrap().uses_example_key());
    }
}
