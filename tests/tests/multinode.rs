//! weftrun across nodes: the controller, its agents, their authenticated
//! links, host lists and failures. The "nodes" here are agents on this
//! machine started through a remote shell that runs commands locally, or
//! joined by hand; the ranks then share memory as on one node, while every
//! launcher path (remote-shell start, manual join, PMI barriers across
//! agents, output, exits, lost agents) is the multi-node one.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use weft_tests::{run, weft_check_arg, weftrun};

/// A scratch directory for one test.
fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("weft-multinode-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A remote shell that runs the command here, as `ssh HOST CMD...` would
/// run it on HOST (the words joined and given to a shell).
fn local_rsh(dir: &std::path::Path) -> String {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("local-rsh");
    std::fs::write(&path, "#!/bin/sh\nshift\nexec sh -c \"$*\"\n").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path.to_str().unwrap().to_owned()
}

/// Runs weftrun with `args` (the job's hosts, options and program) through
/// the local remote shell of `dir`, agents connecting to 127.0.0.1.
fn run_remote(dir: &std::path::Path, args: &[&str], stdin: &str) -> weft_tests::Job {
    let rsh = local_rsh(dir);
    let mut all = vec!["--launcher", &rsh, "--address", "127.0.0.1"];
    all.extend_from_slice(args);
    run(&all, &[], stdin)
}

/// Runs weft-check `scenario` on 4 ranks, 2 on each of two nodes, with
/// weftrun `options`.
fn four_on_two_nodes(name: &str, options: &[&str], scenario: &str) -> weft_tests::Job {
    let check = weft_check_arg();
    let mut args = vec!["--hosts", "node-a:2,node-b:2"];
    args.extend_from_slice(options);
    args.extend([check.as_str(), scenario]);
    run_remote(&scratch(name), &args, "")
}

#[test]
fn ranks_on_two_nodes_run_through_their_agents() {
    for scenario in ["rma", "atomics", "wait"] {
        let job = four_on_two_nodes("two", &["--tag-output"], scenario);
        assert_eq!(job.code, Some(0), "{scenario}: {}", job.stderr);
        for r in 0..4 {
            let line = format!("[{r}] rank {r}: {scenario} ok");
            assert!(job.stdout.lines().any(|l| l == line), "{}", job.stdout);
        }
    }
}

#[test]
fn a_hostfile_places_the_ranks_and_exports_reach_them() {
    let dir = scratch("hostfile");
    let hostfile = dir.join("hosts");
    std::fs::write(&hostfile, "# two nodes\nnode-a slots=1\nnode-b:2\n").unwrap();
    let job = run_remote(
        &dir,
        &[
            "--hostfile",
            hostfile.to_str().unwrap(),
            "-n",
            "3",
            "-x",
            "PASSED_ON=yes it is",
            "--report-bindings",
            &weft_check_arg(),
            "env",
            "PASSED_ON",
        ],
        "",
    );
    assert_eq!(job.code, Some(0), "{}", job.stderr);
    for r in 0..3 {
        assert!(
            job.stdout
                .contains(&format!("rank {r}: PASSED_ON=yes it is")),
            "{}",
            job.stdout
        );
        assert!(
            job.stderr.contains(&format!("weftrun: rank {r} on ")),
            "{}",
            job.stderr
        );
    }
}

#[test]
fn stdin_reaches_rank_0_through_its_agent() {
    let dir = scratch("stdin");
    let job = run_remote(
        &dir,
        &["--hosts", "node-a,node-b", &weft_check_arg(), "stdin"],
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
fn a_rank_failing_on_another_node_fails_the_job_with_its_name() {
    let job = four_on_two_nodes("fail", &["--grace", "1"], "exit3");
    assert_eq!(job.code, Some(3), "{}", job.stderr);
    assert!(
        job.stderr.contains("weftrun: rank 3 (pid "),
        "{}",
        job.stderr
    );
    assert!(
        job.stderr.contains("exited with status 3"),
        "{}",
        job.stderr
    );
    assert!(job.elapsed < Duration::from_secs(30), "{:?}", job.elapsed);
}

/// A rank that leaves the job without finalizing is marked on the exit
/// boards of the other nodes, which their ranks read to find it gone (the
/// verbs transport does, for peers of other nodes).
#[test]
fn a_rank_that_leaves_is_marked_on_the_other_nodes_boards() {
    let job = four_on_two_nodes("left", &[], "left");
    assert_eq!(job.code, Some(0), "{}\n{}", job.stdout, job.stderr);
    for r in 0..3 {
        let line = format!("rank {r}: left ok");
        assert!(job.stdout.contains(&line), "{}", job.stdout);
    }
}

#[test]
fn a_lost_agent_fails_the_job_naming_its_ranks() {
    let job = four_on_two_nodes("lost", &["--grace", "1"], "kill-launcher");
    assert_ne!(job.code, Some(0), "{}", job.stderr);
    assert!(
        job.stderr.contains("lost the agent on node-b (ranks 2-3)"),
        "{}",
        job.stderr
    );
    assert!(job.elapsed < Duration::from_secs(30), "{:?}", job.elapsed);
}

#[test]
fn a_remote_shell_that_fails_is_reported() {
    let job = run(
        &[
            "--hosts",
            "node-a,node-b",
            "--launcher",
            "false",
            &weft_check_arg(),
            "wait",
        ],
        &[],
        "",
    );
    assert_eq!(job.code, Some(1), "{}", job.stderr);
    assert!(
        job.stderr.contains("ended before joining"),
        "{}",
        job.stderr
    );
}

/// Starts a controller that waits for agents started by hand and returns
/// it with the port it printed.
fn manual_controller(
    secret: &str,
) -> (
    std::process::Child,
    BufReader<std::process::ChildStderr>,
    String,
) {
    let mut child = Command::new(weftrun())
        .args([
            "--hosts",
            "localhost:1,node-b:2",
            "--launcher",
            "manual",
            "--address",
            "127.0.0.1",
            "--secret-file",
            secret,
            "--join-timeout",
            "60",
            &weft_check_arg(),
            "rma",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    err.read_line(&mut line).unwrap();
    let target = line
        .split_whitespace()
        .skip_while(|w| *w != "--join")
        .nth(1)
        .unwrap_or_else(|| panic!("no join address in {line:?}"))
        .to_owned();
    assert!(line.contains("waiting for the agents of node-b"), "{line}");
    (child, err, target)
}

#[test]
fn agents_joined_by_hand_need_the_job_secret() {
    let dir = scratch("manual");
    let secret = dir.join("job.key");
    let secret = secret.to_str().unwrap();
    let (mut controller, mut err, target) = manual_controller(secret);
    // The controller made the secret file, readable only by its owner.
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(secret).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    // An agent with another secret is refused, and the controller logs it.
    let wrong = dir.join("wrong.key");
    let fake = Command::new(weftrun())
        .args(["--join", &target, "--secret-file"])
        .arg(&wrong)
        .output()
        .unwrap();
    assert_ne!(fake.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&fake.stderr).contains("secret file"),
        "{}",
        String::from_utf8_lossy(&fake.stderr)
    );
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&wrong)
            .unwrap();
        writeln!(f, "{}", "ab".repeat(32)).unwrap();
    }
    let fake = Command::new(weftrun())
        .args(["--join", &target, "--as-host", "node-b", "--secret-file"])
        .arg(&wrong)
        .output()
        .unwrap();
    assert_ne!(fake.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&fake.stderr).contains("refused"),
        "{}",
        String::from_utf8_lossy(&fake.stderr)
    );
    let mut line = String::new();
    err.read_line(&mut line).unwrap();
    assert!(
        line.contains("refused a connection from 127.0.0.1") && line.contains("wrong job secret"),
        "{line}"
    );

    // A connection that never speaks is dropped too, without holding up the job.
    let _silent = std::net::TcpStream::connect(&target).unwrap();

    // The right secret joins, and the job runs on both agents.
    let agent = Command::new(weftrun())
        .args([
            "--join",
            &target,
            "--as-host",
            "node-b",
            "--secret-file",
            secret,
        ])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let status = controller.wait().unwrap();
    let out = std::io::read_to_string(controller.stdout.take().unwrap()).unwrap();
    let rest = std::io::read_to_string(err).unwrap();
    assert_eq!(status.code(), Some(0), "{rest}");
    for r in 0..3 {
        assert!(out.contains(&format!("rank {r}: rma ok")), "{out}");
    }
    assert!(start.elapsed() < Duration::from_secs(60));
    assert!(agent.wait_with_output().unwrap().status.success());
}
