//! Collectives inside the engine: the [`Channel`] their schedules run
//! over, the runs of non-blocking collectives that every progress call
//! advances, and the checks that turn members calling a collective
//! differently into errors instead of hangs.
//!
//! A call is named by its team's id and its 28-bit sequence number in the
//! team. Its messages carry the class Collective, a context of the team id
//! and the sequence number's low 12 bits, and a tag of a 16-bit digest of
//! the call's signature (collective, root, size, element type, operation)
//! and the sequence number's high 16 bits. Members that disagree therefore
//! never match each other's messages, and a member may run up to 2^27
//! calls ahead of another (leaves of a reduce never wait) before numbers
//! could be confused.
//!
//! A message that arrives for a call this PE is in, under another digest,
//! fails the call; so does a notice (the reserved digest) from a member
//! that failed it. The member that sees a disagreement first tells every
//! other member with such a notice, so the whole team fails instead of
//! waiting. Members whose calls send each other nothing (a broadcast whose
//! members each name another root) would wait for ever, so a member that
//! has waited long in a call sends the members it waits for a probe
//! ([`PROBE_DIGEST`]) with its digest: a member that called the call
//! otherwise fails it (or, if it has finished it, answers with a notice). A message or notice for a call this PE had already finished
//! (it can only come from a member that called it differently) is
//! reported after the team's next call completes, so that call's other
//! members are not left waiting.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use weft_collectives::exec::Run;
use weft_collectives::{Channel, Signature, PROBE_DIGEST, RESERVED_DIGEST};

use super::wire::{Class, Envelope};
use super::{Completion, Engine, Entry, Id, Match, RawBuf, Req, SendMode, State};
use crate::error::Cause;
use crate::flat::Deserted;
use crate::p2p::{Status, Tag};

/// Bits of a collective context that hold a call's sequence number (the
/// low ones); the rest hold the team's id.
pub(crate) const CTX_SEQ_BITS: u32 = 12;
/// A call's sequence number in its team.
pub(crate) const SEQ_MASK: u32 = (1 << 28) - 1;

/// A call: its team and sequence number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct CallId {
    pub(crate) team: u32,
    pub(crate) seq: u32,
}

impl CallId {
    fn ctx(self) -> u32 {
        self.team << CTX_SEQ_BITS | (self.seq & ((1 << CTX_SEQ_BITS) - 1))
    }

    fn tag(self, digest: u16) -> u32 {
        u32::from(digest) << 16 | self.seq >> CTX_SEQ_BITS
    }

    /// The envelope of a message for this call under `digest` (a notice's
    /// or a probe's, whose tags name no schedule's message).
    fn envelope(self, digest: u16) -> Envelope {
        Envelope {
            class: Class::Collective,
            ctx: self.ctx(),
            tag: self.tag(digest),
        }
    }

    /// The call a message belongs to, and the digest it carries.
    fn of(env: Envelope) -> (CallId, u16) {
        let seq = (env.tag & 0xffff) << CTX_SEQ_BITS | env.ctx & ((1 << CTX_SEQ_BITS) - 1);
        let call = CallId {
            team: env.ctx >> CTX_SEQ_BITS,
            seq,
        };
        (call, (env.tag >> 16) as u16)
    }

    /// How many calls `self` is behind `later` of the same team.
    fn behind(self, later: CallId) -> u32 {
        later.seq.wrapping_sub(self.seq) & SEQ_MASK
    }
}

impl std::fmt::Display for CallId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "call {} of team {}", self.seq, self.team)
    }
}

/// One member's part in one collective call.
pub(crate) struct CollRun {
    pub(crate) run: Run<Id>,
    /// The team's members as PEs.
    pub(crate) members: Arc<[usize]>,
    /// This PE's index among them.
    pub(crate) me: usize,
    pub(crate) call: CallId,
    pub(crate) sig: Signature,
    /// On a team with a flat path: members that left the call there would
    /// never join this run, which must fail instead of waiting for them.
    pub(crate) deserted: Option<Deserted>,
    /// When this PE next tells the members it waits for how it called the
    /// call.
    pub(crate) probe: Probe,
}

/// When a member waiting in a call probes the members it waits for
/// ([`Engine::coll_probe`]): [`PROBE_AFTER`] after it began to wait, then
/// every [`PROBE_PERIOD`].
pub(crate) struct Probe {
    /// When it began to wait: read at the [`PROBE_CHECK`]-th advance that
    /// did not complete the call, so that a call done sooner reads no
    /// clock.
    waiting: Option<Instant>,
    next: Duration,
    /// Advances that did not complete the call: the clock is read every
    /// [`PROBE_CHECK`] of them.
    idle: u32,
}

