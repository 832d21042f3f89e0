//! Small collectives of the world team on one node, by put-with-signal.
//!
//! When every PE of the job reaches every other by loads and stores (one
//! node, shared memory), a small blocking call of the world team skips the
//! message path: each member writes its block straight into its slot in
//! every member's heap and raises the slot's flag; each member waits for
//! the flags in its own heap and computes its result from the slots. A
//! reduction combines the members' vectors left to right in member order
//! on every member, so every member gets bit-identical results.
//!
//! Every PE's heap begins with a [`Region`]: one *posted* word per sender
//! (in the line of its own index, a PE's *running* word instead, see
//! [`Region::wait`]), a line for the PE's *ledger* and *count* words and a
//! ring of ledger words (see [`Region::vouched`] and [`Region::reached`]),
//! then `K` sets of slots (call `n` uses set `n mod K`), one slot per
//! sender (a PE's slot of its own index in its own heap is its *own*
//! slot, which keeps its header of its recent calls): a flag (the call's
//! number + 1), the sender's stamp of the call, the call's number, and up
//! to [`data_size`] bytes of data. When the PEs do not outnumber the cores, a
//! slot is whole (the data after the header) and `K` is [`data_sets`].
//! When they do (crowded), a slot's header and blocks of up to
//! [`SMALL_INLINE`] bytes lie in its *head*, two lines among the sender's
//! heads of every set, and larger blocks in its data, after every head;
//! there are `K` = [`head_sets`] sets of heads, more than the `D` =
//! [`data_sets`] sets of data (a call that writes data uses set `n mod D`
//! of them), so that a member that only sends runs further ahead of the
//! others in small calls.
//!
//! Call `n` on the flat path:
//! 1. Wait until every member has entered call `n - K + 1`, or `n - D + 1`
//!    if this call's blocks take the slots' data (its flag for that call,
//!    its own slot's, its count word or its posted word says so, or a
//!    later one this PE saw already): it no longer reads the slots this
//!    call writes, last written for call `n - K` (or the data for a call
//!    no later than `n - D`). Check the calls this PE left without waiting
//!    for every member (step 3) as far as the members have entered them,
//!    call `n - K + 1` at the latest: a member that called one
//!    differently, or took it off the flat path, makes call `n` fail once
//!    it has completed. When crowded, a member whose ledger shows that it
//!    called every call so far as this PE did needs no such check.
//! 2. Write the call number and the stamp into this PE's own slot, then
//!    the call number, the stamp and the block each member needs into its
//!    slot, and raise the flag to `n + 1` (a put with signal), by plain
//!    stores through the members' heaps mapped in this process. When
//!    crowded, only into the slots of the members that wait for this PE
//!    in step 3 (and the own slot's flag is raised too): the others read
//!    its own slot on the rare occasions they need its header
//!    ([`Slots::pushes`]).
//! 3. Wait for the members whose blocks this PE needs ([`Waits`]): every
//!    member in the symmetric collectives and at the root of a reduce or
//!    gather, the root only for the other members of a broadcast or
//!    scatter, nobody for the members that only send (the root of a
//!    broadcast or scatter, the others in a reduce or gather), so that
//!    they run ahead as they would with eager messages. A member has
//!    arrived when it has raised its flag for `n`, or posted `n + 1`: it
//!    takes the general path for this call (the call is non-blocking
//!    there, too large, has bad arguments or a forced algorithm), or, once
//!    this PE has waited long, when its own slot shows call `n` with
//!    another stamp (it may not write to this PE then). Exited members
//!    are errors naming them.
//! 4. If a member this PE waited for posted, this PE takes the general
//!    path, which checks the call itself, unless a member left the call on
//!    the flat path already: it would never join the general one, so the
//!    call fails here instead. Otherwise members whose stamp differs
//!    from this PE's fail the call.
//!
//! A reduce or allreduce too large for a slot runs in parts ([`Parts`]),
//! each a call of the steps above under its own number: the call's, then
//! the next ones. Its first part waits for every member, so that every
//! member agrees on the call, and so on how many numbers it takes, before
//! any takes a second; a member that disagrees, or took the call off the
//! flat path, is found there, while every member still counts the call as
//! one.
//!
//! A call that does not take the flat path posts `n + 1` in every member's
//! region and takes the general path; while it runs there, a member that
//! left the call on the flat path fails it too ([`Deserted`]). So a
//! rooted call must be blocking on every member or non-blocking on every
//! member (as MPI requires); the symmetric ones may mix both.

use std::cell::RefCell;
use std::sync::atomic::{fence, AtomicU64, Ordering};

use weft_collectives::op::Combiner;
use weft_collectives::{Collective, Signature};
use weft_transport::{AtomicOp, AtomicWidth, TransportError};

use crate::error::{Cause, Result};
use crate::progress::coll::describe;
use crate::progress::Watch;
use crate::World;

