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
use std::time::{Duration, Instant, UNIX_EPOCH};

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
use crate::web::{self, ControlCounters, WebState};

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
    // File handles for what an attack brings (connections, RocksDB's
    // tables): the hard limit, not the distribution's default soft 1024.
    let open_files = crate::store::raise_open_files_limit();
    tracing::info!(
        open_files,
        rocksdb_max_open_files = crate::store::max_open_files(),
        "Open-files limit"
    );

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
            {
                let id = loaded.identity(&|v| audit.secret_mac(v));
                json!({
                    "sha256": id.sha256,
                    "hmac_sha256": id.hmac_sha256,
                    "hostgroups": loaded.config.hostgroups.len(),
                })
            },
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
    {
        let (seq, hash) = audit.head();
        tracing::info!(data_dir = %loaded.config.data_dir.display(), audit_head = seq, audit_head_sha256 = %hash, "Store open");
    }

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
    log_audit_head(&audit);
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

/// Logs the audit head (INFO, to the journal): a copy of it outside the
/// store, to anchor `levee audit verify --head` to. Every
/// [`AUDIT_HEAD_EVERY`] and at shutdown.
fn log_audit_head(audit: &AuditLog) {
    let (seq, hash) = audit.head();
    // Always logged, whatever [log] level says (see `logging`).
    tracing::info!(target: "levee::audit_head", seq, sha256 = %hash, "Audit head");
}

/// How often the audit head is logged.
const AUDIT_HEAD_EVERY: Duration = Duration::from_secs(300);
/// How often failed authentications are audited (one entry per source).
const AUTH_FAILURES_EVERY: Duration = Duration::from_secs(60);
/// Connections the admin socket serves at once at most (the CLI and the
/// dead-man; the idlest gives way to a new one when all are taken).
pub const ADMIN_MAX_CONNECTIONS: usize = 32;
/// File handles kept for everything but HTTP connections and RocksDB's
/// tables: collector sockets, the gobgpd channel, provider calls, nft,
/// logs, the WAL and MANIFEST, the heartbeat, the spool.
const FD_RESERVE: u64 = 128;

/// The HTTP connection caps `[web]` asks for, within what the open-files
/// limit leaves (see [`FD_RESERVE`]); logged when it leaves less.
fn http_limits(web: &crate::config::Web) -> (web::serve::Limits, web::serve::Limits) {
    let (soft, _) = crate::store::open_files_limit();
    let taken = u64::try_from(crate::store::max_open_files()).unwrap_or(512)
        + ADMIN_MAX_CONNECTIONS as u64
        + FD_RESERVE;
    let budget = usize::try_from(soft.saturating_sub(taken)).unwrap_or(usize::MAX);
    let max = web.max_connections.min(budget).max(8);
    if max < web.max_connections {
        tracing::warn!(
            open_files = soft,
            max_connections = web.max_connections,
            serving = max,
            "The open-files limit leaves room for fewer HTTP connections than [web] max_connections; raise the limit (LimitNOFILE=)"
        );
    }
    let tcp = web::serve::Limits {
        header_read_timeout: web.header_read_timeout,
        request_timeout: web.request_timeout,
        max_connections: max,
        max_per_client: web.max_connections_per_client.min(max),
    };
    let admin = web::serve::Limits {
        max_connections: ADMIN_MAX_CONNECTIONS,
        max_per_client: ADMIN_MAX_CONNECTIONS,
        ..tcp
    };
    (tcp, admin)
}

