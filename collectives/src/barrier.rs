//! Dissemination barrier (Hensgen, Finkel and Manber, 1988).
//!
//! In round `k` (for `2^k < p`) member `r` signals member `r + 2^k` and waits
//! for the signal of member `r - 2^k` (mod `p`). After `ceil(log2 p)` rounds
//! every member has heard, directly or transitively, from every other, which
//! is the lower bound in message steps; it needs no power-of-two size.

use crate::{Channel, Error};

/// Returns once every member of the team has entered the barrier. Uses tags
/// `0..ceil(log2 p)`.
///
/// ```
/// use weft_collectives::{barrier, sim};
/// let results = sim::run(5, |chan| barrier::dissemination(chan));
/// assert!(results.iter().all(Result::is_ok));
/// ```
pub fn dissemination<C: Channel>(chan: &mut C) -> Result<(), Error<C::Error>> {
    let (r, p) = (chan.rank(), chan.size());
    let mut dist = 1;
    let mut round = 0;
    while dist < p {
        chan.send((r + dist) % p, round, &[])
            .map_err(Error::Channel)?;
        let got = chan
            .recv((r + p - dist) % p, round, &mut [])
            .map_err(Error::Channel)?;
        if got != 0 {
            return Err(Error::Length {
                peer: (r + p - dist) % p,
                expected: 0,
                got,
            });
        }
        dist *= 2;
        round += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn nobody_leaves_before_everybody_arrived() {
        for p in (1..=65).chain([128]) {
            let arrived = AtomicUsize::new(0);
            let results = sim::run(p, |chan| {
                arrived.fetch_add(1, Ordering::SeqCst);
                dissemination(chan)?;
                let seen = arrived.load(Ordering::SeqCst);
                dissemination(chan)?;
                Ok::<_, Error<sim::Closed>>(seen)
            });
            for r in results {
                assert_eq!(r.unwrap(), p, "p = {p}");
            }
        }
    }

    #[test]
    fn message_count_is_p_times_ceil_log2_p() {
        for p in [1usize, 2, 3, 7, 8, 9, 33] {
            let counts = sim::run(p, |chan| {
                dissemination(chan).unwrap();
                chan.sent()
            });
            let rounds = p.next_power_of_two().trailing_zeros() as usize;
            assert!(counts.iter().all(|&c| c == rounds), "p = {p}: {counts:?}");
        }
    }
}
