//! The progress engine: the one place that polls every lane, matches
//! point-to-point messages, runs active-message handlers, moves rendezvous
//! transfers along and completes requests.
//!
//! All of its state sits behind one lock. Whoever holds the lock drives
//! progress: a thread blocked in a wait, [`crate::World::progress`], or the
//! progress thread (`WEFT_PROGRESS_THREAD=1`). Active-message handlers run
//! on that thread while the lock is held; a handler that calls back into
//! anything needing the engine gets [`Cause::InHandler`] instead of a
//! deadlock.
//!
//! Protocols (frames in [`wire`]):
//! - eager: a message of at most `WEFT_EAGER_LIMIT` bytes is copied into
//!   the peer's queue at once, in one frame or a First frame and Cont frames;
//!   the send completes immediately (bytes that find no credit are copied
//!   into the outbox);
//! - rendezvous: a longer message sends an Rts naming where its bytes are.
//!   Once the receive is matched, the receiver copies them itself, once,
//!   out of the sender's memory (on-node: cross-memory attach), and
//!   answers Fin. Where that is impossible (the kernel forbids
//!   it, or `WEFT_SINGLE_COPY=off`) it answers Cts and the sender pushes the
//!   bytes as Data frames.

pub(crate) mod coll;
pub(crate) mod help;
mod outbox;
mod slab;
pub(crate) mod wire;

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::os::fd::RawFd;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, MutexGuard};
use weft_transport::{Gone, Transport, TransportError};

use crate::am::{AmContext, Handlers};
use crate::error::{Cause, Error, Result};
use crate::p2p::{Status, Tag};
use outbox::{cont_header, Bytes, Out, Outbox};
pub(crate) use slab::Id;
use slab::Slab;
use weft_transport::backoff::Backoff;
use wire::{Class, Envelope, Kind, Rts};

thread_local! {
    /// Set while this thread runs an active-message handler.
    static IN_HANDLER: Cell<bool> = const { Cell::new(false) };
}

/// Marks the current thread as running a handler until dropped.
struct HandlerGuard;

impl HandlerGuard {
    fn enter() -> HandlerGuard {
        IN_HANDLER.with(|f| f.set(true));
        HandlerGuard
    }
}

impl Drop for HandlerGuard {
    fn drop(&mut self) {
        IN_HANDLER.with(|f| f.set(false));
    }
}

/// A receive buffer: the engine writes at most `cap` bytes at `ptr`.
#[derive(Clone, Copy)]
pub(crate) struct RawBuf {
    pub(crate) ptr: *mut u8,
    pub(crate) cap: usize,
}

impl RawBuf {
    /// The whole of `buf`.
    pub(crate) fn of(buf: &mut [u8]) -> RawBuf {
        RawBuf {
            ptr: buf.as_mut_ptr(),
            cap: buf.len(),
        }
    }
}

/// What a receive accepts.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Match {
    pub(crate) class: Class,
    pub(crate) ctx: u32,
    pub(crate) source: Option<usize>,
    pub(crate) tag: Option<u32>,
}

impl Match {
    fn accepts(&self, source: usize, env: Envelope) -> bool {
        self.class == env.class
            && self.ctx == env.ctx
            && self.source.is_none_or(|s| s == source)
            && self.tag.is_none_or(|t| t == env.tag)
    }
}

/// How an operation ended.
pub(crate) enum Completion {
    Received(Status),
    Sent(Status),
    Reply(Vec<u8>),
}

/// Where arriving bytes go.
enum Dest {
    User(RawBuf),
    Owned(Vec<u8>),
    /// The receive was cancelled: the bytes are dropped.
    Discard,
}

/// What to do once a fill is complete.
enum Then {
    /// Complete the receive with this status.
    Receive(Status),
    /// The whole message is here: match it (or queue it, or run its handler).
    Arrive(Envelope),
    /// Run the handler of this active-message request.
    Handle(Envelope),
    /// Complete this active-message handle with the bytes.
    Reply(Id),
    /// Nothing: the request was cancelled.
    Drop,
}

/// Bytes arriving in frames (Cont after a First, or Data after a Cts).
struct Fill {
    source: usize,
    dest: Dest,
    len: usize,
    got: usize,
    then: Then,
}

impl Fill {
    fn write(&mut self, bytes: &[u8]) -> Result<bool, Cause> {
        if self.got + bytes.len() > self.len {
            return Err(malformed(
                self.source,
                format!(
                    "{} bytes beyond the {}-byte message",
                    self.got + bytes.len() - self.len,
                    self.len
                ),
            ));
        }
        match &mut self.dest {
            Dest::User(buf) => {
                let end = (self.got + bytes.len()).min(buf.cap);
                if self.got < end {
                    // SAFETY: the buffer is valid for `cap` bytes while the
                    // request lives (its scope waits for it or cancels it,
                    // which turns the destination into `Discard`), and
                    // `got..end` lies inside it.
                    unsafe {
                        weft_copy::copy_nonoverlapping(
                            bytes.as_ptr(),
                            buf.ptr.add(self.got),
                            end - self.got,
                        )
                    };
                }
            }
            Dest::Owned(v) => v.extend_from_slice(bytes),
            Dest::Discard => {}
        }
        self.got += bytes.len();
        Ok(self.got == self.len)
    }
}

/// The state of one pending operation.
enum Req {
    /// A receive waiting in the posted queue.
    Posted(RawBuf),
    Filling(Fill),
    /// A rendezvous send waiting for the receiver's Fin or Cts, or pushing
    /// its bytes. `_owned` keeps alive the bytes `ptr` points to when the
    /// engine copied them (active messages); `key` is their exposure to the
    /// receiver while it may read them, ended by its Fin or Cts.
    Sending {
        ptr: *const u8,
        len: usize,
        dest: usize,
        tag: u32,
        key: Option<u64>,
        _owned: Option<Vec<u8>>,
    },
    /// A send whose owner went away before the receiver's Fin or Cts. Its
    /// exposure, if any, stays until then: the receiver may be reading the
    /// bytes already, and an RDMA read of memory no longer registered
    /// fails the whole queue pair toward this PE, for good. The receiver
    /// then reads what that memory holds now, for a call that has failed.
    Abandoned {
        dest: usize,
        key: Option<u64>,
    },
    /// An active-message request waiting for its reply.
    AmWaiting {
        target: usize,
    },
    /// A non-blocking collective call; `None` while the engine advances it.
    Collective(Option<Box<coll::CollRun>>),
    Done(Completion),
    Failed(Cause),
}

