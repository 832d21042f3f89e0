//! All-to-all: member `r`'s input block `j` becomes member `j`'s output
//! block `r`. Input and output are `p` blocks each.

use crate::schedule::{Builder, Region, Schedule};

/// Pairwise exchange (large blocks): in step `s` member `r` sends its
/// block for `r + s` and receives the block of `r - s`; `p - 1` steps of
/// one block, the bandwidth lower bound.
///
/// ```
/// use weft_collectives::alltoall;
/// assert_eq!(alltoall::pairwise(0, 4, 8).messages_sent(), 3);
/// ```
pub fn pairwise(rank: usize, p: usize, block: usize) -> Schedule {
    let mut b = Builder::default();
    b.copy(
        Region::input(rank * block, block),
        Region::output(rank * block, block),
    );
    for s in 1..p {
        let (to, from) = ((rank + s) % p, (rank + p - s) % p);
        b.send(to, Region::input(to * block, block));
        b.recv(from, Region::output(from * block, block));
        b.end_round();
    }
    b.finish(p * block, p * block, 0)
}

/// Linear (large blocks, ranks outnumbering cores): the exchanges of
/// [`pairwise`] all in one round, then the member's own block copied once
/// they are done; a member moves whichever block's peer is running instead
/// of waiting, at each step, for one peer to be scheduled. The same `p - 1`
/// messages of one block.
///
/// ```
/// use weft_collectives::alltoall;
/// let s = alltoall::linear(0, 4, 8);
/// assert_eq!((s.messages_sent(), s.rounds.len()), (3, 1));
/// ```
pub fn linear(rank: usize, p: usize, block: usize) -> Schedule {
    let mut b = Builder::default();
    for s in 1..p {
        let (to, from) = ((rank + s) % p, (rank + p - s) % p);
        b.send(to, Region::input(to * block, block));
        b.recv(from, Region::output(from * block, block));
    }
    b.copy(
        Region::input(rank * block, block),
        Region::output(rank * block, block),
    );
    b.finish(p * block, p * block, 0)
}

/// Bruck (small blocks): after a local rotation, in step `k` member `r`
/// sends every block whose index has bit `k` set to `r + 2^k`, packed into
/// one message, and replaces them with those from `r - 2^k`;
/// `ceil(log2 p)` messages of about `p / 2` blocks, then a local inverse
/// rotation.
pub fn bruck(rank: usize, p: usize, block: usize) -> Schedule {
    let n = p * block;
    let held = |i: usize| Region::tmp(i * block, block);
    let half = p.div_ceil(2) * block;
    let (pack, unpack) = (n, n + half);
    let mut b = Builder::default();
    // held[i] = input block (rank + i) % p.
    b.copy(
        Region::input(rank * block, (p - rank) * block),
        Region::tmp(0, (p - rank) * block),
    );
    b.copy(
        Region::input(0, rank * block),
        Region::tmp((p - rank) * block, rank * block),
    );
    let mut d = 1;
    while d < p {
        let idx: Vec<usize> = (0..p).filter(|i| i & d != 0).collect();
        for (k, &i) in idx.iter().enumerate() {
            b.copy(held(i), Region::tmp(pack + k * block, block));
        }
        let len = idx.len() * block;
        b.send((rank + d) % p, Region::tmp(pack, len));
        b.recv((rank + p - d) % p, Region::tmp(unpack, len));
        for (k, &i) in idx.iter().enumerate() {
            b.copy(Region::tmp(unpack + k * block, block), held(i));
        }
        d *= 2;
    }
    // held[i] now is the block member (rank - i) % p sent to this member.
    for i in 0..p {
        b.copy(held(i), Region::output(((rank + p - i) % p) * block, block));
    }
    b.finish(n, n, n + 2 * half)
}
