//! The PMI-1 server weftrun runs for the ranks of one node: one thread per
//! rank's socket, one key-value space and one barrier shared by all. On a
//! multi-node job the node's agent passes each barrier up to the controller
//! (an [`Uplink`]) with the pairs its ranks put, and gets back everyone's.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::Arc;

use crossbeam::channel::Sender;
use parking_lot::{Condvar, Mutex};
use weft::pmi::wire::{Line, KEYLEN_MAX, KVSNAME_MAX, MAX_LINE, VALLEN_MAX};

use crate::node::Event;

/// Completes a barrier across nodes: takes the pairs put on this node since
/// the last barrier and returns those put on every node.
pub trait Uplink: Send + Sync {
    fn exchange(&self, fresh: Vec<(String, String)>) -> Result<Vec<(String, String)>, String>;
}

/// State shared by the node's server threads.
pub struct Kvs {
    name: String,
    /// Ranks in the job.
    size: usize,
    /// Ranks served here.
    local: usize,
    uplink: Option<Box<dyn Uplink>>,
    state: Mutex<KvsState>,
    barrier_done: Condvar,
}

struct KvsState {
    pairs: HashMap<String, String>,
    /// Pairs put since the last barrier, for the uplink.
    fresh: Vec<(String, String)>,
    arrived: usize,
    generation: u64,
    failed: Option<String>,
    /// Ranks that joined (PMI init) and have not finalized.
    joined: HashSet<usize>,
}

impl Kvs {
    /// The key-value space `name` of a job of `size` ranks, `local` of them
    /// served here; `uplink` joins the barriers of the other nodes.
    pub fn new(
        name: String,
        size: usize,
        local: usize,
        uplink: Option<Box<dyn Uplink>>,
    ) -> Arc<Kvs> {
        Arc::new(Kvs {
            name,
            size,
            local,
            uplink,
            state: Mutex::new(KvsState {
                pairs: HashMap::new(),
                fresh: Vec::new(),
                arrived: 0,
                generation: 0,
                failed: None,
                joined: HashSet::new(),
            }),
            barrier_done: Condvar::new(),
        })
    }

    /// Whether `rank` joined the job (PMI init) and has not finalized: if
    /// it has ended, it left the job. Its answer is final by then, since a
    /// rank waits for the reply to both calls.
    pub fn in_job(&self, rank: usize) -> bool {
        self.state.lock().joined.contains(&rank)
    }

    fn put(&self, key: &str, value: &str) {
        let mut s = self.state.lock();
        if self.uplink.is_some() {
            s.fresh.push((key.into(), value.into()));
        }
        s.pairs.insert(key.into(), value.into());
    }

    fn barrier(&self) -> Result<(), String> {
        let mut s = self.state.lock();
        let gen = s.generation;
        s.arrived += 1;
        if s.arrived == self.local {
            s.arrived = 0;
            if let Some(up) = &self.uplink {
                // Every local rank waits in this barrier, so nothing else
                // needs the lock while the other nodes are heard from.
                let fresh = std::mem::take(&mut s.fresh);
                match up.exchange(fresh) {
                    Ok(all) => s.pairs.extend(all),
                    Err(e) => s.failed = Some(e),
                }
            }
            s.generation += 1;
            self.barrier_done.notify_all();
        } else {
            while s.generation == gen {
                self.barrier_done.wait(&mut s);
            }
        }
        s.failed.clone().map_or(Ok(()), Err)
    }
}

/// Serves rank `rank` on `sock` until it closes the connection.
pub fn serve(rank: usize, sock: UnixStream, kvs: Arc<Kvs>, events: Sender<Event>) {
    let Ok(mut out) = sock.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(sock);
    loop {
        let mut text = String::new();
        match Read::by_ref(&mut reader)
            .take(MAX_LINE as u64 + 1)
            .read_line(&mut text)
        {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let reply = match Line::parse(&text) {
            Ok(line) => answer(rank, &line, &kvs, &events),
            Err(e) => {
                eprintln!("weftrun: rank {rank} sent a malformed PMI line: {e}");
                Some(
                    Line::new("error")
                        .with("rc", -1)
                        .with("msg", "malformed_line"),
                )
            }
        };
        if let Some(r) = reply {
            if out.write_all(r.to_text().as_bytes()).is_err() {
                return;
            }
        }
    }
}

fn answer(rank: usize, l: &Line, kvs: &Kvs, events: &Sender<Event>) -> Option<Line> {
    let bad = |cmd: &str, msg: &str| {
        Some(
            Line::new(cmd)
                .with("rc", -1)
                .with("msg", msg.replace(' ', "_")),
        )
    };
    Some(match l.cmd() {
        "init" => {
            kvs.state.lock().joined.insert(rank);
            Line::new("response_to_init")
                .with("pmi_version", 1)
                .with("pmi_subversion", 1)
                .with("rc", 0)
        }
        "get_maxes" => Line::new("maxes")
            .with("kvsname_max", KVSNAME_MAX)
            .with("keylen_max", KEYLEN_MAX)
            .with("vallen_max", VALLEN_MAX)
            .with("rc", 0),
        "get_appnum" => Line::new("appnum").with("appnum", 0).with("rc", 0),
        "get_universe_size" => Line::new("universe_size")
            .with("size", kvs.size)
            .with("rc", 0),
        "get_my_kvsname" => Line::new("my_kvsname")
            .with("kvsname", &kvs.name)
            .with("rc", 0),
        "put" => {
            let (Some(key), Some(value)) = (l.get("key"), l.get("value")) else {
                return bad("put_result", "put needs key and value");
            };
            if key.len() > KEYLEN_MAX || value.len() > VALLEN_MAX {
                return bad("put_result", "key or value too long");
            }
            kvs.put(key, value);
            Line::new("put_result").with("rc", 0).with("msg", "success")
        }
        "get" => {
            let Some(key) = l.get("key") else {
                return bad("get_result", "get needs a key");
            };
            match kvs.state.lock().pairs.get(key) {
                Some(v) => Line::new("get_result")
                    .with("rc", 0)
                    .with("value", v)
                    .with("msg", "success"),
                None => return bad("get_result", &format!("key {key} not found")),
            }
        }
        "barrier_in" => match kvs.barrier() {
            Ok(()) => Line::new("barrier_out").with("rc", 0),
            Err(e) => return bad("barrier_out", &e),
        },
        "finalize" => {
            kvs.state.lock().joined.remove(&rank);
            Line::new("finalize_ack").with("rc", 0)
        }
        "abort" => {
            let code = l.get("exitcode").and_then(|c| c.parse().ok()).unwrap_or(1);
            let msg = l.get("error_msg").unwrap_or("").to_owned();
            let _ = events.send(Event::Abort { rank, code, msg });
            return None;
        }
        other => {
            eprintln!("weftrun: rank {rank} sent unknown PMI command {other:?}");
            return bad(&format!("{other}_result"), "unknown command");
        }
    })
}
