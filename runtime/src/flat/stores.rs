//! The stores of a slot into another member's heap: the order of its
//! lines, ascending copies of small blocks, streaming stores of large
//! ones when cached stores run slow, and taking lines for writing ahead
//! of them.

use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::time::Instant;

use super::*;

/// Whether this processor has `PREFETCHW`, which takes a line for
/// writing ([`claim`]).
pub(super) fn claims() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        // CPUID leaf 0x8000_0001, ECX bit 8: PRFCHW (Linux's
        // `3dnowprefetch`). Every x86-64 processor has that leaf.
        std::arch::x86_64::__cpuid(0x8000_0001).ecx & 1 << 8 != 0
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Asks the processor to take the line at `addr` for writing, so that a
/// later store does not wait for the line's owner to give it up: a put's
/// stores to another core's line wait in the store buffer, and every later
/// store and load that needs them committed (a load of a value stored in
/// pieces, a full buffer) waits with them. Taken a call ahead, the lines
/// of the next call's slots are owned by the time it writes them (at 2 PEs
/// an 8 B broadcast took 0.14 µs so, 0.20 without; 256 B 0.16 and 0.21).
/// Only where [`claims`] says the processor has the instruction.
#[inline(always)]
pub(super) fn claim(addr: usize) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch only hints: it changes no memory, raises no fault
    // whatever the address, and touches no register or flag but its
    // operand; the processor has the instruction (`claims`).
    unsafe {
        std::arch::asm!(
            "prefetchw [{}]",
            in(reg) addr,
            options(nostack, readonly, preserves_flags)
        );
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = addr;
}

/// Copies `from` into a slot at `to`, which is 16-byte aligned (a slot's
/// data starts 32 bytes into a line, and the part past the header's line
/// at a line): on x86-64, blocks of up to [`FORWARD_LIMIT`] bytes in
/// ascending order, each byte once, so that each line is taken from its
/// reader once and in the order the reader fetches them; larger ones, and
/// every block elsewhere, by `memcpy`.
///
/// # Safety
/// `to` must be valid for writes of `from.len()` bytes, not overlap it,
/// and be 16-byte aligned (its stores are aligned ones of 16, 8, 4 and 2
/// bytes).
pub(super) unsafe fn copy_forward(from: &[u8], to: *mut u8) {
    debug_assert!(from.is_empty() || to as usize % 16 == 0);
    let n = from.len();
    if n > FORWARD_LIMIT || !cfg!(target_arch = "x86_64") {
        // SAFETY: the caller's promise.
        unsafe { weft_copy::copy_nonoverlapping(from.as_ptr(), to, n) };
        return;
    }
    let mut i = 0;
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{__m128i, _mm_loadu_si128};
        while i + 16 <= n {
            // SAFETY: in bounds of both; `to + i` is 16-byte aligned.
            unsafe {
                let v = _mm_loadu_si128(from.as_ptr().add(i) as *const __m128i);
                std::ptr::write_volatile(to.add(i) as *mut __m128i, v);
            }
            i += 16;
        }
    }
    // The tail, under 16 bytes: 8, 4, 2 and 1 of them at a time, as its
    // length has them (byte by byte, an 8 B block took 39 instructions).
    let rest = n - i;
    let src = from.as_ptr();
    // SAFETY: `rest` bytes remain in both from `i` on; `to + i` is 16-byte
    // aligned, then aligned to each width after the wider ones written.
    unsafe {
        if rest & 8 != 0 {
            let v = std::ptr::read_unaligned(src.add(i) as *const u64);
            std::ptr::write_volatile(to.add(i) as *mut u64, v);
            i += 8;
        }
        if rest & 4 != 0 {
            let v = std::ptr::read_unaligned(src.add(i) as *const u32);
            std::ptr::write_volatile(to.add(i) as *mut u32, v);
            i += 4;
        }
        if rest & 2 != 0 {
            let v = std::ptr::read_unaligned(src.add(i) as *const u16);
            std::ptr::write_volatile(to.add(i) as *mut u16, v);
            i += 2;
        }
        if rest & 1 != 0 {
            std::ptr::write_volatile(to.add(i), *src.add(i));
        }
    }
}

