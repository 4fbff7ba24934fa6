//! The store: levee's one embedded RocksDB database under `data_dir/db`.
//!
//! This module owns everything RocksDB: opening (and refusing to open a
//! database another levee holds, or a data dir it cannot write), the column
//! families, the key layout of each, the schema version, durability, and
//! retention pruning. No other module names a RocksDB type or builds a key;
//! they call the typed methods here, so a RocksDB upgrade touches one file.
//!
//! Column families, one per kind of state (see ARCHITECTURE.md for keys):
//! `meta`, `metrics`, `incidents`, `mitigations`, `audit`, `identities`,
//! `users`, `sessions`, `api_keys`, `alert_queue`.
//!
//! Durability: writes of [`Durability::Sync`] (the audit chain, identities,
//! incidents, mitigations) are on disk when the call returns — the WAL is
//! fsynced. Metrics use [`Durability::Buffered`] and may lose the last
//! moments before a crash, which costs nothing an operator relies on.

use std::path::{Path, PathBuf};

use rocksdb::{
    ColumnFamilyDescriptor, DBWithThreadMode, Direction, IteratorMode, Options, SingleThreaded,
    WriteBatch, WriteOptions,
};

/// The layout version this build reads and writes. Bump it with a migration
/// in [`Store::migrate`] whenever a key or value layout changes.
pub const SCHEMA_VERSION: u32 = 2;

type Db = DBWithThreadMode<SingleThreaded>;

/// The kinds of state, each a column family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cf {
    Meta,
    Metrics,
    Incidents,
    Mitigations,
    Audit,
    Identities,
    Users,
    Sessions,
    ApiKeys,
    AlertQueue,
    /// Per-second host metrics (kept an hour).
    Seconds,
    Baselines,
}

impl Cf {
    pub const ALL: [Cf; 12] = [
        Cf::Meta,
        Cf::Metrics,
        Cf::Incidents,
        Cf::Mitigations,
        Cf::Audit,
        Cf::Identities,
        Cf::Users,
        Cf::Sessions,
        Cf::ApiKeys,
        Cf::AlertQueue,
        Cf::Seconds,
        Cf::Baselines,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Cf::Meta => "meta",
            Cf::Metrics => "metrics",
            Cf::Incidents => "incidents",
            Cf::Mitigations => "mitigations",
            Cf::Audit => "audit",
            Cf::Identities => "identities",
            Cf::Users => "users",
            Cf::Sessions => "sessions",
            Cf::ApiKeys => "api_keys",
            Cf::AlertQueue => "alert_queue",
            Cf::Seconds => "seconds",
            Cf::Baselines => "baselines",
        }
    }

    /// Column families whose keys begin with time, so that retention can
    /// drop a time range at once: an 8-byte big-endian Unix time in
    /// milliseconds, or (the metric series) a [`SERIES`] tag and a bucket.
    fn time_keyed(self) -> bool {
        matches!(self, Cf::Metrics | Cf::Incidents | Cf::Seconds)
    }

    /// The time buckets of a metric series column family (see
    /// [`Store::series`]), in milliseconds.
    fn bucket_ms(self) -> Option<u64> {
        match self {
            Cf::Seconds => Some(300_000),
            Cf::Metrics => Some(3_600_000),
            _ => None,
        }
    }
}

/// What [`Store::incidents_put`] writes for one incident.
#[derive(Debug, Clone)]
pub struct IncidentWrite {
    pub started_ms: u64,
    pub id: String,
    /// The incident without its timeline (JSON).
    pub record: Vec<u8>,
    /// Timeline segments to (re)write: index and points (JSON array).
    pub segments: Vec<(u32, Vec<u8>)>,
}

/// A key and its value, as RocksDB hands them out.
type Entry = (Box<[u8]>, Box<[u8]>);

/// An incident as stored: its record, and its timeline segments in order.
pub type StoredIncident = (Vec<u8>, Vec<Vec<u8>>);

fn incident_key(started_ms: u64, id: &str) -> Vec<u8> {
    let mut key = started_ms.to_be_bytes().to_vec();
    key.extend_from_slice(id.as_bytes());
    key
}

/// First byte of a metric series key (schema 2); see [`Store::series`].
const SERIES: u8 = 1;

