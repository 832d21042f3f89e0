//! Reduce: the reduction of every member's vector to the root, in place
//! (the root's buffer becomes the result; the others' are unchanged).

use crate::blocks::{lowbit_or, Blocks};
use crate::fold::Fold;
use crate::schedule::{Builder, Region, Schedule};

/// Bytes of one segment of a binomial reduce: vectors longer than this
/// go up the tree in segments of about this size, so that each segment is
/// received into scratch space that stays in cache and reduced at once,
/// and an inner member passes one segment on while it receives the next.
/// (Measured on one node at 1 MiB: 64 KiB segments gained less, 16 KiB
/// ones lost, as each is a message of its own.)
pub const SEGMENT: usize = 256 << 10;

/// How many segments a binomial reduce of `bytes` sends: `bytes /`
/// [`SEGMENT`] rounded up, at least one.
pub fn segments(bytes: usize) -> usize {
    bytes.div_ceil(SEGMENT).max(1)
}

/// Binomial tree: each member combines its children's partial results
/// with its own and passes the result to its parent; `ceil(log2 p)` steps
/// of the whole vector, pipelined in segments of about [`SEGMENT`] bytes.
/// For a non-commutative operation the tree is rooted at member 0, so
/// every partial result covers consecutive members in order, and member 0
/// forwards the result to the root.
///
/// ```
/// use weft_collectives::reduce;
/// // A leaf sends its vector and is done.
/// assert_eq!(reduce::binomial(3, 4, 0, 2, 8, true).messages_sent(), 1);
/// // A long vector goes in segments.
/// let long = reduce::binomial(1, 2, 0, 1 << 20, 1, true);
/// assert_eq!(long.messages_sent(), reduce::segments(1 << 20));
/// ```
pub fn binomial(
    rank: usize,
    p: usize,
    root: usize,
    count: usize,
    elem: usize,
    commutative: bool,
) -> Schedule {
    let bytes = count * elem;
    let tree_root = if commutative { root } else { 0 };
    let v = (rank + p - tree_root) % p;
    let real = |x: usize| (x + tree_root) % p;
    let low = lowbit_or(v, p.next_power_of_two());
    let children: Vec<usize> = (0..low.trailing_zeros())
        .map(|k| v + (1 << k))
        .filter(|&c| c < p)
        .collect();
    let parent = (v != 0).then(|| real(v - low));
    let nseg = segments(bytes);
    let segs = Blocks::new(count, nseg, elem);
    let seg = |s: usize| segs.span(s, s + 1);
    let longest = seg(0).1;
    let data = Region::output(0, bytes);
    // The root accumulates in place; others keep their buffer unchanged.
    let (acc, slots) = if rank == root || children.is_empty() {
        (data, 0)
    } else {
        (Region::tmp(0, bytes), bytes)
    };
    let mut b = Builder::default();
    if children.is_empty() {
        // A leaf sends every segment at once (a team of one has no parent).
        if let Some(to) = parent {
            for s in 0..nseg {
                let (off, len) = seg(s);
                b.send(to, data.sub(off, len));
            }
        }
    } else {
        for s in 0..nseg {
            let (off, len) = seg(s);
            for (i, &c) in children.iter().enumerate() {
                b.recv(real(c), Region::tmp(slots + i * longest, len));
            }
            if let (Some(to), true) = (parent, s > 0) {
                let (off, len) = seg(s - 1);
                b.send(to, acc.sub(off, len));
            }
            b.copy(data.sub(off, len), acc.sub(off, len));
            for i in 0..children.len() {
                b.reduce(
                    Region::tmp(slots + i * longest, len),
                    acc.sub(off, len),
                    false,
                );
            }
        }
        if let Some(to) = parent {
            let (off, len) = seg(nseg - 1);
            b.send(to, acc.sub(off, len));
        }
    }
    if rank == tree_root && rank != root {
        b.end_round();
        b.send(root, acc);
    }
    if rank == root && rank != tree_root {
        b.end_round();
        b.recv(tree_root, data);
    }
    b.finish(0, bytes, slots + children.len() * longest)
}

/// Reduce-scatter by recursive halving, then binomial gather
/// (Rabenseifner; large messages, commutative operations only): each
/// member sends about `2 (p - 1) / p` of the vector instead of all of it
/// `log2 p` times. Team sizes that are not powers of two are folded
/// first (see the fold of odd members onto even ones).
pub fn scatter_gather(rank: usize, p: usize, root: usize, count: usize, elem: usize) -> Schedule {
    let n = count * elem;
    let f = Fold::new(p);
    let mut b = Builder::default();
    // Work vector: the root's own buffer, a copy elsewhere.
    let (work, mut tmp) = if rank == root {
        (Region::output(0, n), 0)
    } else {
        (Region::tmp(0, n), n)
    };
    let scratch = Region::tmp(tmp, n);
    tmp += n;
    b.copy(Region::output(0, n), work);
    if f.is_extra(rank) {
        b.send(rank - 1, Region::output(0, n));
    } else {
        if f.has_extra(rank) {
            b.recv(rank + 1, scratch);
            b.reduce(scratch, work, false);
        }
        let nr = f.new_rank(rank);
        let chunks = Blocks::new(count, f.p2, elem);
        crate::reduce_scatter::emit_halving(&mut b, &f, nr, work, scratch, |lo, hi| {
            chunks.span(lo, hi)
        });
        // Binomial gather of the chunks to new rank 0, which is member 0.
        let low = lowbit_or(nr, f.p2);
        let mut m = 1;
        while m < low {
            let (off, len) = chunks.span(nr + m, nr + 2 * m);
            if len > 0 {
                b.recv(f.lo(nr + m), work.sub(off, len));
            }
            m *= 2;
        }
        b.end_round();
        if nr != 0 {
            let (off, len) = chunks.span(nr, nr + low);
            if len > 0 {
                b.send(f.lo(nr - low), work.sub(off, len));
            }
        }
    }
    if rank == 0 && root != 0 {
        b.end_round();
        b.send(root, work);
    }
    if rank == root && root != 0 {
        b.end_round();
        b.recv(0, Region::output(0, n));
    }
    b.finish(0, n, tmp)
}
