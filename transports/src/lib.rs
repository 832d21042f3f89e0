//! The transport layer of Weft.
//!
//! A [`Transport`] moves bytes between processing elements (PEs): one-sided
//! put/get and atomics on each peer's symmetric heap, and small ordered
//! messages. The runtime crate (`weft`) owns one instance per backend and
//! drives it from its progress engine; nothing here runs in the background.
//!
//! The trait is shaped for RDMA verbs, the most demanding backend: peers are
//! reached through an address blob published by the bootstrap, operations are
//! non-blocking and completed by [`Transport::quiet`], messages are flow
//! controlled by credits and may return [`TransportError::WouldBlock`].
//!
//! Backends: [`shm`] (on-node peers map each other's heap; put/get are copies,
//! atomics are hardware atomics on the mapped memory) and, with the `verbs`
//! feature, `verbs` (RDMA over libibverbs: InfiniBand, RoCE, iWARP).
//! [`exits`] is how a launcher tells ranks which peers left the job.

pub mod backoff;
pub mod exits;
pub mod shm;
#[cfg(feature = "verbs")]
pub mod verbs;

mod error;
mod transport;

pub use error::{Gone, TransportError};
pub use transport::{AtomicOp, AtomicWidth, Caps, Message, Transport};
