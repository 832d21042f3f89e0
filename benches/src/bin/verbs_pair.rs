//! Weft's counterparts of perftest's measurements, between two PEs:
//! `weftrun --hosts a:1,b:1 verbs_pair TEST [ITERS]`
//! (`benches/compare_verbs.sh` runs each right after the perftest program
//! it is compared with, on the same RDMA devices). PE 0 prints one line,
//! `TEST size median mean` for a latency (µs) or `TEST size MiB/s` for a
//! bandwidth, measured the way that perftest program measures:
//!
//! - `write_lat` (ib_write_lat): a ping-pong of puts, each PE waiting for
//!   the other's put to land before putting back; half of each round trip.
//! - `write_bw` (ib_write_bw): a stream of puts, then quiet.
//! - `read_lat` (ib_read_lat): one blocking get at a time.
//! - `read_bw` (ib_read_bw): a stream of gets into symmetric memory, then
//!   quiet.
//! - `atomic_lat` (ib_atomic_lat): one blocking 64-bit fetch-add at a time.
//! - `pingpong` (ibv_rc_pingpong): a tagged send of 4 KiB answered by a
//!   send of the same size; the round trip.
//! - `send_lat` (ib_send_lat): the same exchange; half of each round trip.
//!   `ib_send_lat` reports the median of its iterations, where
//!   `ibv_rc_pingpong` reports only their mean.
//!
//! Latencies are timed one iteration at a time, as perftest times them, so
//! that the median (perftest's "typical") can be compared: under emulation
//! a few iterations take 10-20 times the usual time, and the mean follows
//! them.

use std::time::Instant;

use weft::{Cmp, Source, Tag};

/// Message sizes: perftest's defaults for bandwidth (64 KiB) and the
/// latency sizes given to it by the comparison script.
const LAT_SIZE: usize = 8;
const BW_SIZE: usize = 64 * 1024;
const PINGPONG_SIZE: usize = 4096;

const TESTS: [&str; 7] = [
    "write_lat",
    "write_bw",
    "read_lat",
    "read_bw",
    "atomic_lat",
    "pingpong",
    "send_lat",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let test = args.next().unwrap_or_default();
    if !TESTS.contains(&test.as_str()) {
        return Err(format!("usage: verbs_pair {{{}}} [ITERS]", TESTS.join("|")).into());
    }
    let iters: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(1000);
    if iters == 0 {
        return Err("ITERS must be at least 1".into());
    }
    let world = weft::init()?;
    if world.size() != 2 {
        return Err("run with exactly 2 ranks".into());
    }
    let (me, peer) = (world.rank(), 1 - world.rank());
    let flag = world.alloc::<u64>(1)?;
    let buf = world.alloc::<u8>(BW_SIZE)?;
    let sink = world.alloc::<u8>(BW_SIZE)?;
    let word = world.alloc::<u64>(1)?;
    world.barrier_all()?;

    let mut times = Vec::with_capacity(iters);
    let line = match test.as_str() {
        "write_lat" => {
            // Iteration i puts the value i, which the other side awaits.
            for i in 1..=iters as u64 {
                let t = Instant::now();
                if me == 0 {
                    flag.put(peer, 0, &[i])?;
                    flag.wait_until(0, Cmp::Eq, i)?;
                } else {
                    flag.wait_until(0, Cmp::Eq, i)?;
                    flag.put(peer, 0, &[i])?;
                }
                times.push(micros(t) / 2.0);
            }
            Some(latency(&test, LAT_SIZE, &mut times))
        }
        "write_bw" if me == 0 => {
            let data = vec![7u8; BW_SIZE];
            let t = Instant::now();
            for _ in 0..iters {
                buf.put_nbi(peer, 0, &data)?;
            }
            world.quiet()?;
            Some(bandwidth(&test, t, iters))
        }
        "read_lat" if me == 0 => {
            let mut out = [0u8; LAT_SIZE];
            for _ in 0..iters {
                let t = Instant::now();
                buf.get(peer, 0, &mut out)?;
                times.push(micros(t));
            }
            Some(latency(&test, LAT_SIZE, &mut times))
        }
        "read_bw" if me == 0 => {
            let t = Instant::now();
            for _ in 0..iters {
                buf.get_nbi(peer, 0, &sink, 0, BW_SIZE)?;
            }
            world.quiet()?;
            Some(bandwidth(&test, t, iters))
        }
        "atomic_lat" if me == 0 => {
            for _ in 0..iters {
                let t = Instant::now();
                std::hint::black_box(word.fetch_add(peer, 0, 1)?);
                times.push(micros(t));
            }
            let total = word.fetch(peer, 0)?;
            if total != iters as u64 {
                return Err(format!("the fetch_adds left {total}, not {iters}").into());
            }
            Some(latency(&test, 8, &mut times))
        }
        "pingpong" | "send_lat" => {
            // The round trip, or half of it.
            let divisor = if test == "pingpong" { 1.0 } else { 2.0 };
            let mut msg = vec![1u8; PINGPONG_SIZE];
            for _ in 0..iters {
                let t = Instant::now();
                if me == 0 {
                    world.send(peer, Tag(1), &msg)?;
                    world.recv(Source::Rank(peer), Tag(1), &mut msg)?;
                } else {
                    world.recv(Source::Rank(peer), Tag(1), &mut msg)?;
                    world.send(peer, Tag(1), &msg)?;
                }
                times.push(micros(t) / divisor);
            }
            Some(latency(&test, PINGPONG_SIZE, &mut times))
        }
        // The passive side of a one-sided test only waits in the barrier.
        _ => None,
    };
    world.barrier_all()?;
    if me == 0 {
        if let Some(line) = line {
            println!("{line}");
        }
    }
    world.finalize()?;
    Ok(())
}

fn micros(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e6
}

/// `name size median mean`, in µs.
fn latency(name: &str, size: usize, times: &mut [f64]) -> String {
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let mean = times.iter().sum::<f64>() / times.len() as f64;
    format!("{name} {size} {median:.2} {mean:.2}")
}

/// `name size MiB/s` for `iters` messages of [`BW_SIZE`] bytes since `t`.
fn bandwidth(name: &str, t: Instant, iters: usize) -> String {
    let mib = (BW_SIZE * iters) as f64 / (1 << 20) as f64;
    format!("{name} {BW_SIZE} {:.2}", mib / t.elapsed().as_secs_f64())
}
