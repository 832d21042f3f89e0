//! Reduce-scatter: member `r` gets block `r` of the reduction of every
//! member's vector of `p` blocks (`MPI_Reduce_scatter_block`).

use crate::fold::Fold;
use crate::schedule::{Builder, Region, Schedule};

/// Ring (commutative operations): in step `s` member `r` passes its
/// partial result of block `r - s - 1` to `r + 1` and adds its own input
/// to the partial of block `r - s - 2` it receives; after `p - 1` steps it
/// holds block `r`. Each member sends `(p - 1) / p` of the vector.
///
/// ```
/// use weft_collectives::reduce_scatter;
/// assert_eq!(reduce_scatter::ring(0, 4, 16, 8).messages_sent(), 3);
/// ```
pub fn ring(rank: usize, p: usize, count: usize, elem: usize) -> Schedule {
    let bb = count * elem;
    let input = |i: usize| Region::input((i % p) * bb, bb);
    let out = Region::output(0, bb);
    let bufs = [Region::tmp(0, bb), Region::tmp(bb, bb)];
    let (right, left) = ((rank + 1) % p, (rank + p - 1) % p);
    let mut b = Builder::default();
    if p == 1 {
        b.copy(input(0), out);
    }
    let mut last = input(rank + p - 1);
    for s in 0..p.saturating_sub(1) {
        let into = if s + 2 == p { out } else { bufs[s % 2] };
        if bb > 0 {
            b.send(right, last);
            b.recv(left, into);
        }
        b.reduce(input(rank + 2 * p - s - 2), into, false);
        b.end_round();
        last = into;
    }
    b.finish(p * bb, bb, 2 * bb)
}

/// Recursive halving (commutative operations): in step `k` member `r`
/// sends half of what it still holds to `r xor p / 2^(k+1)` and combines
/// the other half with the partner's; `log2 p` steps, `(p - 1) / p` of the
/// vector sent. Team sizes that are not powers of two are folded first.
pub fn recursive_halving(rank: usize, p: usize, count: usize, elem: usize) -> Schedule {
    let bb = count * elem;
    let n = p * bb;
    let f = Fold::new(p);
    let work = Region::tmp(0, n);
    let scratch = Region::tmp(n, n);
    let mine = Region::output(0, bb);
    let mut b = Builder::default();
    if f.is_extra(rank) {
        b.send(rank - 1, Region::input(0, n));
        b.end_round();
        b.recv(rank - 1, mine);
        return b.finish(n, bb, 2 * n);
    }
    b.copy(Region::input(0, n), work);
    if f.has_extra(rank) {
        b.recv(rank + 1, scratch);
        b.reduce(scratch, work, false);
    }
    let nr = f.new_rank(rank);
    let span = |lo: usize, hi: usize| {
        let s = f.lo(lo) * bb;
        (s, f.lo(hi) * bb - s)
    };
    emit_halving(&mut b, &f, nr, work, scratch, span);
    b.end_round();
    if f.has_extra(rank) {
        b.send(rank + 1, work.sub((rank + 1) * bb, bb));
    }
    b.copy(work.sub(rank * bb, bb), mine);
    b.finish(n, bb, 2 * n)
}

/// Recursive doubling allreduce of the whole vector, then each member
/// keeps its block (any operation, non-commutative included: partial
/// results always cover consecutive members in order).
pub fn allreduce_pick(rank: usize, p: usize, count: usize, elem: usize) -> Schedule {
    let bb = count * elem;
    let n = p * bb;
    let work = Region::tmp(0, n);
    let mut b = Builder::default();
    b.copy(Region::input(0, n), work);
    crate::allreduce::emit_recursive_doubling(&mut b, rank, p, work, Region::tmp(n, n));
    b.copy(work.sub(rank * bb, bb), Region::output(0, bb));
    b.finish(n, bb, 2 * n)
}

/// Recursive halving among the `p2` new ranks of a fold: new rank `nr`
/// ends holding chunk `nr` of `work`, reduced over every member. `span(lo,
/// hi)` gives the bytes (offset, length) of chunks `lo..hi` in `work`.
pub(crate) fn emit_halving(
    b: &mut Builder,
    f: &Fold,
    nr: usize,
    work: Region,
    scratch: Region,
    span: impl Fn(usize, usize) -> (usize, usize),
) {
    let (mut lo, mut hi) = (0, f.p2);
    let mut d = f.p2 / 2;
    while d >= 1 {
        let partner = f.lo(nr ^ d);
        let mid = lo + d;
        let lower = nr < mid;
        let (keep, give) = if lower {
            ((lo, mid), (mid, hi))
        } else {
            ((mid, hi), (lo, mid))
        };
        let (go, gl) = span(give.0, give.1);
        let (ko, kl) = span(keep.0, keep.1);
        if gl > 0 {
            b.send(partner, work.sub(go, gl));
        }
        if kl > 0 {
            b.recv(partner, scratch.sub(0, kl));
            b.reduce(scratch.sub(0, kl), work.sub(ko, kl), !lower);
        }
        b.end_round();
        (lo, hi) = keep;
        d /= 2;
    }
}
