//! The agent of one node of a multi-node job: joins the controller, starts
//! the node's ranks, serves them PMI (passing barriers up), forwards their
//! output and exits, and obeys the controller's stop and signals. A lost
//! controller stops the ranks: none outlives its job.

use std::io::Write;
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam::channel::{bounded, unbounded, Receiver, Sender};
use parking_lot::Mutex;
use weft_transport::exits::ExitBoard;

use crate::link::{self, JoinError, LinkReader, LinkWriter, Secret};
use crate::msg::{JobSpec, Msg};
use crate::node::{self, Event};
use crate::pmi_server::{Kvs, Uplink};
use crate::{binding::BindTo, Args};

/// Runs the agent for the controller at `addr`; the exit code.
pub fn run(args: &Args, addr: &str) -> Result<i32, String> {
    let secret = match (&args.secret_file, args.agent_index) {
        (Some(path), _) => Secret::read_file(path)?,
        (None, Some(_)) => {
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .map_err(|e| format!("cannot read the job secret from stdin: {e}"))?;
            Secret::from_hex(&line)?
        }
        (None, None) => return Err("--join needs the job's --secret-file".into()),
    };
    let host = args.as_host.clone().unwrap_or_else(hostname);
    let (link, mut reader) = connect(addr, &secret, args.join_timeout())?;
    let link = Arc::new(link);
    link.send(
        &Msg::Hello {
            host: host.clone(),
            index: args.agent_index,
        }
        .encode(),
    )?;
    let spec = match reader.recv().map(|b| Msg::decode(&b)) {
        Ok(Ok(Msg::Job(spec))) => spec,
        Ok(Ok(other)) => return Err(format!("the controller sent {other:?} before the job")),
        Ok(Err(e)) => return Err(format!("the controller sent a bad job: {e}")),
        Err(e) => {
            return Err(format!(
                "the controller at {addr} did not give this host ({host}) a part of the job: {e}"
            ))
        }
    };
    if spec.command.is_empty()
        || spec.count == 0
        || spec
            .first
            .checked_add(spec.count)
            .is_none_or(|end| end > spec.size)
    {
        return Err(format!("the controller sent an impossible job: {spec:?}"));
    }
    let (tx, rx) = unbounded::<Event>();
    let (barrier_tx, barrier_rx) = bounded(1);
    std::thread::spawn({
        let tx = tx.clone();
        move || read_link(reader, tx, barrier_tx)
    });
    crate::forward_signals(tx.clone(), Event::Signal)?;
    let uplink = LinkUplink {
        link: link.clone(),
        done: Mutex::new(barrier_rx),
    };
    let kvs = Kvs::new(
        spec.job.clone(),
        spec.size as usize,
        spec.count as usize,
        Some(Box::new(uplink)),
    );
    let code = supervise(&spec, &host, &kvs, &link, &tx, &rx);
    node::remove_leftover_segments(&spec.job);
    Ok(code)
}

/// The longest pause between two attempts to reach the controller. An agent
/// started by hand is often up before its controller listens; a refused
/// connection costs next to nothing, and every pause is time the job waits.
const MAX_RETRY_PAUSE: Duration = Duration::from_millis(200);

/// Connects to the controller, retrying until `timeout`, and authenticates.
fn connect(
    addr: &str,
    secret: &Secret,
    timeout: Duration,
) -> Result<(LinkWriter, LinkReader), String> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(50);
    loop {
        let attempt = addr
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve {addr}: {e}"))
            .and_then(|mut addrs| addrs.next().ok_or_else(|| format!("{addr} has no address")))
            .and_then(|a| {
                TcpStream::connect_timeout(&a, Duration::from_secs(5)).map_err(|e| e.to_string())
            });
        let attempt = attempt.and_then(|s| match link::join(s, secret) {
            Ok(link) => Ok(Ok(link)),
            Err(JoinError::Closed) => Err("the controller closed the connection".into()),
            Err(JoinError::Failed(e)) => Ok(Err(e)),
        });
        match attempt {
            Ok(joined) => {
                return joined.map_err(|e| format!("cannot join the controller at {addr}: {e}"))
            }
            Err(e) if Instant::now() >= deadline => {
                return Err(format!("cannot reach the controller at {addr}: {e}"))
            }
            Err(_) => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(MAX_RETRY_PAUSE);
            }
        }
    }
}

/// Passes the controller's frames on: barrier completions to the waiting
/// barrier, the rest to the supervising loop.
fn read_link(mut reader: LinkReader, tx: Sender<Event>, barrier: Sender<Vec<(String, String)>>) {
    loop {
        let msg = match reader.recv().and_then(|b| Msg::decode(&b)) {
            Ok(m) => m,
            Err(e) => {
                let _ = tx.send(Event::LinkLost(e));
                return;
            }
        };
        let sent = match msg {
            Msg::BarrierDone(pairs) => barrier.send(pairs).is_ok(),
            other => tx.send(Event::Link(other)).is_ok(),
        };
        if !sent {
            return;
        }
    }
}

