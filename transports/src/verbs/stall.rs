//! How long a queue pair's awaited requests have gone without an answer,
//! counted only while somebody watches them.

use std::time::{Duration, Instant};

/// A gap between two checks longer than this restarts the count: the
/// process was not watching (it was descheduled, computing, or its machine
/// was paused), and what went unanswered in the meantime may be waiting
/// for it, not for the peer. Waits check every 20-50 ms.
pub(super) const WATCH_GAP: Duration = Duration::from_secs(1);

/// The watch over one queue pair's awaited requests.
#[derive(Clone, Copy, Debug)]
pub(super) struct Stall {
    /// When the current silence began.
    since: Instant,
    /// The last check.
    last: Instant,
    /// Requests retired at the last check.
    retired: u64,
}

impl Stall {
    /// Starts watching at `now`, when `retired` requests have retired.
    pub(super) fn new(now: Instant, retired: u64) -> Stall {
        Stall {
            since: now,
            last: now,
            retired,
        }
    }

    /// Records a check at `now`, when `retired` requests have retired, and
    /// returns how long the requests have gone unanswered under watch: a
    /// request that retired, or a gap longer than [`WATCH_GAP`], starts
    /// the count again.
    pub(super) fn check(&mut self, now: Instant, retired: u64) -> Duration {
        if retired != self.retired || now.saturating_duration_since(self.last) > WATCH_GAP {
            *self = Stall::new(now, retired);
        } else {
            self.last = now;
        }
        now.saturating_duration_since(self.since)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TICK: Duration = Duration::from_millis(50);

    /// Checks every `TICK` from `from` for `span` with `retired` fixed;
    /// returns the last answer and the time of the last check.
    fn watch(s: &mut Stall, from: Instant, span: Duration, retired: u64) -> (Duration, Instant) {
        let (mut t, mut silent) = (from, Duration::ZERO);
        while t < from + span {
            t += TICK;
            silent = s.check(t, retired);
        }
        (silent, t)
    }

    #[test]
    fn silence_under_steady_watch_adds_up() {
        let t0 = Instant::now();
        let mut s = Stall::new(t0, 7);
        let (silent, _) = watch(&mut s, t0, Duration::from_secs(10), 7);
        assert_eq!(silent, Duration::from_secs(10));
    }

    #[test]
    fn a_retired_request_starts_the_count_again() {
        let t0 = Instant::now();
        let mut s = Stall::new(t0, 7);
        let (_, t) = watch(&mut s, t0, Duration::from_secs(6), 7);
        assert_eq!(s.check(t + TICK, 8), Duration::ZERO);
        let (silent, _) = watch(&mut s, t + TICK, Duration::from_secs(6), 8);
        assert_eq!(silent, Duration::from_secs(6));
    }

    #[test]
    fn time_nobody_watched_does_not_count() {
        let t0 = Instant::now();
        let mut s = Stall::new(t0, 7);
        let (_, t) = watch(&mut s, t0, Duration::from_secs(9), 7);
        // The process sleeps for 5 s: its first check after that starts over.
        let back = t + Duration::from_secs(5);
        assert_eq!(s.check(back, 7), Duration::ZERO);
        let (silent, _) = watch(&mut s, back, Duration::from_secs(3), 7);
        assert_eq!(silent, Duration::from_secs(3));
        // A gap within WATCH_GAP counts.
        let (before, t) = watch(&mut s, back + Duration::from_secs(3), TICK, 7);
        assert_eq!(s.check(t + WATCH_GAP, 7), before + WATCH_GAP);
    }
}
