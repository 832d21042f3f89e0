//! The shared-memory transport.
//!
//! Every PE creates one [`Segment`] holding a header, one inbound message
//! ring per PE of the job and its symmetric heap ([`SegmentLayout`]). Peers on
//! the same node map each other's segments, so a put is a copy into the
//! peer's heap, a get a copy out of it, an atomic a hardware atomic on the
//! peer's memory, and a message a slot written into the peer's ring.

pub(crate) mod process;
pub mod ring;
mod segment;

use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

pub use segment::Segment;

use crate::{AtomicOp, AtomicWidth, Caps, Gone, Message, Transport, TransportError};
use process::PeerProcess;
use ring::{Consumer, Producer, MAX_PAYLOAD, RING_BYTES};

const MAGIC: u64 = u64::from_le_bytes(*b"weftseg1");
const PAGE: usize = 4096;

/// Where the parts of a PE's segment lie. Every PE of a job computes the same
/// layout from the job size and the heap size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentLayout {
    /// Number of PEs in the job (one inbound ring each).
    pub nranks: usize,
    /// Bytes of symmetric heap.
    pub heap_size: usize,
}

impl SegmentLayout {
    fn rings_at(&self) -> usize {
        PAGE
    }

    /// Byte offset of the heap inside the segment (page aligned).
    pub fn heap_at(&self) -> usize {
        (self.rings_at() + self.nranks * RING_BYTES).next_multiple_of(PAGE)
    }

    /// Total bytes of the segment.
    pub fn total(&self) -> usize {
        self.heap_at() + self.heap_size.next_multiple_of(PAGE)
    }

    fn ring_at(&self, sender: usize) -> usize {
        self.rings_at() + sender * RING_BYTES
    }
}

/// Creates this PE's segment `/weft-<job>-<rank>` and writes its header.
pub fn create_segment(
    job: &str,
    rank: usize,
    layout: SegmentLayout,
) -> Result<Segment, TransportError> {
    let seg = Segment::create(&segment_name(job, rank), layout.total())?;
    // SAFETY: the segment is at least one page long and freshly zeroed; the
    // header words are aligned and nobody else has mapped it yet.
    unsafe {
        let h = seg.as_ptr().cast::<u64>();
        h.add(1).write(rank as u64);
        h.add(2).write(layout.nranks as u64);
        h.add(3).write(layout.heap_size as u64);
        AtomicU64::from_ptr(h).store(MAGIC, Ordering::Release);
    }
    Ok(seg)
}

/// Name of PE `rank`'s segment in job `job`; `job` is reduced to characters
/// that are safe in a file name.
pub fn segment_name(job: &str, rank: usize) -> String {
    let job: String = job
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(120)
        .collect();
    format!("/weft-{job}-{rank}")
}

/// An identifier of this host's kernel instance: the host name and boot id.
/// Two PEs can share memory exactly when their node ids are equal.
pub fn node_id() -> String {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    let mut host = [0u8; 256];
    // SAFETY: `host` is a writable buffer of the length given.
    unsafe { libc::gethostname(host.as_mut_ptr().cast(), host.len() - 1) };
    let end = host.iter().position(|&b| b == 0).unwrap_or(0);
    format!("{}/{}", String::from_utf8_lossy(&host[..end]), boot.trim())
}

struct Peer {
    /// Keeps the peer's mapping (for this PE itself, the own segment) alive
    /// as long as `heap` is used.
    _mapping: Arc<Segment>,
    heap: *mut u8,
    /// Our ring inside the peer's segment.
    outbound: Mutex<Producer>,
    process: PeerProcess,
}

/// The shared-memory [`Transport`].
///
/// ```no_run
/// use std::sync::Arc;
/// use weft_transport::shm::{create_segment, SegmentLayout, ShmTransport};
/// use weft_transport::Transport;
///
/// let layout = SegmentLayout { nranks: 1, heap_size: 1 << 20 };
/// let seg = Arc::new(create_segment("doc", 0, layout).unwrap());
/// let mut shm = ShmTransport::new(seg, 0, layout);
/// let me = shm.address();
/// shm.connect(&[me]).unwrap();
/// shm.put(0, 64, b"hello").unwrap();
/// ```
pub struct ShmTransport {
    rank: usize,
    layout: SegmentLayout,
    own: Arc<Segment>,
    peers: Vec<Option<Peer>>,
    /// Our inbound rings, one per PE; one lock, since one poller reads them all.
    inbound: Mutex<Vec<Option<Consumer>>>,
}

