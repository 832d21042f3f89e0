use std::fmt;
use std::io;
use std::time::Duration;

/// How a peer was found to be gone.
///
/// ```
/// use weft_transport::Gone;
/// assert_eq!(Gone::Exited.to_string(), "has exited");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gone {
    /// Its process ended: seen on this node, or reported by the launcher.
    Exited,
    /// It left a request unanswered for this long (a peer on another node
    /// whose adapter never reported the request failed).
    Silent(Duration),
    /// The adapter's transport retries toward it ran out.
    RetriesExceeded,
}

impl fmt::Display for Gone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Gone::Exited => f.write_str("has exited"),
            Gone::Silent(d) => write!(f, "left a request unanswered for {} s", d.as_secs()),
            Gone::RetriesExceeded => {
                f.write_str("stopped answering (the adapter's transport retries ran out)")
            }
        }
    }
}

/// What went wrong inside a transport. The runtime wraps it in an error that
/// names the rank and the operation.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// Queues or credits toward this peer are exhausted; poll and retry.
    #[error("no credit toward PE {peer}: its message queue is full")]
    WouldBlock {
        /// The destination PE.
        peer: usize,
    },
    /// The peer cannot be reached through this transport.
    #[error("PE {peer} is not reachable through the {transport} transport")]
    Unreachable {
        /// The PE that was addressed.
        peer: usize,
        /// The transport's name.
        transport: &'static str,
    },
    /// An access fell outside the peer's registered region.
    #[error("bytes {offset}..{end} are outside PE {peer}'s {size}-byte heap")]
    OutOfBounds {
        /// The PE that was addressed.
        peer: usize,
        /// First byte of the access.
        offset: usize,
        /// One past the last byte of the access.
        end: usize,
        /// Size of the region.
        size: usize,
    },
    /// An atomic operation on an address that is not aligned to its width.
    #[error("offset {offset} is not aligned to {align} bytes for an atomic operation")]
    Misaligned {
        /// Offset of the access.
        offset: usize,
        /// Required alignment.
        align: usize,
    },
    /// A message larger than the transport carries in one piece.
    #[error("message of {len} bytes exceeds the {max}-byte limit of the {transport} transport")]
    MessageTooLarge {
        /// Length of the payload.
        len: usize,
        /// The transport's limit.
        max: usize,
        /// The transport's name.
        transport: &'static str,
    },
    /// A peer's address or key blob, or data read from a peer, is malformed.
    #[error("malformed data from PE {peer}: {detail}")]
    Malformed {
        /// The PE the data came from.
        peer: usize,
        /// What is wrong with it.
        detail: String,
    },
    /// The transport cannot do this here (e.g. the kernel forbids reading
    /// another process's memory); the caller falls back to another way.
    #[error("{what} is not possible toward PE {peer}: {reason}")]
    Unsupported {
        /// The PE that was addressed.
        peer: usize,
        /// The operation.
        what: &'static str,
        /// Why not.
        reason: String,
    },
    /// A work request failed on the device (verbs: its completion status).
    #[error("{op} toward PE {peer} failed: {status}")]
    Completion {
        /// The PE the request was addressed to.
        peer: usize,
        /// The operation, e.g. `"put"`.
        op: &'static str,
        /// What the device reported.
        status: String,
    },
    /// This transport cannot be used on this machine or in this build.
    #[error("the {transport} transport is unavailable: {reason}")]
    Unavailable {
        /// The transport's name.
        transport: &'static str,
        /// Why.
        reason: String,
    },
    /// The peer is gone: its process ended or it stopped answering.
    #[error("PE {peer} {how}")]
    PeerGone {
        /// The PE that is gone.
        peer: usize,
        /// How that was found.
        how: Gone,
    },
    /// A system call failed.
    #[error("{call}({what}): {source}")]
    Os {
        /// The system call.
        call: &'static str,
        /// What it was applied to.
        what: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

impl TransportError {
    /// An [`TransportError::Os`] from `errno`.
    pub(crate) fn last_os(call: &'static str, what: impl Into<String>) -> Self {
        TransportError::Os {
            call,
            what: what.into(),
            source: io::Error::last_os_error(),
        }
    }
}
