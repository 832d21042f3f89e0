//! Which algorithm runs a collective: a rule by team size and message
//! size, which `WEFT_COLL_<OPERATION>=<algorithm>` overrides in the
//! runtime. The rule's thresholds come from the LogGP model in
//! [`crate::model`]; a test checks that, everywhere on the model's grid,
//! the rule's choice is within 10% of the best algorithm modelled.

use std::fmt;
use std::str::FromStr;

use crate::schedule::Schedule;
use crate::{
    allgather, allreduce, alltoall, barrier, broadcast, gather, reduce, reduce_scatter, scan,
    scatter,
};

/// A collective operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum Collective {
    Barrier,
    Broadcast,
    Reduce,
    Allreduce,
    Allgather,
    Alltoall,
    Gather,
    Scatter,
    ReduceScatter,
    Scan,
    Exscan,
}

impl Collective {
    /// Every collective.
    pub const ALL: [Collective; 11] = [
        Collective::Barrier,
        Collective::Broadcast,
        Collective::Reduce,
        Collective::Allreduce,
        Collective::Allgather,
        Collective::Alltoall,
        Collective::Gather,
        Collective::Scatter,
        Collective::ReduceScatter,
        Collective::Scan,
        Collective::Exscan,
    ];

    /// Its name in lower case, as in `WEFT_COLL_<NAME>` (upper case there).
    pub fn name(self) -> &'static str {
        match self {
            Collective::Barrier => "barrier",
            Collective::Broadcast => "broadcast",
            Collective::Reduce => "reduce",
            Collective::Allreduce => "allreduce",
            Collective::Allgather => "allgather",
            Collective::Alltoall => "alltoall",
            Collective::Gather => "gather",
            Collective::Scatter => "scatter",
            Collective::ReduceScatter => "reduce_scatter",
            Collective::Scan => "scan",
            Collective::Exscan => "exscan",
        }
    }

    /// The algorithms that implement it.
    pub fn algorithms(self) -> &'static [Algorithm] {
        use Algorithm::*;
        match self {
            Collective::Barrier => &[Dissemination],
            Collective::Broadcast => &[Binomial, ScatterAllgather],
            Collective::Reduce => &[Binomial, ScatterGather],
            Collective::Allreduce => &[RecursiveDoubling, Ring, Rabenseifner],
            Collective::Allgather => &[Ring, RecursiveDoubling, Bruck],
            Collective::Alltoall => &[Pairwise, Bruck],
            Collective::Gather | Collective::Scatter => &[Binomial],
            Collective::ReduceScatter => &[Ring, RecursiveHalving, AllreducePick],
            Collective::Scan | Collective::Exscan => &[RecursiveDoubling],
        }
    }

    /// Whether it combines with a reduction operation.
    pub fn reduces(self) -> bool {
        matches!(
            self,
            Collective::Reduce
                | Collective::Allreduce
                | Collective::ReduceScatter
                | Collective::Scan
                | Collective::Exscan
        )
    }
}

impl fmt::Display for Collective {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An algorithm; which collectives it implements is in
/// [`Collective::algorithms`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum Algorithm {
    Dissemination,
    Binomial,
    ScatterAllgather,
    ScatterGather,
    RecursiveDoubling,
    Ring,
    Rabenseifner,
    Bruck,
    Pairwise,
    RecursiveHalving,
    AllreducePick,
}

impl Algorithm {
    /// Every algorithm.
    pub const ALL: [Algorithm; 11] = [
        Algorithm::Dissemination,
        Algorithm::Binomial,
        Algorithm::ScatterAllgather,
        Algorithm::ScatterGather,
        Algorithm::RecursiveDoubling,
        Algorithm::Ring,
        Algorithm::Rabenseifner,
        Algorithm::Bruck,
        Algorithm::Pairwise,
        Algorithm::RecursiveHalving,
        Algorithm::AllreducePick,
    ];

    /// Its name, as `WEFT_COLL_<OPERATION>` takes it.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Dissemination => "dissemination",
            Algorithm::Binomial => "binomial",
            Algorithm::ScatterAllgather => "scatter_allgather",
            Algorithm::ScatterGather => "scatter_gather",
            Algorithm::RecursiveDoubling => "recursive_doubling",
            Algorithm::Ring => "ring",
            Algorithm::Rabenseifner => "rabenseifner",
            Algorithm::Bruck => "bruck",
            Algorithm::Pairwise => "pairwise",
            Algorithm::RecursiveHalving => "recursive_halving",
            Algorithm::AllreducePick => "allreduce_pick",
        }
    }

    /// Whether it needs a commutative operation (it combines partial
    /// results of members out of order).
    pub fn needs_commutative(self) -> bool {
        matches!(
            self,
            Algorithm::Ring
                | Algorithm::Rabenseifner
                | Algorithm::ScatterGather
                | Algorithm::RecursiveHalving
        )
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Algorithm {
    type Err = String;

    fn from_str(s: &str) -> Result<Algorithm, String> {
        Algorithm::ALL
            .into_iter()
            .find(|a| a.name() == s)
            .ok_or_else(|| format!("no algorithm is called {s:?}"))
    }
}

/// One member's call of a collective, as the algorithms need it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Call {
    /// The collective.
    pub collective: Collective,
    /// This member.
    pub rank: usize,
    /// Team size.
    pub p: usize,
    /// The root (rooted collectives; 0 otherwise).
    pub root: usize,
    /// Elements per member's vector (broadcast, reduce, allreduce, scans)
    /// or per block (the others).
    pub count: usize,
    /// Bytes per element.
    pub elem: usize,
    /// Whether the reduction is commutative (true when there is none).
    pub commutative: bool,
}

