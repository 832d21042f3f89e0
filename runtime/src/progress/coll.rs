//! Collectives inside the engine: the [`Channel`] their schedules run
//! over, the runs of non-blocking collectives that every progress call
//! advances, and the checks that turn members calling a collective
//! differently into errors instead of hangs.
//!
//! A collective's messages carry the class Collective, a context of the
//! team's id and the call's sequence number in the team, and a tag that is
//! a digest of the call's signature (collective, root, size, element type,
//! operation). Members that disagree therefore never match each other's
//! messages. A message that arrives for a call this PE is in, under
//! another tag, marks the call as failed; so does a notice (the reserved
//! tag) from a member that failed the call. The member that sees a
//! disagreement first tells every other member with such a notice, so the
//! whole team fails instead of waiting.

use std::collections::VecDeque;
use std::sync::Arc;

use weft_collectives::exec::Run;
use weft_collectives::{Channel, Signature, RESERVED_TAG};

use super::wire::{Class, Envelope};
use super::{Completion, Engine, Entry, Id, Match, RawBuf, Req, SendMode, State};
use crate::error::Cause;
use crate::p2p::{Status, Tag};

/// Bits of a collective context that hold the team's id; the rest hold
/// the call's sequence number.
pub(crate) const SEQ_BITS: u32 = 12;
pub(crate) const SEQ_MASK: u32 = (1 << SEQ_BITS) - 1;

/// One member's part in one collective call.
pub(crate) struct CollRun {
    pub(crate) run: Run<Id>,
    /// The team's members as PEs.
    pub(crate) members: Arc<[usize]>,
    /// This PE's index among them.
    pub(crate) me: usize,
    pub(crate) ctx: u32,
    pub(crate) sig: Signature,
}

impl CollRun {
    fn team(&self) -> u32 {
        self.ctx >> SEQ_BITS
    }

    fn seq(&self) -> u32 {
        self.ctx & SEQ_MASK
    }

    /// The PEs this call waits for now.
    pub(crate) fn waiting_for(&self) -> impl Iterator<Item = usize> + '_ {
        self.run.waiting_for().map(|m| self.members[m])
    }
}

/// A call that failed.
struct Failure {
    ctx: u32,
    text: String,
    /// Whether a member told this PE (so this PE need not tell the team).
    told: bool,
}

/// The engine's collective state.
#[derive(Default)]
pub(crate) struct CollState {
    /// Calls this PE is in: context and signature.
    active: Vec<(u32, Signature)>,
    /// Calls known to have failed.
    failed: Vec<Failure>,
    /// Non-blocking calls, advanced by every progress call.
    pub(crate) runs: Vec<Id>,
    /// Calls this PE failed lately: messages and notices still arriving
    /// for them are dropped.
    abandoned: VecDeque<u32>,
    /// Per team this PE entered a call of: the latest call's context.
    latest: Vec<u32>,
    /// Per team: the failure of a call this PE had finished, to report
    /// after the team's current or next call.
    deferred: Vec<(u32, String)>,
}

/// How many failed calls a PE remembers.
const ABANDONED_KEPT: usize = 256;

impl CollState {
    fn failure(&self, ctx: u32) -> Option<&Failure> {
        self.failed.iter().find(|f| f.ctx == ctx)
    }

    fn fail(&mut self, ctx: u32, text: String, told: bool) {
        if self.failure(ctx).is_none() && !self.abandoned.contains(&ctx) {
            self.failed.push(Failure { ctx, text, told });
        }
    }

    fn abandon(&mut self, ctx: u32) {
        self.failed.retain(|f| f.ctx != ctx);
        if self.abandoned.len() == ABANDONED_KEPT {
            self.abandoned.pop_front();
        }
        self.abandoned.push_back(ctx);
    }
}

/// A schedule's view of the engine for one call.
struct EngineChannel<'a> {
    engine: &'a Engine,
    st: &'a mut State,
    members: &'a [usize],
    me: usize,
    ctx: u32,
}

