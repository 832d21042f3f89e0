//! Collective algorithms of Weft. They know no transport: each algorithm
//! is a function from (member, team size, message size, root) to a
//! [`schedule::Schedule`], rounds of messages and local steps, which
//! [`exec::Run`] carries out over any [`Channel`] — the runtime's progress
//! engine in a job, memory in the in-process [`sim`]ulator.
//!
//! One module per operation, one function per algorithm:
//! [`barrier`] (dissemination), [`broadcast`] (binomial; scatter then ring
//! allgather), [`reduce`] (binomial; reduce-scatter then gather),
//! [`allreduce`] (recursive doubling; ring; Rabenseifner; linear),
//! [`allgather`] (ring; recursive doubling; Bruck; linear), [`alltoall`]
//! (pairwise; linear; Bruck),
//! [`gather`] and [`scatter`] (binomial), [`reduce_scatter`] (ring;
//! recursive halving; reduce then scatter), [`scan`] (recursive doubling,
//! inclusive and exclusive). [`select`] picks an algorithm by team size and
//! message size, [`model`] estimates each one's time under LogGP.
//!
//! Reductions ([`op`]) fix the order of their operands in the schedule,
//! so every member computes every element from the same operands in the
//! same order and gets bit-identical results, floating point included.

pub mod allgather;
pub mod allreduce;
pub mod alltoall;
pub mod barrier;
pub mod broadcast;
pub mod exec;
pub mod gather;
pub mod model;
pub mod op;
pub mod reduce;
pub mod reduce_scatter;
pub mod scan;
pub mod scatter;
pub mod schedule;
pub mod scratch;
pub mod select;
pub mod sim;

mod blocks;
mod fold;

pub use select::{Algorithm, Collective};

/// Point-to-point messaging among the members of a team, as an algorithm's
/// run sees it: start a send or a receive, test it, cancel it. Messages
/// from one member to another with the same tag are received in the order
/// they were sent.
pub trait Channel {
    /// The error of the underlying messaging.
    type Error;
    /// A send or receive in flight.
    type Pending;

    /// This member's index in the team.
    fn rank(&self) -> usize;

    /// Number of members.
    fn size(&self) -> usize;

    /// Starts sending `len` bytes at `data` to member `peer` under `tag`;
    /// `None` if the send is already complete.
    ///
    /// # Safety
    /// The bytes must stay readable and unchanged until the send has
    /// completed (tested so) or was cancelled.
    unsafe fn start_send(
        &mut self,
        peer: usize,
        tag: u32,
        data: *const u8,
        len: usize,
    ) -> Result<Option<Self::Pending>, Self::Error>;

    /// Starts receiving the next message from member `peer` under `tag`
    /// into at most `cap` bytes at `buf`.
    ///
    /// # Safety
    /// The bytes must stay writable, and untouched by anyone else, until
    /// the receive has completed or was cancelled.
    unsafe fn start_recv(
        &mut self,
        peer: usize,
        tag: u32,
        buf: *mut u8,
        cap: usize,
    ) -> Result<Self::Pending, Self::Error>;

    /// `Some(n)` once the operation has completed: for a receive, `n` is
    /// the length of the message as sent (more than `cap` if it was cut).
    fn test(&mut self, op: &mut Self::Pending) -> Result<Option<usize>, Self::Error>;

    /// Abandons an operation: afterwards nothing touches its bytes.
    fn cancel(&mut self, op: Self::Pending);
}

/// A collective's failure.
#[derive(Debug, PartialEq, Eq)]
pub enum Error<E> {
    /// The messaging underneath failed.
    Channel(E),
    /// A peer sent a block of another length than this member expected: the
    /// members called the collective with different sizes.
    Length {
        /// The member the block came from.
        peer: usize,
        /// Bytes this member expected.
        expected: usize,
        /// Bytes that arrived.
        got: usize,
    },
}

impl<E: std::fmt::Display> std::fmt::Display for Error<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Channel(e) => e.fmt(f),
            Error::Length {
                peer,
                expected,
                got,
            } => write!(
                f,
                "member {peer} sent {got} bytes where {expected} were expected \
                 (the members called the collective with different sizes)"
            ),
        }
    }
}

impl<E: std::fmt::Debug + std::fmt::Display> std::error::Error for Error<E> {}

/// What a member passed to a collective call; members that pass different
/// signatures to the same call disagree. Its [`Signature::digest`] goes
/// into every message of the call, so that disagreeing members never take
/// each other's messages for their own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Signature {
    /// Which collective.
    pub collective: Collective,
    /// The root, for rooted collectives (0 otherwise).
    pub root: usize,
    /// Bytes per member's block or vector, as the collective defines it.
    pub bytes: usize,
    /// Size of one element.
    pub elem: usize,
    /// A number naming the reduction (0 for none).
    pub op: u32,
}

/// A digest no signature has; the runtime marks notices about a call with
/// it (a member failed the call, and says why).
pub const RESERVED_DIGEST: u16 = u16::MAX;

/// The other digest no signature has; the runtime marks probes with it (a
/// member that has waited long in a call tells the members it waits for
/// how it called the call).
pub const PROBE_DIGEST: u16 = u16::MAX - 1;

impl Signature {
    /// A 16-bit digest of the signature (FNV-1a, folded), never
    /// [`RESERVED_DIGEST`] or [`PROBE_DIGEST`].
    ///
    /// ```
    /// use weft_collectives::{Collective, Signature};
    /// let s = Signature { collective: Collective::Broadcast, root: 0, bytes: 8, elem: 8, op: 0 };
    /// let t = Signature { root: 1, ..s };
    /// assert_ne!(s.digest(), t.digest());
    /// ```
    pub fn digest(&self) -> u16 {
        let words = [
            self.collective as u64,
            self.root as u64,
            self.bytes as u64,
            self.elem as u64,
            u64::from(self.op),
        ];
        let mut h: u32 = 0x811c_9dc5;
        for b in words.iter().flat_map(|w| w.to_le_bytes()) {
            h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
        }
        ((h >> 16 ^ h) & 0xffff) as u16 % PROBE_DIGEST
    }
}
