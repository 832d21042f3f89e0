//! What the controller and the node agents say to each other, and its
//! encoding in a link frame: a kind byte, then fields (integers big-endian,
//! byte strings prefixed by their u32 length). Decoding checks every length.

/// One node's part of the job, sent by the controller to its agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobSpec {
    pub job: String,
    pub size: u32,
    pub first: u32,
    pub count: u32,
    pub cwd: String,
    pub command: Vec<String>,
    pub env: Vec<(String, String)>,
    /// 0 default, 1 core, 2 numa, 3 none.
    pub bind: u8,
    pub report_bindings: bool,
    pub tag_output: bool,
    pub grace_ms: u32,
}

/// A message on the link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Msg {
    /// Agent: who it is (its host name, and its index when it was started
    /// by the controller).
    Hello { host: String, index: Option<u32> },
    /// Controller: the node's part of the job.
    Job(JobSpec),
    /// Agent: every local rank entered a PMI barrier; the pairs they put.
    Barrier(Vec<(String, String)>),
    /// Controller: every rank entered; all pairs put since the last one.
    BarrierDone(Vec<(String, String)>),
    /// Agent: a line a rank wrote (`err` for stderr).
    Output { rank: u32, err: bool, line: Vec<u8> },
    /// Agent: a rank ended; `failure` describes a non-zero exit or signal.
    Exited {
        rank: u32,
        code: i32,
        failure: Option<String>,
    },
    /// Agent: a rank called PMI abort.
    Abort { rank: u32, code: i32, msg: String },
    /// Agent: every local rank has ended and all output was sent.
    Done,
    /// Controller: bytes for rank 0's stdin; empty at end of input.
    Stdin(Vec<u8>),
    /// Controller: pass this signal to the ranks.
    Signal(i32),
    /// Controller: stop the ranks (SIGTERM, SIGKILL after the grace period).
    Stop,
    /// Agent: a rank left the job without finalizing. Controller, to the
    /// other agents: a rank of another node did.
    Left { rank: u32 },
}

struct Out(Vec<u8>);

impl Out {
    fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }
    fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn i32(&mut self, v: i32) -> &mut Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.u32(b.len() as u32);
        self.0.extend_from_slice(b);
        self
    }
    fn pairs(&mut self, p: &[(String, String)]) -> &mut Self {
        self.u32(p.len() as u32);
        for (k, v) in p {
            self.bytes(k.as_bytes()).bytes(v.as_bytes());
        }
        self
    }
}

struct In<'a>(&'a [u8]);

