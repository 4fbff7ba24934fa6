//! Attacks spread over a prefix (DET-6, carpet bombing): many hosts, each
//! under its own limits, the prefix as a whole far over its hostgroup's
//! `[hostgroup.prefix_thresholds]`.
//!
//! The shards sum each hostgroup's traffic per prefix of the configured
//! length ([`crate::accounting::PrefixSecond`], with details once a prefix is
//! busy) and look at busy prefixes every 200 ms
//! ([`crate::accounting::PrefixPeek`], a sliding second, as a host's
//! trigger). The detector adds the shards up and judges each prefix like a
//! host: static thresholds (every class), its own EWMA baseline, the same
//! significance test under sampling, `trigger_seconds`, `hold_down`, and
//! the same "unclassified until there is evidence" rule on the prefix's
//! own details.
//!
//! What is one host's is not the prefix's: the traffic of hosts that have
//! their own incident is taken out of their prefix before it is judged
//! (whole per second; in the sub-second looks, the busiest hosts' packets
//! as the shards rank them), and a prefix whose remaining traffic is
//! nearly all one destination ([`ONE_HOST`]) or goes to a single one is
//! left to that host's thresholds. A host incident and a prefix incident
//! that run together are linked (`linked` on both), not merged: each keeps
//! its own rules, and the prefix's rule, on the prefix, covers the
//! host's traffic of the same shape.

use std::collections::HashMap;

use levee_collectors::Addr;

use super::baseline::Baseline;
use super::{
    judge, learn_quiet, near, refresh, rule_basis, Detector, Event, HostShare, Incident, Legit,
    Near, Point, Reason, Window, WINDOWS,
};
use crate::accounting::{add_counters, class, Counters, Details, PrefixPeek, PrefixSecond};
use crate::config::Thresholds;
use crate::hostgroups::GroupId;

/// A prefix's baseline as saved across a restart.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SavedPrefix {
    /// The hostgroup's name.
    pub group: String,
    pub len: u8,
    #[serde(flatten)]
    pub baseline: Baseline,
}

/// A prefix: its hostgroup, network address and length.
pub(super) type Key = (GroupId, Addr, u8);

/// A share of the prefix's packets that makes its traffic one host's.
pub const ONE_HOST: f64 = 0.9;
/// Prefixes with state (baseline, profile) at most, over all hostgroups.
const MAX_STATES: usize = 262_144;
/// Host incidents a look scans at most for ones inside its prefix.
const UNNAMED_SCAN: usize = 1024;
/// Looks older than this (ms) no longer count towards a prefix's sum.
const PEEK_STALE_MS: u64 = 500;
/// Busiest destinations shown per prefix incident.
const TOP_HOSTS: usize = 10;

/// A hostgroup's prefix aggregates, from the config.
#[derive(Debug, Clone, PartialEq)]
pub struct PrefixSettings {
    pub len_v4: u8,
    pub len_v6: u8,
    pub limits: Thresholds,
    /// The hostgroup's networks: a saved prefix outside them (the
    /// hostgroup narrowed since) is not taken back.
    pub networks: Vec<ipnet::IpNet>,
}

impl PrefixSettings {
    /// The prefix `a` falls in.
    pub fn of(&self, a: &Addr) -> (Addr, u8) {
        let (k, len) = crate::accounting::PrefixLimit {
            len_v4: self.len_v4,
            len_v6: self.len_v6,
            pps: None,
            bps: None,
        }
        .of(a);
        (Addr(k.to_be_bytes()), len)
    }
}

/// What the detector keeps of a prefix between its seconds.
#[derive(Debug, Default)]
pub(super) struct State {
    baseline: Baseline,
    over: u32,
    legit: Legit,
    seen: u64,
}

