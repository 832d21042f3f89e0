//! Point-to-point and active messages through weftrun with 2 to 4 ranks
//! (4 ranks oversubscribe a 2-core machine), under each protocol setting:
//! default (eager up to 4 KiB, single-copy rendezvous), everything by
//! rendezvous, everything eager, pushed rendezvous (no cross-memory attach)
//! and a progress thread.

use weft_tests::{binary, ranks, run, scenario};

const VARIANTS: &[&[(&str, &str)]] = &[
    &[],
    &[("WEFT_EAGER_LIMIT", "0")],
    &[("WEFT_EAGER_LIMIT", "1M")],
    &[("WEFT_SINGLE_COPY", "off")],
    &[("WEFT_PROGRESS_THREAD", "1")],
];

fn twosided(args: &[&str], n: usize, env: &[(&str, &str)]) -> weft_tests::Job {
    scenario("weft-twosided", args, n, env)
}

#[test]
fn pingpong_of_every_size_up_to_16_mib() {
    for env in VARIANTS {
        twosided(&["pingpong"], 2, env);
    }
    twosided(&["pingpong"], 4, &[]);
}

#[test]
fn ten_thousand_outstanding_requests_with_wildcards_keep_order() {
    for n in ranks(2..=4) {
        twosided(&["outstanding", "11"], n, &[]);
    }
    for env in &VARIANTS[1..] {
        twosided(&["outstanding", "12"], 3, env);
    }
}

#[test]
fn active_messages_run_in_order_and_reply() {
    for n in ranks(2..=4) {
        for env in VARIANTS {
            twosided(&["am"], n, env);
        }
    }
}

#[test]
fn probe_truncation_and_bad_arguments() {
    for n in ranks([2, 4]) {
        for env in VARIANTS {
            twosided(&["probe"], n, env);
            twosided(&["truncate"], n, env);
        }
        twosided(&["badargs"], n, &[]);
    }
}

#[test]
fn a_receiver_asleep_in_a_long_wait_gets_a_late_message() {
    for n in ranks([2, 4]) {
        twosided(&["late"], n, &[]);
    }
}

#[test]
fn randomized_stress_for_30_seconds() {
    let job = twosided(&["stress", "2026"], 2, &[]);
    assert!(job.stdout.contains("stress: seed 2026"), "{}", job.stdout);
    let env = [("WEFT_PROGRESS_THREAD", "1"), ("WEFT_SINGLE_COPY", "off")];
    twosided(&["stress", "7"], 4, &env);
}

#[test]
fn a_handler_calling_into_the_engine_is_refused() {
    for n in ranks(1..=3) {
        twosided(&["reenter"], n, &[]);
    }
}

#[test]
fn a_panicking_handler_fails_the_job_naming_it() {
    let job = run(
        &[
            "-n",
            "2",
            &binary("weft-twosided").to_string_lossy(),
            "explode",
        ],
        &[],
        "",
    );
    assert_ne!(job.code, Some(0));
    assert!(
        job.stderr
            .contains("handler \"explode\" panicked: this handler fails on purpose"),
        "{}",
        job.stderr
    );
    assert!(job.stderr.contains("rank 1"), "{}", job.stderr);
}

#[test]
fn a_peer_that_exits_mid_exchange_is_named() {
    for n in ranks([2, 3, 4]) {
        let job = run(
            &[
                "-n",
                &n.to_string(),
                &binary("weft-twosided").to_string_lossy(),
                "exit-early",
            ],
            &[],
            "",
        );
        for r in 0..n - 1 {
            let line = format!("expected error: rank {r}: recv: PE {} has exited", n - 1);
            assert!(
                job.stderr.contains(&line) || job.stdout.contains(&line),
                "{job:?}"
            );
        }
    }
}

#[test]
fn different_handler_sets_fail_init_on_every_pe() {
    let job = run(
        &["-n", "3", &binary("weft-twosided").to_string_lossy(), "am"],
        &[("TWOSIDED_EXTRA_HANDLER", "1")],
        "",
    );
    assert_ne!(job.code, Some(0));
    assert!(
        job.stderr
            .contains("PEs [1] registered active-message handlers")
            && job.stderr.contains("\"only-here\""),
        "{}",
        job.stderr
    );
}
