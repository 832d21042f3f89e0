//! Reduction operations: the built-in ones on every integer and float
//! type, and user-defined ones on any plain-old-data type.
//!
//! A reduction step always names its left and right operand (see
//! [`crate::schedule::Local::Reduce`]): algorithms fix the order in which
//! every element is combined, so every member gets bit-identical results,
//! floating point included.

use std::fmt;
use std::sync::Arc;

use bytemuck::Pod;

/// A built-in reduction operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReduceOp {
    /// `a + b` (wrapping for integers).
    Sum,
    /// `a * b` (wrapping for integers).
    Prod,
    /// The smaller (for floats, IEEE `minNum`: a NaN loses to a number).
    Min,
    /// The larger (for floats, IEEE `maxNum`).
    Max,
    /// Bitwise and (integers only).
    BitAnd,
    /// Bitwise or (integers only).
    BitOr,
    /// Bitwise exclusive or (integers only).
    BitXor,
    /// 1 if both are non-zero, else 0.
    LogicalAnd,
    /// 1 if either is non-zero, else 0.
    LogicalOr,
}

impl ReduceOp {
    /// Every built-in operation.
    pub const ALL: [ReduceOp; 9] = [
        ReduceOp::Sum,
        ReduceOp::Prod,
        ReduceOp::Min,
        ReduceOp::Max,
        ReduceOp::BitAnd,
        ReduceOp::BitOr,
        ReduceOp::BitXor,
        ReduceOp::LogicalAnd,
        ReduceOp::LogicalOr,
    ];

    /// Whether the operation is defined on floating-point elements.
    pub fn applies_to_floats(self) -> bool {
        !matches!(self, ReduceOp::BitAnd | ReduceOp::BitOr | ReduceOp::BitXor)
    }
}

impl fmt::Display for ReduceOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            ReduceOp::Sum => "sum",
            ReduceOp::Prod => "prod",
            ReduceOp::Min => "min",
            ReduceOp::Max => "max",
            ReduceOp::BitAnd => "bitwise and",
            ReduceOp::BitOr => "bitwise or",
            ReduceOp::BitXor => "bitwise xor",
            ReduceOp::LogicalAnd => "logical and",
            ReduceOp::LogicalOr => "logical or",
        };
        f.write_str(name)
    }
}

/// The element types the built-in operations know.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum ElemKind {
    I8,
    I16,
    I32,
    I64,
    I128,
    Isize,
    U8,
    U16,
    U32,
    U64,
    U128,
    Usize,
    F32,
    F64,
}

impl ElemKind {
    /// Whether this is a floating-point type.
    pub fn is_float(self) -> bool {
        matches!(self, ElemKind::F32 | ElemKind::F64)
    }
}

/// An element type the built-in operations reduce.
pub trait Element: Pod + Send + Sync {
    /// Which type it is.
    const KIND: ElemKind;
}

/// Applies a built-in operation to typed slices: `acc[i] = f(l[i], r[i])`
/// where the left operand is `acc` unless `from_left`.
trait Arith: Copy {
    fn apply(op: ReduceOp, a: Self, b: Self) -> Self;
}

macro_rules! int_elements {
    ($($t:ty => $k:ident),*) => {$(
        impl Element for $t {
            const KIND: ElemKind = ElemKind::$k;
        }
        impl Arith for $t {
            #[inline(always)]
            fn apply(op: ReduceOp, a: $t, b: $t) -> $t {
                match op {
                    ReduceOp::Sum => a.wrapping_add(b),
                    ReduceOp::Prod => a.wrapping_mul(b),
                    ReduceOp::Min => a.min(b),
                    ReduceOp::Max => a.max(b),
                    ReduceOp::BitAnd => a & b,
                    ReduceOp::BitOr => a | b,
                    ReduceOp::BitXor => a ^ b,
                    ReduceOp::LogicalAnd => <$t>::from(a != 0 && b != 0),
                    ReduceOp::LogicalOr => <$t>::from(a != 0 || b != 0),
                }
            }
        }
    )*};
}