/// The prefix side of the detector.
#[derive(Debug, Default)]
pub(super) struct Prefixes {
    states: HashMap<Key, State>,
    pub(super) active: HashMap<Key, Incident>,
    windows: HashMap<Key, Window>,
    /// Last second's details of busy prefixes without an incident (the
    /// ramp).
    last: HashMap<Key, (u64, Box<Details>)>,
    recent: HashMap<Key, Near>,
    /// The latest look at each prefix from each shard.
    peeks: HashMap<Key, Vec<(usize, PrefixPeek)>>,
    /// This second's traffic of hosts with an incident of their own, and
    /// how many they are, per prefix.
    pub(super) excluded: HashMap<Key, (Counters, u32)>,
    /// Prefixes refused state because [`MAX_STATES`] was reached.
    pub refused: u64,
}

/// One prefix's second, the shards added up.
struct Sum {
    inbound: Counters,
    hosts: u32,
    top: Vec<(Addr, u64)>,
    details: Option<Box<Details>>,
}

fn subtract(a: &mut Counters, b: &Counters) {
    for (x, y) in a.packets.iter_mut().zip(b.packets) {
        *x = x.saturating_sub(y);
    }
    a.bytes = a.bytes.saturating_sub(b.bytes);
    a.flows = a.flows.saturating_sub(b.flows);
    a.samples = a.samples.saturating_sub(b.samples);
}

/// The busiest destinations first, each once.
fn merge_top(top: &mut Vec<(Addr, u64)>) {
    top.sort_by_key(|a| a.0 .0);
    top.dedup_by(|b, a| {
        if a.0 == b.0 {
            a.1 = a.1.saturating_add(b.1);
            true
        } else {
            false
        }
    });
    top.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
    top.truncate(TOP_HOSTS);
}

/// Whether the traffic is spread: more than one destination, and no
/// single one carrying [`ONE_HOST`] of it.
fn spread(hosts: u32, top: &[(Addr, u64)], packets: u64) -> bool {
    let busiest = top.first().map_or(0, |t| t.1);
    hosts >= 2 && (busiest as f64) < ONE_HOST * packets.max(1) as f64
}

impl Detector {
    /// The prefix a host falls in, when its hostgroup has aggregates.
    pub(super) fn prefix_key(&self, host: &Addr, group: GroupId) -> Option<Key> {
        let p = self.s.prefixes.get(usize::from(group))?.as_ref()?;
        let (a, len) = p.of(host);
        Some((group, a, len))
    }

    fn prefix_limits(&self, group: GroupId) -> Option<&Thresholds> {
        self.s
            .prefixes
            .get(usize::from(group))?
            .as_ref()
            .map(|p| &p.limits)
    }

    fn prefix_incident(
        &mut self,
        key: Key,
        started_ms: u64,
        detected_ms: u64,
        reason: Reason,
        legit: Legit,
    ) -> Incident {
        let (group, addr, len) = key;
        let prefix = ipnet::IpNet::new(addr.ip(), len).ok();
        self.fresh_incident(addr, group, prefix, started_ms, detected_ms, reason, legit)
    }

    /// Starts a prefix's incident, with the second before as its ramp.
    fn start_prefix(&mut self, key: Key, started_ms: u64, detected_ms: u64, reason: Reason) {
        let legit = self
            .pfx
            .states
            .get(&key)
            .map(|s| s.legit)
            .unwrap_or_default();
        let mut inc = self.prefix_incident(key, started_ms, detected_ms, reason, legit);
        let mut window = Window::default();
        if let Some((second, d)) = self.pfx.last.remove(&key) {
            if second + 1 >= started_ms / 1000 {
                inc.details.merge(&d);
                window.push(second, d);
            }
        }
        // Host incidents inside the prefix, running now.
        let linked: Vec<String> = self
            .active
            .values()
            .filter(|h| self.prefix_key(&h.host, h.group) == Some(key))
            .map(|h| h.id.clone())
            .collect();
        for h in self.active.values_mut() {
            if linked.contains(&h.id) && !h.linked.contains(&inc.id) {
                h.linked.push(inc.id.clone());
            }
        }
        inc.linked = linked;
        let limits = self.prefix_limits(key.0).cloned().unwrap_or_default();
        refresh(&mut inc, &window, self.s.botnet_sources, &limits);
        self.events.push(Event::Started(Box::new(inc.clone())));
        self.pfx.active.insert(key, inc);
        self.pfx.windows.insert(key, window);
    }

