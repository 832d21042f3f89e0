//! Where things are in a PE's region: the geometry of the sets of slots,
//! heads and data for a team of `p` members, the addresses of a call's
//! slots and words, the stamps that say which call a slot holds, and the
//! error that names the members whose stamps differ from this PE's.

use super::*;

/// Bytes at the start of every PE's heap that the flat path of a job of
/// `p` PEs uses (0 when it has too many PEs for it), whole pages, so that
/// the allocator's blocks keep the heap's page alignment.
pub(crate) fn region_size(p: usize) -> usize {
    if p <= MAX_MEMBERS {
        let whole = data_sets(p) * p * slot_size(p);
        (wide_at(p) + WIDE_SETS * WIDE_SET)
            .max(heads_at(p) + whole)
            .next_multiple_of(PAGE)
    } else {
        0
    }
}

/// Maps the pages of `len` bytes at `at` into this process's page tables
/// as if written (`MADV_POPULATE_WRITE`, Linux 5.14), without touching
/// what they hold. Where the kernel lacks it, the pages fault when first
/// written, as they would have.
fn populate(at: usize, len: usize) {
    let start = at / PAGE * PAGE;
    let end = (at + len).next_multiple_of(PAGE);
    // SAFETY: the advice changes no byte of memory and no mapping: it only
    // fills this process's page tables for a range of a mapped region
    // (`Slots::populate`); a failure (an older kernel) is no more than a
    // refusal.
    unsafe {
        libc::madvise(
            start as *mut libc::c_void,
            end - start,
            libc::MADV_POPULATE_WRITE,
        )
    };
}

/// Where the pair words of a region of `p` members begin: after a line of
/// posted words per member, the line of the region's owner's ledger and
/// count words and its ledger ring ([`Region::settle`]). One word per
/// member, of the copy of its block into the owner's output in the
/// attached allgathers and alltoalls ([`Slots::pair`]).
pub(super) fn pairs_at(p: usize) -> usize {
    (p + 1) * LINE + MAX_HEAD_SETS * 8
}

/// Where the slots begin in a region of `p` members: after its pair words.
pub(super) fn heads_at(p: usize) -> usize {
    pairs_at(p) + (p * 8).next_multiple_of(LINE)
}

/// Where a crowded region of `p` members keeps its owner's wide slots
/// ([`Slots::wide`]): after every head and every slot's data. The region's
/// size is fixed before the PEs know whether they are crowded, so every
/// region has room for them: 4 MiB more per PE, next to a symmetric heap
/// of 128 MiB by default (the heap's memory is reserved when the job
/// starts).
pub(super) fn wide_at(p: usize) -> usize {
    heads_at(p) + head_sets(p) * p * SMALL_HEAD + data_sets(p) * p * data_size(p)
}

/// How many sets of slots' data a region of `p` members has: calls whose
/// blocks do not fit a slot's head use them in turn, so a member may run
/// `data_sets - 1` such calls ahead of the slowest (and as many calls of
/// any size when not crowded, where slots are whole). As many as fit in
/// [`SETS_BYTES`], at least 2 and at most [`MAX_DATA_SETS`], and a power
/// of two, so that a call's set is a mask of its number.
pub(super) fn data_sets(p: usize) -> usize {
    let fit = (SETS_BYTES / (p.max(1) * data_size(p))).clamp(2, MAX_DATA_SETS);
    1 << fit.ilog2()
}

/// How many sets of slots' heads a crowded region of `p` members has:
/// every call uses them in turn, so that a member may run `head_sets - 1`
/// calls whose blocks fit the heads ahead of the slowest. As many as fit
/// in [`HEADS_BYTES`], at least [`data_sets`] and at most
/// [`MAX_HEAD_SETS`], a power of two. A member that only sends (the root
/// of a broadcast) runs ahead until it must wait for the slowest to be
/// scheduled again: in ten runs each, alternated, a loop of 8 B
/// broadcasts at 4 PEs on 2 cores took 0.26-0.27 µs a call in most runs
/// with 256 sets of heads, against 0.37-0.48 µs with 32 sets of whole
/// slots (Open MPI's took 0.35-0.59 µs there).
pub(super) fn head_sets(p: usize) -> usize {
    let fit = (HEADS_BYTES / (p.max(1) * SMALL_HEAD)).clamp(data_sets(p), MAX_HEAD_SETS);
    1 << fit.ilog2()
}

