//! Tagged point-to-point messages with MPI semantics.
//!
//! A receive names a source (or [`Source::Any`]) and a tag (or
//! [`Tag::ANY`]) and takes the oldest matching message: messages between a
//! pair of PEs with the same tag never overtake each other. A message that
//! arrives before its receive waits in an unexpected queue. One longer than
//! the receive buffer fills the buffer and is reported as truncated in the
//! [`Status`]; nothing is written past the buffer.
//!
//! Messages up to `WEFT_EAGER_LIMIT` bytes are copied through the peer's
//! message queue and a send of them completes at once. Longer ones go by
//! rendezvous: the receiver copies them once, straight out of the sender's
//! buffer, when the receive is matched; the send completes then.
//!
//! Non-blocking operations live in a [`Scope`] ([`World::scope`]), which
//! borrows their buffers and does not end before every request in it has
//! completed, so a buffer can never be reused while the engine still uses it.

use std::marker::PhantomData;

use bytemuck::Pod;
use parking_lot::Mutex;

use crate::error::{Cause, Result};
use crate::progress::wire::{Class, Envelope};
use crate::progress::{Completion, Engine, Id, Match, RawBuf, SendMode, State, Watch};
use crate::World;

/// A message tag: a number in `0..=Tag::MAX`, or [`Tag::ANY`] in a receive.
///
/// ```
/// use weft::Tag;
/// let t = Tag(7);
/// assert!(t.0 <= Tag::MAX);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Tag(pub u32);

impl Tag {
    /// The largest tag a message can carry (MPI's guaranteed `MPI_TAG_UB`).
    pub const MAX: u32 = i32::MAX as u32;
    /// In a receive or probe: any tag.
    pub const ANY: Tag = Tag(u32::MAX);

    fn selector(self) -> Option<u32> {
        (self != Tag::ANY).then_some(self.0)
    }
}

/// Which PE a receive accepts messages from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// Only this PE.
    Rank(usize),
    /// Any PE.
    Any,
}

impl From<usize> for Source {
    fn from(rank: usize) -> Source {
        Source::Rank(rank)
    }
}

/// What a completed receive (or a probe) found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Status {
    /// The sending PE.
    pub source: usize,
    /// The message's tag.
    pub tag: Tag,
    /// Bytes placed in the buffer (for a probe: the message's length).
    pub len: usize,
    /// Bytes the sender sent.
    pub message_len: usize,
}

impl Status {
    /// Whether the message was longer than the buffer.
    pub fn truncated(&self) -> bool {
        self.message_len > self.len
    }

    /// Whole elements of `T` received.
    pub fn count<T>(&self) -> usize {
        self.len / std::mem::size_of::<T>().max(1)
    }
}

/// Context of the world's point-to-point messages.
const WORLD_CONTEXT: u32 = 0;

impl World {
    fn check_tag(&self, op: &'static str, tag: Tag) -> Result<()> {
        if tag.0 > Tag::MAX {
            return Err(self.error(
                op,
                Cause::BadTag {
                    tag: tag.0,
                    max: Tag::MAX,
                },
            ));
        }
        Ok(())
    }

    fn check_source(&self, op: &'static str, source: Source) -> Result<Option<usize>> {
        match source {
            Source::Any => Ok(None),
            Source::Rank(pe) => {
                self.check_pe(op, pe)?;
                Ok(Some(pe))
            }
        }
    }

