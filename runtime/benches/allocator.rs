//! The deterministic symmetric-heap allocator: an alloc/free pair on a heap
//! with 1,000 live blocks.

use criterion::{criterion_group, criterion_main, Criterion};
use weft::heap::Allocator;

fn allocator(c: &mut Criterion) {
    let mut a = Allocator::new(0, 1 << 30);
    let live: Vec<usize> = (0..2000)
        .map(|i| a.alloc(64 + (i % 7) * 64).unwrap())
        .collect();
    for off in live.iter().step_by(2) {
        a.free(*off).unwrap();
    }
    c.bench_function("alloc_free_1000_live", |b| {
        b.iter(|| {
            let off = a.alloc(criterion::black_box(4096)).unwrap();
            a.free(off).unwrap();
        })
    });
}

criterion_group!(benches, allocator);
criterion_main!(benches);
