//! Runs a [`Schedule`] over a [`Channel`], one step at a time, so that a
//! blocking collective and a non-blocking one (advanced by a progress
//! engine) are the same code.

use std::sync::Arc;

use crate::op::Combiner;
use crate::schedule::{Buf, Local, Region, Schedule};
use crate::scratch::{Scratch, ScratchPool};
use crate::{Channel, Error};

/// A message of the current round that has not completed.
struct Pending<P> {
    op: P,
    peer: usize,
    /// For a receive, the length the message must have.
    expect: Option<usize>,
}

/// One member's run of one schedule. The buffers it was made with must
/// stay valid, and untouched by anyone else, until [`Run::advance`] has
/// returned `Ok(true)` or [`Run::cancel`] was called.
pub struct Run<P> {
    schedule: Arc<Schedule>,
    tag: u32,
    input: *const u8,
    output: *mut u8,
    /// Scratch space, aligned for every element type.
    tmp: Scratch,
    combiner: Option<Combiner>,
    round: usize,
    started: bool,
    pending: Vec<Pending<P>>,
}

// SAFETY: the raw pointers are the caller's buffers, which `Run::new`'s
// contract keeps valid and unshared for the whole run; nothing in a run is
// tied to the thread that made it.
unsafe impl<P: Send> Send for Run<P> {}

impl<P> Run<P> {
    /// A run of `schedule` on `input` and `output`, combining with
    /// `combiner` where the schedule reduces. Every message of the run
    /// carries `tag`. Messages between two members are matched in the
    /// order they are sent, so one tag serves a whole collective; a tag
    /// that includes a digest of the call (see [`crate::Signature`]) keeps
    /// members that called the collective differently from matching each
    /// other. The run's scratch space comes from `scratch` and goes back
    /// to it when the run is dropped.
    ///
    /// # Safety
    /// `input` must be readable for `schedule.input_len` bytes and
    /// `output` writable for `schedule.output_len` bytes, neither
    /// overlapping the other, both valid and touched by nobody else until
    /// the run has completed or was cancelled.
    ///
    /// # Panics
    /// If the schedule reduces and `combiner` is `None`.
    pub unsafe fn new(
        schedule: Arc<Schedule>,
        tag: u32,
        input: *const u8,
        output: *mut u8,
        combiner: Option<Combiner>,
        scratch: &Arc<ScratchPool>,
    ) -> Run<P> {
        let reduces = schedule
            .rounds
            .iter()
            .flat_map(|r| &r.locals)
            .any(|l| matches!(l, Local::Reduce { .. }));
        assert!(
            !reduces || combiner.is_some(),
            "a reducing schedule needs a combiner"
        );
        let tmp = scratch.take(schedule.tmp_len);
        Run {
            schedule,
            tag,
            input,
            output,
            tmp,
            combiner,
            round: 0,
            started: false,
            pending: Vec::new(),
        }
    }

    fn ptr(&mut self, r: Region) -> *mut u8 {
        let base = match r.buf {
            Buf::Input => self.input.cast_mut(),
            Buf::Output => self.output,
            Buf::Tmp => self.tmp.as_mut_ptr(),
        };
        // SAFETY: `Builder::finish` checked that every region lies within
        // its buffer, and `Run::new`'s contract makes the buffers that long.
        unsafe { base.add(r.off) }
    }

    /// Moves the run along as far as it can without waiting: starts the
    /// current round's messages, takes those that completed, and once all
    /// did, runs the round's local steps and goes on to the next round.
    /// Returns whether the whole schedule is done. On an error the run's
    /// messages are cancelled and the run must not be advanced again.
    pub fn advance<C: Channel<Pending = P>>(
        &mut self,
        chan: &mut C,
    ) -> Result<bool, Error<C::Error>> {
        let r = self.step(chan);
        if r.is_err() {
            self.cancel(chan);
        }
        r
    }

    fn step<C: Channel<Pending = P>>(&mut self, chan: &mut C) -> Result<bool, Error<C::Error>> {
        let schedule = self.schedule.clone();
        loop {
            let Some(round) = schedule.rounds.get(self.round) else {
                return Ok(true);
            };
            let tag = self.tag;
            if !self.started {
                self.started = true;
                for t in &round.recvs {
                    let ptr = self.ptr(t.region);
                    // SAFETY: the region lies in a buffer the run owns or
                    // borrows for its whole length (see `Run::new`), and no
                    // other step of this round touches it.
                    let op = unsafe { chan.start_recv(t.peer, tag, ptr, t.region.len) }
                        .map_err(Error::Channel)?;
                    self.pending.push(Pending {
                        op,
                        peer: t.peer,
                        expect: Some(t.region.len),
                    });
                }
                for t in &round.sends {
                    let ptr = self.ptr(t.region);
                    // SAFETY: as above; the round's local steps, the only
                    // writers, run after every send has completed.
                    let op = unsafe { chan.start_send(t.peer, tag, ptr, t.region.len) }
                        .map_err(Error::Channel)?;
                    if let Some(op) = op {
                        self.pending.push(Pending {
                            op,
                            peer: t.peer,
                            expect: None,
                        });
                    }
                }
            }
            let mut i = 0;
            while i < self.pending.len() {
                match chan.test(&mut self.pending[i].op).map_err(Error::Channel)? {
                    None => i += 1,
                    Some(got) => {
                        let p = self.pending.swap_remove(i);
                        if let Some(expected) = p.expect.filter(|&e| e != got) {
                            return Err(Error::Length {
                                peer: p.peer,
                                expected,
                                got,
                            });
                        }
                    }
                }
            }
            if !self.pending.is_empty() {
                return Ok(false);
            }
            for l in &round.locals {
                self.local(l);
            }
            self.round += 1;
            self.started = false;
        }
    }

    fn local(&mut self, l: &Local) {
        match *l {
            Local::Copy { from, to } => {
                let (src, dst) = (self.ptr(from), self.ptr(to));
                // SAFETY: both regions lie in their buffers, have the same
                // length and do not overlap (checked by the builder).
                unsafe { weft_copy::copy_nonoverlapping(src, dst, from.len) };
            }
            Local::Reduce {
                from,
                to,
                from_left,
            } => {
                let (src, dst) = (self.ptr(from), self.ptr(to));
                // SAFETY: as for a copy; no message of this run is in
                // flight, so nothing else touches these bytes now.
                let (other, acc) = unsafe {
                    (
                        std::slice::from_raw_parts(src, from.len),
                        std::slice::from_raw_parts_mut(dst, to.len),
                    )
                };
                self.combiner
                    .as_ref()
                    .expect("checked in Run::new")
                    .combine(acc, other, from_left);
            }
        }
    }

    /// Abandons the run's messages in flight; afterwards nothing touches
    /// its buffers.
    pub fn cancel<C: Channel<Pending = P>>(&mut self, chan: &mut C) {
        for p in self.pending.drain(..) {
            chan.cancel(p.op);
        }
        self.round = self.schedule.rounds.len();
    }

    /// Whether a message of this run is in flight.
    pub fn in_flight(&self) -> bool {
        !self.pending.is_empty()
    }

    /// The members this run is waiting for now.
    pub fn waiting_for(&self) -> impl Iterator<Item = usize> + '_ {
        self.pending.iter().map(|p| p.peer)
    }
}
