//! Teams and their collectives.
//!
//! A [`Team`] is an ordered set of PEs; the world is the team of all of
//! them ([`World::team`]), and [`Team::split`], [`Team::split_strided`] and
//! [`Team::dup`] make others. Every collective runs on a team: its members
//! call it in the same order, with the same root, sizes, element type and
//! operation. Members that disagree get an error naming a member they
//! disagree with, not a hang or a wrong answer; see
//! [`crate::progress`]'s collective checks.
//!
//! Collectives of different teams run side by side without interfering:
//! each call's messages carry the team's id and the call's sequence
//! number. Non-blocking variants live in a [`Scope`] (`ibarrier`,
//! `iallreduce`, ...), like point-to-point requests, and the progress
//! engine advances them. A symmetric collective (barrier, allreduce, ...)
//! may be non-blocking on some members and blocking on others; a rooted
//! one (broadcast, reduce, gather, scatter) must be one or the other on
//! every member, as in MPI: on the world team of one node its senders may
//! leave the blocking call before the others arrive, and a mix is an error.

use std::cell::RefCell;
use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};

use bytemuck::Pod;
use parking_lot::Mutex;
use weft_collectives::exec::Run;
use weft_collectives::model::LogGP;
use weft_collectives::op::{Combiner, Element, ReduceOp};
use weft_collectives::schedule::Schedule;
use weft_collectives::scratch::ScratchPool;
use weft_collectives::select::{self, Call, Network};
use weft_collectives::{Algorithm, Collective, Signature};

use crate::config::collective_variable;
use crate::error::{Cause, Result};
use crate::flat;
use crate::p2p::{Request, Scope};
use crate::progress::coll::{describe, CallId, CollRun, Probe, CTX_SEQ_BITS, SEQ_MASK};
use crate::progress::Watch;
use crate::World;

/// Number of team ids (the world's is 0).
const TEAM_IDS: usize = 1 << (24 - CTX_SEQ_BITS);
const ID_WORDS: usize = TEAM_IDS / 64;

/// The team ids this PE uses.
pub(crate) struct TeamIds {
    used: [u64; ID_WORDS],
}

impl TeamIds {
    pub(crate) fn new() -> Arc<Mutex<TeamIds>> {
        let mut used = [0; ID_WORDS];
        used[0] = 1;
        Arc::new(Mutex::new(TeamIds { used }))
    }

    fn free_mask(&self) -> [u64; ID_WORDS] {
        self.used.map(|w| !w)
    }
}

/// The network the selection rule assumes for a team on one node.
static ON_NODE: LazyLock<Network> = LazyLock::new(|| Network::of(&LogGP::SHARED_MEMORY));
/// The network the selection rule assumes for a team on several nodes.
static ACROSS_NODES: LazyLock<Network> = LazyLock::new(|| Network::of(&LogGP::CLUSTER));

/// Cached schedules per team, dropped wholesale when full.
const CACHE_LIMIT: usize = 256;

/// What a team is, shared by its handles.
pub(crate) struct TeamInner {
    id: u32,
    /// Members as PEs, in team order.
    members: Arc<[usize]>,
    /// This PE's index in `members`.
    me: usize,
    /// Number of the next call (its sequence number is the low bits).
    calls: AtomicU64,
    /// The world team's flat path for small calls, when the job has one.
    flat: Option<flat::Region>,
    /// Where the members run, which steers the choice of algorithms.
    placement: Placement,
    schedules: Mutex<HashMap<(Call, Algorithm), Arc<Schedule>>>,
    ids: Arc<Mutex<TeamIds>>,
    /// Scratch space of collective runs, shared by the PE's teams.
    scratch: Arc<ScratchPool>,
}

impl TeamInner {
    pub(crate) fn new(
        id: u32,
        members: Vec<usize>,
        me: usize,
        ids: Arc<Mutex<TeamIds>>,
        scratch: Arc<ScratchPool>,
        flat: Option<flat::Region>,
        placement: Placement,
    ) -> Arc<TeamInner> {
        ids.lock().used[id as usize / 64] |= 1 << (id % 64);
        Arc::new(TeamInner {
            id,
            members: members.into(),
            me,
            calls: AtomicU64::new(0),
            flat,
            placement,
            schedules: Mutex::new(HashMap::new()),
            ids,
            scratch,
        })
    }

    fn schedule(&self, call: Call, algorithm: Algorithm) -> Result<Arc<Schedule>, String> {
        let mut cache = self.schedules.lock();
        if let Some(s) = cache.get(&(call, algorithm)) {
            return Ok(s.clone());
        }
        let s = Arc::new(select::build(&call, algorithm).map_err(|e| e.0)?);
        if cache.len() >= CACHE_LIMIT {
            cache.clear();
        }
        cache.insert((call, algorithm), s.clone());
        Ok(s)
    }
}

