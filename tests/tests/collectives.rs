//! Collectives through weftrun with 1 to 4 ranks (4 oversubscribe a
//! 2-core machine), on the world and on teams split from it: every
//! collective and element type, every algorithm (forced through
//! `WEFT_COLL_<OPERATION>`), non-blocking and concurrent calls, and the
//! failures: disagreeing counts and roots, an invalid root, a rank that
//! dies inside a collective.

use weft_tests::{binary, emulated, placed_scenario, ranks, run, scenario};

fn coll(args: &[&str], n: usize, env: &[(&str, &str)]) -> weft_tests::Job {
    scenario("weft-coll", args, n, env)
}

/// Every algorithm of every collective: the `k`-th of each collective's
/// algorithms (its last when it has fewer).
fn forced(k: usize) -> Vec<(String, String)> {
    use weft::Collective;
    Collective::ALL
        .into_iter()
        .map(|c| {
            let algs = c.algorithms();
            let a = algs[k.min(algs.len() - 1)];
            let var = weft::config::collective_variable(c).to_string();
            (var, a.name().to_string())
        })
        .collect()
}

/// Across two hosts 4 ranks run 3 on the first and 1 on the second: members
/// on a node with more PEs than cores pick some algorithms as crowded ranks
/// do, and a team on both nodes must agree on each call's algorithm all the
/// same.
#[test]
fn every_collective_and_type_on_every_team() {
    for n in ranks(1..=4) {
        let first = (n == 4).then_some(3);
        placed_scenario("weft-coll", &["all"], n, first, &[]);
    }
    for env in [
        &[("WEFT_EAGER_LIMIT", "0")][..],
        &[("WEFT_SINGLE_COPY", "off")],
        &[("WEFT_PROGRESS_THREAD", "1")],
    ] {
        coll(&["all"], 3, env);
    }
    // Every block the flat path may stream streamed (by default only while
    // cached stores run slow): the slots' blocks and, at 4 ranks on 2
    // cores, the attached allreduce's stores into the members' vectors.
    for n in ranks([2, 4]) {
        coll(&["all"], n, &[("WEFT_STREAMING", "always")]);
    }
}

#[test]
fn every_algorithm_forced_by_its_variable() {
    for k in 0..3 {
        let vars = forced(k);
        let env: Vec<(&str, &str)> = vars.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        for n in ranks([3, 4]) {
            coll(&["all"], n, &env);
        }
    }
}

/// The world team's allgathers and alltoalls larger than a slot: at 2
/// ranks each way alone and both as rank 0 times them, at 3 and 4 ranks on
/// 2 cores (where they are not timed) as chosen. One node's flat path
/// only: jobs over verbs (the emulated runs) take the general path.
#[test]
fn large_exchanges_agree_on_their_way() {
    if emulated() {
        return;
    }
    for way in ["auto", "attached", "slots"] {
        coll(&["exchange"], 2, &[("WEFT_EXCHANGE", way)]);
    }
    for n in ranks([3, 4]) {
        coll(&["exchange"], n, &[]);
    }
}

/// The world team's calls through the members' wide slots at 3 and 4
/// ranks on 2 cores (allreduces folded into them, broadcasts, alltoalls
/// and allgathers), their blocks stored by cached stores and non-temporal
/// ones as rank 0 times them, and either alone. One node's flat path only,
/// as above.
#[test]
fn calls_through_the_wide_slots_take_them_in_turn() {
    if emulated() {
        return;
    }
    for n in [3, 4] {
        coll(&["wide"], n, &[]);
    }
    for way in ["always", "never"] {
        coll(&["wide"], 4, &[("WEFT_STREAMING", way)]);
    }
}

#[test]
fn nonblocking_collectives_on_several_teams_at_once() {
    for n in ranks(1..=4) {
        coll(&["nonblocking"], n, &[]);
    }
    coll(&["nonblocking"], 3, &[("WEFT_PROGRESS_THREAD", "1")]);
}

#[test]
fn teams_used_from_two_threads_do_not_interfere() {
    for n in ranks([2, 4]) {
        coll(&["concurrent"], n, &[]);
    }
    coll(&["concurrent"], 3, &[("WEFT_PROGRESS_THREAD", "1")]);
}

#[test]
fn disagreeing_counts_and_roots_are_errors_on_every_pe() {
    // With every algorithm forced, the world team's calls take the general
    // path too, where members whose calls send each other nothing (two
    // receivers naming each other the root) find out by probing.
    let vars = forced(0);
    let general: Vec<(&str, &str)> = vars.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    for n in ranks(2..=4) {
        let job = coll(&["mismatch-count"], n, &[]);
        assert!(job.stdout.contains("PEs disagree"), "{}", job.stdout);
        for env in [&[][..], &general] {
            let job = coll(&["mismatch-root"], n, env);
            assert!(job.stdout.contains("PEs disagree"), "{}", job.stdout);
        }
        coll(&["mismatch-ahead"], n, &[]);
        coll(&["bad-root"], n, &[]);
    }
}

#[test]
fn a_nonblocking_call_matches_blocking_ones() {
    for n in ranks(2..=4) {
        coll(&["mixed"], n, &[]);
    }
}

#[test]
fn a_rooted_call_mixing_blocking_and_nonblocking_fails_everywhere_on_the_flat_path() {
    // The world team of one node takes the flat path on shared memory, the
    // default; over another transport, or across two nodes, the calls match.
    let flat = ["WEFT_TRANSPORT", "WEFT_TEST_HOSTS"]
        .iter()
        .all(|v| std::env::var_os(v).is_none());
    for n in ranks(2..=4) {
        let job = coll(&["mixed-rooted"], n, &[]);
        let errors = job.stdout.matches("expected error: ").count();
        if flat {
            // The broadcast and the first reduce fail on every rank; the
            // last reduce, from 3 ranks, on every rank but the one that
            // took it non-blocking (its send may be done before it looks).
            let last = if n > 2 { n - 1 } else { 0 };
            assert!(errors >= 2 * n + last, "{errors} errors:\n{}", job.stdout);
        }
    }
}

#[test]
fn a_rank_dying_inside_a_collective_is_named() {
    for (scenario, op) in [("die", "allreduce"), ("die-large", "alltoall")] {
        for n in ranks(2..=4) {
            dying(scenario, op, n, &[]);
        }
    }
    for scenario in ["die-large", "die-wide"] {
        dying(scenario, "alltoall", 2, &[("WEFT_EXCHANGE", "slots")]);
    }
}

/// Runs `scenario` of `weft-coll` on `n` ranks with `env`, whose last one
/// exits before a call of `op`: every other rank's call fails naming it.
fn dying(scenario: &str, op: &str, n: usize, env: &[(&str, &str)]) {
    let weft_coll = binary("weft-coll");
    let args = ["-n", &n.to_string(), &weft_coll.to_string_lossy(), scenario];
    let job = run(&args, env, "");
    let out = format!("{}{}", job.stdout, job.stderr);
    for r in 0..n - 1 {
        let line = format!("expected error: rank {r}: {op}: ");
        let named = out
            .lines()
            .any(|l| l.starts_with(&line) && l.contains(&format!("PE {} has exited", n - 1)));
        assert!(named, "rank {r} did not name PE {}:\n{out}", n - 1);
    }
}