    /// Links a host incident to the prefix incident around it, if one runs.
    pub(super) fn link_host(&mut self, host: Addr) {
        let Some(h) = self.active.get(&host) else {
            return;
        };
        let Some(key) = self.prefix_key(&host, h.group) else {
            return;
        };
        let Some(p) = self.pfx.active.get_mut(&key) else {
            return;
        };
        if !p.linked.contains(&h.id) {
            p.linked.push(h.id.clone());
        }
        let pid = p.id.clone();
        if let Some(h) = self.active.get_mut(&host) {
            if !h.linked.contains(&pid) {
                h.linked.push(pid);
            }
        }
    }

    /// Looks at busy prefixes from shard `shard`: the shards' latest looks
    /// are added up, and a prefix over a static threshold starts its
    /// incident at once (as a host's trigger does); a running incident is
    /// classified again from the second so far.
    pub fn on_prefix_peeks(&mut self, shard: usize, peeks: Vec<PrefixPeek>) {
        for p in peeks {
            let key: Key = (p.group, p.prefix, p.len);
            if self.prefix_limits(p.group).is_none() {
                continue;
            }
            let at = p.at_ms;
            let looks = self.pfx.peeks.entry(key).or_default();
            looks.retain(|(s, l)| *s != shard && l.at_ms + PEEK_STALE_MS > at);
            looks.push((shard, p));
            self.judge_peeks(key);
        }
    }

    fn judge_peeks(&mut self, key: Key) {
        let Some(looks) = self.pfx.peeks.get(&key) else {
            return;
        };
        let second = looks.iter().map(|(_, l)| l.second).max().unwrap_or(0);
        let at_ms = looks.iter().map(|(_, l)| l.at_ms).max().unwrap_or(0);
        let mut window = Counters::default();
        let mut hosts = 0u32;
        let mut top = Vec::new();
        let mut details: Option<Box<Details>> = None;
        for (_, l) in looks {
            add_counters(&mut window, &l.window);
            hosts = hosts.saturating_add(l.hosts);
            top.extend(l.top_hosts.iter().copied());
            if let Some(d) = l.details.as_deref().filter(|_| l.second == second) {
                details.get_or_insert_with(Box::default).merge(d);
            }
        }
        // The busiest hosts with an incident of their own are theirs. A
        // host incident inside the prefix that the looks do not name (not
        // among a shard's busiest) cannot be taken out here: no prefix
        // incident starts from these looks then, the second's sum (which
        // takes every such host out whole) decides.
        // (Past UNNAMED_SCAN host incidents the scan would cost too much
        // five times a second per busy prefix: the looks then wait.)
        let unnamed = self.active.len() > UNNAMED_SCAN
            || self.active.keys().any(|a| {
                self.prefix_key(a, key.0) == Some(key) && !top.iter().any(|(t, _)| t == a)
            });
        let all = u64::from(window.packets[class::ALL]);
        let theirs: u64 = top
            .iter()
            .filter(|(a, _)| self.active.contains_key(a))
            .map(|(_, n)| n)
            .sum();
        top.retain(|(a, _)| !self.active.contains_key(a));
        merge_top(&mut top);
        if theirs > 0 && all > 0 {
            let keep = all.saturating_sub(theirs);
            let mut w = Counters::default();
            for (o, v) in w.packets.iter_mut().zip(window.packets) {
                *o = (u64::from(v) * keep / all) as u32;
            }
            w.bytes = (u128::from(window.bytes) * u128::from(keep) / u128::from(all)) as u64;
            w.flows = (u64::from(window.flows) * keep / all) as u32;
            w.samples = (u64::from(window.samples) * keep / all) as u32;
            window = w;
        }
        let limits = self.prefix_limits(key.0).cloned().unwrap_or_default();
        if let Some(inc) = self.pfx.active.get_mut(&key) {
            let Some(w) = self.pfx.windows.get_mut(&key) else {
                return;
            };
            if w.last_second().is_some_and(|s| s >= second) {
                return; // the second's sum came first
            }
            if judge(&limits, &[(second, window)], None).is_some() {
                inc.last_over_ms = inc.last_over_ms.max(at_ms);
            }
            let Some(d) = details else { return };
            w.partial = Some((second, d));
            let before = rule_basis(&inc.current);
            refresh(inc, w, self.s.botnet_sources, &limits);
            if rule_basis(&inc.current) != before {
                self.events.push(Event::Updated(Box::new(inc.clone())));
            }
            return;
        }
        if unnamed
            || self.s.trigger_seconds > 1
            || !spread(hosts, &top, u64::from(window.packets[class::ALL]))
        {
            return;
        }
        // Static limits only: a baseline is judged on whole seconds.
        let Some(reason) = judge(&limits, &[(second, window)], None) else {
            return;
        };
        self.start_prefix(key, at_ms, at_ms, reason);
        if let (Some(inc), Some(w)) = (
            self.pfx.active.get_mut(&key),
            self.pfx.windows.get_mut(&key),
        ) {
            inc.hosts_affected = u64::from(hosts);
            inc.top_hosts = shares(&top, u64::from(window.packets[class::ALL]));
            if let Some(d) = details {
                w.partial = Some((second, d));
            }
            refresh(inc, w, self.s.botnet_sources, &limits);
        }
    }