impl Probe {
    /// The probing of a call just entered.
    pub(crate) fn new() -> Probe {
        Probe {
            waiting: None,
            next: PROBE_AFTER,
            idle: 0,
        }
    }
}

/// How long a member waits in a call before it first probes the members
/// it waits for: far longer than a call whose members agree waits for a
/// member's message, unless that member is late to enter it (then the
/// probe only costs one small message).
const PROBE_AFTER: Duration = Duration::from_millis(100);
/// How often it probes again, while it waits (the members it waits for
/// change as the call goes on).
const PROBE_PERIOD: Duration = Duration::from_secs(1);
/// Advances of a waiting call between readings of the clock.
const PROBE_CHECK: u32 = 16;

impl CollRun {
    /// The tag of this call's messages.
    pub(crate) fn tag(call: CallId, sig: &Signature) -> u32 {
        call.tag(sig.digest())
    }

    /// The PEs this call waits for now.
    pub(crate) fn waiting_for(&self) -> impl Iterator<Item = usize> + '_ {
        self.run.waiting_for().map(|m| self.members[m])
    }
}

/// A call that failed.
struct Failure {
    call: CallId,
    text: String,
    /// Whether a member told this PE (so this PE need not tell the team).
    told: bool,
}

/// The engine's collective state.
#[derive(Default)]
pub(crate) struct CollState {
    /// Calls this PE is in, with their signatures.
    active: Vec<(CallId, Signature)>,
    /// Calls known to have failed.
    failed: Vec<Failure>,
    /// Non-blocking calls, advanced by every progress call.
    pub(crate) runs: Vec<Id>,
    /// Calls this PE failed lately: messages and notices still arriving
    /// for them are dropped.
    abandoned: VecDeque<CallId>,
    /// Per team this PE entered a call of: the latest call.
    latest: Vec<CallId>,
    /// Per team: the failure of a call this PE had finished, to report
    /// after the team's current or next call.
    deferred: Vec<(u32, String)>,
    /// The calls this PE left lately, with its digest of each: what a
    /// member that probes one of them is told ([`Engine::coll_probed`]).
    left: VecDeque<(CallId, u16)>,
    /// Calls this PE has not entered yet that messages arrived for: the
    /// first digest seen (and its sender), and a different one if any.
    ahead: HashMap<CallId, Ahead>,
}

/// The digests of the messages that arrived for a call before this PE
/// entered it.
struct Ahead {
    first: (u16, usize),
    other: Option<(u16, usize)>,
}

/// How many failed calls a PE remembers.
const ABANDONED_KEPT: usize = 256;
/// How many calls a PE remembers having left.
const LEFT_KEPT: usize = 64;

impl CollState {
    fn failure(&self, call: CallId) -> Option<&Failure> {
        self.failed.iter().find(|f| f.call == call)
    }

    fn fail(&mut self, call: CallId, text: String, told: bool) {
        if self.failure(call).is_none() && !self.abandoned.contains(&call) {
            self.failed.push(Failure { call, text, told });
        }
    }

    /// Notes that `source` sent a message or probe under `digest` for
    /// `call`, which this PE has not entered: entering checks the digests.
    fn note_ahead(&mut self, call: CallId, digest: u16, source: usize) {
        let a = self.ahead.entry(call).or_insert(Ahead {
            first: (digest, source),
            other: None,
        });
        if a.first.0 != digest && a.other.is_none() {
            a.other = Some((digest, source));
        }
    }

    fn abandon(&mut self, call: CallId) {
        self.failed.retain(|f| f.call != call);
        self.ahead.remove(&call);
        if self.abandoned.len() == ABANDONED_KEPT {
            self.abandoned.pop_front();
        }
        self.abandoned.push_back(call);
    }
}

/// A schedule's view of the engine for one call.
struct EngineChannel<'a> {
    engine: &'a Engine,
    st: &'a mut State,
    members: &'a [usize],
    me: usize,
    call: CallId,
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
            ctx: self.call.ctx(),
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
            ctx: self.call.ctx(),
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

pub(crate) fn describe(sig: &Signature) -> String {
    format!(
        "{} with root {}, {} bytes of {}-byte elements, operation {}",
        sig.collective, sig.root, sig.bytes, sig.elem, sig.op
    )
}

