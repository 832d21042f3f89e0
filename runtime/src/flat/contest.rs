//! The calls whose faster way depends on the host and on where it puts the
//! PEs: allgathers and alltoalls whose blocks exceed a slot, up to
//! [`PARTS_LIMIT`], when the PEs do not outnumber the cores
//! ([`Slots::contested`]). Attached, each block is copied once by
//! cross-memory attach, which pins the pages it copies (about 10 GB/s on
//! the Zen 4 host, wherever the cores are); the second way copies it twice,
//! in parts through the slots, or from [`WIDE_FROM`] into its writer's wide
//! slot and out of it ([`Slots::exchanges_wide`]), by cached copies of
//! about 25 GB/s while the cores share a cache, but of lines that cross
//! dies at 1-4 GB/s when they do not. Alternated at 2 PEs, the parts took
//! 0.68-0.77x the attached call's time at 128-256 KiB, 0.82-0.93x at 512
//! KiB and 0.85-0.97x at 1 MiB with a shared cache (the wide slots
//! 0.66-0.79x from 256 KiB), and across dies 1.07-1.13x at 128-512 KiB,
//! 1.13-1.24x at 1 MiB once their writers stream ([`Streaming`]), up to 3x
//! before; a virtual machine's host moves its virtual CPUs between such
//! placements every few seconds or minutes.
//!
//! So member 0 times its calls of each class ([`Class`]) both ways, takes
//! the faster and now and then the slower, to time it again (seldom while
//! cached copies into slots run slow, as across dies); it publishes the
//! way of the class's next call in its region
//! ([`Slots::ways`]), where the others read it. Every member must take a
//! call the same way, so the word says from which call on its new ways
//! hold and what held before ([`ways`]): member 0 writes it when it starts
//! a call `n` of the class, before any of its blocks of that call, for the
//! calls from the one after `n`. A member in call `n` reads either word and
//! takes `n` the way that held before; one in a later call has completed
//! call `n`, which waited for member 0's blocks, so it reads the new word
//! (or a later one). Stamps say how a call's blocks travel, so a member
//! that took a call another way fails it instead of misreading a block.
//!
//! When the PEs outnumber the cores, the same classes are of the
//! allgathers and alltoalls that go through the members' wide slots
//! ([`Slots::wide`]), and their two ways are how the members store their
//! blocks there: by non-temporal stores or by cached ones (the second
//! way). With a shared cache the cached stores are the faster and leave
//! the lines in a cache for the readers; across dies each cached store
//! waits for its line to come from the readers' die, where non-temporal
//! ones send the lines to memory without waiting. At 4 PEs on 2 cores,
//! 128 KiB alltoalls: a member's stores of its three blocks took 10 µs
//! cached and 22 streamed with a shared cache, 45-130 and 16-20 across
//! dies, where cached copies timed block by block never ran slow enough
//! (4 GB/s) six in a row for [`Streaming`] to stream (whole calls: 52-60
//! µs cached and 75-107 streamed with a shared cache, 195-270 and 114-121
//! across dies). The stores alone do not tell which way is faster: at 256
//! KiB with a shared cache they took as long either way (the blocks no
//! longer fit the cores' caches), but the calls 1.6x as long streamed, as
//! the readers then read the blocks from memory. So member 0 times its
//! copies both ways, into its wide slot and out of the others' (its whole
//! calls' times are mostly waits for members not scheduled), and the
//! members store as its word says (they need not agree on it, but do).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use parking_lot::Mutex;

use super::*;
use crate::config::{ExchangeChoice, StreamingChoice};

