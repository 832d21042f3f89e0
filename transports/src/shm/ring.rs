//! A single-producer single-consumer message ring in shared memory.
//!
//! The ring lives in the receiver's segment: a control line holding the
//! consumer's `head`, then [`DATA_BYTES`] of records. A record starts on a
//! cache line with a 24-byte header (stamp, message header, length) followed
//! by the payload, and takes whole cache lines. Positions are byte counters
//! that only grow; the producer keeps its own (`tail`) privately.
//!
//! The producer writes a record's header and payload, then its stamp (the
//! record's position plus one) with Release. The consumer waits for the stamp
//! its position predicts (Acquire), so a small message costs the receiver one
//! cache-line transfer: the stamp and the bytes arrive together. Stale
//! records from an earlier lap carry a different stamp, and zeroed memory
//! none. A record that would cross the end of the ring is preceded by a wrap
//! record that sends the consumer back to the start.
//!
//! The free bytes between `tail` and `head + DATA_BYTES` are the producer's
//! credits. The consumer publishes `head` after each record; the producer
//! rereads it only when its cached copy says the ring is full.

use std::sync::atomic::{AtomicU64, Ordering};

/// Bytes of records per ring.
pub const DATA_BYTES: usize = 64 << 10;
/// Bytes one ring occupies (control line plus records), a multiple of 64.
pub const RING_BYTES: usize = 64 + DATA_BYTES;
/// Bytes of a record's header.
const RECORD_HEADER: usize = 24;
/// Largest payload of one message (a record of at most 8 KiB).
pub const MAX_PAYLOAD: usize = (8 << 10) - RECORD_HEADER;

const LINE: usize = 64;
const HEAD: usize = 0;
const DATA_AT: usize = 64;
/// The length of a wrap record.
const WRAP: u32 = u32::MAX;

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
    buf: Box<[u8]>,
}

// SAFETY: the ring memory is shared memory reached only through atomics and
// the record protocol; moving an end to another thread does not change that.
unsafe impl Send for Producer {}
// SAFETY: as for `Producer`.
unsafe impl Send for Consumer {}

/// A record's contents as read by the consumer.
pub struct Received<'a> {
    /// The header the producer gave.
    pub header: u64,
    /// The payload, copied out of shared memory.
    pub payload: &'a [u8],
}

/// Why a ring could not be read.
#[derive(Debug, PartialEq, Eq)]
pub enum RingError {
    /// A record holds values the protocol never writes.
    Corrupt(String),
}

/// The atomic word at byte `at` of the ring at `base`.
fn word(base: *mut u8, at: usize) -> &'static AtomicU64 {
    // SAFETY: callers pass the base of a live ring (see `from_raw`) and an
    // 8-byte aligned offset inside it: HEAD, or a record's start.
    unsafe { AtomicU64::from_ptr(base.add(at).cast()) }
}

/// Ring bytes a record of `len` payload bytes takes.
fn record_bytes(len: usize) -> usize {
    (RECORD_HEADER + len).next_multiple_of(LINE)
}

impl Producer {
    /// The producer end of the ring at `base`.
    ///
    /// # Safety
    /// `base` must be 64-byte aligned, point to [`RING_BYTES`] bytes that stay
    /// mapped as long as the `Producer` lives, zeroed before either end first
    /// used them, and there must be exactly one `Producer` for the ring.
    pub unsafe fn from_raw(base: *mut u8) -> Producer {
        let head = word(base, HEAD).load(Ordering::Acquire);
        Producer {
            base,
            tail: head,
            head_cache: head,
        }
    }

    /// Whether `bytes` more fit, rereading `head` if the cache says no.
    fn room(&mut self, bytes: usize) -> bool {
        let fits = |head: u64, tail: u64| tail + bytes as u64 - head <= DATA_BYTES as u64;
        if fits(self.head_cache, self.tail) {
            return true;
        }
        self.head_cache = word(self.base, HEAD).load(Ordering::Acquire);
        fits(self.head_cache, self.tail)
    }

    /// Writes one message; `false` when the ring has no room (no credit).
    /// `payload` must be at most [`MAX_PAYLOAD`] bytes.
    pub fn try_send(&mut self, header: u64, payload: &[u8]) -> bool {
        assert!(payload.len() <= MAX_PAYLOAD, "payload exceeds MAX_PAYLOAD");
        let need = record_bytes(payload.len());
        let at = self.tail as usize % DATA_BYTES;
        let wrap = if at + need > DATA_BYTES {
            DATA_BYTES - at
        } else {
            0
        };
        if !self.room(wrap + need) {
            return false;
        }
        if wrap > 0 {
            self.publish(at, header, WRAP, &[]);
            self.tail += wrap as u64;
        }
        self.publish(
            self.tail as usize % DATA_BYTES,
            header,
            payload.len() as u32,
            payload,
        );
        self.tail += need as u64;
        true
    }

    /// Writes a record at ring offset `at` and publishes its stamp.
    fn publish(&self, at: usize, header: u64, len: u32, payload: &[u8]) {
        let rec = DATA_AT + at;
        // SAFETY: the record lies inside the ring (`try_send` keeps
        // `at + record_bytes(len) <= DATA_BYTES`), the consumer has released
        // these bytes (`room`), and it reads them only after the stamp below
        // (Release) matches.
        unsafe {
            let p = self.base.add(rec);
            p.add(8).cast::<u64>().write(header);
            p.add(16).cast::<u32>().write(len);
            weft_copy::copy_nonoverlapping(payload.as_ptr(), p.add(RECORD_HEADER), payload.len());
        }
        word(self.base, rec).store(self.tail + 1, Ordering::Release);
    }
}