/// Bytes of a whole slot, header and data, when the PEs do not outnumber
/// the cores.
pub(super) fn slot_size(p: usize) -> usize {
    (HEADER + data_size(p)).next_multiple_of(LINE)
}

/// Largest block one member writes into one slot in a region of `p`
/// members: what it may write to each of the others in one call
/// ([`PUSH_LIMIT`]), at most [`MAX_DATA`], in whole lines.
pub(super) fn data_size(p: usize) -> usize {
    (PUSH_LIMIT / p.saturating_sub(1).max(1)).min(MAX_DATA) / LINE * LINE
}

/// What a slot's header says of the call its sender is in, two words: the
/// collective (7 bits) and whether the call is attached ([`ATTACHED`]),
/// the root (8 bits), which of the call's parts (16 bits) and the
/// operation; the call's bytes and its element size (32 bits each).
/// Members in one call write equal stamps; a member whose stamp differs
/// called it otherwise.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) struct Stamp(pub(super) [u64; 2]);

impl Slots {
    pub(super) fn posted_at(&self, sender: usize) -> usize {
        sender * LINE
    }

    /// Where a member's ledger word is in its own region
    /// ([`Region::vouched`]), its count word after it ([`Region::reached`]):
    /// in a line of their own after the posted words, apart from its
    /// running word, which spinning members read.
    pub(super) fn ledger_at(&self) -> usize {
        self.p * LINE
    }

    /// Where the ledger ring's word of call `n` is in a member's region:
    /// one word per set of slots' heads, after the ledger word's line.
    pub(super) fn ring_at(&self, n: u64) -> usize {
        (self.p + 1) * LINE + self.set(n) * 8
    }

    /// The word, in the region of the heap mapped at `heap` (member
    /// `to`'s), of the copy of member `from`'s block into `to`'s output in
    /// an attached allgather or alltoall ([`Region::attached`]): which
    /// call last took it, and how far it got ([`attached::Pair`]).
    pub(super) fn pair(&self, heap: usize, from: usize) -> &AtomicU64 {
        self.word_in(heap, pairs_at(self.p) + from * 8)
    }

    /// The set of slots of call `n`.
    pub(super) fn set(&self, n: u64) -> usize {
        n as usize & (self.sets - 1)
    }

    /// Maps into this process's page tables, ahead of the calls, the pages
    /// it writes most: this PE's whole region, and its slots in the
    /// others' (heads and data when crowded). Otherwise the first write of
    /// each page of a slot faults, in the first calls of each set and
    /// again in the first call of each larger block: 2-3 µs for a 4-8 KiB
    /// block that takes 0.2-0.4 after (which also made such copies look
    /// slow to `stores::Streaming`'s timing). Populating every member's
    /// whole region made 32 PEs on 2 cores take 1 s more to start (1.3 ->
    /// 2.3-2.4 s); these pages 0.1 s.
    pub(super) fn populate(&self) {
        populate(self.heap, region_size(self.p));
        for j in (0..self.p).filter(|&j| j != self.me) {
            let base = self.peers[j];
            if self.crowded {
                // A sender's heads lie side by side, set after set.
                populate(base + self.slot_at(0, self.me), self.sets * SMALL_HEAD);
                for k in 0..self.data_sets as u64 {
                    populate(base + self.data_at(k, self.me, self.data), self.data);
                }
            } else {
                for k in 0..self.sets as u64 {
                    populate(base + self.slot_at(k, self.me), slot_size(self.p));
                }
            }
        }
    }

    /// Where `sender`'s slot for call `n` is: its head (or the whole
    /// slot), whose first line holds the header. Heads lie sender by
    /// sender, each sender's sets in turn, so that the lines after those
    /// a call takes are the same sender's: laid out set by set, the next
    /// line was the next sender's or this PE's own, and the processor's
    /// fetching of the lines that follow those in use took them from the
    /// core that writes them next (at 2 PEs 64 B calls took 1.4-2 times
    /// as long). Whole slots lie set by set, as each is far larger than
    /// the lines a small call takes.
    pub(super) fn slot_at(&self, n: u64, sender: usize) -> usize {
        self.heads_at + self.set(n) * self.set_stride + sender * self.sender_stride
    }

