//! The authenticated TCP link between the job's controller and a node agent.
//!
//! Both ends hold the job's secret (32 random bytes the controller makes).
//! On connecting, each sends a fresh nonce; the agent proves it knows the
//! secret with HMAC-SHA256(secret, "agent" | nonces), then the controller
//! does the same with "controller", so neither side acts on a peer that
//! lacks the secret (an agent runs the commands its controller sends). Every
//! frame after that carries a tag, HMAC-SHA256 keyed by a session key
//! derived from the secret and both nonces over the direction, a sequence
//! number and the body, so frames cannot be forged, replayed or reordered.
//! Frames are not encrypted: the job's output crosses the network in clear.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use hmac::{Hmac, Mac};
use parking_lot::Mutex;
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The job's shared secret.
#[derive(Clone)]
pub struct Secret([u8; 32]);

const NONCE: usize = 32;
const TAG: usize = 16;
/// Largest frame body either side accepts.
pub const MAX_FRAME: usize = 1 << 20;
const HELLO_CONTROLLER: &[u8; 8] = b"WEFTCTL1";
const HELLO_AGENT: &[u8; 8] = b"WEFTAGT1";
/// How long a handshake may take before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

impl Secret {
    /// A fresh secret from the kernel's random source.
    pub fn generate() -> Result<Secret, String> {
        let mut s = [0u8; 32];
        random(&mut s)?;
        Ok(Secret(s))
    }

    /// The secret as 64 hex digits.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Reads 64 hex digits (surrounding white space ignored).
    pub fn from_hex(text: &str) -> Result<Secret, String> {
        let t = text.trim();
        if t.len() != 64 || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err("a job secret is 64 hexadecimal digits".into());
        }
        let mut s = [0u8; 32];
        for (i, b) in s.iter_mut().enumerate() {
            *b = u8::from_str_radix(&t[2 * i..2 * i + 2], 16).map_err(|e| e.to_string())?;
        }
        Ok(Secret(s))
    }

    /// Reads the secret from `path`, which only its owner may read.
    pub fn read_file(path: &str) -> Result<Secret, String> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(path).map_err(|e| format!("secret file {path}: {e}"))?;
        if meta.mode() & 0o077 != 0 {
            return Err(format!(
                "secret file {path} can be read by others (mode {:o}); chmod 600 it",
                meta.mode() & 0o777
            ));
        }
        let text = std::fs::read_to_string(path).map_err(|e| format!("secret file {path}: {e}"))?;
        Secret::from_hex(&text).map_err(|e| format!("secret file {path}: {e}"))
    }

    /// Writes the secret to a new file `path` with mode 0600.
    pub fn write_file(&self, path: &str) -> Result<(), String> {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| format!("secret file {path}: {e}"))?;
        writeln!(f, "{}", self.to_hex()).map_err(|e| format!("secret file {path}: {e}"))
    }

    fn mac(&self, parts: &[&[u8]]) -> HmacSha256 {
        let mut m = HmacSha256::new_from_slice(&self.0).expect("HMAC takes any key length");
        for p in parts {
            m.update(p);
        }
        m
    }
}

fn random(buf: &mut [u8]) -> Result<(), String> {
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(buf))
        .map_err(|e| format!("cannot read /dev/urandom: {e}"))
}

/// Which end of the link this is; each direction has its own sequence.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Controller,
    Agent,
}

/// The sending half of an established link; shared by the threads that send.
pub struct LinkWriter {
    inner: Mutex<(TcpStream, u64)>,
    key: Secret,
    side: Side,
}

/// The receiving half of an established link.
pub struct LinkReader {
    stream: TcpStream,
    seq: u64,
    key: Secret,
    side: Side,
}

fn tag(key: &Secret, from: Side, seq: u64, body: &[u8]) -> HmacSha256 {
    let dir = [u8::from(from == Side::Controller)];
    key.mac(&[&dir, &seq.to_be_bytes(), body])
}

