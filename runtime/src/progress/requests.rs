//! Starting sends and receives, and a request's life in the engine:
//! completing, taking, detaching and cancelling it.

use super::*;

impl Engine {
    /// Starts sending `len` bytes at `ptr` to `dest` under `env`. Returns the
    /// pending rendezvous request, or `None` if the send is already complete.
    pub(crate) fn send(
        &self,
        st: &mut State,
        dest: usize,
        env: Envelope,
        ptr: *const u8,
        len: usize,
        mode: SendMode,
    ) -> Result<Option<Id>, Cause> {
        let lane = self.lane_of(dest);
        let eager = len <= self.settings.eager_limit;
        if eager {
            if len <= lane.caps().max_message {
                // SAFETY: the caller passes `len` readable bytes at `ptr`.
                let bytes = unsafe { std::slice::from_raw_parts(ptr, len) };
                st.outbox
                    .frame(lane, dest, wire::header(Kind::Short, env), bytes)?;
            } else {
                st.outbox.send(
                    lane,
                    dest,
                    Out::Stream {
                        first: Some(wire::header(Kind::First, env)),
                        next: cont_header(),
                        bytes: Bytes::Caller(ptr),
                        len,
                        sent: 0,
                        done: None,
                    },
                )?;
            }
            return Ok(None);
        }
        let owned = match mode {
            SendMode::Owned(v) => Some(v),
            _ => None,
        };
        let key = lane.expose(ptr, len)?;
        let id = st.reqs.insert(Entry {
            req: Req::Sending {
                ptr,
                len,
                dest,
                tag: env.tag,
                key: Some(key),
                _owned: owned,
            },
            detached: false,
        });
        let rts = Rts {
            len: len as u64,
            token: id.token(),
            addr: ptr as u64,
            key,
            idle: st.posted.is_empty(),
        };
        st.outbox
            .frame(lane, dest, wire::header(Kind::Rts, env), &rts.encode())?;
        Ok(Some(id))
    }

    /// Sends bytes the engine owns (active messages), detached.
    pub(super) fn send_owned(
        &self,
        st: &mut State,
        dest: usize,
        env: Envelope,
        data: Vec<u8>,
    ) -> Result<(), Cause> {
        let (ptr, len) = (data.as_ptr(), data.len());
        if let Some(id) = self.send(st, dest, env, ptr, len, SendMode::Owned(data))? {
            Self::detach(st, id);
        }
        Ok(())
    }

    pub(super) fn send_done(&self, st: &mut State, id: Id) {
        let status = match st.reqs.get(id).map(|e| &e.req) {
            Some(Req::Sending { len, tag, .. }) => Status {
                source: self.rank,
                tag: Tag(*tag),
                len: *len,
                message_len: *len,
            },
            _ => {
                st.reqs.remove(id);
                return;
            }
        };
        Self::complete(st, id, Completion::Sent(status));
    }

    pub(super) fn complete(st: &mut State, id: Id, c: Completion) {
        Self::end(st, id, Req::Done(c));
    }

    pub(super) fn fail(st: &mut State, id: Id, cause: Cause) {
        Self::end(st, id, Req::Failed(cause));
    }

    /// Ends `id` as `req` (done or failed), or drops it if detached.
    fn end(st: &mut State, id: Id, req: Req) {
        match st.reqs.get_mut(id) {
            Some(e) if e.detached => {
                st.reqs.remove(id);
            }
            Some(e) => e.req = req,
            None => {}
        }
    }

    /// Marks `id` as unwanted: dropped as soon as it completes.
    pub(crate) fn detach(st: &mut State, id: Id) {
        match st.reqs.get_mut(id) {
            Some(Entry {
                req: Req::Done(_) | Req::Failed(_),
                ..
            }) => {
                st.reqs.remove(id);
            }
            Some(e) => e.detached = true,
            None => {}
        }
    }

    pub(super) fn control(
        &self,
        st: &mut State,
        peer: usize,
        kind: Kind,
        token: u32,
        payload: &[u8],
    ) -> Result<(), Cause> {
        st.outbox.frame(
            self.lane_of(peer),
            peer,
            wire::control(kind, token),
            payload,
        )?;
        Ok(())
    }

