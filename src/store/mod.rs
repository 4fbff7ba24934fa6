//! The store: levee's one embedded RocksDB database under `data_dir/db`.
//!
//! This module owns everything RocksDB: opening, the column families, the
//! key layout of each, the schema version, durability, retention pruning,
//! checking and repairing. No other module names a RocksDB type or builds
//! a key; they call the typed methods here, so a RocksDB upgrade touches
//! one file.
//!
//! Column families, one per kind of state (see ARCHITECTURE.md for keys):
//! `meta`, `metrics`, `incidents`, `mitigations`, `audit`, `identities`,
//! `users`, `sessions`, `api_keys`, `alert_queue`.
//!
//! Opening. RocksDB has one writer, which holds an fcntl lock on `db/LOCK`
//! while the store is open. `levee run` holds it for its whole life; a CLI
//! command that changes something while levee is down, and the dead-man
//! auditing, hold it only for that one write ([`Store::open`], dropped at
//! once). `levee run` waits a bounded time for such a short holder
//! ([`Store::open_waiting`]) and refuses at once when the holder is another
//! `levee run`. Whoever holds the lock is named from `/proc/locks` (the
//! pid file as a fallback) with its command line. Readers take no lock
//! ([`Store::open_read_only`]): they never stand in a writer's way. An
//! open that fails is classified by RocksDB's status, never by a word in
//! its message: the lock held, access denied (naming the file), the store
//! damaged (naming the file, and what `levee store check`/`repair` do).
//!
//! Durability: writes of [`Durability::Sync`] (the audit chain, identities,
//! incidents, mitigations, API keys) are on disk when the call returns —
//! the WAL is fsynced. Metrics use [`Durability::Buffered`] and may lose
//! the last moments before a crash, which costs nothing an operator relies
//! on. After a crash RocksDB replays its WAL up to the last whole record,
//! so every synced write is there and the order of writes is kept.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

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

/// A key and its value, as RocksDB hands them out.
type Entry = (Box<[u8]>, Box<[u8]>);

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
    /// Another process holds the store's lock: another `levee run` (levee
    /// refuses at once), or — after levee waited for it — anything else.
    #[error("{}", locked_message(path, holder, *waited))]
    Locked {
        path: PathBuf,
        holder: Holder,
        /// How long levee waited for the lock before giving up (none when
        /// it did not wait: another levee holds it).
        waited: Option<Duration>,
    },
    #[error("data dir {path} is not writable: {source}")]
    NotWritable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// RocksDB was refused access to a file of the store.
    #[error(
        "no permission to use {file} ({what}); levee runs as uid {uid}: the data dir and \
         everything in it must belong to that user (e.g. chown -R it), and be on a writable \
         file system",
        uid = current_uid()
    )]
    Permission { file: PathBuf, what: String },
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
    /// The store is damaged. `path` is the damaged file when RocksDB named
    /// one, the database directory otherwise.
    #[error(
        "the store is damaged: {path}: {what}. `levee store check` reports what can still be \
         read; restore the data dir from a backup, or run `levee store repair` with levee \
         stopped (it keeps a copy of the damaged store, then rebuilds it from the files that \
         are intact: a damaged table file is set aside whole, with everything it held)"
    )]
    Corrupt { path: PathBuf, what: String },
    #[error("RocksDB: {0}")]
    Rocks(String),
}

impl From<rocksdb::Error> for StoreError {
    fn from(e: rocksdb::Error) -> Self {
        classify(&e.into_string(), None)
    }
}

fn current_uid() -> u32 {
    // SAFETY: geteuid(2) cannot fail and touches no memory.
    unsafe { libc::geteuid() }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

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
    // Bounded file handles: RocksDB keeps every table file open by
    // default, and a store that grows for years would take the handles
    // the HTTP server and the collectors need (see `max_open_files`).
    o.set_max_open_files(max_open_files());
    // After a crash, replay the WAL up to the last whole record (a write
    // cut short by the kill) and stop there: every write that returned is
    // kept, in order. (RocksDB's default; said here because the crash
    // guarantees rest on it.)
    o.set_wal_recovery_mode(rocksdb::DBRecoveryMode::PointInTime);
    o
}

