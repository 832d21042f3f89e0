//! Every algorithm of every collective, run by the in-process simulator on
//! p members for every p from 1 to 65 and for 128, 1000 and 1024, checked
//! against a sequential reference; reductions with every built-in
//! operation on every element type, and a non-commutative user operation.

use std::sync::Arc;

use weft_collectives::model::LogGP;
use weft_collectives::op::{Combiner, Element, ReduceOp};
use weft_collectives::select::{build, choose, Call, Network};
use weft_collectives::sim::{self, Member};
use weft_collectives::{reduce, Algorithm, Collective};

fn team_sizes() -> impl Iterator<Item = usize> {
    (1..=65).chain([128, 1000, 1024])
}

/// Counts per block or vector to try at team size `p`.
fn counts(p: usize) -> &'static [usize] {
    match p {
        0..=65 => &[0, 1, 3, 17],
        _ => &[1, 5],
    }
}

/// A member's input and initial output for `call`, from `gen(member, i)`.
fn buffers(call: &Call, elem_bytes: &dyn Fn(usize, usize) -> Vec<u8>) -> (Vec<u8>, Vec<u8>) {
    let (r, p, c) = (call.rank, call.p, call.count);
    let vec = |len: usize| -> Vec<u8> { (0..len).flat_map(|i| elem_bytes(r, i)).collect() };
    match call.collective {
        Collective::Barrier => (vec![], vec![]),
        Collective::Broadcast
        | Collective::Reduce
        | Collective::Allreduce
        | Collective::Scan
        | Collective::Exscan => (vec![], vec(c)),
        Collective::Allgather => (vec(c), vec![0; p * c * call.elem]),
        Collective::Alltoall => (vec(p * c), vec![0; p * c * call.elem]),
        Collective::Gather => {
            let out = if r == call.root { p * c * call.elem } else { 0 };
            (vec(c), vec![0; out])
        }
        Collective::Scatter => {
            let inp = if r == call.root { vec(p * c) } else { vec![] };
            (inp, vec![0; c * call.elem])
        }
        Collective::ReduceScatter => (vec(p * c), vec![0; c * call.elem]),
    }
}

/// Left-to-right reduction of `parts` (all the same length).
fn fold(combiner: &Combiner, parts: &[&[u8]]) -> Vec<u8> {
    let mut acc = parts[0].to_vec();
    for p in &parts[1..] {
        combiner.combine(&mut acc, p, false);
    }
    acc
}

/// What every member's output must be.
fn reference(
    call: &Call,
    inputs: &[Vec<u8>],
    outputs: &[Vec<u8>],
    combiner: Option<&Combiner>,
) -> Vec<Vec<u8>> {
    let (p, root) = (call.p, call.root);
    let bb = call.count * call.elem;
    let reduced = |range: std::ops::Range<usize>, of: &[Vec<u8>]| {
        let parts: Vec<&[u8]> = of[range].iter().map(Vec::as_slice).collect();
        fold(combiner.expect("a reducing collective"), &parts)
    };
    (0..p)
        .map(|r| match call.collective {
            Collective::Barrier => vec![],
            Collective::Broadcast => outputs[root].clone(),
            Collective::Reduce if r == root => reduced(0..p, outputs),
            Collective::Reduce => outputs[r].clone(),
            Collective::Allreduce => reduced(0..p, outputs),
            Collective::Scan => reduced(0..r + 1, outputs),
            Collective::Exscan if r == 0 => outputs[0].clone(),
            Collective::Exscan => reduced(0..r, outputs),
            Collective::Allgather => inputs.concat(),
            Collective::Gather if r == root => inputs.concat(),
            Collective::Gather => vec![],
            Collective::Alltoall => (0..p)
                .flat_map(|j| inputs[j][r * bb..(r + 1) * bb].to_vec())
                .collect(),
            Collective::Scatter => inputs[root][r * bb..(r + 1) * bb].to_vec(),
            Collective::ReduceScatter => {
                let blocks: Vec<&[u8]> = inputs.iter().map(|i| &i[r * bb..(r + 1) * bb]).collect();
                fold(combiner.expect("a reducing collective"), &blocks)
            }
        })
        .collect()
}

