//! The escalation engine (MIT-1, MIT-5, MIT-6): which mitigations each
//! attacked host should have, second by second. Pure: incidents and time
//! in, [`Action`]s out; `service` carries them out.
//!
//! One case per attacked host. An incident starts the case at the first
//! level of its hostgroup's ladder that can act (a level is skipped, with
//! the reason logged, when it has nothing to announce, is not available,
//! or a guard refuses). The case moves up a level when the attack has
//! persisted `dwell` at the current one, or at once when the attack is
//! bigger than the level may handle (`flowspec_max_bps`); RTBH is only used
//! for attacks of at least `rtbh_min_bps`. Lower levels stay while higher
//! ones act. Once the attack has been quiet for `hold_down`, the case steps
//! down a level, and one more each further `dwell`, until nothing is left.
//! Every mitigation has a TTL that the attack renews; one not renewed is
//! withdrawn when it expires.
//!
//! Evidence first: the levels whose rules are built from the attack's
//! classification (firewall, FlowSpec) act only once the attack's recent
//! seconds name a family surely enough (`min_confidence`, `min_samples`).
//! The incident itself starts at the first crossing; only the rule waits,
//! at most `evidence_wait`, after which `without_evidence` says whether to
//! keep waiting or to try the next level. Waiting is logged and audited.
//!
//! Rules follow the attack: while FlowSpec or firewall rules act, each
//! update holds them against the attack's recent samples. When the rules
//! the evidence now calls for differ — the attack changed family, vector,
//! protocol or ports — they replace the old ones make-before-break (the
//! new rules announced, then the old ones withdrawn): at once when the
//! new ones match clearly more of the attack, else once the new set has
//! stood for [`REFIT_HOLD_MS`] (so a share wavering around a cut does not
//! churn the router's table).
//!
//! Guards, before anything is announced: never a prefix on the never list,
//! never one outside the protected hostgroups, never one shorter than the
//! shortest allowed (so never a default route), and no more than each
//! level's budget of concurrent mitigations.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use levee_bgp::{FlowSpecRule, Route};

use super::{key, rules, Error, Mitigation, AUTO};
use crate::config::{Config, Hostgroup, Level, WithoutEvidence};
use crate::detect::Incident;
use ipnet::IpNet;

/// How long a rule acts before its effect on legitimate traffic is judged.
pub const SETTLE_MS: u64 = 10_000;
/// How long a new rule set must stand before it replaces rules that still
/// match the attack as well.
pub const REFIT_HOLD_MS: u64 = 3_000;
/// Rules that match this much more of the attack replace the old at once.
const REFIT_GAIN: f64 = 0.1;
/// Established TCP below this (pps, before the attack) is too little to
/// judge a rule by.
const ROLLBACK_FLOOR_PPS: f64 = 10.0;

/// What the engine wants done.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Announce (or, when `shadow`, only log) a mitigation.
    Announce(Mitigation),
    /// Withdraw one, and why; `rollback` when it is withdrawn because it
    /// hurt the host's legitimate traffic (MIT-7).
    Withdraw {
        m: Mitigation,
        why: String,
        rollback: bool,
    },
    /// A level that could not act for a host, and why (logged once per
    /// case and level).
    Refuse {
        target: IpNet,
        hostgroup: String,
        incident: Option<String>,
        level: Level,
        why: String,
    },
    /// A level waits for the evidence it needs (logged once per case).
    Wait {
        target: IpNet,
        hostgroup: String,
        incident: Option<String>,
        level: Level,
        why: String,
    },
}

struct Case {
    hostgroup: String,
    incident: Option<String>,
    /// Index into the hostgroup's ladder of the highest level reached.
    level: Option<usize>,
    level_since_ms: u64,
    last_attack_ms: u64,
    last_step_ms: u64,
    bps: u64,
    /// The latest incident, for building rules.
    incident_state: Option<Box<Incident>>,
    /// Levels already refused (so a refusal is logged once).
    refused: Vec<Level>,
    /// When the case began (its first incident event), for `evidence_wait`.
    since_ms: u64,
    /// Whether the wait for evidence was logged.
    waiting: bool,
    /// A rule set the evidence calls for instead of the one in force, and
    /// since when (its route keys).
    refit: Option<(Vec<String>, u64)>,
    /// The share of the attack's recent samples the host's FlowSpec and
    /// firewall rules match together (None without any).
    coverage: Option<f64>,
    /// An operator withdrew what the case stood on: it is not put back
    /// on its own (see [`Engine::reclaim`]).
    left_by_operator: bool,
}

impl Case {
    fn new(hostgroup: &str, incident: Option<String>, now_ms: u64) -> Case {
        Case {
            hostgroup: hostgroup.to_owned(),
            incident,
            level: None,
            level_since_ms: now_ms,
            last_attack_ms: now_ms,
            last_step_ms: 0,
            bps: 0,
            incident_state: None,
            refused: Vec::new(),
            since_ms: now_ms,
            waiting: false,
            refit: None,
            coverage: None,
            left_by_operator: false,
        }
    }
}

/// The escalation engine.
pub struct Engine {
    cfg: Arc<Config>,
    cases: HashMap<IpNet, Case>,
    active: Vec<Mitigation>,
    next_id: u64,
}

impl Engine {
    pub fn new(cfg: Arc<Config>) -> Engine {
        Engine {
            cfg,
            cases: HashMap::new(),
            active: Vec::new(),
            next_id: 0,
        }
    }

    /// A new configuration: policies, guards and budgets apply from now
    /// on. What is in force and the new configuration no longer allows — a
    /// route its guards refuse (the never list, a hostgroup gone or
    /// narrowed, a longer shortest prefix), an IPv6 FlowSpec rule when an
    /// upstream now takes none — is withdrawn, and an automatic one's level
    /// is not used again for its attack (which moves on up the ladder).
    /// The rest stays until the engine would change it anyway.
    pub fn reconfigure(&mut self, cfg: Arc<Config>) -> Vec<Action> {
        self.cfg = cfg;
        let mut gone = Vec::new();
        for m in &self.active {
            let why = match guard(&self.cfg, &m.route) {
                Err(r) => Some(r.to_string()),
                Ok(()) if m.level == Level::Flowspec => self.no_ipv6_flowspec(m.target()),
                Ok(()) => None,
            };
            if let Some(why) = why {
                gone.push((m.id.clone(), m.level, m.target(), m.decided_by == AUTO, why));
            }
        }
        let mut out = Vec::new();
        for (id, level, target, auto, why) in gone {
            let why = format!("the configuration no longer allows it: {why}");
            out.extend(self.take(|m| m.id == id, &why));
            if let Some(case) = self.cases.get_mut(&target).filter(|_| auto) {
                if !case.refused.contains(&level) {
                    case.refused.push(level);
                }
            }
        }
        out
    }

    /// The mitigations in force (announced, or shadowed), oldest first.
    pub fn active(&self) -> &[Mitigation] {
        &self.active
    }

    /// Takes back mitigations that were in force before a restart (from
    /// the intent store). Their hosts are treated as attacked until now, so
    /// they step down only after a quiet `hold_down`.
    pub fn restore(&mut self, ms: Vec<Mitigation>, now_ms: u64) {
        for m in ms {
            if self.active.iter().any(|a| a.key() == m.key()) {
                continue;
            }
            if m.decided_by == AUTO {
                let group = self.group(&m.hostgroup);
                let idx =
                    group.and_then(|g| g.mitigation.ladder.iter().position(|l| *l == m.level));
                let case = self
                    .cases
                    .entry(m.target())
                    .or_insert_with(|| Case::new(&m.hostgroup, m.incident.clone(), now_ms));
                case.level = case.level.max(idx);
            }
            self.active.push(m);
        }
    }

    fn group(&self, name: &str) -> Option<&Hostgroup> {
        self.cfg.hostgroups.iter().find(|g| g.name == name)
    }

    fn id(&mut self, now_ms: u64) -> String {
        self.next_id += 1;
        format!("mit-{now_ms}-{}", self.next_id)
    }

    /// An incident started or was updated (or ended): escalate as needed
    /// and renew the host's mitigations.
    pub fn incident(&mut self, inc: &Incident, now_ms: u64) -> Vec<Action> {
        let host = inc.target();
        let Some(group) = self.group(&inc.hostgroup).cloned() else {
            return Vec::new();
        };
        let bps = inc.timeline.last().map_or(inc.peak_bps, |p| p.bps);
        let case = self.cases.entry(host).or_insert_with(|| {
            let mut c = Case::new(&inc.hostgroup, Some(inc.id.clone()), now_ms);
            c.last_attack_ms = inc.last_over_ms;
            c
        });
        case.incident = Some(inc.id.clone());
        case.last_attack_ms = case.last_attack_ms.max(inc.last_over_ms);
        case.bps = bps;
        case.incident_state = Some(Box::new(inc.clone()));
        let ttl = self.cfg.mitigation.ttl.as_millis() as u64;
        for m in self.active.iter_mut().filter(|m| m.serves(host)) {
            if m.decided_by == AUTO {
                m.expires_ms = m.expires_ms.max(now_ms + ttl);
            }
        }
        let mut out = self.rollback(host, &group, now_ms);
        if !inc.ended {
            self.reclaim(host, &group);
            out.extend(self.refit(host, &group, now_ms));
            self.measure(host);
            out.extend(self.escalate(host, &group, now_ms));
            self.measure(host);
        }
        out
    }

