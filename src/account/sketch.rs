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

/// HyperLogLog with 2^10 registers: about 3% standard error, 1 KiB,
/// inline (a host's details are one allocation: no pointer to chase).
#[derive(Clone)]
pub struct Hll {
    registers: [u8; Hll::M],
}

impl std::fmt::Debug for Hll {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Hll(~{:.0})", self.estimate())
    }
}

impl Default for Hll {
    fn default() -> Self {
        Hll {
            registers: [0; Hll::M],
        }
    }
}

impl Hll {
    const P: u32 = 10;
    const M: usize = 1 << Hll::P;

    /// The register a hash lands in (to prefetch it).
    #[inline]
    pub fn register(&self, h: u64) -> &u8 {
        &self.registers[(h >> (64 - Hll::P)) as usize]
    }

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
/// space-saving): counts are over-estimates by at most `error`. Keys,
/// counts and errors are kept apart, so that finding a key reads only the
/// keys (one cache line for sixteen ports).
#[derive(Debug, Clone)]
pub struct SpaceSaving<K: Copy + PartialEq, const N: usize> {
    keys: [K; N],
    counts: [u64; N],
    errors: [u64; N],
    len: usize,
}

impl<K: Copy + PartialEq + Default, const N: usize> Default for SpaceSaving<K, N> {
    fn default() -> Self {
        SpaceSaving {
            keys: [K::default(); N],
            counts: [0; N],
            errors: [0; N],
            len: 0,
        }
    }
}

impl<K: Copy + PartialEq + Default, const N: usize> SpaceSaving<K, N> {
    #[inline]
    pub fn add(&mut self, key: K, weight: u64) {
        if let Some(i) = self.keys[..self.len].iter().position(|k| *k == key) {
            self.counts[i] += weight;
            return;
        }
        if self.len < N {
            self.keys[self.len] = key;
            self.counts[self.len] = weight;
            self.errors[self.len] = 0;
            self.len += 1;
            return;
        }
        // Replace the lightest: it may have been this key all along.
        let mut min = 0;
        for i in 1..N {
            if self.counts[i] < self.counts[min] {
                min = i;
            }
        }
        let floor = self.counts[min];
        self.keys[min] = key;
        self.counts[min] = floor + weight;
        self.errors[min] = floor;
    }

    pub fn merge(&mut self, other: &Self) {
        for i in 0..other.len {
            self.add(other.keys[i], other.counts[i]);
        }
    }

    /// Keys by estimated weight, heaviest first.
    pub fn top(&self) -> Vec<(K, u64)> {
        let mut v: Vec<(K, u64)> = (0..self.len)
            .map(|i| (self.keys[i], self.counts[i]))
            .collect();
        v.sort_by_key(|i| std::cmp::Reverse(i.1));
        v
    }

    /// How much a key's count may exceed its true weight.
    pub fn error(&self, key: &K) -> Option<u64> {
        let i = self.keys[..self.len].iter().position(|k| k == key)?;
        Some(self.errors[i])
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
        // The count is over by at most its error (the truth: 1000 × 10, and
        // the one time i was 53).
        assert!(top[0].1 - s.error(&53).unwrap() <= 10_001);
    }
}
