//! What comes off the lanes: frames dispatched by kind, messages matched
//! against posted receives or kept as unexpected, rendezvous transfers
//! (a single copy out of the sender's memory, or Cts and Data frames), and
//! the checks that turn bad frames into errors.

use super::*;

/// Where arriving bytes go.
pub(super) enum Dest {
    User(RawBuf),
    Owned(Vec<u8>),
    /// The receive was cancelled: the bytes are dropped.
    Discard,
}

/// What to do once a fill is complete.
pub(super) enum Then {
    /// Complete the receive with this status.
    Receive(Status),
    /// The whole message is here: match it (or queue it, or run its handler).
    Arrive(Envelope),
    /// Run the handler of this active-message request.
    Handle(Envelope),
    /// Complete this active-message handle with the bytes.
    Reply(Id),
    /// Nothing: the request was cancelled.
    Drop,
}

/// Bytes arriving in frames (Cont after a First, or Data after a Cts).
pub(super) struct Fill {
    pub(super) source: usize,
    pub(super) dest: Dest,
    pub(super) len: usize,
    pub(super) got: usize,
    pub(super) then: Then,
}

impl Fill {
    fn write(&mut self, bytes: &[u8]) -> Result<bool, Cause> {
        if self.got + bytes.len() > self.len {
            return Err(malformed(
                self.source,
                format!(
                    "{} bytes beyond the {}-byte message",
                    self.got + bytes.len() - self.len,
                    self.len
                ),
            ));
        }
        match &mut self.dest {
            Dest::User(buf) => {
                let end = (self.got + bytes.len()).min(buf.cap);
                if self.got < end {
                    // SAFETY: the buffer is valid for `cap` bytes while the
                    // request lives (its scope waits for it or cancels it,
                    // which turns the destination into `Discard`), and
                    // `got..end` lies inside it.
                    unsafe {
                        weft_copy::copy_nonoverlapping(
                            bytes.as_ptr(),
                            buf.ptr.add(self.got),
                            end - self.got,
                        )
                    };
                }
            }
            Dest::Owned(v) => v.extend_from_slice(bytes),
            Dest::Discard => {}
        }
        self.got += bytes.len();
        Ok(self.got == self.len)
    }
}

/// A whole message that arrived before its receive was posted.
pub(super) struct Unexpected {
    pub(super) source: usize,
    pub(super) env: Envelope,
    pub(super) body: Body,
}

pub(super) enum Body {
    Bytes(Vec<u8>),
    Remote(Rts),
}

impl Body {
    pub(super) fn as_ref(&self) -> BodyRef<'_> {
        match self {
            Body::Bytes(b) => BodyRef::Bytes(b),
            Body::Remote(r) => BodyRef::Remote(*r),
        }
    }

    pub(super) fn len(&self) -> usize {
        match self {
            Body::Bytes(b) => b.len(),
            Body::Remote(r) => r.len as usize,
        }
    }
}

#[derive(Clone, Copy)]
pub(super) enum BodyRef<'a> {
    Bytes(&'a [u8]),
    Remote(Rts),
}

impl BodyRef<'_> {
    fn to_owned(self) -> Body {
        match self {
            BodyRef::Bytes(b) => Body::Bytes(b.to_vec()),
            BodyRef::Remote(r) => Body::Remote(r),
        }
    }
}

pub(super) fn malformed(peer: usize, detail: String) -> Cause {
    Cause::Transport(TransportError::Malformed { peer, detail })
}

impl Engine {
    pub(super) fn dispatch(
        &self,
        st: &mut State,
        source: usize,
        header: u64,
        payload: &[u8],
    ) -> Result<(), Cause> {
        let (kind, env) = wire::parse(source, header)?;
        match kind {
            Kind::Short => self.arrive(st, source, env, BodyRef::Bytes(payload)),
            Kind::First => self.first(st, source, env, payload),
            Kind::Cont => {
                let id = st.assembling[source].ok_or_else(|| {
                    malformed(source, "a continuation frame outside any message".into())
                })?;
                if self.write(st, id, payload)? {
                    st.assembling[source] = None;
                    self.finish(st, id)?;
                }
                Ok(())
            }
            Kind::Rts => {
                let rts = Rts::decode(source, payload)?;
                self.arrive(st, source, env, BodyRef::Remote(rts))
            }
            Kind::Fin => match st.reqs.by_token(env.tag) {
                Some((
                    id,
                    Entry {
                        req: Req::Sending { dest, key, .. } | Req::Abandoned { dest, key },
                        ..
                    },
                )) if *dest == source => {
                    self.unexpose_once(source, key);
                    self.send_done(st, id);
                    Ok(())
                }
                _ => Err(malformed(
                    source,
                    format!("a Fin for unknown send {}", env.tag),
                )),
            },
            Kind::Cts => self.clear_to_send(st, source, env.tag, payload),
            Kind::Help => self.help(st, source, env.tag, payload),
            Kind::Data => {
                let id = match st.reqs.by_token(env.tag) {
                    Some((
                        id,
                        Entry {
                            req: Req::Filling(f),
                            ..
                        },
                    )) if f.source == source => id,
                    _ => {
                        return Err(malformed(
                            source,
                            format!("pushed bytes for unknown receive {}", env.tag),
                        ))
                    }
                };
                if self.write(st, id, payload)? {
                    self.finish(st, id)?;
                }
                Ok(())
            }
        }
    }

