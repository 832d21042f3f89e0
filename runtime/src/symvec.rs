//! Symmetric arrays: the same array at the same offset on every PE.

use std::marker::PhantomData;

use bytemuck::Pod;
use weft_transport::AtomicOp;

use crate::amo::{AtomicInt, Cmp};
use crate::error::{Cause, Result};
use crate::progress::Watch;
use crate::World;

/// An array of `len` elements of `T` that exists on every PE, made by
/// [`World::alloc`]. Operations name the target PE and an element index;
/// every one checks both and returns an error naming the rank, the operation
/// and the cause.
///
/// Dropping a `SymVec` does not free it (freeing is collective): call
/// [`SymVec::free`] on every PE, or let the heap go at finalize.
pub struct SymVec<'w, T> {
    pub(crate) world: &'w World,
    pub(crate) offset: usize,
    pub(crate) len: usize,
    pub(crate) _elem: PhantomData<T>,
}

impl<T: Pod> SymVec<'_, T> {
    const ELEM: usize = std::mem::size_of::<T>();

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Byte offset of the array in every PE's symmetric heap.
    pub fn heap_offset(&self) -> usize {
        self.offset
    }

    /// Byte offset of elements `index..index + count`, checked against the array.
    #[inline]
    fn span(&self, op: &'static str, index: usize, count: usize) -> Result<usize> {
        match index.checked_add(count) {
            Some(end) if end <= self.len => Ok(self.offset + index * Self::ELEM),
            end => Err(self.world.error(
                op,
                Cause::OutOfBounds {
                    start: index,
                    end: end.unwrap_or(usize::MAX),
                    len: self.len,
                },
            )),
        }
    }

    /// Copies `src` into elements `index..` of the array on `pe`
    /// (`shmem_put`). Returns when `src` may be reused; the data is
    /// delivered by [`World::quiet`] or [`World::barrier_all`].
    ///
    /// ```no_run
    /// let world = weft::init()?;
    /// let a = world.alloc::<f64>(8)?;
    /// a.put((world.rank() + 1) % world.size(), 0, &[1.0, 2.0])?;
    /// world.barrier_all()?;
    /// # Ok::<(), weft::Error>(())
    /// ```
    #[inline]
    pub fn put(&self, pe: usize, index: usize, src: &[T]) -> Result<()> {
        self.put_as("put", pe, index, src)
    }

    /// Like [`SymVec::put`], without waiting for `src` to be copied on
    /// transports that could defer it (`shmem_put_nbi`): completed by
    /// [`World::quiet`]. The borrow of `src` ends on return, so transports
    /// copy it before returning.
    #[inline]
    pub fn put_nbi(&self, pe: usize, index: usize, src: &[T]) -> Result<()> {
        self.put_as("put_nbi", pe, index, src)
    }

    #[inline]
    fn put_as(&self, op: &'static str, pe: usize, index: usize, src: &[T]) -> Result<()> {
        let lane = self.world.lane(op, pe)?;
        let at = self.span(op, index, src.len())?;
        lane.put(pe, at, bytemuck::cast_slice(src))
            .map_err(|e| self.world.error(op, e.into()))
    }

    /// Copies elements `index..index + dst.len()` of the array on `pe` into
    /// `dst` (`shmem_get`); returns when they are there.
    #[inline]
    pub fn get(&self, pe: usize, index: usize, dst: &mut [T]) -> Result<()> {
        const OP: &str = "get";
        let lane = self.world.lane(OP, pe)?;
        let at = self.span(OP, index, dst.len())?;
        lane.get_blocking(pe, at, bytemuck::cast_slice_mut(dst))
            .map_err(|e| self.world.error(OP, e.into()))
    }

    /// Starts copying `count` elements at `index` of the array on `pe` into
    /// this PE's own copy of the symmetric array `dst` at `dst_index`
    /// (`shmem_get_nbi` into symmetric memory); they are in place after
    /// [`World::quiet`], and must not be touched before.
    pub fn get_nbi(
        &self,
        pe: usize,
        index: usize,
        dst: &SymVec<'_, T>,
        dst_index: usize,
        count: usize,
    ) -> Result<()> {
        const OP: &str = "get_nbi";
        let lane = self.world.lane(OP, pe)?;
        let from = self.span(OP, index, count)?;
        let to = dst.span(OP, dst_index, count)?;
        let (base, heap_len) = self.world.local_heap();
        assert!(
            to + count * Self::ELEM <= heap_len,
            "a symmetric array lies inside the heap"
        );
        // SAFETY: `to..to + count * ELEM` lies inside this PE's heap (checked
        // by `span` and above), which stays mapped as long as the world lives;
        // the program must not touch those elements before quiet, as in
        // OpenSHMEM.
        unsafe { lane.get(pe, from, base.add(to), count * Self::ELEM) }
            .map_err(|e| self.world.error(OP, e.into()))
    }

    /// Strided put (`shmem_iput`): element `i` of `count` goes from
    /// `src[i * src_stride]` to element `index + i * dst_stride` on `pe`.
    /// Strides are in elements and must be at least 1.
    pub fn iput(
        &self,
        pe: usize,
        index: usize,
        dst_stride: usize,
        src: &[T],
        src_stride: usize,
        count: usize,
    ) -> Result<()> {
        const OP: &str = "iput";
        let lane = self.world.lane(OP, pe)?;
        let (last_dst, last_src) =
            self.strided(OP, index, dst_stride, src.len(), src_stride, count)?;
        if count == 0 {
            return Ok(());
        }
        self.span(OP, last_dst, 1)?;
        debug_assert!(last_src < src.len());
        for i in 0..count {
            let at = self.offset + (index + i * dst_stride) * Self::ELEM;
            lane.put(pe, at, bytemuck::bytes_of(&src[i * src_stride]))
                .map_err(|e| self.world.error(OP, e.into()))?;
        }
        Ok(())
    }

    /// Strided get (`shmem_iget`): element `index + i * src_stride` on `pe`
    /// goes to `dst[i * dst_stride]`, for `i` in `0..count`.
    pub fn iget(
        &self,
        pe: usize,
        index: usize,
        src_stride: usize,
        dst: &mut [T],
        dst_stride: usize,
        count: usize,
    ) -> Result<()> {
        const OP: &str = "iget";
        let lane = self.world.lane(OP, pe)?;
        let (last_src, _) = self.strided(OP, index, src_stride, dst.len(), dst_stride, count)?;
        if count == 0 {
            return Ok(());
        }
        self.span(OP, last_src, 1)?;
        for i in 0..count {
            let at = self.offset + (index + i * src_stride) * Self::ELEM;
            let d = bytemuck::bytes_of_mut(&mut dst[i * dst_stride]);
            // SAFETY: `d` is a live exclusive element of `dst`, kept until
            // the quiet below.
            unsafe { lane.get(pe, at, d.as_mut_ptr(), d.len()) }
                .map_err(|e| self.world.error(OP, e.into()))?;
        }
        lane.quiet().map_err(|e| self.world.error(OP, e.into()))
    }

    /// Checks strides and the local buffer for a strided operation; returns
    /// the last remote index and the last local index.
    fn strided(
        &self,
        op: &'static str,
        index: usize,
        remote_stride: usize,
        local_len: usize,
        local_stride: usize,
        count: usize,
    ) -> Result<(usize, usize)> {
        if remote_stride == 0 || local_stride == 0 {
            return Err(self
                .world
                .error(op, Cause::BadStride("strides must be at least 1".into())));
        }
        if count == 0 {
            return Ok((index, 0));
        }
        let steps = count - 1;
        let last_remote = steps
            .checked_mul(remote_stride)
            .and_then(|d| d.checked_add(index));
        let last_local = steps.checked_mul(local_stride);
        match (last_remote, last_local) {
            (Some(r), Some(l)) if l < local_len => Ok((r, l)),
            (Some(_), Some(l)) => Err(self.world.error(
                op,
                Cause::BadStride(format!(
                    "{count} elements at stride {local_stride} need a local buffer of {} \
                     elements, it has {local_len}",
                    l + 1
                )),
            )),
            _ => Err(self
                .world
                .error(op, Cause::BadStride("stride times count overflows".into()))),
        }
    }

    /// Copies elements `index..` of this PE's own copy of the array into `dst`.
    pub fn read_local(&self, index: usize, dst: &mut [T]) -> Result<()> {
        self.get(self.world.rank(), index, dst)
    }

    /// Writes `src` into this PE's own copy of the array at `index`.
    pub fn write_local(&self, index: usize, src: &[T]) -> Result<()> {
        self.put(self.world.rank(), index, src)
    }

    /// This PE's own copy of the whole array.
    pub fn to_vec_local(&self) -> Result<Vec<T>> {
        let mut v = vec![T::zeroed(); self.len];
        self.read_local(0, &mut v)?;
        Ok(v)
    }

    /// Frees the array on every PE (`shmem_free`). Collective.
    pub fn free(self) -> Result<()> {
        self.world.free_bytes(self.offset, Self::ELEM, self.len)
    }
}

