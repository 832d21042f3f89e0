//! Active messages: a request carries a small header and a payload to a PE,
//! where a handler registered by the program runs on them and may reply.
//!
//! Every PE registers the same handlers in the same order before
//! [`crate::init_with`]; init compares the lists and fails on every PE if
//! they differ. Requests from one PE to another run in the order they were
//! sent. Payloads above `WEFT_EAGER_LIMIT` go by rendezvous.
//!
//! Handlers run inside the progress engine, on whichever thread drives it
//! (a thread waiting in any blocking call, [`World::progress`], or the
//! progress thread), with the engine locked. So a handler must not wait,
//! send or receive through the world: such calls return
//! [`Cause::InHandler`]. It may use one-sided operations (put, get,
//! atomics) and answer through [`AmContext::reply`]. A handler that panics
//! stops the engine with an error naming it.

use crate::error::{Cause, Result};
use crate::progress::{Completion, Engine, Id, Watch};
use crate::World;

/// Largest header of an active message, in bytes.
pub const AM_HEADER_MAX: usize = 255;

type HandlerFn = dyn Fn(&mut AmContext, &[u8], &[u8]) + Send + Sync;

pub(crate) struct Registered {
    pub(crate) name: String,
    pub(crate) run: Box<HandlerFn>,
}

/// The active-message handlers of a program, registered before init.
///
/// ```no_run
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use std::sync::Arc;
///
/// let hits = Arc::new(AtomicU64::new(0));
/// let mut handlers = weft::Handlers::new();
/// let count = {
///     let hits = hits.clone();
///     handlers.register("count", move |ctx, _header, payload| {
///         hits.fetch_add(payload.len() as u64, Ordering::Relaxed);
///         ctx.reply(&(ctx.source() as u32).to_le_bytes());
///     })
/// };
/// let world = weft::init_with(handlers)?;
/// let h = world.am_request((world.rank() + 1) % world.size(), count, &[], b"hello")?;
/// let reply = h.wait()?;
/// assert_eq!(reply, (world.rank() as u32).to_le_bytes());
/// # Ok::<(), weft::Error>(())
/// ```
#[derive(Default)]
pub struct Handlers {
    list: Vec<Registered>,
}

/// A registered handler, named in [`World::am_request`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Handler(u32);

impl Handlers {
    /// No handlers yet.
    pub fn new() -> Handlers {
        Handlers::default()
    }

    /// Registers `run` under `name`. It is called at the target with the
    /// request's context, header and payload.
    pub fn register(
        &mut self,
        name: &str,
        run: impl Fn(&mut AmContext, &[u8], &[u8]) + Send + Sync + 'static,
    ) -> Handler {
        self.list.push(Registered {
            name: name.to_owned(),
            run: Box::new(run),
        });
        Handler(self.list.len() as u32 - 1)
    }

    pub(crate) fn get(&self, id: u32) -> Option<&Registered> {
        self.list.get(id as usize)
    }

    pub(crate) fn len(&self) -> usize {
        self.list.len()
    }

    /// The names in registration order, as compared across PEs at init.
    pub(crate) fn names(&self) -> Vec<&str> {
        self.list.iter().map(|r| r.name.as_str()).collect()
    }
}

/// What a running handler knows and can do.
pub struct AmContext {
    source: usize,
    rank: usize,
    reply: Vec<u8>,
}

impl AmContext {
    pub(crate) fn new(source: usize, rank: usize) -> AmContext {
        AmContext {
            source,
            rank,
            reply: Vec::new(),
        }
    }

    /// The PE that sent the request.
    pub fn source(&self) -> usize {
        self.source
    }

    /// The PE the handler runs on.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// Sets the bytes returned to the requester's [`AmHandle::wait`]
    /// (replacing any set before). Without a reply it gets no bytes.
    pub fn reply(&mut self, data: &[u8]) {
        self.reply.clear();
        self.reply.extend_from_slice(data);
    }

    pub(crate) fn into_reply(self) -> Vec<u8> {
        self.reply
    }
}

/// A pending active-message request. Dropping it without waiting forgets
/// the reply; [`World::am_wait_all`] still waits for the request.
#[must_use = "the reply is only seen through wait or test"]
pub struct AmHandle<'w> {
    world: &'w World,
    id: Id,
    target: usize,
    taken: bool,
}

impl AmHandle<'_> {
    /// Waits until the handler has run at the target; returns its reply.
    pub fn wait(mut self) -> Result<Vec<u8>> {
        let id = self.id;
        let c = self
            .world
            .engine()
            .wait("am_wait", Watch::Peer(self.target), |st| {
                Engine::take(st, id)
            })?;
        self.taken = true;
        match c {
            Completion::Reply(data) => Ok(data),
            Completion::Received(_) | Completion::Sent(_) => {
                unreachable!("active-message requests complete with a reply")
            }
        }
    }

    /// Drives progress once; whether the handler has run at the target
    /// (then [`AmHandle::wait`] returns at once).
    pub fn test(&self) -> Result<bool> {
        const OP: &str = "am_test";
        let engine = self.world.engine();
        let mut st = engine.lock(OP)?;
        engine
            .progress(&mut st)
            .map_err(|c| self.world.error(OP, c))?;
        Ok(Engine::is_done(&st, self.id))
    }
}

impl Drop for AmHandle<'_> {
    fn drop(&mut self) {
        if !self.taken {
            if let Ok(mut st) = self.world.engine().lock("am_drop") {
                Engine::detach(&mut st, self.id);
            }
        }
    }
}

impl World {
    /// Sends an active-message request to `pe`: `handler` runs there with
    /// `header` (at most [`AM_HEADER_MAX`] bytes) and `payload`. Returns at
    /// once; the handle tells when the handler has run and what it replied.
    pub fn am_request(
        &self,
        pe: usize,
        handler: Handler,
        header: &[u8],
        payload: &[u8],
    ) -> Result<AmHandle<'_>> {
        const OP: &str = "am_request";
        self.check_live(OP)?;
        self.check_pe(OP, pe)?;
        let engine = self.engine();
        if engine.handlers().get(handler.0).is_none() {
            return Err(self.error(
                OP,
                Cause::BadHandler {
                    id: handler.0,
                    registered: engine.handlers().len(),
                },
            ));
        }
        if header.len() > AM_HEADER_MAX {
            return Err(self.error(
                OP,
                Cause::Invalid(format!(
                    "a header of {} bytes (at most {AM_HEADER_MAX})",
                    header.len()
                )),
            ));
        }
        let mut data = Vec::with_capacity(1 + header.len() + payload.len());
        data.push(header.len() as u8);
        data.extend_from_slice(header);
        data.extend_from_slice(payload);
        let mut st = engine.lock(OP)?;
        let id = engine
            .am_request(&mut st, pe, handler.0, data)
            .map_err(|c| self.error(OP, c))?;
        Ok(AmHandle {
            world: self,
            id,
            target: pe,
            taken: false,
        })
    }

    /// Waits until the handler of every active-message request this PE has
    /// sent has run.
    pub fn am_wait_all(&self) -> Result<()> {
        self.engine().wait("am_wait_all", Watch::All, |st| {
            (Engine::am_pending(st) == 0).then_some(Ok(()))
        })
    }
}
