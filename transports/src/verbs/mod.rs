//! The RDMA verbs backend (libibverbs): reliable-connected queue pairs to
//! every PE, one memory region over the whole symmetric heap, RDMA WRITE for
//! put, RDMA READ for get and rendezvous, native 64-bit fetch-add and
//! compare-swap, and SEND/RECV messages into a shared receive queue with
//! credit-based flow control.
//!
//! Set-up: [`VerbsTransport::open`] opens the device (`WEFT_VERBS_DEVICE`, or
//! the first with an active port), registers the heap and the transport's own
//! area, and creates one queue pair per PE (itself included: operations on
//! its own heap also go through the device, so that its atomics are atomic
//! with its peers'). [`VerbsTransport::address`] is the blob to publish;
//! [`VerbsTransport::connect`] takes every PE's and brings the queue pairs up.
//!
//! Work requests: every request on a queue pair gets the next sequence
//! number; one in [`SIGNAL_EVERY`] is signaled, as is any request somebody
//! waits for, and a completion retires every earlier request of its queue
//! pair (they complete in order), releasing what they held (bounce slots,
//! registrations) and copying staged gets out. [`Transport::quiet`] posts a
//! signaled empty write behind unsignaled tails and waits until nothing is
//! outstanding; [`Transport::fence`] does the same.
//!
//! Messages: a message is a SEND of its 8-byte header and payload into a
//! receive buffer of the shared receive queue, inline when small. When the
//! header's upper half is the one last sent to that peer, only the lower
//! half goes, as the SEND's immediate data: the receiver keeps the last
//! upper half from each peer (a queue pair delivers in order), and a
//! 4096-byte payload then fills four 1024-byte packets, not five. Each PE
//! grants each peer `credits` messages in flight; the receiver counts what it
//! consumed from each peer and, every `credits / 2` messages, writes the
//! count into the sender's area with an RDMA WRITE, so returning credits
//! costs no receive buffer. A sender out of credit gets
//! [`TransportError::WouldBlock`].
//!
//! User memory: puts and gets of up to [`BOUNCE_SIZE`] bytes are staged in
//! registered bounce slots; larger ones, and rendezvous buffers
//! ([`Transport::expose`], [`Transport::read_remote`]), are registered for as
//! long as the transfer runs. Registrations of one range are shared and
//! counted, and released when the last transfer using them ends: without
//! hooks on the program's memory release, keeping them longer could leave a
//! region pinned to pages the program has given back.
//!
//! Atomics: 64-bit fetch-add and compare-swap are native; fetch is a
//! fetch-add of zero; swap, and, or and xor are compare-swap loops; 32-bit
//! operations are compare-swap loops on the aligned 64-bit word around them
//! (the heap is a whole number of pages, so that word is inside it).

mod address;
mod area;
mod device;
mod ffi;
mod stall;

use std::collections::{HashMap, VecDeque};
use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use self::address::Address;
use self::area::{Area, Layout};
use self::device::{Completion, Device, Endpoint, MemoryRegion, QueuePair, WorkRequest};
use self::stall::Stall;
use crate::backoff::Backoff;
use crate::exits::ExitView;
use crate::shm::{node_id, process::PeerProcess, Segment, SegmentLayout};
use crate::{AtomicOp, AtomicWidth, Caps, Gone, Message, Transport, TransportError};

/// Bytes of a receive buffer: the 8-byte header and the payload.
const RECV_SIZE: usize = 8192;
/// Bytes of a bounce slot: the largest put or get staged through a copy.
pub const BOUNCE_SIZE: usize = 64 * 1024;
/// Bounce slots in the area.
const BOUNCE_SLOTS: usize = 32;
/// Send queue depth of each queue pair (or the device's limit).
const SEND_DEPTH: u32 = 256;
/// One in this many work requests is signaled.
const SIGNAL_EVERY: u64 = 32;
/// Inline data asked of each queue pair.
const INLINE_WANTED: u32 = 220;
/// Largest single RDMA read or write; larger transfers are split.
const MAX_TRANSFER: usize = 1 << 30;
/// Bits of a work request id holding the sequence number; the peer is above.
const SEQ_BITS: u32 = 40;
const SEQ_MASK: u64 = (1 << SEQ_BITS) - 1;
/// How often waits look for peers with requests in flight that can no
/// longer answer.
const UNREACHABLE_CHECK: Duration = Duration::from_millis(50);
/// Turns of a wait loop between two readings of the clock.
const CLOCK_EVERY: u32 = 64;
/// Turns of a wait that poll the completion queues with a single pause
/// between them before backing off, unless the node's PEs outnumber its
/// cores. A completion comes from the adapter, not from a core this poll
/// keeps busy, so polling often takes nothing from the peer; the back-off's
/// spins grow to 128 pauses a turn, which under emulation (a pause takes
/// about 0.45 µs there) let a completion wait up to about 60 µs to be seen.
/// Natively the turns last about half a millisecond in all.
const POLLS: u32 = 4096;
/// How often an idle peer on another node is probed while someone waits on it.
const PROBE_INTERVAL: Duration = Duration::from_millis(200);
/// How long a signaled request to a peer on another node may go without a
/// completion, while this PE watches (see [`stall`]), before the peer
/// counts as gone. The queue pairs' own retry
/// budget (7 retries: about 2 s with the default timeout) should report a silent peer
/// first; some devices (Soft-RoCE among them) never complete requests to a
/// queue pair that was destroyed, so this bounds the wait.
const RESPONSE_LIMIT: Duration = Duration::from_secs(10);

/// Which device and GID to use, and how long a request waits for its
/// acknowledgement (`WEFT_VERBS_DEVICE`, `WEFT_VERBS_GID_INDEX`,
/// `WEFT_VERBS_TIMEOUT`).
#[derive(Clone, Debug, Default)]
pub struct VerbsOptions {
    /// Device name, e.g. `mlx5_0`; the first device with an active port when `None`.
    pub device: Option<String>,
    /// GID table index on RoCE ports; the first IPv4-mapped (RoCE v2) GID when `None`.
    pub gid_index: Option<u32>,
    /// The queue pairs' local ACK timeout, 4.096 µs * 2^`ack_timeout` (1 to
    /// 31; [`DEFAULT_ACK_TIMEOUT`] when `None`), after which a request
    /// without an acknowledgement is sent again, up to 7 times before it
    /// fails.
    pub ack_timeout: Option<u8>,
    /// More PEs than cores on this node: waits yield at once instead of spinning.
    pub oversubscribed: bool,
    /// The launcher's word on which PEs left the job: a peer on another node
    /// marked there is gone at once, without waiting for the network to say.
    pub exits: Option<Arc<ExitView>>,
}

