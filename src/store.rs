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

    /// A mitigation intent (see [`Store::intent_put`]).
    pub fn intent_put(&mut self, route_key: &str, record: &[u8]) {
        let key = [b"i/".as_slice(), route_key.as_bytes()].concat();
        self.b.put_cf(self.store.cf(Cf::Mitigations), key, record);
    }

    /// Removes a mitigation intent (see [`Store::intent_delete`]).
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
        let db = Db::open_cf_descriptors(&options(), &path, cfs).map_err(|e| {
            match classify(&e.into_string(), Some(&path)) {
                StoreError::Locked { .. } => StoreError::Locked {
                    path: data_dir.to_owned(),
                    holder: lock_holder(data_dir),
                    waited: None,
                },
                other => other,
            }
        })?;
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
        crash::point("apikey.put", &|| id.to_owned());
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
        crash::point("intent.put", &|| route_key.to_owned());
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
        crash::point("intent.delete", &|| route_key.to_owned());
        Ok(())
    }

    /// Every intent: (route key, record).
    pub fn intents(&self) -> Result<Vec<(String, Vec<u8>)>> {
        crash::point("intents.read", &String::new);
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
        crash::point("mitigation_log.put", &|| {
            serde_json::from_slice::<serde_json::Value>(record)
                .ok()
                .and_then(|v| v["action"].as_str().map(str::to_owned))
                .unwrap_or_default()
        });
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

    // ---- check and repair ---------------------------------------------------

    /// Reads every entry of every column family, verifying each block's
    /// checksum on the way — what a damaged table file fails. Works on a
    /// read-only store beside a running levee (`levee store check`).
    pub fn check(&self) -> Vec<CfCheck> {
        let db = db_path(&self.data_dir);
        Cf::ALL
            .iter()
            .map(|&cf| {
                let mut ro = rocksdb::ReadOptions::default();
                ro.set_verify_checksums(true);
                ro.fill_cache(false);
                let mut entries = 0;
                let mut error = None;
                for kv in self
                    .db
                    .iterator_cf_opt(self.cf(cf), ro, IteratorMode::Start)
                {
                    match kv {
                        Ok(_) => entries += 1,
                        Err(e) => {
                            error = Some(classify(&e.into_string(), Some(&db)));
                            break;
                        }
                    }
                }
                CfCheck {
                    name: cf.name(),
                    entries,
                    error,
                }
            })
            .collect()
    }
}

/// What [`Store::check`] found in one column family.
#[derive(Debug)]
pub struct CfCheck {
    pub name: &'static str,
    /// Entries read (up to the first failure).
    pub entries: u64,
    /// The first read that failed (the damaged file named when RocksDB
    /// names it).
    pub error: Option<StoreError>,
}

/// `levee store repair`: with no process holding the store, copies the
/// database directory aside (`db.damaged-<unix seconds>` in the data dir),
/// then has RocksDB rebuild the store from whatever its table and log
/// files still hold; what sat in damaged blocks is lost. Returns where the
/// copy is.
pub fn repair(data_dir: &Path) -> Result<PathBuf> {
    let path = db_path(data_dir);
    if !path.join("CURRENT").exists() && !path.is_dir() {
        return Err(StoreError::Missing { path });
    }
    let holder = lock_holder(data_dir);
    if holder.pid.is_some() {
        return Err(StoreError::Locked {
            path: data_dir.to_owned(),
            holder,
            waited: None,
        });
    }
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let copy = data_dir.join(format!("db.damaged-{stamp}"));
    copy_dir(&path, &copy).map_err(|source| StoreError::NotWritable {
        path: copy.clone(),
        source,
    })?;
    Db::repair(&options(), &path).map_err(|e| match classify(&e.into_string(), Some(&path)) {
        StoreError::Locked { .. } => StoreError::Locked {
            path: data_dir.to_owned(),
            holder: lock_holder(data_dir),
            waited: None,
        },
        other => other,
    })?;
    // A column family whose every table was set aside is gone from the
    // rebuilt MANIFEST; opening for writing makes it again (empty), and
    // records the schema version if `meta` went with it.
    drop(Store::open(data_dir)?);
    Ok(copy)
}

/// Copies the files of `from` (a RocksDB directory holds no
/// subdirectories) into a new directory `to`, each synced.
fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        if e.file_type()?.is_file() {
            let target = to.join(e.file_name());
            std::fs::copy(e.path(), &target)?;
            std::fs::File::open(&target)?.sync_all()?;
        }
    }
    std::fs::File::open(to)?.sync_all()
}