/// Where a team's members run, as far as the choice of algorithms goes.
/// Every member must see the same placement, since they must all pick the
/// same algorithm: whether the team spans nodes is the same seen from any
/// of them, and on one node they all count the same PEs and cores.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Placement {
    /// Every member on one node, with no more PEs than cores: algorithms
    /// are chosen for shared memory.
    Node,
    /// Every member on one node, which has more PEs than cores: some
    /// algorithms are chosen differently ([`select::choose_crowded`]).
    CrowdedNode,
    /// Members on several nodes: algorithms are chosen for a cluster's
    /// network, however its nodes are loaded.
    Nodes,
}

impl Placement {
    /// The placement of a team of `members`, seen from a PE for which
    /// `on_node[pe]` says whether `pe` runs on its node, which has more PEs
    /// than cores if `oversubscribed`.
    pub(crate) fn of(
        oversubscribed: bool,
        on_node: &[bool],
        mut members: impl Iterator<Item = usize>,
    ) -> Placement {
        match (members.all(|pe| on_node[pe]), oversubscribed) {
            (false, _) => Placement::Nodes,
            (true, true) => Placement::CrowdedNode,
            (true, false) => Placement::Node,
        }
    }
}

impl Drop for TeamInner {
    fn drop(&mut self) {
        if self.id != 0 {
            self.ids.lock().used[self.id as usize / 64] &= !(1 << (self.id % 64));
        }
    }
}

/// An ordered set of PEs that run collectives together. Cheap to clone;
/// the team lives as long as any handle. Collectives on one team must be
/// called by one thread at a time per PE; different teams may be used from
/// different threads.
#[derive(Clone)]
pub struct Team<'w> {
    world: &'w World,
    inner: Arc<TeamInner>,
}

/// A reduction operation on elements of type `T`: a built-in [`ReduceOp`]
/// (for the [`Element`] types) or a [`UserOp`].
pub trait Reduction<T> {
    /// How to combine elements, or why this operation does not apply to
    /// `T`.
    fn combiner(&self) -> Result<Combiner, String>;
    /// A number naming the operation, the same on every PE.
    fn code(&self) -> u32;
}

impl<T: Element> Reduction<T> for ReduceOp {
    fn combiner(&self) -> Result<Combiner, String> {
        Combiner::builtin::<T>(*self).map_err(|e| e.to_string())
    }

    fn code(&self) -> u32 {
        (T::KIND as u32) << 8 | (*self as u32 + 1)
    }
}

/// A user-defined reduction on `T`: `f(a, b)` must be associative; say
/// whether it is commutative (algorithms that combine out of member order
/// are then avoided). Every PE must pass the same operation.
///
/// ```
/// // 2x2 matrix product: associative, not commutative.
/// let matmul = weft::UserOp::new(false, |a: &[i64; 4], b: &[i64; 4]| {
///     [a[0] * b[0] + a[1] * b[2], a[0] * b[1] + a[1] * b[3],
///      a[2] * b[0] + a[3] * b[2], a[2] * b[1] + a[3] * b[3]]
/// });
/// ```
pub struct UserOp<T> {
    combiner: Combiner,
    commutative: bool,
    _elem: PhantomData<fn(T) -> T>,
}

impl<T: Pod + Send + Sync> UserOp<T> {
    /// The operation `f`.
    pub fn new(commutative: bool, f: impl Fn(&T, &T) -> T + Send + Sync + 'static) -> UserOp<T> {
        UserOp {
            combiner: Combiner::user(commutative, f),
            commutative,
            _elem: PhantomData,
        }
    }
}

impl<T> Reduction<T> for &UserOp<T> {
    fn combiner(&self) -> Result<Combiner, String> {
        Ok(self.combiner.clone())
    }

    fn code(&self) -> u32 {
        0xffff_0000 | u32::from(self.commutative)
    }
}

/// A call this PE entered.
struct Entered {
    /// The call's number in the team.
    n: u64,
    call: CallId,
    sig: Signature,
    /// Why the arguments are bad, if they are: boxed, so that a call's
    /// bookkeeping stays in registers (see `flat::Late`).
    checked: Result<(), Box<Cause>>,
}

/// One call's arguments, as bytes.
struct Args<'a> {
    op: &'static str,
    collective: Collective,
    root: usize,
    /// Elements per vector or block.
    count: usize,
    elem: usize,
    input: &'a [u8],
    output: &'a mut [u8],
    reduction: Option<Result<(Combiner, u32), String>>,
}

fn reduction<T>(op: impl Reduction<T>) -> Option<Result<(Combiner, u32), String>> {
    Some(op.combiner().map(|c| (c, op.code())))
}

/// The combiner of a call's `reduction`, if it has a valid one.
fn combiner(reduction: &Option<Result<(Combiner, u32), String>>) -> Option<&Combiner> {
    match reduction {
        Some(Ok((c, _))) => Some(c),
        _ => None,
    }
}

