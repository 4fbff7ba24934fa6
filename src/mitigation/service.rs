//! The mitigation task: the engine's decisions carried out through gobgpd.
//!
//! Order for an announcement: the intent is written to the store (synced),
//! then the route is sent; for a withdrawal the intent is deleted first,
//! then the route withdrawn. Whatever fails in between (gobgpd down, levee
//! killed) is repaired by reconciliation, which compares gobgpd's
//! API-originated routes with the intents — at start-up, whenever the
//! connection to gobgpd comes back (gobgpd forgets API routes when it
//! restarts) and every `reconcile_every` — announcing what is missing and
//! withdrawing what levee no longer means (only inside the protected
//! hostgroups: routes elsewhere are not levee's).
//!
//! Every step goes to the mitigation log (store, MIT-9) and the audit
//! chain. Sending is paced by `updates_per_second`. The connection to
//! gobgpd is retried with backoff (1 s doubling to 30 s) and reported.
//!
//! What remote peers say (gobgpd's errors, a scrubbing provider's answer)
//! is logged escaped (`?`: quoted, control characters as escapes), so it
//! cannot forge log lines. The provider's URL is never logged, stored or
//! audited with its credentials (`user:password@`, query values): the
//! intent keeps it redacted, and the call takes the credentials from the
//! running config's `[scrubbing] http_url` when the endpoint is the same.
//!
//! What remote peers say (gobgpd's errors, a scrubbing provider's answer)
//! is logged escaped (`?`: quoted, control characters as escapes), so it
//! cannot forge log lines. The provider's URL is never logged, stored or
//! audited with its credentials (`user:password@`, query values): the
//! intent keeps it redacted, and the call takes the credentials from the
//! running config's `[scrubbing] http_url` when the endpoint is the same.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use levee_bgp::{FlowSpecRule, Route, Sent, Speaker};
use levee_collectors::clock::now_ms;
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot, watch};

use super::engine::{self, Action, Engine};
use super::firewall::FirewallError;
use super::{adapter, Error, Mitigation};
use crate::audit::{Actor, AuditLog};
use crate::config::{Config, Level, Loaded};
use crate::detect::Incident;
use crate::store::Store;

/// What the API and `/metrics` read.
#[derive(Default)]
pub struct Shared {
    /// The mitigations in force, as of the last change.
    pub active: Mutex<Vec<Mitigation>>,
    /// Whether levee is connected to gobgpd.
    pub bgp_up: AtomicBool,
    pub announced: AtomicU64,
    pub withdrawn: AtomicU64,
    pub refused: AtomicU64,
    /// Sends gobgpd refused or that found it unreachable.
    pub failed: AtomicU64,
    /// Routes reconciliation announced again or withdrawn.
    pub repaired: AtomicU64,
    /// Incident updates lost because the queue to this task was full.
    pub dropped: AtomicU64,
    /// gobgpd round trips, microseconds.
    pub round_trip: Mutex<Option<hdrhistogram::Histogram<u64>>>,
}

/// A request from the API or the CLI.
pub enum Command {
    Announce {
        host: IpAddr,
        level: Level,
        rule: Option<FlowSpecRule>,
        ttl: Duration,
        actor: String,
        reply: oneshot::Sender<Result<Vec<Mitigation>, Error>>,
    },
    Withdraw {
        id: String,
        actor: String,
        reply: oneshot::Sender<Result<(), Error>>,
    },
}

/// How the rest of levee reaches the mitigation task.
#[derive(Clone)]
pub struct Handle {
    incidents: mpsc::Sender<Box<Incident>>,
    commands: mpsc::Sender<Command>,
    pub shared: Arc<Shared>,
}