/// Crash points for the crash-restart torture test (`tests/crash.rs`).
///
/// In a debug build — what `cargo test` builds — the environment variable
/// [`ENV`] (`LEVEE_TEST_CRASH_AT`) arms one point: `POINT[:FILTER][#N]`
/// kills the process with SIGKILL the Nth time (the first by default) it
/// reaches POINT with a detail that contains FILTER. The kill is the
/// process's own `kill -9`: no destructor runs, nothing is flushed, exactly
/// as when it comes from outside, but at a moment a test can choose. The
/// points (see docs/operations.md):
///
/// | point | where | detail |
/// |---|---|---|
/// | `store.open` | `levee run`: store open and the audit chain picked up, nothing audited yet | |
/// | `intent.put` | an announcement: its intent durable, the route not yet sent | route key |
/// | `intent.delete` | a withdrawal: its intent deleted, the route not yet withdrawn | route key |
/// | `intents.read` | restore (hit 1) and each reconciliation pass (hits 2, 3, …), before it repairs | |
/// | `mitigation_log.put` | a route sent (or repaired), logged, not yet audited | the log entry's action |
/// | `audit.append` | an audit entry about to be written | its action |
/// | `audit.appended` | an audit entry durable, its caller not yet told | its action |
/// | `apikey.put` | an API key created or revoked, not yet audited | key id |
/// | `compaction` | levee compacts its whole store shortly after start and dies while it runs | |
///
/// A release build compiles every point to nothing and never reads the
/// variable.
pub mod crash {
    /// The variable that arms a crash point (debug builds only).
    pub const ENV: &str = "LEVEE_TEST_CRASH_AT";

    /// Dies here if `name` is the armed point (see the module docs);
    /// `detail` is computed only when it is.
    #[inline]
    pub fn point(name: &str, detail: &dyn Fn() -> String) {
        #[cfg(debug_assertions)]
        armed::hit(name, detail);
        #[cfg(not(debug_assertions))]
        let _ = (name, detail);
    }

    /// The variable that arms a failure point (debug builds only): the
    /// same `POINT[:FILTER][#N]`, but the Nth hit returns an error instead
    /// of killing the process (`audit.append`: the write of an audit entry
    /// — and of the state change it records — fails).
    pub const FAIL_ENV: &str = "LEVEE_TEST_FAIL_AT";

    /// Whether the write at failure point `name` is to fail this time (see
    /// [`FAIL_ENV`]); never in a release build.
    #[inline]
    pub fn fails(name: &str, detail: &dyn Fn() -> String) -> bool {
        #[cfg(debug_assertions)]
        return armed::fail_hit(name, detail);
        #[cfg(not(debug_assertions))]
        {
            let _ = (name, detail);
            false
        }
    }

    /// Whether `name` is the armed point (never in a release build).
    pub fn armed(name: &str) -> bool {
        #[cfg(debug_assertions)]
        return armed::get().is_some_and(|a| a.point == name);
        #[cfg(not(debug_assertions))]
        {
            let _ = name;
            false
        }
    }

    #[cfg(debug_assertions)]
    mod armed {
        use std::sync::atomic::{AtomicU64, Ordering};
        use std::sync::OnceLock;

        pub(super) struct Armed {
            pub(super) point: String,
            filter: Option<String>,
            nth: u64,
            hits: AtomicU64,
        }

        pub(super) fn get() -> Option<&'static Armed> {
            static ARMED: OnceLock<Option<Armed>> = OnceLock::new();
            ARMED.get_or_init(|| parse(super::ENV)).as_ref()
        }

