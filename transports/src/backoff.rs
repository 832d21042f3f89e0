//! Waiting that backs off: spin, then yield, then sleep, so that ranks that
//! outnumber the cores still make progress. Used by the runtime's waits and
//! by transports that wait for their own completions.

use std::time::{Duration, Instant};

const SPINS: u32 = 64;
/// How long a waiter yields before it sleeps. Yielding hands the core to a
/// peer at once, which is what oversubscribed ranks need; sleeping (timer
/// slack included) costs tens of microseconds per wake-up.
const YIELD_FOR: Duration = Duration::from_millis(2);
const MAX_SLEEP_US: u64 = 200;

/// One waiter's back-off state; call [`Backoff::snooze`] after each failed check.
pub struct Backoff {
    /// Spins left before yielding.
    spins: u32,
    step: u32,
    /// When the waiter started yielding.
    yielding: Option<Instant>,
    sleeps: u32,
}

impl Backoff {
    /// A waiter that spins a little before yielding, or, when the PEs
    /// outnumber the cores (`oversubscribed`), yields at once: spinning
    /// then only keeps the core from the peer being waited for.
    pub fn new(oversubscribed: bool) -> Backoff {
        Backoff {
            spins: if oversubscribed { 0 } else { SPINS },
            step: 0,
            yielding: None,
            sleeps: 0,
        }
    }

    /// Whether the waiter has reached the sleeping stage (a long wait).
    pub fn is_sleeping(&self) -> bool {
        self.sleeps > 0
    }

    /// Waits a little longer each time: busy spins first (unless
    /// oversubscribed), then `sched_yield` for 2 ms, then sleeps that double
    /// up to 200 µs.
    pub fn snooze(&mut self) {
        if self.step < self.spins {
            for _ in 0..(1u32 << (self.step / 8)) {
                std::hint::spin_loop();
            }
            self.step += 1;
            return;
        }
        let since = *self.yielding.get_or_insert_with(Instant::now);
        if since.elapsed() < YIELD_FOR {
            std::thread::yield_now();
        } else {
            let doublings = self.sleeps.min(8);
            std::thread::sleep(Duration::from_micros((1u64 << doublings).min(MAX_SLEEP_US)));
            self.sleeps = self.sleeps.saturating_add(1);
        }
    }
}
