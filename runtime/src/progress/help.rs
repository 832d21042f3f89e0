//! Rendezvous copies that both sides share.
//!
//! On one node the receiver of a rendezvous message copies it out of the
//! sender's memory itself (cross-memory attach). One core copies a long
//! message at a fraction of what the node can move, while the sender
//! usually sits waiting for the receiver's Fin. So for a message of at
//! least [`MIN`] bytes from a PE whose heap this PE maps (shared memory),
//! sent while the sender had no receive of its own posted (the Rts says
//! so: in an exchange each side is busy with its own receive), both copy,
//! each from one end:
//!
//! 1. The receiver splits the message into chunks ([`chunk`]), writes a new
//!    generation into its claim word for that sender (generation, chunks
//!    claimed from the front, chunks claimed from the back) and its done
//!    word (generation, chunks written by the sender), and sends a
//!    [`Help`] frame naming its buffer.
//! 2. The receiver claims chunks from the front, half of those left at a
//!    time (one compare-and-swap and one copy each), and reads them. The
//!    sender, whenever its engine sees the Help, claims chunks from the
//!    back one at a time, writes each into the receiver's buffer and counts
//!    it in the done word. A chunk is copied
//!    by exactly one side; a Help that arrives once every chunk is claimed,
//!    or after the receiver started another transfer (another generation),
//!    claims nothing.
//! 3. When every chunk is claimed, the receiver waits until the sender has
//!    written the chunks it claimed (it copies them itself if the sender
//!    gave up on them), then answers Fin as after a copy of its own.
//!
//! A sender busy elsewhere costs the receiver one frame: it copies
//! everything. The words sit in every PE's heap after the flat region,
//! one line per sender ([`area_size`]).

use std::sync::atomic::{AtomicU64, Ordering};

use weft_transport::backoff::Backoff;
use weft_transport::{AtomicOp, AtomicWidth, TransportError};

use super::wire::{Help, Kind, Rts};
use super::{malformed, Engine, Entry, Req, State};
use crate::error::Cause;

/// Shortest message whose copy the sender shares, two chunks: at 2 PEs a
/// 128 KiB or 256 KiB message went one way at 1.35-1.7x the bandwidth and
/// 0.8x the latency so, and a broadcast of them took 0.8x the time.
pub(crate) const MIN: usize = 2 * CHUNK;
/// Bytes per chunk, unless the message has more than 65,535 of them.
const CHUNK: usize = 64 << 10;
const LINE: usize = 64;
const PAGE: usize = 4096;
/// The done word's bit for a sender that gave up on its chunk.
const ABANDONED: u64 = 1 << 31;
const COUNT: u64 = ABANDONED - 1;

/// Bytes of the help lines in the heap of a job of `p` PEs, whole pages.
pub(crate) fn area_size(p: usize) -> usize {
    (p * LINE).next_multiple_of(PAGE)
}

/// Where the help lines are in every PE's heap.
#[derive(Clone, Copy)]
pub(crate) struct Area {
    /// Their offset in the heap, the same on every PE.
    pub(crate) offset: usize,
    /// Their address in this PE, which must stay mapped as long as the
    /// engine lives.
    pub(crate) local: usize,
}

impl Area {
    /// The heap offset of `sender`'s claim word (its done word follows).
    fn claim_at(&self, sender: usize) -> usize {
        self.offset + sender * LINE
    }

    /// This PE's claim and done words for `sender`.
    fn words(&self, sender: usize) -> (&AtomicU64, &AtomicU64) {
        let at = self.local + sender * LINE;
        // SAFETY: the area is mapped while the engine lives (`Area::local`),
        // holds a line per PE and is 8-aligned (page-aligned heap); peers
        // touch these words only with transport atomics.
        unsafe { (&*(at as *const AtomicU64), &*((at + 8) as *const AtomicU64)) }
    }
}

/// Bytes per chunk of a message of `len` bytes.
fn chunk(len: usize) -> usize {
    CHUNK.max(len.div_ceil(0xffff))
}

/// A claim word: generation, chunks claimed from the front, and from the back.
fn claim(generation: u32, front: u64, back: u64) -> u64 {
    u64::from(generation) << 32 | front << 16 | back
}

fn claimed(word: u64) -> (u32, u64, u64) {
    ((word >> 32) as u32, word >> 16 & 0xffff, word & 0xffff)
}

