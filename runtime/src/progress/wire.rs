//! Frames of the two-sided protocol, as carried in transport messages.
//!
//! A transport message has a 64-bit header and a small payload. The header
//! packs the frame kind (4 bits), the message class (4 bits), a 24-bit
//! context and a 32-bit tag:
//!
//! | kind  | payload                                   | header context, tag        |
//! |-------|-------------------------------------------|----------------------------|
//! | Short | the whole message                         | envelope                   |
//! | First | total length (u64), then the first bytes  | envelope                   |
//! | Cont  | the next bytes of the source's message    | 0, 0                       |
//! | Rts   | [`Rts`]: length, token, address, key, idle | envelope                  |
//! | Fin   | nothing: the receiver has the bytes       | 0, sender's token          |
//! | Cts   | receiver's token (u32), bytes wanted (u64) | 0, sender's token         |
//! | Data  | bytes pushed after a Cts, in order        | 0, receiver's token        |
//! | Help  | [`Help`]: generation, chunk, address, length | 0, sender's token       |
//!
//! The envelope of a point-to-point message is (communicator context, tag);
//! of a collective's message (collective sequence, team and algorithm tag);
//! of an active-message request (handler, request token); of a reply
//! (0, request token). Every field read from the wire is checked before use.

use weft_transport::TransportError;

/// What a frame is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Short = 1,
    First = 2,
    Cont = 3,
    Rts = 4,
    Fin = 5,
    Cts = 6,
    Data = 7,
    Help = 8,
}

/// Which layer a message belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Class {
    P2p = 1,
    Collective = 2,
    AmRequest = 3,
    AmReply = 4,
}

/// Who a message is for: class, context and tag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Envelope {
    pub(crate) class: Class,
    /// 24 bits.
    pub(crate) ctx: u32,
    pub(crate) tag: u32,
}

/// Largest context value.
pub(crate) const CTX_MASK: u32 = 0xff_ffff;

pub(crate) fn header(kind: Kind, env: Envelope) -> u64 {
    (kind as u64) << 60
        | (env.class as u64) << 56
        | u64::from(env.ctx & CTX_MASK) << 32
        | u64::from(env.tag)
}

/// A control frame's header: kind and a token in the tag field.
pub(crate) fn control(kind: Kind, token: u32) -> u64 {
    (kind as u64) << 60 | u64::from(token)
}

/// Splits a header into kind and envelope, refusing values never sent.
pub(crate) fn parse(source: usize, h: u64) -> Result<(Kind, Envelope), TransportError> {
    let bad = |what: &str| TransportError::Malformed {
        peer: source,
        detail: format!("frame header {h:#018x}: {what}"),
    };
    let kind = match h >> 60 {
        1 => Kind::Short,
        2 => Kind::First,
        3 => Kind::Cont,
        4 => Kind::Rts,
        5 => Kind::Fin,
        6 => Kind::Cts,
        7 => Kind::Data,
        8 => Kind::Help,
        _ => return Err(bad("unknown frame kind")),
    };
    let class = match (h >> 56) & 0xf {
        1 => Class::P2p,
        2 => Class::Collective,
        3 => Class::AmRequest,
        4 => Class::AmReply,
        0 if !matches!(kind, Kind::Short | Kind::First | Kind::Rts) => Class::P2p,
        _ => return Err(bad("unknown message class")),
    };
    Ok((
        kind,
        Envelope {
            class,
            ctx: (h >> 32) as u32 & CTX_MASK,
            tag: h as u32,
        },
    ))
}

/// A request to send: the receiver copies the bytes out of the sender's
/// memory itself (or asks for them with a Cts) and answers with a Fin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Rts {
    pub(crate) len: u64,
    pub(crate) token: u32,
    /// Address of the bytes in the sender's process.
    pub(crate) addr: u64,
    /// The key the sender's transport exposed them with.
    pub(crate) key: u64,
    /// The sender had no receive of its own waiting when it sent this: it
    /// is likely free to copy part of the message ([`super::help`]).
    pub(crate) idle: bool,
}

pub(crate) const RTS_BYTES: usize = 29;

impl Rts {
    pub(crate) fn encode(&self) -> [u8; RTS_BYTES] {
        let mut out = [0u8; RTS_BYTES];
        out[0..8].copy_from_slice(&self.len.to_le_bytes());
        out[8..12].copy_from_slice(&self.token.to_le_bytes());
        out[12..20].copy_from_slice(&self.addr.to_le_bytes());
        out[20..28].copy_from_slice(&self.key.to_le_bytes());
        out[28] = u8::from(self.idle);
        out
    }

    pub(crate) fn decode(source: usize, p: &[u8]) -> Result<Rts, TransportError> {
        if p.len() != RTS_BYTES {
            return Err(TransportError::Malformed {
                peer: source,
                detail: format!("rendezvous request of {} bytes", p.len()),
            });
        }
        let idle = match p[28] {
            0 => false,
            1 => true,
            b => {
                return Err(TransportError::Malformed {
                    peer: source,
                    detail: format!("rendezvous request with flag byte {b}"),
                })
            }
        };
        Ok(Rts {
            len: u64_at(p, 0),
            token: u32_at(p, 8),
            addr: u64_at(p, 12),
            key: u64_at(p, 20),
            idle,
        })
    }
}

