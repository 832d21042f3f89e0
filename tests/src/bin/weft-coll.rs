//! Collective test programs: `weft-coll SCENARIO` runs one scenario of
//! collectives on the world and on teams split from it, checks every
//! result against what it computes locally and exits non-zero on any wrong
//! answer.

use std::process::ExitCode;

use weft::{Cause, Collective, ReduceOp, Team, UserOp, World};
use weft_tests::{emulated, ensure, expect_cause, finish, w, Check};

fn main() -> ExitCode {
    let scenario = std::env::args().nth(1).unwrap_or_default();
    let world = match weft::init() {
        Ok(w) => w,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let result = match scenario.as_str() {
        "all" => all(&world),
        "nonblocking" => nonblocking(&world),
        "concurrent" => concurrent(&world),
        "exchange" => exchange(&world),
        "wide" => wide(&world),
        "mismatch-count" => mismatch_count(&world),
        "mismatch-root" => mismatch_root(&world),
        "mismatch-ahead" => mismatch_ahead(&world),
        "bad-root" => bad_root(&world),
        "mixed" => mixed(&world),
        "mixed-rooted" => mixed_rooted(&world),
        "die" => die(&world, None),
        "die-large" => die(&world, Some(12_000)),
        "die-wide" => die(&world, Some(40_000)),
        other => Err(format!("unknown scenario {other:?}")),
    };
    finish(&world, &scenario, result)
}

/// Element `i` of member `m`'s data in test number `t`.
fn value(t: u64, m: usize, i: usize) -> u64 {
    (m as u64 + 1)
        .wrapping_mul(1_000_003)
        .wrapping_add(i as u64 * 7)
        .wrapping_add(t * 13)
}

fn data(t: u64, m: usize, n: usize) -> Vec<u64> {
    (0..n).map(|i| value(t, m, i)).collect()
}

/// The teams this PE tests on: the world, a duplicate, halves by parity
/// (ordered backwards), the even members by a strided split, and the
/// first member alone.
fn teams<'w>(world: &'w World) -> weft::Result<Vec<(String, Team<'w>)>> {
    let (me, n) = (world.rank(), world.size());
    let t = world.team();
    let mut v = vec![("world".to_string(), t.clone())];
    v.push(("dup".into(), t.dup()?));
    if let Some(half) = t.split(Some((me % 2) as u32), -(me as i64))? {
        v.push((format!("parity {}", me % 2), half));
    }
    if let Some(even) = t.split_strided(0, 2, n.div_ceil(2))? {
        v.push(("even".into(), even));
    }
    let alone = t.split((me == 0).then_some(7), 0)?;
    if let Some(a) = alone {
        v.push(("alone".into(), a));
    }
    Ok(v)
}

fn all(world: &World) -> Check {
    let me = world.rank();
    let n = world.size();
    let teams = w(teams(world))?;
    for (name, team) in &teams {
        let expect_size = match name.as_str() {
            "world" | "dup" => n,
            "even" => n.div_ceil(2),
            "alone" => 1,
            _ => (n + 1 - me % 2) / 2,
        };
        ensure(team.size() == expect_size, || {
            format!("team {name} has {} members", team.size())
        })?;
        ensure(team.members()[team.rank()] == me, || {
            format!("team {name}: member {} is not this PE", team.rank())
        })?;
        if name.starts_with("parity") {
            let mut sorted = team.members().to_vec();
            sorted.reverse();
            ensure(sorted.windows(2).all(|p| p[0] < p[1]), || {
                format!("team {name} is not ordered by key: {:?}", team.members())
            })?;
        }
        check_team(name, team).map_err(|e| format!("team {name}: {e}"))?;
    }
    Ok(())
}

/// Counts: empty, tiny, small, above the eager limit, in parts on the
/// world team's flat path, and, but under emulation, blocks that nearly
/// fill a slot of that path at 2 PEs (64000 bytes) and vectors large
/// enough for the bandwidth algorithms.
fn counts() -> Vec<usize> {
    let mut v = vec![0, 1, 7, 1000, if emulated() { 9000 } else { 12_000 }];
    if !emulated() {
        v.extend([8000, 70_000]);
    }
    v
}

