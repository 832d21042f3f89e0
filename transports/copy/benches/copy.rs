//! `weft_copy::copy` against `copy_from_slice` (the C library's `memcpy`)
//! at 4 KiB, 64 KiB and 1 MiB, with the destination 0, 16 and 1000 bytes
//! past the source modulo a page: 16 is the case this crate exists for.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};

const PAGE: usize = 4096;

fn copy(c: &mut Criterion) {
    let mut g = c.benchmark_group("copy");
    for size in [4 << 10, 64 << 10, 1 << 20] {
        let mut arena = vec![1u8; 2 * size + 3 * PAGE];
        let src_at = arena.as_ptr().align_offset(PAGE);
        for distance in [0, 16, 1000] {
            let dst_at = src_at + size.next_multiple_of(PAGE) + PAGE + distance;
            let (lo, hi) = arena.split_at_mut(dst_at);
            let (src, dst) = (&lo[src_at..src_at + size], &mut hi[..size]);
            g.throughput(Throughput::Bytes(size as u64));
            g.bench_function(format!("memcpy_{size}B_distance_{distance}"), |b| {
                b.iter(|| black_box(&mut *dst).copy_from_slice(black_box(src)))
            });
            g.bench_function(format!("weft_{size}B_distance_{distance}"), |b| {
                b.iter(|| weft_copy::copy(black_box(&mut *dst), black_box(src)))
            });
        }
    }
    g.finish();
}

criterion_group!(benches, copy);
criterion_main!(benches);