struct Entry {
    req: Req,
    /// Nobody will collect the completion: drop the entry when it completes.
    detached: bool,
}

/// A whole message that arrived before its receive was posted.
struct Unexpected {
    source: usize,
    env: Envelope,
    body: Body,
}

enum Body {
    Bytes(Vec<u8>),
    Remote(Rts),
}

impl Body {
    fn as_ref(&self) -> BodyRef<'_> {
        match self {
            Body::Bytes(b) => BodyRef::Bytes(b),
            Body::Remote(r) => BodyRef::Remote(*r),
        }
    }

    fn len(&self) -> usize {
        match self {
            Body::Bytes(b) => b.len(),
            Body::Remote(r) => r.len as usize,
        }
    }
}

#[derive(Clone, Copy)]
enum BodyRef<'a> {
    Bytes(&'a [u8]),
    Remote(Rts),
}

impl BodyRef<'_> {
    fn to_owned(self) -> Body {
        match self {
            BodyRef::Bytes(b) => Body::Bytes(b.to_vec()),
            BodyRef::Remote(r) => Body::Remote(r),
        }
    }
}

/// How a message is sent.
pub(crate) enum SendMode {
    /// Eager up to the eager limit, rendezvous above, out of the caller's
    /// buffer (which must stay valid until the returned request completes).
    Auto,
    /// Bytes the engine owns: eager or rendezvous by size.
    Owned(Vec<u8>),
}

/// Which peers a wait depends on, for turning a death into an error.
#[derive(Clone, Copy)]
pub(crate) enum Watch<'a> {
    Peer(usize),
    All,
    /// The PEs listed now (a blocking collective updates the list as it
    /// goes from round to round).
    Listed(&'a RefCell<Vec<usize>>),
    /// The PEs a non-blocking collective waits for now.
    Request(Id),
}

/// The engine's mutable state; see the module documentation.
pub(crate) struct State {
    reqs: Slab<Entry>,
    posted: VecDeque<(Id, Match)>,
    unexpected: VecDeque<Unexpected>,
    /// Per source: the message whose Cont frames are arriving.
    assembling: Vec<Option<Id>>,
    outbox: Outbox,
    /// Per source: active messages held back behind one whose bytes are
    /// being pushed, so that handlers run in order.
    am_blocked: Vec<Option<VecDeque<(Envelope, Body)>>>,
    am_pending: usize,
    /// Per source: single copy failed once, so ask for pushes directly.
    no_single_copy: Vec<bool>,
    /// The generation of this PE's latest shared copy ([`help`]).
    help_generation: u32,
    /// An earlier failure that broke the engine.
    fatal: Option<String>,
    /// Collective calls in progress.
    coll: coll::CollState,
    completed: Vec<Id>,
}

// SAFETY: the raw pointers in `State` refer to user buffers that their owners
// (a `Scope` or a blocking call) keep alive and untouched until the request
// completes or is cancelled; the state is only reached under the engine lock.
unsafe impl Send for State {}

/// The settings of the engine.
pub(crate) struct Settings {
    pub(crate) eager_limit: usize,
    pub(crate) single_copy: bool,
    /// More PEs on this node than cores this process may run on.
    pub(crate) oversubscribed: bool,
    /// Where the words of shared rendezvous copies are ([`help`]).
    pub(crate) help: help::Area,
}

/// The progress engine of one PE. Shared with the progress thread.
pub(crate) struct Engine {
    pub(crate) rank: usize,
    pub(crate) size: usize,
    lanes: Vec<Box<dyn Transport>>,
    route: Vec<u8>,
    atomic_route: Vec<u8>,
    settings: Settings,
    handlers: Handlers,
    state: Mutex<State>,
    stop: AtomicBool,
}

fn malformed(peer: usize, detail: String) -> Cause {
    Cause::Transport(TransportError::Malformed { peer, detail })
}

/// Polls a waiter makes per taking of the engine lock.
const POLLS_PER_LOCK: usize = 16;

/// How often a waiter asks whether the peers it depends on are alive; also
/// the longest a waiter sleeps on its lanes' event descriptors.
const LIVENESS_PERIOD: Duration = Duration::from_millis(20);

/// What changes the condition a wait waits for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Wakes {
    /// A message arriving or a request completing, which a lane may
    /// announce on its event descriptor.
    OnEvents,
    /// Memory that peers write directly, which nothing announces.
    OnMemory,
}

impl Engine {
    pub(crate) fn new(
        rank: usize,
        size: usize,
        lanes: Vec<Box<dyn Transport>>,
        route: Vec<u8>,
        atomic_route: Vec<u8>,
        settings: Settings,
        handlers: Handlers,
    ) -> Engine {
        Engine {
            rank,
            size,
            lanes,
            route,
            atomic_route,
            settings,
            handlers,
            state: Mutex::new(State {
                reqs: Slab::default(),
                posted: VecDeque::new(),
                unexpected: VecDeque::new(),
                assembling: vec![None; size],
                outbox: Outbox::new(size),
                am_blocked: (0..size).map(|_| None).collect(),
                am_pending: 0,
                no_single_copy: vec![false; size],
                help_generation: 0,
                fatal: None,
                coll: coll::CollState::default(),
                completed: Vec::new(),
            }),
            stop: AtomicBool::new(false),
        }
    }

    pub(crate) fn lanes(&self) -> impl Iterator<Item = &dyn Transport> {
        self.lanes.iter().map(|l| &**l)
    }

    /// The lane reaching `pe`, which the caller has checked.
    fn lane_of(&self, pe: usize) -> &dyn Transport {
        &*self.lanes[self.route[pe] as usize]
    }

    /// Ends a send's exposure of its bytes to `dest`, if it still has one:
    /// once only, whichever of Fin, Cts or a late frame comes first.
    fn unexpose_once(&self, dest: usize, key: &mut Option<u64>) {
        if let Some(key) = key.take() {
            self.lane_of(dest).unexpose(key);
        }
    }