impl Engine {
    /// Enters a call: from now on, messages for it under another digest,
    /// and notices about it, fail it. Fails it at once if such a message
    /// or notice came before.
    pub(crate) fn coll_enter(&self, st: &mut State, r: &CollRun) {
        let call = r.call;
        st.coll.active.push((call, r.sig));
        match st.coll.latest.iter_mut().find(|c| c.team == call.team) {
            Some(c) => *c = call,
            None => st.coll.latest.push(call),
        }
        let digest = r.sig.digest();
        let mut found = None;
        if let Some(a) = st.coll.ahead.remove(&call) {
            let odd = [Some(a.first), a.other]
                .into_iter()
                .flatten()
                .find(|&(d, _)| d != digest);
            if let Some((_, source)) = odd {
                found = Some(format!(
                    "PE {source} called this collective ({call}) differently from this PE, \
                     which called {}",
                    describe(&r.sig)
                ));
            }
        }
        if let Some(text) = found {
            st.coll.fail(call, text, false);
        }
    }

    /// Whether this PE has finished `call`.
    fn finished(st: &State, call: CallId) -> bool {
        let Some(&latest) = st.coll.latest.iter().find(|c| c.team == call.team) else {
            return false;
        };
        let behind = call.behind(latest);
        behind != 0 && behind <= SEQ_MASK / 2 && !st.coll.active.iter().any(|(c, _)| *c == call)
    }

    /// Leaves a call (done, failed or cancelled).
    fn coll_leave(st: &mut State, call: CallId) {
        if let Some(i) = st.coll.active.iter().position(|(c, _)| *c == call) {
            let (_, sig) = st.coll.active.remove(i);
            if st.coll.left.len() == LEFT_KEPT {
                st.coll.left.pop_front();
            }
            st.coll.left.push_back((call, sig.digest()));
        }
        st.coll.failed.retain(|f| f.call != call);
    }

    /// Looks at a collective message as it arrives; `true` if it goes no
    /// further (a notice, a stray, or a message for a call this PE failed).
    pub(super) fn coll_arrived(
        &self,
        st: &mut State,
        source: usize,
        env: Envelope,
        payload: &[u8],
    ) -> bool {
        let (call, digest) = CallId::of(env);
        if st.coll.abandoned.contains(&call) {
            return true;
        }
        if digest == PROBE_DIGEST {
            self.coll_probed(st, source, call, payload);
            return true;
        }
        let finished = Self::finished(st, call);
        if digest == RESERVED_DIGEST {
            let text = format!("PE {source} reported: {}", String::from_utf8_lossy(payload));
            if finished {
                Self::coll_defer(st, call, text);
            } else {
                st.coll.fail(call, text, true);
            }
            return true;
        }
        if finished {
            Self::coll_defer_stray(st, source, call);
            return true;
        }
        let Some((_, sig)) = st.coll.active.iter().find(|(c, _)| *c == call) else {
            st.coll.note_ahead(call, digest, source);
            return false;
        };
        {
            if sig.digest() != digest {
                let text = format!(
                    "PE {source} called this collective ({call}) differently from this PE, \
                     which called {}",
                    describe(sig)
                );
                st.coll.fail(call, text, false);
            }
        }
        false
    }

    /// Member `source`, waiting in `call` (for this PE, among others), says
    /// how it called it: its digest, then its call described. If this PE
    /// is in the call under another digest, the call fails (and the
    /// members are told); if it left the call, called otherwise, it tells
    /// `source` so and reports the call after its team's next one; if it
    /// has not entered the call, the probe counts as a message for it.
    fn coll_probed(&self, st: &mut State, source: usize, call: CallId, payload: &[u8]) {
        let Some((digest, theirs)) = payload.split_first_chunk::<2>() else {
            return;
        };
        let digest = u16::from_le_bytes(*digest);
        let theirs = String::from_utf8_lossy(theirs);
        if let Some((_, sig)) = st.coll.active.iter().find(|(c, _)| *c == call) {
            if sig.digest() != digest {
                let text = format!(
                    "PE {source} waits in this collective ({call}), having called {theirs}, \
                     where this PE called {}",
                    describe(sig)
                );
                st.coll.fail(call, text, false);
            }
            return;
        }
        if let Some(&(_, mine)) = st.coll.left.iter().find(|(c, _)| *c == call) {
            if mine != digest {
                let env = call.envelope(RESERVED_DIGEST);
                let text = format!(
                    "it had left this collective ({call}), called otherwise, when this PE \
                     waited for it"
                );
                // A member that cannot be told is gone, which its wait finds.
                let _ = self.send_owned(st, source, env, text.into_bytes());
                let text = format!(
                    "PE {source} waited in it for this PE, having called {theirs}: the PEs \
                     called it differently"
                );
                Self::coll_defer(st, call, text);
            }
            return;
        }
        if !Self::finished(st, call) {
            st.coll.note_ahead(call, digest, source);
        }
    }

