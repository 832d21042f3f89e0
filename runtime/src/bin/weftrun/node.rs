//! The ranks of one node: starting them with their PMI sockets, forwarding
//! their output, reaping them and stopping them. Used by a single-node
//! weftrun and by the agent on each node of a multi-node job.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{ChildStdin, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam::channel::{Receiver, RecvTimeoutError, Sender};

use crate::binding::{self, BindTo};
use crate::link::LinkWriter;
use crate::msg::Msg;
use crate::pmi_server::{self, Kvs};

/// What a node's supervising loop hears about.
pub enum Event {
    /// A child was reaped.
    Exited { pid: i32, status: ExitStatus },
    /// weftrun received a signal.
    Signal(i32),
    /// A rank called PMI abort.
    Abort { rank: usize, code: i32, msg: String },
    /// The controller sent a message (agents only).
    Link(Msg),
    /// The link to the controller failed (agents only).
    LinkLost(String),
}

/// Where the ranks' output goes.
#[derive(Clone)]
pub enum Output {
    /// This process's stdout and stderr, prefixed with `"[rank] "` when tagged.
    Local { tag: bool },
    /// Output frames to the controller, which prints them.
    Link(Arc<LinkWriter>),
}

impl Output {
    /// A line from weftrun itself about `rank`, e.g. its binding.
    pub fn notice(&self, rank: usize, text: &str) {
        match self {
            Output::Local { .. } => eprintln!("{text}"),
            Output::Link(link) => {
                let _ = link.send(
                    &Msg::Output {
                        rank: rank as u32,
                        err: true,
                        line: format!("{text}\n").into_bytes(),
                    }
                    .encode(),
                );
            }
        }
    }
}

/// The node's part of a job.
pub struct Spec<'a> {
    /// Ranks in the job.
    pub size: usize,
    /// The first rank on this node; the node runs `first .. first + count`.
    pub first: usize,
    pub count: usize,
    pub command: &'a [String],
    /// Variables set for the ranks on top of this process's environment.
    pub env: &'a [(String, String)],
    pub cwd: Option<&'a str>,
    pub bind: Option<BindTo>,
    pub report_bindings: bool,
    /// The ranks get SIGKILL when this process dies (agents: so that no rank
    /// outlives a lost agent).
    pub die_with_parent: bool,
    /// This node's name, for messages.
    pub host: Option<&'a str>,
    /// The exit board's descriptor, passed to the ranks in `WEFT_EXITS_FD`
    /// (agents: see `weft_transport::exits`).
    pub exits: Option<RawFd>,
}

/// One started rank.
pub struct Rank {
    pub rank: usize,
    pub pid: i32,
    pub done: bool,
}

/// The node's started ranks.
pub struct Ranks {
    pub ranks: Vec<Rank>,
    forwarders: Vec<std::thread::JoinHandle<()>>,
    /// Rank 0's stdin, when it runs here.
    pub stdin: Option<ChildStdin>,
}

/// Starts the node's ranks, serving them PMI from `kvs` and reporting to
/// `events`. Returns the ranks started and, when one could not be started,
/// why (the ranks started before it are still running).
pub fn start(
    spec: &Spec,
    kvs: &Arc<Kvs>,
    events: &Sender<Event>,
    output: &Output,
) -> (Ranks, Option<(usize, String)>) {
    let mut started = Ranks {
        ranks: Vec::with_capacity(spec.count),
        forwarders: Vec::new(),
        stdin: None,
    };
    let placements = match binding::place(spec.count, spec.bind) {
        Ok(p) => p,
        Err(e) => return (started, Some((spec.first, e))),
    };
    for (i, place) in placements.iter().enumerate() {
        let rank = spec.first + i;
        if spec.report_bindings {
            let on = spec.host.map(|h| format!(" on {h}")).unwrap_or_default();
            output.notice(rank, &format!("weftrun: rank {rank}{on} {}", place.what));
        }
        if let Err(e) = spawn(spec, rank, place, kvs, events, output, &mut started) {
            spawn_reaper(events.clone());
            return (started, Some((rank, e)));
        }
    }
    spawn_reaper(events.clone());
    (started, None)
}

