//! Who holds a store, and why an open failed: the pid file levee writes,
//! the lock's holder found from `/proc` (another levee, a short-lived
//! command, a process gone), and the errors that name the true cause —
//! another process, corruption (which files), permissions.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

/// Writes the pid file whole (beside it, then renamed), so that a reader
/// never sees it half written.
pub(super) fn write_pid_file(data_dir: &Path) {
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
pub(super) fn classify(msg: &str, db: Option<&Path>) -> StoreError {
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
pub(super) fn named_files(msg: &str, db: Option<&Path>) -> Vec<PathBuf> {
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

pub(super) fn locked_message(path: &Path, holder: &Holder, waited: Option<Duration>) -> String {
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

/// The pid of the process holding the store's lock, asked of the kernel
/// (`fcntl(F_GETLK)` on `db/LOCK`), with no need of `/proc` (which a
/// hardened unit may hide). `None` when nobody holds it or the file
/// cannot be opened; `Some(0)` for a holder in another pid namespace.
pub fn lock_owner_pid(data_dir: &Path) -> Option<u32> {
    use std::os::fd::AsRawFd;
    let lock = db_path(data_dir).join("LOCK");
    // Opened for writing, as a write lock is what is asked about (this
    // process holds no lock on it, so closing it releases nothing).
    let f = std::fs::OpenOptions::new().write(true).open(lock).ok()?;
    // SAFETY: flock is plain data; fcntl(F_GETLK) fills it in.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = libc::F_WRLCK as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = 0;
    fl.l_len = 0;
    // SAFETY: a valid fd and a valid flock for the call to fill.
    if unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GETLK, &mut fl) } != 0 {
        return None;
    }
    (fl.l_type != libc::F_UNLCK as libc::c_short).then(|| u32::try_from(fl.l_pid).unwrap_or(0))
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
pub(super) fn alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: kill(2) with signal 0 only checks that the process exists.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}
