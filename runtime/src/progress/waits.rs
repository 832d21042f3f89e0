//! How a caller waits in the engine: driving progress while it polls,
//! backing off, sleeping on the lanes' event descriptors, and turning the
//! death of a peer it depends on into an error.

use super::*;

/// Polls a waiter makes per taking of the engine lock.
const POLLS_PER_LOCK: usize = 16;

/// How often a waiter asks whether the peers it depends on are alive; also
/// the longest a waiter sleeps on its lanes' event descriptors.
const LIVENESS_PERIOD: Duration = Duration::from_millis(20);

/// What changes the condition a wait waits for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Wakes {
    /// A message arriving or a request completing, which a lane may
    /// announce on its event descriptor.
    OnEvents,
    /// Memory that peers write directly, which nothing announces.
    OnMemory,
}

impl Engine {
    /// Blocks until `ready` returns a value, driving progress and backing
    /// off meanwhile. A peer in `watch` that dies turns into an error.
    /// `ready` must change only when a message arrives or a request of
    /// this PE completes: a long wait sleeps until a lane announces one
    /// (see [`Engine::nap`]). A condition on memory that peers write uses
    /// [`Engine::wait_memory`].
    pub(crate) fn wait<T>(
        &self,
        op: &'static str,
        watch: Watch<'_>,
        ready: impl FnMut(&mut State) -> Option<Result<T, Cause>>,
    ) -> Result<T> {
        self.wait_for(op, watch, Wakes::OnEvents, ready)
    }

    /// [`Engine::wait`] for a condition on memory that peers write
    /// directly (a put, a flag): nothing announces it, so a long wait
    /// sleeps for short spells only.
    pub(crate) fn wait_memory<T>(
        &self,
        op: &'static str,
        watch: Watch<'_>,
        ready: impl FnMut(&mut State) -> Option<Result<T, Cause>>,
    ) -> Result<T> {
        self.wait_for(op, watch, Wakes::OnMemory, ready)
    }

    fn wait_for<T>(
        &self,
        op: &'static str,
        watch: Watch<'_>,
        wakes: Wakes,
        mut ready: impl FnMut(&mut State) -> Option<Result<T, Cause>>,
    ) -> Result<T> {
        let mut backoff = Backoff::new(self.settings.oversubscribed);
        let mut checked: Option<Instant> = None;
        loop {
            let moved = {
                let mut st = self.lock(op)?;
                if let Some(r) = ready(&mut st) {
                    return r.map_err(|c| self.error(op, c));
                }
                // Poll a while before letting go of the lock: taking it is
                // a good part of the cost of a short message. Oversubscribed,
                // once: the peer waited for needs the core more than this
                // waiter needs the lock (4 ranks on 2 cores: an 8 B allreduce
                // took 0.6x the time).
                let mut moved = 0;
                let polls = if self.settings.oversubscribed {
                    1
                } else {
                    POLLS_PER_LOCK
                };
                for _ in 0..polls {
                    moved = self.progress(&mut st).map_err(|c| self.error(op, c))?;
                    if let Some(r) = ready(&mut st) {
                        return r.map_err(|c| self.error(op, c));
                    }
                    if moved > 0 {
                        break;
                    }
                    std::hint::spin_loop();
                }
                moved
            };
            if moved > 0 {
                backoff = Backoff::new(self.settings.oversubscribed);
                continue;
            }
            let Some(nap) = backoff.pause() else {
                continue;
            };
            if let Some(r) = self.nap(op, watch, wakes, nap, &mut ready)? {
                return r.map_err(|c| self.error(op, c));
            }
            if checked.is_none_or(|t| t.elapsed() >= LIVENESS_PERIOD) {
                checked = Some(Instant::now());
                if self.dead_peer(watch).is_some() {
                    // It may have sent what we wait for just before exiting.
                    let mut st = self.lock(op)?;
                    self.progress(&mut st).map_err(|c| self.error(op, c))?;
                    if let Some(r) = ready(&mut st) {
                        return r.map_err(|c| self.error(op, c));
                    }
                    drop(st);
                    if let Some((pe, how)) = self.dead_peer(watch) {
                        return Err(self.error(op, Cause::PeerGone { pe, how }));
                    }
                }
            }
        }
    }