/// Atomic operations (OpenSHMEM 1.5 AMOs) on 32- and 64-bit integers.
impl<T: AtomicInt> SymVec<'_, T> {
    #[inline]
    fn amo(&self, op: &'static str, pe: usize, index: usize, amo: AtomicOp) -> Result<T> {
        let lane = self.world.atomic_lane(op, pe)?;
        let at = self.span(op, index, 1)?;
        lane.atomic(pe, at, T::WIDTH, amo)
            .map(T::from_bits)
            .map_err(|e| self.world.error(op, e.into()))
    }

    /// Reads element `index` on `pe` atomically (`shmem_atomic_fetch`).
    pub fn fetch(&self, pe: usize, index: usize) -> Result<T> {
        self.amo("fetch", pe, index, AtomicOp::Fetch)
    }

    /// Writes element `index` on `pe` atomically (`shmem_atomic_set`).
    pub fn set(&self, pe: usize, index: usize, value: T) -> Result<()> {
        self.amo("set", pe, index, AtomicOp::Swap(value.to_bits()))
            .map(drop)
    }

    /// Replaces element `index` on `pe`, returning the old value (`shmem_atomic_swap`).
    pub fn swap(&self, pe: usize, index: usize, value: T) -> Result<T> {
        self.amo("swap", pe, index, AtomicOp::Swap(value.to_bits()))
    }

    /// Replaces element `index` on `pe` with `value` if it equals `cond`;
    /// returns the old value (`shmem_atomic_compare_swap`).
    pub fn compare_swap(&self, pe: usize, index: usize, cond: T, value: T) -> Result<T> {
        let op = AtomicOp::CompareSwap {
            compare: cond.to_bits(),
            value: value.to_bits(),
        };
        self.amo("compare_swap", pe, index, op)
    }

    /// Adds `value` to element `index` on `pe` (wrapping), returning the old
    /// value (`shmem_atomic_fetch_add`).
    ///
    /// ```no_run
    /// let world = weft::init()?;
    /// let counter = world.alloc::<u64>(1)?;
    /// let ticket = counter.fetch_add(0, 0, 1)?;
    /// # Ok::<(), weft::Error>(())
    /// ```
    pub fn fetch_add(&self, pe: usize, index: usize, value: T) -> Result<T> {
        self.amo("fetch_add", pe, index, AtomicOp::FetchAdd(value.to_bits()))
    }

    /// Adds `value` to element `index` on `pe` (`shmem_atomic_add`).
    pub fn add(&self, pe: usize, index: usize, value: T) -> Result<()> {
        self.amo("add", pe, index, AtomicOp::FetchAdd(value.to_bits()))
            .map(drop)
    }

    /// Increments element `index` on `pe`, returning the old value (`shmem_atomic_fetch_inc`).
    pub fn fetch_inc(&self, pe: usize, index: usize) -> Result<T> {
        self.amo("fetch_inc", pe, index, AtomicOp::FetchAdd(T::ONE.to_bits()))
    }

    /// Increments element `index` on `pe` (`shmem_atomic_inc`).
    pub fn inc(&self, pe: usize, index: usize) -> Result<()> {
        self.amo("inc", pe, index, AtomicOp::FetchAdd(T::ONE.to_bits()))
            .map(drop)
    }

    /// Bitwise-ands `value` into element `index` on `pe`, returning the old
    /// value (`shmem_atomic_fetch_and`).
    pub fn fetch_and(&self, pe: usize, index: usize, value: T) -> Result<T> {
        self.amo("fetch_and", pe, index, AtomicOp::FetchAnd(value.to_bits()))
    }

    /// Bitwise-ors `value` into element `index` on `pe`, returning the old
    /// value (`shmem_atomic_fetch_or`).
    pub fn fetch_or(&self, pe: usize, index: usize, value: T) -> Result<T> {
        self.amo("fetch_or", pe, index, AtomicOp::FetchOr(value.to_bits()))
    }

    /// Bitwise-xors `value` into element `index` on `pe`, returning the old
    /// value (`shmem_atomic_fetch_xor`).
    pub fn fetch_xor(&self, pe: usize, index: usize, value: T) -> Result<T> {
        self.amo("fetch_xor", pe, index, AtomicOp::FetchXor(value.to_bits()))
    }

    /// Whether this PE's element `index` satisfies `element cmp value` now
    /// (`shmem_test`).
    pub fn test(&self, index: usize, cmp: Cmp, value: T) -> Result<bool> {
        let at = self.span("test", index, 1)?;
        Ok(cmp.holds(T::from_bits(self.world.load_local(at, T::WIDTH)), value))
    }

    /// Waits until this PE's element `index` satisfies `element cmp value`,
    /// typically set by another PE's put or atomic (`shmem_wait_until`).
    /// Drives progress and backs off from spinning to sleeping while it
    /// waits; fails if a PE exits meanwhile.
    ///
    /// ```no_run
    /// let world = weft::init()?;
    /// let flag = world.alloc::<u64>(1)?;
    /// if world.rank() == 0 {
    ///     flag.set(1, 0, 1)?;
    /// } else if world.rank() == 1 {
    ///     flag.wait_until(0, weft::Cmp::Eq, 1)?;
    /// }
    /// # Ok::<(), weft::Error>(())
    /// ```
    pub fn wait_until(&self, index: usize, cmp: Cmp, value: T) -> Result<()> {
        const OP: &str = "wait_until";
        self.span(OP, index, 1)?;
        self.world
            .engine()
            .wait_memory(OP, Watch::All, |_| match self.test(index, cmp, value) {
                Ok(true) => Some(Ok(())),
                Ok(false) => None,
                Err(e) => Some(Err(e.cause)),
            })
    }
}