/// The default local ACK timeout exponent: 268 ms a try, about 2 s before
/// a request to a silent peer fails. Shorter timeouts recover a lost packet
/// that only the timer finds sooner, but a peer that merely answers late
/// (a loaded host, an emulated device) is then sent packets again for
/// nothing, and given up on sooner.
pub const DEFAULT_ACK_TIMEOUT: u8 = 16;

/// What a peer looks like once connected.
struct Peer {
    /// The peer's process, when it runs on this node.
    process: Option<PeerProcess>,
    heap_addr: u64,
    heap_len: u64,
    heap_rkey: u32,
    ctrl_addr: u64,
    ctrl_rkey: u32,
    /// Messages this PE may have in flight toward the peer.
    credits: u64,
}

/// What to do when a work request retires.
enum Action {
    None,
    /// Return a bounce slot to the pool.
    Free(usize),
    /// Copy a staged get out of a bounce slot, then free it.
    CopyOut {
        slot: usize,
        dst: usize,
        len: usize,
    },
    /// Drop one use of a registration (by rkey).
    Release(u32),
}

struct Record {
    seq: u64,
    op: &'static str,
    action: Action,
    /// A signaled request to a peer on another node, whose completion is
    /// awaited (unsignaled ones expect no completion of their own; on-node
    /// peers are watched through their process instead).
    timed: bool,
    /// A failure is reported by the next quiet (nobody waits for it).
    deferred: bool,
}

/// How a work request is posted.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Unsignaled (but for one in [`SIGNAL_EVERY`]); retired by a later
    /// completion; a failure is reported by the next quiet.
    Quiet,
    /// Signaled so that quiet can wait for the queue to drain.
    Flush,
    /// Signaled; the caller waits for it and reports its failure.
    Wait,
}

/// The status of a [`Failure`] when the peer's process was seen to end with
/// requests in flight (its queue pair is then moved to the error state,
/// which flushes them).
const PEER_EXITED: u32 = u32::MAX;
/// The status of a [`Failure`] when a peer on another node left a signaled
/// request unanswered for [`RESPONSE_LIMIT`].
const PEER_SILENT: u32 = u32::MAX - 1;

/// How the peer is gone, if a failure with `status` means it is.
fn gone(status: u32) -> Option<Gone> {
    match status {
        PEER_EXITED => Some(Gone::Exited),
        PEER_SILENT => Some(Gone::Silent(RESPONSE_LIMIT)),
        s if device::WC_RETRY_EXCEEDED.contains(&s) => Some(Gone::RetriesExceeded),
        _ => None,
    }
}

/// A failed queue pair: every request from `seq` on failed.
#[derive(Clone)]
struct Failure {
    seq: u64,
    op: &'static str,
    status: u32,
}

/// The mutable state of one queue pair and its peer.
#[derive(Default)]
struct Lane {
    next_seq: u64,
    records: VecDeque<Record>,
    tail_signaled: bool,
    failed: Option<Failure>,
    /// Messages sent to the peer.
    sent: u64,
    /// The upper half of the last header sent to the peer in full.
    sent_upper: Option<u32>,
    /// Messages from the peer delivered, and the count last reported to it.
    consumed: u64,
    reported: u64,
    last_probe: Option<Instant>,
    /// How long timed requests have been waiting with nothing retiring,
    /// while watched. Kept by the checks for unreachable peers, so that
    /// posting and waiting never read the clock (in a virtual machine
    /// without a stable TSC every reading is an emulated timer access).
    stalled: Option<Stall>,
}

impl Lane {
    /// Requests with a sequence number below this have retired.
    fn retired(&self) -> u64 {
        self.records.front().map_or(self.next_seq, |r| r.seq)
    }
}

struct Registration {
    mr: MemoryRegion,
    uses: usize,
}

struct State {
    lanes: Vec<Lane>,
    free_slots: Vec<usize>,
    /// Work requests posted and not yet retired, on all queue pairs.
    outstanding: usize,
    /// Registrations of user memory, by rkey, and by range.
    regs: HashMap<u32, Registration>,
    by_range: HashMap<(u64, usize), u32>,
    /// A failure of a request nobody waits for, reported by the next quiet.
    deferred: Option<TransportError>,
}

/// The verbs transport of one PE. See the [module documentation](self).
///
/// Dropping it destroys the queue pairs first (the kernel stops all their
/// transfers), then releases the memory they used.
pub struct VerbsTransport {
    qps: Vec<QueuePair>,
    rank: usize,
    size: usize,
    state: Mutex<State>,
    /// Held by the one thread polling for messages; holds, per source,
    /// the upper half of the last header received from it in full.
    poll_lock: Mutex<Vec<Option<u32>>>,
    peers: Vec<Peer>,
    qp_owner: HashMap<u32, usize>,
    heap: MemoryRegion,
    area: Area,
    credits: u32,
    recv_buffers: usize,
    send_depth: usize,
    cq_depth: usize,
    inline_cap: usize,
    oversubscribed: bool,
    exits: Option<Arc<ExitView>>,
    ack_timeout: u8,
    device: Arc<Device>,
    /// Keeps the heap's mapping alive as long as its registration.
    _segment: Arc<Segment>,
}