    /// Posts a receive into `buf`: matches the oldest unexpected message it
    /// accepts, or waits in the posted queue.
    pub(crate) fn post_recv(&self, st: &mut State, m: Match, buf: RawBuf) -> Result<Id, Cause> {
        let id = st.reqs.insert(Entry {
            req: Req::Posted(buf),
            detached: false,
        });
        match st
            .unexpected
            .iter()
            .position(|u| m.accepts(u.source, u.env))
        {
            Some(pos) => {
                let u = st.unexpected.remove(pos).expect("position is in range");
                self.deliver(st, id, buf, u.source, u.env, u.body.as_ref())?;
            }
            None => st.posted.push_back((id, m)),
        }
        Ok(id)
    }

    /// The status of the oldest unexpected message `m` accepts (a probe).
    pub(crate) fn peek(st: &State, m: Match) -> Option<Status> {
        st.unexpected
            .iter()
            .find(|u| m.accepts(u.source, u.env))
            .map(|u| Status {
                source: u.source,
                tag: Tag(u.env.tag),
                len: u.body.len(),
                message_len: u.body.len(),
            })
    }

    /// Takes the completion of `id` if it is done; `Some(Err)` if it failed.
    pub(crate) fn take(st: &mut State, id: Id) -> Option<Result<Completion, Cause>> {
        match st.reqs.get(id).map(|e| &e.req) {
            Some(Req::Done(_)) | Some(Req::Failed(_)) => match st.reqs.remove(id)?.req {
                Req::Done(c) => Some(Ok(c)),
                Req::Failed(c) => Some(Err(c)),
                _ => unreachable!("checked above"),
            },
            Some(_) => None,
            None => Some(Err(Cause::Broken(
                "a request vanished from the engine".into(),
            ))),
        }
    }

    /// Removes `id` if it has completed; its failure if it failed. A request
    /// already taken is fine.
    pub(crate) fn take_if_live(st: &mut State, id: Id) -> Result<(), Cause> {
        match st.reqs.get(id).map(|e| &e.req) {
            Some(Req::Done(_)) => {
                st.reqs.remove(id);
                Ok(())
            }
            Some(Req::Failed(_)) => match st.reqs.remove(id).map(|e| e.req) {
                Some(Req::Failed(c)) => Err(c),
                _ => unreachable!("checked above"),
            },
            _ => Ok(()),
        }
    }

    /// Takes the failure of `id`, if it failed.
    pub(crate) fn take_failure(st: &mut State, id: Id) -> Option<Cause> {
        match st.reqs.get(id).map(|e| &e.req) {
            Some(Req::Failed(_)) => match st.reqs.remove(id)?.req {
                Req::Failed(c) => Some(c),
                _ => unreachable!("checked above"),
            },
            _ => None,
        }
    }

    /// A request that is already complete.
    pub(crate) fn completed(st: &mut State, c: Completion) -> Id {
        st.reqs.insert(Entry {
            req: Req::Done(c),
            detached: false,
        })
    }

    /// Whether `id` has completed (or failed), without taking it.
    pub(crate) fn is_done(st: &State, id: Id) -> bool {
        !matches!(
            st.reqs.get(id).map(|e| &e.req),
            Some(
                Req::Posted(_)
                    | Req::Filling(_)
                    | Req::Sending { .. }
                    | Req::AmWaiting { .. }
                    | Req::Abandoned { .. }
                    | Req::Collective(_)
            )
        )
    }

    /// The status of a completed request without taking it.
    pub(crate) fn status(st: &State, id: Id) -> Option<Status> {
        match st.reqs.get(id).map(|e| &e.req) {
            Some(Req::Done(Completion::Received(s) | Completion::Sent(s))) => Some(*s),
            _ => None,
        }
    }

    /// Abandons request `id` whose owner is going away: nothing will touch
    /// its buffer afterwards.
    pub(crate) fn cancel(&self, st: &mut State, id: Id) {
        let Some(entry) = st.reqs.get_mut(id) else {
            return;
        };
        match &mut entry.req {
            Req::Posted(_) => {
                st.posted.retain(|(p, _)| *p != id);
                st.reqs.remove(id);
            }
            Req::Filling(f) => {
                f.dest = Dest::Discard;
                f.then = Then::Drop;
                entry.detached = true;
            }
            Req::Sending { dest, key, .. } => {
                entry.req = Req::Abandoned {
                    dest: *dest,
                    key: *key,
                };
                entry.detached = true;
                st.outbox.cancel(id);
            }
            Req::AmWaiting { .. } | Req::Abandoned { .. } => entry.detached = true,
            Req::Collective(_) => self.coll_cancel(st, id),
            Req::Done(_) | Req::Failed(_) => {
                st.reqs.remove(id);
            }
        }
    }
}
