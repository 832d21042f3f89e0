//! `weftrun`: starts the ranks of a Weft (or any PMI-1) job on this host.

mod binding;
mod pmi_server;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use crossbeam::channel::{unbounded, RecvTimeoutError, Sender};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

use binding::BindTo;

/// Start N ranks of a parallel program on this host and serve them the PMI-1
/// process-management protocol (PMI_FD, PMI_RANK, PMI_SIZE), as MPICH's
/// mpiexec does.
///
/// stdin goes to rank 0; every rank's stdout and stderr come back line by
/// line. SIGINT and SIGTERM are passed on to the ranks. When a rank exits
/// with a non-zero status or is killed by a signal, weftrun stops the others
/// (SIGTERM, then SIGKILL after the grace period), names the rank, and exits
/// with that rank's status (128 + signal for a signal).
#[derive(Parser, Debug)]
#[command(
    name = "weftrun",
    version,
    after_help = "Example: weftrun -n 4 --tag-output ./jacobi 256"
)]
struct Args {
    /// Number of ranks to start.
    #[arg(short = 'n', long = "np", value_name = "N", value_parser = clap::value_parser!(u32).range(1..=4096))]
    np: u32,
    /// Prefix every output line with "[rank]".
    #[arg(long)]
    tag_output: bool,
    /// Bind each rank to a core or a NUMA node, or not at all. Default: core
    /// while the ranks fit the cores, none when they outnumber them.
    #[arg(long, value_enum, value_name = "core|numa|none")]
    bind_to: Option<BindTo>,
    /// Print where each rank is bound, on stderr.
    #[arg(long)]
    report_bindings: bool,
    /// Seconds between SIGTERM and SIGKILL when stopping the ranks.
    #[arg(long, value_name = "SECONDS", default_value_t = 3.0)]
    grace: f64,
    /// The program to run, and its arguments.
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "PROGRAM [ARGS]..."
    )]
    command: Vec<String>,
}

/// What the supervising loop hears about.
pub enum Event {
    /// A child was reaped.
    Exited { pid: i32, status: ExitStatus },
    /// weftrun received a signal.
    Signal(i32),
    /// A rank called PMI abort.
    Abort { rank: usize, code: i32, msg: String },
}

fn main() {
    let args = Args::parse();
    std::process::exit(match run(&args) {
        Ok(code) => code,
        Err(msg) => {
            eprintln!("weftrun: {msg}");
            1
        }
    });
}

struct Rank {
    pid: i32,
    done: bool,
}

fn run(args: &Args) -> Result<i32, String> {
    let n = args.np as usize;
    let placements = binding::place(n, args.bind_to)?;
    let job = format!(
        "w{}x{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos())
    );
    let (tx, rx) = unbounded::<Event>();
    let kvs = pmi_server::Kvs::new(job.clone(), n);
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])
        .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for s in signals.forever() {
                let _ = tx.send(Event::Signal(s));
            }
        });
    }

    let mut ranks: Vec<Rank> = Vec::with_capacity(n);
    let mut forwarders = Vec::new();
    let mut failure: Option<(String, i32)> = None;
    for (rank, place) in placements.iter().enumerate() {
        if args.report_bindings {
            eprintln!("weftrun: rank {rank} {}", place.what);
        }
        match spawn(args, rank, n, place, &kvs, &tx) {
            Ok((pid, outs)) => {
                ranks.push(Rank { pid, done: false });
                forwarders.extend(outs);
            }
            Err(msg) => {
                failure = Some((format!("cannot start rank {rank}: {msg}"), 127));
                break;
            }
        }
    }
    spawn_reaper(tx.clone());

    let grace = Duration::from_secs_f64(args.grace.max(0.0));
    let mut kill_at: Option<Instant> = None;
    if failure.is_some() {
        kill_at = Some(stop_all(&ranks, grace));
    }
    while ranks.iter().any(|r| !r.done) {
        let event = match kill_at {
            Some(t) => match rx.recv_timeout(t.saturating_duration_since(Instant::now())) {
                Ok(e) => e,
                Err(RecvTimeoutError::Timeout) => {
                    for r in ranks.iter().filter(|r| !r.done) {
                        signal(r.pid, libc::SIGKILL);
                    }
                    kill_at = Some(Instant::now() + Duration::from_secs(3600));
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            },
            None => match rx.recv() {
                Ok(e) => e,
                Err(_) => break,
            },
        };
        match event {
            Event::Exited { pid, status } => {
                let Some(rank) = ranks.iter().position(|r| r.pid == pid) else {
                    continue;
                };
                ranks[rank].done = true;
                if failure.is_none() && !status.success() {
                    failure = Some(describe_exit(rank, pid, status));
                    kill_at = Some(stop_all(&ranks, grace));
                }
            }
            Event::Abort { rank, code, msg } => {
                if failure.is_none() {
                    let code = if code == 0 { 1 } else { code };
                    failure = Some((
                        format!("rank {rank} called abort with exit code {code}: {msg}"),
                        code,
                    ));
                    kill_at = Some(stop_all(&ranks, grace));
                }
            }
            Event::Signal(s) => {
                for r in ranks.iter().filter(|r| !r.done) {
                    signal(r.pid, s);
                }
                if failure.is_none() {
                    failure = Some((format!("stopped by signal {s}"), 128 + s));
                    kill_at = Some(Instant::now() + grace);
                }
            }
        }
    }
    for f in forwarders {
        let _ = f.join();
    }
    remove_leftover_segments(&job);
    Ok(match failure {
        Some((msg, code)) => {
            eprintln!("weftrun: {msg}");
            code
        }
        None => 0,
    })
}