/// `SERIES ‖ bucket ‖ subject` — the start of one subject's rows of a
/// bucket (or, with no subject, of the bucket).
fn series_prefix(bucket_ms: u64, subject: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(9 + subject.len() + 8);
    k.push(SERIES);
    k.extend_from_slice(&bucket_ms.to_be_bytes());
    k.extend_from_slice(subject);
    k
}

/// The start of the bucket of `width` ms that holds `at_ms`.
fn bucket_start(at_ms: u64, width: u64) -> u64 {
    at_ms - at_ms % width
}

fn series_key(cf: Cf, at_ms: u64, subject: &[u8]) -> Vec<u8> {
    let width = cf.bucket_ms().unwrap_or(1);
    let mut k = series_prefix(bucket_start(at_ms, width), subject);
    k.extend_from_slice(&at_ms.to_be_bytes());
    k
}

/// The bucket of a series key.
fn series_bucket(k: &[u8]) -> Option<u64> {
    match k {
        [SERIES, rest @ ..] if rest.len() >= 8 => {
            Some(u64::from_be_bytes(rest[..8].try_into().ok()?))
        }
        _ => None,
    }
}

/// Whether a write must be on disk before the call returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// fsync the write-ahead log before returning.
    Sync,
    /// Leave it to RocksDB's background flushes.
    Buffered,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error(
        "data dir {path} is in use by another levee{holder} (RocksDB lock held); stop it first"
    )]
    Locked { path: PathBuf, holder: String },
    #[error("data dir {path} is not writable: {source}")]
    NotWritable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no store at {path}: levee has not run with this data dir yet")]
    Missing { path: PathBuf },
    #[error(
        "the store at {path} has schema version {found}, newer than this levee understands \
         ({supported}); run a newer levee or restore a backup"
    )]
    NewerSchema {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error("the store at {path} is damaged: {what}")]
    Corrupt { path: PathBuf, what: String },
    #[error("RocksDB: {0}")]
    Rocks(String),
}

impl From<rocksdb::Error> for StoreError {
    fn from(e: rocksdb::Error) -> Self {
        StoreError::Rocks(e.into_string())
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// What a metrics row is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Subject {
    /// A host, by its 16 address bytes (IPv4 mapped).
    Host([u8; 16]),
    /// A hostgroup as a whole, by name.
    Group(String),
}

impl Subject {
    fn write(&self, key: &mut Vec<u8>) {
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

    fn read(k: &[u8]) -> Option<Subject> {
        match k.split_first()? {
            (b'h', a) => Some(Subject::Host(a.try_into().ok()?)),
            (b'g', n) => Some(Subject::Group(String::from_utf8(n.to_vec()).ok()?)),
            _ => None,
        }
    }
}

/// An open store. Cheap to share behind an `Arc`; RocksDB does its own locking.
pub struct Store {
    db: Db,
    data_dir: PathBuf,
    read_only: bool,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("data_dir", &self.data_dir)
            .field("read_only", &self.read_only)
            .finish()
    }
}

const PID_FILE: &str = "levee.pid";
const KEY_SCHEMA: &[u8] = b"schema_version";

fn db_path(data_dir: &Path) -> PathBuf {
    data_dir.join("db")
}

fn options() -> Options {
    let mut o = Options::default();
    o.create_if_missing(true);
    o.create_missing_column_families(true);
    // Bounded housekeeping: a collector box runs for years.
    o.set_keep_log_file_num(5);
    o.set_max_total_wal_size(256 << 20);
    o.set_max_background_jobs(2);
    o
}

impl Store {
    /// Opens (creating when absent) the store under `data_dir` for writing.
    /// Fails clearly when another process holds it or the directory cannot be
    /// written.
    pub fn open(data_dir: &Path) -> Result<Store> {
        std::fs::create_dir_all(data_dir).map_err(|source| StoreError::NotWritable {
            path: data_dir.to_owned(),
            source,
        })?;
        probe_writable(data_dir)?;
        let path = db_path(data_dir);
        let cfs = Cf::ALL.map(|cf| ColumnFamilyDescriptor::new(cf.name(), Options::default()));
        let db = Db::open_cf_descriptors(&options(), &path, cfs).map_err(|e| {
            let msg = e.into_string();
            if msg.contains("lock") || msg.contains("LOCK") {
                StoreError::Locked {
                    path: data_dir.to_owned(),
                    holder: read_holder(data_dir),
                }
            } else if msg.contains("Corruption") {
                StoreError::Corrupt {
                    path: path.clone(),
                    what: msg,
                }
            } else {
                StoreError::Rocks(msg)
            }
        })?;
        let store = Store {
            db,
            data_dir: data_dir.to_owned(),
            read_only: false,
        };
        store.migrate()?;
        // Only the lock holder gets here, so the pid file names the holder.
        let _ = std::fs::write(data_dir.join(PID_FILE), format!("{}\n", std::process::id()));
        Ok(store)
    }

