//! The world: every PE of the job, its transports and its symmetric heap.

use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use bytemuck::Pod;
use parking_lot::Mutex;
use weft_transport::{AtomicWidth, Transport};

use crate::am::Handlers;
use crate::bootstrap::Bootstrap;
use crate::config::Config;
use crate::error::{Cause, Error, Result};
use crate::flat;
use crate::heap::Allocator;
use crate::progress::{help, Engine, Settings};
use crate::symvec::SymVec;
use crate::team::{self, TeamIds, TeamInner};
use crate::wiring;

/// All PEs of the job. Made by [`crate::init`] and ended by
/// [`World::finalize`], which is collective. Dropping a world that was not
/// finalized releases this PE's resources without waiting for the others
/// (so that a PE returning an error cannot hang in a barrier); the launcher
/// then sees how the process exits.
///
/// Thread safety: one-sided operations (put, get, atomics, wait),
/// point-to-point operations and active-message requests may be issued from
/// several threads at once. Collective operations (barrier, alloc, free,
/// finalize) must be called by one thread at a time per PE, in the same
/// order on every PE. Progress is made by whichever thread waits, by
/// [`World::progress`], or by a background thread with
/// `WEFT_PROGRESS_THREAD=1`; active-message handlers run on that thread.
pub struct World {
    rank: usize,
    size: usize,
    config: Config,
    boot: Mutex<Bootstrap>,
    engine: Arc<Engine>,
    progress_thread: Mutex<Option<JoinHandle<()>>>,
    /// Address and length of this PE's own heap (an address, so that the
    /// world stays `Send + Sync`; the mapping lives as long as the lanes).
    heap: (usize, usize),
    allocator: Mutex<Allocator>,
    finalized: AtomicBool,
    world_team: Arc<TeamInner>,
    /// Which PEs run on this node.
    on_node: Box<[bool]>,
}

/// Which collective a signature describes.
const SIG_ALLOC: u64 = 1;
const SIG_FREE: u64 = 2;
/// Offset in a signature of an allocation that found no room.
const SIG_NO_ROOM: u64 = u64::MAX;

impl World {
    /// Joins the job described by the environment. See [`crate::init`].
    pub(crate) fn init(handlers: Handlers) -> Result<World> {
        let fail = |rank, cause| Error::new(rank, "init", cause);
        let config = Config::from_env().map_err(|c| fail(0, c))?;
        let mut boot = Bootstrap::from_env().map_err(|e| fail(0, Cause::Bootstrap(e)))?;
        let (rank, size) = (boot.rank(), boot.size());
        let wiring = wiring::connect(&mut boot, &config).map_err(|c| fail(rank, c))?;
        agree_on_handlers(&mut boot, &handlers).map_err(|c| fail(rank, c))?;
        let heap = wiring.heap;
        let on_node: Box<[bool]> = wiring.on_node.into();
        let world_placement = team::Placement::of(wiring.oversubscribed, &on_node, 0..size);
        let settings = Settings {
            eager_limit: config.eager_limit,
            single_copy: config.single_copy,
            oversubscribed: wiring.oversubscribed,
            help: help::Area {
                offset: flat::region_size(size),
                local: heap.0 + flat::region_size(size),
            },
        };
        // The world team's small collectives take the flat path when every
        // PE's heap is mapped here and reached by loads and stores, atomics
        // included.
        let mapped: Option<Box<[usize]>> = (0..size)
            .map(|j| {
                if j == rank {
                    Some(heap.0)
                } else {
                    let lane = &wiring.lanes[wiring.route[j] as usize];
                    lane.mapped(j).map(|at| at.as_ptr() as usize)
                }
            })
            .collect();
        let atomics = wiring
            .atomic_route
            .iter()
            .all(|&l| wiring.lanes[l as usize].caps().load_store);
        let flat = mapped.filter(|_| size <= flat::MAX_MEMBERS && atomics);
        let wants = flat.is_some() && config.single_copy;
        let lanes = (&wiring.lanes[..], &wiring.route[..]);
        let attach = agree_on_attach(&mut boot, lanes, heap.0, wants).map_err(|c| fail(rank, c))?;
        let flat = flat.map(|peers| {
            let crowded = wiring.oversubscribed;
            flat::Region::new(
                &peers,
                rank,
                crowded,
                attach,
                config.streaming,
                config.exchange,
            )
        });
        let engine = Arc::new(Engine::new(
            rank,
            size,
            wiring.lanes,
            wiring.route,
            wiring.atomic_route,
            settings,
            handlers,
        ));
        let progress_thread = if config.progress_thread {
            let e = engine.clone();
            let spawned = std::thread::Builder::new()
                .name("weft-progress".into())
                .spawn(move || e.run_progress_thread());
            let thread = spawned.map_err(|e| {
                fail(
                    rank,
                    Cause::Config {
                        var: "WEFT_PROGRESS_THREAD",
                        value: "1".into(),
                        reason: format!("cannot start the progress thread: {e}"),
                    },
                )
            })?;
            Some(thread)
        } else {
            None
        };
        Ok(World {
            heap,
            rank,
            size,
            allocator: Mutex::new(Allocator::new(
                flat::region_size(size) + help::area_size(size),
                config.symmetric_size,
            )),
            config,
            boot: Mutex::new(boot),
            engine,
            progress_thread: Mutex::new(progress_thread),
            finalized: AtomicBool::new(false),
            world_team: TeamInner::new(
                0,
                (0..size).collect(),
                rank,
                TeamIds::new(),
                Arc::default(),
                flat,
                world_placement,
            ),
            on_node,
        })
    }

