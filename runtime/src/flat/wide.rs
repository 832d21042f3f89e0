//! Wide calls ([`super::Carry::Wide`]): when the PEs outnumber the
//! cores, a broadcast's root writes a block larger than a slot once into
//! its wide slot, in its own heap, and the members copy it from there
//! piece by piece while the root writes the rest; the members of an
//! allgather or alltoall each write their blocks for the others into
//! their wide slots, and copy the others' out of theirs.

use super::*;

impl Region {
    /// The root's part of wide broadcast `n`: copies `block` into its wide
    /// slot [`WIDE_PIECE`] bytes at a time, raising the slot's progress word
    /// to the bytes written after each piece. The slot's header and flags
    /// are written already, and its progress word reset.
    pub(super) fn write_wide(&self, n: u64, block: &[u8]) {
        let s = &self.slots;
        assert!(
            block.len() <= WIDE,
            "a wide broadcast's block exceeds its slot"
        );
        let at = s.heap + s.wide_data_at(n);
        let progress = s.progress(s.heap, n);
        for (k, piece) in block.chunks(WIDE_PIECE).enumerate() {
            let done = k * WIDE_PIECE;
            // SAFETY: the wide slot holds `WIDE` bytes from `at`, in this
            // PE's mapped region, and `done + piece.len() <= block.len() <=
            // WIDE`; the members read these bytes only once the progress
            // word, raised below with release ordering, covers them, and no
            // member reads this slot of an older call any more (step 1).
            unsafe {
                let to = (at + done) as *mut u8;
                self.copy_into(s.me, piece, to, n, WIDE_SETS as u64);
            }
            progress.store((done + piece.len()) as u64, Ordering::Release);
        }
    }

    /// Copies this PE's blocks of wide allgather or alltoall `c` into its
    /// wide slot, by cached or non-temporal stores as member 0 said
    /// ([`Region::stores_cached`]): an allgather's block, or an
    /// alltoall's block for each other member, at [`wide_index`] of that
    /// member. Before the headers, which announce them.
    pub(super) fn write_wide_blocks(&self, c: &Call<'_>) {
        let s = &self.slots;
        let (p, me, n) = (s.p, s.me, c.n);
        let (at, piece, b) = (s.heap + s.wide_data_at(n), c.piece(), c.sig.bytes);
        let streamed = !s
            .contested(c.sig)
            .is_some_and(|class| self.stores_cached(class, n));
        let write = |k: usize, block: &[u8]| {
            let to = (at + k * b) as *mut u8;
            // SAFETY: `(k + 1) * b <= WIDE` (`Slots::wide`), so the block
            // lies in the wide slot of call `n` in this PE's mapped region;
            // no member reads that slot of an older call any more (step 1),
            // and they read it for this call only once they see the headers
            // written after this. `block` is this PE's.
            unsafe { copy_stored(streamed, block.as_ptr(), to, b) }
        };
        self.time_copies(|| {
            if c.sig.collective == Collective::Alltoall {
                for j in (0..p).filter(|&j| j != me) {
                    write(wide_index(j, me), &c.input[piece(j)]);
                }
            } else {
                write(0, &c.input[piece(0)]);
            }
        });
    }

    /// A member's part of wide allgather or alltoall `c`, whose members'
    /// headers it has all seen and checked: copies its own block and the
    /// others' out of their wide slots into its output, from the next
    /// member on (so that the members do not all read one first).
    fn read_wide_blocks(&self, c: Call<'_>) {
        let s = &self.slots;
        let (p, me, n) = (s.p, s.me, c.n);
        let (piece, b) = (c.piece(), c.sig.bytes);
        let alltoall = c.sig.collective == Collective::Alltoall;
        self.time_copies(|| {
            for j in (1..p).map(|k| (me + k) % p) {
                let k = if alltoall { wide_index(me, j) } else { 0 };
                let from = s.peers[j] + s.wide_data_at(n) + k * b;
                let out = &mut c.output[piece(j)];
                // SAFETY: member `j` wrote this block, `b` bytes inside its
                // wide slot of call `n` in its mapped region
                // (`write_wide_blocks`), before the header this PE has
                // seen, read with acquire ordering; it writes that slot
                // again only once this PE has entered a later call (step
                // 1). `out` is this PE's, apart from every heap.
                unsafe { weft_copy::copy_nonoverlapping(from as *const u8, out.as_mut_ptr(), b) };
            }
            let own = if alltoall { piece(me) } else { piece(0) };
            weft_copy::copy(&mut c.output[piece(me)], &c.input[own]);
        });
    }

    /// A member's part of wide call `c`: an allgather's or alltoall's
    /// blocks ([`Region::read_wide_blocks`]), or a broadcast's block, whose
    /// root it has waited for and agrees with, copied out of the root's
    /// wide slot into its output as the root's progress word says it is
    /// written, waiting for the root (yielding, or through the engine,
    /// which watches it for an exit) when it has caught up with it.
    pub(super) fn read_wide(&self, world: &World, c: Call<'_>) -> Result<()> {
        if c.sig.collective != Collective::Broadcast {
            self.read_wide_blocks(c);
            return Ok(());
        }
        let s = &self.slots;
        let (root, n) = (c.sig.root, c.n);
        let from = s.peers[root] + s.wide_data_at(n);
        let progress = s.progress(s.peers[root], n);
        let range = c.piece()(0);
        let out = &mut c.output[range];
        let mut done = 0;
        while done < out.len() {
            let mut ready = progress.load(Ordering::Acquire) as usize;
            if ready <= done {
                self.wait(world, c.op, Some(root), false, |_, _| {
                    ready = progress.load(Ordering::Acquire) as usize;
                    ready > done
                })?;
            }
            // The word is the root's to write; more than the block is no
            // more than the block.
            let end = ready.min(out.len());
            // SAFETY: `done < end <= out.len() <= WIDE`, inside the root's
            // wide slot in its mapped region; the root wrote these bytes
            // before raising its progress word past them (read with acquire
            // ordering), and writes this slot again only once this PE has
            // entered a later call (step 1).
            unsafe {
                weft_copy::copy_nonoverlapping(
                    (from + done) as *const u8,
                    out[done..end].as_mut_ptr(),
                    end - done,
                )
            };
            done = end;
        }
        Ok(())
    }
}

/// Where member `from`'s alltoall block for member `to` is in `from`'s
/// wide slot, in blocks: the others' blocks in member order, without its
/// own.
pub(super) fn wide_index(to: usize, from: usize) -> usize {
    to - usize::from(to > from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_member_has_its_own_place_in_a_writers_wide_slot() {
        for p in 2..9 {
            for from in 0..p {
                let places: Vec<usize> = (0..p)
                    .filter(|&to| to != from)
                    .map(|to| wide_index(to, from))
                    .collect();
                assert_eq!(
                    places,
                    (0..p - 1).collect::<Vec<_>>(),
                    "{p} PEs, from {from}"
                );
            }
        }
    }
}
