//! The address blob a verbs PE publishes through the bootstrap: where its
//! process runs, how its port is addressed, its heap's and control area's
//! addresses and keys, and the queue pair it created for each peer.

use crate::TransportError;

/// Leading bytes of every blob, so that a blob from another transport or
/// version is caught.
const MAGIC: &[u8; 4] = b"WVB1";

/// What a peer needs to reach this PE.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Address {
    /// Host and boot id, as the shared-memory transport computes it.
    pub node: String,
    pub pid: i32,
    pub lid: u32,
    pub gid: [u8; 16],
    pub heap_addr: u64,
    pub heap_len: u64,
    pub heap_rkey: u32,
    pub ctrl_addr: u64,
    pub ctrl_rkey: u32,
    /// Messages each peer may have in flight toward this PE.
    pub credits: u32,
    /// Number of this PE's queue pair for each PE of the job, by rank.
    pub qpns: Vec<u32>,
}

impl Address {
    /// The blob.
    pub(super) fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(80 + self.node.len() + 4 * self.qpns.len());
        b.extend_from_slice(MAGIC);
        b.extend_from_slice(&(self.node.len() as u32).to_le_bytes());
        b.extend_from_slice(self.node.as_bytes());
        b.extend_from_slice(&self.pid.to_le_bytes());
        b.extend_from_slice(&self.lid.to_le_bytes());
        b.extend_from_slice(&self.gid);
        for v in [self.heap_addr, self.heap_len, self.ctrl_addr] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        for v in [self.heap_rkey, self.ctrl_rkey, self.credits] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.extend_from_slice(&(self.qpns.len() as u32).to_le_bytes());
        for q in &self.qpns {
            b.extend_from_slice(&q.to_le_bytes());
        }
        b
    }

    /// Parses PE `peer`'s blob for a job of `size` PEs.
    pub(super) fn decode(peer: usize, size: usize, blob: &[u8]) -> Result<Address, TransportError> {
        let bad = |detail: &str| TransportError::Malformed {
            peer,
            detail: format!("verbs address: {detail}"),
        };
        let mut r = Reader(blob);
        if r.take(4).ok_or_else(|| bad("too short"))? != MAGIC {
            return Err(bad("not a verbs address of this version"));
        }
        let short = || bad("truncated");
        let node_len = r.u32().ok_or_else(short)? as usize;
        let node = r.take(node_len).ok_or_else(short)?;
        let node = String::from_utf8(node.to_vec()).map_err(|_| bad("node id is not UTF-8"))?;
        let pid = r.u32().ok_or_else(short)? as i32;
        let lid = r.u32().ok_or_else(short)?;
        let gid: [u8; 16] = r.take(16).ok_or_else(short)?.try_into().expect("16 bytes");
        let heap_addr = r.u64().ok_or_else(short)?;
        let heap_len = r.u64().ok_or_else(short)?;
        let ctrl_addr = r.u64().ok_or_else(short)?;
        let heap_rkey = r.u32().ok_or_else(short)?;
        let ctrl_rkey = r.u32().ok_or_else(short)?;
        let credits = r.u32().ok_or_else(short)?;
        let n = r.u32().ok_or_else(short)? as usize;
        if n != size {
            return Err(bad(&format!("{n} queue pairs for a job of {size} PEs")));
        }
        let qpns = (0..n)
            .map(|_| r.u32().ok_or_else(short))
            .collect::<Result<_, _>>()?;
        if !r.0.is_empty() {
            return Err(bad("trailing bytes"));
        }
        if credits == 0 {
            return Err(bad("no message credits"));
        }
        Ok(Address {
            node,
            pid,
            lid,
            gid,
            heap_addr,
            heap_len,
            heap_rkey,
            ctrl_addr,
            ctrl_rkey,
            credits,
            qpns,
        })
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
    }

    fn u64(&mut self) -> Option<u64> {
        self.take(8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Address {
        Address {
            node: "host 1234".into(),
            pid: 42,
            lid: 7,
            gid: [3; 16],
            heap_addr: 0x7f00_0000_0000,
            heap_len: 1 << 20,
            heap_rkey: 11,
            ctrl_addr: 0x7f10_0000_0000,
            ctrl_rkey: 12,
            credits: 32,
            qpns: vec![100, 101, 102],
        }
    }

    #[test]
    fn round_trip() {
        let a = sample();
        assert_eq!(Address::decode(1, 3, &a.encode()).unwrap(), a);
    }

    #[test]
    fn every_truncation_and_corruption_is_an_error() {
        let blob = sample().encode();
        for n in 0..blob.len() {
            let e = Address::decode(2, 3, &blob[..n]).unwrap_err();
            assert!(e.to_string().contains("PE 2"), "{e}");
        }
        assert!(Address::decode(2, 4, &blob).is_err(), "wrong job size");
        let mut long = blob.clone();
        long.push(0);
        assert!(Address::decode(2, 3, &long).is_err());
        let mut magic = blob;
        magic[0] = b'X';
        assert!(Address::decode(2, 3, &magic).is_err());
    }
}