    /// This PE's number, `0..size()`.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// Number of PEs in the job.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Which PEs run on this node, by PE.
    pub(crate) fn on_node(&self) -> &[bool] {
        &self.on_node
    }

    /// The settings the job runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// An error of this PE in `op`.
    pub(crate) fn error(&self, op: &'static str, cause: Cause) -> Error {
        Error::new(self.rank, op, cause)
    }

    /// Reads the integer at `offset` of this PE's own heap with a CPU load
    /// (acquire), not through a transport: a load sees a network adapter's
    /// atomic or write whole, unlike a CPU read-modify-write racing one, so
    /// waiting on local memory needs no round trip through the adapter.
    /// `offset` must lie in the heap, aligned to the width (a checked span
    /// of a symmetric array of that width).
    pub(crate) fn load_local(&self, offset: usize, width: AtomicWidth) -> u64 {
        assert!(offset % width.bytes() == 0 && offset + width.bytes() <= self.heap.1);
        let p = (self.heap.0 + offset) as *mut u8;
        match width {
            // SAFETY: in bounds and aligned (asserted; the heap is page
            // aligned) and mapped for the world's life; peers and adapters
            // write the word only whole.
            AtomicWidth::W64 => unsafe { AtomicU64::from_ptr(p.cast()) }.load(Ordering::Acquire),
            // SAFETY: as above.
            AtomicWidth::W32 => {
                u64::from(unsafe { AtomicU32::from_ptr(p.cast()) }.load(Ordering::Acquire))
            }
        }
    }

    /// This PE's own symmetric heap: pointer and length.
    pub(crate) fn local_heap(&self) -> (*mut u8, usize) {
        (self.heap.0 as *mut u8, self.heap.1)
    }

    pub(crate) fn world_team(&self) -> &Arc<TeamInner> {
        &self.world_team
    }

    pub(crate) fn engine(&self) -> &Engine {
        &self.engine
    }

    pub(crate) fn lanes(&self) -> impl Iterator<Item = &dyn Transport> {
        self.engine.lanes()
    }

