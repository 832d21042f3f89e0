//! Two PEs in one process over a real RDMA device. They need one, so they
//! are ignored by default; `scripts/test-verbs.sh` runs them inside a VM
//! with a Soft-RoCE device (`--ignored verbs`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::shm::{create_segment, SegmentLayout};

const HEAP: usize = 1 << 20;

/// Two connected PEs, each with its own segment and transport.
fn pair(tag: &str) -> (VerbsTransport, VerbsTransport, Vec<Arc<Segment>>) {
    pair_with(tag, &VerbsOptions::default())
}

/// [`pair`] opened with `options`.
fn pair_with(
    tag: &str,
    options: &VerbsOptions,
) -> (VerbsTransport, VerbsTransport, Vec<Arc<Segment>>) {
    let job = format!("v{tag}{}", std::process::id());
    let layout = SegmentLayout {
        nranks: 2,
        heap_size: HEAP,
    };
    let segs: Vec<Arc<Segment>> = (0..2)
        .map(|r| Arc::new(create_segment(&job, r, layout).unwrap()))
        .collect();
    for s in &segs {
        s.unlink().unwrap();
    }
    let mut ts: Vec<VerbsTransport> = (0..2)
        .map(|r| VerbsTransport::open(segs[r].clone(), layout, r, 2, options).unwrap())
        .collect();
    let addrs: Vec<Vec<u8>> = ts.iter().map(VerbsTransport::address).collect();
    for t in &mut ts {
        t.connect(&addrs).unwrap();
    }
    let b = ts.pop().unwrap();
    (ts.pop().unwrap(), b, segs)
}

