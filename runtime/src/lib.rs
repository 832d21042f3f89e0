//! Weft: a communication runtime for parallel programs.
//!
//! A job is a set of processes (PEs, or ranks) started by `weftrun`,
//! `mpiexec` or `srun`. [`init`] joins the job and returns the [`World`];
//! [`World::alloc`] makes symmetric arrays ([`SymVec`]) that exist on every
//! PE at the same offset, on which any PE can put, get and run atomics, with
//! OpenSHMEM 1.5 semantics.
//!
//! ```no_run
//! use weft::Cmp;
//!
//! let world = weft::init()?;
//! let (me, n) = (world.rank(), world.size());
//! let counts = world.alloc::<u64>(1024)?;      // collective
//! counts.put((me + 1) % n, 0, &[1, 2, 3])?;    // bounds- and PE-checked
//! world.barrier_all()?;                        // quiet + barrier
//! let old = counts.fetch_add(0, 5, 1)?;        // atomic on PE 0, element 5
//! counts.wait_until(0, Cmp::Ne, 0)?;
//! # Ok::<(), weft::Error>(())
//! ```
//!
//! Every operation returns [`Result`]; an [`Error`] names the rank, the
//! operation and the [`Cause`].

pub mod config;
pub mod heap;
pub mod pmi;

mod am;
mod amo;
mod bootstrap;
mod error;
mod flat;
mod p2p;
mod progress;
mod symvec;
mod team;
mod wiring;
mod world;

pub use am::{AmContext, AmHandle, Handler, Handlers, AM_HEADER_MAX};
pub use amo::{AtomicInt, Cmp};
pub use error::{Cause, Error, Result};
pub use p2p::{Request, Scope, Source, Status, Tag};
pub use symvec::SymVec;
pub use team::{Reduction, Team, UserOp};
pub use weft_collectives::op::{Element, ReduceOp};
pub use weft_collectives::{Algorithm, Collective};
pub use weft_transport::Gone;
pub use world::World;

/// Joins the job this process was started in: PMI-1 from `weftrun` or
/// MPICH's `mpiexec` (`PMI_FD`, `PMI_RANK`, `PMI_SIZE`), or alone as a
/// singleton job of one PE. Collective over the job.
pub fn init() -> Result<World> {
    World::init(Handlers::new())
}

/// Like [`init`], for a program with active-message handlers. Every PE
/// must register the same handlers in the same order; otherwise init fails
/// on every PE with an error listing who registered what.
pub fn init_with(handlers: Handlers) -> Result<World> {
    World::init(handlers)
}