fn spawn(
    spec: &Spec,
    rank: usize,
    place: &binding::Placement,
    kvs: &Arc<Kvs>,
    events: &Sender<Event>,
    output: &Output,
    started: &mut Ranks,
) -> Result<(), String> {
    let (ours, theirs) = UnixStream::pair().map_err(|e| format!("socketpair: {e}"))?;
    let child_fd = theirs.as_raw_fd();
    let mut cmd = Command::new(&spec.command[0]);
    cmd.args(&spec.command[1..])
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .env("PMI_FD", child_fd.to_string())
        .env("PMI_RANK", rank.to_string())
        .env("PMI_SIZE", spec.size.to_string())
        .stdin(if rank == 0 {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // A board descriptor named in this process's own environment (weftrun
    // started by a rank of another job) is not the ranks'.
    match spec.exits {
        Some(fd) => cmd.env("WEFT_EXITS_FD", fd.to_string()),
        None => cmd.env_remove("WEFT_EXITS_FD"),
    };
    if let Some(dir) = spec.cwd {
        cmd.current_dir(dir);
    }
    let cpus = (!place.cpus.is_empty()).then(|| binding::cpu_set(&place.cpus));
    let die_with_parent = spec.die_with_parent;
    let inherited = [Some(child_fd), spec.exits];
    // SAFETY: the closure runs in the child between fork and exec and calls
    // only async-signal-safe system calls (fcntl, sched_setaffinity, prctl)
    // on data prepared before the fork.
    unsafe {
        cmd.pre_exec(move || {
            for fd in inherited.into_iter().flatten() {
                if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if let Some(set) = &cpus {
                if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), set) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if die_with_parent && libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => format!("program {:?} not found", spec.command[0]),
        _ => format!("{:?}: {e}", spec.command[0]),
    })?;
    drop(theirs);
    started.ranks.push(Rank {
        rank,
        pid: child.id() as i32,
        done: false,
    });
    {
        let (kvs, events) = (kvs.clone(), events.clone());
        std::thread::spawn(move || pmi_server::serve(rank, ours, kvs, events));
    }
    started.stdin = started.stdin.take().or(child.stdin.take());
    let out = child.stdout.take().expect("piped");
    let err = child.stderr.take().expect("piped");
    for (from, is_err) in [
        (Box::new(out) as Box<dyn Read + Send>, false),
        (Box::new(err), true),
    ] {
        let output = output.clone();
        started.forwarders.push(std::thread::spawn(move || {
            forward(from, rank, is_err, &output)
        }));
    }
    Ok(())
}

/// Longest piece of a line sent in one output frame.
const LINE_PIECE: usize = 64 * 1024;

/// Passes `from` on a line at a time, each line written whole.
fn forward(from: impl Read, rank: usize, is_err: bool, output: &Output) {
    let mut reader = BufReader::new(from);
    let mut line = Vec::new();
    loop {
        line.clear();
        match Read::by_ref(&mut reader)
            .take(LINE_PIECE as u64)
            .read_until(b'\n', &mut line)
        {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if !line.ends_with(b"\n") {
            line.push(b'\n');
        }
        let sent = match output {
            Output::Local { tag } => {
                let prefix = if *tag {
                    format!("[{rank}] ")
                } else {
                    String::new()
                };
                write_line(is_err, prefix.as_bytes(), &line)
            }
            Output::Link(link) => link
                .send(
                    &Msg::Output {
                        rank: rank as u32,
                        err: is_err,
                        line: line.clone(),
                    }
                    .encode(),
                )
                .is_ok(),
        };
        if !sent {
            return;
        }
    }
}

/// Writes one line to stdout or stderr in a single write; false when that
/// stream is gone.
pub fn write_line(is_err: bool, prefix: &[u8], line: &[u8]) -> bool {
    let mut buf = Vec::with_capacity(prefix.len() + line.len());
    buf.extend_from_slice(prefix);
    buf.extend_from_slice(line);
    let done = if is_err {
        let mut e = std::io::stderr().lock();
        e.write_all(&buf).and_then(|()| e.flush())
    } else {
        let mut o = std::io::stdout().lock();
        o.write_all(&buf).and_then(|()| o.flush())
    };
    done.is_ok()
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

impl Ranks {
    /// Marks the rank with process `pid` ended; its index in `ranks`.
    pub fn reaped(&mut self, pid: i32) -> Option<usize> {
        let i = self.ranks.iter().position(|r| r.pid == pid && !r.done)?;
        self.ranks[i].done = true;
        Some(i)
    }

    /// Whether every started rank has ended.
    pub fn all_done(&self) -> bool {
        self.ranks.iter().all(|r| r.done)
    }

    /// Sends `sig` to every live rank.
    pub fn signal(&self, sig: i32) {
        for r in self.ranks.iter().filter(|r| !r.done) {
            // SAFETY: signalling a child we started and have not reaped, so
            // the pid cannot have been reused.
            unsafe { libc::kill(r.pid, sig) };
        }
    }

    /// Sends SIGTERM to every live rank; returns when to send SIGKILL.
    pub fn stop(&self, grace: Duration) -> Instant {
        self.signal(libc::SIGTERM);
        Instant::now() + grace
    }

    /// Waits until the ranks' output has all been passed on.
    pub fn finish_output(&mut self) {
        for f in self.forwarders.drain(..) {
            let _ = f.join();
        }
    }
}

/// The next event for a node's loop; when `kill_at` passes first, the ranks
/// get SIGKILL. `None` when no event can come any more.
pub fn next_event(
    rx: &Receiver<Event>,
    kill_at: &mut Option<Instant>,
    ranks: &Ranks,
) -> Option<Event> {
    loop {
        let Some(t) = *kill_at else {
            return rx.recv().ok();
        };
        match rx.recv_timeout(t.saturating_duration_since(Instant::now())) {
            Ok(e) => return Some(e),
            Err(RecvTimeoutError::Timeout) => {
                ranks.signal(libc::SIGKILL);
                *kill_at = None;
            }
            Err(RecvTimeoutError::Disconnected) => return None,
        }
    }
}

/// How a rank ended, as one line and the exit code weftrun should return;
/// `None` for a clean exit.
pub fn describe_exit(
    rank: usize,
    pid: i32,
    host: Option<&str>,
    status: ExitStatus,
) -> Option<(String, i32)> {
    let on = host.map(|h| format!(" on {h}")).unwrap_or_default();
    match (status.code(), status.signal()) {
        (Some(0), _) => None,
        (Some(c), _) => Some((
            format!("rank {rank} (pid {pid}{on}) exited with status {c}"),
            c,
        )),
        (None, Some(s)) => Some((
            format!(
                "rank {rank} (pid {pid}{on}) was killed by signal {s} ({})",
                signal_name(s)
            ),
            128 + s,
        )),
        _ => Some((format!("rank {rank} (pid {pid}{on}) ended abnormally"), 1)),
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

/// Removes shared-memory segments a rank of `job` created but did not get
/// to unlink (it died during start-up).
pub fn remove_leftover_segments(job: &str) {
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