// SAFETY: the raw heap pointers point into segments the transport keeps alive
// (`Peer::segment`); rings are behind mutexes; heap accesses are the
// one-sided operations whose ordering is the runtime's contract.
unsafe impl Send for ShmTransport {}
// SAFETY: as above.
unsafe impl Sync for ShmTransport {}

impl ShmTransport {
    /// A transport for PE `rank` over its own segment `own`, made by
    /// [`create_segment`] with `layout`. Call [`ShmTransport::connect`] next.
    pub fn new(own: Arc<Segment>, rank: usize, layout: SegmentLayout) -> ShmTransport {
        ShmTransport {
            rank,
            layout,
            own,
            peers: Vec::new(),
            inbound: Mutex::new((0..layout.nranks).map(|_| None).collect()),
        }
    }

    /// The blob peers need to reach this PE: node id, segment name and
    /// process id.
    pub fn address(&self) -> Vec<u8> {
        // SAFETY: getpid has no preconditions.
        let pid = unsafe { libc::getpid() };
        format!("{} {} {pid}", node_id(), self.own.name()).into_bytes()
    }

    /// Lets on-node peers read this process's memory
    /// ([`Transport::read_remote`]) where the Yama security module would
    /// otherwise admit only descendants (`kernel.yama.ptrace_scope = 1`), as
    /// MPI libraries do for cross-memory attach.
    pub fn allow_peer_reads(&self) {
        process::allow_peer_reads();
    }

    /// Maps the segment of every peer whose address shows it on this node;
    /// `addresses[r]` is PE `r`'s [`ShmTransport::address`]. Peers elsewhere
    /// stay unreachable through this transport.
    pub fn connect(&mut self, addresses: &[Vec<u8>]) -> Result<(), TransportError> {
        if addresses.len() != self.layout.nranks {
            return Err(TransportError::Malformed {
                peer: self.rank,
                detail: format!(
                    "{} addresses for a job of {} PEs",
                    addresses.len(),
                    self.layout.nranks
                ),
            });
        }
        let node = node_id();
        let mut peers = Vec::with_capacity(addresses.len());
        for (peer, addr) in addresses.iter().enumerate() {
            let text = std::str::from_utf8(addr).ok();
            let fields: Option<(&str, &str, libc::pid_t)> = text.and_then(|t| {
                let mut f = t.split(' ');
                let parsed = (f.next()?, f.next()?, f.next()?.parse().ok()?);
                f.next().is_none().then_some(parsed)
            });
            let (peer_node, name, pid) = fields.ok_or_else(|| TransportError::Malformed {
                peer,
                detail: format!("shm address {:?}", String::from_utf8_lossy(addr)),
            })?;
            if peer_node != node {
                peers.push(None);
                continue;
            }
            let segment = if peer == self.rank {
                self.own.clone()
            } else {
                Arc::new(Segment::open(name, self.layout.total())?)
            };
            self.check_header(peer, &segment)?;
            // SAFETY: `base` is segment memory: header checked, layout shared
            // by every PE, ring `self.rank` is written only by this PE.
            let outbound =
                unsafe { Producer::from_raw(segment.as_ptr().add(self.layout.ring_at(self.rank))) };
            // SAFETY: ring `peer` in our own segment is read only by this PE.
            let inbound =
                unsafe { Consumer::from_raw(self.own.as_ptr().add(self.layout.ring_at(peer))) };
            self.inbound.lock()[peer] = Some(inbound);
            peers.push(Some(Peer {
                // SAFETY: the heap lies inside the segment (`SegmentLayout::total`).
                heap: unsafe { segment.as_ptr().add(self.layout.heap_at()) },
                _mapping: segment,
                outbound: Mutex::new(outbound),
                process: PeerProcess::new(peer, pid),
            }));
        }
        self.peers = peers;
        Ok(())
    }

