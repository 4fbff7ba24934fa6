//! Small fixed-size sketches: a HyperLogLog for distinct sources, a
//! space-saving summary for top-k (ports, sources) and a reservoir sample
//! of records (what rules are checked against). None allocates after it is
//! made; all merge, so per-second sketches add up to an incident's.

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
            self.counts[i] = self.counts[i].saturating_add(weight);
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
        self.counts[min] = floor.saturating_add(weight);
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

    /// Keys by the weight they surely have (count less error), heaviest
    /// first; keys that may have none left out.
    pub fn top_sure(&self) -> Vec<(K, u64)> {
        let mut v: Vec<(K, u64)> = (0..self.len)
            .map(|i| (self.keys[i], self.counts[i] - self.errors[i]))
            .filter(|(_, n)| *n > 0)
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

/// One record as the rule checks see it: what a FlowSpec rule can match,
/// and its weight (estimated packets).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Seen {
    pub src: Addr,
    /// The destination's low 64 bits (an IPv4 address whole, an IPv6
    /// interface id): where in a prefix the record went. 0: not known.
    pub dst_low: u64,
    /// Estimated packets the record stands for.
    pub weight: u64,
    pub src_port: u16,
    pub dst_port: u16,
    /// The IP length, when the record is one packet (a sample, a captured
    /// packet); 0 when it is a flow's average, which matches no packet.
    pub length: u16,
    pub protocol: u8,
    pub tcp_flags: u8,
    /// `levee_collectors::record::flags` of the record.
    pub flags: u8,
    /// ICMP/ICMPv6 type (0 for other protocols).
    pub icmp_type: u8,
}

/// Records kept per reservoir.
pub const RESERVOIR: usize = 256;

/// A uniform random sample of up to [`RESERVOIR`] records (Vitter's
/// algorithm R), so that a rule can be held against the traffic it is
/// meant for: the share of the attack's packets it matches, with the
/// exact semantics of the rule, not a product of marginal shares. Fixed
/// size, no allocation; the random numbers come from the caller, so a
/// replay gives the same sample every time.
#[derive(Clone)]
pub struct Reservoir {
    items: [Seen; RESERVOIR],
    len: usize,
    /// Records offered so far.
    offered: u64,
}

impl std::fmt::Debug for Reservoir {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Reservoir({} of {})", self.len, self.offered)
    }
}

impl Default for Reservoir {
    fn default() -> Self {
        Reservoir {
            items: [Seen::default(); RESERVOIR],
            len: 0,
            offered: 0,
        }
    }
}

impl Reservoir {
    /// Offers a record; `rnd` is a uniformly random 64-bit number.
    #[inline]
    pub fn offer(&mut self, s: Seen, rnd: u64) {
        self.offered += 1;
        if self.len < RESERVOIR {
            self.items[self.len] = s;
            self.len += 1;
            return;
        }
        let j = ((u128::from(rnd) * u128::from(self.offered)) >> 64) as usize;
        if j < RESERVOIR {
            self.items[j] = s;
        }
    }

    pub fn items(&self) -> &[Seen] {
        &self.items[..self.len]
    }

    pub fn offered(&self) -> u64 {
        self.offered
    }

    /// Combines two samples into one of the union: each side contributes
    /// in proportion to the records it was drawn from, its items taken at
    /// evenly spaced positions.
    pub fn merge(&mut self, o: &Reservoir) {
        if o.offered == 0 {
            return;
        }
        if self.len + o.len <= RESERVOIR {
            self.items[self.len..self.len + o.len].copy_from_slice(o.items());
            self.len += o.len;
            self.offered += o.offered;
            return;
        }
        let total = self.offered + o.offered;
        let mine = ((RESERVOIR as u64 * self.offered + total / 2) / total) as usize;
        let mine = mine.clamp(RESERVOIR.saturating_sub(o.len), self.len.min(RESERVOIR));
        let theirs = (RESERVOIR - mine).min(o.len);
        let mut out = [Seen::default(); RESERVOIR];
        let spaced = |from: &[Seen], n: usize, into: &mut [Seen]| {
            for (k, slot) in into.iter_mut().take(n).enumerate() {
                *slot = from[k * from.len() / n.max(1)];
            }
        };
        spaced(self.items(), mine, &mut out[..mine]);
        spaced(o.items(), theirs, &mut out[mine..mine + theirs]);
        self.items = out;
        self.len = mine + theirs;
        self.offered = total;
    }

    /// The share of the sampled packets that `pick` selects (None when
    /// the sample is empty).
    pub fn share(&self, pick: impl Fn(&Seen) -> bool) -> Option<f64> {
        let total: u64 = self.items().iter().map(|s| s.weight).sum();
        if total == 0 {
            return None;
        }
        let matched: u64 = self
            .items()
            .iter()
            .filter(|s| pick(s))
            .map(|s| s.weight)
            .sum();
        Some(matched as f64 / total as f64)
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

    #[test]
    fn a_reservoir_is_a_fair_sample_and_merges_in_proportion() {
        let mut rng = 0x1234_5678_u64;
        let mut next = || {
            rng = rng.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            rng
        };
        let seen = |port: u16| Seen {
            weight: 1,
            src_port: port,
            ..Seen::default()
        };
        // 10,000 records, 30 % of them on port 53.
        let mut r = Reservoir::default();
        for i in 0..10_000u32 {
            r.offer(seen(if i % 10 < 3 { 53 } else { 80 }), next());
        }
        assert_eq!(r.items().len(), RESERVOIR);
        assert_eq!(r.offered(), 10_000);
        let dns = r.share(|s| s.src_port == 53).unwrap();
        assert!((0.15..0.45).contains(&dns), "{dns}");
        // Merged with a sample of 30,000 records all on port 123: a
        // quarter of the result stands for the first.
        let mut other = Reservoir::default();
        for _ in 0..30_000 {
            other.offer(seen(123), next());
        }
        r.merge(&other);
        assert_eq!(r.offered(), 40_000);
        let ntp = r.share(|s| s.src_port == 123).unwrap();
        assert!((ntp - 0.75).abs() < 0.02, "{ntp}");
        // Small samples are simply put together.
        let (mut a, mut b) = (Reservoir::default(), Reservoir::default());
        a.offer(seen(1), 0);
        b.offer(seen(2), 0);
        a.merge(&b);
        assert_eq!(a.items().len(), 2);
        assert_eq!(Reservoir::default().share(|_| true), None);
    }
}
