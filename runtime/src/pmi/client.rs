//! A PMI-1 client over the descriptor a launcher passes in `PMI_FD`.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::FromRawFd;
use std::os::unix::net::UnixStream;

use super::wire::{Line, MAX_LINE};

/// A connection to the launcher's PMI server.
pub struct PmiClient {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    rank: usize,
    size: usize,
    kvsname: String,
    vallen_max: usize,
}

/// What the launcher's environment says: `PMI_FD`, `PMI_RANK`, `PMI_SIZE`.
#[derive(Debug, PartialEq, Eq)]
pub struct PmiEnv {
    /// The inherited socket.
    pub fd: i32,
    /// This process's rank.
    pub rank: usize,
    /// Number of ranks.
    pub size: usize,
}

impl PmiEnv {
    /// Reads the variables through `get`; `Ok(None)` when `PMI_FD` is unset
    /// (no PMI-1 launcher), an error naming the variable when one is malformed.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Option<PmiEnv>, String> {
        let Some(fd) = get("PMI_FD") else {
            return Ok(None);
        };
        let num = |var: &str, v: Option<String>| -> Result<usize, String> {
            let v = v.ok_or_else(|| format!("PMI_FD is set but {var} is not"))?;
            v.trim()
                .parse()
                .map_err(|_| format!("{var}={v:?} is not a non-negative integer"))
        };
        let fd = num("PMI_FD", Some(fd))?;
        let rank = num("PMI_RANK", get("PMI_RANK"))?;
        let size = num("PMI_SIZE", get("PMI_SIZE"))?;
        if size == 0 || rank >= size {
            return Err(format!("PMI_RANK={rank} is not below PMI_SIZE={size}"));
        }
        let fd = i32::try_from(fd).map_err(|_| format!("PMI_FD={fd} is not a descriptor"))?;
        Ok(Some(PmiEnv { fd, rank, size }))
    }
}

