//! First come, first served, measured from the client's side: the admission tests assert it
//! and the bench reports it.

use std::time::Instant;

/// Counts FIFO inversions: pairs where a join was answered before another was sent, yet got
/// the higher ticket. `joins` is (sent, received, ticket); calls that overlap may be answered
/// in any order and never count.
pub fn fifo_inversions(joins: &mut [(Instant, Instant, u64)]) -> u64 {
    let mut by_received: Vec<(Instant, u64)> = joins.iter().map(|(_, r, t)| (*r, *t)).collect();
    by_received.sort_by_key(|(r, _)| *r);
    joins.sort_by_key(|(s, _, _)| *s);
    let (mut next, mut highest_done, mut inversions) = (0, None::<u64>, 0);
    for (sent, _, ticket) in joins.iter() {
        while next < by_received.len() && by_received[next].0 < *sent {
            highest_done = highest_done.max(Some(by_received[next].1));
            next += 1;
        }
        if highest_done.is_some_and(|h| h > *ticket) {
            inversions += 1;
        }
    }
    inversions
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn inversions_count_only_answered_before_sent() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        // Overlapping calls may be answered in any order; sequential ones must not invert.
        let mut ok = vec![(at(0), at(10), 2), (at(1), at(9), 1), (at(20), at(30), 3)];
        assert_eq!(fifo_inversions(&mut ok), 0);
        let mut bad = vec![(at(0), at(10), 5), (at(20), at(30), 4)];
        assert_eq!(fifo_inversions(&mut bad), 1);
    }
}
