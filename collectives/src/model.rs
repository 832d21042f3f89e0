//! A LogGP cost model of every algorithm, and the lower bounds it is
//! measured against.
//!
//! LogGP (Alexandrov, Ionescu, Schauser and Scheiman, 1995) describes a
//! network by `L` (latency), `o` (processor overhead per message), `g` (gap
//! between messages) and `G` (gap per byte); we add `gamma`, the time to
//! combine one byte in a reduction. A message of `m` bytes between two
//! members costs `L + 2o + m G`. Every algorithm here proceeds in steps in
//! which each member sends at most one message and receives at most one
//! (or, in trees, where the critical path is one message per step), so a
//! step costs `alpha + m beta` with `alpha = L + 2o` and `beta = G`, plus
//! `m gamma` where it reduces; `g` matters only when a member sends several
//! messages back to back, which these algorithms do not on their critical
//! path. A binomial reduce of `m` segments is a pipeline of
//! `ceil(log2 p) + m - 1` steps of one segment each. Local copies cost
//! `copy` per byte where an algorithm copies more than a member's own
//! block on its critical path: the working copy of a non-root's vector in
//! reduce's scatter-gather, the rotations of Bruck's allgather, and the
//! rotations, packing and unpacking of Bruck's alltoall. The formulas follow Thakur, Rabenseifner and Gropp,
//! "Optimization of Collective Communication Operations in MPICH" (2005),
//! extended with the extra steps our folding of team sizes that are not
//! powers of two takes.
//!
//! Team sizes are `p`; `n` is the bytes of a vector (broadcast, reduce,
//! allreduce, scans) or of one block (the others), as in
//! [`crate::select::Call::bytes`].

use crate::{Algorithm, Collective};

/// Parameters of a network, in seconds and seconds per byte.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LogGP {
    /// Latency of the wire and switches.
    pub l: f64,
    /// Processor overhead to send or receive one message.
    pub o: f64,
    /// Minimum gap between two messages of one processor.
    pub g: f64,
    /// Gap per byte: the inverse of the link bandwidth.
    pub big_g: f64,
    /// Time to combine one byte in a reduction.
    pub gamma: f64,
    /// Time to copy one byte in local memory.
    pub copy: f64,
}

impl LogGP {
    /// A cluster of the kind Weft targets: a 100 Gb/s (EDR InfiniBand or
    /// RoCE) link, `G` = 1 / 12.5 GB/s from its line rate; `L` = 1 µs and
    /// `o` = `g` = 0.2 µs, the order of the half round trip and per-message
    /// overhead that MPI ping-pong shows on such fabrics; `gamma` = 1 /
    /// 8 GB/s, a vectorized sum of doubles streaming from memory on one
    /// core; `copy` = 1 / 10 GB/s, memcpy streaming from memory on one core.
    /// The selection rule is checked against this set.
    pub const CLUSTER: LogGP = LogGP {
        l: 1.0e-6,
        o: 0.2e-6,
        g: 0.2e-6,
        big_g: 1.0 / 12.5e9,
        gamma: 1.0 / 8.0e9,
        copy: 1.0 / 10.0e9,
    };

    /// One node's shared memory, as measured by `benches/compare_p2p.sh`
    /// (8-byte one-way latency about 0.16 µs, 1 MiB bandwidth about 10 GB/s
    /// into a cold buffer); `gamma` and `copy` as for [`LogGP::CLUSTER`].
    pub const SHARED_MEMORY: LogGP = LogGP {
        l: 0.1e-6,
        o: 0.03e-6,
        g: 0.03e-6,
        big_g: 1.0 / 10.0e9,
        gamma: 1.0 / 8.0e9,
        copy: 1.0 / 10.0e9,
    };

    fn alpha(&self) -> f64 {
        self.l + 2.0 * self.o
    }
}

/// `ceil(log2 p)`.
fn lg(p: usize) -> f64 {
    f64::from(p.next_power_of_two().trailing_zeros())
}

