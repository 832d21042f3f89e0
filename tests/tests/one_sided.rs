//! Every one-sided operation, checked on 1, 2, 3 and 4 ranks (4 ranks
//! oversubscribe a 2-core machine: waiting must back off).

use weft_tests::{leftover_segments, ranks, scenario};

const SMALL_HEAP: &[(&str, &str)] = &[("WEFT_SYMMETRIC_SIZE", "16M")];

fn on_1_to_4(name: &str) {
    for n in ranks(1..=4) {
        let job = scenario("weft-check", &[name], n, SMALL_HEAP);
        assert!(leftover_segments(job.pid).is_empty());
    }
}

#[test]
fn contiguous_put_get_nbi_and_fence() {
    on_1_to_4("rma");
}

#[test]
fn strided_put_and_get() {
    on_1_to_4("strided");
}

#[test]
fn every_atomic_on_every_width() {
    on_1_to_4("atomics");
}

#[test]
fn concurrent_fetch_add_gives_exact_totals() {
    on_1_to_4("contended");
}

#[test]
fn wait_until_and_test_with_each_comparison() {
    on_1_to_4("wait");
}

#[test]
fn collective_allocation_is_deterministic_and_zeroed() {
    on_1_to_4("alloc");
}