impl VerbsTransport {
    /// Opens the device, registers the heap that `layout` places in
    /// `segment`, and creates a queue pair for each of the `size` PEs. The
    /// error says why no device could be used.
    pub fn open(
        segment: Arc<Segment>,
        layout: SegmentLayout,
        rank: usize,
        size: usize,
        options: &VerbsOptions,
    ) -> Result<VerbsTransport, TransportError> {
        let no_device = |reason: String| TransportError::Unavailable {
            transport: "verbs",
            reason,
        };
        let ack_timeout = options.ack_timeout.unwrap_or(DEFAULT_ACK_TIMEOUT);
        if !(1..=31).contains(&ack_timeout) {
            return Err(no_device(format!(
                "ACK timeout exponent {ack_timeout} is outside 1-31"
            )));
        }
        // Credits per peer shrink as the job grows; the shared receive queue
        // holds at most 4096 buffers (senders beyond it are held back by the
        // device's receiver-not-ready retries, never dropped).
        let credits = (512 / size.max(1)).clamp(8, 64) as u32;
        let srq_wanted = (credits as usize * size).min(4096);
        let cq_depth = (size * SEND_DEPTH as usize)
            .clamp(1024, 16384)
            .max(4 * size);
        let device = Device::open(
            options.device.as_deref(),
            options.gid_index,
            cq_depth as u32,
            srq_wanted as u32,
        )
        .map_err(no_device)?;
        let info = device.info();
        let recv_buffers = srq_wanted.min(info.max_srq_wr as usize).max(1);
        let send_depth = SEND_DEPTH.min(info.max_qp_wr) as usize;
        let area = Area::new(
            &device,
            Layout {
                peers: size,
                recv_buffers,
                recv_size: RECV_SIZE,
                bounce_slots: BOUNCE_SLOTS,
                bounce_size: BOUNCE_SIZE,
            },
        )
        .map_err(|e| os("ibv_reg_mr", "the transport's buffers", e))?;
        let heap_ptr = segment.as_ptr().wrapping_add(layout.heap_at());
        // SAFETY: the heap lies inside `segment`, which this transport keeps
        // mapped for as long as the region lives; peers write into the heap
        // by design (that is what one-sided operations are).
        let heap = unsafe { device.register(heap_ptr, layout.heap_size) }
            .map_err(|e| os("ibv_reg_mr", "the symmetric heap", e))?;
        let (_, lkey, _) = area.keys();
        for i in 0..recv_buffers {
            // SAFETY: buffer `i` lies in the area registered under `lkey`
            // and is only read after its completion is polled.
            unsafe { device.post_recv(i as u64, area.recv_buffer(i), RECV_SIZE as u32, lkey) }
                .map_err(|e| os("ibv_post_srq_recv", "receive buffers", e))?;
        }
        let mut qps = Vec::with_capacity(size);
        for pe in 0..size {
            let qp = device
                .queue_pair(send_depth as u32, INLINE_WANTED)
                .map_err(|e| os("ibv_create_qp", format!("queue pair to PE {pe}"), e))?;
            qps.push(qp);
        }
        let inline_cap = qps.iter().map(|q| q.inline_cap as usize).min().unwrap_or(0);
        Ok(VerbsTransport {
            rank,
            size,
            state: Mutex::new(State {
                lanes: (0..size).map(|_| Lane::default()).collect(),
                free_slots: (0..BOUNCE_SLOTS).rev().collect(),
                outstanding: 0,
                regs: HashMap::new(),
                by_range: HashMap::new(),
                deferred: None,
            }),
            poll_lock: Mutex::new(vec![None; size]),
            qps,
            peers: Vec::new(),
            qp_owner: HashMap::new(),
            heap,
            area,
            credits,
            recv_buffers,
            send_depth,
            cq_depth,
            inline_cap,
            oversubscribed: options.oversubscribed,
            exits: options.exits.clone(),
            ack_timeout,
            device,
            _segment: segment,
        })
    }

    /// The device and port in use, e.g. `rxe0:1`.
    pub fn device_name(&self) -> String {
        format!("{}:{}", self.device.name(), self.device.port_number())
    }

    /// The blob peers need to reach this PE.
    pub fn address(&self) -> Vec<u8> {
        let info = self.device.info();
        let (ctrl_addr, _, ctrl_rkey) = self.area.keys();
        Address {
            node: node_id(),
            pid: std::process::id() as i32,
            lid: info.lid,
            gid: info.gid,
            heap_addr: self.heap.addr,
            heap_len: self.heap.len as u64,
            heap_rkey: self.heap.rkey,
            ctrl_addr,
            ctrl_rkey,
            credits: self.credits,
            qpns: self.qps.iter().map(|q| q.qpn).collect(),
        }
        .encode()
    }

    /// Connects a queue pair to every PE from their published blobs.
    pub fn connect(&mut self, addresses: &[Vec<u8>]) -> Result<(), TransportError> {
        if addresses.len() != self.size {
            return Err(TransportError::Malformed {
                peer: self.rank,
                detail: format!("{} addresses for {} PEs", addresses.len(), self.size),
            });
        }
        let node = node_id();
        let me = self.rank;
        let mut peers = Vec::with_capacity(self.size);
        for (pe, blob) in addresses.iter().enumerate() {
            let a = Address::decode(pe, self.size, blob)?;
            let remote = Endpoint {
                qpn: a.qpns[me],
                psn: psn(pe, me),
                lid: a.lid,
                gid: a.gid,
            };
            self.qps[pe]
                .connect(&remote, psn(me, pe), self.ack_timeout)
                .map_err(|e| os("ibv_modify_qp", format!("queue pair to PE {pe}"), e))?;
            peers.push(Peer {
                process: (a.node == node).then(|| PeerProcess::new(pe, a.pid)),
                heap_addr: a.heap_addr,
                heap_len: a.heap_len,
                heap_rkey: a.heap_rkey,
                ctrl_addr: a.ctrl_addr,
                ctrl_rkey: a.ctrl_rkey,
                credits: u64::from(a.credits),
            });
        }
        self.qp_owner = self
            .qps
            .iter()
            .enumerate()
            .map(|(pe, q)| (q.qpn, pe))
            .collect();
        self.peers = peers;
        Ok(())
    }

    fn peer(&self, pe: usize) -> Result<&Peer, TransportError> {
        self.peers.get(pe).ok_or(TransportError::Unreachable {
            peer: pe,
            transport: "verbs",
        })
    }

    /// Checks `offset..offset + len` against `pe`'s heap.
    fn span(&self, pe: usize, offset: usize, len: usize) -> Result<&Peer, TransportError> {
        let p = self.peer(pe)?;
        match offset.checked_add(len) {
            Some(end) if end as u64 <= p.heap_len => Ok(p),
            _ => Err(TransportError::OutOfBounds {
                peer: pe,
                offset,
                end: offset.saturating_add(len),
                size: p.heap_len as usize,
            }),
        }
    }

