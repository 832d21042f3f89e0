//! How members check the calls they left without waiting for every
//! member: each member's count and hash-chain ledger of its calls, and the
//! reviews of the others' headers of those calls.

use super::*;

/// How many calls a PE settles before it reads again the ledger word of
/// a member whose word did not vouch for the call it reviewed.
pub(super) const RETRY_AFTER: u64 = 8;

/// The token of a call taken to the general path in a PE's chain
/// ([`Region::settle`]): no stamp has all these bits set.
pub(super) const GENERAL: [u64; 2] = [u64::MAX; 2];

/// Mixes a chain's word (MurmurHash3's 64-bit finalizer): a bijection
/// whose every output bit depends on every input bit, so chains that
/// part stay apart, and two histories share a ledger word's 48 bits by
/// chance about once in 2^48 comparisons.
pub(super) fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ x >> 33
}

/// `chain` with one more call's `token` folded in ([`Region::settle`]).
pub(super) fn fold(chain: u64, token: &[u64; 2]) -> u64 {
    mix(mix(chain ^ token[0]) ^ token[1])
}

/// A ledger word: the upper 48 bits of `chain`, the lower 16 of `count`
/// (one word, so that a reader never sees a count with another count's
/// chain).
pub(super) fn ledger_word(chain: u64, count: u64) -> u64 {
    chain & !0xffff | count & 0xffff
}

/// The count a ledger word holds, from its lower 16 bits, taken as the
/// one nearest `near`: members are never more than a round of sets (at
/// most 256 calls) apart.
pub(super) fn ledger_count(word: u64, near: u64) -> u64 {
    let ahead = (word as u16).wrapping_sub(near as u16) as i16;
    near.wrapping_add_signed(i64::from(ahead))
}

impl Region {
    /// Adds call `n` to this PE's chain, as `token`: the call's stamp if
    /// this PE completed it on the flat path, [`GENERAL`] if it took it to
    /// the general path. Every member of a program whose calls agree
    /// settles the same tokens call after call (a member that posts a
    /// call or finds one posted takes the general path, and so do all
    /// the others), so their chains are equal; a call that failed is not
    /// settled, and the chains part for good. The ledger word, in this
    /// PE's region, tells the others how far it is ([`Region::vouched`]).
    pub(super) fn settle(&self, n: u64, token: &[u64; 2]) {
        if !self.slots.crowded {
            return;
        }
        let chain = fold(self.chain.load(Ordering::Relaxed), token);
        self.chain.store(chain, Ordering::Relaxed);
        self.settled.store(n + 1, Ordering::Relaxed);
        let word = ledger_word(chain, n + 1);
        self.ring(self.slots.me, n).store(word, Ordering::Relaxed);
        self.ledger(self.slots.me).store(word, Ordering::Relaxed);
        self.count(self.slots.me).store(n + 1, Ordering::Release);
    }

    /// Member `j`'s count word: the number + 1 of the latest call it
    /// settled, stored after it last read that call's slots, when crowded;
    /// otherwise that of a barrier after a rooted call, as it leaves it
    /// first ([`Region::leave_in_turn`]).
    /// Beside its ledger word, in its own region, written by it alone.
    pub(super) fn count(&self, j: usize) -> &AtomicU64 {
        let s = &self.slots;
        s.word_in(s.peers[j], s.ledger_at() + 8)
    }

    /// Member `j`'s ledger ring's word of call `n`: its ledger word when it
    /// settled that call. In its own region, written by it alone.
    pub(super) fn ring(&self, j: usize, n: u64) -> &AtomicU64 {
        let s = &self.slots;
        s.word_in(s.peers[j], s.ring_at(n))
    }

    /// Member `j`'s ledger word: the low 16 bits of how many calls it has
    /// settled, the chain's upper 48 bits. In its own region, written by
    /// it alone.
    pub(super) fn ledger(&self, j: usize) -> &AtomicU64 {
        let s = &self.slots;
        s.word_in(s.peers[j], s.ledger_at())
    }