    /// Holds the host's FlowSpec and firewall rules in force, together,
    /// against the attack's recent samples: their coverage, on the case
    /// (for the ladder) and on each of them (for people).
    fn measure(&mut self, host: IpNet) {
        let Some(details) = self
            .cases
            .get(&host)
            .and_then(|c| c.incident_state.as_deref())
            .map(|i| i.current.details.clone())
        else {
            return;
        };
        let rules: Vec<FlowSpecRule> = self
            .active
            .iter()
            .filter(|m| m.serves(host) && matches!(m.level, Level::Flowspec | Level::Firewall))
            .filter_map(|m| match &m.route {
                // Its own destination: the records held are the target's,
                // and a part of a prefix matches only those sent there.
                Route::FlowSpec(r) => Some(r.clone()),
                _ => None,
            })
            .collect();
        let coverage = if rules.is_empty() {
            None
        } else {
            rules::coverage(&rules, &details).map(|c| (c * 1000.0).round() / 1000.0)
        };
        for m in self
            .active
            .iter_mut()
            .filter(|m| m.serves(host) && matches!(m.level, Level::Flowspec | Level::Firewall))
        {
            m.coverage = coverage;
        }
        if let Some(c) = self.cases.get_mut(&host) {
            c.coverage = coverage;
        }
    }

    /// Whether the attack's recent evidence is enough to build rules from,
    /// or why not.
    fn evidence(&self, inc: &Incident) -> Result<(), ShortOfEvidence> {
        let v = &inc.current.verdict;
        let m = &self.cfg.mitigation;
        if !v.classified() {
            return Err(ShortOfEvidence::Unclassified(
                v.why
                    .as_deref()
                    .unwrap_or("no family stands out")
                    .to_owned(),
            ));
        }
        if v.samples < m.min_samples {
            return Err(ShortOfEvidence::FewSamples {
                family: v.family.to_string(),
                confidence: v.confidence,
                samples: v.samples,
                min: m.min_samples,
            });
        }
        if v.confidence < m.min_confidence {
            return Err(ShortOfEvidence::LowConfidence {
                family: v.family.to_string(),
                confidence: v.confidence,
                samples: v.samples,
                min: m.min_confidence,
            });
        }
        // Each rule is drawn from its own part of the samples (its ports,
        // its lengths): every component needs enough of them, or its rule
        // would be wider than the attack (a port or a length floor missed).
        let items = inc.current.details.seen.items().len() as f64;
        if let Some(c) = v
            .components
            .iter()
            .find(|c| c.share * items < rules::MIN_COMPONENT_SAMPLES as f64)
        {
            return Err(ShortOfEvidence::ThinComponent {
                family: c.family.as_str(),
                share: c.share,
                held: items as usize,
            });
        }
        Ok(())
    }

