//! Barrier by dissemination (Hensgen, Finkel and Manber, 1988).
//!
//! In round `k` (for `2^k < p`) member `r` signals member `r + 2^k` and
//! waits for the signal of member `r - 2^k` (mod `p`). After
//! `ceil(log2 p)` rounds every member has heard, directly or through
//! others, from every other: the lower bound in message steps, for any `p`.

use crate::schedule::{Builder, Region, Schedule};

/// The schedule of member `rank` of `p`.
///
/// ```
/// use weft_collectives::barrier;
/// assert_eq!(barrier::dissemination(0, 5).rounds.len(), 3);
/// ```
pub fn dissemination(rank: usize, p: usize) -> Schedule {
    let mut b = Builder::default();
    let mut d = 1;
    while d < p {
        b.send((rank + d) % p, Region::output(0, 0));
        b.recv((rank + p - d) % p, Region::output(0, 0));
        b.end_round();
        d *= 2;
    }
    b.finish(0, 0, 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim;

    #[test]
    fn message_count_is_ceil_log2_p_per_member() {
        for p in [1usize, 2, 3, 7, 8, 9, 33] {
            let rounds = p.next_power_of_two().trailing_zeros() as usize;
            for r in 0..p {
                assert_eq!(dissemination(r, p).messages_sent(), rounds, "p = {p}");
            }
        }
    }

    #[test]
    fn a_member_missing_is_a_deadlock() {
        let members: Vec<sim::Member> = (0..4)
            .map(|r| sim::Member {
                schedule: if r == 3 {
                    Schedule::default().into()
                } else {
                    dissemination(r, 4).into()
                },
                input: vec![],
                output: vec![],
            })
            .collect();
        assert!(matches!(
            sim::run(members, None),
            Err(sim::SimError::Deadlock { .. })
        ));
    }
}