/// A clear-to-send: push `bytes` bytes as Data frames for receiver token `token`.
pub(crate) fn encode_cts(token: u32, bytes: u64) -> [u8; 12] {
    let mut out = [0u8; 12];
    out[0..4].copy_from_slice(&token.to_le_bytes());
    out[4..12].copy_from_slice(&bytes.to_le_bytes());
    out
}

pub(crate) fn decode_cts(source: usize, p: &[u8]) -> Result<(u32, u64), TransportError> {
    if p.len() != 12 {
        return Err(TransportError::Malformed {
            peer: source,
            detail: format!("clear-to-send of {} bytes", p.len()),
        });
    }
    Ok((u32_at(p, 0), u64_at(p, 4)))
}

/// A receiver's request that the sender of a rendezvous message copy
/// chunks of it into the receiver's memory from the far end
/// ([`super::help`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Help {
    /// The receiver's transfer number, in its claim word.
    pub(crate) generation: u32,
    /// Bytes per chunk.
    pub(crate) chunk: u32,
    /// The receiver's buffer.
    pub(crate) addr: u64,
    /// The bytes the receiver takes: the message's length, or its buffer's
    /// when that is shorter.
    pub(crate) len: u64,
}

impl Help {
    pub(crate) fn encode(&self) -> [u8; 24] {
        let mut out = [0u8; 24];
        out[0..4].copy_from_slice(&self.generation.to_le_bytes());
        out[4..8].copy_from_slice(&self.chunk.to_le_bytes());
        out[8..16].copy_from_slice(&self.addr.to_le_bytes());
        out[16..24].copy_from_slice(&self.len.to_le_bytes());
        out
    }

    pub(crate) fn decode(source: usize, p: &[u8]) -> Result<Help, TransportError> {
        let bad = |detail: String| TransportError::Malformed {
            peer: source,
            detail,
        };
        if p.len() != 24 {
            return Err(bad(format!("help request of {} bytes", p.len())));
        }
        let h = Help {
            generation: u32_at(p, 0),
            chunk: u32_at(p, 4),
            addr: u64_at(p, 8),
            len: u64_at(p, 16),
        };
        if h.chunk == 0 {
            return Err(bad("help request with chunks of 0 bytes".into()));
        }
        Ok(h)
    }
}

/// The total length at the front of a First frame, and the bytes after it.
pub(crate) fn decode_first(source: usize, p: &[u8]) -> Result<(u64, &[u8]), TransportError> {
    if p.len() < 8 {
        return Err(TransportError::Malformed {
            peer: source,
            detail: format!("first fragment of {} bytes", p.len()),
        });
    }
    Ok((u64_at(p, 0), &p[8..]))
}

fn u64_at(p: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(p[at..at + 8].try_into().expect("8 bytes"))
}

fn u32_at(p: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(p[at..at + 4].try_into().expect("4 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_and_garbage_is_refused() {
        let env = Envelope {
            class: Class::AmRequest,
            ctx: 0xab_cdef,
            tag: 0xdead_beef,
        };
        for kind in [Kind::Short, Kind::First, Kind::Rts] {
            assert_eq!(parse(0, header(kind, env)).unwrap(), (kind, env));
        }
        let (kind, e) = parse(0, control(Kind::Fin, 42)).unwrap();
        assert_eq!((kind, e.tag), (Kind::Fin, 42));
        assert!(parse(3, 0).is_err());
        assert!(parse(3, 0xf << 60).is_err());
        assert!(parse(3, (Kind::Short as u64) << 60).is_err(), "no class");
    }

    #[test]
    fn rts_round_trips_and_checks_its_length() {
        let r = Rts {
            len: 1 << 24,
            token: 7,
            addr: 0x7fff_0000,
            key: 9,
            idle: true,
        };
        assert_eq!(Rts::decode(1, &r.encode()).unwrap(), r);
        assert!(Rts::decode(1, &[0; 28]).is_err());
        let mut flag = r.encode();
        flag[28] = 2;
        assert!(
            Rts::decode(1, &flag).is_err(),
            "a flag byte other than 0 or 1"
        );
        assert_eq!(decode_cts(2, &encode_cts(5, 99)).unwrap(), (5, 99));
        let h = Help {
            generation: 3,
            chunk: 1 << 17,
            addr: 0x7fff_1000,
            len: 5 << 20,
        };
        assert_eq!(Help::decode(1, &h.encode()).unwrap(), h);
        assert!(Help::decode(1, &[0; 23]).is_err());
        assert!(Help::decode(1, &[0; 24]).is_err(), "chunks of 0 bytes");
        assert!(decode_first(2, &[1, 2]).is_err());
    }
}
