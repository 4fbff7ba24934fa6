//! The audit chain (AUD-1, AUD-2): an append-only, SHA-256 hash-chained log
//! of everything levee and its users do, its export, and its offline check.
//!
//! Each [`Entry`] commits to the one before it through `prev_hash`, so
//! altering, removing, reordering or inserting an entry breaks the chain at
//! that point, and [`verify`] names where. Cutting the tail off cannot be seen
//! from the entries alone; it is caught by checking the chain ends at a head
//! hash recorded elsewhere (the `Audit head` lines levee logs every five
//! minutes and at shutdown, `/metrics`, the export's summary line, a
//! ticket) — and `levee audit verify` without `--head` says so
//! ([`UNANCHORED`]).
//!
//! Every field of an exported entry is covered by its hash except
//! `actor_name` (the name behind a pseudonym, looked up at export time),
//! which the export marks as `unverified`; [`verify`] refuses a field it
//! does not know rather than let it pass unchecked.
//!
//! The hashed content never holds personal data. A user appears as a keyed
//! pseudonym; the person's name lives in the store's `identities` column
//! family, outside the chain, and [`AuditLog::forget`] deletes it without
//! touching a single hashed byte.
//!
//! The canonical encoding is in ARCHITECTURE.md, and `scripts/audit-verify.py`
//! is an independent implementation of it that the tests run.

use std::io::{BufRead, Write};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::store::{Store, StoreError};

/// `prev_hash` of the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Names the encoding inside the hashed bytes, so a future format cannot be
/// confused with this one.
const FORMAT_TAG: &str = "levee-audit/1";

/// One audit entry, as stored and exported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub seq: u64,
    /// RFC 3339, UTC, nanoseconds: `2026-11-22T12:00:00.123456789Z`.
    pub time: String,
    /// `system:<component>`, `user:<pseudonym>` or `apikey:<id>`.
    pub actor: String,
    /// Dotted verb: `config.load`, `config.reload`, `service.start`, …
    pub action: String,
    /// What the action was about (a path, a prefix, an incident id).
    pub target: String,
    /// Structured facts; never floats, never personal data.
    pub details: Value,
    pub prev_hash: String,
    pub hash: String,
}

/// Who did something.
#[derive(Debug, Clone, Copy)]
pub enum Actor<'a> {
    /// levee itself; the argument names the component (`config`, `detector`).
    System(&'a str),
    /// A person, by login name (kept out of the chain; see module docs).
    User(&'a str),
    /// An API key, by its public id.
    ApiKey(&'a str),
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("stored audit entry {seq} cannot be read: {why}")]
    Damaged { seq: u64, why: String },
    #[error("writing the export: {0}")]
    Io(#[from] std::io::Error),
}

/// The canonical bytes an entry's hash covers: a compact JSON array
/// `["levee-audit/1", seq, time, actor, action, target, details, prev_hash]`
/// with object keys sorted by code point and no insignificant whitespace.
pub fn canonical(e: &Entry) -> Vec<u8> {
    let tuple = (
        FORMAT_TAG,
        e.seq,
        &e.time,
        &e.actor,
        &e.action,
        &e.target,
        &e.details,
        &e.prev_hash,
    );
    // serde_json's Map is a BTreeMap (sorted keys) and its compact writer
    // adds no whitespace, which is exactly the documented form.
    serde_json::to_vec(&tuple).unwrap_or_else(|_| unreachable!("JSON values always serialize"))
}

/// Lower-case hex SHA-256 of [`canonical`].
pub fn hash_of(e: &Entry) -> String {
    hex::encode(Sha256::digest(canonical(e)))
}

/// Replaces floats (whose text form differs between JSON libraries) by their
/// decimal string, so anyone's tool reproduces the canonical bytes.
fn without_floats(v: Value) -> Value {
    match v {
        Value::Number(n) if !(n.is_i64() || n.is_u64()) => Value::String(n.to_string()),
        Value::Array(items) => Value::Array(items.into_iter().map(without_floats).collect()),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (k, without_floats(v)))
                .collect(),
        ),
        other => other,
    }
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_nanos(levee_collectors::clock::now()).to_string()
}

