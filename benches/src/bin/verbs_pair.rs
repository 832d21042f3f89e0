//! Weft's counterparts of perftest's measurements, between two PEs:
//! `weftrun --hosts a:1,b:1 verbs_pair` (`benches/compare_verbs.sh` runs it
//! beside perftest on the same RDMA devices). Each line is
//! `name size value`, measured the way the perftest program it is compared
//! with measures:
//!
//! - `write_lat` (ib_write_lat): a ping-pong of puts, each PE waiting for
//!   the other's put to land before putting back; half the round trip, µs.
//! - `write_bw` (ib_write_bw): a stream of puts, then quiet; MiB/s.
//! - `read_lat` (ib_read_lat): one blocking get at a time; µs.
//! - `read_bw` (ib_read_bw): a stream of gets into symmetric memory, then
//!   quiet; MiB/s.
//! - `atomic_lat` (ib_atomic_lat): one blocking 64-bit fetch-add; µs.
//! - `pingpong` (ibv_rc_pingpong): a tagged send answered by a send of the
//!   same size; the round trip, µs.

use std::time::Instant;

use weft::{Cmp, Source, Tag};

/// Message sizes: perftest's defaults for bandwidth (64 KiB) and the
/// latency sizes given to it by the comparison script.
const LAT_SIZE: usize = 8;
const BW_SIZE: usize = 64 * 1024;
const PINGPONG_SIZE: usize = 4096;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let iters: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(1000);
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

    // write_lat: iteration i puts the value i, which the other side awaits.
    let t = Instant::now();
    for i in 1..=iters as u64 {
        if me == 0 {
            flag.put(peer, 0, &[i])?;
            flag.wait_until(0, Cmp::Eq, i)?;
        } else {
            flag.wait_until(0, Cmp::Eq, i)?;
            flag.put(peer, 0, &[i])?;
        }
    }
    let write_lat = micros(t) / iters as f64 / 2.0;
    world.barrier_all()?;

    let mut rows = vec![("write_lat", LAT_SIZE, write_lat)];
    if me == 0 {
        let data = vec![7u8; BW_SIZE];
        let t = Instant::now();
        for _ in 0..iters {
            buf.put_nbi(peer, 0, &data)?;
        }
        world.quiet()?;
        rows.push(("write_bw", BW_SIZE, mib_per_s(t, BW_SIZE * iters)));

        let mut out = [0u8; LAT_SIZE];
        let t = Instant::now();
        for _ in 0..iters {
            buf.get(peer, 0, &mut out)?;
        }
        rows.push(("read_lat", LAT_SIZE, micros(t) / iters as f64));

        let t = Instant::now();
        for _ in 0..iters {
            buf.get_nbi(peer, 0, &sink, 0, BW_SIZE)?;
        }
        world.quiet()?;
        rows.push(("read_bw", BW_SIZE, mib_per_s(t, BW_SIZE * iters)));

        let t = Instant::now();
        for _ in 0..iters {
            std::hint::black_box(word.fetch_add(peer, 0, 1)?);
        }
        rows.push(("atomic_lat", 8, micros(t) / iters as f64));
    }
    world.barrier_all()?;

    let mut msg = vec![1u8; PINGPONG_SIZE];
    let t = Instant::now();
    for _ in 0..iters {
        if me == 0 {
            world.send(peer, Tag(1), &msg)?;
            world.recv(Source::Rank(peer), Tag(1), &mut msg)?;
        } else {
            world.recv(Source::Rank(peer), Tag(1), &mut msg)?;
            world.send(peer, Tag(1), &msg)?;
        }
    }
    rows.push(("pingpong", PINGPONG_SIZE, micros(t) / iters as f64));
    if me == 0 {
        let total = word.fetch(peer, 0)?;
        if total != iters as u64 {
            return Err(format!("the fetch_adds left {total}, not {iters}").into());
        }
        for (name, size, v) in rows {
            println!("{name} {size} {v:.2}");
        }
    }
    world.finalize()?;
    Ok(())
}

fn micros(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e6
}

fn mib_per_s(t: Instant, bytes: usize) -> f64 {
    bytes as f64 / t.elapsed().as_secs_f64() / (1 << 20) as f64
}
