//! An in-process harness: `p` members as threads joined by channels, for
//! testing algorithms against sequential references at any team size.

use std::collections::{HashMap, VecDeque};
use std::sync::mpsc::{channel, Receiver, Sender};

use crate::Channel;

/// The error of a simulated channel: a peer's thread ended (its algorithm
/// returned or failed) while this member still waited for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closed;

impl std::fmt::Display for Closed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a simulated peer ended before sending")
    }
}

type Packet = (usize, u32, Vec<u8>);

/// One member's end of the simulated team.
pub struct SimChannel {
    rank: usize,
    /// Senders to every member; `None` at this member's own index, so that
    /// a receive fails instead of hanging once every other member has ended.
    peers: Vec<Option<Sender<Packet>>>,
    inbox: Receiver<Packet>,
    unexpected: HashMap<(usize, u32), VecDeque<Vec<u8>>>,
    sent: usize,
}

impl SimChannel {
    /// Messages this member has sent so far.
    pub fn sent(&self) -> usize {
        self.sent
    }
}

impl Channel for SimChannel {
    type Error = Closed;

    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.peers.len()
    }

    fn send(&mut self, peer: usize, tag: u32, data: &[u8]) -> Result<(), Closed> {
        self.sent += 1;
        self.peers[peer]
            .as_ref()
            .ok_or(Closed)?
            .send((self.rank, tag, data.to_vec()))
            .map_err(|_| Closed)
    }

    fn recv(&mut self, peer: usize, tag: u32, buf: &mut [u8]) -> Result<usize, Closed> {
        let data = loop {
            if let Some(d) = self
                .unexpected
                .get_mut(&(peer, tag))
                .and_then(VecDeque::pop_front)
            {
                break d;
            }
            let (src, t, d) = self.inbox.recv().map_err(|_| Closed)?;
            if (src, t) == (peer, tag) {
                break d;
            }
            self.unexpected.entry((src, t)).or_default().push_back(d);
        };
        let n = data.len().min(buf.len());
        buf[..n].copy_from_slice(&data[..n]);
        Ok(data.len())
    }
}

/// Runs `f` on `p` members, each on its own thread, and returns their results
/// in member order.
pub fn run<T: Send>(p: usize, f: impl Fn(&mut SimChannel) -> T + Sync) -> Vec<T> {
    let (senders, receivers): (Vec<_>, Vec<_>) = (0..p).map(|_| channel()).unzip();
    std::thread::scope(|s| {
        let handles: Vec<_> = receivers
            .into_iter()
            .enumerate()
            .map(|(rank, inbox)| {
                let mut chan = SimChannel {
                    rank,
                    peers: senders
                        .iter()
                        .enumerate()
                        .map(|(i, tx)| (i != rank).then(|| tx.clone()))
                        .collect(),
                    inbox,
                    unexpected: HashMap::new(),
                    sent: 0,
                };
                let f = &f;
                s.spawn(move || f(&mut chan))
            })
            .collect();
        drop(senders);
        handles
            .into_iter()
            .map(|h| h.join().expect("member panicked"))
            .collect()
    })
}