    /// The transport that reaches `pe`, or an error naming `op` for a PE
    /// outside the job.
    #[inline]
    pub(crate) fn lane(&self, op: &'static str, pe: usize) -> Result<&dyn Transport> {
        self.engine.lane(pe).ok_or_else(|| self.bad_pe(op, pe))
    }

    /// The transport that carries atomics to `pe`, or an error naming `op`.
    pub(crate) fn atomic_lane(&self, op: &'static str, pe: usize) -> Result<&dyn Transport> {
        self.engine
            .atomic_lane(pe)
            .ok_or_else(|| self.bad_pe(op, pe))
    }

    fn bad_pe(&self, op: &'static str, pe: usize) -> Error {
        self.error(
            op,
            Cause::BadPe {
                pe,
                size: self.size,
            },
        )
    }

    /// An error naming `op` unless `pe` is in the job.
    pub(crate) fn check_pe(&self, op: &'static str, pe: usize) -> Result<()> {
        self.lane(op, pe).map(drop)
    }

    /// Drives the progress engine once by hand: polls every transport,
    /// matches arrived messages, runs active-message handlers and moves
    /// rendezvous transfers along. Every blocking call does this while it
    /// waits; a PE computing for a long time without calling Weft can call
    /// it now and then so that its peers are served.
    pub fn progress(&self) -> Result<()> {
        const OP: &str = "progress";
        let mut st = self.engine.lock(OP)?;
        self.engine
            .progress(&mut st)
            .map(drop)
            .map_err(|c| self.error(OP, c))
    }

    pub(crate) fn check_live(&self, op: &'static str) -> Result<()> {
        if self.finalized.load(Ordering::Acquire) {
            return Err(self.error(op, Cause::Finalized));
        }
        Ok(())
    }

    /// Waits until every put, get and atomic this PE issued is complete at
    /// its target (`shmem_quiet`).
    pub fn quiet(&self) -> Result<()> {
        for lane in self.lanes() {
            lane.quiet().map_err(|e| self.error("quiet", e.into()))?;
        }
        Ok(())
    }

    /// Orders this PE's puts to each PE: those before the fence are
    /// delivered before those after it (`shmem_fence`).
    pub fn fence(&self) -> Result<()> {
        for lane in self.lanes() {
            lane.fence().map_err(|e| self.error("fence", e.into()))?;
        }
        Ok(())
    }

    /// Completes this PE's outstanding operations ([`World::quiet`]) and
    /// waits until every PE has reached the barrier (`shmem_barrier_all`).
    ///
    /// ```no_run
    /// let world = weft::init()?;
    /// world.barrier_all()?;
    /// # Ok::<(), weft::Error>(())
    /// ```
    pub fn barrier_all(&self) -> Result<()> {
        self.check_live("barrier_all")?;
        self.quiet()?;
        self.team().barrier()
    }