        fn get_failing() -> Option<&'static Armed> {
            static FAILING: OnceLock<Option<Armed>> = OnceLock::new();
            FAILING.get_or_init(|| parse(super::FAIL_ENV)).as_ref()
        }

        /// Whether this hit of failure point `name` fails.
        pub(super) fn fail_hit(name: &str, detail: &dyn Fn() -> String) -> bool {
            let Some(a) = get_failing() else { return false };
            if a.point != name {
                return false;
            }
            let d = detail();
            if a.filter.as_deref().is_some_and(|f| !d.contains(f)) {
                return false;
            }
            let n = a.hits.fetch_add(1, Ordering::SeqCst) + 1;
            if n != a.nth {
                return false;
            }
            eprintln!(
                "levee: {}: failing point {name} ({d}), hit {n}",
                super::FAIL_ENV
            );
            true
        }

        fn parse(var: &str) -> Option<Armed> {
            let v = std::env::var(var).ok()?;
            let (rest, nth) = match v.rsplit_once('#') {
                Some((r, n)) => (r, n.parse().ok()?),
                None => (v.as_str(), 1),
            };
            let (point, filter) = match rest.split_once(':') {
                Some((p, f)) => (p, Some(f.to_owned())),
                None => (rest, None),
            };
            Some(Armed {
                point: point.to_owned(),
                filter,
                nth,
                hits: AtomicU64::new(0),
            })
        }

        pub(super) fn hit(name: &str, detail: &dyn Fn() -> String) {
            let Some(a) = get() else { return };
            if a.point != name {
                return;
            }
            let d = detail();
            if a.filter.as_deref().is_some_and(|f| !d.contains(f)) {
                return;
            }
            let n = a.hits.fetch_add(1, Ordering::SeqCst) + 1;
            if n != a.nth {
                return;
            }
            eprintln!(
                "levee: {}: SIGKILL at crash point {name} ({d}), hit {n}",
                super::ENV
            );
            // SAFETY: kill(2) of this very process; SIGKILL cannot be
            // caught, and no thread runs user code once it is delivered.
            unsafe {
                libc::kill(libc::getpid(), libc::SIGKILL);
            }
            std::process::abort();
        }
    }
}