    /// Opens an existing store for reading only. This works while a running
    /// levee holds the store (it sees what was written up to this moment), so
    /// `levee audit export` needs no downtime.
    pub fn open_read_only(data_dir: &Path) -> Result<Store> {
        let path = db_path(data_dir);
        if !path.join("CURRENT").exists() {
            return Err(StoreError::Missing { path });
        }
        let mut o = Options::default();
        o.create_if_missing(false);
        let cfs = Cf::ALL.map(|cf| ColumnFamilyDescriptor::new(cf.name(), Options::default()));
        let db = Db::open_cf_descriptors_read_only(&o, &path, cfs, false)?;
        let store = Store {
            db,
            data_dir: data_dir.to_owned(),
            read_only: true,
        };
        let found = store.schema_version()?;
        if found > SCHEMA_VERSION {
            return Err(StoreError::NewerSchema {
                path,
                found,
                supported: SCHEMA_VERSION,
            });
        }
        Ok(store)
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    fn cf(&self, cf: Cf) -> &rocksdb::ColumnFamily {
        // Every Cf is created at open, so the handle always exists.
        self.db
            .cf_handle(cf.name())
            .unwrap_or_else(|| unreachable!("column family {} opened with the store", cf.name()))
    }

    /// The entries of `cf` whose keys begin with `prefix`, in key order.
    fn scan_prefix<'a>(
        &'a self,
        cf: Cf,
        prefix: &'a [u8],
    ) -> impl Iterator<Item = Result<Entry>> + 'a {
        self.db
            .iterator_cf(self.cf(cf), IteratorMode::From(prefix, Direction::Forward))
            .map(|kv| kv.map_err(StoreError::from))
            .take_while(move |kv| kv.as_ref().map_or(true, |(k, _)| k.starts_with(prefix)))
    }

    fn write_options(d: Durability) -> WriteOptions {
        let mut w = WriteOptions::default();
        w.set_sync(d == Durability::Sync);
        w
    }

    /// The schema version recorded in `meta` (0 for a store with none yet).
    pub fn schema_version(&self) -> Result<u32> {
        match self.db.get_cf(self.cf(Cf::Meta), KEY_SCHEMA)? {
            None => Ok(0),
            Some(v) => {
                let bytes: [u8; 4] = v.as_slice().try_into().map_err(|_| StoreError::Corrupt {
                    path: db_path(&self.data_dir),
                    what: "meta/schema_version is not 4 bytes".to_owned(),
                })?;
                Ok(u32::from_be_bytes(bytes))
            }
        }
    }

    /// Brings an older store up to [`SCHEMA_VERSION`], refusing newer ones.
    fn migrate(&self) -> Result<()> {
        let found = self.schema_version()?;
        if found > SCHEMA_VERSION {
            return Err(StoreError::NewerSchema {
                path: db_path(&self.data_dir),
                found,
                supported: SCHEMA_VERSION,
            });
        }
        if found == 1 {
            for cf in [Cf::Seconds, Cf::Metrics] {
                self.migrate_series(cf)?;
            }
        }
        if found < SCHEMA_VERSION {
            // Version 0 is an empty, new store; there is nothing to convert.
            self.db.put_cf_opt(
                self.cf(Cf::Meta),
                KEY_SCHEMA,
                SCHEMA_VERSION.to_be_bytes(),
                &Self::write_options(Durability::Sync),
            )?;
        }
        Ok(())
    }