/// Classes of contested calls: allgathers and alltoalls, each by the size
/// of its blocks (up to 32 KiB, 64 KiB, ... [`PARTS_LIMIT`]).
const SIZES: usize = 6;
const CLASSES: usize = 2 * SIZES;
/// Times member 0 keeps of each way, its latest calls': a way's time is
/// the shortest of them, as the host only ever makes a call longer (it
/// holds up one 512 KiB allgather in 20-30 at 2 PEs, to twice its time):
/// a moving mean kept a way that had become faster out for hundreds of
/// calls. Member 0 takes a way for this many timed calls in a row, after
/// those it does not time: a call after one of the other way finds the
/// lines it uses cold, and so do calls in parts until they have used
/// every set of slots' data once ([`data_sets`]; at 2 PEs with a shared
/// cache, a 128 KiB alltoall took 19-20 µs in parts in the 4 calls after
/// attached ones, 9.5 in a long row of them). Until it timed each way so,
/// member 0 takes them in turn; then the faster, and now and then the
/// slower ([`TRY_EVERY`]).
const KEPT: usize = 3;
/// Member 0 takes the way it timed slower after this many calls of a
/// class once the faster way changed, and after twice as many following
/// each try that did not change it, up to [`TRIED_AT_MOST`]. Across dies,
/// parts took 1.5-3x the attached call's time at 2 PEs and 128 KiB, and a
/// try of them there is 19 calls (16 to use every set of slots' data):
/// once the tries are that far apart they take about 0.5% of the time.
const TRY_EVERY: u32 = 64;
const TRIED_AT_MOST: u32 = 4096;
/// How much faster a way must be timed than the way taken for member 0
/// to change ways (15/16 of its time).
const MARGIN: (u128, u128) = (15, 16);

/// `WEFT_EXCHANGE` and `WEFT_STREAMING`, and member 0's timings of the
/// contested calls.
pub(super) struct Contest {
    exchange: ExchangeChoice,
    streaming: StreamingChoice,
    timings: Mutex<Timings>,
}

/// Member 0's timings of each class of contested calls, and its call
/// being timed, if any (one thread at a time calls a team's collectives),
/// with the nanoseconds its copies took so far, if wide.
struct Timings {
    classes: [Class; CLASSES],
    running: Option<Timed>,
    copied: u64,
}

/// Member 0's timings of one class of contested calls.
#[derive(Clone, Copy, Default)]
struct Class {
    /// The first way and the second (attached and copied twice through
    /// the slots, or when crowded non-temporal and cached stores into wide
    /// slots): the times of its latest timed calls, in nanoseconds
    /// ([`KEPT`]; 0 until timed)...
    times: [[u64; KEPT]; 2],
    /// ...and how many it timed.
    timed: [usize; 2],
    /// The way of member 0's last call of the class, if any, and the first
    /// call number from which the calls of that way are timed...
    last: Option<bool>,
    timed_from: u64,
    /// ...and how many more it times before it may take the other.
    left: usize,
    /// Whether the second way (two copies, or cached stores) was the
    /// faster at the last call that compared the two (none yet: `None`).
    parts_faster: Option<bool>,
    /// Calls since member 0 last took the slower way, and how many it
    /// lets pass before the next try (from [`TRY_EVERY`]).
    since: u32,
    every: u32,
}

/// What member 0 weighs a contested call by, besides its way: how many
/// numbers it takes in parts, how many calls warm what the second way
/// uses (the region's sets of slots' data for parts, its sets of wide
/// slots for wide calls and cached stores), whether cached copies into
/// the others' slots ran slow lately ([`Streaming::slowed`]), as they do
/// when the cores lie on different dies, where two copies lose, and
/// whether its ways are stores into wide slots.
#[derive(Clone, Copy, Debug)]
struct Turn {
    count: usize,
    sets: usize,
    slowed: bool,
    wide: bool,
}

/// A contested call of member 0: its class, its way (the second or not),
/// when it started and whether it is wide, to time it ([`Region::timed`]):
/// by how long it took, or if wide by how long its copies took
/// ([`Contest::copied`]).
#[derive(Clone, Copy, Debug)]
struct Timed {
    class: usize,
    parted: bool,
    start: Instant,
    wide: bool,
}

/// The ways that hold for call `n` by `word` (bit `c` set: class `c` runs
/// in parts): the new ones from the call whose number's low 32 bits are
/// the word's high half, those before until then. Numbers compare modulo
/// 2^32, and every member reads the same word for a call, so they agree
/// even when a way has held for longer than that.
fn ways(word: u64, n: u64) -> u64 {
    let from = (word >> 32) as u32;
    if (n as u32).wrapping_sub(from) as i32 >= 0 {
        word >> 16 & 0xffff
    } else {
        word & 0xffff
    }
}

/// The word that makes `new` hold from call `from`, `old` before.
fn word(from: u64, new: u64, old: u64) -> u64 {
    (from & 0xffff_ffff) << 32 | new << 16 | old
}

impl Contest {
    pub(super) fn new(exchange: ExchangeChoice, streaming: StreamingChoice) -> Contest {
        Contest {
            exchange,
            streaming,
            timings: Mutex::new(Timings {
                classes: [Class::default(); CLASSES],
                running: None,
                copied: 0,
            }),
        }
    }

