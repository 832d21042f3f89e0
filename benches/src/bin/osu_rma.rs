//! OSU-style one-sided benchmark: `weftrun -n 2 osu_rma [--raw]`.
//!
//! PE 0 targets PE 1: 8-byte put+quiet, get and fetch_add latency, and put
//! and get bandwidth from 8 B to 4 MiB. As physical references, measured in
//! the same run: this machine's memcpy bandwidth at each size (right after
//! the put and get of that size, from the same source buffer, with the same
//! untimed first round and repetitions) and the round trip of a cache line
//! between two cores. Prints a table with Weft's
//! figures as ratios to them, or with `--raw` one `name size value` line per
//! figure (ns for latency, MB/s for bandwidth), the format the comparison
//! script reads.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

const MAX: usize = 4 << 20;
const LAT_ITERS: u32 = 200_000;

fn reps(size: usize) -> usize {
    if size >= 1 << 20 {
        200
    } else {
        2000
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let raw = std::env::args().any(|a| a == "--raw");
    let world = weft::init()?;
    if world.size() != 2 {
        return Err("run with exactly 2 ranks: weftrun -n 2 osu_rma".into());
    }
    let buf = world.alloc::<u8>(MAX)?;
    let word = world.alloc::<u64>(8)?;
    world.barrier_all()?;
    if world.rank() == 0 {
        let mut rows: Vec<(&str, usize, f64)> = Vec::new();
        let v = [1u8; 8];
        let mut out = [0u8; 8];
        for _ in 0..1000 {
            buf.put(1, 0, &v)?;
            world.quiet()?;
        }
        let t = Instant::now();
        for _ in 0..LAT_ITERS {
            buf.put(1, 0, &v)?;
            world.quiet()?;
        }
        rows.push(("put_latency", 8, ns_per(t, LAT_ITERS as usize)));
        let t = Instant::now();
        for _ in 0..LAT_ITERS {
            buf.get(1, 0, &mut out)?;
        }
        rows.push(("get_latency", 8, ns_per(t, LAT_ITERS as usize)));
        let t = Instant::now();
        for _ in 0..LAT_ITERS {
            std::hint::black_box(word.fetch_add(1, 0, 1)?);
        }
        rows.push(("fetch_add_latency", 8, ns_per(t, LAT_ITERS as usize)));
        let mut local_backing = vec![1u8; MAX + PAGE];
        let local = page_aligned(&mut local_backing);
        let mut private_backing = vec![2u8; MAX + PAGE];
        let private = page_aligned(&mut private_backing);
        let mut memcpy = Vec::new();
        let mut size = 8;
        while size <= MAX {
            let n = reps(size);
            buf.put(1, 0, &local[..size])?;
            world.quiet()?;
            let t = Instant::now();
            for _ in 0..n {
                buf.put(1, 0, &local[..size])?;
            }
            world.quiet()?;
            rows.push(("put_bandwidth", size, mb_per_s(t, size * n)));
            buf.get(1, 0, &mut local[..size])?;
            let t = Instant::now();
            for _ in 0..n {
                buf.get(1, 0, &mut local[..size])?;
            }
            rows.push(("get_bandwidth", size, mb_per_s(t, size * n)));
            memcpy.push((
                size,
                memcpy_bandwidth(&local[..size], &mut private[..size], n),
            ));
            size *= 2;
        }
        let line = cache_line_round_trip();
        if raw {
            for (name, size, v) in &rows {
                println!("{name} {size} {v:.2}");
            }
            for (size, v) in &memcpy {
                println!("memcpy_bandwidth {size} {v:.1}");
            }
            println!("cache_line_round_trip 64 {line:.2}");
        } else {
            print_table(&rows, &memcpy, line);
        }
    }
    world.finalize()?;
    Ok(())
}

/// Page size for the local buffers, which are page-aligned as OSU's
/// benchmarks align theirs: glibc's `rep movsb` copies of a few KiB run
/// several times slower when source and destination are 16 bytes apart in
/// their pages, which would measure the buffers' luck, not the transport.
const PAGE: usize = 4096;

/// The page-aligned `MAX` bytes inside `backing` (`MAX + PAGE` long).
fn page_aligned(backing: &mut [u8]) -> &mut [u8] {
    let skip = backing.as_ptr().align_offset(PAGE);
    &mut backing[skip..skip + MAX]
}

fn ns_per(t: Instant, n: usize) -> f64 {
    t.elapsed().as_nanos() as f64 / n as f64
}

fn mb_per_s(t: Instant, bytes: usize) -> f64 {
    bytes as f64 / t.elapsed().as_nanos() as f64 * 1e3
}

/// memcpy from `src` into the private buffer `dst` (the same size), `n`
/// times after one untimed round, in MB/s: what a put of that size would
/// reach if the target's heap were this process's own memory.
fn memcpy_bandwidth(src: &[u8], dst: &mut [u8], n: usize) -> f64 {
    dst.copy_from_slice(src);
    let t = Instant::now();
    for _ in 0..n {
        dst.copy_from_slice(std::hint::black_box(src));
        std::hint::black_box(&mut *dst);
    }
    mb_per_s(t, src.len() * n)
}

/// Round trip of one cache line between two threads on two different CPUs
/// (ping-pong on an atomic), in ns; NaN on a machine with one CPU.
fn cache_line_round_trip() -> f64 {
    const ROUNDS: u64 = 200_000;
    #[repr(align(64))]
    struct Line(AtomicU64);
    let line = Line(AtomicU64::new(0));
    let Some((a, b)) = two_cpus() else {
        return f64::NAN;
    };
    std::thread::scope(|s| {
        s.spawn(|| {
            pin(b);
            for i in 0..ROUNDS {
                while line.0.load(Ordering::Acquire) != 2 * i + 1 {
                    std::hint::spin_loop();
                }
                line.0.store(2 * i + 2, Ordering::Release);
            }
        });
        pin(a);
        let t = Instant::now();
        for i in 0..ROUNDS {
            line.0.store(2 * i + 1, Ordering::Release);
            while line.0.load(Ordering::Acquire) != 2 * i + 2 {
                std::hint::spin_loop();
            }
        }
        ns_per(t, ROUNDS as usize)
    })
}

/// Two online CPUs for the reference, whatever this rank is bound to.
fn two_cpus() -> Option<(usize, usize)> {
    // SAFETY: sysconf only reads a system setting.
    let online = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    (online >= 2).then_some((0, 1))
}

fn pin(cpu: usize) {
    // SAFETY: cpu_set_t is plain data; pinning the calling thread only.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

fn print_table(rows: &[(&str, usize, f64)], memcpy: &[(usize, f64)], line: f64) {
    println!("# Weft one-sided operations, PE 0 -> PE 1 (shared memory)");
    println!("# cache-line round trip between two cores: {line:.1} ns");
    println!(
        "{:<20} {:>9} {:>14} {:>16} {:>8}",
        "operation", "size", "weft", "reference", "ratio"
    );
    for (name, size, v) in rows {
        if name.ends_with("latency") {
            println!(
                "{:<20} {:>9} {:>11.1} ns {:>13.1} ns {:>8.2}",
                name,
                size,
                v,
                line,
                v / line
            );
        } else {
            let m = memcpy
                .iter()
                .find(|(s, _)| s == size)
                .map_or(f64::NAN, |m| m.1);
            println!(
                "{:<20} {:>9} {:>9.0} MB/s {:>11.0} MB/s {:>8.2}",
                name,
                size,
                v,
                m,
                v / m
            );
        }
    }
    println!("# latency reference: cache-line round trip; bandwidth reference: memcpy");
}
