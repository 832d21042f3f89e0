//! Attached calls ([`super::Carry::Attached`]): members copy each other's
//! blocks straight between their buffers by cross-memory attach, and the
//! pair words that say who copies which block.

use std::time::Instant;

use super::*;

impl Region {
    /// Part `c.part` of an attached call ([`Carry::Attached`]): this PE
    /// copies blocks straight between the members' buffers, whose
    /// addresses they wrote into their slots in part 0 (what went wrong
    /// goes into `failed`, after which this PE copies no more).
    ///
    /// An allgather or alltoall is one part ([`Region::exchange`]). An
    /// allreduce folds this PE's chunk of the vector ([`Slots::chunk`])
    /// from every member's in part 0, into its own vector and, when the
    /// chunks fit ([`Slots::folds_wide`]), into its wide slot too, copies
    /// the others' folded chunks in part 1, and learns from their slots
    /// from part 1 on whether every member's copies went well.
    pub(super) fn attached(
        &self,
        world: &World,
        c: Call<'_>,
        failed: &mut Option<Cause>,
    ) -> Result<()> {
        let (p, me, n) = (self.slots.p, self.slots.me, c.n);
        if matches!(
            c.sig.collective,
            Collective::Allgather | Collective::Alltoall
        ) {
            return self.exchange(world, c, failed);
        }
        // The first word member `j` wrote into its slot in part `k` of
        // this call.
        let first = n - c.part as u64;
        let word = |k: usize, j: usize| self.address(first + k as u64, j)[0];
        if c.part > 0 {
            let bad: Vec<usize> = (0..p)
                .filter(|&j| j != me && word(c.part, j) != 0)
                .collect();
            if let (None, Some(&first)) = (&failed, bad.first()) {
                *failed = Some(Cause::Transport(TransportError::Completion {
                    peer: first,
                    op: c.op,
                    status: format!(
                        "PEs {bad:?} could not read the other members' vectors from their \
                         memory (cross-memory attach)"
                    ),
                }));
            }
        }
        if failed.is_some() {
            return Ok(());
        }
        // Reads `out.len()` bytes from `at` bytes into member `j`'s vector.
        let read = |j: usize, at: usize, out: &mut [u8]| -> Result<(), Cause> {
            Ok(self
                .lane(world, j)?
                .read_remote(j, word(0, j) + at as u64, 0, out)?)
        };
        let result = match (c.part, c.combiner) {
            (0, Some(comb)) => {
                let wide = self.slots.folds_wide(c.sig);
                let chunk = self.slots.chunk(c.sig, me);
                let len = chunk.len();
                let streamed = self.vectors.streams();
                let (words, mut kept) = (len.div_ceil(8), PREFIX.take());
                kept.resize(kept.len().max(2 * words), 0);
                let (theirs, before) = kept[..2 * words].split_at_mut(words);
                let theirs = &mut bytemuck::cast_slice_mut::<u64, u8>(theirs)[..len];
                let before = &mut bytemuck::cast_slice_mut::<u64, u8>(before)[..len];
                let out = &mut c.output[chunk.clone()];
                // Members folded left to right, as `Region::compute`
                // does: those before this one into `before`, which goes
                // left of this PE's operand, then those after into the
                // accumulator: the operand in the vector, or when
                // streamed `before`, which is then streamed into the
                // vector.
                let mut fold = || {
                    let acc: &mut [u8] = if me > 0 {
                        read(0, chunk.start, before)?;
                        for j in 1..me {
                            read(j, chunk.start, theirs)?;
                            comb.combine(before, theirs, false);
                        }
                        if streamed {
                            comb.combine(before, out, false);
                            before
                        } else {
                            comb.combine(out, before, true);
                            out
                        }
                    } else if streamed {
                        before.copy_from_slice(out);
                        before
                    } else {
                        out
                    };
                    for j in me + 1..p {
                        read(j, chunk.start, theirs)?;
                        comb.combine(acc, theirs, false);
                    }
                    if wide {
                        let to = self.slots.heap + self.slots.wide_data_at(n);
                        // SAFETY: the chunk fits the wide slot of call `n`
                        // (`folds_wide`), in this PE's mapped region, and
                        // `acc` is this PE's; every member has entered this
                        // call (its address is read above), so none reads
                        // that slot for an older call any more, and they
                        // read it for this one in part 1, once this PE has
                        // entered it.
                        unsafe { copy_stored(streamed, acc.as_ptr(), to as *mut u8, len) };
                    }
                    if streamed {
                        // SAFETY: `out` and `before` hold `len` bytes each
                        // and do not overlap (the vector, this PE's buffer).
                        unsafe {
                            weft_copy::copy_streaming(before.as_ptr(), out.as_mut_ptr(), len)
                        };
                    }
                    Ok(())
                };
                let folded = fold();
                PREFIX.set(kept);
                folded
            }
            (1, _) if self.slots.folds_wide(c.sig) => {
                self.gather_wide(c);
                Ok(())
            }
            (1, _) => self.gather_folded(c, read),
            _ => Ok(()),
        };
        if let Err(e) = result {
            failed.get_or_insert(e);
        }
        Ok(())
    }