int_elements!(i8 => I8, i16 => I16, i32 => I32, i64 => I64, i128 => I128, isize => Isize,
    u8 => U8, u16 => U16, u32 => U32, u64 => U64, u128 => U128, usize => Usize);

macro_rules! float_elements {
    ($($t:ty => $k:ident),*) => {$(
        impl Element for $t {
            const KIND: ElemKind = ElemKind::$k;
        }
        impl Arith for $t {
            #[inline(always)]
            fn apply(op: ReduceOp, a: $t, b: $t) -> $t {
                match op {
                    ReduceOp::Sum => a + b,
                    ReduceOp::Prod => a * b,
                    ReduceOp::Min => a.min(b),
                    ReduceOp::Max => a.max(b),
                    ReduceOp::LogicalAnd => <$t>::from(u8::from(a != 0.0 && b != 0.0)),
                    ReduceOp::LogicalOr => <$t>::from(u8::from(a != 0.0 || b != 0.0)),
                    // Refused when the combiner is made.
                    ReduceOp::BitAnd | ReduceOp::BitOr | ReduceOp::BitXor => a,
                }
            }
        }
    )*};
}

float_elements!(f32 => F32, f64 => F64);

/// `acc[i] = f(acc[i], other[i])`, or `f(other[i], acc[i])` when
/// `other_left`: the loop the compiler vectorizes.
#[inline(always)]
fn zip_apply<T: Copy>(acc: &mut [T], other: &[T], other_left: bool, f: impl Fn(T, T) -> T) {
    if other_left {
        acc.iter_mut().zip(other).for_each(|(x, y)| *x = f(*y, *x));
    } else {
        acc.iter_mut().zip(other).for_each(|(x, y)| *x = f(*x, *y));
    }
}

/// [`zip_apply`] compiled for AVX2: twice the width of the SSE2 that
/// x86-64 code may assume. Element by element, each result is the same
/// IEEE operation on the same operands as in the narrower loop, so results
/// stay bit-identical between PEs whether their CPUs have AVX2 or not. (A
/// sum of two 256 KiB vectors of f64 in cache: 22 µs with SSE2, 12 µs with
/// AVX2, AVX-512 no faster.)
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn zip_apply_avx2<T: Copy>(acc: &mut [T], other: &[T], other_left: bool, f: impl Fn(T, T) -> T) {
    zip_apply(acc, other, other_left, f);
}

/// [`zip_apply`] with the widest vectors this CPU has.
#[inline(always)]
fn elementwise<T: Copy>(acc: &mut [T], other: &[T], other_left: bool, f: impl Fn(T, T) -> T) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, checked just above.
        unsafe { zip_apply_avx2(acc, other, other_left, f) };
        return;
    }
    zip_apply(acc, other, other_left, f);
}

/// One loop per operation, so that the compiler vectorizes each.
fn combine_typed<T: Arith + Pod>(op: ReduceOp, acc: &mut [u8], other: &[u8], other_left: bool) {
    macro_rules! each {
        ($f:expr) => {{
            let f = $f;
            match (
                bytemuck::try_cast_slice_mut::<u8, T>(acc),
                bytemuck::try_cast_slice::<u8, T>(other),
            ) {
                (Ok(a), Ok(b)) => elementwise(a, b, other_left, f),
                _ => {
                    let n = std::mem::size_of::<T>();
                    for (x, y) in acc.chunks_exact_mut(n).zip(other.chunks_exact(n)) {
                        let (l, r): (T, T) = (
                            bytemuck::pod_read_unaligned(x),
                            bytemuck::pod_read_unaligned(y),
                        );
                        let v = if other_left { f(r, l) } else { f(l, r) };
                        x.copy_from_slice(bytemuck::bytes_of(&v));
                    }
                }
            }
        }};
    }
    match op {
        ReduceOp::Sum => each!(|a, b| T::apply(ReduceOp::Sum, a, b)),
        ReduceOp::Prod => each!(|a, b| T::apply(ReduceOp::Prod, a, b)),
        ReduceOp::Min => each!(|a, b| T::apply(ReduceOp::Min, a, b)),
        ReduceOp::Max => each!(|a, b| T::apply(ReduceOp::Max, a, b)),
        ReduceOp::BitAnd => each!(|a, b| T::apply(ReduceOp::BitAnd, a, b)),
        ReduceOp::BitOr => each!(|a, b| T::apply(ReduceOp::BitOr, a, b)),
        ReduceOp::BitXor => each!(|a, b| T::apply(ReduceOp::BitXor, a, b)),
        ReduceOp::LogicalAnd => each!(|a, b| T::apply(ReduceOp::LogicalAnd, a, b)),
        ReduceOp::LogicalOr => each!(|a, b| T::apply(ReduceOp::LogicalOr, a, b)),
    }
}