impl World {
    /// The team of every PE, in rank order.
    pub fn team(&self) -> Team<'_> {
        Team {
            world: self,
            inner: self.world_team().clone(),
        }
    }
}

impl<'w> Team<'w> {
    /// This PE's index in the team.
    pub fn rank(&self) -> usize {
        self.inner.me
    }

    /// Number of members.
    pub fn size(&self) -> usize {
        self.inner.members.len()
    }

    /// The members as PEs (world ranks), in team order.
    pub fn members(&self) -> &[usize] {
        &self.inner.members
    }

    /// The world this team belongs to.
    pub fn world(&self) -> &'w World {
        self.world
    }

    /// Enters a call: takes its number, even when the arguments are bad
    /// (the general path then tells the other members, so that they fail
    /// too instead of waiting), and checks them.
    #[inline(always)]
    fn enter(&self, a: &Args<'_>) -> Result<Entered> {
        let w = self.world;
        w.check_live(a.op)?;
        // Refused before the call takes a number: a handler could neither
        // run the call nor tell the other members it failed.
        w.engine().refuse_in_handler(a.op)?;
        // A load and a store, not a locked increment, which would wait for
        // this PE's stores to the others' heaps from its previous call: one
        // thread at a time calls a team's collectives (the threading
        // contract in docs/ARCHITECTURE.md).
        let n = self.inner.calls.load(Ordering::Relaxed);
        self.inner.calls.store(n + 1, Ordering::Relaxed);
        let call = CallId {
            team: self.inner.id,
            seq: n as u32 & SEQ_MASK,
        };
        let code = match &a.reduction {
            Some(Ok((_, code))) => *code,
            _ => 0,
        };
        let sig = Signature {
            collective: a.collective,
            root: a.root,
            bytes: a.count * a.elem,
            elem: a.elem,
            op: code,
        };
        let checked = self.check(a, self.size());
        Ok(Entered {
            n,
            call,
            sig,
            checked,
        })
    }

    /// Takes the general path for a call that did not take the flat one:
    /// picks its algorithm and makes its run; when the arguments are bad,
    /// tells the other members.
    fn prepare(&self, a: Args<'_>, e: Entered) -> Result<CollRun> {
        let w = self.world;
        let p = self.size();
        let Entered {
            call, sig, checked, ..
        } = e;
        let checked = checked.map_err(|c| *c).and_then(|()| {
            let combiner = combiner(&a.reduction).cloned();
            let call = Call {
                collective: a.collective,
                rank: self.inner.me,
                p,
                root: a.root,
                count: a.count,
                elem: a.elem,
                commutative: combiner.as_ref().is_none_or(Combiner::commutative),
            };
            let (algorithm, forced) = match w.config().algorithm_for(a.collective) {
                Some(f) => (f, true),
                None => match self.inner.placement {
                    Placement::Node => (select::choose(&call, &ON_NODE), false),
                    Placement::CrowdedNode => (select::choose_crowded(&call, &ON_NODE), false),
                    Placement::Nodes => (select::choose(&call, &ACROSS_NODES), false),
                },
            };
            let schedule = self.inner.schedule(call, algorithm).map_err(|e| {
                if forced {
                    Cause::Config {
                        var: collective_variable(a.collective),
                        value: algorithm.name().into(),
                        reason: e,
                    }
                } else {
                    Cause::Broken(e)
                }
            })?;
            Ok((schedule, combiner))
        });
        let (schedule, combiner) = match checked {
            Ok(v) => v,
            Err(cause) => {
                let engine = w.engine();
                if let Ok(mut st) = engine.lock(a.op) {
                    let text = format!("rank {} failed {}: {cause}", w.rank(), a.collective);
                    engine.coll_notify(&mut st, &self.inner.members, self.inner.me, call, &text);
                }
                return Err(w.error(a.op, cause));
            }
        };
        // SAFETY: `check` made the buffers as long as the schedule needs;
        // the caller (a blocking call, or a scope for a non-blocking one)
        // keeps them borrowed until the run completes or is cancelled.
        let run = unsafe {
            Run::new(
                schedule,
                CollRun::tag(call, &sig),
                a.input.as_ptr(),
                a.output.as_mut_ptr(),
                combiner,
                &self.inner.scratch,
            )
        };
        Ok(CollRun {
            run,
            members: self.inner.members.clone(),
            me: self.inner.me,
            call,
            sig,
            deserted: self.inner.flat.as_ref().map(|f| f.deserted(e.n)),
            probe: Probe::new(),
        })
    }

    /// Checks the root, the buffers' lengths and the reduction.
    fn check(&self, a: &Args<'_>, p: usize) -> Result<(), Box<Cause>> {
        let rooted = matches!(
            a.collective,
            Collective::Broadcast | Collective::Reduce | Collective::Gather | Collective::Scatter
        );
        if rooted && a.root >= p {
            return Err(Box::new(Cause::Invalid(format!(
                "root {} is not a member of this team of {p}",
                a.root
            ))));
        }
        let bytes = a.count * a.elem;
        let me = self.inner.me;
        let (want_in, want_out) = match a.collective {
            Collective::Allgather => (bytes, p * bytes),
            Collective::Alltoall => (p * bytes, p * bytes),
            Collective::Gather => (bytes, if me == a.root { p * bytes } else { 0 }),
            Collective::Scatter => (if me == a.root { p * bytes } else { 0 }, bytes),
            Collective::ReduceScatter => (p * bytes, bytes),
            _ => (0, bytes),
        };
        let short = |what: &str, have: usize, want: usize| {
            Box::new(Cause::Invalid(format!(
                "the {what} holds {} elements where {} are needed ({} per member x {p} members \
                 or one block)",
                have / a.elem.max(1),
                want / a.elem.max(1),
                a.count
            )))
        };
        if a.input.len() < want_in {
            return Err(short("input", a.input.len(), want_in));
        }
        if a.output.len() < want_out {
            return Err(short("output", a.output.len(), want_out));
        }
        if a.collective == Collective::Alltoall && a.input.len() != a.output.len() {
            return Err(short("output", a.output.len(), a.input.len()));
        }
        match &a.reduction {
            Some(Err(e)) => Err(Box::new(Cause::Invalid(e.clone()))),
            _ => Ok(()),
        }
    }

    /// Runs call `e` on the flat path in `parts`, each under a number of
    /// its own: the call's, then the next ones. Done unless its first part
    /// found a member on the general path; this PE then follows it there,
    /// under the call's number alone. `run` runs each part on the flat
    /// path.
    fn run_flat(
        &self,
        flat: &flat::Region,
        a: &mut Args<'_>,
        e: &Entered,
        parts: flat::Parts,
        mut run: impl FnMut(&flat::Region, &World, flat::Call<'_>) -> Result<flat::Outcome>,
    ) -> Result<flat::Outcome> {
        let w = self.world;
        let mut late = None;
        for k in 0..parts.count {
            let n = e.n + k as u64;
            if k > 0 {
                self.inner.calls.store(n + 1, Ordering::Relaxed);
            }
            let range = parts.range(k);
            let bytes = range.len();
            let call = flat::Call {
                op: a.op,
                n,
                sig: &e.sig,
                part: k,
                bytes,
                at: range.start,
                input: a.input,
                output: &mut *a.output,
                combiner: combiner(&a.reduction),
            };
            let outcome = run(flat, w, call)?;
            late = late.or(outcome.late);
            if !outcome.done && k > 0 {
                let text = format!(
                    "a member took call {n} of the world team, part {k} of this PE's {}, off \
                     the flat path: it counted this team's calls otherwise",
                    describe(&e.sig)
                );
                return Err(w.error(a.op, Cause::Mismatch(text)));
            }
            if !outcome.done {
                return Ok(flat::Outcome { done: false, late });
            }
        }
        Ok(flat::Outcome { done: true, late })
    }

    /// [`Team::run_flat`] for a call whose blocks are not pushed
    /// (`flat::Carry`), out of the way of the small calls' inlined path.
    #[inline(never)]
    fn run_flat_carried(
        &self,
        flat: &flat::Region,
        a: &mut Args<'_>,
        e: &Entered,
        parts: flat::Parts,
    ) -> Result<flat::Outcome> {
        let mut failed = None;
        let outcome = self.run_flat(flat, a, e, parts, |f, w, c| {
            f.run_carried(w, c, parts.carry, &mut failed)
        })?;
        match failed {
            Some(cause) => Err(self.world.error(a.op, cause)),
            None => Ok(outcome),
        }
    }

    /// Runs a call to completion: calls of a team with a flat path that
    /// fit it take it unless a member does not, the others the general
    /// path.
    fn run(&self, mut a: Args<'_>) -> Result<()> {
        let op = a.op;
        let w = self.world;
        let e = self.enter(&a)?;
        // What was wrong with earlier calls this PE left on the flat path
        // without waiting for every member, to report after this one.
        let mut late = None;
        if let Some(flat) = &self.inner.flat {
            let forced = w.config().algorithm_for(a.collective).is_some();
            let parts = match &e.checked {
                Ok(()) if !forced => {
                    flat.parts(&e.sig, self.inner.placement == Placement::CrowdedNode)
                }
                _ => None,
            };
            match parts {
                Some(parts) => {
                    let outcome = if parts.carry == flat::Carry::Pushed {
                        self.run_flat(flat, &mut a, &e, parts, |f, w, c| f.run(w, c))?
                    } else {
                        self.run_flat_carried(flat, &mut a, &e, parts)?
                    };
                    if outcome.done {
                        // A `match`, not `map_or(Ok(()), ..)`, which built the
                        // `Ok` in memory and copied it in pieces of another size
                        // (no store forwarding: see `flat::Late`).
                        return match outcome.late {
                            None => Ok(()),
                            Some(c) => Err(w.error(op, *c)),
                        };
                    }
                    late = outcome.late;
                }
                None => {
                    late = flat.recent(e.n);
                    flat.post(w, op, e.n)?;
                }
            }
        }
        self.run_general(a, e, late)
    }

    /// Runs a call on the general path: its schedule of messages, advanced
    /// by the progress engine. `late` is what was wrong with earlier calls
    /// this PE left on the flat path, reported once this one is done. Out
    /// of [`Team::run`]'s inlined flat path, whose code it would crowd.
    #[inline(never)]
    fn run_general(&self, a: Args<'_>, e: Entered, late: flat::Late) -> Result<()> {
        let (op, w) = (a.op, self.world);
        let mut r = self.prepare(a, e)?;
        let engine = w.engine();
        engine.coll_enter(&mut *engine.lock(op)?, &r);
        let waiting = RefCell::new(Vec::new());
        let result = engine.wait(op, Watch::Listed(&waiting), |st| {
            match engine.coll_advance(st, &mut r) {
                Ok(true) => Some(Ok(())),
                Ok(false) => {
                    let mut w = waiting.borrow_mut();
                    w.clear();
                    w.extend(r.waiting_for());
                    None
                }
                Err(c) => Some(Err(c)),
            }
        });
        if let Err(e) = &result {
            if r.run.in_flight() {
                if let Ok(mut st) = engine.lock(op) {
                    engine.coll_abandon(&mut st, &mut r, &e.cause);
                }
            }
        }
        result.and_then(|()| late.map_or(Ok(()), |c| Err(w.error(op, *c))))
    }

    /// Waits until every member has entered the barrier. Unlike
    /// [`World::barrier_all`] it does not complete outstanding puts.
    pub fn barrier(&self) -> Result<()> {
        self.run(barrier_args("barrier"))
    }

    /// Copies `data` of member `root` into `data` of every member.
    ///
    /// ```no_run
    /// let world = weft::init()?;
    /// let mut config = [0u32; 4];
    /// if world.rank() == 0 { config = [1, 2, 3, 4]; }
    /// world.team().broadcast(0, &mut config)?;
    /// # Ok::<(), weft::Error>(())
    /// ```
    pub fn broadcast<T: Pod>(&self, root: usize, data: &mut [T]) -> Result<()> {
        self.run(rooted_in_place::<T>(
            "broadcast",
            Collective::Broadcast,
            root,
            data,
            None,
        ))
    }

    /// Reduces every member's `data` element-wise into `data` of `root`;
    /// the others' `data` is left unchanged.
    pub fn reduce<T: Pod>(&self, root: usize, data: &mut [T], op: impl Reduction<T>) -> Result<()> {
        let r = reduction(op);
        self.run(rooted_in_place::<T>(
            "reduce",
            Collective::Reduce,
            root,
            data,
            r,
        ))
    }

    /// Reduces every member's `data` element-wise into `data` of every
    /// member; every member gets bit-identical results.
    ///
    /// ```no_run
    /// use weft::ReduceOp;
    /// let world = weft::init()?;
    /// let mut sum = [world.rank() as f64];
    /// world.team().allreduce(&mut sum, ReduceOp::Sum)?;
    /// # Ok::<(), weft::Error>(())
    /// ```
    pub fn allreduce<T: Pod>(&self, data: &mut [T], op: impl Reduction<T>) -> Result<()> {
        let r = reduction(op);
        self.run(rooted_in_place::<T>(
            "allreduce",
            Collective::Allreduce,
            0,
            data,
            r,
        ))
    }

    /// Inclusive prefix reduction: member `r`'s `data` becomes the
    /// reduction of members `0..=r`'s.
    pub fn scan<T: Pod>(&self, data: &mut [T], op: impl Reduction<T>) -> Result<()> {
        let r = reduction(op);
        self.run(rooted_in_place::<T>("scan", Collective::Scan, 0, data, r))
    }

    /// Exclusive prefix reduction: member `r`'s `data` becomes the
    /// reduction of members `0..r`'s; member 0's is left unchanged.
    pub fn exscan<T: Pod>(&self, data: &mut [T], op: impl Reduction<T>) -> Result<()> {
        let r = reduction(op);
        self.run(rooted_in_place::<T>(
            "exscan",
            Collective::Exscan,
            0,
            data,
            r,
        ))
    }

    /// Gathers every member's `block` into `out` of every member, in
    /// member order; `out` holds `size() * block.len()` elements.
    pub fn allgather<T: Pod>(&self, block: &[T], out: &mut [T]) -> Result<()> {
        self.run(blocks::<T>(
            "allgather",
            Collective::Allgather,
            0,
            block,
            out,
            None,
        ))
    }

    /// Gathers every member's `block` into `out` of `root`, in member
    /// order; `out` holds `size() * block.len()` elements at the root and
    /// is not used elsewhere (it may be empty).
    pub fn gather<T: Pod>(&self, root: usize, block: &[T], out: &mut [T]) -> Result<()> {
        self.run(blocks::<T>(
            "gather",
            Collective::Gather,
            root,
            block,
            out,
            None,
        ))
    }

    /// Hands block `j` of `root`'s `data` (`size()` blocks of
    /// `block.len()` elements) to member `j`'s `block`; `data` is not used
    /// elsewhere (it may be empty).
    pub fn scatter<T: Pod>(&self, root: usize, data: &[T], block: &mut [T]) -> Result<()> {
        self.run(scatter_args::<T>("scatter", root, data, block))
    }

    /// Sends block `j` of `data` (`size()` equal blocks) to member `j`,
    /// which finds it as block `r` of `out` (`r` this member's rank).
    pub fn alltoall<T: Pod>(&self, data: &[T], out: &mut [T]) -> Result<()> {
        self.run(all_to_all::<T>(data, out, self.size()))
    }

    /// Reduces every member's `data` (`size()` blocks of `block.len()`
    /// elements) element-wise and hands member `r` block `r` of the result.
    pub fn reduce_scatter<T: Pod>(
        &self,
        data: &[T],
        block: &mut [T],
        op: impl Reduction<T>,
    ) -> Result<()> {
        let r = reduction(op);
        self.run(reduce_scatter_args::<T>("reduce_scatter", data, block, r))
    }

    /// Splits the team by `color`: members passing the same color form a
    /// new team, ordered by `key` and then by rank in this team; those
    /// passing `None` get `None`. Collective over this team.
    ///
    /// ```no_run
    /// let world = weft::init()?;
    /// let row = world.team().split(Some((world.rank() / 2) as u32), 0)?.unwrap();
    /// row.barrier()?;
    /// # Ok::<(), weft::Error>(())
    /// ```
    pub fn split(&self, color: Option<u32>, key: i64) -> Result<Option<Team<'w>>> {
        const OP: &str = "split";
        let params = [color.map_or(0, |c| u64::from(c) + 1), key as u64];
        let (all, id) = self.agree_on_id(OP, &params)?;
        let Some(color) = color else {
            return Ok(None);
        };
        let mut chosen: Vec<(i64, usize)> = (0..self.size())
            .filter(|&i| all[i][0] == u64::from(color) + 1)
            .map(|i| (all[i][1] as i64, i))
            .collect();
        chosen.sort_unstable();
        let members: Vec<usize> = chosen.iter().map(|&(_, i)| self.members()[i]).collect();
        let me = chosen
            .iter()
            .position(|&(_, i)| i == self.rank())
            .expect("this member passed its own color");
        Ok(Some(self.child(id, members, me)))
    }

    /// The team of members `start, start + stride, ...` (`size` of them) of
    /// this team, as OpenSHMEM's `shmem_team_split_strided`; members
    /// outside it get `None`. Collective over this team; every member must
    /// pass the same arguments.
    pub fn split_strided(
        &self,
        start: usize,
        stride: usize,
        size: usize,
    ) -> Result<Option<Team<'w>>> {
        const OP: &str = "split_strided";
        let p = self.size();
        let last = size
            .checked_sub(1)
            .and_then(|k| k.checked_mul(stride))
            .and_then(|o| o.checked_add(start));
        let fits = size > 0 && stride > 0 && last.is_some_and(|l| l < p);
        let params = [start as u64, stride as u64, size as u64];
        let (all, id) = self.agree_on_id(OP, &params)?;
        if let Some(i) = (0..p).find(|&i| all[i] != params) {
            let [s, t, n] = all[i];
            return Err(self.world.error(
                OP,
                Cause::Mismatch(format!(
                    "member {i} (PE {}) asked for start {s}, stride {t}, size {n}; this member \
                     for start {start}, stride {stride}, size {size}",
                    self.members()[i]
                )),
            ));
        }
        if !fits {
            return Err(self.world.error(
                OP,
                Cause::Invalid(format!(
                    "start {start}, stride {stride}, size {size} do not fit in a team of {p}"
                )),
            ));
        }
        let me = self.rank();
        let members: Vec<usize> = (0..size)
            .map(|k| self.members()[start + k * stride])
            .collect();
        let pos = (me >= start && (me - start) % stride == 0 && (me - start) / stride < size)
            .then(|| (me - start) / stride);
        Ok(pos.map(|pos| self.child(id, members, pos)))
    }

    /// A new team with the same members in the same order, whose
    /// collectives never mix with this team's. Collective over this team.
    pub fn dup(&self) -> Result<Team<'w>> {
        let t = self.split(Some(0), self.rank() as i64)?;
        Ok(t.expect("every member passed a color"))
    }

    fn child(&self, id: u32, members: Vec<usize>, me: usize) -> Team<'w> {
        let w = self.world;
        let placement = Placement::of(
            w.engine().oversubscribed(),
            w.on_node(),
            members.iter().copied(),
        );
        Team {
            world: w,
            inner: TeamInner::new(
                id,
                members,
                me,
                self.inner.ids.clone(),
                self.inner.scratch.clone(),
                None,
                placement,
            ),
        }
    }

    /// Allgathers `params` with the ids free on this member; returns every
    /// member's params and the lowest id free on all of them.
    fn agree_on_id<const N: usize>(
        &self,
        op: &'static str,
        params: &[u64; N],
    ) -> Result<(Vec<[u64; N]>, u32)> {
        let free = self.inner.ids.lock().free_mask();
        let mut mine = params.to_vec();
        mine.extend_from_slice(&free);
        let width = mine.len();
        let mut all = vec![0u64; width * self.size()];
        self.allgather(&mine, &mut all)?;
        let mut common = [u64::MAX; ID_WORDS];
        for m in all.chunks(width) {
            for (c, w) in common.iter_mut().zip(&m[N..]) {
                *c &= w;
            }
        }
        let id = (0..TEAM_IDS).find(|&i| common[i / 64] & (1 << (i % 64)) != 0);
        let id = id.ok_or_else(|| {
            self.world.error(
                op,
                Cause::Invalid(format!("all {} team ids are in use", TEAM_IDS - 1)),
            )
        })?;
        let params = all
            .chunks(width)
            .map(|m| std::array::from_fn(|k| m[k]))
            .collect();
        Ok((params, id as u32))
    }
}