    fn clear_to_send(
        &self,
        st: &mut State,
        source: usize,
        token: u32,
        payload: &[u8],
    ) -> Result<(), Cause> {
        let (recv_token, bytes) = wire::decode_cts(source, payload)?;
        let (id, ptr) = match st.reqs.by_token(token) {
            Some((
                id,
                Entry {
                    req:
                        Req::Sending {
                            ptr,
                            len,
                            dest,
                            key,
                            ..
                        },
                    ..
                },
            )) if *dest == source && bytes <= *len as u64 => {
                // The receiver will not read: the sender pushes the bytes.
                self.unexpose_once(source, key);
                (id, *ptr)
            }
            // The sender gave up on this send; the receiver learns it when
            // this PE exits.
            Some((
                id,
                Entry {
                    req: Req::Abandoned { dest, key },
                    ..
                },
            )) if *dest == source => {
                self.unexpose_once(source, key);
                st.reqs.remove(id);
                return Ok(());
            }
            _ => return Err(malformed(source, format!("a Cts for unknown send {token}"))),
        };
        let done = st.outbox.send(
            self.lane_of(source),
            source,
            Out::Stream {
                first: None,
                next: wire::control(Kind::Data, recv_token),
                bytes: Bytes::Request(ptr),
                len: bytes as usize,
                sent: 0,
                done: Some(id),
            },
        )?;
        if let Some(id) = done {
            self.send_done(st, id);
        }
        Ok(())
    }

    fn first(
        &self,
        st: &mut State,
        source: usize,
        env: Envelope,
        payload: &[u8],
    ) -> Result<(), Cause> {
        let (total, bytes) = wire::decode_first(source, payload)?;
        if st.assembling[source].is_some() {
            return Err(malformed(
                source,
                "a new message before the last one ended".into(),
            ));
        }
        let len = usize::try_from(total)
            .ok()
            .filter(|&l| l >= bytes.len())
            .ok_or_else(|| malformed(source, format!("a message of {total} bytes")))?;
        let matched = match env.class {
            Class::P2p | Class::Collective => st
                .posted
                .iter()
                .position(|(_, m)| m.accepts(source, env))
                .map(|pos| st.posted.remove(pos).expect("position is in range").0),
            Class::AmRequest | Class::AmReply => None,
        };
        let id = match matched {
            Some(id) => {
                let Some(Entry {
                    req: r @ Req::Posted(_),
                    ..
                }) = st.reqs.get_mut(id)
                else {
                    unreachable!("posted receives are Posted")
                };
                let Req::Posted(buf) = *r else { unreachable!() };
                *r = Req::Filling(Fill {
                    source,
                    dest: Dest::User(buf),
                    len,
                    got: 0,
                    then: Then::Receive(Status {
                        source,
                        tag: Tag(env.tag),
                        len: len.min(buf.cap),
                        message_len: len,
                    }),
                });
                id
            }
            None => {
                let v = owned_buffer(source, len)?;
                st.reqs.insert(Entry {
                    req: Req::Filling(Fill {
                        source,
                        dest: Dest::Owned(v),
                        len,
                        got: 0,
                        then: Then::Arrive(env),
                    }),
                    detached: true,
                })
            }
        };
        if self.write(st, id, bytes)? {
            self.finish(st, id)
        } else {
            st.assembling[source] = Some(id);
            Ok(())
        }
    }

    /// Writes arriving bytes into fill `id`; `true` when it is complete.
    fn write(&self, st: &mut State, id: Id, bytes: &[u8]) -> Result<bool, Cause> {
        match st.reqs.get_mut(id) {
            Some(Entry {
                req: Req::Filling(f),
                ..
            }) => f.write(bytes),
            _ => Err(Cause::Broken("a fill vanished from the engine".into())),
        }
    }

