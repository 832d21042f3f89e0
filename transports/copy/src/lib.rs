//! Copies of bytes that stay fast where the C library's `memcpy` is not.
//!
//! glibc copies blocks above about 2 KiB with `rep movsb`, and on AMD
//! Zen 3 (an EPYC of family 19h, flag `fsrm`, measured here) that
//! instruction slows down 15-30 times when the destination lies 1 to 31
//! bytes past the source modulo a page: a 16 KiB copy took
//! 10 µs instead of 0.35 (2 GB/s against 45-90 at any other distance,
//! measured with glibc 2.36 from 4 KiB to 256 KiB; from 512 KiB glibc's
//! non-temporal stores take over and the distance no longer matters).
//! Such distances are common: two buffers allocated one after the other
//! from the C heap are apart by their size and a 16-byte header, so a
//! copy between them at the same offset hits it whenever the size is a
//! multiple of a page.
//!
//! [`copy`] and [`copy_nonoverlapping`] copy such blocks with 32-byte
//! vector loads and stores instead (30-50 GB/s there) on AMD processors
//! with AVX, and leave every other copy to `memcpy`. Intel's `rep movsb`
//! keeps its speed at these distances, where the vector loop's loads wait
//! for its earlier stores to the same offsets in the page: on an Intel
//! Xeon (family 6, model 207) a 64 KiB copy at distances 8-24 took
//! 2.0-2.1 µs with `memcpy` and 3.7-3.9 µs with the loop (1.9 µs both
//! at distance 0). [`copy_may_overlap`] allows the regions to overlap, as
//! `memmove`.
//!
//! ```
//! let src = vec![7u8; 16 << 10];
//! let mut dst = vec![0u8; 16 << 10];
//! weft_copy::copy(&mut dst, &src);
//! assert_eq!(dst, src);
//! ```

/// Shortest copy that `memcpy` may run as `rep movsb` (glibc's lowest
/// threshold); shorter ones use vector moves at any distance.
const STRING_FROM: usize = 2048;
/// Distances (destination minus source, modulo [`PAGE`]) of the slow
/// case: 1 to `NEAR - 1`.
const NEAR: usize = 32;
const PAGE: usize = 4096;
/// A cache line: the unit of [`copy_streaming`]'s stores.
const LINE: usize = 64;

/// Copies `src` into `dst`.
///
/// # Panics
/// If the two slices differ in length, as `copy_from_slice`.
#[inline]
pub fn copy(dst: &mut [u8], src: &[u8]) {
    assert_eq!(
        dst.len(),
        src.len(),
        "weft_copy::copy: destination and source lengths differ"
    );
    // SAFETY: both slices are valid for their common length, and a mutable
    // slice never overlaps a shared one.
    unsafe { copy_nonoverlapping(src.as_ptr(), dst.as_mut_ptr(), src.len()) }
}

/// Copies `len` bytes from `src` to `dst`, as
/// [`std::ptr::copy_nonoverlapping`].
///
/// # Safety
/// As for [`std::ptr::copy_nonoverlapping`]: `src` valid for reads and
/// `dst` for writes of `len` bytes, the two regions disjoint.
#[inline]
pub unsafe fn copy_nonoverlapping(src: *const u8, dst: *mut u8, len: usize) {
    #[cfg(target_arch = "x86_64")]
    if slow_distance(src, dst, len) {
        // SAFETY: the caller's promise; the processor has AVX
        // (`slow_strings`).
        unsafe { vector::copy(src, dst, len) };
        return;
    }
    // SAFETY: the caller's promise.
    unsafe { std::ptr::copy_nonoverlapping(src, dst, len) }
}