    /// Holds the rules in force for `host` (FlowSpec, firewall) against
    /// what the evidence now calls for, and replaces them make-before-break
    /// when they no longer fit: the new rules are announced first, then
    /// the old ones withdrawn (an aggregate that still protects another
    /// attacked host only lets this host go).
    fn refit(&mut self, host: IpNet, group: &Hostgroup, now_ms: u64) -> Vec<Action> {
        let mut out = Vec::new();
        for level in [Level::Firewall, Level::Flowspec] {
            let old: Vec<Mitigation> = self
                .active
                .iter()
                .filter(|m| m.serves(host) && m.level == level && m.decided_by == AUTO)
                .cloned()
                .collect();
            if old.is_empty() {
                continue;
            }
            let Some(inc) = self
                .cases
                .get(&host)
                .and_then(|c| c.incident_state.as_deref())
            else {
                continue;
            };
            if self.evidence(inc).is_err() || untrusted(inc, &self.cfg).is_some() {
                continue; // rules change only on evidence, as they start
            }
            let details = inc.current.details.clone();
            let now = format!(
                "{} ({})",
                inc.current.verdict.family,
                inc.current.verdict.vector.as_deref().unwrap_or("no vector")
            );
            let Ok(new) = self.candidates(host, group, level) else {
                continue;
            };
            let same_shape = |a: &Route, b: &Route| match (a, b) {
                (Route::FlowSpec(x), Route::FlowSpec(y)) => {
                    FlowSpecRule {
                        dst: y.dst,
                        ..x.clone()
                    } == *y
                        && x.dst.contains(&y.dst.addr())
                }
                _ => a == b,
            };
            // Rules in force that are (or cover, as an aggregate) a new one.
            let fits_old = |r: &Route| old.iter().any(|m| same_shape(&m.route, r));
            if new.iter().all(fits_old)
                && old
                    .iter()
                    .all(|m| new.iter().any(|r| same_shape(&m.route, r)))
            {
                if let Some(c) = self.cases.get_mut(&host) {
                    c.refit = None;
                }
                continue;
            }
            let details = &*details;
            // Each rule with its own destination: an aggregate covers the
            // host, a part of a prefix only the records that went there.
            let rules_of = |rs: Vec<&Route>| -> Vec<FlowSpecRule> {
                rs.into_iter()
                    .filter_map(|r| match r {
                        Route::FlowSpec(f) => Some(f.clone()),
                        _ => None,
                    })
                    .collect()
            };
            let old_rules = rules_of(old.iter().map(|m| &m.route).collect());
            let new_rules = rules_of(new.iter().collect());
            let cover_old = rules::coverage(&old_rules, details).unwrap_or(0.0);
            let cover_new = rules::coverage(&new_rules, details).unwrap_or(0.0);
            if cover_new + 0.01 < cover_old {
                continue; // the new rules would let more of the attack through
            }
            let keys: Vec<String> = new.iter().map(|r| key(level, r)).collect();
            let urgent = cover_new >= cover_old + REFIT_GAIN;
            // Without a gain in coverage, only a change of what the rules
            // match on — protocol, ports, lengths, flags, fragments — is
            // worth a replacement, once it has stood REFIT_HOLD_MS (a range
            // drawn a little differently each second never stands that
            // long, so it does not churn the router's table).
            let mut sig_old: Vec<Signature> = old_rules.iter().map(signature).collect();
            let mut sig_new: Vec<Signature> = new_rules.iter().map(signature).collect();
            sig_old.sort();
            sig_old.dedup();
            sig_new.sort();
            sig_new.dedup();
            // Nor is a rule that only drops a constraint (a port list, a
            // length range) because this second's samples were too few to
            // draw it: wider, not better.
            let wider = new_rules
                .iter()
                .all(|n| old_rules.iter().any(|o| broadens(n, o)));
            if !urgent && (sig_old == sig_new || wider) {
                if let Some(c) = self.cases.get_mut(&host) {
                    c.refit = None;
                }
                continue;
            }
            let Some(case) = self.cases.get_mut(&host) else {
                continue;
            };
            let since = match &case.refit {
                Some((k, since)) if *k == keys => *since,
                _ => {
                    case.refit = Some((keys.clone(), now_ms));
                    now_ms
                }
            };
            if !urgent && now_ms.saturating_sub(since) < REFIT_HOLD_MS {
                continue;
            }
            case.refit = None;
            let fresh: Vec<Route> = new.into_iter().filter(|r| !fits_old(r)).collect();
            if !fresh.is_empty() {
                // Only the old rules that really go make room: one kept
                // (the same route) or staying for another attacked host
                // (an aggregate) still counts.
                let hold_down = self.cfg.mitigation.hold_down.as_millis() as u64;
                let attacked = self.attacked_hosts(host, now_ms, hold_down);
                let freed: Vec<Mitigation> = old
                    .iter()
                    .filter(|m| {
                        !keys.contains(&m.key()) && !hand_over(&mut (*m).clone(), host, &attacked)
                    })
                    .cloned()
                    .collect();
                if let Err(why) = self
                    .fits_replacing(level, &fresh, &freed)
                    .map_err(|e| e.to_string())
                {
                    self.refuse(host, group, level, why, &mut out);
                    continue;
                }
            }
            let why = format!(
                "the attack changed: its recent samples are {now}; the rules in force matched {:.0}% of them, the new ones {:.0}%",
                cover_old * 100.0,
                cover_new * 100.0
            );
            let used = self.on_router(level);
            let mut announces = Vec::new();
            for route in fresh {
                let mut m = self.mitigation(host, group, level, route, now_ms);
                m.reason = format!(
                    "{}; replaces {}",
                    m.reason,
                    old.iter()
                        .map(|o| o.id.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                self.active.push(m.clone());
                announces.push(Action::Announce(m));
            }
            // Then the old rules that no longer fit go (make-before-break,
            // unless the router's budget has no room for both at once).
            let keep: Vec<String> = old
                .iter()
                .filter(|m| keys.iter().any(|k| *k == m.key()))
                .map(|m| m.id.clone())
                .collect();
            let gone: Vec<String> = old
                .iter()
                .filter(|m| !keep.contains(&m.id))
                .map(|m| m.id.clone())
                .collect();
            let released = self.release(host, &gone, &why, now_ms);
            out.extend(self.within_budget(level, used, announces, released));
        }
        out
    }

    /// Lets `host` go from the mitigations `ids`: one that protects only it
    /// is withdrawn; an aggregate that still protects other attacked hosts
    /// stays for them.
    fn release(&mut self, host: IpNet, ids: &[String], why: &str, now_ms: u64) -> Vec<Action> {
        let hold_down = self.cfg.mitigation.hold_down.as_millis() as u64;
        let attacked = self.attacked_hosts(host, now_ms, hold_down);
        let mut withdraw = Vec::new();
        for m in self.active.iter_mut().filter(|m| ids.contains(&m.id)) {
            if !hand_over(m, host, &attacked) {
                withdraw.push(m.id.clone());
            }
        }
        self.take(|m| withdraw.contains(&m.id), why)
    }

    /// Whether `routes` fit the level's budget once `replaced` are gone.
    fn fits_replacing(
        &self,
        level: Level,
        routes: &[Route],
        replaced: &[Mitigation],
    ) -> Result<(), Refusal> {
        let budget = self.budget(level);
        let used = self
            .active
            .iter()
            .filter(|m| m.level == level && !m.shadow && !replaced.iter().any(|r| r.id == m.id))
            .count();
        if used + routes.len() > budget {
            return Err(Refusal::BudgetFull {
                level,
                used,
                more: routes.len(),
                budget,
            });
        }
        Ok(())
    }

    /// MIT-7: a FlowSpec or firewall rule after which the host's
    /// established TCP (inbound TCP that is not a bare SYN) has fallen by
    /// more than `rollback_drop` below its level before the attack is
    /// withdrawn, and its level not used again for this attack. Judged
    /// from the seconds after the rule had [`SETTLE_MS`] to act, and only
    /// when established TCP means something: the host had some before the
    /// attack, the attack is not itself a non-SYN TCP flood, and the rule
    /// can match TCP. (Flow export taken before the filter never shows a
    /// fall, and then nothing is rolled back.)
    fn rollback(&mut self, host: IpNet, group: &Hostgroup, now_ms: u64) -> Vec<Action> {
        let Some(drop) = group.mitigation.rollback_drop else {
            return Vec::new();
        };
        let Some(inc) = self
            .cases
            .get(&host)
            .and_then(|c| c.incident_state.as_deref())
        else {
            return Vec::new();
        };
        let before = established_before(inc);
        let mut victims = Vec::new();
        for m in &self.active {
            let Route::FlowSpec(r) = &m.route else {
                continue;
            };
            if !m.serves(host)
                || m.decided_by != AUTO
                || now_ms < m.created_ms + SETTLE_MS
                || matches!(watch(r, inc, group), Watch::Unknown(_))
            {
                continue;
            }
            // The last (up to) five seconds since the rule settled, read
            // from the end: a long attack's timeline is not walked.
            let recent: Vec<u64> = inc
                .timeline
                .iter()
                .rev()
                .take_while(|p| p.second * 1000 >= m.created_ms + SETTLE_MS)
                .take(5)
                .map(|p| p.est_tcp)
                .collect();
            if recent.len() < 3 {
                continue;
            }
            let now = recent.iter().sum::<u64>() as f64 / recent.len() as f64;
            if now < (1.0 - drop) * before {
                victims.push((
                    m.id.clone(),
                    m.level,
                    format!(
                        "rolled back: established TCP to {} fell to {now:.0} pps after the rule, \
                         from {before:.0} before the attack (rollback_drop {:.0}%{})",
                        super::shown(host),
                        drop * 100.0,
                        if matches_tcp(r) {
                            ""
                        } else {
                            "; the rule matches no TCP, laid to it by rollback_unknown = \"withdraw\""
                        }
                    ),
                ));
            }
        }
        let mut out = Vec::new();
        for (id, level, why) in victims {
            for a in self.take(|m| m.id == id, &why) {
                if let Action::Withdraw { m, why, .. } = a {
                    out.push(Action::Withdraw {
                        m,
                        why,
                        rollback: true,
                    });
                }
            }
            if let Some(case) = self.cases.get_mut(&host) {
                if !case.refused.contains(&level) {
                    case.refused.push(level);
                }
            }
        }
        out
    }

    fn escalate(&mut self, host: IpNet, group: &Hostgroup, now_ms: u64) -> Vec<Action> {
        let ladder = &group.mitigation.ladder;
        let dwell = self.cfg.mitigation.dwell.as_millis() as u64;
        let Some(case) = self.cases.get(&host) else {
            return Vec::new();
        };
        // Only traffic from sources trusted to move routes may: a forged
        // export datagram must not blackhole a customer.
        if let Some(why) = case
            .incident_state
            .as_deref()
            .and_then(|i| untrusted(i, &self.cfg))
        {
            let mut out = Vec::new();
            for &level in ladder {
                self.refuse(host, group, level, why.clone(), &mut out);
            }
            return out;
        }
        let from = match case.level {
            None => 0,
            Some(cur) => {
                let over_cap = ladder[cur] == Level::Flowspec
                    && group
                        .mitigation
                        .flowspec_max_bps
                        .is_some_and(|max| case.bps > max);
                // What the rules let through is an attack by itself: the
                // next level is needed now, not after a dwell.
                let pps = case
                    .incident_state
                    .as_deref()
                    .and_then(|i| i.timeline.last())
                    .map_or(0, |p| p.pps);
                let limit = if super::is_host(host) {
                    group.thresholds.pps
                } else {
                    group.prefix_thresholds.as_ref().and_then(|p| p.limits.pps)
                };
                let leaks = matches!(ladder[cur], Level::Flowspec | Level::Firewall)
                    && case.coverage.is_some_and(|c| {
                        c < rules::MIN_COVERAGE
                            && limit.is_some_and(|limit| (1.0 - c) * pps as f64 > limit as f64)
                    });
                let persisted = now_ms.saturating_sub(case.level_since_ms) >= dwell;
                if !(over_cap || leaks || persisted) || cur + 1 >= ladder.len() {
                    return Vec::new();
                }
                cur + 1
            }
        };
        let mut out = Vec::new();
        for (i, &level) in ladder.iter().enumerate().skip(from) {
            // An incident's first event (from the sliding window) has no
            // measured second yet: RTBH's size test waits for one.
            if level == Level::Rtbh && self.cases.get(&host).is_some_and(|c| c.bps == 0) {
                continue;
            }
            if level == Level::Flowspec {
                if let Some(why) = self.no_ipv6_flowspec(host) {
                    self.refuse(host, group, level, why, &mut out);
                    continue;
                }
            }
            // Levels built from the classification wait for evidence.
            let classified_level =
                level == Level::Flowspec || (level == Level::Firewall && self.cfg.firewall.enabled);
            let short = match self
                .cases
                .get(&host)
                .and_then(|c| c.incident_state.as_deref())
            {
                Some(inc) if classified_level => self.evidence(inc).err(),
                _ => None,
            };
            if let Some(why) = short {
                let m = &self.cfg.mitigation;
                let waited =
                    now_ms.saturating_sub(self.cases.get(&host).map_or(now_ms, |c| c.since_ms));
                let wait_ms = m.evidence_wait.as_millis() as u64;
                if waited < wait_ms || m.without_evidence == WithoutEvidence::Wait {
                    let until = if waited < wait_ms {
                        format!("for up to evidence_wait = {}s", wait_ms / 1000)
                    } else {
                        "as without_evidence = \"wait\" says".to_owned()
                    };
                    self.wait(
                        host,
                        group,
                        level,
                        format!("{level} waits for evidence {until}: {why}"),
                        &mut out,
                    );
                    return out;
                }
                let why = format!(
                    "no classification with enough evidence within evidence_wait = {}s ({why}); without_evidence = \"next_level\"",
                    wait_ms / 1000
                );
                self.refuse(host, group, level, why, &mut out);
                continue;
            }
            let routes = match self.candidates(host, group, level) {
                Ok(routes) => routes,
                Err(why) => {
                    self.refuse(host, group, level, why, &mut out);
                    continue;
                }
            };
            // A route a wider rule in force already takes in (a prefix's,
            // an aggregate's) needs none of its own: the host joins it
            // (never a /32 per host across a prefix).
            let (covered, routes): (Vec<Route>, Vec<Route>) = routes
                .into_iter()
                .partition(|r| self.wider(group, level, r).is_some());
            if !covered.is_empty() {
                for r in &covered {
                    self.join(host, group, level, r);
                }
                if routes.is_empty() {
                    self.reached(host, i, now_ms);
                    return out;
                }
            }
            // A prefix's rules take in the rules of hosts inside it: those
            // go when they come, and make room for them in the budget.
            let replaced: Vec<Mitigation> = if super::is_host(host) {
                Vec::new()
            } else {
                self.active
                    .iter()
                    .filter(|o| {
                        o.level == level
                            && o.decided_by == AUTO
                            && o.prefix.is_none()
                            && o.hostgroup == group.name
                            && o.shadow == self.shadow(group)
                            && routes.iter().any(|r| match (r, &o.route) {
                                (Route::FlowSpec(w), Route::FlowSpec(n)) => includes(w, n),
                                _ => false,
                            })
                    })
                    .cloned()
                    .collect()
            };
            let fit = if replaced.is_empty() {
                self.fits(level, &routes)
            } else {
                self.fits_replacing(level, &routes, &replaced)
            }
            .map_err(|e| e.to_string());
            if let Err(why) = fit {
                if level == Level::Flowspec && self.cfg.mitigation.aggregate_flowspec {
                    if let Some(actions) = self.aggregate(host, group, &routes, now_ms) {
                        out.extend(actions);
                        self.reached(host, i, now_ms);
                        return out;
                    }
                    let why = format!("{why}; no rule of the same shape to aggregate with");
                    self.refuse(host, group, level, why, &mut out);
                } else {
                    self.refuse(host, group, level, why, &mut out);
                }
                continue;
            }
            let mut announced = false;
            let used = self.on_router(level);
            let mut fresh = Vec::new();
            for route in routes {
                announced = true;
                if self.active.iter().any(|m| m.key() == key(level, &route)) {
                    continue;
                }
                let m = self.mitigation(host, group, level, route, now_ms);
                self.active.push(m.clone());
                fresh.push(Action::Announce(m));
            }
            let gone = if replaced.is_empty() {
                Vec::new()
            } else {
                let ids: Vec<&str> = fresh
                    .iter()
                    .filter_map(|a| match a {
                        Action::Announce(m) => Some(m.id.as_str()),
                        _ => None,
                    })
                    .collect();
                let why = format!("covered by {} for {}", ids.join(", "), super::shown(host));
                self.take(|o| replaced.iter().any(|r| r.id == o.id), &why)
            };
            out.extend(self.within_budget(level, used, fresh, gone));
            if announced {
                self.reached(host, i, now_ms);
                return out;
            }
        }
        // Nothing above could act: try again after another dwell.
        if let Some(case) = self.cases.get_mut(&host) {
            if case.level.is_some() {
                case.level_since_ms = now_ms;
            }
        }
        out
    }

    /// The case of `host` is now at ladder index `i`.
    fn reached(&mut self, host: IpNet, i: usize, now_ms: u64) {
        if let Some(case) = self.cases.get_mut(&host) {
            case.level = Some(i);
            case.level_since_ms = now_ms;
        }
    }

    /// Records that `level` waits for evidence for `host` (once per case).
    fn wait(
        &mut self,
        host: IpNet,
        group: &Hostgroup,
        level: Level,
        why: String,
        out: &mut Vec<Action>,
    ) {
        let Some(case) = self.cases.get_mut(&host) else {
            return;
        };
        if !case.waiting {
            case.waiting = true;
            out.push(Action::Wait {
                target: host,
                hostgroup: group.name.clone(),
                incident: case.incident.clone(),
                level,
                why,
            });
        }
    }

    /// Records that `level` cannot act for `host` (once per case).
    fn refuse(
        &mut self,
        host: IpNet,
        group: &Hostgroup,
        level: Level,
        why: String,
        out: &mut Vec<Action>,
    ) {
        let Some(case) = self.cases.get_mut(&host) else {
            return;
        };
        if !case.refused.contains(&level) {
            case.refused.push(level);
            out.push(Action::Refuse {
                target: host,
                hostgroup: group.name.clone(),
                incident: case.incident.clone(),
                level,
                why,
            });
        }
    }

    fn mitigation(
        &mut self,
        host: IpNet,
        group: &Hostgroup,
        level: Level,
        route: Route,
        now_ms: u64,
    ) -> Mitigation {
        let case = self.cases.get(&host);
        let reason = match case.and_then(|c| c.incident_state.as_deref()) {
            Some(inc) => {
                let bps = case.map_or(0, |c| c.bps);
                let rate = if bps > 0 {
                    format!("{bps} bps")
                } else {
                    format!(
                        "{} {} > {}",
                        inc.reason.value, inc.reason.metric, inc.reason.limit
                    )
                };
                let from = match case.and_then(|c| c.level) {
                    Some(l) => format!(", escalated from {}", group.mitigation.ladder[l]),
                    None => String::new(),
                };
                let cost = match &route {
                    Route::FlowSpec(_) if !inc.legit.learnt => {
                        ", collateral unknown (the host's normal traffic is not learnt yet)"
                            .to_owned()
                    }
                    Route::FlowSpec(r) => format!(
                        ", collateral at most {:.0}% of legitimate packets",
                        rules::collateral(r, &inc.legit).unwrap_or(0.0) * 100.0
                    ),
                    _ => String::new(),
                };
                let v = &inc.current.verdict;
                let what = match (&route, v.classified()) {
                    (Route::FlowSpec(r), true) => format!(
                        "{}{} (confidence {:.2} from {} samples; the rule matches {:.0}% of them)",
                        v.family,
                        v.vector
                            .as_deref()
                            .map(|x| format!("/{x}"))
                            .unwrap_or_default(),
                        v.confidence,
                        v.samples,
                        rules::coverage([r], &inc.current.details).unwrap_or(0.0) * 100.0
                    ),
                    (_, true) => format!(
                        "{}{} (confidence {:.2})",
                        v.family,
                        v.vector
                            .as_deref()
                            .map(|x| format!("/{x}"))
                            .unwrap_or_default(),
                        v.confidence
                    ),
                    (_, false) => format!(
                        "unclassified ({})",
                        v.why.as_deref().unwrap_or("no family stands out")
                    ),
                };
                format!("incident {}: {what} at {rate}{from}{cost}", inc.id)
            }
            None => "restored".to_owned(),
        };
        let incident = case.and_then(|c| c.incident.clone());
        let watch = match (&route, case.and_then(|c| c.incident_state.as_deref())) {
            (Route::FlowSpec(r), Some(inc)) => Some(match watch(r, inc, group) {
                Watch::Direct(why) | Watch::Indirect(why) | Watch::Unknown(why) => why,
            }),
            _ => None,
        };
        Mitigation {
            id: self.id(now_ms),
            host: host.addr(),
            hostgroup: group.name.clone(),
            incident,
            level,
            route,
            created_ms: now_ms,
            expires_ms: now_ms + self.cfg.mitigation.ttl.as_millis() as u64,
            decided_by: AUTO.to_owned(),
            reason,
            shadow: self.shadow(group),
            covers: Vec::new(),
            http: self.provider(level),
            coverage: None,
            prefix: (!super::is_host(host)).then_some(host),
            rollback: watch,
        }
    }

    /// The routes a level would announce for a host, after the guards.
    fn candidates(
        &self,
        host: IpNet,
        group: &Hostgroup,
        level: Level,
    ) -> Result<Vec<Route>, String> {
        let case = self.cases.get(&host);
        let routes: Vec<Route> = match level {
            Level::Firewall | Level::Flowspec => {
                if level == Level::Firewall && !self.cfg.firewall.enabled {
                    return Err("the firewall level is off ([firewall] enabled = false)".into());
                }
                let Some(inc) = case.and_then(|c| c.incident_state.as_deref()) else {
                    return Err("no classification to build a FlowSpec rule from".into());
                };
                let all: Vec<FlowSpecRule> = rules::flowspec(inc, &group.mitigation);
                let max = group.mitigation.max_collateral;
                if !inc.legit.learnt && !group.mitigation.unknown_collateral_ok {
                    return Err(
                        "collateral unknown: the host's normal traffic is not learnt yet (unknown_collateral = \"refuse\")"
                            .into(),
                    );
                }
                let (rules, costly): (Vec<_>, Vec<_>) = all
                    .into_iter()
                    .partition(|r| rules::collateral(r, &inc.legit).is_none_or(|c| c <= max));
                if rules.is_empty() {
                    if let Some(r) = costly.first() {
                        return Err(format!(
                            "collateral: the rule would match up to {:.0}% of the host's legitimate packets (max_collateral {:.0}%): {}",
                            rules::collateral(r, &inc.legit).unwrap_or(0.0) * 100.0,
                            max * 100.0,
                            r.matcher()
                        ));
                    }
                }
                if rules.is_empty() {
                    return Err(format!(
                        "no rule narrower than all traffic describes a {} attack",
                        inc.verdict.family
                    ));
                }
                if level == Level::Firewall {
                    for r in &rules {
                        super::firewall::rule(r, "check").map_err(|e| e.to_string())?;
                    }
                }
                rules.into_iter().map(Route::FlowSpec).collect()
            }
            Level::Rtbh => {
                let bps = case.map_or(0, |c| c.bps);
                if bps < group.mitigation.rtbh_min_bps {
                    return Err(format!(
                        "attack at {bps} bps is below rtbh_min_bps ({})",
                        group.mitigation.rtbh_min_bps
                    ));
                }
                if !super::is_host(host) && !group.mitigation.prefix_rtbh {
                    return Err(format!(
                        "RTBH would blackhole all of {host}: a prefix is blackholed only where the hostgroup allows it (prefix_rtbh = true)"
                    ));
                }
                vec![Route::Blackhole(
                    rules::blackhole_of(host, &self.cfg).map_err(|e| e.to_string())?,
                )]
            }
            Level::Scrubbing => vec![Route::Divert(
                rules::diversion_of(host, &self.cfg).map_err(|e| e.to_string())?,
            )],
        };
        for r in &routes {
            self.guard(r).map_err(|e| e.to_string())?;
        }
        Ok(routes)
    }

    /// Whether `routes` fit the level's budget.
    fn fits(&self, level: Level, routes: &[Route]) -> Result<(), Refusal> {
        let budget = self.budget(level);
        // Shadowed mitigations are not on the router: they use no budget.
        let used = self
            .active
            .iter()
            .filter(|m| m.level == level && !m.shadow)
            .count();
        let new = routes
            .iter()
            .filter(|r| !self.active.iter().any(|m| m.key() == key(level, r)))
            .count();
        if used + new > budget {
            return Err(Refusal::BudgetFull {
                level,
                used,
                more: new,
                budget,
            });
        }
        Ok(())
    }

    /// Fits one new FlowSpec rule into a full budget by merging it with a
    /// rule of the same shape (everything but the destination) for another
    /// host of the hostgroup: both are replaced by one rule for the
    /// smallest prefix covering both, when the guards allow that prefix.
    fn aggregate(
        &mut self,
        host: IpNet,
        group: &Hostgroup,
        routes: &[Route],
        now_ms: u64,
    ) -> Option<Vec<Action>> {
        let [Route::FlowSpec(new)] = routes else {
            return None;
        };
        let mut best: Option<(usize, IpNet, FlowSpecRule)> = None;
        for (i, m) in self.active.iter().enumerate() {
            let Route::FlowSpec(old) = &m.route else {
                continue;
            };
            if m.level != Level::Flowspec
                || m.decided_by != AUTO
                || m.prefix.is_some()
                || !super::is_host(host)
                || m.hostgroup != group.name
                || m.shadow != (self.cfg.mitigation.dry_run || group.mitigation.shadow)
                || old.dst.addr().is_ipv6() != new.dst.addr().is_ipv6()
            {
                continue;
            }
            // The same attack's signature; port lists and lengths merged.
            let Some(merged) = merge_rules(old, new) else {
                continue;
            };
            let Some(p) = supernet(old.dst, new.dst) else {
                continue;
            };
            let candidate = Route::FlowSpec(FlowSpecRule {
                dst: p,
                ..merged.clone()
            });
            if guard(&self.cfg, &candidate).is_err() {
                continue;
            }
            // The wider rule reaches every host it covers: each attacked
            // one's normal traffic must bear it, not only this host's; an
            // unknown one is as `unknown_collateral` says. (Hosts of the
            // prefix that are not attacked are not judged here: the rule
            // matches only the attack's signature on their traffic.)
            let max = group.mitigation.max_collateral;
            let unknown_ok = group.mitigation.unknown_collateral_ok;
            let too_costly = std::iter::once(m.host)
                .chain(m.covers.iter().copied())
                .filter_map(|h| self.cases.get(&IpNet::from(h))?.incident_state.as_deref())
                .chain(
                    self.cases
                        .get(&host)
                        .and_then(|c| c.incident_state.as_deref()),
                )
                .any(|inc| match rules::collateral(&merged, &inc.legit) {
                    Some(c) => c > max,
                    None => !unknown_ok,
                });
            if too_costly {
                continue;
            }
            if best
                .as_ref()
                .is_none_or(|(_, b, _)| p.prefix_len() > b.prefix_len())
            {
                best = Some((i, p, merged));
            }
        }
        let (i, p, mut merged) = best?;
        let old = self.active.remove(i);
        // Other rules of the same shape inside the new prefix go as well:
        // it takes them in, and their room in the budget is freed.
        let shadow = old.shadow;
        let mut inside = Vec::new();
        let mut keep = Vec::new();
        for m in std::mem::take(&mut self.active) {
            let joined = match &m.route {
                Route::FlowSpec(r)
                    if m.level == Level::Flowspec
                        && m.decided_by == AUTO
                        && m.prefix.is_none()
                        && m.hostgroup == group.name
                        && m.shadow == shadow
                        && p.contains(&r.dst) =>
                {
                    merge_rules(&merged, r)
                }
                _ => None,
            };
            match joined {
                Some(j) => {
                    merged = j;
                    inside.push(m);
                }
                None => keep.push(m),
            }
        }
        self.active = keep;
        let mut covers: Vec<IpAddr> = old.covers.clone();
        covers.push(old.host);
        for o in &inside {
            covers.push(o.host);
            covers.extend(o.covers.iter().copied());
        }
        covers.retain(|h| *h != host.addr());
        covers.sort();
        covers.dedup();
        let route = Route::FlowSpec(FlowSpecRule { dst: p, ..merged });
        let mut m = self.mitigation(host, group, Level::Flowspec, route, now_ms);
        m.reason = format!(
            "{}; aggregated with {} into {p} to fit the FlowSpec budget of {} (the smallest \
             of [mitigation] max_flowspec and the upstreams')",
            m.reason,
            old.route,
            self.budget(Level::Flowspec)
        );
        m.covers = covers;
        let why = format!("replaced by {} (aggregated into {p})", m.id);
        self.active.push(m.clone());
        // The budget is full: the old rules go first, so the router never
        // holds more than its limit (the new one covers their hosts too).
        let mut out: Vec<Action> = std::iter::once(old)
            .chain(inside)
            .map(|o| Action::Withdraw {
                m: o,
                why: why.clone(),
                rollback: false,
            })
            .collect();
        out.push(Action::Announce(m));
        Some(out)
    }

    /// The provider endpoint a level's mitigations are requested from.
    fn provider(&self, level: Level) -> Option<String> {
        (level == Level::Scrubbing)
            .then(|| self.cfg.scrubbing.http_url.clone())
            .flatten()
    }

    fn budget(&self, level: Level) -> usize {
        let m = &self.cfg.mitigation;
        match level {
            Level::Firewall => m.max_firewall,
            Level::Flowspec => self
                .cfg
                .bgp
                .upstreams
                .iter()
                .filter_map(|u| u.max_flowspec)
                .fold(m.max_flowspec, usize::min),
            Level::Rtbh => m.max_rtbh,
            Level::Scrubbing => m.max_scrubbing,
        }
    }

    /// Why an IPv6 target gets no FlowSpec rule: an upstream that takes
    /// none (a rule only some upstreams apply lets the attack in through
    /// the others).
    fn no_ipv6_flowspec(&self, target: IpNet) -> Option<String> {
        if !target.addr().is_ipv6() {
            return None;
        }
        let u = self.cfg.bgp.upstreams.iter().find(|u| !u.flowspec_ipv6)?;
        Some(format!(
            "upstream {} takes no IPv6 FlowSpec (flowspec_ipv6 = false): the next level instead",
            u.name
        ))
    }

    /// Refuses routes no operator would want levee to announce.
    pub fn guard(&self, r: &Route) -> Result<(), Refusal> {
        guard(&self.cfg, r)
    }

    /// Time passes: step down after quiet, withdraw what expired.
    pub fn tick(&mut self, now_ms: u64) -> Vec<Action> {
        let hold_down = self.cfg.mitigation.hold_down.as_millis() as u64;
        let dwell = self.cfg.mitigation.dwell.as_millis() as u64;
        let mut out = Vec::new();
        let hosts: Vec<IpNet> = self.cases.keys().copied().collect();
        for host in hosts {
            let Some(case) = self.cases.get(&host) else {
                continue;
            };
            let quiet = now_ms.saturating_sub(case.last_attack_ms);
            if quiet < hold_down {
                continue;
            }
            let first_step = case.last_step_ms < case.last_attack_ms;
            if !first_step && now_ms.saturating_sub(case.last_step_ms) < dwell {
                continue;
            }
            // Withdraw the highest level this host has (automatic ones).
            let top = self
                .active
                .iter()
                .filter(|m| m.serves(host) && m.decided_by == AUTO)
                .map(|m| m.level)
                .max();
            match top {
                Some(level) => {
                    let why = format!(
                        "attack quiet for {}s (hold_down {}s): stepping down from {level}",
                        quiet / 1000,
                        hold_down / 1000
                    );
                    // An aggregate stays while another host it covers is
                    // still attacked; this host just leaves it.
                    let attacked = self.attacked_hosts(host, now_ms, hold_down);
                    for m in self
                        .active
                        .iter_mut()
                        .filter(|m| m.serves(host) && m.level == level && m.decided_by == AUTO)
                    {
                        hand_over(m, host, &attacked);
                    }
                    out.extend(self.take(
                        |m| m.serves(host) && m.level == level && m.decided_by == AUTO,
                        &why,
                    ));
                    if let Some(case) = self.cases.get_mut(&host) {
                        case.last_step_ms = now_ms;
                        let group = self
                            .cfg
                            .hostgroups
                            .iter()
                            .find(|g| g.name == case.hostgroup);
                        case.level = group
                            .and_then(|g| g.mitigation.ladder.iter().position(|l| *l == level))
                            .and_then(|i| i.checked_sub(1));
                        case.refused.clear();
                    }
                }
                None => {
                    self.cases.remove(&host);
                }
            }
        }
        let expired: Vec<String> = self
            .active
            .iter()
            .filter(|m| m.expires_ms <= now_ms)
            .map(|m| m.id.clone())
            .collect();
        for id in expired {
            out.extend(self.take(|m| m.id == id, "TTL expired"));
        }
        // Cases still attacked that stood on what just went (a prefix's
        // rule that stepped down, an aggregate, a route another case put
        // up) are put back on their own now, not after a dwell.
        let hosts: Vec<IpNet> = self
            .cases
            .iter()
            .filter(|(_, c)| now_ms.saturating_sub(c.last_attack_ms) < hold_down)
            .map(|(h, _)| *h)
            .collect();
        for host in hosts {
            let Some(group) = self
                .cases
                .get(&host)
                .and_then(|c| self.group(&c.hostgroup))
                .cloned()
            else {
                continue;
            };
            if self.reclaim(host, &group) {
                out.extend(self.escalate(host, &group, now_ms));
                self.measure(host);
            }
        }
        out
    }

    /// When nothing in force stands for the case of `host` at the level it
    /// reached (what it stood on was withdrawn for another case's sake),
    /// sets it back one level with its dwell done, so the next escalation
    /// puts the level back for it alone. Whether it did.
    fn reclaim(&mut self, host: IpNet, group: &Hostgroup) -> bool {
        let Some(case) = self.cases.get(&host) else {
            return false;
        };
        let Some(cur) = case.level else {
            return false;
        };
        let Some(&level) = group.mitigation.ladder.get(cur) else {
            return false;
        };
        // A level rolled back (or refused) is not put back either.
        if case.left_by_operator
            || case.refused.contains(&level)
            || self.active.iter().any(|m| {
                m.level == level
                    && (m.serves(host) || (m.hostgroup == case.hostgroup && holds(m, host)))
            })
        {
            return false;
        }
        let case = self.cases.get_mut(&host).expect("looked up above");
        case.level = cur.checked_sub(1);
        case.level_since_ms = 0;
        true
    }

    /// A rule in force at `level` (automatic, on the router) that takes
    /// in all that `route` would match: a prefix's rule around a host's.
    ///
    /// Only a rule of the same hostgroup, on the router as this one would
    /// be (a shadowed rule protects nobody), is relied on.
    fn wider(&self, group: &Hostgroup, level: Level, route: &Route) -> Option<usize> {
        let Route::FlowSpec(narrow) = route else {
            return None;
        };
        self.active.iter().position(|m| {
            m.level == level
                && m.decided_by == AUTO
                && m.hostgroup == group.name
                && m.shadow == self.shadow(group)
                && matches!(&m.route, Route::FlowSpec(w) if w.dst != narrow.dst && includes(w, narrow))
        })
    }

    /// The case of `host` is served by the wider rule in force that takes
    /// in `route`: an aggregate lists the host among those it covers (it
    /// then stays while the host is attacked); a prefix's rule is the
    /// prefix's own and is only relied on.
    fn join(&mut self, host: IpNet, group: &Hostgroup, level: Level, route: &Route) {
        let Some(i) = self.wider(group, level, route) else {
            return;
        };
        let m = &mut self.active[i];
        if m.prefix.is_none() && super::is_host(host) && !m.protects(host.addr()) {
            m.covers.push(host.addr());
        }
    }

    /// Whether the hostgroup's mitigations are only recorded, not put in
    /// force.
    fn shadow(&self, group: &Hostgroup) -> bool {
        self.cfg.mitigation.dry_run || group.mitigation.shadow
    }

    /// Mitigations at `level` on the router now (shadowed ones are not).
    fn on_router(&self, level: Level) -> usize {
        self.active
            .iter()
            .filter(|m| m.level == level && !m.shadow)
            .count()
    }

    /// New routes and the withdrawals they make due, in the order that
    /// keeps the router within the level's budget: the new first
    /// (make-before-break) when `used` plus them fits, else the old first
    /// (a router over its limit may drop the session, and every rule
    /// with it).
    fn within_budget(
        &self,
        level: Level,
        used: usize,
        announces: Vec<Action>,
        withdrawals: Vec<Action>,
    ) -> Vec<Action> {
        let new = announces
            .iter()
            .filter(|a| matches!(a, Action::Announce(m) if !m.shadow))
            .count();
        if used + new > self.budget(level) {
            withdrawals.into_iter().chain(announces).collect()
        } else {
            announces.into_iter().chain(withdrawals).collect()
        }
    }

    /// The hosts other than `t` whose attacks are not yet quiet for
    /// `hold_down`.
    fn attacked_hosts(&self, t: IpNet, now_ms: u64, hold_down: u64) -> Vec<IpAddr> {
        self.cases
            .iter()
            .filter(|(h, c)| {
                **h != t
                    && super::is_host(**h)
                    && now_ms.saturating_sub(c.last_attack_ms) < hold_down
            })
            .map(|(h, _)| h.addr())
            .collect()
    }

    fn take(&mut self, pick: impl Fn(&Mitigation) -> bool, why: &str) -> Vec<Action> {
        let (gone, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.active)
            .into_iter()
            .partition(|m| pick(m));
        self.active = keep;
        gone.into_iter()
            .map(|m| Action::Withdraw {
                m,
                why: why.to_owned(),
                rollback: false,
            })
            .collect()
    }

    /// An operator's mitigation: announced as asked, after the guards, for
    /// `ttl`; never renewed or stepped down by the engine.
    pub fn manual(
        &mut self,
        host: IpAddr,
        level: Level,
        rule: Option<FlowSpecRule>,
        ttl_ms: u64,
        actor: &str,
        now_ms: u64,
    ) -> Result<Vec<Action>, Error> {
        let m = self.manual_plan(host, level, rule, ttl_ms, actor, now_ms)?;
        Ok(self.commit(m, now_ms))
    }

    /// The operator's mitigation [`Engine::manual`] would make (without an
    /// id yet), or why it would not; nothing changes. The service checks
    /// what only it knows (whether gobgpd is connected) between this and
    /// [`Engine::commit`].
    pub fn manual_plan(
        &self,
        host: IpAddr,
        level: Level,
        rule: Option<FlowSpecRule>,
        ttl_ms: u64,
        actor: &str,
        now_ms: u64,
    ) -> Result<Mitigation, Error> {
        let Some(group) = self
            .cfg
            .hostgroups
            .iter()
            .filter(|g| g.prefixes.iter().any(|p| p.contains(&host)))
            .max_by_key(|g| {
                g.prefixes
                    .iter()
                    .filter(|p| p.contains(&host))
                    .map(|p| p.prefix_len())
                    .max()
            })
        else {
            return Err(Error::NotProtected(host));
        };
        if level == Level::Firewall && !self.cfg.firewall.enabled {
            return Err(Error::NotConfigured(
                "the firewall level is off ([firewall] enabled = false)".into(),
            ));
        }
        if level == Level::Flowspec {
            if let Some(why) = self.no_ipv6_flowspec(rules::host_net(host)) {
                return Err(Error::NotConfigured(why));
            }
        }
        let route = match level {
            Level::Flowspec | Level::Firewall => Route::FlowSpec(rule.unwrap_or_else(|| {
                FlowSpecRule::to(rules::host_net(host), levee_bgp::FlowAction::Discard)
            })),
            Level::Rtbh => Route::Blackhole(
                rules::blackhole(host, &self.cfg)
                    .map_err(|e| Error::NotConfigured(e.to_string()))?,
            ),
            Level::Scrubbing => Route::Divert(
                rules::diversion(host, &self.cfg)
                    .map_err(|e| Error::NotConfigured(e.to_string()))?,
            ),
        };
        if let (Level::Firewall, Route::FlowSpec(r)) = (level, &route) {
            super::firewall::rule(r, "check").map_err(|e| Error::Invalid(e.to_string()))?;
        }
        if let Route::FlowSpec(r) = &route {
            if !r.dst.contains(&host) {
                return Err(Error::Invalid(format!(
                    "the rule's destination {} does not cover {host}",
                    r.dst
                )));
            }
        }
        self.guard(&route)
            .map_err(|e| Error::Guard(e.to_string()))?;
        if self.active.iter().any(|m| m.key() == key(level, &route)) {
            return Err(Error::AlreadyInForce(route.to_string()));
        }
        self.fits(level, std::slice::from_ref(&route))
            .map_err(|e| Error::Guard(e.to_string()))?;
        Ok(Mitigation {
            id: String::new(),
            host,
            hostgroup: group.name.clone(),
            incident: None,
            level,
            route,
            created_ms: now_ms,
            expires_ms: now_ms + ttl_ms,
            decided_by: actor.to_owned(),
            reason: "manual".to_owned(),
            shadow: self.cfg.mitigation.dry_run,
            covers: Vec::new(),
            http: self.provider(level),
            coverage: None,
            prefix: None,
            rollback: None,
        })
    }

    /// Puts a planned manual mitigation in force: it gets its id, and is
    /// to be announced.
    pub fn commit(&mut self, mut m: Mitigation, now_ms: u64) -> Vec<Action> {
        m.id = self.id(now_ms);
        self.active.push(m.clone());
        vec![Action::Announce(m)]
    }

    /// Withdraws a mitigation by id, whoever made it.
    pub fn withdraw(&mut self, id: &str, actor: &str) -> Result<Vec<Action>, Error> {
        if !self.active.iter().any(|m| m.id == id) {
            return Err(Error::NotFound(id.to_owned()));
        }
        let out = self.take(|m| m.id == id, &format!("withdrawn by {actor}"));
        // A case whose mitigations an operator removed is not re-escalated
        // to the same level at once: it starts over from its attack. The
        // cases that stood on it (hosts inside a prefix's rule, hosts an
        // aggregate covered) are not put back on their own either.
        if let Some(Action::Withdraw { m, .. }) = out.first() {
            for (t, case) in self.cases.iter_mut() {
                if *t == m.target() || (case.hostgroup == m.hostgroup && holds(m, *t)) {
                    case.level_since_ms = u64::MAX / 2;
                    case.left_by_operator = true;
                }
            }
        }
        Ok(out)
    }
}

/// Whether `wide` matches every packet `narrow` does: a destination that
/// contains `narrow`'s, the same source and action, and each constraint
/// absent or taking in all `narrow`'s values (a host's rule for DNS
/// responses is inside its prefix's rule for DNS and NTP responses).
pub(super) fn includes(wide: &FlowSpecRule, narrow: &FlowSpecRule) -> bool {
    // Every value `small` takes in, `big` does (an empty list takes in all).
    let within = |small: &[levee_bgp::Range], big: &[levee_bgp::Range]| {
        big.is_empty()
            || (!small.is_empty()
                && small
                    .iter()
                    .all(|s| big.iter().any(|b| b.lo <= s.lo && s.hi <= b.hi)))
    };
    let protocols = wide.protocols.is_empty()
        || (!narrow.protocols.is_empty()
            && narrow.protocols.iter().all(|p| wide.protocols.contains(p)));
    // Bits `wide` wants set (or clear), `narrow` wants too.
    let flags = match (wide.tcp_flags, narrow.tcp_flags) {
        (None, _) => true,
        (Some(w), Some(n)) => w.set & n.set == w.set && w.unset & n.unset == w.unset,
        (Some(_), None) => false,
    };
    wide.dst.contains(&narrow.dst)
        && wide.src == narrow.src
        && wide.action == narrow.action
        && protocols
        && flags
        && (wide.fragment.is_none() || wide.fragment == narrow.fragment)
        && within(&narrow.src_ports, &wide.src_ports)
        && within(&narrow.dst_ports, &wide.dst_ports)
        && within(&narrow.icmp_types, &wide.icmp_types)
        && within(&narrow.packet_lengths, &wide.packet_lengths)
}

/// Whether `m`'s route reaches all of `t` (a prefix's rule around a host).
fn holds(m: &Mitigation, t: IpNet) -> bool {
    m.route.prefix().contains(&t)
}

/// Lets the case of `t` go from `m`: an aggregate that still protects
/// another attacked host (of `attacked`) becomes that host's, and `t`
/// leaves its list. Whether `m` stays.
fn hand_over(m: &mut Mitigation, t: IpNet, attacked: &[IpAddr]) -> bool {
    if m.prefix.is_some() || !super::is_host(t) {
        return false; // a prefix's mitigation is its own
    }
    let host = t.addr();
    let heir = std::iter::once(m.host)
        .chain(m.covers.iter().copied())
        .find(|h| *h != host && attacked.contains(h));
    let Some(heir) = heir else {
        return false;
    };
    m.covers.retain(|h| *h != host && *h != heir);
    if m.host != heir {
        let old = std::mem::replace(&mut m.host, heir);
        if old != host {
            m.covers.push(old);
        }
    }
    true
}

/// What a FlowSpec rule matches on, but for its destination and source:
/// the attack's signature.
type Signature = (
    Vec<u8>,
    Vec<levee_bgp::Range>,
    Vec<levee_bgp::Range>,
    Vec<levee_bgp::Range>,
    Vec<levee_bgp::Range>,
    Option<(u8, u8)>,
    Option<String>,
);

/// Whether `new` is `old` with constraints dropped or widened: the same
/// protocols, flags, fragments, source ports and ICMP types, and
/// destination ports and lengths either gone or taking in more.
fn broadens(new: &FlowSpecRule, old: &FlowSpecRule) -> bool {
    // Every value `small` takes in, `big` does (an empty list takes in all).
    let within = |small: &[levee_bgp::Range], big: &[levee_bgp::Range]| {
        big.is_empty()
            || (!small.is_empty()
                && small
                    .iter()
                    .all(|s| big.iter().any(|b| b.lo <= s.lo && s.hi <= b.hi)))
    };
    new.protocols == old.protocols
        && new.tcp_flags == old.tcp_flags
        && new.fragment == old.fragment
        && new.src_ports == old.src_ports
        && new.icmp_types == old.icmp_types
        && new != old
        && within(&old.dst_ports, &new.dst_ports)
        && within(&old.packet_lengths, &new.packet_lengths)
}

fn signature(r: &FlowSpecRule) -> Signature {
    let mut protocols = r.protocols.clone();
    protocols.sort();
    (
        protocols,
        r.src_ports.clone(),
        r.dst_ports.clone(),
        r.icmp_types.clone(),
        r.packet_lengths.clone(),
        r.tcp_flags.map(|t| (t.set, t.unset)),
        r.fragment.map(|f| f.to_string()),
    )
}

/// The most of an attack's recent packets that may come from exporters
/// not trusted to move routes, for levee to act on it.
const MAX_UNTRUSTED: f64 = 0.1;

/// Why the attack's recent traffic cannot be acted on, when too much of it
/// came from exporters levee does not trust to move routes — or when, with
/// untrusted exporters about, there are no details to tell (fail closed).
fn untrusted(inc: &Incident, cfg: &Config) -> Option<String> {
    let d = &inc.current.details;
    let exporters_trusted =
        !cfg.collector.allowed_exporters.is_empty() || cfg.mitigation.trust_any_exporter;
    if !exporters_trusted && d.sampled == 0 {
        return Some(
            "whose traffic this is cannot be told (no details of the host's records), and exporters \
             are not trusted to move routes (no [collector] allowed_exporters, trust_any_exporter off)"
                .to_owned(),
        );
    }
    let share = d.untrusted as f64 / d.packets.max(1) as f64;
    (share > MAX_UNTRUSTED).then(|| {
        format!(
            "{:.0}% of the attack's recent traffic was reported by exporters not trusted to move routes \
             (no [collector] allowed_exporters, and [mitigation] trust_any_exporter is off): detected and alerted, not mitigated",
            share * 100.0
        )
    })
}

/// Why a route may not be announced, whatever asks for it (MIT-6), or
/// why the level has no room for it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("{0} is a default route")]
    DefaultRoute(IpNet),
    #[error("{prefix} is shorter than /{shortest} (shortest_prefix)")]
    TooShort { prefix: IpNet, shortest: u8 },
    #[error("{prefix} touches {listed}, on the never-mitigate list")]
    Never { prefix: IpNet, listed: IpNet },
    #[error("{0} is not inside a protected hostgroup")]
    NotProtected(IpNet),
    /// The router holds `budget` rules of the level at most.
    #[error("{level} budget full: {used} in force, {more} more would pass max_{level} = {budget}")]
    BudgetFull {
        level: Level,
        used: usize,
        more: usize,
        budget: usize,
    },
}

/// Why the evidence is not yet enough to build rules from (MIT-1): the
/// level waits, or passes to the next, saying this.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ShortOfEvidence {
    #[error("unclassified: {0}")]
    Unclassified(String),
    #[error("{family} {confidence} from {samples} sampled records; min_samples is {min}")]
    FewSamples {
        family: String,
        confidence: f64,
        samples: u64,
        min: u64,
    },
    #[error(
        "{family} at confidence {confidence:.2} from {samples} sampled records; min_confidence is {min:.2}"
    )]
    LowConfidence {
        family: String,
        confidence: f64,
        samples: u64,
        min: f64,
    },
    /// One family of the verdict has too few of the samples held for
    /// rules to draw its rule from.
    #[error(
        "{family} is {:.0}% of {held} samples held for rules: fewer than {} to draw its rule from",
        share * 100.0,
        rules::MIN_COMPONENT_SAMPLES
    )]
    ThinComponent {
        family: &'static str,
        share: f64,
        held: usize,
    },
}