    /// The prefixes of second `second` (from every shard), judged after
    /// its hosts ([`Detector::on_second`]): their traffic less that of
    /// hosts with an incident of their own.
    pub fn on_prefixes(&mut self, second: u64, prefixes: Vec<PrefixSecond>) {
        let end_ms = (second + 1) * 1000;
        let mut sums: HashMap<Key, Sum> = HashMap::new();
        for p in prefixes {
            let key: Key = (p.group, p.prefix, p.len);
            let s = sums.entry(key).or_insert_with(|| Sum {
                inbound: Counters::default(),
                hosts: 0,
                top: Vec::new(),
                details: None,
            });
            add_counters(&mut s.inbound, &p.inbound);
            s.hosts = s.hosts.saturating_add(p.hosts);
            s.top.extend(p.top_hosts);
            if let Some(d) = p.details {
                match &mut s.details {
                    Some(m) => m.merge(&d),
                    None => s.details = Some(d),
                }
            }
        }
        let excluded = std::mem::take(&mut self.pfx.excluded);
        let mut last = HashMap::new();
        for (key, mut sum) in sums {
            let Some(limits) = self.prefix_limits(key.0).cloned() else {
                continue;
            };
            if let Some((c, n)) = excluded.get(&key) {
                subtract(&mut sum.inbound, c);
                sum.hosts = sum.hosts.saturating_sub(*n);
            }
            sum.top.retain(|(a, _)| !self.active.contains_key(a));
            merge_top(&mut sum.top);
            let c = sum.inbound;
            let pps = u64::from(c.packets[class::ALL]);
            let bps = c.bytes.saturating_mul(8);
            let base = self.pfx.states.get(&key).map(|s| s.baseline);
            let blimits = base
                .as_ref()
                .zip(self.s.baseline.as_ref())
                .and_then(|(b, p)| b.limits(p));
            let is_near = near(&limits, &c, blimits);
            let over = if is_near || self.pfx.recent.contains_key(&key) {
                if !self.pfx.recent.contains_key(&key) && self.pfx.recent.len() >= MAX_STATES {
                    self.pfx.recent.clear();
                }
                let r = self.pfx.recent.entry(key).or_default();
                r.seconds.push_back((second, c));
                while r
                    .seconds
                    .front()
                    .is_some_and(|(s, _)| *s + WINDOWS[WINDOWS.len() - 1] <= second)
                {
                    r.seconds.pop_front();
                }
                if is_near {
                    r.last_near = second;
                }
                let history: Vec<(u64, Counters)> = r.seconds.iter().copied().collect();
                judge(&limits, &history, blimits)
            } else {
                None
            };
            let running = self.pfx.active.contains_key(&key);
            // One host's traffic is that host's to answer for.
            let over = over.filter(|_| running || spread(sum.hosts, &sum.top, pps));

            if let Some(state) = self.pfx.states.get_mut(&key) {
                state.seen = second;
                if running {
                    state.legit.skip(second);
                }
            }
            if let Some(inc) = self.pfx.active.get_mut(&key) {
                inc.timeline.push(Point {
                    second,
                    pps,
                    bps,
                    est_tcp: u64::from(
                        c.packets[class::TCP].saturating_sub(c.packets[class::TCP_SYN]),
                    ),
                    samples: u64::from(c.samples),
                });
                let d = sum
                    .details
                    .take()
                    .unwrap_or_else(|| Box::new(Details::from_counters(&c)));
                inc.details.merge(&d);
                let window = self.pfx.windows.entry(key).or_default();
                window.push(second, d);
                if over.is_some() {
                    inc.last_over_ms = inc.last_over_ms.max(end_ms);
                    // The busiest hosts of the peak second (a second at
                    // the attack's edge, of a few samples, says little).
                    if pps >= inc.peak_pps {
                        inc.top_hosts = shares(&sum.top, pps);
                    }
                    inc.peak_pps = inc.peak_pps.max(pps);
                    inc.peak_bps = inc.peak_bps.max(bps);
                    inc.hosts_affected = inc.hosts_affected.max(u64::from(sum.hosts));
                }
                refresh(inc, window, self.s.botnet_sources, &limits);
                self.events.push(Event::Updated(Box::new(inc.clone())));
                continue;
            }
            if let Some(d) = sum.details.take() {
                last.insert(key, (second, d));
            }
            if !self.pfx.states.contains_key(&key) && self.pfx.states.len() >= MAX_STATES {
                self.pfx.refused += 1;
                // No state: static thresholds still hold, at once.
                if let Some(reason) = over.filter(|r| r.kind == "static") {
                    let this = last.remove(&key);
                    self.start_prefix(key, second * 1000, end_ms, reason);
                    self.first_prefix_second(key, second, &sum, this.map(|x| x.1));
                }
                continue;
            }
            let state = self.pfx.states.entry(key).or_default();
            state.seen = second;
            match over {
                Some(reason) => {
                    state.legit.skip(second);
                    state.over += 1;
                    if state.over >= self.s.trigger_seconds {
                        let started = (second + 1 - u64::from(state.over)) * 1000;
                        state.over = 0;
                        let this = last.remove(&key).map(|x| x.1);
                        self.start_prefix(key, started, end_ms, reason);
                        self.first_prefix_second(key, second, &sum, this);
                    }
                }
                None => {
                    state.over = 0;
                    learn_quiet(
                        &mut state.legit,
                        &mut state.baseline,
                        second,
                        &c,
                        limits.pps,
                        self.s.baseline.as_ref(),
                    );
                }
            }
        }
        // Prefix incidents quiet long enough end.
        let hold = self.s.hold_down_s * 1000;
        let ended: Vec<Key> = self
            .pfx
            .active
            .iter()
            .filter(|(_, inc)| inc.last_over_ms + hold <= end_ms)
            .map(|(k, _)| *k)
            .collect();
        for k in ended {
            self.pfx.windows.remove(&k);
            self.pfx.peeks.remove(&k);
            if let Some(mut inc) = self.pfx.active.remove(&k) {
                inc.ended = true;
                self.events.push(Event::Ended(Box::new(inc)));
            }
        }
        self.pfx.last = last;
        // Looks from seconds already judged are history.
        self.pfx
            .peeks
            .retain(|_, looks| looks.iter().any(|(_, l)| l.second > second));
        if second.is_multiple_of(10) {
            let idle = self.s.idle_s;
            let active = &self.pfx.active;
            self.pfx
                .states
                .retain(|k, s| s.seen + idle >= second || active.contains_key(k));
            let window = WINDOWS[WINDOWS.len() - 1];
            self.pfx.recent.retain(|_, r| r.last_near + window > second);
        }
    }