impl LinkWriter {
    /// Sends one frame.
    pub fn send(&self, body: &[u8]) -> Result<(), String> {
        if body.len() > MAX_FRAME {
            return Err(format!("frame of {} bytes is too large", body.len()));
        }
        let mut g = self.inner.lock();
        let t = tag(&self.key, self.side, g.1, body).finalize().into_bytes();
        let mut frame = Vec::with_capacity(4 + body.len() + TAG);
        frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
        frame.extend_from_slice(body);
        frame.extend_from_slice(&t[..TAG]);
        g.1 += 1;
        g.0.write_all(&frame).map_err(|e| e.to_string())
    }

    /// Closes both directions, which ends the peer's reads.
    pub fn shutdown(&self) {
        let _ = self.inner.lock().0.shutdown(std::net::Shutdown::Both);
    }
}

impl LinkReader {
    /// Receives one frame; an error when the link closed or a frame is bad.
    pub fn recv(&mut self) -> Result<Vec<u8>, String> {
        let mut len = [0u8; 4];
        self.stream
            .read_exact(&mut len)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::UnexpectedEof => "connection closed".to_string(),
                _ => e.to_string(),
            })?;
        let len = u32::from_be_bytes(len) as usize;
        if len > MAX_FRAME {
            return Err(format!("frame of {len} bytes is too large"));
        }
        let mut body = vec![0u8; len + TAG];
        self.stream
            .read_exact(&mut body)
            .map_err(|e| e.to_string())?;
        let t = body.split_off(len);
        let from = match self.side {
            Side::Controller => Side::Agent,
            Side::Agent => Side::Controller,
        };
        tag(&self.key, from, self.seq, &body)
            .verify_truncated_left(&t)
            .map_err(|_| "a frame failed authentication".to_string())?;
        self.seq += 1;
        Ok(body)
    }
}

fn read_exact(s: &mut TcpStream, n: usize) -> Result<Vec<u8>, String> {
    let mut b = vec![0u8; n];
    s.read_exact(&mut b).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => "connection closed during the handshake".into(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
            "no handshake within 10 s".into()
        }
        _ => e.to_string(),
    })?;
    Ok(b)
}

fn split(stream: TcpStream, key: Secret, side: Side) -> Result<(LinkWriter, LinkReader), String> {
    stream.set_read_timeout(None).map_err(|e| e.to_string())?;
    let _ = stream.set_nodelay(true);
    let w = stream.try_clone().map_err(|e| e.to_string())?;
    Ok((
        LinkWriter {
            inner: Mutex::new((w, 0)),
            key: key.clone(),
            side,
        },
        LinkReader {
            stream,
            seq: 0,
            key,
            side,
        },
    ))
}

fn session_key(secret: &Secret, nc: &[u8], na: &[u8]) -> Secret {
    let k = secret.mac(&[b"session", nc, na]).finalize().into_bytes();
    Secret(k.into())
}