    /// Posts `wr` to `pe`'s queue pair (signaled when `signal`), recording
    /// `action` for its retirement; returns its sequence number. Waits for
    /// room in the send and completion queues first.
    fn post(
        &self,
        st: &mut State,
        pe: usize,
        op: &'static str,
        mut wr: WorkRequest,
        mode: Mode,
        action: Action,
    ) -> Result<u64, TransportError> {
        if let Some(f) = &st.lanes[pe].failed {
            let f = f.clone();
            self.release(st, action);
            return Err(self.failure(pe, &f));
        }
        // Other requests leave room for one flush per queue pair, which
        // therefore never waits (and never recurses into flushing).
        let full = |st: &State| {
            st.lanes[pe].records.len() + 1 >= self.send_depth
                || st.outstanding + self.size >= self.cq_depth
        };
        while mode != Mode::Flush && full(st) {
            self.flush_tails(st)?;
            self.reap(st)?;
            if full(st) {
                std::thread::yield_now();
            }
        }
        let lane = &mut st.lanes[pe];
        let seq = lane.next_seq;
        let signal = mode != Mode::Quiet || seq % SIGNAL_EVERY == SIGNAL_EVERY - 1;
        wr.wr_id = ((pe as u64) << SEQ_BITS) | (seq & SEQ_MASK);
        if signal {
            wr.flags |= device::FLAG_SIGNALED;
        }
        // SAFETY: callers pass local bytes inside a registration they keep
        // (heap, area, or one counted in `regs` and released by `action`
        // only at retirement), or inline bytes copied by this call.
        if let Err(e) = unsafe { self.qps[pe].post(&wr) } {
            self.release(st, action);
            return Err(os("ibv_post_send", format!("{op} to PE {pe}"), e));
        }
        let lane = &mut st.lanes[pe];
        lane.next_seq += 1;
        lane.tail_signaled = signal;
        lane.records.push_back(Record {
            seq,
            op,
            action,
            // Only a peer on another node is timed (see drop_if_unreachable).
            timed: signal && self.peers[pe].process.is_none(),
            deferred: mode != Mode::Wait,
        });
        st.outstanding += 1;
        Ok(seq)
    }

    /// Runs what a request that will never be posted held.
    fn release(&self, st: &mut State, action: Action) {
        match action {
            Action::None => {}
            Action::Free(slot) | Action::CopyOut { slot, .. } => st.free_slots.push(slot),
            Action::Release(rkey) => unregister(st, rkey),
        }
    }

    /// The error for a request to `pe` that failed as `f` says.
    fn failure(&self, pe: usize, f: &Failure) -> TransportError {
        if let Some(how) = gone(f.status) {
            TransportError::PeerGone { peer: pe, how }
        } else {
            TransportError::Completion {
                peer: pe,
                op: f.op,
                status: device::status_text(f.status),
            }
        }
    }

    /// Polls the send completion queue and retires what completed.
    fn reap(&self, st: &mut State) -> Result<usize, TransportError> {
        let mut wcs = [Completion::default(); 32];
        let mut total = 0;
        loop {
            let n = self
                .device
                .poll(false, &mut wcs)
                .map_err(|e| os("ibv_poll_cq", "send queue", e))?;
            for wc in &wcs[..n] {
                self.retire(st, wc);
            }
            total += n;
            if n < wcs.len() {
                return Ok(total);
            }
        }
    }

    /// Retires the requests of `wc`'s queue pair up to the one it completes.
    fn retire(&self, st: &mut State, wc: &Completion) {
        let pe = (wc.wr_id >> SEQ_BITS) as usize;
        let seq_low = wc.wr_id & SEQ_MASK;
        let Some(lane) = st.lanes.get(pe) else {
            return;
        };
        if !lane.records.iter().any(|r| r.seq & SEQ_MASK == seq_low) {
            return;
        }
        // Completions come in order: the requests before the one completed
        // succeeded, and only that one can have failed.
        let ok = wc.status == device::WC_SUCCESS;
        while let Some(r) = st.lanes[pe].records.pop_front() {
            st.outstanding -= 1;
            let last = r.seq & SEQ_MASK == seq_low;
            if last && !ok {
                let f = st.lanes[pe]
                    .failed
                    .get_or_insert(Failure {
                        seq: r.seq,
                        op: r.op,
                        status: wc.status,
                    })
                    .clone();
                if r.deferred && st.deferred.is_none() {
                    st.deferred = Some(self.failure(pe, &f));
                }
            }
            if let Action::CopyOut { slot, dst, len } = r.action {
                if ok || !last {
                    // SAFETY: the read into the slot completed; `dst` is
                    // valid for `len` bytes until quiet (the contract of
                    // `get`), which has not returned yet since the request
                    // was outstanding.
                    unsafe {
                        weft_copy::copy_nonoverlapping(self.area.slot(slot), dst as *mut u8, len)
                    };
                }
            }
            self.release(st, r.action);
            if last {
                break;
            }
        }
    }

    /// Posts a signaled empty write behind every unsignaled tail, so that
    /// waiting for the queues to drain ends.
    fn flush_tails(&self, st: &mut State) -> Result<(), TransportError> {
        for pe in 0..self.size {
            let lane = &st.lanes[pe];
            if lane.records.is_empty() || lane.tail_signaled || lane.failed.is_some() {
                continue;
            }
            let wr = WorkRequest {
                remote_addr: self.peers[pe].heap_addr,
                rkey: self.peers[pe].heap_rkey,
                opcode: device::OP_WRITE,
                ..Default::default()
            };
            self.post(st, pe, "quiet", wr, Mode::Flush, Action::None)?;
        }
        Ok(())
    }

    /// Whether the launcher says that PE `pe` left the job.
    fn left(&self, pe: usize) -> bool {
        self.exits.as_ref().is_some_and(|e| e.left(pe))
    }

    /// Fails the queue pairs toward peers that can no longer answer: an
    /// on-node peer whose process ended with requests in flight, or a peer
    /// on another node that the launcher says left the job or that left a
    /// signaled request unanswered for [`RESPONSE_LIMIT`]. The queue pair
    /// moves to the error state, which flushes what it still holds.
    fn drop_unreachable(&self, st: &mut State) {
        for pe in 0..self.size {
            self.drop_if_unreachable(st, pe);
        }
    }

