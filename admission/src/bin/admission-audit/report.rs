//! The audit of one opening, and its report for an operator (text) or a program (JSON).

use std::{collections::HashSet, fmt::Write as _};

use admission::fairness::{Admission, AuditMismatch, EventShuffleKey, audit_admissions};
use serde::Serialize;
use uuid::Uuid;

use crate::{
    exit,
    read::{PassConflict, Reading},
};

/// The commitment check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum CommitmentCheck {
    /// No `--commitment`: the key was not checked against one.
    NotGiven,
    Matches,
    Mismatch {
        published: String,
        /// SHA-256 of the given key.
        computed: String,
    },
}

/// What the audit concludes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Fair,
    Unfair,
    Inconclusive,
}

/// The audit of one opening.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    pub event_id: String,
    pub nats_prefix: String,
    pub sealed_ticket: u64,
    /// Messages read on the `Admitted` subject, of any event.
    pub messages_read: u64,
    /// Admissions of this event (one per pass id).
    pub admissions: usize,
    /// Users admitted (first admission each) with a ticket <= `sealed_ticket`.
    pub prequeue_users: usize,
    /// Users admitted (first admission each) who joined after the opening.
    pub later_joiners: usize,
    /// Admissions after a user's first one (rejoins); they do not count for the order.
    pub readmissions: usize,
    pub duplicates: u64,
    pub other_events: u64,
    pub unreadable: u64,
    pub commitment: CommitmentCheck,
    /// The first order mismatch, if any.
    pub mismatch: Option<AuditMismatch>,
    pub pass_conflicts: Vec<PassConflict>,
    pub verdict: Verdict,
}

/// Audits a reading of the stream.
pub fn audit(
    event_id: Uuid,
    nats_prefix: &str,
    key: &EventShuffleKey,
    sealed_ticket: u64,
    commitment: Option<&str>,
    reading: Reading,
) -> Report {
    let commitment = match commitment {
        None => CommitmentCheck::NotGiven,
        Some(published) if published.eq_ignore_ascii_case(&key.commitment()) => CommitmentCheck::Matches,
        Some(published) => CommitmentCheck::Mismatch {
            published: published.to_ascii_lowercase(),
            computed: key.commitment(),
        },
    };
    let mut users = HashSet::new();
    let first: Vec<&Admission> =
        reading.admissions.iter().filter(|a| users.insert(a.user_id.as_str())).collect();
    let prequeue_users = first.iter().filter(|a| a.ticket <= sealed_ticket).count();
    let mismatch = audit_admissions(key, sealed_ticket, &reading.admissions).err();
    let unfair = mismatch.is_some()
        || !reading.conflicts.is_empty()
        || matches!(commitment, CommitmentCheck::Mismatch { .. });
    let verdict = if unfair {
        Verdict::Unfair
    } else if reading.admissions.is_empty() || reading.unreadable > 0 {
        Verdict::Inconclusive
    } else {
        Verdict::Fair
    };
    Report {
        event_id: event_id.to_string(),
        nats_prefix: nats_prefix.to_owned(),
        sealed_ticket,
        messages_read: reading.messages,
        admissions: reading.admissions.len(),
        prequeue_users,
        later_joiners: first.len() - prequeue_users,
        readmissions: reading.admissions.len() - first.len(),
        duplicates: reading.duplicates,
        other_events: reading.other_events,
        unreadable: reading.unreadable,
        commitment,
        mismatch,
        pass_conflicts: reading.conflicts,
        verdict,
    }
}

impl Report {
    /// The process exit code for this verdict (see [`exit`]).
    pub fn exit_code(&self) -> i32 {
        match self.verdict {
            Verdict::Fair => exit::FAIR,
            Verdict::Unfair => exit::UNFAIR,
            Verdict::Inconclusive => exit::INCONCLUSIVE,
        }
    }

