//! Connecting a PE to its peers at init: which transport reaches each PE
//! (`WEFT_TRANSPORT`), set up through address exchanges over the bootstrap.
//!
//! Every PE creates its shared-memory segment (the symmetric heap lives in
//! it whatever transport carries the traffic) and allgathers a hello: its
//! transport choice and its shared-memory address. The choices must agree.
//! Peers on this node are reached through shared memory, others through RDMA
//! verbs; with `WEFT_TRANSPORT=verbs`, every peer (this PE included) goes
//! through the verbs device. Each step that can fail on one PE ends in an
//! allgather of statuses, so that all PEs fail together with the reason
//! instead of some waiting forever.

use std::sync::Arc;

use weft_transport::shm::{create_segment, SegmentLayout, ShmTransport};
use weft_transport::Transport;

use crate::bootstrap::Bootstrap;
use crate::config::{Config, TransportChoice};
use crate::error::Cause;
use crate::flat;
use crate::progress::help;

/// The connected transports and which one reaches each PE.
pub(crate) struct Wiring {
    pub lanes: Vec<Box<dyn Transport>>,
    pub route: Vec<u8>,
    /// The lane that carries atomics to each PE. In a job on several nodes
    /// every atomic goes through the verbs device, this PE's and its node's
    /// included: a network adapter's atomics are not atomic with respect to
    /// the CPU's on the same word, so one word must see only one kind.
    pub atomic_route: Vec<u8>,
    /// This PE's heap: address and length.
    pub heap: (usize, usize),
    /// More PEs on this node than it has cores: waits yield at once.
    pub oversubscribed: bool,
    /// Which PEs run on this node (this one included).
    pub on_node: Vec<bool>,
}

fn bootstrap_error(e: String) -> Cause {
    Cause::Bootstrap(e)
}

/// Connects this PE (`rank` of `size`) to every PE of the job.
pub(crate) fn connect(boot: &mut Bootstrap, config: &Config) -> Result<Wiring, Cause> {
    let (rank, size) = (boot.rank(), boot.size());
    let layout = SegmentLayout {
        nranks: size,
        heap_size: flat::region_size(size) + help::area_size(size) + config.symmetric_size,
    };
    let segment = Arc::new(create_segment(boot.job(), rank, layout)?);
    let mut shm = ShmTransport::new(segment.clone(), rank, layout);
    if config.single_copy {
        shm.allow_peer_reads();
    }
    let mut hello = vec![choice_byte(config.transport)];
    hello.extend_from_slice(&shm.address());
    let hellos = boot
        .allgather("weft-hello", &hello)
        .map_err(bootstrap_error)?;
    let mut addresses = Vec::with_capacity(size);
    for (pe, h) in hellos.iter().enumerate() {
        let (&c, address) = h.split_first().unwrap_or((&0, &[]));
        if c != hello[0] {
            return Err(Cause::Config {
                var: "WEFT_TRANSPORT",
                value: name_of(hello[0]).into(),
                reason: format!(
                    "PE {pe} has WEFT_TRANSPORT={}; every PE must have the same",
                    name_of(c)
                ),
            });
        }
        addresses.push(address.to_vec());
    }
    let status = match shm.connect(&addresses) {
        Err(e) => format!("{e}"),
        Ok(()) => String::new(),
    };
    agree(boot, "weft-shm-connected", &status)?;
    // Every on-node peer has mapped our segment: drop its name so that
    // nothing is left in /dev/shm whatever happens next.
    shm.unlink()?;
    let (heap_ptr, heap_len) = shm.local_heap();
    // The node's cores, not this process's affinity: a launcher that binds
    // each rank to one core does not oversubscribe.
    // SAFETY: sysconf only reads a system setting.
    let online = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    let cores = usize::try_from(online).unwrap_or(1).max(1);
    let on_node: Vec<bool> = (0..size).map(|pe| shm.reaches(pe)).collect();
    let oversubscribed = on_node.iter().filter(|&&here| here).count() > cores;
    let off_node = on_node.iter().position(|&here| !here);
    let (lanes, route): (Vec<Box<dyn Transport>>, Vec<u8>) = match (config.transport, off_node) {
        (TransportChoice::Shm, Some(pe)) => {
            return Err(Cause::Bootstrap(format!(
                "PE {pe} is on another node, and WEFT_TRANSPORT=shm reaches only this node"
            )))
        }
        (TransportChoice::Verbs, _) => (
            vec![verbs::connect(
                boot,
                config,
                segment,
                layout,
                off_node,
                oversubscribed,
            )?],
            vec![0; size],
        ),
        (TransportChoice::Auto, Some(_)) => {
            let verbs = verbs::connect(boot, config, segment, layout, off_node, oversubscribed)?;
            let route = on_node.iter().map(|&here| u8::from(!here)).collect();
            (vec![Box::new(shm), verbs], route)
        }
        (_, None) => (vec![Box::new(shm)], vec![0; size]),
    };
    // Every PE's verbs lane (the last one) reaches every PE.
    let atomic_route = if off_node.is_some() {
        vec![(lanes.len() - 1) as u8; size]
    } else {
        route.clone()
    };
    Ok(Wiring {
        lanes,
        route,
        atomic_route,
        heap: (heap_ptr as usize, heap_len),
        oversubscribed,
        on_node,
    })
}