    fn drop_if_unreachable(&self, st: &mut State, pe: usize) {
        let lane = &mut st.lanes[pe];
        if lane.records.is_empty() || lane.failed.is_some() {
            return;
        }
        let status = match &self.peers[pe].process {
            Some(process) if !process.alive() => PEER_EXITED,
            Some(_) => return,
            None if self.left(pe) => PEER_EXITED,
            None => {
                if !lane.records.iter().any(|r| r.timed) {
                    lane.stalled = None;
                    return;
                }
                let (now, retired) = (Instant::now(), lane.retired());
                let stall = lane.stalled.get_or_insert_with(|| Stall::new(now, retired));
                if stall.check(now, retired) < RESPONSE_LIMIT {
                    return;
                }
                PEER_SILENT
            }
        };
        let first = lane.records.front().expect("records checked above");
        lane.failed = Some(Failure {
            seq: first.seq,
            op: first.op,
            status,
        });
        self.qps[pe].break_off();
    }

    /// Reaps completions until `done` gives an answer, polling for
    /// [`POLLS`] turns, then backing off between tries, and failing queue
    /// pairs toward unreachable peers every [`UNREACHABLE_CHECK`].
    fn wait<T>(
        &self,
        mut done: impl FnMut(&mut State) -> Result<Option<T>, TransportError>,
    ) -> Result<T, TransportError> {
        let mut backoff = Backoff::new(self.oversubscribed);
        // The clock is read once in a while only (see the back-off's note),
        // and not at all by a wait that ends within `CLOCK_EVERY` turns.
        let mut checked: Option<Instant> = None;
        let mut turns = 0u32;
        loop {
            {
                let mut st = self.state.lock();
                self.reap(&mut st)?;
                if let Some(v) = done(&mut st)? {
                    return Ok(v);
                }
                turns = turns.wrapping_add(1);
                if turns % CLOCK_EVERY == 0 {
                    match checked {
                        Some(t) if t.elapsed() < UNREACHABLE_CHECK => {}
                        Some(_) => {
                            self.drop_unreachable(&mut st);
                            checked = Some(Instant::now());
                        }
                        None => checked = Some(Instant::now()),
                    }
                }
            }
            if turns < POLLS && !self.oversubscribed {
                std::hint::spin_loop();
            } else {
                backoff.snooze();
            }
        }
    }

    /// Waits until request `seq` on `pe`'s queue pair has retired.
    fn wait_for(&self, pe: usize, seq: u64) -> Result<(), TransportError> {
        self.wait(|st| {
            let lane = &st.lanes[pe];
            if lane.retired() <= seq {
                return Ok(None);
            }
            match lane.failed.as_ref().filter(|f| f.seq <= seq) {
                Some(f) => Err(self.failure(pe, f)),
                None => Ok(Some(())),
            }
        })
    }

    /// A bounce slot, reaping (and flushing tails) until one is free.
    fn slot(&self, st: &mut State) -> Result<usize, TransportError> {
        loop {
            if let Some(s) = st.free_slots.pop() {
                return Ok(s);
            }
            self.flush_tails(st)?;
            self.reap(st)?;
            if st.free_slots.is_empty() {
                std::thread::yield_now();
            }
        }
    }

    /// The local key for `ptr..ptr + len`, registering it if it is not in
    /// the heap; the action releases that registration.
    fn local_key(
        &self,
        st: &mut State,
        ptr: *mut u8,
        len: usize,
        what: &str,
    ) -> Result<(u32, Action), TransportError> {
        if self.heap.covers(ptr as u64, len) {
            return Ok((self.heap.lkey, Action::None));
        }
        let rkey = register(st, &self.device, ptr, len)
            .map_err(|e| os("ibv_reg_mr", format!("{len} bytes for {what}"), e))?;
        let lkey = st.regs[&rkey].mr.lkey;
        Ok((lkey, Action::Release(rkey)))
    }

    /// One RDMA read or write of `len` bytes between `local` and `remote`
    /// that the caller waits for.
    fn transfer_sync(
        &self,
        pe: usize,
        op: &'static str,
        opcode: u32,
        local: *mut u8,
        remote: (u64, u32),
        len: usize,
    ) -> Result<(), TransportError> {
        let mut done = 0;
        let mut last = None;
        while done < len {
            let n = (len - done).min(MAX_TRANSFER);
            let mut st = self.state.lock();
            let (lkey, action) = self.local_key(&mut st, local.wrapping_add(done), n, op)?;
            let wr = WorkRequest {
                local_addr: local as u64 + done as u64,
                remote_addr: remote.0 + done as u64,
                rkey: remote.1,
                length: n as u32,
                lkey,
                opcode,
                ..Default::default()
            };
            let mode = if done + n == len {
                Mode::Wait
            } else {
                Mode::Quiet
            };
            last = Some(self.post(&mut st, pe, op, wr, mode, action)?);
            done += n;
        }
        match last {
            Some(seq) => self.wait_for(pe, seq),
            None => Ok(()),
        }
    }

    /// Posts RDMA reads of `len` bytes at `offset` in `pe`'s heap into
    /// `dst`, at most [`MAX_TRANSFER`] each, the last in `last` mode (the
    /// others unsignaled); returns the last one's sequence number, if any.
    ///
    /// # Safety
    /// `dst` must be valid for writes of `len` bytes until the reads have
    /// retired, and nothing else may access it meanwhile.
    unsafe fn read_into(
        &self,
        pe: usize,
        offset: usize,
        dst: *mut u8,
        len: usize,
        last: Mode,
    ) -> Result<Option<u64>, TransportError> {
        let p = self.span(pe, offset, len)?;
        let remote = p.heap_addr + offset as u64;
        let mut done = 0;
        let mut seq = None;
        while done < len {
            let n = (len - done).min(MAX_TRANSFER);
            let at = dst.wrapping_add(done);
            let mut st = self.state.lock();
            let mut wr = WorkRequest {
                remote_addr: remote + done as u64,
                rkey: p.heap_rkey,
                length: n as u32,
                opcode: device::OP_READ,
                ..Default::default()
            };
            let action = if n <= BOUNCE_SIZE && !self.heap.covers(at as u64, n) {
                let slot = self.slot(&mut st)?;
                wr.local_addr = self.area.slot(slot) as u64;
                wr.lkey = self.area.keys().1;
                Action::CopyOut {
                    slot,
                    dst: at as usize,
                    len: n,
                }
            } else {
                let (lkey, action) = self.local_key(&mut st, at, n, "get")?;
                wr.local_addr = at as u64;
                wr.lkey = lkey;
                action
            };
            done += n;
            let mode = if done == len { last } else { Mode::Quiet };
            seq = Some(self.post(&mut st, pe, "get", wr, mode, action)?);
        }
        Ok(seq)
    }