/// Modelled time of `algorithm` running `collective` on `p` members with
/// `n` bytes (see the module documentation), in seconds.
///
/// ```
/// use weft_collectives::model::{time, LogGP};
/// use weft_collectives::{Algorithm, Collective};
/// let small = time(Collective::Allreduce, Algorithm::RecursiveDoubling, 64, 8, &LogGP::CLUSTER);
/// let ring = time(Collective::Allreduce, Algorithm::Ring, 64, 8, &LogGP::CLUSTER);
/// assert!(small < ring);
/// ```
pub fn time(collective: Collective, algorithm: Algorithm, p: usize, n: usize, m: &LogGP) -> f64 {
    use Algorithm::*;
    use Collective as C;
    if p <= 1 {
        return 0.0;
    }
    let (a, b, c, cp) = (m.alpha(), m.big_g, m.gamma, m.copy);
    let pf = p as f64;
    let n = n as f64;
    let p2 = 1usize << (usize::BITS - 1 - p.leading_zeros());
    let (p2f, l2) = (p2 as f64, f64::from(p2.trailing_zeros()));
    // The fold onto a power of two: one step of a whole vector before and,
    // for results every member needs, one after.
    let fold = if p2 == p { 0.0 } else { 1.0 };
    let steps = lg(p);
    match (collective, algorithm) {
        (C::Barrier, _) => steps * a,
        (C::Broadcast, ScatterAllgather) => {
            steps * a + (pf - 1.0) / pf * n * b + (pf - 1.0) * (a + n / pf * b)
        }
        (C::Broadcast, _) => steps * (a + n * b),
        (C::Reduce, ScatterGather) => {
            n * cp + fold * (a + n * (b + c)) + 2.0 * l2 * a + (p2f - 1.0) / p2f * n * (2.0 * b + c)
        }
        (C::Reduce, _) => {
            let m = crate::reduce::segments(n as usize) as f64;
            (steps + m - 1.0) * (a + n / m * (b + c))
        }
        (C::Allreduce, Ring | Linear) => 2.0 * (pf - 1.0) * a + (pf - 1.0) / pf * n * (2.0 * b + c),
        (C::Allreduce, Rabenseifner) => {
            fold * (2.0 * a + n * (2.0 * b + c))
                + 2.0 * l2 * a
                + (p2f - 1.0) / p2f * n * (2.0 * b + c)
        }
        (C::Allreduce, _) => fold * (2.0 * a + n * (2.0 * b + c)) + l2 * (a + n * (b + c)),
        (C::Allgather, RecursiveDoubling) => {
            fold * (2.0 * a + n * b + pf * n * b) + l2 * a + (p2f - 1.0) / p2f * pf * n * b
        }
        (C::Allgather, Bruck) => steps * a + (pf - 1.0) * n * b + (pf + 1.0) * n * cp,
        // Linear as the ring (see alltoall's below).
        (C::Allgather, _) => (pf - 1.0) * (a + n * b),
        (C::Alltoall, Bruck) => {
            steps * (a + (pf / 2.0).ceil() * n * (b + 2.0 * cp)) + 2.0 * pf * n * cp
        }
        // Linear is costed as pairwise: the same messages and bytes per
        // member; what it changes, how waits meet a crowded scheduler, is
        // not in the model (and without contention the model would credit
        // it with every step's latency overlapped, which many members
        // sending to one at once do not get).
        (C::Alltoall, _) => (pf - 1.0) * (a + n * b),
        (C::Gather | C::Scatter, _) => steps * a + (pf - 1.0) * n * b,
        (C::ReduceScatter, Ring) => (pf - 1.0) * (a + n * (b + c)),
        (C::ReduceScatter, RecursiveHalving) => {
            fold * (2.0 * a + pf * n * (b + c) + n * b)
                + l2 * a
                + (p2f - 1.0) / p2f * pf * n * (b + c)
        }
        (C::ReduceScatter, _) => time(C::Allreduce, RecursiveDoubling, p, p * n as usize, m),
        (C::Scan | C::Exscan, _) => steps * (a + n * (b + 2.0 * c)),
    }
}

/// The lower bound the model's times are measured against: the larger of
/// `ceil(log2 p)` message steps and the bytes a member must move at least
/// (for allreduce `2 (p - 1) / p n`; for broadcast, reduce and scans the
/// vector once; for the block collectives `(p - 1)` blocks).
pub fn lower_bound(collective: Collective, p: usize, n: usize, m: &LogGP) -> f64 {
    use Collective as C;
    if p <= 1 {
        return 0.0;
    }
    let (pf, n) = (p as f64, n as f64);
    let bytes = match collective {
        C::Barrier => 0.0,
        C::Allreduce => 2.0 * (pf - 1.0) / pf * n,
        C::Broadcast | C::Reduce | C::Scan | C::Exscan => n,
        C::Allgather | C::Alltoall | C::Gather | C::Scatter | C::ReduceScatter => (pf - 1.0) * n,
    };
    (lg(p) * m.alpha()).max(bytes * m.big_g)
}

/// The algorithm the model finds fastest for a call, among those that
/// apply (`commutative`: whether the reduction is).
pub fn best(
    collective: Collective,
    p: usize,
    n: usize,
    commutative: bool,
    m: &LogGP,
) -> (Algorithm, f64) {
    collective
        .algorithms()
        .iter()
        .filter(|a| commutative || !a.needs_commutative())
        .map(|&a| (a, time(collective, a, p, n, m)))
        .min_by(|x, y| x.1.total_cmp(&y.1))
        .expect("every collective has an algorithm for every operation")
}

/// Team sizes of the grid the selection rule is checked on: every size
/// up to 65, then powers of two and their neighbours up to 65,536.
pub fn grid_sizes() -> Vec<usize> {
    let mut v: Vec<usize> = (2..=65).collect();
    let mut q = 128;
    while q <= 65_536 {
        v.extend([q - 1, q, q + 1, q + q / 2]);
        q *= 2;
    }
    v.retain(|&p| p <= 65_536);
    v.sort_unstable();
    v.dedup();
    v
}

/// Message sizes of the grid: every power of two from 8 B to 64 MiB.
pub fn grid_bytes() -> Vec<usize> {
    (3..=26).map(|k| 1usize << k).collect()
}