type UserFn = dyn Fn(&mut [u8], &[u8], bool) + Send + Sync;

/// How a reduction combines two byte ranges of whole elements.
#[derive(Clone)]
pub enum Combiner {
    /// A built-in operation on a built-in element type.
    Builtin {
        /// The element type.
        kind: ElemKind,
        /// The operation.
        op: ReduceOp,
    },
    /// A user-defined operation.
    User {
        /// `f(acc, other, other_left)`: `acc = other ⊕ acc` if `other_left`,
        /// else `acc = acc ⊕ other`, element by element.
        f: Arc<UserFn>,
        /// Size of one element.
        elem: usize,
        /// Whether `a ⊕ b = b ⊕ a`; a non-commutative operation is only
        /// run by algorithms that combine in member order.
        commutative: bool,
    },
}

impl fmt::Debug for Combiner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Combiner::Builtin { kind, op } => write!(f, "{op} on {kind:?}"),
            Combiner::User {
                elem, commutative, ..
            } => write!(
                f,
                "user operation on {elem}-byte elements (commutative: {commutative})"
            ),
        }
    }
}

/// A built-in operation that does not apply to the element type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NotDefined {
    /// The operation.
    pub op: ReduceOp,
    /// The element type.
    pub kind: ElemKind,
}

impl fmt::Display for NotDefined {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} is not defined on {:?}", self.op, self.kind)
    }
}

impl Combiner {
    /// The built-in `op` on elements of type `T`.
    ///
    /// ```
    /// use weft_collectives::op::{Combiner, ReduceOp};
    /// assert!(Combiner::builtin::<f64>(ReduceOp::Sum).is_ok());
    /// assert!(Combiner::builtin::<f64>(ReduceOp::BitXor).is_err());
    /// ```
    pub fn builtin<T: Element>(op: ReduceOp) -> Result<Combiner, NotDefined> {
        if T::KIND.is_float() && !op.applies_to_floats() {
            return Err(NotDefined { op, kind: T::KIND });
        }
        Ok(Combiner::Builtin { kind: T::KIND, op })
    }

    /// A user-defined operation `f(left, right)` on elements of type `T`.
    ///
    /// ```
    /// use weft_collectives::op::Combiner;
    /// // 2x2 matrix product: associative, not commutative.
    /// let c = Combiner::user(false, |a: &[i64; 4], b: &[i64; 4]| {
    ///     [a[0] * b[0] + a[1] * b[2], a[0] * b[1] + a[1] * b[3],
    ///      a[2] * b[0] + a[3] * b[2], a[2] * b[1] + a[3] * b[3]]
    /// });
    /// assert!(!c.commutative());
    /// ```
    pub fn user<T: Pod + Send + Sync>(
        commutative: bool,
        f: impl Fn(&T, &T) -> T + Send + Sync + 'static,
    ) -> Combiner {
        let elem = std::mem::size_of::<T>();
        let apply = move |acc: &mut [u8], other: &[u8], other_left: bool| {
            for (x, y) in acc.chunks_exact_mut(elem).zip(other.chunks_exact(elem)) {
                let (l, r): (T, T) = (
                    bytemuck::pod_read_unaligned(x),
                    bytemuck::pod_read_unaligned(y),
                );
                let v = if other_left { f(&r, &l) } else { f(&l, &r) };
                x.copy_from_slice(bytemuck::bytes_of(&v));
            }
        };
        Combiner::User {
            f: Arc::new(apply),
            elem,
            commutative,
        }
    }