fn barrier_args(op: &'static str) -> Args<'static> {
    Args {
        op,
        collective: Collective::Barrier,
        root: 0,
        count: 0,
        elem: 1,
        input: &[],
        output: &mut [],
        reduction: None,
    }
}

fn scatter_args<'a, T: Pod>(
    op: &'static str,
    root: usize,
    data: &'a [T],
    block: &'a mut [T],
) -> Args<'a> {
    Args {
        op,
        collective: Collective::Scatter,
        root,
        count: block.len(),
        elem: size_of::<T>(),
        input: bytemuck::cast_slice(data),
        output: bytemuck::cast_slice_mut(block),
        reduction: None,
    }
}

fn reduce_scatter_args<'a, T: Pod>(
    op: &'static str,
    data: &'a [T],
    block: &'a mut [T],
    reduction: Option<Result<(Combiner, u32), String>>,
) -> Args<'a> {
    Args {
        op,
        collective: Collective::ReduceScatter,
        root: 0,
        count: block.len(),
        elem: size_of::<T>(),
        input: bytemuck::cast_slice(data),
        output: bytemuck::cast_slice_mut(block),
        reduction,
    }
}

fn rooted_in_place<'a, T: Pod>(
    op: &'static str,
    collective: Collective,
    root: usize,
    data: &'a mut [T],
    reduction: Option<Result<(Combiner, u32), String>>,
) -> Args<'a> {
    Args {
        op,
        collective,
        root,
        count: data.len(),
        elem: size_of::<T>(),
        input: &[],
        output: bytemuck::cast_slice_mut(data),
        reduction,
    }
}