    /// Allocates a symmetric array of `len` elements on every PE, zeroed.
    /// Collective: every PE must call it with the same type and length, in
    /// the same order relative to other collectives; a PE that disagrees
    /// makes the call fail on every PE with an error naming the PEs.
    ///
    /// ```no_run
    /// let world = weft::init()?;
    /// let counts = world.alloc::<u64>(1024)?;
    /// counts.put((world.rank() + 1) % world.size(), 0, &[1, 2, 3])?;
    /// # Ok::<(), weft::Error>(())
    /// ```
    pub fn alloc<T: Pod>(&self, len: usize) -> Result<SymVec<'_, T>> {
        const OP: &str = "alloc";
        self.check_live(OP)?;
        let elem = std::mem::size_of::<T>();
        let bytes = len.saturating_mul(elem);
        let reserved = self.allocator.lock().alloc(bytes);
        if let Some(offset) = reserved {
            self.zero_local(offset, bytes)?;
        }
        let sig = [
            SIG_ALLOC,
            elem as u64,
            len as u64,
            reserved.map_or(SIG_NO_ROOM, |o| o as u64),
        ];
        let agreed = self.agree(OP, sig);
        let offset = match (agreed, reserved) {
            (Ok(()), Some(offset)) => offset,
            (agreed, reserved) => {
                if let Some(offset) = reserved {
                    self.allocator
                        .lock()
                        .free(offset)
                        .expect("a block reserved just now is live");
                }
                agreed?;
                let a = self.allocator.lock();
                return Err(self.error(
                    OP,
                    Cause::HeapExhausted {
                        requested: bytes,
                        largest_free: a.largest_free(),
                        heap_size: a.size(),
                    },
                ));
            }
        };
        Ok(SymVec {
            world: self,
            offset,
            len,
            _elem: PhantomData,
        })
    }

    /// Frees a symmetric array on every PE. Collective, like [`World::alloc`];
    /// completes this PE's outstanding operations first.
    pub(crate) fn free_bytes(&self, offset: usize, elem: usize, len: usize) -> Result<()> {
        const OP: &str = "free";
        self.check_live(OP)?;
        self.quiet()?;
        self.agree(OP, [SIG_FREE, elem as u64, len as u64, offset as u64])?;
        self.allocator
            .lock()
            .free(offset)
            .map_err(|o| self.error(OP, Cause::Mismatch(format!("no live block at offset {o}"))))
    }

    fn zero_local(&self, offset: usize, bytes: usize) -> Result<()> {
        const ZEROS: [u8; 4096] = [0; 4096];
        let lane = self.lane("alloc", self.rank)?;
        let mut done = 0;
        while done < bytes {
            let n = (bytes - done).min(ZEROS.len());
            lane.put(self.rank, offset + done, &ZEROS[..n])
                .map_err(|e| self.error("alloc", e.into()))?;
            done += n;
        }
        Ok(())
    }

    /// Checks that every PE passed the same signature to collective `op`;
    /// otherwise every PE fails with an error that lists who passed what.
    fn agree(&self, op: &'static str, sig: [u64; 4]) -> Result<()> {
        let mut all = vec![0u64; sig.len() * self.size];
        self.team()
            .allgather(&sig, &mut all)
            .map_err(|e| Error { op, ..e })?;
        let sigs: Vec<[u64; 4]> = all
            .chunks(4)
            .map(|c| std::array::from_fn(|i| c[i]))
            .collect();
        if sigs.iter().all(|s| *s == sigs[0]) {
            return Ok(());
        }
        let mut groups: Vec<([u64; 4], Vec<usize>)> = Vec::new();
        for (pe, s) in sigs.iter().enumerate() {
            match groups.iter_mut().find(|(g, _)| g == s) {
                Some((_, pes)) => pes.push(pe),
                None => groups.push((*s, vec![pe])),
            }
        }
        groups.sort_by_key(|(_, pes)| std::cmp::Reverse(pes.len()));
        let text: Vec<String> = groups
            .iter()
            .map(|(s, pes)| format!("PEs {pes:?} called {}", describe(s)))
            .collect();
        Err(self.error(op, Cause::Mismatch(text.join("; "))))
    }

    /// Ends this PE's part in the job: completes outstanding operations,
    /// waits for every PE ([`World::barrier_all`]) and tells the launcher.
    /// Collective; later calls do nothing.
    pub fn finalize(&self) -> Result<()> {
        if self.finalized.load(Ordering::Acquire) {
            return Ok(());
        }
        self.am_wait_all()?;
        self.barrier_all()?;
        self.finalized.store(true, Ordering::Release);
        self.stop_progress_thread();
        self.boot
            .lock()
            .finalize()
            .map_err(|e| self.error("finalize", Cause::Bootstrap(e)))
    }

    /// Ends the whole job at once with exit status `code`, printing `msg`
    /// (`shmem_global_exit`). Never returns.
    pub fn abort(&self, code: i32, msg: &str) -> ! {
        eprintln!("rank {}: abort: {msg}", self.rank);
        // The launcher ends every rank, this one included; give it time to
        // read the request first. If it cannot be told, exiting still makes
        // it see this rank fail and end the others.
        if self.boot.lock().abort(code, msg) {
            std::thread::sleep(std::time::Duration::from_secs(5));
        }
        std::process::exit(if code == 0 { 1 } else { code });
    }
}

