//! Errors of every public operation: which rank, which operation, what cause.

use weft_transport::{Gone, TransportError};

/// The result type of Weft's operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error from a Weft operation, naming the rank that saw it, the operation
/// and the cause.
///
/// ```
/// use weft::{Cause, Error};
/// let e = Error::new(2, "put", Cause::BadPe { pe: 7, size: 4 });
/// assert_eq!(e.to_string(), "rank 2: put: PE 7 does not exist (the job has 4 PEs)");
/// ```
#[derive(Debug, thiserror::Error)]
#[error("rank {rank}: {op}: {cause}")]
pub struct Error {
    /// The rank (PE number) of the process that saw the error.
    pub rank: usize,
    /// The operation, e.g. `"put"`, `"alloc"`, `"init"`.
    pub op: &'static str,
    /// What went wrong.
    #[source]
    pub cause: Cause,
}

impl Error {
    /// An error seen by `rank` in `op`.
    pub fn new(rank: usize, op: &'static str, cause: Cause) -> Error {
        Error { rank, op, cause }
    }
}

/// Why an operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Cause {
    /// The target PE number is not in the job.
    #[error("PE {pe} does not exist (the job has {size} PEs)")]
    BadPe {
        /// The PE asked for.
        pe: usize,
        /// Number of PEs in the job.
        size: usize,
    },
    /// An access past the end of a symmetric array.
    #[error("elements {start}..{end} are out of bounds of a symmetric array of {len} elements")]
    OutOfBounds {
        /// First element accessed.
        start: usize,
        /// One past the last element accessed.
        end: usize,
        /// Length of the array.
        len: usize,
    },
    /// A strided access with a zero stride or one that overflows.
    #[error("invalid stride: {0}")]
    BadStride(String),
    /// The symmetric heap has no free block large enough.
    #[error(
        "symmetric heap exhausted: {requested} bytes requested, largest free block is \
         {largest_free} of {heap_size} bytes (raise WEFT_SYMMETRIC_SIZE)"
    )]
    HeapExhausted {
        /// Bytes asked for.
        requested: usize,
        /// Largest free block.
        largest_free: usize,
        /// Size of the heap.
        heap_size: usize,
    },
    /// PEs called a collective operation differently.
    #[error("PEs disagree: {0}")]
    Mismatch(String),
    /// A `WEFT_*` or launcher environment variable has a bad value.
    #[error("{var}={value:?}: {reason}")]
    Config {
        /// The variable.
        var: &'static str,
        /// Its value.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The launcher's process-management interface failed or replied badly.
    #[error("bootstrap: {0}")]
    Bootstrap(String),
    /// A transport failed.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The world was finalized before this call.
    #[error("the world is finalized")]
    Finalized,
    /// A message tag outside `0..=Tag::MAX` (or the wildcard in a send).
    #[error("tag {tag} is not a valid message tag (0..={max})")]
    BadTag {
        /// The tag given.
        tag: u32,
        /// The largest valid tag.
        max: u32,
    },
    /// An active-message handler that is not registered.
    #[error("handler {id} is not registered ({registered} handlers are)")]
    BadHandler {
        /// The handler's number.
        id: u32,
        /// Number of handlers registered.
        registered: usize,
    },
    /// An argument the operation cannot take.
    #[error("invalid argument: {0}")]
    Invalid(String),
    /// An active-message handler called an operation that needs the
    /// progress engine, which is running the handler.
    #[error(
        "called from inside an active-message handler; handlers may use one-sided \
         operations and reply through their context, but not wait, send or receive"
    )]
    InHandler,
    /// An active-message handler panicked.
    #[error("active-message handler {handler:?} panicked: {message}")]
    HandlerPanicked {
        /// The handler's name.
        handler: String,
        /// The panic message.
        message: String,
    },
    /// A peer this operation depends on is gone: its process ended or it
    /// stopped answering.
    #[error("PE {pe} {how}")]
    PeerGone {
        /// The PE that is gone.
        pe: usize,
        /// How that was found.
        how: Gone,
    },
    /// The progress engine stopped after an earlier error.
    #[error("the progress engine stopped after an earlier error: {0}")]
    Broken(String),
}
