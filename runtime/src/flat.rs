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
//! Every PE's heap begins with a [`Region`]: one *posted* word per sender,
//! then two sets of slots (one per parity of the call number), one slot
//! per sender: a flag (the call's number + 1), the sender's signature of
//! the call, and up to [`DATA`] bytes of data.
//!
//! Call `n` on the flat path:
//! 1. Wait until every member has entered call `n - 1` (its flag of that
//!    parity or its posted word says so): it no longer reads the slots of
//!    parity `n`, last written for call `n - 2`.
//! 2. Write the signature and the block each member needs into its slot,
//!    then raise the flag to `n + 1` (a put with signal).
//! 3. Wait until every member has raised its flag for `n`, or posted
//!    `n + 1`: it takes the general path for this call (the call is
//!    non-blocking there, too large, has bad arguments or a forced
//!    algorithm). Exited members are errors naming them.
//! 4. If a member posted, every member takes the general path, which
//!    checks the call itself; otherwise members whose signature differs
//!    from this PE's fail the call on every member, which all see the same
//!    signatures.
//!
//! A call that does not take the flat path posts `n + 1` in every member's
//! region and takes the general path.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};

use weft_collectives::op::Combiner;
use weft_collectives::{Collective, Signature};
use weft_transport::{AtomicOp, AtomicWidth};

use crate::error::{Cause, Result};
use crate::progress::coll::describe;
use crate::progress::Watch;
use crate::World;

/// Most members of a team on the flat path (the region grows with them).
pub(crate) const MAX_MEMBERS: usize = 64;
/// Largest block one member writes into one slot.
pub(crate) const DATA: usize = 4096;
/// Most bytes one member writes in one call, over all slots.
const PUSH_LIMIT: usize = 16 * 1024;
const LINE: usize = 64;
const PAGE: usize = 4096;
/// Flag and four signature words.
const HEADER: usize = 40;
const SLOT: usize = (HEADER + DATA).next_multiple_of(LINE);
/// Spins on the flags before waiting through the progress engine.
const SPINS: usize = 256;

/// Bytes at the start of every PE's heap that the flat path of a job of
/// `p` PEs uses (0 when it has too many PEs for it), whole pages, so that
/// the allocator's blocks keep the heap's page alignment.
pub(crate) fn region_size(p: usize) -> usize {
    if p <= MAX_MEMBERS {
        (p * LINE + 2 * p * SLOT).next_multiple_of(PAGE)
    } else {
        0
    }
}

/// Whether a call of `sig` on a team of `p` members is small enough for
/// the flat path.
pub(crate) fn fits(sig: &Signature, p: usize) -> bool {
    sig.bytes <= DATA && sig.bytes * p.saturating_sub(1) <= PUSH_LIMIT
}

/// One call's arguments on the flat path.
pub(crate) struct Call<'a> {
    pub(crate) op: &'static str,
    /// The call's number in the team (0, 1, ...).
    pub(crate) n: u64,
    pub(crate) sig: Signature,
    pub(crate) input: &'a [u8],
    pub(crate) output: &'a mut [u8],
    /// The reduction's, for the reducing collectives.
    pub(crate) combiner: Option<&'a Combiner>,
}

/// This PE's view of the world team's flat region: its own heap, where the
/// others' slots are.
pub(crate) struct Region {
    /// Address of this PE's heap (an address keeps the world `Send`).
    heap: usize,
    p: usize,
    me: usize,
}

impl Region {
    /// The region of PE `me` of `p` whose heap starts at `heap`, which
    /// must hold [`region_size`]`(p)` bytes, stay mapped as long as the
    /// region lives, and be written at these offsets only by this module.
    pub(crate) fn new(heap: *mut u8, p: usize, me: usize) -> Region {
        assert!(p <= MAX_MEMBERS && me < p);
        Region {
            heap: heap as usize,
            p,
            me,
        }
    }

    fn posted_at(&self, sender: usize) -> usize {
        sender * LINE
    }

    fn slot_at(&self, parity: u64, sender: usize) -> usize {
        self.p * LINE + (parity as usize * self.p + sender) * SLOT
    }

    fn word(&self, offset: usize) -> &AtomicU64 {
        debug_assert!(offset % 8 == 0 && offset + 8 <= region_size(self.p));
        // SAFETY: the heap is mapped for the region's life, page-aligned,
        // and the offset is 8-aligned inside the region (`Region::new`);
        // peers write these words only atomically (transport atomics).
        unsafe { &*((self.heap + offset) as *const AtomicU64) }
    }