    /// Part 1 of an attached allreduce whose chunks fit a wide slot
    /// ([`Slots::folds_wide`]): copies the chunks the others folded out of
    /// their wide slots into this PE's vector, by cached stores, or while
    /// those run slow ([`Region::vectors`]) by non-temporal ones, as
    /// [`Region::gather_folded`] stores. One copy from the mapped heaps at
    /// the processor's pace instead of the kernel's cross-memory attach
    /// (about 10 GB/s, a quarter of a cached copy with a shared cache): at
    /// 4 PEs on 2 cores, alternated in one run with reading the others'
    /// vectors so, 512 KiB allreduces took 0.76x the time and 1 MiB
    /// 0.78x with a shared cache (medians of 6 rounds), 0.7-0.9x across
    /// dies.
    fn gather_wide(&self, c: Call<'_>) {
        let s = &self.slots;
        let (p, me) = (s.p, s.me);
        // The call of part 0, whose wide slots hold the folded chunks.
        let folded = c.n - 1;
        let store = self.vectors.store(c.n, 3);
        let start = (store == Store::Timed).then(Instant::now);
        for j in (1..p).map(|k| (me + k) % p) {
            let chunk = s.chunk(c.sig, j);
            let len = chunk.len();
            let from = (s.peers[j] + s.wide_data_at(folded)) as *const u8;
            let to = c.output[chunk].as_mut_ptr();
            // SAFETY: member `j` folded `len` bytes into its wide slot of
            // part 0, in its mapped region (`folds_wide`), before it
            // entered this part, which every member has; it writes that
            // slot again only once every member has entered part 2, after
            // these copies. `to` is this PE's vector's chunk of `len`
            // bytes, apart from every heap.
            unsafe { copy_stored(store == Store::Streamed, from, to, len) }
        }
        if let Some(start) = start {
            let bytes = c.sig.bytes - s.chunk(c.sig, me).len();
            self.vectors.note(bytes, start);
        }
    }

    /// Part 1 of an attached allreduce whose chunks exceed a wide slot:
    /// reads the chunks the others folded into this PE's vector (`read`
    /// reads bytes of a member's vector), by the kernel's cached stores, or
    /// while those run slow
    /// ([`Region::vectors`]) into a buffer of this PE's and from there by
    /// non-temporal stores. Every line of the vector is read by another
    /// member in each call (part 0 reads this PE's operand, part 1 its
    /// folded chunk), and stores into such lines wait for them across dies:
    /// at 4 PEs on 2 cores, 512 KiB-1 MiB allreduces took 0.57x the time
    /// streamed there (alternated in one run, medians of 6 rounds), but
    /// 1.3-1.7x with a shared cache, where cached reads ran at 4.5-12 GB/s
    /// (mostly 9-12) and across dies at 1-3.5.
    fn gather_folded(
        &self,
        c: Call<'_>,
        read: impl Fn(usize, usize, &mut [u8]) -> Result<(), Cause>,
    ) -> Result<(), Cause> {
        let (p, me) = (self.slots.p, self.slots.me);
        let mut others = (1..p).map(|k| (me + k) % p);
        // A call's three numbers: the call after streaming is not timed.
        let store = self.vectors.store(c.n, 3);
        if store == Store::Streamed {
            let most = (0..p).map(|j| self.slots.chunk(c.sig, j).len()).max();
            let mut kept = PREFIX.take();
            kept.resize(kept.len().max(most.unwrap_or(0).div_ceil(8)), 0);
            let buffer = bytemuck::cast_slice_mut::<u64, u8>(&mut kept);
            let read = others.try_for_each(|j| {
                let chunk = self.slots.chunk(c.sig, j);
                let len = chunk.len();
                read(j, chunk.start, &mut buffer[..len])?;
                let to = c.output[chunk].as_mut_ptr();
                // SAFETY: the chunk of the vector at `to` holds `len` bytes,
                // as `buffer` does, which is this PE's own.
                unsafe { weft_copy::copy_streaming(buffer.as_ptr(), to, len) };
                Ok(())
            });
            PREFIX.set(kept);
            return read;
        }
        let start = (store == Store::Timed).then(Instant::now);
        others.try_for_each(|j| {
            let chunk = self.slots.chunk(c.sig, j);
            read(j, chunk.start, &mut c.output[chunk])
        })?;
        if let Some(start) = start {
            let bytes = c.sig.bytes - self.slots.chunk(c.sig, me).len();
            self.vectors.note(bytes, start);
        }
        Ok(())
    }