    /// Whether the operation is commutative (every built-in one is).
    pub fn commutative(&self) -> bool {
        match self {
            Combiner::Builtin { .. } => true,
            Combiner::User { commutative, .. } => *commutative,
        }
    }

    /// Combines element by element: `acc = other ⊕ acc` if `other_left`,
    /// else `acc = acc ⊕ other`. Both hold the same number of whole
    /// elements.
    pub fn combine(&self, acc: &mut [u8], other: &[u8], other_left: bool) {
        debug_assert_eq!(acc.len(), other.len());
        match self {
            Combiner::User { f, .. } => f(acc, other, other_left),
            Combiner::Builtin { kind, op } => {
                let op = *op;
                match kind {
                    ElemKind::I8 => combine_typed::<i8>(op, acc, other, other_left),
                    ElemKind::I16 => combine_typed::<i16>(op, acc, other, other_left),
                    ElemKind::I32 => combine_typed::<i32>(op, acc, other, other_left),
                    ElemKind::I64 => combine_typed::<i64>(op, acc, other, other_left),
                    ElemKind::I128 => combine_typed::<i128>(op, acc, other, other_left),
                    ElemKind::Isize => combine_typed::<isize>(op, acc, other, other_left),
                    ElemKind::U8 => combine_typed::<u8>(op, acc, other, other_left),
                    ElemKind::U16 => combine_typed::<u16>(op, acc, other, other_left),
                    ElemKind::U32 => combine_typed::<u32>(op, acc, other, other_left),
                    ElemKind::U64 => combine_typed::<u64>(op, acc, other, other_left),
                    ElemKind::U128 => combine_typed::<u128>(op, acc, other, other_left),
                    ElemKind::Usize => combine_typed::<usize>(op, acc, other, other_left),
                    ElemKind::F32 => combine_typed::<f32>(op, acc, other, other_left),
                    ElemKind::F64 => combine_typed::<f64>(op, acc, other, other_left),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run<T: Element>(op: ReduceOp, l: &[T], r: &[T]) -> Vec<T> {
        let c = Combiner::builtin::<T>(op).unwrap();
        let mut acc = bytemuck::cast_slice::<T, u8>(r).to_vec();
        c.combine(&mut acc, bytemuck::cast_slice(l), true);
        acc.chunks_exact(std::mem::size_of::<T>())
            .map(bytemuck::pod_read_unaligned)
            .collect()
    }

    #[test]
    fn builtins_compute_what_they_say() {
        assert_eq!(run(ReduceOp::Sum, &[1i32, -2], &[3, 4]), [4, 2]);
        assert_eq!(run(ReduceOp::Prod, &[u8::MAX], &[2]), [254]);
        assert_eq!(
            run(ReduceOp::Min, &[1.5f64, -0.5], &[1.0, 2.0]),
            [1.0, -0.5]
        );
        assert_eq!(run(ReduceOp::Max, &[1u64, 9], &[3, 4]), [3, 9]);
        assert_eq!(run(ReduceOp::BitAnd, &[0b1100u16], &[0b1010]), [0b1000]);
        assert_eq!(run(ReduceOp::BitOr, &[0b1100i64], &[0b1010]), [0b1110]);
        assert_eq!(run(ReduceOp::BitXor, &[0b1100u128], &[0b1010]), [0b0110]);
        assert_eq!(run(ReduceOp::LogicalAnd, &[2i8, 0], &[3, 5]), [1, 0]);
        assert_eq!(
            run(ReduceOp::LogicalOr, &[0.0f32, 0.0], &[0.5, 0.0]),
            [1.0, 0.0]
        );
    }

    #[test]
    fn unaligned_bytes_take_the_slow_path_with_the_same_result() {
        let c = Combiner::builtin::<u64>(ReduceOp::Sum).unwrap();
        let mut acc = [0u8; 17];
        let mut other = [0u8; 17];
        acc[1..9].copy_from_slice(&5u64.to_ne_bytes());
        other[1..9].copy_from_slice(&7u64.to_ne_bytes());
        c.combine(&mut acc[1..9], &other[1..9], false);
        assert_eq!(acc[1..9], 12u64.to_ne_bytes());
    }

    /// The widest loop this CPU runs and the narrow one give the same
    /// bits, for the awkward values of floating point as well.
    #[test]
    fn vector_width_does_not_change_a_bit() {
        let odd = [
            0.0,
            -0.0,
            1.5,
            -2.25,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::MIN_POSITIVE / 4.0,
            f64::MAX,
            1e-300,
            -7.0,
            3.0,
        ];
        // Every pair of the values, long enough for the vector loops.
        let left: Vec<f64> = (0..odd.len() * odd.len())
            .map(|i| odd[i / odd.len()])
            .collect();
        let right: Vec<f64> = (0..odd.len() * odd.len())
            .map(|i| odd[i % odd.len()])
            .collect();
        let ops = [
            ReduceOp::Sum,
            ReduceOp::Prod,
            ReduceOp::Min,
            ReduceOp::Max,
            ReduceOp::LogicalAnd,
            ReduceOp::LogicalOr,
        ];
        let (l32, r32): (Vec<f32>, Vec<f32>) = left
            .iter()
            .zip(&right)
            .map(|(&a, &b)| (a as f32, b as f32))
            .unzip();
        // Integers from the same values (saturated), with their own operations.
        let (li, ri): (Vec<i32>, Vec<i32>) = left
            .iter()
            .zip(&right)
            .map(|(&a, &b)| (a as i32, b as i32))
            .unzip();
        let bitwise = [ReduceOp::BitAnd, ReduceOp::BitOr, ReduceOp::BitXor];
        for other_left in [false, true] {
            for op in ops {
                both_widths(op, &left, &right, other_left);
                both_widths(op, &l32, &r32, other_left);
            }
            for op in ops.into_iter().chain(bitwise) {
                both_widths(op, &li, &ri, other_left);
            }
        }
    }

    /// Applies `op` by the narrow loop and by the widest one, and compares
    /// the results' bytes.
    fn both_widths<T: Arith + Pod + std::fmt::Debug>(
        op: ReduceOp,
        left: &[T],
        right: &[T],
        other_left: bool,
    ) {
        let f = |a, b| T::apply(op, a, b);
        let (mut narrow, mut wide) = (left.to_vec(), left.to_vec());
        zip_apply(&mut narrow, right, other_left, f);
        elementwise(&mut wide, right, other_left, f);
        assert_eq!(
            bytemuck::cast_slice::<T, u8>(&narrow),
            bytemuck::cast_slice::<T, u8>(&wide),
            "{op:?} on {}, other_left {other_left}",
            std::any::type_name::<T>()
        );
    }

    #[test]
    fn user_operations_keep_operand_order() {
        let c = Combiner::user(false, |a: &u32, b: &u32| a * 10 + b);
        let mut acc = 2u32.to_ne_bytes().to_vec();
        c.combine(&mut acc, &1u32.to_ne_bytes(), true);
        assert_eq!(acc, 12u32.to_ne_bytes());
        c.combine(&mut acc, &3u32.to_ne_bytes(), false);
        assert_eq!(acc, 123u32.to_ne_bytes());
    }
}