/// Smallest block that [`Streaming`] writes with non-temporal stores, and
/// times when it writes it by cached ones: in a pushed slot, what a 2 KiB
/// block leaves past the header's line, which holds its first 32 bytes
/// (a pulled or wide slot gets the whole block). Across dies (below), 2
/// KiB blocks took 0.4-0.5x the time streamed (broadcasts timed OSU's way
/// and back-to-back allreduces at 2 PEs), 1 KiB as long.
const STREAM_FROM: usize = (2 << 10) - (LINE - HEADER);
/// One cached copy in this many from [`STREAM_FROM`] is timed: two
/// readings of the clock cost a third of a 2 KiB copy with a shared cache.
const TIMED_ONE_IN: usize = 8;
/// Slowest rate of a cached copy into a slot, bytes per nanosecond (GB/s),
/// below which [`Streaming`] turns to non-temporal stores. On an AMD EPYC
/// (Zen 4, 2 virtual CPUs) 2-64 KiB copies into slots ran at 10-40 GB/s
/// back to back (all but 0.5% of them over 6) when the two CPUs shared a
/// cache (a line crossed and back in 30-70 ns), 2-4 KiB ones at 4.5-6 in
/// some calls timed alone; but when the host placed them on different
/// dies (300-350 ns), 2 KiB ones (ascending stores, [`copy_forward`]) at
/// 3-6 GB/s and larger ones at 1.5-4: each store then waits for its line
/// to come from the reader's die.
const SLOW_RATE: usize = 4;
/// Timed cached copies in a row slower than [`SLOW_RATE`] that turn
/// [`Streaming`] to non-temporal stores: more than a round of the 32 sets
/// of slots at one in [`TIMED_ONE_IN`]. Whatever the placement, copies run
/// slow for a round after the writer's lines were taken from it: after a
/// call whose blocks went the other way (a broadcast's receivers write a
/// reduce's blocks), or the other member wrote the same slot (with 2 in a
/// row, 2-8 KiB calls so turned to streaming with a shared cache).
const SLOW_IN_ROW: usize = 6;
/// Blocks written into slots with non-temporal stores after slow cached
/// copies, before cached copies are timed again: the host moves virtual
/// CPUs between dies every few seconds or minutes.
pub(super) const STREAMED: usize = 16 << 10;

/// How a member copies blocks from [`STREAM_FROM`] into slots (the
/// others', its own slot that they pull from, its wide slot), and how an
/// attached allreduce stores into its own vector ([`Region::attached`]),
/// unless `WEFT_STREAMING` says always or never: by cached stores, timing
/// one in [`TIMED_ONE_IN`], and after [`SLOW_IN_ROW`] timed ones in a row
/// ran slower than [`SLOW_RATE`], by non-temporal stores
/// ([`weft_copy::copy_streaming`]) for the next `streamed` blocks.
/// Non-temporal stores send the lines to memory and drop the readers'
/// copies without waiting for them, and the readers then read them from
/// memory: much the same speed wherever the host places the cores, where
/// cached stores are faster with a shared cache and several times slower
/// across dies (a two-process ring of 64 KiB slots: 15-37 µs a block by
/// `memcpy` across dies, 4-6 µs streamed either way).
///
/// Cached copies are timed only into slots that this PE last wrote by
/// cached stores: its first writes of a slot's pages fault, and its
/// first cached writes after streaming find none of the lines in its own
/// cache, which a writer that keeps writing a slot mostly does (the
/// reader only shares them), so those run slow wherever the cores lie.
pub(super) struct Streaming {
    /// `WEFT_STREAMING`.
    choice: StreamingChoice,
    /// Blocks to stream once cached copies ran slow.
    streamed: usize,
    /// Blocks still to stream before copying by cached stores again.
    left: AtomicUsize,
    /// The first call whose cached copy may be timed: the sets of slots
    /// before it were last written by streaming, or never.
    timed_from: AtomicU64,
    /// Cached copies from [`STREAM_FROM`], to time one in [`TIMED_ONE_IN`].
    cached: AtomicUsize,
    /// Timed cached copies in a row that ran slow.
    slow: AtomicUsize,
}