    /// Version 1 → 2: metric series keyed time first (Unix ms ‖ subject)
    /// move to the bucketed layout, a batch at a time. A version-1 key
    /// begins with a zero byte (times before the year 10889), a version-2
    /// key with [`SERIES`], so a migration cut short by a crash carries on
    /// where it stopped; the version is recorded only after.
    fn migrate_series(&self, cf: Cf) -> Result<()> {
        const BATCH: u64 = 10_000;
        let h = self.cf(cf);
        let mut moved = 0u64;
        let mut b = WriteBatch::default();
        // One pass: the new keys sort after every old one, so the scan
        // never meets them, and seeking from the start again for each batch
        // would step over every tombstone the batches before it left.
        for kv in self.scan_prefix(cf, &[0]) {
            let (k, v) = kv?;
            if k.len() > 8 {
                let at = u64::from_be_bytes(k[..8].try_into().unwrap_or_default());
                b.put_cf(h, series_key(cf, at, &k[8..]), v);
            }
            b.delete_cf(h, k);
            moved += 1;
            if moved.is_multiple_of(BATCH) {
                self.db.write_opt(
                    std::mem::take(&mut b),
                    &Self::write_options(Durability::Sync),
                )?;
            }
        }
        if !moved.is_multiple_of(BATCH) {
            self.db
                .write_opt(b, &Self::write_options(Durability::Sync))?;
        }
        if moved > 0 {
            tracing::info!(
                rows = moved,
                cf = cf.name(),
                "Metric series moved to schema 2"
            );
        }
        Ok(())
    }

    // ---- meta ---------------------------------------------------------------

