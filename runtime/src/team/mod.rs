//! Teams and their collectives.
//!
//! A [`Team`] is an ordered set of PEs; the world is the team of all of
//! them ([`World::team`]), and [`Team::split`], [`Team::split_strided`] and
//! [`Team::dup`] make others. Every collective runs on a team: its members
//! call it in the same order, with the same root, sizes, element type and
//! operation. Members that disagree get an error naming a member they
//! disagree with, not a hang or a wrong answer; see
//! [`crate::progress`]'s collective checks.
//!
//! Collectives of different teams run side by side without interfering:
//! each call's messages carry the team's id and the call's sequence
//! number. Non-blocking variants live in a [`Scope`](crate::p2p::Scope) (`ibarrier`,
//! `iallreduce`, ...), like point-to-point requests, and the progress
//! engine advances them. A symmetric collective (barrier, allreduce, ...)
//! may be non-blocking on some members and blocking on others; a rooted
//! one (broadcast, reduce, gather, scatter) must be one or the other on
//! every member, as in MPI: on the world team of one node its senders may
//! leave the blocking call before the others arrive, and a mix is an error.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, LazyLock};

use parking_lot::Mutex;
use weft_collectives::model::LogGP;
use weft_collectives::schedule::Schedule;
use weft_collectives::scratch::ScratchPool;
use weft_collectives::select::{self, Call, Network};
use weft_collectives::Algorithm;

use crate::error::{Cause, Result};
use crate::flat;
use crate::progress::coll::CTX_SEQ_BITS;
use crate::World;

mod calls;
mod reduction;
mod run;

pub use reduction::{Reduction, UserOp};

/// Number of team ids (the world's is 0).
const TEAM_IDS: usize = 1 << (24 - CTX_SEQ_BITS);
const ID_WORDS: usize = TEAM_IDS / 64;

/// The team ids this PE uses.
pub(crate) struct TeamIds {
    used: [u64; ID_WORDS],
}

impl TeamIds {
    pub(crate) fn new() -> Arc<Mutex<TeamIds>> {
        let mut used = [0; ID_WORDS];
        used[0] = 1;
        Arc::new(Mutex::new(TeamIds { used }))
    }

    fn free_mask(&self) -> [u64; ID_WORDS] {
        self.used.map(|w| !w)
    }
}

/// The network the selection rule assumes for a team on one node.
static ON_NODE: LazyLock<Network> = LazyLock::new(|| Network::of(&LogGP::SHARED_MEMORY));
/// The network the selection rule assumes for a team on several nodes.
static ACROSS_NODES: LazyLock<Network> = LazyLock::new(|| Network::of(&LogGP::CLUSTER));

/// Cached schedules per team, dropped wholesale when full.
const CACHE_LIMIT: usize = 256;

/// What a team is, shared by its handles.
pub(crate) struct TeamInner {
    id: u32,
    /// Members as PEs, in team order.
    members: Arc<[usize]>,
    /// This PE's index in `members`.
    me: usize,
    /// Number of the next call (its sequence number is the low bits).
    calls: AtomicU64,
    /// The world team's flat path for small calls, when the job has one.
    flat: Option<flat::Region>,
    /// Where the members run, which steers the choice of algorithms.
    placement: Placement,
    schedules: Mutex<HashMap<(Call, Algorithm), Arc<Schedule>>>,
    ids: Arc<Mutex<TeamIds>>,
    /// Scratch space of collective runs, shared by the PE's teams.
    scratch: Arc<ScratchPool>,
}

impl TeamInner {
    pub(crate) fn new(
        id: u32,
        members: Vec<usize>,
        me: usize,
        ids: Arc<Mutex<TeamIds>>,
        scratch: Arc<ScratchPool>,
        flat: Option<flat::Region>,
        placement: Placement,
    ) -> Arc<TeamInner> {
        ids.lock().used[id as usize / 64] |= 1 << (id % 64);
        Arc::new(TeamInner {
            id,
            members: members.into(),
            me,
            calls: AtomicU64::new(0),
            flat,
            placement,
            schedules: Mutex::new(HashMap::new()),
            ids,
            scratch,
        })
    }

