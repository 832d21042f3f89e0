//! weftrun itself: output forwarding, stdin, signals, binding, help, and
//! programs started without a launcher.

use std::process::Command;
use std::time::{Duration, Instant};

use weft_tests::{run, weft_check, weft_check_arg, weftrun};

#[test]
fn tag_output_prefixes_every_line_with_its_rank() {
    let job = run(
        &["-n", "4", "--tag-output", &weft_check_arg(), "wait"],
        &[],
        "",
    );
    assert_eq!(job.code, Some(0), "{}", job.stderr);
    for r in 0..4 {
        assert!(
            job.stdout
                .lines()
                .any(|l| l == format!("[{r}] rank {r}: wait ok")),
            "{}",
            job.stdout
        );
    }
}

#[test]
fn stdin_goes_to_rank_0() {
    let job = run(
        &["-n", "2", &weft_check_arg(), "stdin"],
        &[],
        "a line for rank zero\n",
    );
    assert_eq!(job.code, Some(0), "{}", job.stderr);
    assert!(
        job.stdout.contains("rank 0 read: a line for rank zero"),
        "{}",
        job.stdout
    );
}

#[test]
fn sigterm_is_forwarded_and_the_job_ends() {
    let mut child = Command::new(weftrun())
        .args(["-n", "2", "--grace", "1", &weft_check_arg(), "sleep"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let start = Instant::now();
    // SAFETY: signalling the weftrun we started and have not reaped.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(start.elapsed() < Duration::from_secs(10));
    assert_eq!(status.code(), Some(128 + 15));
}

#[test]
fn bindings_are_reported() {
    let job = run(
        &[
            "-n",
            "2",
            "--bind-to",
            "core",
            "--report-bindings",
            &weft_check_arg(),
            "wait",
        ],
        &[],
        "",
    );
    assert_eq!(job.code, Some(0), "{}", job.stderr);
    assert!(
        job.stderr.contains("weftrun: rank 0 bound to core"),
        "{}",
        job.stderr
    );
    let job = run(
        &[
            "-n",
            "2",
            "--bind-to",
            "none",
            "--report-bindings",
            &weft_check_arg(),
            "wait",
        ],
        &[],
        "",
    );
    assert!(
        job.stderr.contains("weftrun: rank 1 not bound"),
        "{}",
        job.stderr
    );
}

#[test]
fn help_explains_every_option() {
    let out = Command::new(weftrun()).arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for opt in [
        "--np",
        "--tag-output",
        "--bind-to",
        "--report-bindings",
        "--grace",
        "PROGRAM",
    ] {
        assert!(text.contains(opt), "--help does not mention {opt}:\n{text}");
    }
}

#[test]
fn a_program_without_launcher_is_a_singleton() {
    let out = Command::new(weft_check())
        .arg("atomics")
        .env_remove("PMI_FD")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("rank 0: atomics ok"));
}

#[test]
fn a_malformed_pmi_environment_is_an_error() {
    let out = Command::new(weft_check())
        .arg("wait")
        .env("PMI_FD", "99")
        .env("PMI_RANK", "0")
        .env("PMI_SIZE", "1")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("PMI_FD=99 is not an open descriptor"));
}

#[test]
fn a_bad_exit_board_is_an_error_and_a_stale_one_does_not_reach_the_ranks() {
    let out = Command::new(weft_check())
        .arg("wait")
        .env("PMI_FD", "99")
        .env("PMI_RANK", "0")
        .env("PMI_SIZE", "1")
        .env("WEFT_EXITS_FD", "98")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("WEFT_EXITS_FD=98: 98 is not an open descriptor"),
        "{err}"
    );
    // weftrun started where the variable is set (by a rank of another job)
    // gives its own ranks none.
    let job = run(
        &["-n", "2", &weft_check_arg(), "wait"],
        &[("WEFT_EXITS_FD", "98")],
        "",
    );
    assert_eq!(job.code, Some(0), "{}", job.stderr);
}

#[test]
fn the_examples_run_under_weftrun() {
    for (prog, args, expect) in [
        ("hello", &[][..], "hello from PE 3 of 4"),
        ("ring", &["20"][..], "the token is 120 (expected 120)"),
        ("histogram", &["20000"][..], "4 PEs counted 80000 samples"),
        (
            "jacobi",
            &["64", "50"][..],
            "max difference from serial 0e0",
        ),
    ] {
        let path = weft_tests::binary(prog);
        let mut a = vec!["-n", "4", path.to_str().unwrap()];
        a.extend_from_slice(args);
        let job = run(&a, &[], "");
        assert_eq!(job.code, Some(0), "{prog}: {}", job.stderr);
        assert!(job.stdout.contains(expect), "{prog}: {}", job.stdout);
    }
}