    /// The way that `WEFT_EXCHANGE` (or for stores into wide slots,
    /// `WEFT_STREAMING`) forces, if it does: whether the second.
    fn forced(&self, wide: bool) -> Option<bool> {
        if wide {
            match self.streaming {
                StreamingChoice::Auto => None,
                StreamingChoice::Always => Some(false),
                StreamingChoice::Never => Some(true),
            }
        } else {
            match self.exchange {
                ExchangeChoice::Auto => None,
                ExchangeChoice::Attached => Some(false),
                ExchangeChoice::Slots => Some(true),
            }
        }
    }

    /// Whether call `n`, of `class`, takes the second way (two copies, or
    /// cached stores into wide slots when `wide`), as member 0's word
    /// `published` says, unless forced.
    fn second(&self, published: &AtomicU64, class: usize, n: u64, wide: bool) -> bool {
        self.forced(wide)
            .unwrap_or_else(|| ways(published.load(Ordering::Relaxed), n) >> class & 1 == 1)
    }

    /// Whether call `n`, of `class`, takes the second way, as member 0's
    /// word `published` says, and whether it is timed: member `me` 0 also
    /// publishes the way of the class's next call, weighing `turn`, and
    /// times this one unless it is among the first of its way.
    fn way(
        &self,
        published: &AtomicU64,
        me: usize,
        class: usize,
        n: u64,
        turn: Turn,
    ) -> (bool, bool) {
        if let Some(second) = self.forced(turn.wide) {
            return (second, false);
        }
        let held = ways(published.load(Ordering::Relaxed), n);
        let parted = held >> class & 1 == 1;
        if me != 0 {
            return (parted, false);
        }
        let mut timings = self.timings.lock();
        let (next, settled) = timings.classes[class].call(parted, n, turn);
        if next != parted {
            let from = n + if parted { turn.count as u64 } else { 1 };
            // Relaxed: the flag of this call's first block, raised after
            // it with release, carries it to the members (module doc).
            published.store(word(from, held ^ 1 << class, held), Ordering::Relaxed);
        }
        timings.running = settled.then(|| Timed {
            class,
            parted,
            start: Instant::now(),
            wide: turn.wide,
        });
        timings.copied = 0;
        (parted, settled)
    }

    /// Adds `nanos` to the time member 0's copies took in its wide call.
    fn copied(&self, nanos: u64) {
        let mut timings = self.timings.lock();
        timings.copied = timings.copied.saturating_add(nanos);
    }

    /// Takes the time of member 0's call being timed ([`Class::note`]).
    fn note(&self) {
        let mut timings = self.timings.lock();
        if let Some(t) = timings.running.take() {
            let took = if t.wide {
                timings.copied
            } else {
                u64::try_from(t.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
            };
            timings.classes[t.class].note(t.parted, took);
        }
    }
}

impl Class {
    /// Member 0 takes call `n` of the class `parted`, as `turn` says: the
    /// way of the next, and whether this one is timed (a way's calls are
    /// from the first after it took the other, and in parts from a round of
    /// the sets of slots' data after).
    fn call(&mut self, parted: bool, n: u64, turn: Turn) -> (bool, bool) {
        if self.last != Some(parted) {
            self.last = Some(parted);
            self.timed_from = n + if parted { turn.sets as u64 } else { 1 };
            self.left = KEPT;
        }
        let timed = n >= self.timed_from;
        if timed {
            self.left = self.left.saturating_sub(1);
        }
        (self.next(parted, turn.slowed), timed)
    }

    /// The way of the class's next call, this one running `parted`: the
    /// same until it timed [`KEPT`] calls in a row; the other until that
    /// was timed so too; then the faster and now and then the slower
    /// ([`TRY_EVERY`]). While cached copies into the others' slots ran
    /// `slowed`, the second way (two copies, or cached stores) is taken
    /// only once in [`TRIED_AT_MOST`] calls unless it was timed faster.
    fn next(&mut self, parted: bool, slowed: bool) -> bool {
        if self.left > 0 {
            return parted;
        }
        if self.timed[usize::from(!parted)] < KEPT {
            if parted || !slowed {
                return !parted;
            }
            self.since += 1;
            if self.since < TRIED_AT_MOST {
                return false;
            }
            self.since = 0;
            return true;
        }
        let [attached, parts] = [false, true].map(|way| u128::from(self.time(way)));
        let faster = if self.parts_faster == Some(true) {
            attached * MARGIN.1 >= parts * MARGIN.0
        } else {
            parts * MARGIN.1 < attached * MARGIN.0
        };
        if self.parts_faster != Some(faster) {
            self.parts_faster = Some(faster);
            self.every = TRY_EVERY;
            self.since = 0;
            return faster;
        }
        if parted != faster {
            // A try that left the faster way as it was.
            self.every = (2 * self.every).min(TRIED_AT_MOST);
            self.since = 0;
            return faster;
        }
        self.since += 1;
        let every = if slowed && !faster {
            TRIED_AT_MOST
        } else {
            self.every
        };
        if self.since < every {
            return faster;
        }
        self.since = 0;
        !faster
    }