    /// Whether member `j` called calls `0..=m` as this PE did, as their
    /// chains say ([`Region::settle`]): then its slots of those calls need
    /// no review. Reads its ledger word unless an earlier reading covers
    /// `m`, and compares it with this PE's ring word of the same call (or,
    /// if the member is further on, its ring word of this PE's latest
    /// call); false, and not read again for [`RETRY_AFTER`] calls, when
    /// the member has not settled `m` yet or their chains differ: the
    /// slots tell then. Only when crowded (the PEs outnumber the cores),
    /// where a member that only sends runs up to 255 calls ahead: one
    /// read then covers the calls a member made since the last, where
    /// reviewing slot by slot read a line per member and call (the
    /// member's stamp, which nothing else reads when a broadcast's
    /// receivers or a reduce's senders check each other), and its writer
    /// took the line back for its next call of that set. See
    /// `docs/ARCHITECTURE.md` for what it gained.
    pub(super) fn vouched(&self, j: usize, m: u64) -> bool {
        let known = &self.agreed[j];
        if known.load(Ordering::Relaxed) > m {
            return true;
        }
        if !self.slots.crowded {
            return false;
        }
        let settled = self.settled.load(Ordering::Relaxed);
        let retry = &self.retry[j];
        if settled < retry.load(Ordering::Relaxed) {
            return false;
        }
        let word = self.ledger(j).load(Ordering::Relaxed);
        let count = ledger_count(word, settled);
        // Their latest call, or this PE's if theirs is later: its ring
        // word there is still that call's (members are less than a round
        // of sets apart), or holds another count if not.
        let through = count.min(settled);
        let theirs = || {
            if count > settled {
                self.ring(j, through - 1).load(Ordering::Relaxed)
            } else {
                word
            }
        };
        let mine = || {
            self.ring(self.slots.me, through - 1)
                .load(Ordering::Relaxed)
        };
        if through > m && theirs() == mine() {
            if through > known.load(Ordering::Relaxed) {
                known.store(through, Ordering::Relaxed);
            }
            return true;
        }
        // Not settled that far yet (or called otherwise): the slots tell,
        // and the ledger is read again some calls later.
        retry.store(settled + RETRY_AFTER, Ordering::Relaxed);
        false
    }

    /// Checks the calls `calls` (among the last `sets - 1` before this
    /// PE's current one) that this PE left without waiting for every
    /// member, for the members that have entered them since: what was
    /// wrong with one of them, if anything.
    #[inline(always)]
    pub(super) fn review(&self, calls: std::ops::Range<u64>) -> Late {
        if self.pending.load(Ordering::Relaxed) == 0 {
            return None;
        }
        self.review_pending(calls)
    }

    /// [`Region::review`] when some call is still to check, out of the way
    /// of the calls that have none (a broadcast's receivers, every member
    /// of the symmetric collectives).
    #[inline(never)]
    pub(super) fn review_pending(&self, calls: std::ops::Range<u64>) -> Late {
        let s = &self.slots;
        let mut found = None;
        for m in calls {
            let set = s.set(m);
            if self.unchecked[set].load(Ordering::Relaxed) == 0
                || self.early[set].load(Ordering::Relaxed) != m + 1
            {
                continue;
            }
            let mut unchecked = self.unchecked[set].load(Ordering::Relaxed);
            for j in 0..s.p {
                if unchecked & 1 << j != 0 && self.vouched(j, m) {
                    unchecked &= !(1 << j);
                }
            }
            let (unchecked, cause) = if unchecked == 0 {
                (0, None)
            } else {
                s.review(m, unchecked)
            };
            self.keep(set, unchecked);
            found = found.or(cause);
        }
        found
    }

    /// Sets the members of `set`'s early call still to check. Plain loads
    /// and stores, as in [`Region::saw`].
    #[inline(always)]
    pub(super) fn keep(&self, set: usize, unchecked: u64) {
        let was = self.unchecked[set].load(Ordering::Relaxed) != 0;
        self.unchecked[set].store(unchecked, Ordering::Relaxed);
        let pending = self.pending.load(Ordering::Relaxed) + u64::from(unchecked != 0);
        self.pending
            .store(pending - u64::from(was), Ordering::Relaxed);
    }
}