impl Engine {
    /// Copies a rendezvous message from `source` into `dst` together with
    /// the sender (see the module); `false` if the kernel forbids copying
    /// between the processes, so that the bytes must be pushed.
    pub(super) fn fetch_shared(
        &self,
        st: &mut State,
        source: usize,
        rts: &Rts,
        dst: &mut [u8],
    ) -> Result<bool, Cause> {
        let lane = self.lane_of(source);
        let len = dst.len();
        let chunk = chunk(len);
        let total = len.div_ceil(chunk) as u64;
        st.help_generation = st.help_generation.wrapping_add(1).max(1);
        let generation = st.help_generation;
        let (claims, done) = self.settings.help.words(source);
        done.store(u64::from(generation) << 32, Ordering::Relaxed);
        claims.store(claim(generation, 0, 0), Ordering::Release);
        let help = Help {
            generation,
            chunk: chunk as u32,
            addr: dst.as_mut_ptr() as u64,
            len: len as u64,
        };
        self.control(st, source, Kind::Help, rts.token, &help.encode())?;
        // Chunks `from..to` as a range of bytes.
        let span = |from: u64, to: u64| from as usize * chunk..len.min(to as usize * chunk);
        let mut failed = None;
        loop {
            let word = claims.load(Ordering::Acquire);
            let (_, front, back) = claimed(word);
            if front + back >= total {
                break;
            }
            // Half of what is left at a time, in one copy (the sender takes
            // one chunk at a time from the other end); after a failure,
            // everything left, so that the sender stops.
            let take = match failed {
                None => (total - front - back).div_ceil(2),
                Some(_) => total - front - back,
            };
            let next = claim(generation, front + take, back);
            let won = claims.compare_exchange(word, next, Ordering::AcqRel, Ordering::Acquire);
            if won.is_err() || failed.is_some() {
                continue;
            }
            let r = span(front, front + take);
            let from = rts.addr + r.start as u64;
            if let Err(e) = lane.read_remote(source, from, rts.key, &mut dst[r]) {
                failed = Some(e);
            }
        }
        // Every chunk is claimed: wait for the sender's.
        let (_, _, back) = claimed(claims.load(Ordering::Acquire));
        let mut backoff = Backoff::new(self.settings.oversubscribed);
        let written = loop {
            let d = done.load(Ordering::Acquire);
            if d & COUNT == back || d & ABANDONED != 0 {
                break d & COUNT;
            }
            if let Some(how) = lane.peer_gone(source) {
                return Err(TransportError::PeerGone { peer: source, how }.into());
            }
            backoff.snooze();
        };
        match failed {
            None => {}
            Some(TransportError::Unsupported { .. }) => {
                st.no_single_copy[source] = true;
                return Ok(false);
            }
            Some(e) => return Err(e.into()),
        }
        // The chunks the sender claimed and gave up on.
        if written < back {
            let r = span(total - back, total - written);
            let from = rts.addr + r.start as u64;
            lane.read_remote(source, from, rts.key, &mut dst[r])?;
        }
        Ok(true)
    }