/// The table files RocksDB keeps open at most: a quarter of the process's
/// open-files limit, between 64 and 512. A table not open is opened when
/// read (a cache miss costs a few microseconds); a store that grows must
/// never take the file handles the HTTP server and the collectors need.
pub fn max_open_files() -> i32 {
    let soft = open_files_limit().0;
    i32::try_from((soft / 4).clamp(64, 512)).unwrap_or(512)
}

/// The process's open-files limit (soft, hard).
pub fn open_files_limit() -> (u64, u64) {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit(2) writes the struct we pass it.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        return (1024, 1024);
    }
    (r.rlim_cur, r.rlim_max)
}

/// Raises the open-files soft limit to the hard limit (what `levee run`
/// does first): a box under attack must not run out of file handles at
/// the distribution's default of 1024. Returns the limit now in force.
pub fn raise_open_files_limit() -> u64 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit(2)/setrlimit(2) read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 {
            return 1024;
        }
        if r.rlim_cur < r.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: r.rlim_max,
                rlim_max: r.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                return raised.rlim_cur;
            }
        }
    }
    r.rlim_cur
}

/// Makes `data_dir` and everything in it levee's user's alone, whatever
/// the umask was when they were made: directories 0700, files without
/// group or other permissions (0600). Symbolic links are not followed.
/// Failures are logged, not fatal (a file of another owner is reported
/// by RocksDB when it matters).
pub fn secure_data_dir(data_dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    fn walk(dir: &Path, depth: usize) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let path = e.path();
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            let mode = meta.permissions().mode() & 0o7777;
            let want = if meta.is_dir() {
                0o700
            } else if meta.is_file() {
                mode & 0o700
            } else {
                continue; // sockets (made 0600 by their binder), links, fifos
            };
            if mode != want {
                if let Err(e) =
                    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(want))
                {
                    tracing::warn!(file = %path.display(), error = %e, "Cannot restrict the permissions of a file in the data dir");
                }
            }
            if meta.is_dir() && depth < 4 {
                walk(&path, depth + 1);
            }
        }
    }
    if let Ok(meta) = std::fs::symlink_metadata(data_dir) {
        if meta.is_dir() && meta.permissions().mode() & 0o7777 != 0o700 {
            if let Err(e) =
                std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(0o700))
            {
                tracing::warn!(dir = %data_dir.display(), error = %e, "Cannot make the data dir 0700");
            }
        }
    }
    walk(data_dir, 0);
}

/// Changes written together: a state change and the audit entry that
/// records it are one RocksDB write batch, so that either both are
/// durable or neither is ([`crate::audit::AuditLog::append_with`]).
pub struct Batch<'a> {
    store: &'a Store,
    b: WriteBatch,
}

impl std::fmt::Debug for Batch<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch")
            .field("writes", &self.b.len())
            .finish()
    }
}

impl Batch<'_> {
    /// Audit entry `seq` (see [`Store::audit_put`]).
    pub fn audit_put(&mut self, seq: u64, entry: &[u8]) {
        self.b
            .put_cf(self.store.cf(Cf::Audit), seq.to_be_bytes(), entry);
    }

    /// An API key's record (see [`Store::api_key_put`]).
    pub fn api_key_put(&mut self, id: &str, record: &[u8]) {
        self.b
            .put_cf(self.store.cf(Cf::ApiKeys), id.as_bytes(), record);
    }

    /// Records a route levee means to have announced: written before the
    /// route is sent (MIT-10), always in the batch of its audit entry
    /// (there is no way to write an intent without one).
    pub fn intent_put(&mut self, route_key: &str, record: &[u8]) {
        let key = [b"i/".as_slice(), route_key.as_bytes()].concat();
        self.b.put_cf(self.store.cf(Cf::Mitigations), key, record);
    }

    /// Forgets an intent, in the batch of its audit entry.
    pub fn intent_delete(&mut self, route_key: &str) {
        let key = [b"i/".as_slice(), route_key.as_bytes()].concat();
        self.b.delete_cf(self.store.cf(Cf::Mitigations), key);
    }

    /// A `meta` value.
    pub fn meta_put(&mut self, key: &str, value: &[u8]) {
        self.b
            .put_cf(self.store.cf(Cf::Meta), key.as_bytes(), value);
    }
}