impl Slots {
    /// Checks call `n` for the `unchecked` members (a bit each) that have
    /// entered it: those that called it otherwise than this PE, or took it
    /// off the flat path. Returns the members still to check (none once
    /// something is wrong) and what is wrong.
    pub(super) fn review(&self, n: u64, mut unchecked: u64) -> (u64, Late) {
        let Some(mine) = self.stamp(self.heap, n, self.me).ok() else {
            return (0, None);
        };
        let mut differ = Vec::new();
        let mut off = Vec::new();
        let members = unchecked;
        for j in (0..self.p).filter(|&j| members & 1 << j != 0) {
            // The posted word first, as in `arrived`.
            let posted = self.word(self.posted_at(j)).load(Ordering::Acquire);
            let (heap, flag) = self.header(n, j);
            if flag == n + 1 {
                match self.stamp(heap, n, j) {
                    Ok(theirs) if theirs != mine => differ.push((j, Some(theirs))),
                    // The same, or overwritten since the flag was read.
                    _ => {}
                }
            } else if flag < n + 1 && posted > n {
                off.push(j);
            } else if flag < n + 1 {
                continue;
            }
            // A later flag: the member is far ahead and its slot for call
            // `n` overwritten; nothing to check any more.
            unchecked &= !(1 << j);
        }
        let cause = if !differ.is_empty() {
            Some(Box::new(Cause::Mismatch(differ_text(n, &mine, &differ))))
        } else {
            off.first().map(|j| {
                Box::new(Cause::Mismatch(format!(
                    "PE {j} took call {n} of the world team off the flat path (non-blocking, \
                     with other arguments or with a forced algorithm; PEs {off:?} in all), where \
                     this PE called {} blocking and left it without waiting for them",
                    mine.describe()
                )))
            })
        };
        (if cause.is_some() { 0 } else { unchecked }, cause)
    }

    /// A member that entered call `n` on the flat path and left it without
    /// waiting (it only sends there), with its stamp.
    pub(super) fn leaver(&self, n: u64) -> Option<(usize, Stamp)> {
        (0..self.p).filter(|&j| j != self.me).find_map(|j| {
            let (heap, flag) = self.header(n, j);
            if flag != n + 1 {
                return None;
            }
            let stamp = self.stamp(heap, n, j).ok()?;
            let role = self.waits(&stamp.signature()?, stamp.part(), j);
            (role == Waits::Nobody).then_some((j, stamp))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ledger_word_gives_back_its_count_near_the_readers() {
        let chain = fold(0, &[7, 9]);
        for count in [0u64, 1, 255, 65_535, 65_536, 65_537, 1 << 40] {
            let word = ledger_word(chain, count);
            assert_eq!(word & !0xffff, chain & !0xffff);
            for near in [count.saturating_sub(256), count, count + 256] {
                assert_eq!(ledger_count(word, near), count, "count {count} near {near}");
            }
        }
        assert_eq!(ledger_count(0, 3), 0);
    }

    #[test]
    fn chains_of_different_calls_differ_and_stay_apart() {
        let chains = |tokens: &[[u64; 2]]| {
            tokens
                .iter()
                .scan(0u64, |c, t| {
                    *c = fold(*c, t);
                    Some(ledger_word(*c, 0))
                })
                .collect::<Vec<_>>()
        };
        let a = [[1, 8], [2, 8], [3, 16], [3, 16]];
        let b = [[1, 8], [2, 16], [3, 16], [3, 16]];
        let c = [[1, 8], GENERAL, [3, 16], [3, 16]];
        let (fa, fb, fc) = (chains(&a), chains(&b), chains(&c));
        assert_eq!(fa[0], fb[0]);
        for k in 1..a.len() {
            assert_ne!(fa[k], fb[k], "call {k}");
            assert_ne!(fa[k], fc[k], "call {k}");
        }
        assert_eq!(chains(&a), fa);
    }
}