impl Handle {
    /// Hands an incident (started, updated, ended) to the task without
    /// blocking; a full queue drops it and counts (the next update carries
    /// the whole state again).
    pub fn incident(&self, inc: &Incident) {
        if self.incidents.try_send(Box::new(inc.clone())).is_err() {
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub async fn command(&self, c: Command) -> Result<(), Error> {
        self.commands.send(c).await.map_err(|_| stopped())
    }
}

/// The answer when the mitigation task is gone.
pub fn stopped() -> Error {
    Error::Unavailable("the mitigation task has stopped".to_owned())
}

/// Starts the task on the current tokio runtime.
pub fn start(
    config: watch::Receiver<Arc<Loaded>>,
    store: Arc<Store>,
    audit: Arc<AuditLog>,
) -> Handle {
    let (itx, irx) = mpsc::channel(4096);
    let (ctx, crx) = mpsc::channel(64);
    let shared = Arc::new(Shared::default());
    let task = Task::new(config, store, audit, shared.clone());
    tokio::spawn(task.run(irx, crx));
    Handle {
        incidents: itx,
        commands: ctx,
        shared,
    }
}

struct Task {
    config: watch::Receiver<Arc<Loaded>>,
    cfg: Arc<Config>,
    store: Arc<Store>,
    audit: Arc<AuditLog>,
    shared: Arc<Shared>,
    engine: Engine,
    speaker: Option<Speaker>,
    next_connect: Instant,
    backoff: Duration,
    last_reconcile: Instant,
    log_seq: u64,
    /// Send pacing: the earliest moment the next update may go.
    next_send: Instant,
    last_fw_reconcile: Option<Instant>,
    /// Whether levee has written the firewall table since it started.
    firewall_touched: bool,
    /// Provider calls that failed, to retry: (mitigation, divert).
    pending_http: Vec<(Mitigation, bool)>,
    /// The upstream policies in gobgpd need (re)writing.
    policy_dirty: bool,
    /// Connections made so far; a "gone" notice names the one it is about.
    generation: u64,
    gone_tx: mpsc::Sender<(u64, String)>,
    gone_rx: mpsc::Receiver<(u64, String)>,
}

/// Why a scrubbing provider's call failed. The texts hold no credentials:
/// the URL is shown without them, and errors and answers are scrubbed of
/// the token and the URL's own.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// No answer: the provider could not be reached, or timed out.
    #[error("{0}")]
    Unreachable(String),
    /// The provider answered with a status that is not success.
    #[error("{url} answered {answer}")]
    Refused { url: String, answer: String },
}

/// One POST of JSON; the answer's status and (the start of) its body.
fn post(
    url: &str,
    token: Option<&str>,
    timeout: Duration,
    body: &str,
) -> Result<String, ProviderError> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .build()
        .into();
    let mut req = agent.post(url).header("Content-Type", "application/json");
    if let Some(t) = token {
        req = req.header("Authorization", &format!("Bearer {t}"));
    }
    let shown = crate::config::secrets::redact_url(url);
    // What the provider may echo back: its token, and the URL's own
    // credentials (password, query values, a token in the path).
    let from_url = crate::config::secrets::url_secrets(url);
    let secrets: Vec<&str> = token
        .into_iter()
        .chain(from_url.iter().map(String::as_str))
        .collect();
    let mut resp = req.send(body).map_err(|e| {
        ProviderError::Unreachable(crate::config::secrets::scrub(
            &format!("{shown}: {e}"),
            &secrets,
        ))
    })?;
    let status = resp.status();
    let text = resp
        .body_mut()
        .with_config()
        .limit(4096)
        .read_to_string()
        .unwrap_or_default();
    let answer = format!("{} {}", status.as_u16(), text.trim());
    let answer = crate::config::secrets::scrub(&answer, &secrets);
    if status.is_success() {
        Ok(answer)
    } else {
        Err(ProviderError::Refused { url: shown, answer })
    }
}

/// The audit action of an announcement or a withdrawal.
fn audit_verb(announce: bool) -> &'static str {
    if announce {
        "mitigation.announce"
    } else {
        "mitigation.withdraw"
    }
}

impl Task {
    fn new(
        config: watch::Receiver<Arc<Loaded>>,
        store: Arc<Store>,
        audit: Arc<AuditLog>,
        shared: Arc<Shared>,
    ) -> Task {
        let cfg = Arc::new(config.borrow().config.clone());
        let mut engine = Engine::new(cfg.clone());
        match store.intents() {
            Ok(rows) => {
                let ms: Vec<Mitigation> = rows
                    .iter()
                    .filter_map(|(k, v)| match serde_json::from_slice(v) {
                        Ok(m) => Some(m),
                        Err(e) => {
                            tracing::error!(intent = %k, error = %e, "Unreadable intent; reconciliation will withdraw its route");
                            None
                        }
                    })
                    .collect();
                if !ms.is_empty() {
                    tracing::info!(
                        count = ms.len(),
                        "Mitigations restored from the intent store"
                    );
                }
                engine.restore(ms, now_ms());
            }
            Err(e) => tracing::error!(error = %e, "Cannot read the intent store"),
        }
        *shared.active.lock().unwrap_or_else(|e| e.into_inner()) = engine.active().to_vec();
        let (gone_tx, gone_rx) = mpsc::channel(4);
        Task {
            config,
            cfg,
            store,
            audit,
            shared,
            engine,
            speaker: None,
            next_connect: Instant::now(),
            backoff: Duration::from_secs(1),
            last_reconcile: Instant::now(),
            log_seq: 0,
            next_send: Instant::now(),
            last_fw_reconcile: None,
            firewall_touched: false,
            pending_http: Vec::new(),
            policy_dirty: true,
            generation: 0,
            gone_tx,
            gone_rx,
        }
    }

    async fn run(
        mut self,
        mut incidents: mpsc::Receiver<Box<Incident>>,
        mut commands: mpsc::Receiver<Command>,
    ) {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // What was restored is held to the configuration levee starts with
        // (it may have changed while levee was down), as a reload would.
        let actions = self.engine.reconfigure(self.cfg.clone());
        self.apply(actions).await;
        loop {
            tokio::select! {
                inc = incidents.recv() => {
                    let Some(inc) = inc else { break };
                    let actions = self.engine.incident(&inc, now_ms());
                    self.apply(actions).await;
                }
                c = commands.recv() => {
                    let Some(c) = c else { break };
                    self.command(c).await;
                }
                gone = self.gone_rx.recv() => {
                    if let Some((generation, why)) = gone {
                        if generation == self.generation && self.speaker.is_some() {
                            tracing::warn!(why = ?why, "gobgpd went away; reconnecting and repairing");
                            self.speaker = None;
                            self.shared.bgp_up.store(false, Ordering::Relaxed);
                            self.next_connect = Instant::now();
                            self.maintain().await;
                        }
                    }
                }
                _ = tick.tick() => {
                    if self.config.has_changed().unwrap_or(false) {
                        let next = Arc::new(self.config.borrow_and_update().config.clone());
                        if next.bgp.upstreams != self.cfg.bgp.upstreams
                            || next.bgp.blackhole_community != self.cfg.bgp.blackhole_community
                        {
                            self.policy_dirty = true;
                        }
                        self.cfg = next;
                        let actions = self.engine.reconfigure(self.cfg.clone());
                        self.apply(actions).await;
                    }
                    let actions = self.engine.tick(now_ms());
                    self.apply(actions).await;
                    self.maintain().await;
                }
            }
        }
    }