thread_local! {
    /// A member's fold of the members before it, for a reduction on the
    /// flat path that folds it left of its own operand, kept so that calls
    /// allocate nothing.
    static PREFIX: std::cell::Cell<Vec<u64>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Most members of a team on the flat path (the region grows with them).
pub(crate) const MAX_MEMBERS: usize = 64;
/// Largest block one member writes into one slot, whatever the size of
/// the team.
const MAX_DATA: usize = 64 * 1024;
/// Most bytes one member writes in one call, over all slots.
const PUSH_LIMIT: usize = 96 * 1024;
/// Largest vector of a reduce or allreduce that runs on the flat path in
/// parts when it does not fit a slot...
const PARTS_LIMIT: usize = 1 << 20;
/// ...of an allreduce, or a block of an allgather or alltoall, when the
/// PEs outnumber the cores. The general path then waits for peers to be
/// scheduled: a member's rendezvous send is done only once its receiver
/// has run and copied it, where a flat call's writer is done once it has
/// written. At 4 PEs on 2 cores, rounds alternated in one run, in parts
/// against the general path (medians): allgather 0.60x the time at 64 KiB
/// and 0.75-0.77x at 128 KiB; alltoall 0.62x and 0.76-0.79x; allreduce
/// 0.57x and 0.70-0.79x. At 256 KiB, in 15 rounds, allgather 0.98x,
/// alltoall 1.11x, allreduce 1.00x: every block is copied twice in parts,
/// once by cross-memory attach, and from there the second copy costs what
/// the waits do...
const CROWDED_PARTS_LIMIT: usize = 128 << 10;
/// ...and of a broadcast, when the PEs outnumber the cores: the general
/// path's tree waits for its inner members to be scheduled and forward the
/// data, where the root writes every member's parts itself (0.61x the
/// time at 128 KiB, 0.55x at 256 KiB, 15 rounds as above; a 512 KiB
/// broadcast took 169 µs in parts, 158 µs whole)...
const CROWDED_BROADCAST_LIMIT: usize = 256 << 10;
/// ...and most bytes of the others' parts one member folds in such a call
/// (at the root of a reduce, every member in an allreduce), or writes (the
/// root of a broadcast): the general path's trees and rings move fewer
/// through one member in larger teams.
const PARTS_THROUGH_ONE: usize = 3 << 20;
/// Smallest block that the members of a broadcast, allgather or allreduce
/// read from its writer's own slot when the PEs outnumber the cores
/// ([`Slots::pulls`]). At 4 PEs on 2 cores, rounds alternated with the
/// build before (medians of 6): 8 KiB broadcasts took 0.71x the time,
/// allgathers 0.76x and allreduces 0.84x, 32-48 KiB 0.58-1.01x, 128-256
/// KiB broadcasts 0.66-0.75x; 256 B-1 KiB allreduces were 1.06-1.2x.
const PULL_FROM: usize = 4 << 10;
/// Smallest block of an allgather or alltoall that members copy from
/// each other's buffers (cross-memory attach) instead of through the
/// slots or the general path ([`Slots::attaches`]): one copy instead of
/// two, but a second wait for every member. On an Intel Xeon, alternated
/// with the slots (medians of 6), 2 PEs took 0.81-0.91x the time at
/// 32-128 KiB, but a 16 KiB allgather 1.13x...
const ATTACH_BLOCK: usize = 32 << 10;
/// ...and when the PEs outnumber the cores: at 4 PEs on 2 cores 64-128
/// KiB took 0.54-0.71x the time, 16 KiB 1.3-1.7x and 32 KiB 1.04-1.07x.
const CROWDED_ATTACH_BLOCK: usize = 64 << 10;
/// Smallest vector of an allreduce that is attached, when the PEs
/// outnumber the cores (3 numbers: the vectors' addresses, then each
/// member's chunk folded, then whether the reads went well): at 4 PEs on
/// 2 cores, against the general path, 128 KiB took 0.76x the time and
/// 256 KiB-1 MiB 0.93-0.96x; against the slots' parts, 64 KiB 1.16x and
/// 128 KiB 0.98x. Not crowded, the parts win (2 PEs: attached 1.5-2.3x
/// their time at 64 KiB-1 MiB).
const ATTACH_VECTOR: usize = 128 << 10;
/// An attached call's block in every part: one word, the address of the
/// writer's buffer (part 0) or whether its copies failed (later parts).
const ATTACHED_WORD: usize = std::mem::size_of::<u64>();
const LINE: usize = 64;
const PAGE: usize = 4096;
/// Where a slot's call word is: the number of the call it holds, written
/// first, before the stamp and the data.
const CALL: usize = 24;
/// Flag, two stamp words and the call word: the first 32 bytes of a
/// block in the slot's head or whole slot share the header's line.
const HEADER: usize = 32;
/// Bytes of a slot's head when the PEs are crowded: the header and blocks
/// of up to [`SMALL_INLINE`] bytes, in two lines.
const SMALL_HEAD: usize = 2 * LINE;
/// Largest block that a slot's head holds after the header when the PEs
/// are crowded. Small calls so touch only the heads, a few pages: with a
/// slot's data after its header (32 KiB apart at 4 PEs) a call's headers
/// lay in as many pages as it had slots. Larger blocks go to the slots'
/// data, away from their headers: at 2 PEs that made 128-256 B calls take
/// 1.2 times as long, hence whole slots when not crowded.
const SMALL_INLINE: usize = SMALL_HEAD - HEADER;
/// Most sets of slots' data.
const MAX_DATA_SETS: usize = 64;
/// Bytes of slots' data a region holds at most, unless 2 sets need more.
const SETS_BYTES: usize = 5 << 20;
/// Most sets of slots' heads when the PEs are crowded.
const MAX_HEAD_SETS: usize = 256;
/// Bytes of slots' heads a region holds at most, unless the sets of data
/// need more.
const HEADS_BYTES: usize = 1 << 20;
/// Oversubscribed, yields between readings of the flags before waiting
/// through the progress engine.
const YIELDS: usize = 16;
/// Oversubscribed, most spins in one wait while the first member missing
/// runs on another core ([`Region::wait`]). Nearly every wait that spun
/// ended within 8 spins at 4 PEs on 2 cores; the bound limits what a
/// stale running word (its member was preempted, or computes between
/// calls) costs a waiter.
const RUNNING_SPINS: usize = 256;
/// Spins on the flags before waiting through the progress engine.
const SPINS: usize = 256;
/// Largest block written into a slot by ascending 16-byte stores rather
/// than `memcpy`, whose small and medium copies store the block's ends
/// first or twice (overlapping vectors): into lines that another core
/// reads, that cost a line's round trip at 128 B (a 128 B broadcast at 2
/// ranks took 0.20 µs, and 0.12 with ascending stores; 4 KiB 0.43 and
/// 0.35). Above 4 KiB `memcpy`'s wider stores win when the reader is not
/// running at the same time (oversubscribed, 8 KiB and 16 KiB broadcasts
/// at 4 ranks took 15-20% longer with ascending stores).
const FORWARD_LIMIT: usize = 4 * 1024;
/// Largest block whose slot lines a member takes for writing a call ahead
/// ([`claim`]). Each line it does not take costs a round trip to the
/// reader's core on the way of the flag (every store before the flag's
/// must own its line). At 2 PEs on an AMD EPYC (Zen 3), alternating with
/// and without in one run, 512 B-2 KiB allreduces and allgathers took
/// 0.81-0.92 of the time with the claims when a line crossed the cores in
/// 100 ns, and 0.54-0.85 when it took 500 ns; 4 KiB 0.84-0.97; 8 KiB
/// 0.92-1.01; 16 KiB 1.05-1.10, where the claims take longer than the
/// call's own copies hide. The gain depends on the processor: on an
/// Intel host a 512 B broadcast took 0.29 µs with claims, 0.26 without.
const CLAIM_LIMIT: usize = FORWARD_LIMIT;
/// Most lines of a slot fetched ahead of reading it. A member waiting for
/// a slot of at most this many lines also fetches its data lines each time
/// it reads the flag, up or down, so that they arrive with the flag's line
/// instead of after it (the root of a reduce, whose senders run ahead,
/// mostly finds the flags up: at 2 PEs a 64-256 B reduce took 0.40 µs, and
/// 0.30 so); fetching more lines over and over would keep taking them from
/// their writer.
const PREFETCH_LINES: usize = 5;
/// How many calls ahead a member that waits for every member fetches the
/// small slots of the others, which mostly run ahead of the root of a
/// reduce: the flag's line then arrives before it is read (at 2 PEs an
/// 8-256 B reduce took 0.16 µs so, 0.25 without, and 0.18 fetching one
/// call ahead, which is too late). Barrier and allreduce neither gain nor
/// lose by it.
const FETCH_AHEAD: u64 = 2;

/// Bytes at the start of every PE's heap that the flat path of a job of
/// `p` PEs uses (0 when it has too many PEs for it), whole pages, so that
/// the allocator's blocks keep the heap's page alignment.
pub(crate) fn region_size(p: usize) -> usize {
    if p <= MAX_MEMBERS {
        let whole = data_sets(p) * p * slot_size(p);
        let split = head_sets(p) * p * SMALL_HEAD + data_sets(p) * p * data_size(p);
        (heads_at(p) + whole.max(split)).next_multiple_of(PAGE)
    } else {
        0
    }
}

/// Where the slots begin in a region of `p` members: after a line of
/// posted words per member, the line of the region's owner's ledger and
/// count words and its ledger ring ([`Region::settle`]).
fn heads_at(p: usize) -> usize {
    (p + 1) * LINE + MAX_HEAD_SETS * 8
}

/// How many sets of slots' data a region of `p` members has: calls whose
/// blocks do not fit a slot's head use them in turn, so a member may run
/// `data_sets - 1` such calls ahead of the slowest (and as many calls of
/// any size when not crowded, where slots are whole). As many as fit in
/// [`SETS_BYTES`], at least 2 and at most [`MAX_DATA_SETS`], and a power
/// of two, so that a call's set is a mask of its number.
fn data_sets(p: usize) -> usize {
    let fit = (SETS_BYTES / (p.max(1) * data_size(p))).clamp(2, MAX_DATA_SETS);
    1 << fit.ilog2()
}

/// How many sets of slots' heads a crowded region of `p` members has:
/// every call uses them in turn, so that a member may run `head_sets - 1`
/// calls whose blocks fit the heads ahead of the slowest. As many as fit
/// in [`HEADS_BYTES`], at least [`data_sets`] and at most
/// [`MAX_HEAD_SETS`], a power of two. A member that only sends (the root
/// of a broadcast) runs ahead until it must wait for the slowest to be
/// scheduled again: in ten runs each, alternated, a loop of 8 B
/// broadcasts at 4 PEs on 2 cores took 0.26-0.27 µs a call in most runs
/// with 256 sets of heads, against 0.37-0.48 µs with 32 sets of whole
/// slots (Open MPI's took 0.35-0.59 µs there).
fn head_sets(p: usize) -> usize {
    let fit = (HEADS_BYTES / (p.max(1) * SMALL_HEAD)).clamp(data_sets(p), MAX_HEAD_SETS);
    1 << fit.ilog2()
}

/// Bytes of a whole slot, header and data, when the PEs do not outnumber
/// the cores.
fn slot_size(p: usize) -> usize {
    (HEADER + data_size(p)).next_multiple_of(LINE)
}

/// Largest block one member writes into one slot in a region of `p`
/// members: what it may write to each of the others in one call
/// ([`PUSH_LIMIT`]), at most [`MAX_DATA`], in whole lines.
fn data_size(p: usize) -> usize {
    (PUSH_LIMIT / p.saturating_sub(1).max(1)).min(MAX_DATA) / LINE * LINE
}

/// One call's arguments on the flat path.
pub(crate) struct Call<'a> {
    pub(crate) op: &'static str,
    /// The call's number in the team (0, 1, ...).
    pub(crate) n: u64,
    /// The whole call's signature.
    pub(crate) sig: &'a Signature,
    /// Which of the call's [`Parts`] this is (0 for a call in one part).
    pub(crate) part: usize,
    /// Bytes of this part's block or vector.
    pub(crate) bytes: usize,
    /// Where this part starts in the vector, or in each block (0 for a
    /// call in one part).
    pub(crate) at: usize,
    /// The call's input and output, whole.
    pub(crate) input: &'a [u8],
    pub(crate) output: &'a mut [u8],
    /// The reduction's, for the reducing collectives.
    pub(crate) combiner: Option<&'a Combiner>,
}

impl Call<'_> {
    /// Where this part is in block `k` of the input or output: blocks are
    /// the call's size apart (`k` is 0 for a vector).
    fn piece(&self) -> impl Fn(usize) -> std::ops::Range<usize> {
        let (stride, at, len) = (self.sig.bytes, self.at, self.bytes);
        move |k| k * stride + at..k * stride + at + len
    }
}

/// How a call is cut for the flat path ([`Region::parts`]): into `count`
/// parts of `chunk` bytes of its vector, the last one shorter, which take
/// the call's number and the `count - 1` next ones.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Parts {
    pub(crate) count: usize,
    chunk: usize,
    bytes: usize,
    /// How its blocks travel.
    pub(crate) carry: Carry,
}

/// How a call's blocks travel between its members on the flat path.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Carry {
    /// Each writer copies its blocks into the slots of the members that
    /// need them, in their heaps.
    Pushed,
    /// Each writer copies its block once into its own slot, in its own
    /// heap, and the members copy it from there ([`Slots::pulls`]); the
    /// headers are pushed.
    Pulled,
    /// The members copy each other's blocks straight out of their buffers
    /// (cross-memory attach, [`Slots::attaches`]): part 0 passes the
    /// buffers' addresses and each member copies what it needs (an
    /// allreduce folds its chunk, and reads the others' folded chunks in
    /// part 1); the last part says whether every copy went well. Every
    /// part waits for every member.
    Attached,
}

impl Parts {
    /// Where part `k` is in the call's vector (a word, for both parts of
    /// an attached call).
    pub(crate) fn range(&self, k: usize) -> std::ops::Range<usize> {
        if self.carry == Carry::Attached {
            return 0..ATTACHED_WORD;
        }
        let start = k * self.chunk;
        start..(start + self.chunk).min(self.bytes)
    }
}

/// Whom a member waits for in a call once it has written its blocks.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Waits {
    /// Every other member: it needs all their blocks, or none (barrier).
    Everyone,
    /// The root, whose block is all it needs.
    Root,
    /// Nobody: it only sends.
    Nobody,
}

/// Whom `member` waits for in a call of `sig`.
fn waits(sig: &Signature, member: usize) -> Waits {
    let root = member == sig.root;
    match sig.collective {
        Collective::Broadcast | Collective::Scatter if root => Waits::Nobody,
        Collective::Broadcast | Collective::Scatter => Waits::Root,
        Collective::Reduce | Collective::Gather if !root => Waits::Nobody,
        _ => Waits::Everyone,
    }
}

/// What was wrong with earlier calls that this PE left without waiting
/// for every member, if anything: boxed, so that the calls' results, which
/// it is part of, stay two words and pass in registers. Results moved
/// through memory in pieces made the next call's loads of them wait for
/// this PE's stores to the others' heaps (store forwarding fails).
pub(crate) type Late = Option<Box<Cause>>;

/// The outcome of a call on the flat path.
pub(crate) struct Outcome {
    /// Whether the call is done; if not, this PE takes the general path.
    pub(crate) done: bool,
    /// What was wrong with the previous call, which this PE left without
    /// waiting for every member: to report once this call has completed.
    pub(crate) late: Late,
}

/// The world team's flat region as this PE sees it: its own heap, where
/// the others' slots are.
pub(crate) struct Region {
    slots: Slots,
    /// Per set of slots' heads: the number + 1 of the call this PE left
    /// there without waiting for every member (0: none)...
    early: Box<[AtomicU64]>,
    /// ...and the members whose part in it is still to be checked.
    unchecked: Box<[AtomicU64]>,
    /// How many sets' `unchecked` are not empty.
    pending: AtomicU64,
    /// Per member: the number + 1 of the latest call this PE knows it has
    /// entered, so that step 1 reads its flags only when that is too old.
    entered: [AtomicU64; MAX_MEMBERS],
    /// This PE's chain of its calls ([`Region::settle`]), and the number of
    /// calls it holds...
    chain: AtomicU64,
    settled: AtomicU64,
    /// Per member: how many of its first calls this PE knows it called as
    /// this PE did, and how many calls this PE must have settled before
    /// it reads the member's ledger word again ([`Region::vouched`]).
    agreed: [AtomicU64; MAX_MEMBERS],
    retry: [AtomicU64; MAX_MEMBERS],
    /// Whether the processor takes lines for writing ahead of the stores
    /// ([`claim`]).
    claims: bool,
}

