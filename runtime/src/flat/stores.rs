//! The stores of a slot into another member's heap: the order of its
//! lines, ascending copies of small blocks, and taking lines for writing
//! ahead of them.

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

impl Region {
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
        let copy = |from: &[u8], offset: usize| {
            // SAFETY: a slot's head holds `inline` bytes after its header and
            // its data `data` bytes (asserted above), in the mapped region,
            // 16-byte aligned at `offset` (heads and data start at lines,
            // a head's block 32 bytes into its line); the member reads them
            // only once it sees the flag raised below, and no member reads
            // this slot of an older call any more (step 1).
            unsafe { copy_forward(from, (base + offset) as *mut u8) }
        };
        if !rest.is_empty() {
            copy(rest, rest_at);
        }
        s.write_stamp(base, at, n, stamp);
        if !head.is_empty() {
            copy(head, at + HEADER);
        }
        s.word_in(base, at).store(n + 1, Ordering::Release);
    }
}
