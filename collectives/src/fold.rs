//! Folding a team of any size onto a power of two.
//!
//! With `p2` the largest power of two not above `p` and `rem = p - p2`,
//! members `2i` and `2i + 1` for `i < rem` pair up: the odd one hands its
//! data to the even one and sits out the power-of-two part ("extra"), the
//! even one takes new rank `i`. Members from `2 rem` on take new rank
//! `r - rem`. New ranks keep the members' order, so reductions in new-rank
//! order are reductions in member order.

/// The fold of a team of `p` members.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Fold {
    pub(crate) p2: usize,
    pub(crate) rem: usize,
}

impl Fold {
    pub(crate) fn new(p: usize) -> Fold {
        let p2 = if p == 0 {
            0
        } else {
            1 << (usize::BITS - 1 - p.leading_zeros())
        };
        Fold { p2, rem: p - p2 }
    }

    /// Whether `r` sits out the power-of-two part.
    pub(crate) fn is_extra(&self, r: usize) -> bool {
        r < 2 * self.rem && r % 2 == 1
    }

    /// Whether `r` takes the data of the extra member `r + 1`.
    pub(crate) fn has_extra(&self, r: usize) -> bool {
        r < 2 * self.rem && r % 2 == 0
    }

    /// The new rank of a member that is not extra.
    pub(crate) fn new_rank(&self, r: usize) -> usize {
        if r < 2 * self.rem {
            r / 2
        } else {
            r - self.rem
        }
    }

    /// The member holding new rank `nr`, which also speaks for the members
    /// `lo(nr)..lo(nr + 1)`.
    pub(crate) fn lo(&self, nr: usize) -> usize {
        if nr < self.rem {
            2 * nr
        } else {
            nr + self.rem
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_member_is_spoken_for_once() {
        for p in 1..70 {
            let f = Fold::new(p);
            assert!(f.p2.is_power_of_two() && f.p2 <= p && 2 * f.p2 > p);
            assert_eq!(f.lo(f.p2), p);
            for r in 0..p {
                if f.is_extra(r) {
                    assert!(f.has_extra(r - 1));
                } else {
                    let nr = f.new_rank(r);
                    assert_eq!(f.lo(nr), r);
                    assert!((f.lo(nr)..f.lo(nr + 1)).contains(&r));
                }
            }
        }
    }
}
