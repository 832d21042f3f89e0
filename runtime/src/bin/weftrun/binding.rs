//! Process placement: which CPUs each rank may run on, computed with hwloc.

use hwloc2::{ObjectType, Topology};

/// What to bind each rank to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BindTo {
    /// One core per rank, round robin.
    Core,
    /// One NUMA node per rank, round robin.
    Numa,
    /// No binding.
    None,
}

/// One rank's placement: a description and the OS CPU numbers, empty for none.
#[derive(Clone)]
pub struct Placement {
    pub what: String,
    pub cpus: Vec<usize>,
}

/// Places `n` ranks. `requested` is `None` for the default: cores while the
/// ranks fit the cores, no binding when they outnumber them. Unbound, the
/// kernel may leave 3 of 4 ranks on one of 2 cores for a while (one rank
/// then ran alone a whole round of 20,000 OSU-style 64 B alltoalls, which
/// took 3.4 µs a call against 2.1); bound round robin, those never did, but
/// back to back 4-rank 8 B-32 KiB broadcasts and 8 B-256 KiB reduces took
/// 1.1-1.8x the time (512 KiB-1 MiB broadcasts and 256 KiB-1 MiB
/// allreduces 0.63-0.73x; alternated, medians of 8 runs of `osu_coll`).
pub fn place(n: usize, requested: Option<BindTo>) -> Result<Vec<Placement>, String> {
    let topo = Topology::new().ok_or("hwloc could not read this machine's topology")?;
    let cores = objects(&topo, ObjectType::Core)?;
    let bind = requested.unwrap_or(if n <= cores.len() {
        BindTo::Core
    } else {
        BindTo::None
    });
    let units = match bind {
        BindTo::None => {
            return Ok((0..n)
                .map(|_| Placement {
                    what: "not bound".into(),
                    cpus: vec![],
                })
                .collect())
        }
        BindTo::Core => cores,
        BindTo::Numa => objects(&topo, ObjectType::NUMANode)?,
    };
    Ok((0..n).map(|r| units[r % units.len()].clone()).collect())
}

fn objects(topo: &Topology, kind: ObjectType) -> Result<Vec<Placement>, String> {
    let label = match kind {
        ObjectType::Core => "core",
        _ => "NUMA node",
    };
    let objs = topo
        .objects_with_type(&kind)
        .map_err(|e| format!("hwloc: no {label} objects: {e:?}"))?;
    let out: Vec<Placement> = objs
        .iter()
        .filter_map(|o| {
            let cpus: Vec<usize> = o.cpuset()?.into_iter().map(|c| c as usize).collect();
            (!cpus.is_empty()).then(|| Placement {
                what: format!("bound to {label} {} (PUs {cpus:?})", o.logical_index()),
                cpus,
            })
        })
        .collect();
    if out.is_empty() {
        return Err(format!("hwloc found no {label} with CPUs"));
    }
    Ok(out)
}

/// The CPU mask for `cpus`, for `sched_setaffinity` in the child.
pub fn cpu_set(cpus: &[usize]) -> libc::cpu_set_t {
    // SAFETY: cpu_set_t is a plain bit array; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &c in cpus {
        if c < libc::CPU_SETSIZE as usize {
            // SAFETY: `c` is below CPU_SETSIZE, the capacity of the set.
            unsafe { libc::CPU_SET(c, &mut set) };
        }
    }
    set
}
