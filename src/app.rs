//! `levee run`: the appliance's lifecycle.
//!
//! Start-up: load and validate the config (refuse to start on errors, with the
//! same messages as `check-config`), open the store, pick up the audit chain,
//! audit the config load, start the control plane (tokio) and the web server.
//! The store may be locked for a moment by a CLI command that changed
//! something while levee was down, or by the dead-man auditing: levee waits
//! for such a holder up to [`LOCK_PATIENCE`], logging who it is, and
//! refuses at once when the holder is another `levee run`.
//!
//! While running: SIGHUP reloads the config — a valid file replaces the
//! running config and its diff is audited; an invalid one is rejected, logged
//! and audited, and the running config stays. Retention prunes old data hourly.
//!
//! Shutdown on SIGTERM or SIGINT: stop accepting HTTP, let requests in flight
//! finish (bounded), audit the stop, flush the store, exit 0.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use serde_json::json;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::watch;

use crate::audit::{Actor, AuditLog};
use crate::config::{self, Diff, Loaded};
use crate::dataplane::Dataplane;
use crate::ingest::Ingest;
use crate::logging::{self, LogHandle};
use crate::store::{Cf, Store};
use crate::web::{self, Counters, WebState};

/// How long shutdown waits for HTTP requests in flight.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
const RETENTION_EVERY: Duration = Duration::from_secs(300);
/// Per-second host metrics are kept this long (minute rollups for
/// `[retention] metrics`).
const SECONDS_KEPT: Duration = Duration::from_secs(3600);
/// How long start-up waits for the store's lock while a process other than
/// another levee holds it (a CLI change holds it for one write; opening a
/// store a crash left behind replays its WAL first, which can take a few
/// seconds on a large one).
pub const LOCK_PATIENCE: Duration = Duration::from_secs(30);
/// How often the running levee takes in audit entries spooled by the
/// dead-man (which never waits for the store's lock).
const SPOOL_EVERY: Duration = Duration::from_secs(60);

pub fn run(config_path: &Path) -> anyhow::Result<ExitCode> {
    let loaded = match config::load(config_path) {
        Ok(l) => l,
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!(
                "levee: not starting: {} error(s) in {}",
                errors.errors.len(),
                config_path.display()
            );
            return Ok(ExitCode::from(2));
        }
    };
    let log = logging::init(&loaded.config.log.level);
    tracing::info!(version = web::VERSION, commit = web::COMMIT, config = %config_path.display(), "Starting levee");

    let rt = tokio::runtime::Builder::new_multi_thread()
        .thread_name("levee-ctl")
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    // Signal handlers go in before anything else: a SIGHUP that arrived
    // before them would kill the process (its default action).
    let signals = rt.block_on(async { Signals::install() })?;

    let store = Arc::new(
        Store::open_waiting(&loaded.config.data_dir, LOCK_PATIENCE).context("opening the store")?,
    );
    let audit = Arc::new(AuditLog::open(store.clone()).context("opening the audit chain")?);
    crate::store::crash::point("store.open", &String::new);
    crate::store::crash_during_compaction(store.clone());
    {
        let audit = audit.clone();
        rt.spawn(async move {
            let mut tick = tokio::time::interval(SPOOL_EVERY);
            tick.tick().await; // AuditLog::open took in what was there
            loop {
                tick.tick().await;
                let audit = audit.clone();
                match tokio::task::spawn_blocking(move || audit.drain_spool()).await {
                    Ok(Err(e)) => {
                        tracing::error!(error = %e, "Cannot take in spooled audit entries")
                    }
                    Err(e) => tracing::error!(error = %e, "Spool task failed"),
                    Ok(Ok(_)) => {}
                }
            }
        });
    }
    audit
        .append(
            Actor::System("config"),
            "config.load",
            &config_path.display().to_string(),
            json!({ "sha256": loaded.sha256, "hostgroups": loaded.config.hostgroups.len() }),
        )
        .context("auditing the config load")?;
    audit
        .append(
            Actor::System("levee"),
            "service.start",
            "levee",
            json!({ "version": web::VERSION, "commit": web::COMMIT, "pid": std::process::id() }),
        )
        .context("auditing the start")?;
    tracing::info!(data_dir = %loaded.config.data_dir.display(), audit_head = audit.head().0, "Store open");

    rt.block_on(control_plane(
        config_path.to_owned(),
        loaded,
        store.clone(),
        audit.clone(),
        log,
        signals,
    ))?;
    drop(rt);

    audit
        .append(
            Actor::System("levee"),
            "service.stop",
            "levee",
            json!({ "pid": std::process::id() }),
        )
        .context("auditing the stop")?;
    store.flush().context("flushing the store")?;
    tracing::info!("Stopped cleanly");
    Ok(ExitCode::SUCCESS)
}