/// The guards every route passes before it is announced (MIT-6).
pub fn guard(cfg: &Config, r: &Route) -> Result<(), Refusal> {
    let p = r.prefix();
    let shortest = if p.addr().is_ipv6() {
        cfg.mitigation.shortest_prefix_v6
    } else {
        cfg.mitigation.shortest_prefix_v4
    };
    if p.prefix_len() == 0 {
        return Err(Refusal::DefaultRoute(p));
    }
    if p.prefix_len() < shortest {
        return Err(Refusal::TooShort {
            prefix: p,
            shortest,
        });
    }
    if let Some(n) = cfg
        .mitigation
        .never
        .iter()
        .find(|n| n.contains(&p) || p.contains(*n))
    {
        return Err(Refusal::Never {
            prefix: p,
            listed: *n,
        });
    }
    if !cfg.protects(&p) {
        return Err(Refusal::NotProtected(p));
    }
    Ok(())
}

/// Port and length lists a merged rule may hold at most: what any rule
/// may ([`rules::MAX_VALUES`]).
const MAX_MERGED_RANGES: usize = rules::MAX_VALUES;

/// One rule matching what `a` and `b` both match, for two hosts under one
/// attack (the destination is `a`'s; the caller widens it): the same
/// protocols, flags, fragments, ICMP types, source and action, with port
/// lists and length ranges joined. None when they differ otherwise, when
/// one list constrains and the other does not (joining would drop the
/// constraint for both), or when a joined list would pass
/// [`MAX_MERGED_RANGES`].
pub(super) fn merge_rules(a: &FlowSpecRule, b: &FlowSpecRule) -> Option<FlowSpecRule> {
    let sorted = |v: &[u8]| {
        let mut v = v.to_vec();
        v.sort_unstable();
        v.dedup();
        v
    };
    if sorted(&a.protocols) != sorted(&b.protocols)
        || a.tcp_flags != b.tcp_flags
        || a.fragment != b.fragment
        || a.icmp_types != b.icmp_types
        || a.src != b.src
        || a.action != b.action
    {
        return None;
    }
    let join = |x: &[levee_bgp::Range], y: &[levee_bgp::Range]| -> Option<Vec<levee_bgp::Range>> {
        if x.is_empty() != y.is_empty() {
            return None;
        }
        let mut all: Vec<levee_bgp::Range> = x.iter().chain(y).copied().collect();
        all.sort_by_key(|r| (r.lo, r.hi));
        let mut out: Vec<levee_bgp::Range> = Vec::new();
        for r in all {
            match out.last_mut() {
                Some(l) if u32::from(r.lo) <= u32::from(l.hi) + 1 => l.hi = l.hi.max(r.hi),
                _ => out.push(r),
            }
        }
        (out.len() <= MAX_MERGED_RANGES).then_some(out)
    };
    Some(FlowSpecRule {
        src_ports: join(&a.src_ports, &b.src_ports)?,
        dst_ports: join(&a.dst_ports, &b.dst_ports)?,
        packet_lengths: join(&a.packet_lengths, &b.packet_lengths)?,
        ..a.clone()
    })
}