/// How [`Streaming`] has a block stored.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Store {
    /// By cached stores.
    Cached,
    /// By cached stores, timed ([`Streaming::note`]).
    Timed,
    /// By non-temporal stores.
    Streamed,
}

impl Streaming {
    /// Copies by cached stores until they run slow, then streams
    /// `streamed` blocks (with `choice` [`StreamingChoice::Auto`]).
    pub(super) fn new(choice: StreamingChoice, streamed: usize) -> Streaming {
        Streaming {
            choice,
            streamed,
            left: AtomicUsize::new(0),
            timed_from: AtomicU64::new(0),
            cached: AtomicUsize::new(0),
            slow: AtomicUsize::new(0),
        }
    }

    /// How to store the next block from [`STREAM_FROM`], that of call `n`
    /// into storage whose call `n` comes round again `sets` calls later
    /// (a slot's set; its first cached block of each is not timed). One
    /// thread at a time stores a team's calls; an update lost to another
    /// thread only changes how a block is stored.
    #[inline(always)]
    pub(super) fn store(&self, n: u64, sets: u64) -> Store {
        match self.choice {
            StreamingChoice::Auto => {}
            StreamingChoice::Always => return Store::Streamed,
            StreamingChoice::Never => return Store::Cached,
        }
        let left = self.left.load(Ordering::Relaxed);
        if left > 0 {
            self.left.store(left - 1, Ordering::Relaxed);
            if left == 1 {
                self.timed_from.store(n + 1 + sets, Ordering::Relaxed);
            }
            return Store::Streamed;
        }
        let cached = self.cached.load(Ordering::Relaxed).wrapping_add(1);
        self.cached.store(cached, Ordering::Relaxed);
        if cached % TIMED_ONE_IN != 0 || n < self.timed_from.load(Ordering::Relaxed).max(sets) {
            return Store::Cached;
        }
        Store::Timed
    }

    /// Whether blocks are being streamed, without counting one.
    pub(super) fn streams(&self) -> bool {
        match self.choice {
            StreamingChoice::Auto => self.left.load(Ordering::Relaxed) > 0,
            StreamingChoice::Always => true,
            StreamingChoice::Never => false,
        }
    }

    /// Whether cached copies ran slow lately, as they do when the host puts
    /// the cores on different dies: blocks are being streamed on that
    /// account, not because `WEFT_STREAMING` says so.
    pub(super) fn slowed(&self) -> bool {
        self.choice == StreamingChoice::Auto && self.streams()
    }

    /// Notes that a [`Store::Timed`] block of `bytes` took from `start` to
    /// now, turning to streaming after [`SLOW_IN_ROW`] slow ones in a row.
    #[inline(never)]
    pub(super) fn note(&self, bytes: usize, start: Instant) {
        let nanos = usize::try_from(start.elapsed().as_nanos()).unwrap_or(usize::MAX);
        if nanos.saturating_mul(SLOW_RATE) <= bytes {
            self.slow.store(0, Ordering::Relaxed);
            return;
        }
        let slow = self.slow.load(Ordering::Relaxed) + 1;
        if slow < SLOW_IN_ROW {
            self.slow.store(slow, Ordering::Relaxed);
        } else {
            self.slow.store(0, Ordering::Relaxed);
            self.left.store(self.streamed, Ordering::Relaxed);
        }
    }

