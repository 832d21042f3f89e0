//! The controller of a multi-node job: listens for the node agents, starts
//! them (directly on this host, through the remote shell on others, or not
//! at all with `--launcher manual`), authenticates every connection, hands
//! each agent its ranks, completes PMI barriers across nodes, prints the
//! ranks' output, and ends the job when a rank fails or an agent is lost.

use std::io::Write;
use std::net::{IpAddr, SocketAddr, TcpListener, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam::channel::{unbounded, RecvTimeoutError, Sender};

use crate::agent::hostname;
use crate::hosts::{self, Host, Share};
use crate::link::{self, LinkReader, LinkWriter, Secret};
use crate::msg::{JobSpec, Msg};
use crate::node;
use crate::{binding::BindTo, Args};

enum Event {
    /// An authenticated agent said hello.
    Joined {
        peer: SocketAddr,
        host: String,
        index: Option<u32>,
        link: LinkWriter,
        reader: LinkReader,
    },
    Frame(usize, Msg),
    Lost(usize, String),
    /// The process that starts agent `usize` (the agent or its remote
    /// shell) ended.
    LauncherExited(usize, std::process::ExitStatus),
    Signal(i32),
}

/// One node's agent as the controller sees it.
struct Agent {
    share: Share,
    link: Option<Arc<LinkWriter>>,
    /// Started by this controller (it then says its index).
    launched: bool,
    done: bool,
}

/// Runs a job on `hosts` as `args` says; the exit code.
pub fn run(args: &Args, hosts: &[Host]) -> Result<i32, String> {
    let shares = hosts::distribute(hosts, args.np.map(|n| n as usize))?;
    let size = shares.iter().map(|s| s.count).sum::<usize>();
    let manual = args.launcher == "manual";
    let secret = match &args.secret_file {
        Some(path) if std::path::Path::new(path).exists() => Secret::read_file(path)?,
        Some(path) => {
            let s = Secret::generate()?;
            s.write_file(path)?;
            s
        }
        None if manual => {
            return Err("--launcher manual needs --secret-file, for the agents to join with".into())
        }
        None => Secret::generate()?,
    };
    let listener = TcpListener::bind(("0.0.0.0", args.port))
        .map_err(|e| format!("cannot listen on port {}: {e}", args.port))?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    let address = args.address.clone().unwrap_or_else(hostname);
    let job = crate::job_name();
    let (tx, rx) = unbounded::<Event>();
    crate::forward_signals(tx.clone(), Event::Signal)?;
    let closing = Arc::new(AtomicBool::new(false));
    let listening = listener.try_clone().map_err(|e| e.to_string())?;
    spawn_acceptor(listener, secret.clone(), tx.clone(), closing.clone());

    let mut agents: Vec<Agent> = shares
        .iter()
        .map(|s| Agent {
            share: s.clone(),
            link: None,
            launched: false,
            done: false,
        })
        .collect();
    let mut launchers: Vec<Child> = Vec::new();
    let mut ending = Ending {
        failure: None,
        give_up_at: None,
        patience: args.grace() + Duration::from_secs(10),
    };
    let mut waiting_by_hand = Vec::new();
    for (i, a) in agents.iter_mut().enumerate() {
        let here = is_this_host(&a.share.host);
        if manual && !here {
            waiting_by_hand.push(a.share.host.clone());
            continue;
        }
        let target = if here {
            format!("127.0.0.1:{port}")
        } else {
            format!("{address}:{port}")
        };
        match launch(args, &a.share.host, here, &target, i, &secret) {
            Ok(child) => {
                a.launched = true;
                watch_launcher(child.id(), i, tx.clone());
                launchers.push(child);
            }
            Err(e) => {
                let what = format!("cannot start the agent for {}: {e}", a.share.host);
                ending.fail((what, 1), &[]);
                break;
            }
        }
    }
    if !waiting_by_hand.is_empty() {
        eprintln!(
            "weftrun: waiting for the agents of {}; on each, run: weftrun --join {address}:{port} --secret-file {}",
            waiting_by_hand.join(", "),
            args.secret_file.as_deref().unwrap_or("?")
        );
    }

    let spec_for = |s: &Share| JobSpec {
        job: job.clone(),
        size: size as u32,
        first: s.first as u32,
        count: s.count as u32,
        cwd: std::env::current_dir()
            .map(|d| d.to_string_lossy().into_owned())
            .unwrap_or_default(),
        command: args.command.clone(),
        env: exported_env(&args.export),
        bind: match args.bind_to {
            None => 0,
            Some(BindTo::Core) => 1,
            Some(BindTo::Numa) => 2,
            Some(BindTo::None) => 3,
        },
        report_bindings: args.report_bindings,
        tag_output: args.tag_output,
        grace_ms: args.grace().as_millis().min(u32::MAX as u128) as u32,
    };

    let join_deadline = Instant::now() + args.join_timeout();
    let mut barrier: (usize, Vec<(String, String)>) = (0, Vec::new());
    loop {
        let joined_all = agents.iter().all(|a| a.link.is_some());
        let failed = ending.failure.is_some();
        if joined_all || failed {
            stop_listening(&listening, &closing);
        }
        let running = agents.iter().any(|a| a.link.is_some() && !a.done);
        if !running && (joined_all || failed) {
            break;
        }
        let wake = match (ending.give_up_at, joined_all) {
            (Some(t), _) => t,
            (None, false) => join_deadline,
            (None, true) => Instant::now() + Duration::from_secs(3600),
        };
        let event = match rx.recv_timeout(wake.saturating_duration_since(Instant::now())) {
            Ok(e) => e,
            Err(RecvTimeoutError::Timeout) => {
                if ending.give_up_at.is_some() {
                    break;
                }
                if !joined_all {
                    let missing: Vec<&str> = agents
                        .iter()
                        .filter(|a| a.link.is_none())
                        .map(|a| a.share.host.as_str())
                        .collect();
                    let what = format!(
                        "no agent joined for {} within {} s",
                        missing.join(", "),
                        args.join_timeout().as_secs_f64()
                    );
                    ending.fail((what, 1), &agents);
                }
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => break,
        };
        match event {
            Event::Joined {
                peer,
                host,
                index,
                link,
                reader,
            } => {
                let slot = match index {
                    Some(i) => agents
                        .get(i as usize)
                        .filter(|a| a.launched && a.link.is_none())
                        .map(|_| i as usize),
                    None => agents.iter().position(|a| {
                        !a.launched
                            && a.link.is_none()
                            && names_host(&a.share.host, &host, peer.ip())
                    }),
                };
                let Some(i) = slot.filter(|_| ending.failure.is_none()) else {
                    eprintln!(
                        "weftrun: refused agent {host} from {peer}: no host of the job waits for it"
                    );
                    link.shutdown();
                    continue;
                };
                let link = Arc::new(link);
                if link
                    .send(&Msg::Job(spec_for(&agents[i].share)).encode())
                    .is_err()
                {
                    ending.fail(
                        (format!("lost the agent on {host} as it joined"), 1),
                        &agents,
                    );
                    continue;
                }
                agents[i].link = Some(link.clone());
                spawn_reader(reader, i, tx.clone());
                if agents[i].share.first == 0 {
                    forward_stdin(link);
                }
            }
            Event::Frame(i, msg) => match msg {
                Msg::Output { rank, err, line } => {
                    let prefix = if args.tag_output {
                        format!("[{rank}] ")
                    } else {
                        String::new()
                    };
                    node::write_line(err, prefix.as_bytes(), &line);
                }
                Msg::Barrier(pairs) => {
                    barrier.0 += 1;
                    barrier.1.extend(pairs);
                    if barrier.0 == agents.len() {
                        let done = Msg::BarrierDone(std::mem::take(&mut barrier.1)).encode();
                        barrier.0 = 0;
                        for a in &agents {
                            if let Some(l) = &a.link {
                                let _ = l.send(&done);
                            }
                        }
                    }
                }
                Msg::Exited {
                    failure: Some(f),
                    code,
                    ..
                } => ending.fail((f, code), &agents),
                Msg::Exited { failure: None, .. } => {}
                Msg::Left { rank } => {
                    let s = &agents[i].share;
                    if (s.first..s.first + s.count).contains(&(rank as usize)) {
                        let left = Msg::Left { rank }.encode();
                        for (j, a) in agents.iter().enumerate() {
                            if let Some(l) = a.link.as_ref().filter(|_| j != i) {
                                let _ = l.send(&left);
                            }
                        }
                    } else {
                        eprintln!(
                            "weftrun: the agent on {} says rank {rank} left, but it does not run it",
                            s.host
                        );
                    }
                }
                Msg::Abort { rank, code, msg } => {
                    ending.fail(crate::abort_failure(rank as usize, code, &msg), &agents);
                }
                Msg::Done => {
                    agents[i].done = true;
                    if let Some(l) = &agents[i].link {
                        l.shutdown();
                    }
                }
                other => {
                    eprintln!(
                        "weftrun: unexpected message from the agent on {}: {other:?}",
                        agents[i].share.host
                    );
                }
            },
            Event::Lost(i, e) => {
                if !agents[i].done {
                    agents[i].done = true;
                    let s = &agents[i].share;
                    let what = format!(
                        "lost the agent on {} (ranks {}-{}): {e}",
                        s.host,
                        s.first,
                        s.first + s.count - 1
                    );
                    ending.fail((what, 1), &agents);
                }
            }
            Event::LauncherExited(i, status) => {
                if agents[i].link.is_none() {
                    let what = format!(
                        "the agent for {} ended before joining ({status})",
                        agents[i].share.host
                    );
                    ending.fail((what, 1), &agents);
                }
            }
            Event::Signal(s) => {
                send_live(&agents, &Msg::Signal(s));
                ending.fail((format!("stopped by signal {s}"), 128 + s), &agents);
            }
        }
    }
    for a in &agents {
        if let Some(l) = &a.link {
            l.shutdown();
        }
    }
    for mut c in launchers {
        let deadline = Instant::now() + Duration::from_secs(5);
        while matches!(c.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
    }
    Ok(match ending.failure {
        Some((msg, code)) => {
            eprintln!("weftrun: {msg}");
            code
        }
        None => 0,
    })
}

/// How the job ends: its first failure, and when to stop waiting for the
/// agents to report after it.
struct Ending {
    failure: Option<(String, i32)>,
    give_up_at: Option<Instant>,
    /// How long agents get to stop their ranks and report.
    patience: Duration,
}

impl Ending {
    /// Records `what` as the job's failure unless it already failed, and
    /// then tells every live agent to stop its ranks.
    fn fail(&mut self, what: (String, i32), agents: &[Agent]) {
        if self.failure.is_none() {
            self.failure = Some(what);
            send_live(agents, &Msg::Stop);
            self.give_up_at = Some(Instant::now() + self.patience);
        }
    }
}

/// Sends `msg` to every agent that joined and has not finished.
fn send_live(agents: &[Agent], msg: &Msg) {
    let frame = msg.encode();
    for a in agents {
        if let (Some(l), false) = (&a.link, a.done) {
            let _ = l.send(&frame);
        }
    }
}

/// Starts the agent for `host`: directly when it is this host, otherwise
/// through the remote shell. The secret goes on the agent's stdin.
fn launch(
    args: &Args,
    host: &str,
    here: bool,
    target: &str,
    index: usize,
    secret: &Secret,
) -> Result<Child, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find weftrun itself: {e}"))?;
    let exe = exe.to_string_lossy().into_owned();
    let agent_args = [
        exe.clone(),
        "--join".into(),
        target.into(),
        "--agent-index".into(),
        index.to_string(),
        "--join-timeout".into(),
        args.join_timeout().as_secs_f64().to_string(),
    ];
    let mut cmd = if here {
        let mut c = Command::new(&exe);
        c.args(&agent_args[1..]);
        c
    } else {
        let mut words = args.launcher.split_whitespace();
        let program = words.next().ok_or("--launcher is empty")?;
        let mut c = Command::new(program);
        c.args(words)
            .arg(host)
            .args(agent_args.iter().map(|a| shell_quote(a)));
        c
    };
    let mut child = cmd.stdin(Stdio::piped()).spawn().map_err(|e| {
        format!(
            "{}: {e}",
            if here {
                exe.as_str()
            } else {
                args.launcher.as_str()
            }
        )
    })?;
    if let Some(mut stdin) = child.stdin.take() {
        // A launcher that fails at once closes the pipe early; its exit is
        // reported as the agent ending before it joined.
        let _ = stdin.write_all(format!("{}\n", secret.to_hex()).as_bytes());
    }
    Ok(child)
}

/// Quotes a word for the remote shell.
fn shell_quote(word: &str) -> String {
    if !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=,@".contains(&b))
    {
        word.into()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

/// Reports when the launcher process `pid` ends, without reaping it.
fn watch_launcher(pid: u32, index: usize, tx: Sender<Event>) {
    std::thread::spawn(move || {
        // SAFETY: waitid with WNOWAIT only waits for our child to end and
        // fills our local; the child stays a zombie for Child::try_wait.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let rc =
            unsafe { libc::waitid(libc::P_PID, pid, &mut info, libc::WEXITED | libc::WNOWAIT) };
        if rc == 0 {
            // SAFETY: waitid succeeded with WEXITED, so the status field is set.
            let (code, status) = unsafe { (info.si_code, info.si_status()) };
            let raw = if code == libc::CLD_EXITED {
                status << 8
            } else {
                status & 0x7f
            };
            use std::os::unix::process::ExitStatusExt;
            let _ = tx.send(Event::LauncherExited(
                index,
                std::process::ExitStatus::from_raw(raw),
            ));
        }
    });
}

/// Closes the listening socket once no agent is awaited, so that agents of
/// a later job on the same port do not join this one as it ends.
fn stop_listening(listener: &TcpListener, closing: &AtomicBool) {
    if !closing.swap(true, Ordering::AcqRel) {
        // SAFETY: shutdown on a socket we own; it wakes the acceptor's
        // accept, which then returns an error and drops the listener.
        unsafe { libc::shutdown(listener.as_raw_fd(), libc::SHUT_RDWR) };
    }
}

/// Accepts connections; those that pass the handshake and say hello become
/// `Joined` events, the others are refused and logged.
fn spawn_acceptor(
    listener: TcpListener,
    secret: Secret,
    tx: Sender<Event>,
    closing: Arc<AtomicBool>,
) {
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            if closing.load(Ordering::Acquire) {
                return;
            }
            let Ok(stream) = conn else { continue };
            let peer = stream
                .peer_addr()
                .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
            let (secret, tx) = (secret.clone(), tx.clone());
            std::thread::spawn(move || {
                let hello =
                    link::accept(stream, &secret).and_then(|(link, mut reader)| {
                        match reader.recv().and_then(|b| Msg::decode(&b))? {
                            Msg::Hello { host, index } => Ok((link, reader, host, index)),
                            other => Err(format!("sent {other:?} instead of hello")),
                        }
                    });
                match hello {
                    Ok((link, reader, host, index)) => {
                        let _ = tx.send(Event::Joined {
                            peer,
                            host,
                            index,
                            link,
                            reader,
                        });
                    }
                    Err(e) => eprintln!("weftrun: refused a connection from {peer}: {e}"),
                }
            });
        }
    });
}

fn spawn_reader(mut reader: LinkReader, index: usize, tx: Sender<Event>) {
    std::thread::spawn(move || loop {
        match reader.recv().and_then(|b| Msg::decode(&b)) {
            Ok(m) => {
                if tx.send(Event::Frame(index, m)).is_err() {
                    return;
                }
            }
            Err(e) => {
                let _ = tx.send(Event::Lost(index, e));
                return;
            }
        }
    });
}

/// Sends this process's stdin to rank 0's agent.
fn forward_stdin(link: Arc<LinkWriter>) {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = std::io::Read::read(&mut std::io::stdin().lock(), &mut buf).unwrap_or(0);
            if link.send(&Msg::Stdin(buf[..n].to_vec()).encode()).is_err() || n == 0 {
                return;
            }
        }
    });
}

/// The variables passed to the ranks on every node: WEFT_* and RUST_*, and
/// those named by -x (NAME takes this process's value, NAME=VALUE sets it).
fn exported_env(exports: &[String]) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| k.starts_with("WEFT_") || k.starts_with("RUST_"))
        .collect();
    for x in exports {
        match x.split_once('=') {
            Some((k, v)) => env.push((k.into(), v.into())),
            None => {
                if let Ok(v) = std::env::var(x) {
                    env.push((x.clone(), v));
                }
            }
        }
    }
    env
}

/// Whether `host` names this machine.
fn is_this_host(host: &str) -> bool {
    if host == "localhost" || host == hostname() {
        return true;
    }
    match host.parse::<IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => hostname().split('.').next() == Some(host),
    }
}

/// Whether the job's host entry `entry` is the agent that calls itself
/// `host` and connects from `ip`.
fn names_host(entry: &str, host: &str, ip: IpAddr) -> bool {
    let short = |h: &str| h.split('.').next().unwrap_or(h).to_string();
    if entry == host || short(entry) == short(host) {
        return true;
    }
    (entry, 0)
        .to_socket_addrs()
        .map(|mut addrs| addrs.any(|a| a.ip() == ip))
        .unwrap_or(false)
}
