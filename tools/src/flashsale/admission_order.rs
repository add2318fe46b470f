//! I5 from the client's side: admissions after the opening must follow join order, counted
//! as inversions, within each stretch between Redis restarts (a restart loses the queue).

use super::ctx::Admission;

/// The I5 figures of a sale.
#[derive(Debug, PartialEq, Eq)]
pub struct AdmissionOrder {
    /// Pairs admitted in the opposite order of their tickets.
    pub inversions: u64,
    /// Admissions compared.
    pub compared: u64,
    /// Pass ids that are no number (no order to compare).
    pub unparsable: usize,
    /// Admissions left out because their wait spans a Redis outage.
    pub across_restarts: usize,
}

/// Inversions between pass order and ticket order among the users who joined after the
/// opening. A Redis restart starts tickets and pass ids again from 1, so admissions are
/// compared within each stretch between restarts (`redis_outages`: went down, answered
/// again), and those whose wait overlaps an outage are left out.
pub fn admission_order(admissions: &[Admission], redis_outages: &[(f64, f64)]) -> AdmissionOrder {
    let mut stretches: std::collections::BTreeMap<usize, Vec<(u64, u64)>> = Default::default();
    let (mut unparsable, mut across_restarts) = (0, 0);
    for a in admissions.iter().filter(|a| a.after_open) {
        let Ok(pass) = a.pass_id.parse::<u64>() else {
            unparsable += 1;
            continue;
        };
        if redis_outages.iter().any(|(down, up)| a.joined_at <= *up && *down <= a.admitted_at) {
            across_restarts += 1;
            continue;
        }
        let stretch = redis_outages.iter().filter(|(_, up)| *up < a.joined_at).count();
        stretches.entry(stretch).or_default().push((pass, a.ticket));
    }
    let (mut inversions_total, mut compared) = (0, 0);
    for mut ordered in stretches.into_values() {
        ordered.sort_unstable();
        let mut tickets: Vec<u64> = ordered.iter().map(|(_, ticket)| *ticket).collect();
        compared += tickets.len() as u64;
        inversions_total += inversions(&mut tickets);
    }
    AdmissionOrder { inversions: inversions_total, compared, unparsable, across_restarts }
}

/// Pairs i < j with v[i] > v[j], by merge sort (sorts `v`).
fn inversions(v: &mut [u64]) -> u64 {
    if v.len() < 2 {
        return 0;
    }
    let mid = v.len() / 2;
    let mut count = inversions(&mut v[..mid]) + inversions(&mut v[mid..]);
    let mut merged = Vec::with_capacity(v.len());
    let (mut i, mut j) = (0, mid);
    while i < mid && j < v.len() {
        if v[i] <= v[j] {
            merged.push(v[i]);
            i += 1;
        } else {
            merged.push(v[j]);
            count += (mid - i) as u64;
            j += 1;
        }
    }
    merged.extend_from_slice(&v[i..mid]);
    merged.extend_from_slice(&v[j..]);
    v.copy_from_slice(&merged);
    count
}

#[cfg(test)]
mod tests {
    use super::{Admission, AdmissionOrder, admission_order, inversions};

    fn admitted(ticket: u64, pass: u64, joined_at: f64, admitted_at: f64) -> Admission {
        Admission { ticket, pass_id: pass.to_string(), after_open: true, joined_at, admitted_at }
    }

    #[test]
    fn admission_order_restarts_with_redis() {
        // Tickets and pass ids start again after the restart at 10-11 s (before it, pre-queue
        // users held tickets 1-4): in order within each
        // stretch, so no inversion; the user who waited across it is left out.
        let admissions = [
            admitted(5, 1, 0.0, 1.0),
            admitted(6, 2, 0.5, 2.0),
            admitted(7, 3, 9.0, 12.0),
            admitted(1, 1, 12.0, 13.0),
            admitted(2, 2, 12.5, 14.0),
        ];
        let order = admission_order(&admissions, &[(10.0, 11.0)]);
        assert_eq!(order, AdmissionOrder { inversions: 0, compared: 4, unparsable: 0, across_restarts: 1 });
        // Without the restart the same figures are inversions.
        assert!(admission_order(&admissions, &[]).inversions > 0);
        // An inversion within a stretch still counts.
        let swapped = [admitted(2, 1, 12.0, 13.0), admitted(1, 2, 12.5, 14.0)];
        assert_eq!(admission_order(&swapped, &[(10.0, 11.0)]).inversions, 1);
    }

    #[test]
    fn counts_inversions() {
        assert_eq!(inversions(&mut [1, 2, 3, 4]), 0);
        assert_eq!(inversions(&mut [2, 1, 3]), 1);
        assert_eq!(inversions(&mut [4, 3, 2, 1]), 6);
    }
}
