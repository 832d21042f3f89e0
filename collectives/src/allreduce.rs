//! Allreduce: every member's vector becomes the reduction of all of them,
//! in place.

use crate::blocks::Blocks;
use crate::fold::Fold;
use crate::schedule::{Builder, Region, Schedule};

/// Recursive doubling (small messages; any operation): in step `k` members
/// `r` and `r xor 2^k` swap their partial results and both combine them,
/// the lower members' on the left, so both compute the same bits.
/// `log2 p` steps of the whole vector, plus one step before and after for
/// team sizes that are not powers of two.
///
/// ```
/// use weft_collectives::allreduce;
/// assert_eq!(allreduce::recursive_doubling(0, 8, 64).rounds.len(), 3);
/// ```
pub fn recursive_doubling(rank: usize, p: usize, bytes: usize) -> Schedule {
    let mut b = Builder::default();
    emit_recursive_doubling(
        &mut b,
        rank,
        p,
        Region::output(0, bytes),
        Region::tmp(0, bytes),
    );
    b.finish(0, bytes, bytes)
}

/// Recursive doubling on `data`, with `scratch` as long as `data`.
pub(crate) fn emit_recursive_doubling(
    b: &mut Builder,
    rank: usize,
    p: usize,
    data: Region,
    scratch: Region,
) {
    let f = Fold::new(p);
    if f.is_extra(rank) {
        b.send(rank - 1, data);
        b.end_round();
        b.recv(rank - 1, data);
        return;
    }
    if f.has_extra(rank) {
        b.recv(rank + 1, scratch);
        b.reduce(scratch, data, false);
    }
    let nr = f.new_rank(rank);
    let mut d = 1;
    while d < f.p2 {
        let partner = nr ^ d;
        b.send(f.lo(partner), data);
        b.recv(f.lo(partner), scratch);
        b.reduce(scratch, data, partner < nr);
        d *= 2;
    }
    if f.has_extra(rank) {
        b.end_round();
        b.send(rank + 1, data);
    }
}

/// Ring (large messages; commutative operations): a reduce-scatter around
/// the ring in `p - 1` steps of one block (each member ends with one block
/// of the result), then an allgather around the ring in `p - 1` more.
/// Each member sends `2 (p - 1) / p` of the vector: the bandwidth lower
/// bound, at the price of `2 (p - 1)` steps.
pub fn ring(rank: usize, p: usize, count: usize, elem: usize) -> Schedule {
    let bl = Blocks::new(count, p, elem);
    let block = |i: usize| {
        let (off, len) = bl.span(i % p, i % p + 1);
        Region::output(off, len)
    };
    let scratch_len = bl.span(0, 1).1;
    let (right, left) = ((rank + 1) % p, (rank + p - 1) % p);
    let mut b = Builder::default();
    for s in 0..p.saturating_sub(1) {
        let out = block(rank + p - s);
        let inn = block(rank + 2 * p - s - 1);
        if out.len > 0 {
            b.send(right, out);
        }
        if inn.len > 0 {
            let scratch = Region::tmp(0, inn.len);
            b.recv(left, scratch);
            b.reduce(scratch, inn, true);
        }
        b.end_round();
    }
    for s in 0..p.saturating_sub(1) {
        let out = block(rank + 1 + p - s);
        let inn = block(rank + p - s);
        if out.len > 0 {
            b.send(right, out);
        }
        if inn.len > 0 {
            b.recv(left, inn);
        }
        b.end_round();
    }
    b.finish(0, count * elem, scratch_len)
}

/// Rabenseifner (large messages; commutative operations): reduce-scatter
/// by recursive halving, then allgather by recursive doubling; each member
/// sends about `2 (p - 1) / p` of the vector in `2 log2 p` steps. Team
/// sizes that are not powers of two are folded first.
pub fn rabenseifner(rank: usize, p: usize, count: usize, elem: usize) -> Schedule {
    let n = count * elem;
    let f = Fold::new(p);
    let data = Region::output(0, n);
    let scratch = Region::tmp(0, n);
    let mut b = Builder::default();
    if f.is_extra(rank) {
        b.send(rank - 1, data);
        b.end_round();
        b.recv(rank - 1, data);
        return b.finish(0, n, n);
    }
    if f.has_extra(rank) {
        b.recv(rank + 1, scratch);
        b.reduce(scratch, data, false);
    }
    let nr = f.new_rank(rank);
    let chunks = Blocks::new(count, f.p2, elem);
    let span = |lo: usize, hi: usize| chunks.span(lo, hi);
    crate::reduce_scatter::emit_halving(&mut b, &f, nr, data, scratch, span);
    let mut d = 1;
    while d < f.p2 {
        let partner = nr ^ d;
        let (mine, theirs) = (nr & !(d - 1), partner & !(d - 1));
        let (mo, ml) = span(mine, mine + d);
        let (to, tl) = span(theirs, theirs + d);
        if ml > 0 {
            b.send(f.lo(partner), data.sub(mo, ml));
        }
        if tl > 0 {
            b.recv(f.lo(partner), data.sub(to, tl));
        }
        b.end_round();
        d *= 2;
    }
    if f.has_extra(rank) {
        b.send(rank + 1, data);
    }
    b.finish(0, n, n)
}

/// Linear (large messages, members outnumbering cores; any operation):
/// the vector is cut into `p` blocks; every member sends block `j` to
/// member `j` and receives its own block from every other member, all in
/// one round, and combines them in member order (`x0 ⊕ x1 ⊕ ... ⊕ x(p-1)`,
/// so the operation need not commute); then every member sends its
/// finished block to every other and receives theirs, in a second round.
/// Each block is combined by one member only, so every member gets the
/// same bits.
/// Each member sends `2 (p - 1) / p` of the vector, as the ring does, in
/// two rounds instead of `2 (p - 1)`: a member moves whichever block's
/// peer is running instead of waiting, step by step, for one peer to be
/// scheduled.
///
/// ```
/// use weft_collectives::allreduce;
/// let s = allreduce::linear(0, 4, 64, 8);
/// assert_eq!((s.messages_sent(), s.rounds.len()), (6, 2));
/// ```
pub fn linear(rank: usize, p: usize, count: usize, elem: usize) -> Schedule {
    let bl = Blocks::new(count, p, elem);
    let block = |i: usize| {
        let (off, len) = bl.span(i, i + 1);
        Region::output(off, len)
    };
    let mine = block(rank);
    let slot = |i: usize| Region::tmp(i * mine.len, mine.len);
    let mut b = Builder::default();
    for s in 1..p {
        let (to, from) = ((rank + s) % p, (rank + p - s) % p);
        if block(to).len > 0 {
            b.send(to, block(to));
        }
        if mine.len > 0 {
            b.recv(from, slot(from));
        }
    }
    if mine.len > 0 {
        for j in (0..rank).rev() {
            b.reduce(slot(j), mine, true);
        }
        for j in rank + 1..p {
            b.reduce(slot(j), mine, false);
        }
    }
    b.end_round();
    for s in 1..p {
        let (to, from) = ((rank + s) % p, (rank + p - s) % p);
        if mine.len > 0 {
            b.send(to, mine);
        }
        if block(from).len > 0 {
            b.recv(from, block(from));
        }
    }
    b.finish(0, count * elem, p * bl.span(0, 1).1)
}
