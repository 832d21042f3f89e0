//! Which algorithm runs a collective: a rule by team size and message
//! size, which `WEFT_COLL_<OPERATION>=<algorithm>` overrides in the
//! runtime. The rule counts each candidate's steps and bytes on its
//! critical path with two ratios of the network ([`Network`]); a test
//! checks that, everywhere on the grid of [`crate::model`], the rule's
//! choice is within 10% of the best algorithm the full LogGP model finds.

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
            Collective::Allreduce => &[RecursiveDoubling, Ring, Rabenseifner, Linear],
            Collective::Allgather => &[Ring, RecursiveDoubling, Bruck, Linear],
            Collective::Alltoall => &[Pairwise, Bruck, Linear],
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
    Linear,
    RecursiveHalving,
    AllreducePick,
}

impl Algorithm {
    /// Every algorithm.
    pub const ALL: [Algorithm; 12] = [
        Algorithm::Dissemination,
        Algorithm::Binomial,
        Algorithm::ScatterAllgather,
        Algorithm::ScatterGather,
        Algorithm::RecursiveDoubling,
        Algorithm::Ring,
        Algorithm::Rabenseifner,
        Algorithm::Bruck,
        Algorithm::Pairwise,
        Algorithm::Linear,
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
            Algorithm::Linear => "linear",
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

/// What the selection rule knows of the network: how many bytes a link
/// moves in the time one message step costs (`alpha / beta`), how many it
/// moves in the time one byte is combined (`gamma / beta`), and how many
/// in the time one byte is copied locally (`copy / beta`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Network {
    /// Bytes per message step.
    pub step_bytes: f64,
    /// Combining one byte, in bytes moved.
    pub combine: f64,
    /// Copying one byte locally, in bytes moved.
    pub copy: f64,
}

impl Network {
    /// The ratios of a LogGP parameter set.
    pub fn of(m: &crate::model::LogGP) -> Network {
        Network {
            step_bytes: (m.l + 2.0 * m.o) / m.big_g,
            combine: m.gamma / m.big_g,
            copy: m.copy / m.big_g,
        }
    }
}

/// The algorithm the rule picks for `call` on `net`: each candidate's
/// cost counted in bytes moved, `steps * step_bytes + bytes (+ combined
/// bytes * combine + copied bytes * copy)`, critical path only, the
/// cheapest taken; operations that are not commutative only get
/// algorithms that combine in member order (for allreduce, recursive
/// doubling or, for large vectors, the linear one). The steps and bytes are those of the algorithms' descriptions,
/// with the fold of team sizes that are not powers of two.
///
/// ```
/// use weft_collectives::model::LogGP;
/// use weft_collectives::select::{choose, Call, Network};
/// use weft_collectives::{Algorithm, Collective};
/// let call = Call { collective: Collective::Allreduce, rank: 0, p: 4, root: 0,
///                   count: 1, elem: 8, commutative: true };
/// let net = Network::of(&LogGP::CLUSTER);
/// assert_eq!(choose(&call, &net), Algorithm::RecursiveDoubling);
/// ```
pub fn choose(call: &Call, net: &Network) -> Algorithm {
    use Algorithm::*;
    let (p, n, comm) = (call.p, call.bytes() as f64, call.commutative);
    if p <= 1 {
        let applies = |a: &&Algorithm| comm || !a.needs_commutative();
        return *call
            .collective
            .algorithms()
            .iter()
            .find(applies)
            .expect("every collective has an algorithm for every operation");
    }
    let (a, k, cp) = (net.step_bytes, net.combine, net.copy);
    let pf = p as f64;
    // Steps of a tree, and of the power-of-two part of a fold.
    let lg = f64::from(p.next_power_of_two().trailing_zeros());
    let l2 = f64::from(usize::BITS - 1 - p.leading_zeros());
    let fold = if p.is_power_of_two() { 0.0 } else { 1.0 };
    let cheaper = |x: (Algorithm, f64), y: (Algorithm, f64)| if y.1 < x.1 { y } else { x };
    let share = (pf - 1.0) / pf;
    // The same share within the power-of-two part of a fold.
    let p2 = 2f64.powf(l2);
    let share2 = (p2 - 1.0) / p2;
    match call.collective {
        Collective::Barrier => Dissemination,
        Collective::Gather | Collective::Scatter => Binomial,
        Collective::Scan | Collective::Exscan => RecursiveDoubling,
        Collective::Broadcast => {
            let bin = (Binomial, lg * (a + n));
            let sa = (ScatterAllgather, (lg + pf - 1.0) * a + 2.0 * share * n);
            cheaper(bin, sa).0
        }
        Collective::Reduce => {
            let m = crate::reduce::segments(call.bytes()) as f64;
            let bin = (Binomial, (lg + m - 1.0) * (a + n / m * (1.0 + k)));
            if !comm {
                return Binomial;
            }
            let sg = (
                ScatterGather,
                n * cp + fold * (a + n * (1.0 + k)) + 2.0 * l2 * a + share2 * n * (2.0 + k),
            );
            cheaper(bin, sg).0
        }
        Collective::Allreduce => {
            let folded = fold * (2.0 * a + n * (2.0 + k));
            let rd = (RecursiveDoubling, folded + l2 * (a + n * (1.0 + k)));
            let ring_time = 2.0 * (pf - 1.0) * a + share * n * (2.0 + k);
            if !comm {
                // The linear algorithm folds in member order: the ring's
                // bytes without the ring's need to commute.
                return cheaper(rd, (Linear, ring_time)).0;
            }
            let ring = (Ring, ring_time);
            let rab = (Rabenseifner, folded + 2.0 * l2 * a + share2 * n * (2.0 + k));
            cheaper(cheaper(rd, rab), ring).0
        }
        Collective::Allgather => {
            let ring = (Ring, (pf - 1.0) * (a + n));
            let rd = (
                RecursiveDoubling,
                fold * (2.0 * a + (pf + 1.0) * n) + l2 * a + (pf - 1.0) * n,
            );
            let bruck = (Bruck, lg * a + (pf - 1.0) * n + (pf + 1.0) * n * cp);
            // Within a tenth of the cheapest, the ring: no rotation copy
            // and only neighbours talking.
            let best = cheaper(cheaper(rd, bruck), ring);
            if ring.1 <= 1.05 * best.1 {
                Ring
            } else {
                best.0
            }
        }
        Collective::Alltoall => {
            let pairwise = (Pairwise, (pf - 1.0) * (a + n));
            let bruck = (
                Bruck,
                lg * (a + (pf / 2.0).ceil() * n * (1.0 + 2.0 * cp)) + 2.0 * pf * n * cp,
            );
            cheaper(pairwise, bruck).0
        }
        Collective::ReduceScatter => {
            let total = pf * n;
            let pick = (
                AllreducePick,
                fold * (2.0 * a + total * (2.0 + k)) + l2 * (a + total * (1.0 + k)),
            );
            if !comm {
                return AllreducePick;
            }
            let ring = (Ring, (pf - 1.0) * (a + n * (1.0 + k)));
            let halving = (
                RecursiveHalving,
                fold * (2.0 * a + total * (1.0 + k) + n) + l2 * a + share2 * total * (1.0 + k),
            );
            cheaper(cheaper(halving, ring), pick).0
        }
    }
}

/// The algorithm for `call` when the team's ranks outnumber the cores they
/// run on: a broadcast or reduce takes the binomial tree, where each rank
/// waits for one message from its parent or children, rather than a
/// scatter-based algorithm, whose every member waits at each step of a
/// ring for a peer that may not be scheduled (measured at 4 ranks on 2
/// cores: a 32 KiB broadcast 15 us against 40, 1 MiB 146 against 339; a
/// reduce 16 us against 29 at 32 KiB, the same from 256 KiB). Where
/// [`choose`] takes a bandwidth algorithm of many steps (the pairwise
/// alltoall, the ring allgather, the ring or Rabenseifner allreduce), the
/// linear one takes its place: every exchange of a phase in one round, so
/// that a member moves the block of whichever peer is running. Measured
/// at 4 ranks on 2 cores, 64 KiB-1 MiB, alternated with Open MPI, medians
/// of 5: alltoall 0.84-1.06x its time where the pairwise exchange took
/// 1.02-1.10x; allgather 0.63-0.90x, where the ring took 1.05-1.44x in
/// the run before; allreduce 0.80-0.97x, Rabenseifner 0.89-1.16x. The
/// others as [`choose`].
///
/// ```
/// use weft_collectives::model::LogGP;
/// use weft_collectives::select::{choose_crowded, Call, Network};
/// use weft_collectives::{Algorithm, Collective};
/// let call = Call { collective: Collective::Broadcast, rank: 0, p: 4, root: 0,
///                   count: 1 << 20, elem: 1, commutative: true };
/// let net = Network::of(&LogGP::SHARED_MEMORY);
/// assert_eq!(choose_crowded(&call, &net), Algorithm::Binomial);
/// let call = Call { collective: Collective::Alltoall, count: 1 << 16, ..call };
/// assert_eq!(choose_crowded(&call, &net), Algorithm::Linear);
/// let call = Call { collective: Collective::Allreduce, count: 1 << 13, elem: 8, ..call };
/// assert_eq!(choose_crowded(&call, &net), Algorithm::Linear);
/// ```
pub fn choose_crowded(call: &Call, net: &Network) -> Algorithm {
    match (call.collective, choose(call, net)) {
        (Collective::Broadcast | Collective::Reduce, _) => Algorithm::Binomial,
        (Collective::Alltoall, Algorithm::Pairwise)
        | (Collective::Allgather, Algorithm::Ring)
        | (Collective::Allreduce, Algorithm::Ring | Algorithm::Rabenseifner) => Algorithm::Linear,
        (_, chosen) => chosen,
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
        (Collective::Reduce, Binomial) => reduce::binomial(rank, p, root, count, elem, commutative),
        (Collective::Reduce, _) => reduce::scatter_gather(rank, p, root, count, elem),
        (Collective::Allreduce, RecursiveDoubling) => allreduce::recursive_doubling(rank, p, n),
        (Collective::Allreduce, Ring) => allreduce::ring(rank, p, count, elem),
        (Collective::Allreduce, Linear) => allreduce::linear(rank, p, count, elem),
        (Collective::Allreduce, _) => allreduce::rabenseifner(rank, p, count, elem),
        (Collective::Allgather, Ring) => allgather::ring(rank, p, n),
        (Collective::Allgather, RecursiveDoubling) => allgather::recursive_doubling(rank, p, n),
        (Collective::Allgather, Linear) => allgather::linear(rank, p, n),
        (Collective::Allgather, _) => allgather::bruck(rank, p, n),
        (Collective::Alltoall, Pairwise) => alltoall::pairwise(rank, p, n),
        (Collective::Alltoall, Linear) => alltoall::linear(rank, p, n),
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