    fn check_header(&self, peer: usize, seg: &Segment) -> Result<(), TransportError> {
        // SAFETY: the segment is `layout.total()` bytes (checked when opened),
        // so its first page holds four aligned header words.
        let (magic, rank, nranks, heap) = unsafe {
            let h = seg.as_ptr().cast::<u64>();
            (
                AtomicU64::from_ptr(h).load(Ordering::Acquire),
                h.add(1).read(),
                h.add(2).read(),
                h.add(3).read(),
            )
        };
        let expect = (
            MAGIC,
            peer as u64,
            self.layout.nranks as u64,
            self.layout.heap_size as u64,
        );
        if (magic, rank, nranks, heap) != expect {
            return Err(TransportError::Malformed {
                peer,
                detail: format!(
                    "segment {} has header (magic {magic:#x}, rank {rank}, {nranks} PEs, \
                     heap {heap} bytes); expected rank {peer}, {} PEs, heap {} bytes \
                     (is WEFT_SYMMETRIC_SIZE the same on every PE?)",
                    seg.name(),
                    self.layout.nranks,
                    self.layout.heap_size
                ),
            });
        }
        Ok(())
    }

    /// Removes this PE's segment name from `/dev/shm`; call it once every
    /// peer has connected. Mappings stay valid.
    pub fn unlink(&self) -> Result<(), TransportError> {
        self.own.unlink()
    }

    /// This PE's own heap: pointer and length.
    pub fn local_heap(&self) -> (*mut u8, usize) {
        // SAFETY: the heap lies inside the own segment.
        (
            unsafe { self.own.as_ptr().add(self.layout.heap_at()) },
            self.layout.heap_size,
        )
    }

    fn peer(&self, peer: usize) -> Result<&Peer, TransportError> {
        self.peers
            .get(peer)
            .and_then(Option::as_ref)
            .ok_or(TransportError::Unreachable {
                peer,
                transport: "shm",
            })
    }

    /// Pointer to `len` bytes at `offset` of `peer`'s heap, bounds checked.
    fn at(&self, peer: usize, offset: usize, len: usize) -> Result<*mut u8, TransportError> {
        let p = self.peer(peer)?;
        let end = offset.saturating_add(len);
        if end > self.layout.heap_size {
            return Err(TransportError::OutOfBounds {
                peer,
                offset,
                end,
                size: self.layout.heap_size,
            });
        }
        // SAFETY: `offset + len <= heap_size`, so the pointer stays inside the mapping.
        Ok(unsafe { p.heap.add(offset) })
    }

    /// The word of `align` bytes at `offset` in `peer`'s heap, checked for
    /// bounds and alignment.
    fn word_at(&self, peer: usize, offset: usize, align: usize) -> Result<*mut u8, TransportError> {
        if offset % align != 0 {
            return Err(TransportError::Misaligned { offset, align });
        }
        self.at(peer, offset, align)
    }
}