    /// The data `sender` wrote for call `n`, once its flag says so.
    fn data(&self, n: u64, sender: usize, len: usize) -> &[u8] {
        let at = self.slot_at(n % 2, sender) + HEADER;
        debug_assert!(len <= DATA);
        // SAFETY: inside the region (`len <= DATA`); the sender wrote it
        // before raising the flag this PE read with acquire ordering, and
        // writes it again only after this PE has entered call `n + 1`.
        unsafe { std::slice::from_raw_parts((self.heap + at) as *const u8, len) }
    }

    fn signature(&self, n: u64, sender: usize) -> Option<Signature> {
        let at = self.slot_at(n % 2, sender) + 8;
        let w: [u64; 4] = std::array::from_fn(|i| self.word(at + 8 * i).load(Ordering::Relaxed));
        Some(Signature {
            collective: *Collective::ALL.get((w[0] & 0xff) as usize)?,
            op: (w[0] >> 32) as u32,
            root: w[1] as usize,
            bytes: w[2] as usize,
            elem: w[3] as usize,
        })
    }

    /// Whether `sender` has entered call `n` on the flat path (`Some(true)`),
    /// on the general path (`Some(false)`), or not yet.
    fn entered(&self, n: u64, sender: usize) -> Option<bool> {
        // The posted word first: a PE posts a later call only after raising
        // its flag for this one, so the flag read next is then current.
        let posted = self.word(self.posted_at(sender)).load(Ordering::Acquire);
        let flag = self
            .word(self.slot_at(n % 2, sender))
            .load(Ordering::Acquire);
        if flag == n + 1 {
            Some(true)
        } else if posted > n {
            Some(false)
        } else {
            None
        }
    }

    /// Whether `sender` has entered call `n` or a later one, either way.
    fn reached(&self, n: u64, sender: usize) -> bool {
        let flag = self
            .word(self.slot_at(n % 2, sender))
            .load(Ordering::Acquire);
        flag > n || self.word(self.posted_at(sender)).load(Ordering::Acquire) > n
    }

    /// Tells every member that call `n` takes the general path.
    pub(crate) fn post(&self, world: &World, op: &'static str, n: u64) -> Result<()> {
        for j in (0..self.p).filter(|&j| j != self.me) {
            world
                .atomic_lane(op, j)?
                .atomic(
                    j,
                    self.posted_at(self.me),
                    AtomicWidth::W64,
                    AtomicOp::Swap(n + 1),
                )
                .map_err(|e| world.error(op, e.into()))?;
        }
        Ok(())
    }

    /// Waits until every other member satisfies `arrived`, watching those
    /// that do not for exits.
    fn wait(
        &self,
        world: &World,
        op: &'static str,
        mut arrived: impl FnMut(usize) -> bool,
    ) -> Result<()> {
        let others = || (0..self.p).filter(|&j| j != self.me);
        let spins = if world.engine().oversubscribed() {
            0
        } else {
            SPINS
        };
        for _ in 0..spins {
            if others().all(&mut arrived) {
                return Ok(());
            }
            std::hint::spin_loop();
        }
        let waiting = RefCell::new(Vec::new());
        world
            .engine()
            .wait_memory(op, Watch::Listed(&waiting), |_| {
                let mut w = waiting.borrow_mut();
                w.clear();
                w.extend(others().filter(|&j| !arrived(j)));
                w.is_empty().then_some(Ok(()))
            })
    }

    /// Runs call `c` on the flat path. `Ok(false)`: a member takes the
    /// general path, so this PE must take it too.
    pub(crate) fn run(&self, world: &World, c: Call<'_>) -> Result<bool> {
        let (p, me, n) = (self.p, self.me, c.n);
        if n > 0 {
            self.wait(world, c.op, |j| self.reached(n - 1, j))?;
        }
        let sig = &c.sig;
        let coll = Collective::ALL
            .iter()
            .position(|x| *x == sig.collective)
            .unwrap_or(0) as u64;
        let header = [
            coll | u64::from(sig.op) << 32,
            sig.root as u64,
            sig.bytes as u64,
            sig.elem as u64,
        ];
        let header: &[u8] = bytemuck::cast_slice(&header);
        let at = self.slot_at(n % 2, me);
        let fail = |e: weft_transport::TransportError| world.error(c.op, e.into());
        for j in (0..p).filter(|&j| j != me) {
            let lane = world.lane(c.op, j)?;
            let block = outgoing(sig, me, j, c.input, c.output).unwrap_or(&[]);
            lane.put(j, at + 8, header).map_err(fail)?;
            lane.put_signal(j, at + HEADER, block, at, n + 1)
                .map_err(fail)?;
        }
        let mut flat = true;
        self.wait(world, c.op, |j| match self.entered(n, j) {
            Some(f) => {
                flat &= f;
                true
            }
            None => false,
        })?;
        if !flat {
            return Ok(false);
        }
        let differs = |j: usize| j != me && self.signature(n, j).as_ref() != Some(sig);
        if (0..p).any(differs) {
            let differ: Vec<(usize, Option<Signature>)> = (0..p)
                .filter(|&j| differs(j))
                .map(|j| (j, self.signature(n, j)))
                .collect();
            let (j, theirs) = &differ[0];
            let theirs = theirs.as_ref().map_or("a collective".into(), describe);
            let mut text = format!(
                "PE {j} called {theirs} where this PE called {} (call {n} of the world team)",
                describe(sig)
            );
            if differ.len() > 1 {
                let pes: Vec<usize> = differ.iter().map(|(j, _)| *j).collect();
                text += &format!("; PEs {pes:?} all differ from this PE");
            }
            return Err(world.error(c.op, Cause::Mismatch(text)));
        }
        self.compute(c);
        Ok(true)
    }

