//! A distributed histogram: every PE draws numbers and counts each in the bin
//! owned by some PE with a remote atomic increment; the total is checked.
//! Run: `weftrun -n 4 target/release/histogram [samples-per-PE]`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let samples: u64 = std::env::args().nth(1).map_or(Ok(100_000), |a| a.parse())?;
    let world = weft::init()?;
    let (me, n) = (world.rank(), world.size());
    const BINS_PER_PE: usize = 64;
    let bins = world.alloc::<u64>(BINS_PER_PE)?;
    world.barrier_all()?;
    let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ (me as u64 + 1);
    for _ in 0..samples {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let bin = (x % (BINS_PER_PE * n) as u64) as usize;
        bins.inc(bin / BINS_PER_PE, bin % BINS_PER_PE)?;
    }
    world.barrier_all()?;
    let local: u64 = bins.to_vec_local()?.iter().sum();
    let totals = world.alloc::<u64>(n)?;
    totals.put(0, me, &[local])?;
    world.barrier_all()?;
    if me == 0 {
        let all: u64 = totals.to_vec_local()?.iter().sum();
        println!(
            "{n} PEs counted {all} samples into {} bins",
            BINS_PER_PE * n
        );
        if all != samples * n as u64 {
            return Err(format!("expected {} samples", samples * n as u64).into());
        }
    }
    world.finalize()?;
    Ok(())
}