    fn finish(&self, st: &mut State, id: Id) -> Result<(), Cause> {
        let Some(Entry {
            req: Req::Filling(f),
            ..
        }) = st.reqs.get_mut(id)
        else {
            return Err(Cause::Broken("a fill vanished from the engine".into()));
        };
        let source = f.source;
        let dest = std::mem::replace(&mut f.dest, Dest::Discard);
        match std::mem::replace(&mut f.then, Then::Drop) {
            Then::Receive(status) => {
                Self::complete(st, id, Completion::Received(status));
                Ok(())
            }
            Then::Drop => {
                st.reqs.remove(id);
                Ok(())
            }
            then => {
                st.reqs.remove(id);
                let Dest::Owned(data) = dest else {
                    unreachable!("only owned fills arrive, run handlers or reply")
                };
                match then {
                    Then::Arrive(env) => self.arrive(st, source, env, BodyRef::Bytes(&data)),
                    Then::Handle(env) => {
                        self.handle(st, source, env, &data)?;
                        self.unblock(st, source)
                    }
                    Then::Reply(handle) => {
                        Self::am_done(st, handle, data);
                        Ok(())
                    }
                    Then::Receive(_) | Then::Drop => unreachable!("handled above"),
                }
            }
        }
    }

    /// A whole message (or the Rts of one) from `source`.
    fn arrive(
        &self,
        st: &mut State,
        source: usize,
        env: Envelope,
        body: BodyRef<'_>,
    ) -> Result<(), Cause> {
        if env.class == Class::Collective {
            let payload = match body {
                BodyRef::Bytes(b) => b,
                BodyRef::Remote(_) => &[],
            };
            if self.coll_arrived(st, source, env, payload) {
                return Ok(());
            }
        }
        match env.class {
            Class::P2p | Class::Collective => {
                match st.posted.iter().position(|(_, m)| m.accepts(source, env)) {
                    Some(pos) => {
                        let (id, _) = st.posted.remove(pos).expect("position is in range");
                        let Some(Entry {
                            req: Req::Posted(buf),
                            ..
                        }) = st.reqs.get(id)
                        else {
                            unreachable!("posted receives are Posted")
                        };
                        let buf = *buf;
                        self.deliver(st, id, buf, source, env, body)
                    }
                    None => {
                        st.unexpected.push_back(Unexpected {
                            source,
                            env,
                            body: body.to_owned(),
                        });
                        Ok(())
                    }
                }
            }
            Class::AmRequest => {
                if let Some(q) = &mut st.am_blocked[source] {
                    q.push_back((env, body.to_owned()));
                    return Ok(());
                }
                self.request(st, source, env, body)
            }
            Class::AmReply => {
                let handle = match st.reqs.by_token(env.tag) {
                    Some((
                        id,
                        Entry {
                            req: Req::AmWaiting { target },
                            ..
                        },
                    )) if *target == source => id,
                    _ => {
                        return Err(malformed(
                            source,
                            format!("a reply to unknown request {}", env.tag),
                        ))
                    }
                };
                match body {
                    BodyRef::Bytes(b) => {
                        Self::am_done(st, handle, b.to_vec());
                        Ok(())
                    }
                    BodyRef::Remote(rts) => {
                        let mut v = owned_buffer(source, rts.len as usize)?;
                        v.resize(rts.len as usize, 0);
                        if self.fetch(st, source, &rts, &mut v)? {
                            self.control(st, source, Kind::Fin, rts.token, &[])?;
                            Self::am_done(st, handle, v);
                        } else {
                            let then = Then::Reply(handle);
                            self.push_into(st, source, &rts, Dest::Owned(Vec::new()), then, None)?;
                        }
                        Ok(())
                    }
                }
            }
        }
    }

    /// An active-message request whose turn has come.
    fn request(
        &self,
        st: &mut State,
        source: usize,
        env: Envelope,
        body: BodyRef<'_>,
    ) -> Result<(), Cause> {
        match body {
            BodyRef::Bytes(b) => self.handle(st, source, env, b),
            BodyRef::Remote(rts) => {
                let mut v = owned_buffer(source, rts.len as usize)?;
                v.resize(rts.len as usize, 0);
                if self.fetch(st, source, &rts, &mut v)? {
                    self.control(st, source, Kind::Fin, rts.token, &[])?;
                    self.handle(st, source, env, &v)
                } else {
                    st.am_blocked[source] = Some(VecDeque::new());
                    let then = Then::Handle(env);
                    self.push_into(st, source, &rts, Dest::Owned(Vec::new()), then, None)
                }
            }
        }
    }

