//! Metric series (per-second host rows, minute rollups) keyed by time
//! bucket and subject, and retention: dropping what is older than kept.

use super::*;

impl Store {
    // ---- metrics: seconds (1 h) and minute rollups (retention) -------------
    //
    // Key: the tag SERIES, a time bucket (Unix ms of its start, 8 bytes
    // big-endian; 5 minutes for seconds, an hour for rollups), the subject
    // — `h` and a host's 16 address bytes, or `g` and a hostgroup's name —
    // and the row's time (8 bytes). One subject's rows of a bucket sit
    // together, so its series is a seek per bucket (with time first, an
    // hour of one host read every row of every host: a week of rollups, a
    // hundred million); retention still drops whole buckets at once.

    /// Writes one second's metrics: (subject, value) pairs under the
    /// second's Unix ms. Not synced: losing the last seconds to a crash
    /// costs nothing an operator relies on.
    pub fn seconds_put(&self, second_ms: u64, rows: &[(Subject, Vec<u8>)]) -> Result<()> {
        self.timed_batch(Cf::Seconds, second_ms, rows)
    }

    /// Writes one minute's rollups.
    pub fn rollups_put(&self, minute_ms: u64, rows: &[(Subject, Vec<u8>)]) -> Result<()> {
        self.timed_batch(Cf::Metrics, minute_ms, rows)
    }

    fn timed_batch(&self, cf: Cf, at_ms: u64, rows: &[(Subject, Vec<u8>)]) -> Result<()> {
        let h = self.cf(cf);
        let mut b = WriteBatch::default();
        let mut subject_bytes = Vec::with_capacity(24);
        for (subject, value) in rows {
            subject_bytes.clear();
            subject.write(&mut subject_bytes);
            b.put_cf(h, series_key(cf, at_ms, &subject_bytes), value);
        }
        self.db
            .write_opt(b, &Self::write_options(Durability::Buffered))?;
        Ok(())
    }

    /// One subject's rows of a metric series column family from `from_ms`
    /// to `to_ms` (inclusive), oldest first: for each bucket that holds
    /// rows, a seek to the subject's and a read of its rows alone.
    pub fn series(
        &self,
        cf: Cf,
        subject: &Subject,
        from_ms: u64,
        to_ms: u64,
    ) -> Result<Vec<(u64, Vec<u8>)>> {
        let Some(width) = cf.bucket_ms() else {
            return Ok(Vec::new());
        };
        let mut want = Vec::with_capacity(24);
        subject.write(&mut want);
        let mut out = Vec::new();
        let mut bucket = bucket_start(from_ms, width);
        while bucket <= to_ms {
            let prefix = series_prefix(bucket, &want);
            for kv in self.scan_prefix(cf, &prefix) {
                let (k, v) = kv?;
                if k.len() != prefix.len() + 8 {
                    continue; // a longer name that begins with this one
                }
                let at = u64::from_be_bytes(k[prefix.len()..].try_into().unwrap_or_default());
                if (from_ms..=to_ms).contains(&at) {
                    out.push((at, v.into_vec()));
                }
            }
            // On to the next bucket that holds any rows.
            let Some(after) = bucket.checked_add(width) else {
                break;
            };
            let probe = series_prefix(after, &[]);
            let next = self
                .db
                .iterator_cf(self.cf(cf), IteratorMode::From(&probe, Direction::Forward))
                .next()
                .transpose()?;
            match next.and_then(|(k, _)| series_bucket(&k)) {
                Some(b) => bucket = b,
                None => break,
            }
        }
        Ok(out)
    }

    /// Every row of one time (a second or a minute), with its subject.
    pub fn rows_at(&self, cf: Cf, at_ms: u64) -> Result<Vec<(Subject, Vec<u8>)>> {
        let Some(width) = cf.bucket_ms() else {
            return Ok(Vec::new());
        };
        let prefix = series_prefix(bucket_start(at_ms, width), &[]);
        let mut out = Vec::new();
        for kv in self.scan_prefix(cf, &prefix) {
            let (k, v) = kv?;
            if k.len() < prefix.len() + 9 || k[k.len() - 8..] != at_ms.to_be_bytes() {
                continue;
            }
            if let Some(s) = Subject::read(&k[prefix.len()..k.len() - 8]) {
                out.push((s, v.into_vec()));
            }
        }
        Ok(out)
    }

