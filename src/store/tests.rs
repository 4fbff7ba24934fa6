//! The store's contract: opening and locking, every key space's
//! round trip, damage found and repaired.

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

#[test]
fn prefix_baselines_sit_beside_host_baselines_and_go_with_them() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    let host = [7u8; 16];
    let prefix = [9u8; 16];
    s.baselines_replace(&[(host, b"h".to_vec())], &[(prefix, 24, b"p".to_vec())])
        .unwrap();
    assert_eq!(s.baselines().unwrap(), vec![(host, b"h".to_vec())]);
    assert_eq!(
        s.prefix_baselines().unwrap(),
        vec![(prefix, 24, b"p".to_vec())]
    );
    // A replacement without it forgets it.
    s.baselines_replace(&[(host, b"h2".to_vec())], &[]).unwrap();
    assert!(s.prefix_baselines().unwrap().is_empty());
    assert_eq!(s.baselines().unwrap().len(), 1);
}
