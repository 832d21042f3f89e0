//! Schedules: what one member does in one collective, as rounds.
//!
//! A round starts all of its sends and receives at once, waits for all of
//! them, then runs its local steps (copies and reductions) in order. An
//! algorithm is a function from (member, team size, message size, root)
//! to a [`Schedule`]; the same schedule is run by the runtime over its
//! progress engine, step by step for non-blocking collectives, and by the
//! in-process [`crate::sim`] over memory.

/// One of the buffers a schedule works on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Buf {
    /// The caller's input (read only). Empty for in-place collectives.
    Input,
    /// The caller's output; for in-place collectives also the input.
    Output,
    /// Scratch space owned by the run, [`Schedule::tmp_len`] bytes.
    Tmp,
}

/// A byte range of one buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    /// The buffer.
    pub buf: Buf,
    /// First byte.
    pub off: usize,
    /// Number of bytes.
    pub len: usize,
}

impl Region {
    /// `len` bytes of the input from `off`.
    pub fn input(off: usize, len: usize) -> Region {
        Region {
            buf: Buf::Input,
            off,
            len,
        }
    }

    /// `len` bytes of the output from `off`.
    pub fn output(off: usize, len: usize) -> Region {
        Region {
            buf: Buf::Output,
            off,
            len,
        }
    }

    /// `len` bytes of scratch space from `off`.
    pub fn tmp(off: usize, len: usize) -> Region {
        Region {
            buf: Buf::Tmp,
            off,
            len,
        }
    }

    /// The part of this region from byte `off` on, `len` bytes long.
    pub fn sub(self, off: usize, len: usize) -> Region {
        debug_assert!(off + len <= self.len, "sub-region out of its region");
        Region {
            buf: self.buf,
            off: self.off + off,
            len,
        }
    }

    fn end(&self) -> usize {
        self.off + self.len
    }

    fn overlaps(&self, other: &Region) -> bool {
        self.buf == other.buf && self.off < other.end() && other.off < self.end()
    }
}

/// A message a round sends or receives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transfer {
    /// The other member.
    pub peer: usize,
    /// What is sent, or where a received message goes; a received message
    /// must be exactly this long.
    pub region: Region,
}

/// A local step, run once the round's messages have all completed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Local {
    /// `to = from`.
    Copy {
        /// Source.
        from: Region,
        /// Destination, as long as the source.
        to: Region,
    },
    /// `to = from ⊕ to` if `from_left`, else `to = to ⊕ from`. The operand
    /// order is part of the schedule so that every member computes every
    /// element from the same operands in the same order.
    Reduce {
        /// The other operand.
        from: Region,
        /// Operand and result.
        to: Region,
        /// Whether `from` is the left operand.
        from_left: bool,
    },
}

/// One round: messages, then local steps.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Round {
    /// Messages sent.
    pub sends: Vec<Transfer>,
    /// Messages received.
    pub recvs: Vec<Transfer>,
    /// Local steps, in order.
    pub locals: Vec<Local>,
}

/// Everything one member does in one collective.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Schedule {
    /// The rounds, in order.
    pub rounds: Vec<Round>,
    /// Bytes of input the schedule reads.
    pub input_len: usize,
    /// Bytes of output the schedule writes.
    pub output_len: usize,
    /// Bytes of scratch space the schedule uses.
    pub tmp_len: usize,
}

impl Schedule {
    /// Messages this member sends.
    pub fn messages_sent(&self) -> usize {
        self.rounds.iter().map(|r| r.sends.len()).sum()
    }

    /// Bytes this member sends.
    pub fn bytes_sent(&self) -> usize {
        self.rounds
            .iter()
            .flat_map(|r| &r.sends)
            .map(|t| t.region.len)
            .sum()
    }
}

