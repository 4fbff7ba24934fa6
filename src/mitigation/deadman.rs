//! The dead-man (MIT-10): `levee deadman`, a small watchdog that runs beside
//! levee (its own systemd service) and withdraws levee's routes from gobgpd
//! when levee has been down for longer than `[mitigation] dead_man`.
//!
//! A blackhole must not outlive the judgement that made it. While levee
//! runs, its engine withdraws what it no longer needs; when levee dies and
//! stays dead (a crash loop, a broken upgrade, a dead disk), nothing would,
//! and gobgpd keeps announcing. The watchdog asks levee's admin socket for
//! `/healthz` every second; once levee has not answered for `dead_man`, it
//! withdraws every API-originated route in gobgpd inside the protected
//! hostgroups (the routes reconciliation treats as levee's), logs each one
//! and audits the act. The intents stay in the store: when levee comes back
//! it restores those not yet expired and reconciliation announces them
//! again, so a short outage of the watchdog's making is repaired.
//!
//! It never stands in the way of a levee that starts. It needs neither
//! levee nor the store's lock to act, and never waits for the lock: its
//! audit entry is first spooled (`audit::spool`, durable), then — if the
//! lock is free at that moment — the store is opened for that one write and
//! closed at once; a levee starting meanwhile waits that moment out
//! (`Store::open_waiting`). When the lock is held, whoever holds or next
//! takes it appends the spooled entry: levee at its start (and within a
//! minute while it runs), a CLI change, or the dead-man's own next try
//! while levee stays down. Just before it withdraws, it asks levee once
//! more, so a levee that came back in the meantime keeps its routes.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use levee_bgp::Speaker;
use serde_json::json;

use crate::audit::{self, AuditLog};
use crate::config::Config;
use crate::store::{Store, StoreError};

/// How often a spooled entry is offered to the store while levee is down.
const SPOOL_RETRY: Duration = Duration::from_secs(10);

/// Whether a levee answers `/healthz` on the admin socket of `data_dir`.
pub fn levee_alive(data_dir: &Path) -> bool {
    let path = crate::app::admin_socket_path(data_dir);
    let Ok(mut s) = UnixStream::connect(path) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(5)));
    if s.write_all(b"GET /healthz HTTP/1.1\r\nHost: levee\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 12];
    s.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.1 200")
}

/// Runs the watchdog until `stop` resolves.
pub async fn run(cfg: &Config, stop: impl std::future::Future<Output = ()>) -> anyhow::Result<()> {
    tokio::pin!(stop);
    let dead_man = cfg.mitigation.dead_man;
    tracing::info!(
        data_dir = %cfg.data_dir.display(),
        gobgpd = %cfg.bgp.gobgp_grpc,
        dead_man = %humantime::format_duration(dead_man),
        "Dead-man watching levee"
    );
    let mut down_since: Option<Instant> = None;
    let mut fired = false;
    let mut spool_tried = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = &mut stop => return Ok(()),
            _ = tick.tick() => {}
        }
        let dir = cfg.data_dir.clone();
        let alive = tokio::task::spawn_blocking(move || levee_alive(&dir))
            .await
            .unwrap_or(false);
        if alive {
            if down_since.take().is_some() {
                tracing::info!("levee is back");
            }
            fired = false;
            continue;
        }
        let since = *down_since.get_or_insert_with(|| {
            tracing::warn!("levee does not answer on its admin socket");
            Instant::now()
        });
        if spool_tried.elapsed() >= SPOOL_RETRY && audit::spool_pending(&cfg.data_dir) {
            spool_tried = Instant::now();
            let dir = cfg.data_dir.clone();
            let _ = tokio::task::spawn_blocking(move || take_in_spool(&dir)).await;
        }
        if fired || since.elapsed() < dead_man {
            continue;
        }
        match withdraw_all(cfg).await {
            Ok(n) => {
                tracing::warn!(
                    routes = n,
                    "levee down past the dead-man time: its routes withdrawn"
                );
                fired = true;
            }
            Err(e) => {
                tracing::error!(error = %e, "Dead-man could not withdraw levee's routes; retrying")
            }
        }
    }
}

/// Withdraws every API-originated route of gobgpd inside the protected
/// hostgroups; returns how many. Withdraws nothing when levee answers
/// again by the time the routes are listed.
pub async fn withdraw_all(cfg: &Config) -> anyhow::Result<usize> {
    let mut speaker = Speaker::connect(cfg.bgp.gobgp_grpc).await?;
    let (routes, _) = speaker.local_routes().await?;
    let dir = cfg.data_dir.clone();
    if tokio::task::spawn_blocking(move || levee_alive(&dir))
        .await
        .unwrap_or(false)
    {
        tracing::info!("levee answers again; its routes stay");
        return Ok(0);
    }
    let mut withdrawn = Vec::new();
    for r in routes {
        if !cfg.protects(&r.prefix()) {
            continue;
        }
        speaker.withdraw(&r).await?;
        tracing::warn!(route = %r, "Dead-man withdrew");
        withdrawn.push(r.to_string());
    }
    if !withdrawn.is_empty() {
        let details = json!({
            "dead_man": humantime::format_duration(cfg.mitigation.dead_man).to_string(),
            "withdrawn": withdrawn,
        });
        let dir = cfg.data_dir.clone();
        let _ = tokio::task::spawn_blocking(move || {
            if let Err(e) = audit::spool(&dir, "deadman", "mitigation.deadman", "gobgpd", details) {
                tracing::error!(error = %e, "Cannot spool the dead-man's audit entry");
            }
            take_in_spool(&dir);
        })
        .await;
    }
    Ok(withdrawn.len())
}

/// Appends the spooled audit entries if the store's lock is free this
/// moment: opened for that write, closed at once; never waits.
fn take_in_spool(data_dir: &Path) {
    match Store::open(data_dir) {
        Ok(store) => {
            if let Err(e) = AuditLog::open(Arc::new(store)) {
                tracing::error!(error = %e, "Cannot open the audit log");
            }
        }
        Err(StoreError::Locked { holder, .. }) => tracing::info!(
            %holder,
            "The store is in use; the dead-man's audit entry waits in the spool for it"
        ),
        Err(e) => {
            tracing::error!(error = %e, "Cannot open the store; the audit entry stays spooled")
        }
    }
}