/// Copies `len` bytes from `src` to `dst`, as [`std::ptr::copy`]: the
/// regions may overlap (a PE's put into its own heap from its own heap).
///
/// # Safety
/// As for [`std::ptr::copy`]: `src` valid for reads and `dst` for writes
/// of `len` bytes.
#[inline]
pub unsafe fn copy_may_overlap(src: *const u8, dst: *mut u8, len: usize) {
    let (s, d) = (src as usize, dst as usize);
    if s.max(d) - s.min(d) < len {
        // SAFETY: the caller's promise.
        unsafe { std::ptr::copy(src, dst, len) }
    } else {
        // SAFETY: the caller's promise; the regions are disjoint (checked).
        unsafe { copy_nonoverlapping(src, dst, len) }
    }
}

/// Whether a copy of `len` bytes from `src` to `dst` by `rep movsb` is in
/// the slow case: longer than glibc's threshold, with `dst` 1 to 31 bytes
/// past `src` modulo a page, on a processor whose `rep movsb` slows down
/// there (an AMD processor with AVX). The kernel's own copies (`process_vm_readv`)
/// have it too, which callers of such copies can check with this.
#[inline]
pub fn slow_distance(src: *const u8, dst: *const u8, len: usize) -> bool {
    len > STRING_FROM && near_alias(src, dst) && slow_strings()
}

/// Whether this processor's `rep movsb` slows down at near distances and
/// the vector copy can stand in: an AMD processor with AVX. Asked once.
#[cfg(target_arch = "x86_64")]
fn slow_strings() -> bool {
    static SLOW: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SLOW.get_or_init(|| {
        // Leaf 0: the vendor's name, in three registers.
        let id = std::arch::x86_64::__cpuid(0);
        let amd = (id.ebx, id.edx, id.ecx) == (0x6874_7541, 0x6974_6e65, 0x444d_4163);
        amd && std::is_x86_feature_detected!("avx")
    })
}

#[cfg(not(target_arch = "x86_64"))]
fn slow_strings() -> bool {
    false
}

/// Copies `len` bytes from `src` to `dst` with non-temporal stores where
/// the processor has them (SSE2: every x86-64), whole lines at a time: the
/// lines go to memory without being read first, and every cached copy of
/// them, another core's included, is dropped on the way. Bytes before
/// the first line boundary of `dst` and after the last are copied as
/// [`copy_nonoverlapping`] does. The non-temporal stores are fenced, so
/// that a store after the call (a flag announcing the bytes) is seen after
/// every byte. Elsewhere, as [`copy_nonoverlapping`].
///
/// For a block that another core reads next and that lies in lines it
/// read before: stores that take each line from that core wait for it in
/// turn, where these do not wait.
///
/// # Safety
/// As for [`std::ptr::copy_nonoverlapping`].
#[inline]
pub unsafe fn copy_streaming(src: *const u8, dst: *mut u8, len: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        let head = (dst as usize).wrapping_neg() % LINE;
        if head + LINE <= len {
            let lines = (len - head) / LINE;
            // SAFETY: the caller's promise; the three pieces split the
            // regions, the middle one line-aligned at `dst`.
            unsafe {
                copy_nonoverlapping(src, dst, head);
                stream::lines(src.add(head), dst.add(head), lines);
                let done = head + lines * LINE;
                copy_nonoverlapping(src.add(done), dst.add(done), len - done);
            }
            return;
        }
    }
    // SAFETY: the caller's promise.
    unsafe { copy_nonoverlapping(src, dst, len) }
}

/// Whether `dst` lies 1 to `NEAR - 1` bytes past `src` modulo a page.
#[inline]
fn near_alias(src: *const u8, dst: *const u8) -> bool {
    let distance = (dst as usize).wrapping_sub(src as usize) % PAGE;
    (1..NEAR).contains(&distance)
}

#[cfg(target_arch = "x86_64")]
mod vector {
    use std::arch::x86_64::{__m256i, _mm256_loadu_si256, _mm256_storeu_si256};

    /// Bytes moved per step: four loads, then four stores, so that no
    /// load of a step waits for a store of the same step.
    const STEP: usize = 128;