impl EngineChannel<'_> {
    fn pe(&self, peer: usize) -> Result<usize, Cause> {
        self.members
            .get(peer)
            .copied()
            .ok_or_else(|| Cause::Broken(format!("a schedule named member {peer}")))
    }
}

impl Channel for EngineChannel<'_> {
    type Error = Cause;
    type Pending = Id;

    fn rank(&self) -> usize {
        self.me
    }

    fn size(&self) -> usize {
        self.members.len()
    }

    unsafe fn start_send(
        &mut self,
        peer: usize,
        tag: u32,
        data: *const u8,
        len: usize,
    ) -> Result<Option<Id>, Cause> {
        let env = Envelope {
            class: Class::Collective,
            ctx: self.ctx,
            tag,
        };
        let dest = self.pe(peer)?;
        self.engine
            .send(self.st, dest, env, data, len, SendMode::Auto)
    }

    unsafe fn start_recv(
        &mut self,
        peer: usize,
        tag: u32,
        buf: *mut u8,
        cap: usize,
    ) -> Result<Id, Cause> {
        let m = Match {
            class: Class::Collective,
            ctx: self.ctx,
            source: Some(self.pe(peer)?),
            tag: Some(tag),
        };
        self.engine.post_recv(self.st, m, RawBuf { ptr: buf, cap })
    }

    fn test(&mut self, op: &mut Id) -> Result<Option<usize>, Cause> {
        if !Engine::is_done(self.st, *op) {
            return Ok(None);
        }
        match Engine::take(self.st, *op) {
            Some(Ok(Completion::Received(s))) => Ok(Some(s.message_len)),
            Some(Ok(Completion::Sent(s))) => Ok(Some(s.len)),
            Some(Ok(_)) => Err(Cause::Broken("a collective message completed oddly".into())),
            Some(Err(c)) => Err(c),
            None => Ok(None),
        }
    }

    fn cancel(&mut self, op: Id) {
        self.engine.cancel(self.st, op);
    }
}

fn describe(sig: &Signature) -> String {
    format!(
        "{} with root {}, {} bytes of {}-byte elements, operation {}",
        sig.collective, sig.root, sig.bytes, sig.elem, sig.op
    )
}

impl Engine {
    /// Enters a call: from now on, messages for it under another tag, and
    /// notices about it, fail it. Fails it at once if such a message or
    /// notice is already here.
    pub(crate) fn coll_enter(&self, st: &mut State, r: &CollRun) {
        st.coll.active.push((r.ctx, r.sig));
        let team = r.team();
        match st.coll.latest.iter_mut().find(|c| **c >> SEQ_BITS == team) {
            Some(c) => *c = r.ctx,
            None => st.coll.latest.push(r.ctx),
        }
        let tag = r.sig.tag();
        let mut strays = Vec::new();
        let mut found = None;
        for (i, u) in st.unexpected.iter().enumerate() {
            if u.env.class != Class::Collective || u.env.ctx >> SEQ_BITS != team {
                continue;
            }
            if u.env.ctx == r.ctx && u.env.tag != tag {
                found = Some(format!(
                    "PE {} called this collective (call {} of team {team}) differently \
                     from this PE, which called {}",
                    u.source,
                    r.seq(),
                    describe(&r.sig)
                ));
            } else if Self::finished(st, u.env.ctx) {
                strays.push((i, u.source, u.env.ctx));
            }
        }
        for &(i, source, ctx) in strays.iter().rev() {
            st.unexpected.remove(i);
            Self::coll_defer_stray(st, source, ctx);
        }
        if let Some(text) = found {
            st.coll.fail(r.ctx, text, false);
        }
    }

    /// Whether `ctx` is a call of its team that this PE has finished.
    fn finished(st: &State, ctx: u32) -> bool {
        let team = ctx >> SEQ_BITS;
        let Some(&latest) = st.coll.latest.iter().find(|c| **c >> SEQ_BITS == team) else {
            return false;
        };
        let behind = latest.wrapping_sub(ctx) & SEQ_MASK;
        behind != 0 && behind < SEQ_MASK / 2 && !st.coll.active.iter().any(|(c, _)| *c == ctx)
    }

