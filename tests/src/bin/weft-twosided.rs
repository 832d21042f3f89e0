//! Two-sided test programs: `weft-twosided SCENARIO [SEED]` runs one
//! scenario of point-to-point messages and active messages on every rank,
//! checks its results and exits non-zero on any wrong answer.

use std::collections::{HashMap, HashSet};
use std::process::ExitCode;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use weft::{Cause, Handler, Handlers, Source, Tag, World};
use weft_tests::rng::Rng;
use weft_tests::{emulated, ensure, expect_cause, finish, w, Check};

/// The byte at `i` of a message identified by `id`.
fn pattern(id: u64, i: usize) -> u8 {
    (id.wrapping_mul(0x9e37_79b9).wrapping_add(i as u64 * 31) >> 3) as u8
}

fn fill(id: u64, buf: &mut [u8]) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b = pattern(id, i);
    }
}

fn check_bytes(id: u64, buf: &[u8], what: &dyn Fn() -> String) -> Check {
    match buf.iter().enumerate().find(|&(i, &b)| b != pattern(id, i)) {
        None => Ok(()),
        Some((i, &b)) => Err(format!(
            "{}: byte {i} is {b}, expected {}",
            what(),
            pattern(id, i)
        )),
    }
}

/// What active-message handlers saw: (source, sequence, length, checksum).
type Seen = Arc<Mutex<Vec<(usize, u64, usize, u64)>>>;

