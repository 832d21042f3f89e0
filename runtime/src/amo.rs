//! Integer types that support atomic operations, and comparisons for
//! point-to-point synchronization.

use bytemuck::Pod;
use weft_transport::AtomicWidth;

/// An integer type on which Weft performs remote atomic operations: 32- and
/// 64-bit, signed and unsigned.
pub trait AtomicInt: Pod + PartialOrd + std::fmt::Debug {
    /// Operand width on the wire.
    const WIDTH: AtomicWidth;
    /// One, for increments.
    const ONE: Self;
    /// The value's bits, zero-extended to 64.
    fn to_bits(self) -> u64;
    /// The value whose bits are the low `WIDTH` bits of `bits`.
    fn from_bits(bits: u64) -> Self;
}

macro_rules! atomic_int {
    ($t:ty, $u:ty, $w:ident) => {
        impl AtomicInt for $t {
            const WIDTH: AtomicWidth = AtomicWidth::$w;
            const ONE: Self = 1;
            fn to_bits(self) -> u64 {
                self as $u as u64
            }
            fn from_bits(bits: u64) -> Self {
                bits as $u as $t
            }
        }
    };
}

atomic_int!(u32, u32, W32);
atomic_int!(i32, u32, W32);
atomic_int!(u64, u64, W64);
atomic_int!(i64, u64, W64);

/// A comparison for [`crate::SymVec::wait_until`] and [`crate::SymVec::test`]:
/// `element OP value`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cmp {
    /// Equal.
    Eq,
    /// Not equal.
    Ne,
    /// Greater than.
    Gt,
    /// Greater than or equal.
    Ge,
    /// Less than.
    Lt,
    /// Less than or equal.
    Le,
}

impl Cmp {
    /// Whether `lhs OP rhs` holds.
    ///
    /// ```
    /// assert!(weft::Cmp::Lt.holds(-1i32, 0));
    /// ```
    pub fn holds<T: PartialOrd>(self, lhs: T, rhs: T) -> bool {
        match self {
            Cmp::Eq => lhs == rhs,
            Cmp::Ne => lhs != rhs,
            Cmp::Gt => lhs > rhs,
            Cmp::Ge => lhs >= rhs,
            Cmp::Lt => lhs < rhs,
            Cmp::Le => lhs <= rhs,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_round_trip_with_sign() {
        assert_eq!((-1i32).to_bits(), 0xffff_ffff);
        assert_eq!(i32::from_bits(0xffff_ffff), -1);
        assert_eq!(i32::from_bits(0x1_0000_0005), 5);
        assert_eq!(i64::from_bits((-7i64).to_bits()), -7);
        assert_eq!(u64::from_bits(u64::MAX), u64::MAX);
    }
}