fn blocks<'a, T: Pod>(
    op: &'static str,
    collective: Collective,
    root: usize,
    block: &'a [T],
    out: &'a mut [T],
    reduction: Option<Result<(Combiner, u32), String>>,
) -> Args<'a> {
    Args {
        op,
        collective,
        root,
        count: block.len(),
        elem: size_of::<T>(),
        input: bytemuck::cast_slice(block),
        output: bytemuck::cast_slice_mut(out),
        reduction,
    }
}

fn all_to_all<'a, T: Pod>(data: &'a [T], out: &'a mut [T], p: usize) -> Args<'a> {
    Args {
        op: "alltoall",
        collective: Collective::Alltoall,
        root: 0,
        count: data.len() / p.max(1),
        elem: size_of::<T>(),
        input: bytemuck::cast_slice(data),
        output: bytemuck::cast_slice_mut(out),
        reduction: None,
    }
}

/// Non-blocking collectives: each starts the call and returns a request
/// that the progress engine advances; the scope keeps the buffers borrowed
/// until it completes.
impl<'s, 'w> Scope<'s, 'w> {
    fn start(&'s self, team: &Team<'w>, a: Args<'s>) -> Result<Request<'s, 'w>> {
        let op = a.op;
        let e = team.enter(&a)?;
        if let Some(flat) = &team.inner.flat {
            flat.post(team.world, op, e.n)?;
        }
        let r = team.prepare(a, e)?;
        let engine = team.world.engine();
        let id = engine.coll_start(&mut *engine.lock(op)?, r);
        Ok(self.track(id, op, Watch::Request(id)))
    }