    /// The second a prefix incident started in (judged per second).
    fn first_prefix_second(
        &mut self,
        key: Key,
        second: u64,
        sum: &Sum,
        this: Option<Box<Details>>,
    ) {
        let limits = self.prefix_limits(key.0).cloned().unwrap_or_default();
        let (Some(inc), Some(window)) = (
            self.pfx.active.get_mut(&key),
            self.pfx.windows.get_mut(&key),
        ) else {
            return;
        };
        let c = &sum.inbound;
        let (pps, bps) = (u64::from(c.packets[class::ALL]), c.bytes.saturating_mul(8));
        inc.timeline.push(Point {
            second,
            pps,
            bps,
            est_tcp: u64::from(c.packets[class::TCP].saturating_sub(c.packets[class::TCP_SYN])),
            samples: u64::from(c.samples),
        });
        inc.peak_pps = pps;
        inc.peak_bps = bps;
        inc.hosts_affected = u64::from(sum.hosts);
        inc.top_hosts = shares(&sum.top, pps);
        let d = this.unwrap_or_else(|| Box::new(Details::from_counters(c)));
        inc.details.merge(&d);
        window.push(second, d);
        refresh(inc, window, self.s.botnet_sources, &limits);
    }

    /// Prefixes with state.
    pub fn prefixes(&self) -> usize {
        self.pfx.states.len()
    }

