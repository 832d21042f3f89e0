//! The shared-memory message ring: one send + one receive of 8 B, 4 KiB and
//! the largest payload in one thread (the cost of the protocol itself, no cache-line transfer).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use weft_transport::shm::ring::{Consumer, Producer, MAX_PAYLOAD, RING_BYTES};

fn ring(c: &mut Criterion) {
    let mut mem = vec![[0u64; 8]; RING_BYTES / 64];
    let base = mem.as_mut_ptr().cast::<u8>();
    // SAFETY: `mem` is zeroed, 64-byte aligned, RING_BYTES long and outlives both ends.
    let (mut tx, mut rx) = unsafe { (Producer::from_raw(base), Consumer::from_raw(base)) };
    let mut g = c.benchmark_group("shm_ring");
    for size in [8usize, 4096, MAX_PAYLOAD] {
        let payload = vec![7u8; size];
        g.throughput(Throughput::Elements(1));
        g.bench_function(format!("send_recv_{size}B"), |b| {
            b.iter(|| {
                assert!(tx.try_send(1, &payload));
                rx.try_recv(|m| {
                    criterion::black_box(m.payload);
                })
                .unwrap()
            })
        });
    }
    g.finish();
    drop(mem);
}

criterion_group!(benches, ring);
criterion_main!(benches);
