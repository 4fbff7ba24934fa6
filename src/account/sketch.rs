//! Small fixed-size sketches: a HyperLogLog for distinct sources and a
//! space-saving summary for top-k (ports, sources). Neither allocates after
//! it is made; both merge, so per-second sketches add up to an incident's.

use levee_collectors::Addr;

/// 64-bit mix of an address (wyhash-style multiply-fold of its two halves).
#[inline]
pub fn hash_addr(a: &Addr) -> u64 {
    let hi = u64::from_be_bytes([
        a.0[0], a.0[1], a.0[2], a.0[3], a.0[4], a.0[5], a.0[6], a.0[7],
    ]);
    let lo = u64::from_be_bytes([
        a.0[8], a.0[9], a.0[10], a.0[11], a.0[12], a.0[13], a.0[14], a.0[15],
    ]);
    let m = |x: u64, y: u64| {
        let r = u128::from(x) * u128::from(y);
        (r as u64) ^ ((r >> 64) as u64)
    };
    m(hi ^ 0xa076_1d64_78bd_642f, lo ^ 0xe703_7ed1_a0b4_28db) ^ m(lo, 0x8ebc_6af0_9c88_c6e3)
}

/// HyperLogLog with 2^10 registers: about 3% standard error, 1 KiB.
#[derive(Clone)]
pub struct Hll {
    registers: Box<[u8; Hll::M]>,
}

impl std::fmt::Debug for Hll {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Hll(~{:.0})", self.estimate())
    }
}

impl Default for Hll {
    fn default() -> Self {
        Hll {
            registers: Box::new([0; Hll::M]),
        }
    }
}

impl Hll {
    const P: u32 = 10;
    const M: usize = 1 << Hll::P;

    #[inline]
    pub fn insert_hash(&mut self, h: u64) {
        let idx = (h >> (64 - Hll::P)) as usize;
        let rest = h << Hll::P | 1 << (Hll::P - 1);
        let rank = rest.leading_zeros() as u8 + 1;
        let r = &mut self.registers[idx];
        if rank > *r {
            *r = rank;
        }
    }

    pub fn merge(&mut self, other: &Hll) {
        for (a, b) in self.registers.iter_mut().zip(other.registers.iter()) {
            *a = (*a).max(*b);
        }
    }

    /// The estimated number of distinct items (Flajolet et al., with the
    /// linear-counting correction for small sets).
    pub fn estimate(&self) -> f64 {
        let m = Hll::M as f64;
        let alpha = 0.7213 / (1.0 + 1.079 / m);
        let (sum, zeros) = self.registers.iter().fold((0.0f64, 0usize), |(s, z), &r| {
            (s + 2f64.powi(-i32::from(r)), z + usize::from(r == 0))
        });
        let raw = alpha * m * m / sum;
        if raw <= 2.5 * m && zeros > 0 {
            m * (m / zeros as f64).ln()
        } else {
            raw
        }
    }
}

/// The `N` heaviest keys of a weighted stream (Metwally et al.'s
/// space-saving): counts are over-estimates by at most `error`.
#[derive(Debug, Clone)]
pub struct SpaceSaving<K: Copy + PartialEq, const N: usize> {
    items: [(K, u64, u64); N],
    len: usize,
}

impl<K: Copy + PartialEq + Default, const N: usize> Default for SpaceSaving<K, N> {
    fn default() -> Self {
        SpaceSaving {
            items: [(K::default(), 0, 0); N],
            len: 0,
        }
    }
}

impl<K: Copy + PartialEq + Default, const N: usize> SpaceSaving<K, N> {
    #[inline]
    pub fn add(&mut self, key: K, weight: u64) {
        if let Some(item) = self.items[..self.len].iter_mut().find(|i| i.0 == key) {
            item.1 += weight;
            return;
        }
        if self.len < N {
            self.items[self.len] = (key, weight, 0);
            self.len += 1;
            return;
        }
        // Replace the lightest: it may have been this key all along.
        if let Some(min) = self.items.iter_mut().min_by_key(|i| i.1) {
            let floor = min.1;
            *min = (key, floor + weight, floor);
        }
    }

    pub fn merge(&mut self, other: &Self) {
        for &(k, c, _) in &other.items[..other.len] {
            self.add(k, c);
        }
    }

    /// Keys by estimated weight, heaviest first.
    pub fn top(&self) -> Vec<(K, u64)> {
        let mut v: Vec<(K, u64)> = self.items[..self.len].iter().map(|i| (i.0, i.1)).collect();
        v.sort_by_key(|i| std::cmp::Reverse(i.1));
        v
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hll_estimates_within_a_few_percent() {
        for n in [10u32, 300, 1000, 50_000] {
            let mut h = Hll::default();
            for i in 0..n {
                h.insert_hash(hash_addr(&Addr::v4(i.to_be_bytes())));
                h.insert_hash(hash_addr(&Addr::v4(i.to_be_bytes()))); // duplicates do not count
            }
            let e = h.estimate();
            let err = (e - f64::from(n)).abs() / f64::from(n);
            assert!(err < 0.1, "{n}: estimated {e}");
        }
        let (mut a, mut b) = (Hll::default(), Hll::default());
        for i in 0..500u32 {
            a.insert_hash(hash_addr(&Addr::v4(i.to_be_bytes())));
            b.insert_hash(hash_addr(&Addr::v4((i + 250).to_be_bytes())));
        }
        a.merge(&b);
        assert!((a.estimate() - 750.0).abs() < 75.0, "{}", a.estimate());
    }

    #[test]
    fn space_saving_keeps_the_heavy_hitters() {
        let mut s: SpaceSaving<u16, 4> = SpaceSaving::default();
        for i in 0..1000u16 {
            s.add(53, 10);
            s.add(i, 1);
        }
        let top = s.top();
        assert_eq!(top[0].0, 53);
        assert!(top[0].1 >= 10_000);
    }
}