    /// What to save of prefixes across a restart: each learnt baseline,
    /// with its hostgroup by name (ids change with the config).
    pub fn saved_prefixes(&self) -> impl Iterator<Item = (Addr, SavedPrefix)> + '_ {
        self.pfx
            .states
            .iter()
            .filter(|(_, st)| st.baseline.seconds > 0)
            .filter_map(|((group, addr, len), st)| {
                Some((
                    *addr,
                    SavedPrefix {
                        group: self.s.groups.get(usize::from(*group))?.clone(),
                        len: *len,
                        baseline: st.baseline,
                    },
                ))
            })
    }

    /// Takes back saved prefix baselines: those whose hostgroup still sums
    /// its traffic per prefix of the same length, the most recent first,
    /// up to three quarters of the state table. How many came back.
    pub fn restore_prefixes(&mut self, mut saved: Vec<(Addr, SavedPrefix)>) -> usize {
        saved.sort_by_key(|(_, s)| std::cmp::Reverse(s.baseline.last));
        let room = (MAX_STATES / 4 * 3).saturating_sub(self.pfx.states.len());
        let mut n = 0;
        for (addr, s) in saved {
            if n >= room {
                break;
            }
            let Some(group) = self.s.groups.iter().position(|g| *g == s.group) else {
                continue;
            };
            let Ok(group) = GroupId::try_from(group) else {
                continue;
            };
            // Still a prefix of this group, of the same length, inside its
            // networks.
            if self.prefix_key(&addr, group) != Some((group, addr, s.len)) {
                continue;
            }
            let inside = self
                .s
                .prefixes
                .get(usize::from(group))
                .and_then(Option::as_ref)
                .is_some_and(|p| {
                    p.networks
                        .iter()
                        .any(|n| n.prefix_len() <= s.len && n.contains(&addr.ip()))
                });
            if !inside {
                continue;
            }
            let st = self.pfx.states.entry((group, addr, s.len)).or_default();
            st.baseline = s.baseline;
            st.seen = s.baseline.last;
            n += 1;
        }
        n
    }

    /// Prefixes refused state (the table was full).
    pub fn prefixes_refused(&self) -> u64 {
        self.pfx.refused
    }
}

fn shares(top: &[(Addr, u64)], packets: u64) -> Vec<HostShare> {
    top.iter()
        .map(|(a, n)| HostShare {
            host: a.ip().to_string(),
            share: ((*n as f64 / packets.max(1) as f64).min(1.0) * 1000.0).round() / 1000.0,
        })
        .collect()
}