    /// Starts [`Team::barrier`].
    pub fn ibarrier(&'s self, team: &Team<'w>) -> Result<Request<'s, 'w>> {
        self.start(team, barrier_args("ibarrier"))
    }

    /// Starts [`Team::broadcast`].
    pub fn ibroadcast<T: Pod>(
        &'s self,
        team: &Team<'w>,
        root: usize,
        data: &'s mut [T],
    ) -> Result<Request<'s, 'w>> {
        let a = rooted_in_place::<T>("ibroadcast", Collective::Broadcast, root, data, None);
        self.start(team, a)
    }

    /// Starts [`Team::reduce`].
    pub fn ireduce<T: Pod>(
        &'s self,
        team: &Team<'w>,
        root: usize,
        data: &'s mut [T],
        op: impl Reduction<T>,
    ) -> Result<Request<'s, 'w>> {
        let r = reduction(op);
        let a = rooted_in_place::<T>("ireduce", Collective::Reduce, root, data, r);
        self.start(team, a)
    }

    /// Starts [`Team::allreduce`].
    pub fn iallreduce<T: Pod>(
        &'s self,
        team: &Team<'w>,
        data: &'s mut [T],
        op: impl Reduction<T>,
    ) -> Result<Request<'s, 'w>> {
        let r = reduction(op);
        let a = rooted_in_place::<T>("iallreduce", Collective::Allreduce, 0, data, r);
        self.start(team, a)
    }