    async fn command(&mut self, c: Command) {
        match c {
            Command::Announce {
                host,
                level,
                rule,
                ttl,
                actor,
                reply,
            } => {
                let now = now_ms();
                let planned = self
                    .engine
                    .manual_plan(host, level, rule, ttl.as_millis() as u64, &actor, now)
                    .and_then(|m| {
                        // An operator must hear that a route cannot reach
                        // the routers now, not find out later: without
                        // gobgpd nothing is stored or sent (an automatic
                        // mitigation's intent waits for reconciliation; a
                        // person can try again or use another level).
                        if !m.shadow && m.adapter() == "gobgp" && self.speaker.is_none() {
                            return Err(Error::Unavailable(format!(
                                "levee is not connected to gobgpd ({}): nothing was announced",
                                self.cfg.bgp.gobgp_grpc
                            )));
                        }
                        Ok(m)
                    });
                let out = match planned {
                    Ok(m) => {
                        let actions = self.engine.commit(m, now);
                        let ms = actions
                            .iter()
                            .filter_map(|a| match a {
                                Action::Announce(m) => Some(m.clone()),
                                _ => None,
                            })
                            .collect();
                        self.apply(actions).await;
                        Ok(ms)
                    }
                    Err(e) => {
                        tracing::warn!(%host, %level, %actor, error = %e, "Manual mitigation refused");
                        Err(e)
                    }
                };
                let _ = reply.send(out);
            }
            Command::Withdraw { id, actor, reply } => {
                let out = match self.engine.withdraw(&id, &actor) {
                    Ok(actions) => {
                        self.apply(actions).await;
                        Ok(())
                    }
                    Err(e) => Err(e),
                };
                let _ = reply.send(out);
            }
        }
    }

    /// Connects when disconnected (with backoff); reconciles on connection
    /// and every `reconcile_every`.
    async fn maintain(&mut self) {
        let every = self.cfg.mitigation.reconcile_every;
        if self.last_fw_reconcile.is_none_or(|t| t.elapsed() >= every) {
            self.reconcile_firewall().await;
            self.retry_provider_calls().await;
        }
        if self.speaker.is_none() {
            if Instant::now() < self.next_connect {
                return;
            }
            match Speaker::connect(self.cfg.bgp.gobgp_grpc).await {
                Ok(s) => {
                    tracing::info!(gobgpd = %self.cfg.bgp.gobgp_grpc, "Connected to gobgpd");
                    // Notice at once when this daemon goes away (a restart
                    // forgets every API route).
                    self.generation += 1;
                    let (watch, tx, generation) =
                        (s.clone(), self.gone_tx.clone(), self.generation);
                    tokio::spawn(async move {
                        let why = watch.gone().await;
                        let _ = tx.send((generation, why)).await;
                    });
                    self.speaker = Some(s);
                    self.shared.bgp_up.store(true, Ordering::Relaxed);
                    self.backoff = Duration::from_secs(1);
                    self.policy_dirty = true;
                    self.apply_policy().await;
                    self.reconcile().await;
                }
                Err(e) => {
                    if self.backoff == Duration::from_secs(1) {
                        tracing::warn!(error = ?e.to_string(), "gobgpd unreachable; retrying with backoff");
                    }
                    self.next_connect = Instant::now() + self.backoff;
                    self.backoff = (self.backoff * 2).min(Duration::from_secs(30));
                }
            }
            return;
        }
        if self.policy_dirty {
            self.apply_policy().await;
        }
        if self.last_reconcile.elapsed() >= self.cfg.mitigation.reconcile_every {
            self.reconcile().await;
        }
    }

    fn disconnected(&mut self, e: &levee_bgp::Error) {
        if matches!(e, levee_bgp::Error::Unavailable { .. }) && self.speaker.is_some() {
            tracing::warn!(error = ?e.to_string(), "Lost gobgpd; reconnecting");
            self.speaker = None;
            self.shared.bgp_up.store(false, Ordering::Relaxed);
            self.next_connect = Instant::now();
        }
    }

    /// The firewall mitigations that must be in the nftables table.
    fn firewall_in_force(&self) -> impl Iterator<Item = &Mitigation> {
        self.engine
            .active()
            .iter()
            .filter(|m| m.level == Level::Firewall && !m.shadow)
    }

