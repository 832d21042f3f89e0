//! Waiting that backs off: spin, then yield, then sleep, so that ranks that
//! outnumber the cores still make progress.

use std::time::Duration;

const SPINS: u32 = 64;
const YIELDS: u32 = 64;
const MAX_SLEEP_US: u64 = 200;

/// One waiter's back-off state; call [`Backoff::snooze`] after each failed check.
#[derive(Default)]
pub(crate) struct Backoff {
    step: u32,
}

impl Backoff {
    pub(crate) fn new() -> Backoff {
        Backoff::default()
    }

    /// Whether the waiter has reached the sleeping stage (a long wait).
    pub(crate) fn is_sleeping(&self) -> bool {
        self.step >= SPINS + YIELDS
    }

    /// Waits a little longer each time: busy spins first, then `sched_yield`,
    /// then sleeps that double up to 200 µs.
    pub(crate) fn snooze(&mut self) {
        if self.step < SPINS {
            for _ in 0..(1u32 << (self.step / 8)) {
                std::hint::spin_loop();
            }
        } else if self.step < SPINS + YIELDS {
            std::thread::yield_now();
        } else {
            let doublings = (self.step - SPINS - YIELDS).min(8);
            std::thread::sleep(Duration::from_micros((1u64 << doublings).min(MAX_SLEEP_US)));
        }
        self.step = self.step.saturating_add(1);
    }
}
