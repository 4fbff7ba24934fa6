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
//! Busy is not dead. A levee under attack may be slow to answer — its
//! admin socket's connections all taken, its runtime loaded — and
//! withdrawing healthy routes because a socket was full would finish the
//! attacker's work. So besides the socket the watchdog reads levee's
//! heartbeat (`data_dir/levee.heartbeat`, rewritten every second by the
//! running levee from its control plane): a heartbeat at most
//! [`HEARTBEAT_FRESH`] old, written by the levee that holds the store's
//! lock (asked of the kernel with `fcntl(F_GETLK)`, so a hidden `/proc`
//! does not make a busy levee look dead), is a levee alive, whatever the
//! socket says. Only a levee that
//! neither answers nor beats is down; a killed levee stops beating at
//! once (its lock goes with it).
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

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use levee_bgp::Speaker;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::audit::{self, AuditLog};
use crate::config::Config;
use crate::store::{Store, StoreError};

/// How often a spooled entry is offered to the store while levee is down.
const SPOOL_RETRY: Duration = Duration::from_secs(10);

/// A heartbeat at most this old is a levee alive (it writes one every
/// second).
pub const HEARTBEAT_FRESH: Duration = Duration::from_secs(5);

/// How long the dead-man waits for levee's admin socket to answer.
const ASK_TIMEOUT: Duration = Duration::from_secs(5);

/// What the dead-man sees of levee.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// It answered `/healthz` on its admin socket.
    Answers,
    /// It did not answer, but its heartbeat is fresh: busy, not dead.
    Busy { heartbeat_age_ms: u64 },
    /// Neither: down.
    Down,
}

impl Seen {
    pub fn alive(self) -> bool {
        self != Seen::Down
    }
}

/// Whether a levee answers `/healthz` on the admin socket of `data_dir`
/// within [`ASK_TIMEOUT`] (connecting included: a socket whose backlog
/// is full does not hang the watchdog).
pub async fn levee_answers(data_dir: &Path) -> bool {
    let path = crate::app::admin_socket_path(data_dir);
    let ask = async {
        let mut s = tokio::net::UnixStream::connect(path).await.ok()?;
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: levee\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut head = [0u8; 12];
        s.read_exact(&mut head).await.ok()?;
        Some(head.starts_with(b"HTTP/1.1 200"))
    };
    tokio::time::timeout(ASK_TIMEOUT, ask)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

/// The age of levee's heartbeat when it is fresh and written by the levee
/// that holds the store's lock (a stale file, or one whose writer is gone,
/// is no sign of life).
pub fn heartbeat_age(data_dir: &Path) -> Option<Duration> {
    let (at_ms, pid) = crate::app::read_heartbeat(data_dir)?;
    let now_ms = levee_collectors::clock::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64;
    // A clock stepped back makes a heartbeat "from the future": still
    // fresh within the same bound.
    let age = Duration::from_millis(now_ms.abs_diff(at_ms));
    if age > HEARTBEAT_FRESH {
        return None;
    }
    // Its writer must hold the store's lock now: asked of the kernel
    // first (no `/proc` needed), else named from `/proc`.
    if let Some(owner) = crate::store::lock_owner_pid(data_dir).filter(|&p| p != 0) {
        return (owner == pid).then_some(age);
    }
    let holder = crate::store::lock_holder(data_dir);
    (holder.role == crate::store::Role::Levee && holder.pid == Some(pid)).then_some(age)
}

/// What levee is now: answering, busy (a fresh heartbeat) or down.
pub async fn look(data_dir: &Path) -> Seen {
    if levee_answers(data_dir).await {
        return Seen::Answers;
    }
    let dir = data_dir.to_owned();
    match tokio::task::spawn_blocking(move || heartbeat_age(&dir))
        .await
        .ok()
        .flatten()
    {
        Some(age) => Seen::Busy {
            heartbeat_age_ms: age.as_millis() as u64,
        },
        None => Seen::Down,
    }
}

/// Runs the watchdog until `stop` resolves. It never gives up: gobgpd
/// unreachable or levee's store busy are retried.
pub async fn run(cfg: &Config, stop: impl std::future::Future<Output = ()>) {
    tokio::pin!(stop);
    let dead_man = cfg.mitigation.dead_man;
    tracing::info!(
        data_dir = %cfg.data_dir.display(),
        gobgpd = %cfg.bgp.gobgp_grpc,
        dead_man = %humantime::format_duration(dead_man),
        "Dead-man watching levee"
    );
    let mut down_since: Option<Instant> = None;
    let mut busy = false;
    let mut fired = false;
    let mut spool_tried = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = tick.tick() => {}
        }
        let seen = look(&cfg.data_dir).await;
        match seen {
            Seen::Busy { heartbeat_age_ms } if !busy => {
                tracing::warn!(
                    heartbeat_age_ms,
                    "levee does not answer on its admin socket, but its heartbeat is fresh: busy, not dead; its routes stay"
                );
                busy = true;
            }
            Seen::Answers if busy => {
                tracing::info!("levee answers on its admin socket again");
                busy = false;
            }
            _ => {}
        }
        if seen.alive() {
            if down_since.take().is_some() {
                tracing::info!("levee is back");
            }
            fired = false;
            continue;
        }
        busy = false;
        let since = *down_since.get_or_insert_with(|| {
            tracing::warn!(
                "levee does not answer on its admin socket and its heartbeat has stopped"
            );
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
pub async fn withdraw_all(cfg: &Config) -> Result<usize, levee_bgp::Error> {
    let mut speaker = Speaker::connect(cfg.bgp.gobgp_grpc).await?;
    let (routes, _) = speaker.local_routes().await?;
    if look(&cfg.data_dir).await.alive() {
        tracing::info!("levee is alive again; its routes stay");
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