    /// Copies `len` bytes by 32-byte loads and stores, in ascending
    /// order, the tail under [`STEP`] by `memcpy`.
    ///
    /// # Safety
    /// As for [`std::ptr::copy_nonoverlapping`]; the processor must have
    /// AVX.
    #[target_feature(enable = "avx")]
    pub(super) unsafe fn copy(src: *const u8, dst: *mut u8, len: usize) {
        let mut i = 0;
        while i + STEP <= len {
            // SAFETY: `i + STEP <= len`, so the four 32-byte loads and
            // stores lie in the regions; unaligned access is allowed.
            unsafe {
                let s = src.add(i);
                let d = dst.add(i);
                let a = _mm256_loadu_si256(s as *const __m256i);
                let b = _mm256_loadu_si256(s.add(32) as *const __m256i);
                let c = _mm256_loadu_si256(s.add(64) as *const __m256i);
                let e = _mm256_loadu_si256(s.add(96) as *const __m256i);
                _mm256_storeu_si256(d as *mut __m256i, a);
                _mm256_storeu_si256(d.add(32) as *mut __m256i, b);
                _mm256_storeu_si256(d.add(64) as *mut __m256i, c);
                _mm256_storeu_si256(d.add(96) as *mut __m256i, e);
            }
            i += STEP;
        }
        // SAFETY: the rest of both regions, under STEP bytes.
        unsafe { std::ptr::copy_nonoverlapping(src.add(i), dst.add(i), len - i) };
    }
}

#[cfg(target_arch = "x86_64")]
mod stream {
    use std::arch::x86_64::{__m128i, _mm_loadu_si128, _mm_sfence, _mm_stream_si128};

    use super::LINE;

    /// Copies `lines` whole lines to the line-aligned `dst` by
    /// non-temporal 16-byte stores, four loads then four stores a line,
    /// then fences them.
    ///
    /// # Safety
    /// As for [`std::ptr::copy_nonoverlapping`] of `lines * LINE` bytes;
    /// `dst` is 64-byte aligned.
    #[inline]
    pub(super) unsafe fn lines(src: *const u8, dst: *mut u8, lines: usize) {
        for k in 0..lines {
            // SAFETY: line `k` lies in both regions; `dst + k * LINE` and
            // so each 16-byte store is aligned; SSE2 is part of x86-64.
            unsafe {
                let s = src.add(k * LINE);
                let d = dst.add(k * LINE) as *mut __m128i;
                let a = _mm_loadu_si128(s as *const __m128i);
                let b = _mm_loadu_si128(s.add(16) as *const __m128i);
                let c = _mm_loadu_si128(s.add(32) as *const __m128i);
                let e = _mm_loadu_si128(s.add(48) as *const __m128i);
                _mm_stream_si128(d, a);
                _mm_stream_si128(d.add(1), b);
                _mm_stream_si128(d.add(2), c);
                _mm_stream_si128(d.add(3), e);
            }
        }
        // SAFETY: a fence has no preconditions.
        unsafe { _mm_sfence() };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LENGTHS: [usize; 11] = [
        0,
        1,
        31,
        2047,
        2048,
        2049,
        4095,
        4096,
        4097,
        12_345,
        3 * PAGE + 7,
    ];

    /// Every length around the thresholds, at distances in and out of the
    /// slow case, from unaligned starts: the bytes arrive, and nothing
    /// around them changes.
    #[test]
    fn copies_every_length_and_distance() {
        let mut arena = vec![0u8; 9 * PAGE];
        for len in LENGTHS {
            for distance in [0, 1, 5, 16, 31, 32, 33, 64, 4000, 4095] {
                for src_at in [0, 3, 32] {
                    arena.fill(0xAA);
                    for (k, b) in arena[src_at..src_at + len].iter_mut().enumerate() {
                        *b = (k % 251) as u8;
                    }
                    let dst_at = src_at + 4 * PAGE + distance;
                    let (lo, hi) = arena.split_at_mut(dst_at);
                    copy(&mut hi[..len], &lo[src_at..src_at + len]);
                    let copied = hi[..len]
                        .iter()
                        .enumerate()
                        .all(|(k, &b)| b == (k % 251) as u8);
                    assert!(copied, "{len} bytes at distance {distance}");
                    assert!(hi[len..].iter().all(|&b| b == 0xAA));
                    assert!(lo[src_at + len..].iter().all(|&b| b == 0xAA));
                }
            }
        }
    }

    /// The vector copy that stands in for `memcpy` on processors slow at
    /// near distances ([`slow_strings`]) copies every length there, on
    /// any processor with AVX.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_vector_copy_copies_every_length() {
        if !std::is_x86_feature_detected!("avx") {
            return;
        }
        let src: Vec<u8> = (0..4 * PAGE).map(|k| (k % 251) as u8).collect();
        for len in LENGTHS {
            for distance in [1, 16, 31] {
                let mut dst = vec![0xAAu8; len + 2 * PAGE];
                let at =
                    (src.as_ptr() as usize + distance).wrapping_sub(dst.as_ptr() as usize) % PAGE;
                // SAFETY: `src` holds more than `len` bytes, `dst` `at + len`
                // and more; they are distinct; the processor has AVX.
                unsafe { vector::copy(src.as_ptr(), dst.as_mut_ptr().add(at), len) };
                assert!(dst[at..at + len] == src[..len], "{len} bytes");
                assert!(dst[at + len..].iter().all(|&b| b == 0xAA));
                assert!(dst[..at].iter().all(|&b| b == 0xAA));
            }
        }
    }

