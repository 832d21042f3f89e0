//! The selection rule against the LogGP model: everywhere on the grid
//! (team sizes 2 to 65,536, messages 8 B to 64 MiB), for a cluster's
//! parameters and for shared memory's, the algorithm the rule picks is
//! within 10% of the best one modelled.

use weft_collectives::model::{best, grid_bytes, grid_sizes, time, LogGP};
use weft_collectives::select::{choose, Call, Network};
use weft_collectives::Collective;

#[test]
fn the_rule_is_within_10_percent_of_the_best_modelled_algorithm() {
    let mut misses = Vec::new();
    let mut points = 0;
    for m in [LogGP::CLUSTER, LogGP::SHARED_MEMORY] {
        let net = Network::of(&m);
        for c in Collective::ALL {
            for commutative in [true, false] {
                if !commutative && !c.reduces() {
                    continue;
                }
                for &p in &grid_sizes() {
                    for &n in &grid_bytes() {
                        points += 1;
                        let call = Call {
                            collective: c,
                            rank: 0,
                            p,
                            root: 0,
                            count: n,
                            elem: 1,
                            commutative,
                        };
                        let chosen = choose(&call, &net);
                        let t = time(c, chosen, p, n, &m);
                        let (fastest, tb) = best(c, p, n, commutative, &m);
                        if t > 1.10 * tb {
                            misses.push(format!(
                            "{m:?}: {c} p={p} n={n} commutative={commutative}: {chosen} {:.3e} s, \
                             {fastest} {:.3e} s ({:.0}% slower)",
                            t,
                            tb,
                            (t / tb - 1.0) * 100.0
                        ));
                        }
                    }
                }
            }
        }
    }
    assert!(
        misses.is_empty(),
        "{} of {points} grid points miss:\n{}",
        misses.len(),
        misses[..misses.len().min(40)].join("\n")
    );
}