impl Store {
    /// An empty batch of changes for [`Store::commit`].
    pub fn batch(&self) -> Batch<'_> {
        Batch {
            store: self,
            b: WriteBatch::default(),
        }
    }

    /// Writes a batch atomically and durably: on disk when this returns,
    /// all of it or (on error) none of it.
    pub fn commit(&self, batch: Batch<'_>) -> Result<()> {
        self.db
            .write_opt(batch.b, &Self::write_options(Durability::Sync))?;
        Ok(())
    }
}

impl Store {
    /// Opens (creating when absent) the store under `data_dir` for writing,
    /// without waiting: a store whose lock another process holds is
    /// refused at once, naming the holder ([`StoreError::Locked`]). Other
    /// failures say what is wrong — the directory cannot be written, RocksDB
    /// was denied a file ([`StoreError::Permission`]), the store is damaged
    /// ([`StoreError::Corrupt`], naming the file).
    ///
    /// Whoever holds the result holds RocksDB's lock: `levee run` for its
    /// whole life, a CLI command or the dead-man only for one change —
    /// drop it as soon as the write is done.
    pub fn open(data_dir: &Path) -> Result<Store> {
        {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(data_dir)
                .map_err(|source| StoreError::NotWritable {
                    path: data_dir.to_owned(),
                    source,
                })?;
        }
        probe_writable(data_dir)?;
        // levee's user's alone, whatever the umask was when the files were
        // made (the writer's own umask is 077: `main`).
        secure_data_dir(data_dir);
        let path = db_path(data_dir);
        let cfs = Cf::ALL.map(|cf| ColumnFamilyDescriptor::new(cf.name(), Options::default()));
        #[allow(clippy::disallowed_methods)] // the store is what opens RocksDB
        let db = Db::open_cf_descriptors(&options(), &path, cfs)
            .map_err(|e| rocks_error(e, data_dir, &path))?;
        let store = Store {
            db,
            data_dir: data_dir.to_owned(),
            read_only: false,
        };
        store.migrate()?;
        // Only the lock holder gets here, so the pid file names the holder.
        write_pid_file(data_dir);
        Ok(store)
    }