    /// Leaves a call (done, failed or cancelled).
    fn coll_leave(st: &mut State, ctx: u32) {
        st.coll.active.retain(|(c, _)| *c != ctx);
        st.coll.failed.retain(|f| f.ctx != ctx);
    }

    /// Looks at a collective message as it arrives; `true` if it goes no
    /// further (a notice, a stray, or a message for a call this PE failed).
    pub(super) fn coll_arrived(
        st: &mut State,
        source: usize,
        env: Envelope,
        payload: &[u8],
    ) -> bool {
        if st.coll.abandoned.contains(&env.ctx) {
            return true;
        }
        let finished = Self::finished(st, env.ctx);
        if env.tag == RESERVED_TAG {
            let text = format!("PE {source} reported: {}", String::from_utf8_lossy(payload));
            if finished {
                Self::coll_defer(st, env.ctx, text);
            } else {
                st.coll.fail(env.ctx, text, true);
            }
            return true;
        }
        if finished {
            Self::coll_defer_stray(st, source, env.ctx);
            return true;
        }
        if let Some((_, sig)) = st.coll.active.iter().find(|(c, _)| *c == env.ctx) {
            if sig.tag() != env.tag {
                let text = format!(
                    "PE {source} called this collective (call {} of team {}) differently \
                     from this PE, which called {}",
                    env.ctx & SEQ_MASK,
                    env.ctx >> SEQ_BITS,
                    describe(sig)
                );
                st.coll.fail(env.ctx, text, false);
            }
        }
        false
    }

    /// A message arrived for a call this PE had finished: the sender called
    /// it differently (a call takes every message its members send for it).
    fn coll_defer_stray(st: &mut State, source: usize, ctx: u32) {
        let text = format!(
            "PE {source} sent a message for it after this PE had finished it: the PEs called \
             it differently"
        );
        Self::coll_defer(st, ctx, text);
    }

    /// Keeps the news that finished call `ctx` failed elsewhere, for the
    /// team's current or next call to report once it has completed (so
    /// that the members still in that call are not left waiting).
    fn coll_defer(st: &mut State, ctx: u32, text: String) {
        let team = ctx >> SEQ_BITS;
        if !st.coll.deferred.iter().any(|(t, _)| *t == team) {
            let text = format!("call {} of team {team} failed: {text}", ctx & SEQ_MASK);
            st.coll.deferred.push((team, text));
        }
    }

    /// Moves a call along; `Ok(true)` once it is done. A failed call is
    /// cancelled and left, and the other members are told why.
    pub(crate) fn coll_advance(&self, st: &mut State, r: &mut CollRun) -> Result<bool, Cause> {
        let known = st.coll.failure(r.ctx).map(|f| f.text.clone());
        let result = match known {
            Some(text) => Err(Cause::Mismatch(text)),
            None => {
                let mut chan = EngineChannel {
                    engine: self,
                    st,
                    members: &r.members,
                    me: r.me,
                    ctx: r.ctx,
                };
                r.run.advance(&mut chan).map_err(|e| match e {
                    weft_collectives::Error::Channel(c) => c,
                    e @ weft_collectives::Error::Length { .. } => {
                        Cause::Mismatch(format!("{e}; this PE called {}", describe(&r.sig)))
                    }
                })
            }
        };
        match result {
            Ok(false) => Ok(false),
            Ok(true) => {
                Self::coll_leave(st, r.ctx);
                let team = r.team();
                match st.coll.deferred.iter().position(|(t, _)| *t == team) {
                    Some(i) => Err(Cause::Mismatch(st.coll.deferred.swap_remove(i).1)),
                    None => Ok(true),
                }
            }
            Err(cause) => {
                self.coll_abandon(st, r, &cause);
                Err(cause)
            }
        }
    }

