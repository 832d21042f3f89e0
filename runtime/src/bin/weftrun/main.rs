//! `weftrun`: starts the ranks of a Weft (or any PMI-1) job, on this host or
//! on several through a per-node agent.

mod agent;
mod binding;
mod controller;
mod hosts;
mod link;
mod msg;
mod node;
mod pmi_server;

use std::time::{Duration, Instant};

use clap::Parser;
use crossbeam::channel::unbounded;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

use binding::BindTo;
use node::Event;

/// Start N ranks of a parallel program and serve them the PMI-1
/// process-management protocol (PMI_FD, PMI_RANK, PMI_SIZE), as MPICH's
/// mpiexec does.
///
/// stdin goes to rank 0; every rank's stdout and stderr come back line by
/// line. SIGINT and SIGTERM are passed on to the ranks. When a rank exits
/// with a non-zero status or is killed by a signal, weftrun stops the others
/// (SIGTERM, then SIGKILL after the grace period), names the rank, and exits
/// with that rank's status (128 + signal for a signal).
///
/// With --hosts or --hostfile the ranks run on several nodes: weftrun is the
/// job's controller and starts an agent on each node (directly on this one,
/// through --launcher on the others), which serves PMI to its ranks and joins
/// the controller over TCP. Every connection proves it holds the job's secret;
/// others are refused and logged.
#[derive(Parser, Debug)]
#[command(
    name = "weftrun",
    version,
    after_help = "Examples:\n  weftrun -n 4 --tag-output ./jacobi 256\n  \
                  weftrun --hosts node1:2,node2:2 ./jacobi 256\n  \
                  weftrun --hosts node1:2,node2:2 --launcher manual --port 7000 \
                  --secret-file job.key ./jacobi 256\n    (then on node2: weftrun --join node1:7000 --secret-file job.key)"
)]
pub struct Args {
    /// Number of ranks to start (with --hosts: at most their slots; default
    /// all of them).
    #[arg(short = 'n', long = "np", value_name = "N", value_parser = clap::value_parser!(u32).range(1..=4096))]
    np: Option<u32>,
    /// Run on these hosts, each with a number of ranks: "a:2,b:2".
    #[arg(long, value_name = "HOST[:N],...", conflicts_with = "hostfile")]
    hosts: Option<String>,
    /// Read the hosts from a file: one per line as "name", "name:N" or
    /// "name slots=N"; '#' starts a comment.
    #[arg(long, value_name = "PATH")]
    hostfile: Option<String>,
    /// How agents on other hosts are started: a remote-shell command run as
    /// "CMD HOST weftrun --join ..." (e.g. "ssh -p 2222"), or "manual" to
    /// start them by hand with --join.
    #[arg(long, value_name = "CMD|manual", default_value = "ssh")]
    launcher: String,
    /// The TCP port the controller listens on for its agents (0: any).
    #[arg(long, value_name = "PORT", default_value_t = 0)]
    port: u16,
    /// The address agents connect to (default: this host's name).
    #[arg(long, value_name = "HOST")]
    address: Option<String>,
    /// The job's secret: read from this file (mode 0600) when it exists,
    /// otherwise generated and written to it. Agents started with --join
    /// need the same file.
    #[arg(long, value_name = "PATH")]
    secret_file: Option<String>,
    /// Run as the agent of one node of a job whose controller listens at
    /// HOST:PORT (with --secret-file).
    #[arg(long, value_name = "HOST:PORT", conflicts_with_all = ["hosts", "hostfile", "np"])]
    join: Option<String>,
    /// Seconds the controller waits for every agent to join, and an agent
    /// keeps trying to reach its controller.
    #[arg(long, value_name = "SECONDS", default_value_t = 60.0)]
    join_timeout: f64,
    /// Pass this environment variable (NAME, or NAME=VALUE) to the ranks on
    /// other hosts; WEFT_* and RUST_* variables are always passed.
    #[arg(short = 'x', value_name = "NAME[=VALUE]")]
    export: Vec<String>,
    /// With --join: the host this agent is in the controller's host list
    /// (default: this host's name; the address it connects from also counts).
    #[arg(long, value_name = "NAME", requires = "join")]
    as_host: Option<String>,
    /// The agent's index in the job (set by the controller when it starts
    /// the agent; the secret then comes on stdin).
    #[arg(long, hide = true, requires = "join")]
    agent_index: Option<u32>,
    /// Prefix every output line with its rank in brackets.
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
        required_unless_present = "join",
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "PROGRAM [ARGS]..."
    )]
    command: Vec<String>,
}

