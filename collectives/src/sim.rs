//! An in-process harness: runs the schedules of `p` members over memory,
//! one thread, round-robin, deterministic. A schedule that waits for a
//! message nobody sends is reported as a deadlock instead of hanging.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use crate::exec::Run;
use crate::op::Combiner;
use crate::schedule::Schedule;
use crate::scratch::ScratchPool;
use crate::{Channel, Error};

/// Messages in flight between simulated members, and what each sent.
#[derive(Default)]
struct Net {
    queues: HashMap<(usize, usize, u32), VecDeque<Vec<u8>>>,
    /// Messages sent plus messages delivered: whether anything moved.
    events: u64,
}

/// A simulated channel never fails by itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Never {}

impl std::fmt::Display for Never {
    fn fmt(&self, _: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {}
    }
}

/// One member's end of the simulated network.
struct SimChannel<'a> {
    rank: usize,
    size: usize,
    net: &'a RefCell<Net>,
}

/// A receive posted on a simulated channel.
struct SimRecv {
    peer: usize,
    tag: u32,
    buf: *mut u8,
    cap: usize,
}

impl Channel for SimChannel<'_> {
    type Error = Never;
    type Pending = SimRecv;

    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.size
    }

    unsafe fn start_send(
        &mut self,
        peer: usize,
        tag: u32,
        data: *const u8,
        len: usize,
    ) -> Result<Option<SimRecv>, Never> {
        // SAFETY: the caller passes `len` readable bytes at `data`.
        let bytes = unsafe { std::slice::from_raw_parts(data, len) }.to_vec();
        let mut net = self.net.borrow_mut();
        net.events += 1;
        net.queues
            .entry((self.rank, peer, tag))
            .or_default()
            .push_back(bytes);
        Ok(None)
    }

    unsafe fn start_recv(
        &mut self,
        peer: usize,
        tag: u32,
        buf: *mut u8,
        cap: usize,
    ) -> Result<SimRecv, Never> {
        Ok(SimRecv {
            peer,
            tag,
            buf,
            cap,
        })
    }

    fn test(&mut self, op: &mut SimRecv) -> Result<Option<usize>, Never> {
        let mut net = self.net.borrow_mut();
        let Some(msg) = net
            .queues
            .get_mut(&(op.peer, self.rank, op.tag))
            .and_then(VecDeque::pop_front)
        else {
            return Ok(None);
        };
        net.events += 1;
        let n = msg.len().min(op.cap);
        // SAFETY: `start_recv`'s caller keeps `cap` writable bytes at `buf`
        // until this receive completes, which is now.
        unsafe { std::ptr::copy_nonoverlapping(msg.as_ptr(), op.buf, n) };
        Ok(Some(msg.len()))
    }

    fn cancel(&mut self, _: SimRecv) {}
}

/// Why a simulated collective did not complete.
#[derive(Debug, PartialEq, Eq)]
pub enum SimError {
    /// A member's run failed.
    Member {
        /// The member.
        rank: usize,
        /// Its error.
        error: Error<Never>,
    },
    /// Every unfinished member waits for a message that nobody will send.
    Deadlock {
        /// The members still waiting, with the members they wait for.
        waiting: Vec<(usize, Vec<usize>)>,
    },
    /// Every member finished but messages were left undelivered.
    Leftover {
        /// (from, to) of each undelivered message.
        messages: Vec<(usize, usize)>,
    },
}

/// One member's part in a simulated collective.
pub struct Member {
    /// Its schedule.
    pub schedule: Arc<Schedule>,
    /// Its input, `schedule.input_len` bytes.
    pub input: Vec<u8>,
    /// Its output buffer's initial contents, `schedule.output_len` bytes.
    pub output: Vec<u8>,
}

/// Runs one collective on `members.len()` simulated members and returns
/// each member's output.
///
/// ```
/// use weft_collectives::{barrier, sim};
/// let members = (0..5)
///     .map(|r| sim::Member {
///         schedule: barrier::dissemination(r, 5).into(),
///         input: vec![],
///         output: vec![],
///     })
///     .collect();
/// assert!(sim::run(members, None).is_ok());
/// ```
pub fn run(members: Vec<Member>, combiner: Option<Combiner>) -> Result<Vec<Vec<u8>>, SimError> {
    let p = members.len();
    let net = RefCell::new(Net::default());
    let mut outputs: Vec<Vec<u8>> = Vec::with_capacity(p);
    let mut inputs: Vec<Vec<u8>> = Vec::with_capacity(p);
    let mut schedules = Vec::with_capacity(p);
    for m in members {
        assert_eq!(
            m.input.len(),
            m.schedule.input_len,
            "input of the wrong size"
        );
        assert_eq!(
            m.output.len(),
            m.schedule.output_len,
            "output of the wrong size"
        );
        inputs.push(m.input);
        outputs.push(m.output);
        schedules.push(m.schedule);
    }
    // New scratch is filled with a pattern: a schedule that read scratch
    // before writing it would give itself away.
    let scratch = Arc::new(ScratchPool::filled(0xa5));
    let mut runs: Vec<Run<SimRecv>> = schedules
        .into_iter()
        .zip(inputs.iter().zip(outputs.iter_mut()))
        .map(|(s, (i, o))| {
            // SAFETY: `inputs` and `outputs` are neither moved nor touched
            // until every run is done or dropped, below.
            unsafe { Run::new(s, 0, i.as_ptr(), o.as_mut_ptr(), combiner.clone(), &scratch) }
        })
        .collect();
    let mut done = vec![false; p];
    loop {
        let mut moved = false;
        for rank in 0..p {
            if done[rank] {
                continue;
            }
            let mut chan = SimChannel {
                rank,
                size: p,
                net: &net,
            };
            let before = net.borrow().events;
            let finished = runs[rank]
                .advance(&mut chan)
                .map_err(|error| SimError::Member { rank, error })?;
            moved |= finished || net.borrow().events != before;
            done[rank] = finished;
        }
        if done.iter().all(|&d| d) {
            break;
        }
        if !moved {
            let waiting = (0..p)
                .filter(|&r| !done[r])
                .map(|r| (r, runs[r].waiting_for().collect()))
                .collect();
            return Err(SimError::Deadlock { waiting });
        }
    }
    drop(runs);
    let mut messages: Vec<(usize, usize)> = net
        .into_inner()
        .queues
        .into_iter()
        .flat_map(|((from, to, _), q)| std::iter::repeat_n((from, to), q.len()))
        .collect();
    if !messages.is_empty() {
        messages.sort_unstable();
        return Err(SimError::Leftover { messages });
    }
    Ok(outputs)
}