/// Runs `algorithm` on every member of `template`'s team and checks it.
fn check(
    template: Call,
    algorithm: Algorithm,
    combiner: Option<&Combiner>,
    gen: &dyn Fn(usize, usize) -> Vec<u8>,
) {
    let p = template.p;
    let calls: Vec<Call> = (0..p).map(|rank| Call { rank, ..template }).collect();
    let mut inputs = Vec::new();
    let mut outputs = Vec::new();
    let members: Vec<Member> = calls
        .iter()
        .map(|call| {
            let schedule = build(call, algorithm).expect("the algorithm applies");
            let (input, output) = buffers(call, gen);
            inputs.push(input.clone());
            outputs.push(output.clone());
            Member {
                schedule: Arc::new(schedule),
                input,
                output,
            }
        })
        .collect();
    let got = sim::run(members, combiner.cloned())
        .unwrap_or_else(|e| panic!("{algorithm} {template:?}: {e:?}"));
    let want = reference(&template, &inputs, &outputs, combiner);
    for r in 0..p {
        assert!(
            got[r] == want[r],
            "{} by {algorithm}, p = {p}, member {r}, count {}, root {}: output differs",
            template.collective,
            template.count,
            template.root
        );
    }
}

fn u64_bytes(r: usize, i: usize) -> Vec<u8> {
    ((r as u64 * 1_000_003) ^ (i as u64 * 7919))
        .to_ne_bytes()
        .to_vec()
}

fn call(collective: Collective, p: usize, root: usize, count: usize, elem: usize) -> Call {
    Call {
        collective,
        rank: 0,
        p,
        root,
        count,
        elem,
        commutative: true,
    }
}

#[test]
fn data_movement_collectives_match_the_reference() {
    let movers = [
        Collective::Barrier,
        Collective::Broadcast,
        Collective::Allgather,
        Collective::Alltoall,
        Collective::Gather,
        Collective::Scatter,
    ];
    for p in team_sizes() {
        for &count in counts(p) {
            for c in movers {
                let roots: &[usize] = match c {
                    Collective::Broadcast | Collective::Gather | Collective::Scatter => {
                        &[0, p / 2, p - 1]
                    }
                    _ => &[0],
                };
                for &root in roots {
                    for &a in c.algorithms() {
                        if p >= 1000 && c == Collective::Alltoall && a == Algorithm::Bruck {
                            continue; // covered up to 128; p^2 log p copies beyond
                        }
                        check(call(c, p, root, count, 8), a, None, &u64_bytes);
                    }
                }
            }
        }
    }
}

#[test]
fn reductions_match_the_reference_at_every_size() {
    let sum = Combiner::builtin::<u64>(ReduceOp::Sum).unwrap();
    for p in team_sizes() {
        for &count in counts(p) {
            for c in Collective::ALL.into_iter().filter(|c| c.reduces()) {
                for root in [0, p - 1] {
                    if root != 0 && c != Collective::Reduce {
                        continue;
                    }
                    for &a in c.algorithms() {
                        check(call(c, p, root, count, 8), a, Some(&sum), &u64_bytes);
                    }
                }
            }
        }
    }
}

/// 2x2 matrices over wrapping u32: associative, not commutative.
type Mat = [u32; 4];

fn matmul(a: &Mat, b: &Mat) -> Mat {
    let m = |x: u32, y: u32| x.wrapping_mul(y);
    [
        m(a[0], b[0]).wrapping_add(m(a[1], b[2])),
        m(a[0], b[1]).wrapping_add(m(a[1], b[3])),
        m(a[2], b[0]).wrapping_add(m(a[3], b[2])),
        m(a[2], b[1]).wrapping_add(m(a[3], b[3])),
    ]
}

#[test]
fn a_non_commutative_operation_is_combined_in_member_order() {
    let op = Combiner::user(false, matmul);
    let gen = |r: usize, i: usize| {
        let m: Mat = [1, (r + i) as u32 % 5, (r * 3) as u32 % 7, 2];
        bytemuck::bytes_of(&m).to_vec()
    };
    for p in team_sizes().filter(|&p| p <= 65 || p == 128) {
        for c in Collective::ALL.into_iter().filter(|c| c.reduces()) {
            for root in [0, p / 2] {
                if root != 0 && c != Collective::Reduce {
                    continue;
                }
                let template = Call {
                    commutative: false,
                    ..call(c, p, root, 3, 16)
                };
                let a = choose(&template, &Network::of(&LogGP::CLUSTER));
                assert!(!a.needs_commutative(), "{c}: chose {a}");
                for &a in c.algorithms().iter().filter(|a| !a.needs_commutative()) {
                    check(template, a, Some(&op), &gen);
                }
            }
        }
    }
}