    /// An attached allgather or alltoall, once every member has written
    /// the addresses of its input and output into its slot of call `c.n`:
    /// this PE takes the copies of the others' blocks into its output that
    /// nobody took yet, copies its own block, reads the blocks it took
    /// (from the next member on, so that the members do not all read from
    /// the same one first), then, for blocks from [`WRITE_FROM`], takes the
    /// copies of its blocks into the others' outputs that they have not
    /// taken and writes them; it then waits until every copy into or out
    /// of its buffers is done, by whichever member took it. When crowded,
    /// the members that run so do the copies of those not scheduled yet,
    /// and each leaves once its own buffers are done with. A copy that
    /// failed fails the call on both members of its pair (`failed`), and
    /// every later call of theirs that would take it ([`Pair`]).
    fn exchange(&self, world: &World, c: Call<'_>, failed: &mut Option<Cause>) -> Result<()> {
        let s = &self.slots;
        let (p, me, n, b) = (s.p, s.me, c.n, c.sig.bytes);
        let block = |k: usize| k * b..(k + 1) * b;
        // Where the block for member `to` is in a member's input.
        let source = |to: usize| match c.sig.collective {
            Collective::Alltoall => block(to),
            _ => block(0),
        };
        let others = || (1..p).map(|k| (me + k) % p);
        // The copies into this PE's output are taken before it copies its
        // own block: a member that ran ahead would otherwise take them too,
        // and copy both ways while this one copied nothing.
        let taken = others()
            .filter(|&j| Pair::take(s.pair(s.heap, j), n))
            .fold(0u64, |mask, j| mask | 1 << j);
        weft_copy::copy(&mut c.output[block(me)], &c.input[source(me)]);
        for j in others().filter(|&j| taken & 1 << j != 0) {
            let pair = s.pair(s.heap, j);
            let at = self.address(n, j)[0] + source(me).start as u64;
            let copied = self
                .lane(world, j)
                .and_then(|l| Ok(l.read_remote(j, at, 0, &mut c.output[block(j)])?));
            Pair::finish(pair, n, copied, failed);
        }
        if b >= WRITE_FROM {
            for j in others() {
                if failed.is_some() {
                    break;
                }
                let pair = s.pair(s.peers[j], me);
                if Pair::take(pair, n) {
                    let at = self.address(n, j)[1] + block(me).start as u64;
                    let copied = self
                        .lane(world, j)
                        .and_then(|l| Ok(l.write_remote(j, at, &c.input[source(j)])?));
                    Pair::finish(pair, n, copied, failed);
                }
            }
        }
        let done = |j: usize| {
            Pair::settled(s.pair(s.heap, j), n) && Pair::settled(s.pair(s.peers[j], me), n)
        };
        self.wait(world, c.op, None, true, |j, _| done(j))?;
        let broken: Vec<usize> = others()
            .filter(|&j| Pair::failed(s.pair(s.heap, j)) || Pair::failed(s.pair(s.peers[j], me)))
            .collect();
        if let (None, Some(&first)) = (&failed, broken.first()) {
            *failed = Some(Cause::Transport(TransportError::Completion {
                peer: first,
                op: c.op,
                status: format!(
                    "copying blocks between this PE and PEs {broken:?} by cross-memory attach \
                     failed (in this call or an earlier one)"
                ),
            }));
        }
        Ok(())
    }

    /// The transport to member `j`, which copies between its buffers and
    /// this PE's.
    fn lane<'w>(
        &self,
        world: &'w World,
        j: usize,
    ) -> Result<&'w dyn weft_transport::Transport, Cause> {
        world.engine().lane(j).ok_or(Cause::BadPe {
            pe: j,
            size: self.slots.p,
        })
    }

    /// The two words member `j` wrote into its slot of call `n` of an
    /// attached call: the addresses of its input and output in its
    /// process (part 0), or whether its copies failed (later parts).
    fn address(&self, n: u64, j: usize) -> [u64; 2] {
        let w = self.slots.data_in(self.slots.heap, n, j, ATTACHED_BLOCK);
        bytemuck::pod_read_unaligned(w)
    }
}

