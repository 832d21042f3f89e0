//! OSU-style collective latency:
//! `weftrun -n N osu_coll [--osu] [--raw] [--only NAME]`.
//!
//! For barrier, and for broadcast, reduce and allreduce (sums of f64) and
//! allgather and alltoall (bytes, the size per member) from 8 B to 1 MiB,
//! one of two figures (µs):
//! - by default, the average time of one call over many back-to-back
//!   calls, the largest over the members: what a loop of calls costs,
//!   where a member that is done early (a broadcast's root) may start the
//!   next call while the others finish this one;
//! - with `--osu`, as the OSU micro-benchmarks (`osu_bcast` and the others)
//!   measure: each call timed alone, with a barrier after it that is not
//!   timed (none for barrier itself, whose calls are timed back to back),
//!   the average over the calls and then over the members: how long a call
//!   keeps its caller, from a start together.
//!
//! The same is done by the C program `peers/mpi_coll.c` that measures MPI
//! libraries. Prints one table, or with `--raw` one `name size value` line
//! per figure, the format `compare_coll.sh` reads; with `--only NAME`, the
//! figures of that measure alone (`barrier`, `broadcast`, ...).

use std::time::Instant;

use weft::{ReduceOp, Team};

const MAX: usize = 1 << 20;

fn iters(size: usize) -> usize {
    match size {
        0..=4096 => 5_000,
        4097..=65_536 => 500,
        _ => 200,
    }
}

/// How calls are timed (see the module's doc).
#[derive(Clone, Copy, PartialEq)]
enum Method {
    /// Back to back, the largest average over the members.
    Loop,
    /// One at a time, each followed by an untimed barrier unless it is
    /// one, the average over the members.
    Osu,
}

/// Average seconds per call of `f` over `n` calls after `n / 10` warm-up
/// calls, timed by `method`; `barrier` says that `f` is a barrier.
fn time(
    team: &Team<'_>,
    method: Method,
    barrier: bool,
    n: usize,
    mut f: impl FnMut() -> weft::Result<()>,
) -> weft::Result<f64> {
    for _ in 0..n / 10 {
        f()?;
    }
    team.barrier()?;
    if method == Method::Loop {
        let t = Instant::now();
        for _ in 0..n {
            f()?;
        }
        let mut secs = [t.elapsed().as_secs_f64() / n as f64];
        team.allreduce(&mut secs, ReduceOp::Max)?;
        return Ok(secs[0]);
    }
    let mut total = 0.0;
    for _ in 0..n {
        let t = Instant::now();
        f()?;
        total += t.elapsed().as_secs_f64();
        if !barrier {
            team.barrier()?;
        }
    }
    let mut secs = [total / n as f64];
    team.allreduce(&mut secs, ReduceOp::Sum)?;
    Ok(secs[0] / team.size() as f64)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let raw = args.iter().any(|a| a == "--raw");
    let method = if args.iter().any(|a| a == "--osu") {
        Method::Osu
    } else {
        Method::Loop
    };
    let only = args
        .iter()
        .position(|a| a == "--only")
        .map(|i| args.get(i + 1).ok_or("--only needs the name of a measure"))
        .transpose()?;
    let wanted = |name: &str| only.is_none_or(|o| o == name);
    let world = weft::init()?;
    let team = world.team();
    let p = team.size();
    let mut rows: Vec<(&str, usize, f64)> = Vec::new();
    if wanted("barrier") {
        let secs = time(&team, method, true, 20_000, || team.barrier())?;
        rows.push(("barrier", 0, secs * 1e6));
    }
    let mut vec = vec![1.0f64; MAX / 8];
    let block = vec![1u8; MAX];
    let mut all = vec![0u8; p * MAX];
    let sizes = (3..=20).map(|k| 1usize << k);
    for size in sizes {
        let n = iters(size);
        let v = &mut vec[..size / 8];
        if wanted("broadcast") {
            let s = time(&team, method, false, n, || team.broadcast(0, v))?;
            rows.push(("broadcast", size, s * 1e6));
        }
        if wanted("reduce") {
            let s = time(&team, method, false, n, || team.reduce(0, v, ReduceOp::Sum))?;
            rows.push(("reduce", size, s * 1e6));
        }
        if wanted("allreduce") {
            let s = time(&team, method, false, n, || team.allreduce(v, ReduceOp::Sum))?;
            rows.push(("allreduce", size, s * 1e6));
        }
        if wanted("allgather") {
            let b = &block[..size];
            let s = time(&team, method, false, n, || {
                team.allgather(b, &mut all[..p * size])
            })?;
            rows.push(("allgather", size, s * 1e6));
        }
        if wanted("alltoall") {
            let send = vec![2u8; p * size];
            let mut recv = vec![0u8; p * size];
            let s = time(&team, method, false, n, || team.alltoall(&send, &mut recv))?;
            rows.push(("alltoall", size, s * 1e6));
        }
    }
    if world.rank() == 0 {
        if raw {
            for (name, size, v) in &rows {
                println!("{name} {size} {v:.4}");
            }
        } else {
            let how = match method {
                Method::Loop => "back-to-back calls, the largest over the members",
                Method::Osu => "each call alone, then a barrier; the average over the members",
            };
            println!("# {p} ranks, µs per call ({how})");
            println!("{:<10} {:>8} {:>10}", "collective", "bytes", "µs");
            for (name, size, v) in &rows {
                println!("{name:<10} {size:>8} {v:>10.2}");
            }
        }
    }
    world.finalize()?;
    Ok(())
}