/// Builds a [`Schedule`] in program order: a message added after a local
/// step starts a new round.
///
/// ```
/// use weft_collectives::schedule::{Builder, Region};
/// let mut b = Builder::default();
/// b.send(1, Region::output(0, 8));
/// b.recv(1, Region::tmp(0, 8));
/// b.reduce(Region::tmp(0, 8), Region::output(0, 8), false);
/// b.send(2, Region::output(0, 8)); // after a local step: a second round
/// let s = b.finish(0, 8, 8);
/// assert_eq!(s.rounds.len(), 2);
/// ```
#[derive(Default)]
pub struct Builder {
    rounds: Vec<Round>,
}

impl Builder {
    fn comm_round(&mut self) -> &mut Round {
        if self.rounds.last().is_none_or(|r| !r.locals.is_empty()) {
            self.rounds.push(Round::default());
        }
        self.rounds.last_mut().expect("a round was just pushed")
    }

    fn local_round(&mut self) -> &mut Round {
        if self.rounds.is_empty() {
            self.rounds.push(Round::default());
        }
        self.rounds.last_mut().expect("a round was just pushed")
    }

    /// Sends `region` to `peer` in the current round.
    pub fn send(&mut self, peer: usize, region: Region) {
        self.comm_round().sends.push(Transfer { peer, region });
    }

    /// Receives a message from `peer` into `region` in the current round.
    pub fn recv(&mut self, peer: usize, region: Region) {
        let round = self.comm_round();
        debug_assert!(
            round.recvs.iter().all(|t| !t.region.overlaps(&region)),
            "two receives of one round into the same bytes"
        );
        round.recvs.push(Transfer { peer, region });
    }

    /// Ends the current round: later messages wait for this round's.
    pub fn end_round(&mut self) {
        if self.rounds.last().is_some_and(|r| r != &Round::default()) {
            self.rounds.push(Round::default());
        }
    }

    /// Copies `from` to `to` after the current round's messages.
    pub fn copy(&mut self, from: Region, to: Region) {
        debug_assert_eq!(from.len, to.len, "a copy between regions of other sizes");
        if from.len == 0 || from == to {
            return;
        }
        debug_assert!(!from.overlaps(&to), "a copy onto part of itself");
        {
            self.local_round().locals.push(Local::Copy { from, to });
        }
    }

    /// Reduces `from` into `to` after the current round's messages; see
    /// [`Local::Reduce`].
    pub fn reduce(&mut self, from: Region, to: Region, from_left: bool) {
        debug_assert_eq!(from.len, to.len, "a reduction of regions of other sizes");
        debug_assert!(!from.overlaps(&to), "a reduction onto itself");
        if from.len > 0 {
            self.local_round().locals.push(Local::Reduce {
                from,
                to,
                from_left,
            });
        }
    }

    /// The schedule, over `input_len` bytes of input, `output_len` bytes of
    /// output and `tmp_len` bytes of scratch space.
    ///
    /// # Panics
    /// If a step reaches outside those lengths or writes into the input:
    /// an algorithm's bug, which the runtime must never run.
    pub fn finish(mut self, input_len: usize, output_len: usize, tmp_len: usize) -> Schedule {
        if self.rounds.last() == Some(&Round::default()) {
            self.rounds.pop();
        }
        let fits = |r: &Region| {
            r.end()
                <= match r.buf {
                    Buf::Input => input_len,
                    Buf::Output => output_len,
                    Buf::Tmp => tmp_len,
                }
        };
        for round in &self.rounds {
            for t in round.sends.iter().chain(&round.recvs) {
                assert!(fits(&t.region), "a message outside its buffer: {t:?}");
            }
            for t in &round.recvs {
                assert!(t.region.buf != Buf::Input, "a receive into the input");
            }
            for l in &round.locals {
                let (Local::Copy { from, to } | Local::Reduce { from, to, .. }) = l;
                assert!(
                    fits(from) && fits(to),
                    "a local step outside its buffer: {l:?}"
                );
                assert!(to.buf != Buf::Input, "a local step writing the input");
            }
        }
        Schedule {
            rounds: self.rounds,
            input_len,
            output_len,
            tmp_len,
        }
    }
}