    /// Opens a scope for non-blocking point-to-point operations. Every
    /// request made in it is complete when `scope` returns: those not
    /// waited for are waited for at the end. If `f` or one of those waits
    /// fails, the requests still pending are cancelled (their buffers are
    /// no longer touched) and the first error is returned.
    ///
    /// Buffers must be declared outside the scope, as with
    /// `std::thread::scope`.
    ///
    /// ```no_run
    /// use weft::{Source, Tag};
    /// let world = weft::init()?;
    /// let (me, n) = (world.rank(), world.size());
    /// let out = [me as u64; 4];
    /// let mut inb = [0u64; 4];
    /// world.scope(|s| {
    ///     let r = s.irecv(Source::Any, Tag(1), &mut inb)?;
    ///     s.isend((me + 1) % n, Tag(1), &out)?;
    ///     let status = r.wait()?;
    ///     assert_eq!(status.source, (me + n - 1) % n);
    ///     Ok(())
    /// })?;
    /// # Ok::<(), weft::Error>(())
    /// ```
    pub fn scope<'env, R>(
        &'env self,
        f: impl for<'s> FnOnce(&'s Scope<'s, 'env>) -> Result<R>,
    ) -> Result<R> {
        let scope = Scope {
            world: self,
            ids: Mutex::new(Vec::new()),
            _invariant: PhantomData,
        };
        let result = f(&scope);
        let ids = std::mem::take(&mut *scope.ids.lock());
        let finished = match &result {
            Ok(_) => ids.iter().try_for_each(|&id| scope.finish(id)),
            Err(_) => Ok(()),
        };
        if result.is_err() || finished.is_err() {
            // Cancel whatever is left; the lock cannot be refused here
            // unless inside a handler, where no request could be made.
            if let Ok(mut st) = self.engine().lock("scope") {
                for &id in &ids {
                    self.engine().cancel(&mut st, id);
                }
            }
        }
        finished?;
        result
    }

    /// Sends `data` to `dest` under `tag` and returns once the buffer may be
    /// reused: at once for messages up to the eager limit, when the receiver
    /// has taken the bytes for longer ones.
    ///
    /// ```no_run
    /// use weft::{Source, Tag};
    /// let world = weft::init()?;
    /// if world.rank() == 0 {
    ///     world.send(1, Tag(5), &[1.0f64, 2.0])?;
    /// } else if world.rank() == 1 {
    ///     let mut buf = [0.0f64; 2];
    ///     let status = world.recv(Source::Rank(0), Tag(5), &mut buf)?;
    ///     assert_eq!((status.count::<f64>(), buf), (2, [1.0, 2.0]));
    /// }
    /// # Ok::<(), weft::Error>(())
    /// ```
    pub fn send<T: Pod>(&self, dest: usize, tag: Tag, data: &[T]) -> Result<()> {
        const OP: &str = "send";
        let bytes: &[u8] = bytemuck::cast_slice(data);
        match self.start_send(OP, dest, tag, bytes)? {
            None => Ok(()),
            Some(id) => self.complete(OP, Watch::Peer(dest), |_| Ok(id)).map(drop),
        }
    }

    /// Starts sending `bytes`; the pending request if the send is not
    /// complete yet (rendezvous), during which `bytes` must stay untouched.
    fn start_send(
        &self,
        op: &'static str,
        dest: usize,
        tag: Tag,
        bytes: &[u8],
    ) -> Result<Option<Id>> {
        self.check_live(op)?;
        self.check_pe(op, dest)?;
        self.check_tag(op, tag)?;
        let engine = self.engine();
        let env = Envelope {
            class: Class::P2p,
            ctx: WORLD_CONTEXT,
            tag: tag.0,
        };
        let mut st = engine.lock(op)?;
        engine
            .send(
                &mut st,
                dest,
                env,
                bytes.as_ptr(),
                bytes.len(),
                SendMode::Auto,
            )
            .map_err(|c| self.error(op, c))
    }

    /// Posts a receive into `buf`, which must stay untouched until it completes.
    fn start_recv(&self, op: &'static str, m: Match, buf: &mut [u8]) -> Result<Id> {
        let raw = RawBuf::of(buf);
        let engine = self.engine();
        let mut st = engine.lock(op)?;
        engine
            .post_recv(&mut st, m, raw)
            .map_err(|c| self.error(op, c))
    }

    /// Starts a blocking call's request with `start`, under the lock the
    /// wait takes first, and waits for it; on failure cancels it, so that
    /// the engine lets go of the caller's buffer before it returns.
    pub(crate) fn complete(
        &self,
        op: &'static str,
        watch: Watch<'_>,
        start: impl FnOnce(&mut State) -> std::result::Result<Id, Cause>,
    ) -> Result<Completion> {
        let engine = self.engine();
        let mut start = Some(start);
        let mut started = None;
        let done = engine.wait(op, watch, |st| {
            if let Some(start) = start.take() {
                match start(st) {
                    Ok(id) => started = Some(id),
                    Err(c) => return Some(Err(c)),
                }
            }
            Engine::take(st, started?)
        });
        if let (Err(_), Some(id)) = (&done, started) {
            if let Ok(mut st) = engine.lock(op) {
                engine.cancel(&mut st, id);
            }
        }
        done
    }

    /// Receives the oldest message from `source` under `tag` (either may be
    /// a wildcard) into `buf`. A longer message fills `buf` and is reported
    /// by [`Status::truncated`].
    pub fn recv<T: Pod>(
        &self,
        source: impl Into<Source>,
        tag: Tag,
        buf: &mut [T],
    ) -> Result<Status> {
        const OP: &str = "recv";
        let m = self.recv_match(OP, source.into(), tag)?;
        let raw = RawBuf::of(bytemuck::cast_slice_mut(buf));
        let engine = self.engine();
        let watch = m.source.map_or(Watch::All, Watch::Peer);
        match self.complete(OP, watch, |st| engine.post_recv(st, m, raw))? {
            Completion::Received(s) => Ok(s),
            Completion::Sent(_) | Completion::Reply(_) => {
                unreachable!("a receive completes with a status")
            }
        }
    }

    /// Sends `data` to `dest` and receives into `buf` from `source` at the
    /// same time, so that two PEs exchanging messages cannot deadlock.
    pub fn sendrecv<T: Pod, U: Pod>(
        &self,
        dest: usize,
        send_tag: Tag,
        data: &[T],
        source: impl Into<Source>,
        recv_tag: Tag,
        buf: &mut [U],
    ) -> Result<Status> {
        self.scope(|s| {
            let r = s.irecv(source, recv_tag, buf)?;
            let w = s.isend(dest, send_tag, data)?;
            w.wait()?;
            r.wait()
        })
    }

    /// Waits until a message from `source` under `tag` has arrived and
    /// returns its status (its length in `len`) without receiving it.
    pub fn probe(&self, source: impl Into<Source>, tag: Tag) -> Result<Status> {
        const OP: &str = "probe";
        let m = self.recv_match(OP, source.into(), tag)?;
        let watch = m.source.map_or(Watch::All, Watch::Peer);
        self.engine()
            .wait(OP, watch, |st| Engine::peek(st, m).map(Ok))
    }

    /// Whether a message from `source` under `tag` has arrived; its status if so.
    pub fn iprobe(&self, source: impl Into<Source>, tag: Tag) -> Result<Option<Status>> {
        const OP: &str = "iprobe";
        let m = self.recv_match(OP, source.into(), tag)?;
        let engine = self.engine();
        let mut st = engine.lock(OP)?;
        engine.progress(&mut st).map_err(|c| self.error(OP, c))?;
        Ok(Engine::peek(&st, m))
    }

    fn recv_match(&self, op: &'static str, source: Source, tag: Tag) -> Result<Match> {
        self.check_live(op)?;
        if tag != Tag::ANY {
            self.check_tag(op, tag)?;
        }
        Ok(Match {
            class: Class::P2p,
            ctx: WORLD_CONTEXT,
            source: self.check_source(op, source)?,
            tag: tag.selector(),
        })
    }
}