    /// Starts [`Team::scan`].
    pub fn iscan<T: Pod>(
        &'s self,
        team: &Team<'w>,
        data: &'s mut [T],
        op: impl Reduction<T>,
    ) -> Result<Request<'s, 'w>> {
        let r = reduction(op);
        self.start(
            team,
            rooted_in_place::<T>("iscan", Collective::Scan, 0, data, r),
        )
    }

    /// Starts [`Team::exscan`].
    pub fn iexscan<T: Pod>(
        &'s self,
        team: &Team<'w>,
        data: &'s mut [T],
        op: impl Reduction<T>,
    ) -> Result<Request<'s, 'w>> {
        let r = reduction(op);
        self.start(
            team,
            rooted_in_place::<T>("iexscan", Collective::Exscan, 0, data, r),
        )
    }

    /// Starts [`Team::allgather`].
    pub fn iallgather<T: Pod>(
        &'s self,
        team: &Team<'w>,
        block: &'s [T],
        out: &'s mut [T],
    ) -> Result<Request<'s, 'w>> {
        let a = blocks::<T>("iallgather", Collective::Allgather, 0, block, out, None);
        self.start(team, a)
    }

    /// Starts [`Team::gather`].
    pub fn igather<T: Pod>(
        &'s self,
        team: &Team<'w>,
        root: usize,
        block: &'s [T],
        out: &'s mut [T],
    ) -> Result<Request<'s, 'w>> {
        let a = blocks::<T>("igather", Collective::Gather, root, block, out, None);
        self.start(team, a)
    }

