//! Helpers for the multi-process tests: run a program under `weftrun` with a
//! time limit and collect what it printed.

pub mod rng;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long any one job may take before the test fails: 120 s, or 300 s
/// under emulation, whose speed differs twofold from one machine to the
/// next (six times the slowest job seen there, 50 s for 3 PEs on two VMs;
/// short enough that a hang still fails within the VM's time).
fn job_limit() -> Duration {
    Duration::from_secs(if emulated() { 300 } else { 120 })
}

/// Whether the suite runs under software emulation (`WEFT_TEST_EMULATED`,
/// set by `scripts/test-verbs.sh` in the Soft-RoCE VM), where it scales down
/// iteration counts and sizes, never the kinds of operation.
pub fn emulated() -> bool {
    std::env::var_os("WEFT_TEST_EMULATED").is_some_and(|v| v == "1")
}

/// The rank counts to run a test at: `all`, or under emulation only the 2
/// and 4 of them (all of them when neither is there).
pub fn ranks(all: impl IntoIterator<Item = usize>) -> Vec<usize> {
    let all: Vec<usize> = all.into_iter().collect();
    let some: Vec<usize> = all.iter().copied().filter(|n| [2, 4].contains(n)).collect();
    if emulated() && !some.is_empty() {
        some
    } else {
        all
    }
}

/// The directory holding the workspace's binaries (`target/<profile>`).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test knows its own path");
    // target/<profile>/deps/<test> -> target/<profile>
    exe.parent()
        .and_then(|d| d.parent())
        .expect("test binaries live in target/<profile>/deps")
        .to_path_buf()
}

/// Path of the workspace binary `name`, which must have been built.
pub fn binary(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.exists(),
        "{} is missing: build it first with `cargo build --workspace --bins`",
        p.display()
    );
    p
}

/// Path of the `weftrun` binary built next to the tests.
pub fn weftrun() -> PathBuf {
    binary("weftrun")
}

/// Path of the scenario program.
pub fn weft_check() -> PathBuf {
    binary("weft-check")
}

/// Path of the scenario program as a command-line argument.
pub fn weft_check_arg() -> String {
    weft_check()
        .to_str()
        .expect("the target directory has a UTF-8 path")
        .to_owned()
}

/// What a finished job left.
#[derive(Debug)]
pub struct Job {
    /// weftrun's exit code (`None` if it died by a signal).
    pub code: Option<i32>,
    /// Everything printed on stdout.
    pub stdout: String,
    /// Everything printed on stderr.
    pub stderr: String,
    /// weftrun's process id (job names and segment names derive from it).
    pub pid: u32,
    /// How long it ran.
    pub elapsed: Duration,
}

/// Under `WEFT_TEST_HOSTS=A,B` (with `WEFT_TEST_PORT` and
/// `WEFT_TEST_SECRET_FILE`; `scripts/test-verbs.sh` sets them in its pair of
/// VMs), a job of `-n N` ranks with N of two or more runs on both hosts:
/// ranks 0 .. `first` (default ceil(N/2), at most N - 1) on A, where the
/// test runs, the others on B, whose agent joins by hand. Other jobs are
/// left as they are.
pub fn spread(args: &[&str], first: Option<usize>) -> Vec<String> {
    let owned = || args.iter().map(|a| a.to_string()).collect();
    let (Ok(hosts), Ok(port), Ok(secret)) = (
        std::env::var("WEFT_TEST_HOSTS"),
        std::env::var("WEFT_TEST_PORT"),
        std::env::var("WEFT_TEST_SECRET_FILE"),
    ) else {
        return owned();
    };
    let Some((a, b)) = hosts.split_once(',') else {
        panic!("WEFT_TEST_HOSTS={hosts:?} is not two hosts A,B");
    };
    let n = match args {
        ["-n", n, ..] => n.parse::<usize>().expect("-n takes a number"),
        _ => return owned(),
    };
    if n < 2 {
        return owned();
    }
    let first = first.unwrap_or(n.div_ceil(2)).clamp(1, n - 1);
    let mut out: Vec<String> = [
        "--hosts".to_string(),
        format!("{a}:{first},{b}:{}", n - first),
        "--launcher".into(),
        "manual".into(),
        "--port".into(),
        port,
        "--secret-file".into(),
        secret,
    ]
    .into();
    out.extend(args[2..].iter().map(|a| a.to_string()));
    out
}

