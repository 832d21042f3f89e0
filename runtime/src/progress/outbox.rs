//! Frames waiting for credit toward each peer.
//!
//! Everything a PE sends to a peer (messages, rendezvous control, pushed
//! bytes) goes through that peer's queue in order; a frame is sent directly
//! only when the queue is empty. A message cut into frames is one entry, so
//! its frames are never interleaved with another message's: the receiver
//! reassembles by source alone.

use std::collections::VecDeque;

use weft_transport::{Transport, TransportError};

use super::slab::Id;
use super::wire::{self, Kind};

/// Where a stream's bytes come from.
pub(crate) enum Bytes {
    /// A copy owned by the queue.
    Owned(Vec<u8>),
    /// The caller's buffer, valid only during [`Outbox::send`]: what does not
    /// go at once is copied.
    Caller(*const u8),
    /// The buffer of a send request, valid until the request completes (the
    /// engine completes it only when the stream has drained).
    Request(*const u8),
}

/// What is waiting to be sent to one peer.
pub(crate) enum Out {
    /// One frame.
    Frame { header: u64, payload: Vec<u8> },
    /// A message's bytes, cut into frames of the lane's size: a First frame
    /// (when `first` is given and nothing was sent yet) then frames with
    /// header `next`. `done` completes when the last frame has gone.
    Stream {
        first: Option<u64>,
        next: u64,
        bytes: Bytes,
        len: usize,
        sent: usize,
        done: Option<Id>,
    },
}

/// The result of pushing one entry.
pub(crate) enum Pushed {
    /// Everything went; the id to complete, if any.
    All(Option<Id>),
    /// The peer ran out of credit.
    Blocked,
}

impl Out {
    /// Sends as much of this entry as `lane` takes.
    pub(crate) fn push(
        &mut self,
        lane: &dyn Transport,
        peer: usize,
    ) -> Result<Pushed, TransportError> {
        match self {
            Out::Frame { header, payload } => match lane.send(peer, *header, payload) {
                Ok(()) => Ok(Pushed::All(None)),
                Err(TransportError::WouldBlock { .. }) => Ok(Pushed::Blocked),
                Err(e) => Err(e),
            },
            Out::Stream {
                first,
                next,
                bytes,
                len,
                sent,
                done,
            } => {
                let max = lane.caps().max_message;
                let base = match bytes {
                    Bytes::Owned(v) => v.as_ptr(),
                    Bytes::Caller(p) | Bytes::Request(p) => *p,
                };
                let mut frame = Vec::new();
                loop {
                    let result = match first.take() {
                        Some(h) => {
                            let n = (*len - *sent).min(max - 8);
                            frame.clear();
                            frame.extend_from_slice(&(*len as u64).to_le_bytes());
                            // SAFETY: `base` points to `len` readable bytes
                            // (owned, or a send buffer kept alive until `done`
                            // completes) and `sent + n <= len`.
                            frame.extend_from_slice(unsafe {
                                std::slice::from_raw_parts(base.add(*sent), n)
                            });
                            lane.send(peer, h, &frame).map(|()| n).inspect_err(|_| {
                                *first = Some(h);
                            })
                        }
                        None => {
                            if *sent == *len {
                                return Ok(Pushed::All(done.take()));
                            }
                            let n = (*len - *sent).min(max);
                            // SAFETY: as above.
                            let chunk = unsafe { std::slice::from_raw_parts(base.add(*sent), n) };
                            lane.send(peer, *next, chunk).map(|()| n)
                        }
                    };
                    match result {
                        Ok(n) => *sent += n,
                        Err(TransportError::WouldBlock { .. }) => return Ok(Pushed::Blocked),
                        Err(e) => return Err(e),
                    }
                }
            }
        }
    }
}

/// Per-peer queues of [`Out`].
#[derive(Default)]
pub(crate) struct Outbox {
    queues: Vec<VecDeque<Out>>,
    /// Number of non-empty queues, so that an idle flush costs nothing.
    busy: usize,
}

impl Outbox {
    pub(crate) fn new(peers: usize) -> Outbox {
        Outbox {
            queues: (0..peers).map(|_| VecDeque::new()).collect(),
            busy: 0,
        }
    }

    /// Sends `out` now if nothing is queued before it and credit allows,
    /// else queues what is left (copying bytes borrowed from the caller).
    /// Returns an id that completed.
    pub(crate) fn send(
        &mut self,
        lane: &dyn Transport,
        peer: usize,
        mut out: Out,
    ) -> Result<Option<Id>, TransportError> {
        if self.queues[peer].is_empty() {
            if let Pushed::All(done) = out.push(lane, peer)? {
                return Ok(done);
            }
            self.busy += 1;
        }
        if let Out::Stream {
            first,
            bytes,
            len,
            sent,
            ..
        } = &mut out
        {
            if let Bytes::Caller(p) = *bytes {
                // SAFETY: the caller's buffer holds `len` bytes until we return.
                let rest = unsafe { std::slice::from_raw_parts(p.add(*sent), *len - *sent) };
                *bytes = Bytes::Owned(rest.to_vec());
                // A First frame still to send carries the whole length.
                if first.is_none() {
                    *len -= *sent;
                    *sent = 0;
                }
            }
        }
        self.queues[peer].push_back(out);
        Ok(None)
    }

    /// Queues a frame (copying the payload unless it goes at once).
    pub(crate) fn frame(
        &mut self,
        lane: &dyn Transport,
        peer: usize,
        header: u64,
        payload: &[u8],
    ) -> Result<(), TransportError> {
        if self.queues[peer].is_empty() {
            match lane.send(peer, header, payload) {
                Ok(()) => return Ok(()),
                Err(TransportError::WouldBlock { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        self.send(
            lane,
            peer,
            Out::Frame {
                header,
                payload: payload.to_vec(),
            },
        )
        .map(|_| ())
    }

    /// Sends what credit allows from every queue, reaching peer `p`
    /// through `lane_of(p)`; collects completed ids in `done`. Returns how
    /// many entries went.
    pub(crate) fn flush<'l>(
        &mut self,
        lane_of: impl Fn(usize) -> &'l dyn Transport,
        done: &mut Vec<Id>,
    ) -> Result<usize, TransportError> {
        let mut n = 0;
        for (peer, q) in self.queues.iter_mut().enumerate() {
            if q.is_empty() {
                continue;
            }
            let lane = lane_of(peer);
            while let Some(front) = q.front_mut() {
                match front.push(lane, peer)? {
                    Pushed::All(id) => {
                        done.extend(id);
                        q.pop_front();
                        n += 1;
                    }
                    Pushed::Blocked => break,
                }
            }
            if q.is_empty() {
                self.busy -= 1;
            }
        }
        Ok(n)
    }

    /// Whether any queue holds something.
    pub(crate) fn busy(&self) -> bool {
        self.busy > 0
    }

    /// Drops queued streams that read from the buffer of request `id`
    /// (a cancelled send), so nothing reads the buffer after its owner is gone.
    pub(crate) fn cancel(&mut self, id: Id) {
        for q in &mut self.queues {
            let was = q.len();
            q.retain(|o| !matches!(o, Out::Stream { done: Some(d), bytes: Bytes::Request(_), .. } if *d == id));
            if was > 0 && q.is_empty() {
                self.busy -= 1;
            }
        }
    }
}

/// The header of a Cont frame.
pub(crate) fn cont_header() -> u64 {
    wire::control(Kind::Cont, 0)
}
