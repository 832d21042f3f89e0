//! A token travels around the ring of PEs by puts, each PE adding its rank.
//! Run: `weftrun -n 4 target/release/ring [laps]`.

use weft::Cmp;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let laps: u64 = std::env::args().nth(1).map_or(Ok(10), |a| a.parse())?;
    let world = weft::init()?;
    let (me, n) = (world.rank(), world.size());
    // slot 0: the token's value, slot 1: how many times it has arrived here.
    let token = world.alloc::<u64>(2)?;
    let next = (me + 1) % n;
    for lap in 1..=laps {
        let value = if me == 0 {
            if lap > 1 {
                token.wait_until(1, Cmp::Ge, lap - 1)?;
            }
            token.to_vec_local()?[0]
        } else {
            token.wait_until(1, Cmp::Ge, lap)?;
            token.to_vec_local()?[0]
        };
        token.put(next, 0, &[value + me as u64])?;
        world.fence()?;
        token.add(next, 1, 1)?;
    }
    if me == 0 {
        token.wait_until(1, Cmp::Ge, laps)?;
        let sum = token.to_vec_local()?[0];
        let expect = laps * (n as u64 * (n as u64 - 1) / 2);
        println!("after {laps} laps around {n} PEs the token is {sum} (expected {expect})");
        if sum != expect {
            return Err("wrong token value".into());
        }
    }
    world.finalize()?;
    Ok(())
}
