//! Scratch space for schedule runs, kept between calls.
//!
//! A run takes its scratch ([`crate::schedule::Schedule::tmp_len`] bytes)
//! from a [`ScratchPool`] and gives it back when it is dropped, so that a
//! large collective does not allocate and zero its scratch on every call
//! (for a reduce of 1 MiB that zeroing took as long as the reduction).
//! Schedules write every scratch byte before they read it, so what an
//! earlier run left there does no harm; the simulator's pools fill new
//! scratch with a pattern, so that a schedule that reads first gives a
//! wrong result there instead of passing on zeros.

use std::sync::{Arc, Mutex};

/// How many buffers a pool keeps for later runs.
const KEPT: usize = 4;

/// Buffers that runs borrow for scratch space and give back.
///
/// ```
/// use std::sync::Arc;
/// use weft_collectives::scratch::ScratchPool;
/// let pool = Arc::new(ScratchPool::default());
/// let a = pool.take(1000);
/// assert!(a.len() >= 1000);
/// drop(a); // back in the pool: the next run of this size allocates nothing
/// assert_eq!(pool.kept(), 1);
/// ```
#[derive(Debug)]
pub struct ScratchPool {
    free: Mutex<Vec<Vec<u64>>>,
    fill: u64,
}

impl Default for ScratchPool {
    /// A pool whose new scratch is zeroed.
    fn default() -> ScratchPool {
        ScratchPool::filled(0)
    }
}

impl ScratchPool {
    /// A pool whose new scratch has every byte set to `fill`.
    pub fn filled(fill: u8) -> ScratchPool {
        ScratchPool {
            free: Mutex::new(Vec::new()),
            fill: u64::from_ne_bytes([fill; 8]),
        }
    }

    /// Scratch of at least `bytes` bytes, aligned for every element type:
    /// a kept buffer when one is large enough, else a kept one grown (or a
    /// new one), the new part filled.
    pub fn take(self: &Arc<Self>, bytes: usize) -> Scratch {
        let words = bytes.div_ceil(8);
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        let fits = free.iter().position(|b| b.len() >= words);
        let mut buf = match fits {
            Some(i) => free.swap_remove(i),
            None => free.pop().unwrap_or_default(),
        };
        drop(free);
        if buf.len() < words {
            buf.resize(words, self.fill);
        }
        Scratch {
            words: buf,
            pool: self.clone(),
        }
    }

    /// How many buffers the pool holds now.
    pub fn kept(&self) -> usize {
        self.free.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// Scratch space taken from a [`ScratchPool`]; goes back to it when
/// dropped.
#[derive(Debug)]
pub struct Scratch {
    words: Vec<u64>,
    pool: Arc<ScratchPool>,
}

impl Scratch {
    /// Its length in bytes (at least what was asked for).
    pub fn len(&self) -> usize {
        self.words.len() * 8
    }

    /// Whether it has no bytes.
    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    /// Its first byte; the bytes are aligned to 8.
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.words.as_mut_ptr().cast()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let mut free = self.pool.free.lock().unwrap_or_else(|e| e.into_inner());
        if free.len() < KEPT && !self.words.is_empty() {
            free.push(std::mem::take(&mut self.words));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_buffer_is_reused_and_new_bytes_are_filled() {
        let pool = Arc::new(ScratchPool::filled(0xa5));
        let mut a = pool.take(16);
        let first = a.as_mut_ptr();
        // SAFETY: the scratch holds at least 16 bytes.
        assert_eq!(unsafe { *first.add(15) }, 0xa5);
        drop(a);
        let mut b = pool.take(8);
        assert_eq!(
            b.as_mut_ptr(),
            first,
            "the kept buffer serves a smaller run"
        );
        let c = pool.take(24);
        assert!(c.len() >= 24);
        drop((b, c));
        assert_eq!(pool.kept(), 2);
    }

    #[test]
    fn a_pool_keeps_a_few_buffers_only() {
        let pool = Arc::new(ScratchPool::default());
        let all: Vec<Scratch> = (0..KEPT + 3).map(|_| pool.take(8)).collect();
        drop(all);
        assert_eq!(pool.kept(), KEPT);
    }
}