    /// The report as an operator reads it.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let _ =
            writeln!(out, "admission audit of event {} (stream {}_events)", self.event_id, self.nats_prefix);
        let _ = writeln!(
            out,
            "  messages read:    {} ({} duplicates, {} of other events, {} unreadable)",
            self.messages_read, self.duplicates, self.other_events, self.unreadable
        );
        let _ = writeln!(
            out,
            "  admissions:       {} ({} pre-queue users, ticket <= {}; {} later joiners; {} readmissions)",
            self.admissions, self.prequeue_users, self.sealed_ticket, self.later_joiners, self.readmissions
        );
        let commitment = match &self.commitment {
            CommitmentCheck::NotGiven => "not checked (no --commitment)".to_owned(),
            CommitmentCheck::Matches => "SHA-256(event key) matches the published commitment".to_owned(),
            CommitmentCheck::Mismatch { published, computed } => {
                format!("MISMATCH: published {published}, SHA-256(event key) is {computed}")
            }
        };
        let _ = writeln!(out, "  commitment:       {commitment}");
        if let Some(AuditMismatch { index, expected, found }) = &self.mismatch {
            let _ = writeln!(
                out,
                "  first mismatch:   at index {index} expected {expected:?}, found {found:?} (users' first admissions by pass id)"
            );
        }
        for conflict in &self.pass_conflicts {
            let _ = writeln!(
                out,
                "  pass id conflict: pass {} went to {:?} (ticket {}) and to {:?} (ticket {})",
                conflict.pass_id,
                conflict.first_user,
                conflict.first_ticket,
                conflict.second_user,
                conflict.second_ticket
            );
        }
        let verdict = match self.verdict {
            Verdict::Fair => {
                "FAIR: pre-queue in key order, before every later joiner; later joiners in join order"
            }
            Verdict::Unfair => "UNFAIR: see above",
            Verdict::Inconclusive if self.admissions == 0 => {
                "INCONCLUSIVE: no admission of this event in the stream (wrong --event-id or --nats-prefix?)"
            }
            Verdict::Inconclusive => "INCONCLUSIVE: some admissions of the stream could not be read",
        };
        let _ = writeln!(out, "  verdict:          {verdict}");
        out
    }

    /// The report as pretty JSON.
    pub fn to_json(&self) -> String {
        match serde_json::to_string_pretty(self) {
            Ok(json) => json,
            Err(error) => unreachable!("a report of strings and numbers always serializes: {error}"),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use admission::fairness::{ShuffleKey, opening_order};

    use super::*;

    #[test]
    fn the_verdict_needs_admissions_a_clean_read_and_every_check_passing() {
        let event = Uuid::new_v4();
        let key = ShuffleKey::new(b"0123456789abcdef".to_vec()).unwrap().event_key(&event.to_string());
        let order = opening_order(&key, ["a", "b", "c"]);
        let mut reading = Reading::default();
        for (i, user) in order.iter().enumerate() {
            reading.admissions.push(Admission {
                pass_id: i as u64 + 1,
                user_id: user.clone(),
                ticket: i as u64 + 1,
            });
        }
        reading.admissions.push(Admission { pass_id: 4, user_id: "late".into(), ticket: 9 });
        reading.admissions.push(Admission { pass_id: 5, user_id: order[0].clone(), ticket: 10 });
        let report = |reading: &Reading, commitment: Option<&str>| {
            audit(event, "ticketing", &key, 3, commitment, reading.clone())
        };

        let fair = report(&reading, Some(&key.commitment().to_uppercase()));
        assert_eq!((fair.verdict, fair.exit_code()), (Verdict::Fair, exit::FAIR));
        assert_eq!((fair.prequeue_users, fair.later_joiners, fair.readmissions), (3, 1, 1));
        assert_eq!(fair.commitment, CommitmentCheck::Matches);
        assert!(fair.to_text().contains("FAIR"));

        let other = ShuffleKey::new(b"fedcba9876543210".to_vec()).unwrap().event_key(&event.to_string());
        let wrong = report(&reading, Some(&other.commitment()));
        assert_eq!((wrong.verdict, wrong.exit_code()), (Verdict::Unfair, exit::UNFAIR));
        assert!(matches!(wrong.commitment, CommitmentCheck::Mismatch { .. }));

        let mut swapped = reading.clone();
        swapped.admissions[0].pass_id = 2;
        swapped.admissions[1].pass_id = 1;
        let unfair = report(&swapped, None);
        assert_eq!(unfair.verdict, Verdict::Unfair);
        let mismatch = unfair.mismatch.clone().unwrap();
        assert_eq!(
            (mismatch.index, mismatch.expected, mismatch.found),
            (0, order[0].clone(), order[1].clone())
        );
        assert!(unfair.to_text().contains("at index 0"));
        let json: serde_json::Value = serde_json::from_str(&unfair.to_json()).unwrap();
        assert_eq!(json["verdict"], "unfair");
        assert_eq!(json["mismatch"]["index"], 0);

        let mut unreadable = reading.clone();
        unreadable.unreadable = 1;
        assert_eq!(report(&unreadable, None).exit_code(), exit::INCONCLUSIVE);
        assert_eq!(report(&Reading::default(), None).verdict, Verdict::Inconclusive);
    }
}