    /// Copies `from`, of [`STREAM_FROM`] bytes or more, into the slot of
    /// call `n` at `to` (16-byte aligned), the slots of each set taking
    /// `sets` calls to come round again, as [`Streaming::store`] says.
    ///
    /// # Safety
    /// As for [`copy_forward`].
    #[inline(always)]
    unsafe fn copy(&self, from: &[u8], to: *mut u8, n: u64, sets: u64) {
        let len = from.len();
        debug_assert!(len >= STREAM_FROM);
        match self.store(n, sets) {
            // SAFETY: the caller's promise.
            Store::Streamed => unsafe { weft_copy::copy_streaming(from.as_ptr(), to, len) },
            // SAFETY: the caller's promise.
            Store::Cached => unsafe { copy_forward(from, to) },
            // SAFETY: the caller's promise.
            Store::Timed => unsafe { self.timed(from, to) },
        }
    }

    /// Copies `from` to `to` by cached stores and notes how long it took.
    /// Out of line: one copy in [`TIMED_ONE_IN`] takes it, and the inlined
    /// copies of [`Streaming::copy`] in the calls' paths stay short.
    ///
    /// # Safety
    /// As for [`copy_forward`].
    #[inline(never)]
    unsafe fn timed(&self, from: &[u8], to: *mut u8) {
        let start = Instant::now();
        // SAFETY: the caller's promise.
        unsafe { copy_forward(from, to) };
        self.note(from.len(), start);
    }
}

/// Copies `len` bytes from `from` to `to` by non-temporal stores if
/// `streamed`, else by cached ones: a block into a wide slot, or a folded
/// chunk into it or out of it ([`Region::write_wide_blocks`],
/// [`Region::attached`]).
///
/// # Safety
/// As for [`std::ptr::copy_nonoverlapping`].
pub(super) unsafe fn copy_stored(streamed: bool, from: *const u8, to: *mut u8, len: usize) {
    if streamed {
        // SAFETY: the caller's promise.
        unsafe { weft_copy::copy_streaming(from, to, len) }
    } else {
        // SAFETY: the caller's promise.
        unsafe { weft_copy::copy_nonoverlapping(from, to, len) }
    }
}

impl Region {
    /// Copies `from` into a slot of member `j` (this PE's own: its pulled
    /// or wide slot) at `to`, 16-byte aligned, for call `n`, the slots of
    /// each set taking `sets` calls to come round again: by ascending
    /// stores below [`STREAM_FROM`], otherwise as `j`'s [`Streaming`] says.
    /// One `Streaming` per member whose slots this PE writes: when the PEs
    /// outnumber the cores, some share this PE's core and others lie on
    /// another, maybe on another die, and timings of copies to both never
    /// ran slow six in a row (4 PEs on 2 cores across dies: 32 KiB
    /// alltoalls took 48-52 µs, as with cached stores alone, and 18-25
    /// streamed).
    ///
    /// # Safety
    /// As for [`copy_forward`].
    #[inline(always)]
    pub(super) unsafe fn copy_into(&self, j: usize, from: &[u8], to: *mut u8, n: u64, sets: u64) {
        if from.len() < STREAM_FROM {
            // SAFETY: the caller's promise.
            return unsafe { copy_forward(from, to) };
        }
        // SAFETY: the caller's promise; `from` holds `STREAM_FROM` bytes or
        // more.
        unsafe { self.streaming[j].copy(from, to, n, sets) }
    }