    /// The sleep of a long wait. When the wait is driven by events and
    /// every peer it watches is reached by a lane that can announce them
    /// (verbs: a completion channel), the lanes are armed, progress runs
    /// once more (what arrived before arming is announced by nothing), and
    /// the waiter sleeps on their descriptors for up to
    /// [`LIVENESS_PERIOD`]; a sleeping PE then costs its node nothing,
    /// which matters where the NIC's work is done by the host's CPUs (as
    /// Soft-RoCE's is). Otherwise it sleeps for `nap`. Returns `ready`'s
    /// value if the last round of progress made it.
    fn nap<T>(
        &self,
        op: &'static str,
        watch: Watch<'_>,
        wakes: Wakes,
        nap: Duration,
        ready: &mut impl FnMut(&mut State) -> Option<Result<T, Cause>>,
    ) -> Result<Option<Result<T, Cause>>> {
        let fds = match wakes {
            Wakes::OnEvents => self.event_fds(watch),
            Wakes::OnMemory => None,
        };
        let Some(fds) = fds else {
            std::thread::sleep(nap);
            return Ok(None);
        };
        let mut st = self.lock(op)?;
        for &(lane, _) in &fds {
            self.lanes[lane]
                .arm()
                .map_err(|e| self.error(op, Cause::Transport(e)))?;
        }
        self.progress(&mut st).map_err(|c| self.error(op, c))?;
        if let Some(r) = ready(&mut st) {
            return Ok(Some(r));
        }
        drop(st);
        let mut polled: Vec<libc::pollfd> = fds
            .iter()
            .map(|&(_, fd)| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        let ms = LIVENESS_PERIOD.as_millis() as libc::c_int;
        // SAFETY: `polled` is a live array of `polled.len()` pollfd entries.
        // A failure (EINTR) only ends the sleep early.
        unsafe { libc::poll(polled.as_mut_ptr(), polled.len() as libc::nfds_t, ms) };
        Ok(None)
    }

    /// The lanes (index, event descriptor) that reach the peers `watch`
    /// names (itself aside), or `None` if one of those lanes cannot
    /// announce events or there is no such peer.
    fn event_fds(&self, watch: Watch<'_>) -> Option<Vec<(usize, RawFd)>> {
        let mut fds: Vec<(usize, RawFd)> = Vec::new();
        let silent = self.find_watched(watch, |pe| {
            let lane = self.route[pe] as usize;
            if fds.iter().any(|&(l, _)| l == lane) {
                return false;
            }
            match self.lanes[lane].event_fd() {
                Some(fd) => {
                    fds.push((lane, fd));
                    false
                }
                None => true,
            }
        });
        (silent.is_none() && !fds.is_empty()).then_some(fds)
    }

    /// The first peer `watch` names that is gone, and how.
    fn dead_peer(&self, watch: Watch<'_>) -> Option<(usize, Gone)> {
        let mut how = None;
        let pe = self.find_watched(watch, |pe| {
            how = self.lane_of(pe).peer_gone(pe);
            how.is_some()
        })?;
        how.map(|how| (pe, how))
    }

    /// The first peer `watch` names, this PE aside, for which `f` holds.
    fn find_watched(&self, watch: Watch<'_>, mut f: impl FnMut(usize) -> bool) -> Option<usize> {
        let mut hit = |pe: &usize| *pe != self.rank && f(*pe);
        match watch {
            Watch::Peer(pe) => hit(&pe).then_some(pe),
            Watch::All => (0..self.size).find(hit),
            Watch::Listed(pes) => pes.borrow().iter().copied().find(hit),
            Watch::Request(id) => {
                let pes = self.coll_waiting_for(&self.state.lock(), id);
                match pes {
                    Some(pes) => pes.into_iter().find(hit),
                    None => (0..self.size).find(hit),
                }
            }
        }
    }
}