    /// Posts a signaled atomic on the 8-byte word at `offset` of `pe`'s heap
    /// and returns the word's previous value.
    fn atomic64(
        &self,
        pe: usize,
        offset: usize,
        opcode: u32,
        compare_add: u64,
        swap: u64,
    ) -> Result<u64, TransportError> {
        let p = self.peer(pe)?;
        let (seq, slot) = {
            let mut st = self.state.lock();
            let slot = self.slot(&mut st)?;
            let (_, lkey, _) = self.area.keys();
            let wr = WorkRequest {
                local_addr: self.area.slot(slot) as u64,
                remote_addr: p.heap_addr + offset as u64,
                rkey: p.heap_rkey,
                length: 8,
                lkey,
                opcode,
                compare_add,
                swap,
                ..Default::default()
            };
            // The slot is released below, after the value is read.
            (
                self.post(&mut st, pe, "atomic", wr, Mode::Wait, Action::None)?,
                slot,
            )
        };
        let result = self.wait_for(pe, seq).map(|()| {
            // SAFETY: the atomic completed and wrote 8 bytes into the slot,
            // which nobody else uses until it is freed below.
            unsafe { (self.area.slot(slot) as *const u64).read() }
        });
        self.state.lock().free_slots.push(slot);
        result
    }

    /// Reports consumed messages back to `pe` when half its credits are used.
    fn report_credits(&self, st: &mut State, pe: usize) -> Result<(), TransportError> {
        let lane = &st.lanes[pe];
        if lane.consumed - lane.reported < (u64::from(self.credits) / 2).max(1) {
            return Ok(());
        }
        let count = lane.consumed;
        st.lanes[pe].reported = count;
        let src = self.area.set_credit_out(pe, count);
        let (_, lkey, _) = self.area.keys();
        let p = &self.peers[pe];
        let mut wr = WorkRequest {
            local_addr: src,
            remote_addr: p.ctrl_addr + Area::credit_slot(self.rank),
            rkey: p.ctrl_rkey,
            length: 8,
            lkey,
            opcode: device::OP_WRITE,
            ..Default::default()
        };
        if self.inline_cap >= 8 {
            wr.flags |= device::FLAG_INLINE;
        }
        match self.post(st, pe, "credit return", wr, Mode::Quiet, Action::None) {
            // A peer that is gone needs no credits; its failure is reported
            // by whatever waits on it.
            Err(TransportError::PeerGone { .. } | TransportError::Completion { .. }) => Ok(()),
            r => r.map(drop),
        }
    }
}