/// Barriers across nodes through the controller.
struct LinkUplink {
    link: Arc<LinkWriter>,
    done: Mutex<Receiver<Vec<(String, String)>>>,
}

impl Uplink for LinkUplink {
    fn exchange(&self, fresh: Vec<(String, String)>) -> Result<Vec<(String, String)>, String> {
        self.link
            .send(&Msg::Barrier(fresh).encode())
            .map_err(|e| format!("lost the controller: {e}"))?;
        self.done
            .lock()
            .recv()
            .map_err(|_| "lost the controller during a barrier".to_string())
    }
}

fn bind_of(code: u8) -> Option<BindTo> {
    match code {
        1 => Some(BindTo::Core),
        2 => Some(BindTo::Numa),
        3 => Some(BindTo::None),
        _ => None,
    }
}

/// Starts the ranks and runs until they have all ended; the exit code.
fn supervise(
    spec: &JobSpec,
    host: &str,
    kvs: &Arc<Kvs>,
    link: &Arc<LinkWriter>,
    tx: &Sender<Event>,
    rx: &Receiver<Event>,
) -> i32 {
    let cwd = std::path::Path::new(&spec.cwd)
        .is_dir()
        .then_some(spec.cwd.as_str());
    // The ranks here read on it which ranks of other nodes left the job, as
    // the controller passes on what their agents report.
    let board = ExitBoard::create(spec.size as usize)
        .map_err(|e| {
            eprintln!(
                "weftrun agent on {host}: no exit board ({e}); ranks here will find \
                 ranks of other nodes gone by the network alone"
            )
        })
        .ok();
    let node_spec = node::Spec {
        size: spec.size as usize,
        first: spec.first as usize,
        count: spec.count as usize,
        command: &spec.command,
        env: &spec.env,
        cwd,
        bind: bind_of(spec.bind),
        report_bindings: spec.report_bindings,
        die_with_parent: true,
        host: Some(host),
        exits: board.as_ref().map(ExitBoard::fd),
    };
    let (mut ranks, start_failure) =
        node::start(&node_spec, kvs, tx, &node::Output::Link(link.clone()));
    let send = |m: Msg| {
        let _ = link.send(&m.encode());
    };
    if let Some((rank, msg)) = start_failure {
        send(Msg::Exited {
            rank: rank as u32,
            code: 127,
            failure: Some(format!("cannot start rank {rank} on {host}: {msg}")),
        });
    }
    let mut stdin = ranks.stdin.take();
    let grace = Duration::from_millis(u64::from(spec.grace_ms));
    let mut kill_at: Option<Instant> = None;
    let mut lost = false;
    while !ranks.all_done() {
        let Some(event) = node::next_event(rx, &mut kill_at, &ranks) else {
            break;
        };
        match event {
            Event::Exited { pid, status } => {
                let Some(i) = ranks.reaped(pid) else {
                    continue;
                };
                let rank = ranks.ranks[i].rank;
                if kvs.in_job(rank) {
                    send(Msg::Left { rank: rank as u32 });
                }
                let failure = node::describe_exit(rank, pid, Some(host), status);
                send(Msg::Exited {
                    rank: rank as u32,
                    code: failure.as_ref().map_or(0, |f| f.1),
                    failure: failure.map(|f| f.0),
                });
            }
            Event::Abort { rank, code, msg } => send(Msg::Abort {
                rank: rank as u32,
                code,
                msg,
            }),
            Event::Link(Msg::Left { rank }) => {
                if let Some(b) = &board {
                    b.mark(rank as usize);
                }
            }
            Event::Signal(s) => {
                ranks.signal(s);
                kill_at.get_or_insert(Instant::now() + grace);
            }
            Event::Link(Msg::Stop) => {
                kill_at.get_or_insert(ranks.stop(grace));
            }
            Event::Link(Msg::Signal(s)) => ranks.signal(s),
            Event::Link(Msg::Stdin(bytes)) => {
                if bytes.is_empty() {
                    stdin = None;
                } else if let Some(w) = stdin.as_mut() {
                    if w.write_all(&bytes).is_err() {
                        stdin = None;
                    }
                }
            }
            Event::Link(other) => {
                eprintln!(
                    "weftrun agent on {host}: unexpected message from the controller: {other:?}"
                );
            }
            Event::LinkLost(e) => {
                if !lost {
                    eprintln!(
                        "weftrun agent on {host}: lost the controller ({e}); stopping the ranks"
                    );
                    lost = true;
                    kill_at = Some(ranks.stop(grace));
                }
            }
        }
    }
    ranks.finish_output();
    if lost {
        return 1;
    }
    send(Msg::Done);
    // Wait for the controller to close the link, so that nothing it has not
    // read yet is cut off by our exit.
    let deadline = Instant::now() + Duration::from_secs(10);
    while let Ok(e) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        if matches!(e, Event::LinkLost(_)) {
            break;
        }
    }
    0
}

/// This host's name.
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `len - 1` bytes into our buffer,
    // which stays NUL-terminated.
    unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len() - 1) };
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}