    /// The lane reaching `pe`, or `None` for a PE outside the job.
    #[inline]
    pub(crate) fn lane(&self, pe: usize) -> Option<&dyn Transport> {
        self.route.get(pe).map(|&l| &*self.lanes[l as usize])
    }

    /// The transport that carries atomics to `pe` (see `Wiring::atomic_route`).
    pub(crate) fn atomic_lane(&self, pe: usize) -> Option<&dyn Transport> {
        self.atomic_route.get(pe).map(|&l| &*self.lanes[l as usize])
    }

    pub(crate) fn handlers(&self) -> &Handlers {
        &self.handlers
    }

    pub(crate) fn error(&self, op: &'static str, cause: Cause) -> Error {
        Error::new(self.rank, op, cause)
    }

    /// Takes the engine lock for `op`; refused inside a handler, where the
    /// lock is already held by this thread.
    pub(crate) fn lock(&self, op: &'static str) -> Result<MutexGuard<'_, State>> {
        self.refuse_in_handler(op)?;
        Ok(self.state.lock())
    }

    /// Whether this node runs more PEs than it has cores (waits then
    /// yield at once instead of spinning).
    pub(crate) fn oversubscribed(&self) -> bool {
        self.settings.oversubscribed
    }

    /// An error if the calling thread is running an active-message handler.
    pub(crate) fn refuse_in_handler(&self, op: &'static str) -> Result<()> {
        if IN_HANDLER.with(Cell::get) {
            return Err(self.error(op, Cause::InHandler));
        }
        Ok(())
    }

    /// Polls every lane once and does whatever arrived; returns how many
    /// frames moved.
    pub(crate) fn progress(&self, st: &mut State) -> Result<usize, Cause> {
        if let Some(f) = &st.fatal {
            return Err(Cause::Broken(f.clone()));
        }
        let r = self.progress_inner(st);
        if let Err(e) = &r {
            st.fatal = Some(e.to_string());
        }
        r
    }

    fn progress_inner(&self, st: &mut State) -> Result<usize, Cause> {
        let mut n = if st.outbox.busy() { self.flush(st)? } else { 0 };
        for lane in &self.lanes {
            let mut failed = None;
            n += lane.poll(&mut |m| {
                if failed.is_none() {
                    if let Err(e) = self.dispatch(st, m.source, m.header, m.payload) {
                        failed = Some(e);
                    }
                }
            })?;
            if let Some(e) = failed {
                return Err(e);
            }
        }
        if st.outbox.busy() {
            n += self.flush(st)?;
        }
        if !st.coll.runs.is_empty() {
            self.coll_progress(st);
        }
        Ok(n)
    }

    fn flush(&self, st: &mut State) -> Result<usize, Cause> {
        let mut done = std::mem::take(&mut st.completed);
        let n = st.outbox.flush(|peer| self.lane_of(peer), &mut done)?;
        for id in done.drain(..) {
            self.send_done(st, id);
        }
        st.completed = done;
        Ok(n)
    }

    /// Blocks until `ready` returns a value, driving progress and backing
    /// off meanwhile. A peer in `watch` that dies turns into an error.
    /// `ready` must change only when a message arrives or a request of
    /// this PE completes: a long wait sleeps until a lane announces one
    /// (see [`Engine::nap`]). A condition on memory that peers write uses
    /// [`Engine::wait_memory`].
    pub(crate) fn wait<T>(
        &self,
        op: &'static str,
        watch: Watch<'_>,
        ready: impl FnMut(&mut State) -> Option<Result<T, Cause>>,
    ) -> Result<T> {
        self.wait_for(op, watch, Wakes::OnEvents, ready)
    }

    /// [`Engine::wait`] for a condition on memory that peers write
    /// directly (a put, a flag): nothing announces it, so a long wait
    /// sleeps for short spells only.
    pub(crate) fn wait_memory<T>(
        &self,
        op: &'static str,
        watch: Watch<'_>,
        ready: impl FnMut(&mut State) -> Option<Result<T, Cause>>,
    ) -> Result<T> {
        self.wait_for(op, watch, Wakes::OnMemory, ready)
    }

    fn wait_for<T>(
        &self,
        op: &'static str,
        watch: Watch<'_>,
        wakes: Wakes,
        mut ready: impl FnMut(&mut State) -> Option<Result<T, Cause>>,
    ) -> Result<T> {
        let mut backoff = Backoff::new(self.settings.oversubscribed);
        let mut checked: Option<Instant> = None;
        loop {
            let moved = {
                let mut st = self.lock(op)?;
                if let Some(r) = ready(&mut st) {
                    return r.map_err(|c| self.error(op, c));
                }
                // Poll a while before letting go of the lock: taking it is
                // a good part of the cost of a short message. Oversubscribed,
                // once: the peer waited for needs the core more than this
                // waiter needs the lock (4 ranks on 2 cores: an 8 B allreduce
                // took 0.6x the time).
                let mut moved = 0;
                let polls = if self.settings.oversubscribed {
                    1
                } else {
                    POLLS_PER_LOCK
                };
                for _ in 0..polls {
                    moved = self.progress(&mut st).map_err(|c| self.error(op, c))?;
                    if let Some(r) = ready(&mut st) {
                        return r.map_err(|c| self.error(op, c));
                    }
                    if moved > 0 {
                        break;
                    }
                    std::hint::spin_loop();
                }
                moved
            };
            if moved > 0 {
                backoff = Backoff::new(self.settings.oversubscribed);
                continue;
            }
            let Some(nap) = backoff.pause() else {
                continue;
            };
            if let Some(r) = self.nap(op, watch, wakes, nap, &mut ready)? {
                return r.map_err(|c| self.error(op, c));
            }
            if checked.is_none_or(|t| t.elapsed() >= LIVENESS_PERIOD) {
                checked = Some(Instant::now());
                if self.dead_peer(watch).is_some() {
                    // It may have sent what we wait for just before exiting.
                    let mut st = self.lock(op)?;
                    self.progress(&mut st).map_err(|c| self.error(op, c))?;
                    if let Some(r) = ready(&mut st) {
                        return r.map_err(|c| self.error(op, c));
                    }
                    drop(st);
                    if let Some((pe, how)) = self.dead_peer(watch) {
                        return Err(self.error(op, Cause::PeerGone { pe, how }));
                    }
                }
            }
        }
    }

    /// The sleep of a long wait. When the wait is driven by events and
    /// every peer it watches is reached by a lane that can announce them
    /// (verbs: a completion channel), the lanes are armed, progress runs
    /// once more (what arrived before arming is announced by nothing), and
    /// the waiter sleeps on their descriptors for up to
    /// [`LIVENESS_PERIOD`]; a sleeping PE then costs its node nothing,
    /// which matters where the NIC's work is done by the host's CPUs (as
    /// Soft-RoCE's is). Otherwise it sleeps for `nap`. Returns `ready`'s
    /// value if the last round of progress made it.
    fn nap<T>(
        &self,
        op: &'static str,
        watch: Watch<'_>,
        wakes: Wakes,
        nap: Duration,
        ready: &mut impl FnMut(&mut State) -> Option<Result<T, Cause>>,
    ) -> Result<Option<Result<T, Cause>>> {
        let fds = match wakes {
            Wakes::OnEvents => self.event_fds(watch),
            Wakes::OnMemory => None,
        };
        let Some(fds) = fds else {
            std::thread::sleep(nap);
            return Ok(None);
        };
        let mut st = self.lock(op)?;
        for &(lane, _) in &fds {
            self.lanes[lane]
                .arm()
                .map_err(|e| self.error(op, Cause::Transport(e)))?;
        }
        self.progress(&mut st).map_err(|c| self.error(op, c))?;
        if let Some(r) = ready(&mut st) {
            return Ok(Some(r));
        }
        drop(st);
        let mut polled: Vec<libc::pollfd> = fds
            .iter()
            .map(|&(_, fd)| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        let ms = LIVENESS_PERIOD.as_millis() as libc::c_int;
        // SAFETY: `polled` is a live array of `polled.len()` pollfd entries.
        // A failure (EINTR) only ends the sleep early.
        unsafe { libc::poll(polled.as_mut_ptr(), polled.len() as libc::nfds_t, ms) };
        Ok(None)
    }

    /// The lanes (index, event descriptor) that reach the peers `watch`
    /// names (itself aside), or `None` if one of those lanes cannot
    /// announce events or there is no such peer.
    fn event_fds(&self, watch: Watch<'_>) -> Option<Vec<(usize, RawFd)>> {
        let mut fds: Vec<(usize, RawFd)> = Vec::new();
        let silent = self.find_watched(watch, |pe| {
            let lane = self.route[pe] as usize;
            if fds.iter().any(|&(l, _)| l == lane) {
                return false;
            }
            match self.lanes[lane].event_fd() {
                Some(fd) => {
                    fds.push((lane, fd));
                    false
                }
                None => true,
            }
        });
        (silent.is_none() && !fds.is_empty()).then_some(fds)
    }

    /// The first peer `watch` names that is gone, and how.
    fn dead_peer(&self, watch: Watch<'_>) -> Option<(usize, Gone)> {
        let mut how = None;
        let pe = self.find_watched(watch, |pe| {
            how = self.lane_of(pe).peer_gone(pe);
            how.is_some()
        })?;
        how.map(|how| (pe, how))
    }

    /// The first peer `watch` names, this PE aside, for which `f` holds.
    fn find_watched(&self, watch: Watch<'_>, mut f: impl FnMut(usize) -> bool) -> Option<usize> {
        let mut hit = |pe: &usize| *pe != self.rank && f(*pe);
        match watch {
            Watch::Peer(pe) => hit(&pe).then_some(pe),
            Watch::All => (0..self.size).find(hit),
            Watch::Listed(pes) => pes.borrow().iter().copied().find(hit),
            Watch::Request(id) => {
                let pes = self.coll_waiting_for(&self.state.lock(), id);
                match pes {
                    Some(pes) => pes.into_iter().find(hit),
                    None => (0..self.size).find(hit),
                }
            }
        }
    }

    /// Runs progress until `stop` is called: the progress thread.
    pub(crate) fn run_progress_thread(self: Arc<Self>) {
        let mut backoff = Backoff::new(self.settings.oversubscribed);
        while !self.stop.load(Ordering::Acquire) {
            let moved = {
                let mut st = self.state.lock();
                match self.progress(&mut st) {
                    Ok(n) => n,
                    // The error is kept in the state; every later call reports it.
                    Err(_) => return,
                }
            };
            if moved > 0 {
                backoff = Backoff::new(self.settings.oversubscribed);
            } else {
                backoff.snooze();
            }
        }
    }

    /// Makes the progress thread return.
    pub(crate) fn stop(&self) {
        self.stop.store(true, Ordering::Release);
    }

    // ---- sending ----

    /// Starts sending `len` bytes at `ptr` to `dest` under `env`. Returns the
    /// pending rendezvous request, or `None` if the send is already complete.
    pub(crate) fn send(
        &self,
        st: &mut State,
        dest: usize,
        env: Envelope,
        ptr: *const u8,
        len: usize,
        mode: SendMode,
    ) -> Result<Option<Id>, Cause> {
        let lane = self.lane_of(dest);
        let eager = len <= self.settings.eager_limit;
        if eager {
            if len <= lane.caps().max_message {
                // SAFETY: the caller passes `len` readable bytes at `ptr`.
                let bytes = unsafe { std::slice::from_raw_parts(ptr, len) };
                st.outbox
                    .frame(lane, dest, wire::header(Kind::Short, env), bytes)?;
            } else {
                st.outbox.send(
                    lane,
                    dest,
                    Out::Stream {
                        first: Some(wire::header(Kind::First, env)),
                        next: cont_header(),
                        bytes: Bytes::Caller(ptr),
                        len,
                        sent: 0,
                        done: None,
                    },
                )?;
            }
            return Ok(None);
        }
        let owned = match mode {
            SendMode::Owned(v) => Some(v),
            _ => None,
        };
        let key = lane.expose(ptr, len)?;
        let id = st.reqs.insert(Entry {
            req: Req::Sending {
                ptr,
                len,
                dest,
                tag: env.tag,
                key: Some(key),
                _owned: owned,
            },
            detached: false,
        });
        let rts = Rts {
            len: len as u64,
            token: id.token(),
            addr: ptr as u64,
            key,
            idle: st.posted.is_empty(),
        };
        st.outbox
            .frame(lane, dest, wire::header(Kind::Rts, env), &rts.encode())?;
        Ok(Some(id))
    }

    /// Sends bytes the engine owns (active messages), detached.
    fn send_owned(
        &self,
        st: &mut State,
        dest: usize,
        env: Envelope,
        data: Vec<u8>,
    ) -> Result<(), Cause> {
        let (ptr, len) = (data.as_ptr(), data.len());
        if let Some(id) = self.send(st, dest, env, ptr, len, SendMode::Owned(data))? {
            Self::detach(st, id);
        }
        Ok(())
    }

    fn send_done(&self, st: &mut State, id: Id) {
        let status = match st.reqs.get(id).map(|e| &e.req) {
            Some(Req::Sending { len, tag, .. }) => Status {
                source: self.rank,
                tag: Tag(*tag),
                len: *len,
                message_len: *len,
            },
            _ => {
                st.reqs.remove(id);
                return;
            }
        };
        Self::complete(st, id, Completion::Sent(status));
    }

    fn complete(st: &mut State, id: Id, c: Completion) {
        Self::end(st, id, Req::Done(c));
    }

    fn fail(st: &mut State, id: Id, cause: Cause) {
        Self::end(st, id, Req::Failed(cause));
    }

    /// Ends `id` as `req` (done or failed), or drops it if detached.
    fn end(st: &mut State, id: Id, req: Req) {
        match st.reqs.get_mut(id) {
            Some(e) if e.detached => {
                st.reqs.remove(id);
            }
            Some(e) => e.req = req,
            None => {}
        }
    }

    /// Marks `id` as unwanted: dropped as soon as it completes.
    pub(crate) fn detach(st: &mut State, id: Id) {
        match st.reqs.get_mut(id) {
            Some(Entry {
                req: Req::Done(_) | Req::Failed(_),
                ..
            }) => {
                st.reqs.remove(id);
            }
            Some(e) => e.detached = true,
            None => {}
        }
    }

    fn control(
        &self,
        st: &mut State,
        peer: usize,
        kind: Kind,
        token: u32,
        payload: &[u8],
    ) -> Result<(), Cause> {
        st.outbox.frame(
            self.lane_of(peer),
            peer,
            wire::control(kind, token),
            payload,
        )?;
        Ok(())
    }

    // ---- receiving ----

    /// Posts a receive into `buf`: matches the oldest unexpected message it
    /// accepts, or waits in the posted queue.
    pub(crate) fn post_recv(&self, st: &mut State, m: Match, buf: RawBuf) -> Result<Id, Cause> {
        let id = st.reqs.insert(Entry {
            req: Req::Posted(buf),
            detached: false,
        });
        match st
            .unexpected
            .iter()
            .position(|u| m.accepts(u.source, u.env))
        {
            Some(pos) => {
                let u = st.unexpected.remove(pos).expect("position is in range");
                self.deliver(st, id, buf, u.source, u.env, u.body.as_ref())?;
            }
            None => st.posted.push_back((id, m)),
        }
        Ok(id)
    }

    /// The status of the oldest unexpected message `m` accepts (a probe).
    pub(crate) fn peek(st: &State, m: Match) -> Option<Status> {
        st.unexpected
            .iter()
            .find(|u| m.accepts(u.source, u.env))
            .map(|u| Status {
                source: u.source,
                tag: Tag(u.env.tag),
                len: u.body.len(),
                message_len: u.body.len(),
            })
    }

    /// Takes the completion of `id` if it is done; `Some(Err)` if it failed.
    pub(crate) fn take(st: &mut State, id: Id) -> Option<Result<Completion, Cause>> {
        match st.reqs.get(id).map(|e| &e.req) {
            Some(Req::Done(_)) | Some(Req::Failed(_)) => match st.reqs.remove(id)?.req {
                Req::Done(c) => Some(Ok(c)),
                Req::Failed(c) => Some(Err(c)),
                _ => unreachable!("checked above"),
            },
            Some(_) => None,
            None => Some(Err(Cause::Broken(
                "a request vanished from the engine".into(),
            ))),
        }
    }

    /// Removes `id` if it has completed; its failure if it failed. A request
    /// already taken is fine.
    pub(crate) fn take_if_live(st: &mut State, id: Id) -> Result<(), Cause> {
        match st.reqs.get(id).map(|e| &e.req) {
            Some(Req::Done(_)) => {
                st.reqs.remove(id);
                Ok(())
            }
            Some(Req::Failed(_)) => match st.reqs.remove(id).map(|e| e.req) {
                Some(Req::Failed(c)) => Err(c),
                _ => unreachable!("checked above"),
            },
            _ => Ok(()),
        }
    }

    /// Takes the failure of `id`, if it failed.
    pub(crate) fn take_failure(st: &mut State, id: Id) -> Option<Cause> {
        match st.reqs.get(id).map(|e| &e.req) {
            Some(Req::Failed(_)) => match st.reqs.remove(id)?.req {
                Req::Failed(c) => Some(c),
                _ => unreachable!("checked above"),
            },
            _ => None,
        }
    }

    /// A request that is already complete.
    pub(crate) fn completed(st: &mut State, c: Completion) -> Id {
        st.reqs.insert(Entry {
            req: Req::Done(c),
            detached: false,
        })
    }

    /// Whether `id` has completed (or failed), without taking it.
    pub(crate) fn is_done(st: &State, id: Id) -> bool {
        !matches!(
            st.reqs.get(id).map(|e| &e.req),
            Some(
                Req::Posted(_)
                    | Req::Filling(_)
                    | Req::Sending { .. }
                    | Req::AmWaiting { .. }
                    | Req::Abandoned { .. }
                    | Req::Collective(_)
            )
        )
    }

    /// The status of a completed request without taking it.
    pub(crate) fn status(st: &State, id: Id) -> Option<Status> {
        match st.reqs.get(id).map(|e| &e.req) {
            Some(Req::Done(Completion::Received(s) | Completion::Sent(s))) => Some(*s),
            _ => None,
        }
    }

    /// Abandons request `id` whose owner is going away: nothing will touch
    /// its buffer afterwards.
    pub(crate) fn cancel(&self, st: &mut State, id: Id) {
        let Some(entry) = st.reqs.get_mut(id) else {
            return;
        };
        match &mut entry.req {
            Req::Posted(_) => {
                st.posted.retain(|(p, _)| *p != id);
                st.reqs.remove(id);
            }
            Req::Filling(f) => {
                f.dest = Dest::Discard;
                f.then = Then::Drop;
                entry.detached = true;
            }
            Req::Sending { dest, key, .. } => {
                entry.req = Req::Abandoned {
                    dest: *dest,
                    key: *key,
                };
                entry.detached = true;
                st.outbox.cancel(id);
            }
            Req::AmWaiting { .. } | Req::Abandoned { .. } => entry.detached = true,
            Req::Collective(_) => self.coll_cancel(st, id),
            Req::Done(_) | Req::Failed(_) => {
                st.reqs.remove(id);
            }
        }
    }

    fn dispatch(
        &self,
        st: &mut State,
        source: usize,
        header: u64,
        payload: &[u8],
    ) -> Result<(), Cause> {
        let (kind, env) = wire::parse(source, header)?;
        match kind {
            Kind::Short => self.arrive(st, source, env, BodyRef::Bytes(payload)),
            Kind::First => self.first(st, source, env, payload),
            Kind::Cont => {
                let id = st.assembling[source].ok_or_else(|| {
                    malformed(source, "a continuation frame outside any message".into())
                })?;
                if self.write(st, id, payload)? {
                    st.assembling[source] = None;
                    self.finish(st, id)?;
                }
                Ok(())
            }
            Kind::Rts => {
                let rts = Rts::decode(source, payload)?;
                self.arrive(st, source, env, BodyRef::Remote(rts))
            }
            Kind::Fin => match st.reqs.by_token(env.tag) {
                Some((
                    id,
                    Entry {
                        req: Req::Sending { dest, key, .. } | Req::Abandoned { dest, key },
                        ..
                    },
                )) if *dest == source => {
                    self.unexpose_once(source, key);
                    self.send_done(st, id);
                    Ok(())
                }
                _ => Err(malformed(
                    source,
                    format!("a Fin for unknown send {}", env.tag),
                )),
            },
            Kind::Cts => self.clear_to_send(st, source, env.tag, payload),
            Kind::Help => self.help(st, source, env.tag, payload),
            Kind::Data => {
                let id = match st.reqs.by_token(env.tag) {
                    Some((
                        id,
                        Entry {
                            req: Req::Filling(f),
                            ..
                        },
                    )) if f.source == source => id,
                    _ => {
                        return Err(malformed(
                            source,
                            format!("pushed bytes for unknown receive {}", env.tag),
                        ))
                    }
                };
                if self.write(st, id, payload)? {
                    self.finish(st, id)?;
                }
                Ok(())
            }
        }
    }

    fn clear_to_send(
        &self,
        st: &mut State,
        source: usize,
        token: u32,
        payload: &[u8],
    ) -> Result<(), Cause> {
        let (recv_token, bytes) = wire::decode_cts(source, payload)?;
        let (id, ptr) = match st.reqs.by_token(token) {
            Some((
                id,
                Entry {
                    req:
                        Req::Sending {
                            ptr,
                            len,
                            dest,
                            key,
                            ..
                        },
                    ..
                },
            )) if *dest == source && bytes <= *len as u64 => {
                // The receiver will not read: the sender pushes the bytes.
                self.unexpose_once(source, key);
                (id, *ptr)
            }
            // The sender gave up on this send; the receiver learns it when
            // this PE exits.
            Some((
                id,
                Entry {
                    req: Req::Abandoned { dest, key },
                    ..
                },
            )) if *dest == source => {
                self.unexpose_once(source, key);
                st.reqs.remove(id);
                return Ok(());
            }
            _ => return Err(malformed(source, format!("a Cts for unknown send {token}"))),
        };
        let done = st.outbox.send(
            self.lane_of(source),
            source,
            Out::Stream {
                first: None,
                next: wire::control(Kind::Data, recv_token),
                bytes: Bytes::Request(ptr),
                len: bytes as usize,
                sent: 0,
                done: Some(id),
            },
        )?;
        if let Some(id) = done {
            self.send_done(st, id);
        }
        Ok(())
    }

    fn first(
        &self,
        st: &mut State,
        source: usize,
        env: Envelope,
        payload: &[u8],
    ) -> Result<(), Cause> {
        let (total, bytes) = wire::decode_first(source, payload)?;
        if st.assembling[source].is_some() {
            return Err(malformed(
                source,
                "a new message before the last one ended".into(),
            ));
        }
        let len = usize::try_from(total)
            .ok()
            .filter(|&l| l >= bytes.len())
            .ok_or_else(|| malformed(source, format!("a message of {total} bytes")))?;
        let matched = match env.class {
            Class::P2p | Class::Collective => st
                .posted
                .iter()
                .position(|(_, m)| m.accepts(source, env))
                .map(|pos| st.posted.remove(pos).expect("position is in range").0),
            Class::AmRequest | Class::AmReply => None,
        };
        let id = match matched {
            Some(id) => {
                let Some(Entry {
                    req: r @ Req::Posted(_),
                    ..
                }) = st.reqs.get_mut(id)
                else {
                    unreachable!("posted receives are Posted")
                };
                let Req::Posted(buf) = *r else { unreachable!() };
                *r = Req::Filling(Fill {
                    source,
                    dest: Dest::User(buf),
                    len,
                    got: 0,
                    then: Then::Receive(Status {
                        source,
                        tag: Tag(env.tag),
                        len: len.min(buf.cap),
                        message_len: len,
                    }),
                });
                id
            }
            None => {
                let v = owned_buffer(source, len)?;
                st.reqs.insert(Entry {
                    req: Req::Filling(Fill {
                        source,
                        dest: Dest::Owned(v),
                        len,
                        got: 0,
                        then: Then::Arrive(env),
                    }),
                    detached: true,
                })
            }
        };
        if self.write(st, id, bytes)? {
            self.finish(st, id)
        } else {
            st.assembling[source] = Some(id);
            Ok(())
        }
    }

    /// Writes arriving bytes into fill `id`; `true` when it is complete.
    fn write(&self, st: &mut State, id: Id, bytes: &[u8]) -> Result<bool, Cause> {
        match st.reqs.get_mut(id) {
            Some(Entry {
                req: Req::Filling(f),
                ..
            }) => f.write(bytes),
            _ => Err(Cause::Broken("a fill vanished from the engine".into())),
        }
    }

    fn finish(&self, st: &mut State, id: Id) -> Result<(), Cause> {
        let Some(Entry {
            req: Req::Filling(f),
            ..
        }) = st.reqs.get_mut(id)
        else {
            return Err(Cause::Broken("a fill vanished from the engine".into()));
        };
        let source = f.source;
        let dest = std::mem::replace(&mut f.dest, Dest::Discard);
        match std::mem::replace(&mut f.then, Then::Drop) {
            Then::Receive(status) => {
                Self::complete(st, id, Completion::Received(status));
                Ok(())
            }
            Then::Drop => {
                st.reqs.remove(id);
                Ok(())
            }
            then => {
                st.reqs.remove(id);
                let Dest::Owned(data) = dest else {
                    unreachable!("only owned fills arrive, run handlers or reply")
                };
                match then {
                    Then::Arrive(env) => self.arrive(st, source, env, BodyRef::Bytes(&data)),
                    Then::Handle(env) => {
                        self.handle(st, source, env, &data)?;
                        self.unblock(st, source)
                    }
                    Then::Reply(handle) => {
                        Self::am_done(st, handle, data);
                        Ok(())
                    }
                    Then::Receive(_) | Then::Drop => unreachable!("handled above"),
                }
            }
        }
    }

    /// A whole message (or the Rts of one) from `source`.
    fn arrive(
        &self,
        st: &mut State,
        source: usize,
        env: Envelope,
        body: BodyRef<'_>,
    ) -> Result<(), Cause> {
        if env.class == Class::Collective {
            let payload = match body {
                BodyRef::Bytes(b) => b,
                BodyRef::Remote(_) => &[],
            };
            if self.coll_arrived(st, source, env, payload) {
                return Ok(());
            }
        }
        match env.class {
            Class::P2p | Class::Collective => {
                match st.posted.iter().position(|(_, m)| m.accepts(source, env)) {
                    Some(pos) => {
                        let (id, _) = st.posted.remove(pos).expect("position is in range");
                        let Some(Entry {
                            req: Req::Posted(buf),
                            ..
                        }) = st.reqs.get(id)
                        else {
                            unreachable!("posted receives are Posted")
                        };
                        let buf = *buf;
                        self.deliver(st, id, buf, source, env, body)
                    }
                    None => {
                        st.unexpected.push_back(Unexpected {
                            source,
                            env,
                            body: body.to_owned(),
                        });
                        Ok(())
                    }
                }
            }
            Class::AmRequest => {
                if let Some(q) = &mut st.am_blocked[source] {
                    q.push_back((env, body.to_owned()));
                    return Ok(());
                }
                self.request(st, source, env, body)
            }
            Class::AmReply => {
                let handle = match st.reqs.by_token(env.tag) {
                    Some((
                        id,
                        Entry {
                            req: Req::AmWaiting { target },
                            ..
                        },
                    )) if *target == source => id,
                    _ => {
                        return Err(malformed(
                            source,
                            format!("a reply to unknown request {}", env.tag),
                        ))
                    }
                };
                match body {
                    BodyRef::Bytes(b) => {
                        Self::am_done(st, handle, b.to_vec());
                        Ok(())
                    }
                    BodyRef::Remote(rts) => {
                        let mut v = owned_buffer(source, rts.len as usize)?;
                        v.resize(rts.len as usize, 0);
                        if self.fetch(st, source, &rts, &mut v)? {
                            self.control(st, source, Kind::Fin, rts.token, &[])?;
                            Self::am_done(st, handle, v);
                        } else {
                            let then = Then::Reply(handle);
                            self.push_into(st, source, &rts, Dest::Owned(Vec::new()), then, None)?;
                        }
                        Ok(())
                    }
                }
            }
        }
    }

    /// An active-message request whose turn has come.
    fn request(
        &self,
        st: &mut State,
        source: usize,
        env: Envelope,
        body: BodyRef<'_>,
    ) -> Result<(), Cause> {
        match body {
            BodyRef::Bytes(b) => self.handle(st, source, env, b),
            BodyRef::Remote(rts) => {
                let mut v = owned_buffer(source, rts.len as usize)?;
                v.resize(rts.len as usize, 0);
                if self.fetch(st, source, &rts, &mut v)? {
                    self.control(st, source, Kind::Fin, rts.token, &[])?;
                    self.handle(st, source, env, &v)
                } else {
                    st.am_blocked[source] = Some(VecDeque::new());
                    let then = Then::Handle(env);
                    self.push_into(st, source, &rts, Dest::Owned(Vec::new()), then, None)
                }
            }
        }
    }

    /// Runs the active messages held back behind a pushed one, until one
    /// has to wait for pushed bytes again.
    fn unblock(&self, st: &mut State, source: usize) -> Result<(), Cause> {
        let Some(mut queue) = st.am_blocked[source].take() else {
            return Ok(());
        };
        while let Some((env, body)) = queue.pop_front() {
            self.request(st, source, env, body.as_ref())?;
            if let Some(q) = &mut st.am_blocked[source] {
                q.extend(queue);
                return Ok(());
            }
        }
        Ok(())
    }

    /// Delivers a matched message into receive `id`'s buffer.
    fn deliver(
        &self,
        st: &mut State,
        id: Id,
        buf: RawBuf,
        source: usize,
        env: Envelope,
        body: BodyRef<'_>,
    ) -> Result<(), Cause> {
        let message_len = match body {
            BodyRef::Bytes(b) => b.len(),
            BodyRef::Remote(r) => r.len as usize,
        };
        let n = message_len.min(buf.cap);
        let status = Status {
            source,
            tag: Tag(env.tag),
            len: n,
            message_len,
        };
        // SAFETY: the receive buffer is valid for `cap >= n` bytes while the
        // request lives, and nothing else accesses it (see `Fill::write`).
        let dst = unsafe { std::slice::from_raw_parts_mut(buf.ptr, n) };
        match body {
            BodyRef::Bytes(b) => weft_copy::copy(dst, &b[..n]),
            BodyRef::Remote(rts) if n > 0 => match self.fetch(st, source, &rts, dst) {
                Ok(true) => self.control(st, source, Kind::Fin, rts.token, &[])?,
                Ok(false) => {
                    let then = Then::Receive(status);
                    return self.push_into(st, source, &rts, Dest::User(buf), then, Some(id));
                }
                // This receive fails (the sender is gone, or named memory it
                // does not have); the engine goes on.
                Err(cause) => {
                    match st.reqs.get_mut(id) {
                        Some(e) if !e.detached => e.req = Req::Failed(cause),
                        _ => {
                            st.reqs.remove(id);
                        }
                    }
                    return Ok(());
                }
            },
            BodyRef::Remote(rts) => self.control(st, source, Kind::Fin, rts.token, &[])?,
        }
        Self::complete(st, id, Completion::Received(status));
        Ok(())
    }

    /// Copies a rendezvous sender's bytes into `dst` in one copy; `false` if
    /// that is not possible here, so the bytes must be pushed.
    fn fetch(
        &self,
        st: &mut State,
        source: usize,
        rts: &Rts,
        dst: &mut [u8],
    ) -> Result<bool, Cause> {
        if !self.settings.single_copy || st.no_single_copy[source] {
            return Ok(false);
        }
        let shared = dst.len() >= help::MIN
            && rts.idle
            && source != self.rank
            && self.lane_of(source).caps().load_store;
        if shared {
            return self.fetch_shared(st, source, rts, dst);
        }
        match self
            .lane_of(source)
            .read_remote(source, rts.addr, rts.key, dst)
        {
            Ok(()) => Ok(true),
            Err(TransportError::Unsupported { .. }) => {
                st.no_single_copy[source] = true;
                Ok(false)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Asks `source` to push a rendezvous message's bytes into `dest`. The
    /// fill becomes entry `reuse` (a user's receive) or a new internal entry.
    fn push_into(
        &self,
        st: &mut State,
        source: usize,
        rts: &Rts,
        dest: Dest,
        then: Then,
        reuse: Option<Id>,
    ) -> Result<(), Cause> {
        let len = match &dest {
            Dest::User(buf) => buf.cap.min(rts.len as usize),
            _ => rts.len as usize,
        };
        let dest = match dest {
            Dest::Owned(_) => Dest::Owned(owned_buffer(source, len)?),
            d => d,
        };
        let fill = Fill {
            source,
            dest,
            len,
            got: 0,
            then,
        };
        let id = match reuse {
            Some(id) => {
                st.reqs.get_mut(id).expect("the receive is live").req = Req::Filling(fill);
                id
            }
            None => st.reqs.insert(Entry {
                req: Req::Filling(fill),
                detached: true,
            }),
        };
        self.control(
            st,
            source,
            Kind::Cts,
            rts.token,
            &wire::encode_cts(id.token(), len as u64),
        )
    }

    // ---- active messages ----

    /// Sends an active-message request; returns its handle's id.
    pub(crate) fn am_request(
        &self,
        st: &mut State,
        target: usize,
        handler: u32,
        data: Vec<u8>,
    ) -> Result<Id, Cause> {
        let id = st.reqs.insert(Entry {
            req: Req::AmWaiting { target },
            detached: false,
        });
        st.am_pending += 1;
        let env = Envelope {
            class: Class::AmRequest,
            ctx: handler,
            tag: id.token(),
        };
        self.send_owned(st, target, env, data)?;
        Ok(id)
    }

    /// Active-message requests not yet replied to.
    pub(crate) fn am_pending(st: &State) -> usize {
        st.am_pending
    }

    fn am_done(st: &mut State, handle: Id, data: Vec<u8>) {
        st.am_pending -= 1;
        Self::complete(st, handle, Completion::Reply(data));
    }

    /// Runs the handler of a request and sends its reply.
    fn handle(
        &self,
        st: &mut State,
        source: usize,
        env: Envelope,
        data: &[u8],
    ) -> Result<(), Cause> {
        let handler = self.handlers.get(env.ctx).ok_or_else(|| {
            malformed(
                source,
                format!(
                    "a request for handler {} of {}",
                    env.ctx,
                    self.handlers.len()
                ),
            )
        })?;
        let hlen = *data
            .first()
            .ok_or_else(|| malformed(source, "an empty active message".into()))?
            as usize;
        if data.len() < 1 + hlen {
            return Err(malformed(
                source,
                format!("an active-message header of {hlen} bytes in {}", data.len()),
            ));
        }
        let (header, payload) = data[1..].split_at(hlen);
        let mut ctx = AmContext::new(source, self.rank);
        let ran = {
            let _guard = HandlerGuard::enter();
            catch_unwind(AssertUnwindSafe(|| {
                (handler.run)(&mut ctx, header, payload)
            }))
        };
        if let Err(panic) = ran {
            let msg = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".into());
            return Err(Cause::HandlerPanicked {
                handler: handler.name.clone(),
                message: msg,
            });
        }
        let reply = Envelope {
            class: Class::AmReply,
            ctx: 0,
            tag: env.tag,
        };
        self.send_owned(st, source, reply, ctx.into_reply())
    }
}

/// An empty vector able to hold `len` bytes from `source`, or an error if
/// memory for that claim cannot be had (a corrupt length must not abort).
fn owned_buffer(source: usize, len: usize) -> Result<Vec<u8>, Cause> {
    let mut v = Vec::new();
    v.try_reserve_exact(len).map_err(|_| {
        malformed(
            source,
            format!("a message of {len} bytes does not fit in memory"),
        )
    })?;
    Ok(v)
}