    /// Where a block of `len` bytes is in `sender`'s slot for call `n`:
    /// after the header in the slot's head (or whole slot), or in its data
    /// when larger than the head holds.
    pub(super) fn data_at(&self, n: u64, sender: usize, len: usize) -> usize {
        if len <= self.inline {
            self.slot_at(n, sender) + HEADER
        } else {
            self.tail + (self.data_set(n) * self.p + sender) * self.data
        }
    }

    /// Where the block of call `n` is in its writer's wide slot, in the
    /// writer's own region: after the line of the slot's progress word.
    pub(super) fn wide_data_at(&self, n: u64) -> usize {
        self.wide_at + (n as usize % WIDE_SETS) * WIDE_SET + LINE
    }

    /// The progress word of call `n`'s wide slot in the region of the heap
    /// mapped at `heap`: how many bytes of the block its writer has written
    /// there, in a line of its own before them.
    pub(super) fn progress(&self, heap: usize, n: u64) -> &AtomicU64 {
        self.word_in(heap, self.wide_data_at(n) - LINE)
    }

    /// Lines of a slot that a block of `bytes` bytes takes with the
    /// header's: the head's, or the header's and the data's.
    pub(super) fn line_count(&self, bytes: usize) -> usize {
        if bytes <= self.inline {
            (HEADER + bytes).div_ceil(LINE)
        } else {
            1 + bytes.div_ceil(LINE)
        }
    }

    /// The set of slots' data of call `n`.
    pub(super) fn data_set(&self, n: u64) -> usize {
        n as usize & (self.data_sets - 1)
    }

    /// The lines of `sender`'s slot for call `n` that a block of `bytes`
    /// bytes takes ([`Slots::line_count`] of them): the header's at the
    /// first offset, then as many as the third says of the block's past
    /// it, from the second.
    #[inline(always)]
    pub(super) fn lines(&self, n: u64, sender: usize, bytes: usize) -> (usize, usize, usize) {
        let at = self.slot_at(n, sender);
        let rest = if bytes <= self.inline {
            at + LINE
        } else {
            self.data_at(n, sender, bytes)
        };
        (at, rest, self.line_count(bytes) - 1)
    }