    /// Writes the nftables table from the firewall mitigations in force.
    /// Returns the script and nft's verdict.
    async fn firewall_sync(&mut self) -> (String, Result<(), FirewallError>) {
        let refs: Vec<&Mitigation> = self.firewall_in_force().collect();
        let script = match super::firewall::script(&refs) {
            Ok(s) => s,
            Err(e) => return (String::new(), Err(e)),
        };
        let s2 = script.clone();
        let r = tokio::task::spawn_blocking(move || super::firewall::apply(&s2))
            .await
            .unwrap_or_else(|e| Err(FirewallError::Run(std::io::Error::other(e))));
        if let Err(e) = &r {
            self.shared.failed.fetch_add(1, Ordering::Relaxed);
            tracing::error!(error = ?e.to_string(), "Cannot write the firewall table");
        }
        (script, r)
    }

    /// Makes the nftables table match the firewall mitigations in force.
    async fn reconcile_firewall(&mut self) {
        self.last_fw_reconcile = Some(Instant::now());
        let mut want: Vec<String> = self.firewall_in_force().map(|m| m.id.clone()).collect();
        want.sort();
        if want.is_empty() && !self.cfg.firewall.enabled {
            // Never used here: do not even look (nft may be absent).
            if !self.firewall_touched {
                return;
            }
        }
        let have = tokio::task::spawn_blocking(super::firewall::installed)
            .await
            .unwrap_or_else(|e| Err(FirewallError::Run(std::io::Error::other(e))));
        match have {
            Ok(have) if have == want => {}
            Ok(have) => {
                if self.cfg.mitigation.dry_run {
                    tracing::warn!(
                        ?have,
                        ?want,
                        "Dry run: the firewall table differs; not repairing"
                    );
                    return;
                }
                tracing::warn!(
                    ?have,
                    ?want,
                    "Firewall table differs from the intents; rewriting it"
                );
                let (_, r) = self.firewall_sync().await;
                if r.is_ok() {
                    self.shared.repaired.fetch_add(1, Ordering::Relaxed);
                }
                let entry = json!({
                    "time": crate::report::rfc3339_ms(now_ms()),
                    "action": "reconcile_firewall",
                    "level": Level::Firewall,
                    "adapter": "nftables",
                    "reason": format!("table held {have:?}, intents say {want:?}"),
                    "error": r.err().map(|e| e.to_string()),
                });
                self.put_log(&entry);
            }
            Err(e) => tracing::error!(error = ?e.to_string(), "Cannot read the firewall table"),
        }
    }

    /// Installs the upstreams' community translations in gobgpd (MIT-12),
    /// on every connection and after a reload that changes them.
    async fn apply_policy(&mut self) {
        let ts: Vec<levee_bgp::Translation> = self
            .cfg
            .bgp
            .upstreams
            .iter()
            .filter_map(|u| {
                u.blackhole_community.map(|c| levee_bgp::Translation {
                    neighbor: u.neighbor,
                    from: self.cfg.bgp.blackhole_community,
                    to: vec![c, levee_bgp::Community::NO_EXPORT],
                })
            })
            .collect();
        let Some(speaker) = self.speaker.as_mut() else {
            return;
        };
        match speaker.set_translations(&ts).await {
            Ok(()) => {
                self.policy_dirty = false;
                if !ts.is_empty() {
                    tracing::info!(
                        upstreams = ts.len(),
                        "Blackhole community translations installed in gobgpd"
                    );
                }
            }
            Err(e) => {
                tracing::error!(error = ?e.to_string(), "Cannot install the upstream policies in gobgpd");
                self.disconnected(&e);
            }
        }
    }