    /// The time of the way `parted`: the shortest it keeps.
    fn time(&self, parted: bool) -> u64 {
        self.times[usize::from(parted)]
            .into_iter()
            .min()
            .unwrap_or(0)
    }

    /// Keeps `took` nanoseconds, the time of a call of the way `parted`,
    /// in place of the way's oldest.
    fn note(&mut self, parted: bool, took: u64) {
        let way = usize::from(parted);
        self.times[way][self.timed[way] % KEPT] = took;
        self.timed[way] += 1;
    }
}

impl Slots {
    /// The class of a call of `sig` whose way is contested (module doc), if
    /// it is one: an allgather or alltoall whose blocks exceed a slot; up
    /// to [`PARTS_LIMIT`] and [`PARTS_THROUGH_ONE`] from the others, when
    /// the PEs do not outnumber the cores and may read each other's memory
    /// (attached, or copied twice through the slots); when they do, one
    /// through the members' wide slots (cached or non-temporal stores).
    pub(super) fn contested(&self, sig: &Signature) -> Option<usize> {
        let b = sig.bytes;
        let collective = match sig.collective {
            Collective::Allgather => 0,
            Collective::Alltoall => 1,
            _ => return None,
        };
        let size = (b.next_power_of_two().ilog2() as usize).clamp(15, 14 + SIZES) - 15;
        let class = collective * SIZES + size;
        if self.crowded {
            return self.wide(sig).then_some(class);
        }
        let fits = b > self.data && b <= PARTS_LIMIT && b * (self.p - 1) <= PARTS_THROUGH_ONE;
        (self.attach && fits && sig.elem <= self.data).then_some(class)
    }

    /// Member 0's word of the contested calls' ways ([`ways`]), in its own
    /// posted word's line, which only its running word shares (both its
    /// own to write).
    fn ways(&self) -> &AtomicU64 {
        self.word_in(self.peers[0], self.posted_at(0) + 16)
    }
}

impl Region {
    /// How a contested call of `sig` and `class` ([`Slots::contested`]),
    /// call `n`, runs: in `parts` or through the members' wide slots
    /// ([`Slots::exchanges_wide`]), or attached.
    pub(super) fn contest(&self, sig: &Signature, class: usize, n: u64, parts: Parts) -> Parts {
        let s = &self.slots;
        let wide = s.exchanges_wide(sig);
        let turn = Turn {
            count: if wide { 1 } else { parts.count },
            sets: if wide { WIDE_SETS } else { s.data_sets },
            slowed: s.me == 0 && self.streaming.iter().any(Streaming::slowed),
            wide: false,
        };
        let (second, timed) = self.contest.way(s.ways(), s.me, class, n, turn);
        match (second, wide) {
            (true, false) => Parts { timed, ..parts },
            (true, true) => Parts::whole(parts.bytes, Carry::Wide, timed),
            (false, _) => Parts::whole(parts.bytes, Carry::Attached, timed),
        }
    }

    /// Whether wide call `n`, of a contested `class` ([`Slots::contested`]),
    /// is timed; member 0 publishes how the members store the class's next
    /// call's blocks into their wide slots: non-temporal stores first, and
    /// while cached copies into the others' slots ran slow lately, cached
    /// stores only once in [`TRIED_AT_MOST`] calls unless timed faster, as
    /// for parts (their tries took 3x the time across dies at 4 PEs, 128
    /// KiB-256 KiB, where a benchmark makes 220 calls of each size).
    pub(super) fn contest_stores(&self, class: usize, n: u64) -> bool {
        let s = &self.slots;
        let turn = Turn {
            count: 1,
            sets: WIDE_SETS,
            slowed: s.me == 0 && self.streaming.iter().any(Streaming::slowed),
            wide: true,
        };
        self.contest.way(s.ways(), s.me, class, n, turn).1
    }