    /// A receiver asks this PE to copy chunks of its send `token` into the
    /// receiver's memory, from the far end (see the module).
    pub(super) fn help(
        &self,
        st: &mut State,
        source: usize,
        token: u32,
        payload: &[u8],
    ) -> Result<(), Cause> {
        let h = Help::decode(source, payload)?;
        if !st.posted.is_empty() {
            // This PE has receives of its own to serve (an exchange): each
            // side copying its own message is then as fast, without the
            // claims and the smaller copies.
            return Ok(());
        }
        let lane = self.lane_of(source);
        if !lane.caps().load_store {
            return Err(malformed(
                source,
                "a help request over a lane that does not map heaps".into(),
            ));
        }
        let area = self.settings.help;
        let (ptr, sent) = match st.reqs.by_token(token) {
            Some((
                _,
                Entry {
                    req: Req::Sending { ptr, len, dest, .. },
                    ..
                },
            )) if *dest == source => (*ptr, *len),
            // A send abandoned by its owner: nothing to copy from.
            _ => return Ok(()),
        };
        // The receiver takes the first `len` bytes (fewer when its buffer
        // is shorter).
        let len = h.len as usize;
        let chunk = chunk(len);
        if len > sent || h.chunk as usize != chunk {
            return Err(malformed(
                source,
                format!(
                    "a help request for {} bytes in chunks of {} for a send of {sent}",
                    h.len, h.chunk
                ),
            ));
        }
        // SAFETY: the send's bytes stay valid until it completes, at the
        // receiver's Fin, which the receiver sends only once every chunk
        // this PE claims is written; `len <= sent`.
        let src = unsafe { std::slice::from_raw_parts(ptr, len) };
        let total = len.div_ceil(chunk) as u64;
        let (claim_at, done_at) = (area.claim_at(self.rank), area.claim_at(self.rank) + 8);
        let atomic = |at: usize, op: AtomicOp| lane.atomic(source, at, AtomicWidth::W64, op);
        loop {
            let word = atomic(claim_at, AtomicOp::Fetch)?;
            let (generation, front, back) = claimed(word);
            if generation != h.generation || front + back >= total {
                return Ok(());
            }
            let value = claim(generation, front, back + 1);
            if atomic(
                claim_at,
                AtomicOp::CompareSwap {
                    compare: word,
                    value,
                },
            )? != word
            {
                continue;
            }
            let at = (total - 1 - back) as usize * chunk;
            let bytes = &src[at..len.min(at + chunk)];
            if lane
                .write_remote(source, h.addr + at as u64, bytes)
                .is_err()
            {
                // The receiver copies this chunk itself.
                atomic(done_at, AtomicOp::FetchOr(ABANDONED))?;
                return Ok(());
            }
            atomic(done_at, AtomicOp::FetchAdd(1))?;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use weft_transport::shm::{create_segment, SegmentLayout, ShmTransport};
    use weft_transport::Transport;

    use super::super::wire::{Class, Envelope};
    use super::super::{Engine, Match, RawBuf, SendMode, Settings, Watch};
    use super::*;
    use crate::am::Handlers;

    /// Two engines of this process joined by shared memory, their help
    /// lines at the start of their heaps.
    fn engines(tag: &str) -> Vec<Arc<Engine>> {
        let job = format!("h{tag}{}", std::process::id());
        let layout = SegmentLayout {
            nranks: 2,
            heap_size: 1 << 16,
        };
        let mut ts: Vec<ShmTransport> = (0..2)
            .map(|r| {
                let segment = create_segment(&job, r, layout).expect("segment");
                ShmTransport::new(Arc::new(segment), r, layout)
            })
            .collect();
        let addrs: Vec<Vec<u8>> = ts.iter().map(ShmTransport::address).collect();
        for t in &mut ts {
            t.connect(&addrs).expect("connect");
        }
        for t in &ts {
            t.unlink().expect("unlink");
        }
        ts.into_iter()
            .enumerate()
            .map(|(rank, t)| {
                let settings = Settings {
                    eager_limit: 4096,
                    single_copy: true,
                    oversubscribed: true,
                    help: Area {
                        offset: 0,
                        local: t.local_heap().0 as usize,
                    },
                };
                let lanes: Vec<Box<dyn Transport>> = vec![Box::new(t)];
                let handlers = Handlers::new();
                Arc::new(Engine::new(
                    rank,
                    2,
                    lanes,
                    vec![0, 0],
                    vec![0, 0],
                    settings,
                    handlers,
                ))
            })
            .collect()
    }

    /// Sends `src` from engine 0 to engine 1, each waiting on its own
    /// thread; returns what arrived and how many chunks the sender wrote.
    fn transfer(e: &[Arc<Engine>], src: &Arc<Vec<u8>>) -> (Vec<u8>, u64) {
        let env = Envelope {
            class: Class::P2p,
            ctx: 0,
            tag: 5,
        };
        let (sender, data) = (e[0].clone(), src.clone());
        let sending = std::thread::spawn(move || {
            let mut st = sender.lock("send").expect("lock");
            let sent = sender.send(&mut st, 1, env, data.as_ptr(), data.len(), SendMode::Auto);
            let id = sent.expect("send starts").expect("a rendezvous");
            drop(st);
            sender
                .wait("send", Watch::Peer(1), |st| Engine::take(st, id))
                .map(drop)
        });
        let mut got = vec![0u8; src.len()];
        let m = Match {
            class: Class::P2p,
            ctx: 0,
            source: Some(0),
            tag: Some(5),
        };
        let receiver = &e[1];
        let id = receiver
            .post_recv(
                &mut receiver.lock("recv").expect("lock"),
                m,
                RawBuf::of(&mut got),
            )
            .expect("posted");
        receiver
            .wait("recv", Watch::Peer(0), |st| Engine::take(st, id))
            .expect("received");
        sending.join().expect("sender runs").expect("sent");
        let (claims, done) = receiver.settings.help.words(0);
        let (_, _, back) = claimed(claims.load(Ordering::Acquire));
        assert_eq!(done.load(Ordering::Acquire) & COUNT, back);
        (got, back)
    }

    #[test]
    fn both_sides_copy_a_long_message_and_it_arrives_whole() {
        let e = engines("both");
        let src: Arc<Vec<u8>> = Arc::new(
            (0..(8 << 20) + 12_345)
                .map(|i| (i * 7 % 251) as u8)
                .collect(),
        );
        // The sender's thread may not run while the receiver copies; one
        // of a few transfers is enough to see it help.
        let mut helped = 0;
        for _ in 0..20 {
            let (got, back) = transfer(&e, &src);
            assert!(got == *src, "the message arrived damaged");
            helped += back;
            if helped > 0 {
                break;
            }
        }
        assert!(helped > 0, "the sender never copied a chunk");
    }

    #[test]
    fn claim_words_round_trip_and_chunks_stay_countable() {
        assert_eq!(claimed(claim(7, 3, 65_535)), (7, 3, 65_535));
        assert_eq!(claimed(claim(u32::MAX, 0, 0)), (u32::MAX, 0, 0));
        assert_eq!(chunk(MIN), CHUNK);
        let huge: usize = 16 << 30;
        assert!(huge.div_ceil(chunk(huge)) <= 0xffff);
    }
}