    /// Opens for writing like [`Store::open`], but waits up to `patience`
    /// while the lock is held by something other than another `levee run`:
    /// a CLI command writing while levee was down, or the dead-man auditing,
    /// hold it for a moment. Another levee is refused at once (it holds the
    /// store for its whole life), as is this process itself. Waiting is
    /// logged with the holder, once and then every five seconds.
    pub fn open_waiting(data_dir: &Path, patience: Duration) -> Result<Store> {
        let start = Instant::now();
        let mut told: Option<Instant> = None;
        loop {
            match Store::open(data_dir) {
                Err(StoreError::Locked { path, holder, .. }) => {
                    let waited = start.elapsed();
                    if matches!(holder.role, Role::Levee | Role::ThisProcess) {
                        return Err(StoreError::Locked {
                            path,
                            holder,
                            waited: None,
                        });
                    }
                    if waited >= patience {
                        return Err(StoreError::Locked {
                            path,
                            holder,
                            waited: Some(waited),
                        });
                    }
                    if told.is_none_or(|t| t.elapsed() >= Duration::from_secs(5)) {
                        tracing::warn!(
                            holder = %holder,
                            waited_ms = waited.as_millis() as u64,
                            patience_s = patience.as_secs(),
                            "The store is locked by another process; waiting for it"
                        );
                        told = Some(Instant::now());
                    }
                    std::thread::sleep(Duration::from_millis(25));
                }
                Ok(s) => {
                    if told.is_some() {
                        tracing::info!(
                            waited_ms = start.elapsed().as_millis() as u64,
                            "The store's lock is free; store open"
                        );
                    }
                    return Ok(s);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Opens an existing store for reading only. It takes no lock, so it
    /// works whatever else holds the store — a running levee, a CLI command
    /// writing, levee starting — and sees what was written up to this
    /// moment: `levee audit export` needs no downtime, and read commands
    /// never stand in the way of a levee that is starting.
    ///
    /// A writer beside it (levee running or starting, a CLI change) may
    /// replace the very files it opens while it opens them: a flush records
    /// a new table in the MANIFEST and deletes the WAL it came from, a
    /// compaction deletes the tables it merged, a start-up recovers and
    /// deletes the WAL a crash left. An open that overlaps such a change
    /// fails (a file gone) or — worse — succeeds with a view that lacks
    /// what moved (the WAL's entries in neither the tables it knows nor
    /// the WALs it found). So the directory's state (CURRENT, the MANIFEST
    /// and its size, the tables, the WALs) is taken before and after each
    /// attempt, and an attempt during which it changed is made again (for
    /// up to three seconds); one that fails while nothing changes is a
    /// real failure, reported at once.
    pub fn open_read_only(data_dir: &Path) -> Result<Store> {
        let db = db_path(data_dir);
        let start = Instant::now();
        loop {
            let before = db_state(&db);
            let r = Store::open_read_only_once(data_dir);
            let changed = db_state(&db) != before;
            if !changed || start.elapsed() > Duration::from_secs(3) {
                return r;
            }
            if let Err(e) = &r {
                tracing::debug!(error = %e, "Read-only open overlapped a writer's change; trying again");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn open_read_only_once(data_dir: &Path) -> Result<Store> {
        let path = db_path(data_dir);
        if !path.join("CURRENT").exists() {
            return Err(StoreError::Missing { path });
        }
        let mut o = Options::default();
        o.create_if_missing(false);
        let cfs = Cf::ALL.map(|cf| ColumnFamilyDescriptor::new(cf.name(), Options::default()));
        let db = Db::open_cf_descriptors_read_only(&o, &path, cfs, false)
            .map_err(|e| classify(&e.into_string(), Some(&path)))?;
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

    pub fn read_only(&self) -> bool {
        self.read_only
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

mod api_keys;
mod baselines;
mod chain;
mod check;
mod incidents;
mod mitigations;
mod series;
pub use baselines::PrefixRow;
use check::db_state;
pub use check::{repair, CfCheck};
pub use incidents::{IncidentWrite, StoredIncident};
use series::series_key;
pub use series::Subject;

pub mod crash;
pub use crash::during_compaction as crash_during_compaction;
mod holder;
#[cfg(test)]
use holder::named_files;
use holder::{classify, locked_message, write_pid_file};
pub use holder::{lock_holder, lock_owner_pid, Holder, Role};

impl Drop for Store {
    fn drop(&mut self) {
        if !self.read_only {
            let _ = std::fs::remove_file(self.data_dir.join(PID_FILE));
        }
    }
}

/// What RocksDB said when opening or repairing the database at `db`,
/// classified by its status; a lock names the process that holds it.
fn rocks_error(e: rocksdb::Error, data_dir: &Path, db: &Path) -> StoreError {
    match classify(&e.into_string(), Some(db)) {
        StoreError::Locked { .. } => StoreError::Locked {
            path: data_dir.to_owned(),
            holder: lock_holder(data_dir),
            waited: None,
        },
        other => other,
    }
}

/// Creating a file is the only sure test that a directory is writable (a
/// read-only mount passes a permission check). The probe's name is the
/// process's own: levee starting and a CLI command probing at the same
/// moment must not remove each other's probe.
fn probe_writable(dir: &Path) -> Result<()> {
    let probe = dir.join(format!(".levee-write-probe.{}", std::process::id()));
    std::fs::write(&probe, b"")
        .and_then(|()| std::fs::remove_file(&probe))
        .map_err(|source| StoreError::NotWritable {
            path: dir.to_owned(),
            source,
        })
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
mod tests;