/// Non-blocking point-to-point operations whose buffers live at least as
/// long as `'s`; made by [`World::scope`].
pub struct Scope<'s, 'w> {
    world: &'w World,
    ids: Mutex<Vec<Id>>,
    _invariant: PhantomData<&'s mut &'s ()>,
}

/// A pending send or receive in a [`Scope`]. Dropping it leaves it to the
/// end of the scope, which waits for it.
pub struct Request<'s, 'w> {
    scope: &'s Scope<'s, 'w>,
    id: Id,
    op: &'static str,
    watch: Watch<'static>,
}

impl<'s, 'w> Scope<'s, 'w> {
    /// Starts sending `data` to `dest` under `tag`. The buffer stays
    /// borrowed until the scope ends.
    pub fn isend<T: Pod>(
        &'s self,
        dest: usize,
        tag: Tag,
        data: &'s [T],
    ) -> Result<Request<'s, 'w>> {
        const OP: &str = "isend";
        let w = self.world;
        let bytes: &[u8] = bytemuck::cast_slice(data);
        let id = match w.start_send(OP, dest, tag, bytes)? {
            Some(id) => id,
            None => {
                let done = Completion::Sent(Status {
                    source: w.rank(),
                    tag,
                    len: bytes.len(),
                    message_len: bytes.len(),
                });
                Engine::completed(&mut *w.engine().lock(OP)?, done)
            }
        };
        Ok(self.track(id, OP, Watch::Peer(dest)))
    }

