//! The audit chain's key spaces: entries by sequence number (`audit`)
//! and the personal data behind audit pseudonyms (`identities`).

use super::*;

impl Store {
    // ---- audit: key = sequence number, u64 big-endian ----------------------

    /// Stores audit entry `seq`; durable when this returns.
    pub fn audit_put(&self, seq: u64, entry: &[u8]) -> Result<()> {
        self.db.put_cf_opt(
            self.cf(Cf::Audit),
            seq.to_be_bytes(),
            entry,
            &Self::write_options(Durability::Sync),
        )?;
        Ok(())
    }

    /// The entry with the highest sequence number.
    pub fn audit_last(&self) -> Result<Option<(u64, Vec<u8>)>> {
        let mut it = self.db.iterator_cf(self.cf(Cf::Audit), IteratorMode::End);
        match it.next() {
            None => Ok(None),
            Some(kv) => {
                let (k, v) = kv?;
                Ok(Some((self.audit_seq(&k)?, v.into_vec())))
            }
        }
    }

    /// Every entry from `from_seq` on, in sequence order.
    pub fn audit_scan(&self, from_seq: u64) -> impl Iterator<Item = Result<(u64, Vec<u8>)>> + '_ {
        let start = from_seq.to_be_bytes();
        self.db
            .iterator_cf(
                self.cf(Cf::Audit),
                IteratorMode::From(&start, Direction::Forward),
            )
            .map(move |kv| {
                let (k, v) = kv?;
                Ok((self.audit_seq(&k)?, v.into_vec()))
            })
    }

    /// The entries with `after < seq < before`, oldest or newest first.
    /// Reads lazily: the caller decides how many it takes.
    pub fn audit_range(
        &self,
        after: u64,
        before: u64,
        newest_first: bool,
    ) -> Box<dyn Iterator<Item = Result<(u64, Vec<u8>)>> + '_> {
        if before <= after.saturating_add(1) {
            return Box::new(std::iter::empty());
        }
        let (start, direction) = if newest_first {
            ((before - 1).to_be_bytes(), Direction::Reverse)
        } else {
            ((after + 1).to_be_bytes(), Direction::Forward)
        };
        let it = self
            .db
            .iterator_cf(self.cf(Cf::Audit), IteratorMode::From(&start, direction))
            .map(move |kv| {
                let (k, v) = kv?;
                Ok((self.audit_seq(&k)?, v.into_vec()))
            })
            .take_while(move |r| match r {
                Ok((seq, _)) => after < *seq && *seq < before,
                Err(_) => true,
            });
        Box::new(it)
    }

    fn audit_seq(&self, key: &[u8]) -> Result<u64> {
        let bytes: [u8; 8] = key.try_into().map_err(|_| StoreError::Corrupt {
            path: db_path(&self.data_dir),
            what: format!("audit key of {} bytes", key.len()),
        })?;
        Ok(u64::from_be_bytes(bytes))
    }

    // ---- identities: personal data behind audit pseudonyms -----------------
    //
    // `n/<name>` → pseudonym, `p/<pseudonym>` → the identity record. Both go
    // in one batch, so a name never points at a missing record.

    pub fn identity_by_name(&self, name: &str) -> Result<Option<String>> {
        let v = self
            .db
            .get_cf(self.cf(Cf::Identities), identity_name_key(name))?;
        Ok(v.map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    pub fn identity_record(&self, pseudonym: &str) -> Result<Option<Vec<u8>>> {
        Ok(self
            .db
            .get_cf(self.cf(Cf::Identities), identity_record_key(pseudonym))?)
    }

    pub fn identity_put(&self, name: &str, pseudonym: &str, record: &[u8]) -> Result<()> {
        let cf = self.cf(Cf::Identities);
        let mut b = WriteBatch::default();
        b.put_cf(cf, identity_name_key(name), pseudonym.as_bytes());
        b.put_cf(cf, identity_record_key(pseudonym), record);
        self.db
            .write_opt(b, &Self::write_options(Durability::Sync))?;
        Ok(())
    }

    /// Removes a person's identifiers; returns whether there were any.
    pub fn identity_delete(&self, name: &str) -> Result<bool> {
        let Some(pseudonym) = self.identity_by_name(name)? else {
            return Ok(false);
        };
        let cf = self.cf(Cf::Identities);
        let mut b = WriteBatch::default();
        b.delete_cf(cf, identity_name_key(name));
        b.delete_cf(cf, identity_record_key(&pseudonym));
        self.db
            .write_opt(b, &Self::write_options(Durability::Sync))?;
        // Deleted data lingers in SST files until compaction; compact now so
        // the name is really gone from disk.
        self.db.compact_range_cf(cf, None::<&[u8]>, None::<&[u8]>);
        Ok(true)
    }
}

pub(super) fn identity_name_key(name: &str) -> Vec<u8> {
    [b"n/".as_slice(), name.as_bytes()].concat()
}

pub(super) fn identity_record_key(pseudonym: &str) -> Vec<u8> {
    [b"p/".as_slice(), pseudonym.as_bytes()].concat()
}