/// PE `pe`'s heap bytes `at..at + len`, read from its mapping.
fn heap(segs: &[Arc<Segment>], pe: usize, at: usize, len: usize) -> Vec<u8> {
    let layout = SegmentLayout {
        nranks: 2,
        heap_size: HEAP,
    };
    // SAFETY: the range lies in PE `pe`'s heap, which the segment maps, and
    // no transfer into it is in flight (the callers quiet first).
    unsafe { std::slice::from_raw_parts(segs[pe].as_ptr().add(layout.heap_at() + at), len) }
        .to_vec()
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[test]
fn verbs_ack_timeout_out_of_range_is_refused() {
    let layout = SegmentLayout {
        nranks: 1,
        heap_size: HEAP,
    };
    let seg = Arc::new(create_segment(&format!("vto{}", std::process::id()), 0, layout).unwrap());
    seg.unlink().unwrap();
    for bad in [0, 32] {
        let options = VerbsOptions {
            ack_timeout: Some(bad),
            ..VerbsOptions::default()
        };
        let Err(e) = VerbsTransport::open(seg.clone(), layout, 0, 1, &options) else {
            panic!("ACK timeout exponent {bad} accepted");
        };
        assert!(e.to_string().contains("ACK timeout exponent"), "{e}");
    }
}

#[test]
#[ignore = "needs an RDMA device"]
fn verbs_with_a_short_ack_timeout() {
    let options = VerbsOptions {
        ack_timeout: Some(14),
        ..VerbsOptions::default()
    };
    let (a, _b, segs) = pair_with("ack", &options);
    let data = pattern(100_000, 7);
    a.put(1, 0, &data).unwrap();
    a.quiet().unwrap();
    assert_eq!(heap(&segs, 1, 0, data.len()), data);
}

#[test]
#[ignore = "needs an RDMA device"]
fn verbs_put_and_get_of_every_path() {
    let (a, b, segs) = pair("rma");
    // Inline, bounce slot, registered source, and a put to itself.
    for (i, len) in [16usize, 4000, 200_000].into_iter().enumerate() {
        let data = pattern(len, i as u8);
        a.put(1, 1000 * i, &data).unwrap();
        a.quiet().unwrap();
        assert_eq!(heap(&segs, 1, 1000 * i, len), data, "put of {len} bytes");
        let mut back = vec![0u8; len];
        // SAFETY: `back` lives until the quiet below.
        unsafe { b.get(1, 1000 * i, back.as_mut_ptr(), len).unwrap() };
        b.quiet().unwrap();
        assert_eq!(
            back, data,
            "get of {len} bytes through PE 1's own queue pair"
        );
    }
    a.put(0, 512_000, b"self").unwrap();
    a.quiet().unwrap();
    assert_eq!(heap(&segs, 0, 512_000, 4), b"self");
    let e = a.put(1, HEAP - 2, b"abcd").unwrap_err();
    assert!(
        matches!(e, TransportError::OutOfBounds { peer: 1, .. }),
        "{e}"
    );
    // Put with signal: once the signal shows, so do the bytes.
    let data = pattern(3000, 9);
    a.put_signal(1, 4096, &data, 8192, 77).unwrap();
    assert_eq!(
        b.atomic(1, 8192, AtomicWidth::W64, AtomicOp::Fetch)
            .unwrap(),
        77
    );
    assert_eq!(heap(&segs, 1, 4096, 3000), data);
}

#[test]
#[ignore = "needs an RDMA device"]
fn verbs_atomics_native_and_emulated() {
    let (a, b, _segs) = pair("amo");
    let w64 = AtomicWidth::W64;
    assert_eq!(a.atomic(1, 64, w64, AtomicOp::FetchAdd(5)).unwrap(), 0);
    assert_eq!(b.atomic(1, 64, w64, AtomicOp::FetchAdd(7)).unwrap(), 5);
    let cas = AtomicOp::CompareSwap {
        compare: 12,
        value: 40,
    };
    assert_eq!(a.atomic(1, 64, w64, cas).unwrap(), 12);
    assert_eq!(a.atomic(1, 64, w64, AtomicOp::Swap(3)).unwrap(), 40);
    assert_eq!(a.atomic(1, 64, w64, AtomicOp::FetchXor(6)).unwrap(), 3);
    assert_eq!(a.atomic(1, 64, w64, AtomicOp::Fetch).unwrap(), 5);
    // The two halves of one word stay independent.
    let w32 = AtomicWidth::W32;
    assert_eq!(
        a.atomic(1, 128, w32, AtomicOp::FetchAdd(0xffff_ffff))
            .unwrap(),
        0
    );
    assert_eq!(a.atomic(1, 132, w32, AtomicOp::FetchOr(0x10)).unwrap(), 0);
    assert_eq!(
        a.atomic(1, 128, w32, AtomicOp::FetchAdd(1)).unwrap(),
        0xffff_ffff
    );
    assert_eq!(
        a.atomic(1, 132, w32, AtomicOp::FetchAnd(0x30)).unwrap(),
        0x10
    );
    assert_eq!(a.atomic(1, 128, w64, AtomicOp::Fetch).unwrap(), 0x10 << 32);
    let e = a.atomic(1, 130, w32, AtomicOp::Fetch).unwrap_err();
    assert!(matches!(e, TransportError::Misaligned { .. }), "{e}");
}

#[test]
#[ignore = "needs an RDMA device"]
fn verbs_messages_keep_order_and_credits_come_back() {
    // Headers whose upper halves repeat in runs, so that messages go both
    // with their whole header and with its lower half as immediate data;
    // payloads from empty to the largest, inline and through bounce slots.
    let header = |n: u64| (n / 7 % 3) << 32 | n;
    let size = |n: u64| match n % 50 {
        0 => 0,
        49 => RECV_SIZE - 8,
        _ => (n as usize * 37) % (RECV_SIZE - 8),
    };
    let (a, b, _segs) = pair("msg");
    let mut sent = 0u64;
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while got.len() < 1000 {
        assert!(
            Instant::now() < deadline,
            "messages stopped flowing at {}",
            got.len()
        );
        // Send until the credits run out, then let the receiver catch up.
        while sent < 1000 {
            let payload = pattern(size(sent), sent as u8);
            match a.send(1, header(sent), &payload) {
                Ok(()) => sent += 1,
                Err(TransportError::WouldBlock { peer: 1 }) => break,
                Err(e) => panic!("send: {e}"),
            }
        }
        b.poll(&mut |m| {
            assert_eq!(m.source, 0);
            let n = got.len() as u64;
            assert_eq!(m.header, header(n), "message {n}");
            assert_eq!(m.payload, pattern(size(n), n as u8), "message {n}");
            got.push(n);
        })
        .unwrap();
        a.poll(&mut |_| panic!("nothing is sent to PE 0")).unwrap();
    }
    assert_eq!(got, (0..1000).collect::<Vec<_>>());
    let e = a.send(1, 0, &vec![0; RECV_SIZE]).unwrap_err();
    assert!(matches!(e, TransportError::MessageTooLarge { .. }), "{e}");
}

#[test]
#[ignore = "needs an RDMA device"]
fn verbs_rendezvous_reads_and_bad_keys() {
    let (a, b, _segs) = pair("rdv");
    let data = pattern(300_000, 9);
    let key = a.expose(data.as_ptr(), data.len()).unwrap();
    let mut dst = vec![0u8; data.len()];
    b.read_remote(0, data.as_ptr() as u64, key, &mut dst)
        .unwrap();
    assert_eq!(dst, data);
    a.unexpose(key);
    // The registration is gone: reading it again is an error naming the
    // peer and the operation, and so is everything after it on that queue
    // pair, never a hang.
    let e = b
        .read_remote(0, data.as_ptr() as u64, key, &mut dst)
        .unwrap_err();
    assert!(
        matches!(
            e,
            TransportError::Completion {
                peer: 0,
                op: "read",
                ..
            }
        ),
        "{e}"
    );
    let e = b.put(0, 0, b"after").unwrap_err();
    assert!(e.to_string().contains("PE 0"), "{e}");
}

/// Whether `fd` becomes readable within `ms` milliseconds.
fn readable(fd: RawFd, ms: i32) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: `p` is one live pollfd.
    unsafe { libc::poll(&mut p, 1, ms) == 1 }
}

#[test]
#[ignore = "needs an RDMA device"]
fn verbs_an_armed_lane_announces_a_message_and_rearming_clears_it() {
    let (a, b, _segs) = pair("evt");
    let fd = b.event_fd().expect("verbs lanes have an event descriptor");
    b.arm().unwrap();
    assert!(!readable(fd, 0), "nothing arrived yet");
    a.send(1, 7, b"wake up").unwrap();
    assert!(
        readable(fd, 30_000),
        "a message to an armed lane raised no event"
    );
    let mut got = Vec::new();
    b.poll(&mut |m| got.push((m.header, m.payload.to_vec())))
        .unwrap();
    assert_eq!(got, vec![(7, b"wake up".to_vec())]);
    // Arming again takes the event, so the descriptor is quiet until the
    // next completion: here PE 1's own signaled request.
    b.arm().unwrap();
    assert!(!readable(fd, 0), "the event was not taken");
    assert_eq!(
        b.atomic(0, 64, AtomicWidth::W64, AtomicOp::FetchAdd(1))
            .unwrap(),
        0
    );
    assert!(readable(fd, 30_000), "a completion raised no event");
}