/// The slots of a flat region (copied into general runs, which watch them).
#[derive(Clone, Copy)]
struct Slots {
    /// Address of this PE's heap (an address keeps the world `Send`).
    heap: usize,
    /// Whether the node's PEs outnumber its cores (as the engine is told
    /// too): waits then yield ([`Region::wait`]), members keep chains
    /// ([`Region::vouched`]) and write their slot of a call only into the
    /// heaps of the members that wait for it ([`Slots::pushes`]), the
    /// others reading it in the writer's own slot.
    crowded: bool,
    /// Whether members may read each other's memory (cross-memory attach)
    /// for large blocks ([`Slots::attaches`]).
    attach: bool,
    p: usize,
    me: usize,
    sets: usize,
    /// Sets of slots' data ([`data_sets`]).
    data_sets: usize,
    /// Bytes from a slot's head to the next set's of the same sender, and
    /// to the next sender's of the same set ([`Slots::slot_at`]).
    set_stride: usize,
    sender_stride: usize,
    /// Bytes of the largest block a slot's head holds after the header.
    inline: usize,
    /// Where the slots' heads begin ([`heads_at`]).
    heads_at: usize,
    /// Where the slots' data begin, after every slot's head.
    tail: usize,
    /// Bytes of a slot's data ([`data_size`]).
    data: usize,
    /// Where every member's heap is mapped in this process (this PE's own
    /// included), for writing into their regions and reading their own
    /// slots.
    peers: [usize; MAX_MEMBERS],
}

/// Watches, in a call that took the general path, for members that left
/// it on the flat path: they would never join the general one.
#[derive(Clone, Copy)]
pub(crate) struct Deserted {
    slots: Slots,
    n: u64,
}

impl Deserted {
    /// Why the call cannot complete, if a member left it on the flat path.
    pub(crate) fn check(&self) -> Option<Cause> {
        let n = self.n;
        let (j, theirs) = self.slots.leaver(n)?;
        Some(Cause::Mismatch(format!(
            "PE {j} called {} blocking and left it (call {n} of the world team), where this \
             PE took the call non-blocking or with other arguments; a rooted collective must \
             be blocking on every member or non-blocking on every member",
            theirs.describe()
        )))
    }
}

impl Region {
    /// The region of PE `me` of `p` members whose heaps are mapped at
    /// `peers` (its own at `peers[me]`). Each heap must hold
    /// [`region_size`]`(p)` bytes, stay mapped as long as the region is
    /// used, and be written at these offsets only by this module. Every
    /// member must say the same of whether the node's PEs are `crowded`
    /// (outnumber its cores).
    pub(crate) fn new(peers: &[usize], me: usize, crowded: bool, attach: bool) -> Region {
        let p = peers.len();
        assert!(p <= MAX_MEMBERS && me < p);
        let (heads, head, inline) = if crowded {
            (head_sets(p), SMALL_HEAD, SMALL_INLINE)
        } else {
            (data_sets(p), slot_size(p), data_size(p))
        };
        Region {
            slots: Slots {
                heap: peers[me],
                peers: std::array::from_fn(|j| peers.get(j).copied().unwrap_or(0)),
                crowded,
                attach,
                p,
                me,
                sets: heads,
                data_sets: data_sets(p),
                set_stride: if crowded { head } else { p * head },
                sender_stride: if crowded { heads * head } else { head },
                inline,
                heads_at: heads_at(p),
                tail: heads_at(p) + heads * p * head,
                data: data_size(p),
            },
            early: (0..heads).map(|_| AtomicU64::new(0)).collect(),
            unchecked: (0..heads).map(|_| AtomicU64::new(0)).collect(),
            pending: AtomicU64::new(0),
            entered: std::array::from_fn(|_| AtomicU64::new(0)),
            chain: AtomicU64::new(0),
            settled: AtomicU64::new(0),
            agreed: std::array::from_fn(|_| AtomicU64::new(0)),
            retry: std::array::from_fn(|_| AtomicU64::new(0)),
            claims: claims(),
        }
    }

    /// How a call of `sig` runs on the flat path, if it does: attached (an
    /// allgather or alltoall of blocks from [`ATTACH_BLOCK`], or
    /// [`CROWDED_ATTACH_BLOCK`], and when crowded an allreduce from
    /// [`ATTACH_VECTOR`], if the members may read each other's memory:
    /// [`Carry::Attached`]); in one part when its blocks fit a slot, pulled
    /// when crowded from [`PULL_FROM`] ([`Carry::Pulled`]); a larger reduce, an allreduce unless the
    /// PEs are `crowded` (more than the cores), and when they are a
    /// broadcast, an allreduce, an allgather or an alltoall, in parts of
    /// whole elements that do, each a call of its own number (an element's
    /// result depends on that element alone; part `k` of an allgather or
    /// alltoall is the same bytes of every block), up to [`PARTS_LIMIT`]
    /// (or [`CROWDED_PARTS_LIMIT`], [`CROWDED_BROADCAST_LIMIT`]) and
    /// [`PARTS_THROUGH_ONE`].
    ///
    /// An allgather's or alltoall's blocks are copied twice on the flat
    /// path (into the slot, out of it) against once by the general path's
    /// cross-memory attach, and no member runs ahead to hide it, so which
    /// is faster depends on the host. On an Intel host a 64 KiB allgather
    /// at 2 PEs took 9.5-9.7 µs flat and 7.0-8.0 on the general path. On
    /// an AMD EPYC (Zen 3, Linux 6.18), alternated in one run, it took 5.6
    /// µs flat against 10.0 (medians of 56 runs; an alltoall 6.3 against
    /// 11.1 in 8) while a line crossed the two cores in 100 ns, where the
    /// attach spent longer pinning the pages than copying them, but 16-17
    /// µs against 11-13 in the 4 runs where it took 400-500 ns: flat, every
    /// line crosses twice, where the attach read blocks that had not
    /// changed since the last call from its own cache. So blocks that fit
    /// a slot take the flat path, and larger ones keep the general path
    /// when not crowded: in parts, 128 KiB-1 MiB allgathers took
    /// 0.56-0.83x its time in the fast placement, 1.8-2.1x in the slow
    /// one. A broadcast's tree
    /// forwards the data while the root's next call starts (at 2 PEs a
    /// 256 KiB broadcast took 27 µs in parts, 22 µs whole). Crowded, the
    /// general path waits for members to be scheduled at every step: a
    /// 64 KiB broadcast took 19 µs in parts at 4 PEs on 2 cores, 42 µs
    /// whole (see [`CROWDED_PARTS_LIMIT`] and [`CROWDED_BROADCAST_LIMIT`]).
    pub(crate) fn parts(&self, sig: &Signature, crowded: bool) -> Option<Parts> {
        let s = &self.slots;
        let stamped =
            sig.root <= 0xff && u32::try_from(sig.elem).is_ok() && u32::try_from(sig.bytes).is_ok();
        if !stamped {
            return None;
        }
        // Blocks larger than a slot, or large enough to be pulled or
        // attached, are for `larger_parts`, out of the way of the small
        // calls, whose path takes this inlined: with those tests in it, the
        // path grew until the compiler made calls of its helpers, and 2-PE
        // 8 B broadcasts took 1.1x the time.
        let pushed_whole = s.data.min(if crowded {
            PULL_FROM - 1
        } else {
            ATTACH_BLOCK - 1
        });
        if sig.bytes > pushed_whole {
            return self.larger_parts(sig, crowded);
        }
        Some(Parts {
            count: 1,
            chunk: sig.bytes,
            bytes: sig.bytes,
            carry: Carry::Pushed,
        })
    }

    /// [`Region::parts`] of a call whose blocks exceed a slot, or may be
    /// pulled or attached.
    #[inline(never)]
    fn larger_parts(&self, sig: &Signature, crowded: bool) -> Option<Parts> {
        let s = &self.slots;
        if sig.bytes >= ATTACH_BLOCK && s.attaches(sig) {
            return Some(Parts {
                count: if sig.collective == Collective::Allreduce {
                    3
                } else {
                    2
                },
                chunk: 0,
                bytes: sig.bytes,
                carry: Carry::Attached,
            });
        }
        let carry = if s.pulls(sig, sig.bytes.min(s.data)) {
            Carry::Pulled
        } else {
            Carry::Pushed
        };
        if sig.bytes <= s.data {
            return Some(Parts {
                count: 1,
                chunk: sig.bytes,
                bytes: sig.bytes,
                carry,
            });
        }
        let limit = match sig.collective {
            Collective::Reduce => PARTS_LIMIT,
            Collective::Allreduce if !crowded => PARTS_LIMIT,
            Collective::Broadcast if crowded => CROWDED_BROADCAST_LIMIT,
            Collective::Allreduce | Collective::Allgather | Collective::Alltoall if crowded => {
                CROWDED_PARTS_LIMIT
            }
            _ => 0,
        };
        let chunk = s.data / sig.elem.max(1) * sig.elem;
        let small = sig.bytes <= limit && sig.bytes * (s.p - 1) <= PARTS_THROUGH_ONE;
        (small && chunk > 0).then(|| Parts {
            count: sig.bytes.div_ceil(chunk),
            chunk,
            bytes: sig.bytes,
            carry,
        })
    }

    /// The watch of call `n` for when it takes the general path.
    pub(crate) fn deserted(&self, n: u64) -> Deserted {
        Deserted {
            slots: self.slots,
            n,
        }
    }

    /// What was wrong with the calls before call `n` that this PE left
    /// without waiting for every member, as far as the members that have
    /// entered them tell, for a call that takes the general path.
    pub(crate) fn recent(&self, n: u64) -> Late {
        self.review(n.saturating_sub(self.slots.sets as u64 - 1)..n)
    }

    /// Tells every member that call `n` takes the general path.
    pub(crate) fn post(&self, world: &World, op: &'static str, n: u64) -> Result<()> {
        let s = &self.slots;
        for j in (0..s.p).filter(|&j| j != s.me) {
            world
                .atomic_lane(op, j)?
                .atomic(
                    j,
                    s.posted_at(s.me),
                    AtomicWidth::W64,
                    AtomicOp::Swap(n + 1),
                )
                .map_err(|e| world.error(op, e.into()))?;
        }
        self.settle(n, &GENERAL);
        Ok(())
    }