/// Publishes this PE's `status` (empty: fine) and fails every PE with the
/// first PE's complaint, if any.
fn agree(boot: &mut Bootstrap, key: &str, status: &str) -> Result<(), Cause> {
    let statuses = boot
        .allgather(key, status.as_bytes())
        .map_err(bootstrap_error)?;
    match statuses.iter().enumerate().find(|(_, s)| !s.is_empty()) {
        Some((pe, s)) => Err(Cause::Bootstrap(format!(
            "PE {pe} could not connect: {}",
            String::from_utf8_lossy(s)
        ))),
        None => Ok(()),
    }
}

fn choice_byte(c: TransportChoice) -> u8 {
    match c {
        TransportChoice::Auto => b'a',
        TransportChoice::Shm => b's',
        TransportChoice::Verbs => b'v',
    }
}

fn name_of(c: u8) -> &'static str {
    match c {
        b'a' => "auto",
        b's' => "shm",
        b'v' => "verbs",
        _ => "(unreadable)",
    }
}

#[cfg(feature = "verbs")]
mod verbs {
    use std::sync::Arc;

    use weft_transport::shm::{Segment, SegmentLayout};
    use weft_transport::verbs::{VerbsOptions, VerbsTransport};
    use weft_transport::Transport;

    use super::{agree, bootstrap_error};
    use crate::bootstrap::Bootstrap;
    use crate::config::Config;
    use crate::error::Cause;

    /// Opens the verbs device on every PE, exchanges addresses and brings
    /// the queue pairs up. A PE that cannot open its device publishes why
    /// instead of an address, and every PE fails with that reason.
    pub(super) fn connect(
        boot: &mut Bootstrap,
        config: &Config,
        segment: Arc<Segment>,
        layout: SegmentLayout,
        off_node: Option<usize>,
        oversubscribed: bool,
    ) -> Result<Box<dyn Transport>, Cause> {
        let (rank, size) = (boot.rank(), boot.size());
        let options = VerbsOptions {
            device: config.verbs_device.clone(),
            gid_index: config.verbs_gid_index,
            ack_timeout: config.verbs_timeout,
            oversubscribed,
            exits: boot.exits().cloned(),
        };
        let opened = VerbsTransport::open(segment, layout, rank, size, &options);
        let blob = match &opened {
            Ok(v) => [&[1u8][..], &v.address()].concat(),
            Err(e) => [&[0u8][..], e.to_string().as_bytes()].concat(),
        };
        let blobs = boot
            .allgather("weft-verbs", &blob)
            .map_err(bootstrap_error)?;
        if let Some((pe, b)) = blobs
            .iter()
            .enumerate()
            .find(|(_, b)| b.first() != Some(&1))
        {
            let why = String::from_utf8_lossy(b.get(1..).unwrap_or_default()).into_owned();
            return Err(Cause::Bootstrap(match off_node {
                Some(far) => format!(
                    "PE {far} is on another node and PE {pe} has no RDMA device to reach it: {why}"
                ),
                None => format!("WEFT_TRANSPORT=verbs, but on PE {pe}: {why}"),
            }));
        }
        let mut verbs = opened.map_err(Cause::Transport)?;
        let addresses: Vec<Vec<u8>> = blobs.into_iter().map(|b| b[1..].to_vec()).collect();
        let status = match verbs.connect(&addresses) {
            Err(e) => format!("{e}"),
            Ok(()) => String::new(),
        };
        agree(boot, "weft-verbs-connected", &status)?;
        Ok(Box::new(verbs))
    }
}

#[cfg(not(feature = "verbs"))]
mod verbs {
    use std::sync::Arc;

    use weft_transport::shm::{Segment, SegmentLayout};
    use weft_transport::Transport;

    use crate::bootstrap::Bootstrap;
    use crate::config::Config;
    use crate::error::Cause;

    /// This build has no verbs transport: says so (every PE of the job runs
    /// the same build, so they all fail alike without talking).
    pub(super) fn connect(
        _boot: &mut Bootstrap,
        _config: &Config,
        _segment: Arc<Segment>,
        _layout: SegmentLayout,
        off_node: Option<usize>,
        _oversubscribed: bool,
    ) -> Result<Box<dyn Transport>, Cause> {
        Err(Cause::Bootstrap(match off_node {
            Some(pe) => format!(
                "PE {pe} is on another node, and this build of Weft has no RDMA verbs \
                 transport to reach it (build with the `verbs` feature)"
            ),
            None => "WEFT_TRANSPORT=verbs, but this build of Weft has no RDMA verbs \
                     transport (build with the `verbs` feature)"
                .into(),
        }))
    }
}
