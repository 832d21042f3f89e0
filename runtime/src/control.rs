//! Runtime-internal messages: the [`Channel`] the collective algorithms run
//! on, carried by the transports' ordered messages.
//!
//! A message header packs the kind (collective), a context number (the
//! collective's sequence number in the world, the same on every PE because
//! collectives are called in the same order everywhere) and the algorithm's
//! tag. Messages that arrive before they are wanted wait in an inbox keyed by
//! source and header.

use std::collections::{HashMap, VecDeque};

use weft_collectives::Channel;
use weft_transport::TransportError;

use crate::backoff::Backoff;
use crate::error::{Cause, Error};
use crate::World;

const KIND_COLLECTIVE: u64 = 1;

/// Messages received but not yet asked for, and the collective sequence.
#[derive(Default)]
pub(crate) struct Inbox {
    waiting: HashMap<(usize, u64), VecDeque<Vec<u8>>>,
    next_context: u32,
}

impl Inbox {
    /// The oldest message waiting under `key`. Keys whose queue empties are
    /// removed: every collective has a new context, so keys never recur.
    fn take(&mut self, key: (usize, u64)) -> Option<Vec<u8>> {
        let queue = self.waiting.get_mut(&key)?;
        let data = queue.pop_front();
        if queue.is_empty() {
            self.waiting.remove(&key);
        }
        data
    }

    /// The context number for the next collective.
    pub(crate) fn next_context(&mut self) -> u32 {
        let c = self.next_context;
        self.next_context = (c + 1) & 0xff_ffff;
        c
    }
}

/// One collective's view of the world as a [`Channel`].
pub(crate) struct CollectiveChannel<'a> {
    pub(crate) world: &'a World,
    pub(crate) inbox: &'a mut Inbox,
    pub(crate) op: &'static str,
    pub(crate) context: u32,
}

impl CollectiveChannel<'_> {
    fn header(&self, tag: u32) -> u64 {
        KIND_COLLECTIVE << 56 | u64::from(self.context) << 32 | u64::from(tag)
    }

    fn err(&self, e: TransportError) -> Error {
        Error::new(self.world.rank(), self.op, Cause::Transport(e))
    }

    /// Moves every received message into the inbox; returns how many.
    fn drain(&mut self) -> Result<usize, Error> {
        let mut n = 0;
        for lane in self.world.lanes() {
            n += lane
                .poll(&mut |m| {
                    self.inbox
                        .waiting
                        .entry((m.source, m.header))
                        .or_default()
                        .push_back(m.payload.to_vec())
                })
                .map_err(|e| self.err(e))?;
        }
        Ok(n)
    }
}

impl Channel for CollectiveChannel<'_> {
    type Error = Error;

    fn rank(&self) -> usize {
        self.world.rank()
    }

    fn size(&self) -> usize {
        self.world.size()
    }

    fn send(&mut self, peer: usize, tag: u32, data: &[u8]) -> Result<(), Error> {
        let lane = self.world.lane(self.op, peer)?;
        let header = self.header(tag);
        let mut backoff = Backoff::new();
        loop {
            match lane.send(peer, header, data) {
                Ok(()) => return Ok(()),
                Err(TransportError::WouldBlock { .. }) => {
                    // The peer may be blocked sending to us: keep our side moving.
                    if self.drain()? == 0 {
                        backoff.snooze();
                    }
                }
                Err(e) => return Err(self.err(e)),
            }
        }
    }

    fn recv(&mut self, peer: usize, tag: u32, buf: &mut [u8]) -> Result<usize, Error> {
        let key = (peer, self.header(tag));
        let mut backoff = Backoff::new();
        loop {
            if let Some(data) = self.inbox.take(key) {
                let n = data.len().min(buf.len());
                buf[..n].copy_from_slice(&data[..n]);
                return Ok(data.len());
            }
            if self.drain()? == 0 {
                backoff.snooze();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drained_keys_are_removed() {
        let mut inbox = Inbox::default();
        for context in 0..100u64 {
            let q = inbox.waiting.entry((1, context)).or_default();
            q.push_back(vec![context as u8]);
            q.push_back(vec![]);
            assert_eq!(inbox.take((1, context)), Some(vec![context as u8]));
            assert_eq!(inbox.take((1, context)), Some(vec![]));
            assert_eq!(inbox.take((1, context)), None);
        }
        assert!(inbox.waiting.is_empty());
    }
}