/// The controller's side of the handshake on an accepted connection.
pub fn accept(mut s: TcpStream, secret: &Secret) -> Result<(LinkWriter, LinkReader), String> {
    s.set_read_timeout(Some(HANDSHAKE_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let mut nc = [0u8; NONCE];
    random(&mut nc)?;
    s.write_all(&[&HELLO_CONTROLLER[..], &nc].concat())
        .map_err(|e| e.to_string())?;
    let reply = read_exact(&mut s, 8 + NONCE + 32)?;
    if &reply[..8] != HELLO_AGENT {
        return Err("not a weftrun agent".into());
    }
    let na = &reply[8..8 + NONCE];
    secret
        .mac(&[b"agent", &nc, na])
        .verify_slice(&reply[8 + NONCE..])
        .map_err(|_| "wrong job secret".to_string())?;
    let proof = secret
        .mac(&[b"controller", &nc, na])
        .finalize()
        .into_bytes();
    s.write_all(&proof).map_err(|e| e.to_string())?;
    split(s, session_key(secret, &nc, na), Side::Controller)
}

/// Why an agent could not join.
#[derive(Debug)]
pub enum JoinError {
    /// The connection closed before the controller said hello: a controller
    /// that is shutting down (the next one may listen on the same port).
    Closed,
    /// Anything else, described.
    Failed(String),
}

/// The agent's side of the handshake on a connection to the controller.
pub fn join(s: TcpStream, secret: &Secret) -> Result<(LinkWriter, LinkReader), JoinError> {
    let mut s = s;
    s.set_read_timeout(Some(HANDSHAKE_TIMEOUT))
        .map_err(|e| JoinError::Failed(e.to_string()))?;
    let mut hello = vec![0u8; 8 + NONCE];
    if s.read_exact(&mut hello).is_err() {
        return Err(JoinError::Closed);
    }
    join_after_hello(s, secret, &hello).map_err(JoinError::Failed)
}

fn join_after_hello(
    mut s: TcpStream,
    secret: &Secret,
    hello: &[u8],
) -> Result<(LinkWriter, LinkReader), String> {
    if &hello[..8] != HELLO_CONTROLLER {
        return Err("the other end is not a weftrun controller".into());
    }
    let nc = &hello[8..];
    let mut na = [0u8; NONCE];
    random(&mut na)?;
    let proof = secret.mac(&[b"agent", nc, &na]).finalize().into_bytes();
    s.write_all(&[&HELLO_AGENT[..], &na, &proof].concat())
        .map_err(|e| e.to_string())?;
    let theirs = read_exact(&mut s, 32).map_err(|e| {
        format!("the controller refused this agent (is the job secret right?): {e}")
    })?;
    secret
        .mac(&[b"controller", nc, &na])
        .verify_slice(&theirs)
        .map_err(|_| "the controller does not know the job secret".to_string())?;
    split(s, session_key(secret, nc, &na), Side::Agent)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn pair(a: &Secret, b: &Secret) -> (Result<(), String>, Result<(), String>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let b = b.clone();
        let agent = std::thread::spawn(move || {
            let (w, mut r) =
                join(TcpStream::connect(addr).unwrap(), &b).map_err(|e| format!("{e:?}"))?;
            w.send(b"ping")?;
            assert_eq!(r.recv()?, b"pong");
            Ok(())
        });
        let ctl = (|| {
            let (w, mut r) = accept(l.accept().unwrap().0, a)?;
            assert_eq!(r.recv()?, b"ping");
            w.send(b"pong")
        })();
        (ctl, agent.join().unwrap())
    }

    #[test]
    fn same_secret_connects_and_frames_pass() {
        let s = Secret::generate().unwrap();
        let (c, a) = pair(&s, &s);
        c.unwrap();
        a.unwrap();
    }

    #[test]
    fn wrong_secret_is_refused_on_both_sides() {
        let (c, a) = pair(&Secret::generate().unwrap(), &Secret::generate().unwrap());
        assert_eq!(c.unwrap_err(), "wrong job secret");
        assert!(a.unwrap_err().contains("refused"));
    }

    #[test]
    fn a_tampered_frame_fails_authentication() {
        let s = Secret::generate().unwrap();
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let s2 = s.clone();
        let agent = std::thread::spawn(move || {
            let (w, _r) = join(TcpStream::connect(addr).unwrap(), &s2).ok().unwrap();
            // A frame whose tag was computed for another body.
            let mut g = w.inner.lock();
            let t = tag(&w.key, Side::Agent, 0, b"good").finalize().into_bytes();
            let mut frame = 4u32.to_be_bytes().to_vec();
            frame.extend_from_slice(b"evil");
            frame.extend_from_slice(&t[..TAG]);
            g.0.write_all(&frame).unwrap();
        });
        let (_w, mut r) = accept(l.accept().unwrap().0, &s).unwrap();
        agent.join().unwrap();
        assert_eq!(r.recv().unwrap_err(), "a frame failed authentication");
    }

    #[test]
    fn secrets_round_trip_and_bad_ones_are_errors() {
        let s = Secret::generate().unwrap();
        assert_eq!(Secret::from_hex(&s.to_hex()).unwrap().0, s.0);
        assert!(Secret::from_hex("abc").is_err());
        assert!(Secret::from_hex(&"g".repeat(64)).is_err());
    }
}