#[derive(Debug, Serialize, Deserialize)]
struct Identity {
    name: String,
    /// The per-person pseudonym key; gone with the record, so the pseudonym
    /// cannot be recomputed from the name afterwards.
    key: String,
    created: String,
}

struct Head {
    seq: u64,
    hash: String,
}

/// The live chain: appends are serialised and durable when they return.
pub struct AuditLog {
    store: Arc<Store>,
    head: Mutex<Head>,
    /// The key of [`AuditLog::secret_mac`], read or made on first use.
    mac_key: std::sync::OnceLock<[u8; 32]>,
}

/// Where the store keeps the key of [`AuditLog::secret_mac`].
const MAC_KEY: &str = "secret_hmac_key";

impl AuditLog {
    /// Picks the chain up where the store left it.
    pub fn open(store: Arc<Store>) -> Result<AuditLog, AuditError> {
        let head = match store.audit_last()? {
            None => Head {
                seq: 0,
                hash: GENESIS.to_owned(),
            },
            Some((seq, bytes)) => {
                let e = decode(seq, &bytes)?;
                if hash_of(&e) != e.hash {
                    return Err(AuditError::Damaged {
                        seq,
                        why: "its hash does not match its content".to_owned(),
                    });
                }
                Head { seq, hash: e.hash }
            }
        };
        let log = AuditLog {
            store,
            head: Mutex::new(head),
            mac_key: std::sync::OnceLock::new(),
        };
        // Whoever opens the store for writing takes in what was left for
        // it (see `spool`).
        if let Err(e) = log.drain_spool() {
            tracing::error!(error = %e, "Cannot take in the spooled audit entries; they stay spooled");
        }
        Ok(log)
    }