    /// Cancels a call's messages, leaves it and tells the other members
    /// why, unless they told this PE.
    pub(crate) fn coll_abandon(&self, st: &mut State, r: &mut CollRun, cause: &Cause) {
        {
            let mut chan = EngineChannel {
                engine: self,
                st,
                members: &r.members,
                me: r.me,
                ctx: r.ctx,
            };
            r.run.cancel(&mut chan);
        }
        let told = st.coll.failure(r.ctx).is_some_and(|f| f.told);
        Self::coll_leave(st, r.ctx);
        st.coll.abandon(r.ctx);
        let ctx = r.ctx;
        st.unexpected
            .retain(|u| !(u.env.class == Class::Collective && u.env.ctx == ctx));
        if told {
            return;
        }
        let text = format!("rank {} failed {}: {cause}", self.rank, r.sig.collective);
        self.coll_notify(st, &r.members, r.me, r.ctx, &text);
    }

    /// Tells every other member that this PE failed call `ctx`, and
    /// forgets the call.
    pub(crate) fn coll_notify(
        &self,
        st: &mut State,
        members: &[usize],
        me: usize,
        ctx: u32,
        text: &str,
    ) {
        if !st.coll.abandoned.contains(&ctx) {
            st.coll.abandon(ctx);
        }
        let env = Envelope {
            class: Class::Collective,
            ctx,
            tag: RESERVED_TAG,
        };
        for (i, &pe) in members.iter().enumerate() {
            if i != me {
                // A member that cannot be told is gone; its own failure
                // reaches the others.
                let _ = self.send_owned(st, pe, env, text.as_bytes().to_vec());
            }
        }
    }

    /// Starts a non-blocking call: the engine advances it on every
    /// progress call until it completes.
    pub(crate) fn coll_start(&self, st: &mut State, r: CollRun) -> Id {
        self.coll_enter(st, &r);
        let id = st.reqs.insert(Entry {
            req: Req::Collective(Some(Box::new(r))),
            detached: false,
        });
        st.coll.runs.push(id);
        id
    }

    /// Advances every non-blocking call once.
    pub(super) fn coll_progress(&self, st: &mut State) {
        let mut i = 0;
        while i < st.coll.runs.len() {
            let id = st.coll.runs[i];
            let taken = match st.reqs.get_mut(id) {
                Some(Entry {
                    req: Req::Collective(r),
                    ..
                }) => r.take(),
                _ => None,
            };
            let Some(mut r) = taken else {
                st.coll.runs.swap_remove(i);
                continue;
            };
            let outcome = self.coll_advance(st, &mut r);
            match outcome {
                Ok(false) => {
                    if let Some(Entry {
                        req: Req::Collective(slot),
                        ..
                    }) = st.reqs.get_mut(id)
                    {
                        *slot = Some(r);
                    }
                    i += 1;
                }
                Ok(true) => {
                    st.coll.runs.swap_remove(i);
                    // A collective request completes with an empty status.
                    let status = Status {
                        source: self.rank,
                        tag: Tag(0),
                        len: 0,
                        message_len: 0,
                    };
                    Self::complete(st, id, Completion::Sent(status));
                }
                Err(c) => {
                    st.coll.runs.swap_remove(i);
                    Self::fail(st, id, c);
                }
            }
        }
    }

    /// The PEs non-blocking call `id` waits for now; `None` if `id` is not
    /// a collective call in progress.
    pub(super) fn coll_waiting_for(&self, st: &State, id: Id) -> Option<Vec<usize>> {
        match st.reqs.get(id) {
            Some(Entry {
                req: Req::Collective(Some(r)),
                ..
            }) => Some(r.waiting_for().collect()),
            _ => None,
        }
    }

    /// Cancels a non-blocking call whose owner is going away.
    pub(super) fn coll_cancel(&self, st: &mut State, id: Id) {
        if let Some(Entry {
            req: Req::Collective(r),
            ..
        }) = st.reqs.get_mut(id)
        {
            if let Some(mut r) = r.take() {
                let mut chan = EngineChannel {
                    engine: self,
                    st,
                    members: &r.members,
                    me: r.me,
                    ctx: r.ctx,
                };
                r.run.cancel(&mut chan);
                Self::coll_leave(st, r.ctx);
            }
        }
        st.coll.runs.retain(|&r| r != id);
        st.reqs.remove(id);
    }
}