    /// Whether the members store the blocks of wide call `n`, of a
    /// contested `class`, into their wide slots by cached stores (or else
    /// non-temporal ones), as member 0 said. When the PEs do not outnumber
    /// the cores, the class's word says that call `n` takes its second way,
    /// the wide slots ([`Slots::exchanges_wide`]), so its stores are cached
    /// unless `WEFT_STREAMING=always`: streamed, they took 1.4-1.5x the
    /// attached call's time with a shared cache, where the contest takes
    /// wide calls.
    pub(super) fn stores_cached(&self, class: usize, n: u64) -> bool {
        self.contest.second(self.slots.ways(), class, n, true)
    }

    /// Runs `copy`, this PE's copies of a wide call, timing them if it is
    /// member 0 (its whole calls' times, when the PEs outnumber the cores,
    /// are mostly how long it waited for members not scheduled: at 4 PEs
    /// on 2 cores, 256 KiB alltoalls back to back took 67-340 µs at member
    /// 0 from call to call, either way).
    pub(super) fn time_copies(&self, copy: impl FnOnce()) {
        if self.slots.me != 0 {
            return copy();
        }
        let start = Instant::now();
        copy();
        let nanos = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.contest.copied(nanos);
    }

    /// Takes the time of member 0's contested call that it times, once the
    /// call completed on the flat path ([`Parts::timed`]).
    pub(crate) fn timed(&self) {
        self.contest.note();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_word_holds_its_new_ways_from_its_call_on() {
        let w = word(10, 0b10, 0b01);
        assert_eq!((ways(w, 9), ways(w, 10), ways(w, 11)), (0b01, 0b10, 0b10));
        let wrapped = word(u64::from(u32::MAX), 0b1, 0);
        assert_eq!(ways(wrapped, u64::from(u32::MAX) - 1), 0);
        assert_eq!(ways(wrapped, 1 << 32), 0b1);
        assert_eq!(ways(0, 0), 0);
    }

    /// Calls of 4 numbers in parts in a region of 8 sets, not slowed.
    const TURN: Turn = Turn {
        count: 4,
        sets: 8,
        slowed: false,
        wide: false,
    };

    /// Member 0's ways in `calls` calls of a class whose calls take
    /// `took(call, parted)` ns, the first attached: 2 numbers each.
    fn drive(c: &mut Class, calls: usize, took: impl Fn(usize, bool) -> u64) -> Vec<bool> {
        drive_as(c, calls, TURN, took)
    }

    fn drive_as(
        c: &mut Class,
        calls: usize,
        turn: Turn,
        took: impl Fn(usize, bool) -> u64,
    ) -> Vec<bool> {
        let mut parted = false;
        (0..calls)
            .map(|k| {
                let (next, timed) = c.call(parted, 2 * k as u64, turn);
                if timed {
                    c.note(parted, took(k, parted));
                }
                std::mem::replace(&mut parted, next)
            })
            .collect()
    }

    #[test]
    fn member_0_times_runs_of_each_way_then_takes_the_faster() {
        let mut c = Class::default();
        let took = |k, parted| match (k, parted) {
            (0, _) => 190_000,
            (_, false) => 15_000,
            (_, true) => 9_000,
        };
        let ways = drive(&mut c, 14, took);
        let want = [&[false; 4][..], &[true; 10]].concat();
        assert_eq!(ways, want);
        assert_eq!((c.time(false), c.time(true)), (15_000, 9_000));
    }

    #[test]
    fn member_0_tries_the_slower_way_less_often_while_it_stays_slower() {
        let mut c = Class::default();
        let ways = drive(&mut c, 20_000, |_, parted| if parted { 600 } else { 1000 });
        let tries: Vec<usize> = (8..ways.len())
            .filter(|&k| !ways[k] && ways[k - 1])
            .collect();
        assert!(tries
            .iter()
            .all(|&k| ways[k..k + 1 + KEPT].iter().all(|p| !p)));
        let gaps: Vec<usize> = tries.windows(2).map(|w| w[1] - w[0]).collect();
        // Apart from the runs, of the tried way and back: twice the last gap.
        let runs = gaps[0] - 2 * TRY_EVERY as usize;
        assert!(runs < 16, "{gaps:?}");
        let every: Vec<usize> = gaps.iter().map(|g| g - runs).collect();
        assert_eq!(&every[..4], [128, 256, 512, 1024]);
        assert!(every[6..].iter().all(|&g| g == TRIED_AT_MOST as usize));
        // A try that turns out faster is kept, and the tries come often again.
        let ways = drive(&mut c, 8000, |_, parted| if parted { 600 } else { 100 });
        let parts = ways[5000..].iter().filter(|&&p| p).count();
        assert!(c.parts_faster == Some(false) && parts < 100, "{parts}");
    }

    #[test]
    fn parts_are_tried_only_now_and_then_while_copies_run_slow() {
        let mut c = Class::default();
        let slowed = Turn {
            slowed: true,
            ..TURN
        };
        let ways = drive_as(&mut c, 3 * TRIED_AT_MOST as usize, slowed, |_, parted| {
            if parted {
                2000
            } else {
                1000
            }
        });
        let parts = ways.iter().filter(|&&p| p).count();
        assert!(!ways[..TRIED_AT_MOST as usize].contains(&true));
        assert!(parts > 0 && parts < 4 * 8, "{parts}");
        // Parts timed faster are kept though.
        let ways = drive_as(&mut c, 3 * TRIED_AT_MOST as usize, slowed, |_, parted| {
            if parted {
                500
            } else {
                1000
            }
        });
        assert!(
            ways[TRIED_AT_MOST as usize + 100..]
                .iter()
                .filter(|&&p| p)
                .count()
                > 4000
        );
    }

    #[test]
    fn a_way_s_time_is_the_shortest_of_its_latest() {
        let mut c = Class::default();
        for took in [1000, 1000, 1000, 5_000_000, 2000] {
            c.note(true, took);
        }
        assert_eq!(c.time(true), 1000);
        c.note(true, 3000);
        assert_eq!(c.time(true), 2000);
    }

    #[test]
    fn forced_ways_are_neither_read_nor_timed() {
        let auto = StreamingChoice::Auto;
        let published = AtomicU64::new(word(0, 0b1, 0b1));
        for (choice, parted) in [
            (ExchangeChoice::Attached, false),
            (ExchangeChoice::Slots, true),
        ] {
            let contest = Contest::new(choice, auto);
            let (way, timed) = contest.way(&published, 0, 1, 5, TURN);
            assert_eq!((way, timed), (parted, false));
            assert_eq!(contest.second(&published, 1, 5, false), parted);
        }
        // Stores into wide slots: by `WEFT_STREAMING`, whatever
        // `WEFT_EXCHANGE` says.
        let wide = Turn { wide: true, ..TURN };
        let published = AtomicU64::new(word(0, 0b10, 0b10));
        for (choice, cached) in [
            (StreamingChoice::Always, false),
            (StreamingChoice::Never, true),
        ] {
            let contest = Contest::new(ExchangeChoice::Slots, choice);
            assert_eq!(contest.way(&published, 0, 0, 5, wide), (cached, false));
            assert_eq!(contest.second(&published, 0, 5, true), cached);
        }
        let contest = Contest::new(ExchangeChoice::Slots, auto);
        assert!(contest.second(&published, 1, 5, true) && !contest.second(&published, 0, 5, true));
    }

    /// Member 1 reads member 0's word before or after member 0 writes it
    /// in the same call, and after it in later calls; they take every call
    /// the same way while member 0 changes ways.
    #[test]
    fn members_take_every_call_the_same_way() {
        let published = AtomicU64::new(0);
        let (zero, one) = (
            Contest::new(ExchangeChoice::Auto, StreamingChoice::Auto),
            Contest::new(ExchangeChoice::Auto, StreamingChoice::Auto),
        );
        let mut n = u64::from(u32::MAX) - 40;
        let mut taken = [0; 2];
        for call in 0..200u64 {
            let before = one.way(&published, 1, 2, n, TURN).0;
            let (way, timed) = zero.way(&published, 0, 2, n, TURN);
            let after = one.way(&published, 1, 2, n, TURN).0;
            assert_eq!((before, after), (way, way), "call {n}");
            taken[usize::from(way)] += 1;
            let nanos = if (call / 50) % 2 == 0 {
                [900, 500]
            } else {
                [500, 900]
            };
            if timed {
                zero.timings.lock().classes[2].note(way, nanos[usize::from(way)]);
            }
            n += if way { 4 } else { 1 } + call % 3;
        }
        assert!(taken[0] > 50 && taken[1] > 50, "{taken:?}");
    }
}