    /// Adds call `n` to this PE's chain, as `token`: the call's stamp if
    /// this PE completed it on the flat path, [`GENERAL`] if it took it to
    /// the general path. Every member of a program whose calls agree
    /// settles the same tokens call after call (a member that posts a
    /// call or finds one posted takes the general path, and so do all
    /// the others), so their chains are equal; a call that failed is not
    /// settled, and the chains part for good. The ledger word, in this
    /// PE's region, tells the others how far it is ([`Region::vouched`]).
    fn settle(&self, n: u64, token: &[u64; 2]) {
        if !self.slots.crowded {
            return;
        }
        let chain = fold(self.chain.load(Ordering::Relaxed), token);
        self.chain.store(chain, Ordering::Relaxed);
        self.settled.store(n + 1, Ordering::Relaxed);
        let word = ledger_word(chain, n + 1);
        self.ring(self.slots.me, n).store(word, Ordering::Relaxed);
        self.ledger(self.slots.me).store(word, Ordering::Relaxed);
        self.count(self.slots.me).store(n + 1, Ordering::Release);
    }

    /// Member `j`'s count word: the number + 1 of the latest call it
    /// settled, stored after it last read that call's slots, when crowded.
    /// Beside its ledger word, in its own region, written by it alone.
    fn count(&self, j: usize) -> &AtomicU64 {
        let s = &self.slots;
        s.word_in(s.peers[j], s.ledger_at() + 8)
    }

    /// Member `j`'s ledger ring's word of call `n`: its ledger word when it
    /// settled that call. In its own region, written by it alone.
    fn ring(&self, j: usize, n: u64) -> &AtomicU64 {
        let s = &self.slots;
        s.word_in(s.peers[j], s.ring_at(n))
    }

    /// Member `j`'s ledger word: the low 16 bits of how many calls it has
    /// settled, the chain's upper 48 bits. In its own region, written by
    /// it alone.
    fn ledger(&self, j: usize) -> &AtomicU64 {
        let s = &self.slots;
        s.word_in(s.peers[j], s.ledger_at())
    }

    /// Whether member `j` called calls `0..=m` as this PE did, as their
    /// chains say ([`Region::settle`]): then its slots of those calls need
    /// no review. Reads its ledger word unless an earlier reading covers
    /// `m`, and compares it with this PE's ring word of the same call (or,
    /// if the member is further on, its ring word of this PE's latest
    /// call); false, and not read again for [`RETRY_AFTER`] calls, when
    /// the member has not settled `m` yet or their chains differ: the
    /// slots tell then. Only when crowded (the PEs outnumber the cores),
    /// where a member that only sends runs up to 255 calls ahead: one
    /// read then covers the calls a member made since the last, where
    /// reviewing slot by slot read a line per member and call (the
    /// member's stamp, which nothing else reads when a broadcast's
    /// receivers or a reduce's senders check each other), and its writer
    /// took the line back for its next call of that set. See
    /// `docs/ARCHITECTURE.md` for what it gained.
    fn vouched(&self, j: usize, m: u64) -> bool {
        let known = &self.agreed[j];
        if known.load(Ordering::Relaxed) > m {
            return true;
        }
        if !self.slots.crowded {
            return false;
        }
        let settled = self.settled.load(Ordering::Relaxed);
        let retry = &self.retry[j];
        if settled < retry.load(Ordering::Relaxed) {
            return false;
        }
        let word = self.ledger(j).load(Ordering::Relaxed);
        let count = ledger_count(word, settled);
        // Their latest call, or this PE's if theirs is later: its ring
        // word there is still that call's (members are less than a round
        // of sets apart), or holds another count if not.
        let through = count.min(settled);
        let theirs = || {
            if count > settled {
                self.ring(j, through - 1).load(Ordering::Relaxed)
            } else {
                word
            }
        };
        let mine = || {
            self.ring(self.slots.me, through - 1)
                .load(Ordering::Relaxed)
        };
        if through > m && theirs() == mine() {
            if through > known.load(Ordering::Relaxed) {
                known.store(through, Ordering::Relaxed);
            }
            return true;
        }
        // Not settled that far yet (or called otherwise): the slots tell,
        // and the ledger is read again some calls later.
        retry.store(settled + RETRY_AFTER, Ordering::Relaxed);
        false
    }

    /// Checks the calls `calls` (among the last `sets - 1` before this
    /// PE's current one) that this PE left without waiting for every
    /// member, for the members that have entered them since: what was
    /// wrong with one of them, if anything.
    #[inline(always)]
    fn review(&self, calls: std::ops::Range<u64>) -> Late {
        if self.pending.load(Ordering::Relaxed) == 0 {
            return None;
        }
        self.review_pending(calls)
    }

    /// [`Region::review`] when some call is still to check, out of the way
    /// of the calls that have none (a broadcast's receivers, every member
    /// of the symmetric collectives).
    #[inline(never)]
    fn review_pending(&self, calls: std::ops::Range<u64>) -> Late {
        let s = &self.slots;
        let mut found = None;
        for m in calls {
            let set = s.set(m);
            if self.unchecked[set].load(Ordering::Relaxed) == 0
                || self.early[set].load(Ordering::Relaxed) != m + 1
            {
                continue;
            }
            let mut unchecked = self.unchecked[set].load(Ordering::Relaxed);
            for j in 0..s.p {
                if unchecked & 1 << j != 0 && self.vouched(j, m) {
                    unchecked &= !(1 << j);
                }
            }
            let (unchecked, cause) = if unchecked == 0 {
                (0, None)
            } else {
                s.review(m, unchecked)
            };
            self.keep(set, unchecked);
            found = found.or(cause);
        }
        found
    }

    /// Sets the members of `set`'s early call still to check. Plain loads
    /// and stores, as in [`Region::saw`].
    #[inline(always)]
    fn keep(&self, set: usize, unchecked: u64) {
        let was = self.unchecked[set].load(Ordering::Relaxed) != 0;
        self.unchecked[set].store(unchecked, Ordering::Relaxed);
        let pending = self.pending.load(Ordering::Relaxed) + u64::from(unchecked != 0);
        self.pending
            .store(pending - u64::from(was), Ordering::Relaxed);
    }

    /// Waits until every other member (or `only` that one) satisfies
    /// `arrived`, watching those that do not for exits. `arrived`'s second
    /// argument says whether the wait has gone past its spins and yields
    /// (it waits through the engine then), where a member's own slot is
    /// worth reading too ([`Slots::arrived`]).
    ///
    /// Not oversubscribed, it spins on the flags. Oversubscribed, it
    /// yields, so that the core goes to the member waited for, except that
    /// with `spin` (a wait for the others' blocks of the current call) it
    /// spins while the first member missing runs on another core: its
    /// blocks are then on their way. Each member's running word says which
    /// core it runs on, and it clears the word before it yields. Yielding
    /// at every reading, at 4 PEs on 2 cores, a member often handed its
    /// core to the other PE there, which was waiting for the same two PEs
    /// of the other core and handed it back at once: alternated in one run
    /// (medians of 8 runs), 8 B alltoalls, allreduces, barriers and
    /// allgathers took 0.77-0.83x the time so, with 2.3 context switches
    /// a call instead of 2.8-2.9, and 1 KiB ones 0.85-0.88x; 16-64 KiB
    /// calls did not change. A wait for free slots (step 1) or for a
    /// broadcast's root does not spin: the member waited for then has
    /// calls to catch up on, not one store to make (spinning there, 16 KiB
    /// reduces took 1.10-1.13x the time, 4-PE 8 B broadcasts 1.24x).
    #[inline(always)]
    fn wait(
        &self,
        world: &World,
        op: &'static str,
        only: Option<usize>,
        spin: bool,
        mut arrived: impl FnMut(usize, bool) -> bool,
    ) -> Result<()> {
        let (p, me) = (self.slots.p, self.slots.me);
        // `only` as a plain word: an `Option` spilled and reloaded whole in
        // the loop below cannot be forwarded from the store buffer.
        let only = only.unwrap_or(usize::MAX);
        if self.slots.crowded {
            if self.yield_for(only, spin, &mut arrived) {
                return Ok(());
            }
        } else {
            // The members waited for, by a plain loop: through iterators
            // each reading took 15-35 instructions more
            // (`benches/call_instructions.sh`).
            let (from, to) = if only == usize::MAX {
                (0, p)
            } else {
                (only, only + 1)
            };
            for _ in 0..SPINS {
                let mut j = from;
                while j < to && (j == me || arrived(j, false)) {
                    j += 1;
                }
                if j == to {
                    return Ok(());
                }
                std::hint::spin_loop();
            }
        }
        // A closure of its own: given `arrived` itself, the compiler made
        // one copy of it for both and called it from the spins above.
        self.wait_long(world, op, only, &mut |j, pull| arrived(j, pull))
    }

    /// What is wrong with call `n`, which this PE called as `stamp`, once
    /// every member has written its slot and some wrote another stamp,
    /// `first` the lowest of them: the members whose stamps differ, and
    /// what they called. Out of the calls' path, which only looks for
    /// `first`: with the list of them collected in every call, alternated
    /// process by process (16 rounds), 2-PE 8 B reduces took 1.13-1.22x
    /// the time.
    #[cold]
    #[inline(never)]
    fn mismatch(&self, n: u64, stamp: &Stamp, first: usize) -> Cause {
        let s = &self.slots;
        let mut differ = vec![(first, s.current(n, first))];
        differ.extend(
            (first + 1..s.p)
                .filter(|&j| j != s.me)
                .map(|j| (j, s.current(n, j)))
                .filter(|(_, theirs)| *theirs != Some(*stamp)),
        );
        Cause::Mismatch(differ_text(n, stamp, &differ))
    }

    /// The oversubscribed part of a [`Region::wait`]: reads the flags,
    /// spinning while the first member missing runs on another core (with
    /// `spin`) and yielding otherwise, [`YIELDS`] times at most; whether
    /// every member waited for (`only`, or all others if `usize::MAX`) has
    /// arrived. Inlined: called, at 4 PEs on 2 cores, 8 B allreduces and
    /// broadcasts took 1.04-1.10x the time.
    #[inline(always)]
    fn yield_for(
        &self,
        only: usize,
        spin: bool,
        arrived: &mut impl FnMut(usize, bool) -> bool,
    ) -> bool {
        let (p, me) = (self.slots.p, self.slots.me);
        let mine = self.running(me);
        let mut core = processor();
        mine.store(core, Ordering::Relaxed);
        let (mut yields, mut spins) = (0, 0);
        while yields < YIELDS {
            let missing = (0..p).find(|&j| awaited(j, me, only) && !arrived(j, false));
            let Some(j) = missing else {
                return true;
            };
            // Their running word is read only by a wait that may spin.
            let elsewhere = || {
                let theirs = self.running(j).load(Ordering::Relaxed);
                theirs != 0 && theirs != core
            };
            if spin && spins < RUNNING_SPINS && elsewhere() {
                spins += 1;
                std::hint::spin_loop();
                continue;
            }
            mine.store(0, Ordering::Relaxed);
            std::thread::yield_now();
            core = processor();
            mine.store(core, Ordering::Relaxed);
            yields += 1;
        }
        // The engine yields and sleeps without saying so.
        mine.store(0, Ordering::Relaxed);
        false
    }

