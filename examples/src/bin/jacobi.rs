//! 2-D Jacobi iteration for Laplace's equation on an N x N grid split into
//! row blocks, one per PE. Each step, PEs put their edge rows into their
//! neighbours' halo rows, then barrier. PE 0 gathers the result and compares
//! it with a serial run of the same iteration.
//! Run: `weftrun -n 4 target/release/jacobi [N] [steps]`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let size: usize = args.next().map_or(Ok(128), |a| a.parse())?;
    let steps: usize = args.next().map_or(Ok(200), |a| a.parse())?;
    let world = weft::init()?;
    let (me, n) = (world.rank(), world.size());
    if size < n {
        return Err(format!("the grid needs at least {n} rows").into());
    }
    // Rows owned by PE p: [start(p), start(p + 1)).
    let start = |p: usize| p * size / n;
    let max_rows = (0..n).map(|p| start(p + 1) - start(p)).max().unwrap_or(0);
    let rows = start(me + 1) - start(me);
    // Local block with a halo row above (row 0) and below (row rows + 1).
    let width = size;
    let halo = world.alloc::<f64>((max_rows + 2) * width)?;
    let mut cur = vec![0.0f64; (rows + 2) * width];
    init_rows(&mut cur, start(me), rows, size);
    let mut next = cur.clone();
    for _ in 0..steps {
        // Send edge rows to the neighbours' halos.
        if me > 0 {
            halo.put(
                me - 1,
                (start(me) - start(me - 1) + 1) * width,
                &cur[width..2 * width],
            )?;
        }
        if me + 1 < n {
            halo.put(me + 1, 0, &cur[rows * width..(rows + 1) * width])?;
        }
        world.barrier_all()?;
        if me > 0 {
            halo.read_local(0, &mut cur[..width])?;
        }
        if me + 1 < n {
            halo.read_local((rows + 1) * width, &mut cur[(rows + 1) * width..])?;
        }
        sweep(&cur, &mut next, start(me), rows, size);
        std::mem::swap(&mut cur, &mut next);
        world.barrier_all()?;
    }
    let result = world.alloc::<f64>(size * size)?;
    result.put(0, start(me) * width, &cur[width..(rows + 1) * width])?;
    world.barrier_all()?;
    if me == 0 {
        let parallel = result.to_vec_local()?;
        let serial = serial(size, steps);
        let diff = parallel
            .iter()
            .zip(&serial)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        println!(
            "jacobi {size}x{size}, {steps} steps on {n} PEs: max difference from serial {diff:e}"
        );
        if diff != 0.0 {
            return Err("parallel and serial results differ".into());
        }
    }
    world.finalize()?;
    Ok(())
}

/// Boundary condition: the top edge of the grid is held at 1.0.
fn init_rows(block: &mut [f64], first_row: usize, rows: usize, size: usize) {
    for r in 0..rows {
        if first_row + r == 0 {
            block[(r + 1) * size..(r + 2) * size].fill(1.0);
        }
    }
}

/// One Jacobi step on the owned rows (1..=rows of the block); grid edges stay fixed.
fn sweep(cur: &[f64], next: &mut [f64], first_row: usize, rows: usize, size: usize) {
    for r in 1..=rows {
        let g = first_row + r - 1;
        for c in 0..size {
            let i = r * size + c;
            next[i] = if g == 0 || g == size - 1 || c == 0 || c == size - 1 {
                cur[i]
            } else {
                0.25 * (cur[i - size] + cur[i + size] + cur[i - 1] + cur[i + 1])
            };
        }
    }
}

fn serial(size: usize, steps: usize) -> Vec<f64> {
    let mut cur = vec![0.0; (size + 2) * size];
    init_rows(&mut cur, 0, size, size);
    let mut next = cur.clone();
    for _ in 0..steps {
        sweep(&cur, &mut next, 0, size, size);
        std::mem::swap(&mut cur, &mut next);
    }
    cur[size..(size + 1) * size].to_vec()
}
