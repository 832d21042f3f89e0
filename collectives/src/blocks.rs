//! Splitting `count` elements into `k` nearly equal blocks.

/// `count` elements of `elem` bytes cut into `k` blocks; the first
/// `count % k` blocks have one element more than the others.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Blocks {
    count: usize,
    k: usize,
    elem: usize,
}

impl Blocks {
    pub(crate) fn new(count: usize, k: usize, elem: usize) -> Blocks {
        Blocks {
            count,
            k: k.max(1),
            elem,
        }
    }

    /// First byte of block `i` (`i == k` gives the total length).
    pub(crate) fn start(&self, i: usize) -> usize {
        let (q, r) = (self.count / self.k, self.count % self.k);
        (i * q + i.min(r)) * self.elem
    }

    /// Bytes of blocks `from..to`.
    pub(crate) fn span(&self, from: usize, to: usize) -> (usize, usize) {
        let s = self.start(from);
        (s, self.start(to) - s)
    }
}

/// The lowest set bit of `v`, or `none` for zero.
pub(crate) fn lowbit_or(v: usize, none: usize) -> usize {
    if v == 0 {
        none
    } else {
        1 << v.trailing_zeros()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_cover_everything_once() {
        for count in [0, 1, 7, 64, 100] {
            for k in 1..20 {
                let b = Blocks::new(count, k, 4);
                assert_eq!(b.start(0), 0);
                assert_eq!(b.start(k), count * 4);
                let lens: Vec<usize> = (0..k).map(|i| b.span(i, i + 1).1).collect();
                let (min, max) = (lens.iter().min().unwrap(), lens.iter().max().unwrap());
                assert!(max - min <= 4, "count {count}, k {k}: {lens:?}");
            }
        }
    }
}
