//! Ring allgather.
//!
//! Member `r` contributes one block of `n` bytes; in step `s` (of `p - 1`) it
//! passes the block it received last (initially its own) to member `r + 1`
//! and receives block `r - s - 1` from member `r - 1`. Each member sends and
//! receives `(p - 1) n` bytes, the bandwidth lower bound, in `p - 1` steps.

use crate::{Channel, Error};

/// Gathers every member's `block` into `out`, ordered by member:
/// `out[i * n .. (i + 1) * n]` is member `i`'s block, where `n = block.len()`
/// and `out.len()` must be `p * n`. Uses tag 0. A member whose block has
/// another length makes the collective fail with [`Error::Length`] at its
/// neighbour.
///
/// ```
/// use weft_collectives::{allgather, sim, Channel};
/// let outs = sim::run(3, |chan| {
///     let mut out = vec![0u8; 3];
///     allgather::ring(chan, &[chan.rank() as u8], &mut out).map(|()| out)
/// });
/// assert!(outs.into_iter().all(|o| o.unwrap() == vec![0, 1, 2]));
/// ```
pub fn ring<C: Channel>(chan: &mut C, block: &[u8], out: &mut [u8]) -> Result<(), Error<C::Error>> {
    let (r, p, n) = (chan.rank(), chan.size(), block.len());
    assert_eq!(
        out.len(),
        p * n,
        "allgather output must hold one block per member"
    );
    out[r * n..(r + 1) * n].copy_from_slice(block);
    let (right, left) = ((r + 1) % p, (r + p - 1) % p);
    // One byte more than a block, so that a longer block is seen as such.
    let mut tmp = vec![0u8; n + 1];
    for s in 0..p.saturating_sub(1) {
        let send_block = (r + p - s) % p;
        let recv_block = (r + p - s - 1) % p;
        chan.send(right, 0, &out[send_block * n..(send_block + 1) * n])
            .map_err(Error::Channel)?;
        let got = chan.recv(left, 0, &mut tmp).map_err(Error::Channel)?;
        if got != n {
            return Err(Error::Length {
                peer: left,
                expected: n,
                got,
            });
        }
        out[recv_block * n..(recv_block + 1) * n].copy_from_slice(&tmp[..n]);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim;

    fn block_of(rank: usize, n: usize) -> Vec<u8> {
        (0..n).map(|i| (rank * 31 + i * 7) as u8).collect()
    }

    #[test]
    fn matches_the_sequential_reference() {
        for p in (1..=65).chain([128]) {
            for n in [0usize, 1, 8, 100] {
                let expect: Vec<u8> = (0..p).flat_map(|r| block_of(r, n)).collect();
                let outs = sim::run(p, |chan| {
                    let mut out = vec![0u8; p * n];
                    ring(chan, &block_of(chan.rank(), n), &mut out).map(|()| out)
                });
                for out in outs {
                    assert_eq!(out.unwrap(), expect, "p = {p}, n = {n}");
                }
            }
        }
    }

    #[test]
    fn a_member_with_another_size_is_reported() {
        let outs = sim::run(4, |chan| {
            let n = if chan.rank() == 2 { 16 } else { 8 };
            let mut out = vec![0u8; 4 * n];
            ring(chan, &vec![1; n], &mut out)
        });
        assert_eq!(
            outs[3],
            Err(Error::Length {
                peer: 2,
                expected: 8,
                got: 16
            })
        );
    }
}