/// The smallest prefix covering both `a` and `b` (of one family).
fn supernet(a: IpNet, b: IpNet) -> Option<IpNet> {
    if a.addr().is_ipv6() != b.addr().is_ipv6() {
        return None;
    }
    (0..=a.prefix_len().min(b.prefix_len()))
        .rev()
        .filter_map(|len| IpNet::new(a.addr(), len).ok().map(|n| n.trunc()))
        .find(|n| n.contains(&b))
}

/// How levee watches one FlowSpec or firewall rule for harm to the host's
/// legitimate traffic (MIT-7); each carries the sentence the mitigation
/// shows.
enum Watch {
    /// A fall in the host's established TCP after the rule is laid to it:
    /// the rule can match TCP.
    Direct(String),
    /// The rule matches no TCP, but a fall in the host's established TCP
    /// is laid to it all the same (`rollback_unknown = "withdraw"`): a rule
    /// on DNS answers or ICMP hurts the host's TCP through its resolution
    /// or path-MTU discovery.
    Indirect(String),
    /// Nothing levee sees tells whether the rule hurts; it stays.
    Unknown(String),
}

fn matches_tcp(r: &FlowSpecRule) -> bool {
    r.protocols.is_empty() || r.protocols.contains(&6)
}

/// The host's established TCP (inbound TCP other than bare SYNs) before
/// the attack, packets/s.
fn established_before(inc: &Incident) -> f64 {
    use crate::accounting::class;
    f64::from((inc.legit.pps[class::TCP] - inc.legit.pps[class::TCP_SYN]).max(0.0))
}