    /// The rest of a [`Region::wait`] that its spins or yields did not
    /// end: through the engine, which watches the members waited for
    /// (`only`, or all others if `usize::MAX`) for exits. Out of the
    /// waits' inlined code, so that they do not set up what this needs
    /// in every call (2-PE 8 B broadcasts: 17 instructions fewer at the
    /// root, 28 at the receiver; reduces 0.93x the time).
    #[cold]
    #[inline(never)]
    fn wait_long(
        &self,
        world: &World,
        op: &'static str,
        only: usize,
        arrived: &mut dyn FnMut(usize, bool) -> bool,
    ) -> Result<()> {
        let (p, me) = (self.slots.p, self.slots.me);
        let waiting = RefCell::new(Vec::new());
        let waited = world
            .engine()
            .wait_memory(op, Watch::Listed(&waiting), |_| {
                let mut w = waiting.borrow_mut();
                w.clear();
                w.extend((0..p).filter(|&j| awaited(j, me, only) && !arrived(j, true)));
                w.is_empty().then_some(Ok(()))
            });
        if self.slots.crowded {
            self.running(me).store(processor(), Ordering::Relaxed);
        }
        waited
    }

    /// Member `j`'s running word: the core it runs on + 1 while it runs
    /// on the flat path, 0 while it yields or sleeps there (or has never
    /// waited there). In member `j`'s own region, in the line of its own
    /// posted word, which nobody writes (a PE posts only to the others);
    /// written only when the PEs outnumber the cores.
    fn running(&self, j: usize) -> &AtomicU64 {
        let s = &self.slots;
        s.word_in(s.peers[j], s.posted_at(j) + 8)
    }

    /// Whether member `j` has entered call `n` or a later one, either way,
    /// as this PE knows or its count word, flags and posted word say. When
    /// crowded, the count word comes first: one reading there covers every
    /// call the member has made since, where its flags tell of one call
    /// each (and it writes no flag into this PE's heap in calls where this
    /// PE does not wait for it, [`Slots::pushes`]). A member that failed a
    /// call has not settled it, and its flags tell then.
    #[inline(always)]
    fn reached(&self, n: u64, j: usize) -> bool {
        if self.entered[j].load(Ordering::Relaxed) > n {
            return true;
        }
        if self.slots.crowded {
            let count = self.count(j).load(Ordering::Acquire);
            self.saw(j, count);
            if count > n {
                return true;
            }
        }
        let s = &self.slots;
        let (_, flag) = s.header(n, j);
        let posted = s.word(s.posted_at(j)).load(Ordering::Acquire);
        self.saw(j, flag.max(posted));
        flag > n || posted > n
    }

    /// Notes that member `j` has entered the call numbered `mark - 1`. A
    /// plain load and store, not a locked read-modify-write, which would
    /// wait for this PE's stores to the others' heaps: two threads may
    /// race here, and the loser leaves a smaller mark, which is still true.
    fn saw(&self, j: usize, mark: u64) {
        let known = &self.entered[j];
        if known.load(Ordering::Relaxed) < mark {
            known.store(mark, Ordering::Relaxed);
        }
    }

