//! Scatter: the root's block `j` to member `j`. The input (`p` blocks)
//! matters at the root only; elsewhere it is empty.

use crate::blocks::lowbit_or;
use crate::schedule::{Builder, Region, Schedule};

/// Binomial tree: member `v` (relative to the root) receives the blocks of
/// its subtree `v..v + lowbit(v)` from `v - lowbit(v)` in one message and
/// hands each child its part, the largest first; `ceil(log2 p)` steps.
///
/// ```
/// use weft_collectives::scatter;
/// assert_eq!(scatter::binomial(0, 4, 0, 8).messages_sent(), 2);
/// ```
pub fn binomial(rank: usize, p: usize, root: usize, block: usize) -> Schedule {
    let v = (rank + p - root) % p;
    let real = |x: usize| (x + root) % p;
    let sub = if v == 0 {
        p
    } else {
        lowbit_or(v, p).min(p - v)
    };
    let out = Region::output(0, block);
    let in_len = if v == 0 { p * block } else { 0 };
    let mut b = Builder::default();
    let (held, tmp_len) = if v == 0 && root == 0 {
        (Region::input(0, p * block), 0)
    } else if v == 0 {
        let k = p - root;
        let held = Region::tmp(0, p * block);
        b.copy(
            Region::input(root * block, k * block),
            held.sub(0, k * block),
        );
        b.copy(
            Region::input(0, root * block),
            held.sub(k * block, root * block),
        );
        (held, p * block)
    } else if sub > 1 {
        (Region::tmp(0, sub * block), sub * block)
    } else {
        (out, 0)
    };
    if v != 0 {
        b.recv(real(v - lowbit_or(v, p)), held);
        b.end_round();
    }
    let mut m = sub.next_power_of_two() / 2;
    while m > 0 {
        if m < sub {
            let to = (2 * m).min(sub);
            b.send(real(v + m), held.sub(m * block, (to - m) * block));
        }
        m /= 2;
    }
    b.copy(held.sub(0, block), out);
    b.finish(in_len, block, tmp_len)
}
