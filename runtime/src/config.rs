//! `WEFT_*` environment variables, read once at [`crate::init`].

use weft_collectives::{Algorithm, Collective};

use crate::error::Cause;

/// Default symmetric heap size per PE.
pub const DEFAULT_SYMMETRIC_SIZE: usize = 128 << 20;

/// Default largest message sent eagerly (`WEFT_EAGER_LIMIT`).
pub const DEFAULT_EAGER_LIMIT: usize = 4096;

/// Which transports a job may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransportChoice {
    /// The best available for each peer.
    Auto,
    /// Shared memory only.
    Shm,
    /// RDMA verbs for every peer, this PE included.
    Verbs,
}

/// How the one-node collectives' writers store large blocks into memory
/// that other processes read (`WEFT_STREAMING`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamingChoice {
    /// Cached stores, timed now and then; non-temporal stores for a while
    /// once the cached ones run slow, as they do when the cores lie on
    /// different dies (a virtual machine's host may move them there).
    Auto,
    /// Non-temporal stores always.
    Always,
    /// Cached stores always.
    Never,
}

/// How the one-node allgathers and alltoalls whose blocks exceed a slot,
/// up to 1 MiB, run when the PEs do not outnumber the cores
/// (`WEFT_EXCHANGE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExchangeChoice {
    /// The faster of the two ways below, as rank 0 times them (taking the
    /// slower one now and then to time it again).
    Auto,
    /// Copied once, straight between the ranks' buffers (cross-memory
    /// attach), when the kernel lets the ranks read each other's memory.
    Attached,
    /// Copied twice through the slots in the ranks' heaps: in parts, or
    /// from 256 KiB through the ranks' wide slots when the blocks fit them
    /// (1 MiB a rank).
    Slots,
}

/// The runtime's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// `WEFT_SYMMETRIC_SIZE`: bytes of symmetric heap per PE.
    pub symmetric_size: usize,
    /// `WEFT_TRANSPORT`: `auto` (shared memory on the node, verbs to other
    /// nodes), `shm` or `verbs`.
    pub transport: TransportChoice,
    /// `WEFT_VERBS_DEVICE`: the RDMA device to use (e.g. `mlx5_0`); the
    /// first with an active port when unset.
    pub verbs_device: Option<String>,
    /// `WEFT_VERBS_GID_INDEX`: the GID table index on RoCE ports; the first
    /// IPv4-mapped GID when unset.
    pub verbs_gid_index: Option<u32>,
    /// `WEFT_VERBS_TIMEOUT`: the verbs queue pairs' local ACK timeout, as
    /// InfiniBand gives it: 4.096 µs * 2^value per try (1 to 31), 7 tries
    /// before a request fails; the transport's default (16, 268 ms) when
    /// unset.
    pub verbs_timeout: Option<u8>,
    /// `WEFT_EAGER_LIMIT`: messages up to this many bytes are copied
    /// through the message queues; longer ones go by rendezvous.
    pub eager_limit: usize,
    /// `WEFT_PROGRESS_THREAD`: run a background thread that drives progress.
    pub progress_thread: bool,
    /// `WEFT_SINGLE_COPY`: rendezvous receivers copy straight out of the
    /// sender's memory (`auto`) or always have the sender push the bytes (`off`).
    pub single_copy: bool,
    /// `WEFT_STREAMING`: how the one-node collectives' writers store blocks
    /// from 2 KiB that other processes read: `auto`, `always` or `never`
    /// non-temporal stores.
    pub streaming: StreamingChoice,
    /// `WEFT_EXCHANGE`: how the one-node allgathers and alltoalls of blocks
    /// larger than a slot, up to 1 MiB, run when the ranks do not outnumber
    /// the cores: `auto`, `attached` or through the `slots`.
    pub exchange: ExchangeChoice,
    /// Algorithms forced by `WEFT_COLL_<OPERATION>=<algorithm>` (e.g.
    /// `WEFT_COLL_ALLREDUCE=ring`); the others are chosen by team and
    /// message size.
    pub collective_algorithms: Vec<(Collective, Algorithm)>,
}

