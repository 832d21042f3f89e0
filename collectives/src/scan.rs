//! Prefix reductions, in place: inclusive (`scan`: member `r` gets the
//! reduction of members `0..=r`) and exclusive (`exscan`: of `0..r`;
//! member 0's buffer is left unchanged).
//!
//! Both by recursive doubling (any operation): in step `k` members `r` and
//! `r xor 2^k` swap the reduction of their aligned groups of `2^k`; the
//! higher member adds the lower group's on the left of its prefix.
//! `ceil(log2 p)` steps of the whole vector.

use crate::schedule::{Builder, Region, Schedule};

/// Inclusive scan.
///
/// ```
/// use weft_collectives::scan;
/// assert_eq!(scan::inclusive(5, 6, 8).messages_sent(), 2);
/// ```
pub fn inclusive(rank: usize, p: usize, bytes: usize) -> Schedule {
    build(rank, p, bytes, true)
}

/// Exclusive scan.
pub fn exclusive(rank: usize, p: usize, bytes: usize) -> Schedule {
    build(rank, p, bytes, false)
}

fn build(rank: usize, p: usize, bytes: usize, inclusive: bool) -> Schedule {
    let data = Region::output(0, bytes);
    let group = Region::tmp(0, bytes);
    let got = Region::tmp(bytes, bytes);
    let mut b = Builder::default();
    b.copy(data, group);
    let mut prefix_set = inclusive;
    let mut d = 1;
    while d < p {
        let partner = rank ^ d;
        if partner < p {
            b.send(partner, group);
            b.recv(partner, got);
            if partner < rank {
                if prefix_set {
                    b.reduce(got, data, true);
                } else {
                    b.copy(got, data);
                    prefix_set = true;
                }
                b.reduce(got, group, true);
            } else {
                b.reduce(got, group, false);
            }
        }
        d *= 2;
    }
    b.finish(0, bytes, 2 * bytes)
}