    /// Repairs gobgpd's RIB against the intents, both ways.
    async fn reconcile(&mut self) {
        self.last_reconcile = Instant::now();
        let Some(speaker) = self.speaker.as_mut() else {
            return;
        };
        let held = match speaker.local_routes().await {
            Ok((routes, _)) => routes,
            Err(e) => {
                self.disconnected(&e);
                return;
            }
        };
        let intents: Vec<Mitigation> = match self.store.intents() {
            Ok(rows) => rows
                .iter()
                .filter_map(|(_, v)| serde_json::from_slice::<Mitigation>(v).ok())
                .filter(|m| m.adapter() == "gobgp")
                .collect(),
            Err(e) => {
                tracing::error!(error = %e, "Cannot read the intent store; not reconciling");
                return;
            }
        };
        let dry_run = self.cfg.mitigation.dry_run;
        // The engine holds what is in force (it took every intent back at
        // start-up): an intent it does not hold was withdrawn, and only its
        // deletion failed. Delete it again; never announce it back.
        let live: std::collections::HashSet<String> =
            self.engine.active().iter().map(Mitigation::key).collect();
        for m in &intents {
            let is_held = held.iter().any(|r| r.same_announcement(&m.route));
            if !live.contains(&m.key()) {
                let why = "withdrawn earlier, when its intent could not be deleted";
                let key = m.key();
                match self.audit_with(
                    m,
                    "mitigation.intent",
                    json!({ "intent": "withdraw", "why": why }),
                    |b| b.intent_delete(&key),
                ) {
                    Ok(()) => {
                        tracing::warn!(mitigation = %m.id, "Deleted a withdrawn mitigation's intent")
                    }
                    Err(e) => {
                        tracing::error!(mitigation = %m.id, error = %e, "Cannot delete the intent (again)");
                    }
                }
                if is_held && !dry_run {
                    let r = self.send(&m.route, false).await;
                    self.shared.repaired.fetch_add(1, Ordering::Relaxed);
                    self.log_result(m, "reconcile_withdraw", why, r, false);
                }
                continue;
            }
            if let Err(why) = engine::guard(&self.cfg, &m.route).map_err(|e| e.to_string()) {
                // The config changed under it (a hostgroup or the never
                // list): withdraw it rather than keep or repair it.
                tracing::warn!(mitigation = %m.id, %why, "Intent no longer allowed; withdrawing it");
                let key = m.key();
                if let Err(e) = self.audit_with(
                    m,
                    "mitigation.intent",
                    json!({ "intent": "withdraw", "why": why }),
                    |b| b.intent_delete(&key),
                ) {
                    tracing::error!(mitigation = %m.id, error = %e, "Cannot delete the intent");
                }
                if is_held && !dry_run {
                    let r = self.send(&m.route, false).await;
                    self.log_result(m, "reconcile_withdraw", &why, r, false);
                } else {
                    self.log(m, "reconcile_drop", &why, None, None);
                }
                continue;
            }
            if is_held {
                continue;
            }
            if dry_run {
                self.log(
                    m,
                    "shadow_reconcile_announce",
                    "missing from gobgpd (dry run)",
                    None,
                    None,
                );
                continue;
            }
            let r = self.send(&m.route, true).await;
            self.shared.repaired.fetch_add(1, Ordering::Relaxed);
            self.log_result(m, "reconcile_announce", "missing from gobgpd", r, true);
        }
        for r in &held {
            if intents.iter().any(|m| m.route.same_announcement(r)) {
                continue;
            }
            if !self.cfg.protects(&r.prefix()) {
                continue;
            }
            let m = Mitigation {
                id: "orphan".to_owned(),
                host: r.prefix().addr(),
                hostgroup: String::new(),
                incident: None,
                level: match r {
                    Route::FlowSpec(_) => Level::Flowspec,
                    Route::Blackhole(_) => Level::Rtbh,
                    Route::Divert(_) => Level::Scrubbing,
                },
                route: r.clone(),
                created_ms: now_ms(),
                expires_ms: now_ms(),
                decided_by: "system:reconciler".to_owned(),
                reason: "in gobgpd without an intent".to_owned(),
                shadow: false,
                covers: Vec::new(),
                http: None,
                coverage: None,
                rollback: None,
                prefix: None,
            };
            if dry_run {
                self.log(
                    &m,
                    "shadow_reconcile_withdraw",
                    "no intent for it (dry run)",
                    None,
                    None,
                );
                continue;
            }
            let res = self.send(r, false).await;
            self.shared.repaired.fetch_add(1, Ordering::Relaxed);
            self.log_result(&m, "reconcile_withdraw", "no intent for it", res, false);
        }
    }

    /// Sends one update, paced; `None` when gobgpd is not connected.
    async fn send(
        &mut self,
        route: &Route,
        announce: bool,
    ) -> Option<Result<Sent, levee_bgp::Error>> {
        let pace = Duration::from_secs(1) / self.cfg.mitigation.updates_per_second.max(1);
        let now = Instant::now();
        if self.next_send > now {
            tokio::time::sleep_until(self.next_send.into()).await;
        }
        self.next_send = Instant::now().max(now) + pace;
        let speaker = self.speaker.as_mut()?;
        let t = Instant::now();
        let r = if announce {
            speaker.announce(route).await
        } else {
            speaker.withdraw(route).await
        };
        let us = t.elapsed().as_micros() as u64;
        {
            let mut h = self
                .shared
                .round_trip
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if let Some(h) = h
                .get_or_insert_with(|| {
                    hdrhistogram::Histogram::new_with_max(60_000_000, 3)
                        .unwrap_or_else(|_| unreachable!())
                })
                .record(us)
                .err()
            {
                tracing::debug!(error = %h, "round trip not recorded");
            }
        }
        if let Err(e) = &r {
            self.disconnected(e);
        }
        Some(r)
    }

