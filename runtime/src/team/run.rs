//! How a team's call runs: entering it, checking its arguments, the flat
//! path of the world team on one node (whole or in parts) and the general
//! path's schedules, and the arguments of each collective as bytes.

use std::cell::RefCell;
use std::sync::atomic::Ordering;

use bytemuck::Pod;
use weft_collectives::exec::Run;
use weft_collectives::op::Combiner;
use weft_collectives::select::{self, Call};
use weft_collectives::{Collective, Signature};

use super::reduction::combiner;
use super::{Placement, Team, ACROSS_NODES, ON_NODE};
use crate::config::collective_variable;
use crate::error::{Cause, Result};
use crate::flat;
use crate::progress::coll::{describe, CallId, CollRun, Probe, SEQ_MASK};
use crate::progress::Watch;
use crate::World;

/// A call this PE entered.
pub(super) struct Entered {
    /// The call's number in the team.
    pub(super) n: u64,
    pub(super) call: CallId,
    pub(super) sig: Signature,
    /// Why the arguments are bad, if they are: boxed, so that a call's
    /// bookkeeping stays in registers (see `flat::Late`).
    pub(super) checked: Result<(), Box<Cause>>,
}

/// One call's arguments, as bytes.
pub(super) struct Args<'a> {
    pub(super) op: &'static str,
    pub(super) collective: Collective,
    pub(super) root: usize,
    /// Elements per vector or block.
    pub(super) count: usize,
    pub(super) elem: usize,
    pub(super) input: &'a [u8],
    pub(super) output: &'a mut [u8],
    pub(super) reduction: Option<Result<(Combiner, u32), String>>,
}

impl<'w> Team<'w> {
    /// Enters a call: takes its number, even when the arguments are bad
    /// (the general path then tells the other members, so that they fail
    /// too instead of waiting), and checks them.
    #[inline(always)]
    pub(super) fn enter(&self, a: &Args<'_>) -> Result<Entered> {
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
    pub(super) fn prepare(&self, a: Args<'_>, e: Entered) -> Result<CollRun> {
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
    /// (`flat::Carry`), or that member 0 times (`flat::Parts::timed`), out
    /// of the way of the small calls' inlined path.
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
            None => {
                if outcome.done && parts.timed {
                    flat.timed();
                }
                Ok(outcome)
            }
        }
    }

    /// Runs a call to completion: calls of a team with a flat path that
    /// fit it take it unless a member does not, the others the general
    /// path.
    pub(super) fn run(&self, mut a: Args<'_>) -> Result<()> {
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
                    flat.parts(&e.sig, e.n, self.inner.placement == Placement::CrowdedNode)
                }
                _ => None,
            };
            match parts {
                Some(parts) => {
                    let outcome = if parts.carry == flat::Carry::Pushed && !parts.timed {
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
}

pub(super) fn barrier_args(op: &'static str) -> Args<'static> {
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

pub(super) fn scatter_args<'a, T: Pod>(
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

pub(super) fn reduce_scatter_args<'a, T: Pod>(
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

pub(super) fn rooted_in_place<'a, T: Pod>(
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

pub(super) fn blocks<'a, T: Pod>(
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

pub(super) fn all_to_all<'a, T: Pod>(data: &'a [T], out: &'a mut [T], p: usize) -> Args<'a> {
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
