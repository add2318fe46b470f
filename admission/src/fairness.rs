//! The fair pre-queue: a keyed, reproducible shuffle of everyone who joined before opening,
//! and the audit that proves it.
//!
//! Each event has its own key, `event_key = HMAC-SHA256(SHUFFLE_KEY, "admission-shuffle:" ||
//! event_id)`. At opening every pre-queue member gets the score
//! `first 6 bytes, big-endian, of HMAC-SHA256(event_key, user_id)` (a number below
//! [`PREQUEUE_TIER`]); the queue serves lowest score first, ties broken by user id (bytes),
//! exactly as a Redis sorted set orders them. Users who join after opening score
//! `PREQUEUE_TIER + ticket`, behind every shuffled user, in join order.
//!
//! Because the order is a sort by a per-user value, it does not depend on who else waited:
//! the order of any subset (say, the pre-queue users who did not leave) is the same
//! permutation restricted to that subset. An auditor who is given the event key (published
//! after the sale) and the admitted pre-queue users in admission order recomputes it with
//! [`opening_order`] or [`audit_opening`], or with `openssl` alone (see the crate docs).
//! Publishing [`EventShuffleKey::commitment`] before the sale opens shows the key was fixed
//! before anyone joined.

use std::{fmt, str::FromStr};

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// Scores below this are pre-queue scores (provisional ticket before opening, shuffle score
/// after); post-opening joiners score `PREQUEUE_TIER + ticket`. 2^48 leaves 48 bits of
/// shuffle (ties are rare even for millions of users) and keeps every score below 2^53, so
/// Redis's double scores are exact.
pub const PREQUEUE_TIER: u64 = 1 << 48;

/// What goes in front of the event id when deriving an event key, so the master secret's
/// other uses (if any) never produce the same MAC.
const EVENT_KEY_DOMAIN: &str = "admission-shuffle:";

fn mac(key: &[u8]) -> HmacSha256 {
    match HmacSha256::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// The master shuffle secret (`SHUFFLE_KEY`). Its `Debug` never prints it, and it is never
/// published itself: only per-event keys derived from it are.
#[derive(Clone)]
pub struct ShuffleKey {
    secret: Vec<u8>,
}

impl fmt::Debug for ShuffleKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShuffleKey").field("secret", &"<redacted>").finish()
    }
}

/// `SHUFFLE_KEY` values committed to the repository as examples (the development overlay,
/// the production template); refused at start unless `ALLOW_EXAMPLE_SECRETS` is set.
pub const EXAMPLE_SHUFFLE_KEYS: &[&str] =
    &["PLACEHOLDER-dev-only-not-a-real-shuffle-key", "PLACEHOLDER-generate-with-tools-deploy-gen-secrets"];

impl ShuffleKey {
    /// The shortest secret accepted, in bytes.
    pub const MIN_SECRET_LEN: usize = 16;

    /// True for a committed example value ([`EXAMPLE_SHUFFLE_KEYS`]).
    pub fn is_example(&self) -> bool {
        EXAMPLE_SHUFFLE_KEYS.iter().any(|example| example.as_bytes() == self.secret.as_slice())
    }

    /// A key from raw secret bytes (at least [`Self::MIN_SECRET_LEN`]).
    pub fn new(secret: impl Into<Vec<u8>>) -> Result<Self, String> {
        let secret = secret.into();
        if secret.len() < Self::MIN_SECRET_LEN {
            return Err(format!("SHUFFLE_KEY must have at least {} bytes", Self::MIN_SECRET_LEN));
        }
        Ok(Self { secret })
    }

    /// The key of one event (event id in canonical lowercase UUID form).
    pub fn event_key(&self, event_id: &str) -> EventShuffleKey {
        let mut mac = mac(&self.secret);
        mac.update(EVENT_KEY_DOMAIN.as_bytes());
        mac.update(event_id.as_bytes());
        EventShuffleKey(mac.finalize().into_bytes().into())
    }
}

impl FromStr for ShuffleKey {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s.as_bytes().to_vec())
    }
}

/// The key of one event's shuffle; safe to publish after the sale (it reveals nothing about
/// [`ShuffleKey`] nor about other events). `Debug` hides it; `to_hex` is the deliberate way out.
#[derive(Clone, PartialEq, Eq)]
pub struct EventShuffleKey([u8; 32]);

impl fmt::Debug for EventShuffleKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("EventShuffleKey").field(&"<redacted>").finish()
    }
}