impl Config {
    /// Reads the settings from the environment.
    pub fn from_env() -> Result<Config, Cause> {
        Config::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads the settings through `get`, which maps a variable to its value.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Config, Cause> {
        let get = &get;
        Ok(Config {
            symmetric_size: size(get, "WEFT_SYMMETRIC_SIZE", DEFAULT_SYMMETRIC_SIZE, false)?,
            transport: choice(
                get,
                "WEFT_TRANSPORT",
                &[
                    ("auto", TransportChoice::Auto),
                    ("shm", TransportChoice::Shm),
                    ("verbs", TransportChoice::Verbs),
                ],
            )?,
            verbs_device: get("WEFT_VERBS_DEVICE").filter(|d| !d.is_empty()),
            verbs_gid_index: match get("WEFT_VERBS_GID_INDEX") {
                None => None,
                Some(v) => Some(v.trim().parse().map_err(|_| Cause::Config {
                    var: "WEFT_VERBS_GID_INDEX",
                    value: v.clone(),
                    reason: "not a GID table index (a small non-negative integer)".into(),
                })?),
            },
            verbs_timeout: match get("WEFT_VERBS_TIMEOUT") {
                None => None,
                Some(v) => v
                    .trim()
                    .parse()
                    .ok()
                    .filter(|t| (1..=31).contains(t))
                    .ok_or_else(|| Cause::Config {
                        var: "WEFT_VERBS_TIMEOUT",
                        value: v.clone(),
                        reason: "not an ACK timeout exponent from 1 to 31 (4.096 µs * 2^value)"
                            .into(),
                    })
                    .map(Some)?,
            },
            eager_limit: size(get, "WEFT_EAGER_LIMIT", DEFAULT_EAGER_LIMIT, true)?,
            progress_thread: choice(get, "WEFT_PROGRESS_THREAD", &[("0", false), ("1", true)])?,
            single_copy: choice(get, "WEFT_SINGLE_COPY", &[("auto", true), ("off", false)])?,
            streaming: choice(
                get,
                "WEFT_STREAMING",
                &[
                    ("auto", StreamingChoice::Auto),
                    ("always", StreamingChoice::Always),
                    ("never", StreamingChoice::Never),
                ],
            )?,
            exchange: choice(
                get,
                "WEFT_EXCHANGE",
                &[
                    ("auto", ExchangeChoice::Auto),
                    ("attached", ExchangeChoice::Attached),
                    ("slots", ExchangeChoice::Slots),
                ],
            )?,
            collective_algorithms: collective_algorithms(get)?,
        })
    }

    /// The algorithm forced for `collective`, if any.
    pub fn algorithm_for(&self, collective: Collective) -> Option<Algorithm> {
        self.collective_algorithms
            .iter()
            .find(|(c, _)| *c == collective)
            .map(|&(_, a)| a)
    }
}

/// The variable that forces `collective`'s algorithm.
pub fn collective_variable(collective: Collective) -> &'static str {
    match collective {
        Collective::Barrier => "WEFT_COLL_BARRIER",
        Collective::Broadcast => "WEFT_COLL_BROADCAST",
        Collective::Reduce => "WEFT_COLL_REDUCE",
        Collective::Allreduce => "WEFT_COLL_ALLREDUCE",
        Collective::Allgather => "WEFT_COLL_ALLGATHER",
        Collective::Alltoall => "WEFT_COLL_ALLTOALL",
        Collective::Gather => "WEFT_COLL_GATHER",
        Collective::Scatter => "WEFT_COLL_SCATTER",
        Collective::ReduceScatter => "WEFT_COLL_REDUCE_SCATTER",
        Collective::Scan => "WEFT_COLL_SCAN",
        Collective::Exscan => "WEFT_COLL_EXSCAN",
    }
}