    /// Streaming copies of every length around a line, from every
    /// alignment of source and destination: the bytes arrive, and nothing
    /// around them changes.
    #[test]
    fn streams_every_length_and_alignment() {
        let src: Vec<u8> = (0..4 * PAGE).map(|k| (k % 251) as u8).collect();
        for len in [
            0,
            1,
            63,
            64,
            65,
            127,
            128,
            129,
            4095,
            4096,
            4097,
            3 * PAGE + 7,
        ] {
            for dst_at in [0, 1, 16, 32, 63] {
                for src_at in [0, 5, 64] {
                    let mut dst = vec![0xAAu8; len + 2 * LINE];
                    // A line boundary of the destination's buffer, then `dst_at`.
                    let base = dst.as_ptr() as usize;
                    let at = base.next_multiple_of(LINE) - base + dst_at % LINE;
                    let at = at.min(dst.len() - len);
                    // SAFETY: `src` holds `src_at + len` bytes and more, `dst`
                    // `at + len`; they are distinct.
                    unsafe {
                        copy_streaming(src.as_ptr().add(src_at), dst.as_mut_ptr().add(at), len)
                    };
                    assert!(
                        dst[at..at + len] == src[src_at..src_at + len],
                        "{len} bytes"
                    );
                    assert!(dst[at + len..].iter().all(|&b| b == 0xAA));
                    assert!(dst[..at].iter().all(|&b| b == 0xAA));
                }
            }
        }
    }

    /// Overlapping regions, either way, and disjoint ones, copy as
    /// `memmove` does.
    #[test]
    fn copies_within_one_buffer() {
        for len in LENGTHS {
            for shift in [
                -(2 * PAGE as isize) - 8,
                -16,
                -1,
                0,
                1,
                16,
                2 * PAGE as isize + 8,
            ] {
                let mut arena: Vec<u8> = (0..10 * PAGE).map(|k| (k % 253) as u8).collect();
                let mut expected = arena.clone();
                let src_at = 4 * PAGE;
                let dst_at = src_at.checked_add_signed(shift).unwrap();
                expected.copy_within(src_at..src_at + len, dst_at);
                let base = arena.as_mut_ptr();
                // SAFETY: both regions lie inside `arena`.
                unsafe { copy_may_overlap(base.add(src_at), base.add(dst_at), len) };
                assert!(arena == expected, "{len} bytes shifted by {shift}");
            }
        }
    }
}