impl Call {
    /// Bytes of one vector or block ([`Call::count`] elements).
    pub fn bytes(&self) -> usize {
        self.count * self.elem
    }
}

/// The algorithm the rule picks for `call`.
///
/// ```
/// use weft_collectives::select::{choose, Call};
/// use weft_collectives::{Algorithm, Collective};
/// let call = Call { collective: Collective::Allreduce, rank: 0, p: 4, root: 0,
///                   count: 1, elem: 8, commutative: true };
/// assert_eq!(choose(&call), Algorithm::RecursiveDoubling);
/// ```
pub fn choose(call: &Call) -> Algorithm {
    use Algorithm::*;
    let (p, n, comm) = (call.p, call.bytes(), call.commutative);
    let pow2 = p.is_power_of_two();
    match call.collective {
        Collective::Barrier => Dissemination,
        Collective::Broadcast => {
            if n < 16 * 1024 || p <= 2 || n < 256 * p {
                Binomial
            } else {
                ScatterAllgather
            }
        }
        Collective::Reduce => {
            if !comm || n < 8 * 1024 || p <= 2 || n < 64 * p {
                Binomial
            } else {
                ScatterGather
            }
        }
        Collective::Allreduce => {
            if !comm || n < 4 * 1024 || n < 64 * p {
                RecursiveDoubling
            } else if !pow2 && p <= 8 && n >= 256 * 1024 {
                Ring
            } else {
                Rabenseifner
            }
        }
        Collective::Allgather => {
            let total = n * p;
            if total < 64 * 1024 && pow2 {
                RecursiveDoubling
            } else if total < 256 * 1024 || p >= 64 && n < 4096 {
                Bruck
            } else {
                Ring
            }
        }
        Collective::Alltoall => {
            if n <= 256 && p >= 8 {
                Bruck
            } else {
                Pairwise
            }
        }
        Collective::Gather | Collective::Scatter => Binomial,
        Collective::ReduceScatter => {
            if !comm {
                AllreducePick
            } else if !pow2 && p <= 8 && n * p >= 256 * 1024 {
                Ring
            } else {
                RecursiveHalving
            }
        }
        Collective::Scan | Collective::Exscan => RecursiveDoubling,
    }
}

/// Why an algorithm cannot run a call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unsupported(pub String);

impl fmt::Display for Unsupported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The schedule of `algorithm` for `call`.
///
/// ```
/// use weft_collectives::select::{build, Call};
/// use weft_collectives::{Algorithm, Collective};
/// let call = Call { collective: Collective::Allreduce, rank: 0, p: 4, root: 0,
///                   count: 1, elem: 8, commutative: false };
/// assert!(build(&call, Algorithm::RecursiveDoubling).is_ok());
/// assert!(build(&call, Algorithm::Ring).is_err()); // needs a commutative operation
/// ```
pub fn build(call: &Call, algorithm: Algorithm) -> Result<Schedule, Unsupported> {
    use Algorithm::*;
    let c = call.collective;
    if !c.algorithms().contains(&algorithm) {
        return Err(Unsupported(format!(
            "{algorithm} is not an algorithm for {c} (those are: {})",
            c.algorithms()
                .iter()
                .map(|a| a.name())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    if algorithm.needs_commutative() && !call.commutative {
        return Err(Unsupported(format!(
            "{algorithm} {c} needs a commutative operation"
        )));
    }
    let Call {
        rank,
        p,
        root,
        count,
        elem,
        commutative,
        ..
    } = *call;
    let n = count * elem;
    Ok(match (c, algorithm) {
        (Collective::Barrier, _) => barrier::dissemination(rank, p),
        (Collective::Broadcast, Binomial) => broadcast::binomial(rank, p, root, n),
        (Collective::Broadcast, _) => broadcast::scatter_allgather(rank, p, root, count, elem),
        (Collective::Reduce, Binomial) => reduce::binomial(rank, p, root, n, commutative),
        (Collective::Reduce, _) => reduce::scatter_gather(rank, p, root, count, elem),
        (Collective::Allreduce, RecursiveDoubling) => allreduce::recursive_doubling(rank, p, n),
        (Collective::Allreduce, Ring) => allreduce::ring(rank, p, count, elem),
        (Collective::Allreduce, _) => allreduce::rabenseifner(rank, p, count, elem),
        (Collective::Allgather, Ring) => allgather::ring(rank, p, n),
        (Collective::Allgather, RecursiveDoubling) => allgather::recursive_doubling(rank, p, n),
        (Collective::Allgather, _) => allgather::bruck(rank, p, n),
        (Collective::Alltoall, Pairwise) => alltoall::pairwise(rank, p, n),
        (Collective::Alltoall, _) => alltoall::bruck(rank, p, n),
        (Collective::Gather, _) => gather::binomial(rank, p, root, n),
        (Collective::Scatter, _) => scatter::binomial(rank, p, root, n),
        (Collective::ReduceScatter, Ring) => reduce_scatter::ring(rank, p, count, elem),
        (Collective::ReduceScatter, RecursiveHalving) => {
            reduce_scatter::recursive_halving(rank, p, count, elem)
        }
        (Collective::ReduceScatter, _) => reduce_scatter::allreduce_pick(rank, p, count, elem),
        (Collective::Scan, _) => scan::inclusive(rank, p, n),
        (Collective::Exscan, _) => scan::exclusive(rank, p, n),
    })
}