    /// Appends the entries left in the spool (see [`spool`]), oldest first,
    /// and removes their files. An entry already in the chain — a drain
    /// cut short between the append and the removal — is not appended
    /// again. Returns how many were appended. A read-only store takes none.
    pub fn drain_spool(&self) -> Result<usize, AuditError> {
        if self.store.read_only() {
            return Ok(0);
        }
        let dir = self.store.data_dir().join(SPOOL_DIR);
        let mut files: Vec<std::path::PathBuf> = match std::fs::read_dir(&dir) {
            Ok(rd) => rd
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "json"))
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e.into()),
        };
        if files.is_empty() {
            return Ok(0);
        }
        files.sort();
        // The ids of spooled entries among the newest of the chain.
        let (head_seq, _) = self.head();
        let mut seen = Vec::new();
        for item in self
            .store
            .audit_range(head_seq.saturating_sub(256), u64::MAX, true)
        {
            let (seq, bytes) = item?;
            if let Some(id) = decode(seq, &bytes)?.details["spool_id"].as_str() {
                seen.push(id.to_owned());
            }
        }
        let mut appended = 0;
        for file in files {
            let s: Spooled = match std::fs::read(&file)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
            {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(file = %file.display(), error = %e, "Unreadable spooled audit entry; set aside");
                    let _ = std::fs::rename(&file, file.with_extension("unreadable"));
                    continue;
                }
            };
            if !seen.contains(&s.id) {
                let mut details = s.details;
                if let Value::Object(m) = &mut details {
                    m.insert("spool_id".to_owned(), Value::String(s.id.clone()));
                    m.insert("spooled_at".to_owned(), Value::String(s.time.clone()));
                }
                self.append(Actor::System(&s.component), &s.action, &s.target, details)?;
                appended += 1;
                tracing::info!(action = %s.action, spooled_at = %s.time, "Spooled audit entry taken in");
            }
            std::fs::remove_file(&file)?;
        }
        sync_dir(&dir);
        Ok(appended)
    }

    /// A keyed hash of a secret for the chain to record instead of it
    /// (a changed token, a URL's credentials): HMAC-SHA256 under a random
    /// key this store alone holds (`meta`), the first 128 bits in hex. The
    /// same value gives the same hash, so a change shows; without the key
    /// nobody can test a guess against it. Empty when the key cannot be
    /// read or made (a read-only store).
    pub fn secret_mac(&self, value: &str) -> String {
        let key = match self.mac_key.get() {
            Some(k) => *k,
            None => match self.load_mac_key() {
                Ok(k) => *self.mac_key.get_or_init(|| k),
                Err(e) => {
                    tracing::error!(error = %e, "Cannot read or make the key of secret hashes");
                    return String::new();
                }
            },
        };
        let mut mac = Hmac::<Sha256>::new_from_slice(&key)
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        mac.update(value.as_bytes());
        hex::encode(&mac.finalize().into_bytes()[..16])
    }

    fn load_mac_key(&self) -> Result<[u8; 32], StoreError> {
        if let Some(k) = self.store.meta_get(MAC_KEY)? {
            if let Ok(k) = <[u8; 32]>::try_from(k.as_slice()) {
                return Ok(k);
            }
        }
        let key: [u8; 32] = rand::random();
        self.store.meta_put(MAC_KEY, &key)?;
        Ok(key)
    }

    /// Sequence number and hash of the newest entry (0 and [`GENESIS`] when empty).
    pub fn head(&self) -> (u64, String) {
        let h = self.lock();
        (h.seq, h.hash.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Head> {
        // A panic while holding the lock cannot leave Head half-written
        // (both fields are set after the durable write), so poison is moot.
        self.head.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends an entry; it is on disk when this returns.
    pub fn append(
        &self,
        actor: Actor<'_>,
        action: &str,
        target: &str,
        details: Value,
    ) -> Result<Entry, AuditError> {
        self.append_with(actor, action, target, details, |_| {})
    }

    /// Appends an entry together with the state change it records:
    /// `change` adds its writes to the batch the entry is written in, so
    /// that either both are durable when this returns or (on an error)
    /// neither is — never a change without its record, nor a record of a
    /// change that did not happen.
    pub fn append_with(
        &self,
        actor: Actor<'_>,
        action: &str,
        target: &str,
        details: Value,
        change: impl FnOnce(&mut crate::store::Batch<'_>),
    ) -> Result<Entry, AuditError> {
        let actor = self.actor_id(actor)?;
        let mut head = self.lock();
        let mut e = Entry {
            seq: head.seq + 1,
            time: now_rfc3339(),
            actor,
            action: action.to_owned(),
            target: target.to_owned(),
            details: without_floats(details),
            prev_hash: head.hash.clone(),
            hash: String::new(),
        };
        e.hash = hash_of(&e);
        let bytes =
            serde_json::to_vec(&e).unwrap_or_else(|_| unreachable!("entries always serialize"));
        let mut batch = self.store.batch();
        change(&mut batch);
        batch.audit_put(e.seq, &bytes);
        crate::store::crash::point("audit.append", &|| e.action.clone());
        if crate::store::crash::fails("audit.append", &|| e.action.clone()) {
            return Err(AuditError::Store(StoreError::Rocks(format!(
                "injected failure ({}) of the write of audit entry {} ({})",
                crate::store::crash::FAIL_ENV,
                e.seq,
                e.action
            ))));
        }
        self.store.commit(batch)?;
        crate::store::crash::point("audit.appended", &|| e.action.clone());
        head.seq = e.seq;
        head.hash.clone_from(&e.hash);
        Ok(e)
    }

    fn actor_id(&self, actor: Actor<'_>) -> Result<String, AuditError> {
        Ok(match actor {
            Actor::System(c) => format!("system:{c}"),
            Actor::ApiKey(id) => format!("apikey:{id}"),
            Actor::User(name) => format!("user:{}", self.pseudonym(name)?),
        })
    }

    /// The user's pseudonym, minted on first use: HMAC-SHA256 of the name
    /// under a random key that only the identity record holds.
    fn pseudonym(&self, name: &str) -> Result<String, AuditError> {
        if let Some(p) = self.store.identity_by_name(name)? {
            return Ok(p);
        }
        let key: [u8; 32] = rand::random();
        let mut mac = Hmac::<Sha256>::new_from_slice(&key)
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        mac.update(name.as_bytes());
        let pseudonym = hex::encode(&mac.finalize().into_bytes()[..12]);
        let record = Identity {
            name: name.to_owned(),
            key: hex::encode(key),
            created: now_rfc3339(),
        };
        let bytes = serde_json::to_vec(&record)
            .unwrap_or_else(|_| unreachable!("identities always serialize"));
        self.store.identity_put(name, &pseudonym, &bytes)?;
        Ok(pseudonym)
    }

    /// Deletes a person's identifiers (AUD-2). The chain is untouched and
    /// still verifies; their entries show only the pseudonym from now on.
    pub fn forget(&self, name: &str) -> Result<bool, AuditError> {
        Ok(self.store.identity_delete(name)?)
    }
}

/// Where entries wait for a writer: `data_dir/audit-spool/`.
const SPOOL_DIR: &str = "audit-spool";

/// An entry in the spool.
#[derive(Debug, Serialize, Deserialize)]
struct Spooled {
    /// Unique; recorded as `spool_id` in the appended entry's details.
    id: String,
    /// When it was spooled (RFC 3339); recorded as `spooled_at`.
    time: String,
    /// The `system:` component it is from.
    component: String,
    action: String,
    target: String,
    details: Value,
}

/// Leaves an audit entry of levee component `component` for the next
/// process that opens the store for writing — levee at its start, and
/// within a minute while it runs; a CLI change while levee is down — which
/// appends it with `spool_id` and `spooled_at` in its details. For a
/// process that must not wait for the store's lock: the dead-man, which
/// acts while levee is down and must never stand in the way of a levee
/// that starts. Durable when this returns (file and directory synced).
pub fn spool(
    data_dir: &std::path::Path,
    component: &str,
    action: &str,
    target: &str,
    details: Value,
) -> std::io::Result<std::path::PathBuf> {
    let dir = data_dir.join(SPOOL_DIR);
    std::fs::create_dir_all(&dir)?;
    let now = levee_collectors::clock::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let id = format!(
        "{:020}-{}-{}",
        now.as_nanos(),
        std::process::id(),
        hex::encode(rand::random::<[u8; 4]>())
    );
    let entry = Spooled {
        id: id.clone(),
        time: now_rfc3339(),
        component: component.to_owned(),
        action: action.to_owned(),
        target: target.to_owned(),
        details,
    };
    let tmp = dir.join(format!("{id}.tmp"));
    let file = dir.join(format!("{id}.json"));
    {
        let mut f = std::fs::File::create(&tmp)?;
        serde_json::to_writer(&mut f, &entry).map_err(std::io::Error::other)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, &file)?;
    sync_dir(&dir);
    Ok(file)
}

/// Whether entries wait in the spool of `data_dir`.
pub fn spool_pending(data_dir: &std::path::Path) -> bool {
    std::fs::read_dir(data_dir.join(SPOOL_DIR)).is_ok_and(|mut d| {
        d.any(|e| e.is_ok_and(|e| e.path().extension().is_some_and(|x| x == "json")))
    })
}

/// Makes a directory's entries (files created, renamed, removed) durable.
fn sync_dir(dir: &std::path::Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// What is wrong with the chain as stored.
#[derive(Debug, thiserror::Error)]
pub enum StoredChainError {
    /// Nothing has been audited yet.
    #[error("the chain holds no entries")]
    Empty,
    /// An entry cannot be read.
    #[error(transparent)]
    Unreadable(#[from] AuditError),
    /// Entries are missing before `seq`.
    #[error("seq {seq}: expected seq {expected} here (entries {expected}..{missing_to} missing)")]
    Gap {
        seq: u64,
        expected: u64,
        missing_to: u64,
    },
    /// The entry's content was changed after it was hashed.
    #[error("seq {seq}: its content does not match its hash")]
    Hash { seq: u64 },
    /// The entry does not link to the one before it.
    #[error("seq {seq}: does not link to the entry before it")]
    Link { seq: u64 },
}

/// Checks the chain as stored, entry by entry (`levee store check`): seqs
/// 1, 2, 3 … without gaps, each hash matching its entry, each `prev_hash`
/// the hash before. Reads through a read-only store beside a running
/// levee. The error names the first bad entry.
pub fn verify_stored(store: &Store) -> Result<Verified, StoredChainError> {
    let mut expected = 1u64;
    let mut prev = GENESIS.to_owned();
    for item in store.audit_scan(0) {
        let (seq, bytes) = item.map_err(AuditError::from)?;
        let e = decode(seq, &bytes)?;
        if seq != expected || e.seq != seq {
            return Err(StoredChainError::Gap {
                seq,
                expected,
                missing_to: seq.saturating_sub(1),
            });
        }
        if hash_of(&e) != e.hash {
            return Err(StoredChainError::Hash { seq });
        }
        if e.prev_hash != prev {
            return Err(StoredChainError::Link { seq });
        }
        prev = e.hash;
        expected += 1;
    }
    if expected == 1 {
        return Err(StoredChainError::Empty);
    }
    Ok(Verified {
        entries: expected - 1,
        head_seq: expected - 1,
        head_hash: prev,
        unverified_names: 0,
    })
}

fn decode(seq: u64, bytes: &[u8]) -> Result<Entry, AuditError> {
    serde_json::from_slice(bytes).map_err(|e| AuditError::Damaged {
        seq,
        why: e.to_string(),
    })
}

/// Export file formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Jsonl,
    Csv,
}

/// An entry as exported: the hashed fields plus `actor_name`, the person
/// behind a `user:` pseudonym while their identity is kept. `actor_name` is
/// not part of the hash, and `unverified` says so.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Exported {
    #[serde(flatten)]
    pub entry: Entry,
    pub actor_name: Option<String>,
    /// The fields of this record its hash does not cover: `["actor_name"]`.
    #[serde(default = "unverified_fields")]
    pub unverified: Vec<String>,
}

impl Exported {
    pub fn new(entry: Entry, actor_name: Option<String>) -> Exported {
        Exported {
            entry,
            actor_name,
            unverified: unverified_fields(),
        }
    }
}

/// The fields of an exported entry outside its hash.
fn unverified_fields() -> Vec<String> {
    vec!["actor_name".to_owned()]
}

/// What `levee audit verify` says of a chain checked without `--head`.
pub const UNANCHORED: &str = "unanchored: without --head, a chain whose newest entries were cut \
    off verifies as intact; check it against a head recorded elsewhere (levee's `Audit head` \
    log lines, /metrics levee_audit_head_info, an earlier export) with --head SHA256";

/// The fields a JSON-lines export may hold: the hashed ones and those
/// marked unverified.
const KNOWN_FIELDS: [&str; 10] = [
    "seq",
    "time",
    "actor",
    "action",
    "target",
    "details",
    "prev_hash",
    "hash",
    "actor_name",
    "unverified",
];

const CSV_HEADER: [&str; 10] = KNOWN_FIELDS;

/// Writes every stored entry in sequence order; returns the count and the
/// head (last seq and hash).
pub fn export(
    store: &Store,
    format: Format,
    out: &mut dyn Write,
) -> Result<(u64, u64, String), AuditError> {
    let summary = match format {
        Format::Jsonl => for_each_exported(store, |entry, actor_name| {
            serde_json::to_writer(&mut *out, &Exported::new(entry, actor_name))
                .map_err(|e| AuditError::Io(e.into()))?;
            Ok(out.write_all(b"\n")?)
        })?,
        Format::Csv => {
            let mut w = csv::Writer::from_writer(&mut *out);
            w.write_record(CSV_HEADER).map_err(csv_io)?;
            let summary = for_each_exported(store, |e, actor_name| {
                let details = serde_json::to_string(&e.details).unwrap_or_default();
                let seq = e.seq.to_string();
                w.write_record([
                    seq.as_str(),
                    &e.time,
                    &e.actor,
                    &e.action,
                    &e.target,
                    &details,
                    &e.prev_hash,
                    &e.hash,
                    actor_name.as_deref().unwrap_or(""),
                    "actor_name",
                ])
                .map_err(csv_io)
            })?;
            w.flush()?;
            summary
        }
    };
    out.flush()?;
    Ok(summary)
}

/// Calls `f` with each stored entry and the name behind its pseudonym (while
/// the identity is kept); returns the count and the head.
fn for_each_exported(
    store: &Store,
    mut f: impl FnMut(Entry, Option<String>) -> Result<(), AuditError>,
) -> Result<(u64, u64, String), AuditError> {
    let mut n = 0;
    let mut head = (0, GENESIS.to_owned());
    let mut names = Names::default();
    for item in store.audit_scan(0) {
        let (seq, bytes) = item?;
        let entry = decode(seq, &bytes)?;
        let actor_name = names.of(store, &entry.actor)?;
        head = (entry.seq, entry.hash.clone());
        n += 1;
        f(entry, actor_name)?;
    }
    Ok((n, head.0, head.1))
}

/// The names behind `user:` pseudonyms, looked up once each.
#[derive(Default)]
struct Names(std::collections::HashMap<String, Option<String>>);

impl Names {
    /// The person behind `actor` while their identity is kept.
    fn of(&mut self, store: &Store, actor: &str) -> Result<Option<String>, AuditError> {
        let Some(p) = actor.strip_prefix("user:") else {
            return Ok(None);
        };
        if let Some(name) = self.0.get(p) {
            return Ok(name.clone());
        }
        let name = store
            .identity_record(p)?
            .and_then(|r| serde_json::from_slice::<Identity>(&r).ok())
            .map(|i| i.name);
        self.0.insert(p.to_owned(), name.clone());
        Ok(name)
    }
}

/// Which entries [`list`] returns. Seq bounds are exclusive; `since` is
/// inclusive and `until` exclusive.
#[derive(Debug, Clone)]
pub struct Filter {
    pub after_seq: u64,
    pub before_seq: u64,
    pub since: Option<SystemTime>,
    pub until: Option<SystemTime>,
    /// The action starts with this (`mitigation.`, `apikey.create`).
    pub action: Option<String>,
    /// Exactly this actor (`system:cli`, `apikey:<id>`, `user:<pseudonym>`).
    pub actor: Option<String>,
    /// Exactly this target.
    pub target: Option<String>,
    pub newest_first: bool,
    /// At most this many entries returned.
    pub limit: usize,
    /// At most this many entries read; a selective filter over a long
    /// chain answers in pages rather than reading all of it at once.
    pub scan: usize,
}

impl Default for Filter {
    fn default() -> Filter {
        Filter {
            after_seq: 0,
            before_seq: u64::MAX,
            since: None,
            until: None,
            action: None,
            actor: None,
            target: None,
            newest_first: true,
            limit: 100,
            scan: 100_000,
        }
    }
}

/// A page of [`list`].
#[derive(Debug)]
pub struct Page {
    pub entries: Vec<Exported>,
    /// The last seq read when there may be more to read in the same
    /// direction (the page is full, or the scan bound was reached): the
    /// next page's `before_seq` (newest first) or `after_seq`.
    pub next: Option<u64>,
}

/// The stored entries that pass `f`, in its order, with the names behind
/// pseudonyms. Times are compared as stored: entries are appended under
/// one lock with the time taken there, so time follows seq (unless the
/// clock was stepped back), and the scan stops at the first entry past a
/// time bound.
pub fn list(store: &Store, f: &Filter) -> Result<Page, AuditError> {
    let mut names = Names::default();
    let mut entries = Vec::new();
    let mut last = None;
    let range = store.audit_range(f.after_seq, f.before_seq, f.newest_first);
    for (read, item) in range.enumerate() {
        // There is one more entry: the page ends before it if it must.
        if entries.len() >= f.limit || read >= f.scan {
            return Ok(Page {
                entries,
                next: last,
            });
        }
        let (seq, bytes) = item?;
        last = Some(seq);
        let entry = decode(seq, &bytes)?;
        let at = humantime::parse_rfc3339(&entry.time).map_err(|e| AuditError::Damaged {
            seq,
            why: format!("time {:?}: {e}", entry.time),
        })?;
        let (too_new, too_old) = (
            f.until.is_some_and(|u| at >= u),
            f.since.is_some_and(|s| at < s),
        );
        if (f.newest_first && too_old) || (!f.newest_first && too_new) {
            break;
        }
        if too_new
            || too_old
            || f.action
                .as_ref()
                .is_some_and(|a| !entry.action.starts_with(a.as_str()))
            || f.actor.as_ref().is_some_and(|a| entry.actor != *a)
            || f.target.as_ref().is_some_and(|t| entry.target != *t)
        {
            continue;
        }
        let actor_name = names.of(store, &entry.actor)?;
        entries.push(Exported::new(entry, actor_name));
    }
    Ok(Page {
        entries,
        next: None,
    })
}

fn csv_io(e: csv::Error) -> AuditError {
    AuditError::Io(std::io::Error::other(e))
}

/// Why a file does not hold an intact chain. Each names the first bad entry
/// by its line in the file and its sequence number.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum VerifyError {
    #[error("line {line}: not an audit entry: {why}")]
    Unreadable { line: usize, why: String },
    #[error("line {line} (seq {seq}): altered: its content does not match its hash")]
    Altered { line: usize, seq: u64 },
    #[error("line {line} (seq {seq}): altered or replaced: the next entry (line {next_line}) links to a different hash")]
    Relinked {
        line: usize,
        seq: u64,
        next_line: usize,
    },
    #[error("line {line} (seq {seq}): inserted: the next entry (line {next_line}) links to the entry before it")]
    Inserted {
        line: usize,
        seq: u64,
        next_line: usize,
    },
    #[error("line {line} (seq {seq}): seq {seq} appears again; an entry was inserted or replayed")]
    Duplicate { line: usize, seq: u64 },
    #[error("line {line} (seq {seq}): reordered: seq {expected} should come here")]
    Reordered {
        line: usize,
        seq: u64,
        expected: u64,
    },
    #[error("line {line} (seq {seq}): entries {first}..={last} were removed before it")]
    Removed {
        line: usize,
        seq: u64,
        first: u64,
        last: u64,
    },
    #[error("line {line} (seq {seq}): does not link to the entry before it")]
    Unlinked { line: usize, seq: u64 },
    #[error("the chain ends at seq {seq} (sha256 {hash}), not at the given head: entries after seq {seq} were removed, or the head is of another chain")]
    Truncated { seq: u64, hash: String },
    #[error("the chain goes on past the given head (seq {head_seq}) to seq {seq}")]
    PastHead { head_seq: u64, seq: u64 },
    #[error("the file holds no entries")]
    Empty,
}

/// Summary of a verified chain.
#[derive(Debug, PartialEq, Eq)]
pub struct Verified {
    pub entries: u64,
    pub head_seq: u64,
    pub head_hash: String,
    /// Entries that carry an `actor_name`, which the hash does not cover.
    pub unverified_names: u64,
}

/// Reads an export (JSON lines or CSV, told apart by the first line) and
/// checks the chain, and that it ends at `head` when given. Needs no store.
pub fn verify(input: impl BufRead, head: Option<&str>) -> Result<Verified, VerifyError> {
    let (entries, names) = read_export(input)?;
    let mut v = check_chain(&entries, head)?;
    v.unverified_names = names;
    Ok(v)
}

/// The entries of an export, and how many carry an `actor_name`.
fn read_export(mut input: impl BufRead) -> Result<(Vec<(usize, Entry)>, u64), VerifyError> {
    let mut text = String::new();
    input
        .read_to_string(&mut text)
        .map_err(|e| VerifyError::Unreadable {
            line: 1,
            why: e.to_string(),
        })?;
    let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    let mut out = Vec::new();
    let mut names = 0;
    if first.trim_start().starts_with('{') {
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let unreadable = |why: String| VerifyError::Unreadable { line: i + 1, why };
            let v: Value = serde_json::from_str(line).map_err(|e| unreadable(e.to_string()))?;
            // A field the hash does not cover and the export does not mark
            // would pass unchecked: refuse it.
            if let Some(extra) = v
                .as_object()
                .and_then(|o| o.keys().find(|k| !KNOWN_FIELDS.contains(&k.as_str())))
            {
                return Err(unreadable(format!(
                    "field `{extra}` is not part of an audit entry (its hash does not cover it)"
                )));
            }
            let e: Exported = serde_json::from_value(v).map_err(|e| unreadable(e.to_string()))?;
            names += u64::from(e.actor_name.is_some());
            out.push((i + 1, e.entry));
        }
        return Ok((out, names));
    }
    let mut r = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(text.as_bytes());
    let header = r
        .headers()
        .map_err(|e| VerifyError::Unreadable {
            line: 1,
            why: e.to_string(),
        })?
        .clone();
    if header.iter().take(8).ne(CSV_HEADER.iter().take(8).copied())
        || header.len() > CSV_HEADER.len()
        || header.iter().zip(CSV_HEADER).any(|(h, k)| h != k)
    {
        return Err(VerifyError::Unreadable {
            line: 1,
            why: format!(
                "expected a JSON line or the CSV header {}",
                CSV_HEADER.join(",")
            ),
        });
    }
    for rec in r.records() {
        let rec = rec.map_err(|e| VerifyError::Unreadable {
            line: e.position().map_or(0, |p| p.line() as usize),
            why: e.to_string(),
        })?;
        let line = rec.position().map_or(0, |p| p.line() as usize);
        let bad = |why: String| VerifyError::Unreadable { line, why };
        let field = |i: usize| rec.get(i).unwrap_or("").to_owned();
        let e = Entry {
            seq: field(0)
                .parse()
                .map_err(|_| bad(format!("seq `{}` is not a number", field(0))))?,
            time: field(1),
            actor: field(2),
            action: field(3),
            target: field(4),
            details: serde_json::from_str(&field(5)).map_err(|e| bad(format!("details: {e}")))?,
            prev_hash: field(6),
            hash: field(7),
        };
        names += u64::from(!field(8).is_empty());
        out.push((line, e));
    }
    Ok((out, names))
}

fn check_chain(entries: &[(usize, Entry)], head: Option<&str>) -> Result<Verified, VerifyError> {
    let Some((first_line, first)) = entries.first() else {
        return Err(VerifyError::Empty);
    };
    if first.seq != 1 {
        return Err(VerifyError::Removed {
            line: *first_line,
            seq: first.seq,
            first: 1,
            last: first.seq.saturating_sub(1),
        });
    }
    let mut expected = 1u64;
    let mut prev_hash = GENESIS;
    for (i, (line, e)) in entries.iter().enumerate() {
        let (line, seq) = (*line, e.seq);
        if hash_of(e) != e.hash {
            return Err(VerifyError::Altered { line, seq });
        }
        if seq != expected {
            if seq < expected {
                // A seq seen before. When it repeats the one just before and
                // the rest of the chain skips over that one, that is the forgery.
                if seq + 1 == expected && i >= 2 && e.prev_hash == entries[i - 2].1.hash {
                    let (pl, pe) = &entries[i - 1];
                    return Err(VerifyError::Inserted {
                        line: *pl,
                        seq: pe.seq,
                        next_line: line,
                    });
                }
                return Err(VerifyError::Duplicate { line, seq });
            }
            if entries[i..].iter().any(|(_, later)| later.seq == expected) {
                return Err(VerifyError::Reordered {
                    line,
                    seq,
                    expected,
                });
            }
            return Err(VerifyError::Removed {
                line,
                seq,
                first: expected,
                last: seq - 1,
            });
        }
        if e.prev_hash != prev_hash {
            // Which entry is the odd one out? If this entry links to the one
            // two back, the one just before it was slipped in.
            if i >= 2 && e.prev_hash == entries[i - 2].1.hash {
                let (pl, pe) = &entries[i - 1];
                return Err(VerifyError::Inserted {
                    line: *pl,
                    seq: pe.seq,
                    next_line: line,
                });
            }
            if i >= 1 {
                let (pl, pe) = &entries[i - 1];
                return Err(VerifyError::Relinked {
                    line: *pl,
                    seq: pe.seq,
                    next_line: line,
                });
            }
            return Err(VerifyError::Unlinked { line, seq });
        }
        prev_hash = &e.hash;
        expected = seq + 1;
    }
    let last = &entries[entries.len() - 1].1;
    if let Some(head) = head {
        let head = head.trim().to_ascii_lowercase();
        if last.hash != head {
            if let Some((_, at)) = entries.iter().find(|(_, e)| e.hash == head) {
                return Err(VerifyError::PastHead {
                    head_seq: at.seq,
                    seq: last.seq,
                });
            }
            return Err(VerifyError::Truncated {
                seq: last.seq,
                hash: last.hash.clone(),
            });
        }
    }
    Ok(Verified {
        entries: entries.len() as u64,
        head_seq: last.seq,
        head_hash: last.hash.clone(),
        unverified_names: 0,
    })
}

#[cfg(test)]
mod tests;