    async fn apply(&mut self, actions: Vec<Action>) {
        if actions.is_empty() {
            return;
        }
        for a in actions {
            match a {
                Action::Announce(m) if m.shadow => {
                    tracing::warn!(mitigation = %m.id, route = %m.route, "Shadow: would announce");
                    self.log(&m, "shadow_announce", &m.reason.clone(), None, None);
                    self.audit(&m, "mitigation.shadow", json!({ "would": "announce" }));
                }
                Action::Announce(m) => {
                    // The intent outlives config changes and is read by
                    // the CLI: it keeps the endpoint, not its credentials.
                    let mut stored = m.clone();
                    stored.http = stored
                        .http
                        .as_deref()
                        .map(crate::config::secrets::redact_url);
                    let record = serde_json::to_vec(&stored).unwrap_or_default();
                    // The intent and its audit entry in one write: no route
                    // is decided on without its record.
                    let key = m.key();
                    let decided = self.audit_with(
                        &m,
                        "mitigation.intent",
                        json!({ "intent": "announce", "why": m.reason }),
                        |b| b.intent_put(&key, &record),
                    );
                    if let Err(e) = decided {
                        // Without a durable intent nothing is sent: a route
                        // levee could not account for after a crash would
                        // be an orphan.
                        tracing::error!(mitigation = %m.id, error = %e, "Cannot store the intent; not announcing");
                        self.log(&m, "fail", "intent not stored", None, Some(&e.to_string()));
                        continue;
                    }
                    crate::store::crash::point("intent.put", &|| key.clone());
                    tracing::warn!(mitigation = %m.id, level = %m.level, route = %m.route, reason = %m.reason, "Announcing");
                    if let Some(url) = m.http.clone() {
                        self.shared.announced.fetch_add(1, Ordering::Relaxed);
                        let reason = m.reason.clone();
                        self.provider_call(&m, &url, true, "announce", &reason)
                            .await;
                        continue;
                    }
                    if m.level == Level::Firewall {
                        self.firewall_touched = true;
                        let (script, r) = self.firewall_sync().await;
                        self.shared.announced.fetch_add(1, Ordering::Relaxed);
                        let reason = m.reason.clone();
                        self.log_firewall(&m, "announce", &reason, &script, r, true);
                        continue;
                    }
                    let r = self.send(&m.route, true).await;
                    self.shared.announced.fetch_add(1, Ordering::Relaxed);
                    let reason = m.reason.clone();
                    self.log_result(&m, "announce", &reason, r, true);
                }
                Action::Withdraw { m, why, .. } if m.shadow => {
                    self.log(&m, "shadow_withdraw", &why, None, None);
                    self.audit(
                        &m,
                        "mitigation.shadow",
                        json!({ "would": "withdraw", "why": why }),
                    );
                }
                Action::Withdraw { m, why, rollback } => {
                    let step = if rollback { "rollback" } else { "withdraw" };
                    let key = m.key();
                    let decided = self.audit_with(
                        &m,
                        "mitigation.intent",
                        json!({ "intent": step, "why": why }),
                        |b| b.intent_delete(&key),
                    );
                    if let Err(e) = decided {
                        // The route goes all the same (a withdrawal is the
                        // safe side); the intent stays until reconciliation
                        // deletes it again (the engine no longer holds it,
                        // so it is never announced back).
                        tracing::error!(mitigation = %m.id, error = %e, "Cannot delete the intent; reconciliation will");
                    }
                    crate::store::crash::point("intent.delete", &|| key.clone());
                    tracing::warn!(mitigation = %m.id, route = %m.route, %why, "Withdrawing");
                    if let Some(url) = m.http.clone() {
                        self.shared.withdrawn.fetch_add(1, Ordering::Relaxed);
                        self.provider_call(&m, &url, false, step, &why).await;
                        continue;
                    }
                    if m.level == Level::Firewall {
                        self.firewall_touched = true;
                        let (script, r) = self.firewall_sync().await;
                        self.shared.withdrawn.fetch_add(1, Ordering::Relaxed);
                        self.log_firewall(&m, step, &why, &script, r, false);
                        continue;
                    }
                    let r = self.send(&m.route, false).await;
                    self.shared.withdrawn.fetch_add(1, Ordering::Relaxed);
                    self.log_result(&m, step, &why, r, false);
                }
                Action::Wait {
                    target,
                    hostgroup,
                    incident,
                    level,
                    why,
                } => {
                    tracing::warn!(target = %super::shown(target), %level, %why, "Mitigation waits for evidence");
                    self.record_skip("wait", target, &hostgroup, incident, level, &why);
                }
                Action::Refuse {
                    target,
                    hostgroup,
                    incident,
                    level,
                    why,
                } => {
                    tracing::warn!(target = %super::shown(target), %level, %why, "Mitigation level skipped");
                    self.shared.refused.fetch_add(1, Ordering::Relaxed);
                    self.record_skip("refuse", target, &hostgroup, incident, level, &why);
                }
            }
        }
        *self.shared.active.lock().unwrap_or_else(|e| e.into_inner()) =
            self.engine.active().to_vec();
    }