    // ---- retention ----------------------------------------------------------

    /// Drops every entry of a time-keyed column family older than
    /// `cutoff_ms` (Unix milliseconds). Returns false for column families
    /// that are not time-keyed (nothing is deleted there).
    pub fn prune_before(&self, cf: Cf, cutoff_ms: u64) -> Result<bool> {
        if !cf.time_keyed() {
            return Ok(false);
        }
        let h = self.cf(cf);
        let mut b = WriteBatch::default();
        match cf.bucket_ms() {
            // Whole buckets: a row is kept up to one bucket longer.
            Some(width) => b.delete_range_cf(
                h,
                series_prefix(0, &[]),
                series_prefix(bucket_start(cutoff_ms, width), &[]),
            ),
            None => b.delete_range_cf(h, 0u64.to_be_bytes(), cutoff_ms.to_be_bytes()),
        }
        self.db
            .write_opt(b, &Self::write_options(Durability::Buffered))?;
        Ok(true)
    }

    /// Writes a time-keyed record (used by metrics and incidents, and by
    /// retention tests).
    pub fn put_timed(
        &self,
        cf: Cf,
        at_ms: u64,
        suffix: &[u8],
        value: &[u8],
        d: Durability,
    ) -> Result<()> {
        debug_assert!(cf.time_keyed(), "{} is not time-keyed", cf.name());
        let key = if cf.bucket_ms().is_some() {
            series_key(cf, at_ms, suffix)
        } else {
            let mut key = Vec::with_capacity(8 + suffix.len());
            key.extend_from_slice(&at_ms.to_be_bytes());
            key.extend_from_slice(suffix);
            key
        };
        self.db
            .put_cf_opt(self.cf(cf), key, value, &Self::write_options(d))?;
        Ok(())
    }

    /// Number of entries in a column family (a full scan: for tests and tools).
    pub fn count(&self, cf: Cf) -> Result<usize> {
        let mut n = 0;
        for kv in self.db.iterator_cf(self.cf(cf), IteratorMode::Start) {
            kv?;
            n += 1;
        }
        Ok(n)
    }
}

/// First byte of a metric series key (schema 2); see [`Store::series`].
pub(super) const SERIES: u8 = 1;

/// `SERIES ‖ bucket ‖ subject` — the start of one subject's rows of a
/// bucket (or, with no subject, of the bucket).
pub(super) fn series_prefix(bucket_ms: u64, subject: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(9 + subject.len() + 8);
    k.push(SERIES);
    k.extend_from_slice(&bucket_ms.to_be_bytes());
    k.extend_from_slice(subject);
    k
}

/// The start of the bucket of `width` ms that holds `at_ms`.
pub(super) fn bucket_start(at_ms: u64, width: u64) -> u64 {
    at_ms - at_ms % width
}

pub(super) fn series_key(cf: Cf, at_ms: u64, subject: &[u8]) -> Vec<u8> {
    let width = cf.bucket_ms().unwrap_or(1);
    let mut k = series_prefix(bucket_start(at_ms, width), subject);
    k.extend_from_slice(&at_ms.to_be_bytes());
    k
}

/// The bucket of a series key.
pub(super) fn series_bucket(k: &[u8]) -> Option<u64> {
    match k {
        [SERIES, rest @ ..] if rest.len() >= 8 => {
            Some(u64::from_be_bytes(rest[..8].try_into().ok()?))
        }
        _ => None,
    }
}

/// What a metrics row is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Subject {
    /// A host, by its 16 address bytes (IPv4 mapped).
    Host([u8; 16]),
    /// A hostgroup as a whole, by name.
    Group(String),
}

impl Subject {
    pub(super) fn write(&self, key: &mut Vec<u8>) {
        match self {
            Subject::Host(a) => {
                key.push(b'h');
                key.extend_from_slice(a);
            }
            Subject::Group(name) => {
                key.push(b'g');
                key.extend_from_slice(name.as_bytes());
            }
        }
    }

    pub(super) fn read(k: &[u8]) -> Option<Subject> {
        match k.split_first()? {
            (b'h', a) => Some(Subject::Host(a.try_into().ok()?)),
            (b'g', n) => Some(Subject::Group(String::from_utf8(n.to_vec()).ok()?)),
            _ => None,
        }
    }
}