    /// Writes this PE's slot for call `n` into member `j`'s heap, stores
    /// alone, back to back, so that each line moves once: first the block
    /// past the header's line (in the head's second line, or the slot's
    /// data), then the header's line in one burst (a member waiting reads
    /// it over and over): the call word, so that a reader of an older
    /// call's stamp there sees it change (`Slots::stamp`), the stamp, the
    /// block's start if the head holds it, and the flag, with release
    /// ordering (a put with signal).
    pub(super) fn push(&self, j: usize, n: u64, stamp: &Stamp, block: &[u8]) {
        let s = &self.slots;
        assert!(block.len() <= s.data);
        let base = s.peers[j];
        // The header's line, and where the block's bytes past it go.
        let (at, rest_at, _) = s.lines(n, s.me, block.len());
        let (head, rest) = if block.len() <= s.inline {
            block.split_at(block.len().min(LINE - HEADER))
        } else {
            block.split_at(0)
        };
        // SAFETY (both copies): a slot's head holds `inline` bytes after its
        // header and its data `data` bytes (asserted above), in the mapped
        // region, 16-byte aligned (heads and data start at lines, a head's
        // block 32 bytes into its line); the member reads them only once
        // it sees the flag raised below, and no member reads this slot of
        // an older call any more (step 1), whose data sets come round every
        // `data_sets` calls.
        unsafe {
            let to = (base + rest_at) as *mut u8;
            self.copy_into(j, rest, to, n, s.data_sets as u64);
        }
        s.write_stamp(base, at, n, stamp);
        if !head.is_empty() {
            // SAFETY: as above.
            unsafe { copy_forward(head, (base + at + HEADER) as *mut u8) };
        }
        s.word_in(base, at).store(n + 1, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Blocks arrive whole whichever way they are copied; streaming lasts
    /// [`STREAMED`] blocks, after which cached copies are timed again only
    /// once the sets written by streaming have come round.
    #[test]
    fn streaming_copies_blocks_and_comes_back_to_cached_stores() {
        let sets = 4;
        let block: Vec<u8> = (0..STREAM_FROM + 100).map(|k| (k % 253) as u8).collect();
        let mut slot = vec![0u8; block.len() + 2 * LINE];
        let at = slot.as_ptr().align_offset(LINE);
        let streaming = Streaming::new(StreamingChoice::Auto, STREAMED);
        streaming.left.store(2, Ordering::Relaxed);
        for n in 10..14 {
            slot.fill(0);
            // SAFETY: `slot` holds the block at `at`, a line boundary.
            unsafe { streaming.copy(&block, slot.as_mut_ptr().add(at), n, sets) };
            assert!(slot[at..at + block.len()] == block[..], "call {n}");
            assert!(slot[at + block.len()..].iter().all(|&b| b == 0));
        }
        assert_eq!(streaming.left.load(Ordering::Relaxed), 0);
        assert_eq!(streaming.timed_from.load(Ordering::Relaxed), 11 + 1 + sets);
    }

    /// Slow timed copies in a row turn to streaming for `streamed` blocks,
    /// a fast one breaks the row; `always` and `never` hold whatever the
    /// timings.
    #[test]
    fn slow_copies_turn_to_streaming_unless_told() {
        let slow = || Instant::now() - std::time::Duration::from_millis(1);
        let auto = Streaming::new(StreamingChoice::Auto, 3);
        for _ in 1..SLOW_IN_ROW {
            auto.note(1 << 20, slow());
        }
        auto.note(
            1 << 20,
            Instant::now() + std::time::Duration::from_millis(1),
        );
        assert!(!auto.streams(), "a fast copy breaks the row");
        for _ in 0..SLOW_IN_ROW {
            auto.note(1 << 20, slow());
        }
        assert!(auto.streams());
        let stores: Vec<Store> = (100..104).map(|n| auto.store(n, 1)).collect();
        assert_eq!(stores[..3], [Store::Streamed; 3]);
        assert_ne!(stores[3], Store::Streamed);
        for (choice, store) in [
            (StreamingChoice::Always, Store::Streamed),
            (StreamingChoice::Never, Store::Cached),
        ] {
            let fixed = Streaming::new(choice, 3);
            for n in 0..2 * TIMED_ONE_IN as u64 {
                assert_eq!(fixed.store(n, 1), store);
                fixed.note(1 << 20, slow());
            }
            assert_eq!(fixed.streams(), store == Store::Streamed);
        }
    }
}