fn checksum(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// The world, for handlers that try (and must fail) to use it.
static WORLD: OnceLock<World> = OnceLock::new();

struct Program {
    record: Handler,
    reenter: Handler,
    explode: Handler,
    seen: Seen,
    refused: Arc<Mutex<Vec<String>>>,
}

fn handlers() -> (Handlers, Program) {
    let mut h = Handlers::new();
    let seen: Seen = Arc::default();
    let refused: Arc<Mutex<Vec<String>>> = Arc::default();
    let record = {
        let seen = seen.clone();
        h.register("record", move |ctx, header, payload| {
            let seq = u64::from_le_bytes(header[..8].try_into().unwrap());
            let sum = checksum(payload);
            seen.lock()
                .unwrap()
                .push((ctx.source(), seq, payload.len(), sum));
            ctx.reply(&sum.to_le_bytes());
        })
    };
    let reenter = {
        let refused = refused.clone();
        h.register("reenter", move |_ctx, _header, _payload| {
            let world = WORLD.get().expect("the world is set before requests");
            let mut r = refused.lock().unwrap();
            match world.progress() {
                Err(e) if matches!(e.cause, Cause::InHandler) => r.push(e.to_string()),
                other => r.push(format!("UNEXPECTED {other:?}")),
            }
            match world.recv(Source::Any, Tag(1), &mut [0u8; 4]) {
                Err(e) if matches!(e.cause, Cause::InHandler) => r.push(e.to_string()),
                other => r.push(format!("UNEXPECTED {other:?}")),
            }
            // Refused without taking the team's next call, so the barriers
            // after this handler still line up on every PE.
            match world.team().barrier() {
                Err(e) if matches!(e.cause, Cause::InHandler) => r.push(e.to_string()),
                other => r.push(format!("UNEXPECTED {other:?}")),
            }
        })
    };
    let explode = h.register("explode", |_ctx, _header, _payload| {
        panic!("this handler fails on purpose")
    });
    if std::env::var("TWOSIDED_EXTRA_HANDLER").is_ok_and(|r| r == rank_from_env()) {
        h.register("only-here", |_, _, _| {});
    }
    (
        h,
        Program {
            record,
            reenter,
            explode,
            seen,
            refused,
        },
    )
}

fn rank_from_env() -> String {
    std::env::var("PMI_RANK").unwrap_or_default()
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let scenario = args.next().unwrap_or_default();
    let seed: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(1);
    let (h, prog) = handlers();
    let world = match weft::init_with(h) {
        Ok(w) => WORLD.get_or_init(|| w),
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let result = match scenario.as_str() {
        "pingpong" => pingpong(world),
        "outstanding" => outstanding(world, seed),
        "am" => am(world, &prog),
        "stress" => stress(world, &prog, seed),
        "truncate" => truncate(world),
        "badargs" => badargs(world),
        "reenter" => reenter(world, &prog),
        "explode" => explode(world, &prog),
        "exit-early" => exit_early(world),
        "probe" => probe(world),
        "late" => late(world),
        other => Err(format!("unknown scenario {other:?}")),
    };
    finish(world, &scenario, result)
}

/// Message sizes to try: 0, then around every power of two up to `max`.
fn sizes(max: usize) -> Vec<usize> {
    let mut v = vec![0, 1, 2, 3];
    let mut p = 4;
    while p <= max {
        v.extend([p - 1, p, p + 1].into_iter().filter(|&s| s <= max));
        p *= 2;
    }
    v.dedup();
    v
}

/// Ping-pong between pairs (0,1), (2,3), ...: every size from 0 B to
/// 16 MiB, content checked both ways; also through sendrecv.
fn pingpong(world: &World) -> Check {
    let (me, n) = (world.rank(), world.size());
    let partner = me ^ 1;
    if partner >= n {
        return Ok(());
    }
    let max = if emulated() { 1 << 20 } else { 16 << 20 };
    let mut out = vec![0u8; max + 1];
    let mut inb = vec![0u8; max + 1];
    for size in sizes(max) {
        let id = size as u64 * 2;
        if me % 2 == 0 {
            fill(id, &mut out[..size]);
            w(world.send(partner, Tag(3), &out[..size]))?;
            let st = w(world.recv(partner, Tag(4), &mut inb[..size]))?;
            ensure(
                st.len == size && !st.truncated() && st.source == partner,
                || format!("pong of {size} bytes has status {st:?}"),
            )?;
            check_bytes(id + 1, &inb[..size], &|| format!("pong of {size} bytes"))?;
        } else {
            let st = w(world.recv(Source::Any, Tag::ANY, &mut inb[..size]))?;
            ensure(
                st.len == size && st.tag == Tag(3) && st.source == partner,
                || format!("ping of {size} bytes has status {st:?}"),
            )?;
            check_bytes(id, &inb[..size], &|| format!("ping of {size} bytes"))?;
            fill(id + 1, &mut out[..size]);
            w(world.send(partner, Tag(4), &out[..size]))?;
        }
    }
    for size in [0, 100, 5000, 1 << 20] {
        let id = (size as u64) << 8 | me as u64;
        fill(id, &mut out[..size]);
        let st = w(world.sendrecv(
            partner,
            Tag(9),
            &out[..size],
            partner,
            Tag(9),
            &mut inb[..size],
        ))?;
        ensure(st.len == size, || format!("sendrecv got {st:?}"))?;
        let pid = (size as u64) << 8 | partner as u64;
        check_bytes(pid, &inb[..size], &|| format!("sendrecv of {size} bytes"))?;
    }
    // Typed buffers: f64 and u32 elements.
    let xs: Vec<f64> = (0..1000).map(|i| i as f64 * 0.5 + me as f64).collect();
    let mut ys = vec![0.0f64; 1000];
    let st = w(world.sendrecv(partner, Tag(10), &xs, partner, Tag(10), &mut ys))?;
    ensure(st.count::<f64>() == 1000, || format!("typed status {st:?}"))?;
    ensure(
        ys.iter()
            .enumerate()
            .all(|(i, &y)| y == i as f64 * 0.5 + partner as f64),
        || "typed f64 exchange went wrong".into(),
    )
}

/// One planned message of the `outstanding` scenario.
#[derive(Clone, Copy)]
struct Planned {
    dest: usize,
    tag: u32,
    size: usize,
}

/// Whether messages from `s` to `r` are received with a source-only wildcard.
fn any_tag_pair(s: usize, r: usize, phase: u64) -> bool {
    (s + 2 * r + phase as usize) % 3 == 0
}

/// The messages PE `s` sends in `phase`, in posting order.
fn plan(seed: u64, phase: u64, s: usize, n: usize, count: usize) -> Vec<Planned> {
    let mut rng = Rng::new(seed ^ (phase << 40) ^ (s as u64) << 20);
    (0..count)
        .map(|_| {
            let dest = rng.below(n as u64) as usize;
            let tags = if any_tag_pair(s, dest, phase) { 4 } else { 8 };
            Planned {
                dest,
                tag: rng.below(tags) as u32,
                size: 16 + rng.below(6000) as usize,
            }
        })
        .collect()
}

/// Sends each rank has outstanding (1,000 under emulation).
fn per_rank() -> usize {
    if emulated() {
        1000
    } else {
        5000
    }
}

/// 10,000 outstanding operations per rank ([`per_rank`] isends and about as
/// many irecvs), posted in a random order with wildcards; checks that every
/// message arrives once, intact, and that messages of one (source, tag)
/// reach the receives in posting order.
fn outstanding(world: &World, seed: u64) -> Check {
    let (me, n) = (world.rank(), world.size());
    for phase in 0..2u64 {
        let mine = plan(seed, phase, me, n, per_rank());
        // Payload: source, tag, sequence within (source, dest, tag), then pattern.
        let mut next_seq: HashMap<(usize, u32), u32> = HashMap::new();
        let sends: Vec<Vec<u8>> = mine
            .iter()
            .map(|p| {
                let seq = next_seq.entry((p.dest, p.tag)).or_default();
                let mut b = vec![0u8; p.size];
                fill(msg_id(me, p.tag, *seq), &mut b);
                b[..4].copy_from_slice(&(me as u32).to_le_bytes());
                b[4..8].copy_from_slice(&p.tag.to_le_bytes());
                b[8..12].copy_from_slice(&seq.to_le_bytes());
                *seq += 1;
                b
            })
            .collect();
        // The receives: one per incoming message, with a wildcard that can
        // only match messages meant for it (see `any_tag_pair`), or all
        // (Any, Any) in phase 1.
        let mut specs: Vec<(Source, Tag)> = Vec::new();
        for s in 0..n {
            for p in plan(seed, phase, s, n, per_rank())
                .iter()
                .filter(|p| p.dest == me)
            {
                specs.push(if phase == 1 {
                    (Source::Any, Tag::ANY)
                } else if any_tag_pair(s, me, phase) {
                    (Source::Rank(s), Tag::ANY)
                } else if p.tag < 4 {
                    (Source::Rank(s), Tag(p.tag))
                } else {
                    (Source::Any, Tag(p.tag))
                });
            }
        }
        let mut rng = Rng::new(seed.wrapping_add(me as u64 * 7 + phase));
        rng.shuffle(&mut specs);
        let mut bufs: Vec<Vec<u8>> = specs.iter().map(|_| vec![0u8; 6016]).collect();
        // Interleave sends and receives at random.
        let mut order: Vec<bool> = std::iter::repeat_n(true, sends.len())
            .chain(std::iter::repeat_n(false, specs.len()))
            .collect();
        rng.shuffle(&mut order);
        let statuses = w(world.scope(|s| {
            let mut recvs = Vec::with_capacity(specs.len());
            let mut sreqs = Vec::with_capacity(sends.len());
            let (mut si, mut bufs_left) = (0, bufs.iter_mut());
            let mut ri = 0;
            for is_send in &order {
                if *is_send {
                    let p = mine[si];
                    sreqs.push(s.isend(p.dest, Tag(p.tag), &sends[si])?);
                    si += 1;
                } else {
                    let (src, tag) = specs[ri];
                    recvs.push(s.irecv(src, tag, bufs_left.next().unwrap())?);
                    ri += 1;
                }
            }
            s.wait_all(sreqs)?;
            s.wait_all(recvs)
        }))?;
        // Each receive, in posting order: what it got.
        let mut last: HashMap<(usize, u32), i64> = HashMap::new();
        let mut got: HashSet<(usize, u32, u32)> = HashSet::new();
        for (i, st) in statuses.iter().enumerate() {
            let b = &bufs[i][..st.len];
            let src = u32::from_le_bytes(b[..4].try_into().unwrap()) as usize;
            let tag = u32::from_le_bytes(b[4..8].try_into().unwrap());
            let seq = u32::from_le_bytes(b[8..12].try_into().unwrap());
            ensure(
                src == st.source && Tag(tag) == st.tag && !st.truncated(),
                || format!("receive {i} has status {st:?} for a message from {src} tag {tag}"),
            )?;
            let (want_src, want_tag) = specs[i];
            ensure(
                want_src == Source::Any || want_src == Source::Rank(src),
                || format!("receive {i} for {want_src:?} got source {src}"),
            )?;
            ensure(want_tag == Tag::ANY || want_tag == Tag(tag), || {
                format!("receive {i} for {want_tag:?} got tag {tag}")
            })?;
            let mut expect = b.to_vec();
            fill(msg_id(src, tag, seq), &mut expect);
            ensure(b[12..] == expect[12..], || {
                format!("message {seq} from {src} tag {tag} is corrupt")
            })?;
            let prev = last.entry((src, tag)).or_insert(-1);
            ensure(i64::from(seq) > *prev, || {
                format!("message {seq} from {src} tag {tag} overtook message {prev} (receive {i})")
            })?;
            *prev = i64::from(seq);
            ensure(got.insert((src, tag, seq)), || {
                format!("message {seq} from {src} tag {tag} arrived twice")
            })?;
        }
        w(world.barrier_all())?;
    }
    Ok(())
}

fn msg_id(source: usize, tag: u32, seq: u32) -> u64 {
    (source as u64) << 40 | u64::from(tag) << 32 | u64::from(seq)
}

/// Active messages of every size to every PE; handlers check content and
/// record order; replies carry a checksum.
fn am(world: &World, prog: &Program) -> Check {
    let (me, n) = (world.rank(), world.size());
    let sizes = sizes(if emulated() { 1 << 18 } else { 1 << 20 });
    let mut handles = Vec::new();
    let mut expected = Vec::new();
    for (seq, &size) in sizes.iter().enumerate() {
        for target in 0..n {
            let mut payload = vec![0u8; size];
            fill(msg_id(me, target as u32, seq as u32), &mut payload);
            let h =
                w(world.am_request(target, prog.record, &(seq as u64).to_le_bytes(), &payload))?;
            handles.push(h);
            expected.push(checksum(&payload));
        }
    }
    for (i, h) in handles.into_iter().enumerate() {
        let reply = w(h.wait())?;
        ensure(reply == expected[i].to_le_bytes(), || {
            format!("request {i}: reply {reply:?}")
        })?;
    }
    // Fire-and-forget requests, then wait for all.
    for target in 0..n {
        let h = w(world.am_request(target, prog.record, &(u64::MAX).to_le_bytes(), b"last"))?;
        drop(h);
    }
    w(world.am_wait_all())?;
    w(world.barrier_all())?;
    let seen = prog.seen.lock().unwrap();
    for source in 0..n {
        let from: Vec<_> = seen.iter().filter(|s| s.0 == source).collect();
        ensure(from.len() == sizes.len() + 1, || {
            format!(
                "{} requests from {source}, expected {}",
                from.len(),
                sizes.len() + 1
            )
        })?;
        for (seq, r) in from.iter().enumerate() {
            if seq == sizes.len() {
                ensure(r.1 == u64::MAX && r.2 == 4, || {
                    format!("last request {r:?}")
                })?;
                continue;
            }
            ensure(r.1 == seq as u64, || {
                format!("request {} from {source} ran in position {seq}", r.1)
            })?;
            let mut payload = vec![0u8; sizes[seq]];
            fill(msg_id(source, me as u32, seq as u32), &mut payload);
            ensure(r.2 == payload.len() && r.3 == checksum(&payload), || {
                format!("request {seq} from {source} arrived damaged")
            })?;
        }
    }
    Ok(())
}

/// A seeded random mix of point-to-point messages, active messages and puts
/// for `TWOSIDED_STRESS_SECONDS` (default 30) seconds. Every PE can compute
/// what every other does in a round, so each checks that exactly what was
/// sent to it arrived.
fn stress(world: &World, prog: &Program, seed: u64) -> Check {
    let (me, n) = (world.rank(), world.size());
    let seconds: u64 = std::env::var("TWOSIDED_STRESS_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    const SLOT: usize = 4096;
    let board = w(world.alloc::<u8>(SLOT * n))?;
    let start = Instant::now();
    let mut round = 0u64;
    loop {
        // This round's plan of PE `s`.
        let plan_of = |s: usize| {
            let mut rng = Rng::new(seed ^ round << 24 ^ s as u64);
            let msgs: Vec<(usize, usize)> = (0..rng.below(40))
                .map(|_| (rng.below(n as u64) as usize, rng.below(40_000) as usize))
                .collect();
            let ams: Vec<(usize, usize)> = (0..rng.below(40))
                .map(|_| (rng.below(n as u64) as usize, rng.below(20_000) as usize))
                .collect();
            let puts: Vec<(usize, usize, u8)> = (0..rng.below(10))
                .map(|_| {
                    let t = rng.below(n as u64) as usize;
                    (t, rng.below(SLOT as u64) as usize, rng.below(256) as u8)
                })
                .collect();
            (msgs, ams, puts)
        };
        let (msgs, ams, puts) = plan_of(me);
        let incoming: Vec<(usize, u32, usize)> = (0..n)
            .flat_map(|s| {
                let (m, _, _) = plan_of(s);
                m.into_iter()
                    .enumerate()
                    .filter(|(_, (d, _))| *d == me)
                    .map(move |(i, (_, size))| (s, i as u32, size))
                    .collect::<Vec<_>>()
            })
            .collect();
        let bodies: Vec<Vec<u8>> = msgs
            .iter()
            .enumerate()
            .map(|(i, &(_, size))| {
                let mut b = vec![0u8; size];
                fill(round << 32 | (me as u64) << 16 | i as u64, &mut b);
                b
            })
            .collect();
        let mut inbox: Vec<Vec<u8>> = incoming.iter().map(|&(_, _, s)| vec![0u8; s]).collect();
        let mut handles = Vec::new();
        w(world.scope(|sc| {
            let mut reqs = Vec::new();
            for (buf, &(s, i, _)) in inbox.iter_mut().zip(&incoming) {
                reqs.push(sc.irecv(s, Tag(i), buf)?);
            }
            for (i, (&(dest, _), body)) in msgs.iter().zip(&bodies).enumerate() {
                reqs.push(sc.isend(dest, Tag(i as u32), body)?);
            }
            for (i, &(target, size)) in ams.iter().enumerate() {
                let mut payload = vec![0u8; size];
                fill(
                    round << 32 | (me as u64) << 16 | 0x8000 | i as u64,
                    &mut payload,
                );
                let sum = checksum(&payload);
                let seq = round << 32 | i as u64;
                let h = world.am_request(target, prog.record, &seq.to_le_bytes(), &payload)?;
                handles.push((h, sum));
            }
            for &(t, at, v) in &puts {
                board.put(t, me * SLOT + at, &[v])?;
            }
            sc.wait_all(reqs).map(drop)
        }))?;
        for (i, buf) in inbox.iter().enumerate() {
            let (s, tag, _) = incoming[i];
            check_bytes(
                round << 32 | (s as u64) << 16 | u64::from(tag),
                buf,
                &|| format!("round {round}: message {tag} from {s}"),
            )?;
        }
        for (h, sum) in handles {
            let reply = w(h.wait())?;
            ensure(reply == sum.to_le_bytes(), || {
                format!("round {round}: bad reply")
            })?;
        }
        w(world.barrier_all())?;
        // Active messages: exactly those planned for this PE, each once.
        // (Requests of the next round may already have run here.)
        let mut seen: Vec<_> = {
            let mut all = prog.seen.lock().unwrap();
            let (this, rest) = all.drain(..).partition(|r| r.1 >> 32 == round);
            *all = rest;
            this
        };
        seen.sort();
        let mut want: Vec<(usize, u64, usize, u64)> = (0..n)
            .flat_map(|s| {
                let (_, a, _) = plan_of(s);
                a.into_iter()
                    .enumerate()
                    .filter(|(_, (t, _))| *t == me)
                    .map(move |(i, (_, size))| {
                        let mut p = vec![0u8; size];
                        fill(round << 32 | (s as u64) << 16 | 0x8000 | i as u64, &mut p);
                        (s, round << 32 | i as u64, size, checksum(&p))
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        want.sort();
        ensure(seen == want, || {
            format!(
                "round {round}: {} active messages ran, {} expected",
                seen.len(),
                want.len()
            )
        })?;
        // Puts: the last value each source wrote at each offset.
        for s in 0..n {
            let (_, _, p) = plan_of(s);
            let mut last: HashMap<usize, u8> = HashMap::new();
            for (_, at, v) in p.into_iter().filter(|x| x.0 == me) {
                last.insert(at, v);
            }
            for (at, v) in last {
                let mut got = [0u8];
                w(board.read_local(s * SLOT + at, &mut got))?;
                let got = got[0];
                ensure(got == v, || {
                    format!("round {round}: byte {at} from {s} is {got}, expected {v}")
                })?;
            }
        }
        // Rank 0 decides whether to go on; everyone learns it by message.
        let mut go = [u8::from(start.elapsed() < Duration::from_secs(seconds))];
        if me == 0 {
            for d in 1..n {
                w(world.send(d, Tag(Tag::MAX), &go))?;
            }
        } else {
            w(world.recv(0, Tag(Tag::MAX), &mut go))?;
        }
        w(world.barrier_all())?;
        round += 1;
        if go[0] == 0 {
            break;
        }
    }
    if me == 0 {
        println!("stress: seed {seed}, {round} rounds on {n} PEs");
    }
    Ok(())
}

/// A message longer than the buffer: the prefix lands, nothing past the
/// buffer is touched, and the status says truncated.
fn truncate(world: &World) -> Check {
    let (me, n) = (world.rank(), world.size());
    if n < 2 {
        return Ok(());
    }
    for size in [100usize, 5000, 300_000] {
        if me == 0 {
            let mut b = vec![0u8; size];
            fill(size as u64, &mut b);
            w(world.send(1, Tag(2), &b))?;
        } else if me == 1 {
            let mut buf = vec![0xeeu8; size];
            let short = size / 2;
            let st = w(world.recv(0, Tag(2), &mut buf[..short]))?;
            ensure(
                st.truncated() && st.len == short && st.message_len == size,
                || format!("truncated status {st:?}"),
            )?;
            check_bytes(size as u64, &buf[..short], &|| "truncated prefix".into())?;
            ensure(buf[short..].iter().all(|&b| b == 0xee), || {
                format!("a {size}-byte message wrote past a {short}-byte buffer")
            })?;
        }
    }
    Ok(())
}

/// Bad PEs, tags and handlers are errors naming the operation.
fn badargs(world: &World) -> Check {
    let n = world.size();
    let bad_pe = |c: &Cause| matches!(c, Cause::BadPe { pe, .. } if *pe == n);
    expect_cause(world.send(n, Tag(0), &[1u8]), "send", bad_pe)?;
    expect_cause(world.recv(n, Tag(0), &mut [0u8]), "recv", bad_pe)?;
    let bad_tag = |c: &Cause| matches!(c, Cause::BadTag { .. });
    expect_cause(world.send(0, Tag::ANY, &[1u8]), "send", bad_tag)?;
    expect_cause(world.send(0, Tag(Tag::MAX + 1), &[1u8]), "send", bad_tag)?;
    expect_cause(world.probe(0, Tag(Tag::MAX + 5)), "probe", bad_tag)?;
    let mut other = Handlers::new();
    for i in 0..10 {
        other.register(&format!("h{i}"), |_, _, _| {});
    }
    let unknown = other.register("unknown", |_, _, _| {});
    expect_cause(
        world.am_request(0, unknown, &[], &[]).map(drop),
        "am_request",
        |c| matches!(c, Cause::BadHandler { id: 10, .. }),
    )?;
    let (_, prog) = handlers();
    expect_cause(
        world.am_request(0, prog.record, &[0u8; 300], &[]).map(drop),
        "am_request",
        |c| matches!(c, Cause::Invalid(_)),
    )?;
    expect_cause(
        world.scope(|s| s.wait_any(&mut Vec::new())),
        "wait_any",
        |c| matches!(c, Cause::Invalid(_)),
    )
}

/// A handler calling back into the engine gets an error, not a deadlock.
fn reenter(world: &World, prog: &Program) -> Check {
    let target = (world.rank() + 1) % world.size();
    w(w(world.am_request(target, prog.reenter, &[], &[]))?.wait())?;
    w(world.barrier_all())?;
    let refused = prog.refused.lock().unwrap();
    ensure(refused.len() == 3, || format!("refusals: {refused:?}"))?;
    for r in refused.iter() {
        ensure(r.contains("inside an active-message handler"), || {
            format!("handler call gave {r}")
        })?;
    }
    Ok(())
}

/// A handler that panics breaks its PE's engine with an error naming it.
fn explode(world: &World, prog: &Program) -> Check {
    if world.rank() == 0 && world.size() > 1 {
        let h = w(world.am_request(1, prog.explode, &[], &[]))?;
        // PE 1 fails and the launcher stops the job; this wait ends with it.
        return w(h.wait()).map(drop);
    }
    world.barrier_all().map_err(|e| e.to_string())
}

/// The last PE leaves without finalizing while the others still expect a
/// message from it: they get an error naming it.
fn exit_early(world: &World) -> Check {
    let (me, n) = (world.rank(), world.size());
    w(world.barrier_all())?;
    if me == n - 1 {
        w(world.send(0, Tag(1), &[1u8; 10]))?;
        std::process::exit(0);
    }
    if me == 0 {
        w(world.recv(n - 1, Tag(1), &mut [0u8; 10]))?;
    }
    let r = if me % 2 == 0 {
        world.recv(n - 1, Tag(2), &mut [0u8; 10]).map(drop)
    } else {
        world.recv(Source::Any, Tag::ANY, &mut [0u8; 10]).map(drop)
    };
    expect_cause(
        r,
        "recv",
        |c| matches!(c, Cause::PeerGone { pe, .. } if *pe == n - 1),
    )?;
    // Stay a while, so that the other survivors see only the PE that left
    // (a peer on another node is found gone by probes, a little later on
    // some PEs than on others).
    std::thread::sleep(Duration::from_secs(3));
    std::process::exit(0);
}

/// probe and iprobe see a message without receiving it.
fn probe(world: &World) -> Check {
    let (me, n) = (world.rank(), world.size());
    if n < 2 {
        return Ok(());
    }
    let (sixes, fives) = ([7u32; 33], [8u32; 11]);
    if me == 1 {
        // Both outstanding: above the eager limit a send waits for its receive.
        w(world.scope(|s| {
            s.isend(0, Tag(6), &sixes)?;
            s.isend(0, Tag(5), &fives)?;
            Ok(())
        }))?;
    }
    if me == 0 {
        let st = w(world.probe(Source::Any, Tag(5)))?;
        ensure(st.source == 1 && st.message_len == 44, || {
            format!("probe {st:?}")
        })?;
        let st = w(world.iprobe(1, Tag::ANY))?.ok_or("iprobe found nothing")?;
        ensure(st.tag == Tag(6) && st.len == 132, || {
            format!("iprobe {st:?}")
        })?;
        let mut a = [0u32; 11];
        let mut b = [0u32; 33];
        w(world.recv(1, Tag(5), &mut a))?;
        w(world.recv(1, Tag(6), &mut b))?;
        ensure(a == [8; 11] && b == [7; 33], || {
            "probed messages changed".into()
        })?;
        ensure(w(world.iprobe(Source::Any, Tag::ANY))?.is_none(), || {
            "iprobe found a message already received".into()
        })?;
    }
    Ok(())
}

/// Pairs (0,1), (2,3), ...: the receiver waits long enough to reach its
/// sleeping stage (on verbs, asleep on the lane's event descriptor) before
/// each message comes; the messages and the replies to them arrive intact.
fn late(world: &World) -> Check {
    let (me, n) = (world.rank(), world.size());
    let partner = me ^ 1;
    if partner >= n {
        return Ok(());
    }
    for round in 0..3u32 {
        let (sender, value) = (round % 2 == me as u32 % 2, round * 1000 + me as u32);
        if sender {
            std::thread::sleep(Duration::from_millis(150));
            w(world.send(partner, Tag(round), &[value; 3]))?;
            let mut back = [0u32; 3];
            w(world.recv(partner, Tag(round), &mut back))?;
            ensure(back == [value + 1; 3], || {
                format!("reply {back:?} in round {round}")
            })?;
        } else {
            let mut got = [0u32; 3];
            w(world.recv(partner, Tag(round), &mut got))?;
            let want = round * 1000 + partner as u32;
            ensure(got == [want; 3], || format!("got {got:?} in round {round}"))?;
            w(world.send(partner, Tag(round), &[want + 1; 3]))?;
        }
    }
    w(world.barrier_all())
}