/// The signals levee acts on, buffered from the moment they are installed.
struct Signals {
    hup: Signal,
    term: Signal,
    int: Signal,
}

impl Signals {
    fn install() -> anyhow::Result<Signals> {
        Ok(Signals {
            hup: signal(SignalKind::hangup()).context("installing the SIGHUP handler")?,
            term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
        })
    }
}

async fn control_plane(
    config_path: PathBuf,
    loaded: Loaded,
    store: Arc<Store>,
    audit: Arc<AuditLog>,
    log: LogHandle,
    mut signals: Signals,
) -> anyhow::Result<()> {
    let counters = Arc::new(Counters::default());
    let listen = loaded.config.web.listen;
    let (config_tx, config_rx) = watch::channel(Arc::new(loaded));

    // The data plane, then the collectors feeding it; "Web server
    // listening" is the last line of start-up.
    let mut dataplane = Dataplane::new(&config_rx.borrow().config);
    let ingest = Arc::new(Ingest::start(
        &config_rx.borrow().config.collector,
        config_rx.borrow().config.mitigation.trust_any_exporter,
        &mut || Box::new(dataplane.sink()),
    )?);
    let mitigation =
        crate::mitigation::service::start(config_rx.clone(), store.clone(), audit.clone());
    dataplane.start(
        &config_rx.borrow().config,
        store.clone(),
        audit.clone(),
        Some(mitigation.clone()),
    )?;
    tracing::info!(shards = dataplane.shards(), "Detection running");
    let dataplane = Arc::new(dataplane);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding the web server to {listen}"))?;
    let local = listener.local_addr()?;
    let state = WebState {
        started: Instant::now(),
        store: store.clone(),
        audit: audit.clone(),
        counters: counters.clone(),
        ingest: Some(ingest.clone()),
        dataplane: Some(dataplane.clone()),
        mitigation: Some(mitigation),
    };
    let admin = bind_admin_socket(store.data_dir())?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let until_stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let admin_app = web::admin_router(state.clone());
    let admin_stop = until_stopped(stop_rx.clone());
    let admin_server = tokio::spawn(async move {
        axum::serve(admin, admin_app)
            .with_graceful_shutdown(admin_stop)
            .await
    });
    let web_app = web::router(state);
    let web_stop = until_stopped(stop_rx);
    let web_server = tokio::spawn(async move {
        axum::serve(listener, web_app)
            .with_graceful_shutdown(web_stop)
            .await
    });
    let server = async move { (web_server.await, admin_server.await) };
    // Last: tests and operators wait for this line.
    tracing::info!(addr = %local, "Web server listening");

    let retention = tokio::spawn(retention_loop(store.clone(), config_rx.clone()));

    loop {
        tokio::select! {
            _ = signals.hup.recv() => {
                let current = config_tx.borrow().clone();
                if let Some(next) = reload(&config_path, &current, &audit, &counters) {
                    log.set_level(&next.config.log.level);
                    dataplane.reconfigure(&next.config);
                    config_tx.send_replace(Arc::new(next));
                }
            }
            _ = signals.term.recv() => { tracing::info!(signal = "SIGTERM", "Shutting down"); break; }
            _ = signals.int.recv() => { tracing::info!(signal = "SIGINT", "Shutting down"); break; }
        }
    }

    retention.abort();
    let _ = stop_tx.send(true);
    tokio::task::spawn_blocking(move || ingest.stop())
        .await
        .ok();
    match tokio::time::timeout(SHUTDOWN_GRACE, server).await {
        Ok(results) => {
            for r in [results.0, results.1] {
                match r {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::warn!(error = %e, "Web server ended with an error"),
                    Err(e) => tracing::warn!(error = %e, "Web server task failed"),
                }
            }
        }
        Err(_) => tracing::warn!("Web requests still running after the grace period; closing them"),
    }
    let _ = std::fs::remove_file(admin_socket_path(store.data_dir()));
    Ok(())
}

