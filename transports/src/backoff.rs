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
/// Yields between two readings of the clock. Reading it can be far from
/// free: a virtual machine without a stable TSC reads an emulated timer
/// device, which under software emulation also stalls the emulated NIC.
const YIELDS_PER_CLOCK: u32 = 32;

/// One waiter's back-off state; call [`Backoff::snooze`] after each failed check.
pub struct Backoff {
    /// Spins left before yielding.
    spins: u32,
    step: u32,
    /// When the waiter had yielded YIELDS_PER_CLOCK times.
    yielding: Option<Instant>,
    /// Yields since the clock was last read.
    yields: u32,
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
            yields: 0,
            sleeps: 0,
        }
    }

    /// Waits a little longer each time: busy spins first (unless
    /// oversubscribed), then `sched_yield` for 2 ms, then sleeps that double
    /// up to 200 µs. Once sleeping, a waiter sleeps at every call: going
    /// back to yielding between sleeps kept a PE that waited 2 s in a
    /// barrier busy for a fifth of a core's time (a twentieth now).
    pub fn snooze(&mut self) {
        if let Some(nap) = self.pause() {
            std::thread::sleep(nap);
        }
    }

    /// Like [`Backoff::snooze`], but in the sleeping stage returns how long
    /// to sleep instead of sleeping, for a waiter that sleeps its own way
    /// (on a descriptor that may wake it sooner).
    pub fn pause(&mut self) -> Option<Duration> {
        if self.step < self.spins {
            for _ in 0..(1u32 << (self.step / 8)) {
                std::hint::spin_loop();
            }
            self.step += 1;
            return None;
        }
        if self.sleeps == 0 {
            self.yields = self.yields.wrapping_add(1);
            // The yielding stage is timed from its first clock reading,
            // taken at its first multiple of YIELDS_PER_CLOCK yields: a
            // short wait never reads the clock.
            let yielded_enough = self.yields % YIELDS_PER_CLOCK == 0
                && self.yielding.get_or_insert_with(Instant::now).elapsed() >= YIELD_FOR;
            if !yielded_enough {
                std::thread::yield_now();
                return None;
            }
        }
        let doublings = self.sleeps.min(8);
        self.sleeps = self.sleeps.saturating_add(1);
        Some(Duration::from_micros((1u64 << doublings).min(MAX_SLEEP_US)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Turns of `backoff` until it first asks for a sleep.
    fn turns_to_sleep(backoff: &mut Backoff) -> (usize, Duration) {
        let mut turns = 0;
        loop {
            turns += 1;
            if let Some(nap) = backoff.pause() {
                return (turns, nap);
            }
        }
    }

    #[test]
    fn spins_then_yields_for_a_while_then_sleeps_at_every_turn_longer_each_time() {
        let start = Instant::now();
        let mut backoff = Backoff::new(false);
        let (turns, first) = turns_to_sleep(&mut backoff);
        assert!(start.elapsed() >= YIELD_FOR);
        assert!(turns > SPINS as usize);
        assert_eq!(first, Duration::from_micros(1));
        let naps: Vec<Duration> = (0..10).map(|_| backoff.pause().expect("a sleep")).collect();
        assert_eq!(naps[0], Duration::from_micros(2));
        assert!(naps.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(naps[9], Duration::from_micros(MAX_SLEEP_US));
    }

    #[test]
    fn oversubscribed_waiters_yield_from_the_first_turn() {
        let mut spinning = Backoff::new(false);
        let mut yielding = Backoff::new(true);
        spinning.pause();
        yielding.pause();
        assert_eq!(spinning.step, 1);
        assert_eq!((yielding.step, yielding.yields), (0, 1));
    }
}
