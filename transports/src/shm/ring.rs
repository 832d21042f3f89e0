//! A single-producer single-consumer message ring in shared memory.
//!
//! The ring lives in the receiver's segment: a control block with the
//! producer's `tail` and the consumer's `head` on separate cache lines, then
//! [`SLOTS`] fixed-size slots. The producer owns `tail`, the consumer `head`;
//! `tail - head` is the number of full slots, so the free slots are the
//! producer's credits. Each side caches the other's counter and rereads it
//! only when the cache says the ring is full (producer) or empty (consumer).
//! Counters are 64-bit and never wrap in practice.

use std::sync::atomic::{AtomicU64, Ordering};

/// Slots per ring: the credits a sender has toward one receiver.
pub const SLOTS: usize = 64;
/// Bytes per slot, header included.
pub const SLOT_BYTES: usize = 256;
/// Largest payload of one message.
pub const SLOT_PAYLOAD: usize = SLOT_BYTES - 16;
/// Bytes one ring occupies (control block plus slots), a multiple of 64.
pub const RING_BYTES: usize = 128 + SLOTS * SLOT_BYTES;

const TAIL: usize = 0;
const HEAD: usize = 64;
const SLOTS_AT: usize = 128;

/// The sending end of a ring.
pub struct Producer {
    base: *mut u8,
    tail: u64,
    head_cache: u64,
}

/// The receiving end of a ring.
pub struct Consumer {
    base: *mut u8,
    head: u64,
    tail_cache: u64,
}

// SAFETY: the ring memory is shared memory reached only through atomics and
// the slot protocol; moving an end to another thread does not change that.
unsafe impl Send for Producer {}
// SAFETY: as for `Producer`.
unsafe impl Send for Consumer {}

/// A slot's contents as read by the consumer.
pub struct Received<'a> {
    /// The header the producer gave.
    pub header: u64,
    /// The payload, copied out of shared memory.
    pub payload: &'a [u8],
}

/// Why a ring could not be read.
#[derive(Debug, PartialEq, Eq)]
pub enum RingError {
    /// The counters or a slot hold values the protocol never writes.
    Corrupt(String),
}

fn counter(base: *mut u8, at: usize) -> &'static AtomicU64 {
    // SAFETY: callers pass the base of a live ring (see `from_raw`), whose
    // counters are 8-byte aligned u64 words at TAIL and HEAD.
    unsafe { AtomicU64::from_ptr(base.add(at).cast()) }
}

impl Producer {
    /// The producer end of the ring at `base`.
    ///
    /// # Safety
    /// `base` must be 64-byte aligned, point to [`RING_BYTES`] bytes that stay
    /// mapped as long as the `Producer` lives, zeroed before either end first
    /// used them, and there must be exactly one `Producer` for the ring.
    pub unsafe fn from_raw(base: *mut u8) -> Producer {
        let tail = counter(base, TAIL).load(Ordering::Relaxed);
        Producer {
            base,
            tail,
            head_cache: counter(base, HEAD).load(Ordering::Acquire),
        }
    }

    /// Free slots, as far as this end knows without rereading `head`.
    pub fn credits(&self) -> usize {
        SLOTS - (self.tail - self.head_cache) as usize
    }

    /// Writes one message; `false` when the ring is full (no credit).
    /// `payload` must be at most [`SLOT_PAYLOAD`] bytes.
    pub fn try_send(&mut self, header: u64, payload: &[u8]) -> bool {
        assert!(
            payload.len() <= SLOT_PAYLOAD,
            "payload exceeds SLOT_PAYLOAD"
        );
        if self.tail - self.head_cache >= SLOTS as u64 {
            self.head_cache = counter(self.base, HEAD).load(Ordering::Acquire);
            if self.tail - self.head_cache >= SLOTS as u64 {
                return false;
            }
        }
        let slot = SLOTS_AT + (self.tail as usize % SLOTS) * SLOT_BYTES;
        // SAFETY: the slot is inside the ring (`from_raw`), and the consumer
        // does not read it until `tail` is published below (Release).
        unsafe {
            let p = self.base.add(slot);
            p.cast::<u32>().write(payload.len() as u32);
            p.add(8).cast::<u64>().write(header);
            std::ptr::copy_nonoverlapping(payload.as_ptr(), p.add(16), payload.len());
        }
        self.tail += 1;
        counter(self.base, TAIL).store(self.tail, Ordering::Release);
        true
    }
}

impl Consumer {
    /// The consumer end of the ring at `base`.
    ///
    /// # Safety
    /// As for [`Producer::from_raw`], with exactly one `Consumer` per ring.
    pub unsafe fn from_raw(base: *mut u8) -> Consumer {
        let head = counter(base, HEAD).load(Ordering::Relaxed);
        Consumer {
            base,
            head,
            tail_cache: head,
        }
    }