fn collective_algorithms(
    get: &impl Fn(&str) -> Option<String>,
) -> Result<Vec<(Collective, Algorithm)>, Cause> {
    let mut forced = Vec::new();
    for c in Collective::ALL {
        let var = collective_variable(c);
        let Some(value) = get(var).filter(|v| !v.trim().is_empty()) else {
            continue;
        };
        match c.algorithms().iter().find(|a| a.name() == value.trim()) {
            Some(&a) => forced.push((c, a)),
            None => {
                let names: Vec<&str> = c.algorithms().iter().map(|a| a.name()).collect();
                return Err(Cause::Config {
                    var,
                    value,
                    reason: format!("expected one of: {}", names.join(", ")),
                });
            }
        }
    }
    Ok(forced)
}

/// The byte count in `var`, or `default` when unset; `0` only if `zero_ok`.
fn size(
    get: &impl Fn(&str) -> Option<String>,
    var: &'static str,
    default: usize,
    zero_ok: bool,
) -> Result<usize, Cause> {
    match get(var) {
        None => Ok(default),
        Some(v) if zero_ok && v.trim() == "0" => Ok(0),
        Some(v) => parse_size(&v).map_err(|reason| Cause::Config {
            var,
            value: v.clone(),
            reason,
        }),
    }
}

/// The option named by `var`; the first option when unset or empty.
fn choice<T: Copy>(
    get: &impl Fn(&str) -> Option<String>,
    var: &'static str,
    options: &[(&str, T)],
) -> Result<T, Cause> {
    let value = get(var).unwrap_or_default();
    let name = match value.trim() {
        "" => options[0].0,
        v => v,
    };
    match options.iter().find(|(n, _)| *n == name) {
        Some(&(_, t)) => Ok(t),
        None => {
            let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
            Err(Cause::Config {
                var,
                value,
                reason: format!("expected one of: {}", names.join(", ")),
            })
        }
    }
}