    /// Tells the members call `r` waits for how this PE called it, if it
    /// has waited long enough ([`Probe`]).
    fn coll_probe(&self, st: &mut State, r: &mut CollRun) {
        let p = &mut r.probe;
        p.idle = p.idle.wrapping_add(1);
        if p.idle % PROBE_CHECK != 0 {
            return;
        }
        let waited = p.waiting.get_or_insert_with(Instant::now).elapsed();
        if waited < p.next {
            return;
        }
        p.next = waited + PROBE_PERIOD;
        let env = r.call.envelope(PROBE_DIGEST);
        let mut probe = r.sig.digest().to_le_bytes().to_vec();
        probe.extend_from_slice(describe(&r.sig).as_bytes());
        let waited: Vec<usize> = r.waiting_for().filter(|&pe| pe != self.rank).collect();
        for pe in waited {
            // A member that cannot be told is gone, which the wait finds.
            let _ = self.send_owned(st, pe, env, probe.clone());
        }
    }

    /// A message arrived for a call this PE had finished: the sender called
    /// it differently (a call takes every message its members send for it).
    fn coll_defer_stray(st: &mut State, source: usize, call: CallId) {
        let text = format!(
            "PE {source} sent a message for it after this PE had finished it: the PEs called \
             it differently"
        );
        Self::coll_defer(st, call, text);
    }

    /// Keeps the news that finished `call` failed elsewhere, for the team's
    /// current or next call to report once it has completed (so that the
    /// members still in that call are not left waiting).
    fn coll_defer(st: &mut State, call: CallId, text: String) {
        if !st.coll.deferred.iter().any(|(t, _)| *t == call.team) {
            st.coll
                .deferred
                .push((call.team, format!("{call} failed: {text}")));
        }
    }

    /// Moves a call along; `Ok(true)` once it is done. A failed call is
    /// cancelled and left, and the other members are told why.
    pub(crate) fn coll_advance(&self, st: &mut State, r: &mut CollRun) -> Result<bool, Cause> {
        let known = st.coll.failure(r.call).map(|f| f.text.clone());
        let result = match known {
            Some(text) => Err(Cause::Mismatch(text)),
            None => {
                let mut chan = EngineChannel {
                    engine: self,
                    st,
                    members: &r.members,
                    me: r.me,
                    call: r.call,
                };
                let advanced = r.run.advance(&mut chan).map_err(|e| match e {
                    weft_collectives::Error::Channel(c) => c,
                    e @ weft_collectives::Error::Length { .. } => {
                        Cause::Mismatch(format!("{e}; this PE called {}", describe(&r.sig)))
                    }
                });
                match advanced {
                    Ok(false) => {
                        self.coll_probe(st, r);
                        r.deserted.and_then(|d| d.check()).map_or(Ok(false), Err)
                    }
                    done_or_failed => done_or_failed,
                }
            }
        };
        match result {
            Ok(false) => Ok(false),
            Ok(true) => {
                Self::coll_leave(st, r.call);
                let team = r.call.team;
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
        self.coll_stop(st, r);
        let told = st.coll.failure(r.call).is_some_and(|f| f.told);
        Self::coll_leave(st, r.call);
        st.coll.abandon(r.call);
        let call = r.call;
        st.unexpected
            .retain(|u| !(u.env.class == Class::Collective && CallId::of(u.env).0 == call));
        if told {
            return;
        }
        let text = format!("rank {} failed {}: {cause}", self.rank, r.sig.collective);
        self.coll_notify(st, &r.members, r.me, r.call, &text);
    }

    /// Tells every other member that this PE failed `call`, and
    /// forgets the call.
    pub(crate) fn coll_notify(
        &self,
        st: &mut State,
        members: &[usize],
        me: usize,
        call: CallId,
        text: &str,
    ) {
        if !st.coll.abandoned.contains(&call) {
            st.coll.abandon(call);
        }
        let env = call.envelope(RESERVED_DIGEST);
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

    /// Cancels a call's messages in flight.
    fn coll_stop(&self, st: &mut State, r: &mut CollRun) {
        let mut chan = EngineChannel {
            engine: self,
            st,
            members: &r.members,
            me: r.me,
            call: r.call,
        };
        r.run.cancel(&mut chan);
    }

    /// Cancels a non-blocking call whose owner is going away.
    pub(super) fn coll_cancel(&self, st: &mut State, id: Id) {
        if let Some(Entry {
            req: Req::Collective(r),
            ..
        }) = st.reqs.get_mut(id)
        {
            if let Some(mut r) = r.take() {
                self.coll_stop(st, &mut r);
                Self::coll_leave(st, r.call);
            }
        }
        st.coll.runs.retain(|&r| r != id);
        st.reqs.remove(id);
    }
}
