//! Checking the store (`levee store check`) and repairing it
//! (`levee store repair`).

use super::*;

impl Store {
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
    let stamp = levee_collectors::clock::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let copy = data_dir.join(format!("db.damaged-{stamp}"));
    copy_dir(&path, &copy).map_err(|source| StoreError::NotWritable {
        path: copy.clone(),
        source,
    })?;
    Db::repair(&options(), &path).map_err(|e| rocks_error(e, data_dir, &path))?;
    // A column family whose every table was set aside is gone from the
    // rebuilt MANIFEST; opening for writing makes it again (empty), and
    // records the schema version if `meta` went with it.
    drop(Store::open(data_dir)?);
    Ok(copy)
}

/// Copies the files of `from` (a RocksDB directory holds no
/// subdirectories) into a new directory `to`, each synced.
pub(super) fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
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

/// What says which version a database directory is at: the name and
/// size of every file but the WALs (which grow with every write: their
/// names only) and the info logs and the lock.
pub(super) fn db_state(db: &Path) -> Vec<(String, u64)> {
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