impl World {
    fn stop_progress_thread(&self) {
        self.engine.stop();
        if let Some(t) = self.progress_thread.lock().take() {
            // The thread only returns; a panic in it was already reported.
            let _ = t.join();
        }
    }
}

impl Drop for World {
    fn drop(&mut self) {
        self.stop_progress_thread();
    }
}

/// Fails init on every PE unless all registered the same active-message
/// handlers in the same order.
fn agree_on_handlers(boot: &mut Bootstrap, handlers: &Handlers) -> Result<(), Cause> {
    let mine = handlers.names().join("\n");
    let all = boot
        .allgather("weft-handlers", mine.as_bytes())
        .map_err(Cause::Bootstrap)?;
    if all.iter().all(|n| *n == all[0]) {
        return Ok(());
    }
    let mut groups: Vec<(&[u8], Vec<usize>)> = Vec::new();
    for (pe, names) in all.iter().enumerate() {
        match groups.iter_mut().find(|(g, _)| *g == names.as_slice()) {
            Some((_, pes)) => pes.push(pe),
            None => groups.push((names, vec![pe])),
        }
    }
    let text: Vec<String> = groups
        .iter()
        .map(|(names, pes)| {
            let list: Vec<&str> = std::str::from_utf8(names)
                .unwrap_or("?")
                .split('\n')
                .filter(|n| !n.is_empty())
                .collect();
            format!("PEs {pes:?} registered active-message handlers {list:?}")
        })
        .collect();
    Err(Cause::Mismatch(text.join("; ")))
}

/// Whether the flat path's large allgathers, alltoalls and allreduces may
/// copy straight between the PEs' buffers (cross-memory attach,
/// `flat::Carry::Attached`): only if every PE `wants` to (it has the flat
/// path and single copies are on) and can read every other PE's memory
/// through its lane to it (`lanes[route[j]]`), which it tries on their
/// heaps (its own heap starts at `heap` here); the kernel, a container or
/// Yama's ptrace scope may forbid it. Writing another process's memory
/// (`process_vm_writev`) takes the same permission as reading it. Every
/// PE gets the same answer.
fn agree_on_attach(
    boot: &mut Bootstrap,
    (lanes, route): (&[Box<dyn Transport>], &[u8]),
    heap: usize,
    wants: bool,
) -> Result<bool, Cause> {
    let (rank, size) = (boot.rank(), boot.size());
    let heaps = boot
        .allgather("weft-attach-at", &(heap as u64).to_ne_bytes())
        .map_err(Cause::Bootstrap)?;
    let readable = |j: usize| {
        let Ok(at) = <[u8; 8]>::try_from(heaps[j].as_slice()) else {
            return false;
        };
        let lane = &lanes[route[j] as usize];
        let mut word = [0u8; 8];
        lane.read_remote(j, u64::from_ne_bytes(at), 0, &mut word)
            .is_ok()
    };
    let able = wants && (0..size).filter(|&j| j != rank).all(readable);
    let all = boot
        .allgather("weft-attach-ok", &[u8::from(able)])
        .map_err(Cause::Bootstrap)?;
    Ok(all.iter().all(|a| a.as_slice() == [1]))
}

fn describe(s: &[u64; 4]) -> String {
    let what = match s[0] {
        SIG_ALLOC => "alloc",
        SIG_FREE => "free",
        _ => "an unknown collective",
    };
    let at = match s[3] {
        SIG_NO_ROOM => " (no room left in the heap)".to_string(),
        o => format!(" at offset {o}"),
    };
    format!("{what} of {} elements of {} bytes{at}", s[2], s[1])
}