    /// Writes this PE's slot for call `n` into member `j`'s heap, stores
    /// alone, back to back, so that each line moves once: first the block
    /// past the header's line (in the head's second line, or the slot's
    /// data), then the header's line in one burst (a member waiting reads
    /// it over and over): the call word, so that a reader of an older
    /// call's stamp there sees it change (`Slots::stamp`), the stamp, the
    /// block's start if the head holds it, and the flag, with release
    /// ordering (a put with signal).
    fn push(&self, j: usize, n: u64, stamp: &Stamp, block: &[u8]) {
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

    /// Runs call `c` on the flat path, its blocks pushed ([`Carry::Pushed`]).
    #[inline(always)]
    pub(crate) fn run(&self, world: &World, c: Call<'_>) -> Result<Outcome> {
        self.run_with(world, c, None, false)
    }

    /// Runs part `c.part` of a call whose blocks travel as `carry` says,
    /// not pushed: what goes wrong with an attached call's copies, on this
    /// PE or another, is put in `failed`; a pulled call's last part short
    /// enough for the slots' heads is pushed ([`Slots::pulls`]).
    #[inline(never)]
    pub(crate) fn run_carried(
        &self,
        world: &World,
        c: Call<'_>,
        carry: Carry,
        failed: &mut Option<Cause>,
    ) -> Result<Outcome> {
        let attach = (carry == Carry::Attached).then_some(failed);
        let pulled = carry == Carry::Pulled && self.slots.pulls(c.sig, c.bytes);
        self.run_with(world, c, attach, pulled)
    }

    /// Runs call `c`, with `attach` for the parts of an attached call, and
    /// `pulled` if its members read its blocks from their writers' own
    /// slots ([`Region::run_carried`]). Pushed calls pass `None` and
    /// `false` as constants, so that their inlined copy has no branch for
    /// them: 2-PE 8 B allreduces took 1.07-1.09x the time with attached
    /// calls in the same inlined copy, 8 B broadcasts 1.15x with pulled
    /// ones; and the calls they make are inlined in it ([`Slots::lines`],
    /// [`Region::keep`], [`Slots::stamp`]), where a third copy of this
    /// function had made them calls (1.1x).
    #[inline(always)]
    fn run_with(
        &self,
        world: &World,
        c: Call<'_>,
        attach: Option<&mut Option<Cause>>,
        pulled: bool,
    ) -> Result<Outcome> {
        let s = &self.slots;
        let (p, me, n) = (s.p, s.me, c.n);
        // The oldest call whose slots may still be read: every member has
        // entered it once step 1 is done, and it is checked then at the
        // latest. A call whose blocks take the slots' data waits for a
        // later one, as there are fewer sets of data than of heads.
        let oldest = n.saturating_sub(s.sets as u64 - 1);
        let ahead = if c.bytes > s.inline {
            s.data_sets
        } else {
            s.sets
        } as u64
            - 1;
        if n >= ahead {
            let awaited = n - ahead;
            self.wait(world, c.op, None, false, |j, _| self.reached(awaited, j))?;
            // A member this PE runs ahead of is likely to have entered the
            // next call's awaited one by then: its flag is fetched meanwhile.
            for j in (0..p).filter(|&j| j != me) {
                if self.entered[j].load(Ordering::Relaxed) <= awaited + 1 {
                    s.prefetch(awaited + 1, j, 0, 0);
                }
            }
        }
        let mut late = self.review(oldest..oldest + 1);
        let sig = c.sig;
        let stamp = Stamp::new(sig, c.part);
        // This PE's own slot keeps its header, for the checks of `review`
        // and for the members it does not write its slot to.
        let at = s.slot_at(n, me);
        s.write_stamp(s.heap, at, n, &stamp);
        if s.crowded {
            s.word(at).store(n + 1, Ordering::Release);
        }
        let role = s.waits(sig, c.part, me);
        // An attached call's block is a word: the address in this PE's
        // process of its input, or of its vector (an allreduce's, in place
        // in the output), in part 0; whether a copy failed in later parts.
        let word = attach.as_ref().map(|failed| {
            let w = match (c.part, sig.collective) {
                (0, Collective::Allreduce) => c.output.as_ptr() as u64,
                (0, _) => c.input.as_ptr() as u64,
                _ => u64::from(failed.is_some()),
            };
            w.to_ne_bytes()
        });
        // A block the members pull from this PE's own slot is written there
        // once, before the flags that announce it.
        if pulled {
            let next = (me + 1) % p;
            if let Some(block) = outgoing(sig, c.piece(), me, next, c.input, c.output) {
                let at = s.heap + s.data_at(n, me, c.bytes);
                // SAFETY: the slot's data holds `data` bytes (`pulls` means
                // it is the data), line-aligned, in this PE's mapped region;
                // the members read it only once they see the flags raised
                // below, and no member reads this slot of an older call any
                // more.
                unsafe { copy_forward(block, at as *mut u8) };
            }
        }
        for j in (0..p).filter(|&j| j != me && s.pushes(sig, c.part, me, j)) {
            let block = match &word {
                Some(w) => &w[..],
                None if pulled => &[],
                None => outgoing(sig, c.piece(), me, j, c.input, c.output).unwrap_or(&[]),
            };
            self.push(j, n, &stamp, block);
            // The next call's slot, while this PE computes this one.
            if self.claims && block.len() <= CLAIM_LIMIT {
                let (at, rest, count) = s.lines(n + 1, me, block.len());
                claim(s.peers[j] + at);
                for i in 0..count {
                    claim(s.peers[j] + rest + i * LINE);
                }
            }
        }
        // A waiter fetches the data lines of a small slot with the flag's,
        // if the block does not end in the header's line.
        let few = s.line_count(c.bytes) <= PREFETCH_LINES;
        let data_lines = few && s.line_count(c.bytes) > 1;
        match role {
            Waits::Nobody => {}
            Waits::Root => {
                let root = sig.root;
                // What the root's flag and posted word said when it had
                // arrived: whether it stays on the flat path.
                let mut flat = true;
                let mut waited = false;
                self.wait(world, c.op, Some(root), false, |j, pull| {
                    if data_lines {
                        s.prefetch(n, j, c.bytes, 1);
                    }
                    match s.arrived(n, j, pull.then_some(&stamp)) {
                        Some(f) => {
                            flat = f;
                            true
                        }
                        None => {
                            waited = true;
                            false
                        }
                    }
                })?;
                if !flat {
                    self.settle(n, &GENERAL);
                    return Ok(Outcome { done: false, late });
                }
                let theirs = s.current(n, root);
                if theirs != Some(stamp) {
                    let text = differ_text(n, &stamp, &[(root, theirs)]);
                    return Err(world.error(c.op, Cause::Mismatch(text)));
                }
                self.saw(root, n + 1);
                // The root's next slot, if the root runs ahead (its flag was
                // up at the first reading) or the PEs are crowded. A root
                // that did not run ahead writes that slot next, and fetching
                // its lines here would only take them from it first: at 2
                // PEs, each call alone between barriers (OSU's way), 8 B-2
                // KiB broadcasts took 0.92-0.94x the time so (alternated with
                // the build before, medians of 10), back to back 0.96-1.03x;
                // never fetching it, back to back took 1.43x.
                if !waited || s.crowded {
                    s.prefetch(n + 1, root, c.bytes, 0);
                }
            }
            Waits::Everyone => {
                if few {
                    for j in (0..p).filter(|&j| j != me) {
                        s.prefetch(n + FETCH_AHEAD, j, c.bytes, 0);
                    }
                }
                let mut flat = true;
                self.wait(world, c.op, None, true, |j, pull| {
                    if data_lines {
                        s.prefetch(n, j, c.bytes, 1);
                    }
                    match s.arrived(n, j, pull.then_some(&stamp)) {
                        Some(f) => {
                            flat &= f;
                            true
                        }
                        None => false,
                    }
                })?;
                if !flat {
                    return match self.deserted(n).check() {
                        Some(cause) => Err(world.error(c.op, cause)),
                        None => {
                            self.settle(n, &GENERAL);
                            Ok(Outcome { done: false, late })
                        }
                    };
                }
                let differs = |j: usize| j != me && s.current(n, j) != Some(stamp);
                if let Some(first) = (0..p).find(|&j| differs(j)) {
                    return Err(world.error(c.op, self.mismatch(n, &stamp, first)));
                }
            }
        }
        if role == Waits::Everyone {
            // Every member has entered this call, so every earlier one.
            late = late.or_else(|| self.review(oldest..n));
            for j in 0..p {
                self.saw(j, n + 1);
            }
        } else {
            // The root, if this PE waited for it, is checked already.
            let checked = match role {
                Waits::Root => 1 << sig.root | 1 << me,
                _ => 1 << me,
            };
            let set = s.set(n);
            self.early[set].store(n + 1, Ordering::Relaxed);
            self.keep(set, (u64::MAX >> (64 - p)) & !checked);
        }
        // A member that only sends has nothing to compute (a scatter's
        // root copies its own piece): not calling `compute` there, a loop
        // of 2-PE 8 B broadcasts took 0.89-0.99x the time (median 0.93,
        // alternated within each run), as its root sets its pace.
        match attach {
            Some(failed) => self.attached(world, c, failed),
            None if role == Waits::Nobody && sig.collective != Collective::Scatter => {}
            None if pulled => self.compute::<true>(c),
            None => self.compute::<false>(c),
        }
        self.settle(n, &stamp.0);
        Ok(Outcome { done: true, late })
    }

    /// Computes this member's result of call `c` from its own buffers and
    /// the slots the others wrote, in this PE's heap or, if `PULLED`, in
    /// their own. A copy for each (with `pulled` a runtime argument, 2-PE
    /// 8 B reduces took 1.1x the time).
    fn compute<const PULLED: bool>(&self, c: Call<'_>) {
        let (p, me, n) = (self.slots.p, self.slots.me, c.n);
        let b = c.bytes;
        let root = c.sig.root;
        let slot = |j: usize| {
            let heap = if PULLED {
                self.slots.peers[j]
            } else {
                self.slots.heap
            };
            self.slots.data_in(heap, n, j, b)
        };
        let piece = c.piece();
        match c.sig.collective {
            Collective::Barrier => {}
            Collective::Broadcast => {
                if me != root {
                    weft_copy::copy(&mut c.output[piece(0)], slot(root));
                }
            }
            Collective::Allgather | Collective::Gather => {
                if c.sig.collective == Collective::Allgather || me == root {
                    for j in 0..p {
                        let from = if j == me { &c.input[piece(0)] } else { slot(j) };
                        weft_copy::copy(&mut c.output[piece(j)], from);
                    }
                }
            }
            Collective::Scatter => {
                let from = if me == root {
                    &c.input[piece(me)]
                } else {
                    slot(root)
                };
                weft_copy::copy(&mut c.output[piece(0)], from);
            }
            Collective::Alltoall => {
                for j in 0..p {
                    let from = if j == me {
                        &c.input[piece(me)]
                    } else {
                        slot(j)
                    };
                    weft_copy::copy(&mut c.output[piece(j)], from);
                }
            }
            Collective::Reduce
            | Collective::Allreduce
            | Collective::Scan
            | Collective::Exscan
            | Collective::ReduceScatter => {
                // Team::run gives every reducing call its combiner.
                let Some(comb) = c.combiner else { return };
                // Members folded, left to right, into the output.
                let upto = match c.sig.collective {
                    Collective::Reduce if me != root => return,
                    Collective::Exscan if me == 0 => return,
                    Collective::Scan => me + 1,
                    Collective::Exscan => me,
                    _ => p,
                };
                let out = &mut c.output[piece(0)];
                if c.sig.collective == Collective::ReduceScatter {
                    // This member's operand is its block of the input.
                    let own = &c.input[piece(me)];
                    weft_copy::copy(out, if me == 0 { own } else { slot(0) });
                    for j in 1..p {
                        comb.combine(out, if j == me { own } else { slot(j) }, false);
                    }
                } else if me == 0 || me >= upto {
                    // The fold starts with this member's operand, in place
                    // in its output, or leaves it out (exscan).
                    if me != 0 {
                        weft_copy::copy(out, slot(0));
                    }
                    for j in 1..upto {
                        comb.combine(out, slot(j), false);
                    }
                } else {
                    // The members before this one, folded, go left of its
                    // operand, in place: member 0's slot as it is, or their
                    // fold in this thread's kept buffer (taken, so that a
                    // nested call only allocates its own).
                    let mut saved = PREFIX.take();
                    let before: &[u8] = if me == 1 {
                        slot(0)
                    } else {
                        saved.resize(saved.len().max(b.div_ceil(8)), 0);
                        let acc = &mut bytemuck::cast_slice_mut::<u64, u8>(&mut saved)[..b];
                        weft_copy::copy(acc, slot(0));
                        for j in 1..me {
                            comb.combine(acc, slot(j), false);
                        }
                        acc
                    };
                    comb.combine(out, before, true);
                    for j in me + 1..upto {
                        comb.combine(out, slot(j), false);
                    }
                    PREFIX.set(saved);
                }
            }
        }
    }

    /// Part `c.part` of an attached call ([`Carry::Attached`]): this PE
    /// copies what it needs straight out of the others' buffers, whose
    /// addresses they wrote into their slots in part 0, and from part 1 on
    /// learns from their slots whether every member's copies went well
    /// (what went wrong goes into `failed`, after which nobody reads more).
    /// An allgather or alltoall copies its own block, then reads the others'
    /// in part 0, starting with the next member (so that the members do not
    /// all read from the same one first). An allreduce folds its chunk of
    /// the vector ([`Slots::chunk`]) from every member's in part 0, into its
    /// own vector, and reads the others' folded chunks in part 1.
    fn attached(&self, world: &World, c: Call<'_>, failed: &mut Option<Cause>) {
        let (p, me, n) = (self.slots.p, self.slots.me, c.n);
        // The word member `j` wrote into its slot in part `k` of this call.
        let first = n - c.part as u64;
        let word = |k: usize, j: usize| {
            let w = self
                .slots
                .data_in(self.slots.heap, first + k as u64, j, ATTACHED_WORD);
            u64::from_ne_bytes(std::array::from_fn(|i| w[i]))
        };
        if c.part > 0 {
            let bad: Vec<usize> = (0..p)
                .filter(|&j| j != me && word(c.part, j) != 0)
                .collect();
            if let (None, Some(&first)) = (&failed, bad.first()) {
                *failed = Some(Cause::Transport(TransportError::Completion {
                    peer: first,
                    op: c.op,
                    status: format!(
                        "PEs {bad:?} could not read the other members' blocks from their memory \
                         (cross-memory attach)"
                    ),
                }));
            }
        }
        if failed.is_some() {
            return;
        }
        // Reads `out.len()` bytes from `at` bytes into member `j`'s buffer.
        let read = |j: usize, at: usize, out: &mut [u8]| -> Result<(), Cause> {
            let lane = world
                .engine()
                .lane(j)
                .ok_or(Cause::BadPe { pe: j, size: p })?;
            Ok(lane.read_remote(j, word(0, j) + at as u64, 0, out)?)
        };
        let b = c.sig.bytes;
        let result = match (c.sig.collective, c.part) {
            (Collective::Allgather | Collective::Alltoall, 0) => {
                let block = |k: usize| k * b..(k + 1) * b;
                // This PE's block in its input, and where every member
                // keeps the block for this PE in its own.
                let (own, theirs) = match c.sig.collective {
                    Collective::Alltoall => (me, me * b),
                    _ => (0, 0),
                };
                weft_copy::copy(&mut c.output[block(me)], &c.input[block(own)]);
                (1..p)
                    .map(|k| (me + k) % p)
                    .try_for_each(|j| read(j, theirs, &mut c.output[block(j)]))
            }
            (Collective::Allreduce, 0) => match c.combiner {
                Some(comb) => {
                    let chunk = self.slots.chunk(c.sig, me);
                    let len = chunk.len();
                    let (words, mut kept) = (len.div_ceil(8), PREFIX.take());
                    kept.resize(kept.len().max(2 * words), 0);
                    let (theirs, before) = kept[..2 * words].split_at_mut(words);
                    let theirs = &mut bytemuck::cast_slice_mut::<u64, u8>(theirs)[..len];
                    let before = &mut bytemuck::cast_slice_mut::<u64, u8>(before)[..len];
                    let out = &mut c.output[chunk.clone()];
                    // Members folded left to right, as `Region::compute`
                    // does: those before this one into `before`, which
                    // goes left of this PE's operand, then those after.
                    let mut fold = || {
                        if me > 0 {
                            read(0, chunk.start, before)?;
                            for j in 1..me {
                                read(j, chunk.start, theirs)?;
                                comb.combine(before, theirs, false);
                            }
                            comb.combine(out, before, true);
                        }
                        for j in me + 1..p {
                            read(j, chunk.start, theirs)?;
                            comb.combine(out, theirs, false);
                        }
                        Ok(())
                    };
                    let folded = fold();
                    PREFIX.set(kept);
                    folded
                }
                None => Ok(()),
            },
            (Collective::Allreduce, 1) => (1..p).map(|k| (me + k) % p).try_for_each(|j| {
                let chunk = self.slots.chunk(c.sig, j);
                read(j, chunk.start, &mut c.output[chunk])
            }),
            _ => Ok(()),
        };
        if let Err(e) = result {
            failed.get_or_insert(e);
        }
    }
}

impl Slots {
    /// Whether members copy the blocks of a call of `sig` from each
    /// other's buffers ([`Carry::Attached`]): allgathers, alltoalls and
    /// allreduces (in which every member waits for every other already,
    /// [`waits`]).
    fn attaches(&self, sig: &Signature) -> bool {
        let from = match sig.collective {
            Collective::Allgather | Collective::Alltoall if self.crowded => CROWDED_ATTACH_BLOCK,
            Collective::Allgather | Collective::Alltoall => ATTACH_BLOCK,
            Collective::Allreduce if self.crowded => ATTACH_VECTOR,
            _ => return false,
        };
        self.attach && sig.bytes >= from
    }

    /// The bytes of an attached allreduce's vector that `member` folds
    /// ([`Region::attached`]): the members' shares of its elements, in
    /// member order.
    fn chunk(&self, sig: &Signature, member: usize) -> std::ops::Range<usize> {
        let elem = sig.elem.max(1);
        let elems = sig.bytes / elem;
        let at = |k: usize| k * elems / self.p * elem;
        at(member)..at(member + 1)
    }

