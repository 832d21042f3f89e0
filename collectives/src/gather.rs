//! Gather: every member's block, in member order, to the root. The output
//! (`p` blocks) matters at the root only; elsewhere it is empty.

use crate::blocks::lowbit_or;
use crate::schedule::{Builder, Region, Schedule};

/// Binomial tree: member `v` (relative to the root) collects the blocks
/// of its subtree `v..v + lowbit(v)` and sends them to `v - lowbit(v)`
/// in one message; `ceil(log2 p)` steps.
///
/// ```
/// use weft_collectives::gather;
/// assert_eq!(gather::binomial(1, 4, 0, 8).messages_sent(), 1);
/// ```
pub fn binomial(rank: usize, p: usize, root: usize, block: usize) -> Schedule {
    let v = (rank + p - root) % p;
    let real = |x: usize| (x + root) % p;
    let sub = if v == 0 {
        p
    } else {
        lowbit_or(v, p).min(p - v)
    };
    let input = Region::input(0, block);
    let out_len = if v == 0 { p * block } else { 0 };
    let mut b = Builder::default();
    // Where the subtree's blocks gather, in relative order.
    let (held, tmp_len) = if v == 0 && root == 0 {
        (Region::output(0, p * block), 0)
    } else if sub > 1 || v == 0 {
        (Region::tmp(0, sub * block), sub * block)
    } else {
        (input, 0)
    };
    let mut m = 1;
    while m < sub {
        let to = (2 * m).min(sub);
        b.recv(real(v + m), held.sub(m * block, (to - m) * block));
        m *= 2;
    }
    b.copy(input, held.sub(0, block));
    b.end_round();
    if v != 0 {
        b.send(real(v - lowbit_or(v, p)), held);
    } else if root != 0 {
        // Relative block j is member (j + root) % p's.
        let k = p - root;
        b.copy(
            held.sub(0, k * block),
            Region::output(root * block, k * block),
        );
        b.copy(
            held.sub(k * block, root * block),
            Region::output(0, root * block),
        );
    }
    b.finish(block, out_len, tmp_len)
}