    /// Starts receiving into `buf` the oldest message from `source` under
    /// `tag`. The buffer stays borrowed until the scope ends.
    pub fn irecv<T: Pod>(
        &'s self,
        source: impl Into<Source>,
        tag: Tag,
        buf: &'s mut [T],
    ) -> Result<Request<'s, 'w>> {
        const OP: &str = "irecv";
        let w = self.world;
        let m = w.recv_match(OP, source.into(), tag)?;
        let id = w.start_recv(OP, m, bytemuck::cast_slice_mut(buf))?;
        Ok(self.track(id, OP, m.source.map_or(Watch::All, Watch::Peer)))
    }

    pub(crate) fn track(
        &'s self,
        id: Id,
        op: &'static str,
        watch: Watch<'static>,
    ) -> Request<'s, 'w> {
        self.ids.lock().push(id);
        Request {
            scope: self,
            id,
            op,
            watch,
        }
    }

    /// Waits for one request; the request is gone afterwards.
    fn finish(&self, id: Id) -> Result<()> {
        let engine = self.world.engine();
        engine.wait("scope", Watch::Request(id), |st| {
            Engine::is_done(st, id).then(|| Engine::take_if_live(st, id))
        })
    }

    /// Waits for every request; returns their statuses in order.
    pub fn wait_all(&self, requests: Vec<Request<'s, 'w>>) -> Result<Vec<Status>> {
        requests.into_iter().map(Request::wait).collect()
    }

    /// Waits until one of `requests` completes, removes it and returns its
    /// index and status. An error if `requests` is empty.
    pub fn wait_any(&self, requests: &mut Vec<Request<'s, 'w>>) -> Result<(usize, Status)> {
        const OP: &str = "wait_any";
        if requests.is_empty() {
            return Err(self
                .world
                .error(OP, Cause::Invalid("no requests to wait for".into())));
        }
        let ids: Vec<Id> = requests.iter().map(|r| r.id).collect();
        let index = self.world.engine().wait(OP, Watch::All, |st| {
            ids.iter().position(|&id| Engine::is_done(st, id)).map(Ok)
        })?;
        let status = requests.remove(index).wait()?;
        Ok((index, status))
    }
}

impl Request<'_, '_> {
    /// Waits until the request completes and returns its status.
    pub fn wait(self) -> Result<Status> {
        let w = self.scope.world;
        let id = self.id;
        let c = w
            .engine()
            .wait(self.op, self.watch, |st| Engine::take(st, id))?;
        match c {
            Completion::Received(s) | Completion::Sent(s) => Ok(s),
            Completion::Reply(_) => unreachable!("point-to-point requests complete with a status"),
        }
    }

    /// Drives progress once; the status if the request has completed (a
    /// later [`Request::wait`] returns at once).
    pub fn test(&self) -> Result<Option<Status>> {
        let engine = self.scope.world.engine();
        let mut st = engine.lock(self.op)?;
        engine
            .progress(&mut st)
            .map_err(|c| self.scope.world.error(self.op, c))?;
        match Engine::take_failure(&mut st, self.id) {
            Some(c) => Err(self.scope.world.error(self.op, c)),
            None => Ok(Engine::status(&st, self.id)),
        }
    }
}