/// How `r`, acting against `inc`, is watched for rollback.
fn watch(r: &FlowSpecRule, inc: &Incident, group: &Hostgroup) -> Watch {
    let Some(drop) = group.mitigation.rollback_drop else {
        return Watch::Unknown("none: rollback is off (rollback_drop = 1)".to_owned());
    };
    if !inc.legit.learnt {
        return Watch::Unknown(
            "unknown: the host's normal traffic is not learnt yet, so a fall has nothing to be \
             measured against"
                .to_owned(),
        );
    }
    if inc
        .verdict
        .components
        .iter()
        .any(|c| c.family == crate::detect::classify::Family::TcpFlood)
    {
        return Watch::Unknown(
            "unknown: the attack is a TCP flood whose packets look like established TCP".to_owned(),
        );
    }
    let before = established_before(inc);
    if before < ROLLBACK_FLOOR_PPS {
        return Watch::Unknown(format!(
            "unknown: the host had {before:.0} pps of established TCP before the attack, \
             under the {ROLLBACK_FLOOR_PPS:.0} pps a fall is judged from"
        ));
    }
    if matches_tcp(r) {
        return Watch::Direct(format!(
            "watched: withdrawn if the host's established TCP ({before:.0} pps before the \
             attack) falls more than {:.0}% after it",
            drop * 100.0
        ));
    }
    if group.mitigation.rollback_unknown_withdraw {
        Watch::Indirect(format!(
            "watched indirectly: the rule matches no TCP, but a fall of more than {:.0}% in the \
             host's established TCP ({before:.0} pps before the attack) withdraws it \
             (rollback_unknown = \"withdraw\")",
            drop * 100.0
        ))
    } else {
        Watch::Unknown(
            "unknown: the rule matches no TCP, so a fall in the host's established TCP cannot be \
             laid to it; kept (rollback_unknown = \"keep\")"
                .to_owned(),
        )
    }
}
