//! Allgather: every member's block, in member order, to every member.
//! The input is one block; the output `p` blocks.

use crate::fold::Fold;
use crate::schedule::{Builder, Region, Schedule};

/// Ring (large blocks): in step `s` member `r` passes block `r - s` to
/// `r + 1` and receives block `r - s - 1` from `r - 1`; `p - 1` steps, each
/// member sends `(p - 1)` blocks, the bandwidth lower bound.
///
/// ```
/// use weft_collectives::allgather;
/// assert_eq!(allgather::ring(0, 5, 8).rounds.len(), 4);
/// ```
pub fn ring(rank: usize, p: usize, block: usize) -> Schedule {
    let out = |i: usize| Region::output((i % p) * block, block);
    let (right, left) = ((rank + 1) % p, (rank + p - 1) % p);
    let mut b = Builder::default();
    for s in 0..p.saturating_sub(1) {
        let send = if s == 0 {
            Region::input(0, block)
        } else {
            out(rank + p - s)
        };
        b.send(right, send);
        b.recv(left, out(rank + 2 * p - s - 1));
        if s == 0 {
            b.copy(Region::input(0, block), out(rank));
        }
        b.end_round();
    }
    if p == 1 {
        b.copy(Region::input(0, block), out(0));
    }
    b.finish(block, p * block, 0)
}

/// Recursive doubling (small and medium blocks): in step `k` members `r`
/// and `r xor 2^k` swap everything they have gathered so far; `log2 p`
/// steps. Team sizes that are not powers of two are folded first (odd
/// members hand their block to the even one and get the result back).
pub fn recursive_doubling(rank: usize, p: usize, block: usize) -> Schedule {
    let f = Fold::new(p);
    let out = |from: usize, to: usize| Region::output(from * block, (to - from) * block);
    let all = out(0, p);
    let mut b = Builder::default();
    if f.is_extra(rank) {
        b.send(rank - 1, Region::input(0, block));
        b.end_round();
        b.recv(rank - 1, all);
        return b.finish(block, p * block, 0);
    }
    b.copy(Region::input(0, block), out(rank, rank + 1));
    if f.has_extra(rank) {
        b.recv(rank + 1, out(rank + 1, rank + 2));
        b.end_round();
    }
    let nr = f.new_rank(rank);
    let mut d = 1;
    while d < f.p2 {
        let partner = nr ^ d;
        let (mine, theirs) = (nr & !(d - 1), partner & !(d - 1));
        b.send(f.lo(partner), out(f.lo(mine), f.lo(mine + d)));
        b.recv(f.lo(partner), out(f.lo(theirs), f.lo(theirs + d)));
        b.end_round();
        d *= 2;
    }
    if f.has_extra(rank) {
        b.send(rank + 1, all);
    }
    b.finish(block, p * block, 0)
}

/// Bruck (small blocks, any team size): in step `k` member `r` sends the
/// first `min(2^k, p - 2^k)` blocks it holds (its own first) to
/// `r - 2^k` and appends those of `r + 2^k`; `ceil(log2 p)` steps, then
/// one local rotation into member order.
pub fn bruck(rank: usize, p: usize, block: usize) -> Schedule {
    let held = |from: usize, to: usize| Region::tmp(from * block, (to - from) * block);
    let mut b = Builder::default();
    b.copy(Region::input(0, block), held(0, 1));
    let mut d = 1;
    while d < p {
        let cnt = d.min(p - d);
        b.send((rank + p - d) % p, held(0, cnt));
        b.recv((rank + d) % p, held(d, d + cnt));
        b.end_round();
        d *= 2;
    }
    // held[i] is the block of member (rank + i) % p.
    b.copy(
        held(0, p - rank),
        Region::output(rank * block, (p - rank) * block),
    );
    b.copy(held(p - rank, p), Region::output(0, rank * block));
    b.finish(block, p * block, p * block)
}

/// Linear (large blocks, members outnumbering cores): the member's block
/// goes to every other member and theirs come from them, all in one round,
/// then its own is copied; a member moves whichever block's peer is
/// running instead of waiting, step by step, for one peer to be scheduled.
/// The same `p - 1` blocks sent and received as [`ring`].
///
/// ```
/// use weft_collectives::allgather;
/// let s = allgather::linear(0, 4, 8);
/// assert_eq!((s.messages_sent(), s.rounds.len()), (3, 1));
/// ```
pub fn linear(rank: usize, p: usize, block: usize) -> Schedule {
    let mut b = Builder::default();
    for s in 1..p {
        let (to, from) = ((rank + s) % p, (rank + p - s) % p);
        b.send(to, Region::input(0, block));
        b.recv(from, Region::output(from * block, block));
    }
    b.copy(Region::input(0, block), Region::output(rank * block, block));
    b.finish(block, p * block, 0)
}