impl Args {
    fn grace(&self) -> Duration {
        Duration::from_secs_f64(self.grace.clamp(0.0, 3600.0))
    }

    fn join_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.join_timeout.clamp(0.0, 86400.0))
    }
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

fn run(args: &Args) -> Result<i32, String> {
    if let Some(addr) = &args.join {
        return agent::run(args, addr);
    }
    if let Some(hosts) = hosts::from_options(args.hosts.as_deref(), args.hostfile.as_deref())? {
        return controller::run(args, &hosts);
    }
    let Some(np) = args.np else {
        return Err("say how many ranks to start with -n N (or where with --hosts)".into());
    };
    run_here(args, np as usize)
}

/// A name for a new job, unique among the jobs on this host.
pub fn job_name() -> String {
    format!(
        "w{}x{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos())
    )
}

/// Passes SIGINT, SIGTERM and SIGHUP to `tx` as events.
pub fn forward_signals<T: Send + 'static>(
    tx: crossbeam::channel::Sender<T>,
    wrap: fn(i32) -> T,
) -> Result<(), String> {
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])
        .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    std::thread::spawn(move || {
        for s in signals.forever() {
            if tx.send(wrap(s)).is_err() {
                return;
            }
        }
    });
    Ok(())
}

/// Runs all `n` ranks on this host.
fn run_here(args: &Args, n: usize) -> Result<i32, String> {
    let job = job_name();
    let (tx, rx) = unbounded::<Event>();
    let kvs = pmi_server::Kvs::new(job.clone(), n, n, None);
    forward_signals(tx.clone(), Event::Signal)?;
    let spec = node::Spec {
        size: n,
        first: 0,
        count: n,
        command: &args.command,
        env: &[],
        cwd: None,
        bind: args.bind_to,
        report_bindings: args.report_bindings,
        die_with_parent: false,
        host: None,
        exits: None,
    };
    let output = node::Output::Local {
        tag: args.tag_output,
    };
    let (mut ranks, start_failure) = node::start(&spec, &kvs, &tx, &output);
    if let Some(mut stdin) = ranks.stdin.take() {
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut std::io::stdin().lock(), &mut stdin);
        });
    }
    let grace = args.grace();
    let mut failure: Option<(String, i32)> = None;
    let mut kill_at: Option<Instant> = None;
    if let Some((rank, msg)) = start_failure {
        failure = Some((format!("cannot start rank {rank}: {msg}"), 127));
        kill_at = Some(ranks.stop(grace));
    }
    while !ranks.all_done() {
        let Some(event) = node::next_event(&rx, &mut kill_at, &ranks) else {
            break;
        };
        match event {
            Event::Exited { pid, status } => {
                let Some(i) = ranks.reaped(pid) else {
                    continue;
                };
                if failure.is_none() {
                    failure = node::describe_exit(ranks.ranks[i].rank, pid, None, status);
                    if failure.is_some() {
                        kill_at = Some(ranks.stop(grace));
                    }
                }
            }
            Event::Abort { rank, code, msg } => {
                if failure.is_none() {
                    failure = Some(abort_failure(rank, code, &msg));
                    kill_at = Some(ranks.stop(grace));
                }
            }
            Event::Signal(s) => {
                ranks.signal(s);
                if failure.is_none() {
                    failure = Some((format!("stopped by signal {s}"), 128 + s));
                    kill_at = Some(Instant::now() + grace);
                }
            }
            Event::Link(_) | Event::LinkLost(_) => {}
        }
    }
    ranks.finish_output();
    node::remove_leftover_segments(&job);
    Ok(match failure {
        Some((msg, code)) => {
            eprintln!("weftrun: {msg}");
            code
        }
        None => 0,
    })
}

/// The job's failure when `rank` called PMI abort.
pub fn abort_failure(rank: usize, code: i32, msg: &str) -> (String, i32) {
    let code = if code == 0 { 1 } else { code };
    (
        format!("rank {rank} called abort with exit code {code}: {msg}"),
        code,
    )
}
