//! How a member waits for the others' flags: spinning, yielding when the
//! PEs are crowded, then through the progress engine; and what it knows of
//! how far each member has come.

use super::*;

/// Whether member `me`, waiting for member `only` (or for every other
/// member if `usize::MAX`), waits for member `j`.
#[inline(always)]
pub(super) fn awaited(j: usize, me: usize, only: usize) -> bool {
    j != me && (only == usize::MAX || only == j)
}

/// The core this thread runs on + 1 (0 if the system cannot tell). With
/// glibc 2.35 or later a load from the thread's restartable-sequences
/// area, which the kernel keeps current; otherwise the vDSO's `getcpu`.
pub(super) fn processor() -> u64 {
    // SAFETY: no preconditions; it returns -1 on failure.
    let core = unsafe { libc::sched_getcpu() };
    u64::try_from(core).map_or(0, |c| c + 1)
}

impl Region {
    /// Waits until every other member (or `only` that one) satisfies
    /// `arrived`, watching those that do not for exits. `arrived`'s second
    /// argument says whether the wait has gone past its spins and yields
    /// (it waits through the engine then), where a member's own slot is
    /// worth reading too ([`Slots::arrived`]).
    ///
    /// Not oversubscribed, it spins on the flags. Oversubscribed, it
    /// yields, so that the core goes to the member waited for, except that
    /// with `spin` (a wait for the others' blocks of the current call) it
    /// spins while the first member missing runs on another core: its
    /// blocks are then on their way. Each member's running word says which
    /// core it runs on, and it clears the word before it yields. Yielding
    /// at every reading, at 4 PEs on 2 cores, a member often handed its
    /// core to the other PE there, which was waiting for the same two PEs
    /// of the other core and handed it back at once: alternated in one run
    /// (medians of 8 runs), 8 B alltoalls, allreduces, barriers and
    /// allgathers took 0.77-0.83x the time so, with 2.3 context switches
    /// a call instead of 2.8-2.9, and 1 KiB ones 0.85-0.88x; 16-64 KiB
    /// calls did not change. A wait for free slots (step 1) or for a
    /// broadcast's root does not spin: the member waited for then has
    /// calls to catch up on, not one store to make (spinning there, 16 KiB
    /// reduces took 1.10-1.13x the time, 4-PE 8 B broadcasts 1.24x).
    #[inline(always)]
    pub(super) fn wait(
        &self,
        world: &World,
        op: &'static str,
        only: Option<usize>,
        spin: bool,
        mut arrived: impl FnMut(usize, bool) -> bool,
    ) -> Result<()> {
        let (p, me) = (self.slots.p, self.slots.me);
        // `only` as a plain word: an `Option` spilled and reloaded whole in
        // the loop below cannot be forwarded from the store buffer.
        let only = only.unwrap_or(usize::MAX);
        if self.slots.crowded {
            if self.yield_for(only, spin, &mut arrived) {
                return Ok(());
            }
        } else {
            // The members waited for, by a plain loop: through iterators
            // each reading took 15-35 instructions more
            // (`benches/call_instructions.sh`).
            let (from, to) = if only == usize::MAX {
                (0, p)
            } else {
                (only, only + 1)
            };
            for _ in 0..SPINS {
                let mut j = from;
                while j < to && (j == me || arrived(j, false)) {
                    j += 1;
                }
                if j == to {
                    return Ok(());
                }
                std::hint::spin_loop();
            }
        }
        // A closure of its own: given `arrived` itself, the compiler made
        // one copy of it for both and called it from the spins above.
        self.wait_long(world, op, only, &mut |j, pull| arrived(j, pull))
    }

    /// The oversubscribed part of a [`Region::wait`]: reads the flags,
    /// spinning while the first member missing runs on another core (with
    /// `spin`) and yielding otherwise, [`YIELDS`] times at most; whether
    /// every member waited for (`only`, or all others if `usize::MAX`) has
    /// arrived. Inlined: called, at 4 PEs on 2 cores, 8 B allreduces and
    /// broadcasts took 1.04-1.10x the time.
    #[inline(always)]
    pub(super) fn yield_for(
        &self,
        only: usize,
        spin: bool,
        arrived: &mut impl FnMut(usize, bool) -> bool,
    ) -> bool {
        let (p, me) = (self.slots.p, self.slots.me);
        let mine = self.running(me);
        let mut core = processor();
        mine.store(core, Ordering::Relaxed);
        let (mut yields, mut spins) = (0, 0);
        while yields < YIELDS {
            let missing = (0..p).find(|&j| awaited(j, me, only) && !arrived(j, false));
            let Some(j) = missing else {
                return true;
            };
            // Their running word is read only by a wait that may spin.
            let elsewhere = || {
                let theirs = self.running(j).load(Ordering::Relaxed);
                theirs != 0 && theirs != core
            };
            if spin && spins < RUNNING_SPINS && elsewhere() {
                spins += 1;
                std::hint::spin_loop();
                continue;
            }
            mine.store(0, Ordering::Relaxed);
            std::thread::yield_now();
            core = processor();
            mine.store(core, Ordering::Relaxed);
            yields += 1;
        }
        // The engine yields and sleeps without saying so.
        mine.store(0, Ordering::Relaxed);
        false
    }