impl Transport for VerbsTransport {
    fn name(&self) -> &'static str {
        "verbs"
    }

    fn caps(&self) -> Caps {
        Caps {
            max_message: RECV_SIZE - 8,
            native_atomics: true,
            load_store: false,
        }
    }

    fn reaches(&self, peer: usize) -> bool {
        peer < self.peers.len()
    }

    fn put(&self, peer: usize, offset: usize, src: &[u8]) -> Result<(), TransportError> {
        let p = self.span(peer, offset, src.len())?;
        if src.is_empty() {
            return Ok(());
        }
        let remote = p.heap_addr + offset as u64;
        if src.len() > BOUNCE_SIZE {
            // The source is reusable on return: wait for the write.
            let local = src.as_ptr().cast_mut();
            return self.transfer_sync(
                peer,
                "put",
                device::OP_WRITE,
                local,
                (remote, p.heap_rkey),
                src.len(),
            );
        }
        let mut st = self.state.lock();
        let mut wr = WorkRequest {
            remote_addr: remote,
            rkey: p.heap_rkey,
            length: src.len() as u32,
            opcode: device::OP_WRITE,
            ..Default::default()
        };
        let action = if src.len() <= self.inline_cap {
            wr.local_addr = src.as_ptr() as u64;
            wr.flags = device::FLAG_INLINE;
            Action::None
        } else {
            let slot = self.slot(&mut st)?;
            // SAFETY: the slot is this request's alone and holds BOUNCE_SIZE
            // bytes; `src` is shorter.
            unsafe {
                weft_copy::copy_nonoverlapping(src.as_ptr(), self.area.slot(slot), src.len())
            };
            wr.local_addr = self.area.slot(slot) as u64;
            wr.lkey = self.area.keys().1;
            Action::Free(slot)
        };
        self.post(&mut st, peer, "put", wr, Mode::Quiet, action)
            .map(drop)
    }

    unsafe fn get(
        &self,
        peer: usize,
        offset: usize,
        dst: *mut u8,
        len: usize,
    ) -> Result<(), TransportError> {
        // SAFETY: the caller's promise (see the trait) is read_into's.
        unsafe { self.read_into(peer, offset, dst, len, Mode::Quiet) }.map(drop)
    }

    /// The last read signaled and waited for alone: one round trip, where
    /// get and quiet would add a flush request behind it.
    fn get_blocking(
        &self,
        peer: usize,
        offset: usize,
        dst: &mut [u8],
    ) -> Result<(), TransportError> {
        // SAFETY: `dst` is borrowed exclusively until this returns, which
        // is after every read of it retired: the last one on success, all
        // that were posted on an error (below).
        let done = unsafe { self.read_into(peer, offset, dst.as_mut_ptr(), dst.len(), Mode::Wait) }
            .and_then(|seq| seq.map_or(Ok(()), |seq| self.wait_for(peer, seq)));
        if done.is_err() {
            // A failed queue pair flushes what it holds, so this ends; the
            // error to report is the one already in hand.
            let posted = self.state.lock().lanes[peer].next_seq;
            let _settled = self.wait(|st| Ok((st.lanes[peer].retired() >= posted).then_some(())));
        }
        done
    }

    fn atomic(
        &self,
        peer: usize,
        offset: usize,
        width: AtomicWidth,
        op: AtomicOp,
    ) -> Result<u64, TransportError> {
        let align = width.bytes();
        self.span(peer, offset, align)?;
        if offset % align != 0 {
            return Err(TransportError::Misaligned { offset, align });
        }
        if width == AtomicWidth::W64 {
            match op {
                AtomicOp::FetchAdd(v) => {
                    return self.atomic64(peer, offset, device::OP_FETCH_ADD, v, 0)
                }
                AtomicOp::Fetch => return self.atomic64(peer, offset, device::OP_FETCH_ADD, 0, 0),
                AtomicOp::CompareSwap { compare, value } => {
                    return self.atomic64(peer, offset, device::OP_COMPARE_SWAP, compare, value)
                }
                _ => {}
            }
        }
        // A compare-swap loop on the aligned 64-bit word holding the operand.
        let word = offset & !7;
        let shift = (offset - word) * 8;
        let mask = if width == AtomicWidth::W64 {
            u64::MAX
        } else {
            0xffff_ffff << shift
        };
        let mut current = self.atomic64(peer, word, device::OP_FETCH_ADD, 0, 0)?;
        loop {
            let old = (current & mask) >> shift;
            let new = match op {
                AtomicOp::Fetch => return Ok(old),
                AtomicOp::Swap(v) => v,
                AtomicOp::CompareSwap { compare, value } => {
                    if old != compare & (mask >> shift) {
                        return Ok(old);
                    }
                    value
                }
                AtomicOp::FetchAdd(v) => old.wrapping_add(v),
                AtomicOp::FetchAnd(v) => old & v,
                AtomicOp::FetchOr(v) => old | v,
                AtomicOp::FetchXor(v) => old ^ v,
            };
            let next = (current & !mask) | ((new << shift) & mask);
            let seen = self.atomic64(peer, word, device::OP_COMPARE_SWAP, current, next)?;
            if seen == current {
                return Ok(old);
            }
            current = seen;
        }
    }

    fn quiet(&self) -> Result<(), TransportError> {
        self.wait(|st| {
            self.flush_tails(st)?;
            if !st.lanes.iter().all(|l| l.records.is_empty()) {
                return Ok(None);
            }
            st.deferred.take().map_or(Ok(Some(())), Err)
        })
    }

    /// Drains like quiet: a fence that waits is always correct, and it keeps
    /// the verbs fence flag (on which Soft-RoCE parks the requester) out of
    /// the picture; a 4-rank stall was once seen in CI while it was used.
    fn fence(&self) -> Result<(), TransportError> {
        self.quiet()
    }

    fn send(&self, peer: usize, header: u64, payload: &[u8]) -> Result<(), TransportError> {
        let max = RECV_SIZE - 8;
        if payload.len() > max {
            return Err(TransportError::MessageTooLarge {
                len: payload.len(),
                max,
                transport: "verbs",
            });
        }
        let p = self.peer(peer)?;
        let mut st = self.state.lock();
        // The count comes from the peer: a bad one must not underflow.
        if st.lanes[peer]
            .sent
            .saturating_sub(self.area.credit_in(peer))
            >= p.credits
        {
            return Err(TransportError::WouldBlock { peer });
        }
        let upper = (header >> 32) as u32;
        // The lower half alone, as immediate data, when the receiver knows
        // the upper half; otherwise the whole header ahead of the payload.
        let compact = st.lanes[peer].sent_upper == Some(upper);
        let whole = header.to_le_bytes();
        let head: &[u8] = if compact { &[] } else { &whole };
        let len = head.len() + payload.len();
        let mut wr = WorkRequest {
            length: len as u32,
            opcode: if compact {
                device::OP_SEND_IMM
            } else {
                device::OP_SEND
            },
            imm: header as u32,
            ..Default::default()
        };
        let mut staged = [0u8; INLINE_WANTED as usize];
        let action = if len <= self.inline_cap {
            staged[..head.len()].copy_from_slice(head);
            staged[head.len()..len].copy_from_slice(payload);
            wr.local_addr = staged.as_ptr() as u64;
            wr.flags = device::FLAG_INLINE;
            Action::None
        } else {
            let slot = self.slot(&mut st)?;
            let at = self.area.slot(slot);
            // SAFETY: the slot is this request's alone and holds
            // BOUNCE_SIZE > RECV_SIZE >= `len` bytes.
            unsafe {
                std::ptr::copy_nonoverlapping(head.as_ptr(), at, head.len());
                weft_copy::copy_nonoverlapping(payload.as_ptr(), at.add(head.len()), payload.len());
            }
            wr.local_addr = at as u64;
            wr.lkey = self.area.keys().1;
            Action::Free(slot)
        };
        self.post(&mut st, peer, "send", wr, Mode::Quiet, action)?;
        let lane = &mut st.lanes[peer];
        lane.sent += 1;
        lane.sent_upper = Some(upper);
        Ok(())
    }

    fn expose(&self, ptr: *const u8, len: usize) -> Result<u64, TransportError> {
        if self.heap.covers(ptr as u64, len) {
            return Ok(u64::from(self.heap.rkey));
        }
        let mut st = self.state.lock();
        let rkey = register(&mut st, &self.device, ptr.cast_mut(), len)
            .map_err(|e| os("ibv_reg_mr", format!("{len} bytes to expose"), e))?;
        Ok(u64::from(rkey))
    }

    fn unexpose(&self, key: u64) {
        let mut st = self.state.lock();
        if let Ok(rkey) = u32::try_from(key) {
            unregister(&mut st, rkey);
        }
    }

    fn read_remote(
        &self,
        peer: usize,
        addr: u64,
        key: u64,
        dst: &mut [u8],
    ) -> Result<(), TransportError> {
        self.peer(peer)?;
        let rkey = u32::try_from(key).map_err(|_| TransportError::Malformed {
            peer,
            detail: format!("memory key {key:#x} does not fit 32 bits"),
        })?;
        if dst.is_empty() {
            return Ok(());
        }
        self.transfer_sync(
            peer,
            "read",
            device::OP_READ,
            dst.as_mut_ptr(),
            (addr, rkey),
            dst.len(),
        )
    }

    fn event_fd(&self) -> Option<RawFd> {
        Some(self.device.event_fd())
    }

    fn arm(&self) -> Result<(), TransportError> {
        self.device
            .arm()
            .map_err(|e| os("ibv_req_notify_cq", "the completion queues", e))
    }

    fn peer_gone(&self, peer: usize) -> Option<Gone> {
        let p = self.peers.get(peer)?;
        if let Some(process) = &p.process {
            return (!process.alive()).then_some(Gone::Exited);
        }
        if self.left(peer) {
            return Some(Gone::Exited);
        }
        let mut st = self.state.lock();
        // A failure to poll is this device's, not the peer's: the poll of
        // whoever waits reports it.
        if self.reap(&mut st).is_err() {
            return None;
        }
        self.drop_if_unreachable(&mut st, peer);
        let lane = &st.lanes[peer];
        if let Some(f) = &lane.failed {
            return gone(f.status);
        }
        // Nothing in flight expects an answer that would reveal a lost peer:
        // probe it with an empty signaled write, which fails after the retry
        // timeout (or RESPONSE_LIMIT) if nobody answers.
        if lane.records.iter().all(|r| !r.timed)
            && lane
                .last_probe
                .is_none_or(|t| t.elapsed() >= PROBE_INTERVAL)
        {
            st.lanes[peer].last_probe = Some(Instant::now());
            let wr = WorkRequest {
                remote_addr: p.heap_addr,
                rkey: p.heap_rkey,
                opcode: device::OP_WRITE,
                ..Default::default()
            };
            let _ = self.post(&mut st, peer, "probe", wr, Mode::Wait, Action::None);
        }
        None
    }

    fn poll(&self, sink: &mut dyn FnMut(Message<'_>)) -> Result<usize, TransportError> {
        let Some(mut uppers) = self.poll_lock.try_lock() else {
            return Ok(0);
        };
        self.reap(&mut self.state.lock())?;
        let mut wcs = [Completion::default(); 32];
        let n = self
            .device
            .poll(true, &mut wcs)
            .map_err(|e| os("ibv_poll_cq", "receive queue", e))?;
        let mut delivered = 0;
        let mut sources = [0usize; 32];
        let mut result = Ok(());
        for wc in &wcs[..n] {
            let buffer = wc.wr_id as usize;
            if buffer >= self.recv_buffers {
                continue;
            }
            let source = self.qp_owner.get(&wc.qp_num).copied();
            if wc.status == device::WC_SUCCESS && result.is_ok() {
                if let Some(source) = source {
                    let len = wc.byte_len as usize;
                    let split = if len > RECV_SIZE {
                        Err("larger than a receive buffer")
                    } else {
                        // SAFETY: the buffer's completion was just polled
                        // and it is posted again only below.
                        let bytes = unsafe { self.area.received(buffer, len) };
                        unpack(&mut uppers[source], wc, bytes)
                    };
                    match split {
                        Ok((header, payload)) => {
                            sink(Message {
                                source,
                                header,
                                payload,
                            });
                            sources[delivered] = source;
                            delivered += 1;
                        }
                        Err(why) => {
                            result = Err(TransportError::Malformed {
                                peer: source,
                                detail: format!("a {len}-byte message: {why}"),
                            })
                        }
                    }
                }
            }
            let (_, lkey, _) = self.area.keys();
            // SAFETY: the buffer is back in the transport's hands: the sink
            // has returned and nothing refers to it.
            unsafe {
                self.device.post_recv(
                    wc.wr_id,
                    self.area.recv_buffer(buffer),
                    RECV_SIZE as u32,
                    lkey,
                )
            }
            .map_err(|e| os("ibv_post_srq_recv", "a receive buffer", e))?;
        }
        let mut st = self.state.lock();
        for &source in &sources[..delivered] {
            st.lanes[source].consumed += 1;
            self.report_credits(&mut st, source)?;
        }
        result.map(|()| delivered)
    }
}