fn check_team(name: &str, team: &Team<'_>) -> Check {
    let (r, p) = (team.rank(), team.size());
    let ctx = |what: &str, c: usize| format!("{what} of {c} elements on team {name}");
    w(team.barrier())?;
    for (t, &c) in counts().iter().enumerate() {
        let t = t as u64;
        for root in [0, p - 1] {
            let mut d = if r == root {
                data(t, root, c)
            } else {
                vec![0; c]
            };
            w(team.broadcast(root, &mut d))?;
            ensure(d == data(t, root, c), || ctx("broadcast", c))?;

            let mut d = data(t, r, c);
            w(team.reduce(root, &mut d, ReduceOp::Sum))?;
            let want = if r == root {
                sum_of(t, p, c)
            } else {
                data(t, r, c)
            };
            ensure(d == want, || ctx("reduce", c))?;

            let block = data(t, r, c);
            let mut out = vec![0u64; if r == root { p * c } else { 0 }];
            w(team.gather(root, &block, &mut out))?;
            if r == root {
                ensure(
                    out == (0..p).flat_map(|m| data(t, m, c)).collect::<Vec<_>>(),
                    || ctx("gather", c),
                )?;
            }

            let all: Vec<u64> = if r == root {
                (0..p).flat_map(|m| data(t + 100, m, c)).collect()
            } else {
                vec![]
            };
            let mut block = vec![0u64; c];
            w(team.scatter(root, &all, &mut block))?;
            ensure(block == data(t + 100, r, c), || ctx("scatter", c))?;
        }
        let mut d = data(t, r, c);
        w(team.allreduce(&mut d, ReduceOp::Sum))?;
        ensure(d == sum_of(t, p, c), || ctx("allreduce", c))?;

        allgather(team, t, c, || ctx("allgather", c))?;
        alltoall(team, t, c, || ctx("alltoall", c))?;

        let whole: Vec<u64> = (0..p).flat_map(|j| data(t, r * p + j, c)).collect();
        let mut block = vec![0u64; c];
        w(team.reduce_scatter(&whole, &mut block, ReduceOp::Sum))?;
        let want: Vec<u64> = (0..c)
            .map(|i| (0..p).fold(0u64, |a, m| a.wrapping_add(value(t, m * p + r, i))))
            .collect();
        ensure(block == want, || ctx("reduce_scatter", c))?;

        let mut d = data(t, r, c);
        w(team.scan(&mut d, ReduceOp::Sum))?;
        ensure(d == sum_of(t, r + 1, c), || ctx("scan", c))?;

        let mut d = data(t, r, c);
        w(team.exscan(&mut d, ReduceOp::Sum))?;
        let want = if r == 0 {
            data(t, 0, c)
        } else {
            sum_of(t, r, c)
        };
        ensure(d == want, || ctx("exscan", c))?;
    }
    every_op(team, |v| v as i8)?;
    every_op(team, |v| v as u16)?;
    every_op(team, |v| v)?;
    every_op(team, i64::from)?;
    every_op(team, |v| v as u128)?;
    every_op(team, |v| v as usize)?;
    every_op(team, |v| v as f32)?;
    every_op(team, f64::from)?;
    matrices(team)?;
    affine(team)
}

/// Member-wise sum of members `0..k`'s data.
fn sum_of(t: u64, k: usize, c: usize) -> Vec<u64> {
    (0..c)
        .map(|i| (0..k).fold(0u64, |a, m| a.wrapping_add(value(t, m, i))))
        .collect()
}