/// The word of one pair of members in an attached allgather or alltoall
/// ([`Slots::pair`]): the copy of one member's block into the other's
/// output, which either of them does, whichever takes it first. It holds
/// 4 x (the call's number + 1) plus the copy's state in that call: taken
/// (1), done (2) or failed (3). Only the pair's two members write it, and
/// each, before leaving a call, waits until it is done or failed there,
/// so in a later call it is taken afresh, unless it failed: a failed copy
/// stays failed, so that the member that did not copy learns of it
/// however late it looks, and every later call of the pair fails too
/// (cross-memory attach fails for good, as when a process may no longer
/// read another's memory).
pub(super) struct Pair;

impl Pair {
    const TAKEN: u64 = 1;
    const DONE: u64 = 2;
    const FAILED: u64 = 3;

    /// Takes the copy of `word`'s pair in call `n` for this PE, if neither
    /// member has taken it there yet and it never failed.
    fn take(word: &AtomicU64, n: u64) -> bool {
        let now = 4 * (n + 1) + Pair::TAKEN;
        let was = word.load(Ordering::Relaxed);
        was < now
            && was & 3 != Pair::FAILED
            && word
                .compare_exchange(was, now, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
    }

    /// Says that the copy this PE took in call `n` is done, or failed
    /// (what went wrong goes into `failed`, unless something did before).
    fn finish(word: &AtomicU64, n: u64, copied: Result<(), Cause>, failed: &mut Option<Cause>) {
        let state = match copied {
            Ok(()) => Pair::DONE,
            Err(e) => {
                failed.get_or_insert(e);
                Pair::FAILED
            }
        };
        word.store(4 * (n + 1) + state, Ordering::Release);
    }

    /// Whether the copy of `word`'s pair in call `n` is done or failed.
    fn settled(word: &AtomicU64, n: u64) -> bool {
        let w = word.load(Ordering::Acquire);
        w >= 4 * (n + 1) + Pair::DONE || w & 3 == Pair::FAILED
    }

    /// Whether the copy of `word`'s pair failed, in this call or before.
    fn failed(word: &AtomicU64) -> bool {
        word.load(Ordering::Acquire) & 3 == Pair::FAILED
    }
}

impl Slots {
    /// Whether members copy the blocks of a call of `sig` from each
    /// other's buffers ([`Carry::Attached`]): allgathers and alltoalls whose
    /// blocks exceed a slot, from [`ATTACH_BLOCK`] (when crowded, those
    /// that do not go through the wide slots, [`Slots::wide`]), and when
    /// crowded allreduces from [`ATTACH_VECTOR`] that would fold more than
    /// [`FOLDED_IN_PARTS`] in parts (in which every member waits for every
    /// other already, [`waits`]).
    pub(super) fn attaches(&self, sig: &Signature) -> bool {
        let b = sig.bytes;
        let attached = match sig.collective {
            Collective::Allgather | Collective::Alltoall => b > self.data && b >= ATTACH_BLOCK,
            Collective::Allreduce if self.crowded => {
                b >= ATTACH_VECTOR && b * (self.p - 1) > FOLDED_IN_PARTS
            }
            _ => false,
        };
        self.attach && attached
    }

    /// Whether every member's chunk of an attached allreduce of `sig`
    /// fits a wide slot (vectors up to [`WIDE`] x the members), into which
    /// its member folds it for the others to copy ([`Region::gather_wide`]).
    /// Every region has its wide slots.
    pub(super) fn folds_wide(&self, sig: &Signature) -> bool {
        (0..self.p).all(|j| self.chunk(sig, j).len() <= WIDE)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pair_is_copied_once_a_call_and_stays_failed() {
        let word = AtomicU64::new(0);
        let mut failed = None;
        for n in [0, 1, 5] {
            assert!(Pair::take(&word, n), "call {n}: the first taker copies");
            assert!(!Pair::take(&word, n), "call {n}: the other member does not");
            assert!(!Pair::settled(&word, n));
            Pair::finish(&word, n, Ok(()), &mut failed);
            assert!(Pair::settled(&word, n) && !Pair::failed(&word));
            assert!(!Pair::take(&word, n), "call {n} is done");
        }
        // A later call taken before this member looked: n's copy was done.
        assert!(Pair::take(&word, 6));
        assert!(Pair::settled(&word, 5) && !Pair::settled(&word, 6));
        assert!(failed.is_none());
        Pair::finish(&word, 6, Err(Cause::Finalized), &mut failed);
        assert!(failed.is_some(), "the failure is kept");
        for n in [6, 7, 9] {
            assert!(!Pair::take(&word, n), "a failed pair is not taken again");
            assert!(Pair::settled(&word, n) && Pair::failed(&word));
        }
    }
}
