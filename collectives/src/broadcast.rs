//! Broadcast: the root's buffer to every member, in place.

use crate::blocks::{lowbit_or, Blocks};
use crate::schedule::{Builder, Region, Schedule};

/// Binomial tree (small messages): `ceil(log2 p)` steps of the whole
/// message. In member numbers relative to the root, `v` receives from
/// `v - lowbit(v)` and then sends to `v + 2^k` for every `2^k < lowbit(v)`,
/// the largest subtree first.
///
/// ```
/// use weft_collectives::broadcast;
/// // The root sends to 4, 2 and 1 (relative), in that order.
/// assert_eq!(broadcast::binomial(0, 8, 0, 64).messages_sent(), 3);
/// ```
pub fn binomial(rank: usize, p: usize, root: usize, bytes: usize) -> Schedule {
    let mut b = Builder::default();
    emit_binomial(&mut b, rank, p, root, Region::output(0, bytes));
    b.finish(0, bytes, 0)
}

pub(crate) fn emit_binomial(b: &mut Builder, rank: usize, p: usize, root: usize, data: Region) {
    let v = (rank + p - root) % p;
    let real = |x: usize| (x + root) % p;
    let low = lowbit_or(v, p.next_power_of_two());
    if v != 0 {
        b.recv(real(v - low), data);
        b.end_round();
    }
    let mut m = low >> 1;
    while m > 0 {
        if v + m < p {
            b.send(real(v + m), data);
        }
        m >>= 1;
    }
}

/// Scatter then ring allgather (van de Geijn; large messages): the
/// message, cut into `p` blocks, is scattered down a binomial tree and
/// then allgathered around a ring, so each member sends and receives about
/// `2 (p - 1) / p` of it instead of all of it `log2 p` times.
pub fn scatter_allgather(
    rank: usize,
    p: usize,
    root: usize,
    count: usize,
    elem: usize,
) -> Schedule {
    let bl = Blocks::new(count, p, elem);
    let v = (rank + p - root) % p;
    let real = |x: usize| (x + root) % p;
    let region = |from: usize, to: usize| {
        let (off, len) = bl.span(from, to);
        Region::output(off, len)
    };
    let mut b = Builder::default();
    // Scatter: member v gets blocks v..v+sub(v) from its parent.
    let low = lowbit_or(v, p.next_power_of_two());
    if v != 0 {
        let r = region(v, (v + low).min(p));
        if r.len > 0 {
            b.recv(real(v - low), r);
            b.end_round();
        }
    }
    let mut m = low >> 1;
    while m > 0 {
        if v + m < p {
            let r = region(v + m, (v + 2 * m).min(p));
            if r.len > 0 {
                b.send(real(v + m), r);
            }
        }
        m >>= 1;
    }
    b.end_round();
    // Allgather around the ring of relative numbers.
    for s in 0..p.saturating_sub(1) {
        let out = (v + p - s) % p;
        let inn = (v + p - s - 1) % p;
        let (ro, ri) = (region(out, out + 1), region(inn, inn + 1));
        if ro.len > 0 {
            b.send(real(v + 1), ro);
        }
        if ri.len > 0 {
            b.recv(real(v + p - 1), ri);
        }
        b.end_round();
    }
    b.finish(0, count * elem, 0)
}