#[test]
fn a_long_binomial_reduce_goes_in_segments_and_matches_the_reference() {
    let sum = Combiner::builtin::<u64>(ReduceOp::Sum).unwrap();
    let op = Combiner::user(false, matmul);
    let gen = |r: usize, i: usize| {
        let m: Mat = [1, (r + i) as u32 % 5, (r * 3) as u32 % 7, 2];
        bytemuck::bytes_of(&m).to_vec()
    };
    // Two and a half segments, so the last one is shorter.
    let bytes = 5 * reduce::SEGMENT / 2;
    for p in [2, 3, 4, 5, 8] {
        for root in [0, p / 2] {
            let c = call(Collective::Reduce, p, root, bytes / 8 + 1, 8);
            assert_eq!(reduce::segments(c.bytes()), 3);
            check(c, Algorithm::Binomial, Some(&sum), &u64_bytes);
            let ordered = Call {
                commutative: false,
                ..call(Collective::Reduce, p, root, bytes / 16 + 1, 16)
            };
            check(ordered, Algorithm::Binomial, Some(&op), &gen);
        }
    }
}

/// Values every order of combination gives exactly.
fn exact<T: Element>(op: ReduceOp, from: impl Fn(i32) -> T) -> impl Fn(usize, usize) -> Vec<u8> {
    move |r, i| {
        let v = match op {
            ReduceOp::Prod => [1, 2, 1, -1][(r + i) % 4],
            _ => ((r * 131 + i * 7 + 1) % 100) as i32,
        };
        bytemuck::bytes_of(&from(v)).to_vec()
    }
}

fn every_op_on<T: Element>(from: impl Fn(i32) -> T + Copy) {
    let elem = std::mem::size_of::<T>();
    for op in ReduceOp::ALL {
        let Ok(combiner) = Combiner::builtin::<T>(op) else {
            assert!(T::KIND.is_float());
            continue;
        };
        let gen = exact(op, from);
        for p in [1, 2, 3, 4, 5, 7, 8, 13, 16] {
            for c in Collective::ALL.into_iter().filter(|c| c.reduces()) {
                for &a in c.algorithms() {
                    check(call(c, p, p / 2, 5, elem), a, Some(&combiner), &gen);
                }
            }
        }
    }
}

#[test]
fn every_builtin_operation_on_every_element_type() {
    every_op_on(|v| v as i8);
    every_op_on(|v| v as i16);
    every_op_on(|v| v);
    every_op_on(i64::from);
    every_op_on(i128::from);
    every_op_on(|v| v as isize);
    every_op_on(|v| v as u8);
    every_op_on(|v| v as u16);
    every_op_on(|v| v as u32);
    every_op_on(|v| v as u64);
    every_op_on(|v| v as u128);
    every_op_on(|v| v as usize);
    every_op_on(|v| v as f32);
    every_op_on(f64::from);
}

#[test]
fn every_member_gets_bit_identical_floating_point_results() {
    let sum = Combiner::builtin::<f64>(ReduceOp::Sum).unwrap();
    for p in (1..=33).chain([64, 100]) {
        for &a in Collective::Allreduce.algorithms() {
            let members: Vec<Member> = (0..p)
                .map(|rank| {
                    let c = Call {
                        rank,
                        ..call(Collective::Allreduce, p, 0, 37, 8)
                    };
                    let output: Vec<u8> = (0..37)
                        .flat_map(|i| {
                            let x = ((rank * 37 + i) as f64 * 0.618_033_988_7).sin() * 1e3;
                            x.to_ne_bytes()
                        })
                        .collect();
                    Member {
                        schedule: Arc::new(build(&c, a).unwrap()),
                        input: vec![],
                        output,
                    }
                })
                .collect();
            let outs = sim::run(members, Some(sum.clone())).unwrap();
            assert!(outs.iter().all(|o| *o == outs[0]), "{a}, p = {p}");
        }
    }
}

#[test]
fn members_that_disagree_on_the_size_are_caught() {
    let sum = Combiner::builtin::<u64>(ReduceOp::Sum).unwrap();
    let members: Vec<Member> = (0..4)
        .map(|rank| {
            let count = if rank == 2 { 3 } else { 2 };
            let c = Call {
                rank,
                ..call(Collective::Allreduce, 4, 0, count, 8)
            };
            Member {
                schedule: Arc::new(build(&c, Algorithm::RecursiveDoubling).unwrap()),
                input: vec![],
                output: vec![0; count * 8],
            }
        })
        .collect();
    match sim::run(members, Some(sum)) {
        Err(sim::SimError::Member { error, .. }) => {
            assert!(matches!(error, weft_collectives::Error::Length { .. }))
        }
        other => panic!("expected a length error, got {other:?}"),
    }
}