impl In<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        if self.0.len() < n {
            return Err("a message ends early".into());
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_be_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn i32(&mut self) -> Result<i32, String> {
        Ok(i32::from_be_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn bytes(&mut self) -> Result<Vec<u8>, String> {
        let n = self.u32()? as usize;
        Ok(self.take(n)?.to_vec())
    }
    fn string(&mut self) -> Result<String, String> {
        String::from_utf8(self.bytes()?)
            .map_err(|_| "a message holds text that is not UTF-8".into())
    }
    fn count(&mut self) -> Result<usize, String> {
        let n = self.u32()? as usize;
        // Every item takes at least four bytes: a count cannot exceed that.
        if n > self.0.len() / 4 {
            return Err("a message's item count exceeds its length".into());
        }
        Ok(n)
    }
    fn pairs(&mut self) -> Result<Vec<(String, String)>, String> {
        (0..self.count()?)
            .map(|_| Ok((self.string()?, self.string()?)))
            .collect()
    }
}

impl Msg {
    /// The frame body.
    pub fn encode(&self) -> Vec<u8> {
        let mut o = Out(Vec::new());
        match self {
            Msg::Hello { host, index } => {
                o.u8(1)
                    .bytes(host.as_bytes())
                    .i32(index.map_or(-1, |i| i as i32));
            }
            Msg::Job(j) => {
                o.u8(2)
                    .bytes(j.job.as_bytes())
                    .u32(j.size)
                    .u32(j.first)
                    .u32(j.count)
                    .bytes(j.cwd.as_bytes())
                    .u32(j.command.len() as u32);
                for a in &j.command {
                    o.bytes(a.as_bytes());
                }
                o.pairs(&j.env)
                    .u8(j.bind)
                    .u8(u8::from(j.report_bindings))
                    .u8(u8::from(j.tag_output))
                    .u32(j.grace_ms);
            }
            Msg::Barrier(p) => {
                o.u8(3).pairs(p);
            }
            Msg::BarrierDone(p) => {
                o.u8(4).pairs(p);
            }
            Msg::Output { rank, err, line } => {
                o.u8(5).u32(*rank).u8(u8::from(*err)).bytes(line);
            }
            Msg::Exited {
                rank,
                code,
                failure,
            } => {
                o.u8(6).u32(*rank).i32(*code);
                match failure {
                    Some(f) => o.u8(1).bytes(f.as_bytes()),
                    None => o.u8(0),
                };
            }
            Msg::Abort { rank, code, msg } => {
                o.u8(7).u32(*rank).i32(*code).bytes(msg.as_bytes());
            }
            Msg::Done => {
                o.u8(8);
            }
            Msg::Stdin(b) => {
                o.u8(9).bytes(b);
            }
            Msg::Signal(s) => {
                o.u8(10).i32(*s);
            }
            Msg::Stop => {
                o.u8(11);
            }
            Msg::Left { rank } => {
                o.u8(12).u32(*rank);
            }
        }
        o.0
    }

    /// Reads a frame body; an error for anything malformed.
    pub fn decode(body: &[u8]) -> Result<Msg, String> {
        let mut i = In(body);
        let m = match i.u8()? {
            1 => Msg::Hello {
                host: i.string()?,
                index: u32::try_from(i.i32()?).ok(),
            },
            2 => {
                let job = i.string()?;
                let (size, first, count) = (i.u32()?, i.u32()?, i.u32()?);
                let cwd = i.string()?;
                let command = (0..i.count()?)
                    .map(|_| i.string())
                    .collect::<Result<Vec<_>, _>>()?;
                Msg::Job(JobSpec {
                    job,
                    size,
                    first,
                    count,
                    cwd,
                    command,
                    env: i.pairs()?,
                    bind: i.u8()?,
                    report_bindings: i.u8()? != 0,
                    tag_output: i.u8()? != 0,
                    grace_ms: i.u32()?,
                })
            }
            3 => Msg::Barrier(i.pairs()?),
            4 => Msg::BarrierDone(i.pairs()?),
            5 => Msg::Output {
                rank: i.u32()?,
                err: i.u8()? != 0,
                line: i.bytes()?,
            },
            6 => Msg::Exited {
                rank: i.u32()?,
                code: i.i32()?,
                failure: match i.u8()? {
                    0 => None,
                    _ => Some(i.string()?),
                },
            },
            7 => Msg::Abort {
                rank: i.u32()?,
                code: i.i32()?,
                msg: i.string()?,
            },
            8 => Msg::Done,
            9 => Msg::Stdin(i.bytes()?),
            10 => Msg::Signal(i.i32()?),
            11 => Msg::Stop,
            12 => Msg::Left { rank: i.u32()? },
            k => return Err(format!("unknown message kind {k}")),
        };
        if !i.0.is_empty() {
            return Err("a message has bytes past its end".into());
        }
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Vec<Msg> {
        let p = vec![("k".to_string(), "v".to_string())];
        vec![
            Msg::Hello {
                host: "n1".into(),
                index: Some(2),
            },
            Msg::Hello {
                host: "n2".into(),
                index: None,
            },
            Msg::Job(JobSpec {
                job: "j".into(),
                size: 4,
                first: 2,
                count: 2,
                cwd: "/tmp".into(),
                command: vec!["prog".into(), "a b".into()],
                env: p.clone(),
                bind: 1,
                report_bindings: true,
                tag_output: false,
                grace_ms: 3000,
            }),
            Msg::Barrier(p.clone()),
            Msg::BarrierDone(vec![]),
            Msg::Output {
                rank: 3,
                err: true,
                line: b"x\n".to_vec(),
            },
            Msg::Exited {
                rank: 1,
                code: 137,
                failure: Some("killed".into()),
            },
            Msg::Exited {
                rank: 1,
                code: 0,
                failure: None,
            },
            Msg::Abort {
                rank: 0,
                code: 3,
                msg: "why".into(),
            },
            Msg::Done,
            Msg::Stdin(b"in".to_vec()),
            Msg::Signal(15),
            Msg::Stop,
            Msg::Left { rank: 3 },
        ]
    }

    #[test]
    fn every_message_round_trips() {
        for m in all() {
            assert_eq!(Msg::decode(&m.encode()).unwrap(), m);
        }
    }

    #[test]
    fn truncated_or_padded_bodies_are_errors() {
        for m in all() {
            let b = m.encode();
            for cut in 0..b.len() {
                assert!(Msg::decode(&b[..cut]).is_err(), "{m:?} cut at {cut}");
            }
            let mut long = b.clone();
            long.push(0);
            assert!(Msg::decode(&long).is_err());
        }
        assert!(Msg::decode(&[3, 0xff, 0xff, 0xff, 0xff]).is_err());
        assert!(Msg::decode(&[99]).is_err());
    }
}