    /// Asks the scrubbing provider to divert (or stop diverting) a prefix;
    /// a failed call is retried every `reconcile_every` until it succeeds
    /// or is overtaken by the opposite one.
    async fn provider_call(
        &mut self,
        m: &Mitigation,
        url: &str,
        divert: bool,
        step: &str,
        why: &str,
    ) {
        let body = super::provider_request(m, divert);
        let (token, timeout) = (
            self.cfg.scrubbing.http_token.clone(),
            self.cfg.scrubbing.http_timeout,
        );
        // The credentials come from the running config when the endpoint
        // is the one configured (intents keep it redacted).
        let shown = crate::config::secrets::redact_url(url);
        let u = match self.cfg.scrubbing.http_url.as_deref() {
            Some(c) if crate::config::secrets::redact_url(c) == shown => c.to_owned(),
            _ => url.to_owned(),
        };
        let b = body.to_string();
        let t = Instant::now();
        let r = tokio::task::spawn_blocking(move || post(&u, token.as_deref(), timeout, &b))
            .await
            .unwrap_or_else(|e| Err(ProviderError::Unreachable(e.to_string())));
        tracing::info!(mitigation = %m.id, ms = t.elapsed().as_millis() as u64, ok = r.is_ok(), "Provider called");
        self.pending_http.retain(|(p, _)| p.id != m.id);
        let verb = audit_verb(divert);
        let mut details = json!({ "why": why, "adapter": "http", "step": step, "url": shown });
        match r {
            Ok(answer) => {
                let sent = Sent {
                    payload: body.to_string(),
                    response: answer,
                };
                self.log(m, step, why, Some(&sent), None);
                details["response"] = json!(sent.response);
            }
            Err(e) => {
                let e = e.to_string();
                self.shared.failed.fetch_add(1, Ordering::Relaxed);
                tracing::error!(mitigation = %m.id, error = ?e, "Scrubbing provider call failed; will retry");
                self.log(m, step, why, None, Some(&e));
                details["error"] = json!(e);
                self.pending_http.push((m.clone(), divert));
            }
        }
        self.audit(m, verb, details);
    }

    /// Retries failed provider calls.
    async fn retry_provider_calls(&mut self) {
        for (m, divert) in std::mem::take(&mut self.pending_http) {
            let Some(url) = m.http.clone() else {
                continue;
            };
            self.provider_call(&m, &url, divert, "retry", "an earlier call failed")
                .await;
        }
    }

    fn log_firewall(
        &mut self,
        m: &Mitigation,
        action: &str,
        why: &str,
        script: &str,
        r: Result<(), FirewallError>,
        announce: bool,
    ) {
        let verb = audit_verb(announce);
        let sent = Sent {
            payload: script.to_owned(),
            response: "ok".to_owned(),
        };
        let mut details = json!({ "why": why, "adapter": "nftables", "step": action });
        match &r {
            Ok(()) => self.log(m, action, why, Some(&sent), None),
            Err(e) => {
                let e = e.to_string();
                self.log(m, action, why, None, Some(&e));
                details["error"] = json!(e);
            }
        }
        self.audit(m, verb, details);
    }

    fn log_result(
        &mut self,
        m: &Mitigation,
        action: &str,
        why: &str,
        r: Option<Result<Sent, levee_bgp::Error>>,
        announce: bool,
    ) {
        let verb = audit_verb(announce);
        let (sent, error) = match r {
            Some(Ok(sent)) => (Some(sent), None),
            Some(Err(e)) => {
                tracing::error!(mitigation = %m.id, error = ?e.to_string(), "gobgpd did not take the update; reconciliation will retry");
                (None, Some(e.to_string()))
            }
            None => (
                None,
                Some("gobgpd is not connected; reconciliation will send it".to_owned()),
            ),
        };
        if error.is_some() {
            self.shared.failed.fetch_add(1, Ordering::Relaxed);
        }
        self.log(m, action, why, sent.as_ref(), error.as_deref());
        let mut details = json!({ "why": why, "step": action });
        match (&sent, &error) {
            (Some(s), _) => details["response"] = json!(s.response),
            (_, Some(e)) => details["error"] = json!(e),
            _ => {}
        }
        self.audit(m, verb, details);
    }

    fn log(
        &mut self,
        m: &Mitigation,
        action: &str,
        why: &str,
        sent: Option<&Sent>,
        error: Option<&str>,
    ) {
        let mut entry = json!({
            "time": crate::report::rfc3339_ms(now_ms()),
            "action": action,
            "mitigation": m.id,
            "host": m.host.to_string(),
            "hostgroup": m.hostgroup,
            "incident": m.incident,
            "level": m.level,
            "adapter": m.adapter(),
            "route": m.route.to_string(),
            "detail": m.route,
            "payload": sent.map(|s| s.payload.clone()),
            "response": sent.map(|s| s.response.clone()),
            "error": error,
            "ttl_s": m.expires_ms.saturating_sub(m.created_ms) / 1000,
            "decided_by": m.decided_by,
            "reason": why,
            "shadow": m.shadow,
        });
        scope_fields(&mut entry, m.target());
        self.put_log(&entry);
    }

    fn put_log(&mut self, entry: &Value) {
        self.log_seq += 1;
        let bytes = serde_json::to_vec(entry).unwrap_or_default();
        if let Err(e) = self
            .store
            .mitigation_log_put(now_ms(), self.log_seq, &bytes)
        {
            tracing::error!(error = %e, "Cannot write the mitigation log");
        }
    }

    /// Logs and audits a level that waits (`wait`) or is skipped
    /// (`refuse`) for `target`, and why.
    fn record_skip(
        &mut self,
        action: &str,
        target: ipnet::IpNet,
        hostgroup: &str,
        incident: Option<String>,
        level: Level,
        why: &str,
    ) {
        let mut entry = json!({
            "time": crate::report::rfc3339_ms(now_ms()),
            "action": action,
            "host": host_of(target),
            "hostgroup": hostgroup,
            "incident": incident,
            "level": level,
            "adapter": adapter(level),
            "reason": why,
        });
        scope_fields(&mut entry, target);
        self.put_log(&entry);
        let subject = incident.unwrap_or_else(|| super::shown(target));
        let mut details = json!({ "host": host_of(target), "level": level.as_str(), "why": why });
        scope_fields(&mut details, target);
        if let Err(e) = self.audit.append(
            Actor::System("escalator"),
            &format!("mitigation.{action}"),
            &subject,
            details,
        ) {
            tracing::error!(error = %e, action, "Cannot audit the skipped level");
        }
    }

