//! Collective algorithms of Weft, written against a small point-to-point
//! trait, [`Channel`], so that they know no transport and run the same in a
//! job and in the in-process harness ([`sim`]).
//!
//! Each algorithm is its own module: [`barrier`] (dissemination) and
//! [`allgather`] (ring). The runtime implements [`Channel`] for its teams.

pub mod allgather;
pub mod barrier;
pub mod sim;

/// Point-to-point messaging among the members of a team, as an algorithm
/// sees it. Messages between a pair with the same tag arrive in order.
pub trait Channel {
    /// The error of the underlying messaging.
    type Error;

    /// This member's index in the team.
    fn rank(&self) -> usize;

    /// Number of members.
    fn size(&self) -> usize;

    /// Sends `data` to member `peer` under `tag`. Must complete without
    /// waiting for `peer` to receive (messages are buffered).
    fn send(&mut self, peer: usize, tag: u32, data: &[u8]) -> Result<(), Self::Error>;

    /// Receives the next message from member `peer` under `tag` into `buf`
    /// and returns its length; a message longer than `buf` is an error.
    fn recv(&mut self, peer: usize, tag: u32, buf: &mut [u8]) -> Result<usize, Self::Error>;
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
