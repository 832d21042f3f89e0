//! Failure cases: bad arguments give errors naming rank, operation and
//! cause; failing ranks end the job with their rank named and nothing left
//! in /dev/shm.

use std::time::Duration;

use weft_tests::{leftover_segments, run, scenario, weft_check_arg};

#[test]
fn bad_pe_and_out_of_bounds_are_errors() {
    for n in 1..=4 {
        scenario(
            "weft-check",
            &["errors"],
            n,
            &[("WEFT_SYMMETRIC_SIZE", "16M")],
        );
    }
}

#[test]
fn heap_exhaustion_names_the_variable() {
    for n in [1, 3] {
        scenario(
            "weft-check",
            &["exhaust"],
            n,
            &[("WEFT_SYMMETRIC_SIZE", "1M")],
        );
    }
}

#[test]
fn mismatched_allocation_names_the_pes_that_disagree() {
    for n in 1..=4 {
        scenario(
            "weft-check",
            &["mismatch"],
            n,
            &[("WEFT_SYMMETRIC_SIZE", "16M")],
        );
    }
}

#[test]
fn a_panicking_rank_fails_the_job_and_is_named() {
    for n in [2, 4] {
        let job = run(
            &[
                "-n",
                &n.to_string(),
                "--grace",
                "1",
                &weft_check_arg(),
                "panic",
            ],
            &[],
            "",
        );
        let last = n - 1;
        assert_eq!(job.code, Some(101), "{job:?}");
        assert!(
            job.stderr
                .contains(&format!("rank {last} panics on purpose")),
            "{}",
            job.stderr
        );
        assert!(
            job.stderr.contains(&format!("weftrun: rank {last} (pid ")),
            "{}",
            job.stderr
        );
        assert!(
            job.elapsed < Duration::from_secs(30),
            "took {:?}",
            job.elapsed
        );
        assert!(
            leftover_segments(job.pid).is_empty(),
            "segments left behind"
        );
    }
}

#[test]
fn exit_status_and_abort_are_passed_on() {
    let job = run(&["-n", "3", &weft_check_arg(), "exit3"], &[], "");
    assert_eq!(job.code, Some(3), "{job:?}");
    assert!(
        job.stderr.contains("weftrun: rank 2 (pid") && job.stderr.contains("exited with status 3")
    );
    let job = run(&["-n", "2", &weft_check_arg(), "abort"], &[], "");
    assert_eq!(job.code, Some(5), "{job:?}");
    assert!(
        job.stderr
            .contains("rank 1 called abort with exit code 5: giving up on purpose"),
        "{}",
        job.stderr
    );
}

#[test]
fn a_missing_program_is_reported() {
    let job = run(&["-n", "2", "/nonexistent/program"], &[], "");
    assert_eq!(job.code, Some(127));
    // On several nodes the line also names the node ("rank 1 on HOST"), and
    // whichever node fails first is the one reported.
    assert!(
        (job.stderr.contains("cannot start rank 0") || job.stderr.contains("cannot start rank 1"))
            && job
                .stderr
                .contains("program \"/nonexistent/program\" not found"),
        "{}",
        job.stderr
    );
}

#[test]
fn bad_configuration_is_an_init_error_naming_the_variable() {
    for (var, value) in [
        ("WEFT_TRANSPORT", "pigeon"),
        ("WEFT_SYMMETRIC_SIZE", "12Q"),
        ("WEFT_VERBS_TIMEOUT", "0"),
    ] {
        let job = run(&["-n", "2", &weft_check_arg(), "rma"], &[(var, value)], "");
        assert_ne!(job.code, Some(0));
        assert!(
            job.stderr.contains(&format!("init: {var}=\"{value}\"")),
            "{}",
            job.stderr
        );
    }
    let job = run(
        &["-n", "1", &weft_check_arg(), "rma"],
        &[("WEFT_SYMMETRIC_SIZE", "100T")],
        "",
    );
    assert_ne!(job.code, Some(0));
    assert!(job.stderr.contains("rank 0: init:"), "{}", job.stderr);
}

#[test]
fn an_unusable_verbs_device_fails_init_on_every_pe_with_the_reason() {
    let env = [
        ("WEFT_TRANSPORT", "verbs"),
        ("WEFT_VERBS_DEVICE", "no-such-device"),
        ("WEFT_SYMMETRIC_SIZE", "1M"),
    ];
    let job = run(&["-n", "2", &weft_check_arg(), "rma"], &env, "");
    assert_ne!(job.code, Some(0), "{}", job.stdout);
    // Built with the `verbs` feature the device is looked for and not
    // found; without it the build says it has no verbs transport.
    let why = [
        "no RDMA device",
        "no-such-device",
        "no RDMA verbs transport",
    ];
    assert!(
        job.stderr.contains("init") && why.iter().any(|w| job.stderr.contains(w)),
        "{}",
        job.stderr
    );
    assert!(leftover_segments(job.pid).is_empty());
}

#[test]
fn pes_that_disagree_on_the_transport_fail_init_naming_the_variable() {
    let job = run(
        &[
            "-n",
            "2",
            "sh",
            "-c",
            &format!(
                "if [ \"$PMI_RANK\" = 0 ]; then export WEFT_TRANSPORT=shm; \
                 else export WEFT_TRANSPORT=auto; fi; exec {} rma",
                weft_check_arg()
            ),
        ],
        &[("WEFT_SYMMETRIC_SIZE", "1M")],
        "",
    );
    assert_ne!(job.code, Some(0), "{}", job.stdout);
    assert!(job.stderr.contains("WEFT_TRANSPORT"), "{}", job.stderr);
}
