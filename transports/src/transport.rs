use std::os::fd::RawFd;

use crate::{Gone, TransportError};

/// What a transport can do; the runtime routes and sizes operations by it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caps {
    /// Largest payload [`Transport::send`] carries in one message.
    pub max_message: usize,
    /// Atomics run natively at the target (no active-message emulation).
    pub native_atomics: bool,
    /// Peers' heaps are mapped into this process: put/get are loads and stores.
    pub load_store: bool,
}

/// Width of an atomic operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AtomicWidth {
    /// 32-bit operand, 4-byte aligned.
    W32,
    /// 64-bit operand, 8-byte aligned.
    W64,
}

impl AtomicWidth {
    /// Size (and required alignment) in bytes.
    pub fn bytes(self) -> usize {
        match self {
            AtomicWidth::W32 => 4,
            AtomicWidth::W64 => 8,
        }
    }
}

/// An atomic read-modify-write at a remote address. Operands are carried in a
/// `u64`; for [`AtomicWidth::W32`] only the low 32 bits are used. Every
/// operation returns the previous value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AtomicOp {
    /// Read the value.
    Fetch,
    /// Replace the value.
    Swap(u64),
    /// Replace the value if it equals `compare`.
    CompareSwap {
        /// Expected current value.
        compare: u64,
        /// Value stored when it matches.
        value: u64,
    },
    /// Wrapping addition.
    FetchAdd(u64),
    /// Bitwise and.
    FetchAnd(u64),
    /// Bitwise or.
    FetchOr(u64),
    /// Bitwise exclusive or.
    FetchXor(u64),
}

/// A message delivered by [`Transport::poll`].
#[derive(Debug)]
pub struct Message<'a> {
    /// The sending PE.
    pub source: usize,
    /// The 64-bit header given to [`Transport::send`].
    pub header: u64,
    /// The payload, valid for the duration of the callback.
    pub payload: &'a [u8],
}

/// A way to reach peers: one-sided operations on their symmetric heaps and
/// small ordered messages.
///
/// Offsets are byte offsets into the target PE's symmetric heap. Operations
/// are non-blocking: they may complete before they return (shared memory) or
/// later; [`Transport::quiet`] waits until every operation this PE issued is
/// complete at its target. All methods take `&self` and may be called from
/// several threads.
pub trait Transport: Send + Sync {
    /// Short name used in errors and `WEFT_TRANSPORT`.
    fn name(&self) -> &'static str;

    /// What this transport can do.
    fn caps(&self) -> Caps;

    /// Whether `peer` is reachable through this transport.
    fn reaches(&self, peer: usize) -> bool;

    /// Where `peer`'s heap is mapped in this process, when this transport
    /// reaches it by loads and stores ([`Caps::load_store`]): the mapping
    /// stays valid as long as the transport lives. `None` (the default)
    /// otherwise.
    fn mapped(&self, peer: usize) -> Option<std::ptr::NonNull<u8>> {
        let _ = peer;
        None
    }

    /// Copies `src` to `offset` in `peer`'s heap. `src` may be reused as soon
    /// as this returns; remote completion is guaranteed by [`Transport::quiet`].
    fn put(&self, peer: usize, offset: usize, src: &[u8]) -> Result<(), TransportError>;

    /// Put with signal (OpenSHMEM's `put_signal` with `SIGNAL_SET`): copies
    /// `src` to `offset` in `peer`'s heap, then sets the 8-aligned 64-bit
    /// word at `signal` there to `value`, so that a peer that sees the
    /// value (with acquire ordering) sees the bytes and every put issued
    /// before. The default orders a put and an atomic swap with a fence.
    fn put_signal(
        &self,
        peer: usize,
        offset: usize,
        src: &[u8],
        signal: usize,
        value: u64,
    ) -> Result<(), TransportError> {
        self.put(peer, offset, src)?;
        self.fence()?;
        self.atomic(peer, signal, AtomicWidth::W64, AtomicOp::Swap(value))
            .map(drop)
    }

    /// Copies `len` bytes from `offset` in `peer`'s heap to `dst`. The bytes
    /// are in place once [`Transport::quiet`] returns.
    ///
    /// # Safety
    /// `dst` must be valid for writes of `len` bytes until the next
    /// [`Transport::quiet`] returns, and nothing else may access it meanwhile.
    unsafe fn get(
        &self,
        peer: usize,
        offset: usize,
        dst: *mut u8,
        len: usize,
    ) -> Result<(), TransportError>;

