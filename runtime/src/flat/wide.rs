//! Wide broadcasts ([`super::Carry::Wide`]): when the PEs outnumber the
//! cores, a broadcast's root writes a block larger than a slot once into
//! its wide slot, in its own heap, and the members copy it from there
//! piece by piece while the root writes the rest.

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

    /// A member's part of wide broadcast `c`, whose root it has waited for
    /// and agrees with: copies the block out of the root's wide slot into
    /// its output as the root's progress word says it is written, waiting
    /// for the root (yielding, or through the engine, which watches it for
    /// an exit) when it has caught up with it.
    pub(super) fn read_wide(&self, world: &World, c: Call<'_>) -> Result<()> {
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
