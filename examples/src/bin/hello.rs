//! Every PE says who it is. Run: `weftrun -n 4 target/release/hello`.

fn main() -> Result<(), weft::Error> {
    let world = weft::init()?;
    println!("hello from PE {} of {}", world.rank(), world.size());
    world.finalize()
}