    /// Asks the processor to fetch the lines of `sender`'s slot for call
    /// `n` that hold its header and `bytes` of data ([`Slots::lines`]),
    /// at most [`PREFETCH_LINES`] and from the `first` on, into this
    /// core's cache: the sender may have written them already. Fetched
    /// together, they take about the time of one.
    pub(super) fn prefetch(&self, n: u64, sender: usize, bytes: usize, first: usize) {
        let (at, rest, count) = self.lines(n, sender, bytes);
        let fetch = |off: usize| {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: a prefetch only hints; it reads nothing and cannot
            // fault (x86-64 always has SSE). The address is in the region.
            unsafe {
                std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                    (self.heap + off) as *const i8,
                );
            }
            #[cfg(not(target_arch = "x86_64"))]
            let _ = off;
        };
        if first == 0 {
            fetch(at);
        }
        for i in first.max(1) - 1..count.min(PREFETCH_LINES - 1) {
            fetch(rest + i * LINE);
        }
    }

    pub(super) fn word(&self, offset: usize) -> &AtomicU64 {
        self.word_in(self.heap, offset)
    }

    /// Word `offset` of the region in the heap mapped at `heap`, this PE's
    /// or a member's ([`Slots::peers`]).
    pub(super) fn word_in(&self, heap: usize, offset: usize) -> &AtomicU64 {
        debug_assert!(offset % 8 == 0 && offset + 8 <= region_size(self.p));
        debug_assert!(self.peers[..self.p].contains(&heap));
        // SAFETY: every member's heap is mapped for the region's life,
        // page-aligned, and the offset is 8-aligned inside the region
        // (`Region::new`); members write these words only atomically
        // (stores through the mapping, or transport atomics).
        unsafe { &*((heap + offset) as *const AtomicU64) }
    }

    /// Writes the call word and `stamp` of call `n` into the slot whose
    /// header is at `at` in the heap mapped at `heap`: the call word first,
    /// so that a reader of an older call's stamp there sees it change
    /// ([`Slots::stamp`]).
    #[inline(always)]
    pub(super) fn write_stamp(&self, heap: usize, at: usize, n: u64, stamp: &Stamp) {
        self.word_in(heap, at + CALL).store(n, Ordering::Relaxed);
        fence(Ordering::Release);
        for (i, &w) in stamp.0.iter().enumerate() {
            self.word_in(heap, at + 8 + 8 * i)
                .store(w, Ordering::Relaxed);
        }
    }

    /// Where `sender`'s header of call `n` is for this PE (the address of
    /// the heap that holds it), with its flag: in this PE's heap, where the
    /// sender writes it if this PE waits for it; otherwise, if it
    /// [`crowded`](Slots::crowded), in the sender's own slot, which it writes
    /// in every call, when that slot's flag has got as far as call `n`.
    #[inline(always)]
    pub(super) fn header(&self, n: u64, sender: usize) -> (usize, u64) {
        let flag = self.word(self.slot_at(n, sender)).load(Ordering::Acquire);
        if flag > n || !self.crowded {
            return (self.heap, flag);
        }
        self.own_header(n, sender).unwrap_or((self.heap, flag))
    }

    /// `sender`'s own slot of call `n`'s set, in its heap, if its flag has
    /// got as far as call `n`: where its heap is, and the flag.
    #[cold]
    pub(super) fn own_header(&self, n: u64, sender: usize) -> Option<(usize, u64)> {
        let theirs = self.peers[sender];
        let own = self
            .word_in(theirs, self.slot_at(n, sender))
            .load(Ordering::Acquire);
        (own > n).then_some((theirs, own))
    }

    /// The data `sender` wrote for call `n` into its slot in the heap
    /// mapped at `heap` (this PE's, or the sender's own if the call is
    /// [pulled](Slots::pulls)), once its flag says so.
    pub(super) fn data_in(&self, heap: usize, n: u64, sender: usize, len: usize) -> &[u8] {
        let at = self.data_at(n, sender, len);
        debug_assert!(len <= self.data);
        // SAFETY: inside the region (`len <= data`); the sender wrote it
        // before raising the flag this PE read with acquire ordering, and
        // writes it again only after this PE has entered call `n + 1`.
        unsafe { std::slice::from_raw_parts((heap + at) as *const u8, len) }
    }

    /// The stamp `sender` wrote for call `n` into its slot in the heap
    /// mapped at `heap` (this PE's, or its own, see [`Slots::header`]), once
    /// the slot's flag says so: `Err(())` if the slot already holds a later
    /// call (the sender writes the call word before the stamp, and it is
    /// read after).
    #[inline(always)]
    pub(super) fn stamp(&self, heap: usize, n: u64, sender: usize) -> Result<Stamp, ()> {
        let at = self.slot_at(n, sender);
        let w: [u64; 2] =
            std::array::from_fn(|i| self.word_in(heap, at + 8 + 8 * i).load(Ordering::Relaxed));
        fence(Ordering::Acquire);
        if self.word_in(heap, at + CALL).load(Ordering::Relaxed) != n {
            return Err(());
        }
        Ok(Stamp(w))
    }

    /// The stamp `sender` wrote for the call `n` this PE is in, once its
    /// flag says so (no member can be a whole round of sets ahead).
    #[inline(always)]
    pub(super) fn current(&self, n: u64, sender: usize) -> Option<Stamp> {
        let (heap, _) = self.header(n, sender);
        self.stamp(heap, n, sender).ok()
    }

    /// Whether `sender`, which this PE waits for in call `n`, has written
    /// its slot of the call into this PE's heap (`Some(true)`), taken the
    /// call to the general path (`Some(false)`), or not yet (`None`).
    /// With `mine`, this PE's stamp of the call, it has also arrived
    /// (`Some(true)`) if its own slot says it called the call otherwise
    /// ([`Slots::crowded`]): it may not write to this PE then, and the stamps'
    /// check fails the call. With equal stamps it writes to this PE as
    /// well, and its block is read only once it has.
    #[inline(always)]
    pub(super) fn arrived(&self, n: u64, sender: usize, mine: Option<&Stamp>) -> Option<bool> {
        // The posted word first: a PE posts a later call only after raising
        // its flag for this one, so the flag read next is then current.
        let posted = self.word(self.posted_at(sender)).load(Ordering::Acquire);
        let flag = self.word(self.slot_at(n, sender)).load(Ordering::Acquire);
        if flag == n + 1 {
            Some(true)
        } else if posted > n {
            Some(false)
        } else {
            let mine = mine.filter(|_| self.crowded)?;
            self.differs(n, sender, mine).then_some(true)
        }
    }

    /// Whether `sender`'s own slot says it is in call `n` with a stamp
    /// other than `mine` ([`Slots::arrived`]).
    #[cold]
    pub(super) fn differs(&self, n: u64, sender: usize, mine: &Stamp) -> bool {
        self.own_header(n, sender)
            .is_some_and(|(heap, own)| own == n + 1 && self.stamp(heap, n, sender) != Ok(*mine))
    }
}

