//! Saved baselines: a host's by its address, a prefix aggregate's by
//! `p/` ‖ address ‖ length.

use super::*;

impl Store {
    // ---- baselines: key = host address (16 bytes), or `p/` ‖ prefix address
    // (16 bytes) ‖ length for a prefix aggregate's (19 bytes)

    pub fn baselines_put(&self, rows: &[([u8; 16], Vec<u8>)]) -> Result<()> {
        let h = self.cf(Cf::Baselines);
        let mut b = WriteBatch::default();
        for (addr, value) in rows {
            b.put_cf(h, addr, value);
        }
        self.db
            .write_opt(b, &Self::write_options(Durability::Buffered))?;
        Ok(())
    }

    /// Replaces every saved baseline with `rows` (hosts) and `prefixes`
    /// (prefix aggregates: address, length), in one batch: a host the
    /// detector has forgotten is forgotten here too (a spray of addresses
    /// saved once must not come back at every start).
    pub fn baselines_replace(
        &self,
        rows: &[([u8; 16], Vec<u8>)],
        prefixes: &[PrefixRow],
    ) -> Result<()> {
        let h = self.cf(Cf::Baselines);
        let mut b = WriteBatch::default();
        b.delete_range_cf(h, &[0u8; 16][..], &[0xffu8; 20][..]);
        for (addr, value) in rows {
            b.put_cf(h, addr, value);
        }
        for (addr, len, value) in prefixes {
            b.put_cf(h, prefix_baseline_key(addr, *len), value);
        }
        self.db
            .write_opt(b, &Self::write_options(Durability::Buffered))?;
        Ok(())
    }

    /// Every saved prefix baseline.
    pub fn prefix_baselines(&self) -> Result<Vec<PrefixRow>> {
        let mut out = Vec::new();
        for kv in self.db.prefix_iterator_cf(self.cf(Cf::Baselines), b"p/") {
            let (k, v) = kv?;
            if !k.starts_with(b"p/") {
                break;
            }
            if let (Some(a), Some(&len)) = (k.get(2..18), k.get(18)) {
                if k.len() == 19 {
                    out.push((a.try_into().unwrap_or([0; 16]), len, v.into_vec()));
                }
            }
        }
        Ok(out)
    }

    pub fn baselines(&self) -> Result<Vec<([u8; 16], Vec<u8>)>> {
        let mut out = Vec::new();
        for kv in self
            .db
            .iterator_cf(self.cf(Cf::Baselines), IteratorMode::Start)
        {
            let (k, v) = kv?;
            if let Ok(a) = <[u8; 16]>::try_from(&k[..]) {
                out.push((a, v.into_vec()));
            }
        }
        Ok(out)
    }
}

/// A prefix aggregate's saved baseline: its network address, its length
/// and the value.
pub type PrefixRow = ([u8; 16], u8, Vec<u8>);

pub(super) fn prefix_baseline_key(addr: &[u8; 16], len: u8) -> Vec<u8> {
    [b"p/".as_slice(), addr, &[len]].concat()
}