/// The `compaction` crash point: compacts the whole store on a thread of
/// its own, shortly after start, and dies while RocksDB reports the
/// compaction running (or, if it never saw it run, as it ends). Only when
/// that point is armed, only in a debug build.
pub fn crash_during_compaction(store: std::sync::Arc<Store>) {
    if !crash::armed("compaction") {
        return;
    }
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        for cf in Cf::ALL {
            let _ = store.db.flush_cf(store.cf(cf));
        }
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (s, d) = (store.clone(), done.clone());
        std::thread::spawn(move || {
            for cf in Cf::ALL {
                s.db.compact_range_cf(s.cf(cf), None::<&[u8]>, None::<&[u8]>);
            }
            d.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        loop {
            let running = store
                .db
                .property_int_value("rocksdb.num-running-compactions")
                .ok()
                .flatten()
                .unwrap_or(0);
            if running > 0 {
                crash::point("compaction", &|| format!("{running} running"));
            }
            if done.load(std::sync::atomic::Ordering::SeqCst) {
                crash::point("compaction", &|| "just finished".to_owned());
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    });
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

/// What says which version a database directory is at: the name and
/// size of every file but the WALs (which grow with every write: their
/// names only) and the info logs and the lock.
fn db_state(db: &Path) -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = std::fs::read_dir(db)
        .map(|d| {
            d.flatten()
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    if name.starts_with("LOG") || name == "LOCK" {
                        return None;
                    }
                    let size = if name.ends_with(".log") {
                        0
                    } else {
                        e.metadata().map_or(u64::MAX, |m| m.len())
                    };
                    Some((name, size))
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
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

/// Writes the pid file whole (beside it, then renamed), so that a reader
/// never sees it half written.
fn write_pid_file(data_dir: &Path) {
    let tmp = data_dir.join(format!("{PID_FILE}.{}", std::process::id()));
    let ok = std::fs::write(&tmp, format!("{}\n", std::process::id()))
        .and_then(|()| std::fs::rename(&tmp, data_dir.join(PID_FILE)));
    if ok.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
}

/// What a RocksDB error says, as levee's error: the lock held (the caller
/// names the holder), access denied, the store damaged (naming the file),
/// or anything else as RocksDB put it. `db` is the database directory.
///
/// The kind is the status RocksDB reports (the text before the first
/// colon), never a word found anywhere in the message: "block checksum
/// mismatch" contains "lock".
fn classify(msg: &str, db: Option<&Path>) -> StoreError {
    let kind = msg.split(':').next().unwrap_or("");
    let lower = msg.to_ascii_lowercase();
    let files = named_files(msg, db);
    // Damage is reported at the file read first ("… in 000009.sst … in
    // file MANIFEST-000005"); a denied rename names the target first and
    // the file that exists last.
    let (first, last) = (files.first().cloned(), files.last().cloned());
    let dir = || db.map(Path::to_path_buf).unwrap_or_default();
    match kind {
        // The lock is an fcntl lock on `db/LOCK`: held elsewhere, F_SETLK
        // fails with EAGAIN (or EACCES, which POSIX allows); held by this
        // process, RocksDB refuses before asking the kernel.
        "IO error"
            if lower.contains("lock hold by current process")
                || (lower.contains("while lock file")
                    && (lower.contains("resource temporarily unavailable")
                        || lower.contains("permission denied"))) =>
        {
            StoreError::Locked {
                path: db
                    .and_then(Path::parent)
                    .unwrap_or(Path::new(""))
                    .to_owned(),
                holder: Holder::unknown(),
                waited: None,
            }
        }
        "IO error"
            if lower.contains("permission denied")
                || lower.contains("read-only file system")
                || lower.contains("operation not permitted") =>
        {
            StoreError::Permission {
                file: last.unwrap_or_else(dir),
                what: msg.to_owned(),
            }
        }
        // A file the MANIFEST lists is gone: the store is incomplete.
        "IO error" if lower.contains("no such file or directory") && first.is_some() => {
            StoreError::Corrupt {
                path: first.unwrap_or_else(dir),
                what: format!("{msg} (a file the store lists is missing)"),
            }
        }
        "Corruption" => StoreError::Corrupt {
            path: first.unwrap_or_else(dir),
            what: msg.to_owned(),
        },
        _ => StoreError::Rocks(msg.to_owned()),
    }
}

/// The store files a RocksDB message names (tables, WAL, MANIFEST,
/// CURRENT, OPTIONS, LOCK, LOG files), in order.
fn named_files(msg: &str, db: Option<&Path>) -> Vec<PathBuf> {
    let is_store_file = |name: &str| {
        [".sst", ".log", ".blob", ".ldb"]
            .iter()
            .any(|ext| name.ends_with(ext))
            || [
                "MANIFEST-",
                "CURRENT",
                "OPTIONS-",
                "LOCK",
                "LOG",
                "IDENTITY",
            ]
            .iter()
            .any(|p| name.starts_with(p))
    };
    let end = |c: char| c.is_whitespace() || c == ':' || c == ',';
    let mut out = Vec::new();
    // With the database directory known, a path with spaces is read whole.
    if let Some(dir) = db.and_then(Path::to_str) {
        let mut from = 0;
        while let Some(at) = msg[from..].find(dir) {
            let start = from + at;
            let rest = &msg[start + dir.len()..];
            let len = rest.find(end).unwrap_or(rest.len());
            let candidate = &msg[start..start + dir.len() + len];
            let name = candidate.rsplit('/').next().unwrap_or("");
            if is_store_file(name) {
                out.push(PathBuf::from(candidate));
            }
            from = start + dir.len();
        }
    }
    if out.is_empty() {
        out = msg
            .split(end)
            .filter(|t| t.contains('/') && is_store_file(t.rsplit('/').next().unwrap_or("")))
            .map(PathBuf::from)
            .collect();
    }
    out
}

/// Who holds the store's lock, as far as this machine can tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub pid: Option<u32>,
    /// Its command line, as `/proc` shows it.
    pub command: Option<String>,
    pub role: Role,
}

/// What kind of process holds the lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Another `levee run`: it holds the store for its whole life.
    Levee,
    /// This very process (the store is open twice).
    ThisProcess,
    /// Another levee command (a CLI change, the dead-man's audit): it
    /// holds the lock for one write.
    Command,
    /// A program that is not levee (a backup tool, RocksDB's `ldb`).
    Other,
    /// Nothing this machine shows: no lock in `/proc/locks`, no live pid in
    /// the pid file (another pid namespace, a network file system).
    Unknown,
}

impl Holder {
    fn unknown() -> Holder {
        Holder {
            pid: None,
            command: None,
            role: Role::Unknown,
        }
    }
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.pid, &self.command) {
            (Some(pid), Some(c)) => write!(f, "pid {pid} (`{c}`)"),
            (Some(pid), None) => write!(f, "pid {pid}"),
            _ => f.write_str("a process this machine does not show"),
        }
    }
}

fn locked_message(path: &Path, holder: &Holder, waited: Option<Duration>) -> String {
    let path = path.display();
    let command = holder
        .command
        .as_deref()
        .map(|c| format!(" (it runs `{c}`)"))
        .unwrap_or_default();
    match (holder.role, holder.pid, waited) {
        (Role::Levee, Some(pid), _) => {
            format!(
                "data dir {path} is in use by another levee (pid {pid}); stop it first{command}"
            )
        }
        (Role::ThisProcess, Some(pid), _) => {
            format!("data dir {path} is already open in this process (pid {pid})")
        }
        (Role::Unknown, _, _) => format!(
            "data dir {path} is locked by a process this machine does not show (no holder in \
             /proc/locks, no live pid in {path}/{PID_FILE}; another container or host sharing \
             the directory?){}; find it with `fuser -v {path}/db/LOCK`",
            waited
                .map(|w| format!(", still after {}s", w.as_secs()))
                .unwrap_or_default()
        ),
        (_, _, Some(w)) => format!(
            "data dir {path} is still locked by {holder} after {}s of waiting; it is not a \
             levee run and holds the store too long: stop it if it hangs",
            w.as_secs()
        ),
        (_, _, None) => format!("data dir {path} is locked by {holder}"),
    }
}

/// Names the process that holds `data_dir`'s lock: the owner of the fcntl
/// lock on `db/LOCK` in `/proc/locks` (alive by definition), else the pid
/// file's pid if that process is alive.
pub fn lock_holder(data_dir: &Path) -> Holder {
    use std::os::unix::fs::MetadataExt;
    let lock = db_path(data_dir).join("LOCK");
    let mut pids = Vec::new();
    if let (Ok(meta), Ok(locks)) = (
        std::fs::metadata(&lock),
        std::fs::read_to_string("/proc/locks"),
    ) {
        // "1: POSIX  ADVISORY  WRITE 4242 fd:01:1234567 0 EOF"; waiters
        // carry "->" and hold nothing.
        for line in locks.lines().filter(|l| !l.contains("->")) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (Some(pid), Some(ino)) = (
                f.get(4).and_then(|p| p.parse::<u32>().ok()),
                f.get(5)
                    .and_then(|d| d.rsplit(':').next())
                    .and_then(|i| i.parse::<u64>().ok()),
            ) else {
                continue;
            };
            if ino == meta.ino() && !pids.contains(&pid) {
                pids.push(pid);
            }
        }
    }
    // Inode numbers repeat across file systems: prefer a process that has
    // this very file open.
    let holds_file = |pid: u32| {
        std::fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|fds| {
            fds.flatten()
                .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|t| t == lock))
        })
    };
    let pid = pids
        .iter()
        .copied()
        .find(|&p| holds_file(p))
        .or_else(|| pids.first().copied())
        .or_else(|| {
            std::fs::read_to_string(data_dir.join(PID_FILE))
                .ok()
                .and_then(|p| p.trim().parse::<u32>().ok())
                .filter(|&p| alive(p))
        });
    let Some(pid) = pid else {
        return Holder::unknown();
    };
    let argv: Vec<String> = std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            b.split(|&c| c == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
        .unwrap_or_default();
    let role = if pid == std::process::id() {
        Role::ThisProcess
    } else if argv.is_empty() {
        Role::Unknown
    } else if !Path::new(&argv[0])
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("levee"))
    {
        Role::Other
    } else if argv[1..]
        .iter()
        .find(|a| SUBCOMMANDS.contains(&a.as_str()))
        .is_some_and(|a| a == "run")
    {
        Role::Levee
    } else {
        Role::Command
    };
    Holder {
        pid: Some(pid),
        command: (!argv.is_empty()).then(|| argv.join(" ")),
        role: if role == Role::Unknown && alive(pid) {
            Role::Other
        } else {
            role
        },
    }
}

