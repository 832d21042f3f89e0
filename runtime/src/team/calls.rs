//! A team's collectives: blocking on the team, non-blocking in a
//! [`Scope`].

use bytemuck::Pod;
use weft_collectives::Collective;

use super::reduction::{reduction, Reduction};
use super::run::{
    all_to_all, barrier_args, blocks, reduce_scatter_args, rooted_in_place, scatter_args, Args,
};
use super::Team;
use crate::error::Result;
use crate::p2p::{Request, Scope};
use crate::progress::Watch;

impl<'w> Team<'w> {
    /// Waits until every member has entered the barrier. Unlike
    /// [`World::barrier_all`](crate::World::barrier_all) it does not complete outstanding puts.
    pub fn barrier(&self) -> Result<()> {
        self.run(barrier_args("barrier"))
    }

    /// Copies `data` of member `root` into `data` of every member.
    ///
    /// ```no_run
    /// let world = weft::init()?;
    /// let mut config = [0u32; 4];
    /// if world.rank() == 0 { config = [1, 2, 3, 4]; }
    /// world.team().broadcast(0, &mut config)?;
    /// # Ok::<(), weft::Error>(())
    /// ```
    pub fn broadcast<T: Pod>(&self, root: usize, data: &mut [T]) -> Result<()> {
        self.run(rooted_in_place::<T>(
            "broadcast",
            Collective::Broadcast,
            root,
            data,
            None,
        ))
    }

    /// Reduces every member's `data` element-wise into `data` of `root`;
    /// the others' `data` is left unchanged.
    pub fn reduce<T: Pod>(&self, root: usize, data: &mut [T], op: impl Reduction<T>) -> Result<()> {
        let r = reduction(op);
        self.run(rooted_in_place::<T>(
            "reduce",
            Collective::Reduce,
            root,
            data,
            r,
        ))
    }

    /// Reduces every member's `data` element-wise into `data` of every
    /// member; every member gets bit-identical results.
    ///
    /// ```no_run
    /// use weft::ReduceOp;
    /// let world = weft::init()?;
    /// let mut sum = [world.rank() as f64];
    /// world.team().allreduce(&mut sum, ReduceOp::Sum)?;
    /// # Ok::<(), weft::Error>(())
    /// ```
    pub fn allreduce<T: Pod>(&self, data: &mut [T], op: impl Reduction<T>) -> Result<()> {
        let r = reduction(op);
        self.run(rooted_in_place::<T>(
            "allreduce",
            Collective::Allreduce,
            0,
            data,
            r,
        ))
    }

    /// Inclusive prefix reduction: member `r`'s `data` becomes the
    /// reduction of members `0..=r`'s.
    pub fn scan<T: Pod>(&self, data: &mut [T], op: impl Reduction<T>) -> Result<()> {
        let r = reduction(op);
        self.run(rooted_in_place::<T>("scan", Collective::Scan, 0, data, r))
    }

    /// Exclusive prefix reduction: member `r`'s `data` becomes the
    /// reduction of members `0..r`'s; member 0's is left unchanged.
    pub fn exscan<T: Pod>(&self, data: &mut [T], op: impl Reduction<T>) -> Result<()> {
        let r = reduction(op);
        self.run(rooted_in_place::<T>(
            "exscan",
            Collective::Exscan,
            0,
            data,
            r,
        ))
    }

    /// Gathers every member's `block` into `out` of every member, in
    /// member order; `out` holds `size() * block.len()` elements.
    pub fn allgather<T: Pod>(&self, block: &[T], out: &mut [T]) -> Result<()> {
        self.run(blocks::<T>(
            "allgather",
            Collective::Allgather,
            0,
            block,
            out,
            None,
        ))
    }

    /// Gathers every member's `block` into `out` of `root`, in member
    /// order; `out` holds `size() * block.len()` elements at the root and
    /// is not used elsewhere (it may be empty).
    pub fn gather<T: Pod>(&self, root: usize, block: &[T], out: &mut [T]) -> Result<()> {
        self.run(blocks::<T>(
            "gather",
            Collective::Gather,
            root,
            block,
            out,
            None,
        ))
    }

    /// Hands block `j` of `root`'s `data` (`size()` blocks of
    /// `block.len()` elements) to member `j`'s `block`; `data` is not used
    /// elsewhere (it may be empty).
    pub fn scatter<T: Pod>(&self, root: usize, data: &[T], block: &mut [T]) -> Result<()> {
        self.run(scatter_args::<T>("scatter", root, data, block))
    }

    /// Sends block `j` of `data` (`size()` equal blocks) to member `j`,
    /// which finds it as block `r` of `out` (`r` this member's rank).
    pub fn alltoall<T: Pod>(&self, data: &[T], out: &mut [T]) -> Result<()> {
        self.run(all_to_all::<T>(data, out, self.size()))
    }

    /// Reduces every member's `data` (`size()` blocks of `block.len()`
    /// elements) element-wise and hands member `r` block `r` of the result.
    pub fn reduce_scatter<T: Pod>(
        &self,
        data: &[T],
        block: &mut [T],
        op: impl Reduction<T>,
    ) -> Result<()> {
        let r = reduction(op);
        self.run(reduce_scatter_args::<T>("reduce_scatter", data, block, r))
    }
}