impl EventShuffleKey {
    /// The key in lowercase hex, as an operator publishes it after the sale.
    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }

    /// Reads a published key (64 hex digits).
    pub fn from_hex(published: &str) -> Result<Self, String> {
        let published = published.trim();
        if published.len() != 64 || !published.is_ascii() {
            return Err("an event shuffle key is 64 hex digits".into());
        }
        let mut key = [0u8; 32];
        for (i, byte) in key.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&published[2 * i..2 * i + 2], 16)
                .map_err(|_| "an event shuffle key is 64 hex digits".to_owned())?;
        }
        Ok(Self(key))
    }

    /// SHA-256 of the key, in hex: published before the sale opens, it commits the operator
    /// to the key without revealing it.
    pub fn commitment(&self) -> String {
        hex(&Sha256::digest(self.0))
    }

    /// The user's opening score, below [`PREQUEUE_TIER`]: lower is served first.
    pub fn score(&self, user_id: &str) -> u64 {
        let mut mac = mac(&self.0);
        mac.update(user_id.as_bytes());
        let digest = mac.finalize().into_bytes();
        digest[..6].iter().fold(0u64, |score, byte| (score << 8) | u64::from(*byte))
    }
}

/// The opening order of `users` (the pre-queue, or any part of it): by score, then user id.
pub fn opening_order<'a>(key: &EventShuffleKey, users: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut scored: Vec<(u64, &str)> = users.into_iter().map(|user| (key.score(user), user)).collect();
    scored.sort_unstable();
    scored.dedup();
    scored.into_iter().map(|(_, user)| user.to_owned()).collect()
}

/// Where an audited order departs from the keyed shuffle (or from join order).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize)]
#[error("at place {index} the shuffle puts {expected:?} but {found:?} was admitted")]
pub struct AuditMismatch {
    /// 0-based place in the admitted order (users' first admissions, by pass id).
    pub index: usize,
    pub expected: String,
    pub found: String,
}

/// Checks that the pre-queue users, in the order they were admitted (first admission of each,
/// i.e. by pass id), follow the keyed shuffle. Users who left before being admitted are
/// simply absent: the shuffle restricted to the rest is the same sort.
pub fn audit_opening(key: &EventShuffleKey, admitted_in_order: &[String]) -> Result<(), AuditMismatch> {
    let expected = opening_order(key, admitted_in_order.iter().map(String::as_str));
    for (index, (expected, found)) in expected.iter().zip(admitted_in_order).enumerate() {
        if expected != found {
            return Err(AuditMismatch { index, expected: expected.clone(), found: found.clone() });
        }
    }
    if expected.len() != admitted_in_order.len() {
        // Only a user listed twice gets here: dedup shortened the expected order.
        let index = expected.len();
        return Err(AuditMismatch {
            index,
            expected: String::new(),
            found: admitted_in_order[index].clone(),
        });
    }
    Ok(())
}

/// One admission as announced on the bus (`Admitted`) or stored in the `admitted` hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admission {
    /// Pass ids are handed out in admission order.
    pub pass_id: u64,
    pub user_id: String,
    /// The user's join number at admission.
    pub ticket: u64,
}