    /// Computes this member's result of call `c` from its own buffers and
    /// the slots the others wrote.
    fn compute(&self, c: Call<'_>) {
        let (p, me, n) = (self.p, self.me, c.n);
        let b = c.sig.bytes;
        let root = c.sig.root;
        let slot = |j: usize| self.data(n, j, b);
        match c.sig.collective {
            Collective::Barrier => {}
            Collective::Broadcast => {
                if me != root {
                    c.output[..b].copy_from_slice(slot(root));
                }
            }
            Collective::Allgather | Collective::Gather => {
                if c.sig.collective == Collective::Allgather || me == root {
                    for j in 0..p {
                        let from = if j == me { &c.input[..b] } else { slot(j) };
                        c.output[j * b..(j + 1) * b].copy_from_slice(from);
                    }
                }
            }
            Collective::Scatter => {
                let from = if me == root {
                    &c.input[me * b..(me + 1) * b]
                } else {
                    slot(root)
                };
                c.output[..b].copy_from_slice(from);
            }
            Collective::Alltoall => {
                for j in 0..p {
                    let from = if j == me {
                        &c.input[me * b..(me + 1) * b]
                    } else {
                        slot(j)
                    };
                    c.output[j * b..(j + 1) * b].copy_from_slice(from);
                }
            }
            Collective::Reduce
            | Collective::Allreduce
            | Collective::Scan
            | Collective::Exscan
            | Collective::ReduceScatter => {
                // Team::run gives every reducing call its combiner.
                let Some(comb) = c.combiner else { return };
                // Members folded, left to right, and this member's operand.
                let (upto, own) = match c.sig.collective {
                    Collective::Reduce if me != root => return,
                    Collective::Exscan if me == 0 => return,
                    Collective::Scan => (me + 1, &c.output[..b]),
                    Collective::Exscan => (me, &c.output[..b]),
                    Collective::ReduceScatter => (p, &c.input[me * b..(me + 1) * b]),
                    _ => (p, &c.output[..b]),
                };
                let mut acc = [0u64; DATA / 8];
                let acc = &mut bytemuck::cast_slice_mut::<u64, u8>(&mut acc)[..b];
                fold(acc, upto, comb, |j| if j == me { own } else { slot(j) });
                c.output[..b].copy_from_slice(acc);
            }
        }
    }
}

/// Combines the vectors of members `0..upto` left to right into `acc`.
fn fold<'a>(acc: &mut [u8], upto: usize, combiner: &Combiner, vector: impl Fn(usize) -> &'a [u8]) {
    acc.copy_from_slice(vector(0));
    for j in 1..upto {
        combiner.combine(acc, vector(j), false);
    }
}

/// The block member `me` writes into member `j`'s slot for a call of
/// `sig`, if `j` needs one.
fn outgoing<'a>(
    sig: &Signature,
    me: usize,
    j: usize,
    input: &'a [u8],
    output: &'a [u8],
) -> Option<&'a [u8]> {
    let b = sig.bytes;
    let block = |k: usize| &input[k * b..(k + 1) * b];
    match sig.collective {
        Collective::Barrier => None,
        Collective::Broadcast => (me == sig.root).then(|| &output[..b]),
        Collective::Reduce => (j == sig.root).then(|| &output[..b]),
        Collective::Allreduce => Some(&output[..b]),
        Collective::Scan | Collective::Exscan => (j > me).then(|| &output[..b]),
        Collective::Allgather => Some(block(0)),
        Collective::Gather => (j == sig.root).then(|| block(0)),
        Collective::Scatter => (me == sig.root).then(|| block(j)),
        Collective::Alltoall | Collective::ReduceScatter => Some(block(j)),
    }
}