    /// Runs the active messages held back behind a pushed one, until one
    /// has to wait for pushed bytes again.
    fn unblock(&self, st: &mut State, source: usize) -> Result<(), Cause> {
        let Some(mut queue) = st.am_blocked[source].take() else {
            return Ok(());
        };
        while let Some((env, body)) = queue.pop_front() {
            self.request(st, source, env, body.as_ref())?;
            if let Some(q) = &mut st.am_blocked[source] {
                q.extend(queue);
                return Ok(());
            }
        }
        Ok(())
    }

    /// Delivers a matched message into receive `id`'s buffer.
    pub(super) fn deliver(
        &self,
        st: &mut State,
        id: Id,
        buf: RawBuf,
        source: usize,
        env: Envelope,
        body: BodyRef<'_>,
    ) -> Result<(), Cause> {
        let message_len = match body {
            BodyRef::Bytes(b) => b.len(),
            BodyRef::Remote(r) => r.len as usize,
        };
        let n = message_len.min(buf.cap);
        let status = Status {
            source,
            tag: Tag(env.tag),
            len: n,
            message_len,
        };
        // SAFETY: the receive buffer is valid for `cap >= n` bytes while the
        // request lives, and nothing else accesses it (see `Fill::write`).
        let dst = unsafe { std::slice::from_raw_parts_mut(buf.ptr, n) };
        match body {
            BodyRef::Bytes(b) => weft_copy::copy(dst, &b[..n]),
            BodyRef::Remote(rts) if n > 0 => match self.fetch(st, source, &rts, dst) {
                Ok(true) => self.control(st, source, Kind::Fin, rts.token, &[])?,
                Ok(false) => {
                    let then = Then::Receive(status);
                    return self.push_into(st, source, &rts, Dest::User(buf), then, Some(id));
                }
                // This receive fails (the sender is gone, or named memory it
                // does not have); the engine goes on.
                Err(cause) => {
                    match st.reqs.get_mut(id) {
                        Some(e) if !e.detached => e.req = Req::Failed(cause),
                        _ => {
                            st.reqs.remove(id);
                        }
                    }
                    return Ok(());
                }
            },
            BodyRef::Remote(rts) => self.control(st, source, Kind::Fin, rts.token, &[])?,
        }
        Self::complete(st, id, Completion::Received(status));
        Ok(())
    }

    /// Copies a rendezvous sender's bytes into `dst` in one copy; `false` if
    /// that is not possible here, so the bytes must be pushed.
    fn fetch(
        &self,
        st: &mut State,
        source: usize,
        rts: &Rts,
        dst: &mut [u8],
    ) -> Result<bool, Cause> {
        if !self.settings.single_copy || st.no_single_copy[source] {
            return Ok(false);
        }
        let shared = dst.len() >= help::MIN
            && rts.idle
            && source != self.rank
            && self.lane_of(source).caps().load_store;
        if shared {
            return self.fetch_shared(st, source, rts, dst);
        }
        match self
            .lane_of(source)
            .read_remote(source, rts.addr, rts.key, dst)
        {
            Ok(()) => Ok(true),
            Err(TransportError::Unsupported { .. }) => {
                st.no_single_copy[source] = true;
                Ok(false)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Asks `source` to push a rendezvous message's bytes into `dest`. The
    /// fill becomes entry `reuse` (a user's receive) or a new internal entry.
    fn push_into(
        &self,
        st: &mut State,
        source: usize,
        rts: &Rts,
        dest: Dest,
        then: Then,
        reuse: Option<Id>,
    ) -> Result<(), Cause> {
        let len = match &dest {
            Dest::User(buf) => buf.cap.min(rts.len as usize),
            _ => rts.len as usize,
        };
        let dest = match dest {
            Dest::Owned(_) => Dest::Owned(owned_buffer(source, len)?),
            d => d,
        };
        let fill = Fill {
            source,
            dest,
            len,
            got: 0,
            then,
        };
        let id = match reuse {
            Some(id) => {
                st.reqs.get_mut(id).expect("the receive is live").req = Req::Filling(fill);
                id
            }
            None => st.reqs.insert(Entry {
                req: Req::Filling(fill),
                detached: true,
            }),
        };
        self.control(
            st,
            source,
            Kind::Cts,
            rts.token,
            &wire::encode_cts(id.token(), len as u64),
        )
    }
}

/// An empty vector able to hold `len` bytes from `source`, or an error if
/// memory for that claim cannot be had (a corrupt length must not abort).
pub(super) fn owned_buffer(source: usize, len: usize) -> Result<Vec<u8>, Cause> {
    let mut v = Vec::new();
    v.try_reserve_exact(len).map_err(|_| {
        malformed(
            source,
            format!("a message of {len} bytes does not fit in memory"),
        )
    })?;
    Ok(v)
}
