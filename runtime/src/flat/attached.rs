//! Attached calls ([`super::Carry::Attached`]): members copy each other's
//! blocks straight out of their buffers by cross-memory attach.

use super::*;

impl Region {
    /// Part `c.part` of an attached call ([`Carry::Attached`]): this PE
    /// copies what it needs straight out of the others' buffers, whose
    /// addresses they wrote into their slots in part 0, and from part 1 on
    /// learns from their slots whether every member's copies went well
    /// (what went wrong goes into `failed`, after which nobody reads more).
    /// An allgather or alltoall copies its own block, then reads the others'
    /// in part 0, starting with the next member (so that the members do not
    /// all read from the same one first). An allreduce folds its chunk of
    /// the vector ([`Slots::chunk`]) from every member's in part 0, into its
    /// own vector, and reads the others' folded chunks in part 1.
    pub(super) fn attached(&self, world: &World, c: Call<'_>, failed: &mut Option<Cause>) {
        let (p, me, n) = (self.slots.p, self.slots.me, c.n);
        // The word member `j` wrote into its slot in part `k` of this call.
        let first = n - c.part as u64;
        let word = |k: usize, j: usize| {
            let w = self
                .slots
                .data_in(self.slots.heap, first + k as u64, j, ATTACHED_WORD);
            u64::from_ne_bytes(std::array::from_fn(|i| w[i]))
        };
        if c.part > 0 {
            let bad: Vec<usize> = (0..p)
                .filter(|&j| j != me && word(c.part, j) != 0)
                .collect();
            if let (None, Some(&first)) = (&failed, bad.first()) {
                *failed = Some(Cause::Transport(TransportError::Completion {
                    peer: first,
                    op: c.op,
                    status: format!(
                        "PEs {bad:?} could not read the other members' blocks from their memory \
                         (cross-memory attach)"
                    ),
                }));
            }
        }
        if failed.is_some() {
            return;
        }
        // Reads `out.len()` bytes from `at` bytes into member `j`'s buffer.
        let read = |j: usize, at: usize, out: &mut [u8]| -> Result<(), Cause> {
            let lane = world
                .engine()
                .lane(j)
                .ok_or(Cause::BadPe { pe: j, size: p })?;
            Ok(lane.read_remote(j, word(0, j) + at as u64, 0, out)?)
        };
        let b = c.sig.bytes;
        let result = match (c.sig.collective, c.part) {
            (Collective::Allgather | Collective::Alltoall, 0) => {
                let block = |k: usize| k * b..(k + 1) * b;
                // This PE's block in its input, and where every member
                // keeps the block for this PE in its own.
                let (own, theirs) = match c.sig.collective {
                    Collective::Alltoall => (me, me * b),
                    _ => (0, 0),
                };
                weft_copy::copy(&mut c.output[block(me)], &c.input[block(own)]);
                (1..p)
                    .map(|k| (me + k) % p)
                    .try_for_each(|j| read(j, theirs, &mut c.output[block(j)]))
            }
            (Collective::Allreduce, 0) => match c.combiner {
                Some(comb) => {
                    let chunk = self.slots.chunk(c.sig, me);
                    let len = chunk.len();
                    let (words, mut kept) = (len.div_ceil(8), PREFIX.take());
                    kept.resize(kept.len().max(2 * words), 0);
                    let (theirs, before) = kept[..2 * words].split_at_mut(words);
                    let theirs = &mut bytemuck::cast_slice_mut::<u64, u8>(theirs)[..len];
                    let before = &mut bytemuck::cast_slice_mut::<u64, u8>(before)[..len];
                    let out = &mut c.output[chunk.clone()];
                    // Members folded left to right, as `Region::compute`
                    // does: those before this one into `before`, which
                    // goes left of this PE's operand, then those after.
                    let mut fold = || {
                        if me > 0 {
                            read(0, chunk.start, before)?;
                            for j in 1..me {
                                read(j, chunk.start, theirs)?;
                                comb.combine(before, theirs, false);
                            }
                            comb.combine(out, before, true);
                        }
                        for j in me + 1..p {
                            read(j, chunk.start, theirs)?;
                            comb.combine(out, theirs, false);
                        }
                        Ok(())
                    };
                    let folded = fold();
                    PREFIX.set(kept);
                    folded
                }
                None => Ok(()),
            },
            (Collective::Allreduce, 1) => (1..p).map(|k| (me + k) % p).try_for_each(|j| {
                let chunk = self.slots.chunk(c.sig, j);
                read(j, chunk.start, &mut c.output[chunk])
            }),
            _ => Ok(()),
        };
        if let Err(e) = result {
            failed.get_or_insert(e);
        }
    }
}

impl Slots {
    /// Whether members copy the blocks of a call of `sig` from each
    /// other's buffers ([`Carry::Attached`]): allgathers, alltoalls and
    /// allreduces (in which every member waits for every other already,
    /// [`waits`]).
    pub(super) fn attaches(&self, sig: &Signature) -> bool {
        let from = match sig.collective {
            Collective::Allgather | Collective::Alltoall if self.crowded => CROWDED_ATTACH_BLOCK,
            Collective::Allgather | Collective::Alltoall => ATTACH_BLOCK,
            Collective::Allreduce if self.crowded => ATTACH_VECTOR,
            _ => return false,
        };
        self.attach && sig.bytes >= from
    }

    /// The bytes of an attached allreduce's vector that `member` folds
    /// ([`Region::attached`]): the members' shares of its elements, in
    /// member order.
    pub(super) fn chunk(&self, sig: &Signature, member: usize) -> std::ops::Range<usize> {
        let elem = sig.elem.max(1);
        let elems = sig.bytes / elem;
        let at = |k: usize| k * elems / self.p * elem;
        at(member)..at(member + 1)
    }
}