impl Transport for ShmTransport {
    fn name(&self) -> &'static str {
        "shm"
    }

    fn caps(&self) -> Caps {
        Caps {
            max_message: MAX_PAYLOAD,
            native_atomics: true,
            load_store: true,
        }
    }

    fn reaches(&self, peer: usize) -> bool {
        self.peers.get(peer).is_some_and(Option::is_some)
    }

    fn mapped(&self, peer: usize) -> Option<std::ptr::NonNull<u8>> {
        std::ptr::NonNull::new(self.peer(peer).ok()?.heap)
    }

    fn put(&self, peer: usize, offset: usize, src: &[u8]) -> Result<(), TransportError> {
        let dst = self.at(peer, offset, src.len())?;
        // SAFETY: `dst` is valid for `src.len()` bytes (`at`); the copy allows
        // overlap, and concurrent access to heap memory is the program's to
        // order with quiet/fence/barrier, as in OpenSHMEM.
        unsafe { weft_copy::copy_may_overlap(src.as_ptr(), dst, src.len()) };
        Ok(())
    }

    /// The copy, then a release store of the signal: stores are not
    /// reordered after a release store (nor are the non-temporal ones of a
    /// large copy, which memcpy ends with a store fence).
    fn put_signal(
        &self,
        peer: usize,
        offset: usize,
        src: &[u8],
        signal: usize,
        value: u64,
    ) -> Result<(), TransportError> {
        let word = self.word_at(peer, signal, 8)?;
        self.put(peer, offset, src)?;
        // SAFETY: `word` is in bounds and 8-aligned (`word_at`; the heap is
        // page aligned); the word is shared memory accessed atomically.
        unsafe { AtomicU64::from_ptr(word.cast()) }.store(value, Ordering::Release);
        Ok(())
    }

    unsafe fn get(
        &self,
        peer: usize,
        offset: usize,
        dst: *mut u8,
        len: usize,
    ) -> Result<(), TransportError> {
        let src = self.at(peer, offset, len)?;
        // SAFETY: `src` is valid for `len` bytes (`at`); `dst` is the caller's
        // promise (see the trait).
        unsafe { weft_copy::copy_may_overlap(src, dst, len) };
        Ok(())
    }

    /// The copy alone: it is complete when it returns, and a blocking get
    /// need not order this PE's earlier puts (that is quiet's job).
    fn get_blocking(
        &self,
        peer: usize,
        offset: usize,
        dst: &mut [u8],
    ) -> Result<(), TransportError> {
        // SAFETY: `dst` is a live exclusive buffer of `dst.len()` bytes.
        unsafe { self.get(peer, offset, dst.as_mut_ptr(), dst.len()) }
    }

    fn atomic(
        &self,
        peer: usize,
        offset: usize,
        width: AtomicWidth,
        op: AtomicOp,
    ) -> Result<u64, TransportError> {
        let p = self.word_at(peer, offset, width.bytes())?;
        Ok(match width {
            // SAFETY: `p` is in bounds and aligned to 8 (the heap is page
            // aligned); the word is shared memory accessed atomically by PEs.
            AtomicWidth::W64 => apply64(unsafe { AtomicU64::from_ptr(p.cast()) }, op),
            // SAFETY: as above with 4-byte alignment.
            AtomicWidth::W32 => apply32(unsafe { AtomicU32::from_ptr(p.cast()) }, op) as u64,
        })
    }

    fn quiet(&self) -> Result<(), TransportError> {
        // Copies are complete when they return; a full fence also orders any
        // non-temporal stores memcpy used for large copies.
        fence(Ordering::SeqCst);
        Ok(())
    }

    fn fence(&self) -> Result<(), TransportError> {
        fence(Ordering::SeqCst);
        Ok(())
    }

    fn expose(&self, _ptr: *const u8, _len: usize) -> Result<u64, TransportError> {
        Ok(0)
    }

    /// Peers read process memory directly: nothing to release.
    fn unexpose(&self, _key: u64) {}

    fn read_remote(
        &self,
        peer: usize,
        addr: u64,
        _key: u64,
        dst: &mut [u8],
    ) -> Result<(), TransportError> {
        self.peer(peer)?.process.read(addr, dst)
    }

    fn write_remote(&self, peer: usize, addr: u64, src: &[u8]) -> Result<(), TransportError> {
        self.peer(peer)?.process.write(addr, src)
    }

    fn peer_gone(&self, peer: usize) -> Option<Gone> {
        let alive = self.peer(peer).map_or(true, |p| p.process.alive());
        (!alive).then_some(Gone::Exited)
    }

    fn send(&self, peer: usize, header: u64, payload: &[u8]) -> Result<(), TransportError> {
        if payload.len() > MAX_PAYLOAD {
            return Err(TransportError::MessageTooLarge {
                len: payload.len(),
                max: MAX_PAYLOAD,
                transport: "shm",
            });
        }
        let p = self.peer(peer)?;
        if p.outbound.lock().try_send(header, payload) {
            Ok(())
        } else {
            Err(TransportError::WouldBlock { peer })
        }
    }

    fn poll(&self, sink: &mut dyn FnMut(Message<'_>)) -> Result<usize, TransportError> {
        let mut delivered = 0;
        // Another thread polling now delivers whatever has arrived.
        let Some(mut inbound) = self.inbound.try_lock() else {
            return Ok(0);
        };
        for (source, rx) in inbound.iter_mut().enumerate() {
            let Some(rx) = rx else { continue };
            loop {
                let got = rx
                    .try_recv(|m| {
                        sink(Message {
                            source,
                            header: m.header,
                            payload: m.payload,
                        })
                    })
                    .map_err(
                        |ring::RingError::Corrupt(detail)| TransportError::Malformed {
                            peer: source,
                            detail: format!("message ring: {detail}"),
                        },
                    )?;
                if !got {
                    break;
                }
                delivered += 1;
            }
        }
        Ok(delivered)
    }
}