/// Runs `weftrun ARGS...` with `env` added, feeding `stdin`; fails the test
/// if it runs longer than its limit (120 s, 300 s under emulation). Jobs
/// are spread over two hosts under `WEFT_TEST_HOSTS` (see [`spread`]).
pub fn run(args: &[&str], env: &[(&str, &str)], stdin: &str) -> Job {
    launch(args, None, env, stdin)
}

fn launch(args: &[&str], first: Option<usize>, env: &[(&str, &str)], stdin: &str) -> Job {
    let mut cmd = Command::new(weftrun());
    cmd.args(spread(args, first))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let limit = job_limit();
    let start = Instant::now();
    let mut child = cmd.spawn().expect("weftrun starts");
    let pid = child.id();
    {
        use std::io::Write;
        let mut input = child.stdin.take().expect("piped");
        let _ = input.write_all(stdin.as_bytes());
    }
    let waiter = std::thread::spawn(move || child.wait_with_output());
    while !waiter.is_finished() {
        if start.elapsed() > limit {
            // SAFETY: signalling the weftrun we started; it is not reaped yet.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            panic!("weftrun {args:?} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = waiter.join().expect("waiter").expect("weftrun output");
    let elapsed = start.elapsed();
    if emulated() {
        // Under emulation jobs run far slower; each one's time is printed
        // (seen with --nocapture) to show how near it came to the limit.
        eprintln!("job took {elapsed:.1?}: weftrun {args:?}");
    }
    Job {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        pid,
        elapsed,
    }
}

/// Runs `program ARGS...` (a workspace binary whose first argument names a
/// scenario) on `n` ranks and asserts every rank reported success.
pub fn scenario(program: &str, args: &[&str], n: usize, env: &[(&str, &str)]) -> Job {
    placed_scenario(program, args, n, None, env)
}

/// As [`scenario`], with `first` ranks on the first host under
/// `WEFT_TEST_HOSTS` instead of half of them (see [`spread`]).
pub fn placed_scenario(
    program: &str,
    args: &[&str],
    n: usize,
    first: Option<usize>,
    env: &[(&str, &str)],
) -> Job {
    let np = n.to_string();
    let path = binary(program);
    let mut argv = vec!["-n", &np, path.to_str().expect("UTF-8 target path")];
    argv.extend_from_slice(args);
    let job = launch(&argv, first, env, "");
    let name = args[0];
    assert_eq!(
        job.code,
        Some(0),
        "{program} {args:?} on {n} ranks with {env:?} failed:\n{}\n{}",
        job.stdout,
        job.stderr
    );
    for r in 0..n {
        let line = format!("rank {r}: {name} ok");
        assert!(
            job.stdout.contains(&line),
            "missing {line:?} in:\n{}",
            job.stdout
        );
    }
    job
}

/// Shared-memory segments of the job started by weftrun `pid` still in /dev/shm.
pub fn leftover_segments(pid: u32) -> Vec<String> {
    let prefix = format!("weft-w{pid}x");
    std::fs::read_dir("/dev/shm")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&prefix))
                .collect()
        })
        .unwrap_or_default()
}

/// What a scenario's check returns: `Err` describes the wrong answer.
pub type Check = Result<(), String>;

/// `Ok` if `cond` holds, else `Err` with the text `what` makes.
pub fn ensure(cond: bool, what: impl FnOnce() -> String) -> Check {
    if cond {
        Ok(())
    } else {
        Err(what())
    }
}

/// A Weft result with its error as text.
pub fn w<T>(r: weft::Result<T>) -> Result<T, String> {
    r.map_err(|e| e.to_string())
}

/// Ends a scenario program: finalizes the world after a passing check and
/// prints `rank R: NAME ok` (what [`scenario`] looks for), or prints the
/// failure; the exit code tells weftrun which.
pub fn finish(world: &weft::World, name: &str, result: Check) -> std::process::ExitCode {
    match result.and_then(|()| w(world.finalize())) {
        Ok(()) => {
            println!("rank {}: {name} ok", world.rank());
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("rank {}: {name} FAILED: {e}", world.rank());
            std::process::ExitCode::FAILURE
        }
    }
}

/// `Ok` if `r` failed in `op` with a cause `ok` accepts (printing the
/// error as expected); an error describing what happened otherwise.
pub fn expect_cause(
    r: weft::Result<impl std::fmt::Debug>,
    op: &str,
    ok: impl Fn(&weft::Cause) -> bool,
) -> Check {
    match r {
        Err(e) if e.op == op && ok(&e.cause) => {
            println!("expected error: {e}");
            Ok(())
        }
        other => Err(format!("{op}: expected a specific error, got {other:?}")),
    }
}