    pub fn meta_get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.db.get_cf(self.cf(Cf::Meta), key.as_bytes())?)
    }

    pub fn meta_put(&self, key: &str, value: &[u8]) -> Result<()> {
        self.db.put_cf_opt(
            self.cf(Cf::Meta),
            key.as_bytes(),
            value,
            &Self::write_options(Durability::Sync),
        )?;
        Ok(())
    }

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

    // ---- API keys: key = key id, value = the key's record (JSON) ----------

    pub fn api_key_put(&self, id: &str, record: &[u8]) -> Result<()> {
        self.db.put_cf_opt(
            self.cf(Cf::ApiKeys),
            id.as_bytes(),
            record,
            &Self::write_options(Durability::Sync),
        )?;
        Ok(())
    }

    pub fn api_key_get(&self, id: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.db.get_cf(self.cf(Cf::ApiKeys), id.as_bytes())?)
    }

    /// Every API key record, by id.
    pub fn api_keys(&self) -> Result<Vec<(String, Vec<u8>)>> {
        let mut out = Vec::new();
        for kv in self
            .db
            .iterator_cf(self.cf(Cf::ApiKeys), IteratorMode::Start)
        {
            let (k, v) = kv?;
            out.push((String::from_utf8_lossy(&k).into_owned(), v.into_vec()));
        }
        Ok(out)
    }

    // ---- incidents: key = started (Unix ms, u64 BE) ‖ id ------------------

    /// Stores incidents in one write, durable when this returns: for each,
    /// its record (without its timeline) and the timeline segments given —
    /// (index, points) — replacing what was there under the same keys. One
    /// sync for all the incidents a second touches, not one each (during a
    /// carpet bombing hundreds run at once); and a second rewrites only its
    /// incidents' last segments, not day-long timelines.
    pub fn incidents_put(&self, writes: &[IncidentWrite]) -> Result<()> {
        if writes.is_empty() {
            return Ok(());
        }
        let h = self.cf(Cf::Incidents);
        let mut b = WriteBatch::default();
        for w in writes {
            let base = incident_key(w.started_ms, &w.id);
            for (index, points) in &w.segments {
                let mut key = base.clone();
                key.push(0);
                key.extend_from_slice(&index.to_be_bytes());
                b.put_cf(h, key, points);
            }
            b.put_cf(h, base, &w.record);
        }
        self.db
            .write_opt(b, &Self::write_options(Durability::Sync))?;
        Ok(())
    }

    /// An incident's record and its timeline segments in order (none for
    /// incidents stored with the timeline inside the record).
    pub fn incident_get(&self, started_ms: u64, id: &str) -> Result<Option<StoredIncident>> {
        let base = incident_key(started_ms, id);
        let Some(record) = self.db.get_cf(self.cf(Cf::Incidents), &base)? else {
            return Ok(None);
        };
        let mut prefix = base;
        prefix.push(0);
        let mut segments = Vec::new();
        for kv in self.scan_prefix(Cf::Incidents, &prefix) {
            segments.push(kv?.1.into_vec());
        }
        Ok(Some((record, segments)))
    }

    /// The newest incidents' records (started last first), without their
    /// timelines.
    pub fn incidents_newest(&self, limit: usize) -> Result<Vec<Vec<u8>>> {
        let mut out = Vec::new();
        for kv in self
            .db
            .iterator_cf(self.cf(Cf::Incidents), IteratorMode::End)
        {
            if out.len() >= limit {
                break;
            }
            let (k, v) = kv?;
            // Ids are printable; a zero byte after the time marks a segment.
            if k.len() > 8 && k[8..].contains(&0) {
                continue;
            }
            out.push(v.into_vec());
        }
        Ok(out)
    }

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

    // ---- baselines: key = host address (16 bytes) ---------------------------

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

    /// Replaces every saved baseline with `rows`, in one batch: a host the
    /// detector has forgotten is forgotten here too (a spray of addresses
    /// saved once must not come back at every start).
    pub fn baselines_replace(&self, rows: &[([u8; 16], Vec<u8>)]) -> Result<()> {
        let h = self.cf(Cf::Baselines);
        let mut b = WriteBatch::default();
        b.delete_range_cf(h, &[0u8; 16][..], &[0xffu8; 17][..]);
        for (addr, value) in rows {
            b.put_cf(h, addr, value);
        }
        self.db
            .write_opt(b, &Self::write_options(Durability::Buffered))?;
        Ok(())
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

    // ---- mitigations: intents (`i/` ‖ route key) and the log (`l/` ‖ ms ‖ seq)

    /// Records a route levee means to have announced; durable on return,
    /// and written before the route is sent (MIT-10).
    pub fn intent_put(&self, route_key: &str, record: &[u8]) -> Result<()> {
        let key = [b"i/".as_slice(), route_key.as_bytes()].concat();
        self.db.put_cf_opt(
            self.cf(Cf::Mitigations),
            key,
            record,
            &Self::write_options(Durability::Sync),
        )?;
        Ok(())
    }

    /// Forgets an intent; durable on return.
    pub fn intent_delete(&self, route_key: &str) -> Result<()> {
        let key = [b"i/".as_slice(), route_key.as_bytes()].concat();
        self.db.delete_cf_opt(
            self.cf(Cf::Mitigations),
            key,
            &Self::write_options(Durability::Sync),
        )?;
        Ok(())
    }

    /// Every intent: (route key, record).
    pub fn intents(&self) -> Result<Vec<(String, Vec<u8>)>> {
        self.prefixed(Cf::Mitigations, b"i/").map(|v| {
            v.into_iter()
                .map(|(k, v)| (String::from_utf8_lossy(&k).into_owned(), v))
                .collect()
        })
    }

    /// Appends to the mitigation log (MIT-9); durable on return. `seq`
    /// orders entries of one millisecond.
    pub fn mitigation_log_put(&self, at_ms: u64, seq: u64, record: &[u8]) -> Result<()> {
        let mut key = b"l/".to_vec();
        key.extend_from_slice(&at_ms.to_be_bytes());
        key.extend_from_slice(&seq.to_be_bytes());
        self.db.put_cf_opt(
            self.cf(Cf::Mitigations),
            key,
            record,
            &Self::write_options(Durability::Sync),
        )?;
        Ok(())
    }

    /// The newest mitigation log entries, newest first, at most `limit`.
    pub fn mitigation_log_newest(&self, limit: usize) -> Result<Vec<Vec<u8>>> {
        let mut out = Vec::new();
        let end = b"l0".to_vec(); // just past every `l/` key
        for kv in self.db.iterator_cf(
            self.cf(Cf::Mitigations),
            IteratorMode::From(&end, Direction::Reverse),
        ) {
            let (k, v) = kv?;
            if !k.starts_with(b"l/") || out.len() >= limit {
                break;
            }
            out.push(v.into_vec());
        }
        Ok(out)
    }

    /// Entries whose key starts with `prefix`, the prefix cut off.
    fn prefixed(&self, cf: Cf, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.scan_prefix(cf, prefix)
            .map(|kv| kv.map(|(k, v)| (k[prefix.len()..].to_vec(), v.into_vec())))
            .collect()
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

    // ---- housekeeping -------------------------------------------------------

    /// Bytes the database occupies on disk.
    pub fn size_bytes(&self) -> u64 {
        dir_size(&db_path(&self.data_dir))
    }

    /// Flushes memtables and the WAL; called on clean shutdown so the next
    /// start has nothing to replay.
    pub fn flush(&self) -> Result<()> {
        if self.read_only {
            return Ok(());
        }
        self.db.flush_wal(true)?;
        for cf in Cf::ALL {
            self.db.flush_cf(self.cf(cf))?;
        }
        Ok(())
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        if !self.read_only {
            let _ = std::fs::remove_file(self.data_dir.join(PID_FILE));
        }
    }
}

fn identity_name_key(name: &str) -> Vec<u8> {
    [b"n/".as_slice(), name.as_bytes()].concat()
}

fn identity_record_key(pseudonym: &str) -> Vec<u8> {
    [b"p/".as_slice(), pseudonym.as_bytes()].concat()
}

/// Creating a file is the only sure test that a directory is writable (a
/// read-only mount passes a permission check).
fn probe_writable(dir: &Path) -> Result<()> {
    let probe = dir.join(".levee-write-probe");
    std::fs::write(&probe, b"")
        .and_then(|()| std::fs::remove_file(&probe))
        .map_err(|source| StoreError::NotWritable {
            path: dir.to_owned(),
            source,
        })
}

fn read_holder(data_dir: &Path) -> String {
    match std::fs::read_to_string(data_dir.join(PID_FILE)) {
        Ok(pid) if !pid.trim().is_empty() => format!(" (pid {})", pid.trim()),
        _ => String::new(),
    }
}

fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_open_is_refused_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let _first = Store::open(dir.path()).unwrap();
        let err = Store::open(dir.path()).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, StoreError::Locked { .. }), "{msg}");
        assert!(msg.contains("in use by another levee"), "{msg}");
        assert!(
            msg.contains(&format!("pid {}", std::process::id())),
            "{msg}"
        );
    }

    #[test]
    fn an_unwritable_data_dir_is_refused_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, b"x").unwrap();
        let err = Store::open(&file.join("sub")).unwrap_err();
        assert!(matches!(err, StoreError::NotWritable { .. }), "{err}");
        assert!(err.to_string().starts_with("data dir "), "{err}");
    }

    #[test]
    fn read_only_open_works_beside_a_writer() {
        let dir = tempfile::tempdir().unwrap();
        let w = Store::open(dir.path()).unwrap();
        w.audit_put(1, b"one").unwrap();
        let r = Store::open_read_only(dir.path()).unwrap();
        assert_eq!(r.audit_last().unwrap(), Some((1, b"one".to_vec())));
    }

    #[test]
    fn read_only_open_of_nothing_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let err = Store::open_read_only(dir.path()).unwrap_err();
        assert!(matches!(err, StoreError::Missing { .. }), "{err}");
    }

    #[test]
    fn schema_version_is_recorded_and_newer_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open(dir.path()).unwrap();
            assert_eq!(s.schema_version().unwrap(), SCHEMA_VERSION);
            s.meta_put("schema_version", &(SCHEMA_VERSION + 1).to_be_bytes())
                .unwrap();
        }
        let err = Store::open(dir.path()).unwrap_err();
        assert!(matches!(err, StoreError::NewerSchema { .. }), "{err}");
    }

    #[test]
    fn retention_drops_only_old_time_keyed_entries() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        // Rollups are pruned by the hour (their bucket): a row is kept up
        // to an hour longer, never dropped early.
        const H: u64 = 3_600_000;
        for t in [H, 2 * H + 1, 3 * H] {
            s.put_timed(Cf::Metrics, t, b"host", b"v", Durability::Buffered)
                .unwrap();
        }
        s.put_timed(Cf::Incidents, 1_000, b"i", b"v", Durability::Buffered)
            .unwrap();
        s.audit_put(1, b"kept").unwrap();
        assert!(s.prune_before(Cf::Metrics, 2 * H + 500_000).unwrap());
        assert_eq!(s.count(Cf::Metrics).unwrap(), 2);
        assert!(s.prune_before(Cf::Incidents, 1_001).unwrap());
        assert_eq!(s.count(Cf::Incidents).unwrap(), 0);
        assert!(!s.prune_before(Cf::Audit, u64::MAX).unwrap());
        assert_eq!(s.count(Cf::Audit).unwrap(), 1);
    }

    #[test]
    fn metric_series_keep_hosts_and_groups_apart() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let host = Subject::Host([7; 16]);
        let group = Subject::Group("customers".into());
        for t in [1_000u64, 2_000, 3_000] {
            let rows = vec![
                (host.clone(), format!("h{t}").into_bytes()),
                (group.clone(), format!("g{t}").into_bytes()),
                (Subject::Host([8; 16]), b"other".to_vec()),
            ];
            s.seconds_put(t, &rows).unwrap();
        }
        let got = s.series(Cf::Seconds, &host, 2_000, 3_000).unwrap();
        assert_eq!(
            got,
            vec![(2_000, b"h2000".to_vec()), (3_000, b"h3000".to_vec())]
        );
        let got = s.series(Cf::Seconds, &group, 0, u64::MAX).unwrap();
        assert_eq!(got.len(), 3);
        let at = s.rows_at(Cf::Seconds, 2_000).unwrap();
        assert_eq!(at.len(), 3);
        assert!(at.contains(&(group, b"g2000".to_vec())));
    }

    /// A series spans buckets, skips the empty ones, and holds only its
    /// own subject's rows, even next to a name that begins with its own.
    #[test]
    fn a_series_reads_its_subject_across_buckets() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let a = Subject::Group("edge".into());
        let b = Subject::Group("edge2".into());
        let host = Subject::Host([9; 16]);
        // Minutes over three days, with a day missing in between.
        let minutes: Vec<u64> = (0..3 * 1440u64)
            .filter(|m| !(1440..2880).contains(m))
            .map(|m| 1_700_000_000_000 - 1_700_000_000_000 % 60_000 + m * 60_000)
            .collect();
        for &t in &minutes {
            let rows = vec![
                (a.clone(), t.to_be_bytes().to_vec()),
                (b.clone(), b"other".to_vec()),
                (host.clone(), b"host".to_vec()),
            ];
            s.rollups_put(t, &rows).unwrap();
        }
        let all = s.series(Cf::Metrics, &a, 0, u64::MAX).unwrap();
        assert_eq!(all.len(), minutes.len());
        assert!(all.iter().all(|(t, v)| v == &t.to_be_bytes()));
        assert!(all.windows(2).all(|w| w[0].0 < w[1].0));
        let (from, to) = (minutes[100], minutes[1500]);
        let some = s.series(Cf::Metrics, &a, from, to).unwrap();
        let want: Vec<u64> = minutes
            .iter()
            .copied()
            .filter(|t| (from..=to).contains(t))
            .collect();
        assert_eq!(some.iter().map(|r| r.0).collect::<Vec<_>>(), want);
        assert_eq!(s.series(Cf::Metrics, &host, from, from).unwrap().len(), 1);
        assert!(s
            .series(Cf::Metrics, &Subject::Group("ed".into()), 0, u64::MAX)
            .unwrap()
            .is_empty());
    }

    /// A version-1 store (series keyed time first) is moved to the
    /// bucketed layout when it is opened; nothing is lost.
    #[test]
    fn version_1_series_are_moved_to_buckets() {
        let dir = tempfile::tempdir().unwrap();
        let host = Subject::Host([7; 16]);
        let mut subject = Vec::new();
        host.write(&mut subject);
        {
            let s = Store::open(dir.path()).unwrap();
            for t in 0..25_000u64 {
                let at = 1_700_000_000_000 + t * 1000;
                let mut k = at.to_be_bytes().to_vec();
                k.extend_from_slice(&subject);
                s.db.put_cf(s.cf(Cf::Seconds), k, at.to_be_bytes()).unwrap();
            }
            let mut k = 1_700_000_000_000u64.to_be_bytes().to_vec();
            k.extend_from_slice(b"ggroup");
            s.db.put_cf(s.cf(Cf::Metrics), k, b"g").unwrap();
            s.meta_put("schema_version", &1u32.to_be_bytes()).unwrap();
        }
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.schema_version().unwrap(), SCHEMA_VERSION);
        let got = s.series(Cf::Seconds, &host, 0, u64::MAX).unwrap();
        assert_eq!(got.len(), 25_000);
        assert!(got.iter().all(|(t, v)| v == &t.to_be_bytes()));
        assert_eq!(s.count(Cf::Seconds).unwrap(), 25_000);
        let group = Subject::Group("group".into());
        assert_eq!(
            s.series(Cf::Metrics, &group, 0, u64::MAX).unwrap(),
            vec![(1_700_000_000_000, b"g".to_vec())]
        );
    }

    #[test]
    fn incidents_are_written_together_with_their_timeline_segments() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let writes = |v: &str, segments: u32| {
            (0..300u64)
                .map(|n| IncidentWrite {
                    started_ms: 1_000 + n,
                    id: format!("inc-{n}"),
                    record: format!("{v}{n}").into_bytes(),
                    segments: (0..segments)
                        .map(|i| (i, format!("[{i}]").into_bytes()))
                        .collect(),
                })
                .collect::<Vec<_>>()
        };
        s.incidents_put(&writes("a", 1)).unwrap();
        s.incidents_put(&writes("b", 3)).unwrap();
        s.incidents_put(&[]).unwrap();
        let (record, segments) = s.incident_get(1_007, "inc-7").unwrap().unwrap();
        assert_eq!(record, b"b7");
        assert_eq!(
            segments,
            [b"[0]".to_vec(), b"[1]".to_vec(), b"[2]".to_vec()]
        );
        assert!(s.incident_get(1_007, "inc-8").unwrap().is_none());
        // The newest first, records only.
        let newest = s.incidents_newest(2).unwrap();
        assert_eq!(newest, [b"b299".to_vec(), b"b298".to_vec()]);
        assert_eq!(s.incidents_newest(10_000).unwrap().len(), 300);
    }

    #[test]
    fn an_audit_range_is_read_either_way_within_its_bounds() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        for seq in 1..=10u64 {
            s.audit_put(seq, &seq.to_string().into_bytes()).unwrap();
        }
        let seqs = |after, before, newest| -> Vec<u64> {
            s.audit_range(after, before, newest)
                .map(|r| r.unwrap().0)
                .collect()
        };
        assert_eq!(seqs(3, 7, false), [4, 5, 6]);
        assert_eq!(seqs(3, 7, true), [6, 5, 4]);
        assert_eq!(seqs(0, u64::MAX, true).len(), 10);
        assert_eq!(seqs(8, u64::MAX, false), [9, 10]);
        assert_eq!(seqs(0, 3, true), [2, 1]);
        assert!(seqs(5, 6, false).is_empty());
        assert!(seqs(5, 6, true).is_empty());
        assert!(seqs(7, 3, true).is_empty());
    }

    #[test]
    fn audit_entries_come_back_in_sequence_order() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        // Big-endian keys sort numerically even across byte boundaries.
        for seq in [1u64, 255, 256, 2] {
            s.audit_put(seq, &seq.to_string().into_bytes()).unwrap();
        }
        let seqs: Vec<u64> = s.audit_scan(1).map(|r| r.unwrap().0).collect();
        assert_eq!(seqs, vec![1, 2, 255, 256]);
        assert_eq!(s.audit_last().unwrap().unwrap().0, 256);
    }

    #[test]
    fn identities_delete_both_ways() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        s.identity_put("alice", "u-1", b"{}").unwrap();
        assert_eq!(s.identity_by_name("alice").unwrap().as_deref(), Some("u-1"));
        assert!(s.identity_delete("alice").unwrap());
        assert_eq!(s.identity_by_name("alice").unwrap(), None);
        assert_eq!(s.identity_record("u-1").unwrap(), None);
        assert!(!s.identity_delete("alice").unwrap());
    }
}