async fn control_plane(
    config_path: PathBuf,
    loaded: Loaded,
    store: Arc<Store>,
    audit: Arc<AuditLog>,
    log: LogHandle,
    mut signals: Signals,
) -> anyhow::Result<()> {
    let counters = Arc::new(ControlCounters::default());
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
    let web_cfg = Arc::new(config_rx.borrow().config.web.clone());
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding the web server to {listen}"))?;
    let local = listener.local_addr()?;
    let metrics_listener = match web_cfg.metrics_listen {
        Some(a) => Some(
            tokio::net::TcpListener::bind(a)
                .await
                .with_context(|| format!("binding the metrics server to {a}"))?,
        ),
        None => None,
    };
    let (tcp_limits, admin_limits) = http_limits(&web_cfg);
    let tcp_gate = web::serve::Gate::new("web", tcp_limits);
    let admin_gate = web::serve::Gate::new("admin", admin_limits);
    let state = WebState {
        started: Instant::now(),
        store: store.clone(),
        audit: audit.clone(),
        counters: counters.clone(),
        ingest: Some(ingest.clone()),
        dataplane: Some(dataplane.clone()),
        mitigation: Some(mitigation),
        config: Some(config_rx.clone()),
        web: web_cfg.clone(),
        auth_failures: Arc::default(),
        gates: vec![tcp_gate.clone(), admin_gate.clone()],
    };
    let auth_failures = state.auth_failures.clone();
    let admin = bind_admin_socket(store.data_dir())?;
    let heartbeat = start_heartbeat(store.data_dir())?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let admin_server = tokio::spawn(web::serve::serve(
        admin,
        web::admin_router(state.clone()),
        admin_gate,
        stop_rx.clone(),
    ));
    let metrics_server = metrics_listener.map(|l| {
        if let Ok(addr) = l.local_addr() {
            tracing::info!(addr = %addr, token = web_cfg.metrics_token.is_some(), "Metrics listening");
        }
        tokio::spawn(web::serve::serve(
            l,
            web::metrics_router(state.clone()),
            tcp_gate.clone(),
            stop_rx.clone(),
        ))
    });
    for addr in web_cfg.remote_addresses() {
        tracing::warn!(
            %addr,
            "Serving plain HTTP on a non-loopback address ([web] allow_remote = true): API keys, \
             and whatever /metrics shows, cross the network unencrypted; put a TLS-terminating \
             proxy in front"
        );
    }
    let metrics_addr = web_cfg.metrics_listen.unwrap_or(listen);
    if web_cfg.metrics_token.is_none() && !metrics_addr.ip().is_loopback() {
        tracing::warn!(
            addr = %metrics_addr,
            "/metrics (exporters, hostgroups and their live rates, incidents, mitigations) is \
             readable by anyone who reaches this address; set [web] metrics_token"
        );
    }
    let web_server = tokio::spawn(web::serve::serve(
        listener,
        web::router(state),
        tcp_gate,
        stop_rx,
    ));
    let server = async move {
        let _ = web_server.await;
        let _ = admin_server.await;
        if let Some(m) = metrics_server {
            let _ = m.await;
        }
    };
    // Last: tests and operators wait for this line.
    tracing::info!(
        addr = %local,
        max_connections = tcp_limits.max_connections,
        max_connections_per_client = tcp_limits.max_per_client,
        "Web server listening"
    );
    let periodic = {
        let (audit, failures) = (audit.clone(), auth_failures.clone());
        tokio::spawn(async move {
            let mut head = tokio::time::interval(AUDIT_HEAD_EVERY);
            let mut auth = tokio::time::interval(AUTH_FAILURES_EVERY);
            head.tick().await;
            auth.tick().await;
            loop {
                tokio::select! {
                    _ = head.tick() => log_audit_head(&audit),
                    _ = auth.tick() => {
                        let (a, f) = (audit.clone(), failures.clone());
                        let _ = tokio::task::spawn_blocking(move || f.flush(&a)).await;
                    }
                }
            }
        })
    };

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
    periodic.abort();
    let _ = stop_tx.send(true);
    tokio::task::spawn_blocking(move || ingest.stop())
        .await
        .ok();
    if tokio::time::timeout(SHUTDOWN_GRACE, server).await.is_err() {
        tracing::warn!("Web requests still running after the grace period; closing them");
    }
    // What failed in the last window is audited before the stop.
    let a = audit.clone();
    let _ = tokio::task::spawn_blocking(move || auth_failures.flush(&a)).await;
    heartbeat.abort();
    let _ = std::fs::remove_file(heartbeat_path(store.data_dir()));
    let _ = std::fs::remove_file(admin_socket_path(store.data_dir()));
    Ok(())
}

/// Where the CLI reaches a running levee.
pub fn admin_socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join("levee.sock")
}

/// The heartbeat levee writes every [`HEARTBEAT_EVERY`]: the dead-man
/// tells a busy levee (its admin socket does not answer, its heartbeat is
/// fresh) from a dead one by it.
pub fn heartbeat_path(data_dir: &Path) -> PathBuf {
    data_dir.join("levee.heartbeat")
}

/// How often levee writes its heartbeat.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);

/// A heartbeat: Unix ms and pid, fixed width so that each write replaces
/// the last whole.
fn heartbeat_text(now_ms: u64, pid: u32) -> String {
    format!("{now_ms:020} {pid:010}\n")
}

/// The heartbeat in `data_dir`: when it was last written (Unix ms) and by
/// which pid; `None` when there is none or it cannot be read.
pub fn read_heartbeat(data_dir: &Path) -> Option<(u64, u32)> {
    let text = std::fs::read_to_string(heartbeat_path(data_dir)).ok()?;
    let (ms, pid) = text.trim().split_once(' ')?;
    Some((ms.parse().ok()?, pid.parse().ok()?))
}

/// Opens the heartbeat file once (a levee out of file handles still
/// beats) and rewrites it in place every [`HEARTBEAT_EVERY`] from a task
/// of the control plane's runtime: a wedged runtime stops beating.
fn start_heartbeat(data_dir: &Path) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    use std::os::unix::fs::{FileExt, OpenOptionsExt};
    let path = heartbeat_path(data_dir);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("creating the heartbeat {}", path.display()))?;
    let pid = std::process::id();
    let beat = move || {
        let now = levee_collectors::clock::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as u64;
        file.write_all_at(heartbeat_text(now, pid).as_bytes(), 0)
    };
    beat().with_context(|| format!("writing the heartbeat {}", path.display()))?;
    Ok(tokio::spawn(async move {
        let mut tick = tokio::time::interval(HEARTBEAT_EVERY);
        let mut failing = false;
        loop {
            tick.tick().await;
            match beat() {
                Ok(()) => failing = false,
                Err(e) if !failing => {
                    tracing::error!(error = %e, "Cannot write the heartbeat; the dead-man may take levee for dead");
                    failing = true;
                }
                Err(_) => {}
            }
        }
    }))
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
fn reload(
    path: &Path,
    current: &Loaded,
    audit: &AuditLog,
    counters: &ControlCounters,
) -> Option<Loaded> {
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
            // The chain keeps what it is given for ever: a changed secret
            // is recorded as changed, with a keyed hash, never its value
            // (config::secrets).
            let recorded = diff.redacted(&|v| audit.secret_mac(v));
            let id = next.identity(&|v| audit.secret_mac(v));
            let secrets: Vec<&String> = diff
                .added
                .keys()
                .chain(diff.removed.keys())
                .chain(diff.changed.keys())
                .filter(|k| config::secrets::is_secret(k) || config::secrets::is_url(k))
                .collect();
            if let Err(e) = audit.append(
                Actor::System("config"),
                "config.reload",
                &target,
                json!({
                    "sha256": id.sha256,
                    "hmac_sha256": id.hmac_sha256,
                    "diff": recorded,
                    "restart_required": restart,
                    "secrets_changed": secrets,
                }),
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
            let now = levee_collectors::clock::now()
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