    fn audit(&self, m: &Mitigation, action: &str, details: Value) {
        if let Err(e) = self.audit_with(m, action, details, |_| {}) {
            tracing::error!(mitigation = %m.id, error = %e, "Cannot audit the mitigation");
        }
    }

    /// Audits `action` on `m` with `change` to the store in the same
    /// write: both or neither.
    fn audit_with(
        &self,
        m: &Mitigation,
        action: &str,
        mut details: Value,
        change: impl FnOnce(&mut crate::store::Batch<'_>),
    ) -> Result<(), crate::audit::AuditError> {
        details["route"] = json!(m.route.to_string());
        details["level"] = json!(m.level.as_str());
        details["host"] = json!(m.host.to_string());
        scope_fields(&mut details, m.target());
        details["incident"] = json!(m.incident);
        details["expires"] = json!(crate::report::rfc3339_ms(m.expires_ms));
        let who = m.decided_by.as_str();
        let actor = match who.split_once(':') {
            Some(("user", name)) => Actor::User(name),
            Some(("apikey", id)) => Actor::ApiKey(id),
            Some(("system", c)) => Actor::System(c),
            _ => Actor::System("escalator"),
        };
        self.audit
            .append_with(actor, action, &m.id, details, change)
            .map(|_| ())
    }
}

/// The `host` of a log entry: the address, or null for a prefix.
fn host_of(t: ipnet::IpNet) -> Value {
    if super::is_host(t) {
        json!(t.addr().to_string())
    } else {
        Value::Null
    }
}

/// Adds `scope` (and `prefix`, for a prefix) to a log or audit entry.
fn scope_fields(entry: &mut Value, t: ipnet::IpNet) {
    if super::is_host(t) {
        entry["scope"] = json!("host");
    } else {
        entry["scope"] = json!("prefix");
        entry["prefix"] = json!(t.to_string());
        entry["host"] = Value::Null;
    }
}

impl Shared {
    /// Writes the mitigation task's metrics: the gobgpd session, what is in
    /// force by level, announcements, withdrawals, refusals, repairs, the
    /// round trip to gobgpd.
    pub fn write_metrics(&self, p: &mut crate::exposition::Prom) {
        let m = self;

        use crate::config::Level;
        p.family(
            "levee_bgp_up",
            "gauge",
            "1 while levee is connected to its gobgpd.",
        );
        p.sample(
            "levee_bgp_up",
            &[],
            u64::from(m.bgp_up.load(Ordering::Relaxed)),
        );
        p.family(
            "levee_mitigations_active",
            "gauge",
            "Mitigations in force, by level (shadowed ones under shadow=\"true\").",
        );
        let active = m.active.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for level in Level::ALL {
            for shadow in [false, true] {
                let n = active
                    .iter()
                    .filter(|a| a.level == level && a.shadow == shadow)
                    .count();
                p.sample(
                    "levee_mitigations_active",
                    &[("level", level.as_str()), ("shadow", &shadow.to_string())],
                    n,
                );
            }
        }
        p.family(
            "levee_mitigation_updates_total",
            "counter",
            "Announcements and withdrawals levee decided (sent, shadowed or failed).",
        );
        p.sample(
            "levee_mitigation_updates_total",
            &[("action", "announce")],
            m.announced.load(Ordering::Relaxed),
        );
        p.sample(
            "levee_mitigation_updates_total",
            &[("action", "withdraw")],
            m.withdrawn.load(Ordering::Relaxed),
        );
        p.family(
            "levee_mitigation_failures_total",
            "counter",
            "Updates gobgpd refused or could not be sent (reconciliation retries them).",
        );
        p.sample(
            "levee_mitigation_failures_total",
            &[],
            m.failed.load(Ordering::Relaxed),
        );
        p.family(
            "levee_mitigation_refusals_total",
            "counter",
            "Levels skipped for a host: guards, budgets, nothing to announce.",
        );
        p.sample(
            "levee_mitigation_refusals_total",
            &[],
            m.refused.load(Ordering::Relaxed),
        );
        p.family(
            "levee_mitigation_repairs_total",
            "counter",
            "Routes reconciliation announced again or withdrawn as orphans.",
        );
        p.sample(
            "levee_mitigation_repairs_total",
            &[],
            m.repaired.load(Ordering::Relaxed),
        );
        p.family(
            "levee_mitigation_events_dropped_total",
            "counter",
            "Incident updates lost because the mitigation queue was full.",
        );
        p.sample(
            "levee_mitigation_events_dropped_total",
            &[],
            m.dropped.load(Ordering::Relaxed),
        );
        p.summary(
            "levee_bgp_round_trip_seconds",
            "Time gobgpd took to answer an announcement or withdrawal.",
            &m.round_trip,
            1e6,
            6,
        );
    }
}
