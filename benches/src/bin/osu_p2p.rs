//! OSU-style two-sided benchmark: `weftrun -n 2 osu_p2p [--raw]`.
//!
//! Between PE 0 and PE 1: ping-pong latency (half the round trip) from 0 B to
//! 4 MiB, uni- and bi-directional bandwidth with a window of 64 messages
//! from 1 B to 4 MiB, the message rate of 8-byte messages, and the round
//! trip of an 8-byte active message with an 8-byte reply. Each message of a
//! window lands in its own part of the receive buffer (the same is done by
//! the C program `peers/mpi_p2p.c` that measures MPI libraries). Prints one
//! table, or with `--raw` one `name size value` line per figure (µs for
//! latency, MB/s for bandwidth, messages/s for rate), the format
//! `compare_p2p.sh` reads.

use std::time::Instant;

use weft::{Handlers, Source, Tag, World};

const MAX: usize = 4 << 20;
const WINDOW: usize = 64;

fn lat_iters(size: usize) -> usize {
    match size {
        0..=8192 => 20_000,
        8193..=262_144 => 2_000,
        _ => 200,
    }
}

fn bw_iters(size: usize) -> usize {
    match size {
        0..=8192 => 400,
        8193..=262_144 => 60,
        _ => 10,
    }
}

fn sizes(from: usize) -> impl Iterator<Item = usize> {
    std::iter::once(0)
        .filter(move |_| from == 0)
        .chain((0..).map(|k| 1usize << k).take_while(|&s| s <= MAX))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let raw = std::env::args().any(|a| a == "--raw");
    let mut handlers = Handlers::new();
    let echo = handlers.register("echo", |ctx, _header, payload| ctx.reply(payload));
    let world = weft::init_with(handlers)?;
    if world.size() != 2 {
        return Err("run with exactly 2 ranks: weftrun -n 2 osu_p2p".into());
    }
    let me = world.rank();
    let peer = 1 - me;
    let out = vec![7u8; MAX];
    let mut inb = vec![0u8; MAX];
    let mut rows: Vec<(&str, usize, f64)> = Vec::new();

    for size in sizes(0) {
        let iters = lat_iters(size);
        let warm = iters / 10;
        let mut t = Instant::now();
        for i in 0..iters + warm {
            if i == warm {
                t = Instant::now();
            }
            if me == 0 {
                world.send(peer, Tag(1), &out[..size])?;
                world.recv(peer, Tag(1), &mut inb[..size])?;
            } else {
                world.recv(peer, Tag(1), &mut inb[..size])?;
                world.send(peer, Tag(1), &out[..size])?;
            }
        }
        let us = t.elapsed().as_secs_f64() * 1e6 / (2 * iters) as f64;
        rows.push(("latency", size, us));
    }

    let mut window = vec![0u8; WINDOW * MAX];
    for size in sizes(1) {
        let mbs = bandwidth(&world, size, &out, &mut window, false)?;
        rows.push(("bandwidth", size, mbs));
        let mbs = bandwidth(&world, size, &out, &mut window, true)?;
        rows.push(("bi_bandwidth", size, mbs));
    }
    let rate = bandwidth(&world, 8, &out, &mut window, false)? * 1e6 / 8.0;
    rows.push(("message_rate", 8, rate));

    world.barrier_all()?;
    if me == 0 {
        let iters = 20_000;
        let payload = 42u64.to_le_bytes();
        let mut t = Instant::now();
        for i in 0..iters + 1000 {
            if i == 1000 {
                t = Instant::now();
            }
            let reply = world.am_request(peer, echo, &[], &payload)?.wait()?;
            assert_eq!(reply, payload);
        }
        rows.push((
            "am_round_trip",
            8,
            t.elapsed().as_secs_f64() * 1e6 / iters as f64,
        ));
    }
    world.barrier_all()?;

    if me == 0 {
        print(&rows, raw);
    }
    world.finalize()?;
    Ok(())
}

/// MB/s of `size`-byte messages in windows of [`WINDOW`], one way from PE 0
/// to PE 1 (each window acknowledged), or both ways at once.
fn bandwidth(
    world: &World,
    size: usize,
    out: &[u8],
    window: &mut [u8],
    both: bool,
) -> Result<f64, weft::Error> {
    let me = world.rank();
    let peer = 1 - me;
    let iters = bw_iters(size);
    let warm = (iters / 10).max(1);
    let out = &out[..size];
    world.barrier_all()?;
    let mut t = Instant::now();
    for i in 0..iters + warm {
        if i == warm {
            t = Instant::now();
        }
        let slots = window[..WINDOW * size].chunks_exact_mut(size.max(1));
        world.scope(|s| {
            if me == 0 || both {
                for _ in 0..WINDOW {
                    s.isend(peer, Tag(2), out)?;
                }
            }
            if me == 1 || both {
                for slot in slots {
                    s.irecv(Source::Rank(peer), Tag(2), slot)?;
                }
            }
            Ok(())
        })?;
        if !both {
            if me == 0 {
                world.recv(peer, Tag(3), &mut [0u8; 4])?;
            } else {
                world.send(peer, Tag(3), &[0u8; 4])?;
            }
        }
    }
    let secs = t.elapsed().as_secs_f64();
    let bytes = (size * WINDOW * iters * if both { 2 } else { 1 }) as f64;
    Ok(bytes / secs / 1e6)
}

fn print(rows: &[(&str, usize, f64)], raw: bool) {
    if raw {
        for (name, size, v) in rows {
            println!("{name} {size} {v:.4}");
        }
        return;
    }
    println!("# Weft two-sided, 2 PEs, window {WINDOW}");
    println!("{:<14} {:>9} {:>14}", "measure", "size", "value");
    for (name, size, v) in rows {
        let unit = match *name {
            "latency" | "am_round_trip" => "us",
            "message_rate" => "msg/s",
            _ => "MB/s",
        };
        println!("{name:<14} {size:>9} {v:>11.2} {unit}");
    }
}