    fn schedule(&self, call: Call, algorithm: Algorithm) -> Result<Arc<Schedule>, String> {
        let mut cache = self.schedules.lock();
        if let Some(s) = cache.get(&(call, algorithm)) {
            return Ok(s.clone());
        }
        let s = Arc::new(select::build(&call, algorithm).map_err(|e| e.0)?);
        if cache.len() >= CACHE_LIMIT {
            cache.clear();
        }
        cache.insert((call, algorithm), s.clone());
        Ok(s)
    }
}

/// Where a team's members run, as far as the choice of algorithms goes.
/// Every member must see the same placement, since they must all pick the
/// same algorithm: whether the team spans nodes is the same seen from any
/// of them, and on one node they all count the same PEs and cores.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Placement {
    /// Every member on one node, with no more PEs than cores: algorithms
    /// are chosen for shared memory.
    Node,
    /// Every member on one node, which has more PEs than cores: some
    /// algorithms are chosen differently ([`select::choose_crowded`]).
    CrowdedNode,
    /// Members on several nodes: algorithms are chosen for a cluster's
    /// network, however its nodes are loaded.
    Nodes,
}

impl Placement {
    /// The placement of a team of `members`, seen from a PE for which
    /// `on_node[pe]` says whether `pe` runs on its node, which has more PEs
    /// than cores if `oversubscribed`.
    pub(crate) fn of(
        oversubscribed: bool,
        on_node: &[bool],
        mut members: impl Iterator<Item = usize>,
    ) -> Placement {
        match (members.all(|pe| on_node[pe]), oversubscribed) {
            (false, _) => Placement::Nodes,
            (true, true) => Placement::CrowdedNode,
            (true, false) => Placement::Node,
        }
    }
}

impl Drop for TeamInner {
    fn drop(&mut self) {
        if self.id != 0 {
            self.ids.lock().used[self.id as usize / 64] &= !(1 << (self.id % 64));
        }
    }
}

/// An ordered set of PEs that run collectives together. Cheap to clone;
/// the team lives as long as any handle. Collectives on one team must be
/// called by one thread at a time per PE; different teams may be used from
/// different threads.
#[derive(Clone)]
pub struct Team<'w> {
    world: &'w World,
    inner: Arc<TeamInner>,
}

impl World {
    /// The team of every PE, in rank order.
    pub fn team(&self) -> Team<'_> {
        Team {
            world: self,
            inner: self.world_team().clone(),
        }
    }
}

impl<'w> Team<'w> {
    /// This PE's index in the team.
    pub fn rank(&self) -> usize {
        self.inner.me
    }

    /// Number of members.
    pub fn size(&self) -> usize {
        self.inner.members.len()
    }

    /// The members as PEs (world ranks), in team order.
    pub fn members(&self) -> &[usize] {
        &self.inner.members
    }