type Forwarders = Vec<std::thread::JoinHandle<()>>;

fn spawn(
    args: &Args,
    rank: usize,
    n: usize,
    place: &binding::Placement,
    kvs: &Arc<pmi_server::Kvs>,
    events: &Sender<Event>,
) -> Result<(i32, Forwarders), String> {
    let (ours, theirs) = UnixStream::pair().map_err(|e| format!("socketpair: {e}"))?;
    let child_fd = theirs.as_raw_fd();
    let mut cmd = Command::new(&args.command[0]);
    cmd.args(&args.command[1..])
        .env("PMI_FD", child_fd.to_string())
        .env("PMI_RANK", rank.to_string())
        .env("PMI_SIZE", n.to_string())
        .stdin(if rank == 0 {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let cpus = (!place.cpus.is_empty()).then(|| binding::cpu_set(&place.cpus));
    // SAFETY: the closure runs in the child between fork and exec and calls
    // only async-signal-safe system calls (fcntl, sched_setaffinity) on data
    // prepared before the fork.
    unsafe {
        cmd.pre_exec(move || {
            if libc::fcntl(child_fd, libc::F_SETFD, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if let Some(set) = &cpus {
                if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), set) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => format!("program {:?} not found", args.command[0]),
        _ => format!("{:?}: {e}", args.command[0]),
    })?;
    drop(theirs);
    let pid = child.id() as i32;
    {
        let (kvs, events) = (kvs.clone(), events.clone());
        std::thread::spawn(move || pmi_server::serve(rank, ours, kvs, events));
    }
    if let Some(mut stdin) = child.stdin.take() {
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut std::io::stdin().lock(), &mut stdin);
        });
    }
    let prefix = args.tag_output.then(|| format!("[{rank}] "));
    let out = child.stdout.take().expect("piped");
    let err = child.stderr.take().expect("piped");
    let p2 = prefix.clone();
    Ok((
        pid,
        vec![
            std::thread::spawn(move || forward(out, std::io::stdout(), prefix)),
            std::thread::spawn(move || forward(err, std::io::stderr(), p2)),
        ],
    ))
}

/// Copies `from` to `to` a line at a time, each line written whole.
fn forward(from: impl Read, to: impl Write, prefix: Option<String>) {
    let mut reader = BufReader::new(from);
    let mut to = to;
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let mut buf = Vec::with_capacity(line.len() + 8);
        if let Some(p) = &prefix {
            buf.extend_from_slice(p.as_bytes());
        }
        buf.extend_from_slice(&line);
        if !line.ends_with(b"\n") {
            buf.push(b'\n');
        }
        if to.write_all(&buf).and_then(|()| to.flush()).is_err() {
            return;
        }
    }
}

/// Reaps every child and reports it.
fn spawn_reaper(tx: Sender<Event>) {
    std::thread::spawn(move || loop {
        let mut status = 0;
        // SAFETY: waitpid writes the status into our local.
        let pid = unsafe { libc::waitpid(-1, &mut status, 0) };
        if pid < 0 {
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return;
        }
        if tx
            .send(Event::Exited {
                pid,
                status: ExitStatus::from_raw(status),
            })
            .is_err()
        {
            return;
        }
    });
}

fn describe_exit(rank: usize, pid: i32, status: ExitStatus) -> (String, i32) {
    match (status.code(), status.signal()) {
        (Some(c), _) => (format!("rank {rank} (pid {pid}) exited with status {c}"), c),
        (None, Some(s)) => (
            format!(
                "rank {rank} (pid {pid}) was killed by signal {s} ({})",
                signal_name(s)
            ),
            128 + s,
        ),
        _ => (format!("rank {rank} (pid {pid}) ended abnormally"), 1),
    }
}

fn signal_name(s: i32) -> &'static str {
    match s {
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGABRT => "SIGABRT",
        libc::SIGKILL => "SIGKILL",
        libc::SIGTERM => "SIGTERM",
        libc::SIGINT => "SIGINT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGILL => "SIGILL",
        libc::SIGHUP => "SIGHUP",
        libc::SIGPIPE => "SIGPIPE",
        _ => "signal",
    }
}

/// Sends SIGTERM to every live rank; returns when to send SIGKILL.
fn stop_all(ranks: &[Rank], grace: Duration) -> Instant {
    for r in ranks.iter().filter(|r| !r.done) {
        signal(r.pid, libc::SIGTERM);
    }
    Instant::now() + grace
}

fn signal(pid: i32, sig: i32) {
    // SAFETY: sending a signal to a child we started and have not reaped,
    // so the pid cannot have been reused.
    unsafe { libc::kill(pid, sig) };
}

/// Removes shared-memory segments a rank created but did not get to unlink
/// (it died during start-up).
fn remove_leftover_segments(job: &str) {
    // Segment names are "/weft-<job>-<rank>"; in /dev/shm without the slash.
    let name = weft_transport::shm::segment_name(job, 0);
    let prefix = &name[1..name.len() - 1];
    let Ok(dir) = std::fs::read_dir("/dev/shm") else {
        return;
    };
    for entry in dir.flatten() {
        if entry.file_name().to_string_lossy().starts_with(prefix) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}