/// Where the CLI reaches a running levee.
pub fn admin_socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join("levee.sock")
}

/// Binds the admin socket, readable and writable by levee's user only. A
/// socket file left by a levee that died is removed first: the store's lock
/// (held by now) proves no other levee uses this data dir.
fn bind_admin_socket(data_dir: &Path) -> anyhow::Result<tokio::net::UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    let path = admin_socket_path(data_dir);
    let _ = std::fs::remove_file(&path);
    // Create it with no permissions for others from the first moment.
    // SAFETY: umask(2) only changes this process's file creation mask.
    let old = unsafe { libc::umask(0o177) };
    let bound = tokio::net::UnixListener::bind(&path);
    // SAFETY: as above, restoring the previous mask.
    unsafe { libc::umask(old) };
    let listener = bound.with_context(|| format!("binding the admin socket {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("restricting {}", path.display()))?;
    Ok(listener)
}

/// Settings that only take effect at the next start.
fn needs_restart(path: &str) -> bool {
    path == "data_dir" || path.starts_with("web.") || path.starts_with("collector.")
}

/// Loads the file again; returns the new config when it is valid. Every
/// outcome is logged and audited.
fn reload(path: &Path, current: &Loaded, audit: &AuditLog, counters: &Counters) -> Option<Loaded> {
    let target = path.display().to_string();
    match config::load(path) {
        Err(errors) => {
            counters
                .config_reloads_rejected
                .fetch_add(1, Ordering::Relaxed);
            let lines: Vec<String> = errors.to_string().lines().map(str::to_owned).collect();
            for l in &lines {
                tracing::error!(error = %l, "Config reload rejected");
            }
            tracing::warn!(count = lines.len(), "Keeping the running config");
            if let Err(e) = audit.append(
                Actor::System("config"),
                "config.reload_rejected",
                &target,
                json!({ "errors": lines }),
            ) {
                tracing::error!(error = %e, "Cannot audit the rejected reload");
            }
            None
        }
        Ok(next) => {
            counters.config_reloads_ok.fetch_add(1, Ordering::Relaxed);
            let diff = Diff::between(current, &next);
            let restart: Vec<&String> = diff
                .added
                .keys()
                .chain(diff.removed.keys())
                .chain(diff.changed.keys())
                .filter(|k| needs_restart(k))
                .collect();
            if diff.is_empty() {
                tracing::info!("Config reloaded; nothing changed");
            } else {
                tracing::info!(
                    added = diff.added.len(),
                    removed = diff.removed.len(),
                    changed = diff.changed.len(),
                    "Config reloaded"
                );
            }
            for k in &restart {
                tracing::warn!(key = %k, "This setting takes effect at the next start");
            }
            if let Err(e) = audit.append(
                Actor::System("config"),
                "config.reload",
                &target,
                json!({ "sha256": next.sha256, "diff": diff, "restart_required": restart }),
            ) {
                tracing::error!(error = %e, "Cannot audit the reload");
            }
            Some(next)
        }
    }
}

async fn retention_loop(store: Arc<Store>, config: watch::Receiver<Arc<Loaded>>) {
    let mut tick = tokio::time::interval(RETENTION_EVERY);
    loop {
        tick.tick().await;
        let r = config.borrow().config.retention.clone();
        let store = store.clone();
        let pruned = tokio::task::spawn_blocking(move || {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            for (cf, keep) in [
                (Cf::Metrics, r.metrics),
                (Cf::Incidents, r.incidents),
                (Cf::Seconds, SECONDS_KEPT),
            ] {
                let cutoff = now.saturating_sub(keep).as_millis() as u64;
                store.prune_before(cf, cutoff)?;
            }
            Ok::<_, crate::store::StoreError>(())
        })
        .await;
        match pruned {
            Ok(Ok(())) => tracing::debug!("Retention pass done"),
            Ok(Err(e)) => tracing::error!(error = %e, "Retention pass failed"),
            Err(e) => tracing::error!(error = %e, "Retention task failed"),
        }
    }
}