    /// The world this team belongs to.
    pub fn world(&self) -> &'w World {
        self.world
    }

    /// Splits the team by `color`: members passing the same color form a
    /// new team, ordered by `key` and then by rank in this team; those
    /// passing `None` get `None`. Collective over this team.
    ///
    /// ```no_run
    /// let world = weft::init()?;
    /// let row = world.team().split(Some((world.rank() / 2) as u32), 0)?.unwrap();
    /// row.barrier()?;
    /// # Ok::<(), weft::Error>(())
    /// ```
    pub fn split(&self, color: Option<u32>, key: i64) -> Result<Option<Team<'w>>> {
        const OP: &str = "split";
        let params = [color.map_or(0, |c| u64::from(c) + 1), key as u64];
        let (all, id) = self.agree_on_id(OP, &params)?;
        let Some(color) = color else {
            return Ok(None);
        };
        let mut chosen: Vec<(i64, usize)> = (0..self.size())
            .filter(|&i| all[i][0] == u64::from(color) + 1)
            .map(|i| (all[i][1] as i64, i))
            .collect();
        chosen.sort_unstable();
        let members: Vec<usize> = chosen.iter().map(|&(_, i)| self.members()[i]).collect();
        let me = chosen
            .iter()
            .position(|&(_, i)| i == self.rank())
            .expect("this member passed its own color");
        Ok(Some(self.child(id, members, me)))
    }

    /// The team of members `start, start + stride, ...` (`size` of them) of
    /// this team, as OpenSHMEM's `shmem_team_split_strided`; members
    /// outside it get `None`. Collective over this team; every member must
    /// pass the same arguments.
    pub fn split_strided(
        &self,
        start: usize,
        stride: usize,
        size: usize,
    ) -> Result<Option<Team<'w>>> {
        const OP: &str = "split_strided";
        let p = self.size();
        let last = size
            .checked_sub(1)
            .and_then(|k| k.checked_mul(stride))
            .and_then(|o| o.checked_add(start));
        let fits = size > 0 && stride > 0 && last.is_some_and(|l| l < p);
        let params = [start as u64, stride as u64, size as u64];
        let (all, id) = self.agree_on_id(OP, &params)?;
        if let Some(i) = (0..p).find(|&i| all[i] != params) {
            let [s, t, n] = all[i];
            return Err(self.world.error(
                OP,
                Cause::Mismatch(format!(
                    "member {i} (PE {}) asked for start {s}, stride {t}, size {n}; this member \
                     for start {start}, stride {stride}, size {size}",
                    self.members()[i]
                )),
            ));
        }
        if !fits {
            return Err(self.world.error(
                OP,
                Cause::Invalid(format!(
                    "start {start}, stride {stride}, size {size} do not fit in a team of {p}"
                )),
            ));
        }
        let me = self.rank();
        let members: Vec<usize> = (0..size)
            .map(|k| self.members()[start + k * stride])
            .collect();
        let pos = (me >= start && (me - start) % stride == 0 && (me - start) / stride < size)
            .then(|| (me - start) / stride);
        Ok(pos.map(|pos| self.child(id, members, pos)))
    }

    /// A new team with the same members in the same order, whose
    /// collectives never mix with this team's. Collective over this team.
    pub fn dup(&self) -> Result<Team<'w>> {
        let t = self.split(Some(0), self.rank() as i64)?;
        Ok(t.expect("every member passed a color"))
    }

    fn child(&self, id: u32, members: Vec<usize>, me: usize) -> Team<'w> {
        let w = self.world;
        let placement = Placement::of(
            w.engine().oversubscribed(),
            w.on_node(),
            members.iter().copied(),
        );
        Team {
            world: w,
            inner: TeamInner::new(
                id,
                members,
                me,
                self.inner.ids.clone(),
                self.inner.scratch.clone(),
                None,
                placement,
            ),
        }
    }

    /// Allgathers `params` with the ids free on this member; returns every
    /// member's params and the lowest id free on all of them.
    fn agree_on_id<const N: usize>(
        &self,
        op: &'static str,
        params: &[u64; N],
    ) -> Result<(Vec<[u64; N]>, u32)> {
        let free = self.inner.ids.lock().free_mask();
        let mut mine = params.to_vec();
        mine.extend_from_slice(&free);
        let width = mine.len();
        let mut all = vec![0u64; width * self.size()];
        self.allgather(&mine, &mut all)?;
        let mut common = [u64::MAX; ID_WORDS];
        for m in all.chunks(width) {
            for (c, w) in common.iter_mut().zip(&m[N..]) {
                *c &= w;
            }
        }
        let id = (0..TEAM_IDS).find(|&i| common[i / 64] & (1 << (i % 64)) != 0);
        let id = id.ok_or_else(|| {
            self.world.error(
                op,
                Cause::Invalid(format!("all {} team ids are in use", TEAM_IDS - 1)),
            )
        })?;
        let params = all
            .chunks(width)
            .map(|m| std::array::from_fn(|k| m[k]))
            .collect();
        Ok((params, id as u32))
    }
}

#[cfg(test)]
mod tests {
    use super::Placement;

    #[test]
    fn every_member_sees_the_same_placement() {
        // PEs 0-2 on this node, 3 on another.
        let on_node = [true, true, true, false];
        let of = |over, members: &[usize]| Placement::of(over, &on_node, members.iter().copied());
        assert_eq!(of(true, &[0, 1, 2]), Placement::CrowdedNode);
        assert_eq!(of(true, &[1]), Placement::CrowdedNode);
        assert_eq!(of(false, &[0, 1, 2]), Placement::Node);
        assert_eq!(of(true, &[0, 1, 2, 3]), Placement::Nodes);
        assert_eq!(of(false, &[2, 3]), Placement::Nodes);
        // PE 3's node, not crowded, answers the same for the teams it is in.
        let there = [false, false, false, true];
        assert_eq!(Placement::of(false, &there, 0..4), Placement::Nodes);
        assert_eq!(
            Placement::of(false, &there, [2, 3].into_iter()),
            Placement::Nodes
        );
    }
}