    /// Holds this member in barrier `n` (which every member has reached)
    /// until the member whom the call before it made the others wait for
    /// has left it: the root of a broadcast or scatter leaves first, the
    /// root of a reduce or gather last. In a loop of a rooted call and a
    /// barrier, the others' next call so finds the root's block written
    /// (or the root finds theirs); otherwise the member that arrived last
    /// left first, and waited in the call for a root that left the
    /// barrier after it (when the PEs outnumber the cores, a root off its
    /// core). When crowded, the members' count words, which the ledger
    /// keeps ([`Region::settle`]), say who has left; otherwise a member
    /// that the others wait for raises its count word as it leaves. Timed
    /// as the OSU micro-benchmarks do (each call alone, then a barrier), at
    /// 4 PEs on 2 cores 8 B broadcasts took 0.11x the time, reduces 0.17x,
    /// 1 KiB broadcasts 0.17x, while an iteration of call and barrier took
    /// 0.95-1.03x (medians of 8-12 runs, alternated); at 2 PEs on an AMD
    /// EPYC (Zen 4), alternated in one run (medians of 16 rounds), 8 B
    /// broadcasts 0.55-0.57x, 8 B reduces 0.59-0.71x, 1 KiB broadcasts
    /// 0.80-0.84x, 2 KiB reduces 0.86x, with a shared cache and across
    /// dies alike, while an iteration took 0.89-1.01x. The call before is
    /// read from this member's own slot of it (none if it took the
    /// general path from the start). A preference, not a rule: the wait
    /// ends after [`YIELDS`] yields when crowded, `4 * SPINS` spins
    /// otherwise, so members that disagree on the call before (after one
    /// failed) do not wait for each other for ever.
    #[cold]
    #[inline(never)]
    pub(super) fn leave_in_turn(&self, n: u64) {
        let s = &self.slots;
        let before = n.checked_sub(1).and_then(|m| s.stamp(s.heap, m, s.me).ok());
        let Some(sig) = before.and_then(|b| b.signature()) else {
            return;
        };
        let mut left = |j: usize, _| self.count(j).load(Ordering::Acquire) > n;
        let only = match sig.collective {
            Collective::Broadcast | Collective::Scatter if s.me != sig.root => sig.root,
            Collective::Reduce | Collective::Gather if s.me == sig.root => usize::MAX,
            Collective::Broadcast
            | Collective::Scatter
            | Collective::Reduce
            | Collective::Gather
                if !s.crowded =>
            {
                self.count(s.me).store(n + 1, Ordering::Release);
                return;
            }
            _ => return,
        };
        if s.crowded {
            self.yield_for(only, true, &mut left);
            return;
        }
        for _ in 0..SPINS * 4 {
            if (0..s.p).all(|j| !awaited(j, s.me, only) || left(j, false)) {
                return;
            }
            std::hint::spin_loop();
        }
    }

    /// The rest of a [`Region::wait`] that its spins or yields did not
    /// end: through the engine, which watches the members waited for
    /// (`only`, or all others if `usize::MAX`) for exits. Out of the
    /// waits' inlined code, so that they do not set up what this needs
    /// in every call (2-PE 8 B broadcasts: 17 instructions fewer at the
    /// root, 28 at the receiver; reduces 0.93x the time).
    #[cold]
    #[inline(never)]
    pub(super) fn wait_long(
        &self,
        world: &World,
        op: &'static str,
        only: usize,
        arrived: &mut dyn FnMut(usize, bool) -> bool,
    ) -> Result<()> {
        let (p, me) = (self.slots.p, self.slots.me);
        let waiting = RefCell::new(Vec::new());
        let waited = world
            .engine()
            .wait_memory(op, Watch::Listed(&waiting), |_| {
                let mut w = waiting.borrow_mut();
                w.clear();
                w.extend((0..p).filter(|&j| awaited(j, me, only) && !arrived(j, true)));
                w.is_empty().then_some(Ok(()))
            });
        if self.slots.crowded {
            self.running(me).store(processor(), Ordering::Relaxed);
        }
        waited
    }

    /// Member `j`'s running word: the core it runs on + 1 while it runs
    /// on the flat path, 0 while it yields or sleeps there (or has never
    /// waited there). In member `j`'s own region, in the line of its own
    /// posted word, which nobody writes (a PE posts only to the others);
    /// written only when the PEs outnumber the cores.
    pub(super) fn running(&self, j: usize) -> &AtomicU64 {
        let s = &self.slots;
        s.word_in(s.peers[j], s.posted_at(j) + 8)
    }

    /// Whether member `j` has entered call `n` or a later one, either way,
    /// as this PE knows or its count word, flags and posted word say. When
    /// crowded, the count word comes first: one reading there covers every
    /// call the member has made since, where its flags tell of one call
    /// each (and it writes no flag into this PE's heap in calls where this
    /// PE does not wait for it, [`Slots::pushes`]). A member that failed a
    /// call has not settled it, and its flags tell then.
    #[inline(always)]
    pub(super) fn reached(&self, n: u64, j: usize) -> bool {
        if self.entered[j].load(Ordering::Relaxed) > n {
            return true;
        }
        if self.slots.crowded {
            let count = self.count(j).load(Ordering::Acquire);
            self.saw(j, count);
            if count > n {
                return true;
            }
        }
        let s = &self.slots;
        let (_, flag) = s.header(n, j);
        let posted = s.word(s.posted_at(j)).load(Ordering::Acquire);
        self.saw(j, flag.max(posted));
        flag > n || posted > n
    }

    /// Notes that member `j` has entered the call numbered `mark - 1`. A
    /// plain load and store, not a locked read-modify-write, which would
    /// wait for this PE's stores to the others' heaps: two threads may
    /// race here, and the loser leaves a smaller mark, which is still true.
    pub(super) fn saw(&self, j: usize, mark: u64) {
        let known = &self.entered[j];
        if known.load(Ordering::Relaxed) < mark {
            known.store(mark, Ordering::Relaxed);
        }
    }
}
