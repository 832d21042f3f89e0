//! The [`Channel`] the collective algorithms run on, carried by the progress
//! engine as messages of the collective class.
//!
//! A collective's messages carry its sequence number in the world (the same
//! on every PE, because collectives are called in the same order
//! everywhere) as their context and the algorithm's tag as their tag, so
//! they never match point-to-point receives or another collective's. They
//! are always sent eagerly: an algorithm's send must not wait for the
//! receiver.

use weft_collectives::Channel;

use crate::error::{Error, Result};
use crate::progress::wire::{Class, Envelope, CTX_MASK};
use crate::progress::{Completion, Match, RawBuf, SendMode, Watch};
use crate::World;

/// One collective's view of the world as a [`Channel`].
pub(crate) struct CollectiveChannel<'a> {
    world: &'a World,
    op: &'static str,
    seq: u32,
}

impl<'a> CollectiveChannel<'a> {
    /// A channel for the next collective, `op`.
    pub(crate) fn new(world: &'a World, op: &'static str) -> Result<CollectiveChannel<'a>> {
        let mut st = world.engine().lock(op)?;
        let seq = st.collective_seq;
        st.collective_seq = (seq + 1) & CTX_MASK;
        Ok(CollectiveChannel { world, op, seq })
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
        self.world.check_pe(self.op, peer)?;
        let engine = self.world.engine();
        let env = Envelope {
            class: Class::Collective,
            ctx: self.seq,
            tag,
        };
        let mut st = engine.lock(self.op)?;
        engine
            .send(
                &mut st,
                peer,
                env,
                data.as_ptr(),
                data.len(),
                SendMode::Eager,
            )
            .map(drop)
            .map_err(|c| self.world.error(self.op, c))
    }

    fn recv(&mut self, peer: usize, tag: u32, buf: &mut [u8]) -> Result<usize, Error> {
        self.world.check_pe(self.op, peer)?;
        let engine = self.world.engine();
        let m = Match {
            class: Class::Collective,
            ctx: self.seq,
            source: Some(peer),
            tag: Some(tag),
        };
        let id = {
            let raw = RawBuf {
                ptr: buf.as_mut_ptr(),
                cap: buf.len(),
            };
            let mut st = engine.lock(self.op)?;
            engine
                .post_recv(&mut st, m, raw)
                .map_err(|c| self.world.error(self.op, c))?
        };
        match self.world.complete(self.op, id, Watch::Peer(peer))? {
            Completion::Received(status) => Ok(status.message_len),
            Completion::Sent(_) | Completion::Reply(_) => {
                unreachable!("a receive completes with a received status")
            }
        }
    }
}