impl Consumer {
    /// The consumer end of the ring at `base`.
    ///
    /// # Safety
    /// As for [`Producer::from_raw`], with exactly one `Consumer` per ring.
    pub unsafe fn from_raw(base: *mut u8) -> Consumer {
        Consumer {
            base,
            head: word(base, HEAD).load(Ordering::Relaxed),
            buf: vec![0u8; MAX_PAYLOAD].into_boxed_slice(),
        }
    }

    /// Reads the next message and hands it to `f`; `Ok(false)` when the ring
    /// is empty.
    pub fn try_recv(&mut self, f: impl FnOnce(Received<'_>)) -> Result<bool, RingError> {
        loop {
            let at = self.head as usize % DATA_BYTES;
            let rec = DATA_AT + at;
            if word(self.base, rec).load(Ordering::Acquire) != self.head + 1 {
                return Ok(false);
            }
            // SAFETY: the stamp matched (Acquire), so the producer has written
            // this record's header, which lies inside the ring (`at` is
            // line aligned and below DATA_BYTES).
            let (header, len) = unsafe {
                let p = self.base.add(rec);
                (
                    p.add(8).cast::<u64>().read(),
                    p.add(16).cast::<u32>().read(),
                )
            };
            if len == WRAP {
                self.advance((DATA_BYTES - at) as u64);
                continue;
            }
            let len = len as usize;
            if len > MAX_PAYLOAD || at + record_bytes(len) > DATA_BYTES {
                return Err(RingError::Corrupt(format!(
                    "record of {len} bytes at offset {at}"
                )));
            }
            // SAFETY: as above; `len` bytes after the header are inside the
            // ring and inside `buf`.
            unsafe {
                weft_copy::copy_nonoverlapping(
                    self.base.add(rec + RECORD_HEADER),
                    self.buf.as_mut_ptr(),
                    len,
                )
            };
            self.advance(record_bytes(len) as u64);
            f(Received {
                header,
                payload: &self.buf[..len],
            });
            return Ok(true);
        }
    }

    /// Releases `bytes` to the producer.
    fn advance(&mut self, bytes: u64) {
        self.head += bytes;
        word(self.base, HEAD).store(self.head, Ordering::Release);
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
    fn messages_of_every_size_arrive_in_order_across_wraps() {
        let mut mem = ring_memory();
        let base = mem.as_mut_ptr().cast::<u8>();
        // SAFETY: `mem` is zeroed, aligned, RING_BYTES long and outlives both ends.
        let (mut tx, mut rx) = unsafe { (Producer::from_raw(base), Consumer::from_raw(base)) };
        let mut sent = 0u64;
        let mut got = 0u64;
        for round in 0..50u64 {
            // Fill until no credit is left, then drain.
            loop {
                let len = ((sent * 977 + round) % (MAX_PAYLOAD as u64 + 1)) as usize;
                if !tx.try_send(sent, &vec![sent as u8; len]) {
                    break;
                }
                sent += 1;
            }
            while rx
                .try_recv(|m| {
                    assert_eq!(m.header, got);
                    let len = ((got * 977 + round) % (MAX_PAYLOAD as u64 + 1)) as usize;
                    assert_eq!(m.payload.len(), len);
                    assert!(m.payload.iter().all(|&b| b == got as u8));
                    got += 1;
                })
                .unwrap()
            {}
            assert_eq!(got, sent);
        }
        assert!(sent > 50 * 8, "every fill holds at least 8 records");
        let small = (0..).take_while(|i| tx.try_send(*i, &[1; 8])).count();
        assert_eq!(small, DATA_BYTES / 64, "8-byte messages take one line each");
    }

    #[test]
    fn corrupt_records_are_reported() {
        let mut mem = ring_memory();
        let base = mem.as_mut_ptr().cast::<u8>();
        // SAFETY: as above.
        let mut rx = unsafe { Consumer::from_raw(base) };
        // A record with a valid stamp and an impossible length.
        mem[1][0] = 1;
        mem[1][2] = u64::from(MAX_PAYLOAD as u32 + 1);
        assert!(rx.try_recv(|_| {}).is_err());
        // A stale stamp is no record at all.
        mem[1][0] = 7;
        assert_eq!(rx.try_recv(|_| panic!("nothing to read")), Ok(false));
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
                let len = (i % 300) as usize;
                while !tx.try_send(i, &vec![i as u8; len]) {
                    std::hint::spin_loop();
                }
            }
        });
        // SAFETY: as above; the only consumer.
        let mut rx = unsafe { Consumer::from_raw(addr as *mut u8) };
        let mut next = 0u64;
        while next < N {
            rx.try_recv(|m| {
                assert_eq!(m.header, next);
                assert_eq!(m.payload.len(), (next % 300) as usize);
                assert!(m.payload.iter().all(|&b| b == next as u8));
                next += 1;
            })
            .unwrap();
        }
        producer.join().unwrap();
        drop(mem);
    }
}