    /// Whom `member` waits for in part `part` of a call of `sig`. The
    /// first of several parts waits for every member, so that they all
    /// agree on the call, and so on how many numbers it takes, before any
    /// member takes a second (a call is in parts when its blocks exceed a
    /// slot).
    fn waits(&self, sig: &Signature, part: usize, member: usize) -> Waits {
        if part == 0 && sig.bytes > self.data {
            Waits::Everyone
        } else {
            waits(sig, member)
        }
    }

    fn posted_at(&self, sender: usize) -> usize {
        sender * LINE
    }

    /// Where a member's ledger word is in its own region
    /// ([`Region::vouched`]), its count word after it ([`Region::reached`]):
    /// in a line of their own after the posted words, apart from its
    /// running word, which spinning members read.
    fn ledger_at(&self) -> usize {
        self.p * LINE
    }

    /// Where the ledger ring's word of call `n` is in a member's region:
    /// one word per set of slots' heads, after the ledger word's line.
    fn ring_at(&self, n: u64) -> usize {
        (self.p + 1) * LINE + self.set(n) * 8
    }

    /// The set of slots of call `n`.
    fn set(&self, n: u64) -> usize {
        n as usize & (self.sets - 1)
    }

    /// Where `sender`'s slot for call `n` is: its head (or the whole
    /// slot), whose first line holds the header. Heads lie sender by
    /// sender, each sender's sets in turn, so that the lines after those
    /// a call takes are the same sender's: laid out set by set, the next
    /// line was the next sender's or this PE's own, and the processor's
    /// fetching of the lines that follow those in use took them from the
    /// core that writes them next (at 2 PEs 64 B calls took 1.4-2 times
    /// as long). Whole slots lie set by set, as each is far larger than
    /// the lines a small call takes.
    fn slot_at(&self, n: u64, sender: usize) -> usize {
        self.heads_at + self.set(n) * self.set_stride + sender * self.sender_stride
    }

    /// Where a block of `len` bytes is in `sender`'s slot for call `n`:
    /// after the header in the slot's head (or whole slot), or in its data
    /// when larger than the head holds.
    fn data_at(&self, n: u64, sender: usize, len: usize) -> usize {
        if len <= self.inline {
            self.slot_at(n, sender) + HEADER
        } else {
            self.tail + (self.data_set(n) * self.p + sender) * self.data
        }
    }

    /// Lines of a slot that a block of `bytes` bytes takes with the
    /// header's: the head's, or the header's and the data's.
    fn line_count(&self, bytes: usize) -> usize {
        if bytes <= self.inline {
            (HEADER + bytes).div_ceil(LINE)
        } else {
            1 + bytes.div_ceil(LINE)
        }
    }

    /// The set of slots' data of call `n`.
    fn data_set(&self, n: u64) -> usize {
        n as usize & (self.data_sets - 1)
    }

    /// The lines of `sender`'s slot for call `n` that a block of `bytes`
    /// bytes takes ([`Slots::line_count`] of them): the header's at the
    /// first offset, then as many as the third says of the block's past
    /// it, from the second.
    #[inline(always)]
    fn lines(&self, n: u64, sender: usize, bytes: usize) -> (usize, usize, usize) {
        let at = self.slot_at(n, sender);
        let rest = if bytes <= self.inline {
            at + LINE
        } else {
            self.data_at(n, sender, bytes)
        };
        (at, rest, self.line_count(bytes) - 1)
    }

    /// Asks the processor to fetch the lines of `sender`'s slot for call
    /// `n` that hold its header and `bytes` of data ([`Slots::lines`]),
    /// at most [`PREFETCH_LINES`] and from the `first` on, into this
    /// core's cache: the sender may have written them already. Fetched
    /// together, they take about the time of one.
    fn prefetch(&self, n: u64, sender: usize, bytes: usize, first: usize) {
        let (at, rest, count) = self.lines(n, sender, bytes);
        let fetch = |off: usize| {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: a prefetch only hints; it reads nothing and cannot
            // fault (x86-64 always has SSE). The address is in the region.
            unsafe {
                std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                    (self.heap + off) as *const i8,
                );
            }
            #[cfg(not(target_arch = "x86_64"))]
            let _ = off;
        };
        if first == 0 {
            fetch(at);
        }
        for i in first.max(1) - 1..count.min(PREFETCH_LINES - 1) {
            fetch(rest + i * LINE);
        }
    }

    fn word(&self, offset: usize) -> &AtomicU64 {
        self.word_in(self.heap, offset)
    }

    /// Word `offset` of the region in the heap mapped at `heap`, this PE's
    /// or a member's ([`Slots::peers`]).
    fn word_in(&self, heap: usize, offset: usize) -> &AtomicU64 {
        debug_assert!(offset % 8 == 0 && offset + 8 <= region_size(self.p));
        debug_assert!(self.peers[..self.p].contains(&heap));
        // SAFETY: every member's heap is mapped for the region's life,
        // page-aligned, and the offset is 8-aligned inside the region
        // (`Region::new`); members write these words only atomically
        // (stores through the mapping, or transport atomics).
        unsafe { &*((heap + offset) as *const AtomicU64) }
    }

    /// Writes the call word and `stamp` of call `n` into the slot whose
    /// header is at `at` in the heap mapped at `heap`: the call word first,
    /// so that a reader of an older call's stamp there sees it change
    /// ([`Slots::stamp`]).
    #[inline(always)]
    fn write_stamp(&self, heap: usize, at: usize, n: u64, stamp: &Stamp) {
        self.word_in(heap, at + CALL).store(n, Ordering::Relaxed);
        fence(Ordering::Release);
        for (i, &w) in stamp.0.iter().enumerate() {
            self.word_in(heap, at + 8 + 8 * i)
                .store(w, Ordering::Relaxed);
        }
    }

    /// Whether member `from` writes its slot of part `part` of a call of
    /// `sig` into member `to`'s heap: always, unless [`Slots::crowded`]; then
    /// only if `to` waits for `from` there. The others read `from`'s own
    /// slot in its heap instead, when they check it ([`Slots::header`]):
    /// at 4 PEs on 2 cores a broadcast's receivers so write nothing to each
    /// other or to the root, and a reduce's members write only to the root.
    fn pushes(&self, sig: &Signature, part: usize, from: usize, to: usize) -> bool {
        !self.crowded
            || match self.waits(sig, part, to) {
                Waits::Everyone => true,
                Waits::Root => sig.root == from,
                Waits::Nobody => false,
            }
    }

    /// Where `sender`'s header of call `n` is for this PE (the address of
    /// the heap that holds it), with its flag: in this PE's heap, where the
    /// sender writes it if this PE waits for it; otherwise, if it
    /// [`crowded`](Slots::crowded), in the sender's own slot, which it writes
    /// in every call, when that slot's flag has got as far as call `n`.
    #[inline(always)]
    fn header(&self, n: u64, sender: usize) -> (usize, u64) {
        let flag = self.word(self.slot_at(n, sender)).load(Ordering::Acquire);
        if flag > n || !self.crowded {
            return (self.heap, flag);
        }
        self.own_header(n, sender).unwrap_or((self.heap, flag))
    }

    /// `sender`'s own slot of call `n`'s set, in its heap, if its flag has
    /// got as far as call `n`: where its heap is, and the flag.
    #[cold]
    fn own_header(&self, n: u64, sender: usize) -> Option<(usize, u64)> {
        let theirs = self.peers[sender];
        let own = self
            .word_in(theirs, self.slot_at(n, sender))
            .load(Ordering::Acquire);
        (own > n).then_some((theirs, own))
    }

    /// The data `sender` wrote for call `n` into its slot in the heap
    /// mapped at `heap` (this PE's, or the sender's own if the call is
    /// [pulled](Slots::pulls)), once its flag says so.
    fn data_in(&self, heap: usize, n: u64, sender: usize, len: usize) -> &[u8] {
        let at = self.data_at(n, sender, len);
        debug_assert!(len <= self.data);
        // SAFETY: inside the region (`len <= data`); the sender wrote it
        // before raising the flag this PE read with acquire ordering, and
        // writes it again only after this PE has entered call `n + 1`.
        unsafe { std::slice::from_raw_parts((heap + at) as *const u8, len) }
    }

    /// Whether the members of a call of `sig` read blocks of `len` bytes
    /// from their writer's own slot, which it writes once, rather than
    /// from their own heaps, into which it writes each: when crowded,
    /// blocks from [`PULL_FROM`] (in the slots' data, past their heads) of
    /// the collectives whose writers send every member the same block
    /// (broadcast, allgather, allreduce). A writer so copies its block once
    /// instead of once per member.
    #[inline(always)]
    fn pulls(&self, sig: &Signature, len: usize) -> bool {
        self.crowded
            && len >= PULL_FROM
            && matches!(
                sig.collective,
                Collective::Broadcast | Collective::Allgather | Collective::Allreduce
            )
    }

    /// The stamp `sender` wrote for call `n` into its slot in the heap
    /// mapped at `heap` (this PE's, or its own, see [`Slots::header`]), once
    /// the slot's flag says so: `Err(())` if the slot already holds a later
    /// call (the sender writes the call word before the stamp, and it is
    /// read after).
    #[inline(always)]
    fn stamp(&self, heap: usize, n: u64, sender: usize) -> Result<Stamp, ()> {
        let at = self.slot_at(n, sender);
        let w: [u64; 2] =
            std::array::from_fn(|i| self.word_in(heap, at + 8 + 8 * i).load(Ordering::Relaxed));
        fence(Ordering::Acquire);
        if self.word_in(heap, at + CALL).load(Ordering::Relaxed) != n {
            return Err(());
        }
        Ok(Stamp(w))
    }

    /// The stamp `sender` wrote for the call `n` this PE is in, once its
    /// flag says so (no member can be a whole round of sets ahead).
    #[inline(always)]
    fn current(&self, n: u64, sender: usize) -> Option<Stamp> {
        let (heap, _) = self.header(n, sender);
        self.stamp(heap, n, sender).ok()
    }
}

/// What a slot's header says of the call its sender is in, two words: the
/// collective, the root (8 bits), which of the call's parts (16 bits) and
/// the operation; the call's bytes and its element size (32 bits each).
/// Members in one call write equal stamps; a member whose stamp differs
/// called it otherwise.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Stamp([u64; 2]);

impl Stamp {
    /// The stamp of part `part` of a call of `sig`, which runs on the flat
    /// path ([`Region::parts`]).
    fn new(sig: &Signature, part: usize) -> Stamp {
        debug_assert!(sig.root <= 0xff && part <= 0xffff);
        let coll = Collective::ALL
            .iter()
            .position(|x| *x == sig.collective)
            .unwrap_or(0) as u64;
        Stamp([
            coll | (sig.root as u64) << 8 | (part as u64) << 16 | u64::from(sig.op) << 32,
            sig.bytes as u64 | (sig.elem as u64) << 32,
        ])
    }