    /// Starts [`Team::scatter`].
    pub fn iscatter<T: Pod>(
        &'s self,
        team: &Team<'w>,
        root: usize,
        data: &'s [T],
        block: &'s mut [T],
    ) -> Result<Request<'s, 'w>> {
        self.start(team, scatter_args::<T>("iscatter", root, data, block))
    }

    /// Starts [`Team::alltoall`].
    pub fn ialltoall<T: Pod>(
        &'s self,
        team: &Team<'w>,
        data: &'s [T],
        out: &'s mut [T],
    ) -> Result<Request<'s, 'w>> {
        let mut a = all_to_all::<T>(data, out, team.size());
        a.op = "ialltoall";
        self.start(team, a)
    }

    /// Starts [`Team::reduce_scatter`].
    pub fn ireduce_scatter<T: Pod>(
        &'s self,
        team: &Team<'w>,
        data: &'s [T],
        block: &'s mut [T],
        op: impl Reduction<T>,
    ) -> Result<Request<'s, 'w>> {
        let r = reduction(op);
        self.start(
            team,
            reduce_scatter_args::<T>("ireduce_scatter", data, block, r),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::Placement;

    #[test]
    fn every_member_sees_the_same_placement() {
        // PEs 0-2 on this node, 3 on another.
        let on_node = [true, true, true, false];
        let of = |over, members: &[usize]| Placement::of(over, &on_node, members.iter().copied());
        assert_eq!(of(true, &[0, 1, 2]), Placement::CrowdedNode);
        assert_eq!(of(true, &[1]), Placement::CrowdedNode);
        assert_eq!(of(false, &[0, 1, 2]), Placement::Node);
        assert_eq!(of(true, &[0, 1, 2, 3]), Placement::Nodes);
        assert_eq!(of(false, &[2, 3]), Placement::Nodes);
        // PE 3's node, not crowded, answers the same for the teams it is in.
        let there = [false, false, false, true];
        assert_eq!(Placement::of(false, &there, 0..4), Placement::Nodes);
        assert_eq!(
            Placement::of(false, &there, [2, 3].into_iter()),
            Placement::Nodes
        );
    }
}