    /// Reads the next message into `buf` and hands it to `f`; `Ok(false)` when
    /// the ring is empty.
    pub fn try_recv(
        &mut self,
        buf: &mut [u8; SLOT_PAYLOAD],
        f: impl FnOnce(Received<'_>),
    ) -> Result<bool, RingError> {
        if self.head == self.tail_cache {
            self.tail_cache = counter(self.base, TAIL).load(Ordering::Acquire);
            if self.head == self.tail_cache {
                return Ok(false);
            }
            if self.tail_cache < self.head || self.tail_cache - self.head > SLOTS as u64 {
                return Err(RingError::Corrupt(format!(
                    "tail {} against head {}",
                    self.tail_cache, self.head
                )));
            }
        }
        let slot = SLOTS_AT + (self.head as usize % SLOTS) * SLOT_BYTES;
        // SAFETY: the slot is inside the ring and was published by the
        // producer's Release store of `tail`, which we loaded with Acquire; the
        // producer does not reuse it before `head` moves past it.
        let (len, header) = unsafe {
            let p = self.base.add(slot);
            (
                p.cast::<u32>().read() as usize,
                p.add(8).cast::<u64>().read(),
            )
        };
        if len > SLOT_PAYLOAD {
            return Err(RingError::Corrupt(format!("slot length {len}")));
        }
        // SAFETY: as above; `len` is within the slot and within `buf`.
        unsafe { std::ptr::copy_nonoverlapping(self.base.add(slot + 16), buf.as_mut_ptr(), len) };
        self.head += 1;
        counter(self.base, HEAD).store(self.head, Ordering::Release);
        f(Received {
            header,
            payload: &buf[..len],
        });
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Zeroed, 64-byte aligned memory for one ring.
    fn ring_memory() -> Vec<[u64; 8]> {
        vec![[0u64; 8]; RING_BYTES / 64]
    }

    #[test]
    fn messages_arrive_in_order_and_credits_run_out() {
        let mut mem = ring_memory();
        let base = mem.as_mut_ptr().cast::<u8>();
        // SAFETY: `mem` is zeroed, aligned, RING_BYTES long and outlives both ends.
        let (mut tx, mut rx) = unsafe { (Producer::from_raw(base), Consumer::from_raw(base)) };
        let mut buf = [0u8; SLOT_PAYLOAD];
        for round in 0..3u64 {
            for i in 0..SLOTS as u64 {
                let payload = vec![i as u8; (i as usize * 7) % SLOT_PAYLOAD];
                assert!(tx.try_send(round * 1000 + i, &payload));
            }
            assert!(!tx.try_send(0, b"full"), "no credit left");
            for i in 0..SLOTS as u64 {
                let got = rx
                    .try_recv(&mut buf, |m| {
                        assert_eq!(m.header, round * 1000 + i);
                        assert_eq!(m.payload.len(), (i as usize * 7) % SLOT_PAYLOAD);
                        assert!(m.payload.iter().all(|&b| b == i as u8));
                    })
                    .unwrap();
                assert!(got);
            }
            assert!(!rx.try_recv(&mut buf, |_| panic!("empty")).unwrap());
        }
    }

    #[test]
    fn corrupt_counters_and_lengths_are_reported() {
        let mut mem = ring_memory();
        let base = mem.as_mut_ptr().cast::<u8>();
        // SAFETY: as above.
        let mut rx = unsafe { Consumer::from_raw(base) };
        let mut buf = [0u8; SLOT_PAYLOAD];
        counter(base, TAIL).store(SLOTS as u64 + 5, Ordering::Release);
        assert!(rx.try_recv(&mut buf, |_| {}).is_err());
        let mut mem = ring_memory();
        let base = mem.as_mut_ptr().cast::<u8>();
        // SAFETY: as above.
        let mut rx = unsafe { Consumer::from_raw(base) };
        mem[2][0] = u64::MAX; // first slot's length word
        counter(base, TAIL).store(1, Ordering::Release);
        assert!(rx.try_recv(&mut buf, |_| {}).is_err());
    }

    #[test]
    fn two_threads_stream_a_million_messages() {
        let mut mem = ring_memory();
        let addr = mem.as_mut_ptr() as usize;
        const N: u64 = 1_000_000;
        let producer = std::thread::spawn(move || {
            // SAFETY: `mem` outlives the thread (joined below) and this is the only producer.
            let mut tx = unsafe { Producer::from_raw(addr as *mut u8) };
            for i in 0..N {
                while !tx.try_send(i, &i.to_le_bytes()) {
                    std::hint::spin_loop();
                }
            }
        });
        // SAFETY: as above; the only consumer.
        let mut rx = unsafe { Consumer::from_raw(addr as *mut u8) };
        let mut buf = [0u8; SLOT_PAYLOAD];
        let mut next = 0u64;
        while next < N {
            rx.try_recv(&mut buf, |m| {
                assert_eq!(m.header, next);
                assert_eq!(m.payload, next.to_le_bytes());
                next += 1;
            })
            .unwrap();
        }
        producer.join().unwrap();
        drop(mem);
    }
}