/// The `levee` subcommands: the first of them on a command line says what
/// the process is (`levee apikey add run` is not a levee run).
const SUBCOMMANDS: [&str; 10] = [
    "run",
    "check-config",
    "replay",
    "audit",
    "apikey",
    "deadman",
    "mitigation",
    "store",
    "status",
    "help",
];

/// Whether a process with this pid exists (a zombie counts).
fn alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: kill(2) with signal 0 only checks that the process exists.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
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
    use sha2::{Digest, Sha256};

    #[test]
    fn a_second_open_in_this_process_is_refused_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let _first = Store::open(dir.path()).unwrap();
        let err = Store::open(dir.path()).unwrap_err();
        let msg = err.to_string();
        match &err {
            StoreError::Locked { holder, .. } => {
                assert_eq!(holder.role, Role::ThisProcess, "{msg}");
                assert_eq!(holder.pid, Some(std::process::id()), "{msg}");
            }
            other => panic!("not Locked: {other:?}"),
        }
        assert!(
            msg.contains(&format!(
                "is already open in this process (pid {})",
                std::process::id()
            )),
            "{msg}"
        );
        // Waiting would not help: refused at once.
        let t = Instant::now();
        assert!(Store::open_waiting(dir.path(), Duration::from_secs(10)).is_err());
        assert!(t.elapsed() < Duration::from_secs(2));
    }

    /// Holds the fcntl lock of `data_dir`'s store from another process (as
    /// RocksDB takes it: F_SETLK on db/LOCK) for `secs`, named `argv0`
    /// with `args`; returns once the lock is held.
    fn hold_lock(data_dir: &Path, secs: f64, argv0: &str, args: &[&str]) -> std::process::Child {
        use std::io::BufRead;
        use std::os::unix::process::CommandExt;
        let code = "import fcntl, sys, time\n\
                    f = open(sys.argv[1], 'r+')\n\
                    fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)\n\
                    print('locked', flush=True)\n\
                    time.sleep(float(sys.argv[2]))\n";
        // The interpreter itself, not a wrapper that would set its own argv[0].
        let python = ["/usr/bin/python3", "/usr/local/bin/python3"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .unwrap_or("python3");
        let mut child = std::process::Command::new(python)
            .arg0(argv0)
            .arg("-c")
            .arg(code)
            .arg(db_path(data_dir).join("LOCK"))
            .arg(secs.to_string())
            .args(args)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3 runs");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "locked");
        child
    }

    #[test]
    fn a_lock_held_by_another_levee_is_refused_at_once_naming_its_pid() {
        let dir = tempfile::tempdir().unwrap();
        drop(Store::open(dir.path()).unwrap());
        let mut other = hold_lock(dir.path(), 30.0, "levee", &["run", "--config", "x.toml"]);
        let t = Instant::now();
        let err = Store::open_waiting(dir.path(), Duration::from_secs(10)).unwrap_err();
        let msg = err.to_string();
        let _ = other.kill();
        let _ = other.wait();
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "no waiting for a levee"
        );
        assert!(
            msg.contains(&format!("is in use by another levee (pid {})", other.id())),
            "{msg}"
        );
        assert!(msg.contains("run --config x.toml"), "{msg}");
    }

    #[test]
    fn a_lock_held_by_a_short_lived_command_is_waited_for() {
        let dir = tempfile::tempdir().unwrap();
        drop(Store::open(dir.path()).unwrap());
        // Held for 1.5 s by something that is not a levee run: levee waits.
        let mut cli = hold_lock(dir.path(), 1.5, "levee", &["apikey", "add", "ops"]);
        let err = Store::open(dir.path()).unwrap_err();
        match &err {
            StoreError::Locked { holder, .. } => {
                assert_eq!(holder.pid, Some(cli.id()), "{err}");
                assert_eq!(holder.role, Role::Command, "{err}");
            }
            other => panic!("not Locked: {other:?}"),
        }
        assert!(err.to_string().contains("apikey add ops"), "{err}");
        let t = Instant::now();
        let s = Store::open_waiting(dir.path(), Duration::from_secs(10)).unwrap();
        assert!(
            t.elapsed() >= Duration::from_millis(500),
            "{:?}",
            t.elapsed()
        );
        drop(s);
        let _ = cli.wait();

        // Held for longer than levee's patience: the true cause, named.
        let mut stuck = hold_lock(dir.path(), 30.0, "python3", &[]);
        let err = Store::open_waiting(dir.path(), Duration::from_millis(300)).unwrap_err();
        let _ = stuck.kill();
        let _ = stuck.wait();
        let msg = err.to_string();
        assert!(
            matches!(&err, StoreError::Locked { waited: Some(_), holder, .. } if holder.role == Role::Other),
            "{err:?}"
        );
        assert!(
            msg.contains(&format!("still locked by pid {}", stuck.id())) && msg.contains("python3"),
            "{msg}"
        );
    }

    /// The messages RocksDB 7.8 gives, and what each is: the kind is
    /// RocksDB's status, never a word somewhere in the message.
    #[test]
    fn rocksdb_errors_are_classified_by_their_status() {
        let db = Path::new("/srv/levee data/db");
        let cases = [
            (
                "IO error: While lock file: /srv/levee data/db/LOCK: Resource temporarily unavailable",
                "locked",
                None,
            ),
            (
                "IO error: lock hold by current process, acquire time 1700000000 acquiring thread \
                 139: /srv/levee data/db/LOCK: No locks available",
                "locked",
                None,
            ),
            (
                "Corruption: block checksum mismatch: stored = 3405691582, computed = 1, type = 1  \
                 in /srv/levee data/db/000009.sst offset 0 size 3971",
                "corrupt",
                Some("/srv/levee data/db/000009.sst"),
            ),
            (
                "Corruption: Bad table magic number: expected 9863518390377041911, found 0 in \
                 /srv/levee data/db/000012.sst",
                "corrupt",
                Some("/srv/levee data/db/000012.sst"),
            ),
            (
                "IO error: While open a file for lock: /srv/levee data/db/LOCK: Permission denied",
                "permission",
                Some("/srv/levee data/db/LOCK"),
            ),
            (
                "IO error: While renaming a file to /srv/levee data/db/LOG.old.1796554215754808: \
                 /srv/levee data/db/LOG: Permission denied",
                "permission",
                Some("/srv/levee data/db/LOG"),
            ),
            (
                "IO error: While open a file for appending: /srv/levee data/db/000007.log: \
                 Read-only file system",
                "permission",
                Some("/srv/levee data/db/000007.log"),
            ),
            (
                "IO error: No such file or directory: While open a file for random read: \
                 /srv/levee data/db/000010.sst: No such file or directory",
                "corrupt",
                Some("/srv/levee data/db/000010.sst"),
            ),
            (
                "IO error: While appending to file: /srv/levee data/db/000003.log: No space left on device",
                "other",
                None,
            ),
        ];
        for (msg, want, file) in cases {
            let got = classify(msg, Some(db));
            let (kind, path) = match &got {
                StoreError::Locked { .. } => ("locked", None),
                StoreError::Corrupt { path, .. } => ("corrupt", Some(path.clone())),
                StoreError::Permission { file, .. } => ("permission", Some(file.clone())),
                StoreError::Rocks(_) => ("other", None),
                other => panic!("{msg}: {other:?}"),
            };
            assert_eq!(kind, want, "{msg}");
            if let Some(f) = file {
                assert_eq!(path.as_deref(), Some(Path::new(f)), "{msg}");
            }
        }
        // Without the directory, a file is still named.
        assert_eq!(
            named_files(
                "Corruption: block checksum mismatch: stored = 1, computed = 2, type = 1 in \
                 /d/db/000009.sst offset 0 size 10 in file /d/db/MANIFEST-000005",
                None
            ),
            [
                PathBuf::from("/d/db/000009.sst"),
                PathBuf::from("/d/db/MANIFEST-000005")
            ]
        );
    }

    /// A store whose audit chain holds `n` entries of a few hundred bytes
    /// in two table files (the first and the second half, flushed one
    /// after the other); the second's path.
    fn store_with_tables(dir: &Path, n: u64) -> PathBuf {
        let tables = || -> Vec<PathBuf> {
            std::fs::read_dir(db_path(dir))
                .unwrap()
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "sst"))
                .collect()
        };
        let s = Store::open(dir).unwrap();
        for seq in 1..=n {
            if seq == n / 2 + 1 {
                s.flush().unwrap();
            }
            let entry = format!("{seq}:{}", hex::encode(Sha256::digest(seq.to_be_bytes())));
            s.audit_put(seq, entry.repeat(4).as_bytes()).unwrap();
            if seq == n / 2 {
                s.flush().unwrap();
            }
        }
        let before = tables();
        s.flush().unwrap();
        drop(s);
        let mut new: Vec<PathBuf> = tables()
            .into_iter()
            .filter(|t| !before.contains(t))
            .collect();
        assert_eq!(new.len(), 1, "one new table: {new:?}");
        new.pop().unwrap()
    }

    fn flip(file: &Path, at: u64) {
        use std::io::{Read, Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(file)
            .unwrap();
        let mut b = [0u8; 8];
        f.seek(SeekFrom::Start(at)).unwrap();
        f.read_exact(&mut b).unwrap();
        for x in &mut b {
            *x ^= 0x5a;
        }
        f.seek(SeekFrom::Start(at)).unwrap();
        f.write_all(&b).unwrap();
        f.sync_all().unwrap();
    }

    /// A real damaged table file: its index (read when the store opens)
    /// fails its block checksum. The message says "block"; that is
    /// damage, named by file, never "another levee holds the store".
    #[test]
    fn a_corrupt_table_file_is_reported_as_damage_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let table = store_with_tables(dir.path(), 2000);
        let len = std::fs::metadata(&table).unwrap().len();
        // The footer is the last 53 bytes; before it the index and meta
        // blocks, which RocksDB reads and checks when it opens the table.
        flip(&table, len - 120);
        let err = Store::open(dir.path()).unwrap_err();
        let msg = err.to_string();
        eprintln!("{msg}");
        assert!(msg.contains("block"), "{msg}");
        match &err {
            StoreError::Corrupt { path, what } => {
                assert_eq!(path, &table, "{msg}");
                assert!(what.starts_with("Corruption:"), "{msg}");
            }
            other => panic!("not Corrupt: {other:?}"),
        }
        assert!(!msg.contains("another levee"), "{msg}");
        assert!(
            msg.contains("levee store check") && msg.contains("levee store repair"),
            "{msg}"
        );
        // Read-only opens say the same (and do not wait for a writer: none).
        let t = Instant::now();
        let err = Store::open_read_only(dir.path()).unwrap_err();
        assert!(
            matches!(&err, StoreError::Corrupt { path, .. } if path == &table),
            "{err}"
        );
        assert!(t.elapsed() < Duration::from_secs(1));
    }

    /// Damage inside a data block shows only when it is read: `check`
    /// finds it (naming the file); `repair` sets the damaged table aside
    /// whole and keeps the rest.
    #[test]
    fn a_damaged_data_block_is_found_by_check_and_repair_salvages_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let table = store_with_tables(dir.path(), 2000);
        flip(&table, 100);
        let s = Store::open_read_only(dir.path()).unwrap();
        let report = s.check();
        let audit = report.iter().find(|c| c.name == "audit").unwrap();
        let err = audit.error.as_ref().expect("the damage is found");
        eprintln!("{err}");
        assert!(
            matches!(err, StoreError::Corrupt { path, .. } if path == &table),
            "{err:?}"
        );
        assert!(report.iter().filter(|c| c.error.is_some()).count() == 1);
        let read: Result<Vec<_>> = s.audit_scan(1).collect();
        assert!(matches!(read, Err(StoreError::Corrupt { .. })), "{read:?}");
        drop(s);

        // Not while something holds the store.
        let held = Store::open(dir.path()).unwrap();
        assert!(matches!(repair(dir.path()), Err(StoreError::Locked { .. })));
        drop(held);

        let copy = repair(dir.path()).unwrap();
        assert!(copy.join("CURRENT").exists(), "the damaged store is kept");
        assert!(copy.join(table.file_name().unwrap()).exists());
        // Column families that had no table left are there again (a
        // read-only open names them all).
        let s = Store::open_read_only(dir.path()).unwrap();
        let report = s.check();
        assert!(report.iter().all(|c| c.error.is_none()), "{report:?}");
        let kept: Vec<u64> = s.audit_scan(1).map(|r| r.unwrap().0).collect();
        assert_eq!(
            kept,
            (1..=1000).collect::<Vec<_>>(),
            "the undamaged table's entries"
        );
    }

    /// RocksDB denied a file: said so, naming it — not "locked", not
    /// "damaged". (As root, the denial is made real by dropping this
    /// thread's file-system uid; otherwise by the file's mode.)
    #[test]
    fn a_store_levee_may_not_use_is_reported_as_a_permission_problem() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        drop(Store::open(dir.path()).unwrap());
        // The data dir passes the write probe; the store's LOCK file is
        // root's (or read-only).
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let lock = db_path(dir.path()).join("LOCK");
        std::fs::set_permissions(&lock, std::fs::Permissions::from_mode(0o444)).unwrap();
        let path = dir.path().to_owned();
        let err = std::thread::spawn(move || {
            if current_uid() == 0 {
                // SAFETY: setfsuid/setfsgid change this thread's
                // file-system ids only (Linux credentials are per thread
                // and glibc does not broadcast these two).
                unsafe {
                    libc::setfsgid(65534);
                    libc::setfsuid(65534);
                }
            }
            Store::open(&path).map(drop)
        })
        .join()
        .unwrap()
        .unwrap_err();
        let msg = err.to_string();
        eprintln!("{msg}");
        // As root the first file RocksDB writes is refused (it renames
        // the info LOG first); otherwise the LOCK file.
        assert!(
            matches!(&err, StoreError::Permission { file, .. } if file.starts_with(db_path(dir.path()))),
            "{err:?}"
        );
        assert!(msg.contains("no permission to use"), "{msg}");
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
