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
//!
//! This module holds the engine's state and its polling; its submodules
//! the rest: `requests` starting sends and receives and a request's life,
//! `arrivals` what comes off the lanes (frames, matching, rendezvous
//! transfers), `handlers` active messages, `waits` how a caller waits,
//! `coll` collectives inside the engine.

mod arrivals;
pub(crate) mod coll;
mod handlers;
pub(crate) mod help;
mod outbox;
mod requests;
mod slab;
mod waits;
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
use arrivals::{malformed, Body, Dest, Fill, Then, Unexpected};
use outbox::{cont_header, Bytes, Out, Outbox};
pub(crate) use slab::Id;
use slab::Slab;
use weft_transport::backoff::Backoff;
use wire::{Class, Envelope, Kind, Rts};

thread_local! {
    /// Set while this thread runs an active-message handler.
    static IN_HANDLER: Cell<bool> = const { Cell::new(false) };
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
}
