//! Test programs for the multi-process suite: `weft-check SCENARIO` runs one
//! scenario on every rank, checks its results and exits non-zero on any
//! wrong answer. The integration tests in `tests/tests/` launch it under
//! `weftrun` with 1 to 4 ranks.

use std::process::ExitCode;

use weft::{AtomicInt, Cause, Cmp, Error, SymVec, World};
use weft_tests::{ensure, finish, w, Check};

fn main() -> ExitCode {
    let scenario = std::env::args().nth(1).unwrap_or_default();
    if scenario == "left" {
        return left();
    }
    let world = match weft::init() {
        Ok(w) => w,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let result = match scenario.as_str() {
        "rma" => rma(&world),
        "strided" => strided(&world),
        "atomics" => atomics::<u64>(&world)
            .and_then(|()| atomics::<i64>(&world))
            .and_then(|()| atomics::<u32>(&world))
            .and_then(|()| atomics::<i32>(&world)),
        "contended" => contended(&world),
        "wait" => wait(&world),
        "alloc" => alloc(&world),
        "errors" => errors(&world),
        "exhaust" => exhaust(&world),
        "mismatch" => mismatch(&world),
        "panic" => {
            w(world.barrier_all()).unwrap();
            if world.rank() == world.size() - 1 {
                panic!("rank {} panics on purpose", world.rank());
            }
            std::thread::sleep(std::time::Duration::from_secs(60));
            Ok(())
        }
        "exit3" => {
            if world.rank() == world.size() - 1 {
                std::process::exit(3);
            }
            std::thread::sleep(std::time::Duration::from_secs(60));
            Ok(())
        }
        "abort" => {
            if world.rank() == world.size() - 1 {
                world.abort(5, "giving up on purpose");
            }
            std::thread::sleep(std::time::Duration::from_secs(60));
            Ok(())
        }
        "sleep" => {
            println!("rank {} sleeping", world.rank());
            std::thread::sleep(std::time::Duration::from_secs(60));
            Ok(())
        }
        "stdin" => stdin(&world),
        "kill-launcher" => {
            // Under a multi-node weftrun the parent is the node's agent.
            w(world.barrier_all()).unwrap();
            if world.rank() == world.size() - 1 {
                // SAFETY: kill only sends a signal.
                unsafe { libc::kill(libc::getppid(), libc::SIGKILL) };
            }
            std::thread::sleep(std::time::Duration::from_secs(60));
            Ok(())
        }
        "env" => {
            let name = std::env::args().nth(2).unwrap_or_default();
            let value = std::env::var(&name).unwrap_or_else(|_| "<unset>".into());
            println!("rank {}: {name}={value}", world.rank());
            w(world.barrier_all())
        }
        other => Err(format!("unknown scenario {other:?}")),
    };
    finish(&world, &scenario, result)
}

fn pattern(src: usize, dst: usize, i: usize) -> u64 {
    ((src as u64) << 48) ^ ((dst as u64) << 32) ^ (i as u64).wrapping_mul(2654435761)
}

/// Every PE puts a distinct pattern of every size into its slot on every
/// PE, then gets it back from there and checks both copies.
fn rma(world: &World) -> Check {
    let (me, n) = (world.rank(), world.size());
    for len in [1usize, 7, 64, 1000, 65536] {
        let a = w(world.alloc::<u64>(len * n))?;
        for dst in 0..n {
            let data: Vec<u64> = (0..len).map(|i| pattern(me, dst, i)).collect();
            if len % 2 == 0 {
                w(a.put_nbi(dst, me * len, &data))?;
            } else {
                w(a.put(dst, me * len, &data))?;
            }
        }
        w(world.barrier_all())?;
        let local = w(a.to_vec_local())?;
        for src in 0..n {
            for i in 0..len {
                let (got, want) = (local[src * len + i], pattern(src, me, i));
                ensure(got == want, || {
                    format!("len {len}: from PE {src} element {i} is {got:#x}, want {want:#x}")
                })?;
            }
        }
        for dst in 0..n {
            let mut back = vec![0u64; len];
            w(a.get(dst, me * len, &mut back))?;
            ensure(
                back.iter()
                    .enumerate()
                    .all(|(i, &v)| v == pattern(me, dst, i)),
                || format!("len {len}: get from PE {dst} returned other data"),
            )?;
        }
        // get_nbi: fetch my slot from every PE into a local symmetric array.
        let b = w(world.alloc::<u64>(len * n))?;
        for src in 0..n {
            w(a.get_nbi(src, me * len, &b, src * len, len))?;
        }
        w(world.quiet())?;
        let fetched = w(b.to_vec_local())?;
        for src in 0..n {
            ensure(
                (0..len).all(|i| fetched[src * len + i] == pattern(me, src, i)),
                || format!("len {len}: get_nbi from PE {src} returned other data"),
            )?;
        }
        w(world.barrier_all())?;
        w(b.free())?;
        w(a.free())?;
    }
    // put + fence + flag: the data must be in place once the flag is seen.
    let data = w(world.alloc::<u64>(4096))?;
    let flag = w(world.alloc::<u64>(1))?;
    let right = (me + 1) % n;
    for round in 1..=50u64 {
        let block: Vec<u64> = (0..4096).map(|i| round * 10_000 + i).collect();
        w(data.put(right, 0, &block))?;
        w(world.fence())?;
        w(flag.set(right, 0, round))?;
        w(flag.wait_until(0, Cmp::Ge, round))?;
        let got = w(data.to_vec_local())?;
        ensure(
            got.iter()
                .enumerate()
                .all(|(i, &v)| v == round * 10_000 + i as u64),
            || format!("round {round}: data not complete when the flag arrived"),
        )?;
        w(world.barrier_all())?;
    }
    Ok(())
}

/// Strided puts land at the strided places; strided gets pick them up.
fn strided(world: &World) -> Check {
    let (me, n) = (world.rank(), world.size());
    let a = w(world.alloc::<i32>(3 * 100 * n))?;
    let right = (me + 1) % n;
    let src: Vec<i32> = (0..200)
        .map(|i| {
            if i % 2 == 0 {
                (me * 1000 + i / 2) as i32
            } else {
                -1
            }
        })
        .collect();
    // 100 elements from every other source element to every third slot.
    w(a.iput(right, me * 300, 3, &src, 2, 100))?;
    w(world.barrier_all())?;
    let left = (me + n - 1) % n;
    let local = w(a.to_vec_local())?;
    for (k, &v) in local[left * 300..left * 300 + 300].iter().enumerate() {
        let want = if k % 3 == 0 {
            (left * 1000 + k / 3) as i32
        } else {
            0
        };
        ensure(v == want, || {
            format!("element {k} of PE {left}'s block is {v}, want {want}")
        })?;
    }
    let mut back = vec![7i32; 400];
    w(a.iget(right, me * 300, 3, &mut back, 4, 100))?;
    for (k, &v) in back.iter().enumerate() {
        let want = if k % 4 == 0 {
            (me * 1000 + k / 4) as i32
        } else {
            7
        };
        ensure(v == want, || {
            format!("iget element {k} is {v}, want {want}")
        })?;
    }
    w(world.barrier_all())
}

/// Each atomic operation's return value and effect, on the right
/// neighbour's element of this PE.
fn atomics<T: AtomicInt + TryFrom<i64> + Into<i128>>(world: &World) -> Check
where
    <T as TryFrom<i64>>::Error: std::fmt::Debug,
{
    let (me, n) = (world.rank(), world.size());
    let t = |v: i64| T::try_from(v).unwrap();
    let a: SymVec<'_, T> = w(world.alloc::<T>(n))?;
    let pe = (me + 1) % n;
    let name = std::any::type_name::<T>();
    let expect = |what: &str, got: T, want: i64| {
        ensure(got == t(want), || {
            format!("{name} {what}: got {got:?}, want {want}")
        })
    };
    expect("fetch of zeroed memory", w(a.fetch(pe, me))?, 0)?;
    w(a.set(pe, me, t(10)))?;
    expect("fetch after set", w(a.fetch(pe, me))?, 10)?;
    expect("swap", w(a.swap(pe, me, t(12)))?, 10)?;
    expect(
        "failing compare_swap",
        w(a.compare_swap(pe, me, t(11), t(99)))?,
        12,
    )?;
    expect(
        "succeeding compare_swap",
        w(a.compare_swap(pe, me, t(12), t(20)))?,
        12,
    )?;
    expect("fetch_add", w(a.fetch_add(pe, me, t(5)))?, 20)?;
    w(a.add(pe, me, t(5)))?;
    expect("fetch_inc", w(a.fetch_inc(pe, me))?, 30)?;
    w(a.inc(pe, me))?;
    expect("fetch_and", w(a.fetch_and(pe, me, t(0b1110)))?, 32)?;
    expect("fetch_or", w(a.fetch_or(pe, me, t(0b0101)))?, 0)?;
    expect("fetch_xor", w(a.fetch_xor(pe, me, t(0b0011)))?, 0b0101)?;
    expect("final value", w(a.fetch(pe, me))?, 0b0110)?;
    w(a.set(pe, me, t(0)))?;
    expect(
        "fetch_add of a negative operand",
        w(a.fetch_add(pe, me, T::try_from(-3).unwrap_or(t(0))))?,
        0,
    )?;
    w(world.barrier_all())?;
    w(a.free())
}

/// Every PE adds to one counter on every PE concurrently: the totals must be exact.
fn contended(world: &World) -> Check {
    let (me, n) = (world.rank(), world.size());
    // Under emulation every atomic is a round trip through an emulated
    // device (across two VMs in the two-node runs, where 4 PEs took a
    // minute for 2000 rounds): fewer rounds.
    let rounds: u64 = if weft_tests::emulated() { 500 } else { 20_000 };
    let c = w(world.alloc::<u64>(2))?;
    let c32 = w(world.alloc::<u32>(1))?;
    w(world.barrier_all())?;
    let mut tickets = Vec::with_capacity(rounds as usize);
    for i in 0..rounds {
        let target = (me + i as usize) % n;
        tickets.push(w(c.fetch_add(0, 0, 1))?);
        w(c.add(target, 1, me as u64 + 1))?;
        w(c32.inc(target, 0))?;
    }
    w(world.barrier_all())?;
    ensure(tickets.windows(2).all(|p| p[0] < p[1]), || {
        "tickets from PE 0's counter are not increasing".into()
    })?;
    if me == 0 {
        let total = w(c.fetch(0, 0))?;
        ensure(total == rounds * n as u64, || {
            format!("counter is {total}, want {}", rounds * n as u64)
        })?;
        let mut sum = 0;
        let mut sum32 = 0;
        for pe in 0..n {
            sum += w(c.fetch(pe, 1))?;
            sum32 += w(c32.fetch(pe, 0))? as u64;
        }
        let want: u64 = (1..=n as u64).sum::<u64>() * rounds;
        ensure(sum == want, || format!("sum of adds is {sum}, want {want}"))?;
        ensure(sum32 == rounds * n as u64, || {
            format!("sum of 32-bit incs is {sum32}")
        })?;
    }
    Ok(())
}

/// wait_until and test with each comparison: a chain of signals around the ring.
fn wait(world: &World) -> Check {
    let (me, n) = (world.rank(), world.size());
    let flag = w(world.alloc::<i64>(1))?;
    let right = (me + 1) % n;
    ensure(w(flag.test(0, Cmp::Eq, 0))?, || {
        "test Eq on zeroed memory".into()
    })?;
    ensure(!w(flag.test(0, Cmp::Ne, 0))?, || {
        "test Ne on zeroed memory".into()
    })?;
    w(world.barrier_all())?;
    let steps = [
        (Cmp::Eq, 5i64),
        (Cmp::Ne, 5),
        (Cmp::Gt, 6),
        (Cmp::Ge, 8),
        (Cmp::Lt, -1),
        (Cmp::Le, -2),
    ];
    let mut values = [5i64, 6, 7, 8, -2, -2].into_iter();
    for (cmp, v) in steps {
        let val = values.next().unwrap();
        if me == 0 {
            w(flag.set(right, 0, val))?;
            w(flag.wait_until(0, cmp, v))?;
        } else {
            w(flag.wait_until(0, cmp, v))?;
            w(flag.set(right, 0, val))?;
        }
        let now = w(flag.fetch(me, 0))?;
        ensure(cmp.holds(now, v), || {
            format!("after wait_until({cmp:?}, {v}) the value is {now}")
        })?;
        w(world.barrier_all())?;
    }
    Ok(())
}

/// Allocation is deterministic and zeroed; freed space is reused.
fn alloc(world: &World) -> Check {
    let (me, n) = (world.rank(), world.size());
    let offsets = w(world.alloc::<u64>(n * 8))?;
    let mut live: Vec<SymVec<'_, u8>> = Vec::new();
    let mut record = Vec::new();
    for i in 0..40usize {
        if i % 3 == 2 {
            let v = live.remove(i % live.len());
            w(v.free())?;
        } else {
            let v = w(world.alloc::<u8>(1 + i * 97))?;
            ensure(w(v.to_vec_local())?.iter().all(|&b| b == 0), || {
                "new allocation is not zeroed".into()
            })?;
            w(v.write_local(0, &[0xff]))?;
            record.push(v.heap_offset() as u64);
            live.push(v);
        }
    }
    record.truncate(8);
    w(offsets.put(0, me * 8, &record))?;
    w(world.barrier_all())?;
    if me == 0 {
        let all = w(offsets.to_vec_local())?;
        for pe in 1..n {
            ensure(all[pe * 8..pe * 8 + 8] == all[..8], || {
                format!("PE {pe} got other offsets: {all:?}")
            })?;
        }
    }
    for v in live {
        w(v.free())?;
    }
    Ok(())
}

fn expect_err<T>(r: weft::Result<T>, op: &str, what: impl Fn(&Cause) -> bool, me: usize) -> Check {
    match r {
        Ok(_) => Err(format!("{op} succeeded where it must fail")),
        Err(Error { rank, op: o, cause }) => ensure(rank == me && o == op && what(&cause), || {
            format!("{op}: unexpected error: rank {rank}: {o}: {cause}")
        }),
    }
}

/// Bad PEs and out-of-bounds accesses are errors naming rank, operation and cause.
fn errors(world: &World) -> Check {
    let (me, n) = (world.rank(), world.size());
    let a = w(world.alloc::<u64>(16))?;
    let bad_pe = |c: &Cause| matches!(c, Cause::BadPe { pe, size } if *pe == n && *size == n);
    expect_err(a.put(n, 0, &[1]), "put", bad_pe, me)?;
    expect_err(
        a.get(n + 5, 0, &mut [0]),
        "get",
        |c| matches!(c, Cause::BadPe { .. }),
        me,
    )?;
    expect_err(a.fetch_add(n, 0, 1), "fetch_add", bad_pe, me)?;
    let oob = |c: &Cause| matches!(c, Cause::OutOfBounds { len: 16, .. });
    expect_err(a.put(0, 15, &[1, 2]), "put", oob, me)?;
    expect_err(a.get(0, 16, &mut [0]), "get", oob, me)?;
    expect_err(a.put(0, usize::MAX, &[1]), "put", oob, me)?;
    expect_err(a.swap(0, 16, 1), "swap", oob, me)?;
    expect_err(a.wait_until(16, Cmp::Eq, 0), "wait_until", oob, me)?;
    expect_err(a.get_nbi(0, 0, &a, 10, 7), "get_nbi", oob, me)?;
    expect_err(a.iput(0, 0, 4, &[1, 2, 3, 4, 5], 1, 5), "iput", oob, me)?;
    expect_err(
        a.iput(0, 0, 0, &[1], 1, 1),
        "iput",
        |c| matches!(c, Cause::BadStride(_)),
        me,
    )?;
    expect_err(
        a.iget(0, 0, 1, &mut [0; 3], 2, 3),
        "iget",
        |c| matches!(c, Cause::BadStride(_)),
        me,
    )?;
    let text = a.put(n, 0, &[1]).unwrap_err().to_string();
    ensure(
        text == format!("rank {me}: put: PE {n} does not exist (the job has {n} PEs)"),
        || text.clone(),
    )?;
    w(world.barrier_all())
}

/// Asking for more than the heap holds fails on every PE, naming the variable.
fn exhaust(world: &World) -> Check {
    let me = world.rank();
    let size = world.config().symmetric_size;
    let big = world.alloc::<u8>(size + 1);
    expect_err(
        big,
        "alloc",
        |c| matches!(c, Cause::HeapExhausted { .. }),
        me,
    )?;
    let text = world
        .alloc::<u8>(size + 1)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    ensure(text.contains("WEFT_SYMMETRIC_SIZE"), || {
        format!("message does not name the variable: {text}")
    })?;
    let mut held = Vec::new();
    while let Ok(v) = world.alloc::<u8>(size / 8) {
        held.push(v);
    }
    ensure(held.len() >= 6, || {
        format!("only {} eighths of the heap could be allocated", held.len())
    })?;
    for v in held {
        w(v.free())?;
    }
    let ok = w(world.alloc::<u8>(size / 2))?;
    w(ok.free())
}

/// One PE allocates a different size: every PE fails with an error naming it,
/// and the heap stays usable.
fn mismatch(world: &World) -> Check {
    let (me, n) = (world.rank(), world.size());
    let odd = n - 1;
    let len = if me == odd { 24 } else { 16 };
    let r = world.alloc::<u64>(len);
    if n > 1 {
        let want = format!("PEs [{odd}] called alloc of 24 elements");
        expect_err(
            r,
            "alloc",
            |c| matches!(c, Cause::Mismatch(t) if t.contains(&want)),
            me,
        )?;
    } else {
        w(r)?;
    }
    let after = w(world.alloc::<u64>(4))?;
    w(after.put((me + 1) % n, 0, &[me as u64]))?;
    w(world.barrier_all())?;
    let got = w(after.fetch(me, 0))?;
    ensure(got == ((me + n - 1) % n) as u64, || {
        format!("after the mismatch got {got}")
    })
}

/// Rank 0 reads a line from its stdin and prints it.
fn stdin(world: &World) -> Check {
    if world.rank() == 0 {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .map_err(|e| e.to_string())?;
        println!("rank 0 read: {}", line.trim_end());
    }
    w(world.barrier_all())
}

/// Without Weft, the launcher's exit board as the ranks of a job on several
/// nodes see it: the last rank joins through PMI and exits without
/// finalizing; rank 0 waits, a minute at most, until its board marks it.
fn left() -> ExitCode {
    use std::time::{Duration, Instant};
    use weft::pmi::client::{PmiClient, PmiEnv};
    use weft_transport::exits::ExitView;

    let run = || -> Result<usize, String> {
        let env = PmiEnv::from_lookup(|k| std::env::var(k).ok())?
            .ok_or("no launcher: PMI_FD is not set")?;
        let mut pmi = PmiClient::connect(&env)?;
        let (me, n) = (pmi.rank(), pmi.size());
        if me == n - 1 {
            std::process::exit(0);
        }
        if me == 0 {
            let fd = std::env::var("WEFT_EXITS_FD").map_err(|_| "WEFT_EXITS_FD is not set")?;
            let fd = fd.parse().map_err(|_| format!("WEFT_EXITS_FD={fd}"))?;
            let board = ExitView::inherit(fd, n).map_err(|e| e.to_string())?;
            let start = Instant::now();
            while !board.left(n - 1) {
                if start.elapsed() > Duration::from_secs(60) {
                    return Err(format!("PE {} is not marked after a minute", n - 1));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            if let Some(pe) = (0..n - 1).find(|&pe| board.left(pe)) {
                return Err(format!("PE {pe} is marked, but it has not left"));
            }
        }
        pmi.finalize()?;
        Ok(me)
    };
    match run() {
        Ok(me) => {
            println!("rank {me}: left ok");
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("left FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}