    /// The call's signature, if the words hold one.
    fn signature(&self) -> Option<Signature> {
        let w = self.0;
        Some(Signature {
            collective: *Collective::ALL.get((w[0] & 0xff) as usize)?,
            root: (w[0] >> 8 & 0xff) as usize,
            op: (w[0] >> 32) as u32,
            bytes: (w[1] & 0xffff_ffff) as usize,
            elem: (w[1] >> 32) as usize,
        })
    }

    /// Which of the call's parts.
    fn part(&self) -> usize {
        (self.0[0] >> 16 & 0xffff) as usize
    }

    /// The call as error texts name it.
    fn describe(&self) -> String {
        let part = self.part();
        match self.signature() {
            None => "a collective".into(),
            Some(sig) if part == 0 => describe(&sig),
            Some(sig) => format!("{} (its part {part})", describe(&sig)),
        }
    }
}

impl Slots {
    /// Whether `sender`, which this PE waits for in call `n`, has written
    /// its slot of the call into this PE's heap (`Some(true)`), taken the
    /// call to the general path (`Some(false)`), or not yet (`None`).
    /// With `mine`, this PE's stamp of the call, it has also arrived
    /// (`Some(true)`) if its own slot says it called the call otherwise
    /// ([`Slots::crowded`]): it may not write to this PE then, and the stamps'
    /// check fails the call. With equal stamps it writes to this PE as
    /// well, and its block is read only once it has.
    #[inline(always)]
    fn arrived(&self, n: u64, sender: usize, mine: Option<&Stamp>) -> Option<bool> {
        // The posted word first: a PE posts a later call only after raising
        // its flag for this one, so the flag read next is then current.
        let posted = self.word(self.posted_at(sender)).load(Ordering::Acquire);
        let flag = self.word(self.slot_at(n, sender)).load(Ordering::Acquire);
        if flag == n + 1 {
            Some(true)
        } else if posted > n {
            Some(false)
        } else {
            let mine = mine.filter(|_| self.crowded)?;
            self.differs(n, sender, mine).then_some(true)
        }
    }

    /// Whether `sender`'s own slot says it is in call `n` with a stamp
    /// other than `mine` ([`Slots::arrived`]).
    #[cold]
    fn differs(&self, n: u64, sender: usize, mine: &Stamp) -> bool {
        self.own_header(n, sender)
            .is_some_and(|(heap, own)| own == n + 1 && self.stamp(heap, n, sender) != Ok(*mine))
    }

    /// Checks call `n` for the `unchecked` members (a bit each) that have
    /// entered it: those that called it otherwise than this PE, or took it
    /// off the flat path. Returns the members still to check (none once
    /// something is wrong) and what is wrong.
    fn review(&self, n: u64, mut unchecked: u64) -> (u64, Late) {
        let Some(mine) = self.stamp(self.heap, n, self.me).ok() else {
            return (0, None);
        };
        let mut differ = Vec::new();
        let mut off = Vec::new();
        let members = unchecked;
        for j in (0..self.p).filter(|&j| members & 1 << j != 0) {
            // The posted word first, as in `arrived`.
            let posted = self.word(self.posted_at(j)).load(Ordering::Acquire);
            let (heap, flag) = self.header(n, j);
            if flag == n + 1 {
                match self.stamp(heap, n, j) {
                    Ok(theirs) if theirs != mine => differ.push((j, Some(theirs))),
                    // The same, or overwritten since the flag was read.
                    _ => {}
                }
            } else if flag < n + 1 && posted > n {
                off.push(j);
            } else if flag < n + 1 {
                continue;
            }
            // A later flag: the member is far ahead and its slot for call
            // `n` overwritten; nothing to check any more.
            unchecked &= !(1 << j);
        }
        let cause = if !differ.is_empty() {
            Some(Box::new(Cause::Mismatch(differ_text(n, &mine, &differ))))
        } else {
            off.first().map(|j| {
                Box::new(Cause::Mismatch(format!(
                    "PE {j} took call {n} of the world team off the flat path (non-blocking, \
                     with other arguments or with a forced algorithm; PEs {off:?} in all), where \
                     this PE called {} blocking and left it without waiting for them",
                    mine.describe()
                )))
            })
        };
        (if cause.is_some() { 0 } else { unchecked }, cause)
    }

    /// A member that entered call `n` on the flat path and left it without
    /// waiting (it only sends there), with its stamp.
    fn leaver(&self, n: u64) -> Option<(usize, Stamp)> {
        (0..self.p).filter(|&j| j != self.me).find_map(|j| {
            let (heap, flag) = self.header(n, j);
            if flag != n + 1 {
                return None;
            }
            let stamp = self.stamp(heap, n, j).ok()?;
            let role = self.waits(&stamp.signature()?, stamp.part(), j);
            (role == Waits::Nobody).then_some((j, stamp))
        })
    }
}

/// Whether this processor has `PREFETCHW`, which takes a line for
/// writing ([`claim`]).
fn claims() -> bool {
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
fn claim(addr: usize) {
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
unsafe fn copy_forward(from: &[u8], to: *mut u8) {
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

/// The error text of members `differ` (with the stamps they wrote)
/// calling call `n` otherwise than this PE, which stamped it `mine`.
fn differ_text(n: u64, mine: &Stamp, differ: &[(usize, Option<Stamp>)]) -> String {
    let (j, theirs) = &differ[0];
    let theirs = theirs.map_or("a collective".into(), |t| t.describe());
    let mut text = format!(
        "PE {j} called {theirs} where this PE called {} (call {n} of the world team)",
        mine.describe()
    );
    if differ.len() > 1 {
        let pes: Vec<usize> = differ.iter().map(|(j, _)| *j).collect();
        text += &format!("; PEs {pes:?} all differ from this PE");
    }
    text
}

/// Whether member `me`, waiting for member `only` (or for every other
/// member if `usize::MAX`), waits for member `j`.
#[inline(always)]
fn awaited(j: usize, me: usize, only: usize) -> bool {
    j != me && (only == usize::MAX || only == j)
}

/// The block member `me` writes into member `j`'s slot for a call (or a
/// part of one) of `sig` whose pieces of block `k` are `piece(k)`, if `j`
/// needs one. Inlined (alternated within runs against a called one, 2-PE
/// 8 B broadcasts took 0.976-0.988x the time, allreduces 0.983-0.995x,
/// reduces 0.975-1.017x).
#[inline(always)]
fn outgoing<'a>(
    sig: &Signature,
    piece: impl Fn(usize) -> std::ops::Range<usize>,
    me: usize,
    j: usize,
    input: &'a [u8],
    output: &'a [u8],
) -> Option<&'a [u8]> {
    let block = |k: usize| &input[piece(k)];
    let vector = || &output[piece(0)];
    match sig.collective {
        Collective::Barrier => None,
        Collective::Broadcast => (me == sig.root).then(vector),
        Collective::Reduce => (j == sig.root).then(vector),
        Collective::Allreduce => Some(vector()),
        Collective::Scan | Collective::Exscan => (j > me).then(vector),
        Collective::Allgather => Some(block(0)),
        Collective::Gather => (j == sig.root).then(|| block(0)),
        Collective::Scatter => (me == sig.root).then(|| block(j)),
        Collective::Alltoall | Collective::ReduceScatter => Some(block(j)),
    }
}

/// How many calls a PE settles before it reads again the ledger word of
/// a member whose word did not vouch for the call it reviewed.
const RETRY_AFTER: u64 = 8;

/// The token of a call taken to the general path in a PE's chain
/// ([`Region::settle`]): no stamp has all these bits set.
const GENERAL: [u64; 2] = [u64::MAX; 2];

/// Mixes a chain's word (MurmurHash3's 64-bit finalizer): a bijection
/// whose every output bit depends on every input bit, so chains that
/// part stay apart, and two histories share a ledger word's 48 bits by
/// chance about once in 2^48 comparisons.
fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ x >> 33
}

/// `chain` with one more call's `token` folded in ([`Region::settle`]).
fn fold(chain: u64, token: &[u64; 2]) -> u64 {
    mix(mix(chain ^ token[0]) ^ token[1])
}

/// A ledger word: the upper 48 bits of `chain`, the lower 16 of `count`
/// (one word, so that a reader never sees a count with another count's
/// chain).
fn ledger_word(chain: u64, count: u64) -> u64 {
    chain & !0xffff | count & 0xffff
}

/// The count a ledger word holds, from its lower 16 bits, taken as the
/// one nearest `near`: members are never more than a round of sets (at
/// most 256 calls) apart.
fn ledger_count(word: u64, near: u64) -> u64 {
    let ahead = (word as u16).wrapping_sub(near as u16) as i16;
    near.wrapping_add_signed(i64::from(ahead))
}

/// The core this thread runs on + 1 (0 if the system cannot tell). With
/// glibc 2.35 or later a load from the thread's restartable-sequences
/// area, which the kernel keeps current; otherwise the vDSO's `getcpu`.
fn processor() -> u64 {
    // SAFETY: no preconditions; it returns -1 on failure.
    let core = unsafe { libc::sched_getcpu() };
    u64::try_from(core).map_or(0, |c| c + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ledger_word_gives_back_its_count_near_the_readers() {
        let chain = fold(0, &[7, 9]);
        for count in [0u64, 1, 255, 65_535, 65_536, 65_537, 1 << 40] {
            let word = ledger_word(chain, count);
            assert_eq!(word & !0xffff, chain & !0xffff);
            for near in [count.saturating_sub(256), count, count + 256] {
                assert_eq!(ledger_count(word, near), count, "count {count} near {near}");
            }
        }
        assert_eq!(ledger_count(0, 3), 0);
    }

    #[test]
    fn chains_of_different_calls_differ_and_stay_apart() {
        let chains = |tokens: &[[u64; 2]]| {
            tokens
                .iter()
                .scan(0u64, |c, t| {
                    *c = fold(*c, t);
                    Some(ledger_word(*c, 0))
                })
                .collect::<Vec<_>>()
        };
        let a = [[1, 8], [2, 8], [3, 16], [3, 16]];
        let b = [[1, 8], [2, 16], [3, 16], [3, 16]];
        let c = [[1, 8], GENERAL, [3, 16], [3, 16]];
        let (fa, fb, fc) = (chains(&a), chains(&b), chains(&c));
        assert_eq!(fa[0], fb[0]);
        for k in 1..a.len() {
            assert_ne!(fa[k], fb[k], "call {k}");
            assert_ne!(fa[k], fc[k], "call {k}");
        }
        assert_eq!(chains(&a), fa);
    }
}