/// Parses a byte count: a whole number with an optional binary suffix
/// `K`, `M`, `G` or `T` (upper or lower case, optionally followed by `B` or
/// `iB`).
///
/// ```
/// assert_eq!(weft::config::parse_size("64M"), Ok(64 << 20));
/// assert_eq!(weft::config::parse_size("2GiB"), Ok(2 << 30));
/// assert!(weft::config::parse_size("lots").is_err());
/// ```
pub fn parse_size(text: &str) -> Result<usize, String> {
    let t = text.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, suffix) = t.split_at(digits);
    let n: usize = num
        .parse()
        .map_err(|_| "expected a number of bytes such as 67108864, 64M or 2G".to_string())?;
    let shift = match suffix.to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        _ => return Err(format!("unknown size suffix {suffix:?}; use K, M, G or T")),
    };
    let bytes = n
        .checked_mul(1usize << shift)
        .ok_or_else(|| "size overflows".to_string())?;
    if bytes == 0 {
        return Err("the size must be greater than zero".into());
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("1k"), Ok(1024));
        assert_eq!(
            parse_size(" 3 MB"),
            Err("unknown size suffix \" MB\"; use K, M, G or T".into())
        );
        assert_eq!(parse_size("1T"), Ok(1 << 40));
        assert!(parse_size("0").is_err());
        assert!(parse_size("").is_err());
        assert!(parse_size("99999999999999999999G").is_err());
        assert!(parse_size("-1").is_err());
    }

    #[test]
    fn config_from_variables() {
        let c = Config::from_lookup(|_| None).unwrap();
        assert_eq!(c.symmetric_size, DEFAULT_SYMMETRIC_SIZE);
        assert_eq!(c.transport, TransportChoice::Auto);
        let env = |k: &str| match k {
            "WEFT_SYMMETRIC_SIZE" => Some("16M".to_string()),
            "WEFT_TRANSPORT" => Some("shm".to_string()),
            _ => None,
        };
        let c = Config::from_lookup(env).unwrap();
        assert_eq!(
            (c.symmetric_size, c.transport),
            (16 << 20, TransportChoice::Shm)
        );
        let bad = Config::from_lookup(|k| (k == "WEFT_TRANSPORT").then(|| "carrier-pigeon".into()));
        assert!(bad.unwrap_err().to_string().contains("WEFT_TRANSPORT"));
        assert_eq!(c.verbs_timeout, None);
        let timeout = |v: &'static str| {
            Config::from_lookup(move |k| (k == "WEFT_VERBS_TIMEOUT").then(|| v.into()))
        };
        assert_eq!(timeout("14").unwrap().verbs_timeout, Some(14));
        for bad in ["0", "32", "fast"] {
            let e = timeout(bad).unwrap_err().to_string();
            assert!(
                e.contains("WEFT_VERBS_TIMEOUT") && e.contains("1 to 31"),
                "{e}"
            );
        }
        let ring = Config::from_lookup(|k| (k == "WEFT_COLL_ALLREDUCE").then(|| "ring".into()));
        assert_eq!(
            ring.unwrap().algorithm_for(Collective::Allreduce),
            Some(Algorithm::Ring)
        );
        let bad = Config::from_lookup(|k| (k == "WEFT_COLL_BARRIER").then(|| "ring".into()));
        let e = bad.unwrap_err().to_string();
        assert!(
            e.contains("WEFT_COLL_BARRIER") && e.contains("dissemination"),
            "{e}"
        );
    }

    #[test]
    fn one_node_collective_settings() {
        let c = Config::from_lookup(|_| None).unwrap();
        assert_eq!(
            (c.streaming, c.exchange),
            (StreamingChoice::Auto, ExchangeChoice::Auto)
        );
        for (var, value) in [
            ("WEFT_STREAMING", "always"),
            ("WEFT_STREAMING", "never"),
            ("WEFT_EXCHANGE", "attached"),
            ("WEFT_EXCHANGE", "slots"),
        ] {
            let c = Config::from_lookup(|k| (k == var).then(|| value.into())).unwrap();
            let set = match var {
                "WEFT_STREAMING" => format!("{:?}", c.streaming),
                _ => format!("{:?}", c.exchange),
            };
            assert_eq!(set.to_lowercase(), value);
        }
        for (var, named) in [("WEFT_STREAMING", "always"), ("WEFT_EXCHANGE", "slots")] {
            let err = Config::from_lookup(|k| (k == var).then(|| "often".into()));
            let err = err.unwrap_err().to_string();
            assert!(err.contains(var) && err.contains(named), "{err}");
        }
    }

    #[test]
    fn two_sided_settings() {
        let c = Config::from_lookup(|_| None).unwrap();
        assert_eq!(
            (c.eager_limit, c.progress_thread, c.single_copy),
            (DEFAULT_EAGER_LIMIT, false, true)
        );
        let env = |k: &str| match k {
            "WEFT_EAGER_LIMIT" => Some("0".to_string()),
            "WEFT_PROGRESS_THREAD" => Some("1".to_string()),
            "WEFT_SINGLE_COPY" => Some("off".to_string()),
            _ => None,
        };
        let c = Config::from_lookup(env).unwrap();
        assert_eq!(
            (c.eager_limit, c.progress_thread, c.single_copy),
            (0, true, false)
        );
        for (var, value) in [
            ("WEFT_EAGER_LIMIT", "big"),
            ("WEFT_PROGRESS_THREAD", "yes"),
            ("WEFT_SINGLE_COPY", "maybe"),
        ] {
            let err = Config::from_lookup(|k| (k == var).then(|| value.to_string())).unwrap_err();
            assert!(err.to_string().contains(var), "{err}");
        }
    }
}
