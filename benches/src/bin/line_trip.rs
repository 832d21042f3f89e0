//! How long a cache line takes to cross from one core to another and back:
//! `line_trip [CORE_A CORE_B] [TRIPS]` (default cores 0 and 1, 200000 trips).
//!
//! Two threads, pinned to the two cores, pass one line back and forth
//! (each stores the next number into it once it has seen the other's),
//! and the program prints the average round trip in nanoseconds. Small
//! collectives on one node cost little more than such crossings, and in a
//! virtual machine the host may move the virtual CPUs between placements
//! where a crossing costs several times as much: `compare_coll.sh` prints
//! this figure around its runs so that they can be read with it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// The line the two threads pass: alone in its 64 bytes.
#[repr(align(64))]
struct Line(AtomicU64);

/// Pins the calling thread to `core`.
fn pin(core: usize) -> Result<(), String> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set, CPU_SET writes
    // inside it (it ignores cores past its size), and sched_setaffinity
    // reads `size_of` bytes of it; pid 0 is the calling thread.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(core, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(format!(
            "cannot pin a thread to core {core}: {}",
            std::io::Error::last_os_error()
        ))
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("usage: line_trip [CORE_A CORE_B] [TRIPS]: {e}"))?;
    let (a, b, trips) = match args[..] {
        [] => (0, 1, 200_000),
        [trips] => (0, 1, trips),
        [a, b] => (a, b, 200_000),
        [a, b, trips] => (a, b, trips),
        _ => return Err("usage: line_trip [CORE_A CORE_B] [TRIPS]".into()),
    };
    if a == b || trips == 0 {
        return Err("line_trip needs two different cores and at least one trip".into());
    }
    let line = Line(AtomicU64::new(0));
    let trips = trips as u64;
    let secs = std::thread::scope(|s| -> Result<f64, String> {
        let other = s.spawn(|| -> Result<(), String> {
            pin(b)?;
            // Pinned: the first trip may start.
            line.0.store(1, Ordering::Release);
            for i in 1..=trips {
                while line.0.load(Ordering::Acquire) != 2 * i {
                    std::hint::spin_loop();
                }
                line.0.store(2 * i + 1, Ordering::Release);
            }
            Ok(())
        });
        pin(a)?;
        while line.0.load(Ordering::Acquire) != 1 {
            if other.is_finished() {
                return Err(match other.join() {
                    Ok(Err(e)) => e,
                    _ => "the second thread ended early".to_string(),
                });
            }
            std::hint::spin_loop();
        }
        let t = Instant::now();
        for i in 1..=trips {
            line.0.store(2 * i, Ordering::Release);
            while line.0.load(Ordering::Acquire) != 2 * i + 1 {
                std::hint::spin_loop();
            }
        }
        let secs = t.elapsed().as_secs_f64();
        other
            .join()
            .map_err(|_| "the second thread panicked".to_string())??;
        Ok(secs)
    })?;
    println!("{:.0}", secs / trips as f64 * 1e9);
    Ok(())
}