/// Audits a whole sale from its admissions, the `sealed_ticket` of the opening record (the
/// last pre-queue ticket) and the published event key:
/// 1. only the first admission of each user counts (a later one follows a rejoin);
/// 2. every pre-queue user (ticket <= `sealed_ticket`) comes before every later joiner;
/// 3. the pre-queue users follow the keyed shuffle ([`audit_opening`]);
/// 4. the later joiners follow their tickets (first come, first served).
///
/// Returns the pre-queue users in admission order when all holds.
pub fn audit_admissions(
    key: &EventShuffleKey,
    sealed_ticket: u64,
    admissions: &[Admission],
) -> Result<Vec<String>, AuditMismatch> {
    let mut by_pass: Vec<&Admission> = admissions.iter().collect();
    by_pass.sort_by_key(|admission| admission.pass_id);
    let mut seen = std::collections::HashSet::new();
    let first: Vec<&Admission> = by_pass.into_iter().filter(|a| seen.insert(a.user_id.as_str())).collect();
    let prequeue: Vec<String> =
        first.iter().filter(|a| a.ticket <= sealed_ticket).map(|a| a.user_id.clone()).collect();
    if let Some(index) =
        first.windows(2).position(|pair| pair[0].ticket > sealed_ticket && pair[1].ticket <= sealed_ticket)
    {
        return Err(AuditMismatch {
            index: index + 1,
            expected: "a later joiner after every pre-queue user".into(),
            found: first[index + 1].user_id.clone(),
        });
    }
    audit_opening(key, &prequeue)?;
    let later: Vec<&&Admission> = first.iter().filter(|a| a.ticket > sealed_ticket).collect();
    if let Some(index) = later.windows(2).position(|pair| pair[0].ticket > pair[1].ticket) {
        return Err(AuditMismatch {
            index: prequeue.len() + index + 1,
            expected: format!("a ticket above {}", later[index].ticket),
            found: later[index + 1].user_id.clone(),
        });
    }
    Ok(prequeue)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn keys_round_trip_and_scores_are_stable_and_below_the_tier() {
        let key = ShuffleKey::new(b"0123456789abcdef".to_vec()).unwrap().event_key("e");
        let again = EventShuffleKey::from_hex(&key.to_hex()).unwrap();
        assert_eq!(key, again);
        assert_eq!(key.score("ann"), again.score("ann"));
        assert!((0..1000).all(|i| key.score(&format!("u{i}")) < PREQUEUE_TIER));
        assert_ne!(key.commitment(), key.to_hex());
        assert!(!format!("{key:?}").contains(&key.to_hex()[..8]));
        assert!(ShuffleKey::new(b"short".to_vec()).is_err());
    }

    /// Values computed independently with `openssl dgst` (the procedure in the crate docs),
    /// so the documented audit and this code cannot drift apart.
    #[test]
    fn matches_the_documented_openssl_procedure() {
        let master: ShuffleKey = "shuffle-secret-for-tests-0123".parse().unwrap();
        let key = master.event_key("0f8fad5b-d9cb-469f-a165-70867728950e");
        assert_eq!(key.to_hex(), "bff363d6ff493cf2a58a602a31d54fcd70d40aae703fe5806871c86abe2d01e4");
        assert_eq!(key.commitment(), "b4723d1111f3ee0a38917a8899a37ba9728c51282358fe58e67a6cdb0a3f0ab2");
        assert_eq!(key.score("fan-1"), 163_198_165_703_393);
    }

    #[test]
    fn the_audit_accepts_the_shuffle_and_names_a_swap() {
        let key = ShuffleKey::new(b"0123456789abcdef".to_vec()).unwrap().event_key("e");
        let order = opening_order(&key, ["a", "b", "c", "d", "e"]);
        assert_eq!(audit_opening(&key, &order), Ok(()));
        let mut swapped = order.clone();
        swapped.swap(1, 2);
        assert_eq!(audit_opening(&key, &swapped).unwrap_err().index, 1);
        let other = ShuffleKey::new(b"fedcba9876543210".to_vec()).unwrap().event_key("e");
        assert_ne!(opening_order(&other, ["a", "b", "c", "d", "e", "f", "g", "h"]), {
            opening_order(&key, ["a", "b", "c", "d", "e", "f", "g", "h"])
        });
    }

    #[test]
    fn the_sale_audit_checks_tiers_shuffle_and_fifo() {
        let key = ShuffleKey::new(b"0123456789abcdef".to_vec()).unwrap().event_key("e");
        let order = opening_order(&key, ["a", "b", "c"]);
        let ticket = |user: &str| u64::from(user.as_bytes()[0] - b'a') + 1;
        let mut admissions: Vec<Admission> = order
            .iter()
            .enumerate()
            .map(|(i, user)| Admission { pass_id: i as u64 + 1, user_id: user.clone(), ticket: ticket(user) })
            .collect();
        admissions.push(Admission { pass_id: 4, user_id: "x".into(), ticket: 4 });
        admissions.push(Admission { pass_id: 5, user_id: "y".into(), ticket: 5 });
        // A rejoin after expiry is a second admission: ignored.
        admissions.push(Admission { pass_id: 6, user_id: order[0].clone(), ticket: 6 });
        assert_eq!(audit_admissions(&key, 3, &admissions), Ok(order.clone()));

        let mut fifo_broken = admissions.clone();
        fifo_broken[3].ticket = 5;
        fifo_broken[4].ticket = 4;
        assert!(audit_admissions(&key, 3, &fifo_broken).is_err());
        let mut jumped = admissions.clone();
        jumped[3].pass_id = 0;
        assert_eq!(audit_admissions(&key, 3, &jumped).unwrap_err().found, order[0]);
    }
}