/// Non-blocking collectives: each starts the call and returns a request
/// that the progress engine advances; the scope keeps the buffers borrowed
/// until it completes.
impl<'s, 'w> Scope<'s, 'w> {
    fn start(&'s self, team: &Team<'w>, a: Args<'s>) -> Result<Request<'s, 'w>> {
        let op = a.op;
        let e = team.enter(&a)?;
        if let Some(flat) = &team.inner.flat {
            flat.post(team.world, op, e.n)?;
        }
        let r = team.prepare(a, e)?;
        let engine = team.world.engine();
        let id = engine.coll_start(&mut *engine.lock(op)?, r);
        Ok(self.track(id, op, Watch::Request(id)))
    }

    /// Starts [`Team::barrier`].
    pub fn ibarrier(&'s self, team: &Team<'w>) -> Result<Request<'s, 'w>> {
        self.start(team, barrier_args("ibarrier"))
    }

    /// Starts [`Team::broadcast`].
    pub fn ibroadcast<T: Pod>(
        &'s self,
        team: &Team<'w>,
        root: usize,
        data: &'s mut [T],
    ) -> Result<Request<'s, 'w>> {
        let a = rooted_in_place::<T>("ibroadcast", Collective::Broadcast, root, data, None);
        self.start(team, a)
    }

    /// Starts [`Team::reduce`].
    pub fn ireduce<T: Pod>(
        &'s self,
        team: &Team<'w>,
        root: usize,
        data: &'s mut [T],
        op: impl Reduction<T>,
    ) -> Result<Request<'s, 'w>> {
        let r = reduction(op);
        let a = rooted_in_place::<T>("ireduce", Collective::Reduce, root, data, r);
        self.start(team, a)
    }

    /// Starts [`Team::allreduce`].
    pub fn iallreduce<T: Pod>(
        &'s self,
        team: &Team<'w>,
        data: &'s mut [T],
        op: impl Reduction<T>,
    ) -> Result<Request<'s, 'w>> {
        let r = reduction(op);
        let a = rooted_in_place::<T>("iallreduce", Collective::Allreduce, 0, data, r);
        self.start(team, a)
    }

    /// Starts [`Team::scan`].
    pub fn iscan<T: Pod>(
        &'s self,
        team: &Team<'w>,
        data: &'s mut [T],
        op: impl Reduction<T>,
    ) -> Result<Request<'s, 'w>> {
        let r = reduction(op);
        self.start(
            team,
            rooted_in_place::<T>("iscan", Collective::Scan, 0, data, r),
        )
    }

    /// Starts [`Team::exscan`].
    pub fn iexscan<T: Pod>(
        &'s self,
        team: &Team<'w>,
        data: &'s mut [T],
        op: impl Reduction<T>,
    ) -> Result<Request<'s, 'w>> {
        let r = reduction(op);
        self.start(
            team,
            rooted_in_place::<T>("iexscan", Collective::Exscan, 0, data, r),
        )
    }

    /// Starts [`Team::allgather`].
    pub fn iallgather<T: Pod>(
        &'s self,
        team: &Team<'w>,
        block: &'s [T],
        out: &'s mut [T],
    ) -> Result<Request<'s, 'w>> {
        let a = blocks::<T>("iallgather", Collective::Allgather, 0, block, out, None);
        self.start(team, a)
    }

    /// Starts [`Team::gather`].
    pub fn igather<T: Pod>(
        &'s self,
        team: &Team<'w>,
        root: usize,
        block: &'s [T],
        out: &'s mut [T],
    ) -> Result<Request<'s, 'w>> {
        let a = blocks::<T>("igather", Collective::Gather, root, block, out, None);
        self.start(team, a)
    }

    /// Starts [`Team::scatter`].
    pub fn iscatter<T: Pod>(
        &'s self,
        team: &Team<'w>,
        root: usize,
        data: &'s [T],
        block: &'s mut [T],
    ) -> Result<Request<'s, 'w>> {
        self.start(team, scatter_args::<T>("iscatter", root, data, block))
    }

    /// Starts [`Team::alltoall`].
    pub fn ialltoall<T: Pod>(
        &'s self,
        team: &Team<'w>,
        data: &'s [T],
        out: &'s mut [T],
    ) -> Result<Request<'s, 'w>> {
        let mut a = all_to_all::<T>(data, out, team.size());
        a.op = "ialltoall";
        self.start(team, a)
    }

    /// Starts [`Team::reduce_scatter`].
    pub fn ireduce_scatter<T: Pod>(
        &'s self,
        team: &Team<'w>,
        data: &'s [T],
        block: &'s mut [T],
        op: impl Reduction<T>,
    ) -> Result<Request<'s, 'w>> {
        let r = reduction(op);
        self.start(
            team,
            reduce_scatter_args::<T>("ireduce_scatter", data, block, r),
        )
    }
}