/// Every built-in operation that applies to `T`, on values that every
/// order of combination gives exactly, against a local fold.
fn every_op<T>(team: &Team<'_>, from: impl Fn(i32) -> T) -> Check
where
    T: weft::Element + PartialEq + std::fmt::Debug,
{
    let (r, p) = (team.rank(), team.size());
    for op in ReduceOp::ALL {
        if T::KIND.is_float() && !op.applies_to_floats() {
            let mut d = [from(1)];
            expect_cause(team.allreduce(&mut d, op), "allreduce", |c| {
                matches!(c, Cause::Invalid(_))
            })?;
            continue;
        }
        let gen = |m: usize, i: usize| {
            from(match op {
                ReduceOp::Prod => [1, 2, 1, -1][(m + i) % 4],
                _ => ((m * 31 + i * 7 + 1) % 50) as i32,
            })
        };
        let mut d: Vec<T> = (0..9).map(|i| gen(r, i)).collect();
        w(team.allreduce(&mut d, op))?;
        let want: Vec<T> = (0..9)
            .map(|i| {
                let mut acc = [gen(0, i)];
                for m in 1..p {
                    fold_one(op, &mut acc, gen(m, i));
                }
                acc[0]
            })
            .collect();
        ensure(d == want, || {
            format!("allreduce {op} on {:?}: {d:?}, want {want:?}", T::KIND)
        })?;
    }
    Ok(())
}

/// `acc = acc op v`, computed the way a single PE would.
fn fold_one<T: weft::Element>(op: ReduceOp, acc: &mut [T; 1], v: T) {
    let c = weft_collectives::op::Combiner::builtin::<T>(op).expect("op applies");
    c.combine(
        bytemuck::cast_slice_mut(acc),
        bytemuck::cast_slice(&[v]),
        false,
    );
}

type Mat = [u64; 4];

fn matmul(a: &Mat, b: &Mat) -> Mat {
    let m = |x: u64, y: u64| x.wrapping_mul(y);
    [
        m(a[0], b[0]).wrapping_add(m(a[1], b[2])),
        m(a[0], b[1]).wrapping_add(m(a[1], b[3])),
        m(a[2], b[0]).wrapping_add(m(a[3], b[2])),
        m(a[2], b[1]).wrapping_add(m(a[3], b[3])),
    ]
}

/// A non-commutative user operation combines in member order.
fn matrices(team: &Team<'_>) -> Check {
    let (r, p) = (team.rank(), team.size());
    let op = UserOp::new(false, matmul);
    let mat = |m: usize, i: usize| -> Mat { [1, (m + i) as u64 % 5, (m * 3) as u64 % 7, 2] };
    let mut d: Vec<Mat> = (0..3).map(|i| mat(r, i)).collect();
    let forced = team.world().config().algorithm_for(Collective::Allreduce);
    if forced.is_some_and(|a| a.needs_commutative()) {
        // The forced algorithm cannot combine in member order.
        return expect_cause(team.allreduce(&mut d, &op), "allreduce", |c| {
            matches!(c, Cause::Config { .. })
        });
    }
    w(team.allreduce(&mut d, &op))?;
    let prefix = |k: usize| -> Vec<Mat> {
        (0..3)
            .map(|i| (1..k).fold(mat(0, i), |a, m| matmul(&a, &mat(m, i))))
            .collect()
    };
    ensure(d == prefix(p), || "allreduce of a user operation".into())?;
    let mut d: Vec<Mat> = (0..3).map(|i| mat(r, i)).collect();
    w(team.scan(&mut d, &op))?;
    ensure(d == prefix(r + 1), || "scan of a user operation".into())
}

/// An affine map x -> a x + b (mod 2^64) and a running sum, 24 bytes:
/// a size that no power of two is a multiple of.
type Affine = [u64; 3];

/// `f` then `g`: associative, not commutative.
fn then(f: &Affine, g: &Affine) -> Affine {
    [
        f[0].wrapping_mul(g[0]),
        f[1].wrapping_mul(g[0]).wrapping_add(g[1]),
        f[2].wrapping_add(g[2]),
    ]
}

/// A large reduce and allreduce of a non-commutative user operation on
/// 24-byte elements, which the world team's flat path runs in parts of
/// whole elements, folding members in order in each.
fn affine(team: &Team<'_>) -> Check {
    let (r, p) = (team.rank(), team.size());
    let op = UserOp::new(false, then);
    let forced = team.world().config().algorithm_for(Collective::Allreduce);
    if forced.is_some_and(|a| a.needs_commutative()) {
        return Ok(());
    }
    let count = if emulated() { 3000 } else { 30_000 };
    let map = |m: usize, i: usize| -> Affine {
        let v = value(m as u64, m, i);
        [v | 1, v >> 7, v]
    };
    let mine = || (0..count).map(|i| map(r, i)).collect::<Vec<_>>();
    let want: Vec<Affine> = (0..count)
        .map(|i| (1..p).fold(map(0, i), |a, m| then(&a, &map(m, i))))
        .collect();
    let mut d = mine();
    w(team.allreduce(&mut d, &op))?;
    ensure(d == want, || format!("allreduce of {count} affine maps"))?;
    for root in [0, p - 1] {
        let mut d = mine();
        w(team.reduce(root, &mut d, &op))?;
        ensure(d == if r == root { want.clone() } else { mine() }, || {
            format!("reduce of {count} affine maps to {root}")
        })?;
    }
    Ok(())
}

/// Allgathers and alltoalls of the world team with blocks larger than a
/// slot of its flat path (72 KB, 320 KB and 1 MiB), 40 calls of each, every
/// result checked. When the ranks do not outnumber the cores, such calls
/// run attached or copied through the slots (in parts at 72 KB, through
/// the wide slots from 256 KiB where the blocks fit them) as
/// `WEFT_EXCHANGE` says; with `auto`, the ways change between calls as
/// rank 0 times them: the first calls of each size attached, the next the
/// other way, the later ones the way timed faster and now and then the
/// other.
fn exchange(world: &World) -> Check {
    let team = world.team();
    for c in [9000, 40_000, 1 << 17] {
        for t in 0..40u64 {
            allgather(&team, t, c, || format!("allgather {t} of {c} elements"))?;
            alltoall(&team, t, c, || format!("alltoall {t} of {c} elements"))?;
        }
    }
    Ok(())
}

/// The world team's calls that go through the members' wide slots when
/// the PEs outnumber the cores, several in a row and mixed, so that each
/// kind takes the slots another left: allreduces, which the members fold
/// out of each other's vectors into their wide slots, of vectors whose
/// chunks fit them (560 KB) and larger ones (4.8 MB, read out of the
/// vectors); broadcasts (160 KB), alltoalls and allgathers (160 KB blocks,
/// one or two calls of each).
fn wide(world: &World) -> Check {
    let (team, r, p) = (world.team(), world.rank(), world.size());
    let wide = 20_000;
    for c in [70_000, 600_000] {
        for t in 0..6u64 {
            let mut d = data(t, r, c);
            w(team.allreduce(&mut d, ReduceOp::Sum))?;
            ensure(d == sum_of(t, p, c), || {
                format!("allreduce {t} of {c} elements")
            })?;
            for k in 0..=t as usize % 2 {
                let root = (t as usize + k) % p;
                let mut b = if r == root {
                    data(t, root, wide)
                } else {
                    vec![0; wide]
                };
                w(team.broadcast(root, &mut b))?;
                ensure(b == data(t, root, wide), || {
                    format!("broadcast {t}.{k} from {root}")
                })?;
            }
            for k in 0..=t / 2 % 2 {
                let u = 10 * t + k;
                alltoall(&team, u, wide, || format!("alltoall {t}.{k}"))?;
                allgather(&team, u, wide, || format!("allgather {t}.{k}"))?;
            }
        }
    }
    Ok(())
}

/// An allgather of `c` elements a member in test number `t` on `team`,
/// checked (`what` says which, if wrong).
fn allgather(team: &Team<'_>, t: u64, c: usize, what: impl FnOnce() -> String) -> Check {
    let (r, p) = (team.rank(), team.size());
    let mut out = vec![0u64; p * c];
    w(team.allgather(&data(t, r, c), &mut out))?;
    ensure(
        out == (0..p).flat_map(|m| data(t, m, c)).collect::<Vec<_>>(),
        what,
    )
}

/// An alltoall of blocks of `c` elements in test number `t` on `team`,
/// checked: member m sends block j = value(t, m * p + j, ..).
fn alltoall(team: &Team<'_>, t: u64, c: usize, what: impl FnOnce() -> String) -> Check {
    let (r, p) = (team.rank(), team.size());
    let send: Vec<u64> = (0..p).flat_map(|j| data(t, r * p + j, c)).collect();
    let mut out = vec![0u64; p * c];
    w(team.alltoall(&send, &mut out))?;
    ensure(
        out == (0..p)
            .flat_map(|m| data(t, m * p + r, c))
            .collect::<Vec<_>>(),
        what,
    )
}

/// Non-blocking collectives on three teams at once, completed in an order
/// other than the one they were started in, with blocking collectives on
/// a fourth team in between.
fn nonblocking(world: &World) -> Check {
    let me = world.rank();
    let t = world.team();
    let (a, b, c) = (w(t.dup())?, w(t.dup())?, w(t.dup())?);
    let p = t.size();
    for round in 0..50u64 {
        let count = [1, 10, 5000][round as usize % 3];
        let mut sum = data(round, me, count);
        let mut bcast = if me == 0 {
            data(round + 1, 0, count)
        } else {
            vec![0; count]
        };
        let mut gathered = vec![0u64; p * count];
        let block = data(round + 2, me, count);
        let mut world_sum = data(round + 3, me, count);
        w(world.scope(|s| {
            let r1 = s.iallreduce(&a, &mut sum, ReduceOp::Sum)?;
            let r2 = s.ibroadcast(&b, 0, &mut bcast)?;
            let r3 = s.iallgather(&c, &block, &mut gathered)?;
            let r4 = s.ibarrier(&a)?;
            // One on the world team too, in flight across its blocking calls.
            let r5 = s.iallreduce(&t, &mut world_sum, ReduceOp::Sum)?;
            t.barrier()?;
            let mut x = [me as u32];
            t.allreduce(&mut x, ReduceOp::Max)?;
            r3.wait()?;
            while r2.test()?.is_none() {
                world.progress()?;
            }
            s.wait_all(vec![r4, r1, r5])?;
            Ok(())
        }))?;
        ensure(world_sum == sum_of(round + 3, p, count), || {
            format!("iallreduce on the world team {round}")
        })?;
        ensure(sum == sum_of(round, p, count), || {
            format!("iallreduce {round}")
        })?;
        ensure(bcast == data(round + 1, 0, count), || {
            format!("ibroadcast {round}")
        })?;
        let want: Vec<u64> = (0..p).flat_map(|m| data(round + 2, m, count)).collect();
        ensure(gathered == want, || format!("iallgather {round}"))?;
    }
    Ok(())
}

/// Two threads run collectives on two teams at the same time.
fn concurrent(world: &World) -> Check {
    let me = world.rank();
    let p = world.size();
    let t = world.team();
    let teams = [w(t.dup())?, w(t.dup())?];
    std::thread::scope(|s| {
        let handles: Vec<_> = teams
            .iter()
            .enumerate()
            .map(|(k, team)| {
                s.spawn(move || -> Check {
                    for round in 0..200u64 {
                        let tag = round * 2 + k as u64;
                        let c = 1 + (round as usize % 4) * 700;
                        let mut d = data(tag, me, c);
                        w(team.allreduce(&mut d, ReduceOp::Sum))?;
                        ensure(d == sum_of(tag, p, c), || {
                            format!("thread {k} round {round}")
                        })?;
                    }
                    Ok(())
                })
            })
            .collect();
        handles
            .into_iter()
            .try_for_each(|h| h.join().expect("thread runs"))
    })
}

fn mismatch(c: &Cause) -> bool {
    matches!(c, Cause::Mismatch(_))
}

/// The last PE passes one element more to allreduce: every PE fails,
/// naming a PE it disagrees with, and the job goes on.
fn mismatch_count(world: &World) -> Check {
    let (me, n) = (world.rank(), world.size());
    let t = world.team();
    let count = if me == n - 1 { 4 } else { 3 };
    let mut d = vec![1u64; count];
    expect_cause(t.allreduce(&mut d, ReduceOp::Sum), "allreduce", mismatch)?;
    // The team still works afterwards.
    let mut d = [1u64];
    w(t.allreduce(&mut d, ReduceOp::Sum))?;
    ensure(d[0] == n as u64, || format!("allreduce after: {}", d[0]))?;
    // A count too large for the world team's flat path against small ones.
    let count = if me == n - 1 { 100_000 } else { 3 };
    let mut d = vec![1u64; count];
    expect_cause(t.allreduce(&mut d, ReduceOp::Sum), "allreduce", mismatch)?;
    let mut d = [1u64];
    w(t.allreduce(&mut d, ReduceOp::Sum))?;
    ensure(d[0] == n as u64, || format!("allreduce after: {}", d[0]))?;
    // Two counts that the world team's flat path runs in different numbers
    // of parts: the members agree on the call before its second part, so
    // that they go on counting calls alike. (On the general path a reduce's
    // member that only sends may learn of it in the call after.)
    let count = if me == n - 1 { 12_000 } else { 8_000 };
    let mut d = vec![1u64; count];
    expect_cause(t.allreduce(&mut d, ReduceOp::Sum), "allreduce", mismatch)?;
    let mut d = vec![1u64; count];
    let calls = [t.reduce(0, &mut d, ReduceOp::Sum), t.barrier()];
    report("reduce of two counts", &calls, || false)?;
    // A broadcast's root leaves without waiting for anyone, whether its
    // block fits a slot or not (one part: a crowded root writes a larger
    // one once, where the others copy it): a member that disagrees fails
    // it, the others at the latest in the barrier after it, and every
    // member counts it as one call.
    for (mine, last) in [(8_000, 12_000), (3, 12_000), (12_000, 3)] {
        let count = if me == n - 1 { last } else { mine };
        let mut d = vec![1u64; count];
        let calls = [t.broadcast(0, &mut d), t.barrier()];
        report(&format!("broadcast of {mine} and {last}"), &calls, || false)?;
        let mut d = [1u64];
        w(t.allreduce(&mut d, ReduceOp::Sum))?;
        ensure(d[0] == n as u64, || format!("allreduce after: {}", d[0]))?;
    }
    // So do allgather and alltoall when the PEs outnumber the cores.
    let block = vec![1u64; count];
    let mut out = vec![0u64; n * count];
    expect_cause(t.allgather(&block, &mut out), "allgather", mismatch)?;
    let send = vec![1u64; n * count];
    expect_cause(t.alltoall(&send, &mut out), "alltoall", mismatch)?;
    let mut d = [1u64];
    w(t.allreduce(&mut d, ReduceOp::Sum))?;
    ensure(d[0] == n as u64, || format!("allreduce after: {}", d[0]))
}

/// PE 0 starts a non-blocking allreduce or allgather where the others
/// call the blocking one: the call matches and is right everywhere, whole
/// or in parts on the world team's flat path. So does a reduce whose root
/// starts it non-blocking, where the flat path runs it in parts: its
/// members agree on the call first.
fn mixed(world: &World) -> Check {
    let (me, n) = (world.rank(), world.size());
    let t = world.team();
    let mut d = data(9, me, 20_000);
    if me == 0 {
        w(world.scope(|s| s.ireduce(&t, 0, &mut d, ReduceOp::Sum)?.wait().map(drop)))?;
    } else {
        w(t.reduce(0, &mut d, ReduceOp::Sum))?;
    }
    ensure(me != 0 || d == sum_of(9, n, 20_000), || {
        "mixed reduce of 20000".to_string()
    })?;
    for count in [1, 3000, 12_000] {
        let mut d = data(7, me, count);
        if me == 0 {
            w(world.scope(|s| s.iallreduce(&t, &mut d, ReduceOp::Sum)?.wait().map(drop)))?;
        } else {
            w(t.allreduce(&mut d, ReduceOp::Sum))?;
        }
        ensure(d == sum_of(7, n, count), || {
            format!("mixed allreduce of {count}")
        })?;
        let block = data(10, me, count);
        let mut out = vec![0; n * count];
        if me == 0 {
            w(world.scope(|s| s.iallgather(&t, &block, &mut out)?.wait().map(drop)))?;
        } else {
            w(t.allgather(&block, &mut out))?;
        }
        let want: Vec<u64> = (0..n).flat_map(|j| data(10, j, count)).collect();
        ensure(out == want, || format!("mixed allgather of {count}"))?;
    }
    Ok(())
}

/// A broadcast that the last PE starts non-blocking (small, then larger
/// than the world team's flat path's slots), then a reduce that the root
/// starts non-blocking, then one that the last PE does, where the others
/// call them blocking. On the flat path the members that only send leave
/// such a call at once, so it fails on every PE, at the latest in the
/// barrier after it, instead of hanging (the last reduce at 2 PEs
/// matches: the root waits for the other PE and meets it on the general
/// path; with more, the PE that took it non-blocking may be done before
/// it notices); on the general path it matches. Either way the team works
/// afterwards.
fn mixed_rooted(world: &World) -> Check {
    let (me, n) = (world.rank(), world.size());
    let t = world.team();
    for count in [2, 20_000] {
        let mut d = vec![me as u64 + 1; count];
        let calls = [
            if me == n - 1 {
                world.scope(|s| s.ibroadcast(&t, 0, &mut d)?.wait().map(drop))
            } else {
                t.broadcast(0, &mut d)
            },
            t.barrier(),
        ];
        report(&format!("mixed broadcast of {count}"), &calls, || {
            d.iter().all(|&x| x == 1)
        })?;
    }
    let mut d = [1u64; 2];
    let calls = [
        if me == 0 {
            world.scope(|s| s.ireduce(&t, 0, &mut d, ReduceOp::Sum)?.wait().map(drop))
        } else {
            t.reduce(0, &mut d, ReduceOp::Sum)
        },
        t.barrier(),
    ];
    report("mixed reduce", &calls, || me != 0 || d == [n as u64; 2])?;
    // The same with a member that only sends taking the call non-blocking:
    // at 2 PEs the root meets it on the general path; with more, the
    // others leave the call on the flat path and fail it, and so does that
    // member if it finds them (in their own heaps when crowded, where they
    // write only into the root's) before its own send is done.
    let mut d = [1u64; 2];
    let calls = [
        if me == n - 1 {
            world.scope(|s| s.ireduce(&t, 0, &mut d, ReduceOp::Sum)?.wait().map(drop))
        } else {
            t.reduce(0, &mut d, ReduceOp::Sum)
        },
        t.barrier(),
    ];
    report("mixed reduce at a sender", &calls, || {
        me != 0 || d == [n as u64; 2]
    })?;
    let mut d = [1u64];
    w(t.allreduce(&mut d, ReduceOp::Sum))?;
    ensure(d[0] == n as u64, || format!("allreduce after: {}", d[0]))
}

/// Checks a call and the ones after it: every one done and `right`, or at
/// least one failed, every failure a disagreement (printed). `right` is
/// `|| false` where one of them must fail.
fn report(name: &str, calls: &[weft::Result<()>], right: impl Fn() -> bool) -> Check {
    let failed: Vec<&weft::Error> = calls.iter().filter_map(|r| r.as_ref().err()).collect();
    if failed.is_empty() {
        return ensure(right(), || {
            format!("{name}: no call failed, and the result is wrong")
        });
    }
    for e in failed {
        ensure(mismatch(&e.cause), || {
            format!("{name}: expected a mismatch, got {e}")
        })?;
        println!("expected error: {e}");
    }
    Ok(())
}

/// The last PE names another root, then PEs 0 and 1 name each other:
/// every PE fails, in the broadcast or at the latest in the call after the
/// one in which the news reaches it.
fn mismatch_root(world: &World) -> Check {
    let (me, n) = (world.rank(), world.size());
    let t = world.team();
    let root = if me == n - 1 { 1 } else { 0 };
    let mut d = [me as u64; 4];
    let mut x = [1u64];
    let calls = [
        t.broadcast(root, &mut d),
        t.barrier(),
        t.allreduce(&mut x, ReduceOp::Sum),
    ];
    // A mismatch in the broadcast or one of the two calls after it.
    report("broadcast of two roots", &calls, || false)?;
    // The last PE waits for every member where the others broadcast: the
    // root's block reaches it, and the receivers' calls (which, crowded,
    // they write only into their own heaps) are read there.
    let mut d = [me as u64; 4];
    let calls = [
        if me == n - 1 {
            t.allreduce(&mut d, ReduceOp::Sum)
        } else {
            t.broadcast(0, &mut d)
        },
        t.barrier(),
        t.allreduce(&mut x, ReduceOp::Sum),
    ];
    report("allreduce against broadcasts", &calls, || false)?;
    // PEs 0 and 1 each name the other the root: crowded, each then
    // prefers the other to leave the barrier after it first, and must
    // leave all the same.
    let root = usize::from(me == 0);
    let mut d = [me as u64; 4];
    let calls = [
        t.broadcast(root, &mut d),
        t.barrier(),
        t.allreduce(&mut x, ReduceOp::Sum),
    ];
    report("broadcast of roots that name each other", &calls, || false)?;
    let mut d = [1u64];
    w(t.allreduce(&mut d, ReduceOp::Sum))?;
    ensure(d[0] == n as u64, || format!("allreduce after: {}", d[0]))
}

/// The last PE passes another count to one broadcast of a long loop, in
/// which the root runs far ahead of the others (up to 255 calls on the
/// world team's flat path when the PEs outnumber the cores): that PE fails
/// in that broadcast, the root in a later call of the loop or in the
/// barrier after it, and the broadcasts that succeed are right. (The
/// other receivers check the last PE when they get to it, if its slot
/// still holds that call then: they need not fail.)
fn mismatch_ahead(world: &World) -> Check {
    let (me, n) = (world.rank(), world.size());
    let t = world.team();
    let mut calls = Vec::new();
    let mut right = true;
    for i in 0..300u64 {
        let count = if i == 10 && me == n - 1 { 20 } else { 4 };
        let mut d = vec![if me == 0 { i } else { u64::MAX }; count];
        let r = t.broadcast(0, &mut d);
        right &= r.is_err() || d.iter().all(|&x| x == i);
        calls.push(r);
    }
    calls.push(t.barrier());
    ensure(right, || "a broadcast that succeeded is wrong".into())?;
    report("broadcast loop with one count off", &calls, || {
        me != 0 && me != n - 1
    })?;
    let mut d = [1u64];
    w(t.allreduce(&mut d, ReduceOp::Sum))?;
    ensure(d[0] == n as u64, || format!("allreduce after: {}", d[0]))
}

/// A root outside the team is an error on every PE.
fn bad_root(world: &World) -> Check {
    let t = world.team();
    let n = t.size();
    let mut d = [0u8; 4];
    let invalid = |c: &Cause| matches!(c, Cause::Invalid(_));
    expect_cause(t.broadcast(n, &mut d), "broadcast", invalid)?;
    expect_cause(t.reduce(n + 3, &mut d, ReduceOp::Sum), "reduce", invalid)?;
    let mut out = vec![0u8; n * 4];
    expect_cause(t.allgather(&d, &mut out[1..]), "allgather", invalid)?;
    w(t.barrier())
}

/// The last PE exits instead of joining an allreduce, or with `block` an
/// alltoall of blocks of that many elements, larger than a slot of the
/// flat path (96 KB: attached, or in parts as `WEFT_EXCHANGE` says; 320
/// KB: attached, or through the wide slots): every other PE gets an error
/// naming it.
fn die(world: &World, block: Option<usize>) -> Check {
    let (me, n) = (world.rank(), world.size());
    w(world.barrier_all())?;
    if me == n - 1 {
        std::process::exit(0);
    }
    let gone = format!("PE {} has exited", n - 1);
    let named = |c: &Cause| c.to_string().contains(&gone);
    if let Some(c) = block {
        let send = vec![1u64; n * c];
        let mut out = vec![0u64; n * c];
        expect_cause(world.team().alltoall(&send, &mut out), "alltoall", named)?;
    } else {
        let mut d = [1u64; 16];
        expect_cause(
            world.team().allreduce(&mut d, ReduceOp::Sum),
            "allreduce",
            named,
        )?;
    }
    // Leave without finalizing: the job is broken.
    std::thread::sleep(std::time::Duration::from_millis(500));
    std::process::exit(0);
}