/// A received message's header and payload. `upper` is the upper half of
/// the last whole header from its source: the header's upper half when the
/// message carries only the lower half as immediate data, and set anew when
/// it carries the whole header.
fn unpack<'a>(
    upper: &mut Option<u32>,
    wc: &Completion,
    bytes: &'a [u8],
) -> Result<(u64, &'a [u8]), &'static str> {
    if wc.with_imm != 0 {
        let upper = upper.ok_or("immediate data before any whole header")?;
        return Ok((u64::from(upper) << 32 | u64::from(wc.imm), bytes));
    }
    if bytes.len() < 8 {
        return Err("shorter than a header");
    }
    let (head, payload) = bytes.split_at(8);
    let header = u64::from_le_bytes(head.try_into().expect("8 bytes"));
    *upper = Some((header >> 32) as u32);
    Ok((header, payload))
}

/// The packet sequence number `from` starts with toward `to`.
fn psn(from: usize, to: usize) -> u32 {
    ((from as u32).wrapping_mul(0x9e37) ^ (to as u32).wrapping_mul(0x79b9)) & 0xff_ffff
}

fn os(call: &'static str, what: impl Into<String>, source: std::io::Error) -> TransportError {
    TransportError::Os {
        call,
        what: what.into(),
        source,
    }
}

/// Registers `ptr..ptr + len`, or counts one more use of the registration
/// of exactly that range; returns its rkey.
fn register(
    st: &mut State,
    device: &Arc<Device>,
    ptr: *mut u8,
    len: usize,
) -> std::io::Result<u32> {
    if let Some(&rkey) = st.by_range.get(&(ptr as u64, len)) {
        st.regs.get_mut(&rkey).expect("indexed").uses += 1;
        return Ok(rkey);
    }
    // SAFETY: the caller's transfer keeps the memory valid until the
    // registration's last use is released, and only the peer the transfer
    // names gets the key.
    let mr = unsafe { device.register(ptr, len)? };
    let rkey = mr.rkey;
    st.by_range.insert((ptr as u64, len), rkey);
    st.regs.insert(rkey, Registration { mr, uses: 1 });
    Ok(rkey)
}

/// Drops one use of registration `rkey`; deregisters it after the last.
fn unregister(st: &mut State, rkey: u32) {
    let Some(r) = st.regs.get_mut(&rkey) else {
        return;
    };
    r.uses -= 1;
    if r.uses == 0 {
        let r = st.regs.remove(&rkey).expect("present");
        st.by_range.remove(&(r.mr.addr, r.mr.len));
    }
}

#[cfg(test)]
mod tests;
