//! The deterministic allocator behind collective symmetric allocation.
//!
//! Every PE runs the same allocator over a heap of the same size; the same
//! sequence of calls therefore yields the same offsets on every PE, which is
//! what makes an offset valid on every PE. First fit by lowest offset, with
//! free blocks coalesced.

use std::collections::BTreeMap;

/// Alignment (and granularity) of every block: one cache line, so that two
/// arrays never share a line.
pub const BLOCK_ALIGN: usize = 64;

/// A first-fit allocator of byte ranges in `base..base + size`.
///
/// ```
/// use weft::heap::Allocator;
/// let mut a = Allocator::new(4096, 1024);
/// let x = a.alloc(100).unwrap();
/// let y = a.alloc(10).unwrap();
/// assert_eq!((x, y), (4096, 4096 + 128));
/// a.free(x).unwrap();
/// assert_eq!(a.alloc(64), Some(4096));
/// ```
#[derive(Clone, Debug)]
pub struct Allocator {
    size: usize,
    /// Free blocks: offset -> length.
    free: BTreeMap<usize, usize>,
    /// Live blocks: offset -> length.
    used: BTreeMap<usize, usize>,
}

impl Allocator {
    /// An allocator over `size` bytes (rounded down to [`BLOCK_ALIGN`])
    /// from offset `base` (a multiple of [`BLOCK_ALIGN`]).
    pub fn new(base: usize, size: usize) -> Allocator {
        debug_assert_eq!(base % BLOCK_ALIGN, 0);
        let size = size / BLOCK_ALIGN * BLOCK_ALIGN;
        let mut free = BTreeMap::new();
        if size > 0 {
            free.insert(base, size);
        }
        Allocator {
            size,
            free,
            used: BTreeMap::new(),
        }
    }

    /// Reserves `bytes` (at least one block) and returns the offset, or
    /// `None` when no free block is large enough.
    pub fn alloc(&mut self, bytes: usize) -> Option<usize> {
        let len = bytes.max(1).checked_next_multiple_of(BLOCK_ALIGN)?;
        let (&at, &have) = self.free.iter().find(|(_, &l)| l >= len)?;
        self.free.remove(&at);
        if have > len {
            self.free.insert(at + len, have - len);
        }
        self.used.insert(at, len);
        Some(at)
    }

    /// Releases the block at `offset`; `Err` names an offset that is not the
    /// start of a live block.
    pub fn free(&mut self, offset: usize) -> Result<(), usize> {
        let mut len = self.used.remove(&offset).ok_or(offset)?;
        let mut at = offset;
        if let Some((&next, &next_len)) = self.free.range(at + len..).next() {
            if next == at + len {
                self.free.remove(&next);
                len += next_len;
            }
        }
        if let Some((&prev, &prev_len)) = self.free.range(..at).next_back() {
            if prev + prev_len == at {
                self.free.remove(&prev);
                at = prev;
                len += prev_len;
            }
        }
        self.free.insert(at, len);
        Ok(())
    }

    /// Length of the largest free block.
    pub fn largest_free(&self) -> usize {
        self.free.values().copied().max().unwrap_or(0)
    }

    /// Bytes managed.
    pub fn size(&self) -> usize {
        self.size
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_fit_and_coalescing() {
        let mut a = Allocator::new(0, 64 * 10);
        let b: Vec<usize> = (0..5).map(|_| a.alloc(64 * 2).unwrap()).collect();
        assert_eq!(b, vec![0, 128, 256, 384, 512]);
        assert_eq!(a.alloc(1), None);
        a.free(128).unwrap();
        a.free(384).unwrap();
        assert_eq!(a.largest_free(), 128);
        a.free(256).unwrap();
        assert_eq!(a.largest_free(), 384, "three neighbours merged");
        assert_eq!(a.alloc(300), Some(128));
        assert_eq!(a.free(5), Err(5));
        assert_eq!(a.free(128), Ok(()));
        assert_eq!(a.free(128), Err(128), "double free");
        for off in [0, 512] {
            a.free(off).unwrap();
        }
        assert_eq!(a.largest_free(), 640);
    }

    #[test]
    fn same_calls_same_offsets() {
        let run = || {
            let mut a = Allocator::new(0, 1 << 20);
            let mut live = Vec::new();
            let mut offsets = Vec::new();
            let mut x = 12345u64;
            for _ in 0..2000 {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                if x % 3 == 0 && !live.is_empty() {
                    let i = (x >> 33) as usize % live.len();
                    a.free(live.swap_remove(i)).unwrap();
                } else if let Some(o) = a.alloc((x >> 40) as usize % 5000) {
                    live.push(o);
                    offsets.push(o);
                }
            }
            offsets
        };
        assert_eq!(run(), run());
    }

    #[test]
    fn huge_requests_fail_cleanly() {
        let mut a = Allocator::new(0, 4096);
        assert_eq!(a.alloc(usize::MAX), None);
        assert_eq!(a.alloc(4097), None);
        assert_eq!(a.alloc(4096), Some(0));
    }
}
