//! Crash points for the crash-restart torture test (`tests/crash.rs`).
//!
//! In a debug build — what `cargo test` builds — the environment variable
//! [`ENV`] (`LEVEE_TEST_CRASH_AT`) arms one point: `POINT[:FILTER][#N]`
//! kills the process with SIGKILL the Nth time (the first by default) it
//! reaches POINT with a detail that contains FILTER. The kill is the
//! process's own `kill -9`: no destructor runs, nothing is flushed, exactly
//! as when it comes from outside, but at a moment a test can choose. The
//! points (see docs/operations.md):
//!
//! | point | where | detail |
//! |---|---|---|
//! | `store.open` | `levee run`: store open and the audit chain picked up, nothing audited yet | |
//! | `intent.put` | an announcement: its intent durable, the route not yet sent | route key |
//! | `intent.delete` | a withdrawal: its intent deleted, the route not yet withdrawn | route key |
//! | `intents.read` | restore (hit 1) and each reconciliation pass (hits 2, 3, …), before it repairs | |
//! | `mitigation_log.put` | a route sent (or repaired), logged, not yet audited | the log entry's action |
//! | `audit.append` | an audit entry about to be written | its action |
//! | `audit.appended` | an audit entry durable, its caller not yet told | its action |
//! | `apikey.put` | an API key created or revoked, not yet audited | key id |
//! | `compaction` | levee compacts its whole store shortly after start and dies while it runs | |
//!
//! A release build compiles every point to nothing and never reads the
//! variable.

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

/// The `compaction` crash point: compacts the whole store on a thread of
/// its own, shortly after start, and dies while RocksDB reports the
/// compaction running (or, if it never saw it run, as it ends). Only when
/// that point is armed, only in a debug build.
pub fn during_compaction(store: std::sync::Arc<super::Store>) {
    if !armed("compaction") {
        return;
    }
    std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(300));
        for cf in super::Cf::ALL {
            let _ = store.db.flush_cf(store.cf(cf));
        }
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (s, d) = (store.clone(), done.clone());
        std::thread::spawn(move || {
            for cf in super::Cf::ALL {
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
                point("compaction", &|| format!("{running} running"));
            }
            if done.load(std::sync::atomic::Ordering::SeqCst) {
                point("compaction", &|| "just finished".to_owned());
            }
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
    });
}
