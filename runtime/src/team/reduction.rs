//! Reductions of a team's collectives: built-in operations and
//! user-defined ones, and what a call keeps of them.

use std::marker::PhantomData;

use bytemuck::Pod;
use weft_collectives::op::{Combiner, Element, ReduceOp};

/// A reduction operation on elements of type `T`: a built-in [`ReduceOp`]
/// (for the [`Element`] types) or a [`UserOp`].
pub trait Reduction<T> {
    /// How to combine elements, or why this operation does not apply to
    /// `T`.
    fn combiner(&self) -> Result<Combiner, String>;
    /// A number naming the operation, the same on every PE.
    fn code(&self) -> u32;
}

impl<T: Element> Reduction<T> for ReduceOp {
    fn combiner(&self) -> Result<Combiner, String> {
        Combiner::builtin::<T>(*self).map_err(|e| e.to_string())
    }

    fn code(&self) -> u32 {
        (T::KIND as u32) << 8 | (*self as u32 + 1)
    }
}

/// A user-defined reduction on `T`: `f(a, b)` must be associative; say
/// whether it is commutative (algorithms that combine out of member order
/// are then avoided). Every PE must pass the same operation.
///
/// ```
/// // 2x2 matrix product: associative, not commutative.
/// let matmul = weft::UserOp::new(false, |a: &[i64; 4], b: &[i64; 4]| {
///     [a[0] * b[0] + a[1] * b[2], a[0] * b[1] + a[1] * b[3],
///      a[2] * b[0] + a[3] * b[2], a[2] * b[1] + a[3] * b[3]]
/// });
/// ```
pub struct UserOp<T> {
    combiner: Combiner,
    commutative: bool,
    _elem: PhantomData<fn(T) -> T>,
}

impl<T: Pod + Send + Sync> UserOp<T> {
    /// The operation `f`.
    pub fn new(commutative: bool, f: impl Fn(&T, &T) -> T + Send + Sync + 'static) -> UserOp<T> {
        UserOp {
            combiner: Combiner::user(commutative, f),
            commutative,
            _elem: PhantomData,
        }
    }
}

impl<T> Reduction<T> for &UserOp<T> {
    fn combiner(&self) -> Result<Combiner, String> {
        Ok(self.combiner.clone())
    }

    fn code(&self) -> u32 {
        0xffff_0000 | u32::from(self.commutative)
    }
}

/// What a call keeps of its reduction `op`: its combiner and its code,
/// or why it does not apply.
pub(super) fn reduction<T>(op: impl Reduction<T>) -> Option<Result<(Combiner, u32), String>> {
    Some(op.combiner().map(|c| (c, op.code())))
}

/// The combiner of a call's `reduction`, if it has a valid one.
pub(super) fn combiner(reduction: &Option<Result<(Combiner, u32), String>>) -> Option<&Combiner> {
    match reduction {
        Some(Ok((c, _))) => Some(c),
        _ => None,
    }
}