    /// Copies `dst.len()` bytes from `offset` in `peer`'s heap to `dst` and
    /// waits until they are in place (a blocking get). The default issues
    /// [`Transport::get`] and waits with [`Transport::quiet`]; a transport
    /// whose copies are done when they return skips the wait.
    fn get_blocking(
        &self,
        peer: usize,
        offset: usize,
        dst: &mut [u8],
    ) -> Result<(), TransportError> {
        // SAFETY: `dst` is borrowed exclusively until this returns, which is
        // after the quiet that completes the get.
        unsafe { self.get(peer, offset, dst.as_mut_ptr(), dst.len()) }?;
        self.quiet()
    }

    /// Runs `op` atomically on the integer at `offset` in `peer`'s heap and
    /// returns the previous value (zero-extended for 32-bit operations).
    fn atomic(
        &self,
        peer: usize,
        offset: usize,
        width: AtomicWidth,
        op: AtomicOp,
    ) -> Result<u64, TransportError>;

    /// Waits until every put, get and atomic this PE issued is complete.
    fn quiet(&self) -> Result<(), TransportError>;

    /// Orders puts to each peer: those issued before it are delivered before
    /// those issued after it.
    fn fence(&self) -> Result<(), TransportError>;

    /// Sends a message of at most [`Caps::max_message`] bytes. Messages from
    /// one PE to another are delivered in order. Returns
    /// [`TransportError::WouldBlock`] when the peer has no credit left.
    fn send(&self, peer: usize, header: u64, payload: &[u8]) -> Result<(), TransportError>;

    /// Makes `len` bytes at `ptr` of this process readable by peers through
    /// [`Transport::read_remote`] and returns the key they need (verbs: the
    /// memory region's rkey; shm: 0, since peers read process memory
    /// directly). The bytes must stay valid while peers may read them.
    fn expose(&self, ptr: *const u8, len: usize) -> Result<u64, TransportError>;

    /// Ends one exposure made by [`Transport::expose`] once peers will no
    /// longer read it (the rendezvous finished or was abandoned); a
    /// transport that pinned or registered the bytes releases them.
    fn unexpose(&self, key: u64);

    /// Copies `dst.len()` bytes from address `addr` of `peer`'s process, a
    /// buffer the peer exposed with `key` ([`Transport::expose`]): the single
    /// copy of a rendezvous transfer. Returns [`TransportError::Unsupported`]
    /// when this transport or the kernel does not allow it, so that the
    /// caller can fall back to having the peer send the bytes.
    fn read_remote(
        &self,
        peer: usize,
        addr: u64,
        key: u64,
        dst: &mut [u8],
    ) -> Result<(), TransportError>;

    /// Copies `src` to address `addr` of `peer`'s process, memory the peer
    /// named for it (the other end of a rendezvous that both sides copy,
    /// each from one end). Returns [`TransportError::Unsupported`] when this
    /// transport or the kernel does not allow it (the default).
    fn write_remote(&self, peer: usize, addr: u64, src: &[u8]) -> Result<(), TransportError> {
        let _ = (addr, src);
        Err(TransportError::Unsupported {
            peer,
            what: "writing the peer's memory",
            reason: "this transport has no cross-memory writes".into(),
        })
    }

    /// How `peer` is gone, if this transport can tell that it is: its
    /// process ended, or it stopped answering. Waiters use it to turn a
    /// lost peer into an error.
    fn peer_gone(&self, peer: usize) -> Option<Gone>;

    /// A descriptor that becomes readable when this transport has a
    /// completion or a message after [`Transport::arm`], so that a waiter
    /// with nothing to do can sleep on it instead of polling; `None` (the
    /// default) for a transport that cannot wake a waiter (shared memory,
    /// whose peers write memory directly).
    fn event_fd(&self) -> Option<RawFd> {
        None
    }

    /// Asks for a wake-up on [`Transport::event_fd`] at the next completion
    /// or message. What arrived before arming raises no event, so a waiter
    /// arms, polls once more, then sleeps on the descriptor.
    fn arm(&self) -> Result<(), TransportError> {
        Ok(())
    }

    /// Delivers received messages to `sink`, in order per source; returns how
    /// many were delivered.
    fn poll(&self, sink: &mut dyn FnMut(Message<'_>)) -> Result<usize, TransportError>;
}
