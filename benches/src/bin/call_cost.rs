//! What one small one-way collective call costs each side, apart from
//! waiting: `weftrun -n N call_cost [OP] [BYTES] [CALLS] [ROUNDS] [PAUSE]` (default
//! broadcast, 8 bytes, 16 calls, 2000 rounds, 200 µs pause; OP is
//! `broadcast` or `reduce`, of f64 sums).
//!
//! In each round the members that only send (a broadcast's root, a
//! reduce's other members) make CALLS calls back to back, which they finish
//! without waiting for anyone; the members that receive first sleep for
//! PAUSE µs, so that every block they need is in their slots, then make
//! their CALLS calls; then everyone meets in a barrier. Each member prints
//! its role and the median over the rounds of its time per call (ns): what
//! its own work costs, each side's share of a loop of such calls, in which
//! whichever side costs more sets the pace. (In a long loop, a member that
//! runs ahead also reads, once a call, whether the others have left the
//! slots it is about to write; not here while a round's calls fit the
//! slots: up to 31 at 2 PEs.)
//!
//! Time on a shared machine is noisy; the work is not: under `valgrind
//! --tool=callgrind --toggle-collect=call_cost::one_call`, with two values
//! of CALLS, the difference of the instructions each member executed in
//! its calls, divided by the difference of the calls, is what one call
//! executes on that member (`benches/call_instructions.sh` does this).

use std::time::{Duration, Instant};

use weft::{ReduceOp, Team};

/// One call: a function of its own, whose instructions callgrind can count
/// alone (`--toggle-collect=call_cost::one_call`).
#[inline(never)]
fn one_call(team: &Team<'_>, op: &str, v: &mut [f64]) -> weft::Result<()> {
    match op {
        "broadcast" => team.broadcast(0, v),
        _ => team.reduce(0, v, ReduceOp::Sum),
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let op = args.first().map_or("broadcast", String::as_str).to_owned();
    let number = |i: usize, default: usize| -> Result<usize, Box<dyn std::error::Error>> {
        Ok(args.get(i).map_or(Ok(default), |a| a.parse())?)
    };
    let (bytes, calls, rounds) = (number(1, 8)?, number(2, 16)?, number(3, 2000)?);
    let pause = Duration::from_micros(number(4, 200)? as u64);
    let world = weft::init()?;
    let team = world.team();
    let me = team.rank();
    let sends = match op.as_str() {
        "broadcast" => me == 0,
        "reduce" => me != 0,
        _ => return Err(format!("call_cost: unknown operation {op}").into()),
    };
    let mut v = vec![1.0f64; (bytes / 8).max(1)];
    let mut times = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        if !sends {
            std::thread::sleep(pause);
        }
        let t = Instant::now();
        for _ in 0..calls {
            one_call(&team, &op, &mut v)?;
        }
        times.push(t.elapsed().as_secs_f64() / calls as f64);
        team.barrier()?;
    }
    times.sort_by(f64::total_cmp);
    let role = if sends { "sends" } else { "receives" };
    println!(
        "PE {me} {role}: {op} of {bytes} B, {:.1} ns per call (median of {rounds} rounds of {calls})",
        times[rounds / 2] * 1e9
    );
    world.finalize()?;
    Ok(())
}