/// The bit of a stamp's first word that says its call is attached
/// ([`Carry::Attached`]): members that took a contested call different
/// ways ([`Slots::contested`]) then fail it.
const ATTACHED: u64 = 0x80;

impl Stamp {
    /// The stamp of part `part` of a call of `sig`, which runs on the flat
    /// path ([`Region::parts`]), `attached` or not.
    pub(super) fn new(sig: &Signature, part: usize, attached: bool) -> Stamp {
        debug_assert!(sig.root <= 0xff && part <= 0xffff);
        let coll = Collective::ALL
            .iter()
            .position(|x| *x == sig.collective)
            .unwrap_or(0) as u64;
        let attached = if attached { ATTACHED } else { 0 };
        Stamp([
            coll | attached
                | (sig.root as u64) << 8
                | (part as u64) << 16
                | u64::from(sig.op) << 32,
            sig.bytes as u64 | (sig.elem as u64) << 32,
        ])
    }

    /// The call's signature, if the words hold one.
    pub(super) fn signature(&self) -> Option<Signature> {
        let w = self.0;
        Some(Signature {
            collective: *Collective::ALL.get((w[0] & (ATTACHED - 1)) as usize)?,
            root: (w[0] >> 8 & 0xff) as usize,
            op: (w[0] >> 32) as u32,
            bytes: (w[1] & 0xffff_ffff) as usize,
            elem: (w[1] >> 32) as usize,
        })
    }

    /// Which of the call's parts.
    pub(super) fn part(&self) -> usize {
        (self.0[0] >> 16 & 0xffff) as usize
    }

    /// The call as error texts name it.
    pub(super) fn describe(&self) -> String {
        let part = self.part();
        let how = if self.0[0] & ATTACHED != 0 {
            ", attached"
        } else {
            ""
        };
        match self.signature() {
            None => "a collective".into(),
            Some(sig) if part == 0 && how.is_empty() => describe(&sig),
            Some(sig) => format!("{} (its part {part}{how})", describe(&sig)),
        }
    }
}

/// The error text of members `differ` (with the stamps they wrote)
/// calling call `n` otherwise than this PE, which stamped it `mine`.
pub(super) fn differ_text(n: u64, mine: &Stamp, differ: &[(usize, Option<Stamp>)]) -> String {
    let (j, theirs) = &differ[0];
    let theirs = theirs.map_or("a collective".into(), |t| t.describe());
    let mut text = format!(
        "PE {j} called {theirs} where this PE called {} (call {n} of the world team)",
        mine.describe()
    );
    if differ.len() > 1 {
        let pes: Vec<usize> = differ.iter().map(|(j, _)| *j).collect();
        text += &format!("; PEs {pes:?} all differ from this PE");
    }
    text
}

impl Region {
    /// What is wrong with call `n`, which this PE called as `stamp`, once
    /// every member has written its slot and some wrote another stamp,
    /// `first` the lowest of them: the members whose stamps differ, and
    /// what they called. Out of the calls' path, which only looks for
    /// `first`: with the list of them collected in every call, alternated
    /// process by process (16 rounds), 2-PE 8 B reduces took 1.13-1.22x
    /// the time.
    #[cold]
    #[inline(never)]
    pub(super) fn mismatch(&self, n: u64, stamp: &Stamp, first: usize) -> Cause {
        let s = &self.slots;
        let mut differ = vec![(first, s.current(n, first))];
        differ.extend(
            (first + 1..s.p)
                .filter(|&j| j != s.me)
                .map(|j| (j, s.current(n, j)))
                .filter(|(_, theirs)| *theirs != Some(*stamp)),
        );
        Cause::Mismatch(differ_text(n, stamp, &differ))
    }
}