fn apply64(a: &AtomicU64, op: AtomicOp) -> u64 {
    let o = Ordering::SeqCst;
    match op {
        AtomicOp::Fetch => a.load(o),
        AtomicOp::Swap(v) => a.swap(v, o),
        AtomicOp::CompareSwap { compare, value } => {
            match a.compare_exchange(compare, value, o, o) {
                Ok(v) | Err(v) => v,
            }
        }
        AtomicOp::FetchAdd(v) => a.fetch_add(v, o),
        AtomicOp::FetchAnd(v) => a.fetch_and(v, o),
        AtomicOp::FetchOr(v) => a.fetch_or(v, o),
        AtomicOp::FetchXor(v) => a.fetch_xor(v, o),
    }
}

fn apply32(a: &AtomicU32, op: AtomicOp) -> u32 {
    let o = Ordering::SeqCst;
    let v32 = |v: u64| v as u32;
    match op {
        AtomicOp::Fetch => a.load(o),
        AtomicOp::Swap(v) => a.swap(v32(v), o),
        AtomicOp::CompareSwap { compare, value } => {
            match a.compare_exchange(v32(compare), v32(value), o, o) {
                Ok(v) | Err(v) => v,
            }
        }
        AtomicOp::FetchAdd(v) => a.fetch_add(v32(v), o),
        AtomicOp::FetchAnd(v) => a.fetch_and(v32(v), o),
        AtomicOp::FetchOr(v) => a.fetch_or(v32(v), o),
        AtomicOp::FetchXor(v) => a.fetch_xor(v32(v), o),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two PEs in one process, each with its own segment and transport.
    fn pair(tag: &str) -> (ShmTransport, ShmTransport) {
        let job = format!("t{tag}{}", std::process::id());
        let layout = SegmentLayout {
            nranks: 2,
            heap_size: 1 << 16,
        };
        let mut ts: Vec<ShmTransport> = (0..2)
            .map(|r| {
                ShmTransport::new(
                    Arc::new(create_segment(&job, r, layout).unwrap()),
                    r,
                    layout,
                )
            })
            .collect();
        let addrs: Vec<Vec<u8>> = ts.iter().map(ShmTransport::address).collect();
        for t in &mut ts {
            t.connect(&addrs).unwrap();
        }
        for t in &ts {
            t.unlink().unwrap();
        }
        let b = ts.pop().unwrap();
        (ts.pop().unwrap(), b)
    }

    #[test]
    fn put_get_and_atomics_reach_the_peer() {
        let (a, b) = pair("rma");
        a.put(1, 8, &[1, 2, 3, 4]).unwrap();
        let mut out = [0u8; 4];
        // SAFETY: `out` is a live local buffer of 4 bytes.
        unsafe { b.get(1, 8, out.as_mut_ptr(), 4).unwrap() };
        assert_eq!(out, [1, 2, 3, 4]);
        assert_eq!(
            a.atomic(1, 64, AtomicWidth::W64, AtomicOp::FetchAdd(5))
                .unwrap(),
            0
        );
        assert_eq!(
            b.atomic(1, 64, AtomicWidth::W64, AtomicOp::Fetch).unwrap(),
            5
        );
        let cas = AtomicOp::CompareSwap {
            compare: 5,
            value: 9,
        };
        assert_eq!(b.atomic(1, 64, AtomicWidth::W64, cas).unwrap(), 5);
        assert_eq!(
            a.atomic(1, 64, AtomicWidth::W64, AtomicOp::Fetch).unwrap(),
            9
        );
        assert_eq!(
            a.atomic(0, 4, AtomicWidth::W32, AtomicOp::FetchOr(0xf0))
                .unwrap(),
            0
        );
        assert_eq!(
            b.atomic(0, 4, AtomicWidth::W32, AtomicOp::FetchXor(0xff))
                .unwrap(),
            0xf0
        );
        assert_eq!(
            a.atomic(0, 4, AtomicWidth::W32, AtomicOp::Fetch).unwrap(),
            0x0f
        );
    }

    #[test]
    fn a_mapped_heap_is_the_peers_heap() {
        let (a, b) = pair("mapped");
        let heap = a.mapped(1).expect("peer 1 is mapped");
        // SAFETY: peer 1's heap is mapped here for 64 KiB (`pair`); byte
        // 256 is inside it and nothing else accesses it.
        unsafe { heap.as_ptr().add(256).write(42) };
        let mut out = [0u8; 1];
        b.get_blocking(1, 256, &mut out).unwrap();
        assert_eq!(out, [42]);
        assert!(a.mapped(2).is_none());
    }

    #[test]
    fn put_signal_sets_the_word_after_the_bytes() {
        let (a, b) = pair("signal");
        a.put_signal(1, 128, &[5; 100], 64, 3).unwrap();
        assert_eq!(
            b.atomic(1, 64, AtomicWidth::W64, AtomicOp::Fetch).unwrap(),
            3
        );
        let mut out = [0u8; 100];
        // SAFETY: `out` is a live local buffer of 100 bytes.
        unsafe { b.get(1, 128, out.as_mut_ptr(), 100).unwrap() };
        assert_eq!(out, [5; 100]);
        let e = a.put_signal(1, 128, &[1], 60, 1).unwrap_err();
        assert!(matches!(e, TransportError::Misaligned { .. }), "{e}");
        let e = a.put_signal(1, 128, &[1], 1 << 30, 1).unwrap_err();
        assert!(matches!(e, TransportError::OutOfBounds { .. }), "{e}");
    }

    #[test]
    fn bad_accesses_are_errors() {
        let (a, _b) = pair("bad");
        assert!(matches!(
            a.put(1, (1 << 16) - 2, &[0; 4]),
            Err(TransportError::OutOfBounds { .. })
        ));
        assert!(matches!(
            a.put(1, usize::MAX, &[0; 4]),
            Err(TransportError::OutOfBounds { .. })
        ));
        assert!(matches!(
            a.put(2, 0, &[0]),
            Err(TransportError::Unreachable { peer: 2, .. })
        ));
        assert!(matches!(
            a.atomic(1, 4, AtomicWidth::W64, AtomicOp::Fetch),
            Err(TransportError::Misaligned {
                offset: 4,
                align: 8
            })
        ));
        assert!(matches!(
            a.send(1, 0, &[0; MAX_PAYLOAD + 1]),
            Err(TransportError::MessageTooLarge { .. })
        ));
    }

    #[test]
    fn messages_flow_in_order_with_credits() {
        let (a, b) = pair("msg");
        let mut sent = 0u64;
        loop {
            match a.send(1, sent, &sent.to_le_bytes()) {
                Ok(()) => sent += 1,
                Err(TransportError::WouldBlock { peer: 1 }) => break,
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(
            sent,
            (ring::DATA_BYTES / 64) as u64,
            "8-byte messages take a line each"
        );
        let mut got = Vec::new();
        b.poll(&mut |m| {
            assert_eq!(m.source, 0);
            got.push(m.header);
        })
        .unwrap();
        assert_eq!(got, (0..sent).collect::<Vec<_>>());
        a.send(1, 99, b"again").unwrap();
    }

    #[test]
    fn mismatched_heap_sizes_are_refused() {
        let job = format!("tsize{}", std::process::id());
        let small = SegmentLayout {
            nranks: 2,
            heap_size: 1 << 16,
        };
        let large = SegmentLayout {
            nranks: 2,
            heap_size: 1 << 17,
        };
        let mut a = ShmTransport::new(Arc::new(create_segment(&job, 0, small).unwrap()), 0, small);
        let b = ShmTransport::new(Arc::new(create_segment(&job, 1, large).unwrap()), 1, large);
        let err = a.connect(&[a.address(), b.address()]).unwrap_err();
        assert!(err.to_string().contains("segment"), "{err}");
    }
}
