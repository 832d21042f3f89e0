//! Finding the job: rank, size, a job name, and a key-value exchange among
//! the ranks, through the launcher's PMI (or alone, as a singleton).

use std::sync::Arc;

use weft_transport::exits::ExitView;

use crate::pmi::client::{PmiClient, PmiEnv};

/// The job as the launcher describes it, and the way to exchange blobs.
pub(crate) struct Bootstrap {
    rank: usize,
    size: usize,
    job: String,
    pmi: Option<PmiClient>,
    /// Read by the verbs transport only: without it no peer is off the node.
    #[cfg_attr(not(feature = "verbs"), allow(dead_code))]
    exits: Option<Arc<ExitView>>,
}

impl Bootstrap {
    /// Connects to the launcher named by the environment: PMI-1 when
    /// `PMI_FD` is set, otherwise a singleton job of one rank. A launcher
    /// that keeps an exit board (`weftrun` on a job of several nodes)
    /// passes it in `WEFT_EXITS_FD`.
    pub(crate) fn from_env() -> Result<Bootstrap, String> {
        match PmiEnv::from_lookup(|k| std::env::var(k).ok())? {
            Some(env) => {
                let exits = match std::env::var("WEFT_EXITS_FD") {
                    Ok(v) => Some(Arc::new(exit_view(&v, env.size)?)),
                    Err(_) => None,
                };
                let pmi = PmiClient::connect(&env)?;
                Ok(Bootstrap {
                    rank: pmi.rank(),
                    size: pmi.size(),
                    job: pmi.kvsname().to_owned(),
                    pmi: Some(pmi),
                    exits,
                })
            }
            None => Ok(Bootstrap {
                rank: 0,
                size: 1,
                job: format!("single{}", std::process::id()),
                pmi: None,
                exits: None,
            }),
        }
    }

    /// The launcher's exit board, when it keeps one.
    #[cfg(feature = "verbs")]
    pub(crate) fn exits(&self) -> Option<&Arc<ExitView>> {
        self.exits.as_ref()
    }

    pub(crate) fn rank(&self) -> usize {
        self.rank
    }

    pub(crate) fn size(&self) -> usize {
        self.size
    }

    /// A name unique to this job among the jobs running on the node.
    pub(crate) fn job(&self) -> &str {
        &self.job
    }

    /// Every rank's `blob` for `key`, indexed by rank. Collective.
    pub(crate) fn allgather(&mut self, key: &str, blob: &[u8]) -> Result<Vec<Vec<u8>>, String> {
        let Some(pmi) = self.pmi.as_mut() else {
            return Ok(vec![blob.to_vec()]);
        };
        let hex: String = blob.iter().map(|b| format!("{b:02x}")).collect();
        let chunk = pmi.vallen_max().clamp(16, 1024);
        let pieces: Vec<&str> = if hex.is_empty() {
            vec![""]
        } else {
            hex.as_bytes()
                .chunks(chunk)
                .map(|c| std::str::from_utf8(c).expect("hex is ASCII"))
                .collect()
        };
        let me = self.rank;
        pmi.put(&format!("{key}-{me}-n"), &pieces.len().to_string())?;
        for (i, p) in pieces.iter().enumerate() {
            pmi.put(
                &format!("{key}-{me}-{i}"),
                if p.is_empty() { "-" } else { p },
            )?;
        }
        pmi.barrier()?;
        (0..self.size)
            .map(|r| {
                let n: usize = pmi
                    .get(&format!("{key}-{r}-n"))?
                    .parse()
                    .map_err(|_| format!("get {key}-{r}-n: not a number"))?;
                let mut hex = String::new();
                for i in 0..n {
                    let v = pmi.get(&format!("{key}-{r}-{i}"))?;
                    if v != "-" {
                        hex.push_str(&v);
                    }
                }
                unhex(&hex).ok_or_else(|| format!("get {key}-{r}: value is not hex"))
            })
            .collect()
    }

    /// Tells the launcher this rank is done. Idempotent.
    pub(crate) fn finalize(&mut self) -> Result<(), String> {
        match self.pmi.take() {
            Some(mut pmi) => pmi.finalize(),
            None => Ok(()),
        }
    }

    /// Asks the launcher to end the job; `true` if there is one and it was told.
    pub(crate) fn abort(&mut self, code: i32, msg: &str) -> bool {
        self.pmi
            .as_mut()
            .is_some_and(|pmi| pmi.abort(code, msg).is_ok())
    }
}

/// Maps the exit board whose descriptor `WEFT_EXITS_FD` gives as `value`.
fn exit_view(value: &str, size: usize) -> Result<ExitView, String> {
    let fd = value
        .parse()
        .map_err(|_| format!("WEFT_EXITS_FD={value} is not a descriptor number"))?;
    ExitView::inherit(fd, size).map_err(|e| format!("WEFT_EXITS_FD={value}: {e}"))
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn unhex() {
        assert_eq!(super::unhex("00ff10"), Some(vec![0, 255, 16]));
        assert_eq!(super::unhex(""), Some(vec![]));
        assert_eq!(super::unhex("0"), None);
        assert_eq!(super::unhex("zz"), None);
        assert_eq!(super::unhex("é0"), None);
    }
}
