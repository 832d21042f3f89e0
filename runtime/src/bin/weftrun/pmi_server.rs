//! The PMI-1 server weftrun runs for its ranks: one thread per rank's socket,
//! one key-value space and one barrier shared by all.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::Arc;

use crossbeam::channel::Sender;
use parking_lot::{Condvar, Mutex};
use weft::pmi::wire::{Line, KEYLEN_MAX, KVSNAME_MAX, MAX_LINE, VALLEN_MAX};

use crate::Event;

/// State shared by the ranks' server threads.
pub struct Kvs {
    name: String,
    size: usize,
    state: Mutex<KvsState>,
    barrier_done: Condvar,
}

struct KvsState {
    pairs: HashMap<String, String>,
    arrived: usize,
    generation: u64,
}

impl Kvs {
    pub fn new(name: String, size: usize) -> Arc<Kvs> {
        Arc::new(Kvs {
            name,
            size,
            state: Mutex::new(KvsState {
                pairs: HashMap::new(),
                arrived: 0,
                generation: 0,
            }),
            barrier_done: Condvar::new(),
        })
    }

    fn barrier(&self) {
        let mut s = self.state.lock();
        let gen = s.generation;
        s.arrived += 1;
        if s.arrived == self.size {
            s.arrived = 0;
            s.generation += 1;
            self.barrier_done.notify_all();
        } else {
            while s.generation == gen {
                self.barrier_done.wait(&mut s);
            }
        }
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
        "init" => Line::new("response_to_init")
            .with("pmi_version", 1)
            .with("pmi_subversion", 1)
            .with("rc", 0),
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
            kvs.state.lock().pairs.insert(key.into(), value.into());
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
        "barrier_in" => {
            kvs.barrier();
            Line::new("barrier_out").with("rc", 0)
        }
        "finalize" => Line::new("finalize_ack").with("rc", 0),
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