impl PmiClient {
    /// Takes over the socket in `env.fd` and runs `init`, `get_maxes` and
    /// `get_my_kvsname`.
    pub fn connect(env: &PmiEnv) -> Result<PmiClient, String> {
        // SAFETY: F_GETFD only inspects the descriptor table.
        if unsafe { libc::fcntl(env.fd, libc::F_GETFD) } < 0 {
            return Err(format!("PMI_FD={} is not an open descriptor", env.fd));
        }
        // SAFETY: the launcher handed this descriptor to us alone; from here
        // the stream owns it and closes it on drop.
        let stream = unsafe { UnixStream::from_raw_fd(env.fd) };
        // The descriptor must not leak into programs this process starts.
        // SAFETY: setting FD_CLOEXEC on a descriptor we own.
        unsafe { libc::fcntl(env.fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        let writer = stream
            .try_clone()
            .map_err(|e| format!("PMI_FD={}: {e}", env.fd))?;
        let mut c = PmiClient {
            reader: BufReader::new(stream),
            writer,
            rank: env.rank,
            size: env.size,
            kvsname: String::new(),
            vallen_max: 0,
        };
        c.call(
            Line::new("init")
                .with("pmi_version", 1)
                .with("pmi_subversion", 1),
            "response_to_init",
        )?;
        let maxes = c.call(Line::new("get_maxes"), "maxes")?;
        c.vallen_max = field(&maxes, "vallen_max")?
            .parse()
            .map_err(|_| "get_maxes: vallen_max is not a number".to_string())?;
        c.kvsname = field(
            &c.call(Line::new("get_my_kvsname"), "my_kvsname")?,
            "kvsname",
        )?
        .into();
        Ok(c)
    }

    /// This process's rank.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// Number of ranks in the job.
    pub fn size(&self) -> usize {
        self.size
    }

    /// The job's key-value space name, unique per job.
    pub fn kvsname(&self) -> &str {
        &self.kvsname
    }

    /// Longest value the server stores.
    pub fn vallen_max(&self) -> usize {
        self.vallen_max
    }

    /// Stores `key=value` in the job's key-value space.
    pub fn put(&mut self, key: &str, value: &str) -> Result<(), String> {
        let l = Line::new("put")
            .with("kvsname", &self.kvsname)
            .with("key", key)
            .with("value", value);
        self.call(l, "put_result").map(drop)
    }

    /// Reads `key`, put by any rank before the last barrier.
    pub fn get(&mut self, key: &str) -> Result<String, String> {
        let l = Line::new("get")
            .with("kvsname", &self.kvsname)
            .with("key", key);
        let reply = self.call(l, "get_result")?;
        Ok(field(&reply, "value")?.to_owned())
    }

    /// Waits until every rank has entered the barrier; puts made before it
    /// are visible to gets after it.
    pub fn barrier(&mut self) -> Result<(), String> {
        self.call(Line::new("barrier_in"), "barrier_out").map(drop)
    }

    /// Tells the launcher this rank is done with PMI.
    pub fn finalize(&mut self) -> Result<(), String> {
        self.call(Line::new("finalize"), "finalize_ack").map(drop)
    }

    /// Asks the launcher to end the whole job with `code`.
    pub fn abort(&mut self, code: i32, msg: &str) -> Result<(), String> {
        let l = Line::new("abort")
            .with("exitcode", code)
            .with("error_msg", msg.replace('\n', " "));
        self.send(&l)
    }

    fn send(&mut self, line: &Line) -> Result<(), String> {
        self.writer
            .write_all(line.to_text().as_bytes())
            .map_err(|e| format!("{}: cannot write to the launcher: {e}", line.cmd()))
    }

    /// Sends `line` and reads the reply, which must be `expect` with `rc=0`.
    fn call(&mut self, line: Line, expect: &str) -> Result<Line, String> {
        self.send(&line)?;
        let cmd = line.cmd().to_owned();
        let mut text = String::new();
        let n = Read::by_ref(&mut self.reader)
            .take(MAX_LINE as u64 + 1)
            .read_line(&mut text)
            .map_err(|e| format!("{cmd}: cannot read the launcher's reply: {e}"))?;
        if n == 0 {
            return Err(format!("{cmd}: the launcher closed the connection"));
        }
        if !text.ends_with('\n') {
            return Err(format!("{cmd}: reply is not a complete line: {text:?}"));
        }
        let reply = Line::parse(&text).map_err(|e| format!("{cmd}: malformed reply: {e}"))?;
        if reply.cmd() != expect {
            return Err(format!(
                "{cmd}: expected cmd={expect}, got {:?}",
                text.trim_end()
            ));
        }
        match reply.get("rc") {
            None | Some("0") => Ok(reply),
            Some(rc) => Err(format!(
                "{cmd}: the launcher answered rc={rc}: {}",
                reply.get("msg").unwrap_or("no message")
            )),
        }
    }
}

fn field<'a>(line: &'a Line, key: &str) -> Result<&'a str, String> {
    line.get(key)
        .ok_or_else(|| format!("{}: reply has no {key}", line.cmd()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_is_validated() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                vars.iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(PmiEnv::from_lookup(env(&[])), Ok(None));
        assert_eq!(
            PmiEnv::from_lookup(env(&[
                ("PMI_FD", "5"),
                ("PMI_RANK", "1"),
                ("PMI_SIZE", "2")
            ])),
            Ok(Some(PmiEnv {
                fd: 5,
                rank: 1,
                size: 2
            }))
        );
        for bad in [
            &[("PMI_FD", "5")][..],
            &[("PMI_FD", "x"), ("PMI_RANK", "0"), ("PMI_SIZE", "1")],
            &[("PMI_FD", "5"), ("PMI_RANK", "2"), ("PMI_SIZE", "2")],
            &[("PMI_FD", "5"), ("PMI_RANK", "0"), ("PMI_SIZE", "0")],
        ] {
            assert!(PmiEnv::from_lookup(env(bad)).is_err(), "{bad:?}");
        }
    }

    /// A server that answers each request with the next canned line.
    fn client_against(replies: &'static [&'static str]) -> Result<PmiClient, String> {
        let (ours, theirs) = UnixStream::pair().unwrap();
        std::thread::spawn(move || {
            let mut r = BufReader::new(theirs.try_clone().unwrap());
            let mut w = theirs;
            let mut replies = replies.iter();
            loop {
                // Read the request before answering or hanging up, so that
                // the client sees a clean end of stream, not a reset.
                let mut req = String::new();
                if r.read_line(&mut req).unwrap_or(0) == 0 {
                    return;
                }
                match replies.next() {
                    Some(reply) => w.write_all(reply.as_bytes()).unwrap(),
                    None => return,
                }
            }
        });
        let fd = std::os::fd::IntoRawFd::into_raw_fd(ours);
        PmiClient::connect(&PmiEnv {
            fd,
            rank: 0,
            size: 1,
        })
    }

    #[test]
    fn handshake_and_bad_replies() {
        let ok = client_against(&[
            "cmd=response_to_init pmi_version=1 pmi_subversion=1 rc=0\n",
            "cmd=maxes kvsname_max=256 keylen_max=64 vallen_max=1024 rc=0\n",
            "cmd=my_kvsname kvsname=job7 rc=0\n",
        ])
        .unwrap();
        assert_eq!((ok.kvsname(), ok.vallen_max()), ("job7", 1024));

        let e = client_against(&["cmd=response_to_init rc=-1 msg=no\n"])
            .err()
            .unwrap();
        assert!(e.contains("init") && e.contains("rc=-1"), "{e}");
        let e = client_against(&["garbage\n"]).err().unwrap();
        assert!(e.contains("init: malformed reply"), "{e}");
        let e = client_against(&["cmd=barrier_out\n"]).err().unwrap();
        assert!(e.contains("expected cmd=response_to_init"), "{e}");
        let e = client_against(&[]).err().unwrap();
        assert!(e.contains("closed the connection"), "{e}");
        let e = client_against(&[
            "cmd=response_to_init rc=0\n",
            "cmd=maxes kvsname_max=256 rc=0\n",
        ])
        .err()
        .unwrap();
        assert!(e.contains("vallen_max"), "{e}");
    }
}
